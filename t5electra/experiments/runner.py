"""Run an experiment's jobs one after the other, resumably, and write its report.

Layout (``OUT`` is the report folder, ``docs/experiments/NAME`` by default; ``WORK`` holds the
models and checkpoints, ``runs/experiments/NAME`` by default)::

    OUT/results.jsonl        one record per finished job: id, kind, method, seed, budget, steps,
                             FLOPs (own training, and the pretraining FLOPs behind it), wall time,
                             metrics, and the job's configuration with its fingerprint
    OUT/logs/<job id>/       the raw logs of each run: config.yaml, metrics.jsonl, results.json, plots/
    OUT/README.md, OUT/*.png the report (:mod:`t5electra.experiments.report`)
    WORK/data/               the corpus slice and the tokenizers every job shares
    WORK/runs/<job id>/      each run directory (model, checkpoints, job.json: its fingerprint)

A job whose record in ``results.jsonl`` has the job's current fingerprint is skipped; an
interrupted job resumes from its last checkpoint (``checkpoint.resume=auto``), so running the same
command again continues the grid. A record or run directory of another configuration (the YAML
edited since: budgets, overrides, data) is stale: the job runs again from scratch, and the report
leaves the stale record out (:func:`job_config` says what the fingerprint covers).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import write_text_atomic
from ..data.readers import spread_subset
from ..data.samples import corpus_slice, fetch_sample
from ..data.sources import read_documents
from ..errors import ConfigError
from ..machine import cpu_model
from ..train.run_dir import in_use
from ..tokenizers import ElectraTokenizer, T5Tokenizer
from . import flops as F
from .adapters import get_adapter
from .grid import Experiment, Job, Method, expand, load_experiment, merge_overrides, pretrain_overrides
from .report import write_report

DEFAULT_DATA = {"corpus_chars": 1_000_000, "t5_vocab": 4000, "electra_vocab": 4000, "task_examples": None}
T5_SENTINELS = 100
DATA_SETTINGS = "settings.json"  # WORK/data/settings.json: what the shared data was made with
# The sample dataset (`t5electra data fetch NAME`) each sample task reads.
SAMPLE_OF_TASK = {"sentiment": "sentiment", "bbc_topic": "bbc", "bbc_headline": "bbc",
                  "translation_en_de": "translation"}


@dataclasses.dataclass
class Context:
    """Where an experiment's files go, and the shared data."""

    exp: Experiment
    out: Path
    work: Path
    device: str = "auto"

    @property
    def data_dir(self) -> Path:
        return self.work / "data"

    def tokenizer_dir(self, family: str) -> Path:
        return self.data_dir / "tokenizers" / family

    @property
    def data(self) -> dict[str, Any]:
        """The experiment's ``data:`` over the defaults."""
        return {**DEFAULT_DATA, **self.exp.data}

    def data_settings(self, family: str | None = None) -> dict[str, int]:
        """The settings the shared data (corpus slice, tokenizers) is made with; those one
        family's jobs use (``family``)."""
        keys = ("corpus_chars", f"{family}_vocab") if family else ("corpus_chars", "t5_vocab", "electra_vocab")
        return {k: int(self.data[k]) for k in keys}

    def made_data_settings(self) -> dict[str, int] | None:
        """The settings the data in ``data_dir`` was made with (None: not recorded)."""
        path = self.data_dir / DATA_SETTINGS
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def tokenizer_ready(self, family: str) -> bool:
        """Whether the family's tokenizer is trained, with the current settings."""
        made = self.made_data_settings()
        return ((self.tokenizer_dir(family) / "tokenizer_config.json").is_file() and made is not None
                and all(made.get(k) == v for k, v in self.data_settings(family).items()))

    def vocab_size(self, family: str) -> int:
        """Tokens of the family's tokenizer (the trained one if it is current, else the nominal size)."""
        if self.tokenizer_ready(family):
            return len((T5Tokenizer if family == "t5" else ElectraTokenizer).from_pretrained(self.tokenizer_dir(family)))
        data = self.data_settings()
        return data["t5_vocab"] + T5_SENTINELS if family == "t5" else data["electra_vocab"]

    def run_dir(self, job_id: str) -> Path:
        return self.work / "runs" / job_id


