"""`t5electra generate` decodes as the model's generation_config.json says where no flag is given."""

from __future__ import annotations

import json

import torch

from t5electra.cli import main
from t5electra.generation import seq2seq
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.tokenizers import T5Tokenizer


def test_generate_defaults_come_from_generation_config(tmp_path, spiece_model_path, monkeypatch, capsys):
    d = tmp_path / "m"
    T5ForConditionalGeneration(T5Config.from_preset("t5-tiny", vocab_size=1152)).save_pretrained(d)
    T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes()).save_pretrained(d)
    gc = json.loads((d / "generation_config.json").read_text()) if (d / "generation_config.json").is_file() else {}
    (d / "generation_config.json").write_text(json.dumps({**gc, "max_new_tokens": 3, "num_beams": 2,
                                                          "no_repeat_ngram_size": 2}))
    seen = []

    def fake(model, input_ids, attention_mask, **kw):
        seen.append(kw)
        return torch.zeros((input_ids.shape[0] * (kw["num_return_sequences"] or 1), 2), dtype=torch.long)

    monkeypatch.setattr(seq2seq, "_generate", fake)
    assert main(["generate", str(d), "a text"]) == 0
    assert (seen[-1]["max_new_tokens"], seen[-1]["num_beams"], seen[-1]["no_repeat_ngram_size"]) == (3, 2, 2)
    assert seen[-1]["temperature"] == 1.0 and seen[-1]["do_sample"] is False
    assert main(["generate", str(d), "a text", "--max-new-tokens", "5", "--num-beams", "1"]) == 0
    assert (seen[-1]["max_new_tokens"], seen[-1]["num_beams"], seen[-1]["no_repeat_ngram_size"]) == (5, 1, 2)
    (d / "generation_config.json").write_text(json.dumps({**gc, "do_sample": True}))
    assert main(["generate", str(d), "a text", "--no-do-sample"]) == 0  # (sampling could not be turned off)
    assert seen[-1]["do_sample"] is False
    (d / "generation_config.json").write_text(json.dumps(gc))  # neither says: the command's defaults
    assert main(["generate", str(d), "a text"]) == 0
    assert (seen[-1]["max_new_tokens"], seen[-1]["num_beams"], seen[-1]["no_repeat_ngram_size"]) == (64, 1, 0)
    capsys.readouterr()
