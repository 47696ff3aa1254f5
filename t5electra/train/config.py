"""The run configuration: typed sections, read from YAML and ``--section.key=value`` overrides.

A run is described by one :class:`RunConfig` made of sections (``model``, ``data``, ``optim``,
``schedule``, ``train``, ``eval``, ``checkpoint``, ``electra`` for ELECTRA's own options, ``lora`` for LoRA fine-tuning).
Each field is declared with :func:`option`, which stores a one-line help text, so ``describe()``
can list every option with its type, default and meaning. Sources are applied in order: the dataclass defaults, then a YAML file, then
command-line overrides::

    cfg = load_config("experiments/t5_small.yaml", ["--optim.lr=3e-4", "--train.max_steps=1000"])

Values are parsed by the field's annotation (int, float, bool, str, list[...], dict, Optional);
an unknown section or key, or a value of the wrong type, is a :class:`~t5electra.errors.ConfigError`
that names it, says where it came from, and suggests the closest name. The resolved config is
written as ``config.yaml`` in the run directory; :func:`diff_configs` lists the fields in which two
configs differ (used to refuse resuming a run under a different config).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
import typing
from pathlib import Path
from typing import Any, Optional

import yaml

from ..core.atomic import write_text_atomic
from ..core.typed_config import _type_name, _yaml_value, coerce, option, suggest  # noqa: F401 (train.config.coerce)
from ..errors import ConfigError


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class ModelSection:
    """Which model to build or load."""

    family: str = option("t5", "model family: 't5' or 'electra'")
    preset: Optional[str] = option(None, "preset name of the model config (e.g. 't5-small', 'electra-small')")
    init_from: Optional[str] = option(None, "checkpoint directory to start from (HF layout); overrides preset")
    overrides: dict = option({}, "model config fields to change, e.g. {num_layers: 2, d_model: 64}; on the command "
                                 "line merged key by key into the YAML's ({} clears it), or one key: "
                                 "--model.overrides.num_layers=2")


@dataclasses.dataclass
class DataSection:
    """Where the examples come from and how they are shaped."""

    train_files: list[str] = option([], "training files (text, JSONL, CSV/TSV, Parquet; .gz too), directories "
                                        "of them or glob patterns; fine-tuning: your labelled file")
    validation_files: list[str] = option([], "validation files, as train_files (empty: no eval)")
    task: Optional[str] = option(None, "fine-tuning task or mixture name from the task registry")
    tokenizer: Optional[str] = option(None, "tokenizer directory (save_pretrained's; default: the model's)")
    objective: str = option("t5-span-corruption",
                            "pretraining objective: 't5-span-corruption', 'electra-rtd' or 'mlm'")
    max_length: int = option(128, "input length in tokens (after corruption, for span corruption)")
    target_length: Optional[int] = option(None, "target length in tokens (None: derived from the objective)")
    noise_density: float = option(0.15, "span corruption: fraction of tokens corrupted")
    mean_noise_span_length: float = option(3.0, "span corruption: mean length of a corrupted span")
    mask_prob: float = option(0.15, "MLM / RTD: fraction of tokens masked")
    num_workers: int = option(0, "data loader worker processes per rank")
    group_by_length: int = option(0, "fine-tuning: batches of similar lengths, grouped within windows of this "
                                     "many global batches (batch x accumulation x processes) of the shuffled "
                                     "stream, the same on any number of processes (less padding; 0: off)")
    # fine-tuning data (tasks from the registry, or your own files)
    task_dir: Optional[str] = option(None, "fine-tuning: folder with the task's files (GLUE TSVs, SQuAD JSON, or "
                                           "your train/dev/test files when data.task is None)")
    test_files: list[str] = option([], "fine-tuning: test files, scored once at the end (empty: the task's test split)")
    text_columns: list[str] = option([], "fine-tuning your files: the text column(s), one or a pair "
                                         "(empty: 'sentence' or 'text', with 'sentence2'/'text_pair' if present); "
                                         "pretraining: the JSONL field / CSV or Parquet column of the corpus "
                                         "(empty: 'text')")
    label_column: str = option("label", "fine-tuning your files: the label column")


@dataclasses.dataclass
class OptimSection:
    """Optimiser, its hyper-parameters, and which parameters decay."""

    name: str = option("adamw", "'adamw', 'adamw_scaled' (nanoT5's RMS-scaled AdamW) or 'adafactor'")
    lr: Optional[float] = option(1e-3, "peak learning rate (Adafactor with relative_step: None)")
    betas: list[float] = option([0.9, 0.999], "AdamW (beta1, beta2)")
    eps: float = option(1e-6, "AdamW epsilon, > 0 (ELECTRA and nanoT5 use 1e-6; 0 makes NaN weights)")
    weight_decay: float = option(0.0, "decoupled weight decay (ELECTRA: 0.01)")
    no_decay: list[str] = option(["bias", "LayerNorm", "layer_norm", "layernorm", "norm.weight"],
                                 "name substrings of parameters excluded from weight decay")
    decay_embeddings: bool = option(True, "apply weight decay to embedding matrices")
    layerwise_lr_decay: Optional[float] = option(None, "ELECTRA fine-tuning: lr factor per layer below the "
                                                       "head (0.8 for Small/Base); None: off")
    max_grad_norm: Optional[float] = option(1.0, "clip the global gradient norm to this (None: no clipping)")
    bias_correction: bool = option(True, "adamw, adamw_scaled: divide Adam's moments by (1 - beta^t) (torch, "
                                         "transformers); false: no correction, as the official ELECTRA/BERT "
                                         "AdamWeightDecayOptimizer (steps x3.2 larger at step 100, x1.26 at 1000)")
    fused: Optional[bool] = option(None, "adamw, adamw_scaled: torch's fused AdamW kernel (one pass per "
                                         "parameter; on CPU ~3x faster optimiser step, same update within float "
                                         "rounding). None: on for adamw and adamw_scaled (CPU); false: the "
                                         "per-parameter loop")
    # Adafactor (T5)
    adafactor_scale_parameter: bool = option(True, "Adafactor: scale the step by the parameter's RMS")
    adafactor_relative_step: bool = option(False, "Adafactor: lr = min(1e-2, 1/sqrt(step)) (set lr: null)")
    adafactor_warmup_init: bool = option(False, "Adafactor: with relative_step, ramp lr as 1e-6 * step")
    adafactor_clip_threshold: float = option(1.0, "Adafactor: clip the update's RMS to this")
    adafactor_decay_rate: float = option(-0.8, "Adafactor: second-moment decay exponent")
    adafactor_beta1: Optional[float] = option(None, "Adafactor: first-moment coefficient (None: no momentum)")


@dataclasses.dataclass
class ScheduleSection:
    """Learning-rate schedule (a multiplier on optim.lr, per optimiser step)."""

    name: str = option("linear", "'constant', 'linear', 'cosine' or 'inverse_sqrt'")
    warmup_steps: int = option(0, "linear warmup steps (inverse_sqrt: steps at the peak before the decay)")
    warmup_ratio: float = option(0.0, "warmup as a fraction of train.max_steps (used when larger)")
    min_lr_ratio: float = option(0.0, "final lr as a fraction of the peak (linear, cosine)")
    decay_from_start: bool = option(False, "linear: decay counted from step 0, as in ELECTRA's official "
                                           "code, instead of from the end of warmup")


@dataclasses.dataclass
class TrainSection:
    """The loop: length, batch, precision, logging."""

    output_dir: str = option("runs/run", "run directory: config.yaml, metrics.jsonl, checkpoints/")
    max_steps: int = option(1000, "optimiser steps to train")
    batch_size: int = option(32, "examples per micro-batch on each process")
    grad_accum_steps: int = option(1, "micro-batches per optimiser step (global batch = batch_size x "
                                      "grad_accum_steps x processes)")
    seed: int = option(0, "seed of python, numpy and torch (each rank adds its rank)")
    precision: str = option("fp32", "'fp32' or 'bf16' (autocast; with fsdp: bf16 compute, fp32 master weights "
                                    "and gradient reductions); fp16 is refused (see docs/training.md)")
    distributed: str = option("auto", "'none', 'ddp' (each process a whole copy) or 'fsdp' (parameters, gradients "
                                      "and optimizer state sharded per T5 block / ELECTRA layer; needs torchrun); "
                                      "'auto': ddp under torchrun with several processes, else none")
    activation_checkpointing: bool = option(False, "recompute each block's activations in backward instead of "
                                                   "keeping them (less memory, ~1/3 more compute, same gradients)")
    device: str = option("auto", "'auto', 'cpu', 'cuda' or 'cuda:N' (torchrun: cuda:LOCAL_RANK)")
    deterministic: bool = option(False, "bitwise-reproducible runs and resumes on GPUs: deterministic kernels "
                                        "only (torch.use_deterministic_algorithms, process-wide; slower). CPU "
                                        "training is deterministic without it")
    log_every: int = option(10, "write train metrics every this many steps")
    progress: bool = option(True, "show a progress bar (rank 0, on a terminal)")
    tensorboard: bool = option(True, "also write TensorBoard events when tensorboard is installed")


@dataclasses.dataclass
class EvalSection:
    """Evaluation on the validation split during training."""

    every_steps: int = option(0, "evaluate every this many steps (0: only at the end, if data)")
    max_batches: Optional[int] = option(None, "cap on validation batches per evaluation (None: all)")
    batch_size: Optional[int] = option(None, "validation batch size (None: train.batch_size)")
    metric: str = option("loss", "metric that picks the best checkpoint (e.g. 'accuracy')")
    greater_is_better: Optional[bool] = option(None, "whether a higher eval.metric is better; None: from its name "
                                                     "(lower: loss, perplexity, mse, ...; higher: accuracy, f1, "
                                                     "bleu, rouge*, pearson, mcc, auc, ...); a value that "
                                                     "contradicts a known metric is refused")


@dataclasses.dataclass
class CheckpointSection:
    """When to save, what to keep, where to resume from."""

    every_steps: int = option(500, "save every this many steps (0: only at the end)")
    keep_last: int = option(3, "step checkpoints kept (older ones are deleted; the best is always kept)")
    keep_best: bool = option(True, "keep the best checkpoint by eval.metric")
    resume: Optional[str] = option(None, "'auto' (latest in train.output_dir, if any), a run directory "
                                         "or a checkpoint directory; None: start fresh")
    overwrite: bool = option(False, "start fresh even if train.output_dir holds a run: its config.yaml, "
                                    "metrics.jsonl, checkpoints/, model/, adapter/, results.json, plots/ and tensorboard/ are "
                                    "deleted first (without it such a run is refused)")
    allow_data_change: bool = option(False, "resume even though the data files (or tokenizer) changed since the "
                                            "checkpoint (refused by default: the data cursor would point into other "
                                            "data)")


@dataclasses.dataclass
class ElectraSection:
    """ELECTRA only: the pretraining generator and loss weight, the fine-tuning head."""

    generator_size: Optional[float] = option(None, "pretraining: generator hidden size as a fraction of the "
                                                   "discriminator's (paper: 1/4 Small, 1/3 Base); None: the "
                                                   "preset's generator, else 1/4")
    disc_weight: float = option(50.0, "pretraining: weight of the discriminator loss (generator loss weight 1)")
    head: Optional[str] = option(None, "fine-tuning head: 'classification', 'regression', 'token_classification' "
                                       "or 'qa' (None: from the task)")
    doc_stride: int = option(128, "QA: tokens shared by consecutive windows of a long context")
    max_answer_length: int = option(30, "QA: longest answer span in tokens")


@dataclasses.dataclass
class LoraSection:
    """Fine-tuning only: LoRA adapters (t5electra/lora/) train instead of every weight."""

    r: Optional[int] = option(None, "adapter rank (e.g. 8); None: full fine-tuning, every weight trains")
    alpha: float = option(8.0, "the updates are scaled by alpha / r (PEFT's lora_alpha)")
    dropout: float = option(0.0, "dropout on the adapters' input while training")
    target_modules: list[str] = option([], "transformers module names to adapt (T5: q, k, v, o, wi or wi_0/wi_1, "
                                           "wo; ELECTRA: query, key, value, dense), or [all-linear]; empty: q, v / "
                                           "query, value")
    modules_to_save: list[str] = option([], "modules trained in full besides the adapters (an ELECTRA task head "
                                            "always is)")
    rslora: bool = option(False, "rank-stabilised scaling alpha / sqrt(r)")


SECTIONS: dict[str, type] = {
    "model": ModelSection,
    "data": DataSection,
    "optim": OptimSection,
    "schedule": ScheduleSection,
    "train": TrainSection,
    "eval": EvalSection,
    "checkpoint": CheckpointSection,
    "electra": ElectraSection,
    "lora": LoraSection,
}


@dataclasses.dataclass
class RunConfig:
    """Everything a training run needs, by section."""

    model: ModelSection = dataclasses.field(default_factory=ModelSection)
    data: DataSection = dataclasses.field(default_factory=DataSection)
    optim: OptimSection = dataclasses.field(default_factory=OptimSection)
    schedule: ScheduleSection = dataclasses.field(default_factory=ScheduleSection)
    train: TrainSection = dataclasses.field(default_factory=TrainSection)
    eval: EvalSection = dataclasses.field(default_factory=EvalSection)
    checkpoint: CheckpointSection = dataclasses.field(default_factory=CheckpointSection)
    electra: ElectraSection = dataclasses.field(default_factory=ElectraSection)
    lora: LoraSection = dataclasses.field(default_factory=LoraSection)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTIONS}

    def update(self, values: dict[str, Any], source: str = "<dict>") -> "RunConfig":
        """Set values from ``{section: {key: value}}`` in place; every key and type checked."""
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a mapping of sections, got {type(values).__name__}")
        for section, entries in values.items():
            if entries is None:
                continue
            if not isinstance(entries, dict):
                raise ConfigError(f"{source}: section {section!r} must be a mapping, got {entries!r}")
            for key, value in entries.items():
                set_value(self, f"{section}.{key}", value, source, parse_strings=False)
        return self

    def save_yaml(self, path: str | os.PathLike) -> Path:
        """Write the resolved config (atomic: core/atomic.py)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_text_atomic(path, WORKDIR_COMMENT.format(os.getcwd()) +
                                 yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "<dict>") -> "RunConfig":
        return cls().update(values, source)


