"""Examples and features for encoder task heads (ELECTRA / BERT fine-tuning and evaluation).

Heads: ``classification`` (a label per text or text pair), ``regression`` (a number, STS-B),
``token_classification`` (a label per word, predicted on its first sub-token; the other
sub-tokens and [CLS]/[SEP] get -100) and ``qa`` (extractive QA: ``[CLS] question [SEP] context
[SEP]`` windows of ``max_length`` tokens that overlap by ``doc_stride``; a window that does not
hold the whole answer points at [CLS]).

:func:`load_task_data` reads a registered task or your files into :class:`TaskData`;
:func:`encode` turns a split into features (token ids, labels, QA offsets); :func:`collate` pads
a batch. Scoring predictions is ``t5electra/eval/heads.py``.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Callable

import torch

from .. import metrics as M
from ..config import suggest
from ..errors import ConfigError, DataError
from .readers import find_split_files, read_records, read_squad
from .file_tasks import FILE_TASKS, classify_task, detect_kind, label_name, label_names, text_example, where_row
from .task_base import unlabelled
from .tasks import get_task

HEADS = ("classification", "regression", "token_classification", "qa")
TASK_HEADS = {"classification": "classification", "regression": "regression", "span": "qa",  # tasks.Head.kind
              "token_classification": "token_classification"}
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "labels", "start_positions", "end_positions")


@dataclasses.dataclass
class TaskData:
    """What fine-tuning and scoring need to know about the data, whatever its source."""

    head: str                                    # one of HEADS
    labels: list[str]                            # class names (classification, token classification)
    splits: dict[str, list[dict[str, Any]]]      # split -> examples (fields: see _text_example, _qa_example)
    metric_fns: tuple[Callable, ...]             # (targets, predictions) -> {name: value}

    def unlabelled(self, split: str) -> bool:
        """A classification / regression split without any label (GLUE's test files): listed, not scored."""
        return (self.head in ("classification", "regression") and split in self.splits
                and all(unlabelled(ex["label"]) for ex in self.splits[split]))


def resolve_head(head: str | None, task_head: str | None, task: str | None = None) -> str:
    """The head to train or score: ``head`` (``electra.head``) or else the task's own."""
    head = head or (TASK_HEADS.get(task_head) if task_head else None)
    if task_head == "generation":
        raise ConfigError(f"task {task!r} is a generation task: ELECTRA has no head for it (fine-tune T5)")
    if head is None:
        raise ConfigError(f"electra.head is not set: one of {', '.join(HEADS)} (or give data.task)")
    if head not in HEADS:
        raise ConfigError(f"electra.head={head!r} is not one of {', '.join(HEADS)}{suggest(head, HEADS)}")
    return head


def load_task_data(head: str | None = None, *, task: str | None = None, task_dir: str | Path | None = None,
                   files: Mapping[str, Sequence[str]] | None = None, text_columns: list[str] | None = None,
                   label_column: str = "label", labels: Sequence[str] | None = None) -> TaskData:
    """Examples of the train / validation / test splits from a registered ``task`` (files under
    ``task_dir`` where it needs them) or your ``files`` (split -> one path; or found in
    ``task_dir``), for ``head`` (default: the task's; your files without one: classification when
    they look like classes, data/file_tasks.detect_kind). ``labels``: a trained classifier's classes
    in id order, for your files (default: the training file's)."""
    if task:
        own = {"files": files, "text_columns": text_columns, "label_column": label_column} if task in FILE_TASKS else {}
        if own and task == "classify" and labels:
            own["labels"] = labels
        found = get_task(task, data_dir=None if own and files and any(files.values()) else task_dir, **own)
        head = resolve_head(head, found.head.kind, task)
        splits = {}
        for split in ("train", "validation", "test"):
            if split not in found.splits:
                continue
            if head == "qa":
                splits[split] = [_qa_example(r, f"{found.name}/{split}:{i}")
                                 for i, r in enumerate(found.raw_examples(split))]
            else:
                splits[split] = list(found.head_examples(split))
        return TaskData(head, list(found.head.labels), splits, found.head.metrics or found.metrics)
    files = {s: list((files or {}).get(s) or []) for s in ("train", "validation", "test")}
    if task_dir and not files["train"]:
        found_files = find_split_files(task_dir, (".tsv", ".csv", ".jsonl", ".parquet", ".json"))
        files = {s: [str(p)] for s, p in found_files.items()}
    for split, paths in files.items():
        if len(paths) > 1:
            raise ConfigError(f"data.{split}_files: fine-tuning reads one file per split, got {len(paths)}")
    paths = {s: Path(p[0]) for s, p in files.items() if p}
    for split, p in paths.items():
        if not p.is_file():
            raise DataError(f"data.{split}_files: {p} does not exist")
    if head is None and paths:
        try:
            kind = detect_kind(paths, label_column)
        except DataError as e:
            raise ConfigError(f"electra.head is not set and your files are not a classification ({e}): set "
                              f"electra.head to one of {', '.join(HEADS)}") from None
        if kind != "classify":
            raise ConfigError("your files look like input/target texts (text2text): an encoder has no head for "
                              "generating them (fine-tune T5), or set electra.head")
        head = "classification"
    head = resolve_head(head, None)
    if head == "qa":
        read = {s: [_qa_example(r, f"{p}: example {i}") for i, r in enumerate(
            read_squad(p) if p.suffix == ".json" else read_records(p), 1)] for s, p in paths.items()}
        return TaskData(head, [], read, (M.squad,))
    if head == "token_classification":
        raw = {s: list(_token_rows(p, label_column)) for s, p in paths.items()}
        tags = {s: {label_name(t) for r in rows for t in r["labels"]} - {""} for s, rows in raw.items()}
        if labels:  # a trained tagger's classes (evaluate): its ids, whatever tags these files hold
            labels = list(labels)
        else:
            labels = label_names([t for rows in raw.values() for r in rows for t in r["labels"]])
            for s in tags.keys() - {"train"} if "train" in tags else ():
                if tags[s] - tags["train"]:
                    warnings.warn(f"{paths[s]}: tag(s) {sorted(tags[s] - tags['train'])} never occur in the training "
                                  f"file {paths['train']}: the model cannot learn them, and those words count as wrong",
                                  stacklevel=2)
        ids = {name: i for i, name in enumerate(labels)}
        # the class names are label_name()'s (stripped, as for classification): look labels up the same way
        splits = {s: [{"tokens": r["tokens"], "labels": [_tag_id(ids, t, p) for t in r["labels"]]} for r in rows]
                  for (s, rows), p in zip(raw.items(), paths.values())}
        return TaskData(head, labels, splits, (M.accuracy, M.macro_f1))
    if head == "classification":
        found = classify_task(files=paths, text_columns=text_columns, label_column=label_column, labels=labels)
        return TaskData(head, list(found.head.labels), {s: list(found.head_examples(s)) for s in found.splits},
                        found.metrics)
    # regression: a number per text or pair
    splits = {s: [text_example(r, text_columns, label_column, where_row(p, i)) for i, r in enumerate(read_records(p))]
              for s, p in paths.items()}
    for s, rows in splits.items():
        for i, ex in enumerate(rows):
            try:
                ex["label"] = float(ex["label"])
            except (TypeError, ValueError):
                raise DataError(f"{paths[s]}: example {i + 1}: regression label {ex['label']!r} (column "
                                f"{label_column!r}) is not a number") from None
    return TaskData(head, [], splits, (M.pearson, M.spearman))


def _token_rows(path: Path, label_column: str):
    for i, row in enumerate(read_records(path), 1):
        key = next((k for k in (label_column, "labels", "tags", "ner_tags") if k in row), None)
        if "tokens" not in row or key is None:
            raise DataError(f"{path}: record {i}: token classification needs 'tokens' and a label list "
                            f"('{label_column}', 'labels', 'tags' or 'ner_tags'); fields: {sorted(row)}")
        if not isinstance(row["tokens"], list) or not isinstance(row[key], list):
            raise DataError(f"{path}: record {i}: 'tokens' and '{key}' must be lists (one entry per word), got "
                            f"{type(row['tokens']).__name__} and {type(row[key]).__name__}")
        if len(row["tokens"]) != len(row[key]):
            raise DataError(f"{path}: record {i}: {len(row['tokens'])} tokens but {len(row[key])} labels")
        yield {"tokens": [str(t) for t in row["tokens"]], "labels": list(row[key])}


def _tag_id(ids: dict[str, int], tag: Any, path: Path) -> int:
    name = label_name(tag)
    if name == "":  # label_names drops empty labels
        raise DataError(f"{path}: an empty token label ({tag!r}); every token needs a tag (e.g. 'O')")
    if name not in ids:  # only with a trained tagger's classes
        raise DataError(f"{path}: tag {name!r} is not one of the model's tags {list(ids)[:20]}")
    return ids[name]


def _qa_example(row: dict[str, Any], where: str) -> dict[str, Any]:
    answers = row.get("answers") or {}
    if isinstance(answers, list):  # SQuAD's own layout: [{"text": ..., "answer_start": ...}, ...]
        if not all(isinstance(a, dict) for a in answers):
            raise DataError(f"{where}: 'answers' must be {{'text': [...], 'answer_start': [...]}} or a list of "
                            f"{{'text', 'answer_start'}} objects")
        answers = {"text": [a.get("text", "") for a in answers], "answer_start": [a.get("answer_start", -1)
                                                                                 for a in answers]}
    if not isinstance(answers, dict):
        raise DataError(f"{where}: 'answers' must be {{'text': [...], 'answer_start': [...]}}, got "
                        f"{type(answers).__name__}")
    texts, starts = answers.get("text", []), answers.get("answer_start", [])
    # one answer written without its list ({"text": "Zurich"}) became one answer per character
    texts, starts = [texts] if isinstance(texts, str) else list(texts), [starts] if isinstance(starts, int) else starts
    try:
        starts = [int(s) for s in starts]
    except (TypeError, ValueError):
        raise DataError(f"{where}: 'answer_start' must be character offsets (numbers), got {starts!r}") from None
    if "question" not in row or "context" not in row:
        raise DataError(f"{where}: a QA example needs 'question' and 'context'; fields: {sorted(row)}")
    if len(starts) > len(texts):
        raise DataError(f"{where}: {len(starts)} answer_start offsets for {len(texts)} answer texts")
    # an answer given without its offset is found in the context (its first occurrence, as SQuAD's
    # annotators' offsets mostly are): it was trained as unanswerable
    starts = [s if s >= 0 else row.get("context", "").find(t) for s, t in
              zip(starts + [-1] * (len(texts) - len(starts)), texts)]
    # an empty answer text is no answer (SQuAD v2's unanswerable questions written {"text": [""]})
    texts, starts = [t for t in texts if t != ""], [s for s, t in zip(starts, texts) if t != ""]
    for text, start in zip(texts, starts):
        if start < 0:
            raise DataError(f"{where}: answer {text!r} does not occur in the context")
        if row["context"][start:start + len(text)] != text:
            raise DataError(f"{where}: answer {text!r} is not at answer_start={start} of the context (there: "
                            f"{row['context'][max(start, 0):max(start, 0) + len(text)]!r}); answer_start counts "
                            f"characters from 0")
    return {"id": str(row.get("id", where)), "question": row["question"], "context": row["context"],
            "answers": texts, "answer_start": starts[0] if starts else -1, "answer_text": texts[0] if texts else ""}


# --------------------------------------------------------------------------------------------
# Features: examples -> token ids (+ labels / answer positions)
# --------------------------------------------------------------------------------------------
def encode(data: TaskData, split: str, tokenizer, max_length: int, doc_stride: int = 128) -> list[dict[str, Any]]:
    """The features of a split, one dict of lists per model input (a QA example may give several;
    ``doc_stride``: tokens shared by consecutive windows of a long QA context)."""
    examples, L = data.splits[split], max_length
    if data.head in ("classification", "regression"):
        pairs = [ex["text_pair"] for ex in examples]
        enc = tokenizer([ex["text"] for ex in examples], pairs if any(p is not None for p in pairs) and
                        all(p is not None for p in pairs) else None, truncation=True, max_length=L)
        return [{"input_ids": ids, "token_type_ids": tt, "labels": ex["label"]}
                for ids, tt, ex in zip(enc["input_ids"], enc["token_type_ids"], examples)]
    if data.head == "token_classification":
        enc = tokenizer([ex["tokens"] for ex in examples], is_split_into_words=True, truncation=True, max_length=L)
        feats = []
        for i, ex in enumerate(examples):
            labels, words, previous = [], [], None
            for w in enc.word_ids(i):  # a label on the first sub-token of each word
                labels.append(-100 if w is None or w == previous else int(ex["labels"][w]))
                if labels[-1] != -100:
                    words.append(w)
                previous = w
            # words: the word of each labelled position (scoring puts the guesses back on the words:
            # a word of no tokens, or one cut off by max_length, has none)
            feats.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                          "labels": labels, "words": words})
        return feats
    return encode_qa(examples, tokenizer, L, doc_stride)


