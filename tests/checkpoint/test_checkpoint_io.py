"""Checkpoint directories in the Hugging Face layout (checkpoint/io.py, keymap.py, modeling.py), tried
through T5: every format transformers writes, tied weights both ways, and each bad input -> a
specific error naming the file / key / shapes."""

import json
import re

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from t5electra.checkpoint.io import load_state_dict
from t5electra.errors import (CheckpointError, CheckpointNotFoundError, ConfigError, ModelTypeError,
                              UnsafeCheckpointError, WeightsMismatchError)
from t5electra.models.t5 import T5EncoderModel, T5ForConditionalGeneration

CFG = dict(vocab_size=128, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, dropout_rate=0.0)


def hf_model(version="v1_1"):
    tie = version == "v1_0"
    cfg = transformers.T5Config(**CFG, feed_forward_proj="relu" if tie else "gated-gelu", tie_word_embeddings=tie,
                                decoder_start_token_id=0)
    return transformers.T5ForConditionalGeneration(cfg).eval()


def logits(model, hf=False):
    ids = torch.arange(2, 26).view(2, 12)
    dec = torch.arange(30, 40).view(2, 5)
    with torch.no_grad():
        if hf:
            return model(input_ids=ids, decoder_input_ids=dec).logits
        return model(ids, decoder_input_ids=dec).logits


@pytest.fixture(scope="module")
def hf_v11():
    torch.manual_seed(0)
    hf = hf_model("v1_1")
    # transformers 5 ties even v1.1 at construction; a real v1.1 checkpoint has its own lm_head
    hf.lm_head.weight = torch.nn.Parameter(torch.randn(128, 32) * 32**-0.5)
    return hf


@pytest.fixture
def saved(tmp_path, hf_v11):
    hf_v11.save_pretrained(tmp_path)
    return tmp_path


def write_config(d, **changes):
    cfg = json.loads((d / "config.json").read_text())
    cfg.update(changes)
    (d / "config.json").write_text(json.dumps(cfg))


# -- formats ------------------------------------------------------------------------------------
def test_sharded_safetensors(tmp_path, hf_v11):
    hf_v11.save_pretrained(tmp_path, max_shard_size="30KB")
    shards = sorted(p.name for p in tmp_path.glob("model-*.safetensors"))
    assert len(shards) > 1 and (tmp_path / "model.safetensors.index.json").is_file()
    ours = T5ForConditionalGeneration.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(ours), logits(hf_v11, hf=True), atol=1e-5, rtol=1e-5)
    _, sources = load_state_dict(tmp_path)
    assert {s.rsplit("/", 1)[-1] for s in sources.values()} == set(shards)


def test_pytorch_model_bin_and_sharded_bin(tmp_path, hf_v11):
    sd = hf_v11.state_dict()  # all keys, tied copies included (what old transformers wrote)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    hf_v11.config.save_pretrained(tmp_path)
    torch.testing.assert_close(logits(T5ForConditionalGeneration.from_pretrained(tmp_path)), logits(hf_v11, hf=True))
    (tmp_path / "pytorch_model.bin").unlink()
    keys = sorted(sd)
    parts = {"pytorch_model-00001-of-00002.bin": keys[:40], "pytorch_model-00002-of-00002.bin": keys[40:]}
    for name, ks in parts.items():
        torch.save({k: sd[k] for k in ks}, tmp_path / name)
    index = {"weight_map": {k: name for name, ks in parts.items() for k in ks}}
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    torch.testing.assert_close(logits(T5ForConditionalGeneration.from_pretrained(tmp_path)), logits(hf_v11, hf=True))


