"""``t5electra bench``: benchmark against transformers and CTranslate2 (same as ``python -m benchmarks``).

    t5electra bench --quick                     # < 5 min on 2 cores
    t5electra bench                             # full run, writes BENCHMARKS.md + docs/img/bench_*.png
    t5electra bench --cases generate --threads 4

The harness lives in the ``benchmarks`` package at the repository root (a source checkout);
it needs ``pip install 't5electra[bench]'`` (transformers, ctranslate2).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path


def _runner():
    try:
        return importlib.import_module("benchmarks.run")
    except ModuleNotFoundError:
        root = Path(__file__).resolve().parents[2]  # a source checkout: <root>/benchmarks
        if (root / "benchmarks" / "run.py").is_file():
            sys.path.insert(0, str(root))
            return importlib.import_module("benchmarks.run")
        raise


def add_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        _runner().add_arguments(parser)
    except ModuleNotFoundError as e:  # installed without the source tree, or without the bench extra
        parser.set_defaults(bench_missing=str(e))


def run(args: argparse.Namespace) -> int:
    missing = getattr(args, "bench_missing", None)
    if missing:
        print(f"t5electra bench: the benchmarks need a source checkout of t5electra and "
              f"pip install 't5electra[bench]' ({missing})", file=sys.stderr)
        return 1
    return _runner().run(args)
