"""mT5 and umT5 (model_type ``mt5`` / ``umt5``) against transformers' MT5 / UMT5 classes: tiny random
models built from a config only, saved by one side and loaded by the other; logits, loss and
gradients within the tolerance of test_t5_reference.py (1e-4 in fp32: the same sums in another
order), generate token-identical; presets with the published shapes."""

import json
import warnings

import pytest
import torch
import transformers
from safetensors.torch import load_file

from t5electra.cli import main
from t5electra.errors import ConfigError, ModelTypeError
from t5electra.models import registry
from t5electra.models.t5 import T5Config, T5EncoderModel, T5ForConditionalGeneration, T5Model
from tiny_t5 import assert_same_seq2seq_outputs, spread_tiny_t5

TOL = dict(atol=1e-4, rtol=1e-4)
# a decoder deeper than the encoder catches mixed-up per-layer biases; few buckets reach the log ones
BASE = dict(vocab_size=200, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0)
HF = {"mt5": (transformers.MT5Config, transformers.MT5ForConditionalGeneration, transformers.MT5Model,
              transformers.MT5EncoderModel),
      "umt5": (transformers.UMT5Config, transformers.UMT5ForConditionalGeneration, transformers.UMT5Model,
               transformers.UMT5EncoderModel)}


def inputs():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, 200, (3, 23), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, :4] = 0
    labels = torch.randint(2, 200, (3, 21), generator=g)
    labels[0, 17:] = -100
    return ids, mask, labels, (labels != -100).long()


def hf_model(model_type, seed=0, untied=True):
    """transformers' model from a config only. transformers 5 always builds it tied; the published
    checkpoints have their own lm_head, so ``untied`` gives it one (saved as a distinct tensor)."""
    config_cls, cls = HF[model_type][:2]
    torch.manual_seed(seed)
    hf = cls(config_cls(**BASE)).eval()
    if untied:
        hf.lm_head.weight = torch.nn.Parameter(torch.randn(BASE["vocab_size"], BASE["d_model"]) * 0.2)
    return hf


