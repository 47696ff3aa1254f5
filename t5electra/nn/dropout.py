"""Dropout whose random mask costs a third of PyTorch's on CPU.

``torch.nn.functional.dropout`` on CPU draws one random number per element through ``bernoulli_``
(a float compare per element, one thread): in a T5-small training step at 8 x 512 -> 114 that is
16-19 % of the whole step, mostly for the attention probabilities (B, H, T, T). Here one 64-bit
draw of the same generator (``random_`` on int64) gives four elements a 15-bit uniform integer
each, and an element is dropped when that integer is below ``round(p * 2**15)``:

- the drop probability is ``p`` rounded to a multiple of 2**-15 (0.1 -> 0.100006), where
  ``bernoulli_`` compares against a float (a multiple of 2**-24);
- masks come from the global (or the given) ``torch.Generator``, so ``torch.manual_seed`` and
  the RNG state that checkpoints save and restore make them reproducible, as before;
- kept elements are scaled by 1 / (1 - p), as in ``F.dropout``; the backward pass multiplies the
  gradient by the same mask and scale (the mask is saved as 1 byte per element, like ``F.dropout``).

The mask is uint8 and made with integer arithmetic, and applied as ``x * keep * scale`` in one pass: PyTorch's
CPU kernels for bool tensors (compare, ``where``) are not vectorised (:func:`keep_mask`).
Measured on the 2-core AMD EPYCs (docs/performance.md, 2 threads): a (8, 8, 512, 512) mask in 67 ms
instead of 177 ms for ``bernoulli_`` (Zen 2); dropout forward + backward 2.5-3.2x faster than
``F.dropout`` at T5's shapes (AVX-512 EPYC, bf16 (16, 128, 2048): 12 instead of 30-38 ms). Other
devices (GPU: a fused Philox kernel) use ``F.dropout`` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_BITS = 15
_LEVELS = 1 << _BITS  # 32768 equally likely values per element


def _check_p(p: float) -> None:
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, *, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """uint8 tensor of ``shape``: 1 where an element is kept, 0 (with probability ``p``, rounded to a
    multiple of 2**-15) where it is dropped.

    uint8, not bool, and built with integer arithmetic, not a comparison: on CPU, PyTorch's kernels
    that make or read bool tensors are not vectorised. Measured (2-core EPYC, AVX-512, one bf16
    (16, 128, 2048) FFN activation, the ops after the random draw): compare + ``where`` + scale in
    forward and backward 10.7 ms, these int16 ops + ``x * keep`` + scale 3.0 ms (docs/performance.md)."""
    n = 1
    for s in shape:
        n *= int(s)
    threshold = round(p * _LEVELS)  # drop where the 15-bit value is below it
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(generator=generator)  # [0, 2**63)
    lanes = words.view(torch.int16)[:n]  # four 16-bit lanes per draw; the top lane has 15 random bits
    if threshold == 0:
        return torch.ones(shape, dtype=torch.uint8, device=device)
    # value - (threshold - 1) is <= 0 exactly when value < threshold (no int16 overflow: threshold >= 1)
    keep = (lanes & (_LEVELS - 1)).sub_(threshold - 1).clamp_(0, 1)  # uniform on [0, 2**15) per element
    return keep.to(torch.uint8).view(shape)


def drop_mask(shape: torch.Size | tuple[int, ...], p: float, *, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool tensor of ``shape``: True where :func:`keep_mask` (the same draws) drops an element."""
    return keep_mask(shape, p, device=device, generator=generator) == 0


def _masked_scale(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """x * keep * scale in one pass: ``addcmul(0, x, keep, value=scale)`` computes scale * x * keep in
    the op's float math and rounds once, the values of ``x * keep`` then ``* scale`` (bitwise: x * 1
    is exact), where those two passes, the first mixing bf16 and uint8, took 1.6x as long (bf16
    (16, 128, 2048), 2 threads; docs/performance.md)."""
    return torch.addcmul(x.new_zeros(()), x, keep, value=scale)


class _MaskedScale(torch.autograd.Function):
    """y = x * keep * scale; dy/dx = the same mask and scale (``keep`` uint8, one vectorised pass)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _masked_scale(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return _masked_scale(grad, keep, ctx.scale), None, None


def dropout(x: torch.Tensor, p: float, training: bool = True, *, generator: torch.Generator | None = None
            ) -> torch.Tensor:
    """``F.dropout(x, p, training)`` with the cheaper CPU mask (see the module docstring)."""
    if not training or p == 0.0:
        return x
    _check_p(p)
    if x.device.type != "cpu" or p == 1.0:
        return F.dropout(x, p, training=True)
    return _MaskedScale.apply(x, keep_mask(x.shape, p, device=x.device, generator=generator), 1.0 / (1.0 - p))


class Dropout(nn.Module):
    """``nn.Dropout(p)`` with :func:`dropout`'s cheaper CPU mask; no parameters, same ``p`` attribute."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        _check_p(p)
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"
