"""Score a checkpoint on a task split: the numbers ``t5electra evaluate`` prints as JSON.

    from t5electra.recipes.evaluate import evaluate_checkpoint
    evaluate_checkpoint("runs/sentiment-t5", "sentiment", split="test")   # {"accuracy": 91.2, ...}

A T5 checkpoint answers in text: each example's ``inputs`` (with the task prefix) is encoded,
the model generates greedily (or with beams), and the task's postprocessor maps the text to a
label / number / answer before its metrics score it. Text that is not a valid answer (a label
name the task does not have, a non-number for a regression) counts as wrong, as in T5's own
evaluation (``t5/data/postprocessors.py``).

An ELECTRA (or BERT) checkpoint with a task head is scored by the ELECTRA fine-tuning recipe's own
evaluation (classification, regression, token classification, extractive QA).

``CHECKPOINT`` may be a model directory, a training checkpoint (``RUN/checkpoints/step-N``) or a
run directory, which resolves to ``RUN/model`` (the fine-tuning recipes save the best checkpoint
there), then the latest checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.io import read_json
from ..data.tasks import Mixture, Task, get_task
from ..errors import CheckpointNotFoundError, ConfigError, DataError

Example = dict[str, Any]


# --------------------------------------------------------------------------------------------
# Finding the model
# --------------------------------------------------------------------------------------------
def resolve_model_dir(path: str | Path) -> Path:
    """A directory with config.json: ``path`` itself, or inside a run directory (see module doc)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise CheckpointNotFoundError(f"{str(p)!r} is not a directory (expected a model, checkpoint or run directory)")
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():
        return p / "model"
    from ..train.checkpointing import CheckpointManager

    latest = CheckpointManager(p).latest()
    if latest is not None and (latest / "config.json").is_file():
        return latest
    raise CheckpointNotFoundError(f"{p}: no config.json, and no model/ or checkpoints/ with one "
                                  f"(give a directory written by save_pretrained or a training run)")


def model_kind(model_dir: Path) -> str:
    """``"t5"`` or ``"electra"`` (from config.json's model_type)."""
    cfg = read_json(model_dir / "config.json")
    kind = str(cfg.get("model_type", ""))
    if kind in ("t5", "mt5", "umt5"):
        return "t5"
    if kind in ("electra", "bert"):
        return "electra"
    raise ConfigError(f"{model_dir / 'config.json'}: model_type={kind!r} is neither T5 nor ELECTRA")


