"""Fine-tune an ELECTRA discriminator (or any BERT) with a task head — the whole loop, top to bottom.

    python -m t5electra.recipes.finetune_electra --data.task=sentiment \
        --model.init_from=runs/electra/model/discriminator --train.max_steps=1000
    torchrun --nproc_per_node 4 -m t5electra.recipes.finetune_electra --config run.yaml

Heads (``electra.head``, default: the task's):

- ``classification``: ``ElectraForSequenceClassification`` on the [CLS] vector, cross-entropy;
- ``regression``: the same head with one output (``num_labels=1``), mean squared error (STS-B);
- ``token_classification``: ``ElectraForTokenClassification``, a label per word, predicted on its
  first sub-token (the other sub-tokens and [CLS]/[SEP] are ignored, label -100);
- ``qa``: extractive QA, ``ElectraForQuestionAnswering``. ``[CLS] question [SEP] context [SEP]``;
  a long context is cut into windows of ``data.max_length`` tokens that overlap by
  ``electra.doc_stride``; a window that does not contain the whole answer is trained to point at
  [CLS]. Predictions take the best span (start <= end, at most ``electra.max_answer_length``
  tokens, inside the context) over all windows of a question, map it back to characters through
  the tokenizer's offsets, and are scored with the official SQuAD v1.1 exact match and F1.

Data: a registered task (``data.task=sentiment``, ``sst2``, ``stsb``, ``squad``, ... with
``data.task_dir`` where it needs files), or your own files: ``data.train_files`` /
``data.validation_files`` / ``data.test_files`` (one file each; .tsv/.csv/.jsonl/.parquet with
``data.text_columns`` and ``data.label_column``; token classification: JSONL ``{"tokens": [...],
"labels": [...]}``; QA: SQuAD JSON or JSONL with question/context/answers) plus ``electra.head``.

The recipe of the ELECTRA paper (appendix, Table 7): AdamW, lr 1e-4 (Small: 3e-4), weight decay
0.01, linear warmup over the first 10% of the steps then linear decay, layer-wise lr decay 0.8
(``optim.layerwise_lr_decay``, implemented as intended: see docs/training.md, the official code
applies one factor too many). The validation split is scored every ``eval.every_steps`` steps
(on ``eval.max_batches`` batches of evenly spaced examples, if set) and each evaluation is
checkpointed; ``checkpoints/best`` follows ``eval.metric`` (``auto``: the task's first metric, e.g. accuracy,
Pearson, SQuAD F1). At the end the best checkpoint is scored on the validation and test splits
(``RUN/results.json``, with the majority-class baseline for classification) and saved as
``RUN/model`` (weights, config with label names, tokenizer).

LoRA (``--lora.r=8 --lora.target_modules=[query,value]``, t5electra/train/lora.py): the encoder is
frozen, adapters and the task head train; checkpoints hold only those (and their optimizer
state); ``RUN/adapter`` is the best adapter in PEFT's layout, ``RUN/model`` the merged model.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ..core.launch import is_rank_zero
from ..data.global_batches import length_sorted_batches, micro_positions
from ..data.heads import (MODEL_INPUTS, TaskData, collate, encode, encode_qa,  # noqa: F401 (encode_qa)
                          labelled_tokens, load_task_data)
from ..data.readers import spread_subset
from ..errors import ConfigError, DataError, T5ElectraError
from ..modeling import OWN_CALL, FreshWarningHeld
from ..eval.baselines import classification_baseline
from ..eval.heads import head_loss, majority_baseline, predict, qa_answers, score  # noqa: F401 (qa_answers)
from ..models.electra import ElectraConfig
from ..models.registry import HEAD_CLASSES
from ..plot import plot_run_if_available
from ..tokenizers import ElectraTokenizer
from ..core.atomic import write_text_atomic
from ..train.checkpointing import CheckpointManager, mlm_generator, prepare_run_dir, release_run_dir, save_final_model
from ..train.config import RunConfig, load_config, run_inputs
from ..train.distributed import DistEnv, barrier, cleanup, init_distributed, parallelize
from ..train.logging import MetricsLogger, Progress
from ..train.lora import add_lora, export_model
from ..train.loop import LOSS_WEIGHT, seed_everything, to_device, train_step
from ..train.optim import build_optimizer
from ..train.saving import report_evaluation, resume_evaluation, save_checkpoint
from ..train.schedules import build_scheduler
from ..train.sharded import gather_model, is_sharded


def default_config() -> RunConfig:
    """The engine's defaults with ELECTRA's fine-tuning recipe on top (paper appendix, Table 7)."""
    cfg = RunConfig()
    cfg.model.family = "electra"
    cfg.data.objective, cfg.data.max_length = "finetune", 128
    cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.eps = "adamw", 1e-4, 0.01, 1e-6
    cfg.optim.layerwise_lr_decay = 0.8
    cfg.schedule.name, cfg.schedule.warmup_ratio = "linear", 0.1
    cfg.eval.metric = "auto"  # eval.greater_is_better follows it (higher; --eval.metric=loss: lower)
    return cfg


# --------------------------------------------------------------------------------------------
# Data: examples of each split, in the head's format (data/heads.py)
# --------------------------------------------------------------------------------------------
def load_data(cfg: RunConfig) -> TaskData:
    """Examples of the train / validation / test splits from ``data.task`` or your files; a split
    that is there but empty (a file with a header and no rows) is a DataError, as in T5 fine-tuning
    (it trained without an evaluation, and results.json listed the split as unlabelled)."""
    d = cfg.data
    files = {"train": d.train_files, "validation": d.validation_files, "test": d.test_files}
    data = load_task_data(cfg.electra.head, task=d.task, task_dir=d.task_dir, files=files,
                          text_columns=d.text_columns, label_column=d.label_column)
    for split, examples in data.splits.items():
        if not examples:
            where = f"data.{split}_files={files[split][0]}" if files.get(split) else f"task {d.task or d.task_dir!r}"
            fix = "add examples" + ("" if split == "train" else f", or leave data.{split}_files unset")
            raise DataError(f"{where}: the {split!r} split is empty (a header and no rows?): {fix}")
    return data


class ExampleStream:
    """Endless training batches, defined per global batch, not per rank (t5electra/data/global_batches.py). Every epoch is a fresh
    seeded permutation of the features; the epochs, one after the other, make one global sequence.
    A step reads the next G = batch_size x accum x world_size positions of it (the global batch):
    micro-batch m of rank r takes positions m B W + r, m B W + r + W, ... of the step's G. So one
    process with batches of G reads, step by step, the same examples as W processes with batches of
    G / W (or accumulation), and the cursor (global examples consumed, a multiple of G after each
    step) resumes on any number of processes with the same G.

    ``group_by_length`` k > 0: the epoch's permutation is cut into windows of k global batches;
    inside a window the features are sorted by length (longest first), cut into global batches of
    G, and the batches shuffled; micro-batch m of every rank then draws from the same stretch of B W
    neighbours of the sorted global batch, so it holds examples of similar lengths and pads little
    (each epoch still visits every feature once). Windows are counted in global batches, so the
    grouping does not depend on the number of processes either. One process without accumulation
    reads the batches it read when the order was per rank."""

    def __init__(self, features: list[dict[str, Any]], batch_size: int, seed: int, env: DistEnv,
                 collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]], group_by_length: int = 0,
                 accum: int = 1):
        if not features:
            raise DataError("no training features to make batches of")
        if batch_size < 1 or accum < 1:
            raise ConfigError(f"batch size {batch_size} and accumulation {accum} must be >= 1")
        self.features, self.batch_size, self.seed, self.env = features, batch_size, seed, env
        self.collate_fn, self.group_by_length, self.accum = collate_fn, group_by_length, accum
        self.global_batch = batch_size * accum * env.world_size  # G: examples of one step, all ranks
        self.consumed = 0  # global examples consumed (all ranks): a multiple of G between steps
        self._epoch, self._order_cache = -1, np.zeros(0, dtype=np.int64)

    def _order(self, epoch: int) -> np.ndarray:
        """The epoch's global order of feature indices (N,): rank-independent."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.features))
        if self.group_by_length <= 0:
            return order
        window, G = self.group_by_length * self.global_batch, self.global_batch
        grouped = []
        for start in range(0, len(order), window):
            chunk = order[start:start + window]
            batches = length_sorted_batches(chunk, [len(self.features[int(i)]["input_ids"]) for i in chunk], G)
            grouped += [batches[int(j)] for j in rng.permutation(len(batches))]
        return np.concatenate(grouped)

    def _feature(self, position: int) -> dict[str, Any]:
        """The feature at ``position`` of the global sequence (epoch after epoch)."""
        epoch, j = divmod(position, len(self.features))
        if epoch != self._epoch:  # positions only grow: one epoch's order cached
            self._epoch, self._order_cache = epoch, self._order(epoch)
        return self.features[int(self._order_cache[j])]

    def __iter__(self):
        """This rank's micro-batches, ``accum`` per step, in order."""
        B, W, r = self.batch_size, self.env.world_size, self.env.rank
        while True:
            step_start = self.consumed
            for m in range(self.accum):
                batch = self.collate_fn([self._feature(p) for p in micro_positions(step_start, m, B, W, r)])
                if m == self.accum - 1:  # counted when handed out: a checkpoint after this step saves its end
                    self.consumed = step_start + self.global_batch
                yield batch

    @property
    def epoch(self) -> float:
        """Epochs done (global examples consumed / features): the same on every rank and world size."""
        return self.consumed / len(self.features)

    def state_dict(self) -> dict[str, Any]:
        return {"examples_seen": self.consumed, "num_features": len(self.features), "seed": self.seed,
                "global_batch": self.global_batch, "group_by_length": self.group_by_length}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("num_features") != len(self.features) or state.get("seed") != self.seed:
            raise ConfigError(f"the data cursor belongs to different data ({state.get('num_features')} features, "
                              f"seed {state.get('seed')}; now {len(self.features)}, seed {self.seed})")
        if "examples_seen" in state:
            seen = int(state["examples_seen"])
        else:  # a checkpoint from before the global order: each of its ranks had consumed `consumed` of its
            # share (older still: no world_size recorded, resumed on the same number then); the global order from here
            seen = int(state["consumed"]) * int(state.get("world_size", self.env.world_size))
        if seen % self.global_batch:  # the global batch is checked with the config; this is a cursor mid-step
            raise ConfigError(f"the data cursor ({seen} examples) is not a whole number of global batches of "
                              f"{self.global_batch} (train.batch_size x train.grad_accum_steps x processes)")
        self.consumed = seen


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------
def model_dir(init_from: str) -> Path:
    """A pretraining run's ``model/`` (or a checkpoint of it) means its ``discriminator/``; an MLM
    pretraining's (``generator/`` alone), its generator's encoder."""
    p = Path(init_from)
    if (p / "discriminator" / "config.json").is_file():
        return p / "discriminator"
    return mlm_generator(p) or p


