"""Position-wise feed-forward blocks.

Plain: ``wo(dropout(act(wi(x))))`` (T5 v1.0 uses ReLU, BERT/ELECTRA GELU).
Gated (GLU variants, https://arxiv.org/abs/2002.05202; T5 v1.1 uses gated-GELU):
``wo(dropout(act(wi_0(x)) * wi_1(x)))``. The two input projections are one fused matrix ``wi`` of
shape (2 * d_ff, d_model), rows [wi_0; wi_1], so the block runs one matmul instead of two;
checkpoint key maps concatenate / split HF's ``wi_0`` and ``wi_1``. In an fp16 T5 ``wo`` stays fp32
(transformers' ``_keep_in_fp32_modules``): its input is cast up, its output stays fp32.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation
from .dropout import Dropout
from .linear import LinearFn, project, project_act


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int, activation: str, *, gated: bool = False,
                 dropout: float = 0.0, bias: bool = False):
        super().__init__()
        self.gated = gated
        self.act = get_activation(activation)
        self.wi = nn.Linear(d_model, (2 if gated else 1) * d_ff, bias=bias)
        self.wo = nn.Linear(d_ff, d_model, bias=bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor, linear: LinearFn | None = None) -> torch.Tensor:
        if self.gated:
            h = project(self.wi, x, linear)  # (B, T, 2 * d_ff)
            gate, value = h.chunk(2, dim=-1)
            h = self.act(gate) * value
        elif linear is None:
            # T5 v1.0's ReLU (BERT's GELU) inside the GEMM at inference where oneDNN runs it (nn/linear.py)
            h = project_act(self.wi, x, self.act)  # (B, T, d_ff)
        else:
            h = self.act(project(self.wi, x, linear))
        w = getattr(self.wo, "weight", None)
        if h.dtype == torch.float16 and isinstance(w, torch.Tensor) and w.dtype == torch.float32:
            # an fp16 model keeps wo in fp32 (PreTrainedModel._keep_in_fp32_modules): its output, added to
            # the residual stream, exceeds fp16's 65504 in T5 v1.1; the stream then stays fp32 (B, T, D)
            h = h.float()
        return project(self.wo, self.dropout(h), linear)
