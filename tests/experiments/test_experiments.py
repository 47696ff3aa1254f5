"""The experiment harness: FLOPs formula, grid expansion, report, and the tiny grid end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from t5electra.data.masking import mask_tokens
from t5electra.errors import ConfigError
from t5electra.experiments import flops as F
from t5electra.experiments.adapters import get_adapter
from t5electra.experiments.grid import expand, load_experiment
from t5electra.experiments.report import interpolate, main_metrics
from t5electra.models.electra import ElectraConfig
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration


# --------------------------------------------------------------------------------------------
# FLOPs
# --------------------------------------------------------------------------------------------
def tiny_t5(**kw) -> T5Config:
    return T5Config(**{**dict(vocab_size=10, d_model=4, d_kv=2, num_heads=2, d_ff=6, num_layers=1,
                              feed_forward_proj="gated-gelu", tie_word_embeddings=False), **kw})


def test_t5_flops_by_hand():
    # d=4, a=2*2=4, f=6, gated (3 FFN matrices), 1+1 layers, V=10; S=3 encoder, T=2 decoder tokens
    parts = F.t5_forward_flops(tiny_t5(), inputs_length=3, targets_length=2)
    assert parts["encoder"] == 3 * (8 * 4 * 4 + 4 * 3 * 4 + 2 * 3 * 4 * 6)                      # 960
    assert parts["decoder"] == 2 * (8 * 16 + 4 * 2 * 4 + 4 * 16 + 4 * 3 * 4 + 2 * 3 * 24) + 3 * 4 * 16  # 1024
    assert parts["lm_head"] == 2 * 2 * 4 * 10
    assert parts["total"] == 960 + 1024 + 160
    assert F.t5_train_flops(tiny_t5(), inputs_length=3, targets_length=2, batch_size=3, steps=2) == 3 * 3 * 2 * 2144
    # v1.0's ungated FFN has two matrices, not three
    assert F.t5_forward_flops(tiny_t5(feed_forward_proj="relu"), 3, 2)["encoder"] == 3 * (128 + 48 + 2 * 2 * 24)


def test_t5_flops_match_the_models_weight_matrices():
    """Without the attention-score terms, the forward count is 2 x (weights each token passes
    through): checked against the Linear layers of the real model."""
    cfg = tiny_t5(d_model=8, d_kv=4, num_heads=2, d_ff=12, num_layers=2, num_decoder_layers=3, vocab_size=32)
    model = T5ForConditionalGeneration(cfg)

    def linear(module: nn.Module, skip: str | None = None) -> int:
        return sum(m.weight.numel() for n, m in module.named_modules()
                   if isinstance(m, nn.Linear) and (skip is None or not n.endswith(skip)))

    def kv(module: nn.Module) -> int:
        return sum(m.weight.numel() for n, m in module.named_modules()
                   if isinstance(m, nn.Linear) and n.endswith(".kv"))

    S, T, a = 5, 3, cfg.num_heads * cfg.d_kv
    scores = S * cfg.num_layers * 4 * S * a + cfg.num_decoder_layers * T * (4 * T * a + 4 * S * a)
    expected = (2 * S * linear(model.encoder) + 2 * T * linear(model.decoder, skip=".kv") + 2 * S * kv(model.decoder)
                + 2 * T * model.lm_head.weight.numel() + scores)
    assert kv(model.decoder) > 0
    assert F.t5_forward_flops(cfg, S, T)["total"] == expected


def tiny_electra(**kw) -> ElectraConfig:
    return ElectraConfig(**{**dict(vocab_size=10, embedding_size=2, hidden_size=4, intermediate_size=8,
                                   num_hidden_layers=1, num_attention_heads=2), **kw})


def test_electra_flops_by_hand():
    disc = tiny_electra()
    gen = disc.generator_config(0.5)  # hidden 2, FFN 8, the same embedding size 2 (no projection)
    assert (gen.hidden_size, gen.intermediate_size, gen.embedding_size) == (2, 8, 2)
    T, M = 10, 2  # mask_prob 0.2 of the 8 real tokens
    assert F.masked_positions(T, 0.2) == M
    # the count the masking function really chooses on a full [CLS] ... [SEP] row (was 76 for 77 at 512)
    for length in (10, 128, 512):
        ids = torch.randint(5, 100, (1, length))
        ids[0, 0], ids[0, -1] = 1, 2
        chosen = mask_tokens(ids, mask_token_id=3, special_token_ids=[1, 2], mask_prob=0.15).mask.sum().item()
        assert F.masked_positions(length, 0.15) == chosen, length
    body_d = T * 2 * 2 * 4 + T * (8 * 16 + 4 * T * 4 + 4 * 4 * 8)  # projection E->H + one layer = 4320
    body_g = T * (8 * 4 + 4 * T * 2 + 4 * 2 * 8)                   # 1760
    assert F.electra_body_flops(disc, T) == body_d == 4320
    assert F.electra_body_flops(gen, T) == body_g == 1760
    mlm = F.electra_step_flops(disc, None, seq_len=T, mask_prob=0.2)
    assert mlm["total"] == 3 * (4320 + M * (2 * 4 * 2 + 2 * 2 * 10))  # 13296
    rtd = F.electra_step_flops(disc, gen, seq_len=T, mask_prob=0.2)
    assert rtd["generator"] == 3 * (1760 + M * (2 * 2 * 2 + 2 * 2 * 10))  # 5568
    assert rtd["sampling"] == 4 * M * 10
    assert rtd["discriminator"] == 3 * (4320 + T * (2 * 16 + 2 * 4))  # 14160
    assert rtd["total"] == 5568 + 80 + 14160
    assert F.electra_train_flops(disc, gen, seq_len=T, batch_size=4, steps=5, mask_prob=0.2) == 20 * 19808


def test_pretrain_flops_from_a_run_config():
    adapter = get_adapter("pretrain_electra")
    overrides = {"model.overrides": {"embedding_size": 2, "hidden_size": 4, "intermediate_size": 8,
                                     "num_hidden_layers": 1, "num_attention_heads": 2},
                 "data.max_length": 10, "data.mask_prob": 0.2, "train.batch_size": 4, "train.max_steps": 5,
                 "electra.generator_size": 0.5}
    cfg = adapter.config({**overrides, "data.objective": "electra-rtd"})
    assert adapter.flops(cfg, vocab_size=10) == 20 * 19808
    cfg = adapter.config({**overrides, "data.objective": "mlm"})
    assert adapter.flops(cfg, vocab_size=10) == 20 * 13296
    # T5: span corruption's decoder length comes from the objective (shorter for longer spans)
    t5 = get_adapter("pretrain_t5")
    small = {"model.overrides": {"d_model": 8, "d_kv": 4, "num_heads": 2, "d_ff": 12, "num_layers": 1},
             "data.max_length": 64, "train.max_steps": 1, "train.batch_size": 1}
    span3 = t5.flops(t5.config({**small, "data.mean_noise_span_length": 3.0}), vocab_size=100)
    span1 = t5.flops(t5.config({**small, "data.mean_noise_span_length": 1.0}), vocab_size=100)
    assert span1 > span3
    with pytest.raises(ConfigError, match="needs a T5Config"):
        F.pretrain_flops(t5.config(small), tiny_electra())


def test_format_flops():
    assert F.format_flops(1.5e15) == "1.5 PFLOP"
    assert F.format_flops(2e9) == "2 GFLOP"


# --------------------------------------------------------------------------------------------
# Grid
# --------------------------------------------------------------------------------------------
GRID = """
name: g
seeds: [0, 1]
methods:
  rtd: {kind: pretrain_electra, overrides: {data.objective: electra-rtd}}
  mlm: {kind: pretrain_electra, label: MLM, overrides: {data.objective: mlm}}
  scratch: {kind: none, family: electra}
