"""T5's decoder step at inference on CPU as one flat loop: the modules' ops without the module calls.

A T5-small decoding step at batch 1 is 36 one-row products, which stream its 88 MB of weights
from memory (~3.4 ms on the 2-core AMD EPYC of BENCHMARKS.md), and ~400 small ops between them.
Through the modules (``T5Block`` -> ``SelfAttention`` -> ``project`` -> ``PackedLinears``,
``RMSNorm``, ``Dropout``, ...) the Python around those small ops took ~1 ms of a 7 ms token.
:func:`decode` calls the same functions in the same order on the same tensors, without the module
calls around them, so it gives the same bits (tests/inference/test_decoder_step.py): T5-small
greedy batch 1 fp32 7.0 -> 5.9 ms a token (session 26, docs/performance.md). Any number of rows
(beam search, batches) and new positions: the products and attention go through the blocks' own
``project`` and ``attend``; only one fp32 row calls PackedLinears' one-row kernel directly.

It runs only where the modules would run exactly these ops (:func:`plan`): inference (no grad, eval
mode) on CPU (fp32, bf16 or fp16 models), the blocks' own module types (no subclassed or replaced blocks, norms,
attention or feed-forward modules; no adapters, which T5Stack.decode also sends to the modules),
no hooks on the modules it does not call (``output_attentions`` and the server's attention view
hook the attention modules), none of the methods it mirrors replaced (``forward``, a block's
``_forward``, attention's ``_attend``: on an instance or on the class) nor a function they look up
in nn/attention.py, nn/mlp.py or nn/norm.py (``attend``, ``project``, ``rms_norm``, ...). Anything
else takes the modules. What each line mirrors: ``T5Stack.decode`` and ``T5Block._forward``
(models/t5.py), ``SelfAttention.forward`` / ``CrossAttention.forward`` (nn/attention.py),
``FeedForward.forward`` (nn/mlp.py); the norm is RMSNorm's own ``rms_norm``. A change there must be
made here too (the tests compare the two paths bitwise).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules import module as _module

from ..nn import attention as _attention, mlp as _mlp, norm as _norm
from ..nn.attention import CrossAttention, SelfAttention, _merge_heads, _split_heads, attend
from ..nn.dropout import Dropout
from ..nn.linear import project
from ..nn.mlp import FeedForward
from ..nn.norm import RMSNorm, rms_norm
from .decoding import PackedLinears, _bag_product

# a block's modules, norms and products, in the order it runs them
_TYPES = (("self_attn_norm", RMSNorm), ("self_attn", SelfAttention), ("cross_attn_norm", RMSNorm),
          ("cross_attn", CrossAttention), ("ff_norm", RMSNorm), ("ff", FeedForward), ("dropout", Dropout))
_NORMS = ("self_attn_norm", "cross_attn_norm", "ff_norm")
_LINEARS = (("self_attn", "qkv"), ("self_attn", "o"), ("cross_attn", "q"), ("cross_attn", "o"), ("ff", "wi"),
            ("ff", "wo"))


# the methods of the modules' path that this loop mirrors: forward (each module), _forward (the
# block's body), _attend (the attention modules')
_METHODS = ("forward", "_forward", "_attend")


def _hooked(m: nn.Module | None, kind: type) -> bool:
    """Whether calling ``m`` would not run ``kind.forward`` in eval mode: ``m`` of another type (a
    subclass, an adapter), with hooks (as ``Module._call_impl`` runs them), a method it calls set
    on the instance (``forward``, a block's ``_forward``, attention's ``_attend``), or in training
    mode (dropout)."""
    return (type(m) is not kind or m.training or bool(m._forward_hooks or m._forward_pre_hooks)
            or any(name in m.__dict__ for name in _METHODS))


def _globals_patched() -> bool:
    """Whether a function the modules' methods look up in their module at each call was replaced
    there (``t5electra.nn.attention.attend = ...``): this loop calls the ones imported above."""
    return (_attention.attend is not attend or _attention._split_heads is not _split_heads
            or _attention._merge_heads is not _merge_heads or _attention.project is not project
            or _mlp.project is not project or _norm.rms_norm is not rms_norm)


def _patched(kind: type) -> bool:
    """Whether a method of ``kind`` that the modules' path calls was replaced on the class
    (``SelfAttention.forward = ...``): not the function of the class body that defines it (its
    qualified name and module), or a wrapper of one (``functools.wraps`` sets ``__wrapped__``)."""
    for name in _METHODS:
        owner = next((c for c in kind.__mro__ if name in c.__dict__), None)
        if owner is not None and owner is not nn.Module:
            fn = owner.__dict__[name]
            if (getattr(fn, "__qualname__", None) != f"{owner.__qualname__}.{name}" or hasattr(fn, "__wrapped__")
                    or getattr(fn, "__module__", None) != owner.__module__):
                return True
    return False


def plan(stack: nn.Module, block_type: type, x: torch.Tensor, linear, cache) -> list | None:
    """Per block what :func:`decode` needs, or None where the modules must run (see the module doc).

    The per-step conditions (CPU, no grad, eval mode, no global hooks) are read at every step; the
    rest at the cache's first step, and kept in ``cache.flat_step`` for its later steps: read at
    every step, it cost ~165 us of a 6 ms step (the modules' attributes are out of the CPU caches
    once the weights have streamed through them). A cache's keys and values belong to the model as
    it was when they were computed, so a model changed between two steps of one cache is already a
    new cache's business: modules replaced, hooks added or weights reassigned then are seen from
    the next cache (the next ``generate``).
    """
    if (x.device.type != "cpu" or torch.is_grad_enabled() or linear is None or stack.training
            or _module._global_forward_hooks or _module._global_forward_pre_hooks):
        return None
    # keyed by the stack too: one cache stepped by two models of one shape (both with decode_linear)
    # took the first model's plan, its modules and weights, for the second
    if cache.flat_step is None or cache.flat_step[0] is not stack or cache.flat_step[1] is not linear:
        cache.flat_step = (stack, linear, _plan(stack, block_type, linear))
    return cache.flat_step[2]


def _plan(stack: nn.Module, block_type: type, linear) -> list | None:
    """:func:`plan`'s module checks. The stack's own hooks do not count: ``T5Stack.decode`` is a
    method, not a forward. A product is ``(layer, table)``: ``table`` is ``W^T`` where ``linear``
    (a :class:`PackedLinears`) runs its one-row kernel on it for an fp32 row (a current copy, no
    bias), else None. Given ``linear``, ``project`` reads a layer's weight and bias and never calls
    it (its hooks do not run either): what T5Stack.decode asks of it is to be an ``nn.Linear``."""
    top = stack._modules
    if _hooked(top["final_norm"], RMSNorm) or _hooked(top["dropout"], Dropout) or _globals_patched() or any(
            _patched(kind) for kind in (block_type, RMSNorm, SelfAttention, CrossAttention, FeedForward, Dropout)):
        return None
    table = linear.one_row_table if isinstance(linear, PackedLinears) else _no_table
    layers = []
    for block in top["blocks"]:
        parts = block._modules
        if _hooked(block, block_type):
            return None
        for name, kind in _TYPES:
            if _hooked(parts.get(name), kind):
                return None
        attn, cross, ff = parts["self_attn"], parts["cross_attn"], parts["ff"]
        if _hooked(ff._modules["dropout"], Dropout):
            return None
        products = []
        for owner, name in _LINEARS:
            layer = parts[owner]._modules[name]
            if not isinstance(layer, nn.Linear):
                return None
            products.append((layer, table(layer.weight) if layer.bias is None else None))
        norms = tuple((parts[name]._parameters["weight"], parts[name].eps) for name in _NORMS)
        wo_fp32 = ff._modules["wo"].weight.dtype == torch.float32
        layers.append(((attn.num_heads, attn.scale, attn.implementation), (cross.num_heads, cross.scale,
                       cross.implementation), (ff.gated, ff.act, wo_fp32), norms, products))
    return layers


def _no_table(weight: torch.Tensor) -> None:
    return None


def _product(x: torch.Tensor, product: tuple, linear) -> torch.Tensor:
    """``project(layer, x, linear)``; PackedLinears' one-row kernel called directly where it runs."""
    layer, table = product
    if table is not None and x.dtype is torch.float32 and x.shape[0] * x.shape[1] == 1:
        return _bag_product(x, table)
    return project(layer, x, linear)


