"""``t5electra config``: print the resolved run config, or every option with its help.

    t5electra config --config run.yaml --optim.lr=3e-4      # the YAML a run would save
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


def run(args: argparse.Namespace) -> int:
    import yaml

    from ..errors import T5ElectraError
    from ..train.config import config_from_args, describe

    if args.list:
        print(describe())
        return 0
    try:
        cfg = config_from_args(args)
    except T5ElectraError as e:
        print(f"t5electra config: error: {e}", file=sys.stderr)
        return 1
    print(yaml.safe_dump(cfg.to_dict(), sort_keys=False), end="")
    return 0
