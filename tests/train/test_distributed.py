"""Two CPU processes (gloo) with DDP give the parameters of one process on the same global batch."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import toy_train
from multiproc import launch
from t5electra.errors import ConfigError
from t5electra.train.checkpointing import CheckpointManager
from t5electra.train.distributed import DistEnv, all_reduce_dict, all_reduce_mean, init_distributed, wrap_ddp
from t5electra.train.logging import read_metrics

ARGS = ["--train.max_steps=6", "--checkpoint.every_steps=3", "--train.grad_accum_steps=2", "--optim.lr=0.05",
        "--optim.weight_decay=0.01", "--schedule.name=linear", "--schedule.warmup_steps=2", "--train.device=cpu"]


def _report(argv, env, result) -> int:
    """A worker's end: its result as JSON in ``argv[0].RANK``, the process group closed; exit code 0."""
    import json

    with open(f"{argv[0]}.{env.rank}", "w") as fh:
        json.dump(result, fh)
    torch.distributed.destroy_process_group()
    return 0


def _results(worker, tmp_path, timeout_s: int) -> list:
    """Run ``worker`` on 2 processes; the results each rank _report-ed, by rank."""
    import json

    assert launch(worker, [str(tmp_path / "out")], 2, timeout_s=timeout_s) == [0, 0]
    return [json.loads((tmp_path / f"out.{r}").read_text()) for r in (0, 1)]


def _launch(run_dir, world_size, extra=()):
    """``world_size`` toy training processes with torchrun's environment variables; their exit codes."""
    return launch(toy_train.main, [f"--train.output_dir={run_dir}", *ARGS, *extra], world_size, {"TOY_DROPOUT": "0"},
                  timeout_s=120)


def test_two_processes_equal_one_process_with_the_global_batch(tmp_path, monkeypatch):
    # one process, global batch 2 x 4 per micro-batch
    monkeypatch.setenv("TOY_DROPOUT", "0")
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert toy_train.main([f"--train.output_dir={tmp_path / 'one'}", *ARGS, "--train.batch_size=8"]) == 0
    # two processes, 4 examples each per micro-batch
    assert _launch(tmp_path / "two", 2, ["--train.batch_size=4"]) == [0, 0]

    one, two = load_file(tmp_path / "one" / "final.safetensors"), load_file(tmp_path / "two" / "final.safetensors")
    assert one.keys() == two.keys()
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-6, rtol=0), f"{k}: max diff {(one[k] - two[k]).abs().max()}"
    moved = load_file(tmp_path / "one" / "checkpoints" / "step-00000006" / "model.safetensors")
    assert all(torch.equal(moved[k], one[k]) for k in one)
    # the logged loss is the global mean; token counts are summed over ranks
    l1 = {r["step"]: r for r in read_metrics(tmp_path / "one")}
    l2 = {r["step"]: r for r in read_metrics(tmp_path / "two")}
    for step in range(1, 7):
        assert l2[step]["loss"] == pytest.approx(l1[step]["loss"], abs=1e-6)
        assert l2[step]["tokens"] == l1[step]["tokens"] == 2 * 8 * 5
    # rank 0 wrote the checkpoints, with one RNG state per rank
    state = torch.load(CheckpointManager(tmp_path / "two").latest() / "training_state.pt", weights_only=True)
    assert len(state["rng"]) == 2


