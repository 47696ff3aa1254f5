"""Checkpoints: atomic writes, pruning, best, config check on resume, NaN guard, and a training run
killed with SIGKILL that resumes to exactly the losses of an uninterrupted run."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import random
import re
import warnings
import signal

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import toy_train
from multiproc import run_and_exit, start
from t5electra.checkpoint.keymap import KeyMap, Rule
from t5electra.config import ModelConfig
from t5electra.errors import CheckpointError, CheckpointNotFoundError, ConfigError, TrainingError
from t5electra.modeling import PreTrainedModel
from t5electra.train.checkpointing import CheckpointManager, check_finite, damage
from t5electra.train.config import RunConfig
from t5electra.train.logging import read_metrics
from t5electra.train.loop import train_step


def _setup(lr=1e-2):
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.2), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (1 + s))
    return model, opt, sched


def _train(model, opt, sched, steps):
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).mean().backward()
        opt.step()
        sched.step()


def test_save_load_restores_everything(tmp_path):
    model, opt, sched = _setup()
    _train(model, opt, sched, 3)
    mgr = CheckpointManager(tmp_path, config={"optim": {"lr": 1e-2}})
    path = mgr.save(3, model, opt, sched, data_state={"cursor": 17, "epoch": 1}, extra={"tokens_seen": 900})
    expected_draws = (random.random(), np.random.rand(), torch.rand(2))
    after = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, opt, sched, 2)                        # drift away, then come back
    model2, opt2, sched2 = _setup()
    state = mgr.load(mgr.latest(), model2, opt2, sched2)
    assert state["step"] == 3 and state["data"] == {"cursor": 17, "epoch": 1}
    assert state["extra"] == {"tokens_seen": 900}
    for k, v in model2.state_dict().items():
        assert torch.equal(v, after[k]), k
    assert sched2.last_epoch == 3 and opt2.state_dict()["state"][0]["step"] == 3
    draws = (random.random(), np.random.rand(), torch.rand(2))
    assert draws[0] == expected_draws[0] and draws[1] == expected_draws[1]
    assert torch.equal(draws[2], expected_draws[2])
    # the training state is readable with weights_only=True (no pickled code)
    torch.load(path / "training_state.pt", weights_only=True)


@dataclasses.dataclass(kw_only=True)
class _TinyConfig(ModelConfig):
    model_type = "tiny-test"
    hidden_size: int = 4


class _TinyPretrained(PreTrainedModel):
    config_class = _TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    @classmethod
    def hf_keymap(cls, config):
        return KeyMap([Rule("dense.weight", "tiny.dense.weight"), Rule("dense.bias", "tiny.dense.bias")])


def test_pretrained_models_are_saved_in_the_hf_layout(tmp_path):
    model = _TinyPretrained(_TinyConfig(hidden_size=4))
    path = CheckpointManager(tmp_path).save(1, model)
    assert json.loads((path / "config.json").read_text())["model_type"] == "tiny-test"
    assert set(load_file(path / "model.safetensors")) == {"tiny.dense.weight", "tiny.dense.bias"}
    again = _TinyPretrained.from_pretrained(path)            # a checkpoint is a model directory
    assert torch.equal(again.dense.weight, model.dense.weight)
    other = _TinyPretrained(_TinyConfig(hidden_size=4))
    CheckpointManager(tmp_path).load(path, other)
    assert torch.equal(other.dense.bias, model.dense.bias)


def test_keep_last_latest_and_best(tmp_path):
    model, opt, sched = _setup()
    mgr = CheckpointManager(tmp_path, keep_last=2, greater_is_better=True)
    for step, acc in [(1, 0.5), (2, 0.9), (3, 0.6), (4, 0.7), (5, 0.8)]:
        mgr.save(step, model, opt, sched, metrics={"accuracy": acc}, metric_name="accuracy")
    assert [p.name for p in mgr.checkpoints()] == ["step-00000002", "step-00000004", "step-00000005"]
    assert mgr.latest().name == "step-00000005"
    assert mgr.best() == {"name": "step-00000002", "step": 2, "metric": "accuracy", "value": 0.9,
                          "greater_is_better": True}
    assert mgr.resolve("auto") == mgr.latest() and mgr.resolve(tmp_path) == mgr.latest()
    assert mgr.resolve(None) is None
    with pytest.raises(CheckpointNotFoundError, match="nothing to resume from"):
        mgr.resolve(tmp_path / "elsewhere")


def test_pointer_files_stand_for_their_checkpoint(tmp_path):
    """RUN/checkpoints/latest and .../best given where a directory is expected (resume, init_from,
    evaluate / generate, convert) mean the checkpoint they name: they were "not a directory"."""
    from t5electra.commands.convert import source_dir
    from t5electra.recipes.evaluate import resolve_model_dir
    from t5electra.train.checkpointing import follow_pointer, run_model_dir

    model = _TinyPretrained(_TinyConfig(hidden_size=4))  # checkpoints with config.json: model directories
    mgr = CheckpointManager(tmp_path, keep_last=3, greater_is_better=True)
    for step, acc in [(1, 0.9), (2, 0.5)]:
        mgr.save(step, model, metrics={"accuracy": acc}, metric_name="accuracy")
    latest, best = tmp_path / "checkpoints" / "latest", tmp_path / "checkpoints" / "best"
    first = tmp_path / "checkpoints" / "step-00000001"
    assert mgr.latest().name == "step-00000002" and latest.is_file() and best.is_file()
    for resolver in (follow_pointer, mgr.resolve, run_model_dir, resolve_model_dir, source_dir):
        assert resolver(latest) == mgr.latest(), resolver
        assert resolver(best) == first, resolver
    elsewhere = tmp_path / "notes" / "latest"  # a file of that name anywhere else is itself
    elsewhere.parent.mkdir()
    elsewhere.write_text("step-00000001\n")
    assert follow_pointer(elsewhere) == elsewhere

def _cfg(recipe_defaults=None, *overrides):
    from t5electra.train.config import load_config

    return load_config(None, list(overrides), base=recipe_defaults() if recipe_defaults else None)


def test_the_best_checkpoint_follows_the_metrics_direction(tmp_path):
    """eval.greater_is_better follows eval.metric (was: a recipe default, so ELECTRA fine-tuning with
    eval.metric=loss kept the highest validation loss as best, and T5 fine-tuning with eval.metric=accuracy
    alone the lowest accuracy)."""
    from t5electra.recipes.finetune_electra import default_config as electra_finetuning

    model, opt, sched = _setup()
    for name, cfg, values, best in [
            ("electra-loss", _cfg(electra_finetuning, "--eval.metric=loss"), (0.5, 0.3, 0.4), 2),
            ("electra-auto", _cfg(electra_finetuning), (50.0, 90.0, 70.0), 2),
            ("t5-accuracy", _cfg(None, "--eval.metric=accuracy"), (50.0, 90.0, 70.0), 2),
            ("t5-loss", _cfg(None), (0.5, 0.3, 0.4), 2)]:
        run = tmp_path / name
        mgr = CheckpointManager.for_run(cfg, run, 1)
        metric = "accuracy" if cfg.eval.metric == "auto" else cfg.eval.metric
        for step, value in enumerate(values, 1):
            mgr.save(step, model, opt, sched)  # saved before its evaluation, as the recipes do
            mgr.record_metrics(step, {metric: value, "loss": value}, metric)
        assert mgr.best()["step"] == best, name
        assert json.loads((run / "checkpoints" / f"step-{best:08d}" / "meta.json").read_text())["metrics"][metric] \
            == values[best - 1]


def test_a_changed_direction_re_ranks_the_kept_checkpoints(tmp_path):
    model, opt, sched = _setup()
    wrong = CheckpointManager(tmp_path, keep_last=3)
    for step, loss in [(1, 0.5), (2, 0.3), (3, 0.4)]:
        wrong.save(step, model, opt, sched, metrics={"loss": loss}, metric_name="loss")
    # a run with the old ELECTRA default (greater_is_better=true) kept the highest loss
    wrong._write_best({"name": "step-00000001", "step": 1, "metric": "loss", "value": 0.5, "greater_is_better": True})
    # resumed with the direction the metric has (eval.greater_is_better is resume-safe): the next
    # evaluation re-ranks every kept checkpoint by its recorded metrics, with a warning
    right = CheckpointManager(tmp_path, keep_last=3, greater_is_better=False)
    right.save(4, model, opt, sched)
    with pytest.warns(UserWarning, match=r"best was chosen by loss \(higher is better\); this run ranks by loss "
                                         r"\(lower is better\): re-ranked among the 4 evaluated checkpoint\(s\) kept, "
                                         r"best is now step-00000002 \(loss 0.3"):
        right.record_metrics(4, {"loss": 0.45}, "loss")
    assert right.best() == {"name": "step-00000002", "step": 2, "metric": "loss", "value": 0.3, "greater_is_better": False}
    # a run that ended with the wrong direction, resumed at its last step (nothing more to evaluate):
    # the model exported is the re-ranked best
    wrong._write_best({"name": "step-00000003", "step": 3, "metric": "loss", "value": 0.4})  # an old record
    with pytest.warns(UserWarning, match="best is now step-00000002"):
        exported = right.best_model(_setup()[0])
    assert right.best()["name"] == "step-00000002"
    saved = load_file(tmp_path / "checkpoints" / "step-00000002" / "model.safetensors")
    assert all(torch.equal(v, saved[k]) for k, v in exported.state_dict().items())


def test_a_resume_ranks_by_the_runs_metric(tmp_path):
    """A finished run resumed with another eval.metric re-ranks its kept checkpoints by it (it ranked the
    old metric in the new metric's direction: RUN/model was the worst checkpoint); an evaluation recorded
    under an eval.metric it lacks is ranked when the resume fixes eval.metric (it was never ranked)."""
    from t5electra.train.distributed import DistEnv
    from t5electra.train.saving import resume_evaluation

    model, opt, sched = _setup()
    evaluated = []
    done = CheckpointManager(tmp_path / "a", keep_last=5)
    for step, (acc, loss) in enumerate([(40.0, 0.2), (90.0, 0.5), (60.0, 0.3)], 1):
        done.save(step, model, opt, sched)
        done.record_metrics(step, {"accuracy": acc, "loss": loss}, "accuracy")
    assert done.best()["step"] == 2
    resumed = CheckpointManager(tmp_path / "a", keep_last=5)  # --eval.metric=loss, at its last step
    with pytest.warns(UserWarning, match=r"chosen by accuracy \(higher is better\); this run ranks by loss \(lower"):
        resume_evaluation(resumed, DistEnv(), 3, {"accuracy": 60.0, "loss": 0.3}, evaluated.append, "loss")
    assert evaluated == [] and resumed.best()["step"] == 1 and resumed.best()["metric"] == "loss"
    assert resumed.best_model(_setup()[0]) is not None and resumed.best()["step"] == 1

    typo = CheckpointManager(tmp_path / "b")
    typo.save(1, model, opt, sched)
    with pytest.raises(ConfigError, match="eval.metric='f1' is not one of the evaluation's metrics"):
        typo.record_metrics(1, {"accuracy": 70.0}, "f1")
    assert typo.best() is None
    fixed = CheckpointManager(tmp_path / "b")
    resume_evaluation(fixed, DistEnv(), 1, {"accuracy": 70.0}, evaluated.append, lambda metrics: "accuracy")
    assert evaluated == [] and fixed.best()["step"] == 1 and fixed.best()["value"] == 70.0
    resume_evaluation(fixed, DistEnv(), 1, None, evaluated.append, "accuracy")  # its evaluation had failed
    assert evaluated == [1]


def test_a_new_lr_for_adafactors_relative_step_is_said_to_change_nothing(tmp_path):
    """Adafactor with relative_step sets its own lr: a resume with another optim.lr was accepted with
    'a new optim.lr is the schedule's new peak', and changed nothing."""
    from t5electra.train.config import load_config

    model, opt, sched = _setup()
    args = ["--optim.name=adafactor", "--optim.adafactor_relative_step=true"]
    path = CheckpointManager(tmp_path, config=load_config(None, [*args, "--optim.lr=0.01"]).to_dict()).save(
        1, model, opt, sched)
    with pytest.warns(UserWarning, match=r"another optim.lr .* changes nothing: with optim.adafactor_relative_step"):
        CheckpointManager(tmp_path, config=load_config(None, [*args, "--optim.lr=0.005"]).to_dict()).check_config(path)


def test_optim_lr_null_as_build_optimizer_advises_resumes_an_adafactor_relative_step_run(tmp_path):
    """build_optimizer warns that the default optim.lr is unused with Adafactor's relative step and
    advises optim.lr=null: a resume that follows the advice was refused as 'a different config'."""
    from t5electra.train.config import load_config

    model, opt, sched = _setup()
    args = ["--optim.name=adafactor", "--optim.adafactor_relative_step=true"]
    path = CheckpointManager(tmp_path, config=load_config(None, args).to_dict()).save(1, model, opt, sched)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the honest setting: nothing to warn about
        CheckpointManager(tmp_path, config=load_config(None, [*args, "--optim.lr=null"]).to_dict()).check_config(path)


def test_a_checkpoint_without_workdir_resolves_paths_from_the_runs_config_yaml(tmp_path):
    """A checkpoint written before its meta.json recorded the working directory: its relative paths start
    where the run's config.yaml says it was trained (they were taken from the current directory, so a
    resume from elsewhere with the same files was 'a different config')."""
    from t5electra.train.config import load_config

    model, opt, sched = _setup()
    run, there = tmp_path / "run", tmp_path / "w"
    path = CheckpointManager(run, config=load_config(None, ["--data.tokenizer=tok/"]).to_dict()).save(
        1, model, opt, sched)
    meta = json.loads((path / "meta.json").read_text())
    del meta["workdir"]
    (path / "meta.json").write_text(json.dumps(meta))
    (run / "config.yaml").write_text(f"# working directory: {there} (relative paths below start there)\n")
    CheckpointManager(run, config=load_config(None, [f"--data.tokenizer={there / 'tok'}"]).to_dict()).check_config(path)


def test_crash_during_save_keeps_the_previous_checkpoint(tmp_path):
    model, opt, sched = _setup()
    mgr = CheckpointManager(tmp_path)
    good = mgr.save(1, model, opt, sched, data_state={"cursor": 1})
    _train(model, opt, sched, 1)

    def crash(tmp):
        raise RuntimeError("power cut")
    mgr.on_partial_write = crash
    with pytest.raises(RuntimeError, match="power cut"):
        mgr.save(2, model, opt, sched, data_state={"cursor": 2})

    def disk_full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")
    mgr.on_partial_write = disk_full
    with pytest.raises(CheckpointError, match=r"disk full: no space left on device.*previous checkpoint intact: .*step-00000001"):
        mgr.save(3, model, opt, sched)
    assert mgr.latest() == good and [p.name for p in mgr.checkpoints()] == ["step-00000001"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    fresh, opt2, sched2 = _setup()
    assert mgr.load(mgr.latest(), fresh, opt2, sched2)["data"] == {"cursor": 1}


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs Linux's /dev/full")
def test_disk_full_during_save_says_so_and_keeps_the_previous_checkpoint(tmp_path):
    model, opt, sched = _setup()
    mgr = CheckpointManager(tmp_path)
    good = mgr.save(1, model, opt, sched, data_state={"cursor": 1})

    def full_disk(tmp):  # the training state goes to /dev/full: every write fails with ENOSPC
        os.symlink("/dev/full", tmp / "training_state.pt")
    mgr.on_partial_write = full_disk
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*step-00000002 \(disk full: no space left "
                                              r"on device \([\d,]+ MB free at .*\); free some space, then resume\); "
                                              r"nothing was half-written: previous checkpoint intact: .*step-00000001"):
        mgr.save(2, model, opt, sched)
    assert mgr.latest() == good and [p.name for p in mgr.checkpoints()] == ["step-00000001"]
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))


