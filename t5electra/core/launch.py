"""What torchrun told this process, read from its environment without importing torch (the command
line reads it before anything imports torch)."""

from __future__ import annotations

import os


def is_rank_zero() -> bool:
    """Whether this process is the one that speaks: rank 0 of a torchrun launch, or a process torchrun
    did not start (``RANK`` unset). Output every process would print alike is printed by it alone."""
    return os.environ.get("RANK", "0") == "0"
