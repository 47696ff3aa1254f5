"""Fine-tune an ELECTRA discriminator (or any BERT) with a task head — the whole loop, top to bottom.

    python -m t5electra.recipes.finetune_electra --data.task=sentiment \
        --model.init_from=runs/electra/model/discriminator --train.max_steps=1000
    torchrun --nproc_per_node 4 -m t5electra.recipes.finetune_electra --config run.yaml

Heads (``electra.head``, default: the task's):

- ``classification``: ``ElectraForSequenceClassification`` on the [CLS] vector, cross-entropy;
- ``regression``: the same head with one output (``num_labels=1``), mean squared error (STS-B);
- ``token_classification``: ``ElectraForTokenClassification``, a label per word, predicted on its
  first sub-token (the other sub-tokens and [CLS]/[SEP] are ignored, label -100);
- ``qa``: extractive QA, ``ElectraForQuestionAnswering``. ``[CLS] question [SEP] context [SEP]``;
  a long context is cut into windows of ``data.max_length`` tokens that overlap by
  ``electra.doc_stride``; a window that does not contain the whole answer is trained to point at
  [CLS]. Predictions take the best span (start <= end, at most ``electra.max_answer_length``
  tokens, inside the context) over all windows of a question, map it back to characters through
  the tokenizer's offsets, and are scored with the official SQuAD v1.1 exact match and F1.

Data: a registered task (``data.task=sentiment``, ``sst2``, ``stsb``, ``squad``, ... with
``data.task_dir`` where it needs files), or your own files: ``data.train_files`` /
``data.validation_files`` / ``data.test_files`` (one file each; .tsv/.csv/.jsonl/.parquet with
``data.text_columns`` and ``data.label_column``; token classification: JSONL ``{"tokens": [...],
"labels": [...]}``; QA: SQuAD JSON or JSONL with question/context/answers) plus ``electra.head``.

The recipe of the ELECTRA paper (appendix, Table 7): AdamW, lr 1e-4 (Small: 3e-4), weight decay
0.01, linear warmup over the first 10% of the steps then linear decay, layer-wise lr decay 0.8
(``optim.layerwise_lr_decay``, implemented as intended: see docs/training.md, the official code
applies one factor too many). The validation split is scored every ``eval.every_steps`` steps
(on a fixed random subset of ``eval.max_batches`` batches, if set) and each evaluation is
checkpointed; ``checkpoints/best`` follows ``eval.metric`` (``auto``: the task's first metric, e.g. accuracy,
Pearson, SQuAD F1). At the end the best checkpoint is scored on the validation and test splits
(``RUN/results.json``, with the majority-class baseline for classification) and saved as
``RUN/model`` (weights, config with label names, tokenizer).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .. import metrics as M
from ..data.tasks import get_task, read_records, read_squad
from ..errors import ConfigError, DataError, T5ElectraError
from ..models.electra import (ElectraConfig, ElectraForQuestionAnswering, ElectraForSequenceClassification,
                              ElectraForTokenClassification)
from ..tokenizers import ElectraTokenizer
from ..train.checkpointing import CheckpointManager, prepare_run_dir, load_model_weights, save_model, unwrap_model
from ..train.config import RunConfig, load_config, run_inputs
from ..train.distributed import DistEnv, barrier, cleanup, gather_rng_states, init_distributed, wrap_ddp
from ..train.logging import MetricsLogger, Progress
from ..train.loop import seed_everything, to_device, train_step
from ..train.optim import build_optimizer
from ..train.schedules import build_scheduler

HEADS = ("classification", "regression", "token_classification", "qa")
MODEL_CLASSES = {"classification": ElectraForSequenceClassification, "regression": ElectraForSequenceClassification,
                 "token_classification": ElectraForTokenClassification, "qa": ElectraForQuestionAnswering}
TASK_HEADS = {"classification": "classification", "regression": "regression", "span": "qa"}  # tasks.Head.kind


def default_config() -> RunConfig:
    """The engine's defaults with ELECTRA's fine-tuning recipe on top (paper appendix, Table 7)."""
    cfg = RunConfig()
    cfg.model.family = "electra"
    cfg.data.objective, cfg.data.max_length = "finetune", 128
    cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.eps = "adamw", 1e-4, 0.01, 1e-6
    cfg.optim.layerwise_lr_decay = 0.8
    cfg.schedule.name, cfg.schedule.warmup_ratio = "linear", 0.1
    cfg.eval.metric, cfg.eval.greater_is_better = "auto", True
    return cfg


# --------------------------------------------------------------------------------------------
# Data: examples of each split, in the head's format
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TaskData:
    """What the recipe needs to know about the data, whatever its source."""

    head: str                                    # one of HEADS
    labels: list[str]                            # class names (classification, token classification)
    splits: dict[str, list[dict[str, Any]]]      # split -> examples (see read_* below for the fields)
    metric_fns: tuple[Callable, ...]             # (targets, predictions) -> {name: value}


def _resolve_head(cfg: RunConfig, task_head: str | None) -> str:
    head = cfg.electra.head or (TASK_HEADS.get(task_head) if task_head else None)
    if task_head == "generation":
        raise ConfigError(f"task {cfg.data.task!r} is a generation task: ELECTRA has no head for it (fine-tune T5)")
    if head is None:
        raise ConfigError(f"electra.head is not set: one of {', '.join(HEADS)} (or give data.task)")
    if head not in HEADS:
        from ..config import suggest

        raise ConfigError(f"electra.head={head!r} is not one of {', '.join(HEADS)}{suggest(head, HEADS)}")
    return head


def load_data(cfg: RunConfig) -> TaskData:
    """Examples of the train / validation / test splits from ``data.task`` or your files."""
    d = cfg.data
    if d.task:
        task = get_task(d.task, data_dir=d.task_dir)
        head = _resolve_head(cfg, task.head.kind)
        splits = {}
        for split in ("train", "validation", "test"):
            if split not in task.splits:
                continue
            if head == "qa":
                splits[split] = [_qa_example(r, f"{task.name}/{split}:{i}")
                                 for i, r in enumerate(task.raw_examples(split))]
            else:
                splits[split] = list(task.head_examples(split))
        return TaskData(head, list(task.head.labels), splits, task.metrics)
    head = _resolve_head(cfg, None)
    files = {"train": d.train_files, "validation": d.validation_files, "test": d.test_files}
    if d.task_dir and not d.train_files:
        from ..data.tasks import find_split_files

        found = find_split_files(d.task_dir, (".tsv", ".csv", ".jsonl", ".parquet", ".json"))
        files = {s: [str(p)] for s, p in found.items()}
    for split, paths in files.items():
        if len(paths) > 1:
            raise ConfigError(f"data.{split}_files: fine-tuning reads one file per split, got {len(paths)}")
    paths = {s: Path(p[0]) for s, p in files.items() if p}
    for split, p in paths.items():
        if not p.is_file():
            raise DataError(f"data.{split}_files: {p} does not exist")
    if head == "qa":
        read = {s: [_qa_example(r, f"{p}:{i}") for i, r in enumerate(
            read_squad(p) if p.suffix == ".json" else read_records(p))] for s, p in paths.items()}
        return TaskData(head, [], read, (M.squad,))
    if head == "token_classification":
        raw = {s: list(_token_rows(p, cfg.data.label_column)) for s, p in paths.items()}
        labels = _label_names([t for rows in raw.values() for r in rows for t in r["labels"]])
        ids = {name: i for i, name in enumerate(labels)}
        splits = {s: [{"tokens": r["tokens"], "labels": [ids[str(t)] for t in r["labels"]]} for r in rows]
                  for s, rows in raw.items()}
        return TaskData(head, labels, splits, (M.accuracy, M.macro_f1))
    raw = {s: list(read_records(p)) for s, p in paths.items()}
    splits = {s: [_text_example(r, cfg, f"{paths[s]}:{i + 2}") for i, r in enumerate(rows)] for s, rows in raw.items()}
    if head == "regression":
        for rows in splits.values():
            for ex in rows:
                ex["label"] = float(ex["label"])
        return TaskData(head, [], splits, (M.pearson, M.spearman))
    labels = _label_names([ex["label"] for rows in splits.values() for ex in rows])
    ids = {name: i for i, name in enumerate(labels)}
    for rows in splits.values():
        for ex in rows:
            ex["label"] = ids[str(ex["label"])]
    return TaskData(head, labels, splits, (M.accuracy, M.macro_f1))


def _label_names(values: list[Any]) -> list[str]:
    """Class names in id order: ``0..max`` when every label is an integer, else sorted names."""
    names = sorted({str(v) for v in values if str(v) != ""})
    if not names:
        raise DataError("no labels found in the training data")
    if all(n.lstrip("-").isdigit() for n in names):
        top = max(int(n) for n in names)
        if min(int(n) for n in names) < 0:
            raise DataError(f"label ids must be >= 0, found {min(int(n) for n in names)}")
        return [str(i) for i in range(top + 1)]
    return names


def _text_example(row: dict[str, Any], cfg: RunConfig, where: str) -> dict[str, Any]:
    cols = cfg.data.text_columns or next(
        ([a, b] if b in row else [a] for a, b in (("sentence", "sentence2"), ("text", "text_pair"),
                                                  ("sentence1", "sentence2")) if a in row), None)
    if not cols:
        raise DataError(f"{where}: no text column: set data.text_columns (columns: {sorted(row)})")
    if len(cols) > 2:
        raise ConfigError(f"data.text_columns: one text or a pair, got {cols}")
    for c in [*cols, cfg.data.label_column]:
        if c not in row:
            from ..config import suggest

            raise DataError(f"{where}: no column {c!r}{suggest(c, row)}; columns: {sorted(row)}")
    return {"text": str(row[cols[0]]), "text_pair": str(row[cols[1]]) if len(cols) > 1 else None,
            "label": row[cfg.data.label_column]}


def _token_rows(path: Path, label_column: str):
    for i, row in enumerate(read_records(path), 1):
        key = next((k for k in (label_column, "labels", "tags", "ner_tags") if k in row), None)
        if "tokens" not in row or key is None:
            raise DataError(f"{path}: record {i}: token classification needs 'tokens' and a label list "
                            f"('{label_column}', 'labels', 'tags' or 'ner_tags'); fields: {sorted(row)}")
        if len(row["tokens"]) != len(row[key]):
            raise DataError(f"{path}: record {i}: {len(row['tokens'])} tokens but {len(row[key])} labels")
        yield {"tokens": [str(t) for t in row["tokens"]], "labels": list(row[key])}


def _qa_example(row: dict[str, Any], where: str) -> dict[str, Any]:
    answers = row.get("answers") or {}
    texts, starts = list(answers.get("text", [])), [int(s) for s in answers.get("answer_start", [])]
    if "question" not in row or "context" not in row:
        raise DataError(f"{where}: a QA example needs 'question' and 'context'; fields: {sorted(row)}")
    return {"id": str(row.get("id", where)), "question": row["question"], "context": row["context"],
            "answers": texts, "answer_start": starts[0] if starts else -1, "answer_text": texts[0] if texts else ""}


# --------------------------------------------------------------------------------------------
# Features: examples -> token ids (+ labels / answer positions)
# --------------------------------------------------------------------------------------------
def encode(data: TaskData, split: str, tokenizer: ElectraTokenizer, cfg: RunConfig) -> list[dict[str, Any]]:
    """The features of a split, one dict of lists per model input (a QA example may give several)."""
    examples, L = data.splits[split], cfg.data.max_length
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
            labels, previous = [], None
            for w in enc.word_ids(i):  # a label on the first sub-token of each word
                labels.append(-100 if w is None or w == previous else int(ex["labels"][w]))
                previous = w
            feats.append({"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
                          "labels": labels})
        return feats
    return encode_qa(examples, tokenizer, L, cfg.electra.doc_stride)


def encode_qa(examples: list[dict[str, Any]], tokenizer: ElectraTokenizer, max_length: int,
              doc_stride: int) -> list[dict[str, Any]]:
    """Windows ``[CLS] question [SEP] context-window [SEP]`` with the answer's token positions
    (0 = [CLS] when the window does not hold the whole answer) and what post-processing needs:
    the example index and, for context tokens, their character offsets."""
    question_tokens = max(len(tokenizer.tokenize(ex["question"])) for ex in examples) if examples else 0
    if question_tokens + 3 + doc_stride >= max_length:
        # transformers' rule too: the stride must leave room for new context in every window
        doc_stride = max(0, max_length - question_tokens - 4)
    enc = tokenizer([ex["question"] for ex in examples], [ex["context"] for ex in examples],
                    truncation="only_second", max_length=max_length, stride=doc_stride,
                    return_overflowing_tokens=True, return_offsets_mapping=True)
    feats = []
    for row, sample in enumerate(enc["overflow_to_sample_mapping"]):
        ex, seq = examples[sample], enc.sequence_ids(row)
        offsets = [tuple(o) if s == 1 else None for o, s in zip(enc["offset_mapping"][row], seq)]
        start = end = 0
        if ex["answer_start"] >= 0:
            a, b = ex["answer_start"], ex["answer_start"] + len(ex["answer_text"])
            ctx = [i for i, o in enumerate(offsets) if o is not None]
            if ctx and offsets[ctx[0]][0] <= a and offsets[ctx[-1]][1] >= b:
                start = next(i for i in ctx if offsets[i][1] > a)
                end = next(i for i in reversed(ctx) if offsets[i][0] < b)
        feats.append({"input_ids": enc["input_ids"][row], "token_type_ids": enc["token_type_ids"][row],
                      "start_positions": start, "end_positions": end, "example": sample, "offsets": offsets})
    return feats


MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "labels", "start_positions", "end_positions")


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


class ExampleStream:
    """Endless training batches: every epoch a fresh seeded permutation of the features, of which
    rank r takes positions r, r + W, ...; a cursor (features consumed) makes resuming exact.

    ``group_by_length`` k > 0: the rank's order is cut into windows of k batches; inside a window
    the features are sorted by length, cut into batches, and the batches shuffled, so a batch holds
    examples of similar lengths and pads little (each epoch still visits every feature once)."""

    def __init__(self, features: list[dict[str, Any]], batch_size: int, seed: int, env: DistEnv,
                 collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]], group_by_length: int = 0):
        self.per_rank = len(range(env.rank, len(features), env.world_size))
        if self.per_rank == 0:
            raise DataError(f"{len(features)} training examples for {env.world_size} processes")
        self.features, self.batch_size, self.seed, self.env = features, batch_size, seed, env
        self.collate_fn, self.group_by_length = collate_fn, group_by_length
        self.consumed = 0

    def _order(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        perm = rng.permutation(len(self.features))
        order = perm[self.env.rank::self.env.world_size][:self.per_rank]
        if self.group_by_length <= 0:
            return order
        window, B = self.group_by_length * self.batch_size, self.batch_size
        grouped = []
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            lengths = np.array([len(self.features[int(i)]["input_ids"]) for i in chunk])
            chunk = chunk[np.argsort(-lengths, kind="stable")]
            batches = [chunk[j:j + B] for j in range(0, len(chunk), B)]
            grouped += [batches[int(j)] for j in rng.permutation(len(batches))]
        return np.concatenate(grouped)

    def __iter__(self):
        order, epoch = None, -1
        while True:
            batch = []
            for _ in range(self.batch_size):
                e, j = divmod(self.consumed, self.per_rank)
                if e != epoch:
                    order, epoch = self._order(e), e
                batch.append(self.features[int(order[j])])
                self.consumed += 1
            yield self.collate_fn(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "num_features": len(self.features), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_features") != len(self.features) or state.get("seed") != self.seed:
            raise ConfigError(f"the data cursor belongs to different data ({state.get('num_features')} features, "
                              f"seed {state.get('seed')}; now {len(self.features)}, seed {self.seed})")
        self.consumed = int(state["consumed"])


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def model_dir(init_from: str) -> Path:
    """A pretraining run's ``model/`` (or a checkpoint of it) means its ``discriminator/``."""
    p = Path(init_from)
    return p / "discriminator" if (p / "discriminator" / "config.json").is_file() else p


