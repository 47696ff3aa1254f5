"""Options only some recipes read: a run of another recipe warns about those it was given, instead
of ignoring them without a word (T5 pretraining given --electra.head=qa or --data.mask_prob=0.3)."""

from __future__ import annotations

import warnings

from ..core.launch import is_rank_zero
from .config import RunConfig, flatten

RECIPES = {
    "pretrain-t5": "T5 pretraining (pretrain, objective t5-span-corruption)",
    "pretrain-electra": "ELECTRA pretraining (pretrain, objective electra-rtd or mlm)",
    "finetune-t5": "T5 fine-tuning (finetune of a T5 model)",
    "finetune-electra": "ELECTRA fine-tuning (finetune of an ELECTRA/BERT model)",
}
_FINETUNE = frozenset({"finetune-t5", "finetune-electra"})
READ_BY: dict[str, frozenset[str]] = {
    "data.noise_density": frozenset({"pretrain-t5"}),
    "data.mean_noise_span_length": frozenset({"pretrain-t5"}),
    "data.mask_prob": frozenset({"pretrain-electra"}),
    "electra.generator_size": frozenset({"pretrain-electra"}),
    "electra.disc_weight": frozenset({"pretrain-electra"}),
    "electra.head": frozenset({"finetune-electra"}),
    "electra.doc_stride": frozenset({"finetune-electra"}),
    "electra.max_answer_length": frozenset({"finetune-electra"}),
    **{k: _FINETUNE for k in ("data.task", "data.task_dir", "data.test_files", "data.label_column", "lora.r",
                              "lora.alpha", "lora.dropout", "lora.target_modules", "lora.modules_to_save",
                              "lora.rslora")},
}


def unread_keys(cfg: RunConfig, recipe: str) -> list[tuple[str, frozenset[str]]]:
    """(key, the recipes that read it) for each key set away from its default that ``recipe`` does not read."""
    now, defaults = flatten(cfg.to_dict()), flatten(RunConfig().to_dict())
    return [(k, readers) for k, readers in READ_BY.items() if recipe not in readers and now[k] != defaults[k]]


def warn_unread(cfg: RunConfig, recipe: str) -> None:
    """A UserWarning naming the keys ``recipe`` ignores and which recipe reads each."""
    unread = unread_keys(cfg, recipe)
    if unread:
        said = "; ".join(f"{k} (read by {' and '.join(RECIPES[r] for r in sorted(readers))})" for k, readers in unread)
        if is_rank_zero():  # (torchrun: once, not once per process)
            warnings.warn(f"{RECIPES[recipe]} does not read {said}: these settings change nothing in this run",
                          UserWarning, stacklevel=2)