# --------------------------------------------------------------------------------------------
# Typed parsing
# --------------------------------------------------------------------------------------------
def _field(cfg: RunConfig, dotted: str, source: str) -> tuple[Any, dataclasses.Field, Any]:
    """(section object, field, annotation) for ``"optim.lr"``; ConfigError with a suggestion."""
    section, _, key = dotted.partition(".")
    everywhere = [f"{s}.{f.name}" for s, c in SECTIONS.items() for f in dataclasses.fields(c)]
    if section not in SECTIONS:
        if not key:  # "--lr=1e-4": a key without its section
            raise ConfigError(f"{source}: {section!r} needs its section (--section.key=value){_key_hint(section, everywhere)}")
        raise ConfigError(f"{source}: unknown config section {section!r}{suggest(section, SECTIONS)}; "
                          f"sections: {', '.join(SECTIONS)}")
    if not key:
        raise ConfigError(f"{source}: {dotted!r} names a section, expected section.key (e.g. optim.lr)")
    cls = SECTIONS[section]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        # an exact name in another section first ("--train.lr" -> optim.lr), then close names in this
        # section, then across sections ("--optim.warmup_steps" -> schedule.warmup_steps)
        hint = _key_hint(key, everywhere, exact_only=True) or suggest(key, fields) or suggest(dotted, everywhere) \
            or _key_hint(key, everywhere)
        raise ConfigError(f"{source}: unknown key {key!r} in section {section!r}{hint}")
    hints = typing.get_type_hints(cls)
    return getattr(cfg, section), fields[key], hints[key]


