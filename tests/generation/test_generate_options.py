"""generate()'s transformers options beyond the search itself: min_length, bad_words_ids,
forced_bos/eos_token_id, suppress_tokens / begin_suppress_tokens, decoder_input_ids, encoder_outputs,
max_time, generation_config=, and a clear error for the options we do not implement.
Token-identical (and score-identical) to transformers 5.24 on the tiny random T5 pairs of
test_generate.py, greedy and beam search, padded batches."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import transformers

from t5electra import T5ForConditionalGeneration
from t5electra.core.generation_config import GenerationConfig, with_defaults
from t5electra.errors import ConfigError, InvalidInputError
from t5electra.generation.seq2seq import generate
from test_generate import assert_same, frequent_token, hf_generate, padded_batch
from tiny_t5 import VOCAB

SEEDS = range(3)


def _free(model, ids, mask):
    """Greedy output without constraints: the tokens the constraints below are about."""
    return generate(model, ids, mask, max_new_tokens=12).tolist()


# Each case: (free greedy output, a frequent token as EOS) -> generate's options.
OPTION_CASES = {
    "min_length": lambda f, e: dict(eos_token_id=e, min_length=9, max_new_tokens=14),
    "min_length_and_min_new_tokens": lambda f, e: dict(eos_token_id=e, min_length=12, min_new_tokens=3,
                                                        max_new_tokens=14),
    # one-token, two-token and start-token-prefixed bad words; [eos] is dropped, as transformers drops it
    "bad_words_ids": lambda f, e: dict(bad_words_ids=[[f[0][3]], [f[1][2], f[1][3]], [0, f[2][1]], [e]],
                                       eos_token_id=e, max_new_tokens=12),
    "forced_bos_and_eos": lambda f, e: dict(forced_bos_token_id=f[3][2], forced_eos_token_id=e, max_new_tokens=10),
    "two_forced_eos_ids": lambda f, e: dict(forced_eos_token_id=[e, 1], eos_token_id=e, max_new_tokens=9),
    "suppress_tokens": lambda f, e: dict(suppress_tokens=[f[0][2], f[3][4]], begin_suppress_tokens=[f[1][1], f[2][1]],
                                         max_new_tokens=10),
    "begin_suppress_after_forced_bos": lambda f, e: dict(forced_bos_token_id=f[0][1],
                                                         begin_suppress_tokens=[f[0][2], f[1][2]], max_new_tokens=8),
}
NEW = {"min_length", "min_new_tokens", "bad_words_ids", "forced_bos_token_id", "forced_eos_token_id",
       "suppress_tokens", "begin_suppress_tokens"}
SEARCHES = {"greedy": {}, "beam": {"num_beams": 3, "num_return_sequences": 2}}


@pytest.mark.parametrize("search", SEARCHES)
@pytest.mark.parametrize("case", OPTION_CASES)
def test_logits_processor_options_match_transformers(models, case, search):
    changed = 0
    for version in ("v1.0", "v1.1"):
        for seed in SEEDS:
            ours, hf = models[version, seed]
            ids, mask = padded_batch(seed)
            kw = {**OPTION_CASES[case](_free(ours, ids, mask), frequent_token(ours, ids, mask)), **SEARCHES[search]}
            out = assert_same(ours, hf, ids, mask, **kw)
            # the model method too: the fast paths (screened greedy argmax) a user gets
            assert torch.equal(ours.generate(ids, mask, **kw), out)
            changed += not torch.equal(out, generate(ours, ids, mask, **{k: v for k, v in kw.items()
                                                                         if k not in NEW}))
    assert changed  # the option does something on these models


@pytest.mark.parametrize("search", SEARCHES)
def test_processor_scores_match_transformers(models, search):
    """return_dict_in_generate: the processed scores (bans at -inf, forced tokens at 0) as transformers'."""
    ours_m, hf = models["v1.1", 2]
    ids, mask = padded_batch(2)
    f, e = _free(ours_m, ids, mask), frequent_token(ours_m, ids, mask)
    for case in ("bad_words_ids", "forced_bos_and_eos", "min_length", "suppress_tokens"):
        kw = dict(OPTION_CASES[case](f, e), return_dict_in_generate=True, output_scores=True, **SEARCHES[search])
        ours, theirs = ours_m.generate(ids, mask, **kw), hf_generate(hf, ids, mask, **kw)
        assert torch.equal(ours.sequences, theirs.sequences), case
        assert len(ours.scores) == len(theirs.scores)
        for a, b in zip(ours.scores, theirs.scores):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
        if search == "beam":
            torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-4)
            assert torch.equal(ours.beam_indices, theirs.beam_indices)