def test_single_process_helpers_are_no_ops(monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    env = init_distributed("cpu")
    assert env == DistEnv() and env.is_main and not env.distributed
    model = torch.nn.Linear(2, 2)
    assert wrap_ddp(model, env) is model
    assert all_reduce_mean(torch.tensor(3.0), env) == 3.0
    assert all_reduce_dict({"a": 1.0}, env) == {"a": 1.0}


def test_bad_torchrun_environment_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ConfigError, match="MASTER_ADDR is not set: launch with torchrun"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        init_distributed("cpu")


def _teardown_worker(argv: list[str]) -> int:
    """A DDP step, then the recipes' end: barrier, cleanup, the model freed (train() returning)."""
    import gc
    import weakref

    from t5electra.train.distributed import barrier, cleanup

    env = init_distributed("cpu")
    model = wrap_ddp(torch.nn.Linear(4, 4), env)
    model(torch.ones(2, 4)).sum().backward()
    world = weakref.ref(torch.distributed.group.WORLD)
    barrier(env)
    cleanup(env)
    del model
    gc.collect()
    with open(f"{argv[0]}.{env.rank}", "w") as fh:
        fh.write(str(world() is not None))
    return 0


def test_cleanup_leaves_the_group_to_its_python_object_not_to_the_ddp_reducer(tmp_path):
    """A finished torchrun run hung at the end of train() now and then: freeing the DDP model ran
    ~ProcessGroupGloo from the Reducer with the GIL held, joining a Gloo thread that waited for the
    GIL (t5electra/train/distributed.py: _LEFT_GROUPS). The world group's Python object must outlive
    the model, so that its GIL-releasing binding is what destroys the group."""
    assert launch(_teardown_worker, [str(tmp_path / "out")], 2, timeout_s=60) == [0, 0]
    assert [(tmp_path / f"out.{r}").read_text() for r in (0, 1)] == ["True", "True"]


def test_start_sets_the_childs_variables_and_puts_back_only_those(monkeypatch):
    """multiproc.start sets the child's variables in the worker around p.start(): it put the worker's
    environment back by clearing it and rebuilding it, which for a moment left the worker's other
    threads none, and dropped what one of them set meanwhile."""
    import multiprocessing.context
    import os

    from multiproc import start

    seen = {}

    def fake_start(self):  # the child's environment is the worker's at this moment
        seen.update(os.environ)
        os.environ["T5E_SET_MEANWHILE"] = "1"  # by another thread of the worker

    monkeypatch.setattr(multiprocessing.context.SpawnProcess, "start", fake_start)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    monkeypatch.setenv("T5E_KEPT", "a")
    for var in ("RANK", "T5E_SET_MEANWHILE"):
        monkeypatch.delenv(var, raising=False)
    start(print, (), {"RANK": "1"})
    assert (seen["RANK"], seen["OMP_NUM_THREADS"], seen["T5E_KEPT"]) == ("1", "1", "a")
    assert "RANK" not in os.environ and os.environ["OMP_NUM_THREADS"] == "4" and os.environ["T5E_KEPT"] == "a"
    assert os.environ["T5E_SET_MEANWHILE"] == "1"


def _evaluate_worker(argv: list[str]) -> int:
    """evaluate() on 2 ranks where rank 1 has no validation batch (a split smaller than the number
    of processes): it must join the collective, and both ranks get the weighted mean of rank 0's."""

    from t5electra.train.loop import LOSS_WEIGHT, evaluate

    env = init_distributed("cpu")
    batches = [torch.tensor([1.0, 2.0]), torch.tensor([4.0]), torch.tensor([3.0, 3.0, 3.0])] if env.rank == 0 else []

    def loss_fn(model, batch):  # mean of the batch, weighted by its size
        return batch.mean(), {LOSS_WEIGHT: batch.numel(), "examples": batch.numel(), "other": 1.0}

    out = evaluate(torch.nn.Linear(1, 1), iter(batches), loss_fn, env=env)
    return _report(argv, env, out)


def test_evaluate_with_a_rank_without_batches_neither_hangs_nor_skews(tmp_path):
    results = _results(_evaluate_worker, tmp_path, 60)
    assert results[0] == results[1] == {"loss": pytest.approx(16 / 6), "examples": 6, "other": 1.0}


def _sharded_evaluate_worker(argv: list[str]) -> int:
    """evaluate() of an FSDP-sharded model on 2 ranks with 3 batches on rank 0 and none on rank 1:
    its forward all-gathers the weights, so rank 1 must run spare forwards in step (it hung, then
    timed out, when it went straight to the final gather); the metrics are rank 0's batches only."""

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from t5electra.train.loop import evaluate

    env = init_distributed("cpu")
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 1)
    batches = [torch.tensor([[1.0, 2.0]]), torch.tensor([[4.0, 0.0], [1.0, 1.0]]), torch.tensor([[3.0, 3.0]])]
    plain = evaluate(model, iter(batches), _linear_loss)
    plain_first = evaluate(model, iter(batches), _linear_loss, max_batches=1)
    fully_shard(model, mesh=init_device_mesh("cpu", (2,)))
    calls = []

    def loss_fn(m, batch):
        calls.append(len(batch))
        return _linear_loss(m, batch)

    out = evaluate(model, iter(batches if env.rank == 0 else []), loss_fn, env=env)
    capped = evaluate(model, iter(batches if env.rank == 0 else []), loss_fn, env=env, max_batches=1)
    return _report(argv, env, {"out": out, "plain": plain, "capped": capped, "plain_first": plain_first,
                               "calls": calls})


