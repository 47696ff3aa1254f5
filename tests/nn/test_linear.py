"""nn/linear.py: fp32 products on oneDNN (``fast_linear``, forward and backward) compute what
``F.linear`` computes, and ``project`` sends only plain, unhooked ``nn.Linear`` layers there."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dispatch_ops import CountOps
from t5electra.machine import FP32_GEMM_ENV, onednn_fp32_preferred
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.nn.linear import fast_linear, project, project_act


@pytest.fixture(params=["onednn", "mkl"])
def gemm(request, monkeypatch):
    monkeypatch.setenv(FP32_GEMM_ENV, request.param)
    return request.param


def test_the_rule_follows_the_cpu_and_the_override(monkeypatch):
    assert onednn_fp32_preferred(frozenset({"avx2", "fma", "avx512f"}))
    assert not onednn_fp32_preferred(frozenset({"avx2", "fma"}))
    monkeypatch.setenv(FP32_GEMM_ENV, "onednn")
    assert onednn_fp32_preferred()
    monkeypatch.setenv(FP32_GEMM_ENV, "mkl")
    assert not onednn_fp32_preferred()


@pytest.mark.parametrize("shape", [(40, 24), (3, 15, 24), (7, 24), (0, 24)], ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_fast_linear_forward_and_gradients_equal_f_linear(gemm, shape, bias):
    """Every row count (none included) runs oneDNN when it is chosen."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g)
    if len(shape) == 3:
        x = x.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous input
    w, b = torch.randn(40, 24, generator=g), torch.randn(40, generator=g) if bias else None
    grad = torch.randn(*shape[:-1], 40, generator=g)
    leaves = [t.clone().requires_grad_() for t in (x, w) + ((b,) if bias else ())]
    ref_leaves = [t.clone().requires_grad_() for t in (x, w) + ((b,) if bias else ())]
    y = fast_linear(*leaves)
    ref = F.linear(*ref_leaves)
    name = type(y.grad_fn).__name__
    onednn = gemm == "onednn"
    assert ("OneDNN" in name) == onednn, name
    if not onednn:
        assert torch.equal(y, ref)
    torch.testing.assert_close(y, ref, atol=1e-5, rtol=1e-5)
    y.backward(grad)
    ref.backward(grad)
    for a, r in zip(leaves, ref_leaves, strict=True):
        torch.testing.assert_close(a.grad, r.grad, atol=1e-4, rtol=1e-5)


def test_autocast_other_dtypes_and_hooked_or_replaced_layers_keep_their_path(monkeypatch):
    monkeypatch.setenv(FP32_GEMM_ENV, "onednn")
    layer = nn.Linear(16, 8)
    x = torch.randn(40, 16, requires_grad=True)
    assert "OneDNN" in type(project(layer, x).grad_fn).__name__
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert project(layer, x).dtype == torch.bfloat16
    assert "OneDNN" not in type(fast_linear(x.double(), layer.weight.double()).grad_fn).__name__
    seen = []
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    project(layer, x)
    assert seen == [(40, 8)]  # a hooked layer runs its module call, hooks included
    handle.remove()

    class Wrapped(nn.Linear):  # adapters, inference and quantised modules: their own forward
        def forward(self, x):
            return super().forward(x) + 1

    wrapped = Wrapped(16, 8)
    torch.testing.assert_close(project(wrapped, x), F.linear(x, wrapped.weight, wrapped.bias) + 1)


