"""Normalisation layers.

T5 uses RMSNorm (https://arxiv.org/abs/1910.07467): no mean subtraction, no bias, statistics
accumulated in fp32 even for bf16 activations, exactly as transformers' ``T5LayerNorm``:
``y = w * (x * rsqrt(mean(x.float() ** 2) + eps))``.

Training on CPU takes :class:`_RMSNormCPU`: PyTorch's ``F.rms_norm`` is a composite there, and its
autograd backward is 11 elementwise passes over (rows, D) (every product of the chain rule kept
separate, ``pow(x, 1.0)`` included); the closed form below takes 7-8. The forward is aten's
``_fused_rms_norm``: ``F.rms_norm``'s values bitwise, and the per-row rstd the backward needs
(docs/performance.md, session 18: a (16, 128, 512) norm forward + backward 3.47 -> 2.51 ms).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable


class _RMSNormCPU(torch.autograd.Function):
    """y = w * x * r, r = rsqrt(mean(x^2) + eps) per row, for fp32 x and w on CPU, with the backward
    in closed form (xh = x * r, gw = g * w, D = the row length):

        dx = r * (gw - xh * mean(gw * xh)),   dw = sum over rows of g * xh.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        y, rstd = torch.ops.aten._fused_rms_norm(x, [x.shape[-1]], weight, eps)  # rstd (..., 1)
        ctx.save_for_backward(x, rstd, weight)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, rstd, weight = ctx.saved_tensors
        d = x.shape[-1]
        xh = x * rstd                                                        # (..., D) normalised input
        gw = grad * weight                                                   # (..., D) gradient of xh
        dot = torch.linalg.vecdot(gw, xh).unsqueeze(-1)                      # (..., 1)
        dx = torch.addcmul(gw, xh, dot, value=-1.0 / d).mul_(rstd) if ctx.needs_input_grad[0] else None
        dw = (grad * xh).reshape(-1, d).sum(0) if ctx.needs_input_grad[1] else None
        return dx, dw, None


def _closed_form_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Training on CPU with plain fp32 tensors (not DTensors or other subclasses), outside torch.compile
    (which decomposes ``F.rms_norm`` and fuses it itself)."""
    return (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad) and x.device.type == "cpu"
            and type(x) is torch.Tensor and type(weight) in (torch.Tensor, nn.Parameter)
            and not torch.compiler.is_compiling())


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """:class:`RMSNorm`'s forward (also T5's flat decoder step's, inference/decoder_step.py)."""
    # Running it on the fp32 copy keeps the accumulation in fp32.
    if weight.dtype == torch.float32:  # the scale inside the kernel: bitwise w * rms_norm(x), one op less
        x = x.float()
        if _closed_form_applies(x, weight):
            return _RMSNormCPU.apply(x, weight, eps)
        return F.rms_norm(x, (x.shape[-1],), weight, eps=eps)
    y = F.rms_norm(x.float(), (x.shape[-1],), eps=eps)
    return weight * y.to(weight.dtype)  # as T5LayerNorm: back to half precision before the scale


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
