"""One small adapter per job kind: the only place that knows how each recipe is called.

An adapter turns a :class:`~t5electra.experiments.grid.Job` into the recipe's :class:`RunConfig`
(the recipe's own defaults, then the experiment's overrides, then the paths of this run), calls
the recipe's ``train(cfg)``, and reads back what the report needs: the model configs (for the
FLOPs count) and the metrics (``RUN/results.json`` of a fine-tuning run, the last evaluation in
``RUN/metrics.jsonl`` of a pretraining run).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
from pathlib import Path
from typing import Any

from ..errors import CheckpointNotFoundError, ConfigError
from ..models.electra import ElectraConfig
from ..models.t5 import T5Config
from ..recipes import pretrain_electra
from ..train.config import RunConfig, load_config, set_value, validate
from ..train.seq2seq import DEFAULT_PRESET as T5_DEFAULT_PRESET
from . import flops


@dataclasses.dataclass(frozen=True)
class Adapter:
    """How to run one job kind."""

    kind: str
    family: str    # 't5' or 'electra'
    module: str    # the recipe: a module with train(cfg) -> run directory (and maybe default_config())
    pretrain: bool

    def recipe(self):
        return importlib.import_module(self.module)

    def config(self, overrides: dict[str, Any]) -> RunConfig:
        """The recipe's defaults, then ``overrides`` (``'section.key': value``), checked."""
        recipe = self.recipe()
        cfg = recipe.default_config() if hasattr(recipe, "default_config") else load_config()
        for key, value in overrides.items():
            set_value(cfg, key, value, source=f"{self.kind}: {key}", parse_strings=False)
        validate(cfg)
        return cfg

    def train(self, cfg: RunConfig) -> Path:
        return Path(self.recipe().train(cfg))

    # -- model configs and FLOPs ------------------------------------------------------------
    def model_configs(self, cfg: RunConfig, vocab_size: int) -> tuple[Any, ElectraConfig | None]:
        """(model config, generator config or None) as the recipe builds them from ``cfg`` for a
        tokenizer of ``vocab_size`` tokens (a fresh model: preset + overrides)."""
        m = cfg.model
        if self.family == "t5":
            overrides = {"vocab_size": -(-vocab_size // 128) * 128, **m.overrides}  # as train.seq2seq.build_model
            return T5Config.from_preset(m.preset or T5_DEFAULT_PRESET, **overrides), None
        if self.pretrain:
            disc = ElectraConfig.from_preset(m.preset or pretrain_electra.DEFAULT_PRESET,
                                             **{"vocab_size": vocab_size, **m.overrides})
            return disc, pretrain_electra.generator_config(cfg, disc) if cfg.data.objective == "electra-rtd" else None
        return ElectraConfig.from_preset(m.preset or "electra-small", **{"vocab_size": vocab_size, **m.overrides}), None

    def flops(self, cfg: RunConfig, vocab_size: int, model_dir: Path | None = None) -> int:
        """Training FLOPs of the run (pretraining: exact; fine-tuning: the padded upper bound).
        ``model_dir``: read the model's shape from the saved model instead of the config."""
        if self.pretrain:
            model, generator = self.model_configs(cfg, vocab_size)
            return flops.pretrain_flops(cfg, model, generator=generator)
        if model_dir is not None and (model_dir / "config.json").is_file():
            cls = T5Config if self.family == "t5" else ElectraConfig
            model = cls.from_json_file(model_dir / "config.json")
        else:
            model = self.model_configs(cfg, vocab_size)[0]
        return flops.finetune_flops(cfg, model)

    # -- paths ------------------------------------------------------------------------------
    def init_from(self, pretrain_run: Path) -> Path:
        """The directory a fine-tuning job loads from the pretraining run ``pretrain_run``."""
        model = pretrain_run / "model"
        if self.family == "electra":
            # RTD saves model/{generator,discriminator}; the MLM baseline is its model/generator
            # (discriminator-sized): fine-tune the encoder the method trained.
            for sub in ("discriminator", "generator"):
                if (model / sub / "config.json").is_file():
                    return model / sub
        if not (model / "config.json").is_file():
            raise CheckpointNotFoundError(f"{pretrain_run}: no finished model (expected {model}/config.json)")
        return model

    def finished(self, run_dir: Path) -> bool:
        """Whether the recipe completed (its final artefact is on disk)."""
        if self.pretrain:
            return (run_dir / "model").is_dir() and any((run_dir / "model").rglob("config.json"))
        return (run_dir / "results.json").is_file()

    # -- results ----------------------------------------------------------------------------
    def metrics(self, run_dir: Path) -> dict[str, Any]:
        """``{"test": {...}, "validation": {...}}`` of a fine-tuning run; ``{"eval": {...}}`` (the
        last evaluation) of a pretraining run."""
        if not self.pretrain:
            results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
            return {split: _numbers(results.get(split) or {}) for split in ("validation", "test")} | {
                "majority_baseline": {s: _numbers(v) for s, v in (results.get("majority_baseline") or {}).items()}}
        last: dict[str, Any] = {}
        path = run_dir / "metrics.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                rec = json.loads(line)
                if rec.get("split") == "eval":
                    last = rec
        return {"eval": _numbers({k: v for k, v in last.items() if k not in ("step", "time", "split")})}


def _numbers(d: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


ADAPTERS: dict[str, Adapter] = {
    "pretrain_t5": Adapter("pretrain_t5", "t5", "t5electra.recipes.pretrain_t5", pretrain=True),
    "pretrain_electra": Adapter("pretrain_electra", "electra", "t5electra.recipes.pretrain_electra", pretrain=True),
    "finetune_t5": Adapter("finetune_t5", "t5", "t5electra.recipes.finetune_t5", pretrain=False),
    "finetune_electra": Adapter("finetune_electra", "electra", "t5electra.recipes.finetune_electra", pretrain=False),
}


def get_adapter(kind: str) -> Adapter:
    if kind not in ADAPTERS:
        raise ConfigError(f"no adapter for job kind {kind!r}; kinds: {', '.join(ADAPTERS)}")
    return ADAPTERS[kind]
