"""Objective invariants: T5 span corruption per docs/reference.md and t5's preprocessors.py,
i.i.d. denoising, prefix LM, the seq2seq collator, and the re-exported ELECTRA masking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t5electra.data import masking
from t5electra.data.objectives import (
    IGNORE_INDEX,
    IIDDenoising,
    MLMCollator,
    PrefixLM,
    Seq2SeqCollator,
    SpanCorruption,
    compute_input_and_target_lengths,
    iid_denoising,
    iid_noise_mask,
    mask_tokens,
    noise_span_to_unique_sentinel,
    nonnoise_span_to_unique_sentinel,
    prefix_lm,
    random_spans_noise_mask,
    span_corruption,
    t5_sentinel_start_id,
)
from t5electra.errors import InvalidInputError

S0 = 32099  # <extra_id_0> of the t5 vocabulary (32000 pieces + 100 sentinels counting down)
EOS = 1


def runs(mask: np.ndarray) -> list[int]:
    """Lengths of the runs of True in a bool array."""
    out, n = [], 0
    for m in mask:
        if m:
            n += 1
        elif n:
            out.append(n)
            n = 0
    return out + ([n] if n else [])


def reconstruct(inputs: np.ndarray, targets: np.ndarray, s0: int = S0) -> np.ndarray:
    """Undo corruption: put each sentinel's span (from the targets) back into the inputs."""
    assert inputs[-1] == EOS and targets[-1] == EOS
    spans, current = {}, None
    for t in targets[:-1]:
        if s0 - 99 <= t <= s0:
            current = int(t)
            spans[current] = []
        else:
            assert current is not None, "targets must start with a sentinel"
            spans[current].append(int(t))
    out = []
    for t in inputs[:-1]:
        out.extend(spans[int(t)] if s0 - 99 <= t <= s0 else [int(t)])
    return np.array(out)


def test_raw_lengths_for_512_and_128():
    assert compute_input_and_target_lengths(512) == (568, 114)
    assert compute_input_and_target_lengths(128) == (141, 29)
    assert SpanCorruption(sentinel_start_id=S0).raw_length == 568
    assert SpanCorruption(sentinel_start_id=S0, inputs_length=128).targets_length == 29


@pytest.mark.parametrize("density,span,bad", [(2.0, 3.0, "noise_density"), (1.0, 3.0, "noise_density"),
                                               (-0.5, 3.0, "noise_density"), (0.0, 3.0, "noise_density"),
                                               (float("nan"), 3.0, "noise_density"),
                                               (0.15, 0.0, "mean_noise_span_length"),
                                               (0.15, -2.0, "mean_noise_span_length"),
                                               (0.15, float("inf"), "mean_noise_span_length")])
def test_lengths_refuse_span_parameters_that_cannot_work(density, span, bad):
    # density 2 used to loop forever in the length search; -0.5 gave a negative "fixed length"
    with pytest.raises(InvalidInputError, match=bad):
        compute_input_and_target_lengths(128, density, span)
    with pytest.raises(InvalidInputError, match=bad):
        SpanCorruption(sentinel_start_id=S0, inputs_length=128, noise_density=density, mean_noise_span_length=span)


def test_lengths_end_for_densities_close_to_one():
    raw, tgt = compute_input_and_target_lengths(16, 0.99, 1.0)
    assert raw >= 15 and tgt >= 1  # the search starts at inputs_length - 1 and ends


def t5_random_spans_helper(inputs_length, noise_density, mean_noise_span_length):
    """t5/data/preprocessors.py ``random_spans_helper`` (one sentinel per span each side), counting in
    float32 as t5's mask does (the helper's Python floats promise 38 targets for raw 190 at density
    0.15, where t5's mask makes 29 noise tokens in 10 spans: 40)."""
    f32 = np.float32

    def lengths(tokens_length):
        noise = int(np.round(f32(tokens_length) * f32(noise_density)))
        spans = int(np.round(f32(noise) / f32(mean_noise_span_length)))
        return tokens_length - noise + spans + 1, noise + spans + 1

    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = lengths(tokens_length)
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


