"""nn/attention.py: which kernel ``attend`` runs, and that both compute the same thing."""

import torch
import torch.nn.functional as F

import t5electra.nn.attention as attention
from t5electra.nn.attention import attend


def _inputs(n, t, s, h=4, d=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(n, h, x, d, generator=g) for x in (t, s, s))
    bias = torch.randn(1, h, t, s, generator=g)
    return q, k, v, bias


def test_few_query_rows_take_the_plain_formula_and_agree_with_sdpa(monkeypatch):
    """Decoding steps of many rows (beam search) run the plain formula on CPU (faster there than
    SDPA's kernel); a single row and the encoder's long queries keep SDPA. Both give
    the same result within fp32 rounding, with T5's scale=1 and an additive bias."""
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(a[0].shape) or sdpa(*a, **k))
    for n, t, s, fused in ((64, 1, 40, False), (16, 4, 64, False), (8, 4, 9, False), (1, 1, 40, True),
                           (4, 1, 40, True), (16, 64, 64, True), (64, 9, 9, True)):
        q, k, v, bias = _inputs(n, t, s)
        calls.clear()
        got = attend(q, k, v, bias, scale=1.0)
        assert bool(calls) == fused, (n, t, s)
        torch.testing.assert_close(got, sdpa(q, k, v, attn_mask=bias, scale=1.0), atol=2e-6, rtol=1e-5)


def test_short_cpu_training_takes_the_plain_formula_with_the_same_gradients(monkeypatch):
    """Training on CPU: up to 128 x 128 queries x keys (and 256 x 256 with a bias that needs its
    gradient, T5's position bias) the plain formula, faster there than SDPA's fused backward; longer
    ones keep SDPA's memory-lean backward. Outputs and all four gradients agree with SDPA's."""
    calls = []
    sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention",
                        lambda *a, **k: calls.append(a[0].shape) or sdpa(*a, **k))
    for n, t, s, bias_grad, fused in ((64, 1, 40, False, False), (4, 128, 128, False, False),
                                      (2, 256, 256, True, False), (2, 256, 256, False, True),
                                      (2, 129, 129, False, True), (1, 300, 300, True, True)):
        q, k, v, bias = _inputs(n, t, s, seed=t)
        leaves = [x.requires_grad_() for x in (q, k, v)] + ([bias.requires_grad_()] if bias_grad else [])
        calls.clear()
        out = attend(q, k, v, bias, scale=1.0)
        assert bool(calls) == fused, (n, t, s, bias_grad)
        g = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        got = torch.autograd.grad(out, leaves, g)
        ref_out = sdpa(q, k, v, attn_mask=bias, scale=1.0)
        ref = torch.autograd.grad(ref_out, leaves, g)
        torch.testing.assert_close(out, ref_out, atol=2e-6, rtol=1e-5)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    q, k, v, bias = _inputs(4, 64, 64)
    calls.clear()
    attend(q, k, v, bias, scale=1.0)  # no tensor needs a gradient: inference, SDPA
    assert calls