def decode(stack: nn.Module, layers: list, x: torch.Tensor, cache, linear) -> torch.Tensor:
    """``T5Stack.decode`` from :func:`plan`'s ``layers``: x (N, t, D) -> (N, t, D); appends to ``cache``."""
    start, end = cache.length, cache.length + x.shape[1]
    bias = cache.position_bias[..., start:end, :end]                    # (L, 1, H, t, end)
    x = cache.to_slots(x)
    for i, ((heads, scale, impl), (cross_heads, cross_scale, cross_impl), (gated, act, wo_fp32),
            (norm1, norm2, norm3), (qkv, o, cross_q, cross_o, wi, wo)) in enumerate(layers):
        # self-attention over the cached positions and the new ones
        h = _product(rms_norm(x, *norm1), qkv, linear)                        # (N, t, 3 * H * Dh)
        q, k, v = _split_heads(h, 3 * heads).chunk(3, dim=1)              # 3 x (N, H, t, Dh)
        k_buf, v_buf = cache.self_kv[i, 0], cache.self_kv[i, 1]
        k_buf[:, :, start:end] = k
        v_buf[:, :, start:end] = v
        h = attend(q, k_buf[:, :, :end], v_buf[:, :, :end], bias[i], scale=scale, implementation=impl)
        x = x + _product(_merge_heads(h), o, linear)
        # cross-attention; the g beams of an input share its keys and values (CrossAttention.forward)
        k, v = cache.cross_kv[i, 0], cache.cross_kv[i, 1]                # (N_src, H, S, Dh)
        q = _split_heads(_product(rms_norm(x, *norm2), cross_q, linear), cross_heads)
        b, h_, t, d = q.shape
        g = b // k.shape[0]
        if g > 1:
            q = q.view(k.shape[0], g, h_, t, d).transpose(1, 2).reshape(k.shape[0], h_, g * t, d)
        h = attend(q, k, v, cache.cross_bias, scale=cross_scale, implementation=cross_impl)
        if g > 1:
            h = h.view(k.shape[0], h_, g, t, d).transpose(1, 2).reshape(b, h_, t, d)
        x = x + _product(_merge_heads(h), cross_o, linear)
        # feed-forward
        h = _product(rms_norm(x, *norm3), wi, linear)                         # (N, t, d_ff or 2 * d_ff)
        if gated:
            gate, value = h.chunk(2, dim=-1)
            h = act(gate) * value
        else:
            h = act(h)
        if h.dtype == torch.float16 and wo_fp32:
            h = h.float()  # FeedForward's fp16 rule (wo stays fp32)
        x = x + _product(h, wo, linear)
    cache.length = end
    final = stack.final_norm
    return cache.from_slots(rms_norm(x, final.weight, final.eps))
