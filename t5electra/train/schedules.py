"""Learning-rate schedules as multipliers of the peak lr, one value per optimiser step.

``step`` is the number of optimiser steps already taken (0 for the first update), the convention
of ``torch.optim.lr_scheduler.LambdaLR`` and of the reference code bases:

- ``inverse_sqrt`` (T5, Raffel et al. 2020 §3.1.2): ``lr = 1/sqrt(max(step, warmup))``; as a
  multiplier ``sqrt(warmup)/sqrt(max(step, warmup))``, so with ``optim.lr = 0.01`` and
  ``warmup_steps = 10000`` it is exactly T5's schedule (constant 0.01 for 10k steps, then rsqrt).
- ``linear`` (BERT/ELECTRA): linear warmup from 0, then linear decay to ``min_lr_ratio`` at
  ``total_steps``. ELECTRA's official code (model/optimization.py) multiplies the warmup ramp by a
  decay counted from step 0 (``decay_from_start=True``); transformers decays from the end of warmup.
- ``cosine`` (nanoT5): linear warmup, then half a cosine down to ``min_lr_ratio``.
- ``constant``: linear warmup, then 1.
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch

from ..config import suggest
from ..errors import ConfigError

NAMES = ("constant", "linear", "cosine", "inverse_sqrt")


def warmup_factor(step: int, warmup_steps: int) -> float:
    """``step / warmup`` during warmup, then 1."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return step / warmup_steps


def inverse_sqrt(step: int, warmup_steps: int) -> float:
    """T5: constant for ``warmup_steps`` steps, then proportional to ``1/sqrt(step)``; 1 at the peak."""
    w = max(1, warmup_steps)
    return math.sqrt(w) / math.sqrt(max(step, w))


def _progress(step: int, warmup_steps: int, total_steps: int) -> float:
    """Fraction of the decay phase done, in [0, 1]."""
    span = max(1, total_steps - warmup_steps)
    return min(1.0, max(0.0, (step - warmup_steps) / span))


def linear(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0,
           decay_from_start: bool = False) -> float:
    if decay_from_start:  # ELECTRA: min(1, step/warmup) * polynomial_decay(step, total, power=1)
        decay = 1.0 - min(step, total_steps) / max(1, total_steps)
        return warmup_factor(step, warmup_steps) * (min_lr_ratio + (1.0 - min_lr_ratio) * decay)
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * (1.0 - _progress(step, warmup_steps, total_steps))


def cosine(step: int, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    if step < warmup_steps:
        return warmup_factor(step, warmup_steps)
    p = _progress(step, warmup_steps, total_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * p))


def constant(step: int, warmup_steps: int) -> float:
    return warmup_factor(step, warmup_steps)


@dataclasses.dataclass
class Schedule:
    """A picklable lr multiplier ``schedule(step)``; its fields go into the scheduler's state_dict."""

    name: str
    warmup_steps: int = 0
    total_steps: int = 1
    min_lr_ratio: float = 0.0
    decay_from_start: bool = False

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ConfigError(f"unknown schedule {self.name!r}{suggest(self.name, NAMES)}; known: {', '.join(NAMES)}")
        if self.warmup_steps < 0 or self.total_steps < 1:
            raise ConfigError(f"schedule {self.name!r}: warmup_steps={self.warmup_steps} must be >= 0 and "
                              f"total_steps={self.total_steps} >= 1")

    def __call__(self, step: int) -> float:
        if self.name == "inverse_sqrt":
            return inverse_sqrt(step, self.warmup_steps)
        if self.name == "linear":
            return linear(step, self.warmup_steps, self.total_steps, self.min_lr_ratio, self.decay_from_start)
        if self.name == "cosine":
            return cosine(step, self.warmup_steps, self.total_steps, self.min_lr_ratio)
        return constant(step, self.warmup_steps)


def resolve_warmup(warmup_steps: int, warmup_ratio: float, total_steps: int) -> int:
    """The larger of ``warmup_steps`` and ``warmup_ratio * total_steps`` (ELECTRA fine-tuning: 10%)."""
    return max(int(warmup_steps), int(round(warmup_ratio * total_steps)))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR from a :class:`~t5electra.train.config.ScheduleSection`; each param group keeps
    its own peak lr (layer-wise decay scales survive)."""
    warmup = resolve_warmup(cfg.warmup_steps, cfg.warmup_ratio, total_steps)
    if cfg.name != "inverse_sqrt" and warmup >= total_steps > 0:  # inverse_sqrt's "warmup" is at the peak
        warnings.warn(f"schedule.warmup_steps={warmup} >= the {total_steps} training steps: the lr rises the whole run "
                      f"and never reaches optim.lr (at the last step {(total_steps - 1) / warmup:.0%} of it); lower "
                      f"schedule.warmup_steps / warmup_ratio or raise train.max_steps", UserWarning, stacklevel=2)
    schedule = Schedule(cfg.name, warmup, total_steps, cfg.min_lr_ratio, cfg.decay_from_start)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
