"""core/atomic.py: the one helper every durable write goes through."""

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
