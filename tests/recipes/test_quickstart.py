"""`t5electra quickstart --tiny`: the whole pipeline (data, tokenizers, T5 and ELECTRA pretraining
and fine-tuning, evaluation, report, plots) on toy sizes; a second run resumes from the finished
stages."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from t5electra.cli import main
from t5electra.errors import ConfigError
import pytest
import torch
from processes import gone

from t5electra.recipes.quickstart import PLANS, _eval_batches, _overrides, sentiment_subset, tfidf_baseline
from t5electra.train.config import load_config
from t5electra.recipes.quickstart_lanes import run_lanes


def test_tiny_quickstart_runs_every_stage_and_resumes(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--tiny", "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for stage in ("1/8 data", "2/8 tokenizers", "3/8 pretrain T5", "4/8 pretrain ELECTRA", "5/8 fine-tune T5",
                  "6/8 fine-tune ELECTRA", "8/8 report", "sentiment test accuracy", "majority class"):
        assert stage in printed
    assert "MiniLM" not in printed  # --tiny skips the real-weights stage

    summary = json.loads((out / "quickstart.json").read_text())
    table = {row["model"]: row["accuracy"] for row in summary["table"]}
    assert list(table) == ["majority class", "TF-IDF + logistic regression (scikit-learn)",
                           "T5 (pretrained here, fine-tuned)", "ELECTRA (pretrained here, fine-tuned)"]
    assert all(0.0 <= acc <= 100.0 for acc in table.values())
    n = PLANS["tiny"].sentiment_subset
    assert summary["test_examples"] == n
    assert summary["tfidf"]["test"] == {"accuracy": table["TF-IDF + logistic regression (scikit-learn)"],
                                        "examples": n}
    t5 = json.loads((out / "t5-sentiment" / "results.json").read_text())
    electra = json.loads((out / "electra-sentiment" / "results.json").read_text())
    assert t5["test"]["accuracy"] == table["T5 (pretrained here, fine-tuned)"]
    assert electra["test"]["accuracy"] == table["ELECTRA (pretrained here, fine-tuned)"]
    # the baseline: the most frequent training answer, scored on the test split
    assert t5["majority_baseline"]["test"]["accuracy"] == table["majority class"]
    # compute efficiency of every training stage, and the demos on held-out sentences
    assert set(summary["efficiency"]) == {"pretrain_t5", "pretrain_electra", "finetune_t5", "finetune_electra"}
    for e in summary["efficiency"].values():
        assert e["flops"] > 0 and e["seconds"] > 0 and e["mfu"] == pytest.approx(
            e["flops"] / e["seconds"] / e["peak_flop_per_s"])
    assert 0.0 <= summary["demos"]["t5_span_filling_alphabetic"] <= 1.0
    assert 0.0 <= summary["demos"]["electra_rtd_auc"] <= 1.0
    assert summary["samples"]["electra_rtd_held_out"]["sentences"] > n // 2
    # samples: T5 answers, span filling, and a replaced-token probability for every ELECTRA token
    assert len(summary["samples"]["t5_sentiment"]) == 4
    for row in summary["samples"]["electra_rtd"]:
        assert row["tokens"] and all(0.0 <= p <= 1.0 for _, p in row["tokens"])
    for png in ("t5-pretrain/plots/loss.png", "electra-pretrain/plots/electra.png", "t5-sentiment/plots/loss.png"):
        assert str(out / png) in summary["plots"] and (out / png).is_file()
    for run in ("t5-pretrain", "electra-pretrain", "t5-sentiment", "electra-sentiment"):
        assert (out / run / "config.yaml").is_file()
    # the tiny plan picks checkpoints on a subset of the validation split; the real plans use all of it
    assert "max_batches: 1\n" in (out / "t5-sentiment" / "config.yaml").read_text()
    assert all(PLANS[p].eval_examples is None for p in ("full", "full-bf16", "full-amx", "full-avx512bf16",
                                                        "full-fast-fp32", "long"))
    assert load_config(None, _overrides({"eval.max_batches": _eval_batches(PLANS["full"])})).eval.max_batches is None

    # a second run finds every stage done and only reports again
    assert main(["quickstart", "--tiny", "--out", str(out), "--threads", "1"]) == 0
    assert capsys.readouterr().out.count("already done") == 5  # tokenizers, 2 pretrainings, 2 fine-tunings


def _runs(out):
    """Every training run's final test metrics and logged losses, by run directory."""
    found = {}
    for run in ("t5-pretrain", "electra-pretrain", "t5-sentiment", "electra-sentiment"):
        losses = [json.loads(line)["loss"] for line in (out / run / "metrics.jsonl").read_text().splitlines()
                  if '"loss"' in line]
        results = out / run / "results.json"
        found[run] = (losses, json.loads(results.read_text())["test"] if results.is_file() else None)
    return found


