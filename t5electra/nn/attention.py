"""Multi-head attention: self-attention with a fused QKV projection, cross-attention with a fused
KV projection, an optional additive float bias (relative positions + masks), and KV-cache hooks.

The core, :func:`attend`, has two paths that compute the same thing (a test proves it):

- ``"sdpa"``: ``torch.nn.functional.scaled_dot_product_attention`` with ``attn_mask`` = the float
  bias and an explicit ``scale`` (T5 passes ``scale=1.0``: its scores are NOT divided by sqrt(d));
- ``"eager"``: the plain formula ``softmax(scale * q @ k^T + bias) @ v`` with the softmax in fp32.

Training with attention dropout on CPU always takes the plain formula (SDPA's CPU kernels would run
the same math, with a costlier dropout mask: nn/dropout.py).

Masks are additive: 0 where attention is allowed, a very negative number where it is not
(:func:`mask_to_bias`), so they are simply summed into the position bias once per stack.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .dropout import dropout
from .linear import LinearFn, project

IMPLEMENTATIONS = ("sdpa", "eager")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None = None, *,
           scale: float | None = None, dropout_p: float = 0.0, implementation: str = "sdpa") -> torch.Tensor:
    """q (B, H, T, Dh), k and v (B, H, S, Dh), bias broadcastable to (B, H, T, S) -> (B, H, T, Dh).

    ``bias`` is additive (float) or a bool "may attend" mask, as SDPA takes them. ``scale=None``
    means the usual 1/sqrt(Dh).
    """
    if (implementation == "sdpa" and (dropout_p == 0.0 or q.device.type != "cpu") and not _few_queries(q)
            and not _short_cpu_training(q, k, bias)):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p, scale=scale)
    # The plain formula: "eager"; training with dropout on CPU, where SDPA runs this same math
    # but draws its mask with bernoulli_ (nn/dropout.py's mask costs a third of that); training on
    # CPU at short lengths (_short_cpu_training); and the decoding steps of many rows (_few_queries).
    probs = attention_probs(q, k, bias, scale=scale).to(v.dtype)
    return torch.matmul(dropout(probs, dropout_p), v)


def _few_queries(q: torch.Tensor) -> bool:
    """Decoding steps of many rows on CPU: 1 to 8 queries per (row, head), >= 32 query rows in all.

    There SDPA's fused CPU kernel (blocked over queries) runs 1.1-4x slower than two batched
    matmuls and a softmax: beam search's folded cross-attention (16 inputs x 4 beams: (16, 8, 4, 64)
    queries against 64 keys) 0.25-0.5x the time, its self-attention (64 rows, 1 query) 0.6-0.95x;
    below 32 rows the two are even or SDPA is faster (2-core AMD EPYC, AVX-512, fp32; benchmark
    in docs/generation.md). Inference only: training keeps SDPA's memory-lean backward.
    """
    t = q.shape[-2]
    return (q.device.type == "cpu" and 1 <= t <= 8 and q.shape[0] * t >= 32 and q.dim() == 4
            and not (q.requires_grad and torch.is_grad_enabled()))


def _short_cpu_training(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Training on CPU where SDPA's fused kernel is the slower one: up to 128 x 128 queries x keys,
    and up to 256 x 256 when the bias needs its gradient (T5's learned position bias).

    Forward + backward, measured on the 2-core AMX Xeon of docs/performance.md (session 18), one
    and two threads alike: at (32, 4, 64, 64) bf16 SDPA took 2.2-3.9x the plain formula's time,
    at 128 x 128 1.7-2.7x; in fp32 1.1-1.4x (a bool mask: even). At 256 x 256 the two are even
    except with a bias that needs its gradient (SDPA 1.3-2x slower). The plain path saves the
    (B, H, T, S) probabilities for the backward, which is what bounds it to short lengths (SDPA's
    backward recomputes them); training with dropout on CPU takes it at every length already.
    Not measured on the AMD EPYCs of BENCHMARKS.md (no such machine in that session).
    """
    learned_bias = bias is not None and bias.requires_grad
    if not (q.device.type == "cpu" and torch.is_grad_enabled() and q.dim() == 4
            and (q.requires_grad or k.requires_grad or learned_bias)):
        return False
    area = q.shape[-2] * k.shape[-2]
    return area <= 128 * 128 or (area <= 256 * 256 and learned_bias)


def attention_probs(q: torch.Tensor, k: torch.Tensor, bias: torch.Tensor | None = None, *,
                    scale: float | None = None) -> torch.Tensor:
    """The attention weights ``softmax(scale * q k^T + bias)`` in fp32, (B, H, T, S): the one copy
    of the formula (``attend``'s plain path, and the server's attention view, serve/attention.py)."""
    if scale is None:
        scale = q.shape[-1] ** -0.5
    if bias is not None and bias.dtype == torch.bool:
        bias = mask_to_bias(bias, q.dtype)
    scores = torch.matmul(q, k.transpose(-1, -2))  # (B, H, T, S)
    if scale != 1.0:
        scores = scores * scale
    if bias is not None:
        scores = scores + bias
    return scores.float().softmax(dim=-1)


