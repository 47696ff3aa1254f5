"""Score a checkpoint on a task split: the numbers ``t5electra evaluate`` prints as JSON.

    from t5electra.recipes.evaluate import evaluate_checkpoint
    evaluate_checkpoint("runs/sentiment-t5", "sentiment", split="test")   # {"accuracy": 91.2, ...}

A T5 checkpoint answers in text: each example's ``inputs`` (with the task prefix) is encoded,
the model generates greedily (or with beams), and the task's postprocessor maps the text to a
label / number / answer before its metrics score it. Text that is not a valid answer (a label
name the task does not have, a non-number for a regression) counts as wrong, as in T5's own
evaluation (``t5/data/postprocessors.py``).

An ELECTRA (or BERT) checkpoint with a task head is scored as the ELECTRA fine-tuning recipe
scores it (``eval/heads.py``: classification, regression, token classification, extractive QA);
``models/registry.py`` says which head a checkpoint has.

``CHECKPOINT`` may be a model directory, a training checkpoint (``RUN/checkpoints/step-N``) or a
run directory, which resolves to ``RUN/model`` (the fine-tuning recipes save the best checkpoint
there), then the latest checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import yaml

from ..core.atomic import write_output
from ..core.jsonl import json_line
from ..data.file_tasks import FILE_TASKS
from ..data.heads import encode, load_task_data
from ..data.readers import spread_subset
from ..data.tasks import Task
from ..errors import CheckpointNotFoundError, ConfigError, DataError, WeightsMismatchError
from ..eval.heads import predict, score
from ..eval.text_to_text import Example, mixture_metrics, score_t5, score_tasks, task_list
from ..models.registry import HEAD_CLASSES, architecture, model_kind, read_model_config, task_head
from ..models.t5 import T5ForConditionalGeneration
from ..tokenizers import ElectraTokenizer, T5Tokenizer
from ..train.checkpointing import CheckpointManager, follow_pointer, is_electra_pretraining_output
from ..train.config import saved_workdir


# --------------------------------------------------------------------------------------------
# Finding the model
# --------------------------------------------------------------------------------------------
def resolve_model_dir(path: str | Path) -> Path:
    """A directory with config.json: ``path`` itself, or inside a run directory (see module doc)."""
    p = follow_pointer(path)
    if not p.is_dir():
        raise CheckpointNotFoundError(f"{str(p)!r} is not a directory (expected a model, checkpoint or run directory)")
    if (p / "config.json").is_file():
        return p
    if (p / "model" / "config.json").is_file():
        return p / "model"
    latest = CheckpointManager(p).latest()
    if latest is not None and (latest / "config.json").is_file():
        return latest
    for d in (p, p / "model", latest):
        if d is not None and is_electra_pretraining_output(d):
            raise ConfigError(f"{p} is an ELECTRA pretraining output ({d}: generator/ + discriminator/): it has "
                              f"no task head to evaluate and does not generate text. Fine-tune it first "
                              f"(`t5electra finetune --model.init_from={d}`), or load its discriminator with "
                              f"ElectraPipeline for replaced-token detection")
    from ..lora.merge import is_adapter_dir

    adapter = next((d for d in (p, p / "model", p / "adapter", latest) if d is not None and is_adapter_dir(d)), None)
    if adapter is not None:  # as `t5electra convert` says
        raise CheckpointNotFoundError(f"{adapter} holds a LoRA adapter (adapter_config.json), not a model: merge it "
                                      f"into its base model with `t5electra convert --merge {adapter} DST` "
                                      f"(--base BASE_DIR when the adapter's base is elsewhere) and give DST")
    raise CheckpointNotFoundError(f"{p}: no config.json, and no model/ or checkpoints/ with one "
                                  f"(give a directory written by save_pretrained or a training run)")


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------
def run_data(model_dir: Path) -> dict[str, Any] | None:
    """The ``data`` section of the run that wrote ``model_dir`` (``RUN/model`` or
    ``RUN/checkpoints/step-N``: ``RUN/config.yaml``), its relative paths made absolute from the
    working directory the run recorded, with the run's QA ``doc_stride`` / ``max_answer_length``;
    None outside a run."""
    for run in (model_dir, model_dir.parent, model_dir.parent.parent):
        if (run / "config.yaml").is_file() and (run / "metrics.jsonl").exists():
            text = (run / "config.yaml").read_text(encoding="utf-8")
            config = yaml.safe_load(text) or {}
            data = config.get("data") if isinstance(config.get("data"), dict) else None
            if data is None:
                return None
            electra = config.get("electra") if isinstance(config.get("electra"), dict) else {}
            # QA windows and spans, as the run scored them
            data = {**data, "doc_stride": electra.get("doc_stride"), "max_answer_length": electra.get("max_answer_length")}
            workdir = saved_workdir(text)
            if workdir is None:  # (a run written before the working directory was recorded)
                return data
            return {**data, "task_dir": _under(workdir, data.get("task_dir")),
                    **{f"{s}_files": [_under(workdir, p) for p in data.get(f"{s}_files") or []]
                       for s in ("train", "validation", "test")}}
    return None


def _under(workdir: Path, path: str | None) -> str | None:
    return None if not path else str(workdir / Path(path).expanduser())


def evaluate_checkpoint(checkpoint: str | Path, task: str | None = None, split: str = "test", *,
                        data_dir: str | None = None, text_columns: list[str] | None = None,
                        label_column: str | None = None, batch_size: int = 32, max_examples: int | None = None,
                        max_length: int | None = None, max_new_tokens: int | None = None, num_beams: int = 1,
                        device: str = "cpu",
                        predictions_file: str | Path | None = None, weights: str = "fp32") -> dict[str, Any]:
    """``{"checkpoint", "task", "split", "num_examples", "metrics"}`` for a T5 or ELECTRA checkpoint.

    ``task``: a registered task or mixture (files in ``data_dir`` where it needs them); ``classify`` /
    ``text2text`` with your files in ``data_dir``; None: your files in ``data_dir`` (the task found
    from their columns), or else the data the checkpoint's run was fine-tuned on (its ``config.yaml``:
    task, files, columns). ``text_columns`` / ``label_column``: your files' columns (default: the
    run's, else the defaults of data/file_tasks.py). ``predictions_file`` (T5 only): also write one JSON line per example with the
    input, the target and the generated text. ``weights``: the model runs
    ``optimize_for_inference(weights)`` ("fp32": the exact fast path; "bf16", "int8": docs/inference.md).
    ``max_length`` (input tokens) and ``max_new_tokens`` (T5's answers): by default the run's
    (``data.max_length`` of its config.yaml; the answer length fine-tuning saved in the model's
    generation_config.json), as fine-tuning scored its results.json, else 512 and 32.
    """
    model_dir = resolve_model_dir(checkpoint)
    data = _data_spec(model_dir, task, data_dir)
    if text_columns:
        data["text_columns"] = list(text_columns)
    if label_column:
        data["label_column"] = label_column
    dev = torch.device(device)
    max_length = max_length or data.pop("max_length", None) or 512
    if model_kind(model_dir) == "t5":
        tasks = task_list(data["task"], data["task_dir"], files=data["files"], text_columns=data["text_columns"],
                          label_column=data["label_column"])
        model = _complete(T5ForConditionalGeneration.from_pretrained(model_dir), model_dir)
        model = model.to(dev).optimize_for_inference(weights)
        max_new_tokens = max_new_tokens or model.generation_config.max_new_tokens or 32
        tokenizer = T5Tokenizer.from_pretrained(model_dir)
        examples = {t.name: _examples(t, split, max_examples) for t in tasks}
        if predictions_file is None and not any(t.labelled(ex) for t in tasks for ex in examples[t.name]):
            raise DataError(_no_labels(data["task"] or tasks[0].name, split, t5=True))
        kw = dict(batch_size=batch_size, max_length=max_length, max_new_tokens=max_new_tokens, num_beams=num_beams)
        if predictions_file is not None:
            metrics = _score_and_write(model, tokenizer, tasks, examples, Path(predictions_file), **kw)
        else:
            metrics = score_tasks(model, tokenizer, tasks, examples, **kw)
        n = sum(len(v) for v in examples.values())
        name = data["task"] or tasks[0].name
    else:
        if predictions_file is not None:
            raise ConfigError(f"{model_dir}: --predictions writes T5's generated texts; an ELECTRA head's predictions "
                              f"are class ids, spans or tags (score them without it)")
        if data["task"] and any(c in data["task"] for c in "+,"):
            raise ConfigError(f"{model_dir}: an ELECTRA head answers one task, not the mixture {data['task']!r}")
        qa = {k: data.pop(k) for k in ("doc_stride", "max_answer_length") if data.get(k)}
        metrics, n, name = _evaluate_electra(model_dir, data, split, dev, batch_size=batch_size, max_length=max_length,
                                             **qa,
                                             max_examples=max_examples, weights=weights)
    return {"checkpoint": str(model_dir), "task": name, "split": split, "num_examples": n, "metrics": metrics}


def _data_spec(model_dir: Path, task: str | None, data_dir: str | None) -> dict[str, Any]:
    """What to score on: the arguments, completed from the checkpoint's run where they are silent."""
    spec = {"task": task, "task_dir": data_dir, "files": None, "text_columns": None, "label_column": "label"}
    run = run_data(model_dir)
    if run is not None and (task is None or task == run.get("task") or task in FILE_TASKS):
        spec.update(text_columns=run.get("text_columns") or None, label_column=run.get("label_column") or "label",
                    max_length=run.get("max_length"), doc_stride=run.get("doc_stride"),
                    max_answer_length=run.get("max_answer_length"))
    named_own = run is not None and task is not None and task == run.get("task") and data_dir is None
    if (task is not None and not named_own) or data_dir is not None:  # task None: your files in data_dir
        return spec
    if run is None:
        raise ConfigError(f"{model_dir}: no task to score on: give --task (and --data-dir for its files), or "
                          f"--data-dir with your train/dev/test files; a model inside its training run is scored on "
                          f"the run's own data by default")
    # (the run's own data: also when --task names the run's task, whose files it knows)
    files = {s: run.get(f"{s}_files") or [] for s in ("train", "validation", "test")}
    return {**spec, "task": run.get("task"), "task_dir": run.get("task_dir"),
            "files": files if any(files.values()) else None}


def _examples(task: Task, split: str, max_examples: int | None) -> list[Example]:
    if split not in task.splits:
        raise DataError(f"task {task.name!r} has no {split!r} split (splits: {', '.join(task.splits)})")
    rows = spread_subset(list(task.examples(split)), max_examples)
    if not rows:
        raise DataError(f"task {task.name!r}: the {split!r} split is empty")
    return rows


def _complete(model, model_dir: Path):
    """The model, unless part of it was not in the checkpoint: scores of a randomly initialised head
    (e.g. a BertForSequenceClassification, whose pooler classifier has no ELECTRA equivalent) were
    reported as the model's with only a log line."""
    report = getattr(model, "load_report", None)
    if report is not None and report.newly_initialized:
        raise WeightsMismatchError(f"{model_dir}: its weights do not fill {type(model).__name__}: "
                                   f"{report.newly_initialized[:4]} would be scored from random values; fine-tune "
                                   f"it with t5electra first (`t5electra finetune --model.init_from=...`)")
    return model


def _no_labels(task: str, split: str, t5: bool) -> str:
    return (f"task {task!r}: the {split!r} split has no labels (GLUE's test files have none): score "
            f"--split validation" + (", or write the model's answers with --predictions FILE" if t5 else ""))


def _score_and_write(model, tokenizer, tasks, examples, path: Path, **kw) -> dict[str, float]:
    """Score the tasks and write every prediction to ``path``, whole, once all are made (an evaluation
    that failed or was killed half-way truncated an earlier file and left the first tasks' lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scores: dict[str, dict[str, float]] = {}
    lines: list[str] = []
    for task in tasks:
        scores[task.name], preds = score_t5(model, tokenizer, task, examples[task.name], **kw)
        lines += [json_line({"task": task.name, "input": ex["inputs"], "target": ex["targets"], "prediction": pred})
                  for ex, pred in zip(examples[task.name], preds)]
    write_output(path, "".join(lines))
    # the metrics score_tasks reports without --predictions (a mixture's "average" too)
    return scores[tasks[0].name] if len(tasks) == 1 else mixture_metrics(scores)


def model_labels(config: dict) -> list[str] | None:
    """A classifier's class names in id order, when its config names them (not transformers' LABEL_i
    or bare ids): your files are then read with these classes, whatever rows the split holds."""
    id2label = config.get("id2label") or {}
    n = int(config.get("num_labels", len(id2label) or 2))
    names = [str(id2label.get(str(i), id2label.get(i, i))) for i in range(n)]
    return None if all(name in (f"LABEL_{i}", str(i)) for i, name in enumerate(names)) else names


def _check_labels(config: dict, labels: list[str], task: str, model_dir: Path) -> None:
    """A classifier scored on a task must predict that task's classes: the same number, and the same
    names where the model records real ones (not transformers' LABEL_i or bare ids)."""
    if not labels:  # regression, QA
        return
    id2label = config.get("id2label") or {}
    n = int(config.get("num_labels", len(id2label) or 2))
    names = [str(id2label.get(str(i), id2label.get(i, i))) for i in range(n)]
    generic = all(name in (f"LABEL_{i}", str(i)) for i, name in enumerate(names))
    if n != len(labels) or (not generic and names != list(labels)):
        raise ConfigError(f"{model_dir}: the model predicts {n} classes ({', '.join(names)}), task {task!r} has "
                          f"{len(labels)} ({', '.join(labels)}): evaluate it on the task it was fine-tuned for")


def _evaluate_electra(model_dir: Path, data_spec: dict[str, Any], split: str, device: torch.device, *,
                      batch_size: int, max_length: int, max_examples: int | None, weights: str = "fp32",
                      doc_stride: int = 128, max_answer_length: int = 30) -> tuple[dict[str, float], int, str]:
    """The scoring the ELECTRA fine-tuning recipe uses (data/heads.py: load, encode; eval/heads.py:
    predict, score), so every head it trains (classification, regression, token classification,
    QA) is scored here exactly as during fine-tuning. Your files without a task are read for the
    model's head, as the recipe reads them. Returns the metrics, the number of examples and the
    task's name."""
    config = read_model_config(model_dir)
    arch = architecture(config, str(model_dir / "config.json"))
    if arch.head not in HEAD_CLASSES:
        raise ConfigError(f"{model_dir}: architecture {arch.name!r} has no task head to evaluate (fine-tune it first: "
                          f"`t5electra finetune`)")
    head = task_head(arch, config)
    max_length = min(max_length, int(config.get("max_position_embeddings", 512)))
    d = data_spec
    names = model_labels(config)
    data = load_task_data(head, task=d["task"], task_dir=d["task_dir"], files=d["files"], text_columns=d["text_columns"],
                          label_column=d["label_column"], labels=names if head in ("classification", "token_classification") else None)
    name = d["task"] or ("classify" if head == "classification" else f"your {head} files")
    if split not in data.splits:
        raise DataError(f"task {name!r} has no {split!r} split (splits: {', '.join(data.splits)})")
    _check_labels(config, data.labels, name, model_dir)
    data = dataclasses.replace(data, splits={split: spread_subset(data.splits[split], max_examples)})
    if not data.splits[split]:
        raise DataError(f"task {name!r}: the {split!r} split is empty")
    if data.unlabelled(split):
        raise DataError(_no_labels(name, split, t5=False))
    model = _complete(arch.cls.from_pretrained(model_dir), model_dir).to(device).optimize_for_inference(weights)
    tokenizer = ElectraTokenizer.from_pretrained(model_dir)
    features = encode(data, split, tokenizer, max_length, doc_stride)
    preds, loss = predict(model, features, batch_size, tokenizer.pad_token_id, device)
    return (score(data, data.splits[split], features, preds, loss, max_answer_length), len(data.splits[split]), name)
