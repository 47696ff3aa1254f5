"""The quickstart over several seeds, with the no-pretraining control (issue #14's comparison):

    t5electra quickstart --plan long --seeds 3      # seeds 0, 1, 2 in OUT/seed-0 ... OUT/seed-2

Each seed is one whole quickstart (recipes/quickstart.py) with ``control=True``: pretraining,
fine-tuning, and the same fine-tuning stages from random weights (5b/6b), in ``OUT/seed-<k>``,
resumable stage by stage as the quickstart is. The seeds share the data (built identically for every
seed) and the tokenizers (trained once, by the first seed, and copied: the seeds then differ only by
``train.seed``: initial weights, data order, masks, dropout). Then one table: for T5 and ELECTRA the
test accuracy pretrained and from scratch, mean ± sd over the seeds, the paired difference, and the
TF-IDF and majority-class rows; printed and written to ``OUT/comparison.json``.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.atomic import write_text_atomic, writing_dir
from ..errors import ConfigError
from ..recipes.quickstart import CONTROL_RUNS, PLANS, default_plan, quickstart
from .report import mean_sd

# (row name, pretrained run, no-pretraining run) under each OUT/seed-<k>
MODELS = (("T5", "t5-sentiment", CONTROL_RUNS["finetune_t5_scratch"]),
          ("ELECTRA", "electra-sentiment", CONTROL_RUNS["finetune_electra_scratch"]))
GAIN_TARGET = 3.0  # issue #14: pretraining beats no pretraining by >= 3 points (mean over the seeds)


def compare(out: str | os.PathLike = "runs/quickstart", *, seeds: int = 3, first_seed: int = 0, plan: str = "long",
            tiny: bool = False, minilm: bool = False, threads: int | None = None,
            echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the quickstart (and its control) for seeds ``first_seed .. first_seed + seeds - 1``, then
    the comparison table (:func:`comparison`); returns what is written to ``OUT/comparison.json``.

    ``minilm``: also fine-tune the real MiniLM in every seed (off by default: it has no control,
    and on the long plan it costs ~13 min per seed on 2 cores). Arguments are checked before any work.
    """
    if seeds < 1:
        raise ConfigError(f"quickstart --seeds {seeds}: give at least one seed")
    if first_seed < 0:
        raise ConfigError(f"quickstart seed {first_seed}: give a seed >= 0")
    if plan == "auto":
        plan = "tiny" if tiny else default_plan()  # one measurement for every seed (choose_plan)
    if plan not in PLANS:
        raise ConfigError(f"quickstart plan {plan!r}: choose one of {', '.join(PLANS)}")
    out = Path(out)
    runs = [out / f"seed-{k}" for k in range(first_seed, first_seed + seeds)]
    for k, run in enumerate(runs, start=first_seed):
        echo(f"\n######## seed {k} ({k - first_seed + 1} of {seeds}): {run}")
        if run != runs[0] and not (run / "tokenizers").exists() and (runs[0] / "tokenizers").is_dir():
            # the tokenizers stage is then done: the copy appears whole (one cut short by a kill was
            # taken for done, with a T5 tokenizer missing files)
            with writing_dir(run / "tokenizers") as tmp:
                shutil.copytree(runs[0] / "tokenizers", tmp, dirs_exist_ok=True)
        quickstart(run, tiny=tiny, minilm=minilm, threads=threads, echo=echo, plan=plan, seed=k, control=True)
    res = comparison(runs)
    res["plan"] = "tiny" if tiny else plan
    write_text_atomic(out / "comparison.json", json.dumps(res, indent=2) + "\n")
    for line in table_lines(res):
        echo(line)
    echo(f"\ncomparison: {out / 'comparison.json'}")
    return res


def _accuracy(run: Path) -> float:
    return float(json.loads((run / "results.json").read_text(encoding="utf-8"))["test"]["accuracy"])


def _stats(values: list[float]) -> dict[str, Any]:
    mean, sd = mean_sd(values)
    return {"per_seed": values, "mean": mean, "sd": sd}


def comparison(runs: list[Path]) -> dict[str, Any]:
    """Test accuracy (%) of each finished seed directory in ``runs`` (quickstart.json and the
    results.json of the pretrained and scratch runs): per model, pretrained and scratch mean ± sd
    (sample sd; 0 for one seed), the per-seed difference pretrained - scratch and its mean ± sd;
    the baselines (the same in every seed: the data do not depend on the seed) from the first."""
    first = json.loads((runs[0] / "quickstart.json").read_text())
    res: dict[str, Any] = {"seeds": [int(json.loads((r / "quickstart.json").read_text())["seed"]) for r in runs],
                           "test_examples": first["test_examples"],
                           "tfidf": first["tfidf"]["test"]["accuracy"],
                           "majority_class": next(r["accuracy"] for r in first["table"] if r["model"] == "majority class"),
                           "models": {}}
    for name, pretrained, scratch in MODELS:
        a = [_accuracy(r / pretrained) for r in runs]
        b = [_accuracy(r / scratch) for r in runs]
        res["models"][name] = {"pretrained": _stats(a), "scratch": _stats(b),
                               "difference": _stats([x - y for x, y in zip(a, b)])}
    if all((r / "minilm-sentiment" / "results.json").is_file() for r in runs):
        res["models"]["MiniLM-L6 (real weights)"] = {"pretrained": _stats([_accuracy(r / "minilm-sentiment")
                                                                            for r in runs])}
    res["targets"] = {name: {"pretrained_beats_tfidf": m["pretrained"]["mean"] > res["tfidf"],
                             f"pretraining_gain_at_least_{GAIN_TARGET:g}": m["difference"]["mean"] >= GAIN_TARGET}
                      for name, m in res["models"].items() if "difference" in m}
    return res


def _cell(s: dict[str, Any] | None, sign: str = "") -> str:
    return "-" if s is None else f"{s['mean']:{sign}.1f} ± {s['sd']:.1f}"


def table_lines(res: dict[str, Any]) -> list[str]:
    """The printed table of a :func:`comparison`."""
    seeds = res["seeds"]
    lines = [f"\nsentiment test accuracy ({res['test_examples']} examples), mean ± sd over {len(seeds)} seed(s) "
             f"{', '.join(map(str, seeds))}; difference: pretrained - no pretraining, per seed:",
             f"  {'model':<26} {'pretrained':>12} {'no pretraining':>15} {'difference':>12}"]
    for name, m in res["models"].items():
        lines.append(f"  {name:<26} {_cell(m['pretrained']):>12} {_cell(m.get('scratch')):>15} "
                     f"{_cell(m.get('difference'), '+'):>12}")
    lines.append(f"  {'TF-IDF + logistic regr.':<26} {res['tfidf']:>12.1f}")
    lines.append(f"  {'majority class':<26} {res['majority_class']:>12.1f}")
    for name, t in res["targets"].items():
        lines.append(f"  {name}: " + ", ".join(f"{k.replace('_', ' ')}: {'yes' if v else 'no'}" for k, v in t.items()))
    return lines
