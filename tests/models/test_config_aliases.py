"""Small config-reading cases: transformers' alias keys, a string "architectures", an empty cache
variable, an override without its value."""

from __future__ import annotations

import warnings

import pytest

from t5electra.errors import ConfigError
from t5electra.models.registry import architecture
from t5electra.models.t5 import T5Config


def test_t5_alias_keys_set_the_fields():
    d = {"model_type": "t5", "vocab_size": 64, "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2,
         "head_dim": 8, "d_ff": 64}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = T5Config.from_dict(d)
    assert (cfg.d_model, cfg.num_heads, cfg.num_layers, cfg.d_kv) == (32, 4, 2, 8)
    assert "hidden_size" not in cfg.extra
    assert T5Config.from_preset("t5-tiny", hidden_size=48).d_model == 48
    with pytest.raises(ConfigError, match="hidden_size=32 and d_model=64"):
        T5Config.from_dict({**d, "d_model": 64})


def test_architectures_as_a_string():
    arch = architecture({"model_type": "electra", "architectures": "ElectraForSequenceClassification"})
    assert arch.name == "ElectraForSequenceClassification"


def test_empty_cache_variable_is_unset(monkeypatch, tmp_path):
    from t5electra.data.packages import cache_root

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("T5ELECTRA_CACHE", "")
    assert cache_root() == tmp_path / ".cache" / "t5electra"


def test_override_without_value_is_refused():
    from t5electra.train.config import load_config

    with pytest.raises(ConfigError, match="--data.tokenizer has no value"):
        load_config(overrides=["--data.tokenizer", "--model.preset=t5-tiny"])
    assert load_config(overrides=["--data.tokenizer", "tok"]).data.tokenizer == "tok"
