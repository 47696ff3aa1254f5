"""generate() used as transformers' users use it: outputs they edit and train on, generation
configs given the ways transformers takes them, length precedence, per-row start tokens,
compute_transition_scores, conflicting token constraints refused."""

from __future__ import annotations

import pytest
import torch

from t5electra.errors import InvalidInputError
from test_generate import frequent_token, hf_generate, padded_batch
from tiny_t5 import VOCAB


@pytest.mark.parametrize("kw", [{}, {"num_beams": 3, "num_return_sequences": 2},
                                {"do_sample": True, "generator": torch.Generator().manual_seed(0)}],
                         ids=["greedy", "beam", "sampling"])
def test_outputs_are_ordinary_tensors_to_edit_and_train_on(models, kw):
    """generate ran under inference_mode and returned inference tensors: `out[out == 0] = -100` raised
    'Inplace update to inference tensor outside InferenceMode', and training with the output as labels
    'Inference tensors cannot be saved for backward'."""
    ours, _ = models["v1.1", 0]
    ids, mask = padded_batch(0)
    out = ours.generate(ids, mask, max_new_tokens=5, **kw)
    rec = ours.generate(ids, mask, max_new_tokens=5, return_dict_in_generate=True, output_scores=True,
                        output_logits=True, **kw)
    tensors = [out, rec.sequences, *rec.scores, *rec.logits]
    if "num_beams" in kw:
        tensors += [rec.sequences_scores, rec.beam_indices]
    assert not any(t.is_inference() for t in tensors)
    labels = out[:, 1:].clone()
    out[out == 0] = -100                                     # in place, outside inference mode
    assert (out == -100).any()
    model = ours  # trained below, its weights restored after
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        dec_in = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
        loss = model(ids.repeat_interleave(labels.shape[0] // ids.shape[0], 0),
                     mask.repeat_interleave(labels.shape[0] // ids.shape[0], 0),
                     decoder_input_ids=dec_in, labels=labels).loss
        loss.backward()
        assert model.shared.weight.grad is not None
        rec.scores[0].mul_(2)  # recorded scores too
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        model.load_state_dict(state)


@pytest.mark.parametrize("kw", [{"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"top_k": 1.5},
                                {"top_p": 0.0, "num_beams": 2}])
def test_top_k_and_top_p_are_ignored_without_sampling_as_in_transformers(models, kw):
    """top_p=0.0 with greedy search raised 'top_p must be in (0, 1]'; transformers ignores both
    without do_sample (as temperature already was here)."""
    ours, hf = models["v1.0", 0]
    ids, mask = padded_batch(0)
    search = {k: v for k, v in kw.items() if k == "num_beams"}
    want = ours.generate(ids, mask, max_new_tokens=4, **search)
    assert torch.equal(ours.generate(ids, mask, max_new_tokens=4, **kw), want)
    assert torch.equal(hf_generate(hf, ids, mask, max_new_tokens=4, **kw), want)
    with pytest.raises(InvalidInputError, match=r"top_p must be in \(0, 1\]|top_k must be an integer >= 0"):
        ours.generate(ids, mask, max_new_tokens=4, do_sample=True, **kw)


SEARCH_KINDS = {"greedy": {}, "beam": {"num_beams": 2}, "sampling": {"do_sample": True},
                "sampling_top_k_0": {"do_sample": True, "top_k": 0}, "beam_sampling": {"do_sample": True, "num_beams": 2}}


@pytest.mark.parametrize("search", SEARCH_KINDS)
@pytest.mark.parametrize("kw, match", [
    (dict(forced_bos_token_id=52, suppress_tokens=[52]), r"every token of forced_bos_token_id \(52\) is also in "
                                                         r"suppress_tokens"),
    (dict(forced_eos_token_id=[9, 11], suppress_tokens=[11, 9, 3]), r"every token of forced_eos_token_id \(9, 11\)"),
    (dict(suppress_tokens=list(range(VOCAB))), f"ban all {VOCAB} tokens of the vocabulary at every step"),
    (dict(suppress_tokens=list(range(2, VOCAB)), bad_words_ids=[[0], [1]], eos_token_id=[]),
     "suppress_tokens and one-token bad_words_ids ban all"),
    (dict(suppress_tokens=list(range(5, VOCAB)), begin_suppress_tokens=[0, 1, 2, 3, 4]),
     r"at the first new token \(output length 1\)"),
    (dict(suppress_tokens=list(range(2, VOCAB)), bad_words_ids=[[0]], eos_token_id=1, min_new_tokens=2),
     "ban all .* at output lengths below min_length=3"),
    (dict(forced_eos_token_id=9, begin_suppress_tokens=[9], max_new_tokens=1),
     r"forced_eos_token_id \(9\) is forced at the step where begin_suppress_tokens suppresses it"),
], ids=["forced_bos_suppressed", "forced_eos_suppressed", "all_suppressed", "suppress_and_bad_words",
        "begin_suppress", "min_length_eos", "forced_eos_begin_suppressed"])
def test_constraints_that_ban_every_token_are_refused(models, search, kw, match):
    """A forced token also suppressed: transformers raises a ValueError; greedy search emitted pad,
    beam search returned the start token alone, sampling raised torch's 'probability tensor contains
    either inf, nan'. The same for constraints that together ban the whole vocabulary."""
    ours, hf = models["v1.0", 0]
    ids, mask = padded_batch(0)
    kw = {"max_new_tokens": 3, **kw, **SEARCH_KINDS[search]}
    with pytest.raises(InvalidInputError, match=match):
        ours.generate(ids, mask, **kw)
    if "forced_bos_token_id" in kw or ("forced_eos_token_id" in kw and "suppress_tokens" in kw):
        with pytest.raises(ValueError, match="is also in `suppress_tokens`"):
            hf_generate(hf, ids, mask, **kw)


@pytest.mark.parametrize("search", SEARCH_KINDS)
def test_a_forced_token_among_bad_words_is_still_forced_as_in_transformers(models, search):
    ours, hf = models["v1.0", 0]
    ids, mask = padded_batch(0)
    kw = dict(max_new_tokens=3, forced_bos_token_id=52, bad_words_ids=[[52]], **SEARCH_KINDS[search])
    out = ours.generate(ids, mask, generator=torch.Generator().manual_seed(0), **kw)
    assert (out[:, 1] == 52).all() and (out[:, 2:] != 52).all()
    if not kw.get("do_sample"):
        assert torch.equal(out, hf_generate(hf, ids, mask, **kw))


@pytest.mark.parametrize("num_beams", [1, 2])
def test_sampling_with_every_token_banned_on_the_way_is_a_clear_error(models, num_beams):
    """no_repeat_ngram_size=1 on a 128-token vocabulary bans every token by the 129th: torch's
    'probability tensor contains either inf, nan' became an error naming the constraints."""
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)
    with pytest.raises(InvalidInputError, match="ban every token of row .*nothing is left to sample"):
        ours.generate(ids[:1], mask[:1], do_sample=True, top_k=0, no_repeat_ngram_size=1, eos_token_id=[],
                      max_new_tokens=VOCAB + 2, num_beams=num_beams, generator=torch.Generator().manual_seed(0))


LENGTH_CASES = [
    ({"max_new_tokens": 5}, {"max_length": 9}),              # the config's max_new_tokens wins (was 9 long)
    ({"max_length": 9}, {"max_new_tokens": 3}),
    ({"max_length": 4, "max_new_tokens": 7}, {"max_length": 12}),
    ({"min_new_tokens": 4, "eos": True}, {"min_length": 2, "max_new_tokens": 8}),  # min_new_tokens wins too
    ({"min_length": 7, "eos": True}, {"min_new_tokens": 2, "max_new_tokens": 9}),
    ({"max_new_tokens": 5}, {"max_new_tokens": None, "max_length": 9}),  # a named None cancels the config's
]


@pytest.mark.parametrize("where", ["argument", "model"])
@pytest.mark.parametrize("config, call", LENGTH_CASES, ids=str)
def test_length_precedence_across_config_and_call_as_in_transformers(models, where, config, call):
    """transformers merges a generation config and the call option by option, then max_new_tokens wins
    over max_length (min_new_tokens over min_length) wherever each came from; a length in the call
    replaced both of the config's here (config max_new_tokens=5, call max_length=9: 4 x 9, theirs 4 x 6)."""
    import copy

    import transformers

    ours, hf = models["v1.1", 0]
    ids, mask = padded_batch(0)
    config = dict(config)
    if config.pop("eos", False):
        config["eos_token_id"] = frequent_token(ours, ids, mask)
    if where == "argument":
        a = ours.generate(ids, mask, generation_config=transformers.GenerationConfig(**config), **call)
        b = hf_generate(hf, ids, mask, generation_config=transformers.GenerationConfig(**config), **call)
    else:
        om, hm = copy.deepcopy(ours), copy.deepcopy(hf)
        for k, v in config.items():
            setattr(om.generation_config, k, v)
            setattr(hm.generation_config, k, v)
        a, b = om.generate(ids, mask, **call), hf_generate(hm, ids, mask, **call)
    assert a.shape == b.shape and torch.equal(a, b)


@pytest.mark.parametrize("kw", [{}, {"num_beams": 3, "num_return_sequences": 2},
                                {"decoder_input_ids": torch.tensor([[5, 9], [7, 7], [0, 3], [5, 5]])},
                                {"decoder_input_ids": torch.tensor([[4, 9], [7, 7], [6, 3], [8, 5]])},
                                {"forced_bos_token_id": 7, "repetition_penalty": 1.3}],
                         ids=["greedy", "beam", "prefix_with_start", "prefix_without_start", "processors"])
def test_a_decoder_start_token_per_row_as_in_transformers(models, kw):
    """decoder_start_token_id=[0, 5, 0, 5] (one per input) raised a raw TypeError; transformers starts
    each row with its own token (and prepends them to decoder_input_ids unless some row starts with its own)."""
    ours, hf = models["v1.1", 1]
    ids, mask = padded_batch(1)
    starts = [0, 5, 0, 5]
    want = hf_generate(hf, ids, mask, max_new_tokens=5, decoder_start_token_id=starts, **kw)
    for given in (starts, torch.tensor(starts)):
        out = ours.generate(ids, mask, max_new_tokens=5, decoder_start_token_id=given, **kw)
        assert torch.equal(out, want)
    if not kw:
        assert out[:, 0].tolist() == starts
    with pytest.raises(InvalidInputError, match=r"decoder_start_token_id has 3 ids; give one per input row \(4\)"):
        ours.generate(ids, mask, decoder_start_token_id=[0, 5, 0])
    with pytest.raises(InvalidInputError, match="decoder_start_token_id has id 128, outside the vocabulary"):
        ours.generate(ids, mask, decoder_start_token_id=[0, 5, 0, VOCAB])


# --------------------------------------------------------------------------------------------
# Generation configs: generation_config.json, the positional argument, model.generation_config
# --------------------------------------------------------------------------------------------

def _unpadded(rows=3, length=7, seed=0):
    return torch.randint(2, VOCAB, (rows, length), generator=torch.Generator().manual_seed(seed))


def test_generation_config_json_keeps_generates_flags_and_warns_about_what_it_drops(models, tmp_path):
    """return_dict_in_generate / output_scores / output_logits in generation_config.json were dropped
    (only an INFO log), and so was an option generate does not have, like typical_p: now the flags
    apply, as in transformers, and a dropped option that would change the output is warned about."""
    import json
    import warnings

    import transformers

    from t5electra import T5ForConditionalGeneration

    ours, _ = models["v1.1", 0]
    ids, mask = padded_batch(0)
    ours.save_pretrained(tmp_path)
    base = {"decoder_start_token_id": 0, "eos_token_id": 1, "pad_token_id": 0, "max_new_tokens": 4}
    flags = {"return_dict_in_generate": True, "output_scores": True, "output_logits": True, "use_cache": True}
    silent = {"transformers_version": "5.24.0", "_from_model_config": False, "typical_p": 1.0, "num_beam_groups": 1,
              "diversity_penalty": 0.0, "output_attentions": False, "cache_implementation": "static",
              "stop_strings": None, "num_assistant_tokens": 20}
    (tmp_path / "generation_config.json").write_text(json.dumps({**base, **flags, **silent}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: bookkeeping and values that change nothing
        loaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
        hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    a = loaded.generate(ids, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = hf.generate(ids, attention_mask=mask)
    assert torch.equal(a.sequences, b.sequences) and len(a.scores) == len(b.scores) == len(a.logits) == 4
    for x, y in zip(a.scores + a.logits, b.scores + b.logits):
        torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
    assert torch.equal(loaded.generate(ids, mask, return_dict_in_generate=False), a.sequences)  # the call wins

    (tmp_path / "generation_config.json").write_text(json.dumps({**base, **silent, "do_sample": True, "typical_p": 0.2,
                                                                 "num_beam_groups": 2}))
    with pytest.warns(UserWarning, match=r"num_beam_groups=2, typical_p=0.2: option\(s\) .* NOT applied"):
        loaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert loaded.generation_config.do_sample is True and loaded.generation_config.max_new_tokens == 4
    # in code, as in transformers: the flags may be set on model.generation_config
    loaded.generation_config.return_dict_in_generate, loaded.generation_config.output_scores = True, True
    out = loaded.generate(ids, mask, generator=torch.Generator().manual_seed(0))
    assert len(out.scores) == out.sequences.shape[1] - 1


def test_a_generation_config_as_the_second_positional_argument(models):
    """transformers' generate(inputs, generation_config, ...): ours took the second positional argument
    as attention_mask and failed with "'GenerationConfig' object has no attribute 'shape'"."""
    import copy
    import warnings

    import transformers

    from t5electra.core.generation_config import GenerationConfig
    from t5electra.generation.seq2seq import generate

    ours, hf = models["v1.0", 1]
    ids = _unpadded()
    cfg = dict(max_new_tokens=5, num_beams=3, num_return_sequences=2)
    want = hf_generate(hf, ids, None, generation_config=transformers.GenerationConfig(**cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(hf.generate(ids, transformers.GenerationConfig(**cfg)), want)
    for given in (transformers.GenerationConfig(**cfg), GenerationConfig(**cfg)):
        assert torch.equal(ours.generate(ids, given), want)
        assert torch.equal(generate(ours, ids, given), want)
        assert torch.equal(ours.generate(ids, given, num_beams=4), ours.generate(ids, **{**cfg, "num_beams": 4}))
    # it comes before model.generation_config, which fills what it leaves out
    model = copy.deepcopy(ours)
    model.generation_config.max_new_tokens, model.generation_config.num_beams = 2, 2
    assert torch.equal(model.generate(ids, transformers.GenerationConfig(num_beams=3)),
                       ours.generate(ids, num_beams=3, max_new_tokens=2))
    with pytest.raises(InvalidInputError, match="given both as the second positional argument .* give one"):
        ours.generate(ids, GenerationConfig(**cfg), generation_config=GenerationConfig(**cfg))
    with pytest.raises(InvalidInputError, match=r"attention_mask must be a tensor of shape \(3, 7\), got list"):
        ours.generate(ids, [[1] * 7] * 3)


def test_model_generation_config_takes_transformers_config_and_model_token_ids(models, tmp_path):
    """`model.generation_config = transformers.GenerationConfig(...)` then generate() raised AttributeError
    'defaults_for'; it is converted. Without a generation_config.json the token ids came out None
    (transformers: 1 / 0 / 0 from the model config)."""
    import copy

    import transformers

    from t5electra import T5ForConditionalGeneration
    from t5electra.core.generation_config import GenerationConfig
    from t5electra.errors import ConfigError

    ours, hf = models["v1.1", 1]
    ids, mask = padded_batch(1)
    ids_names = ("eos_token_id", "pad_token_id", "decoder_start_token_id")
    for model in (ours, T5ForConditionalGeneration(ours.config), T5ForConditionalGeneration.from_pretrained(
            hf.name_or_path)):
        assert [getattr(model.generation_config, k) for k in ids_names] == [
            getattr(hf.generation_config, k) for k in ids_names] == [1, 0, 0]
    model, theirs = copy.deepcopy(ours), copy.deepcopy(hf)
    model.generation_config = transformers.GenerationConfig(max_new_tokens=4, num_beams=2, eos_token_id=9)
    theirs.generation_config = transformers.GenerationConfig(max_new_tokens=4, num_beams=2, eos_token_id=9,
                                                             decoder_start_token_id=0, pad_token_id=0)
    assert isinstance(model.generation_config, GenerationConfig)
    assert (model.generation_config.eos_token_id, model.generation_config.pad_token_id) == (9, 0)  # its own, then config's
    assert torch.equal(model.generate(ids, mask), hf_generate(theirs, ids, mask))
    model.generation_config = {"max_new_tokens": 3}
    assert model.generate(ids, mask).shape == (4, 4)
    model.save_pretrained(tmp_path)
    assert T5ForConditionalGeneration.from_pretrained(tmp_path).generation_config.max_new_tokens == 3
    with pytest.raises(ConfigError, match="generate does not support: typical_p"):
        model.generation_config = transformers.GenerationConfig(typical_p=0.5, do_sample=True)
    with pytest.raises(ConfigError, match="model.generation_config must be a GenerationConfig .* got int"):
        model.generation_config = 3
    # a checkpoint whose only options are the model's token ids writes no generation_config.json (as before)
    T5ForConditionalGeneration(ours.config).save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / "generation_config.json").exists()


# --------------------------------------------------------------------------------------------
# compute_transition_scores
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [
    {}, {"eos": True}, {"do_sample": True, "num_return_sequences": 2, "top_k": 0},
    {"num_beams": 3}, {"num_beams": 3, "num_return_sequences": 3, "eos": True, "length_penalty": 0.5},
    {"num_beams": 2, "do_sample": True, "eos": True}], ids=str)
def test_compute_transition_scores_as_transformers(models, kw):
    """model.compute_transition_scores (transformers' method) was missing: the same values as transformers'
    on the same generate output, with and without normalize_logits, for scores and for logits."""
    from t5electra.generation.scores import compute_transition_scores

    ours, hf = models["v1.0", 2]
    ids, mask = padded_batch(2)
    kw = dict(kw)
    if kw.pop("eos", False):
        kw["eos_token_id"] = frequent_token(ours, ids, mask)
    out = ours.generate(ids, mask, max_new_tokens=8, return_dict_in_generate=True, output_scores=True,
                        output_logits=True, generator=torch.Generator().manual_seed(0), **kw)
    beams = getattr(out, "beam_indices", None)
    if "eos_token_id" in kw and beams is not None:
        assert (beams < 0).any()  # some hypotheses end before others
    for steps in (out.scores, out.logits):
        for normalize in (False, True):
            got = ours.compute_transition_scores(out.sequences, steps, beams, normalize_logits=normalize)
            want = hf.compute_transition_scores(out.sequences, steps, beams, normalize_logits=normalize)
            assert got.shape == want.shape
            torch.testing.assert_close(got, want, rtol=0, atol=0)
            assert torch.equal(compute_transition_scores(out.sequences, steps, beams, normalize), got)
    if beams is not None:  # beam search: the token scores sum to the hypothesis' score before the length penalty
        lengths = (beams >= 0).sum(-1)
        total = ours.compute_transition_scores(out.sequences, out.scores, beams).sum(-1)
        torch.testing.assert_close(total / lengths ** kw.get("length_penalty", 1.0), out.sequences_scores,
                                   atol=1e-4, rtol=1e-4)
    with pytest.raises(InvalidInputError, match="scores must be output.scores"):
        ours.compute_transition_scores(out.sequences, ())



# --------------------------------------------------------------------------------------------
# Sampling draws do not depend on dropping finished rows
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw", [{}, {"top_k": 0}, {"top_k": 5, "top_p": 0.8}], ids=str)
def test_sampled_tokens_do_not_depend_on_finished_rows_leaving(models, kw):
    """Sampling drops finished rows from the cache; torch.multinomial then drew fewer random numbers
    and every later row's draws shifted: with the same generator, 7-8 seeds in 20 gave other tokens
    than return_dict_in_generate=True (which keeps every row), and top_k=0 other tokens than
    transformers for the same global seed. The rows that left now draw too (and are discarded)."""
    ours, hf = models["v1.1", 0]
    ids, mask = padded_batch(0)
    kw = dict(kw, do_sample=True, max_new_tokens=15, eos_token_id=frequent_token(ours, ids, mask))
    left_early = 0
    for seed in range(12):
        plain = ours.generate(ids, mask, generator=torch.Generator().manual_seed(seed), **kw)
        kept = ours.generate(ids, mask, generator=torch.Generator().manual_seed(seed), return_dict_in_generate=True,
                             **kw).sequences
        assert torch.equal(plain, kept), seed
        left_early += bool((plain[:, -1] == 0).sum() >= 1)
        if kw.get("top_k") == 0:  # sampling over the whole vocabulary: transformers' draws
            torch.manual_seed(seed)
            ours_global = ours.generate(ids, mask, **kw)
            torch.manual_seed(seed)
            assert torch.equal(ours_global, hf_generate(hf, ids, mask, **kw)), seed
    assert left_early  # rows did finish before others (and left the cache)
