"""save_pretrained into a directory that holds an earlier save: what is left of the earlier one must
not be loaded as (part of) the new one, by us or by transformers (the weights' shards and
generation_config.json: tests/checkpoint/test_checkpoint_io.py and the model tests)."""

from __future__ import annotations

import pytest

from t5electra.errors import ConfigError
from t5electra.models.electra import ElectraConfig, ElectraForPreTraining
from t5electra.models.electra_rtd import ElectraPretrainer
from t5electra.recipes.evaluate import resolve_model_dir
from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer
from t5electra.train.checkpointing import holds_model, is_electra_pretraining_output


def test_a_tokenizer_saved_over_another_kind_leaves_no_vocabulary_of_the_old_one(tmp_path, spiece_model_path,
                                                                                  small_dir):
    T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes()).save_pretrained(tmp_path / "tok")
    electra = ElectraTokenizer.from_pretrained(small_dir)
    electra.save_pretrained(tmp_path / "tok")
    assert not (tmp_path / "tok" / "spiece.model").exists()  # a loader looking for it first read a T5 tokenizer
    assert ElectraTokenizer.from_pretrained(tmp_path / "tok").get_vocab() == electra.get_vocab()


def test_a_pretraining_output_saved_over_a_single_model_is_what_loaders_find(tmp_path):
    cfg = ElectraConfig.from_preset("electra-tiny", vocab_size=64)
    ElectraForPreTraining(cfg).save_pretrained(tmp_path)  # a discriminator saved there first
    ElectraPretrainer(cfg, mask_token_id=4, special_token_ids=[2, 3]).save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists() and not (tmp_path / "model.safetensors").exists()
    assert holds_model(tmp_path) and is_electra_pretraining_output(tmp_path)
    with pytest.raises(ConfigError, match="is an ELECTRA pretraining output"):  # not the old model, scored
        resolve_model_dir(tmp_path)
