"""Fine-tune T5 text-to-text on a task or a mixture — the whole loop, top to bottom.

    python -m t5electra.recipes.finetune_t5 --model.init_from=runs/t5/model --data.task=sentiment \\
        --optim.name=adafactor --optim.lr=1e-3 --schedule.name=constant \\
        --eval.metric=accuracy
    t5electra finetune ... (the same options; T5 checkpoints come here)

Pipeline (Raffel et al. 2020, §3.1.3): each example of the task (``data.task``; several joined
by ``+`` make an examples-proportional mixture, §3.5.2) is text in, text out, with the task's
prefix: ``"sst2 sentence: a gripping film" -> "positive"``. Your own files (``data.train_files``,
``validation_files``, ``test_files``, or train/dev/test files in ``data.task_dir`` with
``data.task=classify|text2text``) make a task of their own (t5electra/data/file_tasks.py): a text and
a label column (``classify``: the class names are the targets) or input and target columns
(``text2text``). The encoder reads the inputs
(truncated to ``data.max_length``); the decoder is trained with teacher forcing on the target
tokens (truncated to ``data.target_length``, EOS kept), cross-entropy averaged over them.

T5's own fine-tuning recipe is Adafactor at a constant 1e-3 (``optim.name=adafactor
optim.lr=1e-3 schedule.name=constant``); AdamW with a linear schedule also works.

Every ``eval.every_steps`` (and at the end) the model *generates* answers for the validation
split and the task's metrics score them after its postprocessor: text that is not a valid answer
counts as wrong. Each evaluation is checkpointed, so the best checkpoint by ``eval.metric`` (e.g.
``accuracy``: ``eval.greater_is_better`` follows the metric's name; default ``loss``, the
teacher-forced validation loss) is on disk; at the end it is saved as ``RUN/model`` (weights, config, tokenizer) and scored
on the validation and test splits (``RUN/results.json``, with the majority-class baseline for a
classification task), as the ELECTRA recipe does. ``--checkpoint.resume=auto``
continues exactly: the checkpoint stores how many examples of the (deterministic) training stream
were consumed, with the model, optimizer, scheduler and RNG states. The batches are defined per
global batch (t5electra/data/global_batches.py), length grouping (``data.group_by_length``)
included, so a checkpoint also resumes on another number of processes with the same global batch.

LoRA (``--lora.r=8 --lora.alpha=16 --lora.target_modules=[q,v]``, t5electra/train/lora.py): the
base is frozen and only the adapters train; checkpoints hold only them (and their optimizer
state); ``RUN/adapter`` is the best adapter in PEFT's layout, ``RUN/model`` the merged model.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..data.global_batches import length_sorted_batches, rank_share
from ..data.readers import spread_subset
from ..errors import ConfigError, DataError, T5ElectraError
from ..data.readers import FileSource
from ..eval.baselines import classification_baseline
from ..eval.text_to_text import Example, mixture, score_tasks, task_list
from ..tokenizers import T5Tokenizer
from ..plot import plot_run_if_available
from ..core.atomic import write_text_atomic
from ..train.checkpointing import CheckpointManager, prepare_run_dir, release_run_dir, save_final_model, unwrap_model
from ..train.config import RunConfig, load_config, run_inputs
from ..train.distributed import DistEnv, barrier, broadcast_object, cleanup, init_distributed, parallelize
from ..train.logging import MetricsLogger, Progress
from ..train.lora import add_lora, export_model
from ..train.loop import evaluate, seed_everything, to_device, train_step
from ..train.optim import build_optimizer
from ..train.saving import report_evaluation, resume_evaluation, save_checkpoint
from ..train.schedules import build_scheduler
from ..train.seq2seq import build_model, load_tokenizer, loss_fn
from ..train.sharded import gather_model, is_sharded


# --------------------------------------------------------------------------------------------
# Data: the text-to-text stream and its batches
# --------------------------------------------------------------------------------------------
class Seq2SeqBatcher:
    """Text examples -> padded tensors (to the longest in the batch).

    ``input_ids``/``attention_mask`` (B, S) from ``inputs``; ``labels`` (B, L) from ``targets`` with
    padding as -100 (ignored by the loss). The model shifts the labels right itself to make the
    decoder inputs (teacher forcing).
    """

    def __init__(self, tokenizer: T5Tokenizer, max_length: int, target_length: int):
        self.tokenizer, self.max_length, self.target_length = tokenizer, max_length, target_length

    def __call__(self, examples: list[Example]) -> dict[str, torch.Tensor]:
        tok = self.tokenizer
        enc = tok([ex["inputs"] for ex in examples], padding=True, truncation=True, max_length=self.max_length,
                  return_tensors="pt")
        tgt = tok([ex["targets"] for ex in examples], padding=True, truncation=True, max_length=self.target_length,
                  return_tensors="pt")
        labels = tgt["input_ids"].masked_fill(tgt["attention_mask"] == 0, -100)  # (B, L)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def target_length(cfg: RunConfig, tokenizer: T5Tokenizer, examples: list[Example]) -> int:
    """``data.target_length``, or the longest tokenised target of ``examples`` (with EOS)."""
    if cfg.data.target_length is not None:
        return cfg.data.target_length
    lengths = [len(ids) for ids in tokenizer([ex["targets"] for ex in examples])["input_ids"]]
    return max(lengths, default=1)


def check_labels_survive(tasks, tokenizer: T5Tokenizer) -> None:
    """Refuse class names the tokenizer cannot write back: T5 answers in text, compared with the class
    name as written, so a name the tokenizer normalises ('５星' comes back '5星') or loses (<unk>)
    could never be answered; a perfect model scored 0 without a word."""
    lost = [(label, back) for t in tasks if t.head.kind == "classification" for label in t.head.labels
            if (back := tokenizer.decode(tokenizer(label)["input_ids"], skip_special_tokens=True).strip()) != label]
    if lost:
        shown = ", ".join(f"{a!r} -> {b!r}" for a, b in lost[:5])
        raise ConfigError(f"the tokenizer does not write back {len(lost)} class name(s) as written ({shown}): T5 "
                          f"could never answer them. Rename the classes in the data (e.g. plain digits and "
                          f"letters), or train a tokenizer that keeps them (t5electra tokenizer train)")


def recipe_tasks(cfg: RunConfig) -> list:
    """``data.task`` (a task or a mixture, files in ``data.task_dir``), or the task over your files
    (``data.train_files`` / ``validation_files`` / ``test_files``: classify or text2text)."""
    d = cfg.data
    return task_list(d.task, d.task_dir, files={"train": d.train_files, "validation": d.validation_files,
                                                "test": d.test_files},
                     text_columns=d.text_columns, label_column=d.label_column)


def train_stream(cfg: RunConfig, tasks, skip: int) -> Iterator[Example]:
    """The endless, deterministic example stream (the global sequence: the same on every rank) after its
    first ``skip`` examples, which a resumed run has already trained on."""
    stream = mixture(tasks, cfg.data.task or tasks[0].name).sample("train", seed=cfg.train.seed)
    return itertools.islice(stream, skip, None)


def length_grouped_batches(examples: Iterator[Example], batch_size: int, window: int, seed: int, *,
                           first_window: int = 0, skip_batches: int = 0) -> Iterator[list[Example]]:
    """Batches of ``batch_size`` examples of similar lengths (``data.group_by_length``): the stream is
    cut into windows of ``window`` batches; inside a window the examples are sorted by input length
    (characters: a tokenizer-free proxy) and cut into batches, which are yielded in an order seeded
    by (``seed``, window index). Every example is still used once, in the order of its window.

    Resuming: start ``examples`` at the beginning of window ``first_window`` and skip the
    ``skip_batches`` batches of it already trained on: the same batches as the uninterrupted run."""
    w = first_window
    while True:
        chunk = list(itertools.islice(examples, window * batch_size))
        if not chunk:
            return
        batches = length_sorted_batches(chunk, [len(ex["inputs"]) for ex in chunk], batch_size)
        for j in np.random.default_rng([seed, w]).permutation(len(batches))[skip_batches:]:
            yield batches[int(j)]
        w, skip_batches = w + 1, 0


def global_batches(cfg: RunConfig, tasks, global_batch: int, seen: int) -> Iterator[list[Example]]:
    """The global batches (G = batch x accumulation x processes examples, one per step) after ``seen``
    examples (a multiple of G), grouped by length when ``data.group_by_length`` k > 0: windows of k
    global batches, so the same batches on any number of processes with the same G."""
    k = cfg.data.group_by_length
    if k <= 0:
        examples = train_stream(cfg, tasks, seen)
        return iter(lambda: list(itertools.islice(examples, global_batch)), [])
    w, within = divmod(seen, k * global_batch)
    return length_grouped_batches(train_stream(cfg, tasks, w * k * global_batch), global_batch, k, cfg.train.seed,
                                  first_window=w, skip_batches=within // global_batch)


def train_batches(cfg: RunConfig, tasks, env: DistEnv, seen: int) -> Iterator[list[Example]]:
    """This rank's micro-batches (lists of ``train.batch_size`` examples), ``train.grad_accum_steps`` per
    step, after ``seen`` global examples: micro-batch m of rank r takes positions m B W + r,
    m B W + r + W, ... of each global batch (data/global_batches.py). One process without
    accumulation reads batches of B, grouped in windows of k of them, as before the global order."""
    B, A, W = cfg.train.batch_size, cfg.train.grad_accum_steps, env.world_size
    if seen % (B * A * W):
        raise ConfigError(f"the data cursor ({seen} examples) is not a whole number of global batches of "
                          f"{B * A * W} (train.batch_size x train.grad_accum_steps x processes)")
    return (rank_share(batch, m, B, W, env.rank) for batch in global_batches(cfg, tasks, B * A * W, seen)
            for m in range(A))


def split_examples(tasks, split: str, cap: int | None = None) -> dict[str, list[Example]]:
    """Each task's ``split``; {} if a task lacks the split. With ``cap``, ``cap`` evenly spaced examples
    of each (spread_subset)."""
    if not all(split in t.splits for t in tasks):
        return {}
    out = {t.name: list(t.examples(split)) for t in tasks}
    if cap:
        out = {name: spread_subset(rows, cap) for name, rows in out.items()}
    for name, rows in out.items():
        if not rows:
            raise DataError(f"task {name!r}: the {split!r} split is empty")
    return out


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def train(cfg: RunConfig) -> Path:
    """Fine-tune as ``cfg`` says; returns the run directory (see the module docstring)."""
    if cfg.model.family != "t5":
        raise ConfigError(f"model.family={cfg.model.family!r}: this recipe fine-tunes T5 (ELECTRA: finetune_electra)")
    env = init_distributed(cfg.train.device, strategy=cfg.train.distributed, deterministic=cfg.train.deterministic)
    run_dir = Path(cfg.train.output_dir)
    prepare_run_dir(run_dir, cfg.checkpoint.resume, cfg.checkpoint.overwrite, env.is_main,
                    inputs=run_inputs(cfg))  # before any work
    seed_everything(cfg.train.seed)

    tasks = recipe_tasks(cfg)
    for t in tasks:  # every split of a file read once now: a bad row stops the run before training, not after
        if isinstance(t.source, FileSource):
            for split in t.splits:
                t.num_examples(split)
    tokenizer = load_tokenizer(cfg)
    check_labels_survive(tasks, tokenizer)
    model = add_lora(build_model(cfg, tokenizer), cfg.lora, "t5").to(env.device)  # lora.r: adapters only train
    # Targets are short for classification: size them from the training set once, then fix them.
    first = list(itertools.islice(mixture(tasks, cfg.data.task or tasks[0].name).sample("train", seed=cfg.train.seed), 2000))
    batcher = Seq2SeqBatcher(tokenizer, cfg.data.max_length, target_length(cfg, tokenizer, first))
    # the answers' length this run trains and scores with, in every checkpoint's generation_config.json
    # and RUN/model's: `evaluate`, `generate` and the server read it (a fixed 32 cut long targets)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.generation_config.max_new_tokens = batcher.target_length
    eval_bs = cfg.eval.batch_size or cfg.train.batch_size
    valid = split_examples(tasks, "validation", cfg.eval.max_batches * eval_bs if cfg.eval.max_batches else None)

    # DDP wraps the model (ddp_model), FSDP shards it in place: the optimizer and the resume come after.
    ddp_model = parallelize(model, env, cfg.train.distributed, activation_checkpointing=cfg.train.activation_checkpointing,
                            precision=cfg.train.precision)
    sharded = is_sharded(model)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.train.max_steps)
    ckpt = CheckpointManager.for_run(cfg, run_dir, env.world_size)

    start, last_ckpt, seen = 0, None, 0
    resume_from = broadcast_object(ckpt.resolve(cfg.checkpoint.resume) if env.is_main else None, env)
    if resume_from is not None:
        state = ckpt.load(resume_from, model, optimizer, scheduler, rank=env.rank)
        start, last_ckpt, seen = state["step"], Path(resume_from), int(state["data"]["examples_seen"])
    else:
        seed_everything(cfg.train.seed, env.rank)
    if env.is_main:
        cfg.save_yaml(run_dir / "config.yaml")
    batches = train_batches(cfg, tasks, env, seen)
    per_step = cfg.train.batch_size * cfg.train.grad_accum_steps * env.world_size  # global examples per step

    log = MetricsLogger(run_dir, enabled=env.is_main, tensorboard=cfg.train.tensorboard, resume_step=start)
    bar = Progress(cfg.train.max_steps, initial=start, enabled=env.is_main and cfg.train.progress,
                   desc=f"finetune {run_dir.name}")
    if env.is_main and start:
        bar.write(f"resumed from {resume_from} at step {start}")

    def run_eval() -> dict[str, float]:
        """Teacher-forced loss (every rank its share of the rows), then generation + the task metrics
        (rank 0). FSDP: rank 0 does both alone, on a plain copy of the gathered weights (generation
        runs a different number of forward passes per rank, which sharded blocks cannot)."""
        if not valid:
            return {}
        rows = [ex for t in tasks for ex in valid[t.name]]
        net, eval_env, mine = ddp_model, env, rows[env.rank::env.world_size]
        if sharded:  # a collective: every rank takes part; rank 0 gets the copy
            net, eval_env, mine = gather_model(model, env.rank), DistEnv(device=env.device), rows
        metrics, scores = {}, None
        if net is not None:
            net = net.to(env.device)
            batches = (to_device(batcher(mine[i:i + eval_bs]), env.device) for i in range(0, len(mine), eval_bs))
            metrics = evaluate(net, batches, loss_fn, precision=cfg.train.precision, env=eval_env)
            metrics.pop("tokens", None)
        if env.is_main:
            scores = {**metrics, **score_tasks(unwrap_model(net), tokenizer, tasks, valid, batch_size=eval_bs,
                                               max_length=cfg.data.max_length, max_new_tokens=batcher.target_length)}
        model.train()
        return broadcast_object(scores, env)  # rank 0's (the loss is already averaged over the ranks)

    def save(step: int) -> Path:
        return save_checkpoint(ckpt, env, step, model, optimizer, scheduler, {"examples_seen": step * per_step},
                               save_extra=tokenizer.save_pretrained, sharded=sharded, last_good=last_ckpt)

    def evaluation(step: int) -> None:  # logged, and recorded into the step's checkpoint
        report_evaluation(ckpt, env, log, bar, step, run_eval(), cfg.eval.metric, label="")

    def evaluates(step: int) -> bool:
        return bool(valid) and (bool(cfg.eval.every_steps) and step % cfg.eval.every_steps == 0
                                or step == cfg.train.max_steps)

    t_log, tokens_since = time.perf_counter(), 0
    try:
        if start and evaluates(start):  # its evaluation now if it failed after the save, else ranked again
            resume_evaluation(ckpt, env, start, state["metrics"], evaluation, cfg.eval.metric)
        for step in range(start + 1, cfg.train.max_steps + 1):
            micro = [to_device(batcher(next(batches)), env.device) for _ in range(cfg.train.grad_accum_steps)]
            out = train_step(ddp_model, micro, loss_fn, optimizer, scheduler, max_grad_norm=cfg.optim.max_grad_norm,
                             precision=cfg.train.precision, step=step, env=env, last_checkpoint=last_ckpt)
            tokens_since += int(out.metrics.get("tokens", 0))
            bar.update(step, loss=out.loss, tokens=int(out.metrics.get("tokens", 0)))
            if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                now = time.perf_counter()
                log.log(step, {"loss": out.loss, "lr": out.lr, "grad_norm": out.grad_norm,
                               "tokens_per_s": tokens_since / max(now - t_log, 1e-9), **out.metrics})
                t_log, tokens_since = now, 0
            every_ckpt = bool(cfg.checkpoint.every_steps) and step % cfg.checkpoint.every_steps == 0
            # an evaluated step is always saved (the best stays on disk), before its evaluation: one that
            # fails loses no training
            if every_ckpt or step == cfg.train.max_steps or evaluates(step):
                last_ckpt = save(step)
            if evaluates(step):
                evaluation(step)
    finally:
        bar.close()
        log.close()

    best = ckpt.best_model(model, env.rank)  # FSDP: a collective, the full weights gathered on rank 0
    if env.is_main:
        finish(cfg, run_dir, ckpt.best(), best.to(env.device), tokenizer, tasks, batcher)
        plot_run_if_available(run_dir)
    barrier(env)
    cleanup(env)
    release_run_dir(run_dir)
    return run_dir


def finish(cfg: RunConfig, run_dir: Path, best: dict[str, Any] | None, model: torch.nn.Module,
           tokenizer: T5Tokenizer, tasks, batcher: Seq2SeqBatcher) -> dict[str, Any]:
    """Save ``model`` (the best checkpoint's, ``CheckpointManager.best_model``) as ``RUN/model``, score
    it on the validation and test splits and write ``RUN/results.json`` (with the majority-class
    baseline for classification); ``best`` is the best checkpoint's record."""
    model = export_model(model, run_dir).eval()  # LoRA: RUN/adapter written, adapters merged
    model.generation_config.max_new_tokens = batcher.target_length  # (as train() set it: the best checkpoint's copy)
    save_final_model(model, run_dir / "model", tokenizer.save_pretrained)  # whole or not at all
    kw = dict(batch_size=cfg.eval.batch_size or cfg.train.batch_size, max_length=cfg.data.max_length,
              max_new_tokens=batcher.target_length)
    results: dict[str, Any] = {"best_checkpoint": best, "num_examples": {}, "majority_baseline": {}, "tfidf_baseline": {}}
    for split in scored_splits(tasks):
        examples = split_examples(tasks, split)
        examples = {t.name: [ex for ex in examples.get(t.name, ()) if t.labelled(ex)] for t in tasks}
        if not any(examples.values()):  # absent, or unlabelled (GLUE's test files): nothing to score
            if split in tasks[0].splits:
                results.setdefault("unlabelled_splits", []).append(split)
            continue
        scored = [t for t in tasks if examples[t.name]]
        metrics = score_tasks(model, tokenizer, scored, {t.name: examples[t.name] for t in scored}, **kw)
        if len(tasks) > 1 and len(scored) == 1:  # one labelled task of a mixture: still "task/metric"
            metrics = {f"{scored[0].name}/{k}": v for k, v in metrics.items()}
        results[split] = metrics
        results["num_examples"][split] = sum(len(v) for v in examples.values())
        if len(tasks) == 1 and tasks[0].head.kind == "classification":
            results["majority_baseline"][split] = majority_baseline(tasks[0], examples[tasks[0].name])
    if len(tasks) == 1 and tasks[0].head.kind == "classification":
        results["tfidf_baseline"] = classification_baseline(
            {s: list(tasks[0].head_examples(s)) for s in ("train", "validation", "test") if s in tasks[0].splits})
    # last, whole: the quickstart takes RUN/results.json for a finished run
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    return results


def scored_splits(tasks) -> list[str]:
    """validation and test, then the other held-out splits every task has (MNLI's mismatched sets)."""
    extra = [s for s in tasks[0].splits if s.startswith(("validation_", "test_")) and all(s in t.splits for t in tasks)]
    return ["validation", "test", *extra]


def majority_baseline(task, examples: list[Example]) -> dict[str, float]:
    """The task's metrics when every answer is the most frequent training target."""
    counts = collections.Counter(ex["targets"] for ex in task.examples("train"))
    answer = counts.most_common(1)[0][0]
    return task.evaluate([answer] * len(examples), examples)


def main(argv: list[str] | None = None) -> int:
    """``--config FILE`` plus ``--section.key=value`` overrides."""
    parser = argparse.ArgumentParser(prog="python -m t5electra.recipes.finetune_t5", description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="FILE", help="YAML run config (sections model, data, optim, ...)")
    args, overrides = parser.parse_known_args(argv)
    try:
        train(load_config(args.config, overrides))
    except T5ElectraError as e:
        print(f"finetune_t5: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
