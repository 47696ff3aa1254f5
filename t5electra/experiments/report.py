"""The report of an experiment: ``OUT/README.md`` and one PNG per (task, metric).

For each fine-tuning task and main metric (the task's first; for a mixture, the ``average`` and
each task's first), the report gives the test score of every method at every pretraining budget
as mean ± standard deviation over the seeds, plots it against the pretraining FLOPs, and compares
the methods at EQUAL pretraining FLOPs: at each budget's FLOPs, each method's mean score,
interpolated (linearly in log FLOPs, never extrapolated) between its own budgets when its FLOPs
differ. Then the pretraining runs (steps, FLOPs, final validation loss, wall time), the command,
the machine(s) the results ran on and the seeds, and where the raw logs are.

The generator owns README.md up to the line :data:`HAND_WRITTEN`, which it writes last: whatever
follows that line (an analysis written by hand) is kept as it is when the report is written again.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.atomic import save_figure_atomic, write_text_atomic
from .flops import format_flops
from .grid import Experiment, task_slug

LOGS_ARCHIVE = "logs.tar.xz"  # the compressed logs/ kept in the repository
# The line after which README.md is written by hand: the generator rewrites only what is above it.
HAND_WRITTEN = "<!-- Written by hand below this line: `t5electra experiment` rewrites only what is above it. -->"


def main_metrics(task: str, test: dict[str, float]) -> list[str]:
    """The metrics the report shows for ``task``: its first one; a mixture's average and each task's first."""
    if "+" not in task:
        return [next((k for k in test if k != "loss"), "loss")] if test else []
    keys, seen = (["average"] if "average" in test else []), set()
    for k in test:
        prefix = k.split("/", 1)[0]
        if "/" in k and prefix not in seen:
            seen.add(prefix)
            keys.append(k)
    return keys


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    m, sd = mean_sd(values)
    return f"{m:.2f} ± {sd:.2f} (n={len(values)})"


def interpolate(points: list[tuple[float, float]], x: float, tol: float = 0.05) -> float | None:
    """The value at FLOPs ``x`` on the curve ``[(flops, value)]``, linear in log FLOPs; an end
    point within ``tol`` (relative) of ``x`` stands for it; None further outside (no extrapolation)."""
    pts = sorted(p for p in points if p[0] > 0)
    if not pts:
        return None
    if x <= pts[0][0]:
        return pts[0][1] if x >= pts[0][0] * (1 - tol) else None
    if x >= pts[-1][0]:
        return pts[-1][1] if x <= pts[-1][0] * (1 + tol) else None
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if x0 <= x <= x1:
            if x1 == x0:
                return (y0 + y1) / 2
            t = (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0))
            return y0 + t * (y1 - y0)
    return None  # pragma: no cover (x lies between two sorted points)


def _series(records: list[dict[str, Any]], task: str, metric: str) -> dict[str, dict[Any, list[tuple[float, float]]]]:
    """method -> budget -> [(pretraining FLOPs, test score)] over the seeds."""
    out: dict[str, dict[Any, list[tuple[float, float]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r.get("task") == task and metric in r["metrics"].get("test", {}):
            out[r["method"]][r["budget"]].append((float(r["pretrain_flops"]), r["metrics"]["test"][metric]))
    return out


def can_plot() -> bool:
    """Whether matplotlib (the ``data`` extra) is installed: without it the report has no plots."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(exp: Experiment, series, task: str, metric: str, path: Path) -> Path:
    import matplotlib  # the `data` extra: imported only to draw

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for name, by_budget in series.items():
        label = exp.methods[name].label
        if None in by_budget:  # no pretraining: a horizontal band
            m, sd = mean_sd([v for _, v in by_budget[None]])
            line = ax.axhline(m, linestyle="--", label=f"{label} (no pretraining)")
            ax.axhspan(m - sd, m + sd, alpha=0.15, color=line.get_color())
            continue
        pts = sorted((statistics.fmean(f for f, _ in v), *mean_sd([s for _, s in v])) for v in by_budget.values())
        xs, ms, sds = zip(*pts)
        ax.errorbar(xs, ms, yerr=sds, marker="o", capsize=3, label=label)
        for b in by_budget.values():
            ax.scatter([f for f, _ in b], [s for _, s in b], s=8, alpha=0.35, color="gray")
    ax.set_xscale("log")
    ax.set_xlabel("pretraining FLOPs")
    ax.set_ylabel(f"{task} test {metric}")
    ax.set_title(f"{exp.name}: {task}", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure_atomic(fig, path, dpi=110)
    plt.close(fig)
    return path


def equal_flops_points(exp: Experiment, series) -> list[float]:
    """Where to compare the methods: the FLOPs budgets themselves, or (step budgets) every
    method's FLOPs, points within 5% of each other merged."""
    if exp.budget_unit == "flops":
        return sorted(exp.budgets)
    xs = sorted(statistics.fmean(f for f, _ in v) for b in series.values() for k, v in b.items() if k is not None)
    merged: list[float] = []
    for x in xs:
        if not merged or x > merged[-1] * 1.05:
            merged.append(x)
    return merged


def _relative(path: str) -> str:
    """``path`` relative to the working directory when it lies below it (reports are committed)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def write_report(exp: Experiment, records: list[dict[str, Any]], out: Path, meta: dict[str, Any],
                 stale: dict[str, str] | None = None, echo: Callable[[str], None] = print) -> Path:
    """Write ``out/README.md`` and the plots; returns the README's path. ``stale``: job id -> why
    its record is of another configuration (left out of ``records``, named in the report)."""
    out.mkdir(parents=True, exist_ok=True)
    finetune = [r for r in records if r["task"] is not None]
    pretrain = [r for r in records if r["task"] is None]
    hours = sum(r["wall_s"] for r in records) / 3600
    L = [f"# {exp.title}", ""]
    if exp.claim:
        L += [f"**The paper's claim:** {exp.claim}", ""]
    total = meta.get("jobs_total", len(records))
    if total > len(records):
        L += [f"**Partial: {len(records)} of {total} jobs have finished** (run the command again to continue).", ""]
    if stale:
        L += [f"**Left out: {len(stale)} record{'s' * (len(stale) > 1)} made with an earlier configuration of "
              "their job** (the experiment file has changed since; running the command again reruns them):", ""]
        L += [f"- `{job_id}`: {reason}" for job_id, reason in stale.items()] + [""]
    command = meta.get("command") or f"t5electra experiment {exp.name}"
    plots = can_plot()
    if not plots:  # the jobs' results are worth a report without pictures; say how to get them
        note = (f"Plots not drawn: matplotlib is not installed (`pip install 't5electra[data]'`, then "
                f"`{command} --report-only` draws them).")
        echo(f"report: {note}")
        L += [note, ""]
    L += [f"{len(records)} jobs ({len(pretrain)} pretraining, {len(finetune)} fine-tuning), seeds "
          f"{', '.join(map(str, exp.seeds))}, {hours:.2f} h of training in total. Scores are test-split "
          "metrics, mean ± standard deviation over the seeds (n = seeds); FLOPs are counted by "
          "`t5electra.experiments.flops` (formula in [docs/experiments/README.md](../README.md)).", "",
          "## Reproduce", "", "```", command, "```", "",
          f"Experiment file: `{_relative(meta.get('experiment_file') or exp.path)}`. {machines_line(records, meta.get('machine'))}",
          f"Report written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]

    for task in exp.tasks:
        recs = [r for r in finetune if r["task"] == task]
        if not recs:
            continue
        for metric in main_metrics(task, recs[0]["metrics"].get("test", {})):
            series = _series(finetune, task, metric)
            L += [f"## {task}: test {metric}", ""]
            if plots:
                png = plot(exp, series, task, metric, out / f"{task_slug(task)}_{metric.replace('/', '_')}.png")
                L += [f"![{task} {metric} vs pretraining FLOPs]({png.name})", ""]
            # -- by budget ----------------------------------------------------------------
            header = ["method"] + [f"budget {i} ({_budget(exp, i)})" for i in range(len(exp.budgets))]
            L += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            for name, by_budget in series.items():
                if None in by_budget:
                    cells = [_cell([v for _, v in by_budget[None]]) + ", no pretraining"]
                    cells += [""] * (len(exp.budgets) - 1)
                else:
                    cells = [(_cell([v for _, v in by_budget[i]]) + f" at {format_flops(by_budget[i][0][0])}")
                             if by_budget.get(i) else "—" for i in range(len(exp.budgets))]
                L.append(f"| {exp.methods[name].label} | " + " | ".join(cells) + " |")
            L.append("")
            # -- at equal FLOPs -----------------------------------------------------------
            grid = equal_flops_points(exp, series)
            if grid and len(series) > 1:
                L += ["At equal pretraining FLOPs (each method's mean, interpolated in log FLOPs between its "
                      "own budgets, its nearest budget when within 5%; — outside its range):", ""]
                L += ["| method | " + " | ".join(format_flops(x) for x in grid) + " |", "|---|" + "---|" * len(grid)]
                for name, by_budget in series.items():
                    if None in by_budget:
                        continue
                    curve = [(statistics.fmean(f for f, _ in v), statistics.fmean(s for _, s in v))
                             for v in by_budget.values()]
                    vals = [interpolate(curve, x) for x in grid]
                    L.append(f"| {exp.methods[name].label} | " +
                             " | ".join("—" if v is None else f"{v:.2f}" for v in vals) + " |")
                L.append("")
        base = recs[0]["metrics"].get("majority_baseline", {}).get("test")
        if base:
            L += [f"Majority-class baseline on {task} (test): " +
                  ", ".join(f"{k} {v:.2f}" for k, v in base.items()), ""]

    L += multitask_table(exp, finetune)
    if pretrain:
        L += ["## Pretraining runs", "", "| method | budget | steps | FLOPs | final validation loss | wall time (s) |",
              "|---|---|---|---|---|---|"]
        groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
        for r in pretrain:
            groups[(r["method"], r["budget"])].append(r)
        for (name, budget), rs in groups.items():
            losses = [r["metrics"]["eval"]["loss"] for r in rs if "loss" in r["metrics"].get("eval", {})]
            L.append(f"| {exp.methods[name].label} | {budget} | {rs[0]['steps']} | {format_flops(rs[0]['flops'])} | "
                     f"{_cell(losses)} | {statistics.fmean(r['wall_s'] for r in rs):.0f} |")
        L.append("")
    L += ["## Raw logs", "", "Every job's record (FLOPs, wall time, metrics): [results.jsonl](results.jsonl); " +
          raw_logs_line(out), ""]
    path = out / "README.md"
    # whole or not at all: an in-place rewrite cut short lost the hand-written text below HAND_WRITTEN
    write_text_atomic(path, "\n".join(L) + "\n" + hand_written(path, echo))
    return path


def hand_written(readme: Path, echo: Callable[[str], None] = print) -> str:
    """What a new report keeps of ``readme``: the :data:`HAND_WRITTEN` line and all after it. A
    README without that line (not written by this generator, or before it had one) is kept whole
    as README.md.orig, since which part of it was written by hand cannot be told."""
    text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if line.strip() == HAND_WRITTEN:
            return "".join(lines[i:])
    if text.strip():
        backup = readme.with_name(readme.name + ".orig")
        write_text_atomic(backup, text)
        echo(f"report: {readme} had no line {HAND_WRITTEN!r}; it is kept as {backup}: move any hand-written "
             "text below that line in the new one")
    return HAND_WRITTEN + "\n"


def machines_line(records: list[dict[str, Any]], default: dict[str, Any] | None = None) -> str:
    """The machine the results ran on, or each machine with its number of jobs (``default``, run.json's,
    for a record that does not name its own)."""
    machines = [r.get("machine") or default for r in records]
    counts = Counter(tuple(m.items()) for m in machines if m)
    unknown = sum(1 for m in machines if not m)

    def show(m: tuple) -> str:
        return ", ".join(f"{k} {v}" for k, v in m)

    if len(counts) == 1 and not unknown:
        return f"Machine: {show(next(iter(counts)))}."
    parts = [f"{show(m)} ({n} job{'s' * (n > 1)})" for m, n in counts.most_common()]
    parts += [f"not recorded ({unknown} job{'s' * (unknown > 1)})"] if unknown else []
    return "Machines: " + "; ".join(parts) + "." if parts else "Machine: no job has finished."


def raw_logs_line(out: Path) -> str:
    """Where each run's own files are: ``logs/`` after a run, or ``logs.tar.xz`` once archived
    (docs/experiments/README.md: the repository keeps the archive, without the per-run plots that
    ``t5electra plot`` redraws from metrics.jsonl)."""
    if (out / LOGS_ARCHIVE).is_file() and not (out / "logs").is_dir():
        return (f"each run's config, metrics.jsonl and results.json: [{LOGS_ARCHIVE}]({LOGS_ARCHIVE}) "
                f"(`tar xJf {LOGS_ARCHIVE}`; curves: `t5electra plot logs/<job id>`).")
    return "each run's config, metrics.jsonl, results.json and plots: [logs/](logs/)."


def multitask_table(exp: Experiment, finetune: list[dict[str, Any]]) -> list[str]:
    """For each mixture fine-tuned next to its own tasks: per task and budget, the mixture model's
    score (``task/metric``) beside the single-task model's (``metric``), over the seeds."""
    lines: list[str] = []
    for mix in (t for t in exp.tasks if "+" in t):
        singles = [t for t in mix.split("+") if t in exp.tasks]
        if not singles:
            continue
        lines += [f"## One model for {mix} vs one model per task", "",
                  "| task | metric | method | budget | mixture model | single-task model |",
                  "|---|---|---|---|---|---|"]
        for task in singles:
            own = [r for r in finetune if r["task"] == task]
            if not own:
                continue
            for metric in main_metrics(task, own[0]["metrics"].get("test", {})):
                keys = {(r["method"], r["budget"]) for r in own}
                for method, budget in sorted(keys, key=str):
                    def scores(t: str, k: str, method: str = method, budget: Any = budget) -> list[float]:
                        return [r["metrics"]["test"][k] for r in finetune if r["task"] == t and r["method"] == method
                                and r["budget"] == budget and k in r["metrics"].get("test", {})]
                    lines.append(f"| {task} | {metric} | {exp.methods[method].label} | {budget} | "
                                 f"{_cell(scores(mix, f'{task}/{metric}'))} | {_cell(scores(task, metric))} |")
        lines.append("")
    return lines


def _budget(exp: Experiment, i: int) -> str:
    b = exp.budgets[i]
    return format_flops(b) if exp.budget_unit == "flops" else f"{int(b)} steps"