def t5_cannot_mask(raw, density, span):
    """t5's random_spans_noise_mask fails when it asks for more noise spans than kept tokens."""
    noise = min(max(int(np.round(np.float32(raw) * np.float32(density))), 1), raw - 1)
    return max(int(np.round(np.float32(noise) / np.float32(span))), 1) > raw - noise


def corrupted_lengths(raw, density, span):
    """(inputs, targets) lengths span corruption gives for ``raw`` tokens (the counts are fixed; only
    the span positions are random)."""
    inputs, targets = span_corruption(np.arange(10, 10 + raw), rng=np.random.default_rng(0), sentinel_start_id=S0,
                                      eos_token_id=EOS, noise_density=density, mean_noise_span_length=span,
                                      num_sentinels=S0)  # lengths only: as many sentinels as the spans need
    return len(inputs), len(targets)


# (0.8, 3) is not here: it asks for more noise spans than kept tokens to separate them, so the spans are
# capped (test_more_spans_than_kept_tokens_...) and the inputs, 2 x kept + 1, can come out one short.
SPAN_SETTINGS = [(0.15, 3.0), (0.5, 3.0), (0.3, 8.0), (0.15, 1.0), (0.5, 1.0)]


@pytest.mark.parametrize("density,span", SPAN_SETTINGS)
def test_short_inputs_get_the_lengths_promised(density, span):
    # t5's helper counted no span where the mask makes one: 8 promised (8, 2) and gave (9, 3)
    for n in range(3, 200):
        raw, targets = compute_input_and_target_lengths(n, density, span)
        got = corrupted_lengths(raw, density, span)
        # density 0.5: t5's "minor hack" drops a raw token, so the inputs may come out one short
        assert got == (n, targets) if density != 0.5 else (got[0] <= n and got[1] <= targets), (n, raw, got)


def test_a_short_max_length_goes_through_the_fixed_length_collator():
    obj = SpanCorruption(sentinel_start_id=S0, inputs_length=8)
    assert (obj.raw_length, obj.targets_length) == (7, 3)
    rng = np.random.default_rng(0)
    batch = Seq2SeqCollator(inputs_length=8, targets_length=obj.targets_length)(
        [obj(np.arange(10, 10 + obj.raw_length), rng) for _ in range(4)])
    assert batch["input_ids"].shape == (4, 8) and batch["labels"].shape == (4, 3)
    with pytest.raises(InvalidInputError, match="inputs_length must be >= 3"):
        compute_input_and_target_lengths(2)


@pytest.mark.parametrize("density,span", SPAN_SETTINGS)
def test_lengths_equal_t5_wherever_t5s_promise_holds(density, span):
    differ = []
    for n in range(3, 1100):
        ours, t5 = compute_input_and_target_lengths(n, density, span), t5_random_spans_helper(n, density, span)
        if ours != t5 and not t5_cannot_mask(ours[0], density, span):  # where t5 has no mask, no comparison
            got = corrupted_lengths(t5[0], density, span)
            assert got[0] > n or got[1] > t5[1], (n, ours, t5, got)  # only where t5's lengths are not the real ones
            differ.append(n)
    assert all(n < 16 for n in differ)  # short inputs only: 512 and 128 are t5's own (above)


@pytest.mark.parametrize("raw,n_in,n_tgt", [(568, 512, 114), (141, 128, 29)])
def test_span_corruption_gives_exact_lengths(raw, n_in, n_tgt):
    rng = np.random.default_rng(0)
    tokens = np.arange(10, 10 + raw)
    for _ in range(50):
        inputs, targets = span_corruption(tokens, rng=rng, sentinel_start_id=S0, eos_token_id=EOS)
        assert (len(inputs), len(targets)) == (n_in, n_tgt)


def test_counts_follow_the_reference_formula():
    # num_noise = round(L * 0.15) clipped to [1, L-1]; num_spans = max(1, round(num_noise / 3)).
    rng = np.random.default_rng(1)
    for length in (2, 5, 20, 100, 141, 568):
        mask = random_spans_noise_mask(length, 0.15, 3.0, rng=rng)
        n_noise = min(max(int(np.round(length * 0.15)), 1), length - 1)
        assert mask.sum() == n_noise
        assert len(runs(mask)) == max(1, int(np.round(n_noise / 3)))


