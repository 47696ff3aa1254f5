"""The quickstart's demo metrics on tiny cases: ROC AUC, the alphabetic fraction of generated
pieces, word-span masking, one-word substitution, and the two held-out evaluations end to end
with stand-in models whose answers are known."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
import torch

from t5electra.recipes.quickstart_demos import (alphabetic_fraction, word_fraction, mask_word_spans, roc_auc, rtd_auc,
                                                span_filling_eval, substitute_one_word, whole_word_ids)

SENTENCES = ["the cat sat on the mat", "a dog ate the bone on the roof", "the chef cooked the meal",
             "this is a sample input text", "the capital of france is paris", "a cat and a dog"]


@pytest.fixture(scope="module")
def wordpiece():
    from t5electra import ElectraTokenizer

    extra = ["zebra yacht quilt violin", "orange purple window garden"]
    return ElectraTokenizer.train(iter((SENTENCES + extra) * 20), vocab_size=200, min_frequency=1)


def test_roc_auc_counts_ordered_pairs_and_halves_ties():
    assert roc_auc([0.9], [0.1, 0.2]) == 1.0
    assert roc_auc([0.1], [0.9, 0.5]) == 0.0
    assert roc_auc([0.5], [0.5]) == 0.5
    # pairs: 0.8>0.5, 0.8>0.1, 0.3<0.5, 0.3>0.1 -> 3 of 4
    assert roc_auc([0.8, 0.3], [0.5, 0.1]) == 0.75
    # a tie between classes counts one half: (1 + 0.5) / 2
    assert roc_auc([0.5], [0.5, 0.1]) == 0.75
    with pytest.raises(ValueError, match="both classes"):
        roc_auc([], [0.1])


def test_word_fraction_counts_words_not_suffix_pieces():
    # "s", "s." and "," are what an undertrained T5 writes: pieces, not words
    assert word_fraction(["s", "s.", ",", ", and", "a film", "I", "12"]) == pytest.approx(4 / 9)  # and, a, film, I
    assert word_fraction(["the quiet, gripping"]) == 1.0 and word_fraction([]) == 0.0


def test_alphabetic_fraction_counts_pieces_with_text():
    # counted: the , , ing 12 (a bare word-start mark carries no text) -> 2 of 5 alphabetic
    assert alphabetic_fraction(["\u2581the", "\u2581,", ",", "\u2581", "ing", "\u258112"]) == pytest.approx(0.4)
    assert alphabetic_fraction([",", ",", ","]) == 0.0
    assert alphabetic_fraction([]) == 0.0


def test_mask_word_spans_removes_runs_of_whole_words_between_kept_words():
    rng = random.Random(0)
    for sentence in SENTENCES * 5:
        masked, removed = mask_word_spans(sentence, rng)
        assert 1 <= len(removed) <= 2
        words = masked.split()
        sentinels = [i for i, w in enumerate(words) if w.startswith("<extra_id_")]
        assert [words[i] for i in sentinels] == [f"<extra_id_{k}>" for k in range(len(removed))]
        assert all(b - a >= 2 for a, b in zip(sentinels, sentinels[1:]))  # a kept word between spans
        restored = " ".join(removed[int(w[10:-1])] if w.startswith("<extra_id_") else w for w in words)
        assert restored == sentence


def test_substitute_one_word_changes_exactly_one_whole_word(wordpiece):
    candidates = whole_word_ids(wordpiece)
    tokens = wordpiece.convert_ids_to_tokens(candidates)
    assert "zebra" in tokens and all(t.isalpha() and len(t) > 1 for t in tokens)
    rng = random.Random(0)
    for sentence in SENTENCES:
        ids = wordpiece(sentence)["input_ids"]
        new, pos = substitute_one_word(ids, wordpiece, candidates, rng)
        changed = [i for i, (a, b) in enumerate(zip(ids, new)) if a != b]
        assert changed == [pos] and len(new) == len(ids)
        assert 0 < pos < len(ids) - 1 and new[pos] in candidates


class _OracleDiscriminator(torch.nn.Module):
    """Knows the original sentences (in order): logit +5 where a token differs from the original, -5 elsewhere."""

    def __init__(self, originals: list[list[int]], flat: bool = False):
        super().__init__()
        self.originals, self.flat, self.seen = originals, flat, 0
        self.anchor = torch.nn.Parameter(torch.zeros(()))

    def forward(self, input_ids, attention_mask, return_dict=True):
        assert return_dict  # a config.json with return_dict: false must not give the demo a tuple
        logits = torch.full(input_ids.shape, -5.0)
        for b in range(input_ids.shape[0]):
            orig = torch.tensor(self.originals[self.seen])
            self.seen += 1
            logits[b, :len(orig)] = torch.where(input_ids[b, :len(orig)] != orig, 5.0, -5.0)
        return SimpleNamespace(logits=torch.zeros_like(logits) if self.flat else logits)

    @property
    def device(self):
        return self.anchor.device


def test_rtd_auc_is_one_for_an_oracle_and_one_half_for_a_flat_discriminator(wordpiece):
    originals = [wordpiece(s)["input_ids"] for s in SENTENCES]
    res = rtd_auc(_OracleDiscriminator(originals), wordpiece, SENTENCES, batch_size=4)  # 2 batches, padded
    assert res["sentences"] == len(SENTENCES) and res["auc"] == 1.0
    assert res["mean_p_substituted"] > 0.99 and res["mean_p_original"] < 0.01
    flat = rtd_auc(_OracleDiscriminator(originals, flat=True), wordpiece, SENTENCES, batch_size=4)
    assert flat["auc"] == 0.5


class _ScriptedT5:
    """generate() returns, for every input, ``<pad> <extra_id_0> WORD <extra_id_1> , </s>``."""

    device = torch.device("cpu")

    def __init__(self, tokenizer, word: str):
        t = tokenizer
        self.row = [t.pad_token_id, *t.convert_tokens_to_ids(["<extra_id_0>", word, "<extra_id_1>", ","]),
                    t.eos_token_id]

    def eval(self):
        return self

    def generate(self, input_ids, attention_mask, max_new_tokens, return_dict_in_generate=None):
        assert return_dict_in_generate is False  # a generation_config.json may ask for an output object
        return torch.tensor([self.row] * input_ids.shape[0])


def test_span_filling_eval_measures_the_generated_pieces(spiece_model_path):
    from t5electra.tokenizers import T5Tokenizer

    tok = T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes())
    word = next(p for p in tok.convert_ids_to_tokens(list(range(100, 1000)))
                if p.startswith("\u2581") and p[1:].isalpha() and len(p) > 3)  # a whole word of the model
    assert tok.convert_tokens_to_ids([","]) != [tok.unk_token_id]
    sentences = [f"the {word[1:]} is thin but the cast is wonderful"] * 3
    res = span_filling_eval(_ScriptedT5(tok, word), tok, sentences, batch_size=2)
    assert res["sentences"] == 3 and res["pieces"] == 6  # the word and "," per sentence
    assert res["alphabetic"] == pytest.approx(0.5)
    assert len(res["examples"]) == 3 and res["examples"][0]["generated"][0] == word[1:]
    assert 0.0 <= res["exact_words"] <= 1.0
