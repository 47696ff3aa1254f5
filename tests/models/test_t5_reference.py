"""Parity with transformers' T5 (the spec): weights copied both ways through checkpoint
directories, logits / loss / gradients within 1e-4 in fp32, on random tiny v1.0 and v1.1 models
with padded batches."""

import pytest
import torch
import transformers

from t5electra.errors import ConfigError, InvalidInputError
from t5electra.models.t5 import T5Config, T5EncoderModel, T5ForConditionalGeneration, T5Model
from t5electra.nn.position import relative_position_bucket
from tiny_t5 import assert_same_seq2seq_outputs

TOL = dict(atol=1e-4, rtol=1e-4)
# v1.0 (ReLU, tied, rescaled) and v1.1 (gated-GELU, untied); short max_distance for log buckets;
# a decoder deeper than the encoder to catch mixed-up layer counts.
CONFIGS = {
    "v1_0": dict(feed_forward_proj="relu", tie_word_embeddings=True),
    "v1_1": dict(feed_forward_proj="gated-gelu", tie_word_embeddings=False),
}
BASE = dict(vocab_size=200, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=3, num_heads=4,
            relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
            decoder_start_token_id=0)


def inputs():
    ids = torch.randint(2, 200, (3, 23))
    mask = torch.ones_like(ids)
    mask[1, 15:] = 0
    mask[2, :4] = 0
    labels = torch.randint(2, 200, (3, 21))
    labels[0, 17:] = -100
    dec_mask = (labels != -100).long()
    return ids, mask, labels, dec_mask


@pytest.fixture(params=sorted(CONFIGS))
def pair(request, tmp_path):
    """(ours, transformers') with the same weights: ours saved, transformers loads."""
    ours = T5ForConditionalGeneration(T5Config(**BASE, **CONFIGS[request.param])).eval()
    ours.save_pretrained(tmp_path / "ours")
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    return ours, hf


def test_logits_and_loss_match_transformers(pair):
    ours, hf = pair
    assert_same_seq2seq_outputs(ours, hf, inputs(), TOL)


def test_gradients_match_transformers_in_train_mode(pair):
    ours, hf = pair
    ours.train(), hf.train()  # dropout_rate=0: train mode must not change anything else
    ids, mask, labels, _ = inputs()
    ours(ids, mask, labels=labels).loss.backward()
    hf(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    hp = dict(hf.named_parameters())
    blk = "decoder.block.1.layer"
    torch.testing.assert_close(ours.shared.weight.grad, hp["shared.weight"].grad, **TOL)
    qkv = torch.cat([hp[f"{blk}.0.SelfAttention.{p}.weight"].grad for p in "qkv"])
    torch.testing.assert_close(ours.decoder.blocks[1].self_attn.qkv.weight.grad, qkv, **TOL)
    torch.testing.assert_close(ours.decoder.relative_attention_bias.weight.grad,
                               hp["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"].grad, **TOL)
    torch.testing.assert_close(ours.encoder.blocks[0].ff.wo.weight.grad,
                               hp["encoder.block.0.layer.1.DenseReluDense.wo.weight"].grad, **TOL)


@pytest.mark.parametrize("version", sorted(CONFIGS))
def test_transformers_checkpoint_loads_with_same_outputs(version, tmp_path):
    torch.manual_seed(1)
    hf = transformers.T5ForConditionalGeneration(transformers.T5Config(**BASE, **CONFIGS[version])).eval()
    hf.save_pretrained(tmp_path)  # transformers 5 writes tie_word_embeddings=True + scale_decoder_outputs
    ours = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert ours.config.rescale_decoder_output == (version == "v1_0")
    ids, mask, labels, dec_mask = inputs()
    with torch.no_grad():
        a = ours(ids, mask, decoder_attention_mask=dec_mask, labels=labels)
        b = hf(input_ids=ids, attention_mask=mask, decoder_attention_mask=dec_mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, **TOL)
    torch.testing.assert_close(a.loss, b.loss, **TOL)


def test_encoder_model_and_base_model_match_transformers(tmp_path):
    torch.manual_seed(2)
    full = T5ForConditionalGeneration(T5Config(**BASE, **CONFIGS["v1_1"]))
    full.save_pretrained(tmp_path)
    ids, mask, labels, dec_mask = inputs()
    dec_ids = full.prepare_decoder_input_ids_from_labels(labels)
    with torch.no_grad():
        # a full seq2seq checkpoint loads into the encoder-only class (decoder ignored), as in transformers
        ours_enc = T5EncoderModel.from_pretrained(tmp_path)
        hf_enc = transformers.T5EncoderModel.from_pretrained(tmp_path).eval()
        torch.testing.assert_close(ours_enc(ids, mask).last_hidden_state,
                                   hf_enc(input_ids=ids, attention_mask=mask).last_hidden_state, **TOL)
        ours_base = T5Model.from_pretrained(tmp_path)
        hf_base = transformers.T5Model.from_pretrained(tmp_path).eval()
        a = ours_base(ids, mask, decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask)
        b = hf_base(input_ids=ids, attention_mask=mask, decoder_input_ids=dec_ids, decoder_attention_mask=dec_mask)
        torch.testing.assert_close(a.last_hidden_state, b.last_hidden_state, **TOL)
        # and the encoder-only export loads in transformers
        ours_enc.save_pretrained(tmp_path / "enc")
        again = transformers.T5EncoderModel.from_pretrained(tmp_path / "enc").eval()
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask).last_hidden_state,
                                   ours_enc(ids, mask).last_hidden_state, **TOL)


