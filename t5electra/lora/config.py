"""``LoraConfig``: the LoRA settings, read and written as PEFT's ``adapter_config.json``.

Field names, defaults and meaning follow ``peft.LoraConfig`` (peft 0.21), so a config written here
loads in PEFT and one written by PEFT loads here. Module names are transformers' (``q``, ``k``,
``v``, ``o``, ``wi``, ``wi_0``, ``wi_1``, ``wo`` for T5; ``query``, ``key``, ``value``, ``dense``
for ELECTRA), also where our models fuse projections (t5electra/lora/model.py maps them).

PEFT features that change the arithmetic and that we do not implement (DoRA, per-module ranks,
layer selection, trainable biases, ...) are refused when a file asks for them, naming the field,
rather than loaded into an adapter that computes something else.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
from pathlib import Path
from typing import Any

from ..checkpoint.io import read_json
from ..core.atomic import write_text_atomic
from ..errors import ConfigError

CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"

# PEFT's task types (peft.TaskType) and, for the classification ones, the head modules that
# PeftModelFor* adds to modules_to_save on its own (peft/peft_model.py).
TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
TASK_HEADS = {"SEQ_CLS": ("classifier", "score"), "TOKEN_CLS": ("classifier", "score"),
              "QUESTION_ANS": ("qa_outputs",)}

# Default targets when target_modules is None, as PEFT's table for these model types.
DEFAULT_TARGETS = {"t5": ["q", "v"], "mt5": ["q", "v"], "umt5": ["q", "v"], "electra": ["query", "value"], "bert": ["query", "value"]}

# adapter_config.json fields that PEFT writes and whose non-default values we cannot honour.
_UNSUPPORTED = {
    "use_dora": False, "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None,
    "layers_pattern": None, "layer_replication": None, "lora_bias": False, "target_parameters": None,
    "trainable_token_indices": None, "use_qalora": False, "use_bdlora": None, "megatron_config": None,
    "alora_invocation_tokens": None, "loftq_config": {},
    # variants configured by their own section (peft 0.21 writes them as null when unused)
    "arrow_config": None, "kasa_config": None, "monteclora_config": None, "lora_ga_config": None, "velora_config": None,
}
_EMPTY = (None, False, {}, [], "")
# init_lora_weights: the inits implemented here, and those of peft (0.21) that leave the base weights as
# they are, so that a trained adapter made with them is plain LoRA on the unchanged base and loads
# (its A and B replace whatever the init made).
_INITS = (True, False, "gaussian")
_LOADABLE_INITS = ("orthogonal", "eva")


@dataclasses.dataclass
class LoraConfig:
    """LoRA (https://arxiv.org/abs/2106.09685): ``W x + scaling * B A dropout(x)`` on each target,
    A (r, in), B (out, r), ``scaling = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with use_rslora)."""

    r: int = 8
    """Rank of the update (> 0)."""
    lora_alpha: float = 8
    """Scale numerator: the update is multiplied by lora_alpha / r."""
    lora_dropout: float = 0.0
    """Dropout on the adapter's input (training only)."""
    target_modules: list[str] | str | None = None
    """transformers module names (a name matches a module path equal to it or ending in '.name'),
    or one regex matched against whole module paths, or "all-linear" (every linear layer but the
    output layer, as PEFT); None: PEFT's default for the model type."""
    modules_to_save: list[str] | None = None
    """Modules trained in full and saved with the adapter (e.g. ['classifier']); PEFT's rule: every module
    whose path ends with a name ('layer_norm' also takes T5's final_layer_norm)."""
    exclude_modules: list[str] | str | None = None
    """Modules never adapted (same matching as target_modules)."""
    bias: str = "none"
    """Only 'none': biases stay frozen and are not saved."""
    use_rslora: bool = False
    """Rank-stabilised scaling lora_alpha / sqrt(r) (https://arxiv.org/abs/2312.03732)."""
    init_lora_weights: bool | str = True
    """True: B = 0, so the adapted model starts equal to the base (PEFT's default); "gaussian": the same
    with A ~ N(0, 1/r²) instead of kaiming-uniform; False: B random too."""
    task_type: str | None = None
    """PEFT's task type ('SEQ_2_SEQ_LM', 'SEQ_CLS', ...); classification types add the head to modules_to_save."""
    base_model_name_or_path: str | None = None
    inference_mode: bool = False
    peft_type: str = "LORA"

    def __post_init__(self) -> None:
        if isinstance(self.target_modules, (list, tuple, set)):
            self.target_modules = list(self.target_modules)
        if isinstance(self.exclude_modules, (list, tuple, set)):
            self.exclude_modules = list(self.exclude_modules)
        if self.modules_to_save is not None:
            self.modules_to_save = list(self.modules_to_save)
        self.validate()

    def validate(self) -> None:
        if isinstance(self.r, bool) or not isinstance(self.r, int) or self.r <= 0:
            raise ConfigError(f"LoRA r (the rank) must be a positive integer, got {self.r!r}")
        if isinstance(self.lora_alpha, bool) or not isinstance(self.lora_alpha, (int, float)) \
                or not math.isfinite(self.lora_alpha) or self.lora_alpha <= 0:
            raise ConfigError(f"LoRA lora_alpha must be a positive number, got {self.lora_alpha!r}")
        if not isinstance(self.lora_dropout, (int, float)) or not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"LoRA lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.bias != "none":
            raise ConfigError(f"LoRA bias={self.bias!r} is not supported (only 'none': biases stay frozen)")
        if self.init_lora_weights not in (True, False, "gaussian"):
            raise ConfigError(f"LoRA init_lora_weights={self.init_lora_weights!r} is not supported (True, False or "
                              f"'gaussian'; PiSSA, OLoRA, LoftQ ... rewrite the base weights)")
        if self.peft_type != "LORA":
            raise ConfigError(f"peft_type {self.peft_type!r} is not supported (only 'LORA')")
        if self.task_type is not None and self.task_type not in TASK_TYPES:
            raise ConfigError(f"LoRA task_type {self.task_type!r} is not one of {', '.join(TASK_TYPES)}")
        for name in ("target_modules", "exclude_modules"):
            value = getattr(self, name)
            if value is None or isinstance(value, str):
                continue
            if not value or not all(isinstance(t, str) and t for t in value):
                raise ConfigError(f"LoRA {name} must be a non-empty list of module names or one regex, got {value!r}")
        if self.modules_to_save is not None and not all(isinstance(t, str) and t for t in self.modules_to_save):
            raise ConfigError(f"LoRA modules_to_save must be a list of module names, got {self.modules_to_save!r}")

    @property
    def scaling(self) -> float:
        return self.lora_alpha / (math.sqrt(self.r) if self.use_rslora else self.r)

    def all_modules_to_save(self) -> list[str]:
        """modules_to_save plus the head PEFT adds for a classification task type, without repeats."""
        names = list(self.modules_to_save or []) + list(TASK_HEADS.get(self.task_type, ()))
        return list(dict.fromkeys(names))

    # -- adapter_config.json --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if isinstance(d["target_modules"], list):
            d["target_modules"] = sorted(set(d["target_modules"]))  # PEFT stores a set
        # The PEFT fields we do not model, at their defaults, so that PEFT reads the same adapter.
        d.update(use_dora=False, rank_pattern={}, alpha_pattern={}, layers_to_transform=None, layers_pattern=None,
                 lora_bias=False, fan_in_fan_out=False)
        return d

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        path = Path(directory) / CONFIG_NAME
        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "adapter config") -> LoraConfig:
        if d.get("peft_type", "LORA") != "LORA":
            raise ConfigError(f"{source}: peft_type {d.get('peft_type')!r} is not supported (only LoRA adapters)")
        for key, default in _UNSUPPORTED.items():
            value = d.get(key, default)
            if value not in _EMPTY and value != default:
                raise ConfigError(f"{source}: {key}={value!r} is a PEFT feature this package does not "
                                  f"implement (supported: plain LoRA on linear layers)")
        if d.get("bias", "none") != "none":
            raise ConfigError(f"{source}: bias={d['bias']!r} is not supported (only 'none')")
        init = d.get("init_lora_weights", True)
        if init not in _INITS + _LOADABLE_INITS:
            # PiSSA, OLoRA, CorDA, LoftQ, LoRA-GA ... also rewrite the base weights (W - BA): the trained
            # adapter needs that modified base, which its files do not hold.
            raise ConfigError(f"{source}: init_lora_weights={init!r} changes the base weights too; only "
                              f"adapters initialised with {', '.join(map(repr, _INITS + _LOADABLE_INITS))} "
                              f"load here")
        fields = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in d.items() if k in fields}
        kwargs["init_lora_weights"] = init if init in _INITS else True
        try:
            config = cls(**kwargs)
        except ConfigError as e:
            raise ConfigError(f"{source}: {e}") from None
        config.init_lora_weights = init  # the file's, written back as read (the weights load over the init)
        return config

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> LoraConfig:
        path = Path(directory) / CONFIG_NAME
        return cls.from_dict(read_json(path), str(path))


_fields_init = LoraConfig.__init__


@functools.wraps(_fields_init)
def _init(self: LoraConfig, *args: Any, **kwargs: Any) -> None:
    """The dataclass's __init__, with PEFT's settings that we do not implement refused as ConfigErrors
    naming them (as from_dict does), not a bare TypeError; at their defaults they are accepted."""
    fields = {f.name for f in dataclasses.fields(LoraConfig)}
    for key in [k for k in kwargs if k not in fields]:
        value = kwargs.pop(key)
        default = {**_UNSUPPORTED, "fan_in_fan_out": False}.get(key, _NOT_PEFT)
        if default is _NOT_PEFT:
            raise ConfigError(f"LoraConfig has no setting {key!r} (settings: {', '.join(sorted(fields))})")
        if value not in _EMPTY and value != default:
            what = "fan_in_fan_out is for GPT-2's Conv1D layers; our models' layers are nn.Linear" \
                if key == "fan_in_fan_out" else "supported: plain LoRA on linear layers"
            raise ConfigError(f"LoraConfig {key}={value!r} is a PEFT feature this package does not implement ({what})")
    _fields_init(self, *args, **kwargs)


_NOT_PEFT = object()
LoraConfig.__init__ = _init  # type: ignore[method-assign]
