"""T5's relative position bias (https://arxiv.org/abs/1910.10683, section 2.1).

Each attention head adds a learned scalar to the score of (query i, key j) that depends only on
a bucket of the distance ``rel = j - i``. Buckets, as in mesh-tensorflow's
``_relative_position_bucket`` and transformers' ``T5Attention._relative_position_bucket``:

- bidirectional (encoder): half of the buckets per direction; ``rel > 0`` adds ``num_buckets // 2``;
  then ``rel = |rel|``.
- causal (decoder): ``rel = -min(rel, 0)`` (only the past is visible).
- the first ``max_exact = n // 2`` buckets are exact distances; larger ones are logarithmic up to
  ``max_distance``: ``max_exact + log(rel / max_exact) / log(max_distance / max_exact) * (n - max_exact)``,
  capped at ``n - 1``.

The bias is computed once per stack (it lives in layer 0 in HF checkpoints) and reused by every
layer. Bucket indices depend only on the shapes, so they are cached per (q_len, k_len, offset).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import nn


def relative_position_bucket(relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """Bucket index (LongTensor, same shape) of each ``key_pos - query_pos``."""
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        relative_position = relative_position.abs()
    else:
        relative_position = -torch.clamp(relative_position, max=0)
    # now relative_position >= 0
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    # clamp(min=1) only avoids log(0) in the branch that torch.where discards
    large = max_exact + (
        torch.log(relative_position.clamp(min=1).float() / max_exact)
        / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, relative_position, large)


def _buckets(q_len: int, k_len: int, q_offset: int, bidirectional: bool, num_buckets: int,
             max_distance: int, device: torch.device) -> torch.Tensor:
    # Never an inference tensor: a cached index made under generate()'s inference_mode must still be
    # usable by a later training forward (autograd refuses to save inference tensors for backward).
    with torch.inference_mode(False):
        q_pos = torch.arange(q_offset, q_offset + q_len, device=device)[:, None]
        k_pos = torch.arange(k_len, device=device)[None, :]
        return relative_position_bucket(k_pos - q_pos, bidirectional=bidirectional, num_buckets=num_buckets,
                                        max_distance=max_distance)  # (q_len, k_len)


# Eager mode reuses the indices of recent shapes; torch.compile traces _buckets itself (and
# folds it into the graph), so the cache is bypassed there.
_cached_buckets = lru_cache(maxsize=16)(_buckets)


class RelativePositionBias(nn.Module):
    """Learned bias per (bucket, head); ``forward`` returns the additive score bias (1, H, q, k)."""

    def __init__(self, num_heads: int, *, bidirectional: bool, num_buckets: int = 32, max_distance: int = 128):
        super().__init__()
        self.bidirectional = bidirectional
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.weight = nn.Parameter(torch.empty(num_buckets, num_heads))  # HF: relative_attention_bias.weight

    def forward(self, q_len: int, k_len: int, q_offset: int = 0) -> torch.Tensor:
        """Bias for queries at positions q_offset..q_offset+q_len-1 against keys 0..k_len-1."""
        lookup = _buckets if torch.compiler.is_compiling() else _cached_buckets
        buckets = lookup(q_len, k_len, q_offset, self.bidirectional, self.num_buckets, self.max_distance,
                         self.weight.device)
        values = nn.functional.embedding(buckets, self.weight)  # (q, k, H)
        return values.permute(2, 0, 1).unsqueeze(0)  # (1, H, q, k)

    def extra_repr(self) -> str:
        return (f"buckets={self.num_buckets}, heads={self.weight.shape[1]}, max_distance={self.max_distance}, "
                f"bidirectional={self.bidirectional}")
