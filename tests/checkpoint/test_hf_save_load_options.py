"""transformers' save_pretrained / from_pretrained keyword arguments on our models (modeling.py,
checkpoint/hf_options.py, checkpoint/io.py's save_weights): sharded saves both ways, state_dict=,
subfolder=, output_loading_info= and ignore_mismatched_sizes= (the same answers as transformers'),
device_map=, config= copied, config attributes as keyword arguments; the options that cannot be
honoured are refused by name."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from t5electra.checkpoint.io import shard_size_bytes
from t5electra.errors import CheckpointError, ConfigError, WeightsMismatchError
from t5electra.models import electra as E
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration

IDS = torch.tensor([[5, 6, 7, 8, 1], [9, 10, 11, 1, 0]])
DEC = torch.tensor([[0, 5, 6], [0, 7, 8]])


def t5(version="v1.1"):
    torch.manual_seed(0)
    v11 = version == "v1.1"
    return T5ForConditionalGeneration(T5Config(
        vocab_size=100, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, dropout_rate=0.0,
        feed_forward_proj="gated-gelu" if v11 else "relu", tie_word_embeddings=not v11, decoder_start_token_id=0)).eval()


def logits(model, hf=False):
    with torch.no_grad():
        if hf:
            return model(input_ids=IDS, decoder_input_ids=DEC).logits
        return model(IDS, decoder_input_ids=DEC).logits


def nonempty(info):
    return {k: v for k, v in info.items() if v}


# -- save_pretrained(max_shard_size=...) ---------------------------------------------------------
@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_sharded_save_loads_in_transformers_and_replaces_an_earlier_save(version, tmp_path):
    """It was refused ("max_shard_size is not supported"). Now shards + index as transformers writes
    them, read by transformers with nothing missing or unexpected; a later save in the same directory
    (one file, or shards of another count) leaves nothing of the earlier one that a reader would take."""
    ours = t5(version)
    d = ours.save_pretrained(tmp_path, max_shard_size="20KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists() and d == tmp_path
    assert set(index["weight_map"].values()) == set(shards)
    assert index["metadata"]["total_parameters"] == ours.num_parameters()
    assert index["metadata"]["total_size"] == sum(t.numel() * t.element_size() for p in shards
                                                  for t in load_file(tmp_path / p).values())
    theirs, info = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert nonempty(info) == {}
    torch.testing.assert_close(logits(theirs.eval(), hf=True), logits(ours), atol=1e-5, rtol=1e-5)
    assert torch.equal(logits(T5ForConditionalGeneration.from_pretrained(tmp_path)), logits(ours))
    # one file over the shards: the index and shards go (transformers and we would read either first)
    with torch.no_grad():
        ours.shared.weight.mul_(2)
    ours.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if "safetensors" in p.name) == ["model.safetensors"]
    # shards over one file: model.safetensors goes (transformers reads it before an index)
    with torch.no_grad():
        ours.shared.weight.mul_(2)
    ours.save_pretrained(tmp_path, max_shard_size=40_000)
    assert not (tmp_path / "model.safetensors").exists()
    assert set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values()) == {
        p.name for p in tmp_path.glob("model-*.safetensors")}  # the first save's 20KB shards are gone
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    torch.testing.assert_close(logits(theirs, hf=True), logits(ours), atol=1e-5, rtol=1e-5)


def test_sharded_tied_electra_generator_and_size_strings(tmp_path):
    gen = E.ElectraForMaskedLM(E.ElectraConfig.from_preset("electra-tiny-generator", vocab_size=120)).eval()
    gen.save_pretrained(tmp_path, max_shard_size="10kb")
    assert len(list(tmp_path.glob("model-*.safetensors"))) > 1
    theirs, info = transformers.ElectraForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert nonempty(info) == {}
    with torch.no_grad():
        torch.testing.assert_close(theirs.eval()(input_ids=IDS).logits, gen(IDS).logits, atol=1e-5, rtol=1e-5)
    assert [shard_size_bytes(s) for s in ("200KB", "5GB", "1.5MB", " 2 MiB ", 7)] == [200_000, 5 * 10**9, 1_500_000,
                                                                                     2 * 2**20, 7]
    for bad in ("5", "5XB", "-1KB", 0, True, "0KB"):
        with pytest.raises(ConfigError, match="max_shard_size"):
            gen.save_pretrained(tmp_path / "bad", max_shard_size=bad)
    assert not (tmp_path / "bad").exists()  # refused before anything is written


# -- save_pretrained(state_dict=...), and a path that is a file -----------------------------------------
def test_save_pretrained_state_dict_is_written_and_checked(tmp_path):
    """It was refused; transformers writes the given tensors (e.g. gathered from FSDP ranks)."""
    ours = t5("v1.1")
    sd = {k: v * 0.5 if k.endswith("ff.wo.weight") else v for k, v in ours.state_dict().items()}
    ours.save_pretrained(tmp_path / "sd", state_dict=sd)
    again = T5ForConditionalGeneration.from_pretrained(tmp_path / "sd")
    assert all(torch.equal(again.state_dict()[k], v) for k, v in sd.items())
    assert not torch.equal(again.decoder.blocks[0].ff.wo.weight, ours.decoder.blocks[0].ff.wo.weight)
    for bad, match in (({**sd, "mystery.weight": torch.zeros(1)}, r"names the model does not have: \['mystery"),
                       ({k: v for k, v in sd.items() if k != "lm_head.weight"}, r"lacks the model's: \['lm_head"),
                       ({**sd, "lm_head.weight": torch.zeros(3, 32)}, r"other shapes.*lm_head\.weight \(3, 32\) "
                                                                      r"\(model: \(100, 32\)\)"),
                       ([1, 2], "takes a dict of tensors")):
        with pytest.raises(ConfigError, match=match):
            ours.save_pretrained(tmp_path / "bad", state_dict=bad)
    (tmp_path / "afile").write_text("")
    with pytest.raises(CheckpointError, match="is a file, expected a directory"):
        ours.save_pretrained(tmp_path / "afile")


# -- from_pretrained options ----------------------------------------------------------------------
def test_loading_info_subfolder_and_mismatched_sizes_as_transformers(tmp_path):
    """output_loading_info, ignore_mismatched_sizes and subfolder were "ElectraConfig has no field ..."
    errors; now the same answers as transformers' for the same directory."""
    disc = E.ElectraForPreTraining(E.ElectraConfig.from_preset("electra-tiny", vocab_size=120))
    disc.save_pretrained(tmp_path / "repo" / "disc")
    for cls, theirs_cls, kw in ((E.ElectraForSequenceClassification, transformers.ElectraForSequenceClassification,
                                 dict(num_labels=3)),
                                (E.ElectraForMaskedLM, transformers.ElectraForMaskedLM, {})):
        ours, info = cls.from_pretrained(tmp_path / "repo", subfolder="disc", output_loading_info=True, **kw)
        _, theirs = theirs_cls.from_pretrained(tmp_path / "repo", subfolder="disc", output_loading_info=True, **kw)
        assert isinstance(ours, cls) and info == {k: v for k, v in theirs.items() if k in info}
        assert info["missing_keys"] and info["unexpected_keys"]
    clf = E.ElectraForSequenceClassification(E.ElectraConfig.from_preset("electra-tiny", vocab_size=120))
    clf.save_pretrained(tmp_path / "clf")
    with pytest.raises(WeightsMismatchError, match=r"'classifier\.out_proj\.(weight|bias)'.*\(2,( 32)?\).*"
                                                   r"\(5,( 32)?\).*ignore_mismatched_sizes=True"):
        E.ElectraForSequenceClassification.from_pretrained(tmp_path / "clf", num_labels=5)
    ours, info = E.ElectraForSequenceClassification.from_pretrained(
        tmp_path / "clf", num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True)
    _, theirs = transformers.ElectraForSequenceClassification.from_pretrained(
        tmp_path / "clf", num_labels=5, ignore_mismatched_sizes=True, output_loading_info=True)
    assert info["mismatched_keys"] == {(k, tuple(a), tuple(b)) for k, a, b in theirs["mismatched_keys"]} == {
        ("classifier.out_proj.weight", (2, 32), (5, 32)), ("classifier.out_proj.bias", (2,), (5,))}
    assert ours.classifier.out_proj.weight.shape == (5, 32) and ours.load_report.mismatched
    assert torch.equal(ours.classifier.dense.weight, clf.classifier.dense.weight)  # the rest is loaded
    # a fused parameter is reported under transformers' names, each its share of the rows
    t5(version="v1.1").save_pretrained(tmp_path / "t5")
    (tmp_path / "t5" / "config.json").write_text(json.dumps({**json.loads((tmp_path / "t5" / "config.json").read_text()),
                                                             "d_ff": 64}))
    _, info = T5ForConditionalGeneration.from_pretrained(tmp_path / "t5", ignore_mismatched_sizes=True,
                                                         output_loading_info=True)
    assert ("encoder.block.0.layer.1.DenseReluDense.wi_1.weight", (48, 32), (64, 32)) in info["mismatched_keys"]
    with pytest.raises(ConfigError, match="ignore_mismatched_sizes='yes'"):
        T5ForConditionalGeneration.from_pretrained(tmp_path / "t5", ignore_mismatched_sizes="yes")


