"""Start N processes with torchrun's environment variables (gloo on CPU), as torchrun would;
used by the 2-process tests (tests/train/test_distributed.py, tests/recipes/test_pretrain_fsdp.py).

Each process is a fresh interpreter ("spawn"), as torchrun's are, rather than a fork of the pytest
worker (which copies whatever the worker's other threads hold at that instant: a serve test's model
thread, tqdm's monitor). It starts with the worker's ``os.environ`` plus ``env`` and, as under
torchrun, ``OMP_NUM_THREADS=1`` (the suite's ``T5ELECTRA_TEST_THREADS``, tests/conftest.py) unless
``env`` says otherwise: variables read when torch is imported (OpenMP's thread count) apply. It
inherits the worker's stdout/stderr descriptors, so capfd sees the ranks' output. (The hangs that once looked like fork trouble were a deadlock at the
end of train(): t5electra/train/distributed.py, ``_LEFT_GROUPS``.)"""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
import time
from typing import Any, Callable, Sequence

FAILED_RANK_GRACE_S = 30


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(target: Callable[..., Any], args: tuple, env: dict[str, str] | None = None):
    """A started fresh interpreter running ``target(*args)`` with ``os.environ`` + ``env`` (see above)."""
    p = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child = {"OMP_NUM_THREADS": os.environ.get("T5ELECTRA_TEST_THREADS", "1"), **(env or {})}
    saved = {k: os.environ.get(k) for k in child}
    os.environ.update(child)
    try:
        p.start()  # the child's environment is the parent's at this moment
    finally:
        # only the keys set here are put back: clearing the whole environment left the worker's other
        # threads (a serve test's model thread, torch's, tokenizers') an empty or half-rebuilt one
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return p


def run_and_exit(main: Callable[[list[str]], int], argv: list[str]) -> None:
    """Child process body: run ``main(argv)``, exit with its code."""
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def launch(main: Callable[[list[str]], int], argv: Sequence[str], world_size: int,
           env: dict[str, str] | None = None, timeout_s: float = 180) -> list[int | None]:
    """``main(argv)`` in ``world_size`` processes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set);
    waits for all and returns their exit codes."""
    port = str(free_port())
    procs = [start(run_and_exit, (main, list(argv)),
                   {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                    "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, **(env or {})})
             for rank in range(world_size)]
    # as torchrun: once one rank has failed, the others (blocked in a collective with it) get a
    # grace period and are then stopped, instead of waiting for the gloo timeout
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and any(p.is_alive() for p in procs):
            if any(p.exitcode not in (None, 0) for p in procs):
                deadline = min(deadline, time.monotonic() + FAILED_RANK_GRACE_S)
            time.sleep(0.1)
    finally:  # also when the test is interrupted (pytest -x stopping a worker): no rank outlives it
        for p in procs:
            if p.is_alive():
                p.kill()
            p.join()
    return [p.exitcode for p in procs]