def _key_hint(key: str, everywhere: list[str], exact_only: bool = False) -> str:
    """' (did you mean 'optim.lr'?)' for a key name as some section has it (or a close one)."""
    exact = [e for e in everywhere if e.endswith("." + key)]
    if exact:
        return f" (did you mean {' or '.join(repr(e) for e in exact)}?)"
    if exact_only:
        return ""
    names = {e.partition(".")[2]: e for e in everywhere}
    close = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    return f" (did you mean {names[close[0]]!r}?)" if close else ""


# Fields that hold paths: a leading ~ is expanded wherever the value comes from (the shell does not
# expand it after --key=), and the resume check compares them normalised (diff_configs).
PATH_FIELDS = frozenset({"model.init_from", "data.train_files", "data.validation_files", "data.test_files",
                         "data.tokenizer", "data.task_dir", "train.output_dir", "checkpoint.resume"})


def expand_path(value: Any) -> Any:
    """``~`` / ``~user`` expanded in a path or in each path of a list (None stays None)."""
    if isinstance(value, list):
        return [expand_path(v) for v in value]
    return os.path.expanduser(value) if isinstance(value, str) else value


def set_value(cfg: RunConfig, dotted: str, value: Any, source: str, parse_strings: bool = True,
              merge: bool = False) -> None:
    """Set ``section.key`` (or one entry of a mapping field: ``model.overrides.num_layers``). With
    ``merge`` (command-line overrides) a mapping is merged key by key into the one already there (a
    YAML's); ``{}`` clears it."""
    section, _, rest = dotted.partition(".")
    key, _, entry = rest.partition(".")
    if entry:
        obj, f, tp = _field(cfg, f"{section}.{key}", source)
        if not (tp is dict or typing.get_origin(tp) is dict):
            raise ConfigError(f"{source}: {section}.{key} is not a mapping, so {dotted!r} names nothing; "
                              f"use --{section}.{key}=VALUE")
        if parse_strings and isinstance(value, str):
            value = _yaml_value(value, f"{source}: {dotted}")
        setattr(obj, f.name, {**getattr(obj, f.name), entry: value})
        return
    obj, f, tp = _field(cfg, dotted, source)
    value = coerce(value, tp, f"{source}: {dotted}", parse_strings)
    if merge and isinstance(value, dict) and value:
        value = {**getattr(obj, f.name), **value}
    if f"{dotted.partition('.')[0]}.{f.name}" in PATH_FIELDS:
        value = expand_path(value)
    setattr(obj, f.name, value)


