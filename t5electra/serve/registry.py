"""The models a server holds, loaded once at start-up from directories named on the command line.

A directory is recognised by what it contains:

- ``config.json`` with ``model_type: "t5"`` -> :class:`T5ForConditionalGeneration` (generate);
- ``config.json`` with ``model_type: "electra"`` (or ``"bert"``) -> the class its ``architectures``
  names: ``ElectraForMaskedLM`` (a generator: fill-mask), ``ElectraForPreTraining`` (a
  discriminator: detect), ``ElectraForSequenceClassification`` (a fine-tuned head: classify);
- no config.json but ``generator/`` and/or ``discriminator/`` sub-directories -> an ELECTRA
  pretraining run (``ElectraPretrainer.save_pretrained``): fill-mask, detect and, with both,
  correct;
- no config.json but ``adapter_config.json`` -> a LoRA adapter (PEFT's layout): loaded on its base
  model (the adapter's ``base_model_name_or_path``) and merged in once, at start-up, so it is
  served as fast as the base (t5electra/lora/merge.py);
- none of these but ``model/`` (or ``adapter/``, or ``checkpoints/``) -> a training run: its final
  model (or LoRA adapter, or latest checkpoint), as ``generate`` and ``evaluate`` read it.

The tokenizer is loaded from the same directory (for a pretraining run: from it or one of its two
sub-directories; for an adapter without one: from its base). Every model can show its attention. Requests name models by these names only:
nothing a request says can reach the file system.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointNotFoundError, ConfigError
from ..lora.merge import is_adapter_dir, merged_model, tokenizer_dir
from ..models.registry import ARCHITECTURES, architecture
from ..pipelines import ElectraPipeline
from ..tokenizers import ElectraTokenizer, T5Tokenizer
from ..train.checkpointing import follow_pointer, run_model_dir
from .batching import DynamicBatcher
from .config import ServeConfig

logger = logging.getLogger("t5electra.serve")

# Task names, as in the URLs (/v1/<task>).
GENERATE, FILL_MASK, DETECT, CORRECT, CLASSIFY, ATTENTION = (
    "generate", "fill-mask", "detect", "correct", "classify", "attention")
ELECTRA_CLASSES = ("ElectraForMaskedLM", "ElectraForPreTraining", "ElectraForSequenceClassification")
# an ELECTRA model's head (models/registry.py) -> (kind, ServedModel slot)
SERVED_HEADS = {"generator": ("electra-generator", "generator"), "discriminator": ("electra-discriminator", "discriminator"),
                "classification": ("electra-classifier", "classifier")}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclasses.dataclass
class ServedModel:
    """One entry of the registry: a tokenizer, one or two models, what they can do."""

    name: str
    family: str                      # "t5" or "electra"
    kind: str                        # "t5", "electra-pretrainer", "electra-generator", ...
    tokenizer: Any
    t5: Any = None                   # T5ForConditionalGeneration
    generator: Any = None            # ElectraForMaskedLM
    discriminator: Any = None        # ElectraForPreTraining
    classifier: Any = None           # ElectraForSequenceClassification
    batcher: DynamicBatcher | None = None

    @property
    def tasks(self) -> list[str]:
        tasks = []
        if self.t5 is not None:
            tasks.append(GENERATE)
        if self.generator is not None:
            tasks.append(FILL_MASK)
        if self.discriminator is not None:
            tasks.append(DETECT)
        if self.generator is not None and self.discriminator is not None:
            tasks.append(CORRECT)
        if self.classifier is not None:
            tasks.append(CLASSIFY)
        return tasks + [ATTENTION]

    def components(self) -> dict[str, Any]:
        """The models whose attention can be shown, by name (the first is the default)."""
        named = {"t5": self.t5, "discriminator": self.discriminator, "generator": self.generator,
                 "classifier": self.classifier}
        return {k: m for k, m in named.items() if m is not None}

    def max_positions(self) -> int | None:
        """Longest input the model can read (ELECTRA's learned positions), None for T5."""
        for m in (self.discriminator, self.generator, self.classifier):
            if m is not None:
                return m.config.max_position_embeddings
        return None

    def info(self) -> dict[str, Any]:
        """What GET /v1/models says about this model (no file paths)."""
        comps = {}
        for cname, m in self.components().items():
            c = m.config
            if cname == "t5":
                shape = {"num_layers": c.num_layers, "num_decoder_layers": c.decoder_layers,
                         "num_heads": c.num_heads, "d_model": c.d_model}
            else:
                shape = {"num_layers": c.num_hidden_layers, "num_heads": c.num_attention_heads,
                         "hidden_size": c.hidden_size}
            comps[cname] = {"architecture": type(m).__name__, "parameters": m.num_parameters(),
                            "vocab_size": c.vocab_size, **shape}
        first = next(iter(self.components().values()))
        report = getattr(first, "inference_report", None)  # optimize_for_inference's choice (--weights)
        out = {"name": self.name, "family": self.family, "kind": self.kind, "tasks": self.tasks,
               "components": comps, "dtype": str(first.dtype).replace("torch.", ""),
               "weights": report.weights if report is not None else "fp32",
               "kernels": report.kernel + report.note if report is not None else "plain modules"}
        if self.classifier is not None:
            c = self.classifier.config
            out["labels"] = [c.id2label[i] for i in range(c.num_labels)]
            out["problem_type"] = c.problem_type
        if self.family == "electra":
            out["mask_token"] = self.tokenizer.mask_token
        return out


def _read_config(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object")
    return data


def _prepare(model: torch.nn.Module, config: ServeConfig) -> torch.nn.Module:
    dtype = getattr(torch, config.dtype) if config.dtype else None
    # the fast path (fp32: exact; bf16 / int8 on request): inference/weights.py
    return model.to(device=config.device, dtype=dtype).eval().optimize_for_inference(config.weights)


def _is_model_dir(d: Path) -> bool:
    return ((d / "config.json").is_file() or (d / "generator").is_dir() or (d / "discriminator").is_dir()
            or is_adapter_dir(d))


def served_dir(d: Path) -> Path:
    """``d``, or for a training run directory the model it made (``generate`` and ``evaluate`` take a
    run directory; ``serve runs/t5-small-cola``, docs/serve.md's example, was refused): its model/
    or else its latest checkpoint (train/checkpointing.py's ``run_model_dir``), else a LoRA run's
    adapter/."""
    if _is_model_dir(d):
        return d
    found = run_model_dir(d)
    if found != d:
        return found
    return d / "adapter" if is_adapter_dir(d / "adapter") else d


def load_model_dir(name: str, directory: str | Path, config: ServeConfig) -> ServedModel:
    """Load one model directory (see the module docstring for what is recognised)."""
    d = follow_pointer(directory)
    if not d.is_dir():
        raise CheckpointNotFoundError(f"model directory {d} " + ("is a file, not a directory" if d.exists()
                                                                else "does not exist"))
    d = served_dir(d)
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        if (d / "generator").is_dir() or (d / "discriminator").is_dir():
            pipe = ElectraPipeline.from_pretrained(d)  # either model may be missing
            sm = ServedModel(name, "electra", "electra-pretrainer", pipe.tokenizer,
                             generator=None if pipe.generator is None else _prepare(pipe.generator, config),
                             discriminator=None if pipe.discriminator is None else _prepare(pipe.discriminator,
                                                                                             config))
            _check_vocab(sm, d)
            return sm
        if not is_adapter_dir(d):
            raise CheckpointNotFoundError(
                f"{d} is not a model directory: it has no config.json (a T5 or ELECTRA checkpoint), no "
                f"generator/ or discriminator/ sub-directory (an ELECTRA pretraining output), no "
                f"adapter_config.json (a LoRA adapter) and no model/ or checkpoints/ (a training run)")
        loaded = merged_model(d)
        arch, tok_dir, cfg_path = ARCHITECTURES[type(loaded).__name__], tokenizer_dir(d), d / "adapter_config.json"
        archs = [arch.name]
    else:
        data = _read_config(cfg_path)
        arch = architecture(data, str(cfg_path))  # models/registry.py: which class, which head
        loaded, tok_dir, archs = None, d, data.get("architectures") or None

    def load() -> torch.nn.Module:
        return _prepare(loaded if loaded is not None else arch.cls.from_pretrained(d), config)

    if arch.family == "t5":
        if arch.head != "seq2seq":
            raise ConfigError(f"{cfg_path}: architectures={[arch.name]}: only T5ForConditionalGeneration can be served "
                              f"(generation needs the decoder and the language-model head)")
        sm = ServedModel(name, "t5", "t5", T5Tokenizer.from_pretrained(tok_dir), t5=load())
    else:
        if arch.head not in SERVED_HEADS or not archs or arch.name not in ELECTRA_CLASSES:
            raise ConfigError(f"{cfg_path}: architectures={archs}; the server needs one of "
                              f"{', '.join(ELECTRA_CLASSES)} to know which head to use")
        kind, slot = SERVED_HEADS[arch.head]
        sm = ServedModel(name, "electra", kind, ElectraTokenizer.from_pretrained(tok_dir))
        setattr(sm, slot, load())
    _check_vocab(sm, d)
    return sm


def _check_vocab(sm: ServedModel, d: Path) -> None:
    """A tokenizer with more ids than the model has embeddings would fail on some inputs only."""
    for cname, m in sm.components().items():
        if len(sm.tokenizer) > m.config.vocab_size:
            raise ConfigError(f"{d}: the tokenizer has {len(sm.tokenizer)} tokens but the {cname} model's "
                              f"vocab_size is {m.config.vocab_size}: they do not belong together")


def parse_model_arg(arg: str) -> tuple[str, Path]:
    """``DIR`` or ``NAME=DIR`` -> (name, directory); the name defaults to the directory's name."""
    name, sep, path = arg.partition("=")
    if not sep:
        path, name = arg, Path(arg.rstrip("/")).resolve().name
    if not _NAME.match(name):
        raise ConfigError(f"model name {name!r} (from {arg!r}) must be 1-64 letters, digits, '.', '_' or '-'; "
                          f"name it explicitly with NAME=DIR")
    return name, Path(path)


class ModelRegistry:
    """Name -> ServedModel, each with its own batcher (queue + worker thread)."""

    def __init__(self, models: list[ServedModel], config: ServeConfig):
        self.config = config
        self.models: dict[str, ServedModel] = {}
        for sm in models:
            if sm.name in self.models:
                raise ConfigError(f"two models are named {sm.name!r}; name them with NAME=DIR")
            self.models[sm.name] = sm

    @classmethod
    def from_dirs(cls, args: list[str], config: ServeConfig) -> "ModelRegistry":
        """Load ``DIR`` / ``NAME=DIR`` arguments."""
        if not args:
            raise ConfigError("no model directories given")
        models = []
        for arg in args:
            name, d = parse_model_arg(arg)
            logger.info("loading %s from %s", name, d)
            models.append(load_model_dir(name, d, config))
        return cls(models, config)

    def names(self) -> list[str]:
        return list(self.models)

    def with_task(self, task: str) -> list[str]:
        return [n for n, sm in self.models.items() if task in sm.tasks]
