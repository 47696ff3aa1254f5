"""Metrics out of a run: JSONL (always), TensorBoard events (when installed), a progress bar.

``RUN/metrics.jsonl`` has one JSON object per line: ``{"step": 100, "time": 1730000000.0,
"split": "train", "loss": 2.31, "lr": 0.001, ...}``. Key conventions that ``t5electra plot``
understands: ``loss`` and ``*_loss`` (losses), ``lr``, ``grad_norm``, ``tokens_per_s``; evaluation
lines have ``"split": "eval"`` and their metrics (``loss``, ``accuracy``, ...); ELECTRA adds
``gen_loss``, ``disc_loss``, ``gen_acc``, ``disc_acc``, ``disc_precision``, ``disc_recall``,
``disc_auc``. A run resumed from step N first drops the lines after step N (written after that
checkpoint by the run that stopped), then appends; readers also keep the last line per (split, step).
Only the main process writes (pass ``enabled=env.is_main``).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ..core.atomic import write_text_atomic
from ..errors import CheckpointNotFoundError

METRICS_FILE = "metrics.jsonl"


def _clean(v: Any) -> Any:
    """JSON-safe scalars: tensors to floats, NaN/inf to strings JSON can carry."""
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsLogger:
    """Append metrics to ``RUN/metrics.jsonl`` and, if tensorboard is installed, to TensorBoard."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True,
                 resume_step: int | None = None):
        """``resume_step``: the step the run (re)starts from; lines after it are removed first, so a
        resumed run leaves one line per (split, step). None: append to whatever is there."""
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.path = self.run_dir / METRICS_FILE
        self._file = None
        self._tb = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.path.is_file():
            truncate_metrics(self.path, resume_step)
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:  # torch.utils.tensorboard needs the `tensorboard` package
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                purge = {"purge_step": resume_step + 1} if resume_step is not None else {}
                self._tb = SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), **purge)

    @property
    def tensorboard_enabled(self) -> bool:
        return self._tb is not None

    def log(self, step: int, metrics: dict[str, Any], split: str = "train") -> None:
        if not self.enabled:
            return
        record = {"step": int(step), "time": round(time.time(), 3), "split": split}
        record.update({k: _clean(v) for k, v in metrics.items()})
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()  # a killed run keeps every line written so far
        if self._tb is not None:
            for k, v in record.items():
                if k not in ("step", "time", "split") and isinstance(v, (int, float)):
                    self._tb.add_scalar(f"{split}/{k}", v, step)
            self._tb.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def truncate_metrics(path: str | os.PathLike, last_step: int) -> int:
    """Keep the lines of a metrics.jsonl up to ``last_step`` (and drop torn ones); atomic rewrite.
    Returns how many lines were dropped."""
    path = Path(path)
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
            keep = isinstance(rec, dict) and int(rec.get("step", 0)) <= last_step
        except (json.JSONDecodeError, TypeError, ValueError):
            keep = False
        if keep:
            kept.append(line)
        elif line.strip():
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(x + "\n" for x in kept))
    return dropped


def read_metrics(run_dir_or_file: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, sorted by step; for a (split, step) logged twice (a resumed
    run re-did it), the last line wins. A torn last line (killed mid-write) is skipped."""
    p = Path(run_dir_or_file)
    if p.is_dir():
        p = p / METRICS_FILE
    if not p.is_file():
        raise CheckpointNotFoundError(f"no {METRICS_FILE} at {p} (is this a run directory?)")
    latest: dict[tuple[str, int], dict[str, Any]] = {}
    for line in p.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("step"), int):  # (a damaged line is skipped, as bad JSON)
            latest[(rec.get("split", "train"), rec["step"])] = rec
    return sorted(latest.values(), key=lambda r: (r["step"], r.get("split", "train")))


class Progress:
    """A tqdm bar over optimiser steps showing loss, tokens/s and the ETA (main process only).

    ``update(step, loss=..., tokens=...)`` is called after each step with the number of tokens that
    step processed (all ranks); the bar's rate and ETA come from tqdm.
    """

    def __init__(self, total: int, initial: int = 0, enabled: bool = True, desc: str = "train"):
        self.enabled = enabled
        self._bar = None
        self._tokens = 0
        self._t0 = time.perf_counter()
        if enabled:
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True,
                             file=sys.stderr, disable=None)  # disable=None: off when not a terminal

    def tokens_per_s(self) -> float:
        dt = time.perf_counter() - self._t0
        return self._tokens / dt if dt > 0 else 0.0

    def update(self, step: int, loss: float | None = None, tokens: int = 0, **extra: float) -> float:
        """Advance to ``step``; returns tokens/s since the bar started."""
        self._tokens += int(tokens)
        rate = self.tokens_per_s()
        if self._bar is not None:
            post = {}
            if loss is not None:
                post["loss"] = f"{loss:.4f}"
            if tokens:
                post["tok/s"] = f"{rate:,.0f}"
            post.update({k: f"{v:.4g}" for k, v in extra.items()})
            self._bar.set_postfix(post, refresh=False)
            self._bar.update(step - self._bar.n)
        return rate

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        if self._bar is not None:
            self._bar.write(message)
        elif self.enabled:
            print(message, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
