"""train/run_dir.in_use: one quickstart (or experiment grid) at a time in a directory; the hold goes
with its process, also when the process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from t5electra.errors import ConfigError
from t5electra.train.run_dir import in_use


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    with in_use(tmp_path / "qs", "quickstart"):
        with pytest.raises(ConfigError, match=rf"qs is in use by another quickstart \(process {os.getpid()}\)"):
            with in_use(tmp_path / "qs", "quickstart"):
                pass
    with in_use(tmp_path / "qs", "quickstart"):  # given back at the end of the block
        pass


def test_a_killed_holder_gives_the_directory_back(tmp_path):
    script = ("import sys, time; from pathlib import Path; from t5electra.train.run_dir import in_use\n"
              "with in_use(Path(sys.argv[1]), 'quickstart'):\n"
              "    print('held', flush=True); time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(ConfigError, match=f"process {proc.pid}"):
            with in_use(tmp_path, "quickstart"):
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    deadline = time.time() + 10
    while True:
        try:
            with in_use(tmp_path, "quickstart"):
                break
        except ConfigError:
            assert time.time() < deadline
            time.sleep(0.1)
