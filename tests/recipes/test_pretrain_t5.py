"""The T5 pretraining recipe end to end on a tiny model: loss goes down, the outputs are complete
model directories, and resuming from a checkpoint reproduces the uninterrupted losses exactly."""

from __future__ import annotations

import json
import math

import pytest

from t5electra.errors import ConfigError
from t5electra.models.t5 import T5ForConditionalGeneration
from t5electra.recipes.pretrain_t5 import main, train
from t5electra.tokenizers import T5Tokenizer
from t5electra.train.config import load_config
from t5electra.train.logging import read_metrics
from train_device import DEVICE_ARGS
from toy_corpus import write_train_valid

WORDS = ("the cat sat on a mat while the dog ran after a red ball in the green park near the old house "
         "and children played games under tall trees until the sun went down over quiet hills").split()


@pytest.fixture(scope="module")
def corpus_and_tokenizer(tmp_path_factory, spiece_model_path):
    root = tmp_path_factory.mktemp("t5pre")
    write_train_valid(root, WORDS, 300, 260)
    tok = T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes())
    tok.save_pretrained(root / "tokenizer")
    return root


def _args(root, run, steps=8, *extra):
    return [f"--train.output_dir={run}", f"--data.train_files={root / 'train.txt'}",
            f"--data.validation_files={root / 'valid.txt'}", f"--data.tokenizer={root / 'tokenizer'}",
            "--model.preset=t5-v1_1-tiny", "--data.max_length=32", "--train.batch_size=8",
            f"--train.max_steps={steps}", "--train.log_every=1", "--checkpoint.every_steps=4",
            "--eval.every_steps=4", "--eval.max_batches=2", "--optim.lr=1e-2", "--schedule.name=constant",
            *DEVICE_ARGS, "--train.progress=false", "--checkpoint.resume=auto", *extra]


def test_pretrain_learns_and_resumes_exactly(corpus_and_tokenizer, tmp_path):
    root = corpus_and_tokenizer
    run = tmp_path / "run"
    train(load_config(None, _args(root, run)))
    losses = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    evals = [r for r in read_metrics(run) if r["split"] == "eval"]
    assert sorted(losses) == list(range(1, 9))
    assert losses[1] == pytest.approx(math.log(1152), rel=0.15)  # fresh model: about ln(vocab)
    assert losses[8] < losses[1] - 1.0
    assert [r["step"] for r in evals] == [4, 8] and evals[1]["loss"] < evals[0]["loss"]
    # the final model and each checkpoint are complete model directories
    model = T5ForConditionalGeneration.from_pretrained(run / "model")
    assert model.config.vocab_size == 1152  # 1000 pieces + 100 sentinels + <pad>, rounded up to 128
    T5Tokenizer.from_pretrained(run / "checkpoints" / "step-00000004")
    assert sorted(p.name for p in (run / "plots").iterdir()) == ["loss.png", "lr.png"]

    # the latest checkpoint (step 8) truncated, as by a full disk or a bad copy: resuming falls back
    # to step 4 with a warning, and gives the same losses for steps 5..8, to the last bit
    weights = run / "checkpoints" / "step-00000008" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    first = dict(losses)
    with pytest.warns(UserWarning, match=r"resuming from .*step-00000004.*skipped step-00000008 "
                                         r"\(model.safetensors: .*incomplete"):
        train(load_config(None, _args(root, run)))
    again = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    assert [again[s] for s in range(5, 9)] == [first[s] for s in range(5, 9)]
    # metrics.jsonl holds each (split, step) once: the lines after step 4 were dropped on resume
    raw = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    keys = [(r["split"], r["step"]) for r in raw]
    assert len(keys) == len(set(keys)) == 8 + 2


def test_a_fresh_run_never_overwrites_a_run(corpus_and_tokenizer, tmp_path, capsys):
    root = corpus_and_tokenizer
    run = tmp_path / "run"
    train(load_config(None, _args(root, run, 4)))
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # no --checkpoint.resume: refused before any work, naming both ways out; nothing touched
    assert main(_args(root, run, 4, "--checkpoint.resume=none", "--optim.lr=5e-3")) == 1
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--checkpoint.resume=auto" in err and "--checkpoint.overwrite=true" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # --checkpoint.overwrite=true never deletes what the new run reads (here its tokenizer)
    with pytest.raises(ConfigError, match=r"would delete data.tokenizer=.*model.*which this run reads"):
        train(load_config(None, _args(root, run, 4, "--checkpoint.resume=none", "--checkpoint.overwrite=true",
                                      f"--data.tokenizer={run / 'model'}")))
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # --checkpoint.overwrite=true replaces it: one run in metrics.jsonl, the new config saved
    (run / "notes.txt").write_text("mine")
    train(load_config(None, _args(root, run, 4, "--checkpoint.resume=none", "--optim.lr=5e-3",
                                  "--checkpoint.overwrite=true")))
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["split"] == "train"]
    assert steps == [1, 2, 3, 4]
    assert "lr: 0.005" in (run / "config.yaml").read_text()
    assert (run / "notes.txt").read_text() == "mine"  # only the run's own files are replaced


