"""``LoraLinear``: a frozen ``nn.Linear`` plus low-rank updates on named blocks of its output rows.

Our models fuse projections that transformers keeps apart (T5's q/k/v, cross-attention k/v, gated
wi_0/wi_1; ELECTRA's query/key/value): one matrix whose row blocks are the separate projections.
A LoRA target in transformers' names (``q``, ``value``, ``wi_1``) is one such block, so an adapter
here is a dict of parts, each with its own A and B and its row range in the fused output::

    y = W x (+ b);   y[:, start:stop] += scaling * B_part A_part dropout(x)   for each adapted part

which is exactly PEFT's result on the separate transformers modules: the block of ``W x`` for
``q`` is ``W_q x``, and the adapter of ``q`` adds to that block only.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..nn.dropout import Dropout


class LoraLinear(nn.Module):
    """``base_layer`` (frozen) + one adapter per part; ``parts``: name -> (start, stop) output rows."""

    def __init__(self, base_layer: nn.Linear, parts: dict[str, tuple[int, int]], *, r: int, scaling: float,
                 dropout: float = 0.0, init_lora_weights: bool | str = True):
        super().__init__()
        self.base_layer = base_layer
        self.parts = dict(sorted(parts.items(), key=lambda kv: kv[1]))
        self.r = r
        self.scaling = scaling
        self.lora_dropout = Dropout(dropout)
        w = base_layer.weight
        # A and B in float32 on a 16-bit base, as PEFT (autocast_adapter_dtype=True): small updates
        # survive training in bf16, and the logits are PEFT's; forward casts the input and the sum.
        dtype = torch.float32 if w.dtype in (torch.float16, torch.bfloat16) else w.dtype
        kw = dict(device=w.device, dtype=dtype)
        self.lora_A = nn.ModuleDict({n: nn.Linear(base_layer.in_features, r, bias=False, **kw) for n in self.parts})
        self.lora_B = nn.ModuleDict({n: nn.Linear(r, stop - start, bias=False, **kw)
                                     for n, (start, stop) in self.parts.items()})
        self.merged = False
        self.disabled = False  # PeftModel.disable_adapter(): the base layer alone
        self.reset_lora_parameters(init_lora_weights)

    @torch.no_grad()
    def reset_lora_parameters(self, init_lora_weights: bool | str = True) -> None:
        """PEFT's init: A ~ kaiming-uniform(a=sqrt(5)) (nn.Linear's default; ``"gaussian"``: normal with
        std 1/r), B = 0 (or B random too when ``init_lora_weights`` is False, so the adapted model
        differs from the base)."""
        for n in self.parts:
            if init_lora_weights == "gaussian":
                nn.init.normal_(self.lora_A[n].weight, std=1 / self.r)
            else:
                nn.init.kaiming_uniform_(self.lora_A[n].weight, a=math.sqrt(5))
            if init_lora_weights:
                nn.init.zeros_(self.lora_B[n].weight)
            else:
                nn.init.kaiming_uniform_(self.lora_B[n].weight, a=math.sqrt(5))

    # The base layer's tensors, for code that reads them (init, decoding's weight layout).
    @property
    def weight(self) -> torch.Tensor:
        return self.base_layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.base_layer.bias

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def delta_weight(self, name: str) -> torch.Tensor:
        """scaling * B A for one part: (stop - start, in_features)."""
        return (self.lora_B[name].weight @ self.lora_A[name].weight) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base_layer(x)  # (.., out_features)
        if self.merged or self.disabled:
            return out
        h = self.lora_dropout(x)
        pieces, pos = [], 0
        for n, (start, stop) in self.parts.items():
            if start > pos:
                pieces.append(out[..., pos:start])  # a block nobody adapts (k between q and v)
            a = self.lora_A[n]
            delta = self.lora_B[n](a(h.to(a.weight.dtype))) * self.scaling
            pieces.append((out[..., start:stop] + delta).to(out.dtype))  # PEFT: added in float32, then cast
            pos = stop
        if pos < out.shape[-1]:
            pieces.append(out[..., pos:])
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces, dim=-1)

    @torch.no_grad()
    def merge(self) -> None:
        """Fold every part's update into the base weight (W[start:stop] += scaling * B A)."""
        if self.merged:
            return
        w = self.base_layer.weight
        for n, (start, stop) in self.parts.items():
            # added in the update's precision and rounded once, as peft (a bf16 base: rounding the delta
            # first, then the sum, moved ~1/4 of the merged weights by one bf16 ulp)
            w[start:stop] = (w[start:stop].to(torch.promote_types(w.dtype, torch.float32)) + self.delta_weight(n)).to(w.dtype)
        self.merged = True

    def extra_repr(self) -> str:
        return f"parts={self.parts}, r={self.r}, scaling={self.scaling:g}, merged={self.merged}"