# --------------------------------------------------------------------------------------------
# decoder_input_ids: a decoder prefix to continue
# --------------------------------------------------------------------------------------------

def _prefix(kind: str, batch: int) -> torch.Tensor:
    d = torch.randint(2, VOCAB, (batch, 3), generator=torch.Generator().manual_seed(5))
    if kind == "with_start":
        d[:, 0] = 0
    elif kind == "one_row_with_start":  # transformers prepends the start token only if no row has it
        d[1, 0] = 0
    return d


PREFIX_CASES = [
    {"max_new_tokens": 8},
    {"max_length": 9},                                    # counts the prefix
    {"eos": True, "min_new_tokens": 3, "repetition_penalty": 1.4, "no_repeat_ngram_size": 2, "max_new_tokens": 10},
    {"num_beams": 3, "num_return_sequences": 2, "eos": True, "max_new_tokens": 10},
    {"num_beams": 4, "length_penalty": 0.5, "early_stopping": True, "eos": True, "min_length": 7, "max_new_tokens": 10},
]


@pytest.mark.parametrize("kind", ["without_start", "with_start", "one_row_with_start"])
@pytest.mark.parametrize("case", PREFIX_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_decoder_input_ids_match_transformers(models, kind, case):
    for version in ("v1.0", "v1.1"):
        for seed in SEEDS:
            ours, hf = models[version, seed]
            ids, mask = padded_batch(seed)
            kw = dict(case)
            if kw.pop("eos", False):
                kw["eos_token_id"] = frequent_token(ours, ids, mask)
            prefix = _prefix(kind, ids.shape[0])
            out = assert_same(ours, hf, ids, mask, decoder_input_ids=prefix, **kw)
            expect = torch.cat([torch.zeros_like(prefix[:, :1]), prefix], 1) if kind == "without_start" else prefix
            rows = out.shape[0] // ids.shape[0]
            assert torch.equal(out[:, :expect.shape[1]], expect.repeat_interleave(rows, 0))
            assert torch.equal(ours.generate(ids, mask, decoder_input_ids=prefix, **kw), out)


def test_decoder_input_ids_with_sampling_keeps_the_prefix(models):
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)
    prefix = _prefix("without_start", ids.shape[0])
    out = generate(ours, ids, mask, decoder_input_ids=prefix, do_sample=True, num_return_sequences=2,
                   max_new_tokens=5, generator=torch.Generator().manual_seed(0))
    assert out.shape == (8, 9) and torch.equal(out[:, 1:4], prefix.repeat_interleave(2, 0))


