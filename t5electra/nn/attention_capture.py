"""Attention weights of a forward pass, without changing the models: ``output_attentions=True``
(models/t5.py, models/electra.py) and the server's attention view (serve/attention.py).

The models compute attention with PyTorch's fused SDPA kernel, which never materialises the
weights. :func:`capture_attention` attaches forward hooks to their attention modules for one
forward pass; each hook recomputes the weights from the module's own projections and the inputs it
was called with, with the blocks' own formula (``nn.attention.attention_probs``):

``softmax(scale * q k^T + bias)`` of the shared blocks (``nn/attention.py``), which both models
use: T5 with ``scale`` 1.0 (no 1/sqrt(d)) and the relative-position bias plus the causal/padding
masks as ``bias`` (cross-attention: the padding mask only); ELECTRA with 1/sqrt(d) and a bool
padding mask. The weights are those before attention dropout (the same in eval mode).

tests/serve/test_serve_api.py checks that ``weights @ v`` projected by the module's output layer gives
back the module's output exactly, and the models' tests that they equal transformers' attentions.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor, nn

from .attention import attention_probs


def _softmax(q: Tensor, k: Tensor, scale: float, bias: Tensor | None) -> Tensor:
    """q (B, H, T, Dh), k (B, H, S, Dh), bias broadcastable to (B, H, T, S) -> weights (B, H, T, S) fp32:
    the blocks' own formula (nn/attention.py), computed in fp32."""
    if bias is not None and bias.dtype != torch.bool:
        bias = bias.float()
    return attention_probs(q.float(), k.float(), bias, scale=scale)


def _heads(x: Tensor, parts: int, num_heads: int) -> list[Tensor]:
    """(B, T, parts * H * Dh) -> ``parts`` tensors (B, H, T, Dh): rows are stacked [q; k; v] blocks."""
    b, t, _ = x.shape
    return list(x.view(b, t, parts, num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0))


def self_weights(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """Weights of a ``SelfAttention`` (T5's, ELECTRA's) called as ``module(x, bias, kv_cache=None, start=0)``."""
    x = args[0]
    bias = args[1] if len(args) > 1 else kwargs.get("bias")
    if kwargs.get("kv_cache") is not None:
        raise RuntimeError("attention capture needs a full forward pass, not cached decoding")
    q, k, _ = _heads(module.qkv(x), 3, module.num_heads)
    scale = module.head_dim ** -0.5 if module.scale is None else module.scale
    return _softmax(q, k, scale, bias)


def t5_cross_weights(module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
    """Weights of a T5 ``CrossAttention`` called as ``module(x, memory, bias)``."""
    x, memory = args[0], args[1] if len(args) > 1 else kwargs.get("memory")
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    if memory is None:
        raise RuntimeError("attention capture needs a full forward pass (memory), not cached decoding")
    (q,) = _heads(module.q(x), 1, module.num_heads)
    k, _ = _heads(module.kv(memory), 2, module.num_heads)
    scale = module.head_dim ** -0.5 if module.scale is None else module.scale
    return _softmax(q, k, scale, bias)


# the one self-attention hook, under the names each model family's callers know it by
t5_self_weights = electra_weights = self_weights


@contextlib.contextmanager
def capture_attention(modules: dict[str, list[tuple[nn.Module, Any]]]):
    """Hooks on ``{stack: [(module, weights_fn), ...]}`` for the duration of the block.

    Yields ``{stack: [weights of layer 0, layer 1, ...]}``, filled by the forward pass run inside
    the block; each entry is (B, H, T, S) in float32. An empty ``modules`` attaches nothing.
    """
    captured: dict[str, list[Tensor]] = {stack: [] for stack in modules}
    handles = []
    for stack, entries in modules.items():
        for module, fn in entries:
            def hook(mod, args, kwargs, output, stack=stack, fn=fn):
                captured[stack].append(fn(mod, args, kwargs))
            handles.append(module.register_forward_hook(hook, with_kwargs=True))
    try:
        yield captured
    finally:
        for h in handles:
            h.remove()
