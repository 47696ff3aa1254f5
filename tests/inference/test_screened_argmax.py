"""Greedy decoding's screened argmax (t5electra/inference/int8.py: ScreenedArgmax): int8 scores plus a
proven error bound pick the candidates, their fp32 scores pick the token. It must return the fp32
argmax: the bound must hold (measured against float64 products, without the safety margin), and
generation must give the tokens of the full output layer."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from t5electra.generation.seq2seq import generate
from t5electra.inference.int8 import ScreenedArgmax, fbgemm_int8_full_range
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from tiny_t5 import spread_tiny_t5


def heavy_tailed_rows(g, n, d):
    """Activations like a decoder's output: mostly small, a few large components, some all positive."""
    x = torch.randn(n, d, generator=g) * torch.rand(n, 1, generator=g).mul(3)
    x[:, :3] *= 20
    x[n // 2:] = x[n // 2:].abs()
    return x


# The screen's own activations (8-bit where fbgemm sums without int16 saturation, VNNI; else 7-bit)
# and 7-bit ones. 8-bit was forced here on every CPU: on fbgemm's AVX2 kernels (the Zen 2 EPYC, or
# FBGEMM_ENABLE_INSTRUCTIONS=AVX2) its saturated sums broke the bound 11x, a path the screen never takes.
@pytest.mark.parametrize("activations", ["the screen's", "7-bit"])
@pytest.mark.parametrize("shape", [(3000, 64), (500, 200)])
def test_int8_scores_stay_inside_the_bound(activations, shape):
    g = torch.Generator().manual_seed(shape[0] + (activations == "7-bit"))
    w = torch.randn(shape, generator=g) * torch.rand(shape[0], 1, generator=g)
    w[::7, ::5] *= 10  # rows with outliers: coarse scales
    screen = ScreenedArgmax(w)
    assert screen.reduce_range is not fbgemm_int8_full_range()
    if activations == "7-bit":
        screen.reduce_range = True
    x = heavy_tailed_rows(g, 32, shape[1])
    approx = torch.ops.quantized.linear_dynamic(x, screen.packed, screen.reduce_range).double()
    exact = x.double() @ w.double().t()
    ratio = ((exact - approx).abs() / (screen.bound(x).double() / screen.MARGIN)).max().item()
    assert ratio <= 1.0, ratio  # the bound itself holds, before the margin
    assert ratio > 0.05, ratio  # and it is not vacuous: the errors reach a fair part of it


def test_argmax_equals_the_fp32_argmax_with_ties_and_bans():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(2000, 48, generator=g)
    w[1500] = w[700]      # an exact tie: argmax takes the first index, as the full product does
    w[900] = w[901] * (1 + 1e-4)
    screen = ScreenedArgmax(w)
    x = heavy_tailed_rows(g, 64, 48)
    x[5] = w[700]         # rows whose best tokens are the tied / nearly tied pairs
    x[6] = w[901]
    full = (x @ w.t()).argmax(1)
    assert torch.equal(screen(x), full)
    assert int(screen(x)[5]) == 700

    def ban(scores):      # what min_new_tokens / no_repeat_ngram_size do: -inf, nothing else
        return scores.index_fill(1, full[:4], -math.inf)

    assert torch.equal(screen(x, ban), ban(x @ w.t()).argmax(1))


def test_rows_it_cannot_screen_take_the_full_product():
    g = torch.Generator().manual_seed(1)
    w = torch.randn(800, 32, generator=g)
    x = torch.randn(4, 32, generator=g)
    x[1, 3] = math.nan                       # no candidate survives a NaN bound
    assert torch.equal(ScreenedArgmax(w)(x), (x @ w.t()).argmax(1))
    # near-flat scores: most of the vocabulary is a candidate, the full product is cheaper
    flat = torch.ones(800, 32) + torch.randn(800, 32, generator=g) * 1e-3
    y = torch.randn(2, 32, generator=g)
    assert torch.equal(ScreenedArgmax(flat)(y), (y @ flat.t()).argmax(1))


def count_screens(monkeypatch):
    calls = []
    real = ScreenedArgmax.__call__
    monkeypatch.setattr(ScreenedArgmax, "__call__", lambda self, *a: calls.append(1) or real(self, *a))
    return calls


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_generate_gives_the_full_output_layer_tokens(version, monkeypatch):
    model = spread_tiny_t5(version, 3, 96)
    ids = torch.randint(2, 96, (5, 9), generator=torch.Generator().manual_seed(3))
    settings = [dict(max_new_tokens=12), dict(max_new_tokens=12, min_new_tokens=12),
                dict(max_new_tokens=12, no_repeat_ngram_size=2), dict(max_new_tokens=12, eos_token_id=7)]
    model.screen_greedy_argmax = False  # the reference: the full fp32 output product
    plain = [generate(model, ids, **kw) for kw in settings]
    assert getattr(model, "_screened_argmax", None) is None
    model.optimize_for_inference("fp32")
    assert model._screened_argmax is not None and "screened" in model.inference_report.note
    assert model.screen_greedy_argmax
    calls = count_screens(monkeypatch)
    for kw, ref in zip(settings, plain, strict=True):
        assert torch.equal(generate(model, ids, **kw), ref), kw
    assert len(calls) >= 4 * 12 - 5
    # settings that need every score do not screen
    calls.clear()
    generate(model, ids, max_new_tokens=4, repetition_penalty=1.3)
    generate(model, ids, max_new_tokens=4, do_sample=True)
    generate(model, ids, max_new_tokens=4, num_beams=2)
    assert not calls


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_new_options_keep_the_screen_and_its_tokens(version, monkeypatch):
    """bad_words_ids, suppress_tokens, min_length, a decoder prefix only ban tokens: greedy search stays
    screened at every step. A forced token (forced_bos / forced_eos_token_id, several ids tying at 0)
    takes the full output layer at its step only."""
    model = spread_tiny_t5(version, 3, 96)
    ids = torch.randint(2, 96, (5, 9), generator=torch.Generator().manual_seed(3))
    prefix = torch.randint(2, 96, (5, 2), generator=torch.Generator().manual_seed(4))
    settings = [dict(bad_words_ids=[[5], [7, 9], [0, 11]], suppress_tokens=[3, 8], begin_suppress_tokens=[4]),
                dict(min_length=10, eos_token_id=7, decoder_input_ids=prefix),
                dict(forced_bos_token_id=4, forced_eos_token_id=[9, 2], eos_token_id=[])]
    model.screen_greedy_argmax = False
    plain = [generate(model, ids, max_new_tokens=12, **kw) for kw in settings]
    model.optimize_for_inference("fp32")
    calls = count_screens(monkeypatch)
    for kw, ref in zip(settings, plain, strict=True):
        calls.clear()
        assert torch.equal(generate(model, ids, max_new_tokens=12, **kw), ref), kw
        if "forced_bos_token_id" in kw:
            assert len(calls) == 12 - 2 and (ref[:, 1] == 4).all() and (ref[:, -1] == 2).all()
        else:
            assert len(calls) >= 6, kw


def test_a_trained_sized_model_keeps_its_tokens():
    """A wider random T5 (vocab 4000, d_model 128) at a normal init: flatter scores than the tiny ones."""
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=4000, d_model=128, d_kv=32, d_ff=256, num_layers=2, num_heads=4, dropout_rate=0.0)
    model = T5ForConditionalGeneration(cfg).eval()
    ids = torch.randint(2, 4000, (6, 16))
    full = copy.deepcopy(model)
    full.screen_greedy_argmax = False
    ref = generate(full, ids, max_new_tokens=16, min_new_tokens=16)
    assert torch.equal(generate(model.optimize_for_inference("fp32"), ids, max_new_tokens=16, min_new_tokens=16), ref)