# --------------------------------------------------------------------------------------------
# Jobs -> run configs
# --------------------------------------------------------------------------------------------
def job_overrides(ctx: Context, job: Job) -> dict[str, Any]:
    """The job's overrides plus this run's paths and the harness's settings."""
    adapter = get_adapter(job.kind)
    o: dict[str, Any] = {"train.device": ctx.device, "train.progress": False, "train.tensorboard": False,
                         "checkpoint.resume": "auto", "checkpoint.keep_last": 1, **job.overrides,
                         "train.output_dir": str(ctx.run_dir(job.id))}
    cap = ctx.data["task_examples"]
    if not adapter.pretrain and cap:
        o["data.task_dir"] = str(trimmed_task_dir(ctx, job.task, int(cap)))
    if adapter.pretrain:
        o.update({"data.train_files": [str(ctx.data_dir / "corpus_train.jsonl")],
                  "data.validation_files": [str(ctx.data_dir / "corpus_validation.jsonl")],
                  "data.tokenizer": str(ctx.tokenizer_dir(adapter.family))})
    elif job.depends_on is not None:
        o["model.init_from"] = str(adapter.init_from(ctx.run_dir(job.depends_on)))
    else:  # fine-tuning from random weights: the tokenizer the pretrained models use
        o["data.tokenizer"] = str(ctx.tokenizer_dir(adapter.family))
    return o


def steps_for_flops(ctx: Context) -> Callable[[Method, float], int]:
    """A FLOPs budget -> the method's step count with the nearest pretraining FLOPs."""

    def steps(method: Method, budget: float) -> int:
        adapter = get_adapter(method.kind)
        overrides = merge_overrides(pretrain_overrides(ctx.exp, method), {"train.max_steps": 1})
        per_step = adapter.flops(adapter.config(overrides), ctx.vocab_size(adapter.family))
        return max(1, round(budget / per_step))

    return steps


# --------------------------------------------------------------------------------------------
# Shared data: corpus slice and tokenizers
# --------------------------------------------------------------------------------------------
def prepare_data(ctx: Context, echo: Callable[[str], None] = print) -> None:
    """The sample corpus slice (train/validation JSONL) and a tokenizer per model family, once;
    made again when the experiment's data settings have changed since (a job of the new settings
    must not train on the old slice or tokenizer)."""
    data = ctx.data_settings()
    train = ctx.data_dir / "corpus_train.jsonl"
    made = ctx.made_data_settings()
    if made is None and train.is_file():
        echo(f"data: {ctx.data_dir} does not record the settings it was made with (an earlier version made it): "
             f"taken to be the current ones, {data} (delete it to make it again)")
        made = data
    for key, paths in (("corpus_chars", [ctx.data_dir / "corpus_train.jsonl", ctx.data_dir / "corpus_validation.jsonl",
                                         ctx.data_dir / "tokenizers"]),
                       ("t5_vocab", [ctx.tokenizer_dir("t5")]), ("electra_vocab", [ctx.tokenizer_dir("electra")])):
        if made is not None and made.get(key) != data[key] and any(p.exists() for p in paths):
            echo(f"data: {key} was {made.get(key)}, now {data[key]}: made again")
            for p in paths:
                if p.is_dir():
                    shutil.rmtree(p)
                else:
                    p.unlink(missing_ok=True)
    ctx.data_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(ctx.data_dir / DATA_SETTINGS, json.dumps(data) + "\n")
    if not (ctx.data_dir / "corpus_validation.jsonl").is_file():
        echo(f"data: a {data['corpus_chars']:,}-character slice of the sample corpus -> {ctx.data_dir}")
        corpus_slice(fetch_sample("corpus"), ctx.data_dir, int(data["corpus_chars"]))

    def lines():
        for doc in read_documents(train):
            yield from (line for line in doc.split("\n") if line.strip())

    for family in sorted(ctx.exp.families):
        d = ctx.tokenizer_dir(family)
        if (d / "tokenizer_config.json").is_file():
            continue
        echo(f"data: {family} tokenizer -> {d}")
        if family == "t5":
            T5Tokenizer.train(lines(), vocab_size=int(data["t5_vocab"]), output_dir=d, input_sentence_size=200_000,
                              shuffle_input_sentence=True)
        else:
            ElectraTokenizer.train(lines(), vocab_size=int(data["electra_vocab"]), output_dir=d)


