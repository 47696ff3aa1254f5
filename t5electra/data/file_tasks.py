"""Tasks over your own files, for T5 and ELECTRA alike: the same data flags fine-tune either model.

``classify``: a text (or a pair) and a class per row. T5 answers with the class name
(``"classify review: a gripping film" -> "positive"``), ELECTRA's classification head predicts its
id; accuracy and macro F1. The classes are those of the training file (integers ``0..max`` when
every label is a number, else the sorted names); a label in another split that the training file
does not have is an error, not a class the model never saw.

``text2text``: an input text and a target text per row (columns ``inputs`` / ``targets``, or
``input``/``source``/``text``/``question`` and ``target``/``output``/``summary``/``answer``),
given to T5 as written; exact match, BLEU (by character when most targets are Chinese, Japanese
or Korean: ``metrics.bleu_tokenizer``) and chrF.

    get_task("classify", data_dir="mydata/")   # train/dev/test .csv/.tsv/.jsonl/.parquet, found by name
    get_task("classify", files={"train": "a.csv", "validation": "b.csv"}, text_columns=["review"],
             label_column="stars")
    t5electra finetune --model.init_from=runs/t5/model --data.train_files=train.csv --data.validation_files=dev.csv

Without a task name, the files say which: a label column with few distinct values (at most 2, or
fewer than half the rows) is ``classify``, input/target columns (or a label column of mostly
distinct texts) ``text2text``. Labels are class names without surrounding spaces; ``1`` (JSONL)
and ``"1"`` (CSV) are one class.

Rows are checked as they are read, with the file and line in every error: a missing column, fewer or
more cells than the header (an unquoted separator), a repeated header line, an empty label, bytes
that are not UTF-8.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import metrics as M
from ..config import suggest
from ..errors import ConfigError, DataError
from .readers import Example, FileSource, find_split_files, read_records, utf8_guard
from .task_base import Head, Task, _clean, _strip, classification_task

EXTENSIONS = (".tsv", ".csv", ".jsonl", ".parquet")
INPUT_COLUMNS = ("inputs", "input", "source", "text", "question")
TARGET_COLUMNS = ("targets", "target", "output", "summary", "answer")
logger = logging.getLogger("t5electra")


# --------------------------------------------------------------------------------------------
# Rows and labels (the ELECTRA heads' own-file reading uses these too: data/heads.py)
# --------------------------------------------------------------------------------------------
def label_name(value: Any) -> str:
    """A label as a class name: its text without surrounding spaces (``1`` from JSONL and ``"1"``
    from CSV are one class; ``" positive"`` after a CSV comma is ``positive``)."""
    return str(value).strip()


def label_names(values: Sequence[Any]) -> list[str]:
    """Class names in id order: ``0..max`` when every label is an integer >= 0, else sorted names."""
    names = sorted({label_name(v) for v in values} - {""})
    if not names:
        raise DataError("no labels found in the training data")
    if all(n.isdigit() for n in names):
        return [str(i) for i in range(max(int(n) for n in names) + 1)]
    return names


def text_columns_of(row: Example, text_columns: Sequence[str] | None, where: str) -> list[str]:
    """The text column(s): ``text_columns`` or the first of sentence(+sentence2), text(+text_pair),
    sentence1(+sentence2) in the row."""
    cols = list(text_columns or next(
        ([a, b] if b in row else [a] for a, b in (("sentence", "sentence2"), ("text", "text_pair"),
                                                  ("sentence1", "sentence2")) if a in row), []))
    if not cols:
        raise DataError(f"{where}: no text column: set data.text_columns (columns: {sorted(map(str, row))})")
    if len(cols) > 2:
        raise ConfigError(f"data.text_columns: one text or a pair, got {cols}")
    return cols


def check_row(row: Example, columns: Sequence[str], where: str) -> None:
    """Every column present with a value, no cells past the header's, not a repeated header line."""
    if None in row:  # csv.DictReader puts the cells past the header's under the key None
        raise DataError(f"{where}: {len(row) - 1 + len(row[None])} cells where the header has {len(row) - 1} "
                        f"(an unquoted separator in the text?)")
    for c in columns:
        if c not in row:
            raise DataError(f"{where}: no column {c!r}{suggest(c, row)}; columns: {sorted(map(str, row))}")
        if row[c] is None:  # csv.DictReader: the row has fewer cells than the header
            raise DataError(f"{where}: no value in column {c!r} (the row has fewer cells than the header)")
    if all(str(row[c]) == c for c in columns):
        raise DataError(f"{where}: the row repeats the header ({', '.join(map(str, row))}): files joined with "
                        f"their headers?")