def parse_overrides(args: list[str]) -> list[tuple[str, str]]:
    """``["--optim.lr=3e-4", "train.seed=1", "--train.max_steps", "10"]`` -> [(key, raw value)]."""
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        body = arg[2:] if arg.startswith("--") else arg
        if "=" in body:
            key, value = body.split("=", 1)
        elif arg.startswith("--") and "." in body and i + 1 < len(args):
            key, value = body, args[i + 1]
            if value.startswith("--"):  # "--data.tokenizer --model.preset=t5-tiny": the value is missing
                raise ConfigError(f"{arg} has no value (the next argument is {value!r}): give --{body}=VALUE")
            i += 1
        else:
            raise ConfigError(f"cannot read override {arg!r}: expected --section.key=value (e.g. --optim.lr=3e-4)")
        out.append((key.strip(), value))
        i += 1
    return out


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None,
                base: RunConfig | None = None) -> RunConfig:
    """Defaults (or ``base``), then the YAML file at ``path``, then ``overrides``; all checked."""
    cfg = base if base is not None else RunConfig()
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file {str(p)!r} does not exist") from None
        except IsADirectoryError:
            raise ConfigError(f"--config {str(p)!r} is a directory: give the YAML file (e.g. {p / 'config.yaml'})"
                              ) from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"config file {str(p)!r} is not UTF-8 text ({e.reason} at byte {e.start}): save it "
                              f"as UTF-8") from None
        except OSError as e:
            raise ConfigError(f"cannot read config file {str(p)!r} ({e.strerror or e})") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML ({e})") from None
        cfg.update(data or {}, source=str(p))
    for key, value in parse_overrides(list(overrides or [])):
        set_value(cfg, key, value, source=f"--{key}={value}", merge=True)
    validate(cfg)
    return cfg


