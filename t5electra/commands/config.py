"""``t5electra config``: print the resolved run config, or every option with its help.

    t5electra config --config run.yaml --optim.lr=3e-4      # the YAML a run would save
    t5electra config --model.family=electra                 # ELECTRA pretraining's (its recipe's lr, decay, ...)
    t5electra config --list                                 # all options, types, defaults

Mistakes are caught here as they would be by ``pretrain``/``finetune``: an unknown key (named,
with the closest one), an unknown preset, model.overrides that are not fields of the model's config,
a model.family the objective does not train.
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
    from .pretrain import OBJECTIVES

    parser.add_argument("--objective", choices=OBJECTIVES, default=None,
                        help="as pretrain's --objective (implies --for pretrain under auto)")


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
        command = "pretrain" if getattr(args, "objective", None) else \
            "finetune" if config_from_args(args).data.objective == "finetune" else "pretrain"
    if command == "pretrain":
        objective, cfg = pretrain.resolve_config(args)
        family = "t5" if objective == "t5-span-corruption" else "electra"
    else:
        family, cfg = finetune.resolve_config(args)
    check_model(cfg, family)
    return cfg


def check_model(cfg, family: str) -> None:
    """What the recipe refuses when it builds the model, checked without building it: the family the
    objective needs, the preset's name and the model.overrides' fields and values (a fresh model:
    ``from_preset(preset, **overrides)``; the tokenizer's vocabulary is set by the run)."""
    from ..errors import ConfigError

    m = cfg.model
    if m.family != family:
        raise ConfigError(f"model.family={m.family!r}: data.objective={cfg.data.objective!r} trains {family} models "
                          f"(use model.family={family!r})")
    if m.init_from:
        return
    if family == "electra":
        from ..models.electra import ElectraConfig as config_class
    else:
        from ..models.t5 import T5Config as config_class
    try:
        if m.preset:
            config_class.from_preset(m.preset, **m.overrides)
        else:
            config_class().replace(**m.overrides)
    except ConfigError as e:
        raise ConfigError(f"model.preset={m.preset!r}, model.overrides={m.overrides!r}: {e}") from None
