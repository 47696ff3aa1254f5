"""``t5electra experiment NAME|FILE.yaml``: run a paper-reproduction grid and write its report."""

from __future__ import annotations

import shlex
import sys


def add_arguments(parser) -> None:
    parser.add_argument("experiment", metavar="NAME|FILE.yaml",
                        help="an experiment under experiments/ (electra_vs_mlm, generator_size, t5_objectives, "
                             "t5_multitask, their -gpu presets, tiny) or a YAML file")
    parser.add_argument("--out", metavar="DIR", help="report, results.jsonl and logs (default docs/experiments/NAME)")
    parser.add_argument("--work", metavar="DIR", help="models, checkpoints and shared data (default "
                                                      "runs/experiments/NAME)")
    parser.add_argument("--device", default="auto", help="'auto', 'cpu' or 'cuda' (default auto)")
    parser.add_argument("--dry-run", action="store_true", help="list the jobs, their steps and FLOPs; run nothing")
    parser.add_argument("--report-only", action="store_true",
                        help="run nothing; rewrite the report from the jobs already finished")


def run(args) -> int:
    from ..errors import T5ElectraError
    from ..experiments.runner import run_experiment

    command = "t5electra " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["experiment"] \
        else f"t5electra experiment {args.experiment}"
    try:
        run_experiment(args.experiment, args.out, args.work, dry_run=args.dry_run, report_only=args.report_only,
                       device=args.device, command=command)
    except T5ElectraError as e:
        print(f"t5electra experiment: error: {e}", file=sys.stderr)
        return 1
    return 0