def test_two_lanes_give_the_numbers_of_the_stages_run_in_turn(tmp_path, capfd):
    """--threads 2 runs T5's stages in a second process beside ELECTRA's, one thread each: the same
    stages with the same seeds, so every loss and score equals the one-thread run's exactly."""
    assert main(["quickstart", "--tiny", "--out", str(tmp_path / "turn"), "--threads", "1", "--lanes", "1"]) == 0
    assert "two lanes" not in capfd.readouterr().out
    # the same tokenizers: tokenizers' WordPiece trainer is not deterministic from one process to the
    # next (huggingface/tokenizers#1794: ids in hash-map order break ties between merges)
    shutil.copytree(tmp_path / "turn" / "tokenizers", tmp_path / "lanes" / "tokenizers")
    assert main(["quickstart", "--tiny", "--out", str(tmp_path / "lanes"), "--threads", "2"]) == 0
    printed = capfd.readouterr().out
    assert "two lanes" in printed and "[t5] " in printed and "[electra] " in printed
    turn, lanes = _runs(tmp_path / "turn"), _runs(tmp_path / "lanes")
    assert all(losses for losses, _ in turn.values())
    assert lanes == turn
    summary = json.loads((tmp_path / "lanes" / "quickstart.json").read_text())
    assert summary["lanes"] == 2 and summary["threads"] == 1
    # two lanes of one thread from --threads 1 would be twice the threads asked for
    assert main(["quickstart", "--tiny", "--out", str(tmp_path / "x"), "--threads", "1", "--lanes", "2"]) == 1
    assert "give 2 or more threads" in capfd.readouterr().err
    assert set(summary["seconds"]) >= {"pretrain_t5", "finetune_t5", "pretrain_electra", "finetune_electra"}


@dataclasses.dataclass
class _Job:
    threads: int
    broken: str
    precision: str = "fp32"


def _stages(job, family):
    """One stage per family; the one named by ``job.broken`` raises (module level: a lane process
    imports it by name)."""
    def work():
        if family == job.broken:
            raise ValueError(f"the {family} stage broke")
    return [(family, f"{family} stage", "test", work, None)]


@pytest.mark.parametrize("lanes", [1, 2])
@pytest.mark.parametrize("broken", ["t5", "electra"])
def test_a_failing_stage_stops_the_quickstart_with_its_own_error(lanes, broken, capfd):
    """An error in either lane reaches the caller as itself (the T5 lane's from its process), and
    a lane that works reports its seconds."""
    with pytest.raises(ValueError, match=f"the {broken} stage broke"):
        run_lanes(_stages, _Job(1, broken), lanes, {}, print)
    timings = {}
    peaks = run_lanes(_stages, _Job(1, "none"), lanes, timings, print)
    assert set(timings) == set(peaks) == {"t5", "electra"}
    assert all(p > 0 for p in peaks.values())


