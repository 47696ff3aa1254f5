"""generate(): token-identical to transformers' generate (greedy, beam search), cached == uncached,
sampling reproducible and faithful to top-k / top-p / temperature, clear errors.

Parity: our T5ForConditionalGeneration is saved with ``save_pretrained`` and loaded by transformers,
and both generate with the same settings. ``HFProtocol`` below also drives transformers' own model
through the protocol of t5electra/generation/seq2seq.py: the logits are then bit-identical on both sides, so
those tests pin down the search itself (and beam sampling draw for draw).
"""

from __future__ import annotations

import warnings

import pytest
import torch
from scipy.stats import chisquare
from transformers.cache_utils import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from t5electra.errors import InvalidInputError
from t5electra.generation.seq2seq import generate
from tiny_t5 import VOCAB


# --------------------------------------------------------------------------------------------
# Models: ours and transformers' with the same weights; transformers' model behind our protocol
# --------------------------------------------------------------------------------------------

class HFCache:
    """Decoder state of ``HFProtocol``: transformers' EncoderDecoderCache plus the encoder output."""

    def __init__(self, enc, mask):
        self.enc, self.mask, self.length = enc, mask, 0
        self.kv = EncoderDecoderCache(DynamicCache(), DynamicCache())

    def reorder(self, index):
        self.kv.reorder_cache(index)
        self.enc = self.enc.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)


class HFProtocol:
    """encode / new_decoder_cache / decode_step on transformers' T5ForConditionalGeneration."""

    def __init__(self, hf):
        self.hf, self.config = hf, hf.config

    def encode(self, input_ids, attention_mask=None):
        return self.hf.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def new_decoder_cache(self, enc, mask, max_length):
        return HFCache(enc, mask)

    def decode_step(self, ids, cache):
        logits = self.hf(encoder_outputs=BaseModelOutput(last_hidden_state=cache.enc), attention_mask=cache.mask,
                         decoder_input_ids=ids, cache=cache.kv, use_cache=True).logits
        cache.length += ids.shape[1]
        return logits