_CHOICES = {
    "model.family": ("t5", "electra"),
    "data.objective": ("t5-span-corruption", "electra-rtd", "mlm", "finetune"),
    "optim.name": ("adamw", "adamw_scaled", "adafactor"),
    "schedule.name": ("constant", "linear", "cosine", "inverse_sqrt"),
    "train.precision": ("fp32", "bf16"),
    "train.distributed": ("auto", "none", "ddp", "fsdp"),
}


def validate(cfg: RunConfig) -> None:
    """Cross-field and choice checks, with messages that name the key."""
    flat = flatten(cfg.to_dict())
    for key, choices in _CHOICES.items():
        if flat[key] not in choices:
            hint = " (fp16 overflows in T5's feed-forward; use bf16)" if flat[key] == "fp16" else \
                suggest(str(flat[key]), choices)
            raise ConfigError(f"{key}={flat[key]!r} is not one of {', '.join(choices)}{hint}")
    for key in ("train.max_steps", "train.batch_size", "train.grad_accum_steps", "train.log_every"):
        if flat[key] < 1:
            raise ConfigError(f"{key} must be >= 1, got {flat[key]}")
    if cfg.optim.lr is None and not (cfg.optim.name == "adafactor" and cfg.optim.adafactor_relative_step):
        raise ConfigError("optim.lr is None: only Adafactor with optim.adafactor_relative_step=true has no lr")
    if cfg.checkpoint.keep_last < 1:
        raise ConfigError(f"checkpoint.keep_last must be >= 1, got {cfg.checkpoint.keep_last}")
    if not str(cfg.train.output_dir).strip():  # "" would be the working directory (and overwrite clears it)
        raise ConfigError("train.output_dir is empty: name the run directory (e.g. runs/my-run)")
    for key, value in flat.items():  # NaN or inf in any number (e.g. --optim.lr=nan) is never meant
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, float) and not math.isfinite(v) for v in values):
            raise ConfigError(f"{key}={value!r}: expected a finite number")
    for key, low, high, what in _RANGES:
        value = flat[key]
        if value is None:
            continue
        if not ((low is None or _above(value, low)) and (high is None or _below(value, high))):
            raise ConfigError(f"{key}={value!r}: must be {what}")
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", cfg.train.device):
        raise ConfigError(f"train.device={cfg.train.device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'")
    if cfg.train.distributed == "fsdp" and cfg.optim.name != "adamw":
        raise ConfigError(f"optim.name={cfg.optim.name!r} with train.distributed=fsdp: its per-parameter RMS and "
                          f"factored moments are not checked on sharded parameters yet; use optim.name=adamw")
    if not cfg.optim.bias_correction:
        if cfg.optim.name not in ("adamw", "adamw_scaled"):
            raise ConfigError(f"optim.bias_correction=false is for optim.name=adamw or adamw_scaled (Adam's moments), "
                              f"not {cfg.optim.name!r}")
        if cfg.optim.fused:
            raise ConfigError("optim.bias_correction=false with optim.fused=true: torch's fused AdamW kernel always "
                              "corrects the moments; leave optim.fused unset (the per-parameter loop runs)")
        if cfg.train.distributed == "fsdp":
            raise ConfigError("optim.bias_correction=false with train.distributed=fsdp: that optimizer is not checked "
                              "on sharded parameters yet; use ddp, or keep the bias correction")
    if cfg.optim.eps == 0 and cfg.optim.name in ("adamw", "adamw_scaled"):
        raise ConfigError(f"optim.eps=0 with optim.name={cfg.optim.name!r}: Adam divides by sqrt(v) + eps, and v is 0 "
                          f"for every weight whose gradient has been 0 so far (embedding rows of tokens not seen yet), "
                          f"so 0/0 makes those weights NaN at the first step; use optim.eps > 0, e.g. 1e-6 (ELECTRA, "
                          f"nanoT5) or 1e-8 (torch's default)")
    resolve_greater_is_better(cfg.eval.metric, cfg.eval.greater_is_better)
    betas = cfg.optim.betas
    if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
        raise ConfigError(f"optim.betas={betas!r}: expected two coefficients in [0, 1), e.g. [0.9, 0.999]")