def trimmed_task_dir(ctx: Context, task: str | None, rows: int) -> Path:
    """A copy of the task's sample dataset with ``rows`` examples of each split, spread evenly over
    it (``data.task_examples``: for CI and first looks; T5 is scored by generating every test
    answer). Evenly spread, not the first rows: the sample files are ordered by label or source
    (BBC by category, the sentiment sample's first rows nearly all positive), so a prefix would
    train and test on one class."""
    if task not in SAMPLE_OF_TASK:
        raise ConfigError(f"data.task_examples works for the sample tasks ({', '.join(SAMPLE_OF_TASK)}) one at a "
                          f"time, not {task!r}: remove it to use the full data")
    src = fetch_sample(SAMPLE_OF_TASK[task])
    # '-spread': a copy made by an earlier version (the first rows) is not reused.
    dest = ctx.data_dir / "tasks" / f"{SAMPLE_OF_TASK[task]}-{rows}-spread"
    if not (dest / "SOURCE.json").is_file():
        dest.mkdir(parents=True, exist_ok=True)
        for f in sorted(src.iterdir()):
            if f.suffix in (".tsv", ".csv", ".jsonl"):
                lines = f.read_text(encoding="utf-8").splitlines(keepends=True)
                header = lines[:1] if f.suffix != ".jsonl" else []  # TSV/CSV: the header line stays
                body = lines[len(header):]
                write_text_atomic(dest / f.name, "".join(header + spread_subset(body, rows)))
        write_text_atomic(dest / "SOURCE.json", (src / "SOURCE.json").read_text(encoding="utf-8"))  # last, whole:
        # marks the copy complete
    return dest


# --------------------------------------------------------------------------------------------
# What a job's result depends on
# --------------------------------------------------------------------------------------------
def job_config(ctx: Context, job: Job, fingerprints: dict[str, str]) -> dict[str, Any]:
    """What determines the job's result, recorded with it: its kind, task and overrides (steps and
    seed included), the shared data settings its family uses, and the fingerprint of the
    pretraining job it fine-tunes (``fingerprints``: of the jobs before it). Not what only says
    where and how the run goes (paths, device, progress output), and not the recipes' defaults:
    a newer version of a recipe does not make the results stale."""
    adapter = get_adapter(job.kind)
    used: dict[str, Any] = ctx.data_settings(adapter.family)
    if not adapter.pretrain:
        used["task_examples"] = ctx.data["task_examples"]
    config = {"kind": job.kind, "task": job.task, "data": used, "overrides": job.overrides}
    if job.depends_on is not None:
        config["pretraining"] = fingerprints[job.depends_on]
    return config


def fingerprint(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def job_configs(ctx: Context, jobs: list[Job]) -> dict[str, tuple[dict[str, Any], str]]:
    """Each job's configuration and fingerprint, by id (pretraining jobs come first in ``jobs``)."""
    out: dict[str, tuple[dict[str, Any], str]] = {}
    for job in jobs:
        config = job_config(ctx, job, {i: fp for i, (_, fp) in out.items()})
        out[job.id] = (config, fingerprint(config))
    return out


def stale_reason(record: dict[str, Any], config: dict[str, Any], fp: str) -> str | None:
    """None when ``record`` is the result of the configuration ``config`` (fingerprint ``fp``),
    else what differs."""
    if record.get("fingerprint") == fp:
        return None
    old = record.get("config")
    if not isinstance(old, dict):
        return "recorded without its configuration, which cannot be checked"
    changes = []
    for key in sorted(set(old) | set(config)):
        if key == "overrides":
            a, b = _flat(old.get(key) or {}), _flat(config.get(key) or {})
            changes += [f"{k}: {_show(a.get(k))} -> {_show(b.get(k))}" for k in sorted(set(a) | set(b))
                        if a.get(k) != b.get(k)]
        elif key == "pretraining":
            changes += ["its pretraining job's configuration"] if old.get(key) != config.get(key) else []
        elif old.get(key) != config.get(key):
            changes.append(f"{key}: {_show(old.get(key))} -> {_show(config.get(key))}")
    return "configuration changed (" + "; ".join(changes or ["fingerprint"]) + ")"


def _flat(overrides: dict[str, Any]) -> dict[str, Any]:
    """``{'model.overrides': {'a': 1}}`` -> ``{'model.overrides.a': 1}``: a change names the key."""
    flat: dict[str, Any] = {}
    for key, value in overrides.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return flat


def _show(value: Any) -> str:
    return "(unset)" if value is None else json.dumps(value)


def fresh_run_dir(ctx: Context, job: Job, fp: str, echo: Callable[[str], None]) -> None:
    """Make ``job``'s run directory hold no run of another configuration (resuming one would mix
    two configurations), and mark it with ``fp``."""
    d = ctx.run_dir(job.id)
    mark = d / "job.json"
    if d.exists():
        try:
            same = json.loads(mark.read_text(encoding="utf-8")).get("fingerprint") == fp
        except (OSError, ValueError):
            same = False
        if not same:
            echo(f"  {d}: a run of another (or an unrecorded) configuration: removed, the job starts afresh")
            shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    write_text_atomic(mark, json.dumps({"id": job.id, "fingerprint": fp}) + "\n")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------
def read_results(out: Path) -> dict[str, dict[str, Any]]:
    """The records of ``OUT/results.jsonl`` by job id (the last record of an id wins). A last line
    without its newline that does not parse is a record cut short (the run was killed, or the disk
    filled, while appending it): left out, so that its job runs again."""
    return {rec["id"]: rec for rec in _records(out / "results.jsonl")}


def _records(path: Path) -> list[dict[str, Any]]:
    """The records of a results.jsonl in file order (see :func:`read_results`)."""
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.splitlines()
    records = []
    for n, line in enumerate(lines, 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                if n == len(lines) and not text.endswith("\n"):
                    break  # cut short: _append drops it
                raise ConfigError(f"{path}:{n}: not a JSON record (edit or delete the line)") from None
    return records


def _append(out: Path, record: dict[str, Any]) -> None:
    """One record at the end of results.jsonl, flushed to disk; a last line cut short by an earlier
    append (no newline) is completed when it is a record, else dropped (read_results left it out)."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    with open(path, "a+b") as f:
        f.seek(0)
        data = f.read()
        if data and not data.endswith(b"\n"):
            last = data.rsplit(b"\n", 1)[-1]
            try:
                json.loads(last)
                f.write(b"\n")
            except ValueError:  # (UnicodeDecodeError too)
                f.truncate(len(data) - len(last))
        f.write((json.dumps(record) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def copy_logs(run_dir: Path, dest: Path) -> None:
    """The small, readable files of a run (not its weights) -> ``dest`` (emptied first: no file of
    an earlier run of the job stays beside them)."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.yaml", "metrics.jsonl", "results.json"):
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, dest / name)
    if (run_dir / "plots").is_dir():
        shutil.copytree(run_dir / "plots", dest / "plots", dirs_exist_ok=True)


