"""T5 model (t5electra/models/t5.py, t5electra/nn/): config, invariants of docs/reference.md, fast paths
proven equal to plain ones (SDPA vs formula, cached vs uncached decoding), clear input errors."""

import math

import pytest
import torch
import torch.nn.functional as F

from t5electra.errors import ConfigError, InvalidInputError
from t5electra.models.t5 import (T5Config, T5EncoderModel, T5ForConditionalGeneration, T5Model, shift_right)
from t5electra.nn.attention import attend
from t5electra.nn.norm import RMSNorm
from t5electra.nn.position import relative_position_bucket

# Few buckets and a short max distance so that short test sequences reach the logarithmic buckets.
SMALL_BUCKETS = dict(relative_attention_num_buckets=8, relative_attention_max_distance=20)


def tiny(preset="t5-tiny", **kw):
    return T5ForConditionalGeneration(T5Config.from_preset(preset, **{**SMALL_BUCKETS, "dropout_rate": 0.0, **kw})).eval()


def batch(n=3, s=11, t=9, vocab=256):
    ids = torch.randint(3, vocab, (n, s))
    mask = torch.ones_like(ids)
    mask[1, s - 4:] = 0  # right padding
    mask[2, :2] = 0  # left padding
    labels = torch.randint(3, vocab, (n, t))
    labels[0, t - 3:] = -100
    return ids, mask, labels


# -- config -------------------------------------------------------------------------------------
def test_presets_have_published_shapes():
    with torch.device("meta"):  # no memory: only the parameter count
        counts = {name: T5ForConditionalGeneration(T5Config.from_preset(name)).num_parameters()
                  for name in ("t5-small", "t5-v1_1-small")}
    assert counts == {"t5-small": 60_506_624, "t5-v1_1-small": 76_961_152}  # the published sizes
    base = T5Config.from_preset("t5-base")
    assert (base.d_model, base.d_ff, base.num_heads, base.num_layers) == (768, 3072, 12, 12)
    large = T5Config.from_preset("t5-v1_1-large")
    assert (large.d_model, large.d_ff, large.num_heads, large.decoder_layers) == (1024, 2816, 16, 24)
    assert T5Config.from_preset("t5-large").feed_forward_proj == "relu"


def test_config_semantics_and_validation():
    c = T5Config.from_preset("t5-v1_1-tiny")
    assert c.is_gated_act and c.dense_act_fn == "gelu_new" and not c.rescale_decoder_output
    assert T5Config(feed_forward_proj="gelu").dense_act_fn == "gelu"  # exact GELU, as transformers
    assert T5Config(num_layers=3).decoder_layers == 3 and T5Config(num_layers=3).to_dict()["num_decoder_layers"] == 3
    assert T5Config(tie_word_embeddings=True, scale_decoder_outputs=False).rescale_decoder_output is False
    with pytest.raises(ConfigError, match=r"feed_forward_proj='gated-tanh'.*relu.*gelu_new"):
        T5Config(feed_forward_proj="gated-tanh")
    with pytest.raises(ConfigError, match="num_heads=0"):
        T5Config(num_heads=0)
    with pytest.raises(ConfigError, match="pad_token_id=300"):
        T5Config(vocab_size=256, pad_token_id=300)
    with pytest.raises(ConfigError, match="did you mean 'd_model'"):
        T5Config().replace(dmodel=3)
    # transformers' derived keys are recomputed, not carried along
    d = T5Config.from_dict({"feed_forward_proj": "gated-gelu", "dense_act_fn": "relu", "is_gated_act": False,
                            "architectures": ["T5ForConditionalGeneration"]})
    assert "dense_act_fn" not in d.to_dict() and d.to_dict()["architectures"] == ["T5ForConditionalGeneration"]


