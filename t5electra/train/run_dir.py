"""A run directory's lifecycle: one run at a time in it (``RUN/.lock``), a fresh run never
overwriting an existing one (``checkpoint.overwrite`` deletes the old run's files first), and a run
refused before it wrote anything leaving no directory it created behind."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import shutil
import warnings
from collections.abc import Collection
from pathlib import Path
from typing import Any

from ..core.atomic import process_alive
from ..errors import ConfigError


RUN_ARTIFACTS = ("config.yaml", "metrics.jsonl", "checkpoints", "model", "adapter", "results.json", "tensorboard",
                 "plots")


LOCK_FILE = ".lock"


# run directory -> the topmost directory that this process created for it (itself or a parent), for
# a run not yet released: a run refused after prepare_run_dir (a bad data file, a missing tokenizer)
# removes them again (discard_unused_run_dirs) rather than leave an empty directory behind
_CREATED: dict[Path, Path] = {}


def lock_run_dir(run_dir: Path) -> None:
    """One run at a time in a directory: ``RUN/.lock`` holds this process's id until it exits. A lock
    whose process is gone (a killed run) is taken over; one held by a live process is refused (two
    runs started into one directory interleaved their checkpoints and metrics lines)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(path.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid == os.getpid():
                return  # this process's earlier run (a resume in the same process)
            if pid > 0 and process_alive(pid):
                raise ConfigError(f"train.output_dir={str(run_dir)!r} is in use by process {pid}, another run "
                                  f"writing into it: wait for it, or choose another --train.output_dir (if no such "
                                  f"run is going on, delete {path})") from None
            path.unlink(missing_ok=True)  # stale: its process is gone
            continue
        os.write(fd, f"{os.getpid()}\n".encode())
        os.close(fd)
        atexit.register(_unlock, path, os.getpid())
        return




@contextlib.contextmanager
def in_use(directory: Path, what: str, name: str = ".in-use"):
    """Hold ``directory`` for one ``what`` (a quickstart, an experiment grid) for the block: a second
    one started on it meanwhile is refused, naming the first's process (two quickstarts into one OUT
    trained its tokenizers at once, and one's files could end up among the other's). An flock on
    ``directory/.in-use``: it goes with its process, killed or not."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / name, "a+", encoding="utf-8") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            pid = fh.read().strip() or "?"
            raise ConfigError(f"{directory} is in use by another {what} (process {pid}): wait for it to end, or "
                              f"use another directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def release_run_dir(run_dir: str | os.PathLike) -> None:
    """Give up this process's lock on ``run_dir`` (a recipe's last step; a process that dies without
    it leaves a lock the next run takes over)."""
    _CREATED.pop(_real(run_dir), None)  # a run that ran: its directory is kept, empty or not
    _unlock(Path(run_dir) / LOCK_FILE, os.getpid())


def pending_run_dirs() -> set[Path]:
    """The run directories this process created for runs not released yet (``train()`` called from
    Python may still be going on in one): what a command started now must leave to them."""
    return set(_CREATED)


def discard_unused_run_dirs(keep: Collection[Path] = ()) -> list[Path]:
    """Remove the run directories that this process created and that hold nothing but its lock (a
    run refused after :func:`prepare_run_dir`, before it wrote anything, left an empty directory
    behind), with the parents created for them while empty. A directory that existed before the run
    is never touched, nor one that holds anything else, nor one of a run that ran (released), nor one
    in ``keep`` (the ``t5electra`` command keeps those of :func:`pending_run_dirs` from before it: a
    run started from Python before ``cli.main`` was called, not yet writing, lost its directory and
    lock to it). Called by the ``t5electra`` command after each command, and at exit; returns the
    directories removed."""
    removed = []
    for run_dir, top in list(_CREATED.items()):
        if run_dir in keep:
            continue
        del _CREATED[run_dir]
        try:
            names = {p.name for p in run_dir.iterdir()}
        except OSError:  # gone already, or no longer ours to read
            continue
        if not names <= {LOCK_FILE}:
            continue
        _unlock(run_dir / LOCK_FILE, os.getpid())
        d = run_dir
        while True:
            try:
                d.rmdir()  # only an empty directory: a file written meanwhile keeps it
            except OSError:
                break
            removed.append(d)
            if d == top:
                break
            d = d.parent
    return removed


atexit.register(discard_unused_run_dirs)


def _unlock(path: Path, pid: int) -> None:
    try:
        if int(path.read_text().strip() or 0) == pid:
            path.unlink()
    except (OSError, ValueError):
        pass


def prepare_run_dir(run_dir: str | os.PathLike, resume: str | None, overwrite: bool = False,
                    is_main: bool = True, inputs: dict[str, Any] | None = None) -> None:
    """Refuse to start a fresh run (``resume`` None) in a directory that already holds one, before any
    work; with ``overwrite`` the old run's files (:data:`RUN_ARTIFACTS`, nothing else) are deleted
    instead (by the main process), unless one of ``inputs`` (``{"model.init_from": path, ...}``, what
    the run reads) lies among them. Resuming (``resume`` set) is left alone. The main process takes
    the directory's lock (:func:`lock_run_dir`) first, so that nothing of a run still going on is
    deleted; a refused run gives it back."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"train.output_dir={str(run_dir)!r} is a file, expected a run directory")
    if is_main:
        top = _first_missing(_real(run_dir))
        lock_run_dir(run_dir)
        if top is not None:  # created by this run: removed again if it is refused before writing into it
            _CREATED[_real(run_dir)] = top
    if resume is None:
        try:
            _clear_for_fresh_run(run_dir, overwrite, is_main, inputs)
        except ConfigError:
            if is_main:
                release_run_dir(run_dir)
            raise