def mask_to_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool "may attend" mask -> additive float mask: 0 where allowed, the dtype's minimum elsewhere.

    The minimum (not -inf) keeps fully masked rows finite (uniform attention instead of NaN).
    """
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, num_heads, -1).transpose(1, 2)  # (B, H, T, Dh)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    b, h, t, d = x.shape
    return x.transpose(1, 2).reshape(b, t, h * d)  # (B, T, H * Dh)


class _AttentionBase(nn.Module):
    def __init__(self, num_heads: int, head_dim: int, scale: float | None, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.scale = scale
        self.dropout = dropout
        self.implementation = "sdpa"  # or "eager"; see attend()

    def _attend(self, q, k, v, bias):
        return attend(q, k, v, bias, scale=self.scale, dropout_p=self.dropout if self.training else 0.0,
                      implementation=self.implementation)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, head_dim={self.head_dim}, scale={self.scale}, impl={self.implementation}"


class SelfAttention(_AttentionBase):
    """Self-attention; ``qkv`` holds the rows of q, k and v stacked: (3 * H * Dh, d_model)."""

    def __init__(self, d_model: int, num_heads: int, head_dim: int, *, scale: float | None = None,
                 dropout: float = 0.0, bias: bool = False):
        super().__init__(num_heads, head_dim, scale, dropout)
        inner = num_heads * head_dim
        self.qkv = nn.Linear(d_model, 3 * inner, bias=bias)
        self.o = nn.Linear(inner, d_model, bias=bias)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | None = None,
                kv_cache: tuple[torch.Tensor, torch.Tensor] | None = None, start: int = 0,
                linear: LinearFn | None = None) -> torch.Tensor:
        """x (B, T, d_model) -> (B, T, d_model).

        With ``kv_cache = (k_buf, v_buf)``, each (B, H, max_len, Dh), the new keys/values are
        written at positions start..start+T-1 and the queries attend to positions 0..start+T-1
        (``bias`` must then cover those keys: (.., T, start + T)). ``linear``: see
        :func:`.linear.project`.
        """
        qkv = project(self.qkv, x, linear)  # (B, T, 3 * H * Dh)
        q, k, v = _split_heads(qkv, 3 * self.num_heads).chunk(3, dim=1)  # 3 x (B, H, T, Dh)
        if kv_cache is not None:
            k_buf, v_buf = kv_cache
            end = start + x.shape[1]
            k_buf[:, :, start:end] = k
            v_buf[:, :, start:end] = v
            k, v = k_buf[:, :, :end], v_buf[:, :, :end]
        return project(self.o, _merge_heads(self._attend(q, k, v, bias)), linear)


class CrossAttention(_AttentionBase):
    """Attention from x to a memory (the encoder output); ``kv`` stacks the rows of k and v."""

    def __init__(self, d_model: int, num_heads: int, head_dim: int, *, scale: float | None = None,
                 dropout: float = 0.0, bias: bool = False, d_memory: int | None = None):
        super().__init__(num_heads, head_dim, scale, dropout)
        inner = num_heads * head_dim
        self.q = nn.Linear(d_model, inner, bias=bias)
        self.kv = nn.Linear(d_memory or d_model, 2 * inner, bias=bias)
        self.o = nn.Linear(inner, d_model, bias=bias)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """memory (B, S, d) -> k, v, each (B, H, S, Dh): computed once per input when decoding."""
        k, v = _split_heads(self.kv(memory), 2 * self.num_heads).chunk(2, dim=1)
        return k, v

    def forward(self, x: torch.Tensor, memory: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None,
                linear: LinearFn | None = None) -> torch.Tensor:
        """x (B, T, d_model); either ``memory`` (B, S, d) or precomputed ``memory_kv``.

        ``memory_kv`` may have fewer rows than x: B = B_mem * g with rows grouped by source
        (beam search, g beams per input). The g query blocks of one source are then folded into
        its query axis, so the beams share that source's K/V without copying them.
        """
        k, v = memory_kv if memory_kv is not None else self.project_memory(memory)
        q = _split_heads(project(self.q, x, linear), self.num_heads)  # (B, H, T, Dh)
        b, h, t, d = q.shape
        g = b // k.shape[0]
        if g > 1:
            q = q.view(k.shape[0], g, h, t, d).transpose(1, 2).reshape(k.shape[0], h, g * t, d)
        out = self._attend(q, k, v, bias)  # (B_mem, H, g * T, Dh)
        if g > 1:
            out = out.view(k.shape[0], h, g, t, d).transpose(1, 2).reshape(b, h, t, d)
        return project(self.o, _merge_heads(out), linear)
