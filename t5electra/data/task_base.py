"""The pieces every text-to-text task is made of: :class:`Head` (how a task maps to an ELECTRA
head), :class:`Task` (a source of raw examples, T5's pre/post-processing, metrics), the
pre/post-processing building blocks, and the classification / regression constructors.

The registry of named tasks (GLUE, SQuAD, the samples, your files) is ``data/tasks.py``; tasks over
your own labelled files are ``data/file_tasks.py``. Both build on this module.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .. import metrics as M
from ..config import suggest
from ..errors import ConfigError, DataError, InvalidInputError
from .readers import Example, FileSource, HFDatasetSource

# =================================================================================================
# Tasks
# =================================================================================================

@dataclasses.dataclass(frozen=True)
class Head:
    """How a task maps to an ELECTRA (encoder) head."""

    # "classification" (class id), "regression" (float), "span" (answer in the context),
    # "token_classification" (a tag per token), or "generation" (no encoder head: T5 only)
    kind: str
    # class names, index = class id (classification, token classification)
    labels: tuple[str, ...] = ()
    # fields fed to the encoder as one text or a pair, in the order BERT/ELECTRA use
    text_keys: tuple[str, ...] = ()
    # metrics of the head's predictions when they differ from the text-to-text ones (tagging:
    # per-sentence tag ids -> span F1); empty: the task's metrics
    metrics: tuple[Callable, ...] = ()


@dataclasses.dataclass(frozen=True)
class Task:
    """A named dataset with text-to-text pre/post-processing, metrics and an ELECTRA head mapping."""

    name: str
    source: FileSource | HFDatasetSource
    # raw example -> {"inputs": str, "targets": str}
    preprocessor: Callable[[Example], dict[str, str]]
    # generated text -> label id / float / text; never raises (invalid -> sentinel)
    postprocessor: Callable[[str], Any]
    # raw example -> the reference the metrics compare with (id, float, answer list, text)
    target_fn: Callable[[Example], Any]
    # functions (targets, predictions) -> {metric: value}
    metrics: tuple[Callable[[Sequence, Sequence], dict[str, float]], ...]
    head: Head
    description: str = ""
    # raw example -> what the head sees, when the task maps it itself (tagging: {"tokens", "labels"})
    head_fn: Callable[[Example], Example] | None = None
    _counts: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @property
    def splits(self) -> tuple[str, ...]:
        return self.source.splits

    def raw_examples(self, split: str) -> Iterator[Example]:
        return iter(self.source.read(split))

    def examples(self, split: str) -> Iterator[Example]:
        """Raw fields plus ``inputs``, ``targets`` (text) and ``task``."""
        for ex in self.raw_examples(split):
            yield {**ex, **self.preprocessor(ex), "task": self.name}

    def num_examples(self, split: str) -> int:
        if split not in self._counts:
            self._counts[split] = sum(1 for _ in self.raw_examples(split))
        return self._counts[split]

    def postprocess(self, text: str) -> Any:
        return self.postprocessor(text)

    def labelled(self, ex: Example) -> bool:
        """Whether the example has a reference to score against (GLUE's test files have none)."""
        return not unlabelled(self.target_fn(ex))

    def evaluate(self, predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
        """Score generated texts against the raw (or preprocessed) examples they answer; examples
        without a reference are left out ({} when none has one)."""
        if len(predictions) != len(examples):
            raise InvalidInputError(f"task {self.name!r}: {len(predictions)} predictions for {len(examples)} examples")
        # An unlabelled class is -1 and so is an invalid answer (INVALID_LABEL): scored together, any
        # garbage "matched" an unlabelled test file (accuracy 100) and F1 saw a class -1.
        pairs = [(t, self.postprocessor(p)) for t, p in zip(map(self.target_fn, examples), predictions)
                 if not unlabelled(t)]
        if not pairs:
            return {}
        targets, preds = [t for t, _ in pairs], [p for _, p in pairs]
        out: dict[str, float] = {}
        for fn in self.metrics:
            out.update(fn(targets, preds))
        return out

    def head_example(self, ex: Example) -> Example:
        """The example as an ELECTRA head sees it:
        classification/regression ``{"text", "text_pair", "label"}``;
        span ``{"question", "context", "answer_text", "answer_start"}`` (first answer, char offset);
        token classification ``{"tokens", "labels"}`` (label ids)."""
        h = self.head
        if self.head_fn is not None:
            return self.head_fn(ex)
        if h.kind in ("classification", "regression"):
            return {"text": str(ex[h.text_keys[0]]),  # a JSONL number is text to an encoder too
                    "text_pair": str(ex[h.text_keys[1]]) if len(h.text_keys) > 1 else None,
                    "label": self.target_fn(ex)}
        if h.kind == "span":
            answers = ex["answers"]
            return {"question": ex["question"], "context": ex["context"],
                    "answer_text": answers["text"][0] if answers["text"] else "",
                    "answer_start": answers["answer_start"][0] if answers["answer_start"] else -1}
        raise ConfigError(f"task {self.name!r} is a generation task: an encoder (ELECTRA) has no head for it")

    def head_examples(self, split: str) -> Iterator[Example]:
        for ex in self.raw_examples(split):
            yield self.head_example(ex)


# -- pre/post-processing building blocks --------------------------------------------------------

def _clean(text: Any) -> str:
    # One line of text: T5's vocabulary treats newlines as spaces anyway.
    return " ".join(str(text).split())


def _field(ex: Example, key: str) -> Any:
    try:
        return ex[key]
    except KeyError:
        raise DataError(f"example has no field {key!r}{suggest(key, ex)}; fields: {sorted(ex)}") from None


def prefixed_inputs(prefix: str, ex: Example, keys: Sequence[str]) -> str:
    """T5's GLUE format: ``"<prefix> <key>: <text> <key>: <text>"`` joined by single spaces."""
    parts = [prefix]
    for k in keys:
        parts += [f"{k}:", _clean(_field(ex, k))]
    return " ".join(parts)


def label_id(value: Any, labels: Sequence[str]) -> int:
    """A label given as its name, or as a class index (int or digit string); None/"" -> -1."""
    if value is None or value == "" or value == -1:
        return -1
    if isinstance(value, str):
        if value in labels:
            return list(labels).index(value)
        if value.strip().lstrip("-").isdigit():
            value = int(value)
        else:
            raise DataError(f"label {value!r} is not one of {list(labels)}{suggest(value, labels)}")
    idx = int(value)
    if not -1 <= idx < len(labels):
        raise DataError(f"label index {idx} is outside 0..{len(labels) - 1} for labels {list(labels)}")
    return idx


def unlabelled(value: Any) -> bool:
    """The mark of an example without a reference (GLUE's test files): None, class id -1, a NaN
    score (a regression's -1.0 is a score like any other) or no reference answer at all (a SQuAD
    question whose ``answers`` is empty: scoring it raised)."""
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, (list, tuple)):
        return not value
    return value is None or (isinstance(value, int) and value == -1)


def string_label_to_id(text: str, labels: Sequence[str]) -> int:
    """T5's ``string_label_to_class_id``: the index of the generated label, else INVALID_LABEL."""
    text = text.strip()
    return list(labels).index(text) if text in labels else M.INVALID_LABEL


def string_to_float(text: str) -> float:
    """A generated number, else INVALID_VALUE (T5's ``string_to_float``, also rejecting nan/inf)."""
    try:
        value = float(text.strip())
    except ValueError:
        return M.INVALID_VALUE
    return value if math.isfinite(value) else M.INVALID_VALUE


def round_to_fifth(value: float) -> str:
    """STS-B target text: the score rounded to the nearest 0.2 (half to even, as ``tf.round``);
    an unlabelled (NaN) score has no target text ("<unk>", as an unlabelled class)."""
    if math.isnan(float(value)):
        return "<unk>"
    return f"{round(float(value) * 5) / 5:.1f}"


def _strip(text: str) -> str:
    return text.strip()


# -- task constructors --------------------------------------------------------------------------

def classification_task(name: str, source, *, text_keys: Sequence[str], labels: Sequence[str],
                        label_key: str = "label", prefix: str | None = None,
                        metrics: Sequence[Callable] = (M.accuracy,), head_keys: Sequence[str] | None = None,
                        description: str = "") -> Task:
    """Class labels as text targets: ``"<prefix> <key>: <text> ..." -> "<label name>"``."""
    labels = tuple(labels)
    keys, prefix = tuple(text_keys), prefix or name

    def preprocess(ex: Example) -> dict[str, str]:
        i = label_id(_field(ex, label_key), labels)
        return {"inputs": prefixed_inputs(prefix, ex, keys), "targets": labels[i] if i >= 0 else "<unk>"}

    return Task(name, source, preprocess, lambda text: string_label_to_id(text, labels),
                lambda ex: label_id(_field(ex, label_key), labels), tuple(metrics),
                Head("classification", labels, tuple(head_keys or keys)), description)


def regression_task(name: str, source, *, text_keys: Sequence[str], label_key: str = "label",
                    prefix: str | None = None, metrics: Sequence[Callable] = (M.pearson, M.spearman),
                    head_keys: Sequence[str] | None = None, description: str = "") -> Task:
    """STS-B style: the score rounded to 0.2 as the text target; metrics use the exact score."""
    keys, prefix = tuple(text_keys), prefix or name

    def value(ex: Example) -> float:
        v = _field(ex, label_key)
        try:
            return float(v)
        except (TypeError, ValueError):
            raise DataError(f"{label_key}={v!r} is not a number") from None

    def preprocess(ex: Example) -> dict[str, str]:
        return {"inputs": prefixed_inputs(prefix, ex, keys), "targets": round_to_fifth(value(ex))}

    return Task(name, source, preprocess, string_to_float, value, tuple(metrics),
                Head("regression", (), tuple(head_keys or keys)), description)