# -- docs/reference.md invariants --------------------------------------------------------------------
def _bucket_formula(rel: int, bidirectional: bool, nb: int, md: int) -> int:
    """docs/reference.md's description, element by element in plain Python."""
    bucket = 0
    if bidirectional:
        nb //= 2
        bucket += nb if rel > 0 else 0
        rel = abs(rel)
    else:
        rel = -min(rel, 0)
    max_exact = nb // 2
    if rel < max_exact:
        return bucket + rel
    return bucket + min(nb - 1, max_exact + int(math.log(rel / max_exact) / math.log(md / max_exact) * (nb - max_exact)))


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("nb,md", [(32, 128), (8, 20)])
def test_relative_position_buckets_follow_the_formula(bidirectional, nb, md):
    rel = torch.arange(-300, 301)
    got = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md).tolist()
    assert got == [_bucket_formula(r, bidirectional, nb, md) for r in rel.tolist()]
    if nb == 32 and bidirectional:  # spot values: 16 exact-ish per side, +16 for keys to the right
        assert got[300 + 1] == 17 and got[300 - 1] == 1 and got[300 + 300] == 31 and got[300 - 300] == 15


def test_position_bias_only_in_layer_zero_of_each_stack():
    m = tiny(num_decoder_layers=3)
    names = [k for k in m.state_dict() if "relative_attention_bias" in k]
    assert names == ["encoder.relative_attention_bias.weight", "decoder.relative_attention_bias.weight"]
    hf = m.hf_keymap(m.config).to_hf(m.state_dict())
    assert sorted(k for k in hf if "relative_attention_bias" in k) == [
        "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
        "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"]
    # every decoder layer receives the same bias: zeroing the table changes all layers' input at once
    calls = []
    for blk in m.decoder.blocks:
        blk.register_forward_pre_hook(lambda mod, args: calls.append(args[1]))
    ids, mask, labels = batch()
    m(ids, mask, labels=labels)
    # one tensor for all layers (views of it, no copy)
    assert len(calls) == 3 and all(c.data_ptr() == calls[0].data_ptr() and c.stride() == calls[0].stride()
                                   for c in calls)


def test_attention_is_not_scaled_and_sdpa_equals_formula():
    m = tiny()
    attn = m.encoder.blocks[0].self_attn
    assert attn.scale == 1.0
    x = torch.randn(2, 5, 32)
    bias = torch.randn(1, 4, 5, 5)
    q, k, v = attn.qkv(x).view(2, 5, 12, 8).transpose(1, 2).chunk(3, dim=1)
    manual = torch.softmax(q @ k.transpose(-1, -2) + bias, -1) @ v  # no 1/sqrt(d_kv)
    expected = attn.o(manual.transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(attn(x, bias), expected, atol=1e-6, rtol=1e-5)
    for scale in (1.0, None):
        a = attend(q, k, v, bias, scale=scale, implementation="sdpa")
        b = attend(q, k, v, bias, scale=scale, implementation="eager")
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset", ["t5-tiny", "t5-v1_1-tiny"])
def test_whole_model_sdpa_equals_eager(preset):
    m = tiny(preset)
    ids, mask, labels = batch()
    dec_mask = (labels != -100).long()
    with torch.no_grad():
        a = m(ids, mask, decoder_attention_mask=dec_mask, labels=labels)
        m.set_attn_implementation("eager")
        b = m(ids, mask, decoder_attention_mask=dec_mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match="flash"):
        m.set_attn_implementation("flash")


def test_rmsnorm_has_no_mean_subtraction_and_fp32_statistics():
    norm = RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(4, 16) + 3.0  # a large mean: LayerNorm would remove it, RMSNorm must not
    expected = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight
    torch.testing.assert_close(norm(x), expected)
    assert not torch.allclose(norm(x), F.layer_norm(x, (16,), norm.weight), atol=1e-2)
    assert "bias" not in dict(norm.named_parameters())
    # bf16: statistics in fp32, then cast before the bf16 weight (transformers' T5LayerNorm)
    norm_bf16 = RMSNorm(16).to(torch.bfloat16)
    xb = (torch.randn(4, 16) * 300).to(torch.bfloat16)  # x**2 would lose precision if summed in bf16
    ref = (xb.float() * torch.rsqrt(xb.float().pow(2).mean(-1, keepdim=True) + 1e-6)).to(torch.bfloat16)
    out = norm_bf16(xb)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref * norm_bf16.weight)


