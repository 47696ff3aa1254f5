"""FSDP on two CPU processes (gloo) with the T5 pretraining recipe: the same losses and weights as one
process on the same global batch; sharded checkpoints resume on 1 process and a one-process checkpoint on
2; rank 0 alone writes metrics and exports; `t5electra convert` turns a sharded checkpoint into one HF
directory; ELECTRA RTD pretraining (and the MLM baseline) on 2 processes equals one process, and resumes
2 -> 1 and 1 -> 2. dropout 0: dropout masks are per rank, everything else (data order, span corruption,
ELECTRA's masks and replacement samples) is defined per global batch and per example."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from multiproc import launch
from t5electra.cli import main as cli_main
from t5electra.recipes.pretrain_electra import build_loader, load_tokenizer
from t5electra.recipes.pretrain_electra import default_config as electra_default_config
from t5electra.recipes.pretrain_electra import main as electra_main
from t5electra.recipes.pretrain_t5 import main
from t5electra.tokenizers import T5Tokenizer
from t5electra.train.config import load_config
from t5electra.train.distributed import DistEnv
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


class _RunsCode:
    def __init__(self, flag):
        self.flag = flag

    def __reduce__(self):  # unpickling calls open(flag, "w"): a file appears if the pickle ran
        return (open, (str(self.flag), "w"))


def test_sharded_metadata_that_would_run_code_is_refused(runs, tmp_path, capsys):
    """DCP reads sharded/.metadata with a plain pickle.load: a checkpoint from elsewhere ran code at
    `convert` (and at resume). The metadata is read first with an unpickler of DCP's classes only."""
    import pickle
    import shutil

    root, one, two = runs
    evil = tmp_path / "evil"
    shutil.copytree(two / "checkpoints" / "step-00000002", evil)
    flag = tmp_path / "ran"
    (evil / "sharded" / ".metadata").write_bytes(pickle.dumps(_RunsCode(flag)))
    assert cli_main(["convert", str(evil), str(tmp_path / "out")]) == 1
    assert "would run code" in capsys.readouterr().err and not flag.exists()
    resumed = tmp_path / "resumed"
    assert main(_args(root, resumed, 8, f"--checkpoint.resume={evil}")) == 1
    assert not flag.exists()
    (evil / "sharded" / ".metadata").write_bytes(b"\x80\x04 not a pickle")  # damaged: an error, no traceback
    assert cli_main(["convert", str(evil), str(tmp_path / "out")]) == 1
    assert "not readable DCP metadata" in capsys.readouterr().err


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
# ELECTRA replaced-token detection (generator + discriminator, shared embedding in the root unit)
# and the MLM baseline: every row carries its own seed, from which its masks and Gumbel samples are
# drawn, so N processes corrupt the global batch as one process does.
# --------------------------------------------------------------------------------------------
def _electra_args(root, run, batch_size, *extra, steps=5):
    return [f"--train.output_dir={run}", f"--data.train_files={root / 'one_document.txt'}",
            f"--data.tokenizer={root / 'tokenizer'}", "--model.preset=electra-tiny",
            "--model.overrides={hidden_dropout_prob: 0.0, attention_probs_dropout_prob: 0.0}", "--data.max_length=32",
            f"--train.batch_size={batch_size}", f"--train.max_steps={steps}", "--train.log_every=1",
            "--checkpoint.every_steps=2", "--optim.lr=1e-2", "--schedule.warmup_steps=1", "--train.device=cpu",
            "--train.progress=false", "--train.tensorboard=false", *extra]


def _train_rows(run):
    return {r["step"]: r for r in read_metrics(run) if r["split"] == "train"}


def _close_electra(got, ref, steps, keys=("loss", "gen_loss", "disc_loss")):
    assert sorted(got) == list(steps), sorted(got)  # one line per step: rank 1 wrote none
    for step in steps:
        for key in keys:
            assert got[step][key] == pytest.approx(ref[step][key], abs=TOL), (step, key)


