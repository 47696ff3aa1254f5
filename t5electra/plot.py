"""PNG curves of a run from its ``metrics.jsonl`` (see train/logging.py for the key conventions).

``plot_run(RUN)`` writes, to ``RUN/plots/`` by default, whichever of these the run has data for:

- ``loss.png``: the training loss (and ELECTRA's ``gen_loss`` / ``disc_loss``) against the
  evaluation loss;
- ``lr.png``: the learning rate;
- ``eval.png``: every other evaluation metric (accuracy, F1, BLEU, ...), one panel each;
- ``electra.png``: generator accuracy and discriminator accuracy / precision / recall / AUC, with
  the evaluation values where logged.

Uses matplotlib (the ``data`` extra) with the non-interactive Agg backend.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .core.atomic import save_figure_atomic
from .core.extras import require
from .errors import ConfigError, DataError
from .train.logging import read_metrics

ELECTRA_KEYS = ("gen_acc", "disc_acc", "disc_precision", "disc_recall", "disc_auc")
NOT_CURVES = {"step", "time", "split", "epoch"}


def _series(records: list[dict[str, Any]], split: str, key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for r in records:
        v = r.get(key)
        if r.get("split", "train") == split and isinstance(v, (int, float)) and not isinstance(v, bool) \
                and math.isfinite(v):
            xs.append(int(r["step"]))
            ys.append(float(v))
    return xs, ys


def _smooth(ys: list[float], window: int) -> list[float]:
    """Trailing moving average over ``window`` points (1: unchanged)."""
    if window <= 1:
        return ys
    out, acc = [], 0.0
    for i, y in enumerate(ys):
        acc += y
        if i >= window:
            acc -= ys[i - window]
        out.append(acc / min(i + 1, window))
    return out


def _keys(records: list[dict[str, Any]], split: str) -> list[str]:
    seen: dict[str, None] = {}
    for r in records:
        if r.get("split", "train") == split:
            for k, v in r.items():
                if k not in NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool):
                    seen.setdefault(k, None)
    return list(seen)


def _lone(xs: list) -> str | None:
    """A marker for a series of one point (matplotlib draws nothing for a one-point line)."""
    return "o" if len(xs) == 1 else None


def plot_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, smooth: int = 1) -> list[Path]:
    """Write the PNGs for the run at ``run_dir``; returns their paths. A curve of one point (a run
    after its first log line, a short run) is drawn as a marker: a line needs two."""
    # the `data` extra: imported only to draw (plot_run_if_available tolerates its absence)
    matplotlib = require("matplotlib", "t5electra plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if smooth < 1:
        raise ConfigError(f"smooth must be >= 1, got {smooth}")
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    train_keys, eval_keys = _keys(records, "train"), _keys(records, "eval")
    written: list[Path] = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        path = out / name
        save_figure_atomic(fig, path, dpi=100)
        plt.close(fig)
        written.append(path)

    # loss.png: train losses (smoothed) and eval loss
    losses = [k for k in train_keys if k == "loss" or k.endswith("_loss")]
    eval_losses = [k for k in eval_keys if k == "loss" or k.endswith("_loss")]
    if losses or eval_losses:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in losses:
            xs, ys = _series(records, "train", k)
            ax.plot(xs, _smooth(ys, smooth), marker=_lone(xs), label=f"train {k}")
        for k in eval_losses:
            xs, ys = _series(records, "eval", k)
            ax.plot(xs, ys, marker="o", label=f"eval {k}")
        ax.set(xlabel="step", ylabel="loss", title=f"{run_dir.name}: loss")
        ax.grid(alpha=0.3)
        ax.legend()
        save(fig, "loss.png")

    # lr.png
    if "lr" in train_keys:
        fig, ax = plt.subplots(figsize=(7, 3))
        xs, ys = _series(records, "train", "lr")
        ax.plot(xs, ys, marker=_lone(xs))
        ax.set(xlabel="step", ylabel="learning rate", title=f"{run_dir.name}: learning rate")
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax.grid(alpha=0.3)
        save(fig, "lr.png")

    # eval.png: the other eval metrics
    metrics = [k for k in eval_keys if k not in eval_losses and k not in ELECTRA_KEYS]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.5 * len(metrics) + 1, 3.2), squeeze=False)
        for ax, k in zip(axes[0], metrics):
            ax.plot(*_series(records, "eval", k), marker="o")
            ax.set(xlabel="step", title=f"eval {k}")
            ax.grid(alpha=0.3)
        save(fig, "eval.png")

    # electra.png: generator / discriminator quality
    present = [k for k in ELECTRA_KEYS if k in train_keys or k in eval_keys]
    if present:
        fig, ax = plt.subplots(figsize=(7, 4))
        for k in present:
            xs, ys = _series(records, "train", k)
            if xs:
                ax.plot(xs, _smooth(ys, smooth), marker=_lone(xs), label=k)
            xs, ys = _series(records, "eval", k)
            if xs:
                ax.plot(xs, ys, marker="o", linestyle="--", label=f"eval {k}")
        ax.set(xlabel="step", ylim=(0, 1.02), title=f"{run_dir.name}: ELECTRA generator / discriminator")
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
        save(fig, "electra.png")
    if not written:
        raise DataError(f"{run_dir / 'metrics.jsonl'}: nothing to plot yet (no finite numeric metrics)")
    return written


def plot_run_if_available(run_dir: str | os.PathLike) -> list[Path]:
    """:func:`plot_run` when matplotlib is installed (the ``data`` extra), else nothing: the
    training recipes call this at the end of a run."""
    try:
        return plot_run(run_dir)
    except ImportError:
        return []