def build_model(cfg: RunConfig, data: TaskData, tokenizer: ElectraTokenizer) -> torch.nn.Module:
    """The head's model on the pretrained encoder (``model.init_from``), or fresh from
    ``model.preset``; vocabulary and length checked against the tokenizer before the first step."""
    m = cfg.model
    if m.family != "electra":
        raise ConfigError(f"model.family={m.family!r}: this recipe fine-tunes ELECTRA/BERT encoders (use 'electra')")
    cls = MODEL_CLASSES[data.head]
    head: dict[str, Any] = dict(m.overrides)
    if data.head == "regression":
        head.update(num_labels=1, id2label={0: "score"}, label2id=None, problem_type="regression")
    elif data.head == "qa":
        head.update(num_labels=2, id2label=None, label2id=None)
    else:
        head.update(num_labels=len(data.labels), id2label=dict(enumerate(data.labels)), label2id=None,
                    problem_type="single_label_classification" if data.head == "classification" else None)
    if m.init_from:
        model = cls.from_pretrained(model_dir(m.init_from), **head)
    elif m.preset:
        model = cls(ElectraConfig.from_preset(m.preset, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                              **head))
    else:
        raise ConfigError("model.init_from is not set: give a pretrained discriminator or BERT directory "
                          "(e.g. RUN/model/discriminator from `t5electra pretrain`), or model.preset to start fresh")
    if len(tokenizer) > model.config.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                          f"{model.config.vocab_size}: use the tokenizer the model was pretrained with")
    if cfg.data.max_length > model.config.max_position_embeddings:
        raise ConfigError(f"data.max_length={cfg.data.max_length} is longer than the model's "
                          f"max_position_embeddings={model.config.max_position_embeddings}")
    return model.train()