# --------------------------------------------------------------------------------------------
# T5: generate, then score
# --------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_texts(model, tokenizer, inputs: Sequence[str], *, batch_size: int = 32, max_length: int = 512,
                  max_new_tokens: int = 32, num_beams: int = 1) -> list[str]:
    """Generated text for each input, in order (batches sorted by length, so little padding)."""
    model.eval()
    order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
    out: list[str] = [""] * len(inputs)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([inputs[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
        ids = model.generate(enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device),
                             max_new_tokens=max_new_tokens, num_beams=num_beams)  # (b, 1 + new)
        for i, text in zip(idx, tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)):
            out[i] = text.strip()
    return out


def score_t5(model, tokenizer, task: Task, examples: Sequence[Example], *, batch_size: int = 32,
             max_length: int = 512, max_new_tokens: int = 32, num_beams: int = 1) -> tuple[dict[str, float], list[str]]:
    """The task's metrics on ``examples`` (preprocessed, with ``inputs``) and the generated texts."""
    if not examples:
        raise DataError(f"task {task.name!r}: no examples to evaluate")
    preds = predict_texts(model, tokenizer, [ex["inputs"] for ex in examples], batch_size=batch_size,
                          max_length=max_length, max_new_tokens=max_new_tokens, num_beams=num_beams)
    return task.evaluate(preds, examples), preds


def score_tasks(model, tokenizer, tasks: Sequence[Task], examples: dict[str, list[Example]],
                **kwargs: Any) -> dict[str, float]:
    """One task: its metrics as named. Several (a mixture): ``"task/metric"`` plus ``"average"``
    (the mean of every task's first metric, as T5 reports its GLUE average)."""
    if len(tasks) == 1:
        return score_t5(model, tokenizer, tasks[0], examples[tasks[0].name], **kwargs)[0]
    out: dict[str, float] = {}
    firsts = []
    for task in tasks:
        metrics = score_t5(model, tokenizer, task, examples[task.name], **kwargs)[0]
        out.update({f"{task.name}/{k}": v for k, v in metrics.items()})
        firsts.append(next(iter(metrics.values())))
    out["average"] = sum(firsts) / len(firsts)
    return out


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------
def task_list(name: str, data_dir: str | None = None) -> list[Task]:
    """``"sentiment"`` -> [task]; ``"sst2+mrpc"`` (or commas) -> the tasks of a mixture."""
    names = [n.strip() for n in name.replace(",", "+").split("+") if n.strip()]
    if not names:
        raise ConfigError("no task name given (e.g. --task sentiment, or a mixture 'sst2+mrpc')")
    if len(names) > 1 and data_dir:
        raise ConfigError(f"task {name!r} is a mixture: data_dir applies to one task only")
    return [get_task(n, data_dir=data_dir) for n in names]


def mixture(tasks: Sequence[Task], name: str) -> Mixture:
    return Mixture.examples_proportional(name, tasks) if len(tasks) > 1 else Mixture(name, tuple(tasks), (1.0,))


def evaluate_checkpoint(checkpoint: str | Path, task: str, split: str = "test", *, data_dir: str | None = None,
                        batch_size: int = 32, max_examples: int | None = None, max_length: int = 512,
                        max_new_tokens: int = 32, num_beams: int = 1, device: str = "cpu",
                        predictions_file: str | Path | None = None) -> dict[str, Any]:
    """``{"checkpoint", "task", "split", "num_examples", "metrics"}`` for a T5 or ELECTRA checkpoint.

    ``predictions_file`` (T5 only): also write one JSON line per example with the input, the
    target and the generated text.
    """
    model_dir = resolve_model_dir(checkpoint)
    tasks = task_list(task, data_dir)
    kind = model_kind(model_dir)
    dev = torch.device(device)
    if kind == "t5":
        from ..models.t5 import T5ForConditionalGeneration
        from ..tokenizers import T5Tokenizer

        model = T5ForConditionalGeneration.from_pretrained(model_dir).to(dev)
        tokenizer = T5Tokenizer.from_pretrained(model_dir)
        examples = {t.name: _examples(t, split, max_examples) for t in tasks}
        kw = dict(batch_size=batch_size, max_length=max_length, max_new_tokens=max_new_tokens, num_beams=num_beams)
        if predictions_file is not None:
            metrics = _score_and_write(model, tokenizer, tasks, examples, Path(predictions_file), **kw)
        else:
            metrics = score_tasks(model, tokenizer, tasks, examples, **kw)
        n = sum(len(v) for v in examples.values())
    else:
        if len(tasks) > 1:
            raise ConfigError(f"{model_dir}: an ELECTRA head answers one task, not the mixture {task!r}")
        metrics, n = _evaluate_electra(model_dir, tasks[0], data_dir, split, dev, batch_size=batch_size,
                                       max_length=max_length, max_examples=max_examples)
    return {"checkpoint": str(model_dir), "task": task, "split": split, "num_examples": n, "metrics": metrics}


def _examples(task: Task, split: str, max_examples: int | None) -> list[Example]:
    if split not in task.splits:
        raise DataError(f"task {task.name!r} has no {split!r} split (splits: {', '.join(task.splits)})")
    rows = list(task.examples(split))[:max_examples]
    if not rows:
        raise DataError(f"task {task.name!r}: the {split!r} split is empty")
    return rows


def _score_and_write(model, tokenizer, tasks, examples, path: Path, **kw) -> dict[str, float]:
    path.parent.mkdir(parents=True, exist_ok=True)
    out: dict[str, float] = {}
    with open(path, "w", encoding="utf-8") as fh:
        for task in tasks:
            metrics, preds = score_t5(model, tokenizer, task, examples[task.name], **kw)
            out.update(metrics if len(tasks) == 1 else {f"{task.name}/{k}": v for k, v in metrics.items()})
            for ex, pred in zip(examples[task.name], preds):
                fh.write(json.dumps({"task": task.name, "input": ex["inputs"], "target": ex["targets"],
                                     "prediction": pred}, ensure_ascii=False) + "\n")
    return out


# ELECTRA checkpoints: their head -> the head the fine-tuning recipe scores
ELECTRA_HEADS = {"ElectraForSequenceClassification": "classification", "BertForSequenceClassification": "classification",
                 "ElectraForTokenClassification": "token_classification",
                 "BertForTokenClassification": "token_classification",
                 "ElectraForQuestionAnswering": "qa", "BertForQuestionAnswering": "qa"}


def _evaluate_electra(model_dir: Path, task: Task, data_dir: str | None, split: str, device: torch.device, *,
                      batch_size: int, max_length: int, max_examples: int | None) -> tuple[dict[str, float], int]:
    """The ELECTRA fine-tuning recipe's own scoring (recipes/finetune_electra.py: encode, predict,
    score), so every head it trains (classification, regression, token classification, QA) is
    scored here exactly as during fine-tuning."""
    import dataclasses

    from ..tokenizers import ElectraTokenizer
    from .finetune_electra import MODEL_CLASSES, default_config, encode, load_data, predict, score

    config = read_json(model_dir / "config.json")
    arch = (config.get("architectures") or [""])[0]
    if arch not in ELECTRA_HEADS:
        raise ConfigError(f"{model_dir}: architecture {arch!r} has no task head to evaluate (fine-tune it first: "
                          f"`t5electra finetune`)")
    head = ELECTRA_HEADS[arch]
    if head == "classification" and config.get("num_labels", len(config.get("id2label") or {0: 0, 1: 1})) == 1:
        head = "regression"
    max_length = min(max_length, int(config.get("max_position_embeddings", 512)))
    cfg = default_config()
    cfg.data.task, cfg.data.task_dir, cfg.electra.head, cfg.data.max_length = task.name, data_dir, head, max_length
    data = load_data(cfg)
    if split not in data.splits:
        raise DataError(f"task {task.name!r} has no {split!r} split (splits: {', '.join(data.splits)})")
    data = dataclasses.replace(data, splits={split: data.splits[split][:max_examples]})
    if not data.splits[split]:
        raise DataError(f"task {task.name!r}: the {split!r} split is empty")
    model = MODEL_CLASSES[head].from_pretrained(model_dir).to(device)
    tokenizer = ElectraTokenizer.from_pretrained(model_dir)
    features = encode(data, split, tokenizer, cfg)
    preds, loss = predict(model, features, batch_size, tokenizer.pad_token_id, device)
    return score(data, data.splits[split], features, preds, loss, cfg), len(data.splits[split])
