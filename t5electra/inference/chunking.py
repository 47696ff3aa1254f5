"""ELECTRA's CPU inference on large batches: a few whole sequences at a time.

Without autograd on CPU, a batch of more than ``chunk_tokens`` tokens runs through the encoder a
few whole sequences at a time: each slice's activations (~8 MB per layer at 2048 tokens for
ELECTRA-Small) stay in the CPU caches and the allocator reuses its blocks, where the whole batch
at once maps fresh pages for every layer's outputs (~90k page faults per 32 x 128 forward).
Sequences never interact, so the result is the same (tests/inference/test_electra_fast.py), with
one exception: bf16 weights on a native-bf16 CPU pick their kernel by the rows of each call
(weights.py: ``Bf16ByRows``), so a last slice of up to 64 tokens runs fp32 activations where the
whole batch ran bf16 ones (electra-small, 103 x 20 tokens: logits 4.9e-4 apart, measured).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def chunk_rows(input_ids: torch.Tensor, chunk_tokens: int) -> int | None:
    """How many sequences per slice for (B, T) ``input_ids``, or None to run the batch whole
    (chunking off, a small batch, autograd on, not on CPU, or under torch.compile)."""
    B, T = input_ids.shape
    rows = max(1, chunk_tokens // max(1, T))  # whole sequences per slice
    if (chunk_tokens > 0 and B > rows and input_ids.device.type == "cpu"
            and not torch.is_grad_enabled() and not torch.compiler.is_compiling()):
        return rows
    return None


def encode_in_chunks(encode: Callable[..., torch.Tensor], rows: int, *tensors: torch.Tensor | None) -> torch.Tensor:
    """``encode(*tensors)`` on slices of ``rows`` sequences, concatenated: (B, T, H)."""
    B = next(t for t in tensors if t is not None).shape[0]
    pieces = [encode(*(None if t is None else t[i:i + rows] for t in tensors)) for i in range(0, B, rows)]
    return torch.cat(pieces)