# --------------------------------------------------------------------------------------------
# encoder_outputs, max_time
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("search", [{}, {"num_beams": 3, "num_return_sequences": 2}], ids=["greedy", "beam"])
def test_encoder_outputs_skip_the_encoder(models, monkeypatch, search):
    ours, hf = models["v1.1", 1]
    ids, mask = padded_batch(1)
    kw = dict(max_new_tokens=9, eos_token_id=frequent_token(ours, ids, mask), **search)
    want = generate(ours, ids, mask, **kw)
    enc = ours.get_encoder()(input_ids=ids, attention_mask=mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.generate(attention_mask=mask, encoder_outputs=hf.get_encoder()(input_ids=ids, attention_mask=mask),
                             **kw)
    assert torch.equal(want, theirs)
    monkeypatch.setattr(type(ours), "encode", lambda *a, **k: pytest.fail("the encoder ran again"))
    for given in (enc, (enc.last_hidden_state,), enc.last_hidden_state):
        assert torch.equal(ours.generate(attention_mask=mask, encoder_outputs=given, **kw), want)
    assert torch.equal(ours.generate(ids, mask, encoder_outputs=enc, **kw), want)  # input_ids then unused
    with pytest.raises(InvalidInputError, match="encoder_outputs must be the encoder's output"):
        ours.generate(attention_mask=mask, encoder_outputs="x")
    with pytest.raises(InvalidInputError, match="encoder_outputs has 3 rows, input_ids 4"):
        ours.generate(ids, encoder_outputs=enc.last_hidden_state[:3])
    with pytest.raises(InvalidInputError, match=r"attention_mask has shape \(4, 9\), encoder_outputs"):
        ours.generate(attention_mask=mask[:, :9], encoder_outputs=enc)


@pytest.mark.parametrize("num_beams", [1, 3])
def test_max_time_stops_with_a_valid_output(models, num_beams):
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)
    kw = dict(num_beams=num_beams, max_new_tokens=40, eos_token_id=[])
    full = generate(ours, ids, mask, **kw)
    assert torch.equal(generate(ours, ids, mask, max_time=1e6, **kw), full)
    out = ours.generate(ids, mask, max_time=1e-9, **kw)     # stops after its first step
    assert out.shape[0] == full.shape[0] and 2 <= out.shape[1] <= full.shape[1] and (out[:, 0] == 0).all()
    if num_beams == 1:  # greedy: what it has is the start of the full output
        assert torch.equal(out, full[:, :out.shape[1]])
    assert ((out >= 0) & (out < VOCAB)).all()


# --------------------------------------------------------------------------------------------
# generation_config=, generation_config.json, unsupported options
# --------------------------------------------------------------------------------------------

