"""Atomic file writes: a reader (or a crash) sees the old file or the new one, never half of one.

Each write goes to a temporary file next to the target (same directory, so the rename stays on one
file system), is flushed and fsynced, renamed over the target with ``os.replace``, and the
directory is fsynced so that the rename itself survives a power cut. Every file the package writes
for later reading (configs, weights, checkpoints, shard indexes, metrics rewrites) goes through here.

A directory of several files (a final model, a converted checkpoint, a sample dataset) is written
the same way as a whole: :func:`writing_dir` fills a temporary directory beside it, which is renamed
into place only once every file is written, so a reader (a resumed quickstart deciding whether a
stage is done, a loader) never sees half of one, nor a file left from an older one.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import threading
from collections.abc import Iterator
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


def save_figure_atomic(fig, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``fig.savefig(path)`` (a matplotlib figure) atomically: a crash or a viewer reading the plot
    of a running job never meets half a PNG. The format comes from ``path``'s suffix."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or None, **savefig_kwargs)
        replace_atomic(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see the module docstring)."""
    return write_bytes_atomic(path, text.encode(encoding))


def written_through(path: str | os.PathLike) -> bool:
    """A link, a device or a pipe (``/dev/stdout``): an output written through, never replaced by a
    rename (replacing it would delete it: as root, ``--out /dev/stdout`` replaced the system's link)."""
    path = Path(path)
    return path.is_symlink() or (path.exists() and not path.is_file())


def write_output(path: str | os.PathLike, text: str) -> Path:
    """A file a user named for a command's output (``--out``, ``--predictions``): written whole, as
    :func:`write_text_atomic` (a command killed half-way leaves the old file or none, never half a
    new one), except a link, device or pipe, which is written through (:func:`written_through`)."""
    if written_through(path):
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        return Path(path)
    return write_text_atomic(path, text)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _sibling(path: Path, kind: str) -> Path:
    """``.NAME.tmpPID.THREAD`` beside ``path``: this process's and thread's own."""
    return path.with_name(f".{path.name}.{kind}{os.getpid()}.{threading.get_ident()}")


def remove_leftovers(path: str | os.PathLike) -> None:
    """Delete what killed writers of ``path`` left beside it (:func:`writing_dir`'s temporary and
    set-aside directories, :func:`temp_path` files) whose process is gone; a live writer's are kept."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.name}.") + r"(?:tmp|old)(\d+)(?:\.\d+)?")
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or process_alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                entry.unlink()


def sync_tree(directory: str | os.PathLike) -> None:
    """fsync every file and directory under ``directory`` (and itself): before a rename publishes it,
    so that a power cut cannot leave the renamed directory with empty files."""
    for root, _, files in os.walk(directory):
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                fsync_file(os.path.join(root, name))
        fsync_dir(root)


def publish_dir(tmp: str | os.PathLike, path: str | os.PathLike, *, replace: bool = True) -> Path:
    """Rename the finished directory ``tmp`` to ``path``. An existing ``path`` is replaced as a whole
    (``replace``: set aside, then deleted: none of its files stays beside the new ones) or, with
    ``replace=False``, must be an empty directory (FileExistsError otherwise: another writer was first)."""
    tmp, path = Path(tmp), Path(path)
    sync_tree(tmp)
    old = None
    if replace and (path.exists() or path.is_symlink()):
        old = _sibling(path, "old")
        os.replace(path, old)
    try:
        os.rename(tmp, path)  # onto an empty directory: replaces it; onto a full one: ENOTEMPTY / EEXIST
    except OSError as e:
        if old is not None:  # put the old one back
            with contextlib.suppress(OSError):
                os.rename(old, path)
        if e.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise FileExistsError(errno.EEXIST, f"{path} was written meanwhile by another process", str(path)) from None
        raise
    fsync_dir(path.parent)
    if old is not None and old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    elif old is not None:
        old.unlink()
    return path


@contextlib.contextmanager
def writing_dir(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """``with writing_dir(d) as tmp: write everything into tmp`` -- ``d`` appears (or is replaced)
    complete when the block ends, by :func:`publish_dir`; an error (or a kill) leaves ``d`` as it
    was, and the temporary directory is deleted (a killed writer's by the next writer of ``d``)."""
    path = Path(os.path.abspath(path))  # ("exported/t5/" and "." have a name to put beside)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_leftovers(path)
    tmp = _sibling(path, "tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        publish_dir(tmp, path, replace=replace)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