def test_damaged_latest_checkpoint_falls_back_to_the_previous_good_one(tmp_path):
    model, opt, sched = _setup()
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for step in (1, 2, 3):
        mgr.save(step, model, opt, sched, data_state={"cursor": step})
    ckpts = tmp_path / "checkpoints"
    assert damage(ckpts / "step-00000003") is None
    state = ckpts / "step-00000003" / "training_state.pt"
    state.write_bytes(state.read_bytes()[:100])               # truncated
    (ckpts / "step-00000002" / "model.safetensors").write_bytes(b"")   # empty
    assert "training_state.pt" in damage(ckpts / "step-00000003")
    with pytest.warns(UserWarning, match=r"resuming from .*step-00000001, the newest intact checkpoint: skipped "
                                         r"step-00000003 \(training_state.pt: .*\); step-00000002 \(model.safetensors: "):
        found = mgr.resolve("auto")
    assert found == ckpts / "step-00000001"
    assert mgr.load(found, *_setup())["data"] == {"cursor": 1}
    (ckpts / "step-00000001" / "meta.json").write_text('{"step": 1, "tim')
    with pytest.raises(CheckpointError, match=r"no intact checkpoint to resume from in .*checkpoints: step-00000003 "
                                              r"\(training_state.pt.*step-00000001 \(meta.json: "):
        mgr.resolve(tmp_path)


