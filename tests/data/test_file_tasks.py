"""Tasks over your own files (data/file_tasks.py): what a user's files hold, read as written."""

from __future__ import annotations

import json

import pytest

from t5electra.data.file_tasks import classify_task, files_task, text2text_task
from t5electra.data.heads import load_task_data
from t5electra.errors import ConfigError, DataError


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_numeric_labels_are_class_names_not_indices(tmp_path):
    """JSONL labels 0.5 / 1.0 / 1.5: the row labelled 1.5 was trained and scored as class "1.0"
    (int(1.5) taken as a class index); 1 (JSONL) and "1" (CSV) are one class."""
    train = _jsonl(tmp_path / "train.jsonl", [{"text": f"t{i}", "label": v} for i, v in enumerate([0.5, 1.0, 1.5] * 2)])
    task = classify_task(files={"train": train})
    assert task.head.labels == ("0.5", "1.0", "1.5")
    assert [e["targets"] for e in task.examples("train")][:3] == ["0.5", "1.0", "1.5"]
    assert [e["label"] for e in task.head_examples("train")][:3] == [0, 1, 2]
    ints = _jsonl(tmp_path / "ints.jsonl", [{"text": "a", "label": 1}, {"text": "b", "label": 0}])
    (tmp_path / "dev.csv").write_text("text,label\nc,1\n")
    task = classify_task(files={"train": ints, "validation": tmp_path / "dev.csv"})
    assert task.head.labels == ("0", "1") and [e["label"] for e in task.head_examples("validation")] == [1]
    signed = _jsonl(tmp_path / "signed.jsonl", [{"text": "a", "label": -1}, {"text": "b", "label": 1}])
    assert classify_task(files={"train": signed}).head.labels == ("-1", "1")  # names (was: "ids must be >= 0")


def test_labels_lose_surrounding_spaces(tmp_path):
    """'good film, positive': the class was ' positive', which no stripped T5 answer could equal
    (accuracy 0 for perfect answers), and 'pos' / 'pos ' were two classes."""
    (tmp_path / "train.csv").write_text("text,label\ngood film, positive\nbad film,negative \nfine,positive\n")
    task = classify_task(files={"train": tmp_path / "train.csv"})
    assert task.head.labels == ("negative", "positive")
    assert task.evaluate(["positive", "negative", "positive"], list(task.examples("train")))["accuracy"] == 100.0


def test_text2text_is_found_from_distinct_targets_and_a_named_column_must_exist(tmp_path):
    """`data.text_columns=[src] data.label_column=tgt` (the README's text2text spelling) made every
    target a class; a misspelt target column silently fell back to another one."""
    rows = [{"src": f"{a} plus {b}", "tgt": str(a + b)} for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (9, 9)]]
    train = _jsonl(tmp_path / "train.jsonl", rows)
    task = files_task({"train": [str(train)]}, text_columns=["src"], label_column="tgt")
    assert task.name == "text2text" and next(task.examples("train")) == {**rows[0], "inputs": "1 plus 2",
                                                                         "targets": "3", "task": "text2text"}
    two = _jsonl(tmp_path / "two.jsonl", [{"text": f"t{i}", "label": "ab"[i % 2]} for i in range(6)])
    assert files_task({"train": [str(two)]}).name == "classify"
    both = _jsonl(tmp_path / "both.jsonl", [{"src": "x", "tgt": "y", "target": "z"}])
    with pytest.raises(DataError, match="no target column 'targt' .*did you mean 'target'"):
        text2text_task(files={"train": both}, text_columns=["src"], label_column="targt")
    with pytest.raises(ConfigError, match="did you mean 'classify'"):
        files_task({"train": [str(two)]}, "classfy")


def test_file_errors_name_the_file(tmp_path):
    (tmp_path / "train.csv").write_bytes("text,label\ncaf\xe9 ok,pos\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train.csv: not UTF-8 text"):  # was a UnicodeDecodeError traceback
        classify_task(files={"train": tmp_path / "train.csv"})
    with pytest.raises(DataError, match="is a directory: give one file per split"):
        classify_task(files={"train": tmp_path})
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "a", "label": "x"}).encode() + b"\n"
                    + json.dumps({"text": "b", "label": "y"}).encode() + b"\n")
    assert classify_task(files={"train": bom}).head.labels == ("x", "y")  # a byte-order mark, as CSV/TSV allow


def test_numbers_as_text_reach_the_encoder_as_text(tmp_path):
    """JSONL {"text": 5}: ELECTRA failed with "text must be a str" naming no file; T5 used str()."""
    train = _jsonl(tmp_path / "train.jsonl", [{"text": 5, "label": "a"}, {"text": 6.5, "label": "b"}])
    data = load_task_data("classification", files={"train": [str(train)]})
    assert [e["text"] for e in data.splits["train"]] == ["5", "6.5"]