@pytest.mark.parametrize("length,density,noise,spans", [(190, 0.15, 29, 10), (350, 0.15, 53, 18), (390, 0.15, 59, 20),
                                                       (95, 0.3, 29, 10), (90, 0.35, 32, 11)])
def test_counts_round_as_t5s_float32_product(length, density, noise, spans):
    # t5 counts tf.round(to_float(length) * noise_density) in float32: 190 x 0.15 is 28.5 (28 in
    # float64) but 28.500002 (29) in float32, so rows of 190, 350, 390 ... got one noise token (and
    # at mean span 3 one span) fewer than t5's mask makes.
    rng = np.random.default_rng(11)
    for _ in range(5):
        mask = random_spans_noise_mask(length, density, 3.0, rng=rng)
        assert (int(mask.sum()), len(runs(mask))) == (noise, spans)
    raw, targets = compute_input_and_target_lengths(172)  # raw 190: the search counts what the mask makes
    assert (raw, targets) == (190, 40) and corrupted_lengths(raw, 0.15, 3.0) == (172, 40)


@pytest.mark.parametrize("density,span", [(0.8, 3.0), (0.9, 1.0), (0.5, 1.0)])
def test_more_spans_than_kept_tokens_keep_the_density_and_the_lengths(density, span):
    # 0.8 at mean span 3 asks for 27 spans in 100 tokens but keeps only 20 to separate them: the mask
    # made empty kept spans, merged noise spans and noised 65 tokens instead of 80; SpanCorruption's
    # inputs came out at 140-160 tokens for inputs_length=128. Now the spans are capped at the kept tokens.
    rng = np.random.default_rng(10)
    for length in (3, 7, 100, 271):
        noise = min(max(int(round(length * density)), 1), length - 1)
        for _ in range(20):
            mask = random_spans_noise_mask(length, density, span, rng=rng)
            assert mask.sum() == noise and not mask[0], (length, int(mask.sum()), noise)
            assert len(runs(mask)) == min(max(1, int(round(noise / span))), length - noise)
    obj = SpanCorruption(sentinel_start_id=S0, inputs_length=128, noise_density=density, mean_noise_span_length=span)
    tokens = np.arange(10, 10 + obj.raw_length)
    for _ in range(20):
        example = obj(tokens, rng)
        assert len(example["input_ids"]) <= 128 and len(example["labels"]) <= obj.targets_length
        np.testing.assert_array_equal(reconstruct(example["input_ids"], example["labels"]), tokens)


def test_empirical_density_and_mean_span_length():
    rng = np.random.default_rng(2)
    noise, spans, total = 0, [], 0
    for _ in range(2000):
        length = int(rng.integers(100, 600))
        mask = random_spans_noise_mask(length, 0.15, 3.0, rng=rng)
        noise += int(mask.sum())
        total += length
        spans += runs(mask)
    assert abs(noise / total - 0.15) < 0.002
    assert abs(np.mean(spans) - 3.0) < 0.05
    # Span lengths are random (not all 3): the reference draws a random segmentation.
    assert min(spans) == 1 and max(spans) > 8


def test_reference_pattern_starts_clean_and_ends_on_noise():
    rng = np.random.default_rng(3)
    for _ in range(200):
        mask = random_spans_noise_mask(60, rng=rng)
        assert not mask[0] and mask[-1]


def test_random_roll_moves_the_pattern_and_keeps_the_count():
    rng = np.random.default_rng(4)
    starts_noise = ends_clean = 0
    for _ in range(400):
        mask = random_spans_noise_mask(60, rng=rng, random_roll=True)
        assert mask.sum() == 9
        starts_noise += bool(mask[0])
        ends_clean += not mask[-1]
    assert starts_noise > 20 and ends_clean > 200