def padded_batch(seed: int, lengths=(10, 6, 3, 8)):
    """Right-padded (B, S) ids and mask, rows of different lengths."""
    g = torch.Generator().manual_seed(1000 + seed)
    ids = torch.randint(2, VOCAB, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


_FREQUENT = {}


def frequent_token(model, ids, mask) -> int:
    """A token greedy decoding emits in some rows but not at once: a natural EOS for the tests."""
    key = (id(getattr(model, "hf", model)), ids.data_ptr())  # an HFProtocol counts as its model
    if key not in _FREQUENT:
        out = generate(model, ids, mask, max_new_tokens=12)
        counts = torch.bincount(out[:, 3:].flatten(), minlength=VOCAB)
        counts[:2] = 0
        _FREQUENT[key] = int(counts.argmax())
    return _FREQUENT[key]


def hf_generate(hf, ids, mask, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "use max_new_tokens" and similar advice
        return hf.generate(ids, attention_mask=mask, **kw)


def assert_same(model, hf, ids, mask, **kw):
    """generate(model) == transformers' generate, token for token."""
    ours = generate(model, ids, mask, **kw)
    theirs = hf_generate(hf, ids, mask, **kw)
    assert ours.dtype == torch.long
    assert ours.shape == theirs.shape and torch.equal(ours, theirs), f"{kw}\nours\n{ours}\ntransformers\n{theirs}"
    return ours


# --------------------------------------------------------------------------------------------
# Greedy and beam search: token-identical to transformers
# --------------------------------------------------------------------------------------------

GREEDY_CASES = [
    {},                                                   # max_length default: 20 new tokens
    {"max_new_tokens": 7},
    {"max_length": 9},
    {"max_length": 30, "max_new_tokens": 5},              # max_new_tokens wins
    {"eos": True, "max_new_tokens": 15},
    {"eos": True, "min_new_tokens": 6, "max_new_tokens": 15},
    {"eos": True, "repetition_penalty": 1.5, "max_new_tokens": 12},
    {"eos": True, "no_repeat_ngram_size": 2, "max_new_tokens": 16},
    {"repetition_penalty": 0.7, "no_repeat_ngram_size": 3, "max_new_tokens": 16},
]


def _resolve(case, model, ids, mask):
    kw = dict(case)
    if kw.pop("eos", False):
        kw["eos_token_id"] = frequent_token(model, ids, mask)
    return kw


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("case", GREEDY_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_greedy_matches_transformers(models, version, case):
    for seed in range(3):
        ours, hf = models[version, seed]
        ids, mask = padded_batch(seed)
        out = assert_same(ours, hf, ids, mask, **_resolve(case, ours, ids, mask))
        assert (out[:, 0] == 0).all()


BEAM_CASES = [
    {"num_beams": 3},
    {"num_beams": 4, "num_return_sequences": 4, "max_new_tokens": 10},
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.5, "eos": True, "max_new_tokens": 14},
    {"num_beams": 4, "length_penalty": 2.0, "early_stopping": True, "eos": True, "max_new_tokens": 14},
    {"num_beams": 3, "length_penalty": -1.0, "eos": True, "max_new_tokens": 14},
    {"num_beams": 4, "num_return_sequences": 3, "early_stopping": "never", "eos": True, "max_new_tokens": 14},
    {"num_beams": 4, "length_penalty": 0.0, "early_stopping": "never", "eos": True, "max_new_tokens": 12},
    {"num_beams": 2, "early_stopping": True, "eos": True, "min_new_tokens": 5, "max_length": 14},
    {"num_beams": 3, "eos": True, "repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "max_new_tokens": 14},
    {"num_beams": 5, "num_return_sequences": 2, "eos_token_id": 1, "max_new_tokens": 6},
]


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("case", BEAM_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_beam_search_matches_transformers(models, version, case):
    for seed in range(3):
        ours, hf = models[version, seed]
        ids, mask = padded_batch(seed)
        assert_same(ours, hf, ids, mask, **_resolve(case, ours, ids, mask))


def test_beam_search_eos_and_padding_like_transformers(models):
    """Hypotheses end at different lengths; the output is padded as transformers pads it
    (with `pad_token_id or eos_token_id`, i.e. EOS for T5) and rows of one input are consecutive."""
    ended_early = 0
    for seed in range(3):
        ours, hf = models["v1.1", seed]
        ids, mask = padded_batch(seed)
        eos = frequent_token(ours, ids, mask)
        out = assert_same(ours, hf, ids, mask, num_beams=4, num_return_sequences=2, eos_token_id=eos,
                          max_new_tokens=16)
        assert out.shape[0] == ids.shape[0] * 2
        ended_early += int(((out == eos).any(dim=1) & (out[:, -1] == eos)).sum())
    assert ended_early > 0  # the cases above do exercise padding of finished hypotheses


class CountingShrinks:
    """Our model, counting the cache reorders that drop rows (finished rows / inputs leaving)."""

    def __init__(self, model):
        self.model, self.config, self.shrinks = model, model.config, 0

    def encode(self, input_ids, attention_mask=None):
        return self.model.encode(input_ids, attention_mask)

    def decode_step(self, ids, cache):
        return self.model.decode_step(ids, cache)

    def new_decoder_cache(self, enc, mask, max_length):
        cache = self.model.new_decoder_cache(enc, mask, max_length)
        reorder = cache.reorder

        def counting_reorder(index):
            self.shrinks += int(index.numel() < cache.batch_size)
            reorder(index)
        cache.reorder = counting_reorder
        return cache


@pytest.mark.parametrize("num_beams", [1, 3])
def test_dropping_finished_rows_keeps_the_output(models, num_beams):
    """Rows (greedy) or inputs (beam search) that are done leave the cache; the output is unchanged."""
    shrinks = 0
    for seed in range(3):
        ours, hf = models["v1.0", seed]
        ids, mask = padded_batch(seed)
        counting = CountingShrinks(ours)
        assert_same(counting, hf, ids, mask, num_beams=num_beams, eos_token_id=frequent_token(ours, ids, mask),
                    max_new_tokens=16)
        shrinks += counting.shrinks
    assert shrinks > 0


def test_model_generate_method(models):
    """``model.generate`` is this function, with transformers' calling convention."""
    ours, hf = models["v1.0", 0]
    ids, mask = padded_batch(0)
    out = ours.generate(input_ids=ids, attention_mask=mask, num_beams=2, max_new_tokens=5)
    assert torch.equal(out, hf_generate(hf, ids, mask, num_beams=2, max_new_tokens=5))


def test_min_new_tokens_suppresses_eos(models):
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)
    eos = frequent_token(ours, ids, mask)
    free = generate(ours, ids, mask, eos_token_id=eos, max_new_tokens=15)
    first_eos = [(row == eos).nonzero()[0, 0].item() for row in free if (row == eos).any()]
    assert first_eos and min(first_eos) < 6
    for num_beams in (1, 3):
        out = generate(ours, ids, mask, eos_token_id=eos, min_new_tokens=6, max_new_tokens=15, num_beams=num_beams)
        assert not (out[:, 1:7] == eos).any()


class FullDecoder:
    """The protocol without a KV cache: every step re-runs the whole decoder (``model(...)``) on the
    tokens so far, with the encoder output from ``encode``."""

    def __init__(self, model):
        self.model, self.config = model, model.config

    def encode(self, input_ids, attention_mask=None):
        return self.model.encode(input_ids, attention_mask)

    def new_decoder_cache(self, enc, mask, max_length):
        cache = type("Cache", (), {})()
        cache.enc, cache.mask, cache.history, cache.length = enc, mask, None, 0

        def reorder(index):
            cache.enc, cache.history = cache.enc[index], cache.history[index] if cache.history is not None else None
            cache.mask = cache.mask[index] if cache.mask is not None else None
        cache.reorder = reorder
        return cache

    def decode_step(self, ids, cache):
        cache.history = ids if cache.history is None else torch.cat([cache.history, ids], dim=1)
        cache.length += ids.shape[1]
        out = self.model(attention_mask=cache.mask, decoder_input_ids=cache.history, encoder_outputs=cache.enc)
        return out.logits[:, -ids.shape[1]:]


def test_cached_decoding_equals_uncached(models):
    for version in ("v1.0", "v1.1"):
        ours, _ = models[version, 2]
        ids, mask = padded_batch(2)
        eos = frequent_token(ours, ids, mask)
        for kw in ({"max_new_tokens": 12, "eos_token_id": eos},
                   {"num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 12, "eos_token_id": eos},
                   {"do_sample": True, "num_return_sequences": 3, "max_new_tokens": 12, "eos_token_id": eos}):
            cached = generate(ours, ids, mask, generator=torch.Generator().manual_seed(0), **kw)
            uncached = generate(FullDecoder(ours), ids, mask, generator=torch.Generator().manual_seed(0), **kw)
            assert torch.equal(cached, uncached), kw


def test_length_defaults_and_precedence(models, caplog):
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)
    assert generate(ours, ids, mask).shape[1] == 21          # start token + 20, as transformers 5
    assert generate(ours, ids, mask, max_length=5).shape[1] == 5
    with caplog.at_level("WARNING", logger="t5electra"):
        out = generate(ours, ids, mask, max_length=5, max_new_tokens=8)
    assert out.shape[1] == 9 and "max_new_tokens wins" in caplog.text


# --------------------------------------------------------------------------------------------
# transformers' own model through the protocol: bit-identical logits, so the search alone is compared
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", [BEAM_CASES[2], BEAM_CASES[5], BEAM_CASES[7], GREEDY_CASES[5]],
                         ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_search_on_transformers_model_matches_transformers(models, case):
    _, hf = models["v1.1", 1]
    ids, mask = padded_batch(1)
    assert_same(HFProtocol(hf), hf, ids, mask, **_resolve(case, HFProtocol(hf), ids, mask))


def test_beam_sampling_matches_transformers_with_the_same_seed(models):
    """Beam sampling draws with torch.multinomial like transformers: same global seed, same output."""
    _, hf = models["v1.0", 1]
    ids, mask = padded_batch(1)
    kw = dict(num_beams=3, do_sample=True, top_k=20, top_p=0.9, temperature=0.8, max_new_tokens=10,
              eos_token_id=frequent_token(HFProtocol(hf), ids, mask))
    torch.manual_seed(7)
    ours = generate(HFProtocol(hf), ids, mask, **kw)
    torch.manual_seed(7)
    theirs = hf_generate(hf, ids, mask, **kw)
    assert torch.equal(ours, theirs)


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------

def test_sampling_is_reproducible_with_a_generator(models):
    ours, _ = models["v1.1", 0]
    ids, mask = padded_batch(0)
    kw = dict(do_sample=True, top_k=0, max_new_tokens=12, num_return_sequences=3)
    a = generate(ours, ids, mask, generator=torch.Generator().manual_seed(5), **kw)
    b = generate(ours, ids, mask, generator=torch.Generator().manual_seed(5), **kw)
    c = generate(ours, ids, mask, generator=torch.Generator().manual_seed(6), **kw)
    assert a.shape == (ids.shape[0] * 3, 13)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0::3], a[1::3])  # the samples of one input differ


class FixedLogits:
    """A protocol model whose next-token logits are always ``logits`` (V,), whatever the input."""

    def __init__(self, logits):
        self.logits = logits
        self.config = type("Config", (), dict(vocab_size=logits.numel(), eos_token_id=None, pad_token_id=0,
                                              decoder_start_token_id=0))()

    def encode(self, input_ids, attention_mask=None):
        return torch.zeros(input_ids.shape[0], input_ids.shape[1], 1)

    def new_decoder_cache(self, enc, mask, max_length):
        cache = type("Cache", (), {"length": 0, "rows": enc.shape[0], "reorder": lambda self, i: None})()
        return cache

    def decode_step(self, ids, cache):
        return self.logits.expand(ids.shape[0], ids.shape[1], -1)


def test_beam_search_with_fewer_tokens_than_candidates():
    """num_beams=4 keeps 8 candidates per step, picked per beam first: with a 3-token vocabulary a
    beam offers only 3, and the search still returns the best sequences (all 9 scored by hand)."""
    logits = torch.tensor([1.0, 0.2, -1.0])
    out = generate(FixedLogits(logits), torch.ones(1, 1, dtype=torch.long), num_beams=4, num_return_sequences=4,
                   max_new_tokens=2)
    lp = logits.log_softmax(-1).tolist()
    best = sorted(((a, b) for a in range(3) for b in range(3)), key=lambda s: -(lp[s[0]] + lp[s[1]]))[:4]
    assert {tuple(r) for r in out[:, 1:].tolist()} == set(best) == {(0, 0), (0, 1), (1, 0), (1, 1)}


def _sample_counts(logits, n=4000, **kw):
    model = FixedLogits(logits)
    out = generate(model, torch.ones(1, 1, dtype=torch.long), do_sample=True, max_new_tokens=1,
                   num_return_sequences=n, generator=torch.Generator().manual_seed(0), **kw)
    return torch.bincount(out[:, 1], minlength=logits.numel())


LOGITS = torch.tensor([2.0, 1.5, 1.2, 1.0, 0.7, 0.3, 0.0, -0.5, -1.0, -2.0])


@pytest.mark.parametrize("kw", [{"top_k": 4}, {"top_p": 0.7}, {"top_k": 0, "top_p": 0.7}, {"top_k": 0, "temperature": 0.6},
                                {"top_k": 6, "top_p": 0.8, "temperature": 1.7}], ids=str)
def test_sampling_follows_the_renormalised_distribution(kw):
    """Samples fall only in the top-k / nucleus set, with the renormalised probabilities (chi-square)."""
    t = kw.get("temperature", 1.0)
    probs = (LOGITS / t).softmax(-1)
    keep = torch.ones_like(probs, dtype=torch.bool)
    if kw.get("top_k"):
        keep &= torch.arange(probs.numel()) < kw["top_k"]           # LOGITS is sorted descending
    if "top_p" in kw:
        kept_probs = torch.where(keep, probs, 0) / torch.where(keep, probs, 0).sum()
        mass_before = torch.cumsum(kept_probs, 0) - kept_probs
        keep &= mass_before < kw["top_p"]                            # the smallest set reaching top_p
    expected = torch.where(keep, probs, 0)
    expected = expected / expected.sum()
    counts = _sample_counts(LOGITS, **kw)
    assert counts[~keep].sum() == 0
    f_exp = expected[keep].double()
    f_exp = f_exp / f_exp.sum() * int(counts.sum())
    stat = chisquare(counts[keep].double().numpy(), f_exp.numpy())
    assert stat.pvalue > 1e-3, (counts, f_exp)


def test_sampled_tokens_are_in_the_top_k_of_the_model(models):
    """On a real model over many steps: every sampled token is among the top_k of that step's logits."""
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)

    class Spy(FullDecoder):
        last = None

        def decode_step(self, tokens, cache):
            if self.last is not None:
                top = self.last.topk(5, dim=-1).indices
                assert (top == tokens).any(dim=-1).all()
            self.last = self.model.decode_step(tokens, cache)[:, -1]
            return self.last[:, None]

        def new_decoder_cache(self, enc, mask, max_length):
            return self.model.new_decoder_cache(enc, mask, max_length)

    out = generate(Spy(ours), ids, mask, do_sample=True, top_k=5, max_new_tokens=15, eos_token_id=[],
                   num_return_sequences=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (ids.shape[0] * 4, 16)


def test_topk_topp_temperature_match_transformers_warpers():
    from transformers.generation.logits_process import (TemperatureLogitsWarper, TopKLogitsWarper,
                                                        TopPLogitsWarper)

    from t5electra.generation.sampling import warp_scores

    scores = torch.randn(6, 50, generator=torch.Generator().manual_seed(0))
    for t, k, p, keep in ((0.7, 10, 0.9, 1), (1.3, 3, 0.5, 2), (1.0, 0, 0.3, 1)):
        theirs = TemperatureLogitsWarper(t)(None, scores)
        if k:
            theirs = TopKLogitsWarper(k, min_tokens_to_keep=keep)(None, theirs)
        theirs = TopPLogitsWarper(p, min_tokens_to_keep=keep)(None, theirs)
        assert torch.equal(warp_scores(scores, t, k, p, keep), theirs)


# --------------------------------------------------------------------------------------------
# Bad input -> InvalidInputError that says what and where
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences=3 is larger than num_beams=2"),
    ({"num_return_sequences": 2}, "greedy search returns one sequence"),
    ({"max_length": 1}, "max_length=1 leaves no room"),
    ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer"),
    ({"do_sample": True, "top_p": 0.0}, r"top_p must be in \(0, 1\]"),
    ({"do_sample": True, "top_p": 1.5}, r"top_p must be in \(0, 1\]"),
    ({"do_sample": True, "temperature": 0.0}, "temperature must be a finite number > 0"),
    ({"do_sample": True, "temperature": float("inf")}, "temperature must be a finite number > 0, got inf"),
    ({"do_sample": True, "temperature": float("nan")}, "temperature must be a finite number > 0, got nan"),
    ({"num_beams": 2, "length_penalty": float("nan")}, "length_penalty must be a finite number .*got nan"),
    ({"num_beams": 2, "length_penalty": 1000.0}, r"length_penalty must be a finite number in \[-10, 10\]"),
    ({"do_sample": True, "temperature": 1e-300}, "below 0.0001, where sampling is greedy search in effect"),
    ({"min_new_tokens": 8, "max_new_tokens": 5}, "min_new_tokens=8 is more than the 5 new tokens allowed"),
    ({"do_sample": "yes"}, "do_sample must be True or False, got 'yes'"),
    ({"do_sample": True, "top_p": float("nan")}, r"top_p must be in \(0, 1\]"),
    ({"do_sample": True, "top_k": -1}, "top_k must be an integer >= 0"),
    ({"num_beams": 0}, "num_beams must be an integer >= 1"),
    ({"min_new_tokens": -2}, "min_new_tokens must be an integer >= 0"),
    ({"repetition_penalty": 0.0}, "repetition_penalty must be a finite number > 0"),
    ({"repetition_penalty": float("inf")}, "repetition_penalty must be a finite number > 0"),
    ({"no_repeat_ngram_size": -1}, "no_repeat_ngram_size must be an integer >= 0"),
    ({"early_stopping": "sometimes"}, "early_stopping must be True, False or 'never'"),
    ({"eos_token_id": VOCAB + 3}, f"eos_token_id={VOCAB + 3} is outside the vocabulary"),
], ids=lambda x: str(x)[:40])
def test_invalid_options_raise_clear_errors(models, kw, match):
    ids, mask = padded_batch(0)
    with pytest.raises(InvalidInputError, match=match):
        generate(models["v1.0", 0][0], ids, mask, **kw)