budgets: {BUDGETS}
pretrain:
  pretrain_electra: {model.overrides: {hidden_size: 64}, train.batch_size: 8}
finetune:
  tasks: [sentiment, bbc_topic]
  finetune_electra: {train.max_steps: 7}
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "g.yaml"
    p.write_text(text)
    return p


def test_grid_expansion(tmp_path):
    exp = load_experiment(write(tmp_path, GRID.replace("{BUDGETS}", "{steps: [10, 20]}")))
    jobs = expand(exp)
    pre = [j for j in jobs if j.kind == "pretrain_electra"]
    ft = [j for j in jobs if j.kind == "finetune_electra"]
    assert len(pre) == 2 * 2 * 2 and len(ft) == (len(pre) + 2) * 2  # + scratch: 2 seeds x 2 tasks
    ids = [j.id for j in jobs]
    assert "pretrain/rtd/b1/seed0" in ids and "finetune/bbc_topic/mlm/b0/seed1" in ids
    assert "finetune/sentiment/scratch/seed1" in ids
    for j in ft:  # every dependency runs first
        if j.depends_on:
            assert ids.index(j.depends_on) < ids.index(j.id)
    j = next(j for j in jobs if j.id == "pretrain/mlm/b1/seed1")
    assert j.steps == 20 and j.overrides["train.max_steps"] == 20 and j.overrides["train.seed"] == 1
    assert j.overrides["data.objective"] == "mlm" and j.overrides["train.batch_size"] == 8
    j = next(j for j in jobs if j.id == "finetune/sentiment/rtd/b0/seed1")
    assert j.depends_on == "pretrain/rtd/b0/seed1" and j.overrides["data.task"] == "sentiment" and j.steps == 7
    # no pretraining: a fresh model shaped like the pretrained ones
    j = next(j for j in jobs if j.id == "finetune/sentiment/scratch/seed0")
    assert j.depends_on is None and j.overrides["model.overrides"] == {"hidden_size": 64}
    assert exp.methods["mlm"].label == "MLM" and exp.methods["rtd"].label == "rtd"


