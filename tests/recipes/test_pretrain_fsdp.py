"""FSDP on two CPU processes (gloo) with the T5 pretraining recipe: the same losses and weights as one
process on the same global batch; sharded checkpoints resume on 1 process and a one-process checkpoint on
2; rank 0 alone writes metrics and exports; `t5electra convert` turns a sharded checkpoint into one HF
directory; ELECTRA RTD pretraining under FSDP equals DDP. dropout 0: dropout masks are per rank, everything else (data order, span corruption) is
defined per global batch and per example."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from multiproc import launch
from t5electra.cli import main as cli_main
from t5electra.recipes.pretrain_electra import main as electra_main
from t5electra.recipes.pretrain_t5 import main
from t5electra.tokenizers import T5Tokenizer
from t5electra.train.logging import read_metrics

# test_pretrain_t5.py's corpus: 260 short lines of a 40-word vocabulary
from test_pretrain_t5 import corpus_and_tokenizer  # noqa: F401 (fixture)
# test_pretrain_electra.py's corpus and WordPiece tokenizer
from test_pretrain_electra import corpus  # noqa: F401 (fixture)

# FSDP reduce-scatters the gradients in another order than one process sums them: float rounding
# (~1e-7 per step) that Adam carries along; 1e-5 over 4 steps at lr 1e-2 leaves room for it and none
# for a wrong batch, a lost example or a missed gradient (those move the loss by > 1e-3).
TOL = 1e-5


def _args(root, run, batch_size, *extra):
    return [f"--train.output_dir={run}", f"--data.train_files={root / 'train.txt'}",
            f"--data.tokenizer={root / 'tokenizer'}", "--model.preset=t5-v1_1-tiny",
            "--model.overrides={dropout_rate: 0.0}", "--data.max_length=32", f"--train.batch_size={batch_size}",
            "--train.max_steps=4", "--train.log_every=1", "--checkpoint.every_steps=2", "--optim.lr=1e-2",
            "--schedule.name=constant", "--train.device=cpu", "--train.progress=false", "--train.tensorboard=false",
            *extra]


def _losses(run):
    return {r["step"]: r["loss"] for r in read_metrics(run) if "loss" in r and "lr" in r}


def _close(a, b):
    assert a.keys() == b.keys() and a
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=TOL), step


@pytest.fixture(scope="module")
def runs(corpus_and_tokenizer, tmp_path_factory):  # noqa: F811
    """One process with batch 8, and FSDP x 2 with batch 4 each (activation checkpointing on), 4 steps."""
    root = corpus_and_tokenizer
    tmp = tmp_path_factory.mktemp("fsdp")
    one, two = tmp / "one", tmp / "fsdp"
    assert main(_args(root, one, 8, "--train.distributed=none")) == 0
    assert launch(main, _args(root, two, 4, "--train.distributed=fsdp", "--train.activation_checkpointing=true"),
                  2) == [0, 0]
    return root, one, two


def test_fsdp_two_processes_equal_one_process(runs, tmp_path):
    root, one, two = runs
    losses = _losses(one)
    assert sorted(losses) == [1, 2, 3, 4]
    assert sorted(_losses(two)) == [1, 2, 3, 4]  # one line per step: rank 1 wrote none
    _close(_losses(two), losses)
    ref = load_file(one / "model" / "model.safetensors")
    got = load_file(two / "model" / "model.safetensors")  # gathered from the shards by rank 0
    assert ref.keys() == got.keys()
    assert all(torch.allclose(ref[k], got[k], atol=TOL, rtol=0) for k in ref)
    sharded = two / "checkpoints" / "step-00000004"
    assert (sharded / "sharded" / ".metadata").is_file() and not (sharded / "model.safetensors").exists()
    # a sharded checkpoint -> one Hugging Face directory (verified by convert itself)
    out = tmp_path / "hf"
    assert cli_main(["convert", str(sharded), str(out)]) == 0
    converted = load_file(out / "model.safetensors")
    assert all(torch.equal(converted[k], got[k]) for k in got)
    assert T5Tokenizer.from_pretrained(out)("the cat")["input_ids"]


def test_sharded_checkpoint_resumes_on_one_process(runs, tmp_path):
    root, one, two = runs
    # 2 -> 1: the sharded step-2 checkpoint continues in one process (no process group)
    resumed = tmp_path / "two_to_one"
    assert main(_args(root, resumed, 8, f"--checkpoint.resume={two / 'checkpoints' / 'step-00000002'}")) == 0
    _close(_losses(resumed), {s: v for s, v in _losses(one).items() if s > 2})


def test_one_process_checkpoint_resumes_sharded_on_two(runs, tmp_path):
    root, one, two = runs
    # 1 -> 2: the one-process step-2 checkpoint (HF weights + optimizer state) continues sharded
    resumed = tmp_path / "one_to_two"
    assert launch(main, _args(root, resumed, 4, "--train.distributed=fsdp",
                              f"--checkpoint.resume={one / 'checkpoints' / 'step-00000002'}"), 2) == [0, 0]
    _close(_losses(resumed), {s: v for s, v in _losses(one).items() if s > 2})


def test_fsdp_refusals_come_before_any_work(corpus_and_tokenizer, tmp_path, capfd):  # noqa: F811
    root = corpus_and_tokenizer
    run = tmp_path / "run"
    assert main(_args(root, run, 8, "--train.distributed=fsdp")) == 1  # no torchrun
    assert "not started by torchrun" in capfd.readouterr().err
    assert not run.exists()
    # a 3-process resume of a global batch of 8: 3 does not divide it
    assert main(_args(root, run, 8, "--train.max_steps=2")) == 0
    assert launch(main, _args(root, run, 3, "--checkpoint.resume=auto"), 3) == [1, 1, 1]
    assert "global batch is 8 examples" in capfd.readouterr().err


# --------------------------------------------------------------------------------------------
# ELECTRA replaced-token detection: generator + discriminator, shared embedding in the root unit
# --------------------------------------------------------------------------------------------
def _electra_args(root, run, *extra):
    return [f"--train.output_dir={run}", f"--data.train_files={root / 'train.txt'}",
            f"--data.tokenizer={root / 'tokenizer'}", "--model.preset=electra-tiny",
            "--model.overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}", "--data.max_length=32",
            "--train.batch_size=4", "--train.max_steps=5", "--train.log_every=1", "--checkpoint.every_steps=5",
            "--optim.lr=1e-2", "--schedule.warmup_steps=1", "--train.device=cpu", "--train.progress=false",
            "--train.tensorboard=false", *extra]


def test_electra_rtd_fsdp_equals_ddp(corpus, tmp_path):  # noqa: F811
    """FSDP x 2 against DDP x 2 (not one process): the pretrainer draws its masks and Gumbel samples
    from each rank's RNG stream and averages the generator loss over each rank's masked positions, so
    only a run with the same ranks can match; DDP equals one process apart from that (tests/train)."""
    ddp, fsdp = tmp_path / "ddp", tmp_path / "fsdp"
    assert launch(electra_main, _electra_args(corpus, ddp, "--train.distributed=ddp"), 2, timeout_s=600) == [0, 0]
    assert launch(electra_main, _electra_args(corpus, fsdp, "--train.distributed=fsdp"), 2, timeout_s=600) == [0, 0]
    rows = {run: {r["step"]: r for r in read_metrics(run) if r["split"] == "train"} for run in (ddp, fsdp)}
    assert sorted(rows[fsdp]) == [1, 2, 3, 4, 5]
    for step, ref in rows[ddp].items():
        for key in ("loss", "gen_loss", "disc_loss"):
            assert rows[fsdp][step][key] == pytest.approx(ref[key], abs=TOL), (step, key)
    for part in ("generator", "discriminator"):  # gathered on rank 0 from the shards
        ref, got = (load_file(run / "model" / part / "model.safetensors") for run in (ddp, fsdp))
        assert ref.keys() == got.keys()
        assert all(torch.allclose(ref[k], got[k], atol=TOL, rtol=0) for k in ref), part
    assert rows[fsdp][5]["loss"] < rows[fsdp][1]["loss"] - 1e-2  # it trains: the check compares moving numbers
