"""``t5electra config``: print the resolved run config, or every option with its help.

    t5electra config --config run.yaml --optim.lr=3e-4      # the YAML a run would save
    t5electra config --model.family=electra                 # ELECTRA pretraining's (its recipe's lr, decay, ...)
    t5electra config --list                                 # all options, types, defaults

Typos are caught here as they would be by ``pretrain``/``finetune``: the unknown key is named
and the closest one suggested.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.config import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--list", action="store_true", help="list every option (type, default, help) and exit")
    parser.add_argument("--for", dest="resolve_for", choices=("auto", "pretrain", "finetune"), default="auto",
                        help="resolve as this command would, with its recipe's defaults (ELECTRA's own lr, "
                             "decay, warmup); auto: finetune for data.objective=finetune, else pretrain")


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..errors import T5ElectraError
    from ..train.config import describe

    if args.list:
        print(describe())
        return 0
    try:
        cfg = resolved(args)
    except T5ElectraError as e:
        print(f"t5electra config: error: {e}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True), end="")
    return 0



def resolved(args: argparse.Namespace):
    """The config the ``pretrain`` / ``finetune`` command would run (--for; auto: finetune for
    data.objective=finetune, else pretrain), resolved by that command's own code."""
    from ..train.config import config_from_args
    from . import finetune, pretrain

    command = args.resolve_for
    if command == "auto":
        command = "finetune" if config_from_args(args).data.objective == "finetune" else "pretrain"
    return (pretrain if command == "pretrain" else finetune).resolve_config(args)[1]