def test_screen_follows_the_weights_and_the_weight_type(monkeypatch):
    model = spread_tiny_t5("v1.0", 4, 96).optimize_for_inference("fp32")
    ids = torch.randint(2, 96, (3, 7), generator=torch.Generator().manual_seed(4))
    # a copy has its own weights: no screen until its first greedy step
    assert copy.deepcopy(model)._screened_argmax is None
    # weights changed by training: the stale screen is replaced by one of the new weights on the
    # next greedy step, and the tokens are the full fp32 product's
    old = model._screened_argmax
    model.train()
    model(ids, labels=ids).loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    model.eval()
    assert not old.current(model.shared.weight)
    full = copy.deepcopy(model)
    full.screen_greedy_argmax = False
    calls = count_screens(monkeypatch)
    assert torch.equal(generate(model, ids, max_new_tokens=6), generate(full, ids, max_new_tokens=6))
    assert calls and model._screened_argmax is not old and model._screened_argmax.current(model.shared.weight)
    assert getattr(full, "_screened_argmax", None) is None
    # bf16 / int8 output layers take their own kernel's argmax, and no screen is built later either;
    # kept in fp32, the screen returns
    for weights in ("int8", "bf16"):
        model.optimize_for_inference(weights)
        assert model._screened_argmax is None and not model.screen_greedy_argmax
        calls.clear()
        generate(model, ids, max_new_tokens=3)
        assert model._screened_argmax is None and not calls
    assert model.optimize_for_inference("int8", keep=("lm_head",))._screened_argmax is not None
    assert model.optimize_for_inference("fp32")._screened_argmax is not None