def build_model(cfg: RunConfig, data: TaskData, tokenizer: ElectraTokenizer) -> torch.nn.Module:
    """The head's model on the pretrained encoder (``model.init_from``), or fresh from
    ``model.preset``; vocabulary and length checked against the tokenizer before the first step."""
    m = cfg.model
    if m.family != "electra":
        raise ConfigError(f"model.family={m.family!r}: this recipe fine-tunes ELECTRA/BERT encoders (use 'electra')")
    cls = HEAD_CLASSES[data.head]
    head: dict[str, Any] = dict(m.overrides)
    if data.head == "regression":
        head.update(num_labels=1, id2label={0: "score"}, label2id=None, problem_type="regression")
    elif data.head == "qa":
        head.update(num_labels=2, id2label=None, label2id=None)
    else:
        head.update(num_labels=len(data.labels), id2label=dict(enumerate(data.labels)), label2id=None,
                    problem_type="single_label_classification" if data.head == "classification" else None)
    if m.init_from:
        model = cls.from_pretrained(model_dir(m.init_from), **head)
    elif m.preset:
        model = cls(ElectraConfig.from_preset(m.preset, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                                              **head))
    else:
        raise ConfigError("model.init_from is not set: give a pretrained discriminator or BERT directory "
                          "(e.g. RUN/model/discriminator from `t5electra pretrain`), or model.preset to start fresh")
    if len(tokenizer) > model.config.vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is "
                          f"{model.config.vocab_size}: use the tokenizer the model was pretrained with")
    if cfg.data.max_length > model.config.max_position_embeddings:
        raise ConfigError(f"data.max_length={cfg.data.max_length} is longer than the model's "
                          f"max_position_embeddings={model.config.max_position_embeddings}")
    return model.train()