def text_example(row: Example, text_columns: Sequence[str] | None, label_column: str, where: str) -> Example:
    """``{"text", "text_pair", "label"}`` of a checked row (the label as written)."""
    cols = text_columns_of(row, text_columns, where)
    check_row(row, [*cols, label_column], where)
    return {"text": str(row[cols[0]]), "text_pair": str(row[cols[1]]) if len(cols) > 1 else None,
            "label": row[label_column]}


def rows(path: Path) -> Iterator[Example]:
    """The records of ``path``; bytes that are not UTF-8 are an error naming the file."""
    return utf8_guard(path, read_records(path))


def where_row(path: Path, i: int) -> str:
    """``file:line`` for a CSV/TSV row (after the header), ``file: example n`` otherwise (i from 0)."""
    return f"{path}:{i + 2}" if path.suffix.lower() in (".csv", ".tsv") else f"{path}: example {i + 1}"


def split_files(name: str, data_dir: str | Path | None, files: Mapping[str, Any] | None) -> dict[str, Path]:
    """``{split: file}`` from ``files`` (split -> a path, or a one-path list) or else found in ``data_dir``."""
    if files and any(files.values()):
        out = {}
        for split, paths in files.items():
            paths = [paths] if isinstance(paths, (str, Path)) else list(paths or [])
            if len(paths) > 1:
                raise ConfigError(f"data.{split}_files: one file per split, got {len(paths)}")
            if paths:
                out[split] = Path(paths[0]).expanduser()
                if out[split].is_dir():
                    raise DataError(f"data.{split}_files: {out[split]} is a directory: give one file per split "
                                    f"(or the directory as data.task_dir, its files named train/dev/test)")
                if not out[split].is_file():
                    raise DataError(f"data.{split}_files: {out[split]} does not exist")
        return out
    if data_dir is None:
        raise ConfigError(f"task {name!r} reads your files: give data_dir= (train/dev/test with a suffix of "
                          f"{', '.join(EXTENSIONS)}) or files= (--data.train_files=... --data.validation_files=...)")
    return find_split_files(data_dir, EXTENSIONS)


def _main_file(files: Mapping[str, Path]) -> Path:
    """The file whose rows define the task: the training split's (any split's for evaluation alone)."""
    return files.get("train") or next(iter(files.values()))


def _first_row(files: Mapping[str, Path]) -> tuple[Example, str]:
    path = _main_file(files)
    row = next(iter(rows(path)), None)
    if row is None:
        raise DataError(f"{path}: no rows")
    return row, where_row(path, 0)


# --------------------------------------------------------------------------------------------
# The tasks
# --------------------------------------------------------------------------------------------
def classify_task(data_dir: str | Path | None = None, *, files: Mapping[str, Any] | None = None,
                  text_columns: Sequence[str] | None = None, label_column: str = "label",
                  labels: Sequence[str] | None = None, name: str = "classify") -> Task:
    """A text (or pair) classification task over your files (module doc). ``labels``: the classes in id
    order (a trained classifier's); default: those of the training file."""
    paths = split_files(name, data_dir, files)
    first, where = _first_row(paths)
    cols = text_columns_of(first, text_columns, where)

    def checked(path: Path) -> Iterator[Example]:
        for i, row in enumerate(rows(path)):
            check_row(row, [*cols, label_column], where_row(path, i))
            yield {**row, label_column: label_name(row[label_column])}

    # the classes are those of the training split (all splits' when there is none: evaluation alone)
    whose = "the model's" if labels else "the training split's"
    seen = [] if labels else [r[label_column] for s in (["train"] if "train" in paths else list(paths))
                              for r in checked(paths[s])]
    labels = list(labels) if labels else label_names(seen)
    # one class to learn: training ran, then sklearn's metrics failed (an empty label is reported on reading)
    if seen and "train" in paths and len(labels) < 2 and "" not in seen:
        raise DataError(f"{paths['train']}: every training row has the label {labels[0]!r} (column {label_column!r}): "
                        f"a classifier needs two or more classes")
    ids = set(labels)

    def read(path: Path) -> Iterator[Example]:
        for i, row in enumerate(checked(path)):
            if row[label_column] not in ids:
                what = "an empty label" if row[label_column] == "" else f"label {row[label_column]!r}"
                raise DataError(f"{where_row(path, i)}: {what} (column {label_column!r}) is not one of {whose} "
                                f"classes {labels[:20]}{' ...' if len(labels) > 20 else ''}")
            yield row

    return classification_task(name, FileSource(paths, read), text_keys=cols, labels=labels, label_key=label_column,
                               prefix=name, metrics=(M.accuracy, M.macro_f1),
                               description=f"your files ({', '.join(map(str, paths.values()))})")