def test_transformers_options_are_honoured_accepted_or_refused_by_name(tmp_path, monkeypatch):
    ours = t5()
    ours.save_pretrained(tmp_path)
    for kw in (dict(token=None, proxies=None, variant=None, weights_only=True, from_tf=False, state_dict=None),
               dict(device_map="cpu"), dict(device_map=torch.device("cpu")), dict(device_map={"": "cpu"})):
        m = T5ForConditionalGeneration.from_pretrained(tmp_path, **kw)
        assert m.device.type == "cpu" and torch.equal(logits(m), logits(ours))
    # were "T5Config has no field 'variant'" (and so on): now the option is named with what it takes
    for kw, match in ((dict(variant="fp16"), r"variant='fp16'\) is not supported here: variant can only be None"),
                      (dict(state_dict={}), r"state_dict=\{\}\) is not supported"),
                      (dict(quantization_config={"load_in_8bit": True}), "quantization_config can only be None"),
                      (dict(device_map={"encoder": 0, "decoder": 1}), "spreads a model over devices"),
                      (dict(device_map="tpu:9"), r"device_map='tpu:9': expected a device")):
        with pytest.raises(ConfigError, match=match):
            T5ForConditionalGeneration.from_pretrained(tmp_path, **kw)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device_map=0: no CUDA device is available here"):
        T5ForConditionalGeneration.from_pretrained(tmp_path, device_map=0)


