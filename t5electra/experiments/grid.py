"""An experiment file (``experiments/NAME.yaml``) and its expansion into a list of jobs.

An experiment compares pretraining *methods* at several pretraining *budgets*, each with
several *seeds*, by fine-tuning every pretrained model on some *tasks*::

    name: electra_vs_mlm
    title: ELECTRA vs masked LM at equal compute
    claim: RTD above MLM at every budget            # what the paper found (the report quotes it)
    seeds: [0, 1, 2]
    data: {corpus_chars: 1000000, t5_vocab: 4000, electra_vocab: 4000}   # corpus slice + tokenizers
    methods:
      rtd: {kind: pretrain_electra, label: "RTD (generator 1/4)",
            overrides: {data.objective: electra-rtd, electra.generator_size: 0.25}}
      mlm: {kind: pretrain_electra, label: MLM, overrides: {data.objective: mlm}}
      # kind: none (with family: t5 or electra) fine-tunes from random weights: no pretraining
    budgets: {flops: [2e13, 4e13]}                   # or {steps: [200, 400]}: per method, the steps
    pretrain:                                        # run-config overrides of every pretraining job, by kind
      pretrain_electra: {model.preset: electra-small, model.overrides: {hidden_size: 128}, train.batch_size: 32}
    finetune:
      tasks: [sentiment, bbc_topic]                 # a task, or a mixture "a+b+c"
      finetune_electra: {train.max_steps: 300}       # overrides of every fine-tuning job, by kind

A FLOPs budget becomes, per method, the step count whose pretraining FLOPs
(:mod:`t5electra.experiments.flops`) are closest to it: the methods are compared at EQUAL
pretraining compute. Each (method, budget, seed) is one pretraining job; each task on it one
fine-tuning job that depends on it. Job ids are paths: ``pretrain/rtd/b0/seed1``,
``finetune/sentiment/rtd/b0/seed1``. Override tables are layered (the kind's, then the method's;
for ``none``, the family's pretraining model.* settings, then the fine-tuning's), and a dict-valued
override such as ``model.overrides`` merges key by key (:func:`merge_overrides`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import yaml

from ..config import suggest
from ..errors import ConfigError

PRETRAIN_KINDS = ("pretrain_t5", "pretrain_electra")
FINETUNE_KIND = {"t5": "finetune_t5", "electra": "finetune_electra"}
FAMILY = {"pretrain_t5": "t5", "pretrain_electra": "electra"}
EXPERIMENTS_DIR = "experiments"


@dataclasses.dataclass
class Method:
    """One pretraining method of an experiment."""

    name: str
    kind: str                 # 'pretrain_t5', 'pretrain_electra' or 'none' (no pretraining)
    family: str               # 't5' or 'electra': which fine-tuning recipe follows
    label: str                # legend text of the report
    overrides: dict[str, Any]  # run-config overrides ('section.key': value) of its pretraining jobs


@dataclasses.dataclass
class Experiment:
    """A parsed experiment file."""

    name: str
    title: str
    claim: str
    seeds: list[int]
    data: dict[str, Any]                  # corpus_chars, t5_vocab, electra_vocab
    methods: dict[str, Method]
    budget_unit: str                      # 'steps' or 'flops'
    budgets: list[float]
    pretrain: dict[str, dict[str, Any]]   # kind -> overrides
    tasks: list[str]
    finetune: dict[str, dict[str, Any]]   # kind -> overrides
    path: str = ""

    @property
    def families(self) -> set[str]:
        return {m.family for m in self.methods.values()}


@dataclasses.dataclass
class Job:
    """One training run of the grid."""

    id: str                    # unique, path-like: 'pretrain/rtd/b0/seed1'
    kind: str                  # 'pretrain_t5', 'pretrain_electra', 'finetune_t5', 'finetune_electra'
    method: str                # the method's name
    seed: int
    budget: int | None         # index into Experiment.budgets (None: no pretraining)
    steps: int                 # optimiser steps of this job
    overrides: dict[str, Any]  # run-config overrides, 'section.key': value (output dir and paths added by the runner)
    task: str | None = None    # fine-tuning task or mixture
    depends_on: str | None = None  # the pretraining job whose model this job fine-tunes


def find_experiment(name_or_path: str | os.PathLike) -> Path:
    """``NAME`` -> ``experiments/NAME.yaml`` (from the working directory, then the source checkout);
    a path to a YAML file is used as it is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"experiment file {str(p)!r} does not exist")
        return p
    roots = [Path.cwd() / EXPERIMENTS_DIR, Path(__file__).resolve().parents[2] / EXPERIMENTS_DIR]
    for root in roots:
        if (root / f"{p.name}.yaml").is_file():
            return root / f"{p.name}.yaml"
    known = sorted({f.stem for r in roots if r.is_dir() for f in r.glob("*.yaml")})
    raise ConfigError(f"unknown experiment {str(name_or_path)!r}{suggest(str(name_or_path), known)}; "
                      f"known: {', '.join(known) or '(none: no experiments/ folder here)'}")


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping, got {value!r}")
    return dict(value)