def stamp_machine(out: Path, records: dict[str, dict[str, Any]], machine: dict[str, Any] | None) -> None:
    """Records written before each named its machine get ``machine`` (run.json's, of the run that
    made them), in ``records`` and in results.jsonl, before a new run may change run.json's."""
    unstamped = [r for r in records.values() if "machine" not in r]
    if not unstamped or not machine:
        return
    for r in unstamped:
        r["machine"] = machine
    path = out / "results.jsonl"
    lines = _records(path)
    # rewritten whole (a kill half-way through an in-place rewrite lost every record)
    write_text_atomic(path, "".join(json.dumps({"machine": machine, **r}) + "\n" for r in lines))


def machine() -> dict[str, Any]:
    """The CPU model, cores, accelerator and library versions the results came from."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def run_job(ctx: Context, job: Job, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Train one job and return its record."""
    adapter = get_adapter(job.kind)
    cfg = adapter.config(job_overrides(ctx, job))
    t0 = time.perf_counter()
    run_dir = adapter.train(cfg)
    wall = time.perf_counter() - t0
    vocab = ctx.vocab_size(adapter.family)
    own = adapter.flops(cfg, vocab, model_dir=None if adapter.pretrain else run_dir / "model")
    pretrain_flops = own if adapter.pretrain else (records[job.depends_on]["flops"] if job.depends_on else 0)
    copy_logs(run_dir, ctx.out / "logs" / job.id)
    return {"id": job.id, "kind": job.kind, "method": job.method, "label": ctx.exp.methods[job.method].label,
            "seed": job.seed, "budget": job.budget, "task": job.task, "steps": job.steps, "depends_on": job.depends_on,
            "flops": own, "flops_exact": adapter.pretrain, "pretrain_flops": pretrain_flops,
            "wall_s": round(wall, 2), "metrics": adapter.metrics(run_dir), "logs": f"logs/{job.id}",
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_experiment(name_or_path: str | os.PathLike, out: str | os.PathLike | None = None,
                   work: str | os.PathLike | None = None, *, dry_run: bool = False, report_only: bool = False,
                   device: str = "auto", command: str | None = None,
                   echo: Callable[[str], None] = print) -> list[Job]:
    """Run (or, with ``dry_run``, list) every job of the experiment, then write the report.
    ``report_only``: run nothing, rewrite the report from the finished jobs (keeping the command
    and machine they ran on). Data is prepared only when a job is to run. Returns the jobs."""
    exp = load_experiment(name_or_path)
    ctx = Context(exp, Path(out or f"docs/experiments/{exp.name}"), Path(work or f"runs/experiments/{exp.name}"),
                  device)
    jobs = expand(exp, steps_for_flops(ctx) if exp.budget_unit == "flops" else None)
    configs = job_configs(ctx, jobs)
    if dry_run:
        records = read_results(ctx.out)
        for line in plan_lines(ctx, jobs, records, stale_records(jobs, records, configs)):
            echo(line)
        return jobs
    # one run of the grid at a time (two appended to one results.jsonl and trained a job twice); held in
    # WORK, which is not published as OUT is
    with in_use(ctx.work, "t5electra experiment"):
        _run_jobs(ctx, exp, jobs, configs, report_only, command or f"t5electra experiment {name_or_path}", echo)
    return jobs


def stale_records(jobs: list[Job], records: dict[str, dict[str, Any]],
                  configs: dict[str, tuple[dict[str, Any], str]]) -> dict[str, str]:
    """The jobs whose record is of another configuration, with what differs."""
    return {j.id: reason for j in jobs if j.id in records
            and (reason := stale_reason(records[j.id], *configs[j.id])) is not None}


def _run_jobs(ctx: Context, exp: Experiment, jobs: list[Job], configs: dict[str, tuple[dict[str, Any], str]],
              report_only: bool, command: str, echo: Callable[[str], None]) -> None:
    """run_experiment's work, ``ctx.out`` held: the jobs not done, then the report."""
    records = read_results(ctx.out)
    stale = stale_records(jobs, records, configs)
    meta_path = ctx.out / "run.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    stamp_machine(ctx.out, records, meta.get("machine"))
    this_machine = None
    for i, job in enumerate([] if report_only else jobs, 1):
        if job.id in records and job.id not in stale:
            echo(f"[{i}/{len(jobs)}] {job.id}: done ({records[job.id]['wall_s']:.0f} s), skipped")
            continue
        if this_machine is None:  # the first job to run: a finished grid needs no data and no new provenance
            prepare_data(ctx, echo)
            this_machine = machine()
        if job.id in stale:
            echo(f"[{i}/{len(jobs)}] {job.id}: its record is stale, {stale.pop(job.id)}: running it again")
        echo(f"[{i}/{len(jobs)}] {job.id}: {job.steps} steps ...")
        config, fp = configs[job.id]
        fresh_run_dir(ctx, job, fp, echo)
        record = {**run_job(ctx, job, records), "fingerprint": fp, "config": config, "machine": this_machine}
        records[job.id] = record
        _append(ctx.out, record)
        echo(f"[{i}/{len(jobs)}] {job.id}: {record['wall_s']:.0f} s, {F.format_flops(record['flops'])}")

    # run.json keeps the command and machine of the last run that trained jobs: a rerun that finds
    # every job done, or --report-only, must not claim the results for this machine.
    if this_machine is not None:
        meta.update(command=command, machine=this_machine, experiment_file=exp.path)
    meta.update(seeds=exp.seeds, jobs_total=len(jobs))
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(meta_path, json.dumps(meta, indent=2) + "\n")
    path = write_report(exp, [records[j.id] for j in jobs if j.id in records and j.id not in stale], ctx.out, meta,
                        stale=stale, echo=echo)
    echo(f"report: {path}")


def plan_lines(ctx: Context, jobs: list[Job], records: dict[str, dict[str, Any]], stale: dict[str, str]) -> list[str]:
    """The dry-run listing: each job, its steps, its pretraining FLOPs and whether it is done
    (or stale: done with another configuration, to run again)."""
    lines = [f"experiment {ctx.exp.name}: {len(jobs)} jobs ({ctx.exp.path}); report -> {ctx.out}, runs -> {ctx.work}"]
    total = 0
    for job in jobs:
        adapter = get_adapter(job.kind)
        status = "stale" if job.id in stale else "done" if job.id in records else "todo"
        if adapter.pretrain:
            fl = adapter.flops(adapter.config(job_overrides(ctx, job)), ctx.vocab_size(adapter.family))
            total += fl
            what = F.format_flops(fl)
        else:
            what = f"after {job.depends_on}" if job.depends_on else "no pretraining"
        lines.append(f"  {status:<5} {job.id:<48} {job.steps:>7} steps  {what}")
    lines.append(f"pretraining compute: {F.format_flops(total)}")
    lines += [f"stale: {job_id}: {reason}" for job_id, reason in stale.items()]
    return lines
