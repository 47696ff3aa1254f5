"""Real pretrained weights, offline: sentence-transformers' all-MiniLM-L6-v2 (a 6-layer, 384-wide
BERT, model_type "bert", keys at the root) loads into every ELECTRA class and gives transformers'
BertModel hidden states on real text."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from t5electra.models import electra as E  # noqa: E402

TEXTS = [
    "ELECTRA trains a discriminator to spot replaced tokens.",
    "The quick brown fox jumps over the lazy dog, doesn't it?",
    "Tokyo's population is about 14 million (2023) — a 3.5% rise.",
    "A short one.",
]
HEADS = ["ElectraForPreTraining", "ElectraForMaskedLM", "ElectraForSequenceClassification",
         "ElectraForTokenClassification", "ElectraForQuestionAnswering"]


@pytest.fixture(scope="module")
def inputs(minilm_dir):
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    enc = tok(TEXTS[:2], TEXTS[2:], padding=True, return_tensors="pt")  # pairs: both token types
    assert enc["attention_mask"].min() == 0 and enc["token_type_ids"].max() == 1
    return dict(enc)


@pytest.fixture(scope="module")
def reference(minilm_dir, inputs):
    bert = transformers.BertModel.from_pretrained(minilm_dir, attn_implementation="eager").eval()
    with torch.no_grad():
        return bert(**inputs).last_hidden_state


@pytest.fixture(scope="module")
def encoder(minilm_dir):
    return E.ElectraModel.from_pretrained(minilm_dir)


def test_config_reads_as_an_electra_without_projection(encoder):
    c = encoder.config
    assert (c.vocab_size, c.hidden_size, c.embedding_size, c.num_hidden_layers, c.num_attention_heads) == (
        30522, 384, 384, 6, 12)
    assert not hasattr(encoder, "embeddings_project")
    assert sorted(encoder.load_report.unused) == ["embeddings.position_ids", "pooler.dense.bias", "pooler.dense.weight"]
    assert encoder.load_report.newly_initialized == []


def test_hidden_states_equal_bert(encoder, inputs, reference):
    with torch.no_grad():
        ours = encoder(**inputs).last_hidden_state
    real = inputs["attention_mask"].bool()
    torch.testing.assert_close(ours[real], reference[real], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-4)  # padding positions too


@pytest.mark.parametrize("name", HEADS)
def test_task_heads_load_it(name, minilm_dir, inputs, reference):
    kw = {} if name == "ElectraForQuestionAnswering" else {"num_labels": 3}
    model = getattr(E, name).from_pretrained(minilm_dir, **kw)
    assert model.load_report.newly_initialized and all(
        k.split(".")[0] in ("discriminator_predictions", "generator_predictions", "generator_lm_head", "classifier",
                            "qa_outputs") for k in model.load_report.newly_initialized)
    assert {"pooler.dense.weight", "pooler.dense.bias"} <= set(model.load_report.unused)
    with torch.no_grad():
        torch.testing.assert_close(model.electra(**inputs).last_hidden_state, reference, atol=1e-4, rtol=1e-4)
        out = model(**inputs)
    if name in ("ElectraForSequenceClassification", "ElectraForTokenClassification"):
        assert out.logits.shape[-1] == 3 and model.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}


def test_export_as_electra_loads_in_transformers(encoder, inputs, reference, tmp_path):
    encoder.save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "electra" and cfg["embedding_size"] == 384
    hf = transformers.ElectraModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(**inputs).last_hidden_state, reference, atol=1e-4, rtol=1e-4)
