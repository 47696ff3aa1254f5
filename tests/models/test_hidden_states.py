"""``output_hidden_states=True`` and ``output_attentions=True`` (transformers' arguments): the
embeddings' output and every layer's, and each layer's attention weights, equal to transformers'
own on the same weights (ELECTRA classes, T5 and umT5, T5EncoderModel)."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from t5electra.models import electra as E  # noqa: E402
from t5electra.models.t5 import T5EncoderModel  # noqa: E402
from tiny_t5 import spread_tiny_t5  # noqa: E402

IDS = torch.tensor([[5, 6, 7, 8, 9, 1], [9, 10, 11, 1, 0, 0]])
MASK = (IDS != 0).long()


ELECTRA_CLASSES = ["ElectraModel", "ElectraForSequenceClassification", "ElectraForMaskedLM", "ElectraForPreTraining",
                   "ElectraForTokenClassification", "ElectraForQuestionAnswering"]


def _electra_pair(name, tmp_path):
    """A random tiny ELECTRA class and transformers' (eager attention) with its weights."""
    torch.manual_seed(0)
    preset = "electra-tiny-generator" if name == "ElectraForMaskedLM" else "electra-tiny"
    model = getattr(E, name)(E.ElectraConfig.from_preset(preset, vocab_size=100)).eval()
    model.save_pretrained(tmp_path)
    return model, getattr(transformers, name).from_pretrained(tmp_path, attn_implementation="eager").eval()


def _close(ours, theirs):
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ELECTRA_CLASSES)
def test_electra_hidden_states_match_transformers(name, tmp_path):
    model, theirs = _electra_pair(name, tmp_path)
    with torch.no_grad():
        out = model(IDS, attention_mask=MASK, output_hidden_states=True)
        ref = theirs(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
        plain = model(IDS, attention_mask=MASK)
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1 and plain.hidden_states is None
    _close(out.hidden_states, ref.hidden_states)
    first = "last_hidden_state" if name == "ElectraModel" else "start_logits" if "Question" in name else "logits"
    torch.testing.assert_close(getattr(out, first), getattr(plain, first))  # the same outputs either way


def test_t5_encoder_hidden_states_match_transformers(tmp_path):
    full = spread_tiny_t5("v1.1", 0, 100)
    full.save_pretrained(tmp_path)
    ours = T5EncoderModel.from_pretrained(tmp_path).eval()
    theirs = transformers.T5EncoderModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        out = ours(IDS, attention_mask=MASK, output_hidden_states=True)
        ref = theirs(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    assert len(out.hidden_states) == ours.config.num_layers + 1
    _close(out.hidden_states, ref.hidden_states)
    torch.testing.assert_close(out.last_hidden_state, out.hidden_states[-1])


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_t5_encoder_decoder_hidden_states_match_transformers(version, tmp_path):
    model = spread_tiny_t5(version, 0, 100)
    model.save_pretrained(tmp_path)
    theirs = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    dec = torch.tensor([[0, 5, 6, 7], [0, 8, 9, 1]])
    with torch.no_grad():
        out = model(IDS, attention_mask=MASK, decoder_input_ids=dec, output_hidden_states=True)
        ref = theirs(input_ids=IDS, attention_mask=MASK, decoder_input_ids=dec, output_hidden_states=True)
        again = model(encoder_outputs=out, attention_mask=MASK, decoder_input_ids=dec, output_hidden_states=True)
    _close(out.encoder_hidden_states, ref.encoder_hidden_states)
    _close(out.decoder_hidden_states, ref.decoder_hidden_states)
    torch.testing.assert_close(out.logits, ref.logits, atol=2e-5, rtol=1e-4)
    assert again.encoder_hidden_states is None and len(again.decoder_hidden_states) == model.config.num_layers + 1


# -- output_attentions: each layer's weights, as transformers' eager attention returns them ------------

@pytest.mark.parametrize("name", ELECTRA_CLASSES)
def test_electra_attentions_match_transformers(name, tmp_path):
    model, theirs = _electra_pair(name, tmp_path)
    with torch.no_grad():
        out = model(IDS, attention_mask=MASK, output_attentions=True, output_hidden_states=True)
        ref = theirs(input_ids=IDS, attention_mask=MASK, output_attentions=True)
        plain = model(IDS, attention_mask=MASK)
    assert len(out.attentions) == model.config.num_hidden_layers and plain.attentions is None
    assert out.attentions[0].shape == (2, model.config.num_attention_heads, 6, 6)
    _close(out.attentions, ref.attentions)
    assert (out.attentions[0][1, :, :, 4:] == 0).all()  # no weight on padding keys
    first = "last_hidden_state" if name == "ElectraModel" else "start_logits" if "Question" in name else "logits"
    torch.testing.assert_close(getattr(out, first), getattr(plain, first))


@pytest.mark.parametrize("model_type", ["t5", "umt5"])  # umT5: a position bias per layer
def test_t5_attentions_match_transformers(model_type, tmp_path):
    model = spread_tiny_t5("v1.1", 0, 100, model_type=model_type)
    model.save_pretrained(tmp_path)
    cls = transformers.UMT5ForConditionalGeneration if model_type == "umt5" else transformers.T5ForConditionalGeneration
    theirs = cls.from_pretrained(tmp_path, attn_implementation="eager").eval()  # its sdpa returns none
    dec = torch.tensor([[0, 5, 6, 7], [0, 8, 9, 1]])
    with torch.no_grad():
        out = model(IDS, attention_mask=MASK, decoder_input_ids=dec, output_attentions=True)
        ref = theirs(input_ids=IDS, attention_mask=MASK, decoder_input_ids=dec, output_attentions=True)
        again = model(encoder_outputs=out, attention_mask=MASK, decoder_input_ids=dec, output_attentions=True)
        enc = T5EncoderModel.from_pretrained(tmp_path).eval()(IDS, attention_mask=MASK, output_attentions=True)
    for field in ("encoder_attentions", "decoder_attentions", "cross_attentions"):
        _close(getattr(out, field), getattr(ref, field))
    assert out.cross_attentions[0].shape == (2, model.config.num_heads, 4, 6)
    assert (out.decoder_attentions[0][0].triu(1) == 0).all()  # causal
    _close(enc.attentions, ref.encoder_attentions)
    assert again.encoder_attentions is None and len(again.decoder_attentions) == model.config.num_layers
    torch.testing.assert_close(out.logits, ref.logits, atol=2e-5, rtol=1e-4)