def test_extreme_but_valid_sampling_values_still_sample(models):
    """The smallest temperature allowed and a top_p that rounds to 0 in float32 keep the best token
    (a softmax of inf - inf, and an empty nucleus, were 500s in the server)."""
    model = models["v1.0", 0][0]
    ids, mask = padded_batch(0)
    greedy = generate(model, ids, mask, max_new_tokens=6)
    for kw in (dict(temperature=1e-4), dict(top_p=1e-300, top_k=0), dict(top_p=1e-300), dict(temperature=1e-4, num_beams=2)):
        out = generate(model, ids, mask, max_new_tokens=6, do_sample=True,
                       generator=torch.Generator().manual_seed(0), **kw)
        assert out.shape[1] > 1 and (kw.get("num_beams") or torch.equal(out, greedy)), kw


def test_numpy_and_tensor_scalars_are_taken_as_numbers_and_temperature_only_matters_when_sampling(models):
    """Options computed with numpy or torch (np.int64 lengths, a tensor eos id) mean what the same
    Python numbers mean; temperature (0.0 included) is ignored without do_sample, as in transformers."""
    import numpy as np

    model = models["v1.0", 0][0]
    ids, mask = padded_batch(0)
    want = generate(model, ids, mask, max_new_tokens=6, num_beams=2, eos_token_id=1)
    got = generate(model, ids, mask, max_new_tokens=np.int64(6), num_beams=torch.tensor(2),
                   eos_token_id=torch.tensor(1), length_penalty=np.float32(1.0))
    assert torch.equal(got, want)
    assert torch.equal(generate(model, ids, mask, max_new_tokens=6, eos_token_id=torch.tensor([1])),
                       generate(model, ids, mask, max_new_tokens=6, eos_token_id=[1]))
    assert torch.equal(generate(model, ids, mask, max_new_tokens=6, temperature=0.0),
                       generate(model, ids, mask, max_new_tokens=6))