def test_resume_under_a_different_config_is_refused(tmp_path):
    model, opt, sched = _setup()
    saved = RunConfig()
    saved.optim.lr, saved.train.seed = 1e-3, 1
    CheckpointManager(tmp_path, saved.to_dict()).save(1, model, opt, sched)
    now = RunConfig()
    now.optim.lr, now.train.seed, now.train.log_every = 1e-3, 1, 99  # log_every may change
    now.optim.weight_decay = 0.1
    with pytest.raises(CheckpointError, match=r"different config \(optim.weight_decay: 0.0 \(checkpoint\) != 0.1 "
                                              r"\(now\)\)"):
        CheckpointManager(tmp_path, now.to_dict()).load(tmp_path / "checkpoints" / "step-00000001", model, opt)
    now.optim.weight_decay = 0.0
    CheckpointManager(tmp_path, now.to_dict()).load(tmp_path / "checkpoints" / "step-00000001", model, opt)


def test_nan_guard_stops_before_touching_the_weights(tmp_path):
    model, opt, _ = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def nan_loss(m, batch):
        return m(batch).sum() * float("nan")
    with pytest.raises(TrainingError, match=r"loss is nan at step 7.*last good checkpoint is .*step-6"):
        train_step(model, [torch.randn(2, 3)], nan_loss, opt, step=7, last_checkpoint=tmp_path / "step-6")
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(TrainingError, match="no checkpoint was written yet"):
        check_finite(float("inf"), 3)
    check_finite(torch.tensor(1.5), 3)


