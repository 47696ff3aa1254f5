"""`t5electra quickstart --seeds K`: the quickstart and its no-pretraining control over several seeds
(experiments/quickstart_seeds.py), on the tiny plan; the comparison table's arithmetic on made-up
results; same seed -> the same run, another seed -> another run."""

from __future__ import annotations

import json
import statistics

import pytest

from t5electra.cli import main
from t5electra.errors import ConfigError
from t5electra.experiments.quickstart_seeds import comparison, compare, table_lines
from t5electra.models.electra import ElectraConfig
from t5electra.models.t5 import T5Config
from t5electra.recipes.quickstart import PLANS, finetune_electra, finetune_t5, quickstart
from t5electra.train.config import load_config
from t5electra.train.logging import read_metrics

RUNS = ("t5-pretrain", "electra-pretrain", "t5-sentiment", "electra-sentiment", "t5-sentiment-scratch",
        "electra-sentiment-scratch")


def _losses(run):
    """(split, step, loss) of every record of the run's metrics.jsonl that has a loss (the quickstart
    logs every 10 steps and at the last; the tiny fine-tuning's train loss is the mean of its 8 steps)."""
    return [(r.get("split", "train"), r["step"], r["loss"]) for r in read_metrics(run) if "loss" in r]


def test_tiny_comparison_over_two_seeds(tmp_path, capsys):
    out = tmp_path / "cmp"
    assert main(["quickstart", "--tiny", "--seeds", "2", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for text in ("seed 0 (1 of 2)", "seed 1 (2 of 2)", "5b/8 fine-tune T5 from scratch",
                 "6b/8 fine-tune ELECTRA from scratch", "no pretraining", "TF-IDF + logistic regr."):
        assert text in printed
    assert "7/8 fine-tune real MiniLM" not in printed
    # the second seed reuses the first one's tokenizers (copied, so its tokenizers stage is done)
    assert printed.count("already done") == 1
    for name in ("t5/spiece.model", "electra/vocab.txt"):
        assert (out / "seed-0/tokenizers" / name).read_bytes() == (out / "seed-1/tokenizers" / name).read_bytes()

    res = json.loads((out / "comparison.json").read_text())
    assert res["seeds"] == [0, 1] and res["plan"] == "tiny"
    assert res["test_examples"] == PLANS["tiny"].sentiment_subset
    assert list(res["models"]) == ["T5", "ELECTRA"]
    for name, pretrained, scratch in (("T5", "t5-sentiment", "t5-sentiment-scratch"),
                                      ("ELECTRA", "electra-sentiment", "electra-sentiment-scratch")):
        m = res["models"][name]
        for key, run in (("pretrained", pretrained), ("scratch", scratch)):
            per_seed = [json.loads((out / f"seed-{k}" / run / "results.json").read_text())["test"]["accuracy"]
                        for k in (0, 1)]
            assert m[key]["per_seed"] == per_seed
            assert m[key]["mean"] == pytest.approx(statistics.fmean(per_seed))
        assert m["difference"]["per_seed"] == pytest.approx([a - b for a, b in zip(m["pretrained"]["per_seed"],
                                                                                 m["scratch"]["per_seed"])])
    seed0 = json.loads((out / "seed-0" / "quickstart.json").read_text())
    assert res["tfidf"] == seed0["tfidf"]["test"]["accuracy"] and seed0["seed"] == 0
    assert "T5 (no pretraining, fine-tuned)" in [r["model"] for r in seed0["table"]]
    assert {"finetune_t5_scratch", "finetune_electra_scratch"} <= set(seed0["efficiency"])

    for k in (0, 1):
        for run in RUNS:
            assert load_config(out / f"seed-{k}" / run / "config.yaml").train.seed == k
    # the control has the pretrained model's config (same preset, plan fields and vocabulary)
    s0 = out / "seed-0"
    assert (T5Config.from_json_file(s0 / "t5-sentiment-scratch/model/config.json").to_dict()
            == T5Config.from_json_file(s0 / "t5-sentiment/model/config.json").to_dict())
    assert (ElectraConfig.from_json_file(s0 / "electra-sentiment-scratch/model/config.json").to_dict()
            == ElectraConfig.from_json_file(s0 / "electra-sentiment/model/config.json").to_dict())
    # another seed: another run (weights, data order) from the same data and tokenizers
    for run in ("t5-pretrain", "electra-pretrain", "t5-sentiment-scratch", "electra-sentiment-scratch"):
        assert _losses(s0 / run) and _losses(s0 / run) != _losses(out / "seed-1" / run)

    # the same seed again: the same fine-tuning losses, step by step
    plan, sentiment = PLANS["tiny"], s0 / "data" / "sentiment"
    finetune_t5(tmp_path / "again", plan, None, sentiment, 0, s0 / "tokenizers" / "t5", "t5-sentiment-scratch")
    finetune_electra(tmp_path / "again", plan, "electra-sentiment-scratch", None, sentiment,
                     plan.electra_finetune_steps, plan.electra_finetune_lr, plan.finetune_llrd, 0,
                     s0 / "tokenizers" / "electra")
    for run in ("t5-sentiment-scratch", "electra-sentiment-scratch"):
        assert _losses(tmp_path / "again" / run) == _losses(s0 / run)

    # a seed's directory is refused to another seed, before any work
    assert main(["quickstart", "--tiny", "--out", str(s0), "--seed", "1", "--threads", "1"]) == 1
    assert "trained with seed 0, not 1" in capsys.readouterr().err


def _fake_seed(root, seed, accuracies):
    """A finished quickstart directory: results.json of each run and quickstart.json."""
    root.mkdir(parents=True)
    for run, acc in accuracies.items():
        (root / run).mkdir()
        (root / run / "results.json").write_text(json.dumps({"test": {"accuracy": acc}}))
    (root / "quickstart.json").write_text(json.dumps({
        "seed": seed, "test_examples": 100, "tfidf": {"test": {"accuracy": 78.0}},
        "table": [{"model": "majority class", "accuracy": 52.0}]}))
    return root


def test_comparison_table_means_sds_and_paired_differences(tmp_path):
    runs = [_fake_seed(tmp_path / f"seed-{k}", k, {
        "t5-sentiment": 70.0 + 2 * k, "t5-sentiment-scratch": 60.0 + k,
        "electra-sentiment": 80.0 + k, "electra-sentiment-scratch": 79.0 - k}) for k in range(3)]
    res = comparison(runs)
    assert res["seeds"] == [0, 1, 2] and res["tfidf"] == 78.0 and res["majority_class"] == 52.0
    t5, el = res["models"]["T5"], res["models"]["ELECTRA"]
    assert t5["pretrained"] == {"per_seed": [70.0, 72.0, 74.0], "mean": 72.0, "sd": 2.0}  # sample sd
    assert t5["difference"]["per_seed"] == [10.0, 11.0, 12.0] and t5["difference"]["mean"] == 11.0
    assert el["difference"]["per_seed"] == [1.0, 3.0, 5.0] and el["difference"]["mean"] == 3.0
    assert res["targets"] == {"T5": {"pretrained_beats_tfidf": False, "pretraining_gain_at_least_3": True},
                              "ELECTRA": {"pretrained_beats_tfidf": True, "pretraining_gain_at_least_3": True}}
    assert "MiniLM-L6 (real weights)" not in res["models"]  # only when every seed has it
    text = "\n".join(table_lines(res))
    assert "72.0 ± 2.0" in text and "+11.0 ± 1.0" in text and "78.0" in text


def test_bad_seeds_are_refused_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="at least one seed"):
        compare(tmp_path / "a", seeds=0)
    with pytest.raises(ConfigError, match="seed >= 0"):
        compare(tmp_path / "b", seeds=2, first_seed=-1)
    with pytest.raises(ConfigError, match="seed >= 0"):
        quickstart(tmp_path / "c", tiny=True, seed=-3)
    with pytest.raises(ConfigError, match="choose one of"):
        compare(tmp_path / "d", plan="huge")
    assert not list(tmp_path.iterdir())