def test_invalid_inputs_raise_clear_errors(models):
    model = models["v1.0", 0][0]
    ids, mask = padded_batch(0)
    bad = ids.clone()
    bad[2, 1] = VOCAB + 5
    with pytest.raises(InvalidInputError, match=rf"input_ids\[2, 1\] = {VOCAB + 5} is outside the vocabulary"):
        generate(model, bad, mask)
    with pytest.raises(InvalidInputError, match=r"input_ids\[0, 0\] = -1"):
        generate(model, torch.full((1, 3), -1), None)
    with pytest.raises(InvalidInputError, match="integer tensor of shape"):
        generate(model, ids[0], None)
    with pytest.raises(InvalidInputError, match="integer tensor of shape"):
        generate(model, ids.float(), None)
    with pytest.raises(InvalidInputError, match="attention_mask has shape"):
        generate(model, ids, mask[:, :2])
    with pytest.raises(InvalidInputError, match="empty"):
        generate(model, ids[:, :0], None)
    # InvalidInputError is a ValueError, as transformers raises for the same mistakes
    with pytest.raises(ValueError):
        generate(model, ids, mask, max_length=1)


# --------------------------------------------------------------------------------------------
# return_dict_in_generate: scores, logits, sequences_scores and beam_indices as transformers'
# --------------------------------------------------------------------------------------------

