"""Atomic, resumable training checkpoints.

A run directory holds::

    RUN/config.yaml                resolved run config
    RUN/metrics.jsonl              metrics, one JSON object per line (train/logging.py)
    RUN/checkpoints/step-00000500/ one checkpoint:
        config.json, model.safetensors   the model in the Hugging Face layout (save_pretrained);
                                         a plain nn.Module: model.safetensors of its state_dict;
                                         a LoRA model: adapter_config.json + adapter_model.safetensors
        training_state.pt          optimizer, scheduler, step, data cursor, RNG states, extra
                                   (plain tensors and containers: loads with weights_only=True)
        meta.json                  step, time, metrics, and the run config for the resume check
    RUN/checkpoints/latest         text: the name of the newest complete checkpoint
    RUN/checkpoints/best           JSON: the best checkpoint by the eval metric

Writes are atomic: everything goes to ``checkpoints/.tmp-step-...``, each file is fsynced, then the
directory is renamed into place and the ``latest`` pointer replaced (temporary file + rename). A
run killed at any point, or a full disk, leaves the previous checkpoint complete and ``latest``
pointing at it; leftover temporary directories are removed by the next save. The last
``keep_last`` step checkpoints are kept, plus the best one.

A *sharded* checkpoint (``save(..., sharded=True)``, the FSDP runs) holds the model and optimizer
as ``sharded/`` (torch.distributed.checkpoint, one file per rank, written by every rank into the
same temporary directory) plus the model's config files instead of ``model.safetensors``; rank 0
writes the rest and renames the directory, so it is as atomic as the others (train/sharded.py).

Resuming (:meth:`CheckpointManager.load`) refuses a checkpoint written under a different run config
and names the fields that differ; the batch is compared as the global batch (per-process batch x
accumulation x processes), so a run may resume on another number of processes. It restores model,
optimizer, scheduler, the data cursor and the RNG states of python, numpy and torch (and CUDA), so
that the resumed run continues exactly; either format loads into a plain, DDP or FSDP model.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from torch import nn

from ..core.atomic import fsync_dir, write_text_atomic, writing_dir
from ..core.typed_config import suggest
from ..checkpoint.io import load_state_dict, save_state_dict, write_error
from ..errors import (CheckpointError, CheckpointNotFoundError, ConfigError, OtherDataError, WeightsMismatchError)
from .config import (RESUME_ADJUSTABLE, RESUME_SAFE, diff_configs, format_diff, metric_direction, saved_workdir,
                     resolve_greater_is_better, run_inputs)
from .data_files import changed_files, run_data_fingerprint
from .nan_guard import check_finite, nonfinite_parameters, nonfinite_weights_error  # noqa: F401 (checkpointing.check_finite)
from .run_dir import LOCK_FILE, RUN_ARTIFACTS, lock_run_dir, prepare_run_dir, release_run_dir  # noqa: F401 (re-exported)
from .sharded import (SHARDED_DIR, gather_model, has_sharded_state, is_sharded, load_full, load_sharded,
                      save_sharded, sharded_damage, write_model_configs)

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "training_state.pt"
KERNEL_FLAGS = ("fused", "foreach")  # which kernel a torch optimizer runs: the run's config, not the checkpoint's
META_FILE = "meta.json"


# --------------------------------------------------------------------------------------------
# RNG states as plain tensors (weights_only-loadable)
# --------------------------------------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """The RNG states of python, numpy, torch (CPU) and every CUDA device."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "python": {"version": py_version, "internal": torch.tensor(py_internal, dtype=torch.int64),
                   "gauss": py_gauss},
        "numpy": {"key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def reseed_from(state: dict[str, Any], rank: int) -> None:
    """Seed python, numpy and torch from a saved RNG state and ``rank`` (resuming on another number
    of processes: a rank without its own saved state still gets a reproducible stream of its own)."""
    set_rng_state(state)
    seed = int(torch.randint(0, 2**31 - 1, ()).item()) + 7919 * int(rank)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()), py["gauss"]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
def _fsync_tree(root: Path) -> None:
    """fsync every file under ``root`` and the directories themselves."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(dirpath))


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


ELECTRA_PARTS = ("generator", "discriminator")  # an ELECTRA pretraining output's model directories


def holds_model(d: Path | None) -> bool:
    """A model directory: config.json, or an ELECTRA pretraining output's generator/ + discriminator/."""
    return d is not None and ((d / "config.json").is_file() or _has_electra_parts(d))


def _has_electra_parts(d: Path) -> bool:
    return all((d / part / "config.json").is_file() for part in ELECTRA_PARTS)


