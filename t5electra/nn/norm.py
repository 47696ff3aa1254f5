"""Normalisation layers.

T5 uses RMSNorm (https://arxiv.org/abs/1910.07467): no mean subtraction, no bias, statistics
accumulated in fp32 even for bf16 activations, exactly as transformers' ``T5LayerNorm``:
``y = w * (x * rsqrt(mean(x.float() ** 2) + eps))``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # F.rms_norm is one fused kernel; running it on the fp32 copy keeps the accumulation in fp32.
        if self.weight.dtype == torch.float32:  # the scale inside the kernel: bitwise w * rms_norm(x), one op less
            return F.rms_norm(x.float(), (x.shape[-1],), self.weight, eps=self.eps)
        y = F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps)
        return self.weight * y.to(self.weight.dtype)  # as T5LayerNorm: back to half precision before the scale

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