def test_no_pretraining_fine_tunes_the_same_head_as_the_pretrained_methods(tmp_path):
    """A fine-tuning model.overrides (the head: classifier_pooling) merges with the pretraining's
    model.overrides (the shape) for the fresh model, key by key, instead of being replaced by it;
    the same merge for a method's own model.overrides on top of its kind's."""
    text = (GRID.replace("{BUDGETS}", "{steps: [10]}")
            .replace("finetune_electra: {train.max_steps: 7}",
                     "finetune_electra: {train.max_steps: 7, model.overrides: {classifier_pooling: mean}}")
            .replace("overrides: {data.objective: mlm}",
                     "overrides: {data.objective: mlm, model.overrides: {num_hidden_layers: 2}}"))
    jobs = {j.id: j for j in expand(load_experiment(write(tmp_path, text)))}
    fresh = jobs["finetune/sentiment/scratch/seed0"].overrides
    assert fresh["model.overrides"] == {"hidden_size": 64, "classifier_pooling": "mean"}
    assert jobs["finetune/sentiment/rtd/b0/seed0"].overrides["model.overrides"] == {"classifier_pooling": "mean"}
    assert jobs["pretrain/mlm/b0/seed0"].overrides["model.overrides"] == {"hidden_size": 64, "num_hidden_layers": 2}


def test_grid_flops_budgets_give_each_method_its_steps(tmp_path):
    exp = load_experiment(write(tmp_path, GRID.replace("{BUDGETS}", "{flops: [1.0e9, 4.0e9]}")))
    per_step = {"rtd": 2e7, "mlm": 1e7}
    jobs = expand(exp, lambda m, b: round(b / per_step[m.name]))
    steps = {j.id: j.steps for j in jobs if j.kind == "pretrain_electra"}
    assert steps["pretrain/rtd/b0/seed0"] == 50 and steps["pretrain/mlm/b0/seed0"] == 100
    assert steps["pretrain/rtd/b1/seed1"] == 200 and steps["pretrain/mlm/b1/seed1"] == 400
    with pytest.raises(ConfigError, match="steps_for_flops"):
        expand(exp)