def test_tied_checkpoint_in_every_spelling(tmp_path):
    torch.manual_seed(0)
    hf = hf_model("v1_0")
    ref = logits(hf, hf=True)
    hf.save_pretrained(tmp_path)
    assert set(k for k in load_file(tmp_path / "model.safetensors") if "block" not in k) == {
        "shared.weight", "encoder.final_layer_norm.weight", "decoder.final_layer_norm.weight"}
    ours = T5ForConditionalGeneration.from_pretrained(tmp_path)
    torch.testing.assert_close(logits(ours), ref)
    # the same with the tied copies stored too (embed_tokens, lm_head), or only as aliases
    sd = load_file(tmp_path / "model.safetensors")
    shared = sd.pop("shared.weight")
    for extra in ({"encoder.embed_tokens.weight": shared, "decoder.embed_tokens.weight": shared.clone(),
                   "lm_head.weight": shared.clone(), "shared.weight": shared.clone()},
                  {"encoder.embed_tokens.weight": shared}):
        save_file({**sd, **extra}, tmp_path / "model.safetensors")
        torch.testing.assert_close(logits(T5ForConditionalGeneration.from_pretrained(tmp_path)), ref)
    # our export of a tied model: shared.weight only, and transformers reads it back
    ours.save_pretrained(tmp_path / "out")
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert "lm_head.weight" not in out and "encoder.embed_tokens.weight" not in out
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(logits(again, hf=True), ref)
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_untied_checkpoint_both_ways(tmp_path, saved, hf_v11):
    ref = logits(hf_v11, hf=True)
    # transformers 5 writes tie_word_embeddings=True but a distinct lm_head: loads untied
    assert json.loads((saved / "config.json").read_text())["tie_word_embeddings"] is True
    ours = T5ForConditionalGeneration.from_pretrained(saved)
    assert ours.lm_head is not None and not ours.config.tie_word_embeddings
    torch.testing.assert_close(logits(ours), ref)
    # a google/t5-v1_1-style file: tie_word_embeddings=False, no scale key, embed_tokens copies stored
    sd = load_file(saved / "model.safetensors")
    sd["encoder.embed_tokens.weight"] = sd["shared.weight"].clone()
    save_file(sd, saved / "model.safetensors")
    cfg = json.loads((saved / "config.json").read_text())
    cfg.pop("scale_decoder_outputs")
    cfg["tie_word_embeddings"] = False
    (saved / "config.json").write_text(json.dumps(cfg))
    torch.testing.assert_close(logits(T5ForConditionalGeneration.from_pretrained(saved)), ref)
    ours.save_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["tie_word_embeddings"] is False
    assert "lm_head.weight" in load_file(tmp_path / "out" / "model.safetensors")
    again = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(logits(again, hf=True), ref)
    # an untied config whose file lacks lm_head is an error, not a silent random head
    del sd["lm_head.weight"]
    save_file(sd, saved / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"missing.*lm_head\.weight"):
        T5ForConditionalGeneration.from_pretrained(saved)


def test_config_overrides_and_roundtrip(saved):
    m = T5ForConditionalGeneration.from_pretrained(saved, dropout_rate=0.2)
    assert m.config.dropout_rate == 0.2 and not m.training
    assert m.config.extra["architectures"] == ["T5ForConditionalGeneration"]
    with pytest.raises(ConfigError, match="did you mean 'dropout_rate'"):
        T5ForConditionalGeneration.from_pretrained(saved, dropout_rat=0.2)
    enc = T5EncoderModel.from_pretrained(saved)
    assert enc.load_report.unused and all(k.startswith(("decoder.", "lm_head")) for k in enc.load_report.unused)


def test_dtype_argument_and_the_dtype_config_json_records(tmp_path, saved):
    """``dtype`` / ``torch_dtype``: a torch.dtype, its name or "auto" (config.json's record); a bf16
    model's save records bf16 under both names, so transformers reloads it as bf16 (it used to keep
    the loaded file's "float32" and transformers widened the weights)."""
    m = T5ForConditionalGeneration.from_pretrained(saved, dtype="bfloat16")
    assert m.dtype == torch.bfloat16
    assert T5ForConditionalGeneration.from_pretrained(saved, torch_dtype=torch.float16).dtype == torch.float16
    out = m.save_pretrained(tmp_path / "bf16")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == cfg["torch_dtype"] == "bfloat16"
    assert transformers.T5ForConditionalGeneration.from_pretrained(out).dtype == torch.bfloat16
    assert T5ForConditionalGeneration.from_pretrained(out, dtype="auto").dtype == torch.bfloat16
    assert T5ForConditionalGeneration.from_pretrained(out).dtype == torch.float32  # None: fp32, as before
    for bad, match in (("bfloat17", "expected a torch.dtype"), (torch.int64, "floating-point")):
        with pytest.raises(ConfigError, match=match):
            T5ForConditionalGeneration.from_pretrained(saved, dtype=bad)
    with pytest.raises(ConfigError, match="pass one"):
        T5ForConditionalGeneration.from_pretrained(saved, dtype=torch.bfloat16, torch_dtype=torch.float16)


# -- errors -------------------------------------------------------------------------------------
def test_config_json_that_is_not_an_object_is_a_config_error(saved):
    (saved / "config.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object.*found a list"):
        T5ForConditionalGeneration.from_pretrained(saved)