def _real(run_dir: str | os.PathLike) -> Path:
    """The directory ``run_dir`` names as ``mkdir`` resolves it (symbolic links and ``..`` resolved):
    ``Path.absolute()`` kept ``new/../existing/run``, whose parent chain then ran through ``existing``
    (existing before the run, yet removed when empty) instead of ``new`` (created, left behind)."""
    return Path(os.path.realpath(run_dir))


def _first_missing(path: Path) -> Path | None:
    """The topmost of ``path`` and its parents that does not exist (None: ``path`` exists), i.e. the
    first directory that ``mkdir(parents=True)`` creates."""
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def _clear_for_fresh_run(run_dir: Path, overwrite: bool, is_main: bool, inputs: dict[str, Any] | None) -> None:
    found = [name for name in RUN_ARTIFACTS if (run_dir / name).exists()]
    if not found:
        return
    metrics = run_dir / "metrics.jsonl"
    if set(found) <= {"config.yaml", "metrics.jsonl", "tensorboard", "plots"} and (
            not metrics.is_file() or metrics.stat().st_size == 0):
        # a run that stopped before its first logged step (a data or config error found late): nothing
        # to continue or keep; its files would only block the corrected rerun
        warnings.warn(f"train.output_dir={str(run_dir)!r}: replacing the files ({', '.join(found)}) of a run that "
                      f"stopped before its first step", stacklevel=3)
        overwrite = True
    if not overwrite:
        raise ConfigError(f"train.output_dir={str(run_dir)!r} already holds a run ({', '.join(found)}); a fresh run "
                          f"would overwrite it. Continue it with --checkpoint.resume=auto, replace it with "
                          f"--checkpoint.overwrite=true, or choose another --train.output_dir.")
    doomed = [(run_dir / name).resolve() for name in found]
    for key, value in (inputs or {}).items():
        for path in value if isinstance(value, (list, tuple)) else [value]:
            if path and any(Path(path).resolve() == d or d in Path(path).resolve().parents for d in doomed):
                raise ConfigError(f"--checkpoint.overwrite=true would delete {key}={str(path)!r}, which this run "
                                  f"reads: choose another --train.output_dir")
    if is_main:
        for name in found:
            p = run_dir / name
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