def test_generation_config_argument_as_transformers(models):
    ours, hf = models["v1.0", 1]
    ids, mask = padded_batch(1)
    bad = _free(ours, ids, mask)[0][2]
    cfg = dict(num_beams=3, max_new_tokens=7, bad_words_ids=[[bad]], min_length=5, eos_token_id=1)
    want = generate(ours, ids, mask, **cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = hf.generate(ids, attention_mask=mask, generation_config=transformers.GenerationConfig(**cfg))
        theirs_greedy = hf.generate(ids, attention_mask=mask, generation_config=transformers.GenerationConfig(**cfg),
                                    num_beams=1)
    assert torch.equal(want, theirs)
    for given in (transformers.GenerationConfig(**cfg), GenerationConfig(**cfg), cfg):
        assert torch.equal(ours.generate(ids, mask, generation_config=given), want)
        assert torch.equal(generate(ours, ids, mask, generation_config=given), want)
        # an option given in the call wins over the config's
        assert torch.equal(ours.generate(ids, mask, generation_config=given, num_beams=1), theirs_greedy)
    # the argument wins over model.generation_config, which fills what both leave out
    model = copy.deepcopy(ours)
    model.generation_config.num_beams, model.generation_config.max_new_tokens = 2, 3
    assert torch.equal(model.generate(ids, mask, generation_config={"num_beams": 3}),
                       generate(ours, ids, mask, num_beams=3, max_new_tokens=3))
    with pytest.raises(ConfigError, match="diversity_penalty, num_beam_groups.*generate's options: .*bad_words_ids"):
        ours.generate(ids, generation_config=transformers.GenerationConfig(num_beam_groups=2, diversity_penalty=0.5,
                                                                           num_beams=4))


def test_generation_config_json_gives_the_new_options(models, tmp_path):
    """transformers writes them in generation_config.json; our model reads them as generate's defaults."""
    ours, hf = models["v1.1", 0]
    ids, mask = padded_batch(0)
    f, e = _free(ours, ids, mask), frequent_token(ours, ids, mask)
    values = dict(min_length=6, bad_words_ids=[[f[0][3]], [f[1][2], f[1][3]]], forced_bos_token_id=f[3][2],
                  forced_eos_token_id=e, suppress_tokens=[f[0][2]], begin_suppress_tokens=[f[2][1]], max_time=1e6,
                  max_new_tokens=9, num_beams=2, eos_token_id=e)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = transformers.T5ForConditionalGeneration.from_pretrained(hf.name_or_path).eval()
        for k, v in values.items():
            setattr(hf.generation_config, k, v)
        hf.save_pretrained(tmp_path)
        theirs = hf.generate(ids, attention_mask=mask)
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert {k: getattr(loaded.generation_config, k) for k in values} == values
    assert torch.equal(loaded.generate(ids, mask), theirs)
    assert not torch.equal(theirs, generate(ours, ids, mask, max_new_tokens=9, num_beams=2, eos_token_id=e))
    # option by option, as transformers merges them (then min_new_tokens wins over min_length)
    assert with_defaults({"min_length": 6}, {"min_new_tokens": 8, "min_length": 3, "top_k": 5}) == {
        "min_new_tokens": 8, "min_length": 6, "top_k": 5}
    assert with_defaults({"min_new_tokens": None}, {"min_new_tokens": 8}) == {"min_new_tokens": 8}


@pytest.mark.parametrize("kw", [dict(num_beam_groups=2, diversity_penalty=0.5, num_beams=4), dict(typical_p=0.9),
                                dict(epsilon_cutoff=3e-4), dict(eta_cutoff=1e-3), dict(do_sample=True, eta_cutoff=0.1)],
                         ids=str)
def test_unsupported_transformers_options_are_refused_by_name(models, kw):
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)
    names = ", ".join(sorted(k for k in kw if k not in ("num_beams", "do_sample")))
    for call in (lambda: generate(ours, ids, mask, **kw), lambda: ours.generate(ids, mask, **kw)):
        with pytest.raises(TypeError, match=f"option\\(s\\) {names} not supported.*arguments: .*bad_words_ids"):
            call()


@pytest.mark.parametrize("kw, match", [
    ({"bad_words_ids": []}, "bad_words_ids must be a non-empty list of non-empty lists"),
    ({"bad_words_ids": [[]]}, "bad_words_ids must be a non-empty list of non-empty lists"),
    ({"bad_words_ids": [5]}, "bad_words_ids must be a non-empty list of non-empty lists"),
    ({"bad_words_ids": [[3, VOCAB]]}, f"bad_words_ids has id {VOCAB}, outside the vocabulary"),
    ({"forced_bos_token_id": VOCAB}, "forced_bos_token_id must be a token id"),
    ({"forced_bos_token_id": [3]}, "forced_bos_token_id must be a token id"),
    ({"forced_eos_token_id": [1, -1]}, "forced_eos_token_id has id -1"),
    ({"suppress_tokens": "a"}, "suppress_tokens must be a token id or a list"),
    ({"begin_suppress_tokens": [VOCAB + 1]}, "begin_suppress_tokens has id"),
    ({"min_length": -1}, "min_length must be an integer >= 0"),
    ({"max_time": 0}, "max_time must be a number of seconds > 0"),
    ({"max_time": float("nan")}, "max_time must be a number of seconds > 0"),
    ({"decoder_input_ids": torch.ones(2, 3, dtype=torch.long)}, r"decoder_input_ids must be an integer tensor \(batch=4"),
    ({"decoder_input_ids": torch.ones(4, dtype=torch.long)}, "decoder_input_ids must be an integer tensor"),
    ({"decoder_input_ids": torch.full((4, 2), VOCAB)}, f"decoder_input_ids has id {VOCAB}"),
    ({"decoder_input_ids": torch.ones(4, 3, dtype=torch.long), "max_length": 4},
     r"max_length=4 leaves no room to generate: it counts the decoder prompt \(4 tokens"),
    ({"generation_config": 3}, "generation_config must be a GenerationConfig"),
], ids=lambda x: str(x)[:40])
def test_invalid_new_options_raise_clear_errors(models, kw, match):
    ids, mask = padded_batch(0)
    with pytest.raises((InvalidInputError, ConfigError), match=match):
        generate(models["v1.0", 0][0], ids, mask, **kw)