def load_tokenizer(cfg: RunConfig) -> ElectraTokenizer:
    source = cfg.data.tokenizer or (model_dir(cfg.model.init_from) if cfg.model.init_from else None)
    if source is None:
        raise ConfigError("data.tokenizer is not set (and no model.init_from to take it from)")
    return ElectraTokenizer.from_pretrained(source)


def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """The head's loss; a tagger's is a mean over the labelled tokens, whose number is its weight
    (train_step: the mean over the step's global batch, not a mean of the micro-batches' means)."""
    out = model(**{k: v for k, v in batch.items() if k in MODEL_INPUTS}, **OWN_CALL)
    logs = {"examples": int(batch["input_ids"].shape[0]), "tokens": int(batch["attention_mask"].sum())}
    tagged = labelled_tokens(batch)
    loss = head_loss(out, batch)  # QA: the padding masked
    if tagged is not None:
        logs[LOSS_WEIGHT] = tagged
        if not tagged:  # no labelled token: the mean over none is NaN (the NaN guard would stop training);
            loss = out.logits.float().sum() * 0.0  # weight 0, a zero loss with zero gradients, as T5's loss_fn
    return loss, logs


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def train(cfg: RunConfig) -> Path:
    """Fine-tune as ``cfg`` says; returns the run directory (``RUN/model``, ``RUN/results.json``)."""
    env = init_distributed(cfg.train.device, strategy=cfg.train.distributed, deterministic=cfg.train.deterministic)
    run_dir = Path(cfg.train.output_dir)
    prepare_run_dir(run_dir, cfg.checkpoint.resume, cfg.checkpoint.overwrite, env.is_main,
                    inputs=run_inputs(cfg))  # before any work
    seed_everything(cfg.train.seed)  # identical initial head weights on every rank

    data = load_data(cfg)
    if not data.splits.get("train"):
        raise DataError("no training examples: data.task has no train split, or data.train_files is empty")
    tokenizer = load_tokenizer(cfg)
    ckpt = CheckpointManager.for_run(cfg, run_dir, env.world_size)
    resume_from = ckpt.resolve(cfg.checkpoint.resume)  # every rank reads the (shared) run directory
    # resumed: the checkpoint fills the head that from_pretrained would call newly initialised
    with FreshWarningHeld() if resume_from is not None else contextlib.nullcontext():
        model = add_lora(build_model(cfg, data, tokenizer), cfg.lora, data.head).to(env.device)  # lora.r: adapters
    pad = tokenizer.pad_token_id
    features = {s: encode(data, s, tokenizer, cfg.data.max_length, cfg.electra.doc_stride) for s in data.splits}
    stream = ExampleStream(features["train"], cfg.train.batch_size, cfg.train.seed, env, lambda b: collate(b, pad),
                           group_by_length=cfg.data.group_by_length, accum=cfg.train.grad_accum_steps)

    # DDP wraps the model (ddp_model), FSDP shards it in place: the optimizer and the resume come after.
    ddp_model = parallelize(model, env, cfg.train.distributed, activation_checkpointing=cfg.train.activation_checkpointing,
                            precision=cfg.train.precision)
    sharded = is_sharded(model)
    optimizer = build_optimizer(model, cfg.optim, num_layers=model.config.num_hidden_layers)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.train.max_steps)

    start, last_ckpt = 0, None
    if resume_from is not None:
        state = ckpt.load(resume_from, model, optimizer, scheduler, rank=env.rank)
        stream.load_state_dict(state["data"])
        start, last_ckpt = state["step"], Path(resume_from)
    else:
        seed_everything(cfg.train.seed, env.rank)  # each rank its own dropout stream
    if env.is_main:
        cfg.save_yaml(run_dir / "config.yaml")

    log = MetricsLogger(run_dir, enabled=env.is_main, tensorboard=cfg.train.tensorboard, resume_step=start)
    bar = Progress(cfg.train.max_steps, initial=start, enabled=env.is_main and cfg.train.progress,
                   desc=f"finetune {run_dir.name}")
    if env.is_main and start:
        bar.write(f"resumed from {resume_from} at step {start}")
    batches = iter(stream)
    eval_batch = cfg.eval.batch_size or cfg.train.batch_size

    def run_eval(split: str = "validation", full: bool = False, net: torch.nn.Module | None = None
                 ) -> dict[str, float]:
        """Scores of ``net`` (default: the model) on a split, by the main process ({} elsewhere); during
        training at most eval.max_batches batches. FSDP: every rank calls it, rank 0 scores a plain
        copy of the gathered weights (a different number of batches per rank would stall sharded blocks)."""
        if split not in features:
            return {}
        net = net if net is not None else gather_model(model, env.rank)  # FSDP: a collective
        if not env.is_main:
            return {}
        feats, examples = features[split], data.splits[split]
        if cfg.eval.max_batches is not None and not full and data.head != "qa":  # QA: windows != examples
            # evenly spaced examples (spread_subset): the first rows of a file are often sorted by label
            keep = spread_subset(range(len(feats)), cfg.eval.max_batches * eval_batch)
            feats, examples = [feats[i] for i in keep], [examples[i] for i in keep]
        preds, loss = predict(net.to(env.device), feats, eval_batch, pad, env.device, cfg.train.precision,
                              by_length=data.head in ("classification", "regression"))
        return score(data, examples, feats, preds, loss, cfg.electra.max_answer_length)

    def save(step: int) -> Path:
        return save_checkpoint(ckpt, env, step, model, optimizer, scheduler, stream.state_dict(),
                               save_extra=tokenizer.save_pretrained, sharded=sharded, last_good=last_ckpt)

    def evaluation(step: int) -> None:  # logged, and recorded into the step's checkpoint
        metrics = run_eval()  # rank 0's; {} on the others
        report_evaluation(ckpt, env, log, bar, step, metrics, main_metric(cfg, metrics))

    def evaluates(step: int) -> bool:
        return bool(cfg.eval.every_steps and step % cfg.eval.every_steps == 0) or step == cfg.train.max_steps

    t_log, tokens_since = time.perf_counter(), 0
    try:
        if start and evaluates(start):  # its evaluation now if it failed after the save, else ranked again
            resume_evaluation(ckpt, env, start, state["metrics"], evaluation, lambda m: main_metric(cfg, m))
        for step in range(start + 1, cfg.train.max_steps + 1):
            micro = [to_device(next(batches), env.device) for _ in range(cfg.train.grad_accum_steps)]
            out = train_step(ddp_model, micro, loss_fn, optimizer, scheduler, max_grad_norm=cfg.optim.max_grad_norm,
                             precision=cfg.train.precision, step=step, env=env, last_checkpoint=last_ckpt)
            tokens_since += int(out.metrics.get("tokens", 0))
            bar.update(step, loss=out.loss, tokens=int(out.metrics.get("tokens", 0)))
            if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                now = time.perf_counter()
                log.log(step, {"loss": out.loss, "lr": out.lr, "grad_norm": out.grad_norm,
                               "tokens_per_s": tokens_since / max(now - t_log, 1e-9),
                               "epoch": stream.epoch, **out.metrics})
                t_log, tokens_since = now, 0
            every_ckpt = cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0
            if every_ckpt or evaluates(step):  # each evaluation competes for checkpoints/best; saved before
                last_ckpt = save(step)          # its evaluation: one that fails loses no training
            if evaluates(step):
                evaluation(step)
    finally:
        bar.close()
        log.close()

    best = ckpt.best_model(model, env.rank)  # FSDP: a collective, the full weights gathered on rank 0
    if env.is_main:
        finish(run_dir, ckpt.best(), best, tokenizer, data, run_eval)
    barrier(env)
    cleanup(env)
    release_run_dir(run_dir)
    return run_dir


