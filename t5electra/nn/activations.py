"""Activation functions by the names Hugging Face configs use (``hidden_act``, ``feed_forward_proj``).

``gelu`` is the exact (erf) GELU; ``gelu_new`` is the tanh approximation that T5 v1.1 and GPT-2 use
(transformers' ``NewGELUActivation``), computed by PyTorch's fused ``gelu(approximate="tanh")``.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F

from ..errors import ConfigError

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": partial(F.gelu, approximate="tanh"),
    "gelu_pytorch_tanh": partial(F.gelu, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
}


def get_activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation called ``name``; a ConfigError listing the known names otherwise."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(f"unknown activation {name!r}; known: {', '.join(ACTIVATIONS)}") from None
