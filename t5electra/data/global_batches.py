"""Training data defined per global batch, not per rank (issue #17), shared by the fine-tuning recipes.

A step reads G = batch_size B x accumulation A x processes W consecutive positions of one global
sequence of examples (the global batch). Micro-batch m of rank r takes positions m B W + r,
m B W + r + W, ... (B of them) of the step's G: so one process with batches of G, W processes with
batches of G / W, or accumulation, read the same examples step by step, and a cursor counted in global
examples resumes on any number of processes with the same G.

Length grouping (``data.group_by_length`` k): k global batches of the sequence are sorted by length
(longest first) and cut into global batches of G again; micro-batch m of every rank then draws from
the same stretch of B W neighbours of a sorted global batch, so it holds examples of similar lengths.
Windows counted in global batches do not depend on the number of processes either.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def micro_positions(step_start: int, micro: int, batch_size: int, world_size: int, rank: int) -> range:
    """Positions of the global sequence in ``rank``'s micro-batch ``micro`` of the step that starts at
    position ``step_start``: ``batch_size`` of them, every ``world_size``-th from ``micro B W + rank``."""
    first = step_start + micro * batch_size * world_size + rank
    return range(first, first + batch_size * world_size, world_size)


def rank_share(global_batch: Sequence[T], micro: int, batch_size: int, world_size: int, rank: int) -> list[T]:
    """``rank``'s micro-batch ``micro`` of one global batch (a sequence of B x A x W examples)."""
    return [global_batch[p] for p in micro_positions(0, micro, batch_size, world_size, rank)]


def length_sorted_batches(items: Sequence[T], lengths: Sequence[int], size: int) -> list[list[T]]:
    """``items`` (one window) sorted by ``lengths``, longest first (stable: ties keep their order), cut
    into batches of ``size`` (the last one shorter if the window is)."""
    order = sorted(range(len(items)), key=lambda i: -lengths[i])  # stable
    ranked = [items[i] for i in order]
    return [ranked[i:i + size] for i in range(0, len(ranked), size)]
