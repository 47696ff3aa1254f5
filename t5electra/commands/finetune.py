"""``t5electra finetune``: fine-tune T5 (text to text) or ELECTRA / BERT (a task head) on a task.

    t5electra finetune --model.init_from=runs/electra/model --data.task=sentiment \\
        --train.output_dir=runs/electra-sentiment --train.max_steps=1000
    t5electra finetune --model.init_from=runs/t5/model --data.task=sst2 --data.task_dir=glue_data/SST-2
    t5electra finetune --model.init_from=bert_dir --electra.head=classification \\
        --data.train_files=train.tsv --data.validation_files=dev.tsv --data.test_files=test.tsv

The model decides the recipe: a T5 checkpoint goes to t5electra/recipes/finetune_t5.py, an ELECTRA
or BERT checkpoint (or a pretraining run's ``model/``, whose ``discriminator/`` is used) to
t5electra/recipes/finetune_electra.py (classification, regression, token classification,
extractive QA). Without ``model.init_from``, ``model.family`` decides. Results:
``RUN/results.json`` (validation and test scores of the best checkpoint) and ``RUN/model``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..core.launch import is_rank_zero


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..train.config import RECIPE_DEFAULTS_NOTE, add_config_arguments

    add_config_arguments(parser)
    parser.epilog = RECIPE_DEFAULTS_NOTE.format(command="finetune") + parser.epilog


def model_family(init_from: str | None, family: str, preset: str | None = None) -> str:
    """``t5`` or ``electra``: from the checkpoint's config.json when there is one, else the family
    ``model.preset`` names (electra-*, t5-*), else ``model.family``."""
    from ..errors import CheckpointNotFoundError
    from ..models.registry import model_kind
    from ..recipes.finetune_electra import model_dir
    from ..train.config import preset_family

    if not init_from:
        return preset_family(preset) or family
    d = model_dir(init_from)
    if not (d / "config.json").is_file():
        raise CheckpointNotFoundError(f"model.init_from={init_from!r}: no config.json there (nor in discriminator/)")
    return model_kind(d)


def resolve_config(args: argparse.Namespace):
    """(family, the run config): ELECTRA's fine-tuning defaults for an ELECTRA model, the YAML, the
    overrides (typos are reported before anything is loaded)."""
    from ..errors import ConfigError
    from ..train.config import config_from_args

    probe = config_from_args(args)
    family = model_family(probe.model.init_from, probe.model.family, probe.model.preset)
    if family == "t5":
        cfg = probe
    elif family == "electra":
        from ..recipes.finetune_electra import default_config

        cfg = config_from_args(args, base=default_config())
    else:
        raise ConfigError(f"model.family={family!r}: expected 't5' or 'electra'")
    cfg.model.family = family
    from ..train.recipe_keys import warn_unread

    warn_unread(cfg, f"finetune-{family}")
    return family, cfg


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError, T5ElectraError

    try:
        family, cfg = resolve_config(args)
        if family == "t5":
            try:
                from ..recipes.finetune_t5 import train
            except ImportError as e:
                raise ConfigError(f"fine-tuning T5 needs t5electra.recipes.finetune_t5, which cannot be "
                                  f"imported here ({e})") from None
        else:
            from ..recipes.finetune_electra import train
        run_dir = Path(train(cfg))
    except T5ElectraError as e:
        print(f"t5electra finetune: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a full disk or a vanished directory while writing the run: one line, not a traceback
        from ..checkpoint.io import write_error

        where = e.filename or "the run directory"
        print(f"t5electra finetune: error: cannot write {where} ({write_error(e, where)})", file=sys.stderr)
        return 1
    if not is_rank_zero():  # torchrun: rank 0 wrote the results and prints them once
        return 0
    results = run_dir / "results.json"
    if results.is_file():
        print(json.dumps(json.loads(results.read_text(encoding="utf-8")), indent=2, ensure_ascii=False))
    print(f"fine-tuned ({family}): {run_dir / 'model'}")
    return 0
