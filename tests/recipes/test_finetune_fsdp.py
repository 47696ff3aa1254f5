"""FSDP fine-tuning on two CPU processes (gloo): T5 (generation-scored) and ELECTRA (classification head)
train to the same losses and weights as one process on the same global batch; evaluation and the final
scoring run on rank 0 with the gathered weights and give one process's numbers; sharded checkpoints
resume; rank 0 alone writes metrics, results.json and RUN/model. dropout 0: dropout masks are drawn per
rank, everything else is defined per global batch."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from multiproc import launch
from t5electra.recipes import finetune_electra, finetune_t5
from t5electra.tokenizers import T5Tokenizer
from t5electra.train.logging import read_metrics

# the two fixtures of the one-process recipe tests (tiny sentiment data, tokenizer, ELECTRA discriminator)
from test_finetune_electra import root  # noqa: F401 (fixture)
from test_finetune_t5 import task_dir  # noqa: F401 (fixture)

# Reduce-scattered gradients are summed in another order than one process sums them: ~1e-7 of float
# rounding per step, carried by AdamW; 1e-5 over 4 steps leaves room for that and none for a wrong batch,
# a lost example or a missed gradient (each moves the loss by > 1e-3 at lr 1e-3 to 1e-2).
TOL = 1e-5
# Weights: AdamW divides each step by sqrt(v), so where a gradient is small that rounding moves a
# weight by more than it moves the loss: max |difference| 1.07e-5 after 4 steps under
# ATEN_CPU_CAPABILITY=avx2 (AVX2 kernels sum in another order; < 1e-5 with AVX-512), median 3e-7.
# A lost example per step (one process at batch 7 instead of 8) moves every tensor by 1.3e-3 to
# 4e-2 (measured), so 1e-4 still fails it in every tensor.
WEIGHT_TOL = 1e-4
STEPS = 4
# accuracy (%) over 32-40 examples: weights within 1e-5 may still flip one answer on a near-tie of two logits
ONE_ANSWER = 100 / 32 + 1e-9
# generous: a 2-process run takes ~1 min on a loaded 2-core machine at nice 19; a hang still ends the test
LAUNCH_TIMEOUT = 900


def _losses(run):
    return {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}


def _evals(run):
    return {r["step"]: r for r in read_metrics(run) if r["split"] == "eval"}


def _close(a, b):
    assert a.keys() == b.keys() and a
    for step in a:
        assert a[step] == pytest.approx(b[step], abs=TOL), step


def _same_weights(one, two):
    ref, got = load_file(one / "model" / "model.safetensors"), load_file(two / "model" / "model.safetensors")
    assert ref.keys() == got.keys()
    for k in ref:
        assert torch.allclose(ref[k], got[k], atol=WEIGHT_TOL, rtol=0), (k, (ref[k] - got[k]).abs().max().item())


def _check_fsdp_run(one, two, metric):
    """Same losses, eval numbers, best checkpoint, results and exported weights; one writer."""
    assert sorted(_losses(two)) == list(range(1, STEPS + 1))  # one line per step: rank 1 wrote none
    _close(_losses(two), _losses(one))
    e1, e2 = _evals(one), _evals(two)
    assert sorted(e2) == [2, 4] and len([r for r in read_metrics(two) if r["split"] == "eval"]) == 2
    for step in e1:  # rank 0 scored the gathered weights: one process's loss and metric
        assert e2[step]["loss"] == pytest.approx(e1[step]["loss"], abs=TOL)
        assert e2[step][metric] == pytest.approx(e1[step][metric], abs=ONE_ANSWER)
    r1, r2 = (json.loads((run / "results.json").read_text()) for run in (one, two))
    assert r2["test"][metric] == pytest.approx(r1["test"][metric], abs=ONE_ANSWER)
    _same_weights(one, two)  # RUN/model: the best checkpoint's weights, gathered from the shards
    ckpt = two / "checkpoints" / "step-00000002"
    assert (ckpt / "sharded" / ".metadata").is_file() and not (ckpt / "model.safetensors").exists()
    assert not list(two.glob("checkpoints/.tmp*"))


# --------------------------------------------------------------------------------------------
# T5
# --------------------------------------------------------------------------------------------
def _t5_args(data, run, batch_size, *extra):
    return [f"--train.output_dir={run}", "--data.task=sentiment", f"--data.task_dir={data}",
            f"--data.tokenizer={data / 'tokenizer'}", "--model.preset=t5-tiny",
            "--model.overrides={dropout_rate: 0.0}", f"--train.batch_size={batch_size}", "--eval.batch_size=16",
            f"--train.max_steps={STEPS}", "--train.log_every=1", "--eval.every_steps=2", "--checkpoint.every_steps=2",
            "--optim.name=adamw", "--optim.lr=1e-2", "--schedule.name=constant", "--eval.metric=accuracy",
            "--eval.greater_is_better=true", "--train.device=cpu", "--train.progress=false",
            "--train.tensorboard=false", *extra]


@pytest.fixture(scope="module")
def t5_runs(task_dir, tmp_path_factory):  # noqa: F811
    """One process with batch 8, FSDP x 2 with batch 4 each; 4 steps, evaluated at 2 and 4."""
    tok = T5Tokenizer.from_pretrained(task_dir / "tokenizer")
    # the loss is a mean over each process's target tokens: equal with one process's when every target
    # has as many tokens, which holds for these label words (else the per-rank means weigh differently)
    assert len({len(tok(w)["input_ids"]) for w in ("positive", "negative")}) == 1
    tmp = tmp_path_factory.mktemp("t5fsdp")
    one, two = tmp / "one", tmp / "fsdp"
    assert finetune_t5.main(_t5_args(task_dir, one, 8, "--train.distributed=none")) == 0
    assert launch(finetune_t5.main, _t5_args(task_dir, two, 4, "--train.distributed=fsdp"), 2, timeout_s=LAUNCH_TIMEOUT) == [0, 0]
    return one, two


def test_t5_fsdp_finetuning_equals_one_process(t5_runs):
    one, two = t5_runs
    _check_fsdp_run(one, two, "accuracy")
    assert T5Tokenizer.from_pretrained(two / "model")("positive")["input_ids"]


def test_t5_fsdp_checkpoint_resumes_on_one_process(t5_runs, task_dir, tmp_path):  # noqa: F811
    one, two = t5_runs
    # DCP reshards: T5's example stream is global, so the sharded step-2 checkpoint continues in one process
    # (sharded -> sharded on 2 processes: the ELECTRA test below)
    single = tmp_path / "two_to_one"
    assert finetune_t5.main(_t5_args(task_dir, single, 8, f"--checkpoint.resume={two / 'checkpoints' / 'step-00000002'}")) == 0
    _close(_losses(single), {s: v for s, v in _losses(one).items() if s > 2})


def _grouped_order_matches_one_process(main, args, tmp_path, resume_batch, *resume_extra):
    """With data.group_by_length=2: one process at batch 8, DDP x 2 at batch 4 (the same losses), and
    DDP's step-2 checkpoint continued in one process at ``resume_batch`` + ``resume_extra`` (the
    same losses for steps 3-4). ``args(run, batch_size, *extra)``. Returns the one-process run."""
    grouped = ("--data.group_by_length=2",)
    g1, g2, resumed = tmp_path / "one", tmp_path / "ddp", tmp_path / "two_to_one"
    assert main(args(g1, 8, "--train.distributed=none", *grouped)) == 0
    assert launch(main, args(g2, 4, "--train.distributed=ddp", *grouped), 2, timeout_s=LAUNCH_TIMEOUT) == [0, 0]
    _close(_losses(g2), _losses(g1))
    assert main(args(resumed, resume_batch, "--train.distributed=none", *resume_extra,
                     f"--checkpoint.resume={g2 / 'checkpoints' / 'step-00000002'}", *grouped)) == 0
    _close(_losses(resumed), {s: v for s, v in _losses(g1).items() if s > 2})
    return g1


def test_t5_length_grouped_order_is_per_global_batch(t5_runs, task_dir, tmp_path):  # noqa: F811
    """data.group_by_length=2 (windows of 2 global batches of 8): DDP x 2 with batch 4 trains on one
    process's batches (each rank its share of every length-sorted global batch, not its own windows),
    and the 2-process step-2 checkpoint continues in one process with batch 8."""
    one, _ = t5_runs
    g1 = _grouped_order_matches_one_process(finetune_t5.main, lambda *a: _t5_args(task_dir, *a), tmp_path, 8)
    # the grouping took effect: other batches than the ungrouped run's from the first step on
    assert abs(_losses(g1)[1] - _losses(one)[1]) > 1e-3


# --------------------------------------------------------------------------------------------
# ELECTRA
# --------------------------------------------------------------------------------------------
def _electra_args(data, run, batch_size, *extra):
    return [f"--train.output_dir={run}", f"--model.init_from={data / 'disc'}", "--data.max_length=32",
            "--model.overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
            "--electra.head=classification", f"--data.train_files={data / TRAIN_ODD}",
            f"--data.validation_files={data / 'dev.tsv'}", f"--data.test_files={data / 'test.tsv'}",
            f"--train.batch_size={batch_size}", "--eval.batch_size=16", f"--train.max_steps={STEPS}",
            "--train.log_every=1", "--eval.every_steps=2", "--checkpoint.every_steps=2", "--optim.lr=1e-3",
            "--schedule.name=constant", "--train.device=cpu", "--train.progress=false",
            "--train.tensorboard=false", *extra]


# 13 training examples: the 32 of 4 steps of 8 cross epoch boundaries at odd positions (13 and 26, in
# steps 2 and 4), where a per-rank order (each rank its share of every epoch: 7 examples for rank 0, 6 for
# rank 1) and the global one part ways; the step-2 checkpoints are past the first
TRAIN_ODD = "train_13.tsv"


@pytest.fixture(scope="module")
def electra_runs(root, tmp_path_factory):  # noqa: F811
    """One process with batch 8, FSDP x 2 with batch 4 each (activation checkpointing on); 4 steps."""
    rows = (root / "train.tsv").read_text().splitlines(keepends=True)
    (root / TRAIN_ODD).write_text("".join(rows[:1 + 13]))  # the header and 13 examples
    tmp = tmp_path_factory.mktemp("electrafsdp")
    one, two = tmp / "one", tmp / "fsdp"
    assert finetune_electra.main(_electra_args(root, one, 8, "--train.distributed=none")) == 0
    assert launch(finetune_electra.main, _electra_args(root, two, 4, "--train.distributed=fsdp",
                                                       "--train.activation_checkpointing=true"), 2, timeout_s=LAUNCH_TIMEOUT) == [0, 0]
    return one, two


def test_electra_fsdp_finetuning_equals_one_process(electra_runs):
    one, two = electra_runs
    _check_fsdp_run(one, two, "accuracy")


def test_electra_fsdp_finetuning_resumes_sharded(electra_runs, root, tmp_path):  # noqa: F811
    one, two = electra_runs
    again = tmp_path / "resumed"  # sharded -> sharded on the same number of processes
    assert launch(finetune_electra.main, _electra_args(root, again, 4, "--train.distributed=fsdp",
                                                       f"--checkpoint.resume={two / 'checkpoints' / 'step-00000002'}"),
                  2, timeout_s=LAUNCH_TIMEOUT) == [0, 0]
    _close(_losses(again), {s: v for s, v in _losses(one).items() if s > 2})


# ELECTRA fine-tuning's data order is defined per global batch (ExampleStream): a checkpoint continues on
# another number of processes, with another strategy, with the same losses. With a per-rank order (each
# rank its own share of every epoch, as before) these resumes would train on other examples from step 3
# on: the losses move by > 1e-3 (checked by breaking the order on purpose).
def test_electra_fsdp_checkpoint_resumes_on_one_process(electra_runs, root, tmp_path):  # noqa: F811
    one, two = electra_runs  # 2 -> 1: the sharded step-2 checkpoint, named, in one process with batch 8
    single = tmp_path / "two_to_one"
    assert finetune_electra.main(_electra_args(root, single, 8, "--train.distributed=none",
                                               f"--checkpoint.resume={two / 'checkpoints' / 'step-00000002'}")) == 0
    _close(_losses(single), {s: v for s, v in _losses(one).items() if s > 2})


def _cut_at_step_2(run, copy):
    """A copy of ``run`` as if it had stopped after its step-2 checkpoint (for --checkpoint.resume=auto)."""
    shutil.copytree(run, copy)
    shutil.rmtree(copy / "checkpoints" / "step-00000004")
    (copy / "checkpoints" / "latest").write_text("step-00000002\n")
    for name in ("model", "results.json"):
        (shutil.rmtree if (copy / name).is_dir() else (copy / name).unlink)(copy / name)


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_electra_checkpoint_resumes_on_two_processes_from_auto(electra_runs, root, tmp_path, strategy):  # noqa: F811
    one, _ = electra_runs  # 1 -> 2: the one-process run continues with resume=auto on 2 processes, batch 4
    cut = tmp_path / "one_to_two"
    _cut_at_step_2(one, cut)
    assert launch(finetune_electra.main, _electra_args(root, cut, 4, f"--train.distributed={strategy}",
                                                       "--checkpoint.resume=auto"), 2, timeout_s=LAUNCH_TIMEOUT) == [0, 0]
    _close(_losses(cut), _losses(one))  # steps 1-2 as written by the one-process run, 3-4 on two processes


def test_electra_length_grouped_order_is_per_global_batch(electra_runs, root, tmp_path):  # noqa: F811
    """data.group_by_length=2 (windows of 2 global batches of 8): DDP x 2 with batch 4 trains on one
    process's batches, and its step-2 checkpoint continues in one process with batch 4 x 2 accumulation."""
    one, _ = electra_runs
    g1 = _grouped_order_matches_one_process(finetune_electra.main, lambda *a: _electra_args(root, *a), tmp_path, 4,
                                            "--train.grad_accum_steps=2")
    # the grouping took effect: other batches than the ungrouped run's from the first step on
    assert abs(_losses(g1)[1] - _losses(one)[1]) > 1e-3