def load_tokenizer(cfg: RunConfig) -> ElectraTokenizer:
    source = cfg.data.tokenizer or (model_dir(cfg.model.init_from) if cfg.model.init_from else None)
    if source is None:
        raise ConfigError("data.tokenizer is not set (and no model.init_from to take it from)")
    return ElectraTokenizer.from_pretrained(source)


def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
    return out.loss, {"examples": int(batch["input_ids"].shape[0]), "tokens": int(batch["attention_mask"].sum())}


# --------------------------------------------------------------------------------------------
# Evaluation: predictions -> task metrics
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict(model: torch.nn.Module, features: list[dict[str, Any]], batch_size: int, pad_token_id: int,
            device: torch.device, precision: str = "fp32", by_length: bool = False) -> tuple[list[Any], float | None]:
    """Raw predictions per feature (class id, score, token ids, or (start, end) logits) and the mean loss.

    ``by_length``: batch the features in order of length (little padding), return them in the
    given order (for one prediction per sequence: per-token outputs would keep their batch's width)."""
    from ..train.loop import autocast

    was_training = model.training
    model.eval()
    preds: list[Any] = []
    losses = []
    order = sorted(range(len(features)), key=lambda j: len(features[j]["input_ids"])) if by_length else None
    for i in range(0, len(features), batch_size):
        chunk = features[i:i + batch_size] if order is None else [features[j] for j in order[i:i + batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_token_id).items()}
        has_labels = "labels" not in batch or bool((batch["labels"] != -1).any())
        if not has_labels:  # unlabelled test split (GLUE): no loss
            batch.pop("labels")
        with autocast(precision, device):
            out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS})
        if out.loss is not None:
            losses.append(float(out.loss) * len(chunk))
        if hasattr(out, "start_logits"):
            preds += [(s.float().cpu().numpy(), e.float().cpu().numpy())
                      for s, e in zip(out.start_logits, out.end_logits)]
        elif out.logits.dim() == 3:  # token classification: (B, T, L)
            preds += [row.argmax(-1).cpu().tolist() for row in out.logits]
        elif out.logits.shape[-1] == 1:  # regression
            preds += out.logits[:, 0].float().cpu().tolist()
        else:
            preds += out.logits.argmax(-1).cpu().tolist()
    model.train(was_training)
    if order is not None:
        ordered: list[Any] = [None] * len(features)
        for j, pred in zip(order, preds):
            ordered[j] = pred
        preds = ordered
    return preds, (sum(losses) / len(features) if losses else None)


