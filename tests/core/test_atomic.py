"""core/atomic.py: the one helper every durable write goes through."""

import os

import pytest

from t5electra.core import atomic


def test_write_replaces_whole_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "config.json"
    atomic.write_text_atomic(path, "old\n")
    atomic.write_text_atomic(path, "néw\n")
    assert path.read_text(encoding="utf-8") == "néw\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "index.json"
    atomic.write_text_atomic(path, "complete\n")

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", no_rename)
    with pytest.raises(OSError, match="No space left"):
        atomic.write_text_atomic(path, "half")
    assert path.read_text() == "complete\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]  # the temporary is removed


def test_replace_atomic_moves_a_file_written_elsewhere(tmp_path):
    final = tmp_path / "model.safetensors"
    tmp = atomic.temp_path(final)
    tmp.write_bytes(b"\x00" * 8)
    assert atomic.replace_atomic(tmp, final) == final and final.read_bytes() == b"\x00" * 8 and not tmp.exists()


# --- directories: writing_dir -------------------------------------------------------------------
def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_writing_dir_publishes_the_directory_whole(tmp_path):
    target = tmp_path / "model"
    with atomic.writing_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".model.tmp") and not target.exists()
        (tmp / "model.safetensors").write_bytes(b"w")
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # nothing left beside it


def test_writing_dir_that_fails_leaves_the_old_directory_as_it_was(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("old")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic.writing_dir(target) as tmp:
            (tmp / "config.json").write_text("new, half written")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert (target / "config.json").read_text() == "old"


def test_writing_dir_replaces_an_old_directory_with_none_of_its_files(tmp_path):
    """A new save into a directory of an earlier one: no file of the old one stays beside the new ones
    (an old model.safetensors.index.json, generation_config.json, adapter files ...)."""
    target = tmp_path / "model"
    target.mkdir()
    for name in ("model.safetensors.index.json", "generation_config.json", "config.json"):
        (target / name).write_text("old")
    with atomic.writing_dir(target) as tmp:
        (tmp / "config.json").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["config.json"]
    assert (target / "config.json").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_writing_dir_without_replace_takes_an_empty_directory_but_not_a_full_one(tmp_path):
    (tmp_path / "empty").mkdir()
    with atomic.writing_dir(tmp_path / "empty", replace=False) as tmp:
        (tmp / "a").write_text("a")
    assert (tmp_path / "empty" / "a").read_text() == "a"
    with pytest.raises(FileExistsError):  # another writer was first: its files stay
        with atomic.writing_dir(tmp_path / "empty", replace=False) as tmp:
            (tmp / "b").write_text("b")
    assert sorted(p.name for p in (tmp_path / "empty").iterdir()) == ["a"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_leftovers_of_killed_writers_are_removed_and_a_live_writers_kept(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    for name in (f".model.tmp{dead}", f".model.old{dead}", f".model.tmp{live}"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".other.tmp1").mkdir()  # another target's
    with atomic.writing_dir(tmp_path / "model") as tmp:
        (tmp / "config.json").write_text("{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".model.tmp" + str(live), ".other.tmp1", "model"]


def test_write_output_replaces_a_file_whole_and_writes_through_a_link(tmp_path):
    out = tmp_path / "out.jsonl"
    atomic.write_output(out, "one\n")
    atomic.write_output(out, "two\n")
    assert out.read_text() == "two\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]
    link = tmp_path / "link.jsonl"
    link.symlink_to(out)
    atomic.write_output(link, "three\n")
    assert link.is_symlink() and out.read_text() == "three\n"
