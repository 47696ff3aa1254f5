"""The pieces of a training step that every recipe shares, written out rather than hidden.

A recipe owns its loop; per optimiser step it calls :func:`train_step` with the micro-batches of
that step and a ``loss_fn(model, batch) -> loss`` (or ``(loss, {name: value})``)::

    for step in range(start, cfg.train.max_steps):
        out = train_step(model, [next(data) for _ in range(accum)], loss_fn, optimizer, scheduler,
                         max_grad_norm=1.0, precision="bf16", step=step, env=env)

:func:`train_step` does, in order: zero the gradients; for each micro-batch, forward under
autocast and backward of ``loss / n_micro`` (DDP gradient sync only on the last one); the NaN
guard on the loss averaged over ranks and on the global gradient norm (all ranks stop together,
before touching the weights); gradient clipping; the optimiser and scheduler steps.

A loss_fn that says what its loss is a mean over (``loss_weight``, :data:`LOSS_WEIGHT`; T5: the
target tokens of the micro-batch) gets the mean over the whole step instead of a mean of means:
each micro-batch's backward is of ``loss * weight``, and the gradients are then divided by the
weight of every micro-batch of every rank (times the number of ranks, whose gradients DDP and
FSDP average), so that K micro-batches on N processes give the gradient and the loss of one
process with the whole global batch, also when the micro-batches hold different numbers of
target tokens (as transformers' Trainer does with ``num_items_in_batch``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
from torch.autograd.graph import increment_version
from torch import nn

from ..errors import ConfigError, DataError
from .checkpointing import check_finite
from .distributed import DistEnv, all_gather_object, all_reduce_dict, broadcast_object
from .sharded import is_sharded

LossFn = Callable[[nn.Module, Any], "torch.Tensor | tuple[torch.Tensor, dict[str, float]]"]

# Metrics returned by a loss_fn that are counts: summed over micro-batches, not averaged.
COUNTS = frozenset({"tokens", "examples"})
# A loss_fn may also return "loss_weight": what its loss is a mean over (T5: the target tokens).
# train_step and evaluate() then weight each batch by it, so the training loss (and its gradient) is
# the mean over the step's global batch and the validation loss the mean over the whole split,
# whatever the batches and the processes.
LOSS_WEIGHT = "loss_weight"


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """Every tensor of a batch on ``device`` (non-blocking: overlaps host-to-GPU copies)."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch (all devices) with ``seed + rank``."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def autocast(precision: str, device: torch.device | str) -> contextlib.AbstractContextManager:
    """bf16 autocast on the device (weights stay fp32), or nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    raise ConfigError(f"precision {precision!r} is not 'fp32' or 'bf16' (fp16 overflows in T5's feed-forward)")


@dataclasses.dataclass
class StepOutput:
    """What one optimiser step measured."""

    loss: float                # loss averaged over micro-batches and ranks
    lr: float                  # learning rate used by this step (largest over param groups)
    grad_norm: float           # global gradient norm before clipping (also computed without clipping)
    metrics: dict[str, float]  # the loss_fn's extra metrics, averaged (counts in COUNTS summed) over ranks


def _split(out: Any) -> tuple[torch.Tensor, dict[str, float]]:
    if isinstance(out, tuple):
        loss, logs = out
        return loss, dict(logs)
    return out, {}


def train_step(model: nn.Module, micro_batches: Sequence[Any], loss_fn: LossFn,
               optimizer: torch.optim.Optimizer, scheduler: Any = None, *, max_grad_norm: float | None = None,
               precision: str = "fp32", step: int = 0, env: DistEnv | None = None,
               last_checkpoint: Path | None = None) -> StepOutput:
    """One optimiser step over ``micro_batches`` (gradient accumulation); see the module docstring."""
    env = env or DistEnv()
    n = len(micro_batches)
    if n == 0:
        raise ConfigError("train_step got no micro-batches")
    model.train()
    optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), dtype=torch.float64)
    logs_sum: dict[str, float] = {}
    weights: list[float] = []  # the loss_fn's loss_weight of each micro-batch, where it gives one
    # one micro-batch on one process: its mean is already the step's, and its plain backward keeps the
    # gradients bit for bit as they were (scaling by the weight and back rounds them)
    alone = n == 1 and env.world_size == 1
    for i, batch in enumerate(micro_batches):
        last = i == n - 1
        # DDP: all-reduce gradients only after the last micro-batch of the step; FSDP: reduce-scatter
        # them only then (the unsharded gradients accumulate locally until then).
        if hasattr(model, "set_requires_gradient_sync"):
            model.set_requires_gradient_sync(last)
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast(precision, env.device):
                loss, logs = _split(loss_fn(model, batch))
            weight = logs.pop(LOSS_WEIGHT, None)
            if i and (weight is not None) != bool(weights):
                raise ConfigError(f"train_step: the loss_fn gave a {LOSS_WEIGHT!r} for some micro-batches and not "
                                  f"for others (micro-batch {i}): give it for all or none")
            if weight is None:
                (loss.float() / n).backward()
            else:  # the sum over the micro-batch's units; divided by the step's total below
                weights.append(float(weight))
                (loss.float() if alone else loss.float() * weights[-1]).backward()
        loss_sum += loss.detach().double().cpu() * (1.0 if weight is None else weights[-1])
        for k, v in logs.items():
            logs_sum[k] = logs_sum.get(k, 0.0) + float(v)
    local = {} if weights else {"loss": float(loss_sum) / n}
    local.update({k: (v if k in COUNTS else v / n) for k, v in logs_sum.items()})
    counts = {k: v for k, v in local.items() if k in COUNTS}
    if weights:  # summed over ranks: the loss is the mean over the whole global batch
        counts.update({"loss": float(loss_sum), LOSS_WEIGHT: sum(weights)})
    means = all_reduce_dict({k: v for k, v in local.items() if k not in COUNTS}, env)
    counts = all_reduce_dict(counts, env, op="sum")
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if weights:
        total = counts.pop(LOSS_WEIGHT)
        if not total > 0:  # every rank sees the same total: all stop together
            raise DataError(f"step {step}: the loss_fn's {LOSS_WEIGHT} is {total:g} over the whole step (every "
                            f"micro-batch of every process): nothing to average the loss over (e.g. every label -100)")
        means["loss"] = counts.pop("loss") / total
        if not alone:  # DDP and FSDP averaged the ranks' gradients of sum(loss * weight): one mean over all
            grads = [p.grad for p in params if p.grad is not None]
            if grads:
                torch._foreach_mul_(grads, env.world_size / total)
    check_finite(means["loss"], step, "loss", last_checkpoint)  # every rank sees the same mean
    if max_grad_norm is not None and max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:  # no clipping: the norm all the same, for the guard (a finite loss can have an infinite gradient)
        norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    # FSDP: the norm of sharded gradients is a DTensor; its full value is the global norm
    grad_norm = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    check_finite(grad_norm, step, "gradient norm", last_checkpoint)
    current_lr = getattr(optimizer, "current_lr", None)  # Adafactor's relative step has no group lr
    lr = current_lr() if current_lr is not None else max(float(g["lr"]) for g in optimizer.param_groups)
    optimizer.step()
    # torch's fused AdamW kernel (ours and torch.optim.AdamW(fused=True)) updates the parameters in
    # place without bumping their version counters (torch 2.13, measured): every copy keyed on them
    # (T5's int8 greedy screen, packed decoding weights) would then look current after the step
    increment_version(params)
    if scheduler is not None:
        scheduler.step()
    loss_value = means.pop("loss")
    return StepOutput(loss=loss_value, lr=lr, grad_norm=grad_norm, metrics={**means, **counts})


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[Any], loss_fn: LossFn, *, precision: str = "fp32",
             env: DistEnv | None = None, max_batches: int | None = None) -> dict[str, float]:
    """Mean loss (and loss_fn metrics) over ``batches`` in eval mode, over the batches of every rank:
    the loss weighted by the loss_fn's ``loss_weight`` where it gives one (LOSS_WEIGHT), the other
    metrics per batch (counts in COUNTS summed). A metric that is NaN for a batch is undefined there
    (ELECTRA's ``disc_auc`` of a batch without a replaced token) and is averaged over the batches
    where it is defined (NaN if none); a NaN loss stays NaN. Every rank takes part, also one without
    batches (a validation split smaller than the number of processes); {} when no rank had any.

    A sharded (FSDP) model's forward is a collective (it all-gathers each block's weights), so its
    ranks step through the batches together: a rank that has run out, while another has not, runs
    a spare batch (its last one, or one sent by a rank that has batches) and counts nothing of it."""
    env = env or DistEnv()
    was_training = model.training
    model.eval()
    sums: dict[str, float] = {}
    defined: dict[str, int] = {}  # per metric: the batches where it is not NaN
    n, weight = 0, 0.0
    lockstep = env.distributed and is_sharded(model)
    it, spare = iter(batches), None
    while True:
        batch = next(it, None) if max_batches is None or n < max_batches else None
        if lockstep:
            batch, spare, go = _lockstep(batch, spare, env)
            if not go:
                break
        elif batch is None:
            break
        with autocast(precision, env.device):
            loss, logs = _split(loss_fn(model, batch if batch is not None else spare))
        if batch is None:  # a spare forward, for the other ranks' collectives
            continue
        w = float(logs.pop(LOSS_WEIGHT, 1.0))
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach().float()) * w
        for k, v in logs.items():
            v = float(v)
            ok = not (v != v and k not in COUNTS)  # NaN: undefined for this batch
            sums[k] = sums.get(k, 0.0) + (v if ok else 0.0)
            defined[k] = defined.get(k, 0) + ok
        n, weight = n + 1, weight + w
    model.train(was_training)
    parts = all_gather_object((sums, defined, n, weight), env)  # keys may differ: a rank without batches has none
    n, weight = sum(p[2] for p in parts), sum(p[3] for p in parts)
    if n == 0:
        return {}
    totals: dict[str, float] = {}
    counts: dict[str, int] = {}
    for part, part_defined, _, _ in parts:
        for k, v in part.items():
            totals[k] = totals.get(k, 0.0) + v
            counts[k] = counts.get(k, 0) + part_defined.get(k, 0)
    # a loss over no unit (every batch of weight 0: T5 targets all -100) is NaN, not a ZeroDivisionError
    return {k: v if k in COUNTS else (v / weight if weight else float("nan")) if k == "loss"
            else v / counts[k] if counts[k] else float("nan") for k, v in totals.items()}


def _lockstep(batch: Any, spare: Any, env: DistEnv) -> tuple[Any, Any, bool]:
    """One step of a sharded evaluation: (this rank's batch or None, its spare batch, whether any rank
    still has a batch). A rank with neither a batch nor a spare gets one from the first rank that has
    a batch (sent through the CPU)."""
    states = all_gather_object((batch is not None, batch is not None or spare is not None), env)
    if not any(has for has, _ in states):
        return None, spare, False
    if not all(ready for _, ready in states):
        src = next(r for r, (has, _) in enumerate(states) if has)
        sent = broadcast_object(_on(batch, torch.device("cpu")) if env.rank == src else None, env, src=src)
        if spare is None and batch is None:
            spare = _on(sent, env.device)
    return batch, batch if batch is not None else spare, True


def _on(batch: Any, device: torch.device) -> Any:
    """A batch (a tensor, or a dict of them) on ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch
