"""nn/dropout.py: the cheaper CPU dropout mask drops each element with probability p (every one of
the four 16-bit lanes of a draw alike), scales what it keeps by 1 / (1 - p), back-propagates through
the same mask, follows torch's seed, and is what T5's attention and blocks use in training."""

from __future__ import annotations

import pytest
import torch

from t5electra.models.electra import ElectraConfig, ElectraSelfAttention
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.nn.attention import attend
from t5electra.nn.dropout import Dropout, drop_mask, dropout


@pytest.mark.parametrize("p", [0.05, 0.1, 0.5, 0.9])
def test_each_lane_drops_with_probability_p(p):
    torch.manual_seed(0)
    n = 1 << 22
    lanes = drop_mask((n,), p).view(-1, 4).float().mean(0)  # the 4 lanes of each 64-bit draw
    sd = (p * (1 - p) / (n // 4)) ** 0.5
    assert torch.all((lanes - p).abs() < 6 * sd + 2 ** -15), lanes
    assert not drop_mask((1000,), 0.0).any()


def test_masks_follow_the_seed_and_the_generator():
    torch.manual_seed(3)
    a = drop_mask((7, 33), 0.3)
    torch.manual_seed(3)
    assert torch.equal(a, drop_mask((7, 33), 0.3))
    assert not torch.equal(a, drop_mask((7, 33), 0.3))  # the stream moved on
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(drop_mask((5, 11), 0.5, generator=g1), drop_mask((5, 11), 0.5, generator=g2))


def test_forward_and_backward_scale_the_kept_elements():
    p = 0.25
    x = torch.randn(64, 50, dtype=torch.float64, requires_grad=True)
    torch.manual_seed(1)
    y = dropout(x, p)
    torch.manual_seed(1)
    drop = drop_mask(x.shape, p)
    assert 0 < drop.sum() < drop.numel()
    torch.testing.assert_close(y, torch.where(drop, 0.0, x / (1 - p)), rtol=0, atol=1e-15)
    g = torch.randn_like(x)
    y.backward(g)
    torch.testing.assert_close(x.grad, torch.where(drop, 0.0, g / (1 - p)), rtol=0, atol=1e-15)
    assert torch.autograd.gradcheck(lambda t: dropout(t, p, generator=torch.Generator().manual_seed(2)),
                                    (torch.randn(6, 5, dtype=torch.float64, requires_grad=True),))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_one_pass_mask_and_scale_equal_the_two_passes(dtype):
    """The one-pass form (addcmul) rounds once, as x * keep then * scale does: bitwise the same,
    forward and backward, in bf16 (float op math) and fp32."""
    p = 0.1
    x = (torch.randn(8, 16, 64) * 5).to(dtype).requires_grad_()
    torch.manual_seed(2)
    y = dropout(x, p)
    torch.manual_seed(2)
    keep = (~drop_mask(x.shape, p)).to(torch.uint8)
    assert torch.equal(y, torch.mul(x.detach(), keep).mul_(1 / (1 - p)))
    g = torch.randn(x.shape).to(dtype)
    y.backward(g)
    assert torch.equal(x.grad, torch.mul(g, keep).mul_(1 / (1 - p)))


def test_identity_in_eval_zero_at_p1_and_bad_p():
    x = torch.randn(4, 8)
    m = Dropout(0.4).eval()
    assert m(x) is x
    assert dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.5)
    with pytest.raises(ValueError, match="dropout probability"):
        dropout(x, -0.1)


def test_attention_dropout_uses_the_mask_on_the_probabilities():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 5, 8).unbind(0)
    bias = torch.randn(1, 4, 5, 5)
    for impl in ("sdpa", "eager"):
        torch.manual_seed(9)
        got = attend(q, k, v, bias, scale=1.0, dropout_p=0.3, implementation=impl)
        torch.manual_seed(9)
        drop = drop_mask((2, 4, 5, 5), 0.3)
        probs = (q @ k.transpose(-1, -2) + bias).softmax(-1)
        torch.testing.assert_close(got, torch.where(drop, 0.0, probs / 0.7) @ v)
    # no dropout: SDPA's kernel, equal to the plain formula
    torch.testing.assert_close(attend(q, k, v, bias, scale=1.0), attend(q, k, v, bias, scale=1.0,
                                                                         implementation="eager"))


def test_t5_training_dropout_matches_its_expectation():
    """Averaged over many masks, a training-mode T5 forward approaches the eval-mode one: the masks
    drop with rate p and rescale (a biased mask or a missing 1 / (1 - p) would show here)."""
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset("t5-tiny", dropout_rate=0.1))
    assert isinstance(model.encoder.dropout, Dropout)
    ids = torch.randint(3, 200, (2, 6))
    block = model.encoder.blocks[0]
    x = model.shared(ids)
    with torch.no_grad():
        ff_eval = block.ff.eval()(x)
        block.ff.train()
        ff_mean = torch.stack([block.ff(x) for _ in range(4000)]).mean(0)
    # the FFN's hidden dropout is linear in its input: the mean converges to the eval output
    assert (ff_mean - ff_eval).abs().max() < 0.05 * ff_eval.abs().max()
    model.train()
    loss = model(ids, labels=ids[:, :4]).loss
    loss.backward()
    assert torch.isfinite(loss) and model.shared.weight.grad.abs().sum() > 0


def test_electra_training_attention_uses_the_mask_and_the_padding():
    cfg = ElectraConfig.from_preset("electra-tiny", attention_probs_dropout_prob=0.2)
    attn = ElectraSelfAttention(cfg).train()
    x = torch.randn(2, 6, cfg.hidden_size)
    keep = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]).bool()[:, None, None, :]
    torch.manual_seed(4)
    got = attn(x, keep)
    H, N = cfg.hidden_size, cfg.num_attention_heads
    q, k, v = attn.qkv(x).view(2, 6, 3, N, H // N).permute(2, 0, 3, 1, 4)
    torch.manual_seed(4)
    drop = drop_mask((2, N, 6, 6), 0.2)
    scores = (q @ k.transpose(-1, -2)) / (H // N) ** 0.5
    probs = scores.masked_fill(~keep, float("-inf")).softmax(-1)
    y = (torch.where(drop, 0.0, probs / 0.8) @ v).transpose(1, 2).reshape(2, 6, H)
    torch.testing.assert_close(got, attn.out(y))
    attn.eval()  # eval: SDPA, no dropout
    torch.testing.assert_close(attn(x, keep), attn.out((probs @ v).transpose(1, 2).reshape(2, 6, H)))