def qa_answers(examples: list[dict[str, Any]], features: list[dict[str, Any]], preds: list[tuple],
               max_answer_length: int, n_best: int = 20) -> list[str]:
    """The best-scoring span of each example over all its windows, as text of the context."""
    best: dict[int, tuple[float, str]] = {}
    for f, (start_logits, end_logits) in zip(features, preds):
        offsets = f["offsets"]
        starts = np.argsort(start_logits)[::-1][:n_best]
        ends = np.argsort(end_logits)[::-1][:n_best]
        ex = examples[f["example"]]
        for s in starts:
            for e in ends:
                if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                    continue  # not a context token
                if e < s or e - s + 1 > max_answer_length:
                    continue
                score = float(start_logits[s] + end_logits[e])
                if f["example"] not in best or score > best[f["example"]][0]:
                    best[f["example"]] = (score, ex["context"][offsets[s][0]:offsets[e][1]])
    return [best.get(i, (0.0, ""))[1] for i in range(len(examples))]


def score(data: TaskData, examples: list[dict[str, Any]], features: list[dict[str, Any]], preds: list[Any],
          loss: float | None, cfg: RunConfig) -> dict[str, float]:
    """Task metrics of ``examples`` from the predictions of their features (none without labels,
    like GLUE's test files)."""
    out: dict[str, float] = {} if loss is None else {"loss": loss}
    if data.head == "qa":
        answers = qa_answers(examples, features, preds, cfg.electra.max_answer_length)
        labelled = [(ex["answers"], a) for ex, a in zip(examples, answers) if ex["answers"]]
        targets, predictions = [t for t, _ in labelled], [p for _, p in labelled]
    elif data.head == "token_classification":
        targets, predictions = [], []
        for f, p in zip(features, preds):
            for label, guess in zip(f["labels"], p):
                if label != -100:
                    targets.append(label)
                    predictions.append(guess)
    else:
        labelled = [(ex["label"], p) for ex, p in zip(examples, preds) if ex["label"] not in (-1, -1.0, None)]
        targets, predictions = [t for t, _ in labelled], [p for _, p in labelled]
    if not targets:
        return out
    for fn in data.metric_fns:
        out.update(fn(targets, predictions))
    if data.head == "qa":  # F1 first: the metric that picks the best checkpoint with eval.metric=auto
        out = {**{k: out[k] for k in ("loss", "f1") if k in out}, **out}
    return out