def test_sentiment_subset_is_balanced_and_keeps_the_layout(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rows = [f"text {i}\t{1 if i < 50 else 0}\n" for i in range(100)]  # ordered by label, like the sample
    (src / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    sub = sentiment_subset(src, tmp_path / "sub", 10)
    header, *kept = (sub / "train.tsv").read_text().splitlines()
    assert header == "sentence\tlabel" and len(kept) == 10
    assert sorted(r.split("\t")[1] for r in kept) == ["0"] * 5 + ["1"] * 5


def _write_split(path, rows):
    path.write_text("sentence\tlabel\n" + "".join(f"{text}\t{label}\n" for text, label in rows))


def test_tfidf_baseline_learns_the_words_of_each_label(tmp_path):
    good = ["a wonderful film", "wonderful and moving", "moving , a great cast", "great fun"]
    bad = ["a dull film", "dull and tedious", "tedious , an awful plot", "awful mess"]
    _write_split(tmp_path / "train.tsv", [(t, 1) for t in good] + [(t, 0) for t in bad])
    _write_split(tmp_path / "validation.tsv", [("wonderful", 1), ("tedious", 0)])
    # the test split: 3 of 4 carry a word seen with its label; "great" is written with the wrong label
    _write_split(tmp_path / "test.tsv", [("a great film", 1), ("an awful film", 0), ("dull", 0), ("great", 0)])
    res = tfidf_baseline(tmp_path)
    assert res["validation"] == {"accuracy": 100.0, "examples": 2}
    assert res["test"] == {"accuracy": 75.0, "examples": 4}


def test_tfidf_baseline_needs_both_labels(tmp_path):
    for split in ("train", "validation", "test"):
        _write_split(tmp_path / f"{split}.tsv", [("a film", 1), ("another film", 1)])
    with pytest.raises(ValueError, match="both labels"):
        tfidf_baseline(tmp_path)


def test_unknown_plan_is_refused_before_any_work(tmp_path):
    from t5electra.errors import ConfigError
    from t5electra.recipes.quickstart import quickstart

    with pytest.raises(ConfigError, match="choose one of auto, full, full-bf16, full-amx, full-avx512bf16, full-fast-fp32, long, tiny"):
        quickstart(tmp_path / "qs", plan="huge")
    assert not (tmp_path / "qs").exists()


def test_settings_an_out_cannot_take_are_refused_before_any_work(tmp_path, capsys):
    """Another plan or language in a started OUT (its stages would be reused and reported as this
    run's), --seed/--control with --lang zh (ignored before), --seeds with options it drops."""
    from t5electra.cli import main
    from t5electra.errors import ConfigError
    from t5electra.recipes.quickstart import RUN_STAMP, check_run_stamp, quickstart

    out = tmp_path / "qs"
    check_run_stamp(out, None, {"lang": "en", "plan": "tiny", "precision": "auto"})
    assert (out / RUN_STAMP).is_file()
    with pytest.raises(ConfigError, match="started with plan 'tiny' \\(now 'full'\\)"):
        quickstart(out, plan="full", minilm=False)
    with pytest.raises(ConfigError, match="--lang zh does not take --seed, --control"):
        quickstart(tmp_path / "zh", tiny=True, lang="zh", seed=1, control=True)
    assert not (tmp_path / "zh").exists()
    assert main(["quickstart", "--seeds", "2", "--lang", "zh", "--precision", "fp32", "--out", str(tmp_path / "s")]) == 1
    assert "does not take --lang zh, --precision" in capsys.readouterr().err
    assert main(["quickstart", "--tiny", "--threads", "-2", "--out", str(tmp_path / "t")]) == 1
    assert "threads=-2" in capsys.readouterr().err


def test_training_precision_follows_the_cpu(monkeypatch, tmp_path):
    """'auto': bf16 autocast where the CPU multiplies bf16 natively, fp32 elsewhere; an explicit
    precision wins; a wrong one fails before any work."""
    import t5electra.recipes.quickstart as Q
    import t5electra.recipes.quickstart_plans as P  # where the plan functions read the machine

    plan = Q.PLANS["tiny"]
    monkeypatch.setattr(P, "native_bf16", lambda: True)
    assert Q.train_precision(plan) == "bf16"
    assert Q._common(Path("run"), plan)["train.precision"] == "bf16"
    monkeypatch.setattr(P, "native_bf16", lambda: False)
    assert Q.train_precision(plan) == "fp32"
    assert Q.train_precision(dataclasses.replace(plan, precision="bf16")) == "bf16"
    with pytest.raises(ConfigError, match="precision 'fp16'"):
        Q.quickstart(tmp_path / "unused", tiny=True, precision="fp16")
    # the default plan is sized to the machine: more steps where bf16 is native, or where one
    # thread's fp32 matmuls (on oneDNN) are fast enough for them, measured with one thread
    peaks = []

    def peak(dtype=torch.float32):
        peaks.append(torch.get_num_threads())
        return speed

    monkeypatch.setattr(P, "matmul_peak", peak)
    monkeypatch.setattr(P, "onednn_fp32_preferred", lambda: True)
    speed = Q.FAST_FP32_PEAK - 1e9
    assert Q.default_plan() == "full"
    assert Q.choose_plan()[1] == "no native bf16; fp32 matmul peak of one thread 94 GFLOP/s < 95"
    speed = Q.FAST_FP32_PEAK
    assert Q.choose_plan() == ("full-fast-fp32", "no native bf16; fp32 matmul peak of one thread 95 GFLOP/s >= 95")
    assert peaks == [1, 1, 1]
    monkeypatch.setattr(P, "onednn_fp32_preferred", lambda: False)  # MKL (AVX2): not measured, the small plan
    assert Q.choose_plan() == ("full", "no native bf16; fp32 on MKL") and len(peaks) == 3
    monkeypatch.setattr(P, "native_bf16", lambda: True)
    monkeypatch.setattr(P, "amx_bf16", lambda: False)  # AVX512-BF16 without AMX: 1.5x T5's pretraining
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"avx512f", "avx512_bf16"}))
    assert Q.choose_plan() == ("full-avx512bf16", "this CPU multiplies bf16 natively (AVX512-BF16, no AMX)")
    assert len(peaks) == 3  # no peak measured for it
    monkeypatch.setattr(P, "cpu_flags", lambda: frozenset({"bf16"}))  # ARM's BF16: not measured, full-bf16
    assert Q.choose_plan() == ("full-bf16", "this CPU multiplies bf16 natively") and len(peaks) == 3
    assert Q.default_plan() == "full-bf16" and Q.PLANS["full-bf16"].precision == "bf16"
    zen4, bf16 = Q.PLANS["full-avx512bf16"], Q.PLANS["full-bf16"]
    assert zen4.t5_pretrain_steps == bf16.t5_pretrain_steps * 3 // 2
    assert dataclasses.replace(zen4, t5_pretrain_steps=bf16.t5_pretrain_steps) == bf16  # nothing else differs
    # with AMX, one thread's bf16 matmul peak picks the larger T5 budget
    monkeypatch.setattr(P, "amx_bf16", lambda: True)
    dtypes = []
    monkeypatch.setattr(P, "matmul_peak", lambda dtype=torch.float32: dtypes.append((dtype, torch.get_num_threads()))
                        or speed)
    speed = Q.FAST_BF16_PEAK - 1e9
    assert Q.choose_plan() == ("full-bf16", "this CPU multiplies bf16 natively (AMX: one thread 1199 GFLOP/s < 1200)")
    speed = Q.FAST_BF16_PEAK
    assert Q.choose_plan() == ("full-amx", "this CPU multiplies bf16 on AMX: one thread 1200 GFLOP/s >= 1200")
    assert dtypes == [(torch.bfloat16, 1)] * 2
    amx, bf16 = Q.PLANS["full-amx"], Q.PLANS["full-bf16"]
    assert amx.t5_pretrain_steps == 2 * bf16.t5_pretrain_steps and amx.t5_finetune_steps > bf16.t5_finetune_steps
    assert dataclasses.replace(amx, t5_pretrain_steps=bf16.t5_pretrain_steps,
                               t5_finetune_steps=bf16.t5_finetune_steps) == bf16  # nothing else differs
    full, fast, fast32 = Q.PLANS["full"], Q.PLANS["full-bf16"], Q.PLANS["full-fast-fp32"]
    assert fast.t5_pretrain_steps > full.t5_pretrain_steps and fast.t5_finetune_steps > full.t5_finetune_steps
    assert fast32 == dataclasses.replace(fast, precision="fp32")
    with pytest.raises(ConfigError, match="no Chinese version"):  # before any work: OUT is not made
        Q.quickstart(tmp_path / "unused", plan="full-bf16", lang="zh")
    assert not (tmp_path / "unused").exists()


