"""ELECTRA/BERT masking invariants (docs/reference.md, ELECTRA section; official pretrain_helpers.mask)."""

from __future__ import annotations

import pytest
import torch

from t5electra.data.masking import (
    IGNORE_INDEX,
    example_generators,
    mask_tokens,
    max_predictions_per_seq,
    num_to_mask,
)
from t5electra.errors import InvalidInputError

PAD, CLS, SEP, MASK = 0, 101, 102, 103
VOCAB = 1000


def batch(lengths, T, seed=0):
    """[CLS] w... [SEP] [PAD]... rows with ordinary word ids in [200, VOCAB)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), T), PAD)
    for b, n in enumerate(lengths):
        ids[b, 0] = CLS
        ids[b, 1:n - 1] = torch.randint(200, VOCAB, (n - 2,), generator=g)
        ids[b, n - 1] = SEP
    return ids, (ids != PAD).long()


def run(ids, am, **kw):
    kw.setdefault("generator", torch.Generator().manual_seed(1))
    return mask_tokens(ids, mask_token_id=MASK, special_token_ids=(CLS, SEP), attention_mask=am,
                       pad_token_id=PAD, **kw)


def test_cap_formula():
    assert max_predictions_per_seq(128) == 19
    assert max_predictions_per_seq(512) == 79
    assert num_to_mask(torch.tensor([128, 100, 20, 3, 1]), 19).tolist() == [19, 15, 3, 1, 1]


def test_counts_round_as_the_official_float32_product():
    """The official count is tf.round(float32(n) * mask_prob): 190 x 0.15 is 28.500002 in float32
    (29), 28.5 in float64 (28, half to even): such rows of 512 got one mask fewer."""
    n = torch.tensor([190, 350, 390, 10, 30, 50])
    assert num_to_mask(n, 79).tolist() == [29, 53, 59, 2, 4, 8]
    ids, am = batch([190, 350, 390], 512)
    assert run(ids, am).mask.sum(-1).tolist() == [29, 53, 59]


def test_counts_full_length_128():
    ids, am = batch([128] * 16, 128)
    out = run(ids, am)
    assert out.mask.sum(-1).tolist() == [19] * 16
    assert ((out.labels != IGNORE_INDEX) == out.mask).all()


def test_counts_short_and_padded():
    # n real tokens (with [CLS]/[SEP]) -> max(1, min(19, round(0.15 n))), capped by maskable ones
    lengths = [128, 100, 60, 21, 10, 4, 3]
    ids, am = batch(lengths, 128)
    out = run(ids, am)
    want = [19, 15, 9, 3, 2, 1, 1]   # round(0.15*21)=3, round(1.5)=2 (half to even), round(0.6)=1
    assert out.mask.sum(-1).tolist() == want


def test_no_maskable_token_masks_nothing():
    ids = torch.tensor([[CLS, SEP, PAD, PAD]])
    out = run(ids, None)
    assert not out.mask.any()
    assert torch.equal(out.input_ids, ids)


def test_special_tokens_and_pad_never_masked():
    ids, am = batch([128, 70, 9], 128)
    extra_special = 555
    ids[:, 5] = extra_special
    for seed in range(20):
        out = mask_tokens(ids, mask_token_id=MASK, special_token_ids=(CLS, SEP, extra_special),
                          attention_mask=am, generator=torch.Generator().manual_seed(seed))
        chosen_ids = ids[out.mask]
        assert not torch.isin(chosen_ids, torch.tensor([PAD, CLS, SEP, MASK, extra_special])).any()
        assert not out.mask[am == 0].any()


def test_pad_from_pad_token_id_without_attention_mask():
    ids, am = batch([128, 30], 128)
    a = mask_tokens(ids, mask_token_id=MASK, special_token_ids=(CLS, SEP), pad_token_id=PAD,
                    generator=torch.Generator().manual_seed(3))
    b = run(ids, am, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.mask, b.mask)


def test_85_15_split_statistically_and_no_random_tokens():
    ids, am = batch([128] * 512, 128, seed=2)
    out = run(ids, am)
    n = int(out.mask.sum())                              # 512 * 19 = 9728 chosen positions
    became_mask = int((out.input_ids[out.mask] == MASK).sum())
    kept = int((out.input_ids[out.mask] == ids[out.mask]).sum())
    assert became_mask + kept == n                        # no random replacement
    # binomial(9728, 0.85): sd = 35, so +-0.015 is more than 4 sd
    assert abs(became_mask / n - 0.85) < 0.015
    # outside the chosen positions nothing changes
    assert torch.equal(out.input_ids[~out.mask], ids[~out.mask])
    assert torch.equal(out.labels[out.mask], ids[out.mask])


def test_bert_80_10_10():
    ids, am = batch([128] * 256, 128, seed=4)
    out = run(ids, am, mask_token_prob=0.8, random_token_prob=0.1, vocab_size=VOCAB)
    chosen_new, chosen_old = out.input_ids[out.mask], ids[out.mask]
    n = chosen_new.numel()
    frac_mask = float((chosen_new == MASK).float().mean())
    frac_other = float(((chosen_new != MASK) & (chosen_new != chosen_old)).float().mean())
    assert abs(frac_mask - 0.8) < 0.03 and abs(frac_other - 0.1) < 0.03, (n, frac_mask, frac_other)


def test_positions_uniform_over_maskable():
    ids, am = batch([40] * 2000, 40, seed=5)
    out = run(ids, am)
    per_pos = out.mask.float().mean(0)[1:39]               # 38 maskable positions, round(6.0)=6 chosen
    assert torch.allclose(per_pos, torch.full_like(per_pos, 6 / 38), atol=0.04)
    assert out.mask[:, [0, 39]].sum() == 0


def test_deterministic_with_generator():
    ids, am = batch([128, 50], 128)
    a = run(ids, am, generator=torch.Generator().manual_seed(7))
    b = run(ids, am, generator=torch.Generator().manual_seed(7))
    c = run(ids, am, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.mask, c.mask)


def test_per_example_generators_mask_an_example_the_same_in_any_batch():
    """One generator per row, seeded per example: an example's masks, [MASK]/keep and random-token
    choices depend on it and its seed only, not on its row, the other rows or the batch size
    (what makes ELECTRA's corruption the same on 1 or N processes)."""
    ids, am = batch([128, 128, 77, 128, 20, 128], 128, seed=6)
    seeds = torch.tensor([11, 2**62 + 5, 3, 11, 987654321, 42])  # rows 0 and 3: one seed, other ids
    kw = dict(mask_token_prob=0.8, random_token_prob=0.1, vocab_size=VOCAB)
    full = run(ids, am, generator=example_generators(seeds), **kw)
    for rows in ([5, 2, 0], [3], [1, 4, 3, 0, 2, 5], [0, 0]):
        part = run(ids[rows], am[rows], generator=example_generators(seeds[rows]), **kw)
        for got, want in ((part.input_ids, full.input_ids), (part.labels, full.labels), (part.mask, full.mask)):
            assert torch.equal(got, want[rows]), rows
    # a row's seed matters and nothing else does: another seed, other masks
    other = run(ids, am, generator=example_generators(seeds + 1), **kw)
    assert all(not torch.equal(other.mask[i], full.mask[i]) for i in (0, 1, 3, 5))
    # the same ids under two seeds (rows 0 and 3 get one seed: same ids -> same masks)
    twin = torch.stack([ids[0], ids[0]]), torch.stack([am[0], am[0]])
    same = run(*twin, generator=example_generators(torch.tensor([11, 11])), **kw)
    assert torch.equal(same.mask[0], same.mask[1]) and torch.equal(same.mask[0], full.mask[0])
    with pytest.raises(InvalidInputError, match="3 per-row generators for a batch of 6 rows"):
        run(ids, am, generator=example_generators(seeds[:3]))


def test_bad_inputs():
    ids, am = batch([10], 10)
    with pytest.raises(InvalidInputError, match="shape"):
        mask_tokens(ids[0], mask_token_id=MASK)
    with pytest.raises(InvalidInputError, match="attention_mask shape"):
        mask_tokens(ids, mask_token_id=MASK, attention_mask=am[:, :5])
    with pytest.raises(InvalidInputError, match="vocab_size"):
        mask_tokens(ids, mask_token_id=MASK, random_token_prob=0.1)
    with pytest.raises(InvalidInputError, match="sum <= 1"):
        mask_tokens(ids, mask_token_id=MASK, mask_token_prob=0.9, random_token_prob=0.2, vocab_size=VOCAB)
