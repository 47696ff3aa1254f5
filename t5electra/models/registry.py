"""Which class a checkpoint loads into: the one place that decides it.

``config.json``'s ``model_type`` names the family (``t5``, ``mt5`` or ``umt5``, which load into the
T5 classes; ``electra`` or ``bert``, which load into the ELECTRA classes) and its ``architectures``
the class (the family's default when absent). Every
class also has a *head*: what sits on the shared body, which tells the server which endpoint a
model answers and the evaluator how to score it. ``convert``, ``evaluate``, ``generate``, the
server and the fine-tuning recipe all ask here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ..checkpoint.io import read_json
from ..config import suggest
from ..errors import ConfigError
from ..modeling import PreTrainedModel
from .electra import (ElectraForMaskedLM, ElectraForPreTraining, ElectraForQuestionAnswering,
                      ElectraForSequenceClassification, ElectraForTokenClassification, ElectraModel)
from .t5 import MODEL_TYPES, T5EncoderModel, T5ForConditionalGeneration, T5Model


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One ``architectures`` name of config.json."""

    name: str                        # as config.json spells it, e.g. "BertForSequenceClassification"
    cls: type[PreTrainedModel]       # our class that loads it
    family: str                      # "t5" or "electra"
    # what sits on the body: "seq2seq", "encoder" (T5 encoder only), "base" (no head),
    # "discriminator", "generator", "classification", "token_classification" or "qa"
    head: str


ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (
    # T5, MT5 and UMT5 (transformers' class-name prefixes) all load into our T5 classes
    *(Architecture(f"{prefix}{name.removeprefix('T5')}", cls, "t5", head) for prefix in MODEL_TYPES.values()
      for name, cls, head in (("T5ForConditionalGeneration", T5ForConditionalGeneration, "seq2seq"),
                              ("T5Model", T5Model, "base"), ("T5EncoderModel", T5EncoderModel, "encoder"))),
    # transformers' pre-3.0 name of T5ForConditionalGeneration, still in the official t5-small ... t5-11b
    # config.json files (transformers itself picks the class by model_type, so it never noticed)
    Architecture("T5WithLMHeadModel", T5ForConditionalGeneration, "t5", "seq2seq"),
    Architecture("ElectraModel", ElectraModel, "electra", "base"),
    Architecture("ElectraForPreTraining", ElectraForPreTraining, "electra", "discriminator"),
    Architecture("ElectraForMaskedLM", ElectraForMaskedLM, "electra", "generator"),
    Architecture("ElectraForSequenceClassification", ElectraForSequenceClassification, "electra", "classification"),
    Architecture("ElectraForTokenClassification", ElectraForTokenClassification, "electra", "token_classification"),
    Architecture("ElectraForQuestionAnswering", ElectraForQuestionAnswering, "electra", "qa"),
    # BERT checkpoints load into the ELECTRA classes (checkpoint/electra.py moves their prefix)
    Architecture("BertModel", ElectraModel, "electra", "base"),
    Architecture("BertForMaskedLM", ElectraForMaskedLM, "electra", "generator"),
    Architecture("BertForSequenceClassification", ElectraForSequenceClassification, "electra", "classification"),
    Architecture("BertForTokenClassification", ElectraForTokenClassification, "electra", "token_classification"),
    Architecture("BertForQuestionAnswering", ElectraForQuestionAnswering, "electra", "qa"),
)}

# model_type -> family, and the architecture a config.json without "architectures" means
FAMILIES = {**{t: "t5" for t in MODEL_TYPES}, "electra": "electra", "bert": "electra"}
DEFAULT_ARCHITECTURE = {**{t: f"{p}ForConditionalGeneration" for t, p in MODEL_TYPES.items()},
                        "electra": "ElectraForPreTraining", "bert": "BertModel"}

# fine-tuning head (the ELECTRA recipe's electra.head) -> the class that trains it
HEAD_CLASSES: dict[str, type[PreTrainedModel]] = {
    "classification": ElectraForSequenceClassification, "regression": ElectraForSequenceClassification,
    "token_classification": ElectraForTokenClassification, "qa": ElectraForQuestionAnswering}


def read_model_config(model_dir: str | Path) -> dict[str, Any]:
    """config.json of a model directory, as a dict."""
    return read_json(Path(model_dir) / "config.json")


def model_family(config: dict[str, Any], where: str = "config.json") -> str:
    """``"t5"`` (model_type t5, mt5, umt5) or ``"electra"`` (electra, bert); a clear error for anything else."""
    model_type = str(config.get("model_type", ""))
    if model_type in FAMILIES:
        return FAMILIES[model_type]
    raise ConfigError(f"{where}: model_type={model_type!r} is neither T5 nor ELECTRA/BERT "
                      f"(expected one of {', '.join(FAMILIES)})")


def architecture(config: dict[str, Any], where: str = "config.json") -> Architecture:
    """The :class:`Architecture` of a config.json (its first ``architectures`` entry, else the
    family's default)."""
    family = model_family(config, where)
    names = config.get("architectures")
    if isinstance(names, str):  # "architectures": "ElectraForSequenceClassification" (one, not a list)
        names = [names]
    name = (names or [None])[0] or DEFAULT_ARCHITECTURE[str(config["model_type"])]
    arch = ARCHITECTURES.get(name)
    if arch is None or arch.family != family:
        known = [a for a, v in ARCHITECTURES.items() if v.family == family]
        raise ConfigError(f"{where}: architecture {name!r} (model_type {config.get('model_type')!r}) is not one "
                          f"t5electra loads{suggest(str(name), known)}; known: {', '.join(known)}")
    return arch


def model_kind(model_dir: str | Path) -> str:
    """``"t5"`` or ``"electra"`` for a model directory."""
    return model_family(read_model_config(model_dir), str(Path(model_dir) / "config.json"))


def model_class(model_dir: str | Path) -> type[PreTrainedModel]:
    """Our class for a model directory's checkpoint."""
    return architecture(read_model_config(model_dir), str(Path(model_dir) / "config.json")).cls


def task_head(arch: Architecture, config: dict[str, Any]) -> str:
    """The fine-tuning head of a checkpoint: its architecture's, with a one-output sequence
    classifier read as ``regression`` (STS-B)."""
    if arch.head == "classification" and config.get("num_labels", len(config.get("id2label") or {0: 0, 1: 1})) == 1:
        return "regression"
    return arch.head