def load_experiment(name_or_path: str | os.PathLike) -> Experiment:
    """Read and check an experiment file (every key named in the errors)."""
    path = find_experiment(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    raw = _mapping(raw, str(path))
    allowed = {"name", "title", "claim", "seeds", "data", "methods", "budgets", "pretrain", "finetune"}
    for key in raw:
        if key not in allowed:
            raise ConfigError(f"{path}: unknown key {key!r}{suggest(key, allowed)}; keys: {', '.join(sorted(allowed))}")

    methods: dict[str, Method] = {}
    for name, m in _mapping(raw.get("methods"), f"{path}: methods").items():
        m = _mapping(m, f"{path}: methods.{name}")
        kind = m.get("kind")
        if kind not in (*PRETRAIN_KINDS, "none"):
            raise ConfigError(f"{path}: methods.{name}.kind={kind!r}: expected one of "
                              f"{', '.join(PRETRAIN_KINDS)} or none")
        family = FAMILY.get(kind) or m.get("family")
        if family not in FINETUNE_KIND:
            raise ConfigError(f"{path}: methods.{name}: kind 'none' needs family: t5 or electra")
        methods[str(name)] = Method(str(name), kind, family, str(m.get("label", name)),
                                    _mapping(m.get("overrides"), f"{path}: methods.{name}.overrides"))
    if not methods:
        raise ConfigError(f"{path}: no methods")

    budgets = _mapping(raw.get("budgets"), f"{path}: budgets")
    if len(budgets) != 1 or next(iter(budgets)) not in ("steps", "flops"):
        raise ConfigError(f"{path}: budgets must be {{steps: [...]}} or {{flops: [...]}}, got {budgets!r}")
    unit, values = next(iter(budgets.items()))
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ConfigError(f"{path}: budgets.{unit} must be a list of numbers, got {values!r}") from None
    if not values or min(values) <= 0:
        raise ConfigError(f"{path}: budgets.{unit} must be positive numbers, got {values!r}")

    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"{path}: seeds must be a list of integers, got {seeds!r}")
    finetune = _mapping(raw.get("finetune"), f"{path}: finetune")
    tasks = finetune.pop("tasks", [])
    if not isinstance(tasks, list) or not tasks:
        raise ConfigError(f"{path}: finetune.tasks must be a non-empty list of task (or mixture) names")
    pretrain = _mapping(raw.get("pretrain"), f"{path}: pretrain")
    for section, table, kinds in (("pretrain", pretrain, PRETRAIN_KINDS), ("finetune", finetune,
                                                                            tuple(FINETUNE_KIND.values()))):
        for kind in table:
            if kind not in kinds:
                raise ConfigError(f"{path}: {section}.{kind}: expected one of {', '.join(kinds)}")
            table[kind] = _mapping(table[kind], f"{path}: {section}.{kind}")
    return Experiment(name=str(raw.get("name", path.stem)), title=str(raw.get("title", path.stem)),
                      claim=str(raw.get("claim", "")), seeds=seeds, data=_mapping(raw.get("data"), f"{path}: data"),
                      methods=methods, budget_unit=unit, budgets=values, pretrain=pretrain,
                      tasks=[str(t) for t in tasks], finetune=finetune, path=str(path))


