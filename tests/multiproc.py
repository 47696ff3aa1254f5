"""Start N forked processes with torchrun's environment variables (gloo on CPU), as torchrun would;
used by the 2-process tests (tests/train/test_distributed.py, tests/recipes/test_pretrain_fsdp.py)."""

from __future__ import annotations

import multiprocessing
import os
import socket
import sys
from typing import Callable, Sequence


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(main: Callable[[list[str]], int], argv: list[str], env: dict[str, str]) -> None:
    os.environ.update(env)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


def launch(main: Callable[[list[str]], int], argv: Sequence[str], world_size: int,
           env: dict[str, str] | None = None, timeout_s: float = 180) -> list[int | None]:
    """``main(argv)`` in ``world_size`` processes (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT set);
    waits for all and returns their exit codes."""
    ctx = multiprocessing.get_context("fork")
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        penv = {"RANK": str(rank), "WORLD_SIZE": str(world_size), "LOCAL_RANK": str(rank),
                "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, **(env or {})}
        p = ctx.Process(target=_run, args=(main, list(argv), penv))
        p.start()
        procs.append(p)
    for p in procs:
        p.join(timeout_s)
    for p in procs:
        if p.is_alive():
            p.kill()
    return [p.exitcode for p in procs]