def test_mesh_tf_init_stds():
    c = T5Config(vocab_size=2048, d_model=128, d_kv=32, d_ff=512, num_layers=2, num_heads=4,
                 feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    m = T5ForConditionalGeneration(c)
    d, inner = c.d_model, c.num_heads * c.d_kv
    blk = m.decoder.blocks[0]
    expected = {
        "shared": (m.shared.weight, 1.0),
        "q": (blk.self_attn.qkv.weight[:inner], (d * c.d_kv) ** -0.5),
        "k,v": (blk.self_attn.qkv.weight[inner:], d**-0.5),
        "o": (blk.self_attn.o.weight, inner**-0.5),
        "cross q": (blk.cross_attn.q.weight, (d * c.d_kv) ** -0.5),
        "cross k,v": (blk.cross_attn.kv.weight, d**-0.5),
        "wi_0,wi_1": (blk.ff.wi.weight, d**-0.5),
        "wo": (blk.ff.wo.weight, c.d_ff**-0.5),
        "relative bias": (m.encoder.relative_attention_bias.weight, d**-0.5),
        "lm_head": (m.lm_head.weight, d**-0.5),  # NOT 1.0 (the bug that makes the first loss ~100)
    }
    for name, (w, std) in expected.items():
        tol = 0.15 if w.numel() < 1000 else 0.05
        assert abs(w.std().item() / std - 1) < tol, (name, w.std().item(), std)
    assert torch.equal(blk.ff_norm.weight, torch.ones(d))


@pytest.mark.parametrize("preset", ["t5-tiny", "t5-v1_1-tiny"])
def test_fresh_model_loss_is_near_ln_vocab(preset):
    v = 1000
    m = T5ForConditionalGeneration(T5Config.from_preset(preset, vocab_size=v, d_model=64, d_ff=128)).eval()
    ids, labels = torch.randint(0, v, (4, 16)), torch.randint(0, v, (4, 12))
    with torch.no_grad():
        loss = m(ids, labels=labels).loss.item()
    assert abs(loss - math.log(v)) < 1.0, loss
    if m.lm_head is not None:  # the same model with the buggy std 1.0 head is far off: the check can fail
        with torch.no_grad():
            m.lm_head.weight.normal_(std=1.0)
            assert m(ids, labels=labels).loss.item() > math.log(v) + 3


def test_labels_shift_right_with_pad_start_and_minus_100_to_pad():
    labels = torch.tensor([[5, 6, -100, -100], [7, -100, 8, 9]])
    assert shift_right(labels, 0, 0).tolist() == [[0, 5, 6, 0], [0, 7, 0, 8]]
    m = tiny()
    assert m.config.decoder_start_token_id == m.config.pad_token_id == 0
    ids, mask, labels = batch()
    out = m(ids, mask, labels=labels)
    explicit = m(ids, mask, decoder_input_ids=m.prepare_decoder_input_ids_from_labels(labels))
    torch.testing.assert_close(out.logits, explicit.logits)
    keep = labels != -100
    manual = F.cross_entropy(out.logits[keep], labels[keep])  # mean over non-ignored tokens
    torch.testing.assert_close(out.loss, manual)


def test_v1_0_rescales_tied_output_and_v1_1_does_not():
    for preset, tied in (("t5-tiny", True), ("t5-v1_1-tiny", False)):
        m = tiny(preset)
        assert (m.lm_head is None) == tied and m.config.rescale_decoder_output == tied
        h = torch.randn(2, 3, 32)
        w = m.shared.weight if tied else m.lm_head.weight
        torch.testing.assert_close(m.lm_logits(h), h @ w.T * (32**-0.5 if tied else 1.0))


def test_encoder_outputs_are_reusable_and_models_agree():
    m = tiny("t5-v1_1-tiny")
    ids, mask, labels = batch()
    out = m(ids, mask, labels=labels)
    for enc in (out, (out.encoder_last_hidden_state,), out.encoder_last_hidden_state):
        again = m(attention_mask=mask, labels=labels, encoder_outputs=enc)
        torch.testing.assert_close(again.logits, out.logits)
    torch.testing.assert_close(m.encode(ids, mask), out.encoder_last_hidden_state)
    base = T5Model(m.config)
    base.load_state_dict(m.state_dict(), strict=False)
    enc_only = T5EncoderModel(m.config)
    enc_only.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith(("decoder", "lm_head"))})
    torch.testing.assert_close(enc_only(ids, mask).last_hidden_state, out.encoder_last_hidden_state)
    hidden = base(ids, mask, decoder_input_ids=m.prepare_decoder_input_ids_from_labels(labels)).last_hidden_state
    torch.testing.assert_close(m.lm_logits(hidden), out.logits)
    assert out[0] is out.loss and len(out.to_tuple()) == 3


