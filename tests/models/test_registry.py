"""models/registry.py: the one place that maps a checkpoint's config.json to our class."""

import json

import pytest

from t5electra.errors import ConfigError
from t5electra.models import registry as R
from t5electra.models.electra import ElectraConfig, ElectraForMaskedLM, ElectraForSequenceClassification, ElectraModel
from t5electra.models.t5 import T5EncoderModel, T5ForConditionalGeneration, T5Model


def test_architectures_map_to_class_family_and_head():
    arch = R.architecture({"model_type": "bert", "architectures": ["BertForSequenceClassification"]})
    assert (arch.cls, arch.family, arch.head) == (ElectraForSequenceClassification, "electra", "classification")
    assert R.architecture({"model_type": "t5"}).cls is T5ForConditionalGeneration  # the family's default
    assert R.architecture({"model_type": "bert"}).cls is ElectraModel
    assert R.task_head(arch, {"num_labels": 1}) == "regression"
    assert R.task_head(arch, {"id2label": {"0": "a", "1": "b"}}) == "classification"


@pytest.mark.parametrize("model_type, prefix", [("mt5", "MT5"), ("umt5", "UMT5")])
def test_mt5_and_umt5_load_into_the_t5_classes(tmp_path, model_type, prefix):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": model_type}))
    assert R.model_kind(tmp_path) == "t5" and R.model_class(tmp_path) is T5ForConditionalGeneration
    for name, cls, head in ((f"{prefix}ForConditionalGeneration", T5ForConditionalGeneration, "seq2seq"),
                            (f"{prefix}Model", T5Model, "base"), (f"{prefix}EncoderModel", T5EncoderModel, "encoder")):
        arch = R.architecture({"model_type": model_type, "architectures": [name]})
        assert (arch.cls, arch.family, arch.head) == (cls, "t5", head)


def test_the_official_t5_checkpoints_old_architecture_name_loads_as_conditional_generation():
    """t5-small ... t5-11b's config.json say T5WithLMHeadModel (transformers' pre-3.0 name)."""
    arch = R.architecture({"model_type": "t5", "architectures": ["T5WithLMHeadModel"]})
    assert (arch.cls, arch.family, arch.head) == (T5ForConditionalGeneration, "t5", "seq2seq")


def test_unknown_type_or_architecture_of_the_wrong_family_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="neither T5 nor ELECTRA"):
        R.model_family({"model_type": "gpt2"})
    with pytest.raises(ConfigError, match="ElectraForMaskedLM.*is not one t5electra loads"):
        R.architecture({"model_type": "t5", "architectures": ["ElectraForMaskedLM"]})
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "electra", "architectures": ["ElectraForMaskedLM"]}))
    assert R.model_class(tmp_path) is ElectraForMaskedLM and R.model_kind(tmp_path) == "electra"


def test_each_electra_head_declares_its_own_checkpoint_keys():
    config = ElectraConfig(vocab_size=50, embedding_size=16, hidden_size=16, num_hidden_layers=1,
                           num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    for arch in R.ARCHITECTURES.values():
        if arch.family == "electra":
            keys = set(arch.cls(config).state_dict())
            assert set(arch.cls.hf_head_keys) <= keys, arch.name  # declared on the class, present in it
            assert bool(arch.cls.hf_head_keys) == (arch.head != "base"), arch.name
    assert ElectraModel.encoder_prefix == "" and ElectraForMaskedLM.encoder_prefix == "electra."