def test_nan_guard_catches_an_infinite_gradient_without_clipping(tmp_path):
    # a finite loss whose gradient is not (was: unchecked when optim.max_grad_norm is off, so the
    # update wrote NaN into the weights and the next checkpoint saved them)
    model, opt, _ = _setup()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def loss(m, batch):  # sqrt(0) = 0, its derivative infinite
        return m(batch).sum() + (m[0].weight - m[0].weight.detach()).sqrt().sum()

    with pytest.raises(TrainingError, match=r"gradient norm is (nan|inf) at step 3.*last good checkpoint is .*step-2"):
        train_step(model, [torch.randn(2, 3)], loss, opt, max_grad_norm=None, step=3,
                   last_checkpoint=tmp_path / "step-2")
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    out = train_step(model, [torch.randn(2, 3)], lambda m, b: m(b).sum(), opt, max_grad_norm=None, step=3)
    assert out.grad_norm > 0  # logged without clipping too


def test_a_checkpoint_never_holds_non_finite_weights(tmp_path):
    model, opt, sched = _setup()
    mgr = CheckpointManager(tmp_path)
    _train(model, opt, sched, 1)
    good = mgr.save(1, model, opt, sched, data_state={"cursor": 1})
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")  # an update that diverged with a finite loss and gradient
    # was: step-2 saved with NaN, then named "the last good checkpoint" and refused on resume
    with pytest.raises(TrainingError, match=r"the weights are not finite after step 2 \(NaN or infinity in 1 "
                                            r"tensor\(s\): 2.weight\).*not saved.*the last good checkpoint is "
                                            r".*step-00000001"):
        mgr.save(2, model, opt, sched, data_state={"cursor": 2})
    assert mgr.checkpoints() == [good] and mgr.latest() == good
    assert json.loads((good / "meta.json").read_text())["weights_finite"] is True

    # a checkpoint with NaN weights written before this check (no weights_finite in its meta.json):
    # resuming skips it as damaged, for the newest one that is really good
    from t5electra.checkpoint.io import save_state_dict

    with torch.no_grad():
        model[2].weight[0, 0] = 0.0
    bad = mgr.save(3, model, opt, sched, data_state={"cursor": 3})
    meta = json.loads((bad / "meta.json").read_text())
    del meta["weights_finite"]
    (bad / "meta.json").write_text(json.dumps(meta))
    assert damage(bad) is None  # (older checkpoints are read once: these weights are finite)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    sd["2.weight"][0, 0] = float("nan")
    save_state_dict(sd, bad)
    assert "weights not finite (NaN or infinity in 2.weight)" in damage(bad)
    with pytest.warns(UserWarning, match=r"resuming from .*step-00000001, the newest intact checkpoint: skipped "
                                         r"step-00000003 \(model.safetensors: weights not finite"):
        assert mgr.resolve("auto") == good


