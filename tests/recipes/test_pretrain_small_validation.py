"""Pretraining evaluations under torchrun (2 CPU processes, gloo) with a validation set of fewer
packed rows than processes: the rank without rows joins the evaluation with nothing, and the
metrics are the global ones (those of one process); DDP and FSDP, T5 and ELECTRA. And the
checkpoint of a step is written before the step's evaluation: an evaluation that fails loses no
training, and the resumed run evaluates that step first."""

from __future__ import annotations

import json

import pytest

from multiproc import launch
from t5electra.recipes import pretrain_t5
from t5electra.recipes.pretrain_electra import main as electra_main
from t5electra.recipes.pretrain_t5 import main
from t5electra.train.logging import read_metrics

# test_pretrain_t5.py's corpus (300 short lines) and tokenizer; test_pretrain_electra.py's
from test_pretrain_t5 import corpus_and_tokenizer  # noqa: F401 (fixture)
from test_pretrain_electra import corpus  # noqa: F401 (fixture)

TOL = 1e-5  # two processes reduce the gradients in another order than one process sums them


def _small_validation(root):
    """The first 3 validation lines: one packed row (T5 and ELECTRA, 32 tokens), for 2 processes."""
    lines = (root / "valid.txt").read_text().splitlines()[:3]
    (root / "valid_small.txt").write_text("\n".join(lines) + "\n")
    return root / "valid_small.txt"


def _t5_args(root, run, batch_size, *extra):
    return [f"--train.output_dir={run}", f"--data.train_files={root / 'train.txt'}",
            f"--data.validation_files={_small_validation(root)}", f"--data.tokenizer={root / 'tokenizer'}",
            "--model.preset=t5-v1_1-tiny", "--model.overrides={dropout_rate: 0.0}", "--data.max_length=32",
            f"--train.batch_size={batch_size}", "--train.max_steps=4", "--train.log_every=1",
            "--checkpoint.every_steps=2", "--eval.every_steps=2", "--optim.lr=1e-2", "--schedule.name=constant",
            "--train.device=cpu", "--train.progress=false", "--train.tensorboard=false", *extra]


def _evals(run):
    return {r["step"]: r for r in read_metrics(run) if r["split"] == "eval"}


def _same_evals(got, ref, keys=("loss",), rel=None):
    assert sorted(got) == sorted(ref) == [2, 4]
    for step in ref:
        for key in keys:
            assert got[step][key] == pytest.approx(ref[step][key], abs=TOL, rel=rel), (step, key)


@pytest.fixture(scope="module")
def t5_reference(corpus_and_tokenizer, tmp_path_factory):  # noqa: F811
    run = tmp_path_factory.mktemp("t5ref") / "one"
    assert main(_t5_args(corpus_and_tokenizer, run, 8, "--train.distributed=none")) == 0
    return run


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_t5_evaluation_with_fewer_validation_rows_than_processes(corpus_and_tokenizer, t5_reference, tmp_path,  # noqa: F811
                                                                  strategy):
    # was: rank 1 "corpus too small: 1 rows per epoch for 2 consumers", rank 0 dead in gloo, no step-2 checkpoint
    run = tmp_path / strategy
    assert launch(main, _t5_args(corpus_and_tokenizer, run, 4, f"--train.distributed={strategy}"), 2,
                  {"OMP_NUM_THREADS": "1"}, timeout_s=300) == [0, 0]
    _same_evals(_evals(run), _evals(t5_reference))
    meta = json.loads((run / "checkpoints" / "step-00000002" / "meta.json").read_text())
    assert meta["metrics"]["loss"] == pytest.approx(_evals(t5_reference)[2]["loss"], abs=TOL)


def test_electra_evaluation_with_fewer_validation_rows_than_processes(corpus, tmp_path):  # noqa: F811
    args = [f"--data.train_files={corpus / 'train.txt'}", f"--data.validation_files={_small_validation(corpus)}",
            f"--data.tokenizer={corpus / 'tokenizer'}", "--model.preset=electra-tiny",
            "--model.overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}", "--data.max_length=32",
            "--train.max_steps=4", "--train.log_every=1", "--checkpoint.every_steps=2", "--eval.every_steps=2",
            "--optim.lr=1e-2", "--schedule.warmup_steps=1", "--train.device=cpu", "--train.progress=false",
            "--train.tensorboard=false"]
    one, two = tmp_path / "one", tmp_path / "two"
    assert electra_main([f"--train.output_dir={one}", "--train.batch_size=8", *args]) == 0
    assert launch(electra_main, [f"--train.output_dir={two}", "--train.batch_size=4", "--train.distributed=ddp", *args],
                  2, {"OMP_NUM_THREADS": "1"}, timeout_s=300) == [0, 0]
    # ELECTRA's training losses are token means per micro-batch (official ELECTRA): rows of unequal
    # lengths make 2 x 4 rows train a little differently from 8 (test_pretrain_fsdp.py trains on one
    # document for that reason); a rank counted as an empty batch would halve the metrics
    _same_evals(_evals(two), _evals(one), keys=("loss", "gen_loss", "disc_loss", "disc_acc"), rel=1e-4)


def test_a_failed_evaluation_loses_no_training(corpus_and_tokenizer, t5_reference, tmp_path, monkeypatch):  # noqa: F811
    run = tmp_path / "run"
    args = _t5_args(corpus_and_tokenizer, run, 8, "--train.distributed=none", "--checkpoint.resume=auto")

    def broken(*a, **k):
        raise MemoryError("out of memory in the evaluation")

    with monkeypatch.context() as m:
        m.setattr(pretrain_t5, "evaluate", broken)
        with pytest.raises(MemoryError):
            main(args)
    # step 2 was saved before its evaluation failed (was: evaluated first, nothing saved)
    assert (run / "checkpoints" / "step-00000002" / "model.safetensors").is_file()
    assert json.loads((run / "checkpoints" / "step-00000002" / "meta.json").read_text())["metrics"] == {}
    # resumed: step 2 is evaluated first, then the run goes on as the uninterrupted one
    assert main(args) == 0
    _same_evals(_evals(run), _evals(t5_reference))
    ref = {r["step"]: r["loss"] for r in read_metrics(t5_reference) if r["split"] == "train"}
    assert {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"} == ref
    assert json.loads((run / "checkpoints" / "best").read_text())["step"] in (2, 4)