def _linear_loss(model, batch):
    from t5electra.train.loop import LOSS_WEIGHT

    return model(batch).sum() / len(batch), {LOSS_WEIGHT: len(batch)}


def test_evaluate_of_a_sharded_model_with_a_rank_without_batches(tmp_path):
    results = _results(_sharded_evaluate_worker, tmp_path, 60)
    assert results[0]["out"] == results[1]["out"]
    assert results[0]["out"]["loss"] == pytest.approx(results[0]["plain"]["loss"], abs=1e-6)
    assert results[0]["calls"] == [1, 2, 1, 1]
    assert results[1]["calls"] == [1, 1, 1, 1]  # spare forwards: rank 0's first batch, sent at each evaluation
    assert results[0]["capped"] == results[1]["capped"]
    assert results[0]["capped"]["loss"] == pytest.approx(results[0]["plain_first"]["loss"], abs=1e-6)


def _token_mean_worker(argv: list[str]) -> int:
    """train_step on 2 ranks with 2 micro-batches each, of 9 and 1 target tokens on rank 0, 4 and 8 on
    rank 1 (T5's loss_weight), with DDP and with FSDP: the loss, gradient norm and SGD updates of one
    process with the 8 rows as one batch (a mean of means weighed the 1-token micro-batch's token as 9
    of the others). The gradient norm (~0.35) is clipped to 0.3: after the rescaling, on FSDP's shards too."""

    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from t5electra.train.loop import train_step
    from test_loop import _token_model, token_batches, token_loss

    env = init_distributed("cpu")
    ids, labels = token_batches((5, 4, 1, 0, 2, 2, 5, 3))
    one = _token_model()  # one process, the whole global batch
    opt = torch.optim.SGD(one.parameters(), lr=0.5)
    ref = [train_step(one, [(ids, labels)], token_loss, opt, max_grad_norm=0.3) for _ in range(2)]
    r = 4 * env.rank
    micro = [(ids[r:r + 2], labels[r:r + 2]), (ids[r + 2:r + 4], labels[r + 2:r + 4])]
    out = {"weights": [int((lab != -100).sum()) for _, lab in micro]}
    for strategy in ("ddp", "fsdp"):
        model = _token_model()
        if strategy == "ddp":
            model = wrap_ddp(model, env)
        else:
            fully_shard(model, mesh=init_device_mesh("cpu", (2,)))
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        steps = [train_step(model, micro, token_loss, opt, max_grad_norm=0.3, env=env) for _ in range(2)]
        full = [p.full_tensor() if hasattr(p, "full_tensor") else p.detach() for p in model.parameters()]
        out[strategy] = {"loss": [s.loss - q.loss for s, q in zip(steps, ref)],
                         "grad_norm": [s.grad_norm - q.grad_norm for s, q in zip(steps, ref)],
                         "params": max(float((a - b).abs().max()) for a, b in zip(full, one.parameters())),
                         "tokens": steps[-1].metrics["tokens"]}
    return _report(argv, env, out)


def test_ranks_with_different_token_counts_train_as_one_process(tmp_path):
    results = _results(_token_mean_worker, tmp_path, 120)
    assert [r["weights"] for r in results] == [[9, 1], [4, 8]]
    for r in results:
        for strategy in ("ddp", "fsdp"):
            got = r[strategy]
            assert max(map(abs, got["loss"] + got["grad_norm"])) < 1e-6 and got["params"] < 1e-6, (strategy, got)
            assert got["tokens"] == 40


def test_weights_that_went_nan_stop_every_rank_without_a_checkpoint(tmp_path, capfd):
    """An update that made the weights NaN (finite loss and gradient, e.g. Adam with eps=0): the save
    of step 3 refuses them on both ranks together (was: saved, then "the last good checkpoint")."""
    run = tmp_path / "run"
    assert launch(toy_train.main, [f"--train.output_dir={run}", *ARGS, "--train.batch_size=4"], 2,
                  {"TOY_DROPOUT": "0", "TOY_NAN_AFTER_STEP": "6"}, timeout_s=120) == [1, 1]
    err = capfd.readouterr().err
    assert err.count("the weights are not finite after step 6") == 2, err[-2000:]
    assert err.count("the last good checkpoint is " + str(run / "checkpoints" / "step-00000003")) == 2
    assert [p.name for p in CheckpointManager(run).checkpoints()] == ["step-00000003"]
