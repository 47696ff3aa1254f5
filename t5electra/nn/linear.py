"""The one hook the decoding fast path needs from the shared blocks.

Every projection in :mod:`.attention` and :mod:`.mlp` goes through :func:`project`: normally
``layer(x)``; with ``linear`` given, ``linear(x, layer.weight)`` (+ bias), so a caller can swap in
another matmul formulation of the same product (t5electra/inference/decoding.py: ``decode_linear``,
the few-row orientation, and ``PackedLinears``, oneDNN-packed weights) without a second copy of the
blocks' code.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

LinearFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (.., in), weight (out, in)) -> (.., out)


def project(layer: nn.Linear, x: torch.Tensor, linear: Optional[LinearFn] = None) -> torch.Tensor:
    """``layer(x)``, or the same product computed by ``linear(x, layer.weight)``."""
    if linear is None:
        return layer(x)
    out = linear(x, layer.weight)
    return out if layer.bias is None else out + layer.bias