def majority_baseline(data: TaskData, split: str) -> dict[str, float]:
    """Accuracy of always predicting the most frequent training class (classification only)."""
    if data.head != "classification" or split not in data.splits:
        return {}
    counts = collections.Counter(ex["label"] for ex in data.splits["train"] if ex["label"] != -1)
    majority = counts.most_common(1)[0][0]
    labelled = [ex["label"] for ex in data.splits[split] if ex["label"] != -1]
    if not labelled:
        return {}
    return {"label": data.labels[majority], **M.accuracy(labelled, [majority] * len(labelled))}


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def train(cfg: RunConfig) -> Path:
    """Fine-tune as ``cfg`` says; returns the run directory (``RUN/model``, ``RUN/results.json``)."""
    env = init_distributed(cfg.train.device)
    run_dir = Path(cfg.train.output_dir)
    prepare_run_dir(run_dir, cfg.checkpoint.resume, cfg.checkpoint.overwrite, env.is_main,
                    inputs=run_inputs(cfg))  # before any work
    seed_everything(cfg.train.seed)  # identical initial head weights on every rank

    data = load_data(cfg)
    if not data.splits.get("train"):
        raise DataError("no training examples: data.task has no train split, or data.train_files is empty")
    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, data, tokenizer).to(env.device)
    pad = tokenizer.pad_token_id
    features = {s: encode(data, s, tokenizer, cfg) for s in data.splits}
    stream = ExampleStream(features["train"], cfg.train.batch_size, cfg.train.seed, env, lambda b: collate(b, pad),
                           group_by_length=cfg.data.group_by_length)

    optimizer = build_optimizer(model, cfg.optim, num_layers=model.config.num_hidden_layers)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.train.max_steps)
    ckpt = CheckpointManager(run_dir, cfg.to_dict(), keep_last=cfg.checkpoint.keep_last,
                             keep_best=cfg.checkpoint.keep_best, greater_is_better=cfg.eval.greater_is_better)

    start, last_ckpt = 0, None
    resume_from = ckpt.resolve(cfg.checkpoint.resume)  # every rank reads the (shared) run directory
    if resume_from is not None:
        state = ckpt.load(resume_from, model, optimizer, scheduler, rank=env.rank)
        stream.load_state_dict(state["data"])
        start, last_ckpt = state["step"], Path(resume_from)
    else:
        seed_everything(cfg.train.seed, env.rank)  # each rank its own dropout stream
    if env.is_main:
        cfg.save_yaml(run_dir / "config.yaml")
    ddp_model = wrap_ddp(model, env)

    log = MetricsLogger(run_dir, enabled=env.is_main, tensorboard=cfg.train.tensorboard, resume_step=start)
    bar = Progress(cfg.train.max_steps, initial=start, enabled=env.is_main and cfg.train.progress,
                   desc=f"finetune {run_dir.name}")
    if env.is_main and start:
        bar.write(f"resumed from {resume_from} at step {start}")
    batches = iter(stream)
    eval_batch = cfg.eval.batch_size or cfg.train.batch_size

    def run_eval(split: str = "validation", full: bool = False) -> dict[str, float]:
        """Scores of a split (main process only); during training at most eval.max_batches batches."""
        if split not in features or not env.is_main:
            return {}
        feats, examples = features[split], data.splits[split]
        if cfg.eval.max_batches is not None and not full and data.head != "qa":  # QA: windows != examples
            # a fixed random subset: the first rows of a file are often sorted by label
            n = cfg.eval.max_batches * eval_batch
            keep = np.sort(np.random.default_rng(cfg.train.seed).permutation(len(feats))[:n])
            feats, examples = [feats[i] for i in keep], [examples[i] for i in keep]
        preds, loss = predict(model, feats, eval_batch, pad, env.device, cfg.train.precision,
                              by_length=data.head in ("classification", "regression"))
        return score(data, examples, feats, preds, loss, cfg)

    def save(step: int, metrics: dict[str, float]) -> Path | None:
        rngs = gather_rng_states(env)  # a collective: every rank takes part
        path = None
        if env.is_main:
            path = ckpt.save(step, model, optimizer, scheduler, stream.state_dict(), metrics=metrics,
                             metric_name=main_metric(cfg, metrics), rng_states=rngs,
                             save_extra=tokenizer.save_pretrained)
        barrier(env)
        return path

    t_log, tokens_since = time.perf_counter(), 0
    try:
        for step in range(start + 1, cfg.train.max_steps + 1):
            micro = [to_device(next(batches), env.device) for _ in range(cfg.train.grad_accum_steps)]
            out = train_step(ddp_model, micro, loss_fn, optimizer, scheduler, max_grad_norm=cfg.optim.max_grad_norm,
                             precision=cfg.train.precision, step=step, env=env, last_checkpoint=last_ckpt)
            tokens_since += int(out.metrics.get("tokens", 0))
            bar.update(step, loss=out.loss, tokens=int(out.metrics.get("tokens", 0)))
            if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                now = time.perf_counter()
                log.log(step, {"loss": out.loss, "lr": out.lr, "grad_norm": out.grad_norm,
                               "tokens_per_s": tokens_since / max(now - t_log, 1e-9),
                               "epoch": stream.consumed / stream.per_rank, **out.metrics})
                t_log, tokens_since = now, 0
            every_eval = cfg.eval.every_steps and step % cfg.eval.every_steps == 0
            every_ckpt = cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0
            final = step == cfg.train.max_steps
            metrics = run_eval() if (every_eval or final) else {}
            if metrics:
                log.log(step, metrics, split="eval")
                bar.write(f"step {step}: " + ", ".join(f"eval {k} {v:.4f}" for k, v in metrics.items()))
            if every_ckpt or every_eval or final:  # each evaluation competes for checkpoints/best
                last_ckpt = save(step, metrics) or last_ckpt
    finally:
        bar.close()
        log.close()

    if env.is_main:
        finish(run_dir, ckpt, model, tokenizer, data, run_eval)
    barrier(env)
    cleanup(env)
    return run_dir