@pytest.mark.parametrize("text, match", [
    (GRID.replace("{BUDGETS}", "{steps: [1]}").replace("seeds:", "seedz:"), "unknown key 'seedz'"),
    (GRID.replace("{BUDGETS}", "{epochs: [1]}"), "budgets must be"),
    (GRID.replace("{BUDGETS}", "{steps: [1]}").replace("kind: none, family: electra", "kind: none"), "family"),
    (GRID.replace("{BUDGETS}", "{steps: [1]}").replace("kind: pretrain_electra, label", "kind: bert, label"),
     "methods.mlm.kind='bert'"),
])
def test_grid_errors_name_the_key(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_experiment(write(tmp_path, text))


def test_unknown_experiment_suggests():
    with pytest.raises(ConfigError, match="did you mean 'tiny'"):
        load_experiment("tinyy")


def test_shipped_experiments_expand():
    """Every experiment file in experiments/ parses and expands (FLOPs budgets included)."""
    from t5electra.experiments.runner import Context, steps_for_flops

    root = Path(__file__).resolve().parents[2] / "experiments"
    names = sorted(p.stem for p in root.glob("*.yaml"))
    assert {"tiny", "electra_vs_mlm", "generator_size", "t5_objectives", "t5_multitask"} <= set(names)
    for name in names:
        exp = load_experiment(root / f"{name}.yaml")
        ctx = Context(exp, Path("unused"), Path("/nonexistent"))
        jobs = expand(exp, steps_for_flops(ctx))
        assert jobs and all(j.steps >= 1 for j in jobs), name


def test_task_examples_spread_over_each_split_not_its_first_rows(tmp_path, monkeypatch):
    """data.task_examples keeps rows spread evenly over a split: the sample files are ordered by
    label, and the first rows would train and test on one class."""
    from t5electra.experiments import runner

    sample = tmp_path / "sentiment"
    sample.mkdir()
    for split in ("train", "test"):  # sorted by label, as the sentiment sample's first rows nearly are
        rows = [f"good film {i}\t1\n" for i in range(30)] + [f"bad film {i}\t0\n" for i in range(30)]
        (sample / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (sample / "extra.jsonl").write_text("".join(f'{{"label": {i // 30}}}\n' for i in range(60)))
    (sample / "SOURCE.json").write_text("{}")
    monkeypatch.setattr(runner, "fetch_sample", lambda name: sample)
    ctx = runner.Context(load_experiment("tiny"), tmp_path / "out", tmp_path / "work")
    trimmed = runner.trimmed_task_dir(ctx, "sentiment", 4)
    for split in ("train", "test"):
        header, *rows = (trimmed / f"{split}.tsv").read_text().splitlines()
        assert header == "sentence\tlabel" and len(rows) == 4
        assert sorted(r.split("\t")[1] for r in rows) == ["0", "0", "1", "1"]
    assert [json.loads(line)["label"] for line in (trimmed / "extra.jsonl").read_text().splitlines()] == [0, 0, 1, 1]


# --------------------------------------------------------------------------------------------
# Adapters and report helpers
# --------------------------------------------------------------------------------------------
def test_electra_finetuning_loads_the_encoder_the_method_trained(tmp_path):
    adapter = get_adapter("finetune_electra")
    for sub in ("generator",):  # the MLM baseline saves only model/generator (discriminator-sized)
        (tmp_path / "mlm" / "model" / sub).mkdir(parents=True)
        (tmp_path / "mlm" / "model" / sub / "config.json").write_text("{}")
    assert adapter.init_from(tmp_path / "mlm") == tmp_path / "mlm" / "model" / "generator"
    for sub in ("generator", "discriminator"):
        (tmp_path / "rtd" / "model" / sub).mkdir(parents=True)
        (tmp_path / "rtd" / "model" / sub / "config.json").write_text("{}")
    assert adapter.init_from(tmp_path / "rtd") == tmp_path / "rtd" / "model" / "discriminator"
    with pytest.raises(FileNotFoundError, match="no finished model"):
        get_adapter("finetune_t5").init_from(tmp_path / "missing")


def test_interpolate_in_log_flops():
    curve = [(1e9, 50.0), (1e11, 70.0)]
    assert interpolate(curve, 1e10) == pytest.approx(60.0)
    assert interpolate(curve, 1e9) == 50.0 and interpolate(curve, 1e11) == 70.0
    assert interpolate(curve, 1e8) is None and interpolate(curve, 1e12) is None
    # a FLOPs budget rounds to whole steps: a method's point within 5% stands for the budget
    assert interpolate(curve, 0.97e9) == 50.0 and interpolate(curve, 1.04e11) == 70.0
    assert interpolate(curve, 1.1e11) is None


def test_equal_flops_points(tmp_path):
    from t5electra.experiments.report import equal_flops_points

    exp = load_experiment(write(tmp_path, GRID.replace("{BUDGETS}", "{flops: [4.0e9, 1.0e9]}")))
    assert equal_flops_points(exp, {}) == [1e9, 4e9]  # the budgets, not each method's rounded FLOPs
    exp = load_experiment(write(tmp_path, GRID.replace("{BUDGETS}", "{steps: [1, 2]}")))
    series = {"rtd": {0: [(1.00e9, 1.0)], 1: [(2e9, 1.0)]}, "mlm": {0: [(1.03e9, 1.0)], 1: [(3e9, 1.0)]}}
    assert equal_flops_points(exp, series) == [1e9, 2e9, 3e9]


def test_main_metrics():
    assert main_metrics("sentiment", {"accuracy": 80.0, "loss": 1.0}) == ["accuracy"]
    mix = {"sentiment/accuracy": 1, "bbc_topic/accuracy": 2, "bbc_topic/macro_f1": 3, "average": 1.5}
    assert main_metrics("sentiment+bbc_topic", mix) == ["average", "sentiment/accuracy", "bbc_topic/accuracy"]


# --------------------------------------------------------------------------------------------
# The tiny grid end to end (what CI runs), then again: every job is skipped
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> tuple[Path, Path]:
    """The tiny grid, run once: (out, work). A test that changes them works on a copy (copy_run)."""
    from t5electra.cli import main

    root = tmp_path_factory.mktemp("tiny")
    out, work = root / "out", root / "work"
    assert main(["experiment", "tiny", "--out", str(out), "--work", str(work), "--device", "cpu"]) == 0
    return out, work


def copy_run(run: tuple[Path, Path], dest: Path) -> tuple[Path, Path]:
    out, work = dest / "out", dest / "work"
    shutil.copytree(run[0], out)
    shutil.copytree(run[1], work)
    return out, work


def edited_tiny(tmp_path: Path, old: str, new: str) -> Path:
    """experiments/tiny.yaml with ``old`` replaced by ``new``, as a file of its own."""
    text = (Path(__file__).resolve().parents[2] / "experiments" / "tiny.yaml").read_text()
    assert text.count(old) == 1
    path = tmp_path / "tiny.yaml"
    path.write_text(text.replace(old, new))
    return path


def test_tiny_grid_runs_reports_and_resumes(tiny_run, tmp_path, monkeypatch):
    from t5electra.cli import main
    from t5electra.experiments import adapters, runner

    out, work = copy_run(tiny_run, tmp_path)
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in records] == ["pretrain/t5_span/b0/seed0", "finetune/sentiment/t5_span/b0/seed0",
                                          "pretrain/electra_rtd/b0/seed0", "finetune/sentiment/electra_rtd/b0/seed0"]
    pre = {r["method"]: r for r in records if r["task"] is None}
    for r in pre.values():
        assert r["steps"] == 3 and r["flops"] > 0 and "loss" in r["metrics"]["eval"]
    # the recorded FLOPs are the formula's on the models the recipes built (read back from disk)
    from t5electra.models.electra import ElectraConfig as EC
    disc = EC.from_json_file(work / "runs/pretrain/electra_rtd/b0/seed0/model/discriminator/config.json")
    gen = EC.from_json_file(work / "runs/pretrain/electra_rtd/b0/seed0/model/generator/config.json")
    assert pre["electra_rtd"]["flops"] == F.electra_train_flops(disc, gen, seq_len=32, batch_size=2, steps=3)
    t5 = T5Config.from_json_file(work / "runs/pretrain/t5_span/b0/seed0/model/config.json")
    S, T = F.span_corruption_lengths(32, 0.15, 3.0)
    assert pre["t5_span"]["flops"] == F.t5_train_flops(t5, inputs_length=S, targets_length=T, batch_size=2, steps=3)
    for r in records:
        if r["task"]:
            assert r["pretrain_flops"] == pre[r["method"]]["flops"] and "accuracy" in r["metrics"]["test"]
        assert r["wall_s"] > 0 and (out / r["logs"] / "metrics.jsonl").is_file()
    readme = (out / "README.md").read_text()
    assert "sentiment_accuracy.png" in readme and (out / "sentiment_accuracy.png").stat().st_size > 1000
    assert "t5electra experiment tiny" in readme and "torch" in readme and "seeds 0" in readme
    assert "At equal pretraining FLOPs" in readme

    def no_training(self, cfg):
        raise AssertionError(f"{cfg.train.output_dir} should have been skipped")

    def no_data(ctx, echo=print):
        raise AssertionError("every job is done: no data to prepare")

    # Running a finished grid again trains nothing, prepares no data and keeps the provenance of
    # the runs (run.json: their command and machine, not this invocation's) and the hand-written
    # part of the README (after the marker line).
    monkeypatch.setattr(adapters.Adapter, "train", no_training)
    monkeypatch.setattr(runner, "prepare_data", no_data)
    from t5electra.experiments.report import HAND_WRITTEN

    assert readme.endswith(HAND_WRITTEN + "\n") and f"Machine: cpu {records[0]['machine']['cpu']}," in readme
    run_json = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run_json, "command": "t5electra experiment tiny --device cpu",
                                              "experiment_file": "experiments/tiny.yaml"}))
    notes = "\n## What it shows (written by hand)\n\nNothing: 3 steps.\n"
    (out / "README.md").write_text(readme + notes)
    lines = []
    runner.run_experiment("tiny", out, work, device="cpu", command="t5electra experiment tiny --again",
                          echo=lines.append)
    assert sum("skipped" in line for line in lines) == 4 and not any(line.startswith("data:") for line in lines)
    assert len((out / "results.jsonl").read_text().splitlines()) == 4
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["command"] == "t5electra experiment tiny --device cpu"
    assert run_json["experiment_file"] == "experiments/tiny.yaml"
    assert (out / "README.md").read_text().endswith(HAND_WRITTEN + "\n" + notes)

    # --report-only rewrites the report from what finished, with the machine it ran on
    (out / "results.jsonl").write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n")
    assert main(["experiment", "tiny", "--out", str(out), "--work", str(work), "--report-only"]) == 0
    readme = (out / "README.md").read_text()
    assert "Partial: 2 of 4 jobs" in readme and "ELECTRA" not in readme.split("## Pretraining runs")[1]
    assert json.loads((out / "run.json").read_text())["command"] == "t5electra experiment tiny --device cpu"
    assert readme.endswith(HAND_WRITTEN + "\n" + notes) and "t5electra experiment tiny --device cpu" in readme