# -- kill -9 and resume: exactly the same losses ----------------------------------------------
ARGS = ["--train.max_steps=12", "--checkpoint.every_steps=4", "--train.batch_size=8", "--train.grad_accum_steps=2",
        "--optim.lr=0.02", "--optim.weight_decay=0.01", "--schedule.name=cosine", "--schedule.warmup_steps=3",
        "--checkpoint.resume=auto", "--train.device=cpu"]


def _run_forked(run_dir, env=None, extra=()):
    """Train in a separate process (a fresh interpreter, tests/multiproc.py says why); returns its exit
    code (-9 when SIGKILLed)."""
    p = start(run_and_exit, (toy_train.main, [f"--train.output_dir={run_dir}", *ARGS, *extra]), env)
    p.join(120)
    return p.exitcode


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["split"] == "train"}


def test_sigkill_and_resume_gives_the_uninterrupted_losses(tmp_path):
    ref_dir, run_dir = tmp_path / "ref", tmp_path / "run"
    assert toy_train.main([f"--train.output_dir={ref_dir}", *ARGS]) == 0
    reference = _losses(ref_dir)
    assert sorted(reference) == list(range(1, 13)) and len(set(reference.values())) == 12

    # 1. killed in the middle of step 6 (checkpoint 4 is the last one written)
    assert _run_forked(run_dir, {"TOY_KILL_AT_STEP": "6"}) == -signal.SIGKILL
    assert CheckpointManager(run_dir).latest().name == "step-00000004"
    # 2. resumed from 4, then killed half-way through writing checkpoint 8
    assert _run_forked(run_dir, {"TOY_KILL_DURING_SAVE": "8"}) == -signal.SIGKILL
    assert CheckpointManager(run_dir).latest().name == "step-00000004"
    assert list((run_dir / "checkpoints").glob(".tmp-step-00000008-*"))  # the torn write is there...
    seen = _losses(run_dir)
    assert [seen[s] for s in range(1, 9)] == [reference[s] for s in range(1, 9)]
    # 3. resumed from 4 again: runs to the end, exactly like the uninterrupted run
    assert _run_forked(run_dir) == 0
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))          # ...and cleaned up
    assert _losses(run_dir) == reference                                # float equality, every step
    a, b = load_file(ref_dir / "final.safetensors"), load_file(run_dir / "final.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)

    # resuming with another weight decay is refused, naming the field
    with pytest.raises(CheckpointError, match=r"optim.weight_decay: 0.01 \(checkpoint\) != 0.03 \(now\)"):
        toy_train.main([f"--train.output_dir={run_dir}", *ARGS, "--optim.weight_decay=0.03"])


def test_the_nan_guards_advice_can_be_followed_on_resume(tmp_path):
    """The guard says: lower optim.lr, enable optim.max_grad_norm or use fp32, then resume. Those three
    may change on resume (with a warning; they were refused as 'a different config'), and a new lr
    takes effect: the loaded optimizer and scheduler states held the old peak."""
    run = tmp_path / "run"
    bf16 = ["--train.precision=bf16", "--optim.max_grad_norm=null"]
    assert toy_train.main([f"--train.output_dir={run}", *ARGS, *bf16]) == 0
    before = {r["step"]: r for r in read_metrics(run) if r["split"] == "train"}
    with pytest.warns(UserWarning, match=r"resuming from .*step-00000004 with optim.lr: 0.02 \(checkpoint\) != 0.01 "
                                         r"\(now\); optim.max_grad_norm: None \(checkpoint\) != 0.5 \(now\); "
                                         r"train.precision: 'bf16' \(checkpoint\) != 'fp32' \(now\): the run goes on "
                                         r"from step 4 .*no longer the run an uninterrupted one"):
        assert toy_train.main([f"--train.output_dir={run}", *ARGS, "--optim.lr=0.01", "--optim.max_grad_norm=0.5",
                               f"--checkpoint.resume={run / 'checkpoints' / 'step-00000004'}"]) == 0
    after = {r["step"]: r for r in read_metrics(run) if r["split"] == "train"}
    assert sorted(after) == list(range(1, 13)) and [after[s]["loss"] for s in (1, 2, 3, 4)] == \
        [before[s]["loss"] for s in (1, 2, 3, 4)]
    for step in range(5, 13):  # the same schedule, at half the peak (cosine: was 0.02 x the same factor)
        assert after[step]["lr"] == pytest.approx(before[step]["lr"] / 2, rel=1e-12), step
    saved = json.loads((run / "checkpoints" / "step-00000012" / "meta.json").read_text())["config"]
    assert (saved["optim"]["lr"], saved["optim"]["max_grad_norm"], saved["train"]["precision"]) == (0.01, 0.5, "fp32")
    # and the guard's message says so
    with pytest.raises(TrainingError, match=r"then resume with --checkpoint.resume=auto: these may change on resume"):
        check_finite(float("nan"), 5)


def test_composite_models_reload_from_their_subdirectories(tmp_path):
    # ElectraPretrainer saves generator/ and discriminator/ (two HF checkpoints) that share embeddings
    from t5electra.models.electra import ElectraConfig
    from t5electra.models.electra_rtd import ElectraPretrainer

    disc = ElectraConfig(vocab_size=40, embedding_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=16)
    model = ElectraPretrainer(disc, generator_size=0.5, mask_token_id=3, special_token_ids=[1, 2])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(torch.randint(4, 40, (2, 8))).loss.backward()
    opt.step()
    path = CheckpointManager(tmp_path).save(1, model, opt)
    assert (path / "generator" / "model.safetensors").is_file() and (path / "discriminator" / "config.json").is_file()
    fresh = ElectraPretrainer(disc, generator_size=0.5, mask_token_id=3, special_token_ids=[1, 2])
    opt2 = torch.optim.AdamW(fresh.parameters(), lr=1e-2)
    CheckpointManager(tmp_path).load(path, fresh, opt2)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b), k
    assert fresh.generator.electra.embeddings is fresh.discriminator.electra.embeddings  # still shared