def test_bucket_function_matches_transformers():
    rel = torch.arange(-600, 601)[None, :] - torch.arange(0, 5)[:, None]
    for bidirectional in (True, False):
        for nb, md in ((32, 128), (8, 20), (64, 256)):
            ours = relative_position_bucket(rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md)
            ref = transformers.models.t5.modeling_t5.T5Attention._relative_position_bucket(
                rel, bidirectional=bidirectional, num_buckets=nb, max_distance=md)
            assert torch.equal(ours, ref)


def test_preset_shapes_match_transformers():
    for name in ("t5-small", "t5-v1_1-small"):
        cfg = T5Config.from_preset(name)
        with torch.device("meta"):
            ours = T5ForConditionalGeneration(cfg)
            hf = transformers.T5ForConditionalGeneration(transformers.T5Config(
                **{k: v for k, v in cfg.to_dict().items() if k != "model_type"}))
        hf_shapes = {k: tuple(v.shape) for k, v in hf.state_dict().items()}
        exported = ours.hf_keymap(cfg).to_hf(ours.state_dict())
        for k, v in exported.items():
            assert hf_shapes[k] == tuple(v.shape), k
        expected = set(hf_shapes) - {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight"}
        assert set(exported) - {"lm_head.weight"} == expected


def test_get_encoder_is_called_as_transformers_and_its_output_feeds_the_model(pair):
    ours, hf = pair
    ids, mask, labels, dec_mask = inputs()
    with torch.no_grad():
        enc = ours.get_encoder()(input_ids=ids, attention_mask=mask)
        torch.testing.assert_close(enc.last_hidden_state,
                                   hf.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state, **TOL)
        a = ours(encoder_outputs=enc, attention_mask=mask, labels=labels)
        b = hf(encoder_outputs=(enc.last_hidden_state,), attention_mask=mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, **TOL)
    encoder_only = T5EncoderModel(ours.config)
    assert encoder_only.get_encoder()(ids).last_hidden_state.shape == (3, 23, 32)


def test_transformers_call_options_return_dict_and_use_cache(pair):
    ours, hf = pair
    ids, mask, labels, _ = inputs()
    with torch.no_grad():
        out = ours(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False)
        loss, logits = ours(input_ids=ids, attention_mask=mask, labels=labels, return_dict=False)[:2]
        hf_loss, hf_logits = hf(input_ids=ids, attention_mask=mask, labels=labels, return_dict=False)[:2]
    assert torch.equal(loss, out.loss) and torch.equal(logits, out.logits)
    torch.testing.assert_close(logits, hf_logits, **TOL)
    torch.testing.assert_close(loss, hf_loss, **TOL)
    with pytest.raises(InvalidInputError, match="return_dict must be True, False or None"):
        ours(input_ids=ids, labels=labels, return_dict="no")


def test_generation_config_json_gives_generate_its_defaults_as_in_transformers(tmp_path):
    import copy

    from tiny_t5 import spread_tiny_t5

    spread_tiny_t5("v1.1", 0, 200).save_pretrained(tmp_path / "src")  # equal stacks: transformers 5.24's
    hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "src").eval()  # cache needs them
    hf.generation_config.max_length, hf.generation_config.num_beams = 7, 2
    hf.save_pretrained(tmp_path / "hf")
    loaded = T5ForConditionalGeneration.from_pretrained(tmp_path / "hf")
    assert (loaded.generation_config.max_length, loaded.generation_config.num_beams) == (7, 2)
    ids, mask, _, _ = inputs()
    with torch.no_grad():
        ours_out, theirs = loaded.generate(ids, mask), hf.generate(input_ids=ids, attention_mask=mask)
    assert ours_out.shape == theirs.shape == (3, 7) and torch.equal(ours_out, theirs)
    # max_new_tokens in the call wins over the config's max_length (as in transformers)
    assert loaded.generate(ids, mask, max_new_tokens=3).shape == (3, 4)
    # save_pretrained (and so `t5electra convert`) writes it back for transformers
    copy.deepcopy(loaded).save_pretrained(tmp_path / "ours")
    back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "ours")
    assert (back.generation_config.max_length, back.generation_config.num_beams) == (7, 2)
    with pytest.raises(ConfigError, match="no option 'num_beam'"):
        loaded.generation_config.num_beam = 3
    # a config set on our own model: the file carries the token ids transformers reads from it alone
    # (it held only num_beams, and transformers' generate failed: "decoder_start_token_id ... defined")
    fresh = T5ForConditionalGeneration.from_pretrained(tmp_path / "src")
    fresh.generation_config.num_beams = 3
    fresh.save_pretrained(tmp_path / "fresh")
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "fresh").eval()
    with torch.no_grad():
        assert torch.equal(again.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4),
                           fresh.generate(ids, mask, max_new_tokens=4))