def follow_pointer(path: str | os.PathLike) -> Path:
    """``RUN/checkpoints/latest`` or ``.../best`` (the pointer files, given where a directory is
    expected: they sit beside the checkpoints) as the checkpoint directory it names; any other path
    as it is. Every command that takes a checkpoint or run directory reads paths through this."""
    p = Path(path).expanduser()
    if p.name in ("latest", "best") and p.parent.name == "checkpoints" and p.is_file():
        manager = CheckpointManager(p.parent.parent)
        if p.name == "latest":
            return manager.latest() or p
        try:
            best = manager.best()
        except ValueError:  # not JSON: not our pointer
            return p
        return manager.dir / best["name"] if isinstance(best, dict) and "name" in best else p
    return p


def run_model_dir(path: str | os.PathLike) -> Path:
    """``model.init_from`` as users give it: a model directory (:func:`holds_model`), or a run
    directory, meaning its model/ or else its latest checkpoint. Returns ``path`` unchanged when none
    of them holds a model (loading then says why)."""
    p = follow_pointer(path)
    if holds_model(p) or not p.is_dir():
        return p
    if holds_model(p / "model"):
        return p / "model"
    latest = CheckpointManager(p).latest() if (p / "checkpoints").is_dir() else None
    return latest if holds_model(latest) else p


def mlm_generator(d: Path | None) -> Path | None:
    """An MLM pretraining output (``--objective mlm``: ``generator/`` alone) means its generator, a
    complete ``ElectraForMaskedLM`` directory; None for anything else."""
    if d is None or (d / "config.json").is_file() or (d / "discriminator").exists():
        return None
    return d / "generator" if (d / "generator" / "config.json").is_file() else None


def is_electra_pretraining_output(path: Path) -> bool:
    return not (path / "config.json").is_file() and _has_electra_parts(path)


def save_model(model: nn.Module, directory: Path) -> None:
    """HF layout through ``save_pretrained`` when the model has it, else a safetensors state_dict."""
    model = unwrap_model(model)
    if hasattr(model, "save_pretrained"):
        model.save_pretrained(directory)
    else:
        save_state_dict(model.state_dict(), directory)


def save_final_model(model: nn.Module, directory: Path, *extras: Callable[[Path], Any]) -> Path:
    """A run's final ``RUN/model`` (or ``RUN/adapter``): :func:`save_model`, then each of ``extras``
    called with the directory (the tokenizer's ``save_pretrained``), all written under a temporary
    name and renamed into place (core.atomic.writing_dir). A save that is killed or fails half-way
    leaves no ``RUN/model`` that looks finished (the quickstart takes its config.json for a finished
    stage, evaluate and fine-tuning load it) and none of an earlier model's files among the new ones."""
    tmp = None
    try:
        with writing_dir(directory) as tmp:
            save_model(model, tmp)
            for extra in extras:
                extra(tmp)
    except CheckpointError as e:  # (a full disk) named by the directory, not its temporary name
        if tmp is None or str(tmp) not in str(e):
            raise
        raise type(e)(str(e).replace(str(tmp), str(directory))) from None
    return Path(directory)


def load_model_weights(model: nn.Module, directory: Path) -> None:
    """Load the weights written by :func:`save_model` into ``model`` (same class and config)."""
    model = unwrap_model(model)
    if hasattr(model, "load_adapter"):  # LoRA (t5electra/lora/): its checkpoints hold the adapters only
        model.load_adapter(directory)
        return
    # A model made of sub-models that its save_pretrained wrote to sub-directories named after them
    # (ElectraPretrainer: generator/ + discriminator/): load each, then re-tie what they share.
    parts = [(n, m) for n, m in model.named_children() if hasattr(m, "load_hf_state_dict")]
    if parts and all((Path(directory) / n).is_dir() for n, _ in parts):
        for name, part in parts:
            load_model_weights(part, Path(directory) / name)
        if hasattr(model, "tie_weights"):
            model.tie_weights()
        return
    sd, sources = load_state_dict(directory)
    if hasattr(model, "load_hf_state_dict"):
        model.load_hf_state_dict(sd, sources)
        return
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise WeightsMismatchError(f"{directory}: checkpoint does not match {type(model).__name__}: "
                                   f"missing {missing[:5]}, unexpected {unexpected[:5]}")


