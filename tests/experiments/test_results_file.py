"""An experiment's results.jsonl under interruptions: a record cut short by a kill (or a full disk)
while it was appended costs that job a rerun, not the grid ('not a JSON record' on every later run),
and rewriting the file (stamp_machine) is all or nothing."""

from __future__ import annotations

import json

import pytest

from t5electra.core import atomic
from t5electra.errors import ConfigError
from t5electra.experiments import runner


def test_a_record_cut_short_is_left_out_and_the_next_append_drops_it(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "a", "wall_s": 1}) + "\n" + '{"id": "b", "wall_')
    assert list(runner.read_results(tmp_path)) == ["a"]  # b runs again
    runner._append(tmp_path, {"id": "b", "wall_s": 2})
    assert path.read_text().splitlines() == [json.dumps({"id": "a", "wall_s": 1}), json.dumps({"id": "b", "wall_s": 2})]
    assert runner.read_results(tmp_path)["b"]["wall_s"] == 2


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "a"}))
    runner._append(tmp_path, {"id": "b"})
    assert list(runner.read_results(tmp_path)) == ["a", "b"]


def test_a_damaged_line_inside_the_file_is_still_an_error(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"id": "a"\n' + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(ConfigError, match="results.jsonl:1: not a JSON record"):
        runner.read_results(tmp_path)


def test_stamping_the_machine_is_all_or_nothing(tmp_path, monkeypatch):
    path = tmp_path / "results.jsonl"
    lines = "".join(json.dumps({"id": i, "wall_s": 1}) + "\n" for i in "abc")
    path.write_text(lines)
    records = runner.read_results(tmp_path)

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        runner.stamp_machine(tmp_path, records, {"cpu": "x"})
    assert path.read_text() == lines  # (rewritten in place, a failure lost every record)
    monkeypatch.undo()
    runner.stamp_machine(tmp_path, runner.read_results(tmp_path), {"cpu": "x"})
    assert all(r["machine"] == {"cpu": "x"} for r in runner.read_results(tmp_path).values())