def test_config_object_is_copied_and_config_attributes_are_keyword_arguments(tmp_path):
    """from_pretrained(config=cfg) built the model on the caller's object: resizing the vocabulary
    changed cfg.vocab_size, and the next from_pretrained(config=cfg) failed on the shapes. And
    output_attentions=True (transformers' own example) was "T5Config has no field 'output_attentions'"."""
    t5("v1.0").save_pretrained(tmp_path)
    cfg = T5Config.from_pretrained(tmp_path)
    model = T5ForConditionalGeneration.from_pretrained(tmp_path, config=cfg)
    model.resize_token_embeddings(104)
    assert cfg.vocab_size == 100 and model.config.vocab_size == 104
    T5ForConditionalGeneration.from_pretrained(tmp_path, config=cfg)
    model = T5ForConditionalGeneration.from_pretrained(tmp_path, output_attentions=True, return_dict=False)
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, output_attentions=True)
    assert model.config.output_attentions and theirs.config.output_attentions and not model.config.return_dict
    with torch.no_grad():
        out = model(IDS, decoder_input_ids=DEC)
        expected = theirs.eval()(input_ids=IDS, decoder_input_ids=DEC, use_cache=False).to_tuple()
    assert isinstance(out, tuple) and len(out) == len(expected) == 5  # logits, and the three attentions + encoder output
    with pytest.raises(ConfigError, match="output_attentions must be True or False"):
        T5ForConditionalGeneration.from_pretrained(tmp_path, output_attentions="yes")
    with pytest.raises(ConfigError, match="did you mean 'output_attentions'"):
        T5ForConditionalGeneration.from_pretrained(tmp_path, output_attention=True)
    gen = E.ElectraForMaskedLM(E.ElectraConfig.from_preset("electra-tiny-generator", vocab_size=120))
    gen.save_pretrained(tmp_path / "gen")
    assert not E.ElectraConfig.from_pretrained(tmp_path / "gen", tie_word_embeddings=False).tie_word_embeddings


def test_resize_token_embeddings_takes_mean_resizing():
    """transformers' third argument, mean_resizing, was a TypeError. False: the new rows are drawn as
    the model's init draws that layer (T5: std 1 for the embedding, d_model**-0.5 for an untied lm_head;
    ELECTRA: initializer_range), the old rows kept."""
    model = t5("v1.1")
    old_emb, old_head = model.shared.weight.clone(), model.lm_head.weight.clone()
    model.resize_token_embeddings(3100, mean_resizing=False)
    assert torch.equal(model.shared.weight[:100], old_emb) and torch.equal(model.lm_head.weight[:100], old_head)
    assert abs(model.shared.weight[100:].std().item() - 1.0) < 0.05
    assert abs(model.lm_head.weight[100:].std().item() - 32**-0.5) < 0.01
    model.resize_token_embeddings(3200)  # the default: the mean of the existing rows
    assert torch.equal(model.shared.weight[3150], model.shared.weight[3199])
    cfg = E.ElectraConfig.from_preset("electra-tiny-generator", vocab_size=120)
    cfg.tie_word_embeddings = False
    gen = E.ElectraForMaskedLM(cfg)
    gen.resize_token_embeddings(4120, mean_resizing=False)
    for w in (gen.get_input_embeddings().weight, gen.generator_lm_head.weight):
        assert abs(w[120:].std().item() - 0.02) < 0.002
    assert torch.equal(gen.generator_lm_head.bias[120:], torch.zeros(4000))
    with pytest.raises(ConfigError, match="mean_resizing must be True or False"):
        gen.resize_token_embeddings(10, mean_resizing=None)


