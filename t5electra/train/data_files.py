"""What a run's data files were when it started, so that a resume notices when they changed.

A resumed run continues the data stream at the checkpoint's cursor (so many examples or tokens
into a deterministic order). If a file was edited, grown, shortened or replaced in between, the
cursor points into other data: the run would train on a different sequence than the one it
claims to continue, with no error. Every checkpoint records the fingerprint of the files the run
reads (``data.train_files`` / ``validation_files`` / ``test_files``, the split files of
``data.task_dir`` (train*, dev*, val*, valid*, test*), ``data.tokenizer``; not the run's own
directory, nor hidden files); resuming compares them with the files now and refuses a change, naming the
file, unless ``checkpoint.allow_data_change=true`` says the change is meant.

A fingerprint is the size and a SHA-256: of the whole file up to 64 MiB (~0.1 s), of its first
and last 4 MiB and 16 evenly spaced 64 KiB blocks above; with many files each gets a share of
512 MiB (at least 256 KiB), so a corpus of many GB is not read again at each start (an edit that
keeps a file's size and misses every block read goes unseen there).
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..data.sources import expand_paths
from ..errors import DataError

FULL_HASH_BYTES = 64 << 20
EDGE_BYTES = 4 << 20
BLOCK_BYTES = 64 << 10
BLOCKS = 16
TOTAL_BYTES = 512 << 20  # read per start across all files (~1 s); each file's share, within:
MIN_BYTES = 256 << 10
MAX_FILES = 10_000  # a directory with more is fingerprinted by its first files in sorted order


def file_fingerprint(path: str | os.PathLike, budget: int | None = None) -> dict[str, Any]:
    """``{"size", "sha256"}``: of the whole file up to ``budget`` bytes, else (``"sampled": True``) of
    its two ends and BLOCKS blocks between them, about ``budget`` bytes in all (module doc)."""
    path, budget = Path(path), FULL_HASH_BYTES if budget is None else budget
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size <= budget:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
            return {"size": size, "sha256": h.hexdigest()}
        edge, block = min(EDGE_BYTES, budget // 4), min(BLOCK_BYTES, budget // (2 * BLOCKS))
        h.update(f.read(edge))
        for i in range(BLOCKS):
            f.seek(edge + (size - 2 * edge - block) * i // max(BLOCKS - 1, 1))
            h.update(f.read(block))
        f.seek(size - edge)
        h.update(f.read(edge))
    return {"size": size, "sha256": h.hexdigest(), "sampled": True}


CORPUS_KEYS = ("data.train_files", "data.validation_files", "data.test_files")  # read by data/sources.py
SPLIT_STEMS = ("train", "dev", "valid", "val", "test")  # data.task_dir: the files a task reads


def _files(entry: str, splits_only: bool, skip: Path | None, corpus: bool = False) -> Iterable[Path]:
    """A file; the files under a directory (recursively, sorted; with ``splits_only`` only its own files
    named like a split: a task directory may hold other files, and runs); or the matches of a glob.
    Hidden files and anything under ``skip`` (the run's own directory) are left out."""
    p = Path(entry).expanduser()
    if p.is_file():
        found = [p]
    elif corpus:  # the files the corpus reader reads (data/sources.py): no more, no fewer
        try:
            found = expand_paths([p])
        except DataError:
            found = []
    elif p.is_dir():
        found = sorted(f for f in (p.iterdir() if splits_only else p.rglob("*")) if f.is_file() and (
            not splits_only or f.name.lower().startswith(SPLIT_STEMS)))[:MAX_FILES]
    else:
        found = [Path(m) for m in sorted(glob.glob(str(p), recursive=True)) if Path(m).is_file()]
    skip = skip.resolve() if skip is not None else None
    return [f for f in found if not f.name.startswith(".") and (skip is None or skip not in f.resolve().parents)]


def data_fingerprint(inputs: Mapping[str, Any], skip: str | os.PathLike | None = None) -> dict[str, dict[str, Any]]:
    """``{absolute path: file_fingerprint}`` of every file behind ``inputs`` (``{"data.train_files":
    [paths], "data.task_dir": dir, ...}``; None and empty entries are skipped; ``skip``: a directory
    whose files are not data, the run's own)."""
    files: dict[str, Path] = {}
    for key, value in inputs.items():
        for entry in value if isinstance(value, (list, tuple)) else [value]:
            if entry:
                for f in _files(str(entry), key == "data.task_dir", Path(skip) if skip else None,
                                corpus=key in CORPUS_KEYS):
                    files.setdefault(str(f.resolve()), f)
    # a corpus of many files is read about TOTAL_BYTES in all at each start, not in full
    budget = max(MIN_BYTES, min(FULL_HASH_BYTES, TOTAL_BYTES // max(len(files), 1)))
    return {k: file_fingerprint(f, budget) for k, f in files.items()}


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


def run_data_fingerprint(inputs: Mapping[str, Any], run_dir: str | os.PathLike | None = None
                         ) -> dict[str, dict[str, Any]]:
    """The fingerprint a checkpoint records: the files behind a run's inputs
    (``train.config.run_inputs``) but the model it starts from (a resume does not read it again)
    and the run directory ``run_dir`` itself."""
    return data_fingerprint({k: v for k, v in inputs.items() if k != "model.init_from"}, skip=run_dir)