DICT_CASES = [
    {"max_new_tokens": 9},
    {"eos": True, "min_new_tokens": 3, "repetition_penalty": 1.4, "max_new_tokens": 12},
    {"num_beams": 3, "eos": True, "max_new_tokens": 12},
    {"num_beams": 4, "num_return_sequences": 2, "length_penalty": 0.5, "eos": True, "max_new_tokens": 12},
    {"num_beams": 3, "early_stopping": True, "no_repeat_ngram_size": 2, "eos": True, "max_new_tokens": 10},
]


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("case", DICT_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_return_dict_in_generate_matches_transformers(models, version, case):
    ours_m, hf = models[version, 2]
    ids, mask = padded_batch(2)
    kw = dict(_resolve(case, ours_m, ids, mask), return_dict_in_generate=True, output_scores=True,
              output_logits=True)
    ours = ours_m.generate(ids, mask, **kw)  # the model method: the fast paths a user gets
    theirs = hf_generate(hf, ids, mask, **kw)
    assert type(ours).__name__ == type(theirs).__name__  # GenerateBeamEncoderDecoderOutput / GenerateEncoder...
    assert torch.equal(ours.sequences, theirs.sequences)
    assert len(ours.scores) == len(theirs.scores) == len(ours.logits) == len(theirs.logits)
    for a, b in zip(ours.scores + ours.logits, theirs.scores + theirs.logits):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)  # -inf where transformers has -inf
    if kw.get("num_beams", 1) > 1:
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-4)
        assert torch.equal(ours.beam_indices, theirs.beam_indices)
        # transformers' compute_transition_scores reads our output as its own
        torch.testing.assert_close(
            hf.compute_transition_scores(ours.sequences, ours.scores, ours.beam_indices, normalize_logits=False),
            hf.compute_transition_scores(theirs.sequences, theirs.scores, theirs.beam_indices,
                                         normalize_logits=False), atol=1e-4, rtol=1e-4)
    # the dict changes nothing about the tokens; without it, the tensor
    plain = ours_m.generate(ids, mask, **_resolve(case, ours_m, ids, mask))
    assert torch.equal(plain, ours.sequences)