# --------------------------------------------------------------------------------------------
# The manager
# --------------------------------------------------------------------------------------------
class CheckpointManager:
    """Saves and restores checkpoints of one run directory (see the module docstring).

    ``config`` is the run config as a nested dict (``RunConfig.to_dict()``); it is stored with each
    checkpoint and compared on :meth:`load`, ignoring the keys in ``resume_safe``. Only the main
    process should call :meth:`save`; every process calls :meth:`load`.
    """

    def __init__(self, run_dir: str | os.PathLike, config: dict[str, Any] | None = None, keep_last: int = 3,
                 keep_best: bool = True, greater_is_better: bool | None = None, resume_safe=RESUME_SAFE,
                 world_size: int = 1, data_files: dict[str, Any] | None = None):
        self.run_dir = Path(run_dir)
        # the fingerprint of the files the run reads (train/data_files.py): recorded in every checkpoint,
        # compared on resume; None: not checked
        self.data_files = data_files
        self._checked: set[Path] = set()  # checkpoints check_config accepted
        self.world_size = int(world_size)  # processes of this run: the global batch of the resume check
        self.dir = self.run_dir / "checkpoints"
        self.config = config or {}
        self.keep_last = keep_last
        self.keep_best = keep_best
        self.greater_is_better = greater_is_better  # None: from each metric's name (config.metric_direction)
        self.metric_name: str | None = None  # the metric this run ranks by, once an evaluation named it
        self.resume_safe = resume_safe
        # Test hook: called with the temporary directory after the model is written, before the
        # training state (lets tests crash a save half-way).
        self.on_partial_write: Callable[[Path], None] | None = None

    @classmethod
    def for_run(cls, cfg: Any, run_dir: Path, world_size: int) -> CheckpointManager:
        """The manager a recipe's run uses: its config (``cfg``, a RunConfig) to compare on resume, its
        keep rules, and the fingerprint of the files it reads (train/data_files.py)."""
        return cls(run_dir, cfg.to_dict(), keep_last=cfg.checkpoint.keep_last, keep_best=cfg.checkpoint.keep_best,
                   greater_is_better=resolve_greater_is_better(cfg.eval.metric, cfg.eval.greater_is_better),
                   world_size=world_size,
                   data_files=run_data_fingerprint(run_inputs(cfg), run_dir))

    def resolve_checked(self, resume: str | os.PathLike | None) -> Path | None:
        """:meth:`resolve`, and the checkpoint's config and data files checked (:meth:`check_config`):
        what a recipe calls before it tokenises any data, so that a refused resume costs nothing."""
        found = self.resolve(resume)
        if found is not None:
            self.check_config(found)
        return found

    # -- discovery ----------------------------------------------------------------------------
    def checkpoints(self) -> list[Path]:
        """Complete step checkpoints, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.dir.iterdir()
                 if p.is_dir() and (m := STEP_DIR.match(p.name)) and (p / STATE_FILE).is_file()]
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The checkpoint named by ``latest``; the newest complete one if the pointer is stale."""
        pointer = self.dir / "latest"
        if pointer.is_file():
            p = self.dir / pointer.read_text(encoding="utf-8").strip()
            if (p / STATE_FILE).is_file() and (p / META_FILE).is_file():
                return p
        found = self.checkpoints()
        return found[-1] if found else None

    def best(self) -> dict[str, Any] | None:
        """``{"name", "step", "metric", "value", "greater_is_better"}`` of the best checkpoint, if any."""
        p = self.dir / "best"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None

    # -- save -----------------------------------------------------------------------------------
    def save(self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
             scheduler: Any = None, data_state: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
             metrics: dict[str, float] | None = None, metric_name: str | None = None,
             rng_states: list[dict[str, Any]] | None = None,
             save_extra: Callable[[Path], None] | None = None, sharded: bool = False, rank: int = 0,
             finite_checked: bool = False) -> Path | None:
        """Write checkpoint ``step`` atomically and prune old ones. ``metrics[metric_name]`` (if
        given) competes for the ``best`` pointer. ``rng_states``: one per rank (from
        ``distributed.gather_rng_states``); default: this process's. ``save_extra(directory)`` writes
        more files into the checkpoint (e.g. ``tokenizer.save_pretrained``, so that a checkpoint is a
        complete model directory). Returns the checkpoint directory.

        ``sharded``: every rank calls this (collective); each writes its shard of model and optimizer,
        rank 0 (``rank``) the rest; rank 0 gets the directory, the others None.

        Weights that hold NaN or infinity are never saved: :class:`TrainingError` naming the latest
        checkpoint (the last good one), nothing written (``finite_checked``: the caller checked them on
        every rank already, train/saving.save_checkpoint)."""
        bad = [] if finite_checked else nonfinite_parameters(model)
        if not finite_checked and sharded and torch.distributed.is_available() and torch.distributed.is_initialized():
            every: list[Any] = [None] * torch.distributed.get_world_size()  # each rank checked its shards
            torch.distributed.all_gather_object(every, bad)
            bad = sorted({n for names in every for n in names})
        if bad:
            raise nonfinite_weights_error(step, bad, self.latest())
        name = f"step-{step:08d}"
        final = self.dir / name
        tmp = self.dir / (f".tmp-{name}-sharded" if sharded else f".tmp-{name}-{os.getpid()}")
        if sharded:
            if rank == 0:
                self.dir.mkdir(parents=True, exist_ok=True)
                self._remove_temporaries()
                tmp.mkdir()
            _barrier()  # the directory exists before any rank writes into it
            try:
                save_sharded(model, optimizer, tmp)
            except BaseException:
                if rank == 0:
                    shutil.rmtree(tmp, ignore_errors=True)
                raise
            if rank != 0:
                return None
        else:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._remove_temporaries()
        try:
            if sharded:
                write_model_configs(model, tmp)
            else:
                tmp.mkdir()
                save_model(model, tmp)
            if save_extra is not None:
                save_extra(tmp)
            if self.on_partial_write is not None:
                self.on_partial_write(tmp)
            state = {
                "step": int(step),
                "optimizer": optimizer.state_dict() if optimizer is not None and not sharded else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "data": data_state,
                "rng": rng_states if rng_states is not None else [rng_state()],
                "extra": extra or {},
            }
            with open(tmp / STATE_FILE, "wb") as f:  # through a Python file: a full disk is OSError(ENOSPC)
                torch.save(state, f)
            meta = {"step": int(step), "time": time.time(), "metrics": metrics or {}, "config": self.config,
                    "world_size": self.world_size, "sharded": sharded, "workdir": os.getcwd(),
                    "weights_finite": True}  # checked above: damage() need not read them again
            if self.data_files is not None:
                meta["data_files"] = self.data_files
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n",
                                         encoding="utf-8")
            _fsync_tree(tmp)
            if final.exists():  # re-saving a step (e.g. the final save right after a periodic one)
                shutil.rmtree(final)
            os.rename(tmp, final)
            fsync_dir(self.dir)
            write_text_atomic(self.dir / "latest", name + "\n")
        except (OSError, SafetensorError) as e:  # safetensors wraps its I/O errors
            shutil.rmtree(tmp, ignore_errors=True)
            prev = self.latest()
            raise CheckpointError(f"could not write checkpoint {final} ({write_error(e, self.dir)}); nothing was "
                                  f"half-written: previous checkpoint "
                                  f"{'intact: ' + str(prev) if prev else 'none'}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._rank(name, step, metrics, metric_name)
        return final

    def record_metrics(self, step: int, metrics: dict[str, float], metric_name: str | None = None) -> Path | None:
        """Add an evaluation's ``metrics`` to checkpoint ``step``, saved before it (so that a crash in the
        evaluation loses no training): into its meta.json, and ``metrics[metric_name]`` competes for
        the ``best`` pointer. Main process only; None (nothing recorded) when ``step`` has no checkpoint."""
        ckpt = self.dir / f"step-{step:08d}"
        if not metrics or not (ckpt / META_FILE).is_file():
            return None
        meta = _read_meta(ckpt)
        meta["metrics"] = {**meta.get("metrics", {}), **metrics}
        write_text_atomic(ckpt / META_FILE, json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
        self._rank(ckpt.name, step, metrics, metric_name)
        return ckpt

    def _rank(self, name: str, step: int, metrics: dict[str, float] | None, metric_name: str | None) -> None:
        """The best pointer and pruning after checkpoint ``name`` was written or got its metrics."""
        if metric_name:
            self.metric_name = metric_name
        if metrics and metric_name and metric_name in metrics:
            self._update_best(name, step, metric_name, float(metrics[metric_name]))
        self._prune()
        if metrics and metric_name and metric_name not in metrics:  # saved first: nothing is lost
            raise ConfigError(f"eval.metric={metric_name!r} is not one of the evaluation's metrics "
                              f"({', '.join(sorted(metrics))}){suggest(metric_name, metrics)}, so no checkpoint "
                              f"can be ranked best; step {step} is saved: set eval.metric and resume "
                              f"(--checkpoint.resume=auto)")

    def _higher_is_better(self, metric: str) -> bool:
        """A metric's direction by its name; eval.greater_is_better for a metric of the user's own (a
        known metric's contradicting value was refused with the config: train/config.py)."""
        known = metric_direction(metric)
        return known if known is not None else bool(self.greater_is_better)

    def _update_best(self, name: str, step: int, metric: str, value: float) -> None:
        if not self.keep_best or math.isnan(value):
            return
        cur = self.best()
        higher = self._higher_is_better(metric)
        if cur is not None and (cur.get("metric"), cur.get("greater_is_better")) != (metric, higher):
            self._write_best(self._reranked(cur, metric, higher))  # the new checkpoint is on disk: among them
            return
        if cur is None or (value > cur["value"] if higher else value < cur["value"]):
            self._write_best({"name": name, "step": step, "metric": metric, "value": value, "greater_is_better": higher})

    def _write_best(self, record: dict[str, Any] | None) -> None:
        if record is not None:
            write_text_atomic(self.dir / "best", json.dumps(record) + "\n")

    def _reranked(self, cur: dict[str, Any], metric: str, higher: bool) -> dict[str, Any] | None:
        """The best of the checkpoints on disk by ``metric`` (their meta.json metrics), ``higher`` or lower
        better: ``best`` was chosen by another metric or direction (eval.metric or eval.greater_is_better
        changed on resume; or a record written before the direction was recorded). Warns when that changes
        the choice: the evaluations of checkpoints already pruned cannot be chosen."""
        scored = []
        for ckpt in self.checkpoints():
            try:
                value = _read_meta(ckpt).get("metrics", {}).get(metric)
            except CheckpointError:
                continue
            if isinstance(value, (int, float)) and not math.isnan(value):
                scored.append((float(value), _step_of(ckpt), ckpt.name))
        if not scored:
            return None
        value, step, name = min(scored, key=lambda t: (-t[0] if higher else t[0], t[1]))  # ties: the earliest
        record = {"name": name, "step": step, "metric": metric, "value": value, "greater_is_better": higher}
        was = cur.get("greater_is_better")
        if name != cur.get("name") or cur.get("metric") != metric or (was is not None and was != higher):
            how = lambda m, h: f"{m} ({'unknown direction' if h is None else 'higher' if h else 'lower'} is better)"  # noqa: E731
            warnings.warn(f"{self.dir / 'best'} was chosen by {how(cur.get('metric'), was)}; this run ranks by "
                          f"{how(metric, higher)}: re-ranked among the {len(scored)} evaluated checkpoint(s) kept, "
                          f"best is now {name} ({metric} {value:g}; evaluations whose checkpoints were pruned cannot "
                          f"be chosen)", stacklevel=3)
        return record

    def _prune(self) -> None:
        keep = {p.name for p in self.checkpoints()[-self.keep_last:]}
        best = self.best()
        if best:
            keep.add(best["name"])
        latest = self.latest()
        if latest is not None:
            keep.add(latest.name)
        for p in self.checkpoints():
            if p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)

    def _remove_temporaries(self) -> None:
        for p in self.dir.glob(".tmp-step-*"):
            shutil.rmtree(p, ignore_errors=True)

    # -- load -----------------------------------------------------------------------------------
    def resolve(self, resume: str | os.PathLike | None) -> Path | None:
        """The checkpoint to resume from: ``'auto'`` (this run's latest, or None), a run directory
        (its latest) or a checkpoint directory.

        For ``'auto'`` and a run directory, a latest checkpoint whose files are damaged (truncated,
        empty, unreadable) is skipped with a warning for the newest older one that is intact."""
        if resume is None:
            return None
        if str(resume) == "auto":
            return self._newest_intact()
        p = follow_pointer(resume)
        if (p / STATE_FILE).is_file():
            return p
        if (p / "checkpoints").is_dir():
            found = CheckpointManager(p)._newest_intact()
            if found is not None:
                return found
        raise CheckpointNotFoundError(f"nothing to resume from at {str(p)!r}: expected a run directory with "
                                      f"checkpoints/ or a checkpoint directory with {STATE_FILE}")

    def _newest_intact(self) -> Path | None:
        latest = self.latest()
        if latest is None:
            return None
        older = [p for p in reversed(self.checkpoints()) if p != latest and _step_of(p) < _step_of(latest)]
        damaged = []
        for ckpt in [latest, *older]:
            problem = damage(ckpt)
            if problem is None:
                if damaged:
                    warnings.warn(f"resuming from {ckpt}, the newest intact checkpoint: skipped " +
                                  "; ".join(damaged), stacklevel=3)
                return ckpt
            damaged.append(f"{ckpt.name} ({problem})")
        raise CheckpointError(f"no intact checkpoint to resume from in {self.dir}: " + "; ".join(damaged))

    def check_config(self, ckpt: Path) -> None:
        """Refuse a checkpoint written under a different config, naming the differing fields (once per
        checkpoint: a recipe checks before it tokenises its data, ``load`` again)."""
        if Path(ckpt) in self._checked:
            return
        meta = _read_meta(ckpt)
        saved = meta.get("config") or {}
        if not self.config or not saved:
            return
        saved_ws = meta.get("world_size")
        batch_keys = {"train.batch_size", "train.grad_accum_steps"}
        # written before the global batch was recorded: the per-process batch must match, as then
        diff = diff_configs(saved, self.config, ignore=self.resume_safe - batch_keys if saved_ws is None
                            else self.resume_safe, workdirs=(meta.get("workdir") or self._recorded_workdir() or os.getcwd(), os.getcwd()))
        optim = self.config.get("optim") or {}
        if optim.get("name") == "adafactor" and optim.get("adafactor_relative_step"):
            # Adafactor's relative step sets its own lr (min(1e-2, 1/sqrt(t))): optim.lr changes nothing,
            # null included (what build_optimizer's warning advises: not 'a different config')
            moot = [d for d in diff if d[0] == "optim.lr" and d[2] is not None]
            diff = [d for d in diff if d[0] != "optim.lr"]
        else:
            moot = []
        adjusted = [(k, a, b) for k, a, b in diff if k in RESUME_ADJUSTABLE and
                    (k != "optim.lr" or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0))]
        diff = [d for d in diff if d not in adjusted]
        if moot:
            warnings.warn(f"resuming from {ckpt} with another optim.lr ({format_diff(moot, 'checkpoint', 'now')}) "
                          f"changes nothing: with optim.adafactor_relative_step=true Adafactor sets its own "
                          f"learning rate (min(1e-2, 1/sqrt(step))); turn it off and set optim.lr to choose one",
                          stacklevel=3)
        if saved_ws is not None:
            self._check_global_batch(ckpt, saved.get("train", {}), int(saved_ws))
        if diff:
            raise CheckpointError(f"cannot resume from {ckpt}: it was written with a different config "
                                  f"({format_diff(diff, 'checkpoint', 'now')}). Use the same config, "
                                  f"or start a new run directory.")
        self._check_data_files(ckpt, meta.get("data_files"))
        if adjusted:
            warnings.warn(f"resuming from {ckpt} with {format_diff(adjusted, 'checkpoint', 'now')}: the run goes on "
                          f"from step {meta.get('step')} with the new value(s) (a new optim.lr is the schedule's new "
                          f"peak), so it is no longer the run an uninterrupted one would have made", stacklevel=3)
        self._checked.add(Path(ckpt))

    def _recorded_workdir(self) -> str | None:
        """Where a checkpoint without ``workdir`` (written before it was recorded) was trained from: the
        first line of the run's config.yaml says (train/config.saved_workdir)."""
        try:
            found = saved_workdir((self.run_dir / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return None
        return str(found) if found else None

    def _rescale_lr(self, ckpt: Path, optimizer: torch.optim.Optimizer | None, scheduler: Any) -> None:
        """A resume with another ``optim.lr`` (RESUME_ADJUSTABLE): the loaded optimizer and scheduler
        states hold the old peak (each group's lr and initial_lr, the scheduler's base_lrs); scaled by
        new / old, every group continues at its schedule times the new peak (layer-wise scales kept)."""
        saved = ((_read_meta(ckpt).get("config") or {}).get("optim") or {}).get("lr")
        now = (self.config.get("optim") or {}).get("lr")
        if optimizer is None or not all(isinstance(v, (int, float)) and v > 0 for v in (saved, now)) or saved == now:
            return
        ratio = now / saved
        for group in optimizer.param_groups:
            group["lr"] = group["lr"] * ratio
            if "initial_lr" in group:
                group["initial_lr"] = group["initial_lr"] * ratio
        if scheduler is not None and hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [lr * ratio for lr in scheduler.base_lrs]
            scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]

    def _check_data_files(self, ckpt: Path, saved: Any) -> None:
        """Refuse to resume when the data files changed since ``ckpt`` (train/data_files.py), unless
        ``checkpoint.allow_data_change`` (then a warning)."""
        if self.data_files is None or not isinstance(saved, dict):
            return
        changes = changed_files(saved, self.data_files)
        if not changes:
            return
        what = f"the data changed since {ckpt.name}: " + "; ".join(changes[:4]) + (
            f"; and {len(changes) - 4} more" if len(changes) > 4 else "")
        if self.config.get("checkpoint", {}).get("allow_data_change"):
            warnings.warn(f"{what}: resuming anyway (checkpoint.allow_data_change=true); the examples from here on "
                          f"are not the ones the uninterrupted run would have read", stacklevel=3)
            return
        raise CheckpointError(f"cannot resume from {ckpt}: {what}. Its data cursor would point into other data. "
                              f"Restore the files, start a new run directory, or resume on the new data with "
                              f"--checkpoint.allow_data_change=true")

    def _check_global_batch(self, ckpt: Path, saved_train: dict[str, Any], saved_ws: int) -> None:
        """Batch size x accumulation x processes must be the checkpoint's (the data order and the
        update are defined per global batch); the per-process split may differ."""
        now = self.config.get("train", {})
        if not saved_train or not now:
            return
        sb, sa = int(saved_train.get("batch_size", 0)), int(saved_train.get("grad_accum_steps", 1))
        nb, na = int(now.get("batch_size", 0)), int(now.get("grad_accum_steps", 1))
        saved_global, now_global = sb * sa * saved_ws, nb * na * self.world_size
        if saved_global == now_global:
            return
        hint = (f"--train.batch_size={saved_global // (na * self.world_size)} keeps it"
                if saved_global % (na * self.world_size) == 0 else
                f"{self.world_size} process(es) x {na} accumulation step(s) do not divide it: use a number of "
                f"processes and train.grad_accum_steps whose product divides {saved_global}")
        raise CheckpointError(f"cannot resume from {ckpt}: its global batch is {saved_global} examples ({sb} per "
                              f"process x {sa} accumulation x {saved_ws} process(es)), this run's is {now_global} "
                              f"({nb} x {na} x {self.world_size}); {hint}")

    def best_model(self, model: nn.Module, rank: int = 0) -> nn.Module | None:
        """The model to export and score at the end of a run: ``model`` with the weights of the best
        checkpoint (its last weights if there is none), on rank 0; None on the other ranks. Every rank
        calls it: each loads the best checkpoint (sharded or not, as at resume); a sharded (FSDP)
        model's full weights are then gathered into a plain CPU copy on rank 0 (train/sharded.py)."""
        best = self.best()
        metric = self.metric_name or (best or {}).get("metric")  # this run's ranking metric, once named
        if (best is not None and self.keep_best
                and (best["metric"], best.get("greater_is_better")) != (metric, self._higher_is_better(metric))):
            # eval.metric / eval.greater_is_better changed on a resume that evaluated nothing more: ranked
            # again (the same on every rank, from the files), written by rank 0
            best = self._reranked(best, metric, self._higher_is_better(metric)) or best
            if rank == 0:
                self._write_best(best)
        path = self.dir / best["name"] if best is not None and (self.dir / best["name"]).is_dir() else None
        if path is not None:
            load_any_weights(model, path)
        if is_sharded(model):
            return gather_model(model, rank)
        return model if rank == 0 else None

    def load(self, ckpt: str | os.PathLike, model: nn.Module, optimizer: torch.optim.Optimizer | None = None,
             scheduler: Any = None, restore_rng: bool = True, rank: int = 0) -> dict[str, Any]:
        """Restore everything from ``ckpt`` (the RNG state of ``rank``); returns
        ``{"step", "data", "extra", "metrics"}``. ``model`` may be plain or sharded (FSDP; then every
        rank calls this), the checkpoint sharded or not."""
        ckpt, given_optimizer = Path(ckpt), optimizer
        if not (ckpt / STATE_FILE).is_file():
            raise CheckpointNotFoundError(f"{ckpt} is not a training checkpoint (no {STATE_FILE})")
        self.check_config(ckpt)
        # the kernel this run chose (optim.fused: torch's fused AdamW, the foreach or the per-parameter
        # loop): torch's load_state_dict copies the saved param groups' flags over it
        kernels = [{k: g[k] for k in KERNEL_FLAGS if k in g} for g in optimizer.param_groups] if optimizer else []
        try:
            state = torch.load(ckpt / STATE_FILE, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - unpickling errors come in many classes
            raise CheckpointError(f"{ckpt / STATE_FILE}: cannot read training state ({e})") from None
        if has_sharded_state(ckpt) or is_sharded(model):
            if optimizer is not None and not has_sharded_state(ckpt) and state["optimizer"] is None:
                raise CheckpointError(f"{ckpt}: no optimizer state saved")
            load_any_weights(model, ckpt, optimizer, state["optimizer"])
            optimizer = None  # restored with the model
        else:
            load_model_weights(model, ckpt)
        if optimizer is not None:
            if state["optimizer"] is None:
                raise CheckpointError(f"{ckpt}: no optimizer state saved")
            try:
                optimizer.load_state_dict(state["optimizer"])
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{ckpt}: optimizer state does not fit this optimizer ({e})") from None
        if scheduler is not None and state["scheduler"] is not None:
            scheduler.load_state_dict(state["scheduler"])
        for group, flags in zip(given_optimizer.param_groups if given_optimizer else [], kernels):
            group.update(flags)
        self._rescale_lr(ckpt, given_optimizer, scheduler)
        if restore_rng:
            rngs = state["rng"]
            if rank < len(rngs):
                set_rng_state(rngs[rank])
            else:  # more processes than saved: dropout streams differ from the original run's
                reseed_from(rngs[0], rank)
        return {"step": state["step"], "data": state["data"], "extra": state["extra"],
                "metrics": _read_meta(ckpt).get("metrics", {})}


def load_any_weights(model: nn.Module, ckpt: Path, optimizer: torch.optim.Optimizer | None = None,
                     optim_state: dict[str, Any] | None = None) -> None:
    """The weights (and optimizer state) of checkpoint ``ckpt``, sharded or not, into ``model``,
    sharded or not: DCP reshards a sharded checkpoint for any number of processes; a one-process
    checkpoint (``optim_state``: its ``torch.optim`` state dict) is scattered into a sharded model."""
    if has_sharded_state(ckpt):
        load_sharded(unwrap_model(model), optimizer, ckpt)
    elif is_sharded(model):
        load_full(model, optimizer, lambda plain: load_model_weights(plain, ckpt), optim_state)
    else:
        load_model_weights(model, ckpt)
        if optimizer is not None and optim_state is not None:
            optimizer.load_state_dict(optim_state)


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _step_of(ckpt: Path) -> int:
    m = STEP_DIR.match(ckpt.name)
    return int(m.group(1)) if m else -1


def damage(ckpt: str | os.PathLike) -> str | None:
    """What makes checkpoint ``ckpt`` unloadable (a missing, empty, truncated or unparsable file, or
    weights that are not finite), or None when every file opens. Cheap: reads meta.json, the
    safetensors headers (safetensors checks that the data covers what the header declares) and the
    training state's zip directory; the weights themselves only for a checkpoint written before
    their finiteness was checked at save (no ``weights_finite`` in meta.json)."""
    ckpt = Path(ckpt)
    try:
        meta = json.loads((ckpt / META_FILE).read_text(encoding="utf-8"))
        if not isinstance(meta, dict):
            return f"{META_FILE} is not a JSON object"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return f"{META_FILE}: {getattr(e, 'strerror', None) or e}"
    try:
        with zipfile.ZipFile(ckpt / STATE_FILE):
            pass
    except (OSError, zipfile.BadZipFile) as e:
        return f"{STATE_FILE}: {getattr(e, 'strerror', None) or e}"
    if (ckpt / SHARDED_DIR).is_dir():
        return sharded_damage(ckpt)
    weights = sorted(ckpt.rglob("*.safetensors"))
    if not weights and not any(ckpt.rglob("*.bin")):
        return "no weight files"
    for path in weights:
        try:
            with safe_open(str(path), framework="pt") as f:
                # a checkpoint saved before weights were checked at save (no weights_finite in meta.json)
                # may hold the NaN of a diverged step: read its weights once
                bad = [] if meta.get("weights_finite") else [k for k in f.keys() if not _finite(f.get_tensor(k))]
        except (SafetensorError, OSError) as e:
            return f"{path.relative_to(ckpt)}: {e}"
        if bad:
            return (f"{path.relative_to(ckpt)}: weights not finite (NaN or infinity in {', '.join(bad[:3])}"
                    f"{f' and {len(bad) - 3} more' if len(bad) > 3 else ''})")
    return None


def _finite(t: torch.Tensor) -> bool:
    return not t.is_floating_point() or bool(torch.isfinite(t).all())


def load_data_cursor(loader, state: dict[str, Any], allow_data_change: bool = False) -> None:
    """Continue a pretraining run's data where its checkpoint left it: ``loader.dataset.load_state_dict``
    and the loader's own check (``check_cursor``), both before the run changes any of its files. With
    ``checkpoint.allow_data_change`` a cursor of other data (the corpus changed: other token shards) is
    dropped with a warning, and the new data is read from its beginning in the seeded order."""
    try:
        loader.dataset.load_state_dict(state)
    except OtherDataError as e:
        if not allow_data_change:
            raise
        warnings.warn(f"{e}: checkpoint.allow_data_change=true, so the changed data is read from its start "
                      f"(the model, optimizer and schedule continue)", stacklevel=2)
    loader.check_cursor()


def _read_meta(ckpt: Path) -> dict[str, Any]:
    try:
        return json.loads((ckpt / META_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"{ckpt}: missing {META_FILE}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{ckpt / META_FILE}: invalid JSON ({e})") from None