def test_dropout_and_training_step():
    m = T5ForConditionalGeneration(T5Config.from_preset("t5-v1_1-tiny", dropout_rate=0.3))
    ids, mask, labels = batch()
    m.train()
    a, b = m(ids, mask, labels=labels).loss, m(ids, mask, labels=labels).loss
    assert a.item() != b.item()  # dropout is active in train mode
    a.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    m.eval()
    with torch.no_grad():
        assert m(ids, mask, labels=labels).loss.item() == m(ids, mask, labels=labels).loss.item()


def test_bf16_forward_runs_close_to_fp32():
    m = tiny("t5-v1_1-tiny")
    ids, mask, labels = batch()
    with torch.no_grad():
        ref = m(ids, mask, labels=labels).loss
        out = m.to(torch.bfloat16)(ids, mask, labels=labels)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    assert abs(out.loss.item() - ref.item()) < 0.05


# -- cached decoding (the generation protocol) ---------------------------------------------------
@pytest.mark.parametrize("preset", ["t5-tiny", "t5-v1_1-tiny"])
def test_decode_step_equals_full_forward(preset):
    m = tiny(preset, num_decoder_layers=3)
    ids, mask, _ = batch()
    dec = torch.randint(0, 256, (3, 25))  # longer than max_distance: the log buckets are used
    full = m(ids, mask, decoder_input_ids=dec).logits
    enc = m.encode(ids, mask)
    cache = m.new_decoder_cache(enc, mask, max_length=30)
    steps = torch.cat([m.decode_step(dec[:, i:i + 1], cache) for i in range(25)], 1)
    assert cache.length == 25 and steps.dtype == torch.float32
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)
    cache = m.new_decoder_cache(enc, mask, max_length=25)
    chunks = torch.cat([m.decode_step(dec[:, a:b], cache) for a, b in ((0, 7), (7, 8), (8, 25))], 1)
    torch.testing.assert_close(chunks, full, atol=1e-5, rtol=1e-5)
    with pytest.raises(InvalidInputError, match="max_length=25"):
        m.decode_step(dec[:, :1], cache)
    with pytest.raises(InvalidInputError, match="2 rows"):
        m.decode_step(dec[:2, :1], m.new_decoder_cache(enc, mask, 4))