# (key, lower bound, upper bound, what the message says). A bound as ("open", x) excludes x.
_RANGES: tuple[tuple[str, Any, Any, str], ...] = (
    ("optim.lr", ("open", 0.0), None, "a learning rate > 0, e.g. 1e-3"),
    ("optim.eps", 0.0, None, ">= 0 (e.g. 1e-6)"),
    ("optim.weight_decay", 0.0, None, ">= 0 (e.g. 0.01)"),
    ("optim.max_grad_norm", 0.0, None, ">= 0 (0 or null: no clipping)"),
    ("optim.layerwise_lr_decay", ("open", 0.0), 1.0, "in (0, 1] (e.g. 0.8), or null for off"),
    ("optim.adafactor_clip_threshold", ("open", 0.0), None, "> 0"),
    # beta2_t = 1 - t^decay_rate: a positive exponent makes it negative from step 2 on, then the second
    # moments negative and the weights NaN
    ("optim.adafactor_decay_rate", None, 0.0, "<= 0 (T5: -0.8; the second moment's beta2 at step t is 1 - t^rate)"),
    ("optim.adafactor_beta1", 0.0, ("open", 1.0), "in [0, 1) (e.g. 0.9), or null for no momentum"),
    ("train.seed", 0, ("open", 2**32), "in [0, 2**32) (what numpy's and torch's seeding accept)"),
    ("data.max_length", 2, None, "at least 2 tokens"),
    ("data.target_length", 1, None, "at least 1 token, or null (derived from the objective)"),
    ("data.noise_density", ("open", 0.0), ("open", 1.0), "a fraction in (0, 1), e.g. 0.15"),
    ("data.mean_noise_span_length", 1.0, None, "a span length >= 1 token, e.g. 3"),
    ("data.mask_prob", ("open", 0.0), ("open", 1.0), "a fraction in (0, 1), e.g. 0.15"),
    ("data.num_workers", 0, None, ">= 0"),
    ("data.group_by_length", 0, None, ">= 0 (0: off)"),
    ("schedule.warmup_steps", 0, None, ">= 0"),
    ("schedule.warmup_ratio", 0.0, 1.0, "a fraction in [0, 1]"),
    ("schedule.min_lr_ratio", 0.0, 1.0, "a fraction in [0, 1]"),
    ("eval.every_steps", 0, None, ">= 0 (0: only at the end)"),
    ("eval.max_batches", 1, None, ">= 1, or null for all"),
    ("eval.batch_size", 1, None, ">= 1, or null for train.batch_size"),
    ("checkpoint.every_steps", 0, None, ">= 0 (0: only at the end)"),
    ("electra.generator_size", ("open", 0.0), None, "a fraction > 0 of the discriminator's hidden size (e.g. 0.25)"),
    ("electra.disc_weight", 0.0, None, ">= 0"),
    ("electra.doc_stride", 1, None, ">= 1"),
    ("electra.max_answer_length", 1, None, ">= 1"),
    ("lora.r", 1, None, "a rank >= 1 (e.g. 8), or null for full fine-tuning"),
    ("lora.alpha", ("open", 0.0), None, "> 0 (e.g. 16)"),
    ("lora.dropout", 0.0, ("open", 1.0), "in [0, 1)"),
)


# Which way a metric is better, by its name (the last "_" part, so gen_loss, disc_auc, macro_f1 and
# sequence_accuracy are known too; a mixture's "task/metric" is its metric's).
LOWER_IS_BETTER = frozenset({"loss", "perplexity", "ppl", "mse", "rmse", "mae", "error", "err", "wer", "cer", "ter"})
HIGHER_IS_BETTER = frozenset({"accuracy", "acc", "f1", "em", "exact_match", "precision", "recall", "auc", "mcc",
                              "matthews", "matthews_corrcoef", "pearson", "spearman", "bleu", "sacrebleu", "chrf",
                              "meteor", "average", "rouge1", "rouge2", "rougel", "rougelsum"})