def test_return_dict_options_and_transformers_argument_names(models, caplog):
    ours, hf = models["v1.1", 0]
    ids, mask = padded_batch(0)
    out = ours.generate(inputs=ids, attention_mask=mask, use_cache=False, max_new_tokens=5,
                        return_dict_in_generate=True)
    assert out.scores is None and out.logits is None and out[0] is out.sequences  # tuple-style access too
    assert torch.equal(out.sequences, ours.generate(ids, mask, max_new_tokens=5))
    sampled = ours.generate(ids, mask, do_sample=True, top_k=5, temperature=0.7, max_new_tokens=4,
                            return_dict_in_generate=True, output_scores=True,
                            generator=torch.Generator().manual_seed(0))
    assert all(int(torch.isfinite(s).sum(-1).max()) <= 5 for s in sampled.scores)  # after the top-k warper
    with caplog.at_level("WARNING"):
        assert isinstance(ours.generate(ids, mask, max_new_tokens=2, output_scores=True), torch.Tensor)
    assert "return_dict_in_generate" in caplog.text
    with pytest.raises(InvalidInputError, match="not both"):
        ours.generate(ids, inputs=ids)
    with pytest.raises(InvalidInputError, match="output_scores must be True or False"):
        ours.generate(ids, output_scores="yes")
    with pytest.raises(InvalidInputError, match="input_ids is missing"):
        ours.generate(attention_mask=mask)