def test_missing_directory_config_or_weights(tmp_path, saved):
    with pytest.raises(CheckpointNotFoundError, match="does not exist"):
        T5ForConditionalGeneration.from_pretrained(tmp_path / "nope")
    (saved / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointNotFoundError, match=r"no weights in .*model\.safetensors.*found: config\.json"):
        T5ForConditionalGeneration.from_pretrained(saved)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CheckpointNotFoundError, match="config"):
        T5ForConditionalGeneration.from_pretrained(empty)


def test_unknown_feed_forward_proj_and_wrong_model_type(saved):
    write_config(saved, feed_forward_proj="gated-swiglu")
    with pytest.raises(ConfigError, match=r"config\.json.*feed_forward_proj='gated-swiglu'.*gelu"):
        T5ForConditionalGeneration.from_pretrained(saved)
    write_config(saved, feed_forward_proj="gated-gelu", model_type="bert")
    with pytest.raises(ModelTypeError, match="'bert'.*T5Config"):
        T5ForConditionalGeneration.from_pretrained(saved)


def rename_config_key(d, old, new):
    cfg = json.loads((d / "config.json").read_text())
    cfg[new] = cfg.pop(old)
    (d / "config.json").write_text(json.dumps(cfg))


@pytest.mark.parametrize("typo, field", [("dropout_rat", "dropout_rate"), ("d_mdel", "d_model")])
def test_misspelled_config_key_is_an_error_with_the_closest_field(saved, typo, field):
    # it used to be ignored: dropout 0.1 used silently, or a shape error blaming d_model=512
    rename_config_key(saved, field, typo)
    with pytest.raises(ConfigError, match=rf"config\.json: unknown key '{typo}' \(did you mean '{field}'\?\): as "
                                          rf"written it would be ignored and {field} left at its default"):
        T5ForConditionalGeneration.from_pretrained(saved)


def test_unknown_config_keys_warn_and_transformers_keys_load_quietly(saved):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the file transformers wrote: no warning
        T5ForConditionalGeneration.from_pretrained(saved)
    write_config(saved, my_notes="trained on Tuesday")
    with pytest.warns(UserWarning, match=r"config\.json: key 'my_notes' is not a T5Config field and is ignored"):
        model = T5ForConditionalGeneration.from_pretrained(saved)
    assert model.config.extra["my_notes"] == "trained on Tuesday"


def test_config_value_types_are_checked_and_numeric_strings_read(saved):
    write_config(saved, layer_norm_epsilon="1e-6")  # a str <= float TypeError before
    assert T5ForConditionalGeneration.from_pretrained(saved).config.layer_norm_epsilon == 1e-6
    write_config(saved, layer_norm_epsilon="tiny")
    with pytest.raises(ConfigError, match=r"config\.json: layer_norm_epsilon='tiny': expected a number"):
        T5ForConditionalGeneration.from_pretrained(saved)
    write_config(saved, layer_norm_epsilon=1e-6, num_heads=4.5)
    with pytest.raises(ConfigError, match=r"config\.json: num_heads=4\.5: expected an integer"):
        T5ForConditionalGeneration.from_pretrained(saved)
    write_config(saved, num_heads=4, tie_word_embeddings="yes")
    with pytest.raises(ConfigError, match=r"config\.json: tie_word_embeddings='yes': expected true or false"):
        T5ForConditionalGeneration.from_pretrained(saved)


def test_shape_mismatch_names_key_shapes_and_file(saved):
    write_config(saved, d_ff=64)
    with pytest.raises(WeightsMismatchError) as e:
        T5ForConditionalGeneration.from_pretrained(saved)
    msg = str(e.value)
    assert "model.safetensors" in msg and "DenseReluDense.wi_0.weight" in msg
    assert "(96, 32)" in msg and "(128, 32)" in msg  # fused wi_0 + wi_1: 2 x 48 in the file, 2 x 64 wanted


@pytest.mark.parametrize("version", ["v1_0", "v1_1"])
def test_our_own_state_dict_saved_as_is_loads(tmp_path, version):
    """A generic trainer (transformers' Trainer on a model that is not its PreTrainedModel, Accelerate,
    a hand-written loop) saves ``model.state_dict()`` with our names: it loads, tied or not, as
    model.safetensors or pytorch_model.bin (was: "unexpected tensors ... wrong model class?")."""
    torch.manual_seed(0)
    ours = T5ForConditionalGeneration.from_pretrained(_saved_hf(tmp_path / "hf", version))
    ours.save_pretrained(tmp_path / "native")
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, tmp_path / "native" / "model.safetensors")
    again = T5ForConditionalGeneration.from_pretrained(tmp_path / "native")
    assert torch.equal(logits(again), logits(ours))
    (tmp_path / "native" / "model.safetensors").unlink()
    torch.save(ours.state_dict(), tmp_path / "native" / "pytorch_model.bin")
    assert torch.equal(logits(T5ForConditionalGeneration.from_pretrained(tmp_path / "native")), logits(ours))
    # our names are checked as strictly as transformers': a missing tensor is named
    sd = {k: v for k, v in ours.state_dict().items() if k != "encoder.final_norm.weight"}
    (tmp_path / "native" / "pytorch_model.bin").unlink()
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "native" / "model.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"missing.*encoder\.final_norm\.weight"):
        T5ForConditionalGeneration.from_pretrained(tmp_path / "native")


