"""transformers' save_pretrained keyword arguments on our models (modeling.py, checkpoint/io.py's
save_weights): sharded saves both ways, state_dict=."""

import json

import pytest
import torch
import transformers
from safetensors.torch import load_file

from t5electra.checkpoint.io import shard_size_bytes
from t5electra.errors import CheckpointError, ConfigError
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