def test_cache_reorder_for_beams():
    m = tiny("t5-v1_1-tiny")
    ids, mask, _ = batch()
    g = 2
    dec = torch.randint(0, 256, (3 * g, 10))
    enc = m.encode(ids, mask)
    cache = m.new_decoder_cache(enc, mask, max_length=10)
    cache.reorder(torch.arange(3).repeat_interleave(g))  # expand to g beams per input
    assert cache.batch_size == 6 and cache.cross_kv.shape[2] == 3  # beams share the encoder K/V
    m.decode_step(dec[:, :4], cache)
    within = torch.tensor([1, 1, 2, 3, 5, 4])  # beam search keeps rows inside their input's group
    cache.reorder(within)
    assert cache.cross_kv.shape[2] == 3
    got = m.decode_step(dec[within, 4:], cache)  # row j continues the history of old row within[j]
    ref = m(ids.repeat_interleave(g, 0)[within], mask.repeat_interleave(g, 0)[within],
            decoder_input_ids=dec[within]).logits
    torch.testing.assert_close(got, ref[:, 4:], atol=1e-5, rtol=1e-5)
    # rows from different inputs in any order: encoder K/V are gathered
    cache = m.new_decoder_cache(enc, mask, max_length=10)
    m.decode_step(dec[:3, :3], cache)
    across = torch.tensor([2, 0, 0, 1])
    cache.reorder(across)
    assert cache.cross_kv.shape[2] == 4
    got = m.decode_step(dec[:4, 3:6], cache)
    ref = m(ids[across], mask[across], decoder_input_ids=torch.cat([dec[:3, :3][across], dec[:4, 3:6]], 1)).logits
    torch.testing.assert_close(got, ref[:, 3:], atol=1e-5, rtol=1e-5)
    with pytest.raises(InvalidInputError, match=r"\[0, 4\)"):
        cache.reorder(torch.tensor([0, 4]))


def test_generate_delegates_to_generate_module(monkeypatch):
    from t5electra.generation import seq2seq

    monkeypatch.setattr(seq2seq, "generate", lambda model, *a, **k: ("called", model, a, k))
    m = tiny()
    # with model.generation_config's defaults: the model config's token ids, as transformers' from_model_config
    token_ids = {k: getattr(m.config, k) for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id")}
    assert m.generate(1, max_new_tokens=2) == ("called", m, (1,), {**token_ids, "max_new_tokens": 2})


# -- bad input -> clear error --------------------------------------------------------------------
def test_ids_outside_vocab_and_bad_shapes_raise_clear_errors():
    m = tiny()
    ids, mask, labels = batch()
    with pytest.raises(InvalidInputError, match=r"input_ids contains id 256, outside the vocabulary \[0, 256\)"):
        m(ids.clone().fill_(256), labels=labels)
    with pytest.raises(InvalidInputError, match="decoder_input_ids contains id -1"):
        m(ids, decoder_input_ids=torch.full((3, 2), -1))
    bad = labels.clone()
    bad[0, 0] = -5
    with pytest.raises(InvalidInputError, match="labels contains id -5.*-100"):
        m(ids, labels=bad)
    with pytest.raises(InvalidInputError, match="integer tensor"):
        m(ids.float(), labels=labels)
    with pytest.raises(InvalidInputError, match=r"attention_mask has shape \(3, 5\)"):
        m(ids, mask[:, :5], labels=labels)
    with pytest.raises(InvalidInputError, match="decoder_input_ids or labels"):
        m(ids)
    with pytest.raises(InvalidInputError, match="input_ids contains id 999"):
        m.encode(torch.tensor([[999]]))
    with pytest.raises(InvalidInputError, match="encoder_outputs must be"):
        m(labels=labels, encoder_outputs="x")


def test_id_check_can_be_switched_off_for_hot_loops():
    m = tiny()
    ids, mask, labels = batch()
    m.check_inputs = False  # no host sync: the range check is skipped, torch's own error remains
    with pytest.raises(IndexError):
        m(ids.clone().fill_(256), labels=labels)
    with pytest.raises(InvalidInputError, match="integer tensor"):  # the free checks stay on
        m(ids.float(), labels=labels)


def test_training_after_generate_works():
    """The cached bucket indices made under generate()'s inference_mode must not be inference
    tensors, or the next training forward with the same lengths fails in backward."""
    from t5electra import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config.from_preset("t5-tiny"))
    ids = torch.randint(2, 200, (2, 7))
    model.eval().generate(ids, max_new_tokens=3)
    model.train()
    model(input_ids=ids, labels=torch.randint(2, 200, (2, 3))).loss.backward()
    assert model.shared.weight.grad is not None