def _saved_hf(d, version):
    hf_model(version).save_pretrained(d)
    return d


def test_missing_unexpected_and_half_fused_tensors(saved):
    path = saved / "model.safetensors"
    sd = load_file(path)
    save_file({**sd, "encoder.block.9.layer.0.SelfAttention.q.weight": torch.zeros(32, 32)}, path)
    with pytest.raises(WeightsMismatchError, match=r"has 'encoder\.block\.9.*q\.weight' but not .*k\.weight"):
        T5ForConditionalGeneration.from_pretrained(saved)
    save_file({**sd, "encoder.mystery.weight": torch.zeros(2)}, path)
    with pytest.raises(WeightsMismatchError, match=r"model\.safetensors: 1 unexpected.*encoder\.mystery\.weight"):
        T5ForConditionalGeneration.from_pretrained(saved)
    save_file({k: v for k, v in sd.items() if "final_layer_norm" not in k}, path)
    with pytest.raises(WeightsMismatchError, match=r"model\.safetensors.*missing.*final_norm"):
        T5ForConditionalGeneration.from_pretrained(saved)


def test_wrong_shape_attention_tensor_names_the_tensors(saved):
    path = saved / "model.safetensors"
    sd = load_file(path)
    key = "encoder.block.0.layer.0.SelfAttention.k.weight"
    save_file({**sd, key: torch.zeros(32, 16)}, path)  # q, v are (32, 32): torch.cat used to fail
    with pytest.raises(WeightsMismatchError, match=r"model\.safetensors: the tensors fused into "
                                                   r"'encoder\.blocks\.0\.self_attn\.qkv\.weight' must have one shape, got "
                                                   r".*q\.weight \(32, 32\), .*k\.weight \(32, 16\)"):
        T5ForConditionalGeneration.from_pretrained(saved)


@pytest.mark.parametrize("name", ["../outside.safetensors", "sub/../../outside.safetensors", "ABSOLUTE"])
def test_index_may_only_name_files_in_its_directory(tmp_path, hf_v11, name):
    ckpt = tmp_path / "a" / "ckpt"
    hf_v11.save_pretrained(ckpt)
    outside = tmp_path / "a" / "outside.safetensors"
    (ckpt / "model.safetensors").rename(outside)  # a real weights file, one level up
    name = str(outside) if name == "ABSOLUTE" else name
    weight_map = {k: name for k in load_file(outside)}
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(UnsafeCheckpointError, match=r"names shard .*outside.safetensors.*which is outside .*ckpt: an "
                                                    r"index may only name files in its own directory"):
        T5ForConditionalGeneration.from_pretrained(ckpt)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_weights_that_are_not_finite_are_refused_naming_the_tensor(saved, bad):
    path = saved / "model.safetensors"
    sd = load_file(path)
    key = "decoder.block.1.layer.2.DenseReluDense.wo.weight"
    sd[key][3, :5] = bad  # used to load silently and generate ""
    save_file(sd, path)
    with pytest.raises(CheckpointError, match=rf"refusing weights that are not finite: '{re.escape(key)}' in "
                                              rf"model\.safetensors \(5 of \d+ values NaN or infinite\)"):
        T5ForConditionalGeneration.from_pretrained(saved)


def test_corrupt_files_and_missing_shard(saved):
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"model\.safetensors: cannot read"):
        T5ForConditionalGeneration.from_pretrained(saved)
    (saved / "model.safetensors").unlink()
    (saved / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"shared.weight": "gone.safetensors"}}))
    with pytest.raises(CheckpointNotFoundError, match="'gone.safetensors'"):
        T5ForConditionalGeneration.from_pretrained(saved)


_executed = []


def _side_effect(x):
    _executed.append(x)
    return torch.zeros(1)


class _Evil:
    def __reduce__(self):  # unpickling would call _side_effect: code execution
        return (_side_effect, ("ran",))