ELECTRA_FINETUNE_STEPS = "    train.batch_size: 4\n    train.max_steps: 3\n    eval.batch_size: 8\n"


def test_an_edited_experiment_reruns_its_stale_jobs(tiny_run, tmp_path):
    """Results are kept by configuration, not by job id alone: after an edit of the experiment file
    the jobs whose configuration changed run again from scratch (and say why), the others are
    skipped, and the report never shows a stale record as the new configuration's result."""
    from t5electra.experiments import runner

    out, work = copy_run(tiny_run, tmp_path)
    job = "finetune/sentiment/electra_rtd/b0/seed0"
    yaml_path = edited_tiny(tmp_path, ELECTRA_FINETUNE_STEPS, ELECTRA_FINETUNE_STEPS.replace("steps: 3", "steps: 2"))
    lines: list[str] = []
    runner.run_experiment(yaml_path, out, work, dry_run=True, echo=lines.append)
    assert [line.split()[1] for line in lines if line.startswith("  stale")] == [job]
    runner.run_experiment(yaml_path, out, work, report_only=True, echo=lines.append)
    readme = (out / "README.md").read_text()
    assert "Partial: 3 of 4 jobs" in readme and "Left out: 1 record made with an earlier configuration" in readme
    assert f"`{job}`: configuration changed (train.max_steps: 3 -> 2)" in readme

    # records written before each named its machine: run.json's (the machine they ran on) is
    # theirs; the job that runs now records this machine, and the report names both
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    (out / "results.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "machine"}) + "\n"
                                               for r in records))
    run_json = json.loads((out / "run.json").read_text())
    (out / "run.json").write_text(json.dumps({**run_json, "machine": {"cpu": "AMD EPYC", "cores": 2}}))
    lines.clear()
    runner.run_experiment(yaml_path, out, work, device="cpu", echo=lines.append)
    readme = (out / "README.md").read_text()
    assert "Machines: " in readme and "cpu AMD EPYC, cores 2 (3 jobs)" in readme and "(1 job)" in readme
    assert json.loads((out / "run.json").read_text())["machine"] == runner.machine()
    assert sum("skipped" in line for line in lines) == 3
    assert any(f"{job}: its record is stale, configuration changed (train.max_steps: 3 -> 2)" in line for line in lines)
    assert any("a run of another" in line for line in lines)  # the 3-step run is not resumed
    record = runner.read_results(out)[job]
    assert record["config"]["overrides"]["train.max_steps"] == 2
    steps = [json.loads(line)["step"] for line in (out / "logs" / job / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 2
    assert json.loads((work / "runs" / job / "job.json").read_text())["fingerprint"] == record["fingerprint"]
    assert "Left out" not in (out / "README.md").read_text()

    # a record from before fingerprints cannot be checked: stale too
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    del records[0]["config"], records[0]["fingerprint"]
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    lines.clear()
    runner.run_experiment(yaml_path, out, work, dry_run=True, echo=lines.append)
    assert f"stale: {records[0]['id']}: recorded without its configuration, which cannot be checked" in lines


def test_changed_data_settings_make_the_shared_data_again(tiny_run, tmp_path):
    """A new electra_vocab trains the ELECTRA tokenizer again (the T5 one stays) and makes the
    ELECTRA jobs stale: no job of the new settings runs on the old tokenizer."""
    from t5electra.experiments import runner

    out, work = copy_run(tiny_run, tmp_path)
    yaml_path = edited_tiny(tmp_path, "electra_vocab: 300", "electra_vocab: 320")
    lines: list[str] = []
    runner.run_experiment(yaml_path, out, work, dry_run=True, echo=lines.append)
    assert sorted(line.split()[1] for line in lines if line.startswith("  stale")) == [
        "finetune/sentiment/electra_rtd/b0/seed0", "pretrain/electra_rtd/b0/seed0"]
    t5_tokenizer = work / "data/tokenizers/t5/tokenizer_config.json"
    before = t5_tokenizer.stat().st_mtime_ns
    ctx = runner.Context(load_experiment(yaml_path), out, work)
    assert not ctx.tokenizer_ready("electra") and ctx.tokenizer_ready("t5")
    runner.prepare_data(ctx, echo=lines.append)
    assert "data: electra_vocab was 300, now 320: made again" in lines
    assert ctx.tokenizer_ready("electra") and ctx.vocab_size("electra") == 320
    assert t5_tokenizer.stat().st_mtime_ns == before


def test_dry_run_lists_jobs_and_flops(tmp_path, capsys):
    from t5electra.cli import main

    assert main(["experiment", "tiny", "--dry-run", "--out", str(tmp_path / "o"), "--work", str(tmp_path / "w")]) == 0
    text = capsys.readouterr().out
    assert "pretrain/electra_rtd/b0/seed0" in text and "MFLOP" in text
    assert "after pretrain/t5_span/b0/seed0" in text
    assert not (tmp_path / "w").exists()
    assert main(["experiment", "nope"]) == 1
    assert "unknown experiment 'nope'" in capsys.readouterr().err


REPORT_GRID = """
name: r
seeds: [0, 1]
methods:
  a: {kind: pretrain_t5, label: A}
  b: {kind: pretrain_t5, label: B}
budgets: {steps: [10, 20]}
finetune: {tasks: [x+y, x]}
"""


def report_records(tmp_path: Path) -> tuple[Any, list[dict[str, Any]]]:
    """REPORT_GRID and hand-made records of it: two methods, two budgets, two seeds."""
    exp = load_experiment(write(tmp_path, REPORT_GRID))
    flops = {("a", 0): 1e9, ("a", 1): 1e11, ("b", 0): 1e10, ("b", 1): 1e12}
    recs = []
    for (m, b), fl in flops.items():
        for seed in (0, 1):
            base = {"method": m, "budget": b, "seed": seed, "pretrain_flops": fl, "wall_s": 1.0, "steps": 10}
            recs.append({**base, "task": None, "flops": fl, "metrics": {"eval": {"loss": 2.0 + seed}}})
            score = 50.0 + 10 * b + (2 if m == "b" else 0) + 2 * seed  # seeds differ by 2: sd 1.41
            recs.append({**base, "task": "x+y", "metrics": {"test": {"x/acc": score, "y/bleu": 1.0, "average": 3.0}}})
            recs.append({**base, "task": "x", "metrics": {"test": {"acc": score + 5}}})
    return exp, recs


def test_report_mean_spread_equal_flops_and_multitask(tmp_path):
    """A report from hand-made records: mean ± sd over seeds, interpolation at equal FLOPs, the
    mixture-vs-single-task table and a plot per metric."""
    from t5electra.experiments.report import write_report

    exp, recs = report_records(tmp_path)
    path = write_report(exp, recs, tmp_path / "out", {"command": "t5electra experiment r", "machine": {"cpu": "test"}})
    md = path.read_text()
    assert "51.00 ± 1.41 (n=2) at 1 GFLOP" in md           # method A, budget 0
    assert "| A | 51.00 | 56.00 | 61.00 | — |" in md        # A at 1e9, 1e10 (interpolated), 1e11; none at 1e12
    assert "| B | — | 53.00 | 58.00 | 63.00 |" in md
    assert "## One model for x+y vs one model per task" in md
    assert "| x | acc | A | 0 | 51.00 ± 1.41 (n=2) | 56.00 ± 1.41 (n=2) |" in md
    assert "0.00 ± 0.00" not in md.split("## Pretraining runs")[0]
    assert "2.50 ± 0.71 (n=2)" in md  # the pretraining loss over the seeds
    for png in ("x+y_average.png", "x+y_x_acc.png", "x+y_y_bleu.png", "x_acc.png"):
        assert (tmp_path / "out" / png).stat().st_size > 1000
    assert "Machine: cpu test." in md  # run.json's, for records that do not name their machine


def test_report_without_matplotlib_has_no_plots_and_says_how_to_get_them(tmp_path, monkeypatch):
    """matplotlib is the `data` extra's: without it the jobs' results still get their report."""
    import sys

    from t5electra.experiments.report import write_report

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    exp, recs = report_records(tmp_path)
    notes: list[str] = []
    md = write_report(exp, recs, tmp_path / "out", {}, echo=notes.append).read_text()
    assert "| A | 51.00 | 56.00 | 61.00 | — |" in md and ".png" not in md and not list((tmp_path / "out").glob("*.png"))
    hint = "pip install 't5electra[data]'`, then `t5electra experiment r --report-only` draws them"
    assert hint in md and hint in notes[0]


def test_report_keeps_what_is_written_by_hand(tmp_path):
    """The generator owns README.md up to the marker line; what follows it is kept. A README
    without the marker is kept whole as README.md.orig (which part is hand-written is unknown)."""
    from t5electra.experiments.report import HAND_WRITTEN, hand_written

    readme = tmp_path / "README.md"
    assert hand_written(readme) == HAND_WRITTEN + "\n"
    readme.write_text(f"# Old report\n\n{HAND_WRITTEN}\n\n## Notes\n\nkept\n")
    assert hand_written(readme) == f"{HAND_WRITTEN}\n\n## Notes\n\nkept\n"
    readme.write_text("# A report from before the marker\n\n## What it shows\n\nby hand\n")
    notes: list[str] = []
    assert hand_written(readme, notes.append) == HAND_WRITTEN + "\n"
    assert (tmp_path / "README.md.orig").read_text() == readme.read_text() and "README.md.orig" in notes[0]


def test_report_links_the_archived_logs_when_logs_are_compressed(tmp_path):
    """docs/experiments/*/ keep logs.tar.xz instead of logs/: the report says where and how to open it."""
    from t5electra.experiments.report import raw_logs_line

    assert "[logs/](logs/)" in raw_logs_line(tmp_path)
    (tmp_path / "logs.tar.xz").write_bytes(b"")
    assert "[logs.tar.xz](logs.tar.xz)" in raw_logs_line(tmp_path) and "tar xJf" in raw_logs_line(tmp_path)
    (tmp_path / "logs").mkdir()  # a fresh run's logs win over an old archive
    assert "[logs/](logs/)" in raw_logs_line(tmp_path)


def test_published_results_are_of_the_current_experiment_files():
    """Every record in docs/experiments/*/results.jsonl carries the configuration it ran with, and
    it is the current experiment file's: no published number is of another configuration."""
    from t5electra.experiments.runner import Context, job_configs, read_results, stale_reason, steps_for_flops

    repo = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    published = sorted(p.parent for p in (repo / "docs" / "experiments").glob("*/results.jsonl"))
    assert published
    for out in published:
        exp = load_experiment(repo / "experiments" / f"{out.name}.yaml")
        ctx = Context(exp, out, Path("/nonexistent"))
        jobs = expand(exp, steps_for_flops(ctx))
        configs, records = job_configs(ctx, jobs), read_results(out)
        assert set(records) == {j.id for j in jobs}, out.name
        stale = {i for i, r in records.items() if stale_reason(r, *configs[i]) is not None}
        assert not stale, (out.name, stale)


def test_archived_experiment_logs_hold_every_job_of_results_jsonl():
    """The archives in docs/experiments/ are complete: each finished job's metrics.jsonl is in it."""
    import tarfile

    repo = next(p for p in Path(__file__).resolve().parents if (p / "pyproject.toml").is_file())
    root = repo / "docs" / "experiments"
    archives = sorted(root.glob("*/logs.tar.xz"))
    assert archives
    for archive in archives:
        with tarfile.open(archive) as tar:
            names = set(tar.getnames())
        for line in (archive.parent / "results.jsonl").read_text().splitlines():
            record = json.loads(line)
            assert f"{record['logs']}/metrics.jsonl" in names, (archive, record["id"])
