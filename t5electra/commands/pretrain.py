"""``t5electra pretrain``: pretrain T5 (span corruption) or ELECTRA (replaced-token detection, or
the MLM baseline) on text files.

    t5electra pretrain --objective electra-rtd --data.train_files=corpus.txt --data.tokenizer=tok/ \\
        --model.preset=electra-small --train.output_dir=runs/electra --train.max_steps=10000
    t5electra pretrain --objective t5-span-corruption --config run.yaml
    torchrun --nproc_per_node 4 -m t5electra.cli pretrain --objective electra-rtd --config run.yaml

``--objective`` picks the recipe (t5electra/recipes/pretrain_t5.py or pretrain_electra.py) and its
defaults; without it, ``data.objective`` of the config decides (``model.family=electra`` alone
means electra-rtd). Every run option is a ``--section.key=value`` (listed below).
"""

from __future__ import annotations

import argparse
import sys

from ..core.launch import is_rank_zero

OBJECTIVES = ("t5-span-corruption", "electra-rtd", "mlm")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.config import RECIPE_DEFAULTS_NOTE, add_config_arguments

    parser.add_argument("--objective", choices=OBJECTIVES,
                        help="t5-span-corruption (T5), electra-rtd (ELECTRA: generator + discriminator) or mlm "
                             "(the MLM-only baseline of the ELECTRA paper); default: the config's data.objective")
    add_config_arguments(parser)
    parser.epilog = RECIPE_DEFAULTS_NOTE.format(command="pretrain") + parser.epilog


def resolve_objective(args: argparse.Namespace) -> str:
    """``--objective``, else the config's ``data.objective`` (electra-rtd for ``model.family=electra`` or
    an ELECTRA ``model.preset``)."""
    from ..train.config import config_from_args, preset_family

    if getattr(args, "objective", None):  # `t5electra config` has no --objective
        return args.objective
    probe = config_from_args(args)  # also catches typos before any recipe is imported
    if probe.data.objective != "t5-span-corruption":  # data.objective given: it decides
        return probe.data.objective
    if probe.model.init_from:  # the checkpoint says what it is
        return init_from_objective(probe.model.init_from) or probe.data.objective
    family = preset_family(probe.model.preset) or probe.model.family  # an ELECTRA preset says the family too
    return "electra-rtd" if family == "electra" else probe.data.objective


def init_from_objective(init_from: str) -> str | None:
    """The objective a ``model.init_from`` was pretrained with: an ELECTRA pretraining output
    (``discriminator/``) electra-rtd, an MLM one (``generator/`` alone) mlm, a model directory by its
    config.json's model_type (T5: t5-span-corruption, ELECTRA/BERT: electra-rtd); None when there is
    nothing to read (loading then says why)."""
    from ..models.registry import model_kind
    from ..train.checkpointing import mlm_generator, run_model_dir

    found = run_model_dir(init_from)
    for d in (found, found / "model"):  # a model directory, or a run directory's model/
        if (d / "discriminator" / "config.json").is_file():
            return "electra-rtd"
        if mlm_generator(d) is not None:
            return "mlm"
        if (d / "config.json").is_file():
            return "t5-span-corruption" if model_kind(d) == "t5" else "electra-rtd"
    return None


def resolve_config(args: argparse.Namespace):
    """(objective, the run config): the recipe's own defaults (ELECTRA's), the YAML, the overrides."""
    from ..errors import ConfigError
    from ..train.config import config_from_args

    objective = resolve_objective(args)
    if objective == "t5-span-corruption":
        cfg = config_from_args(args)
    elif objective in ("electra-rtd", "mlm"):
        from ..recipes.pretrain_electra import default_config

        cfg = config_from_args(args, base=default_config(objective))
    else:
        raise ConfigError(f"data.objective={objective!r} is not one of {', '.join(OBJECTIVES)}")
    cfg.data.objective = objective
    from ..train.recipe_keys import warn_unread

    warn_unread(cfg, "pretrain-t5" if objective == "t5-span-corruption" else "pretrain-electra")
    return objective, cfg


def run(args: argparse.Namespace) -> int:
    from ..errors import T5ElectraError

    try:
        objective, cfg = resolve_config(args)
        if objective == "t5-span-corruption":
            from ..recipes.pretrain_t5 import train
        else:
            from ..recipes.pretrain_electra import train
        run_dir = train(cfg)
    except T5ElectraError as e:
        print(f"t5electra pretrain: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk or a vanished directory while writing the run: one line, not a traceback
        from ..checkpoint.io import write_error

        where = e.filename or "the run directory"
        print(f"t5electra pretrain: error: cannot write {where} ({write_error(e, where)})", file=sys.stderr)
        return 1
    if is_rank_zero():  # torchrun: rank 0 wrote the run and says so once
        print(f"pretrained ({objective}): {run_dir / 'model'}")
    return 0