def test_disk_full_while_writing_model_weights_says_so_and_leaves_no_temporary(tmp_path, monkeypatch):
    from t5electra.checkpoint import io

    (tmp_path / "model.safetensors").write_bytes(b"the previous weights")

    def full(tensors, filename, metadata=None):
        with open(filename, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(io, "save_file", full)
    with pytest.raises(CheckpointError, match=r"cannot write .*model\.safetensors \(disk full: no space left on device"):
        io.save_state_dict({"w": torch.zeros(2)}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]
    assert (tmp_path / "model.safetensors").read_bytes() == b"the previous weights"


def test_a_final_model_save_that_fails_keeps_the_previous_model_whole(tmp_path, monkeypatch):
    """RUN/model is written under a temporary name and renamed when complete (save_final_model): a
    full disk (or a kill) half-way leaves the previous RUN/model as it was, with no temporary beside
    it, and the error names RUN/model."""
    from t5electra.checkpoint import io
    from t5electra.train.checkpointing import save_final_model

    model = torch.nn.Linear(3, 2)
    save_final_model(model, tmp_path / "model", lambda d: (d / "tokenizer_config.json").write_text("{}"))
    before = {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()}

    def full(tensors, filename, metadata=None):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io, "save_file", full)
    with pytest.raises(CheckpointError, match=rf"cannot write {re.escape(str(tmp_path / 'model'))}/model\.safetensors "
                                              r"\(disk full"):
        save_final_model(torch.nn.Linear(3, 2), tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert {p.name: p.read_bytes() for p in (tmp_path / "model").iterdir()} == before


def test_a_run_saved_with_the_adamw_loop_resumes_with_fused_adamw(tmp_path):
    """optim.fused changed its default (None: fused): a checkpoint of the per-parameter loop loads
    into the fused optimiser (same state layout) and the config check lets it through."""
    from t5electra.train.config import OptimSection
    from t5electra.train.optim import build_optimizer

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    saved = RunConfig()
    saved.optim.fused = False
    loop = build_optimizer(model, OptimSection(lr=1e-2, fused=False))
    model(torch.randn(4, 3)).sum().backward()
    loop.step()
    CheckpointManager(tmp_path, saved.to_dict()).save(1, model, loop)
    fused = build_optimizer(model, OptimSection(lr=1e-2))
    assert fused.defaults["fused"]
    CheckpointManager(tmp_path, RunConfig().to_dict()).load(tmp_path / "checkpoints" / "step-00000001", model, fused)
    assert torch.equal(fused.state_dict()["state"][0]["exp_avg"], loop.state_dict()["state"][0]["exp_avg"])
    # the kernel that runs after the resume is the configured one (was: the saved groups' fused=False
    # came back with load_state_dict, and the loop ran: optim.fused silently ignored)
    assert [g["fused"] for g in fused.param_groups] == [True] * len(fused.param_groups)
    assert _adam_kernels(fused, model) == {"_fused_adam"}
    # and the other way: a fused run resumed with optim.fused=false runs the loop
    CheckpointManager(tmp_path, RunConfig().to_dict()).save(2, model, fused)
    loop_again = build_optimizer(model, OptimSection(lr=1e-2, fused=False))
    CheckpointManager(tmp_path, saved.to_dict()).load(tmp_path / "checkpoints" / "step-00000002", model, loop_again)
    assert not any(g["fused"] for g in loop_again.param_groups)
    assert _adam_kernels(loop_again, model) == {"_single_tensor_adam"}


def _adam_kernels(optimizer, model) -> set[str]:
    """Which of torch's Adam kernels one step of ``optimizer`` runs."""
    import torch.optim.adam as adam

    calls = []
    names = ("_fused_adam", "_multi_tensor_adam", "_single_tensor_adam")
    originals = {name: getattr(adam, name) for name in names}

    def spy(name):
        def run(*args, **kwargs):
            calls.append(name)
            return originals[name](*args, **kwargs)
        return run

    try:
        for name in names:
            setattr(adam, name, spy(name))
        model.zero_grad()
        model(torch.randn(4, 3)).sum().backward()
        optimizer.step()
    finally:
        for name, fn in originals.items():
            setattr(adam, name, fn)
    return set(calls)


def test_run_model_dir_finds_the_model_of_a_run_directory(tmp_path):
    """model.init_from may name a run: its model/, else its latest checkpoint; a model directory
    (config.json, or an ELECTRA pretraining output's generator/ + discriminator/) is itself."""
    from t5electra.train.checkpointing import is_electra_pretraining_output, run_model_dir

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    assert run_model_dir(run) == run  # nothing there yet: unchanged (loading then says why)
    (run / "model" / "config.json").write_text("{}")
    assert run_model_dir(run) == run / "model" and run_model_dir(run / "model") == run / "model"
    electra = tmp_path / "electra"
    for part in ("generator", "discriminator"):
        (electra / "model" / part).mkdir(parents=True)
        (electra / "model" / part / "config.json").write_text("{}")
    assert run_model_dir(electra) == electra / "model" and is_electra_pretraining_output(electra / "model")
    assert not is_electra_pretraining_output(run / "model")


def test_a_run_that_stopped_before_its_first_step_does_not_block_the_rerun(tmp_path):
    """A run refused late (e.g. its validation file too small) left config.yaml, an empty
    metrics.jsonl and tensorboard/: the corrected fresh run replaces them, with a warning; a run
    with a logged step is still refused."""
    from t5electra.train.checkpointing import prepare_run_dir, release_run_dir

    run = tmp_path / "run"
    (run / "tensorboard").mkdir(parents=True)
    (run / "config.yaml").write_text("a: 1\n")
    (run / "metrics.jsonl").write_text("")
    (run / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match="stopped before its first step"):
        prepare_run_dir(run, resume=None)
    assert sorted(p.name for p in run.iterdir()) == [".lock", "notes.txt"]  # this process's lock
    release_run_dir(run)
    (run / "metrics.jsonl").write_text('{"split": "train", "step": 1, "loss": 2.0}\n')
    with pytest.raises(ConfigError, match="already holds a run"):
        prepare_run_dir(run, resume=None)


def test_one_run_at_a_time_in_a_directory(tmp_path):
    """Two runs started into one directory interleaved their files: the second is refused while the
    first's process lives; a lock left by a dead process is taken over; the recipe gives it back."""
    import os
    import subprocess
    import sys

    from t5electra.train.checkpointing import LOCK_FILE, prepare_run_dir, release_run_dir

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run.mkdir()
        (run / LOCK_FILE).write_text(f"{holder.pid}\n")
        with pytest.raises(ConfigError, match=f"in use by process {holder.pid}"):
            prepare_run_dir(run, resume=None)
        assert (run / LOCK_FILE).read_text() == f"{holder.pid}\n"  # the other run's lock untouched
    finally:
        holder.kill()
        holder.wait()
    prepare_run_dir(run, resume=None)  # its process is gone: taken over
    assert (run / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    prepare_run_dir(run, resume="auto")  # this process again (a resume after a run in one session)
    release_run_dir(run)
    assert not (run / LOCK_FILE).exists()


def test_a_run_dir_created_and_never_written_is_removed(tmp_path):
    """A run refused after prepare_run_dir created its directory left it empty: discarded (and at
    exit, for train() called from Python), with the parents created for it; a released run's
    directory, one that existed before and one holding a file are kept."""
    import subprocess
    import sys

    from t5electra.train.run_dir import discard_unused_run_dirs, prepare_run_dir, release_run_dir

    tmp_path = tmp_path.resolve()  # the directories removed are named as mkdir resolves them
    ran, written, existed = tmp_path / "ran", tmp_path / "a" / "b" / "written", tmp_path / "existed"
    existed.mkdir()
    for run in (ran, tmp_path / "a" / "b" / "refused", written, existed):
        prepare_run_dir(run, resume=None)
    release_run_dir(ran)
    (written / "config.yaml").write_text("a: 1\n")
    # (another test of this process may have left a refused run of its own: only this test's count)
    assert [p for p in discard_unused_run_dirs() if tmp_path in p.parents] == [tmp_path / "a" / "b" / "refused"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "existed", "ran"]
    assert sorted(p.name for p in written.iterdir()) == [".lock", "config.yaml"]
    code = ("import sys; from t5electra.train.run_dir import prepare_run_dir; "
            "prepare_run_dir(sys.argv[1], resume=None); raise SystemExit('refused')")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path / "new" / "run")], capture_output=True, text=True)
    assert proc.returncode == 1 and "refused" in proc.stderr
    assert not (tmp_path / "new").exists()


