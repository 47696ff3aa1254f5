"""What a run's data files were when it started, so that a resume notices when they changed.

A resumed run continues the data stream at the checkpoint's cursor (so many examples or tokens
into a deterministic order). If a file was edited, grown, shortened or replaced in between, the
cursor points into other data: the run would train on a different sequence than the one it
claims to continue, with no error. Every checkpoint records the fingerprint of the files the run
reads (``data.train_files`` / ``validation_files`` / ``test_files``, ``data.task_dir``,
``data.tokenizer``); resuming compares them with the files now and refuses a change, naming the
file, unless ``checkpoint.allow_data_change=true`` says the change is meant.

A fingerprint is the size and a SHA-256: of the whole file up to 64 MiB (~0.1 s), of its first
and last 4 MiB and 16 evenly spaced 64 KiB blocks above (a corpus of many GB is not read again at
each start; an edit that keeps the size and misses every block goes unseen there).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FULL_HASH_BYTES = 64 << 20
EDGE_BYTES = 4 << 20
BLOCK_BYTES = 64 << 10
BLOCKS = 16
MAX_FILES = 10_000  # a directory with more is fingerprinted by its first files in sorted order


def file_fingerprint(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size", "sha256"}`` (with ``"sampled": True`` above FULL_HASH_BYTES: module doc)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return {"size": size, "sha256": h.hexdigest()}
        h.update(f.read(EDGE_BYTES))
        for i in range(BLOCKS):
            f.seek(EDGE_BYTES + (size - 2 * EDGE_BYTES - BLOCK_BYTES) * i // max(BLOCKS - 1, 1))
            h.update(f.read(BLOCK_BYTES))
        f.seek(size - EDGE_BYTES)
        h.update(f.read(EDGE_BYTES))
    return {"size": size, "sha256": h.hexdigest(), "sampled": True}


def _files(entry: str) -> Iterable[Path]:
    """A file, every file under a directory (recursively, sorted), or the matches of a glob."""
    p = Path(entry).expanduser()
    if p.is_file():
        yield p
    elif p.is_dir():
        yield from sorted(f for f in p.rglob("*") if f.is_file())[:MAX_FILES]
    else:
        yield from (Path(m) for m in sorted(glob.glob(str(p), recursive=True)) if Path(m).is_file())


def data_fingerprint(inputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{absolute path: file_fingerprint}`` of every file behind ``inputs`` (``{"data.train_files":
    [paths], "data.task_dir": dir, ...}``; None and empty entries are skipped)."""
    out: dict[str, dict[str, Any]] = {}
    for value in inputs.values():
        for entry in value if isinstance(value, (list, tuple)) else [value]:
            if entry:
                for f in _files(str(entry)):
                    out.setdefault(str(f.resolve()), file_fingerprint(f))
    return out


def changed_files(saved: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """One line per file that differs between two fingerprints (changed, gone, new)."""
    lines = []
    for path in sorted(set(saved) | set(now)):
        a, b = saved.get(path), now.get(path)
        if a is None:
            lines.append(f"{path} (new since the checkpoint)")
        elif b is None:
            lines.append(f"{path} (gone)")
        elif a.get("size") != b.get("size"):
            lines.append(f"{path} ({a.get('size')} -> {b.get('size')} bytes)")
        elif a.get("sha256") != b.get("sha256"):
            lines.append(f"{path} (same size, other content)")
    return lines


def run_data_fingerprint(inputs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The fingerprint a checkpoint records: the files behind a run's inputs
    (``train.config.run_inputs``) but the model it starts from (a resume does not read it again)."""
    return data_fingerprint({k: v for k, v in inputs.items() if k != "model.init_from"})