def main_metric(cfg: RunConfig, metrics: dict[str, float]) -> str | None:
    """``eval.metric``; ``auto``: the task's first metric (accuracy, Matthews corr., Pearson, SQuAD F1, ...)."""
    if cfg.eval.metric != "auto":
        return cfg.eval.metric
    return next((k for k in metrics if k != "loss"), None)


def finish(run_dir: Path, best: dict[str, Any] | None, model: torch.nn.Module, tokenizer: ElectraTokenizer,
           data: TaskData, run_eval: Callable[..., dict[str, float]]) -> None:
    """Score ``model`` (the best checkpoint's, ``CheckpointManager.best_model``; ``best`` its record) on
    validation and test, save it as ``RUN/model``."""
    # GLUE's test files have no labels: listed, not scored (as T5's fine-tuning does)
    no_labels = [s for s in ("validation", "test") if data.unlabelled(s)]
    results = {"head": data.head, "best_checkpoint": best,
               **{s: run_eval(s, full=True, net=model) for s in ("validation", "test") if s not in no_labels},
               **({"unlabelled_splits": no_labels} if no_labels else {}),
               "majority_baseline": {s: majority_baseline(data, s) for s in ("validation", "test")
                                     if majority_baseline(data, s)},
               "tfidf_baseline": classification_baseline(data.splits) if data.head == "classification" else {},
               "num_examples": {s: len(v) for s, v in data.splits.items()}}
    # LoRA: RUN/adapter, then merged; RUN/model whole or not at all
    save_final_model(export_model(model, run_dir), run_dir / "model", tokenizer.save_pretrained)
    # last, whole: the quickstart takes RUN/results.json for a finished run (it was written before the
    # model: a run killed while saving it was taken for finished, without a model)
    write_text_atomic(run_dir / "results.json", json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    plot_run_if_available(run_dir)


def main(argv: list[str] | None = None) -> int:
    """``--config FILE`` plus ``--section.key=value`` overrides."""
    parser = argparse.ArgumentParser(prog="python -m t5electra.recipes.finetune_electra",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="FILE", help="YAML run config (sections model, data, optim, ...)")
    args, overrides = parser.parse_known_args(argv)
    try:
        run_dir = train(load_config(args.config, overrides, base=default_config()))
    except T5ElectraError as e:
        print(f"finetune_electra: error: {e}", file=sys.stderr)
        return 1
    if is_rank_zero():  # torchrun: rank 0 wrote the results and prints them once
        print(json.dumps(json.loads((run_dir / "results.json").read_text(encoding="utf-8")), indent=2,
                         ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