def test_a_command_leaves_the_run_dirs_of_runs_started_before_it(tmp_path):
    """``t5electra.cli.main`` called in a process whose own run (train() from Python) has its new
    directory but has not written into it yet: the command discards only what it created itself
    (was: the other run's directory and lock removed under it)."""
    from t5electra.cli import main
    from t5electra.train.run_dir import LOCK_FILE, discard_unused_run_dirs, prepare_run_dir, release_run_dir

    tmp_path = tmp_path.resolve()
    going_on = tmp_path / "new" / "going-on"
    prepare_run_dir(going_on, resume=None)
    assert main(["plot", str(tmp_path / "no-run")]) == 1  # any command
    assert (going_on / LOCK_FILE).is_file()
    mine = [p for p in discard_unused_run_dirs() if tmp_path in p.parents]  # (not other tests' refused runs)
    assert mine == [going_on, tmp_path / "new"]  # refused after all: at exit
    release_run_dir(going_on)


def test_a_discarded_run_dir_spares_the_directories_its_path_runs_through(tmp_path, monkeypatch):
    """``new/../existing/run``: ``existing`` was there before the run (kept, even empty); ``run`` is
    what the run created in it (removed)."""
    from t5electra.train.run_dir import discard_unused_run_dirs, prepare_run_dir

    tmp_path = tmp_path.resolve()
    (tmp_path / "existing").mkdir()
    monkeypatch.chdir(tmp_path)
    prepare_run_dir("new/../existing/run", resume=None)
    assert discard_unused_run_dirs() == [tmp_path / "existing" / "run"]
    assert (tmp_path / "existing").is_dir() and not (tmp_path / "existing" / "run").exists()