_LANE_SCRIPT = """
import sys, time
from pathlib import Path
from types import SimpleNamespace
sys.path.insert(0, {here!r})
from lane_stages import stages
from t5electra.recipes.quickstart_lanes import run_lanes
run_lanes(stages, SimpleNamespace(threads=1, precision="fp32", out={out!r}), 2, {{}}, print)
"""

_LANE_STAGES = """
import os, time
from pathlib import Path

def _wait(out, family):
    Path(out, family + ".pid").write_text(str(os.getpid()))
    time.sleep(120)

def stages(job, family):
    return [(family, family, "sleeps", lambda: _wait(job.out, family), None)]
"""


def test_the_t5_lane_ends_when_the_quickstart_is_killed(tmp_path):
    """SIGKILL on the quickstart (no cleanup runs in it) also ends its T5 lane process, which would
    otherwise go on training into the run directory (machine.die_with_parent; Linux, as the
    project: the lane's state is read from /proc)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "lane_stages.py").write_text(_LANE_STAGES)
    script = _LANE_SCRIPT.format(here=str(tmp_path), out=str(tmp_path))
    proc = subprocess.Popen([sys.executable, "-c", script])
    pid_file = tmp_path / "t5.pid"
    deadline = time.time() + 120
    while not (pid_file.is_file() and pid_file.read_text()) and time.time() < deadline:
        assert proc.poll() is None, "the quickstart process ended early"
        time.sleep(0.2)
    lane = int(pid_file.read_text())
    assert lane != proc.pid and not gone(lane)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while not gone(lane) and time.time() < deadline:
        time.sleep(0.2)
    if not gone(lane):
        os.kill(lane, signal.SIGKILL)
        pytest.fail("the T5 lane outlived the killed quickstart")
