"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Each write goes to a temporary file next to the target (same directory, so the rename stays on one
file system), is flushed and fsynced, renamed over the target with ``os.replace``, and the
directory is fsynced so that the rename itself survives a power cut. Every file the package writes
for later reading (configs, weights, checkpoints, shard indexes, metrics rewrites) goes through here.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make a rename (or a new file) in ``directory`` durable."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - file systems that refuse fsync on directories
        pass
    finally:
        os.close(fd)


def temp_path(path: str | os.PathLike) -> Path:
    """A temporary name next to ``path``, hidden and unique to this process."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file that is already written and closed (e.g. by a library) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_atomic(tmp: str | os.PathLike, path: str | os.PathLike) -> Path:
    """Rename the finished file ``tmp`` over ``path`` durably: fsync it, rename, fsync the directory."""
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(Path(path).parent)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see the module docstring)."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring)."""
    return write_bytes_atomic(path, text.encode(encoding))
