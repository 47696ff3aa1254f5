"""Position-wise feed-forward blocks.

Plain: ``wo(dropout(act(wi(x))))`` (T5 v1.0 uses ReLU, BERT/ELECTRA GELU).
Gated (GLU variants, https://arxiv.org/abs/2002.05202; T5 v1.1 uses gated-GELU):
``wo(dropout(act(wi_0(x)) * wi_1(x)))``. The two input projections are one fused matrix ``wi`` of
shape (2 * d_ff, d_model), rows [wi_0; wi_1], so the block runs one matmul instead of two;
checkpoint key maps concatenate / split HF's ``wi_0`` and ``wi_1``.
"""

from __future__ import annotations

import torch
from torch import nn

from .activations import get_activation
from .dropout import Dropout
from .linear import LinearFn, project


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
        h = project(self.wi, x, linear)  # (B, T, d_ff) or (B, T, 2 * d_ff)
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            h = self.act(gate) * value
        else:
            h = self.act(h)
        return project(self.wo, self.dropout(h), linear)