@pytest.fixture(scope="module")
def electra_runs(corpus, tmp_path_factory):  # noqa: F811
    """test_pretrain_electra.py's lines as ONE document, so that every row of 32 is 30 words between
    [CLS] and [SEP] (no document boundary inside: 32 real tokens and 4 masked positions in every row).
    Then each process's token means average to the mean over the global batch, as one process takes
    it: the losses are per micro-batch token means (official ELECTRA), not global ones.
    One process with batch 8, and FSDP x 2 with batch 4 each; 5 steps, checkpoints at 2 and 4.
    Within 1e-5: the total loss is ~39 (gen + 50 x disc), where one float32 rounding step is 3.8e-6."""
    lines = (corpus / "train.txt").read_text().split("\n")
    (corpus / "one_document.txt").write_text(" ".join(lines) + "\n")
    tmp = tmp_path_factory.mktemp("electra_fsdp")
    one, fsdp = tmp / "one", tmp / "fsdp"
    assert electra_main(_electra_args(corpus, one, 8, "--train.distributed=none")) == 0
    assert launch(electra_main, _electra_args(corpus, fsdp, 4, "--train.distributed=fsdp"), 2, timeout_s=600) == [0, 0]
    return corpus, one, fsdp


def test_electra_rows_have_equal_token_counts(electra_runs):
    """The premise of the equalities below, checked on the rows the runs read."""
    root, one, _ = electra_runs
    cfg = load_config(None, _electra_args(root, one, 8), base=electra_default_config())
    tokenizer = load_tokenizer(cfg)
    batches = iter(build_loader(cfg, cfg.data.train_files, tokenizer, DistEnv(), train=True))
    for _ in range(5):
        batch = next(batches)
        assert batch["attention_mask"].sum(-1).tolist() == [32] * 8
        assert len(set(batch["example_seed"].tolist())) == 8


def test_electra_rtd_fsdp_equals_one_process(electra_runs):
    """FSDP x 2 (batch 4 each) logs the losses of one process with batch 8 within 1e-5 at each of 5
    steps and ends with the same generator and discriminator: same rows, same masks, same samples."""
    _, one, fsdp = electra_runs
    rows = _train_rows(one)
    _close_electra(_train_rows(fsdp), rows, range(1, 6))
    for part in ("generator", "discriminator"):  # gathered on rank 0 from the shards
        ref, got = (load_file(run / "model" / part / "model.safetensors") for run in (one, fsdp))
        assert ref.keys() == got.keys()
        assert all(torch.allclose(ref[k], got[k], atol=TOL, rtol=0) for k in ref), part
    assert rows[5]["loss"] < rows[1]["loss"] - 1e-2  # it trains: the check compares moving numbers
    assert rows[2]["gen_loss"] != rows[1]["gen_loss"]


def test_electra_rtd_resumes_on_another_number_of_processes(electra_runs, tmp_path):
    root, one, fsdp = electra_runs
    # 2 -> 1: the sharded step-2 checkpoint of the FSDP run continues in one process with batch 8
    two_to_one = tmp_path / "two_to_one"
    assert electra_main(_electra_args(root, two_to_one, 8, "--train.distributed=none",
                                      f"--checkpoint.resume={fsdp / 'checkpoints' / 'step-00000002'}")) == 0
    _close_electra(_train_rows(two_to_one), _train_rows(fsdp), range(3, 6))
    # 1 -> 2: the one-process step-2 checkpoint continues on 2 DDP processes with batch 4
    one_to_two = tmp_path / "one_to_two"
    assert launch(electra_main, _electra_args(root, one_to_two, 4, "--train.distributed=ddp",
                                              f"--checkpoint.resume={one / 'checkpoints' / 'step-00000002'}"),
                  2, timeout_s=600) == [0, 0]
    _close_electra(_train_rows(one_to_two), _train_rows(one), range(3, 6))


def test_mlm_baseline_on_two_processes_equals_one_process(electra_runs, tmp_path):
    root = electra_runs[0]
    one, ddp = tmp_path / "one", tmp_path / "ddp"
    mlm = ("--data.objective=mlm",)
    assert electra_main(_electra_args(root, one, 8, *mlm, steps=3)) == 0
    assert launch(electra_main, _electra_args(root, ddp, 4, *mlm, "--train.distributed=ddp", steps=3), 2,
                  timeout_s=600) == [0, 0]
    _close_electra(_train_rows(ddp), _train_rows(one), range(1, 4), keys=("loss", "gen_loss"))
    ref, got = (load_file(run / "model" / "generator" / "model.safetensors") for run in (one, ddp))
    assert all(torch.allclose(ref[k], got[k], atol=TOL, rtol=0) for k in ref)
