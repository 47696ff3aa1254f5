"""Activation checkpointing: a block keeps only its input in forward and recomputes the rest in backward.

A transformer step keeps every block's intermediate activations for backward (attention scores
(B, H, T, T), the feed-forward's (B, T, d_ff), dropout masks, ...); with checkpointing a block keeps
its input (B, T, D) only and runs its forward again during backward: ~1/3 more compute, activations
of one block instead of all of them. Blocks that support it (``T5Block``, ``ElectraLayer``) have a
``checkpoint_activations`` flag and call :func:`maybe_recompute` in ``forward``;
:func:`set_activation_checkpointing` (``model.gradient_checkpointing_enable()``, the transformers
name) sets it on every block of a model.

The recomputation is ``torch.utils.checkpoint`` non-reentrant: the RNG state is saved with the
input and restored for the second forward, so dropout draws the same masks and the gradients are
the plain run's (tested bit for bit). Inside FSDP2 units the flag sits on the block's own forward,
below FSDP's hooks: the parameters are gathered once for the recomputation, by FSDP's backward
hook, as in torchtitan's per-block wrapping.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.autograd.graph import save_on_cpu
from torch.utils.checkpoint import checkpoint


def maybe_recompute(block: nn.Module, fn: Callable[..., torch.Tensor], *args: Any, **kwargs: Any) -> torch.Tensor:
    """``fn(*args, **kwargs)``, through ``torch.utils.checkpoint`` while ``block`` trains with
    ``checkpoint_activations`` set and gradients are on (never while decoding or evaluating); with
    ``offload_activations`` also set, what the recomputation keeps (the block's input) waits for
    backward in host memory (``torch.autograd.graph.save_on_cpu``, pinned where an accelerator is)."""
    if getattr(block, "checkpoint_activations", False) and block.training and torch.is_grad_enabled():
        if getattr(block, "offload_activations", False):
            with save_on_cpu(pin_memory=torch.cuda.is_available()):
                return checkpoint(fn, *args, use_reentrant=False, **kwargs)
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    return fn(*args, **kwargs)


def checkpointed_blocks(model: nn.Module) -> list[nn.Module]:
    """The blocks of ``model`` that support activation checkpointing, in module order."""
    return [m for m in model.modules() if hasattr(type(m), "checkpoint_activations")]


def set_activation_checkpointing(model: nn.Module, enabled: bool = True, *, every_n_layers: int = 1,
                                 offload: bool = False) -> int:
    """Turn activation checkpointing on (off) in every block of ``model`` that supports it, or in
    every ``every_n_layers``-th one (blocks 0, n, 2n, ... counted over the whole model, encoder then
    decoder, as transformers counts them); ``offload``: keep what is saved for the recomputation in
    host memory. Returns how many blocks there are (0: the model has none)."""
    blocks = checkpointed_blocks(model)
    for i, block in enumerate(blocks):
        block.checkpoint_activations = bool(enabled) and i % every_n_layers == 0
        block.offload_activations = block.checkpoint_activations and bool(offload)
    return len(blocks)