def test_sentinels_count_down_from_extra_id_0_and_eos_on_both_sides():
    rng = np.random.default_rng(5)
    tokens = np.arange(10, 10 + 568)
    inputs, targets = span_corruption(tokens, rng=rng, sentinel_start_id=S0, eos_token_id=EOS)
    sent_in = [t for t in inputs if t >= S0 - 99]
    sent_tgt = [t for t in targets if t >= S0 - 99]
    assert sent_in == list(range(S0, S0 - len(sent_in), -1))   # <extra_id_0>, <extra_id_1>, ...
    assert sent_tgt == sent_in                                  # same sentinels, same order
    assert targets[0] == S0                                     # targets open with <extra_id_0>
    assert inputs[-1] == EOS and targets[-1] == EOS
    assert (inputs[:-1] != EOS).all() and (targets[:-1] != EOS).all()
    np.testing.assert_array_equal(reconstruct(inputs, targets), tokens)


def test_known_example_matches_the_paper_figure():
    # "Thank you for inviting me to your party last week ." with "for inviting" and "last" dropped.
    tokens = np.arange(100, 111)
    mask = np.zeros(11, bool)
    mask[[2, 3, 8]] = True
    inputs = noise_span_to_unique_sentinel(tokens, mask, S0)
    targets = nonnoise_span_to_unique_sentinel(tokens, mask, S0)
    np.testing.assert_array_equal(inputs, [100, 101, S0, 104, 105, 106, 107, S0 - 1, 109, 110])
    np.testing.assert_array_equal(targets, [S0, 102, 103, S0 - 1, 108, S0 - 2])


def test_span_corruption_equals_the_t5_function_pair_on_reference_masks():
    rng_a, rng_b = np.random.default_rng(6), np.random.default_rng(6)
    tokens = np.arange(10, 151)
    inputs, targets = span_corruption(tokens, rng=rng_a, sentinel_start_id=S0, eos_token_id=EOS)
    mask = random_spans_noise_mask(len(tokens), rng=rng_b)
    np.testing.assert_array_equal(inputs[:-1], noise_span_to_unique_sentinel(tokens, mask, S0))
    np.testing.assert_array_equal(targets[:-1], nonnoise_span_to_unique_sentinel(tokens, mask, S0))


def test_rolled_masks_keep_sentinels_aligned():
    rng = np.random.default_rng(7)
    tokens = np.arange(10, 151)
    longer = 0
    for _ in range(200):
        inputs, targets = span_corruption(tokens, rng=rng, sentinel_start_id=S0, eos_token_id=EOS, random_roll=True)
        assert len(inputs) <= 129 and len(targets) <= 30
        longer += len(inputs) == 129
        assert targets[0] == S0
        np.testing.assert_array_equal(reconstruct(inputs, targets), tokens)
    assert longer > 0  # a span cut by the roll needs a second sentinel


def test_same_generator_state_same_example():
    tokens = np.arange(10, 151)
    a = span_corruption(tokens, rng=np.random.default_rng(8), sentinel_start_id=S0)
    b = span_corruption(tokens, rng=np.random.default_rng(8), sentinel_start_id=S0)
    c = span_corruption(tokens, rng=np.random.default_rng(9), sentinel_start_id=S0)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def test_too_many_spans_for_the_sentinels_is_an_error():
    with pytest.raises(InvalidInputError, match="sentinel"):
        span_corruption(np.arange(5000), rng=np.random.default_rng(0), sentinel_start_id=S0)


def test_iid_denoising_density_and_merged_runs():
    rng = np.random.default_rng(10)
    masks = [iid_noise_mask(500, 0.15, rng=rng) for _ in range(200)]
    assert abs(np.mean([m.mean() for m in masks]) - 0.15) < 0.01
    tokens = np.arange(10, 510)
    for _ in range(50):
        state = rng.bit_generator.state
        inputs, targets = iid_denoising(tokens, rng=rng, sentinel_start_id=S0, eos_token_id=EOS)
        rng2 = np.random.default_rng()
        rng2.bit_generator.state = state
        mask = iid_noise_mask(len(tokens), 0.15, rng=rng2)
        n_sentinels = int(np.sum(inputs >= S0 - 99))
        assert n_sentinels == len(runs(mask))                  # one sentinel per run of noise
        assert len(inputs) == len(tokens) - mask.sum() + n_sentinels + 1
        np.testing.assert_array_equal(reconstruct(inputs, targets), tokens)
    out = IIDDenoising(sentinel_start_id=S0, inputs_length=64)(np.arange(10, 73), np.random.default_rng(0))
    assert len(out["input_ids"]) <= 64


