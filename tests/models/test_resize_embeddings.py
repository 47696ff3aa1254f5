"""``resize_token_embeddings`` and the embedding accessors (transformers' names): old rows and
logits kept, the new vocabulary saved so that transformers loads it with the same outputs."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from t5electra.errors import ConfigError  # noqa: E402
from t5electra.models import electra as E  # noqa: E402
from tiny_t5 import spread_tiny_t5  # noqa: E402

IDS = torch.tensor([[5, 6, 7, 8, 1], [9, 10, 11, 1, 0]])


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_t5_resize_keeps_old_logits_and_round_trips_through_transformers(version, tmp_path):
    model = spread_tiny_t5(version, 0, 100)
    dec = torch.tensor([[0, 5, 6], [0, 7, 8]])
    with torch.no_grad():
        before = model(IDS, decoder_input_ids=dec).logits
    emb = model.resize_token_embeddings(103, pad_to_multiple_of=8)  # 104 rows
    assert emb is model.get_input_embeddings() and emb.num_embeddings == 104 and model.config.vocab_size == 104
    head = model.get_output_embeddings()  # tied (v1.0): a Linear over the embedding's own weight, as transformers'
    assert head.out_features == 104 and (head.weight is emb.weight) == (version == "v1.0")
    with torch.no_grad():
        after = model(IDS, decoder_input_ids=dec).logits
        ids = torch.cat([IDS, torch.tensor([[103], [102]])], 1)  # new tokens are valid input now
        model(ids, decoder_input_ids=dec)
    assert after.shape[-1] == 104
    torch.testing.assert_close(after[..., :100], before, atol=1e-5, rtol=1e-5)
    model.save_pretrained(tmp_path)
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert theirs.get_input_embeddings().num_embeddings == 104
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=IDS, decoder_input_ids=dec).logits, after, atol=1e-4, rtol=1e-4)
    assert model.resize_token_embeddings() is model.get_input_embeddings()  # None: unchanged


def test_electra_generator_resize_keeps_old_logits_its_bias_and_the_tie(tmp_path):
    torch.manual_seed(0)
    model = E.ElectraForMaskedLM(E.ElectraConfig.from_preset("electra-tiny-generator", vocab_size=120)).eval()
    with torch.no_grad():
        model.generator_lm_head.bias.normal_()
        before = model(IDS).logits
    model.resize_token_embeddings(125)
    with torch.no_grad():
        after = model(IDS).logits
    assert after.shape[-1] == 125 and model.config.vocab_size == 125
    torch.testing.assert_close(after[..., :120], before, atol=1e-5, rtol=1e-5)
    assert torch.equal(model.generator_lm_head.bias[120:], torch.zeros(5))
    head = model.get_output_embeddings()  # as transformers': the tied weight itself, with the bias
    assert head.weight is model.get_input_embeddings().weight and head.bias is model.generator_lm_head.bias
    with torch.no_grad():
        torch.testing.assert_close(head(model.generator_predictions(model.electra(IDS).last_hidden_state)), after)
    model.save_pretrained(tmp_path)
    theirs = transformers.ElectraForMaskedLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(theirs(input_ids=IDS).logits, after, atol=1e-4, rtol=1e-4)
    cls = E.ElectraForSequenceClassification(E.ElectraConfig.from_preset("electra-tiny", vocab_size=120))
    cls.get_input_embeddings().weight.requires_grad_(False)
    assert not cls.resize_token_embeddings(130).weight.requires_grad  # frozen stays frozen
    with pytest.raises(ConfigError, match="new_num_tokens must be a positive integer"):
        cls.resize_token_embeddings(0)