def main_metric(cfg: RunConfig, metrics: dict[str, float]) -> str | None:
    """``eval.metric``; ``auto``: the task's first metric (accuracy, Matthews corr., Pearson, SQuAD F1, ...)."""
    if cfg.eval.metric != "auto":
        return cfg.eval.metric
    return next((k for k in metrics if k != "loss"), None)


def finish(run_dir: Path, ckpt: CheckpointManager, model: torch.nn.Module, tokenizer: ElectraTokenizer,
           data: TaskData, run_eval: Callable[..., dict[str, float]]) -> None:
    """Load the best checkpoint, score it on validation and test, save it as ``RUN/model``."""
    best = ckpt.best()
    if best is not None and (ckpt.dir / best["name"]).is_dir():
        load_model_weights(model, ckpt.dir / best["name"])
    results = {"head": data.head, "best_checkpoint": best,
               "validation": run_eval("validation", full=True), "test": run_eval("test", full=True),
               "majority_baseline": {s: majority_baseline(data, s) for s in ("validation", "test")
                                     if majority_baseline(data, s)},
               "num_examples": {s: len(v) for s, v in data.splits.items()}}
    (run_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    save_model(unwrap_model(model), run_dir / "model")
    tokenizer.save_pretrained(run_dir / "model")
    try:
        from ..plot import plot_run

        plot_run(run_dir)
    except ImportError:  # matplotlib is optional (the `data` extra)
        pass


def main(argv: list[str] | None = None) -> int:
    """``--config FILE`` plus ``--section.key=value`` overrides."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m t5electra.recipes.finetune_electra",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="FILE", help="YAML run config (sections model, data, optim, ...)")
    args, overrides = parser.parse_known_args(argv)
    try:
        run_dir = train(load_config(args.config, overrides, base=default_config()))
    except T5ElectraError as e:
        print(f"finetune_electra: error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(json.loads((run_dir / "results.json").read_text()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