MAX_QUERY_TOKENS = 64  # google-research/electra configure_finetuning.py max_query_length


def _cut_question(tokenizer, question: str, limit: int) -> str:
    """The question's text up to the end of its ``limit``-th token (all of it when shorter)."""
    offsets = tokenizer(question, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    return question if len(offsets) <= limit else question[:offsets[limit - 1][1]]


def encode_qa(examples: list[dict[str, Any]], tokenizer, max_length: int,
              doc_stride: int) -> list[dict[str, Any]]:
    """Windows ``[CLS] question [SEP] context-window [SEP]`` with the answer's token positions
    (0 = [CLS] when the window does not hold the whole answer) and what post-processing needs:
    the example index and, for context tokens, their character offsets.

    A question keeps at most ``min(64, max_length // 2)`` tokens, as the official code cuts it to
    ``max_query_length`` (64): one longer than the window made the tokenizer refuse the whole split."""
    limit = min(MAX_QUERY_TOKENS, max_length // 2)
    questions = [_cut_question(tokenizer, ex["question"], limit) for ex in examples]
    question_tokens = max(len(tokenizer.tokenize(q)) for q in questions) if examples else 0
    room = max_length - question_tokens - 3  # context tokens a window holds ([CLS] q [SEP] ... [SEP])
    if doc_stride >= room:
        # the windows must advance (the tokenizer refuses a stride that leaves no new context); half the
        # window, not room - 1: the defaults (max_length 128, doc_stride 128) moved windows one token at a
        # time, 6,115 near-copies of 36 questions where half-window steps give a few hundred
        doc_stride = max(0, room // 2)
    enc = tokenizer(questions, [ex["context"] for ex in examples],
                    truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    feats = []
    for row, sample in enumerate(enc["overflow_to_sample_mapping"]):
        ex, seq = examples[sample], enc.sequence_ids(row)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][row], seq)]
        start = end = 0
        if ex["answer_start"] >= 0:
            # the answer's characters less the whitespace around it, which no token covers: " Zurich" at
            # the context's start or "Zurich " at its end was held by no window (trained as [CLS] only)
            text = ex["answer_text"]
            a = ex["answer_start"] + len(text) - len(text.lstrip())
            b = ex["answer_start"] + len(text.rstrip())
            ctx = [i for i, o in enumerate(offsets) if o is not None]
            if a < b and ctx and offsets[ctx[0]][0] <= a and offsets[ctx[-1]][1] >= b:  # (a blank answer: none)
                start = next(i for i in ctx if offsets[i][1] > a)
                end = next(i for i in reversed(ctx) if offsets[i][0] < b)
        feats.append({"input_ids": enc["input_ids"][row], "token_type_ids": enc["token_type_ids"][row],
                      "start_positions": start, "end_positions": end, "example": sample, "offsets": offsets})
    return feats


def labelled_tokens(batch: Mapping[str, torch.Tensor]) -> int | None:
    """How many tokens a tagger's loss is a mean over (its token labels (B, T), -100 where none); None
    for the other heads, whose losses are means over the examples. Training and evaluation weight
    batches by it, so that the loss is the mean over all the labelled tokens, whatever the batches."""
    labels = batch.get("labels")
    if labels is None or labels.dim() != 2 or labels.is_floating_point():
        return None
    return int((labels != -100).sum())


def collate(features: list[dict[str, Any]], pad_token_id: int) -> dict[str, torch.Tensor]:
    """Pad to the longest sequence of the batch (ids with [PAD], token labels with -100)."""
    T = max(len(f["input_ids"]) for f in features)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.tensor([f[key] + [value] * (T - len(f[key])) for f in features], dtype=torch.long)

    batch = {"input_ids": pad("input_ids", pad_token_id), "token_type_ids": pad("token_type_ids", 0),
             "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (T - len(f["input_ids"]))
                                             for f in features], dtype=torch.long)}
    if "labels" in features[0]:
        labels = [f["labels"] for f in features]
        if isinstance(labels[0], list):
            batch["labels"] = pad("labels", -100)
        else:
            batch["labels"] = torch.tensor(labels, dtype=torch.float32 if isinstance(labels[0], float) else torch.long)
    for key in ("start_positions", "end_positions"):
        if key in features[0]:
            batch[key] = torch.tensor([f[key] for f in features], dtype=torch.long)
    return batch
