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
    SDPA's kernel); a single row, the encoder's long queries and training keep SDPA. Both give
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
    q, k, v, bias = _inputs(64, 1, 40)
    calls.clear()
    attend(q.requires_grad_(), k, v, bias, scale=1.0).sum().backward()
    assert calls, "a training step with few queries must keep SDPA"
