"""nn/norm.py: RMSNorm's closed-form CPU backward (training) gives F.rms_norm's outputs bitwise and its
gradients as accurately as F.rms_norm's own composite backward, measured against float64."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from t5electra.nn.norm import RMSNorm


def _grads(x, w, g, fn):
    """fn(x leaf, w) -> (y, the weight leaf it used); y, dx, dw for the gradient g."""
    x = x.detach().clone().requires_grad_()
    y, w_leaf = fn(x, w)
    y.backward(g)
    return y.detach(), x.grad, w_leaf.grad


@pytest.mark.parametrize("shape", [(3, 5, 64), (7, 33), (2, 1, 512)])
def test_closed_form_backward_is_as_accurate_as_the_composite(shape):
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 1.5     # a mean and a spread, as residual streams have
    x[..., 0] *= 40                      # one outlier feature dominates the row's norm
    w = torch.randn(shape[-1]) * 0.3 + 1
    g = torch.randn(shape)
    norm = RMSNorm(shape[-1], eps=1e-6)

    def ours(x, w):
        norm.weight = torch.nn.Parameter(w.clone())
        return norm(x), norm.weight

    def composite(x, w):
        w = w.clone().requires_grad_()
        return F.rms_norm(x, (shape[-1],), w, eps=1e-6), w

    y, dx, dw = _grads(x, w, g, ours)
    assert norm(x.requires_grad_()).grad_fn.name().startswith("_RMSNormCPU")  # the closed form ran
    assert composite(x, w)[0].grad_fn.name() != norm(x).grad_fn.name()
    y_ref, dx_ref, dw_ref = _grads(x, w, g, composite)
    exact = _grads(x.double(), w.double(), g.double(), composite)
    assert torch.equal(y, y_ref)  # aten's fused forward kernel: the same values
    for name, got, ref, true in (("dx", dx, dx_ref, exact[1]), ("dw", dw, dw_ref, exact[2])):
        err, ref_err = ((got.double() - true).abs().max().item(), (ref.double() - true).abs().max().item())
        scale = true.abs().max().item()
        assert err <= 8 * ref_err + 1e-6 * scale, (name, err, ref_err)
        assert err < 1e-5 * scale, (name, err, scale)  # float32 rounding, not a wrong formula


def test_frozen_weight_bf16_grad_and_paths_outside_training():
    torch.manual_seed(1)
    norm = RMSNorm(16)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    norm.weight.requires_grad_(False)  # e.g. LoRA: only the input needs its gradient
    x = torch.randn(4, 16, requires_grad=True)
    y = norm(x)
    assert y.grad_fn.name().startswith("_RMSNormCPU")
    g = torch.randn(4, 16).bfloat16()  # a bf16 gradient, as autocast's casts can hand back
    y.backward(g.float())
    x_ref = x.detach().clone().requires_grad_()
    F.rms_norm(x_ref, (16,), norm.weight, eps=1e-6).backward(g.float())
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-5, atol=1e-6)
    assert norm.weight.grad is None
    with torch.no_grad():  # inference keeps F.rms_norm
        assert norm(x).grad_fn is None and torch.equal(norm(x), F.rms_norm(x, (16,), norm.weight, eps=1e-6))
    # a bf16 input under autocast: statistics in fp32, the output fp32 (the weight is fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x.bfloat16())
    assert out.dtype == torch.float32
    # the closed form is first-order only: a second derivative says so instead of being wrong
    x2 = torch.randn(3, 16, requires_grad=True)
    (gx,) = torch.autograd.grad(norm(x2).pow(2).sum(), x2, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|differentiable"):
        gx.sum().backward()
