"""The shared config machinery (t5electra/config.py) and key maps (checkpoint/keymap.py)."""

import dataclasses
import json

import pytest
import torch

from t5electra.checkpoint.keymap import KeyMap, Rule
from t5electra.config import ModelConfig, suggest
from t5electra.errors import ConfigError, ModelTypeError, WeightsMismatchError


@dataclasses.dataclass(kw_only=True)
class ToyConfig(ModelConfig):
    model_type = "toy"
    presets = {"toy-small": {"width": 8}}
    width: int = 4  # hidden width
    act: str = "relu"  # activation

    def validate(self):
        if self.act not in ("relu", "gelu"):
            raise ConfigError(f"act={self.act!r} is not one of relu, gelu")


def test_roundtrip_keeps_unknown_keys(tmp_path):
    cfg = ToyConfig.from_dict({"width": 6, "architectures": ["X"], "transformers_version": "5"})
    assert cfg.width == 6 and cfg.extra["architectures"] == ["X"]
    cfg.save_pretrained(tmp_path)
    d = json.loads((tmp_path / "config.json").read_text())
    assert d["architectures"] == ["X"] and d["model_type"] == "toy" and d["width"] == 6
    assert ToyConfig.from_pretrained(tmp_path) == cfg


def test_override_typo_suggests():
    with pytest.raises(ConfigError, match="did you mean 'width'"):
        ToyConfig().replace(widht=3)
    assert suggest("zzz", ["width"]) == ""


def test_preset_and_validation():
    assert ToyConfig.from_preset("toy-small", act="gelu").width == 8
    with pytest.raises(ConfigError, match="toy-small"):
        ToyConfig.from_preset("toy-smal")
    with pytest.raises(ConfigError, match="'tanh'"):
        ToyConfig.from_dict({"act": "tanh"}, source="x/config.json")


def test_wrong_model_type_names_file():
    with pytest.raises(ModelTypeError, match="cfg.json.*'t5'"):
        ToyConfig.from_dict({"model_type": "t5"}, source="cfg.json")


def test_keymap_fuses_and_splits():
    km = KeyMap(
        rules=[Rule("layers.{i}.qkv.weight", ("block.{i}.q.weight", "block.{i}.k.weight", "block.{i}.v.weight")),
               Rule("emb.weight", "shared.weight")],
        aliases={"encoder.embed_tokens.weight": "shared.weight"},
        ignore=(r"pooler\..*",),
    )
    hf = {f"block.{i}.{n}.weight": torch.randn(2, 3) for i in range(2) for n in "qkv"}
    hf["encoder.embed_tokens.weight"] = torch.randn(5, 3)
    hf["pooler.dense.weight"] = torch.randn(3, 3)
    ours, unused, origin = km.from_hf(hf)
    assert ours["layers.1.qkv.weight"].shape == (6, 3)
    assert torch.equal(ours["layers.1.qkv.weight"][2:4], hf["block.1.k.weight"])
    assert torch.equal(ours["emb.weight"], hf["encoder.embed_tokens.weight"])  # alias stood in
    assert unused == ["pooler.dense.weight"] and km.is_ignored(unused[0])
    assert origin["layers.0.qkv.weight"] == "block.0.q.weight"
    back = km.to_hf(ours)
    assert all(torch.equal(back[k], hf[k]) for k in back if k.startswith("block."))
    assert torch.equal(back["shared.weight"], hf["encoder.embed_tokens.weight"])


def test_keymap_partial_fused_group_is_an_error():
    km = KeyMap(rules=[Rule("qkv.{i}", ("q.{i}", "k.{i}"))])
    with pytest.raises(WeightsMismatchError, match="'k.0'"):
        km.from_hf({"q.0": torch.zeros(1)}, {"q.0": "model.safetensors"})
    with pytest.raises(WeightsMismatchError, match="no key-map rule"):
        km.to_hf({"nope": torch.zeros(1)})
