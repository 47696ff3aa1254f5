"""An adapter directory on its base model: ``t5electra convert --merge`` and the server use it.

The base is ``--base`` or the adapter's ``base_model_name_or_path`` (our fine-tuning runs write the
directory they started from). Its class is the base checkpoint's, except that an adapter for a
task head (PEFT task type ``SEQ_CLS``, ``TOKEN_CLS``, ``QUESTION_ANS``) trained on an encoder or a
discriminator needs the head's class: the head's weights are in the adapter (modules_to_save), its
number of labels is read from their shape, and its label names from the fine-tuning run
(:func:`run_labels`).
"""

from __future__ import annotations

import os
from pathlib import Path

from safetensors import safe_open

from ..checkpoint.io import checkpoint_dir, read_json
from ..errors import CheckpointNotFoundError, ConfigError
from ..modeling import FRESH_WARNING, FreshWarningHeld, PreTrainedModel, logger
from ..models.electra import (ElectraForQuestionAnswering, ElectraForSequenceClassification,
                              ElectraForTokenClassification)
from ..models.registry import model_class
from .config import CONFIG_NAME, WEIGHTS_NAME, LoraConfig
from .model import PREFIX, PeftModel

# PEFT task type -> (our ELECTRA head class, the head tensor whose first dimension is num_labels)
TASK_CLASSES = {
    "SEQ_CLS": (ElectraForSequenceClassification, "classifier.out_proj.weight"),
    "TOKEN_CLS": (ElectraForTokenClassification, "classifier.weight"),
    "QUESTION_ANS": (ElectraForQuestionAnswering, None),
}


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_NAME).is_file()


def adapter_dir(path: str | os.PathLike) -> Path:
    """``path`` if it holds an adapter, else a fine-tuning run's ``adapter/``."""
    p = checkpoint_dir(path)
    for d in (p, p / "adapter"):
        if is_adapter_dir(d):
            return d
    raise CheckpointNotFoundError(f"{p}: no {CONFIG_NAME} (nor adapter/{CONFIG_NAME}): not a LoRA adapter")


def base_dir(adapter: Path, config: LoraConfig, base: str | os.PathLike | None = None) -> Path:
    """The base model directory: ``base``, else the adapter's base_model_name_or_path."""
    if base is None:
        base = config.base_model_name_or_path
        if not base:
            raise ConfigError(f"{adapter / CONFIG_NAME} names no base model (base_model_name_or_path): "
                              f"give the base model directory (--base)")
        if not Path(base).expanduser().is_dir():
            raise CheckpointNotFoundError(f"{adapter / CONFIG_NAME}: its base model {base!r} is not a directory "
                                          f"here (a hub name or another machine's path?): give it with --base")
    d = checkpoint_dir(base)
    if not (d / "config.json").is_file() and (d / "discriminator" / "config.json").is_file():
        d = d / "discriminator"  # an ELECTRA pretraining run's model/: the discriminator is fine-tuned
    return d


def load_adapted(adapter: str | os.PathLike, base: str | os.PathLike | None = None) -> PeftModel:
    """The base model with the adapter of ``adapter`` (a directory, or a run with ``adapter/``)."""
    a = adapter_dir(adapter)
    config = LoraConfig.from_pretrained(a)
    b = base_dir(a, config, base)
    cls: type[PreTrainedModel] = model_class(b)
    overrides = {}
    task = TASK_CLASSES.get(config.task_type)
    if task is not None and cls is not task[0] and cls.__name__.startswith("Electra"):
        cls, head_key = task
        if head_key is not None:
            with safe_open(str(a / WEIGHTS_NAME), framework="pt") as f:
                if PREFIX + head_key in f.keys():
                    overrides["num_labels"] = f.get_slice(PREFIX + head_key).get_shape()[0]
            if "num_labels" in overrides:
                overrides.update(run_labels(a, cls, overrides["num_labels"]))
    with FreshWarningHeld():  # the adapter's head (modules_to_save) fills a task head the base lacks
        model = cls.from_pretrained(b, **overrides)
    adapted = PeftModel.from_pretrained(model, a)
    filled = set(adapted._peft_keys.values())  # every one is in the file (load_adapter checks)
    fresh = [k for k in model.load_report.newly_initialized if k not in filled]
    if fresh:
        logger.warning(FRESH_WARNING, cls.__name__, fresh)
    return adapted


LABEL_FIELDS = ("id2label", "label2id", "problem_type")


def run_labels(adapter: Path, cls: type[PreTrainedModel], num_labels: int) -> dict:
    """The label names and problem_type of the head an adapter was trained with, for the head's class.

    PEFT's two files keep none of them (its users pass id2label to from_pretrained themselves). Our
    fine-tuning run writes them into ``RUN/model/config.json``, the merged model beside
    ``RUN/adapter`` and above ``RUN/checkpoints/step-N``: read there when that model is the same
    head with ``num_labels`` labels. Otherwise {} (the head gets LABEL_0, LABEL_1, ...)."""
    for run in (adapter.parent, adapter.parent.parent):
        path = run / "model" / "config.json"
        if not (run / "config.yaml").is_file() or not path.is_file():  # not a run of ours
            continue
        config = read_json(path)
        names = config.get("id2label") or {}
        if (config.get("architectures") or [None])[0] == cls.__name__ and len(names) == num_labels:
            return {k: config[k] for k in LABEL_FIELDS if config.get(k) is not None}
    return {}


def merged_model(adapter: str | os.PathLike, base: str | os.PathLike | None = None) -> PreTrainedModel:
    """The base model with the adapter folded into its weights."""
    return load_adapted(adapter, base).merge_and_unload()


TOKENIZER_FILES = ("spiece.model", "vocab.txt", "tokenizer.json")


def tokenizer_dir(adapter: str | os.PathLike, base: str | os.PathLike | None = None) -> Path:
    """Where an adapter's tokenizer is: its own directory if it has one (our checkpoints do), else its base's."""
    a = adapter_dir(adapter)
    if any((a / f).is_file() for f in TOKENIZER_FILES):
        return a
    b = base_dir(a, LoraConfig.from_pretrained(a), base)
    if not any((b / f).is_file() for f in TOKENIZER_FILES) and any((b.parent / f).is_file() for f in TOKENIZER_FILES):
        return b.parent  # a pretraining run's model/ keeps the tokenizer beside discriminator/
    return b
