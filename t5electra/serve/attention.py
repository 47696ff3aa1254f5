"""Attention weights of every layer and head, for the playground's "principles" view: one
teacher-forced pass with the hooks of nn/attention_capture.py (the weights the blocks' own formula
gives, recomputed from each attention module's projections and inputs)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.attention_capture import capture_attention, self_weights, t5_cross_weights


@torch.inference_mode()
def t5_attention(model: nn.Module, input_ids: Tensor, decoder_input_ids: Tensor) -> dict[str, Tensor]:
    """T5's attention on one teacher-forced pass -> {"encoder": (L, H, S, S), "decoder": (L, H, T, T),
    "cross": (L, H, T, S)} for the first row of the batch."""
    modules = {
        "encoder": [(b.self_attn, self_weights) for b in model.encoder.blocks],
        "decoder": [(b.self_attn, self_weights) for b in model.decoder.blocks],
        "cross": [(b.cross_attn, t5_cross_weights) for b in model.decoder.blocks],
    }
    with capture_attention(modules) as captured:
        model(input_ids=input_ids, decoder_input_ids=decoder_input_ids)
    return {stack: torch.stack([w[0] for w in ws]) for stack, ws in captured.items()}


@torch.inference_mode()
def electra_attention(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
    """An ELECTRA encoder's self-attention (any ELECTRA class: its ``.electra`` encoder runs) ->
    (L, H, T, T) for the first row of the batch."""
    encoder = getattr(model, "electra", model)
    modules = {"encoder": [(layer.attention, self_weights) for layer in encoder.layers]}
    with capture_attention(modules) as captured:
        encoder(input_ids, attention_mask)
    return torch.stack([w[0] for w in captured["encoder"]])