def metric_direction(metric: str) -> bool | None:
    """True when higher values of ``metric`` are better, False when lower are, None when the name
    does not say. ``auto`` (ELECTRA fine-tuning: the task's first metric, accuracy, Matthews corr.,
    Pearson or SQuAD F1) is higher."""
    name = str(metric).rsplit("/", 1)[-1].lower()
    if name == "auto":
        return True
    last = name.rsplit("_", 1)[-1]
    if name in LOWER_IS_BETTER or last in LOWER_IS_BETTER:
        return False
    if name in HIGHER_IS_BETTER or last in HIGHER_IS_BETTER or name.startswith("rouge"):
        return True
    return None


def resolve_greater_is_better(metric: str, greater_is_better: bool | None) -> bool:
    """``eval.greater_is_better`` as given, or else from ``eval.metric``'s name; ConfigError for a value
    that contradicts the metric (the best checkpoint would be the worst), or for a metric whose
    direction is not known and not given."""
    known = metric_direction(metric)
    if greater_is_better is None:
        if known is None:
            names = sorted(LOWER_IS_BETTER | HIGHER_IS_BETTER)
            raise ConfigError(f"eval.metric={metric!r}: not a metric whose direction is known{suggest(metric, names)}; "
                              f"for a metric of your own, say which way is better with eval.greater_is_better=true "
                              f"(higher) or false (lower)")
        return known
    if known is not None and bool(greater_is_better) != known:
        raise ConfigError(f"eval.greater_is_better={str(greater_is_better).lower()} contradicts eval.metric={metric!r}: "
                          f"{'higher' if known else 'lower'} is better, so the best checkpoint would be the worst; "
                          f"leave eval.greater_is_better unset (it follows the metric)")
    return bool(greater_is_better)


def _above(value: Any, bound: Any) -> bool:
    return value > bound[1] if isinstance(bound, tuple) else value >= bound


def _below(value: Any, bound: Any) -> bool:
    return value < bound[1] if isinstance(bound, tuple) else value <= bound


# The first line of a run's config.yaml: where its relative paths start (``t5electra evaluate RUN``
# reads the run's data from another directory too).
WORKDIR_COMMENT = "# working directory: {} (relative paths below start there)\n"


def saved_workdir(config_text: str) -> Path | None:
    """The working directory a run's ``config.yaml`` (its text) was written from (None: not recorded)."""
    first = config_text.split("\n", 1)[0]
    m = re.fullmatch(r"# working directory: (.*) \(relative paths below start there\)", first)
    return Path(m.group(1)) if m else None


def preset_family(preset: str | None) -> str | None:
    """The model family a ``model.preset`` name says (``electra-*``: electra; ``t5-*``, ``mt5-*``,
    ``umt5-*``: t5), None for no preset or another name."""
    name = str(preset or "").strip().lower()
    if name.startswith("electra"):
        return "electra"
    if name.startswith(("t5", "mt5", "umt5")):
        return "t5"
    return None


def run_inputs(cfg: RunConfig) -> dict[str, Any]:
    """The paths a run reads (``--checkpoint.overwrite`` must not delete them)."""
    return {"model.init_from": cfg.model.init_from, "data.tokenizer": cfg.data.tokenizer,
            "data.train_files": cfg.data.train_files, "data.validation_files": cfg.data.validation_files,
            "data.test_files": cfg.data.test_files, "data.task_dir": cfg.data.task_dir}


# --------------------------------------------------------------------------------------------
# Diff (resume check) and help
# --------------------------------------------------------------------------------------------
def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": 1}}`` -> ``{"optim.lr": 1}`` (model.overrides stays one value)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not prefix:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# Fields that may change when a run is resumed without changing its training trajectory. The
# per-process batch and accumulation may change with the number of processes: the resume check
# compares the global batch (train.batch_size x train.grad_accum_steps x processes) instead.
RESUME_SAFE = frozenset({
    "train.batch_size", "train.grad_accum_steps", "train.distributed", "train.activation_checkpointing",
    "checkpoint.resume", "checkpoint.overwrite", "checkpoint.allow_data_change", "checkpoint.keep_last", "checkpoint.every_steps", "checkpoint.keep_best",
    "train.output_dir", "train.log_every", "train.progress", "train.tensorboard", "data.num_workers",
    "eval.every_steps", "eval.max_batches", "eval.batch_size",
    "eval.metric",  # which checkpoint is "best": a typo found at the first evaluation is fixed by resuming
    "eval.greater_is_better",  # with it: CheckpointManager re-ranks the kept checkpoints when either changes
    # fused AdamW and the per-parameter loop: the same update within float rounding and the same state
    # (a run started before fused became the default resumes with it)
    "optim.fused",
})