def test_a_misspelt_option_and_another_models_encoder_output_are_named(models):
    """`max_new_token=5` said transformers has such an option; an encoder output of another hidden size
    was a raw "mat1 and mat2 shapes cannot be multiplied"."""
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)
    with pytest.raises(TypeError, match=r"max_new_token not supported \(did you mean 'max_new_tokens'\?\)"):
        ours.generate(ids, mask, max_new_token=5)
    wrong = torch.randn(ids.shape[0], ids.shape[1], ours.config.d_model + 3)
    with pytest.raises(InvalidInputError, match=f"encoder_outputs has hidden size {ours.config.d_model + 3}"):
        ours.generate(attention_mask=mask, encoder_outputs=wrong)


def test_seq2seq_trainer_options_labels_and_synced_gpus(models, tmp_path):
    """transformers' Seq2SeqTrainer calls generate(**batch, synced_gpus=False) with the labels in the batch:
    labels are ignored (as transformers' generate ignores them), synced_gpus=True is refused."""
    ours, _ = models["v1.0", 0]
    ids, mask = padded_batch(0)
    want = ours.generate(ids, mask, max_new_tokens=4)
    got = ours.generate(input_ids=ids, attention_mask=mask, labels=ids[:, :3], synced_gpus=False, max_new_tokens=4)
    assert torch.equal(got, want)
    with pytest.raises(InvalidInputError, match=r"synced_gpus=True.*not supported.*synced_gpus=False"):
        ours.generate(ids, mask, synced_gpus=True)


def test_generation_config_bookkeeping_as_transformers(models, tmp_path):
    """_from_model_config: True for a model without generation_config.json (transformers' meaning), read back
    from the file; update(defaults_only=True) / _get_default_generation_params, as Seq2SeqTrainer calls them."""
    ours, _ = models["v1.0", 0]
    model = copy.deepcopy(ours)
    assert model.generation_config._from_model_config is True and GenerationConfig()._from_model_config is False
    hf_defaults = transformers.GenerationConfig._get_default_generation_params()
    assert {k: hf_defaults[k] for k in GenerationConfig._get_default_generation_params()} == \
        GenerationConfig._get_default_generation_params()
    model.generation_config.num_beams = 3
    assert model.generation_config.update(**hf_defaults, defaults_only=True) == {
        k: v for k, v in hf_defaults.items() if k not in GenerationConfig._get_default_generation_params()}
    assert (model.generation_config.num_beams, model.generation_config.max_length) == (3, 20)
    model.generation_config._from_model_config = False
    model.save_pretrained(tmp_path / "a")
    assert T5ForConditionalGeneration.from_pretrained(tmp_path / "a").generation_config._from_model_config is False
    fresh = copy.deepcopy(ours)
    fresh.generation_config.update(num_beams=2)
    fresh.save_pretrained(tmp_path / "b")
    assert transformers.GenerationConfig.from_pretrained(tmp_path / "b")._from_model_config is True
    assert T5ForConditionalGeneration.from_pretrained(tmp_path / "b").generation_config._from_model_config is True
    with pytest.raises(ConfigError, match="cannot hold typical_p"):
        fresh.generation_config.update(typical_p=0.5, allow_custom_entries=True)