def text2text_task(data_dir: str | Path | None = None, *, files: Mapping[str, Any] | None = None,
                   text_columns: Sequence[str] | None = None, label_column: str | None = "label",
                   name: str = "text2text") -> Task:
    """Input text -> target text over your files (module doc). ``text_columns[0]`` names the input
    column, ``label_column`` the target column (defaults: INPUT_COLUMNS; TARGET_COLUMNS, else a
    ``label`` column)."""
    paths = split_files(name, data_dir, files)
    first, where = _first_row(paths)
    source = list(text_columns or [c for c in INPUT_COLUMNS if c in first][:1])
    named = bool(label_column) and label_column != "label"  # data.label_column set: that column or an error
    if named and label_column not in first:
        raise DataError(f"{where}: no target column {label_column!r} (data.label_column){suggest(label_column, first)}; "
                        f"columns: {sorted(map(str, first))}")
    target = [label_column] if named else ([c for c in TARGET_COLUMNS if c in first][:1] or
                                            (["label"] if "label" in first else []))
    if len(source) != 1 or not target:
        raise DataError(f"{where}: text2text needs an input and a target column (inputs/targets, or "
                        f"data.text_columns=[IN] and data.label_column=OUT); columns: {sorted(map(str, first))}")
    cols = [source[0], target[0]]

    def read(path: Path) -> Iterator[Example]:
        for i, row in enumerate(rows(path)):
            check_row(row, cols, where_row(path, i))
            yield row

    def preprocess(ex: Example) -> dict[str, str]:
        return {"inputs": _clean(ex[cols[0]]), "targets": _clean(ex[cols[1]])}

    # M.bleu tokenises by the scored targets' script (metrics.bleu_tokenizer: zh for Chinese)
    metrics = (M.sequence_accuracy, M.bleu, M.chrf)
    return Task(name, FileSource(paths, read), preprocess, _strip, lambda ex: _clean(ex[cols[1]]), metrics,
                Head("generation"), f"your files ({', '.join(map(str, paths.values()))})")


FILE_TASKS = {"classify": classify_task, "text2text": text2text_task}


def files_task(files: Mapping[str, Any], name: str | None = None, *, text_columns: Sequence[str] | None = None,
               label_column: str = "label") -> Task:
    """The task of your ``files``: ``name`` (classify / text2text), or else the one their columns
    show (:func:`detect_kind`)."""
    if name is None:
        name = detect_kind(split_files("classify", None, files), label_column)
    if name not in FILE_TASKS:
        raise ConfigError(f"data.task={name!r} reads its own files, not data.train_files/validation_files/test_files "
                          f"(put them in data.task_dir){suggest(name, FILE_TASKS)}; tasks over your files: "
                          f"{', '.join(FILE_TASKS)}")
    return FILE_TASKS[name](files=files, text_columns=text_columns, label_column=label_column)


def detect_kind(paths: Mapping[str, Path], label_column: str = "label") -> str:
    """``classify`` when the training file has the label column and its values look like classes
    (fewer distinct values than half the rows, or at most 2), ``text2text`` when it has a target
    column (or the label column holds mostly distinct texts); logged, with how to choose."""
    first, where = _first_row(paths)
    name = None
    if label_column in first:
        values = [label_name(r.get(label_column, "")) for r in itertools.islice(rows(_main_file(paths)), 10_000)]
        distinct = len(set(values))
        name = "classify" if distinct <= 2 or distinct * 2 <= len(values) else "text2text"
    elif any(c in first for c in TARGET_COLUMNS):
        name = "text2text"
    if name is None:
        raise DataError(f"{where}: neither a label column {label_column!r} (classify) nor a target column "
                        f"({', '.join(TARGET_COLUMNS)}: text2text); columns: {sorted(map(str, first))}. "
                        f"Set data.label_column, or data.task=classify|text2text")
    logger.info("your files make a %r task (set data.task=classify or text2text to choose)", name)
    return name