def test_bad_setups_fail_before_training(corpus_and_tokenizer, tmp_path, capsys):
    root = corpus_and_tokenizer
    with pytest.raises(ConfigError, match="tokenizer has 1101 tokens but the model's vocab_size is 256"):
        train(load_config(None, _args(root, tmp_path / "a", 2, "--model.overrides={vocab_size: 256}")))
    assert main(_args(root, tmp_path / "b", 2, "--data.train_files=" + str(tmp_path / "none.txt"))) == 1
    assert "pretrain_t5: error:" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "c", 2, "--optim.lrr=1")) == 1
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_deterministic_kernels_run_and_change_no_cpu_result(corpus_and_tokenizer, tmp_path, monkeypatch):
    """train.deterministic (for GPUs: docs/training.md) runs every op of a T5 step in torch's
    deterministic mode, and on CPU, deterministic already, gives the same losses to the last bit."""
    import torch

    root = corpus_and_tokenizer
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # restored after the test, as is the mode below
    plain = train(load_config(None, _args(root, tmp_path / "plain", 4)))
    try:
        det = train(load_config(None, _args(root, tmp_path / "det", 4, "--train.deterministic=true")))
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    losses = [[r["loss"] for r in read_metrics(run) if r["split"] in ("train", "eval")] for run in (plain, det)]
    assert losses[0] == losses[1] and len(losses[0]) == 5


def test_own_corpus_mishaps_found_early_and_recoverable(corpus_and_tokenizer, tmp_path, capsys):
    """From a user's pass over pretraining on their own corpus: a bad validation file stopped the run
    only at its first evaluation (after every step, before RUN/model); a refused resume cut
    metrics.jsonl back first; checkpoint.allow_data_change could not resume a changed corpus (the
    token shards differ); a file named with brackets was read as a glob."""
    root = corpus_and_tokenizer
    run = tmp_path / "run"
    assert main(_args(root, run, 4, f"--data.validation_files={tmp_path / 'vall.txt'}")) == 1
    assert "vall.txt" in capsys.readouterr().err and not (run / "checkpoints").exists()
    corpus = tmp_path / "web[1].txt"  # a real name with glob characters
    corpus.write_text((root / "train.txt").read_text())
    (tmp_path / "web1.txt").write_text("a decoy the glob would read\n")
    args = _args(root, run, 8, f"--data.train_files={corpus}", "--checkpoint.overwrite=true")
    assert main(args) == 0
    lines = (run / "metrics.jsonl").read_text()
    (run / "checkpoints" / "latest").write_text("step-00000004\n")
    assert main([*args[:-1], "--data.num_workers=2"]) == 1  # refused by the data cursor (workers)
    assert "worker" in capsys.readouterr().err and (run / "metrics.jsonl").read_text() == lines  # nothing lost
    with open(corpus, "a") as f:
        f.write("one more line of text about the park\n")
    resume = [a for a in args if a != "--checkpoint.overwrite=true"]
    assert main(resume) == 1 and "the data changed since step-00000004" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="the changed data is read from its start"):
        train(load_config(None, [*resume, "--checkpoint.allow_data_change=true"]))
    assert max(r["step"] for r in read_metrics(run) if r["split"] == "train") == 8


def test_corpus_field_other_than_text(corpus_and_tokenizer, tmp_path):
    """JSONL with the text under "body": the CLI had no way to say so (data.field did not exist)."""
    import json as _json

    root = corpus_and_tokenizer
    body = tmp_path / "body.jsonl"
    body.write_text("".join(_json.dumps({"id": i, "body": line}) + "\n"
                            for i, line in enumerate((root / "train.txt").read_text().splitlines())))
    run = tmp_path / "run"
    assert main(_args(root, run, 2, f"--data.train_files={body}", "--data.validation_files=",
                      "--data.text_columns=[body]")) == 0
    assert (run / "model" / "config.json").is_file()


def test_fewer_sentinels_than_spans_is_an_error(tmp_path, spiece_model_path):
    """A tokenizer trained with --extra-ids 5: span corruption used ordinary tokens as sentinels 5, 6..."""
    from t5electra.data.objectives import t5_sentinel_count, t5_sentinel_start_id

    few = T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes(), extra_ids=5)
    assert t5_sentinel_count(few, t5_sentinel_start_id(few)) == 5
    full = T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes())
    assert t5_sentinel_count(full, t5_sentinel_start_id(full)) == 100
