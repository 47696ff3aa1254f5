"""The NaN guard: training stops at a non-finite loss or gradient norm before the update, and a
checkpoint never holds non-finite weights, so the checkpoint the guard names is one to resume from.

Raised as :class:`~t5electra.errors.TrainingError`, naming the step, the last good checkpoint and
what to change.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from ..errors import TrainingError

# what to change, and that it can change on resume (train/config.py RESUME_ADJUSTABLE)
ADVICE = ("Lower optim.lr, enable (or lower) optim.max_grad_norm, or use train.precision=fp32, then resume with "
          "--checkpoint.resume=auto: these may change on resume (the run goes on from that checkpoint, with a warning).")


def _where(last_checkpoint: Path | None) -> str:
    return f"the last good checkpoint is {last_checkpoint}" if last_checkpoint else "no checkpoint was written yet"


def check_finite(value: float | torch.Tensor, step: int, what: str = "loss",
                 last_checkpoint: Path | None = None) -> None:
    """Raise :class:`TrainingError` when ``value`` is NaN or infinite, naming the step and the last
    good checkpoint (which is left untouched)."""
    v = float(value.detach().float().item()) if isinstance(value, torch.Tensor) else float(value)
    if math.isfinite(v):
        return
    raise TrainingError(f"{what} is {v} at step {step}: training stopped before updating the weights; "
                        f"{_where(last_checkpoint)}. {ADVICE}")


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the trainable parameters that hold NaN or infinity (FSDP: in this rank's shards).
    One 2-norm per tensor (a non-finite value makes it non-finite; torch's multi-tensor kernel, the
    one clip_grad_norm_ uses: ~0.1 s for T5-small's 77M weights on 2 busy CPU threads, where a sum
    per tensor took 0.3-0.9 s), then an exact check of the few whose norm is not finite (a norm can
    overflow where no value does). About one read of the weights, so it runs at each save, not each step."""
    named = [(n, (p.to_local() if hasattr(p, "to_local") else p).detach()) for n, p in model.named_parameters()
             if p.requires_grad]
    groups: dict[tuple, list[int]] = {}  # the multi-tensor kernel takes one device and dtype at a time
    for i, (_, t) in enumerate(named):
        if t.numel():
            groups.setdefault((t.device, t.dtype), []).append(i)
    suspects = []
    with torch.no_grad():
        for idx in groups.values():
            norms = torch.stack(torch._foreach_norm([named[i][1] for i in idx], 2))
            suspects += [idx[j] for j in torch.nonzero(~torch.isfinite(norms)).flatten().tolist()]
    return [named[i][0] for i in sorted(suspects) if not bool(torch.isfinite(named[i][1]).all())]


def nonfinite_weights_error(step: int, bad: list[str], last_checkpoint: Path | None) -> TrainingError:
    """The error for weights that went non-finite by ``step`` (``bad``: their names): they are not saved."""
    names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    return TrainingError(f"the weights are not finite after step {step} (NaN or infinity in {len(bad)} tensor(s): "
                         f"{names}): an update diverged, and they were not saved as a checkpoint; "
                         f"{_where(last_checkpoint)}. {ADVICE}")
