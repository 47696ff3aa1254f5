"""Saving a step and recording its evaluation, as every recipe does it: on every rank, together.

A recipe saves the checkpoint of a step *before* that step's evaluation, then adds the
evaluation's metrics to it (:func:`record_evaluation`): an evaluation that fails (a validation
file that cannot be read, out of memory at a larger eval batch, an ``eval.metric`` the evaluation
does not have) loses none of the training, and the run resumes from that step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import T5ElectraError
from .checkpointing import CheckpointManager
from .distributed import DistEnv, all_gather_object, barrier, broadcast_object, gather_rng_states
from .nan_guard import nonfinite_parameters, nonfinite_weights_error


def save_checkpoint(ckpt: CheckpointManager, env: DistEnv, step: int, model: nn.Module,
                    optimizer: torch.optim.Optimizer | None, scheduler: Any, data_state: dict[str, Any] | None, *,
                    save_extra: Callable[[Path], None] | None = None, sharded: bool = False,
                    last_good: Path | None = None) -> Path:
    """Checkpoint ``step`` (a collective: every rank calls it): the RNG states of every rank gathered,
    the main process writes (every rank its shard of a sharded model), the others wait for it.
    Returns the checkpoint's directory, on every rank.

    Weights that went NaN or infinite (an update that diverged, with a finite loss and gradient) are
    not saved: every rank raises the NaN guard's :class:`TrainingError` together, naming
    ``last_good`` (the run's last checkpoint), which stays the newest on disk."""
    bad = nonfinite_parameters(model)
    if env.distributed:  # FSDP: each rank checked its shards (DDP: the same weights everywhere)
        bad = sorted({name for names in all_gather_object(bad, env) for name in names})
    if bad:
        raise nonfinite_weights_error(step, bad, last_good)
    rngs = gather_rng_states(env)
    if env.is_main or sharded:
        ckpt.save(step, model, optimizer, scheduler, data_state, rng_states=rngs, save_extra=save_extra,
                  sharded=sharded, rank=env.rank, finite_checked=True)
    barrier(env)
    return ckpt.dir / f"step-{step:08d}"


def record_evaluation(ckpt: CheckpointManager, env: DistEnv, step: int, metrics: dict[str, float],
                      metric_name: str | None) -> None:
    """Add the evaluation of ``step`` to its checkpoint (``CheckpointManager.record_metrics``: meta.json,
    the best pointer), on the main process; every rank calls it and stops with the main process's
    error (an ``eval.metric`` the evaluation does not have), instead of waiting for it forever."""
    error = None
    if env.is_main and metrics:
        try:
            ckpt.record_metrics(step, metrics, metric_name)
        except T5ElectraError as e:
            error = e
    error = broadcast_object(error, env)
    if error is not None:
        raise error


def report_evaluation(ckpt: CheckpointManager, env: DistEnv, log: Any, bar: Any, step: int, metrics: dict[str, float],
                      metric_name: str | None, label: str = "eval ") -> None:
    """An evaluation of ``step`` logged (metrics.jsonl, the progress bar) where there are metrics (rank 0's;
    {} on the others, or without validation data) and recorded into the step's checkpoint
    (:func:`record_evaluation`, a collective: every rank calls it)."""
    if metrics:
        log.log(step, metrics, split="eval")
        bar.write(f"step {step}: " + ", ".join(f"{label}{k} {v:.4f}" for k, v in metrics.items()))
    record_evaluation(ckpt, env, step, metrics, metric_name)


def resume_evaluation(ckpt: CheckpointManager, env: DistEnv, start: int, recorded: dict[str, float] | None,
                      evaluation: Callable[[int], None], metric_name: str | Callable[[dict[str, float]], str]) -> None:
    """At a resume from checkpoint ``start``, a step the run evaluates: its evaluation now when it failed
    after the save (nothing ``recorded``); else its recorded metrics ranked again by this run's
    ``metric_name`` (a resume that fixed or changed eval.metric: an evaluation recorded under an
    ``eval.metric`` it lacked was never ranked, and a finished run resumed with another metric re-ranks
    its kept checkpoints by it). Every rank calls it."""
    if not recorded:
        evaluation(start)
        return
    name = metric_name(recorded) if callable(metric_name) else metric_name
    record_evaluation(ckpt, env, start, recorded, name)
