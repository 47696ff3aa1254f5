"""Our models inside transformers' own machinery (pipelines, Trainer, Seq2SeqTrainer) and the
attributes and call conventions that machinery relies on, each compared with transformers' model
holding the same weights."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from t5electra.models import electra as E  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(200)] + list("abcdefghij")


def electra_pair(name: str, tmp_path, **config):
    """(ours, transformers') ELECTRA ``name`` with the same random weights (transformers' saved, ours loads)."""
    cfg = E.ElectraConfig.from_preset("electra-tiny", **config)
    cfg.save_pretrained(tmp_path / "cfg")
    hf_cfg = transformers.ElectraConfig.from_pretrained(tmp_path / "cfg", attn_implementation="eager")
    hf = getattr(transformers, name)(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    return getattr(E, name).from_pretrained(tmp_path / "hf"), hf


def wordpiece_tokenizer(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))


def test_fill_mask_pipeline_runs_our_masked_lm(tmp_path):
    """The pipeline adds input_ids to the model's output by item assignment and reads it back by key."""
    ours, hf = electra_pair("ElectraForMaskedLM", tmp_path)
    tok = wordpiece_tokenizer(tmp_path)
    got = transformers.pipeline("fill-mask", model=ours, tokenizer=tok, device="cpu", top_k=3)("w1 [MASK] a b")
    want = transformers.pipeline("fill-mask", model=hf, tokenizer=tok, device="cpu", top_k=3)("w1 [MASK] a b")
    assert [r["token"] for r in got] == [r["token"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)