def test_a_default_model_screens_from_its_first_greedy_step(monkeypatch):
    """Without optimize_for_inference: the screen is built on the first greedy step on CPU (fp32 output
    layer) and gives the full product's tokens; sampling and beam search never build it, and
    ``screen_greedy_argmax = False`` keeps the full product."""
    model = spread_tiny_t5("v1.1", 6, 96)  # untied output layer (lm_head)
    ids = torch.randint(2, 96, (4, 8), generator=torch.Generator().manual_seed(6))
    generate(model, ids, max_new_tokens=4, do_sample=True)
    generate(model, ids, max_new_tokens=4, num_beams=2)
    assert getattr(model, "_screened_argmax", None) is None
    full = copy.deepcopy(model)
    full.screen_greedy_argmax = False
    calls = count_screens(monkeypatch)
    ref = generate(full, ids, max_new_tokens=12, min_new_tokens=12)
    assert not calls and getattr(full, "_screened_argmax", None) is None
    assert torch.equal(generate(model, ids, max_new_tokens=12, min_new_tokens=12), ref)
    assert len(calls) == 12 and model._screened_argmax.current(model.lm_head.weight)


def test_an_adapter_on_the_output_layer_is_not_screened_past():
    """LoRA on v1.1's lm_head: the adapter changes the scores, so greedy steps take the module."""
    from t5electra import LoraConfig, get_peft_model

    model = spread_tiny_t5("v1.1", 5, 96)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["lm_head"], init_lora_weights=False))
    inner = lora.base_model
    ids = torch.randint(2, 96, (4, 8), generator=torch.Generator().manual_seed(5))
    ref = generate(inner, ids, max_new_tokens=10)
    inner.optimize_for_inference("fp32")
    assert getattr(inner, "_screened_argmax", None) is None
    assert torch.equal(generate(inner, ids, max_new_tokens=10), ref)
    # an adapter added after optimising: the screen (still there) is not used
    plain = spread_tiny_t5("v1.1", 5, 96).optimize_for_inference("fp32")
    adapted = get_peft_model(plain, LoraConfig(r=2, target_modules=["lm_head"], init_lora_weights=False)).base_model
    assert adapted._screened_argmax is not None
    expected = generate(copy.deepcopy(adapted), ids, max_new_tokens=10)  # a copy has no screen
    base = generate(spread_tiny_t5("v1.1", 5, 96), ids, max_new_tokens=10)
    assert not torch.equal(expected, base) and not torch.equal(ref, base)  # the adapters change the tokens
    assert torch.equal(generate(adapted, ids, max_new_tokens=10), expected)


def test_only_plain_fp32_cpu_weights_are_screened():
    """A tensor subclass (FSDP's DTensor shards are one) or another dtype takes the full product."""

    class Shard(torch.Tensor):
        pass

    w = torch.randn(40, 8)
    assert ScreenedArgmax.available(w) and ScreenedArgmax.available(torch.nn.Parameter(w))
    assert not ScreenedArgmax.available(torch.Tensor._make_subclass(Shard, w))
    assert not ScreenedArgmax.available(w.bfloat16()) and not ScreenedArgmax.available(w.double())


@pytest.mark.parametrize("optimized", [False, True])
def test_greedy_under_bf16_autocast_gives_the_unscreened_tokens(optimized, monkeypatch):
    """Under ``torch.autocast("cpu", dtype=torch.bfloat16)`` the plain greedy step multiplies in
    bf16, outside the fp32 bound: the screen stands aside (it raised there: "Float did not match
    BFloat16", in its first int8 probe and in its fp32 products), and the tokens are those of the
    same model without it. The probe answers as outside autocast."""
    import t5electra.inference.int8 as I8

    model = spread_tiny_t5("v1.1", 3, 96)
    if optimized:
        model.optimize_for_inference("fp32")
    ids = torch.randint(2, 96, (5, 9), generator=torch.Generator().manual_seed(3))
    full_range = I8.fbgemm_int8_full_range()
    I8.fbgemm_int8_full_range.cache_clear()
    calls = count_screens(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert I8.fbgemm_int8_full_range() == full_range
        got = [model.generate(ids, max_new_tokens=10) for _ in range(2)]
        model.screen_greedy_argmax, model._screened_argmax = False, None  # the same model, unscreened
        want = model.generate(ids, max_new_tokens=10)
    assert not calls and torch.equal(got[0], want) and torch.equal(got[1], want)
    model.screen_greedy_argmax = True
    assert torch.equal(model.generate(ids, max_new_tokens=10), generate(model, ids, max_new_tokens=10))
    assert calls  # outside autocast the screen runs again