def test_electra_qa_on_two_processes_equals_one_process(root, tmp_path):  # noqa: F811
    """Extractive QA, DDP x 2 at batch 4 against one process at batch 8: the same losses and validation
    loss. Windows of different lengths are padded to their micro-batch's longest, which differs between
    the two; QA's loss masks the padding (eval/heads.py qa_loss), so it does not see it (was: the step-1
    loss 3.31 on 2 processes against 3.36 on one, the padding taking part of each softmax)."""
    import json as _json
    import random

    rng = random.Random(0)
    words = "the movie plot was and a with some actors story scenes".split()
    paragraphs = []
    for i in range(24):
        answer = ("good", "great", "superb", "fine")[i % 4]
        context = f"{' '.join(rng.choice(words) for _ in range(rng.randint(2, 12)))} the film was {answer} and dull"
        paragraphs.append({"context": context, "qas": [{"id": str(i), "question": "what was the film", "answers": [
            {"text": answer, "answer_start": context.index(f" was {answer}") + 5}]}]})
    squad = tmp_path / "squad.json"
    squad.write_text(_json.dumps({"data": [{"title": "t", "paragraphs": paragraphs}]}))

    def args(run, batch_size, *extra):
        return [f"--train.output_dir={run}", f"--model.init_from={root / 'disc'}", "--data.max_length=32",
                "--model.overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}",
                "--electra.head=qa", f"--data.train_files={squad}", f"--data.validation_files={squad}",
                f"--train.batch_size={batch_size}", "--train.max_steps=2", "--train.log_every=1",
                "--eval.every_steps=2", "--checkpoint.every_steps=2", "--optim.lr=1e-3", "--train.device=cpu",
                "--train.progress=false", "--train.tensorboard=false", *extra]

    one, two = tmp_path / "one", tmp_path / "ddp"
    assert finetune_electra.main(args(one, 8, "--train.distributed=none")) == 0
    assert launch(finetune_electra.main, args(two, 4, "--train.distributed=ddp"), 2, timeout_s=LAUNCH_TIMEOUT) == [0, 0]
    _close(_losses(two), _losses(one))
    assert _evals(two)[2]["loss"] == pytest.approx(_evals(one)[2]["loss"], abs=TOL)
