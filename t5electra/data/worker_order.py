"""Which batches a DataLoader's workers have delivered after n of them (the round-robin order a
``torch.utils.data.DataLoader`` takes them in): the bookkeeping behind
:class:`~t5electra.data.shards.StreamingDataLoader`'s cursor."""

from __future__ import annotations

import math
from collections.abc import Sequence


def round_robin(n: int, totals: Sequence[float]) -> tuple[list[int], int]:
    """Batches each worker has delivered after ``n`` batches of a DataLoader, and who is next.

    A DataLoader takes batches from its workers in turn (worker 0, 1, ..., 0, 1, ...) and skips a
    worker once it is exhausted; ``totals`` is each worker's number of batches (inf when endless).
    """
    W = len(totals)
    full = min(totals)
    if math.isinf(full) or n <= full * W:
        return [(n - w + W - 1) // W if n > w else 0 for w in range(W)], n % W
    full = int(full)
    counts, last = [full] * W, W - 1
    n -= full * W
    r = full
    while n > 0:
        for w in range(W):
            if n > 0 and totals[w] > r:
                counts[w] += 1
                n -= 1
                last = w
        r += 1
    return counts, (last + 1) % W