def test_pickle_that_needs_code_execution_is_refused(saved, hf_v11):
    (saved / "model.safetensors").unlink()
    torch.save({**hf_v11.state_dict(), "evil": _Evil()}, saved / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match=r"^refused to load \S*pytorch_model\.bin: it is a pickle that would "
                                                   r"run code \(it calls [\w.]*_side_effect\), and only plain tensors"):
        T5ForConditionalGeneration.from_pretrained(saved)
    assert _executed == []


@pytest.mark.parametrize("content, match", [
    (b"garbage, not a zip", r"not a PyTorch checkpoint \(torch.save's format\): damaged, or a file of another format"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "a Git LFS pointer, not the weights"),
])
def test_a_bin_that_is_no_torch_file_is_not_called_a_pickle_that_runs_code(saved, content, match):
    """torch's weights-only unpickler rejects any byte it does not know: that was reported as "a
    pickle that would run code"."""
    (saved / "model.safetensors").unlink()
    (saved / "pytorch_model.bin").write_bytes(content)
    with pytest.raises(CheckpointError, match=match) as e:
        T5ForConditionalGeneration.from_pretrained(saved)
    assert not isinstance(e.value, UnsafeCheckpointError) and "run code" not in str(e.value)


def test_a_bin_of_something_else_than_a_state_dict_says_what_it_holds(saved, hf_v11):
    """"expected a dict of tensors, got dict" said nothing; a nested state dict is named."""
    (saved / "model.safetensors").unlink()
    torch.save({"state_dict": hf_v11.state_dict(), "epoch": 3}, saved / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"found a dict whose 'state_dict' entry holds the \d+ tensors .*"
                                              r"torch.save\(torch.load\(path, weights_only=True\)\['state_dict'\]"):
        T5ForConditionalGeneration.from_pretrained(saved)
    torch.save({"shared.weight": torch.zeros(2), "steps": [1, 2]}, saved / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"found a dict with entries that are not tensors: 'steps' \(list\)"):
        T5ForConditionalGeneration.from_pretrained(saved)
    torch.save([torch.zeros(2)], saved / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="expected a dict of tensors \\(a state dict\\), found a list"):
        T5ForConditionalGeneration.from_pretrained(saved)


def test_from_pretrained_takes_transformers_config(saved, hf_v11):
    """README: from_pretrained takes transformers' config=; it said "config must be a T5Config, got
    T5Config" (transformers' class of the same name)."""
    theirs = transformers.T5Config.from_pretrained(saved)
    ours = T5ForConditionalGeneration.from_pretrained(saved, config=theirs, dropout_rate=0.0)
    assert ours.config.dropout_rate == 0.0 and ours.config.feed_forward_proj == "gated-gelu"
    torch.testing.assert_close(logits(ours), logits(hf_v11, hf=True), atol=1e-5, rtol=1e-4)
    with pytest.raises(ModelTypeError, match="config=transformers.*ElectraConfig: model_type 'electra'"):
        T5ForConditionalGeneration.from_pretrained(saved, config=transformers.ElectraConfig())
    with pytest.raises(ConfigError, match="config must be a t5electra.T5Config or a transformers config, got "
                                          "builtins.dict"):
        T5ForConditionalGeneration.from_pretrained(saved, config=theirs.to_dict())


def test_a_sharded_fsdp_checkpoint_says_how_to_load_it(tmp_path):
    """An FSDP run's checkpoint keeps its weights as DCP shards in sharded/ (train/sharded.py): loading it
    as a model directory (`t5electra evaluate CKPT`, `generate`, `model.init_from=CKPT`) names `t5electra
    convert`, for a T5 checkpoint and for ELECTRA pretraining's discriminator/ (was: only "no weights",
    listing the files)."""
    ckpt = tmp_path / "checkpoints" / "step-00000004"
    (ckpt / "sharded").mkdir(parents=True)
    (ckpt / "sharded" / ".metadata").write_bytes(b"")
    (ckpt / "discriminator").mkdir()
    plain = tmp_path / "plain"
    plain.mkdir()
    for d in (ckpt, ckpt / "discriminator"):
        with pytest.raises(CheckpointNotFoundError, match=rf"no weights in .*; {re.escape(str(ckpt))} is a sharded "
                                                          rf"checkpoint of an FSDP run: `t5electra convert "):
            load_state_dict(d)
    with pytest.raises(CheckpointNotFoundError) as e:  # no sharded/ there: no such advice
        load_state_dict(plain)
    assert "convert" not in str(e.value)