def expand(exp: Experiment, steps_for_flops: Callable[[Method, float], int] | None = None) -> list[Job]:
    """Every job of ``exp``, each pretraining job before the fine-tuning jobs that need it.

    ``steps_for_flops(method, flops)`` turns a FLOPs budget into steps (the runner passes one built
    on :mod:`flops` and the adapters); needed only when the budgets are in FLOPs.
    """
    jobs: list[Job] = []
    for method in exp.methods.values():
        points: list[tuple[int | None, int]] = [(None, 0)]
        if method.kind != "none":
            if exp.budget_unit == "flops":
                if steps_for_flops is None:
                    raise ConfigError(f"{exp.path}: budgets in FLOPs need a steps_for_flops function")
                points = [(i, max(1, steps_for_flops(method, b))) for i, b in enumerate(exp.budgets)]
            else:
                points = [(i, int(b)) for i, b in enumerate(exp.budgets)]
        ft_kind = FINETUNE_KIND[method.family]
        for budget, steps in points:
            for seed in exp.seeds:
                tag = f"{method.name}/b{budget}/seed{seed}" if budget is not None else f"{method.name}/seed{seed}"
                pre = None
                if method.kind != "none":
                    pre = Job(id=f"pretrain/{tag}", kind=method.kind, method=method.name, seed=seed, budget=budget,
                              steps=steps, overrides=merge_overrides(pretrain_overrides(exp, method),
                                                                     {"train.max_steps": steps, "train.seed": seed}))
                    jobs.append(pre)
                # No pretraining: random weights shaped as the family's pretrained models are (their
                # model.* settings), then the fine-tuning's overrides on top, as a pretrained model
                # gets them: its saved config, then e.g. model.overrides {classifier_pooling: mean}.
                # Every method thus fine-tunes the same head.
                shape = {} if pre is not None else {
                    k: v for k, v in pretrain_overrides(exp, method, f"pretrain_{method.family}").items()
                    if k.startswith("model.")}
                for task in exp.tasks:
                    overrides = merge_overrides(shape, exp.finetune.get(ft_kind, {}),
                                                {"data.task": task, "train.seed": seed})
                    jobs.append(Job(id=f"finetune/{task_slug(task)}/{tag}", kind=ft_kind, method=method.name,
                                    seed=seed, budget=budget, steps=int(overrides.get("train.max_steps", 0)),
                                    overrides=overrides, task=task, depends_on=pre.id if pre else None))
    ids = [j.id for j in jobs]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"{exp.path}: two jobs share an id (duplicate task or method names?)")
    return jobs


def merge_overrides(*layers: dict[str, Any]) -> dict[str, Any]:
    """Run-config overrides, later layers winning; a dict-valued one (``model.overrides``) merges
    key by key, so a layer that adds ``{classifier_pooling: mean}`` keeps the shape an earlier
    layer gave (replacing the whole dict would silently drop it)."""
    out: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            old = out.get(key)
            out[key] = {**old, **value} if isinstance(old, dict) and isinstance(value, dict) else value
    return out


def pretrain_overrides(exp: Experiment, method: Method, kind: str | None = None) -> dict[str, Any]:
    """The overrides of ``method``'s pretraining: the experiment's for its kind (``kind``: another
    kind's, for a method without pretraining), then the method's own."""
    return merge_overrides(exp.pretrain.get(kind or method.kind, {}), method.overrides)


def task_slug(task: str) -> str:
    """A task or mixture name as one path component (``a+b`` stays readable)."""
    return task.replace("/", "_")
