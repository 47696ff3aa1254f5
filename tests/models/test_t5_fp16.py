"""fp16 T5: the feed-forward output ``wo`` stays fp32 (transformers' _keep_in_fp32_modules), so a
T5 v1.1 whose residual stream outgrows fp16 (65504) still gives finite logits close to fp32's."""

from __future__ import annotations

import torch

from t5electra.models.t5 import T5Config, T5ForConditionalGeneration


def _large_activation_model() -> T5ForConditionalGeneration:
    torch.manual_seed(0)
    cfg = T5Config.from_preset("t5-v1_1-tiny", dropout_rate=0.0)
    model = T5ForConditionalGeneration(cfg).eval()
    with torch.no_grad():
        for block in model.encoder.blocks:
            block.ff.wo.weight.mul_(30000.0)  # T5 v1.1 xl/xxl grow their residual stream like this
    return model


def test_fp16_keeps_wo_in_fp32_and_stays_finite():
    model = _large_activation_model()
    ids = torch.randint(2, 256, (2, 10))
    dec = torch.randint(2, 256, (2, 4))
    with torch.no_grad():
        stream = []
        hook = model.encoder.blocks[-1].register_forward_hook(lambda m, i, o: stream.append(o.abs().max()))
        ref = model(input_ids=ids, decoder_input_ids=dec).logits
        hook.remove()
    assert float(stream[0]) > 65504  # the fp32 residual stream is beyond fp16's range

    half = _large_activation_model().half()
    assert all(b.ff.wo.weight.dtype == torch.float32 for b in half.encoder.blocks + half.decoder.blocks)
    assert half.shared.weight.dtype == torch.float16 and half.encoder.blocks[0].ff.wi.weight.dtype == torch.float16
    with torch.no_grad():
        got = half(input_ids=ids, decoder_input_ids=dec).logits.float()
    assert torch.isfinite(got).all()
    # fp16 keeps 11 bits: the logits (|x| ~ 1..10) agree to a few fp16 ulps of their scale
    scale = float(ref.abs().max())
    assert float((got - ref).abs().max()) < 2e-2 * scale

    # without the fp32 wo (everything fp16) the same model overflows: the protection is what helps
    naive = _large_activation_model()
    torch.nn.Module.half(naive)
    with torch.no_grad():
        bad = naive(input_ids=ids, decoder_input_ids=dec).logits
    assert not torch.isfinite(bad).all()


def test_to_float16_and_back():
    model = _large_activation_model().to(torch.float16)
    assert model.encoder.blocks[0].ff.wo.weight.dtype == torch.float32
    model.to(torch.float32)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
