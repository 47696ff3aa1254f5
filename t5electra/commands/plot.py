"""``t5electra plot RUN_DIR``: PNG curves (loss, learning rate, eval metrics, ELECTRA quality)
from a run's metrics.jsonl.

    t5electra plot runs/t5-small                # writes runs/t5-small/plots/*.png
    t5electra plot runs/electra --out figs --smooth 20
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="run directory holding metrics.jsonl")
    parser.add_argument("--out", metavar="DIR", help="where to write the PNGs (default RUN_DIR/plots)")
    parser.add_argument("--smooth", type=int, default=1, metavar="N",
                        help="moving average of N points over training curves (default 1: raw)")


def run(args: argparse.Namespace) -> int:
    from ..errors import T5ElectraError
    from ..plot import plot_run

    try:
        paths = plot_run(args.run_dir, args.out, smooth=args.smooth)
    except T5ElectraError as e:
        print(f"t5electra plot: error: {e}", file=sys.stderr)
        return 1
    for p in paths:
        print(p)
    return 0
