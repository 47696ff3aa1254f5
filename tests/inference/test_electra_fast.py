"""ELECTRA speed paths (t5electra/models/electra.py, electra_rtd.py, train/optim.py) compute what
the plain formulas compute: sliced inference, in-place Gumbel noise, the fused AdamW option."""

from __future__ import annotations

import pytest
import torch

from t5electra.data.masking import uniform
from t5electra.models.electra import ElectraConfig, ElectraForPreTraining, ElectraModel
from t5electra.models.electra_rtd import ElectraPretrainer, gumbel_max_sample


def padded_batch(B: int = 7, T: int = 13, vocab: int = 512):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 9:] = 0
    mask[4, 3:] = 0
    ids[mask == 0] = 0
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 6:] = 1
    return ids, mask, types


@pytest.mark.parametrize("preset", ["electra-tiny", "electra-tiny-noproj"])
def test_sliced_inference_equals_whole_batch(preset):
    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig.from_preset(preset)).eval()
    ids, mask, types = padded_batch()
    calls = []
    model.electra.layers[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    with torch.inference_mode():
        model.electra.inference_chunk_tokens = 0                       # off: one pass
        whole = model(ids, mask, types).logits
        assert calls == [7]
        calls.clear()
        model.electra.inference_chunk_tokens = 3 * 13                 # 3 sequences per slice
        sliced = model(ids, mask, types).logits
        assert calls == [3, 3, 1]
    torch.testing.assert_close(sliced, whole, atol=1e-5, rtol=1e-5)
    calls.clear()
    with torch.no_grad():                                             # no_grad slices too
        torch.testing.assert_close(model(ids, mask, types).logits, whole, atol=1e-5, rtol=1e-5)
    assert calls == [3, 3, 1]


def test_no_slicing_with_autograd_or_small_batches():
    torch.manual_seed(0)
    model = ElectraModel(ElectraConfig.from_preset("electra-tiny")).eval()
    model.inference_chunk_tokens = 13
    ids, mask, _ = padded_batch()
    calls = []
    model.layers[0].register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    out = model(ids, mask).last_hidden_state                          # grad enabled: whole batch
    assert calls == [7] and out.requires_grad
    calls.clear()
    model.inference_chunk_tokens = 7 * 13                            # the batch fits in one slice
    with torch.no_grad():
        model(ids, mask)
    assert calls == [7]


def test_all_padding_sequence_gives_finite_outputs():
    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig.from_preset("electra-tiny")).eval()
    ids, mask, _ = padded_batch()
    mask[2] = 0
    with torch.no_grad():
        assert torch.isfinite(model(ids, mask).logits).all()


def test_in_place_gumbel_noise_is_the_plain_formula():
    logits = torch.randn(40, 300)
    got = gumbel_max_sample(logits, generator=torch.Generator().manual_seed(5))
    u = uniform(tuple(logits.shape), torch.Generator().manual_seed(5), logits.device)
    want = (logits + -torch.log(-torch.log(u + 1e-9) + 1e-9)).argmax(-1)
    assert torch.equal(got, want)


def test_pretrainer_step_unchanged_by_temperature_shortcut():
    """temperature 1.0 skips the division; the step equals one that divides by 1.0 explicitly."""
    cfg = ElectraConfig.from_preset("electra-tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = ElectraPretrainer(cfg, mask_token_id=3, special_token_ids=[1, 2])
    ids, mask, _ = padded_batch()
    out = model(ids, mask, generator=torch.Generator().manual_seed(9))
    model.config.temperature = 1.0 + 1e-12                            # takes the division branch
    ref = model(ids, mask, generator=torch.Generator().manual_seed(9))
    assert torch.equal(out.replaced_input_ids, ref.replaced_input_ids)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-6, rtol=1e-6)


def test_fused_adamw_option_gives_the_same_update():
    from t5electra.errors import ConfigError
    from t5electra.train.config import OptimSection
    from t5electra.train.optim import build_optimizer

    cfg = ElectraConfig.from_preset("electra-tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    ids, mask, types = padded_batch()
    models, opts = [], []
    for fused in (False, True):
        torch.manual_seed(0)
        models.append(ElectraForPreTraining(cfg))
        opts.append(build_optimizer(models[-1], OptimSection(lr=1e-3, weight_decay=0.01, fused=fused)))
    assert opts[1].defaults["fused"] and not opts[0].defaults["fused"]
    assert build_optimizer(models[0], OptimSection(lr=1e-3)).defaults["fused"]  # the default: fused
    assert not build_optimizer(models[0], OptimSection(name="adafactor")).defaults.get("fused")
    for _ in range(3):
        for model, opt in zip(models, opts):
            model(ids, mask, types, labels=(ids % 2)).loss.backward()
            opt.step()
            opt.zero_grad()
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    with pytest.raises(ConfigError, match="fused"):
        build_optimizer(models[0], OptimSection(name="adafactor", fused=True))
