"""The matmul every projection of the shared blocks runs, and the decoding fast path's hook.

Every projection in :mod:`.attention` and :mod:`.mlp` (and ELECTRA's FFN) goes through
:func:`project`. With ``linear`` given it computes ``linear(x, layer.weight)`` (+ bias), so a caller
can swap in another matmul formulation of the same product (t5electra/inference/decoding.py:
``decode_linear``, the few-row orientation, and ``PackedLinears``, oneDNN-packed weights) without a
second copy of the blocks' code. Without it, a plain ``nn.Linear`` runs :func:`fast_linear`: fp32
products on oneDNN where the CPU runs them faster there than through PyTorch's default MKL call
(AVX-512: ``t5electra.machine.onednn_fp32_preferred``), forward and backward; anything else
(adapters, quantised or inference modules, hooked modules) runs ``layer(x)``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from ..machine import onednn_fp32_preferred

LinearFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x (.., in), weight (out, in)) -> (.., out)


def project(layer: nn.Linear, x: torch.Tensor, linear: Optional[LinearFn] = None) -> torch.Tensor:
    """``layer(x)``, or the same product computed by ``linear(x, layer.weight)``."""
    if x.dtype is torch.bfloat16 and not torch.is_autocast_enabled(x.device.type):
        # bf16 activations of a fused bf16 inference kernel (project_act) into a layer that multiplies in fp32
        w = getattr(layer, "weight", None)
        if isinstance(w, torch.Tensor) and w.dtype is torch.float32 and not getattr(layer, "bf16_inputs", False):
            x = x.float()
    if linear is None:
        if _plain(layer):
            return fast_linear(x, layer.weight, layer.bias)
        return layer(x)
    out = linear(x, layer.weight)
    return out if layer.bias is None else out + layer.bias


def fast_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``; fp32 on a CPU where oneDNN's GEMM is the faster one runs
    :class:`_OneDNNLinear` (the same products summed in another order, ~1e-6 relative). bf16
    autocast, other dtypes and devices, and torch.compile keep ``F.linear``.

    Every row count takes the same kernel, so that a row's result does not depend on how many
    rows share the call: with a 32-row threshold (below it oneDNN on unpacked weights was no
    faster, at 1-8 rows on one thread up to 1.45x slower) two FSDP processes, each with half the
    rows, no longer trained the weights of one process to 1e-5
    (tests/recipes/test_finetune_fsdp.py)."""
    if _onednn_applies(x, weight):
        return _OneDNNLinear.apply(x, weight, bias)
    return F.linear(x, weight, bias)


# Activations oneDNN can apply inside the GEMM (its "post-ops") with the same values: the exact
# (erf) GELU and ReLU. Measured on the AVX-512 EPYC: oneDNN's erf GELU equals F.gelu bitwise on
# 4M values; its tanh variant does not, so T5 v1.1's gelu_new is not fused.
_POST_OPS: dict = {F.gelu: ("gelu", "none"), F.relu: ("relu", "")}


def project_act(layer: nn.Linear, x: torch.Tensor, act) -> torch.Tensor:
    """``act(project(layer, x))``. Without autograd, on the oneDNN path (fp32, :func:`fast_linear`'s
    conditions, or an inference module whose kernel offers ``fused_forward``), the activation runs
    inside the GEMM: the same values, one pass over the (rows, d_ff) activations less. ELECTRA-Small
    discriminator 32 x 128: ~13 % more sequences/s (docs/inference.md). A bf16 inference kernel
    returns the activations in bf16 (t5electra/inference/weights.py: ``Bf16Native``); pass them
    to :func:`project`, which widens them for a layer that multiplies in fp32."""
    post = _POST_OPS.get(act)
    if post is not None and not torch.is_grad_enabled():
        fused = getattr(layer, "fused_forward", None)  # inference/weights.py: InferenceLinear
        if fused is not None:
            out = fused(x, post)
            if out is not None:
                return out
        elif _plain(layer) and _onednn_applies(x, layer.weight):
            return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, post[0], [], post[1])
    return act(project(layer, x))


def _plain(layer: nn.Module) -> bool:
    """An nn.Linear itself (not an adapter, quantised or inference module) without hooks to honour."""
    return type(layer) is nn.Linear and not (layer._forward_hooks or layer._forward_pre_hooks)


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (x.device.type == "cpu" and x.dtype == torch.float32 and weight.dtype == torch.float32 and x.dim() >= 2
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and onednn_fp32_preferred())


class _OneDNNLinear(torch.autograd.Function):
    """y = x W^T + b with oneDNN's GEMM (``mkldnn._linear_pointwise``, bias inside), and its
    backward: dx = dy W on oneDNN, dW = dy^T x on MKL (oneDNN needed transposed copies there and
    was not faster), db = sum of dy. Measured on the 2-core AVX-512 EPYC (docs/performance.md):
    forward 190 vs 131 GFLOP/s, dx 183-189 vs 136, for 2,048 x 512 -> 1,536; a t5-small fp32
    training step 10-15 % faster at 16 x 128 -> 32, 5-10 % at 8 x 512 -> 114."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        x2 = x.reshape(-1, x.shape[-1])                                   # (N, in)
        ctx.save_for_backward(x2, weight)
        ctx.has_bias = bias is not None
        y = torch.ops.mkldnn._linear_pointwise(x2, weight, bias, "none", [], "")  # (N, out)
        return y.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x2, weight = ctx.saved_tensors
        g2 = grad.reshape(-1, grad.shape[-1])                             # (N, out)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:  # dy W = linear(dy, W^T): (N, in)
            gx = torch.ops.mkldnn._linear_pointwise(g2, weight.t(), None, "none", [], "")
            gx = gx.view(*grad.shape[:-1], weight.shape[1])
        if ctx.needs_input_grad[1]:
            gw = g2.t().mm(x2)                                            # (out, in)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g2.sum(0)
        return gx, gw, gb