# Fields the NaN guard's advice changes (train/nan_guard.py): a run it stopped resumes from its last
# good checkpoint with them changed, with a warning that the run is no longer the uninterrupted one.
# A changed optim.lr is the schedule's new peak: CheckpointManager.load rescales the learning rates
# the optimizer and scheduler states bring back (they hold the old one).
RESUME_ADJUSTABLE = frozenset({"optim.lr", "optim.max_grad_norm", "train.precision"})


def diff_configs(a: RunConfig | dict, b: RunConfig | dict, ignore=RESUME_SAFE,
                 workdirs: tuple[Any, Any] | None = None) -> list[tuple[str, Any, Any]]:
    """``[(key, value in a, value in b)]`` for every flattened key whose values differ.

    A key that only one side has (an option added in a later version) counts as equal when the
    other side holds its default: a run saved before the option existed behaved like the default.
    Paths (:data:`PATH_FIELDS`) are compared as the files they name: each side's relative paths
    resolved against its working directory (``workdirs``; default: this one), ``./``, ``..`` and
    trailing slashes normalised (``etok/`` is ``etok``); the data fingerprint catches changed files.
    """
    fa = flatten(a.to_dict() if isinstance(a, RunConfig) else a)
    fb = flatten(b.to_dict() if isinstance(b, RunConfig) else b)
    defaults = flatten(RunConfig().to_dict())
    missing = object()
    out = []
    for key in sorted(set(fa) | set(fb)):
        if key in ignore:
            continue
        va, vb = fa.get(key, missing), fb.get(key, missing)
        if (va is missing or vb is missing) and key in defaults and _norm(defaults[key]) == _norm(
                vb if va is missing else va):
            continue
        if _norm(va) != _norm(vb) and not (key in PATH_FIELDS and va is not missing and vb is not missing
                                           and _same_paths(va, vb, workdirs or (os.getcwd(), os.getcwd()))):
            out.append((key, None if va is missing else va, None if vb is missing else vb))
    return out


def _same_paths(a: Any, b: Any, workdirs: tuple[Any, Any]) -> bool:
    def resolved(v: Any, wd: Any) -> Any:
        if isinstance(v, (list, tuple)):
            return [resolved(x, wd) for x in v]
        if isinstance(v, str) and v.strip():
            return os.path.normpath(os.path.join(str(wd), os.path.expanduser(v)))
        return v
    return resolved(a, workdirs[0]) == resolved(b, workdirs[1])


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def format_diff(diff: list[tuple[str, Any, Any]], a_name: str = "saved", b_name: str = "now") -> str:
    return "; ".join(f"{k}: {va!r} ({a_name}) != {vb!r} ({b_name})" for k, va, vb in diff)


def describe(cls: type = RunConfig) -> str:
    """Every option as ``--section.key (type, default): help``, for ``--help`` texts and docs."""
    lines = []
    for section, sec_cls in SECTIONS.items():
        lines.append(f"{section}: {sec_cls.__doc__.strip()}")
        hints = typing.get_type_hints(sec_cls)
        for f in dataclasses.fields(sec_cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  --{section}.{f.name} ({_type_name(hints[f.name])}, default {default!r}): "
                         f"{f.metadata.get('help', '')}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Command-line subcommands
# --------------------------------------------------------------------------------------------
def add_config_arguments(parser) -> None:
    """Give an argparse subcommand ``--config FILE`` and ``--section.key=value`` overrides.

    The ``t5electra`` entry point (cli.py) hands the arguments it does not know to such a
    subcommand as ``args.overrides``; :func:`config_from_args` then builds the checked config.
    Every option is listed in the subcommand's ``--help``.
    """
    parser.add_argument("--config", metavar="FILE", help="YAML run config; --section.key=value arguments override it")
    parser.set_defaults(accepts_overrides=True, overrides=[])
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("run options (--section.key=value, after the defaults and --config):\n" +
                     describe().replace("%", "%%"))


# Shown above the option list of `pretrain --help` / `finetune --help`: the list's defaults are the engine's
RECIPE_DEFAULTS_NOTE = ("the defaults listed below are the engine's; the ELECTRA recipes start from their own (e.g. "
                        "ELECTRA fine-tuning: optim.lr 1e-4, weight decay 0.01, layerwise_lr_decay 0.8, warmup_ratio 0.1). "
                        "`t5electra config --for {command} [your options]` prints the config this command would "
                        "run, recipe defaults included.\n\n")


def config_from_args(args, base: RunConfig | None = None) -> RunConfig:
    """The RunConfig of a subcommand that called :func:`add_config_arguments`."""
    return load_config(getattr(args, "config", None), list(getattr(args, "overrides", []) or []), base=base)
