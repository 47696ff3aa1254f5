"""ElectraConfig refuses impossible shapes and rates with a ConfigError naming the field."""

from __future__ import annotations

import pytest

from t5electra.errors import ConfigError
from t5electra.models.electra import ElectraConfig


@pytest.mark.parametrize("kwargs, field", [
    ({"num_attention_heads": 0}, "num_attention_heads"), ({"num_attention_heads": -4}, "num_attention_heads"),
    ({"hidden_size": 0}, "hidden_size"), ({"hidden_size": -256}, "hidden_size"),
    ({"hidden_dropout_prob": 1.5}, "hidden_dropout_prob"), ({"attention_probs_dropout_prob": -0.1},
                                                            "attention_probs_dropout_prob"),
    ({"classifier_dropout": 1.0}, "classifier_dropout"), ({"layer_norm_eps": -1.0}, "layer_norm_eps"),
    ({"layer_norm_eps": 0.0}, "layer_norm_eps"), ({"pad_token_id": 99999}, "pad_token_id"),
    ({"initializer_range": -1.0}, "initializer_range"), ({"vocab_size": True}, "vocab_size"),
])
def test_bad_values_are_config_errors(kwargs, field):
    with pytest.raises(ConfigError, match=field):
        ElectraConfig(**kwargs)


def test_good_values_pass():
    assert ElectraConfig(hidden_dropout_prob=0.0, pad_token_id=None).hidden_size == 256
    assert ElectraConfig.from_preset("electra-tiny").num_attention_heads == 4