def test_t5_training_step_gives_the_same_loss_and_gradients(monkeypatch):
    """A tiny T5 (v1.1: gated FFN, untied output layer) trained one step with either GEMM."""
    import t5electra.nn.linear as L

    calls, apply = [], L._OneDNNLinear.apply
    monkeypatch.setattr(L._OneDNNLinear, "apply", lambda *a: calls.append(a[0].shape) or apply(*a))
    grads = {}
    for gemm in ("mkl", "onednn"):
        monkeypatch.setenv(FP32_GEMM_ENV, gemm)
        torch.manual_seed(0)
        model = T5ForConditionalGeneration(T5Config.from_preset("t5-v1_1-tiny", dropout_rate=0.0))
        ids, labels = torch.randint(3, 200, (4, 11)), torch.randint(3, 200, (4, 9))
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        grads[gemm] = (loss.detach(), {n: p.grad for n, p in model.named_parameters()})
    assert len(calls) > 20  # every projection of the onednn run (encoder, decoder, output layer)
    torch.testing.assert_close(grads["onednn"][0], grads["mkl"][0], atol=1e-6, rtol=1e-6)
    for n, g in grads["mkl"][1].items():
        torch.testing.assert_close(grads["onednn"][1][n], g, atol=1e-6, rtol=1e-4, msg=n)


@pytest.mark.parametrize("act", [F.gelu, F.relu, partial(F.gelu, approximate="tanh")], ids=["gelu", "relu", "tanh"])
def test_project_act_runs_the_activation_inside_the_gemm_at_inference(gemm, act):
    """Without autograd on the oneDNN path, exact GELU and ReLU run as the GEMM's post-op (no
    separate activation op), with act(F.linear(...))'s values; the tanh GELU, autograd and MKL keep
    the separate activation."""
    layer = nn.Linear(24, 40)
    x = torch.randn(3, 7, 24)
    ref = act(F.linear(x, layer.weight, layer.bias))
    with torch.inference_mode(), CountOps() as ops:
        got = project_act(layer, x, act)
    fused = gemm == "onednn" and act in (F.gelu, F.relu)
    assert ("gelu" not in ops.ops and "relu" not in ops.ops) == fused, ops.ops
    torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)
    with CountOps() as ops:
        y = project_act(layer, x.requires_grad_(), act)
    assert any(op in ("gelu", "relu") for op in ops.ops)  # autograd: the activation's own backward
    y.sum().backward()
    assert x.grad is not None


def test_electra_ffn_gelu_fused_in_the_packed_kernel(monkeypatch):
    """ELECTRA after optimize_for_inference (oneDNN forced): each layer's FFN GELU runs inside the
    packed GEMM (InferenceLinear.fused_forward), the same logits as with the separate GELU."""
    import t5electra.nn.linear as L
    from t5electra.models.electra import ElectraConfig, ElectraForPreTraining

    monkeypatch.setenv(FP32_GEMM_ENV, "onednn")
    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig.from_preset("electra-tiny")).eval().optimize_for_inference()
    ids = torch.randint(1, 100, (3, 11))
    with torch.inference_mode(), CountOps() as ops:
        fused = model(ids).logits
    monkeypatch.setattr(L, "_POST_OPS", {})
    with torch.inference_mode(), CountOps() as ops_plain:
        plain = model(ids).logits
    layers = model.config.num_hidden_layers
    assert ops_plain.ops.count("gelu") - ops.ops.count("gelu") == layers  # the head's GELU stays separate
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)


def test_t5_v1_0_relu_fused_in_the_full_sequence_ffn(monkeypatch):
    """T5 v1.0's FFN ReLU runs inside the oneDNN GEMM at inference (nn/mlp.py: project_act) in
    every full-sequence pass (encoder, and decoder without the decoding hook), with the same
    logits; decoding steps (the ``linear`` hook) keep their own products and the separate ReLU."""
    import t5electra.nn.linear as L

    monkeypatch.setenv(FP32_GEMM_ENV, "onednn")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset("t5-tiny")).eval()
    ids, labels = torch.randint(2, 200, (2, 9)), torch.randint(2, 200, (2, 5))
    with torch.inference_mode(), CountOps() as ops:
        fused = model(input_ids=ids, labels=labels).logits
    monkeypatch.setattr(L, "_POST_OPS", {})
    with torch.inference_mode(), CountOps() as ops_plain:
        plain = model(input_ids=ids, labels=labels).logits
    layers = model.config.num_layers + model.config.decoder_layers
    assert ops.ops.count("relu") == 0 and ops_plain.ops.count("relu") == layers
    torch.testing.assert_close(fused, plain, atol=1e-6, rtol=1e-6)