def test_a_save_without_generation_options_removes_an_earlier_generation_config(tmp_path):
    """Saving again into a directory kept the earlier save's generation_config.json when the model
    had no generation options any more: the reloaded model decoded with the old options."""
    model = t5("v1.1")
    model.generation_config = {"max_new_tokens": 3, "num_beams": 2}
    model.save_pretrained(tmp_path)
    assert T5ForConditionalGeneration.from_pretrained(tmp_path).generation_config.num_beams == 2
    model.generation_config = {}
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "generation_config.json").exists()
    again = T5ForConditionalGeneration.from_pretrained(tmp_path)
    assert again.generation_config.num_beams is None and again.generation_config.max_new_tokens is None


def test_use_safetensors_false_reads_the_bin_files_as_transformers(tmp_path):
    """use_safetensors=False was refused ("can only be True or None"), even for a directory holding
    only pytorch_model.bin; now the .bin files are read, as transformers reads them."""
    first, second = t5("v1.1"), t5("v1.1")
    with torch.no_grad():
        second.shared.weight.mul_(2)
    first.save_pretrained(tmp_path)
    torch.save(second.hf_keymap(second.config).to_hf(second.state_dict()), tmp_path / "pytorch_model.bin")
    assert torch.equal(logits(T5ForConditionalGeneration.from_pretrained(tmp_path)), logits(first))
    from_bin = T5ForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=False)
    assert torch.equal(logits(from_bin), logits(second))
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=False).eval()
    torch.testing.assert_close(logits(theirs, hf=True), logits(second), atol=1e-5, rtol=1e-5)
    (tmp_path / "pytorch_model.bin").unlink()
    with pytest.raises(CheckpointError, match=r"expected pytorch_model\.bin or pytorch_model\.bin\.index\.json "
                                              r"\(use_safetensors=False\) \(found: config\.json, model\.safetensors\)"):
        T5ForConditionalGeneration.from_pretrained(tmp_path, use_safetensors=False)
    with pytest.raises(ConfigError, match=r"use_safetensors='no'\): expected True or False"):
        T5ForConditionalGeneration.from_pretrained(tmp_path, use_safetensors="no")


def test_untying_a_tied_checkpoint_initialises_the_output_layer_as_transformers(tmp_path):
    """from_pretrained(tie_word_embeddings=False) on a tied checkpoint (its output layer is the
    embedding, not stored): a WeightsMismatchError here, a fresh output layer in transformers (the
    same missing key reported); every other weight loaded. Without the override a missing output
    layer of an untied model stays an error (a damaged file)."""
    gen = E.ElectraForMaskedLM(E.ElectraConfig.from_preset("electra-tiny", vocab_size=120))
    gen.save_pretrained(tmp_path / "gen")
    t5(version="v1.0").save_pretrained(tmp_path / "t5")
    for ours_cls, theirs_cls, d in ((E.ElectraForMaskedLM, transformers.ElectraForMaskedLM, "gen"),
                                    (T5ForConditionalGeneration, transformers.T5ForConditionalGeneration, "t5")):
        ours, info = ours_cls.from_pretrained(tmp_path / d, tie_word_embeddings=False, output_loading_info=True)
        theirs, their_info = theirs_cls.from_pretrained(tmp_path / d, tie_word_embeddings=False,
                                                        output_loading_info=True)
        if d == "gen":
            assert nonempty(info) == nonempty(their_info) == {"missing_keys": {"generator_lm_head.weight"}}
        else:  # transformers 5.24 also leaves T5's encoder/decoder input embeddings untied and random
            # (tie_word_embeddings governs all three there); ours keep their one input embedding, `shared`
            assert nonempty(info) == {"missing_keys": {"lm_head.weight"}} and info["missing_keys"] < their_info[
                "missing_keys"]
        head, emb = ours.get_output_embeddings().weight, ours.get_input_embeddings().weight
        assert head is not emb and not torch.equal(head, emb)
        assert torch.equal(emb, theirs.get_input_embeddings().weight)
        untied = ours_cls.config_class.from_pretrained(tmp_path / d, tie_word_embeddings=False)
        _, same = ours_cls.from_pretrained(tmp_path / d, config=untied, output_loading_info=True)  # as a config
        assert same == info
    untied = tmp_path / "t5" / "untied"
    t5(version="v1.1").save_pretrained(untied)
    sd = load_file(untied / "model.safetensors")
    from safetensors.torch import save_file

    save_file({k: v for k, v in sd.items() if k != "lm_head.weight"}, untied / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(WeightsMismatchError, match=r"missing .*lm_head\.weight"):
        T5ForConditionalGeneration.from_pretrained(untied)
