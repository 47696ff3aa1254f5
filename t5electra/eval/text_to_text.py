"""Scoring text-to-text models: generate an answer for each example, map it through the task's
postprocessor, score with the task's metrics. Text that is not a valid answer (a label name the
task does not have, a non-number for a regression) counts as wrong, as in T5's own evaluation
(``t5/data/postprocessors.py``). The T5 fine-tuning recipe and ``evaluate`` share it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..data.file_tasks import EXTENSIONS, FILE_TASKS, files_task
from ..data.readers import find_split_files
from ..data.tasks import GLUE, Mixture, Task, get_task
from ..errors import ConfigError, DataError

Example = dict[str, Any]


def task_list(name: str | None, data_dir: str | None = None, *, files: Mapping[str, Any] | None = None,
              text_columns: Sequence[str] | None = None, label_column: str = "label") -> list[Task]:
    """``"sentiment"`` -> [task]; ``"sst2+mrpc"`` (or commas) -> the tasks of a mixture. With your
    ``files`` (split -> path(s)), or with ``data_dir`` and no ``name``, its train/dev/test files: the task
    over them (data/file_tasks.py: ``name`` classify or text2text, or else found from the columns);
    ``text_columns`` / ``label_column`` go to such tasks."""
    if not name and data_dir and not (files and any(files.values())):  # your train/dev/test files in data_dir
        files, data_dir = find_split_files(data_dir, EXTENSIONS), None
    if files and any(files.values()):
        if data_dir:
            raise ConfigError("give your files as data.train_files/validation_files/test_files or in data.task_dir, "
                              "not both")
        return [files_task(files, name or None, text_columns=text_columns, label_column=label_column)]
    names = [n.strip() for n in (name or "").replace(",", "+").split("+") if n.strip()]
    if not names:
        raise ConfigError("no task: name one (--data.task=sentiment, a mixture 'sst2+mrpc'; `t5electra data list "
                          "--tasks`) or give your files (--data.train_files=train.csv --data.validation_files=dev.csv)")
    if len(names) > 1 and data_dir and not all(n in GLUE for n in names):
        # a glue_data folder holds every GLUE task's folder (SST-2/, MRPC/, ...); other tasks read
        # their files from the folder itself, which one folder cannot be for several of them
        raise ConfigError(f"task {name!r} is a mixture: data_dir applies to one task only, or to GLUE tasks "
                          f"(a glue_data folder with their folders)")
    if names[0] in FILE_TASKS:
        return [get_task(names[0], data_dir=data_dir, text_columns=text_columns, label_column=label_column)]
    return [get_task(n, data_dir=data_dir) for n in names]


def mixture(tasks: Sequence[Task], name: str) -> Mixture:
    return Mixture.examples_proportional(name, tasks) if len(tasks) > 1 else Mixture(name, tuple(tasks), (1.0,))


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
                             max_new_tokens=max_new_tokens, num_beams=num_beams,
                             return_dict_in_generate=False)  # (b, 1 + new), whatever generation_config.json says
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


# Tasks that T5's GLUE average counts as one entry (t5/evaluation/eval_utils.py: METRIC_NAMES puts
# MNLIm and MNLImm in the group "MNLI").
AVERAGE_GROUPS = {"mnli_matched": "mnli", "mnli_mismatched": "mnli"}
# Tasks T5's GLUE average leaves out (METRIC_NAMES has no WNLI entry), unless nothing else is scored
AVERAGE_LEFT_OUT = frozenset({"wnli"})


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def mixture_average(scores: Mapping[str, Mapping[str, float]]) -> float:
    """T5's GLUE average (``compute_avg_glue``) over ``{task: {metric: value}}``: the mean of each
    task's metrics (MRPC F1 with accuracy, STS-B Pearson with Spearman), MNLI matched and
    mismatched as one entry (:data:`AVERAGE_GROUPS`), WNLI left out (:data:`AVERAGE_LEFT_OUT`), then
    the mean over the entries; every task weighs the same, however many metrics it reports."""
    groups: dict[str, list[float]] = {}
    counted = {t: m for t, m in scores.items() if t not in AVERAGE_LEFT_OUT} or scores
    for task, metrics in counted.items():
        groups.setdefault(AVERAGE_GROUPS.get(task, task), []).append(_mean(list(metrics.values())))
    return _mean([_mean(task_means) for task_means in groups.values()])


def score_tasks(model, tokenizer, tasks: Sequence[Task], examples: dict[str, list[Example]],
                **kwargs: Any) -> dict[str, float]:
    """One task: its metrics as named. Several (a mixture): ``"task/metric"`` plus ``"average"``
    (:func:`mixture_average`, T5's GLUE average)."""
    if len(tasks) == 1:
        return score_t5(model, tokenizer, tasks[0], examples[tasks[0].name], **kwargs)[0]
    return mixture_metrics({task.name: score_t5(model, tokenizer, task, examples[task.name], **kwargs)[0]
                            for task in tasks})


def mixture_metrics(scores: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """A mixture's ``{task: {metric: value}}`` as ``"task/metric"`` plus ``"average"``. A task without
    labelled examples in the split ({}: GLUE's test files) is left out (the average divided by zero),
    and the average needs two scored tasks, as fine-tuning's results.json reports such a split."""
    scored = {name: metrics for name, metrics in scores.items() if metrics}
    out = {f"{name}/{k}": v for name, metrics in scored.items() for k, v in metrics.items()}
    if len(scored) > 1:
        out["average"] = mixture_average(scored)
    return out