def load_hf(cls, directory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(directory).eval()


@pytest.mark.parametrize("untied", [True, False], ids=["untied", "tied"])
@pytest.mark.parametrize("model_type", ["mt5", "umt5"])
def test_transformers_checkpoint_loads_with_same_outputs(model_type, untied, tmp_path):
    hf = hf_model(model_type, untied=untied)
    hf.save_pretrained(tmp_path)
    ours = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert ours.config.model_type == model_type
    assert ours.config.per_layer_position_bias == (model_type == "umt5")
    assert (ours.lm_head is None) == (not untied)
    assert_same_seq2seq_outputs(ours, hf, inputs(), TOL)


@pytest.mark.parametrize("model_type", ["mt5", "umt5"])
def test_our_checkpoint_loads_in_transformers_with_same_outputs(model_type, tmp_path):
    torch.manual_seed(3)
    ours = T5ForConditionalGeneration(T5Config(**BASE, model_type=model_type, feed_forward_proj="gated-gelu",
                                               tie_word_embeddings=False)).eval()
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    prefix = {"mt5": "MT5", "umt5": "UMT5"}[model_type]
    assert config["model_type"] == model_type and config["architectures"] == [f"{prefix}ForConditionalGeneration"]
    assert registry.model_class(tmp_path) is T5ForConditionalGeneration and registry.model_kind(tmp_path) == "t5"
    hf = load_hf(HF[model_type][1], tmp_path)
    assert type(hf.config) is HF[model_type][0]
    ids, mask, labels, dec_mask = inputs()
    assert_same_seq2seq_outputs(ours, hf, (ids, mask, labels, dec_mask), TOL, encoder=False)
    # and back: the file transformers writes loads into ours with the same outputs
    hf.save_pretrained(tmp_path / "again")
    again = T5ForConditionalGeneration.from_pretrained(tmp_path / "again")
    assert again.config.model_type == model_type
    with torch.no_grad():
        torch.testing.assert_close(again(ids, mask, labels=labels).logits, ours(ids, mask, labels=labels).logits,
                                   **TOL)


def test_umt5_gradients_reach_every_layers_own_bias_like_transformers(tmp_path):
    hf = hf_model("umt5", seed=1)
    hf.save_pretrained(tmp_path)
    ours = T5ForConditionalGeneration.from_pretrained(tmp_path)
    ours.train(), hf.train()  # dropout_rate=0
    ids, mask, labels, _ = inputs()
    ours(ids, mask, labels=labels).loss.backward()
    hf(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    hp = dict(hf.named_parameters())
    assert ours.encoder.relative_attention_bias is None and ours.decoder.relative_attention_bias is None
    for stack, n in (("encoder", 2), ("decoder", 3)):
        for i in range(n):
            ref = hp[f"{stack}.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"].grad
            mine = getattr(ours, stack).blocks[i].relative_attention_bias.weight.grad
            assert ref.abs().max() > 0  # each layer's bias is used, and only by its layer
            torch.testing.assert_close(mine, ref, **TOL)


@pytest.mark.parametrize("model_type", ["mt5", "umt5"])
def test_encoder_and_base_model_match_transformers(model_type, tmp_path):
    hf_model(model_type, seed=2).save_pretrained(tmp_path)
    _, _, hf_base_cls, hf_enc_cls = HF[model_type]
    ids, mask, labels, dec_mask = inputs()
    ours_base = T5Model.from_pretrained(tmp_path)
    dec_ids = ours_base.prepare_decoder_input_ids_from_labels(labels)
    with torch.no_grad():
        ours_enc = T5EncoderModel.from_pretrained(tmp_path)
        torch.testing.assert_close(
            ours_enc(ids, mask).last_hidden_state,
            load_hf(hf_enc_cls, tmp_path)(input_ids=ids, attention_mask=mask).last_hidden_state, **TOL)
        a = ours_base(ids, mask, decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask)
        b = load_hf(hf_base_cls, tmp_path)(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids,
                                           decoder_attention_mask=dec_mask)
        torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, **TOL)
        ours_enc.save_pretrained(tmp_path / "enc")  # named for its family, loads in transformers
        assert registry.model_class(tmp_path / "enc") is T5EncoderModel
        torch.testing.assert_close(
            load_hf(hf_enc_cls, tmp_path / "enc")(input_ids=ids, attention_mask=mask).last_hidden_state,
            ours_enc(ids, mask).last_hidden_state, **TOL)


@pytest.mark.parametrize("model_type", ["mt5", "umt5"])
def test_generate_is_token_identical_to_transformers(model_type, tmp_path):
    vocab, seed = 128, 0
    ours = spread_tiny_t5("v1.1", seed, vocab, model_type=model_type)
    ours.save_pretrained(tmp_path)
    hf = load_hf(HF[model_type][1], tmp_path)
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([10, 6, 3, 8])
    mask = (torch.arange(10)[None, :] < lengths[:, None]).long()
    ids = torch.randint(2, vocab, (4, 10), generator=g) * mask
    greedy = ours.generate(ids, mask, max_new_tokens=12)
    assert greedy[:, 1:].unique().numel() > 4  # not one repeated token: the comparison means something
    eos = int(torch.bincount(greedy[:, 3:].flatten(), minlength=vocab)[2:].argmax()) + 2
    for kw in ({"max_new_tokens": 12, "eos_token_id": eos},
               {"num_beams": 4, "num_return_sequences": 2, "max_new_tokens": 10, "eos_token_id": eos}):
        mine = ours.generate(ids, mask, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = hf.generate(ids, attention_mask=mask, **kw)
        assert mine.shape == theirs.shape and torch.equal(mine, theirs), (kw, mine, theirs)


def test_umt5_cached_decoding_equals_the_full_forward():
    model = spread_tiny_t5("v1.1", 0, 64, model_type="umt5")
    ids, mask = torch.randint(2, 64, (2, 9)), torch.ones(2, 9, dtype=torch.long)
    dec = torch.randint(2, 64, (2, 6))
    with torch.no_grad():
        full = model(ids, mask, decoder_input_ids=dec).logits
        cache = model.new_decoder_cache(model.encode(ids, mask), mask, max_length=8)
        steps = torch.cat([model.decode_step(dec[:, :3], cache)] + [model.decode_step(dec[:, t:t + 1], cache)
                                                                    for t in range(3, 6)], 1)
    assert cache.position_bias.shape[:2] == (2, 1)  # (layers, 1, heads, max_length, max_length)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["mt5-small", "umt5-small"])
def test_presets_have_the_shapes_of_transformers(name):
    cfg = T5Config.from_preset(name)
    config_cls, cls = HF[cfg.model_type][:2]
    with torch.device("meta"):
        ours = T5ForConditionalGeneration(cfg)
        hf = cls(config_cls(**{k: v for k, v in cfg.to_dict().items() if k != "model_type"}))
    hf_shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
    exported = ours.hf_keymap(cfg).to_hf(ours.state_dict())
    assert {k: tuple(v.shape) for k, v in exported.items()} == {
        k: s for k, s in hf_shapes.items() if k not in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")}
    assert not cfg.tie_word_embeddings and "lm_head.weight" in exported  # untied, as published
    if cfg.model_type == "mt5":  # transformers' MT5Config defaults are mt5-small's
        hf_cfg = transformers.MT5Config()
        for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads", "feed_forward_proj",
                  "relative_attention_num_buckets", "relative_attention_max_distance", "layer_norm_epsilon"):
            assert getattr(cfg, k) == getattr(hf_cfg, k), k


def test_presets_have_the_published_sizes():
    with torch.device("meta"):  # no memory: only the parameter count
        counts = {name: T5ForConditionalGeneration(T5Config.from_preset(name)).num_parameters()
                  for name in ("mt5-small", "mt5-base")}
    assert counts == {"mt5-small": 300_176_768, "mt5-base": 582_401_280}
    # umT5 (t5x scalable_t5/umt5): mT5's shapes, a 256,384-row vocabulary, a bias per layer
    for size, (d, ff, layers, heads) in {"small": (512, 1024, 8, 6), "base": (768, 2048, 12, 12)}.items():
        u, m = T5Config.from_preset(f"umt5-{size}"), T5Config.from_preset(f"mt5-{size}")
        assert (u.d_model, u.d_ff, u.num_layers, u.num_heads, u.vocab_size) == (d, ff, layers, heads, 256_384)
        assert (m.d_model, m.d_ff, m.num_layers, m.num_heads, m.vocab_size) == (d, ff, layers, heads, 250_112)
        assert u.per_layer_position_bias and not m.per_layer_position_bias


def test_model_type_is_a_checked_field_and_decides_rescaling_and_bias(tmp_path):
    with pytest.raises(ConfigError, match="model_type='mt6' is not one of t5, mt5, umt5"):
        T5Config(model_type="mt6")
    # transformers' MT5 never rescales the decoder output, tied or not; T5 and UMT5 do when tied
    assert not T5Config(model_type="mt5", tie_word_embeddings=True).rescale_decoder_output
    assert T5Config(model_type="umt5", tie_word_embeddings=True).rescale_decoder_output
    assert T5Config(model_type="mt5", scale_decoder_outputs=True).rescale_decoder_output
    # a published umT5 config.json (transformers 4.x) reads without warnings and writes its model_type back
    published = dict(BASE, model_type="umt5", architectures=["UMT5ForConditionalGeneration"], scalable_attention=True,
                     dense_act_fn="gelu_new", is_gated_act=True, feed_forward_proj="gated-gelu", output_past=True,
                     tie_word_embeddings=False, tokenizer_class="T5Tokenizer")
    (tmp_path / "config.json").write_text(json.dumps(published))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = T5Config.from_pretrained(tmp_path)
    assert cfg.per_layer_position_bias and cfg.to_dict()["model_type"] == "umt5"
    assert T5Config.model_type == "t5" and T5Config().model_type == "t5"
    with pytest.raises(ModelTypeError, match="model_type 'bert' cannot be loaded as T5Config"):
        T5Config.from_dict({"model_type": "bert"})


@pytest.mark.parametrize("model_type", ["mt5", "umt5"])
def test_convert_a_transformers_pickle_checkpoint_both_ways(model_type, tmp_path, capsys):
    """`t5electra convert`: transformers' pytorch_model.bin -> safetensors that both sides load alike."""
    hf = hf_model(model_type, seed=4)
    hf.save_pretrained(tmp_path / "src")
    sd = load_file(str(tmp_path / "src" / "model.safetensors"))
    (tmp_path / "src" / "model.safetensors").unlink()
    torch.save(sd, tmp_path / "src" / "pytorch_model.bin")  # as older hub checkpoints are stored
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "dst")]) == 0
    assert "verified" in capsys.readouterr().out
    config = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert config["model_type"] == model_type and config["architectures"][0].startswith(model_type.upper())
    ids, mask, labels, _ = inputs()
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask, labels=labels).logits
        torch.testing.assert_close(load_hf(HF[model_type][1], tmp_path / "dst")(
            input_ids=ids, attention_mask=mask, labels=labels).logits, want, **TOL)
        torch.testing.assert_close(T5ForConditionalGeneration.from_pretrained(tmp_path / "dst")(
            ids, mask, labels=labels).logits, want, **TOL)
