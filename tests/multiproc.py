"""Start N processes with torchrun's environment variables (gloo on CPU), as torchrun would;
used by the 2-process tests (tests/train/test_distributed.py, tests/recipes/test_pretrain_fsdp.py).

Each process is a fresh interpreter ("spawn"), as torchrun's are. Forking the pytest worker instead
copied whatever its other threads held at that instant (a serve test's model thread, tqdm's monitor,
OpenMP's pool): about one full run in five, a rank died or hung inside `train()`. A fresh
interpreter inherits the worker's stdout/stderr descriptors (capfd sees the ranks' output) and
``os.environ`` (monkeypatched variables) but no state of other threads."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
from typing import Callable, Sequence


FAILED_RANK_GRACE_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_with_env(main: Callable[[list[str]], int], argv: list[str], env: dict[str, str]) -> None:
    """Child process body: set ``env``, run ``main(argv)``, exit with its code."""
    os.environ.update(env)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def launch(main: Callable[[list[str]], int], argv: Sequence[str], world_size: int,
           env: dict[str, str] | None = None, timeout_s: float = 180) -> list[int | None]:
    """``main(argv)`` in ``world_size`` processes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set);
    waits for all and returns their exit codes."""
    ctx = multiprocessing.get_context("spawn")
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        penv = {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, **(env or {})}
        p = ctx.Process(target=run_with_env, args=(main, list(argv), penv))
        p.start()
        procs.append(p)
    # as torchrun: once one rank has failed, the others (blocked in a collective with it) get a
    # grace period and are then stopped, instead of waiting for the gloo timeout
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(p.is_alive() for p in procs):
        if any(p.exitcode not in (None, 0) for p in procs):
            deadline = min(deadline, time.monotonic() + FAILED_RANK_GRACE_S)
        time.sleep(0.1)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join()
    return [p.exitcode for p in procs]