def test_prefix_lm_splits_once():
    rng = np.random.default_rng(11)
    tokens = np.arange(10, 20)
    cuts = set()
    for _ in range(300):
        inputs, targets = prefix_lm(tokens, rng=rng, eos_token_id=EOS)
        assert inputs[-1] == EOS and targets[-1] == EOS
        np.testing.assert_array_equal(np.concatenate([inputs[:-1], targets[:-1]]), tokens)
        cuts.add(len(inputs) - 1)
    assert cuts == set(range(1, 10))  # uniform in [1, L-1]
    assert PrefixLM(inputs_length=64).raw_length == 63


def test_seq2seq_collator_pads_with_minus_100_labels():
    batch = Seq2SeqCollator(pad_token_id=0)([
        {"input_ids": np.array([5, 6, 7, 1]), "labels": np.array([S0, 9, 1])},
        {"input_ids": np.array([5, 1]), "labels": np.array([S0, 1])},
    ])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 1], [5, 1, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert batch["labels"].tolist() == [[S0, 9, 1], [S0, 1, IGNORE_INDEX]]
    assert batch["input_ids"].dtype == torch.int64
    fixed = Seq2SeqCollator(inputs_length=6, targets_length=4)([{"input_ids": [3, 1], "labels": [1]}])
    assert fixed["input_ids"].shape == (1, 6) and fixed["labels"].shape == (1, 4)
    with pytest.raises(InvalidInputError, match="fixed length"):
        Seq2SeqCollator(inputs_length=1)([{"input_ids": [3, 1], "labels": [1]}])


def test_span_corruption_transform_through_the_collator():
    obj = SpanCorruption(sentinel_start_id=S0, inputs_length=128)
    rng = np.random.default_rng(12)
    examples = [obj(np.arange(10, 10 + obj.raw_length), rng) for _ in range(4)]
    batch = Seq2SeqCollator()(examples)
    assert batch["input_ids"].shape == (4, 128) and batch["labels"].shape == (4, 29)
    assert bool(batch["attention_mask"].all())


def test_masking_is_the_shared_implementation():
    assert mask_tokens is masking.mask_tokens
    CLS, SEP, MASK, PAD = 101, 102, 103, 0
    rows = [{"input_ids": np.array([CLS] + list(range(1000, 1000 + n)) + [SEP] + [PAD] * (40 - n)),
             "attention_mask": np.array([1] * (n + 2) + [0] * (40 - n))} for n in (38, 20)]
    collate = MLMCollator(mask_token_id=MASK, pad_token_id=PAD, special_token_ids=(CLS, SEP), seed=3)
    a, b = collate(rows), collate(rows)
    assert torch.equal(a["input_ids"], b["input_ids"])  # the masking seed comes from the batch itself
    chosen = a["labels"] != IGNORE_INDEX
    assert chosen.sum(-1).tolist() == [6, 3]            # round(40 * .15) = 6, round(22 * .15) = 3
    assert not chosen[:, 0].any()                        # [CLS] never chosen
    assert torch.equal(a["labels"][chosen], a["original_input_ids"][chosen])
    other = MLMCollator(mask_token_id=MASK, pad_token_id=PAD, special_token_ids=(CLS, SEP), seed=4)(rows)
    assert not torch.equal(other["labels"], a["labels"])


def test_sentinel_start_id_from_a_tokenizer():
    from tokenizers import Tokenizer, models

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, "a": 3}
    vocab.update({f"<extra_id_{i}>": 4 + 99 - i for i in range(100)})
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    assert t5_sentinel_start_id(tok) == 103
    with pytest.raises(InvalidInputError, match="extra_id_0"):
        t5_sentinel_start_id(Tokenizer(models.WordLevel({"<unk>": 0}, unk_token="<unk>")))