def test_from_pretrained_takes_transformers_loading_options(pair, tmp_path):
    ours, _ = pair
    ours.save_pretrained(tmp_path)
    model = T5ForConditionalGeneration.from_pretrained(
        tmp_path, local_files_only=True, low_cpu_mem_usage=True, use_safetensors=True, device_map="cpu",
        config=T5Config.from_pretrained(tmp_path), attn_implementation="eager", dropout_rate=0.0)
    ids, mask, labels, _ = inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(ids, mask, labels=labels).logits, ours(ids, mask, labels=labels).logits)
    with pytest.raises(ConfigError, match="device_map='auto' spreads a model over devices"):
        T5ForConditionalGeneration.from_pretrained(tmp_path, device_map="auto")


def test_transformers_trainer_style_calls(pair, tmp_path):
    """What transformers' Trainer and users call on a model: counted parameters, checkpointing kwargs,
    save options (safetensors only)."""
    ours, hf = pair
    assert ours.num_parameters() == hf.num_parameters()
    assert ours.num_parameters(exclude_embeddings=True) == hf.num_parameters(exclude_embeddings=True)
    ours.shared.weight.requires_grad_(False)
    assert ours.num_parameters(only_trainable=True) == ours.num_parameters() - ours.shared.weight.numel()
    ours.shared.weight.requires_grad_(True)
    ours.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ours.gradient_checkpointing_disable()
    assert ours.save_pretrained(tmp_path / "x", safe_serialization=True, push_to_hub=False) == tmp_path / "x"
    ours.save_pretrained(tmp_path / "y", is_main_process=False)
    assert not (tmp_path / "y").exists()
    with pytest.raises(ConfigError, match="safetensors only"):
        ours.save_pretrained(tmp_path / "z", safe_serialization=False)
    with pytest.raises(ConfigError, match=r"save_pretrained\(variant=...\) is not supported"):
        ours.save_pretrained(tmp_path / "z", variant="fp16")
