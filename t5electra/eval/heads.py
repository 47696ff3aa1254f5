"""Scoring encoder task heads: predictions -> task metrics (classification, regression, token
classification, extractive QA). The ELECTRA fine-tuning recipe and ``evaluate`` share it, so a
checkpoint is scored the same way during and after training.

QA: the best span (start <= end, at most ``max_answer_length`` tokens, inside the context) over
all windows of a question, mapped back to characters through the tokenizer's offsets, scored with
the official SQuAD v1.1 exact match and F1.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import metrics as M
from ..data.heads import MODEL_INPUTS, TaskData, collate, labelled_tokens
from ..data.task_base import unlabelled
from ..modeling import OWN_CALL
from ..train.loop import autocast


def qa_loss(out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Extractive QA's loss with the padding's start/end logits masked out: the cross-entropy of
    ElectraForQuestionAnswering (transformers': positions outside the sequence clamped to T and
    ignored), but over each row's real tokens only. The model's own loss spreads probability over the
    padding, so an example's loss (and gradient) depended on how far its batch was padded: on its
    batchmates, the batch size and the number of torchrun processes (2 DDP processes of batch 4 did
    not train as one of batch 8). The official ELECTRA masks the padding too (qa_tasks.py)."""
    mask = batch["attention_mask"].bool()
    T = mask.shape[1]
    halves = []
    for logits, key in ((out.start_logits, "start_positions"), (out.end_logits, "end_positions")):
        logits = logits.float().masked_fill(~mask, torch.finfo(torch.float32).min)
        halves.append(F.cross_entropy(logits, batch[key].reshape(-1).clamp(0, T), ignore_index=T))
    return (halves[0] + halves[1]) / 2


def head_loss(out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    """The loss a head trains and is evaluated on: extractive QA's with the padding masked
    (:func:`qa_loss`), the model's own for the other heads."""
    return qa_loss(out, batch) if "start_positions" in batch else out.loss


@torch.no_grad()
def predict(model: torch.nn.Module, features: list[dict[str, Any]], batch_size: int, pad_token_id: int,
            device: torch.device, precision: str = "fp32", by_length: bool = False) -> tuple[list[Any], float | None]:
    """Raw predictions per feature (class id, score, token ids, or (start, end) logits over its own
    tokens) and the mean loss
    (over the examples; a tagger's over all the labelled tokens, whatever the batch size).

    ``by_length``: batch the features in order of length (little padding), return them in the
    given order (for one prediction per sequence: per-token outputs would keep their batch's width)."""
    was_training = model.training
    model.eval()
    preds: list[Any] = []
    losses, weight = [], 0  # a tagger's loss weighted by its labelled tokens, the others' by the examples
    order = sorted(range(len(features)), key=lambda j: len(features[j]["input_ids"])) if by_length else None
    for i in range(0, len(features), batch_size):
        chunk = features[i:i + batch_size] if order is None else [features[j] for j in order[i:i + batch_size]]
        batch = {k: v.to(device) for k, v in collate(chunk, pad_token_id).items()}
        labels = batch.get("labels")  # unlabelled: class -1, score NaN (data/task_base.unlabelled)
        has_labels = labels is None or bool((~labels.isnan() if labels.is_floating_point() else labels != -1).any())
        if not has_labels:  # unlabelled test split (GLUE): no loss
            batch.pop("labels")
        with autocast(precision, device):
            out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}, **OWN_CALL)
        tagged = labelled_tokens(batch)
        w = len(chunk) if tagged is None else tagged
        loss = head_loss(out, batch)
        if loss is not None and w:  # (a chunk without a labelled token: its mean over none is NaN)
            losses.append(float(loss) * w)
            weight += w
        if hasattr(out, "start_logits"):  # each row's own tokens: the padding's logits (never trained:
            # qa_loss masks them) filled the n-best places, so an answer depended on its batchmates
            lengths = batch["attention_mask"].sum(-1).tolist()  # (B,)
            preds += [(s[:n].float().cpu().numpy(), e[:n].float().cpu().numpy())
                      for s, e, n in zip(out.start_logits, out.end_logits, lengths)]
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
    return preds, (sum(losses) / weight if losses else None)


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
          loss: float | None, max_answer_length: int = 30) -> dict[str, float]:
    """Task metrics of ``examples`` from the predictions of their features (none without labels,
    like GLUE's test files); QA answers are at most ``max_answer_length`` tokens."""
    out: dict[str, float] = {} if loss is None else {"loss": loss}
    if data.head == "qa":
        answers = qa_answers(examples, features, preds, max_answer_length)
        labelled = [(ex["answers"], a) for ex, a in zip(examples, answers) if ex["answers"]]
        targets, predictions = [t for t, _ in labelled], [p for _, p in labelled]
    elif data.head == "token_classification":  # a guess on the first sub-token of each word
        # Every word of the sentence is scored: the words cut off by max_length have no guess (-1,
        # wrong), where scoring only the kept ones gave 100 for a sentence a third of which was seen.
        targets = [list(ex["labels"]) for ex in examples]
        predictions = [[-1] * len(t) for t in targets]
        for guess, f, p in zip(predictions, features, preds):
            for w, g in zip(f["words"], (g for label, g in zip(f["labels"], p) if label != -100)):
                guess[w] = g
    else:
        labelled = [(ex["label"], p) for ex, p in zip(examples, preds) if not unlabelled(ex["label"])]
        targets, predictions = [t for t, _ in labelled], [p for _, p in labelled]
    if not targets or (data.head == "token_classification" and not any(targets)):
        return out
    flat = data.head == "token_classification"  # token metrics see one flat list, span metrics sentences
    for fn in data.metric_fns:
        if flat and not getattr(fn, "per_sequence", False):
            out.update(fn([t for s in targets for t in s], [p for s in predictions for p in s]))
        else:
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
