"""Whether a process has ended, read from /proc (Linux, as the project): used by the tests that
kill a parent and check its helper processes end with it (tests/recipes/test_quickstart.py,
tests/data/test_shards.py)."""

from __future__ import annotations

from pathlib import Path


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in state  # a zombie has ended; its new parent reaps it


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s child processes (every thread's children)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(c) for c in (task / "children").read_text().split()]
    return out
