"""Pretrain ELECTRA with replaced-token detection (or the MLM baseline) — the whole loop, top to bottom.

    python -m t5electra.recipes.pretrain_electra --config run.yaml --train.max_steps=1000
    torchrun --nproc_per_node 4 -m t5electra.recipes.pretrain_electra --config run.yaml

Pipeline (Clark et al. 2020, https://arxiv.org/abs/2003.10555; docs/reference.md): text files -> token
shards (tokenised once, cached) -> packed rows ``[CLS] tokens [SEP]`` of ``data.max_length`` ->
:class:`~t5electra.models.electra_rtd.ElectraPretrainer`, which masks 15% of the real tokens,
lets the small generator fill them in (MLM loss), samples replacements with Gumbel-max, and
trains the discriminator to spot them (BCE over every real token, weight ``electra.disc_weight``
= 50). ``data.objective=mlm`` trains the MLM-only baseline instead: one masked LM of the
discriminator's size, same masking, no discriminator. Each torchrun rank reads its own rows;
each row carries a seed of its own (``PackedDataset(example_seeds=True)``: from ``train.seed`` and
the row's place in the stream), from which its masks and replacement samples are drawn, so they do
not depend on the rank or the number of processes: N processes train as one process on the same
global batch (dropout apart), and a run resumes exactly on another number of processes.

ELECTRA's optimiser, the defaults of ``t5electra pretrain --objective electra-rtd``: AdamW with
``optim.lr=5e-4`` (Small), ``optim.weight_decay=0.01`` except LayerNorm weights and biases,
``optim.eps=1e-6``, linear warmup (``schedule.warmup_steps``, 10k in the paper) then linear decay
to 0 (the official code's Adam has no bias correction and decays from step 0:
``optim.bias_correction=false``, ``schedule.decay_from_start=true``). Train metrics per logged step: ``gen_loss``, ``disc_loss``, ``gen_acc`` (generator accuracy on
the masked positions), ``disc_acc`` / ``disc_precision`` / ``disc_recall`` / ``disc_auc``
(replaced-token detection over the real tokens); the eval lines have the same on the held-out
files, with the same per-example masks at every evaluation, so that evaluations are comparable. ``t5electra plot RUN``
draws them.

Outputs: ``RUN/model/`` and every ``RUN/checkpoints/step-N/`` hold ``generator/`` (an HF
``ElectraForMaskedLM``), ``discriminator/`` (an HF ``ElectraForPreTraining``, the model to
fine-tune), ``pretraining_config.json`` and the tokenizer files (also inside both sub-directories,
so that each is a complete model directory). ``ElectraPipeline.from_pretrained(RUN/model)`` fills
masks and detects replaced tokens; ``t5electra finetune --model.init_from=RUN/model/discriminator``
fine-tunes. ``--checkpoint.resume=auto`` continues a run exactly.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from ..data.sources import Corpus
from ..data.shards import PackedDataset, StreamingDataLoader, build_shards
from ..errors import ConfigError, DataError, T5ElectraError
from ..models.electra import ElectraConfig
from ..models.electra_rtd import ElectraPretrainer
from ..tokenizers import ElectraTokenizer
from ..plot import plot_run_if_available
from ..train.checkpointing import (CheckpointManager, load_data_cursor, prepare_run_dir, release_run_dir, run_model_dir,
                                   save_final_model, unwrap_model)
from ..train.config import RunConfig, load_config, run_inputs
from ..train.distributed import DistEnv, barrier, cleanup, init_distributed, parallelize
from ..train.logging import MetricsLogger, Progress
from ..train.lora import refuse_lora
from ..train.loop import evaluate, seed_everything, to_device, train_step
from ..train.optim import build_optimizer
from ..train.saving import report_evaluation, resume_evaluation, save_checkpoint
from ..train.schedules import build_scheduler
from ..train.sharded import gather_model, is_sharded

DEFAULT_PRESET = "electra-small"
OBJECTIVES = ("electra-rtd", "mlm")

# ElectraPretrainer's metric names -> the names of the metrics.jsonl convention (train/logging.py),
# which `t5electra plot` draws in electra.png.
METRIC_NAMES = {"gen_accuracy": "gen_acc", "disc_accuracy": "disc_acc", "disc_precision": "disc_precision",
                "disc_recall": "disc_recall", "disc_auc": "disc_auc",
                "sampled_equals_original": "gen_sampled_acc", "replaced_fraction": "replaced_fraction"}


def default_config(objective: str = "electra-rtd") -> RunConfig:
    """The engine's defaults with ELECTRA's pretraining recipe on top (Small, docs/reference.md): AdamW
    lr 5e-4, weight decay 0.01 (not LayerNorm / biases), eps 1e-6, linear warmup (1%) + decay to 0,
    sequences of 128."""
    cfg = RunConfig()
    cfg.model.family, cfg.model.preset = "electra", DEFAULT_PRESET
    cfg.data.objective, cfg.data.max_length = objective, 128
    cfg.optim.name, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.eps = "adamw", 5e-4, 0.01, 1e-6
    cfg.schedule.name, cfg.schedule.warmup_ratio = "linear", 0.01  # the paper: 10k warmup steps of 1M
    return cfg


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
def load_tokenizer(cfg: RunConfig) -> ElectraTokenizer:
    source = cfg.data.tokenizer or cfg.model.init_from
    if source is None:
        raise ConfigError("data.tokenizer is not set: give an ELECTRA (WordPiece) tokenizer directory (train one "
                          "with `t5electra tokenizer train --kind electra`), or model.init_from a run that has one")
    return ElectraTokenizer.from_pretrained(run_model_dir(source))


def generator_config(cfg: RunConfig, disc: ElectraConfig) -> ElectraConfig:
    """The generator that goes with discriminator ``disc``: ``electra.generator_size`` x its hidden
    size by the official rule; else the widths of the preset's ``-generator`` (same depth and
    everything else as ``disc``, so ``model.overrides`` apply to both; where the overrides change the
    discriminator's widths, the preset's generator/discriminator ratio of the new ones); else 1/4."""
    size = cfg.electra.generator_size
    if size is not None:
        if not 0.0 < size <= 1.0:
            raise ConfigError(f"electra.generator_size must be in (0, 1], got {size}")
        return disc.generator_config(size)
    name = cfg.model.preset or DEFAULT_PRESET
    if f"{name}-generator" in ElectraConfig.presets:
        shape = ElectraConfig.presets[f"{name}-generator"]
        widths = ("hidden_size", "num_attention_heads", "intermediate_size")
        if not any(k in cfg.model.overrides for k in widths):
            return disc.replace(**{k: shape[k] for k in widths})
        # a discriminator made narrower or wider: the preset's generator/discriminator ratio of it
        # (its absolute widths made a generator wider than a narrowed discriminator)
        return disc.generator_config(shape["hidden_size"] / ElectraConfig.presets[name]["hidden_size"])
    return disc.generator_config(0.25)


def build_model(cfg: RunConfig, tokenizer: ElectraTokenizer) -> ElectraPretrainer:
    """From ``model.init_from`` (a directory written by this recipe) or ``model.preset``, with
    ``model.overrides`` (discriminator config fields). A fresh model's vocabulary is the
    tokenizer's; the tokenizer must fit the model's vocabulary: checked here, before the first step."""
    m = cfg.model
    if m.family != "electra":
        raise ConfigError(f"model.family={m.family!r}: this recipe pretrains ELECTRA (use 'electra')")
    objective = cfg.data.objective
    if objective not in OBJECTIVES:
        raise ConfigError(f"data.objective={objective!r}: this recipe trains {' or '.join(map(repr, OBJECTIVES))}")
    options = dict(electra_objective=objective == "electra-rtd", disc_weight=cfg.electra.disc_weight,
                   mask_prob=cfg.data.mask_prob, mask_token_id=tokenizer.mask_token_id,
                   special_token_ids=[tokenizer.cls_token_id, tokenizer.sep_token_id])
    if m.init_from:
        if m.overrides:
            raise ConfigError("model.overrides cannot change the shapes of a pretrained model (model.init_from)")
        source = run_model_dir(m.init_from)
        if not (Path(source) / "pretraining_config.json").is_file() and (Path(source) / "config.json").is_file():
            raise ConfigError(f"model.init_from={m.init_from}: one model (config.json), not an ELECTRA pretraining "
                              f"output (generator/ + discriminator/ + pretraining_config.json, what this recipe "
                              f"writes), so there is no generator to go on with. Fine-tune it: `t5electra finetune "
                              f"--model.init_from={m.init_from} ...`; or pretrain afresh (model.preset)")
        model = ElectraPretrainer.from_pretrained(source, **options)
    else:
        overrides = {"vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id, **m.overrides}
        disc = ElectraConfig.from_preset(m.preset or DEFAULT_PRESET, **overrides)
        model = ElectraPretrainer(disc, generator_config(cfg, disc), **options)
    vocab_size = model.generator.config.vocab_size
    if len(tokenizer) > vocab_size:
        raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}: "
                          f"ids past it would crash the embedding (use a matching tokenizer, or set "
                          f"--model.overrides='{{vocab_size: {len(tokenizer)}}}' for a fresh model)")
    if cfg.data.max_length > model.generator.config.max_position_embeddings:
        raise ConfigError(f"data.max_length={cfg.data.max_length} is longer than the model's "
                          f"max_position_embeddings={model.generator.config.max_position_embeddings}")
    return model.train()


def build_loader(cfg: RunConfig, files: list[str], tokenizer: ElectraTokenizer, env: DistEnv, *,
                 train: bool) -> StreamingDataLoader:
    """Shards (built once, cached; rank 0 builds while the others wait) -> ``[CLS] ... [SEP]`` rows."""
    if not files:
        raise DataError("data.train_files is empty: give text/jsonl/csv/parquet files or directories"
                        if train else "data.validation_files is empty")
    # a JSONL field / CSV or Parquet column other than 'text': data.text_columns=[NAME]
    shards = build_shards(Corpus(files, field=(cfg.data.text_columns or ["text"])[0]), tokenizer)
    if shards.num_tokens == 0:
        raise DataError(f"{', '.join(files)}: no tokens (empty files?)")
    dataset = PackedDataset(shards, row_length=cfg.data.max_length, packing="electra", seed=cfg.train.seed,
                            num_epochs=None if train else 1, rank=env.rank, world_size=env.world_size,
                            cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
                            pad_token_id=tokenizer.pad_token_id, shuffle=train,
                            example_seeds=True)  # masks and samples per example, not per rank
    batch_size = cfg.train.batch_size if train else (cfg.eval.batch_size or cfg.train.batch_size)
    # Its own generator keeps the DataLoader's seed draw out of the global RNG, which drops out
    # and must continue exactly on resume.
    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=cfg.data.num_workers if train else 0,
                               generator=torch.Generator().manual_seed(cfg.train.seed))


def make_loss_fn(generator: torch.Generator | None = None):
    """``loss_fn(model, batch)``: the pretrainer's total loss and its metrics, under our names.

    A batch with ``example_seed`` (B,) (this recipe's loaders) has each row masked and sampled from
    its own seed: the same corruption on any rank, in any batch, after a resume, and at every
    evaluation. Without it ``generator`` draws them (None: the global torch RNG)."""

    def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
        seeds = batch.get("example_seed")
        out = model(batch["input_ids"], batch["attention_mask"], generator=None if seeds is not None else generator,
                    example_seeds=seeds)
        logs = {"gen_loss": out.generator_loss.detach()}
        if out.discriminator_loss is not None:
            logs["disc_loss"] = out.discriminator_loss.detach()
        logs.update({METRIC_NAMES.get(k, k): v for k, v in (out.metrics or {}).items()})
        logs["tokens"] = int(batch["attention_mask"].sum())
        return out.loss, logs

    return loss_fn


def save_tokenizer_everywhere(tokenizer: ElectraTokenizer, model: ElectraPretrainer):
    """``save_extra`` for checkpoints: the tokenizer in the root and in each model sub-directory."""

    def save(directory: Path) -> None:
        tokenizer.save_pretrained(directory)
        for part in ("generator", "discriminator"):
            if getattr(model, part) is not None:
                tokenizer.save_pretrained(Path(directory) / part)

    return save


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def train(cfg: RunConfig) -> Path:
    """Pretrain as ``cfg`` says; returns the run directory (``RUN/model`` is the final model)."""
    refuse_lora(cfg.lora, "ELECTRA pretraining")
    if cfg.data.target_length is not None:  # read only by T5 fine-tuning: refused, not silently ignored
        raise ConfigError(f"data.target_length={cfg.data.target_length} is for T5 fine-tuning; ELECTRA pretraining derives its "
                          f"targets from data.max_length (the masked positions)")
    env = init_distributed(cfg.train.device, strategy=cfg.train.distributed, deterministic=cfg.train.deterministic)
    run_dir = Path(cfg.train.output_dir)
    prepare_run_dir(run_dir, cfg.checkpoint.resume, cfg.checkpoint.overwrite, env.is_main,
                    inputs=run_inputs(cfg))  # before any work
    seed_everything(cfg.train.seed)  # identical initial weights on every rank

    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, tokenizer).to(env.device)
    ckpt = CheckpointManager.for_run(cfg, run_dir, env.world_size)
    resume_from = ckpt.resolve_checked(cfg.checkpoint.resume)  # every rank reads the (shared) run directory
    if env.is_main:  # build the token shards once (validation's too: a bad file stops the run before step 1,
        # not at its first evaluation); the other ranks then find them in the cache
        build_loader(cfg, cfg.data.train_files, tokenizer, env, train=True)
        if cfg.data.validation_files:
            build_loader(cfg, cfg.data.validation_files, tokenizer, env, train=False)
    barrier(env)
    loader = build_loader(cfg, cfg.data.train_files, tokenizer, env, train=True)

    # DDP wraps the model (ddp_model), FSDP shards it in place: the optimizer comes after.
    ddp_model = parallelize(model, env, cfg.train.distributed, activation_checkpointing=cfg.train.activation_checkpointing,
                            precision=cfg.train.precision)
    sharded = is_sharded(model)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.train.max_steps)
    save_extra = save_tokenizer_everywhere(tokenizer, model)

    # Resume: model, optimizer, scheduler, RNG and the data cursor, all from one checkpoint.
    start, last_ckpt = 0, None
    if resume_from is not None:
        state = ckpt.load(resume_from, model, optimizer, scheduler, rank=env.rank)
        load_data_cursor(loader, state["data"], cfg.checkpoint.allow_data_change)
        start, last_ckpt = state["step"], Path(resume_from)
    else:
        seed_everything(cfg.train.seed, env.rank)  # each rank its own dropout (masks and samples: per example)
    if env.is_main:
        cfg.save_yaml(run_dir / "config.yaml")
    train_loss = make_loss_fn()

    log = MetricsLogger(run_dir, enabled=env.is_main, tensorboard=cfg.train.tensorboard, resume_step=start)
    batches = iter(loader)
    bar = Progress(cfg.train.max_steps, initial=start, enabled=env.is_main and cfg.train.progress,
                   desc=f"pretrain {run_dir.name}")
    if env.is_main and start:
        bar.write(f"resumed from {resume_from} at step {start}")

    def run_eval() -> dict[str, float]:
        if not cfg.data.validation_files:
            return {}
        val = build_loader(cfg, cfg.data.validation_files, tokenizer, env, train=False)
        # every validation row carries its seed: the same masks and samples at every evaluation
        metrics = evaluate(ddp_model, (to_device(b, env.device) for b in val), make_loss_fn(),
                           precision=cfg.train.precision, env=env, max_batches=cfg.eval.max_batches)
        metrics.pop("tokens", None)
        return metrics

    def save(step: int) -> Path:
        return save_checkpoint(ckpt, env, step, model, optimizer, scheduler, loader.dataset.state_dict(),
                               save_extra=save_extra, sharded=sharded, last_good=last_ckpt)

    def evaluation(step: int) -> None:  # logged, and recorded into the step's checkpoint
        report_evaluation(ckpt, env, log, bar, step, run_eval(), cfg.eval.metric)

    def evaluates(step: int) -> bool:
        return bool(cfg.eval.every_steps and step % cfg.eval.every_steps == 0) or step == cfg.train.max_steps

    t_log, tokens_since = time.perf_counter(), 0
    try:
        if start and evaluates(start):  # its evaluation now if it failed after the save, else ranked again
            resume_evaluation(ckpt, env, start, state["metrics"], evaluation, cfg.eval.metric)
        for step in range(start + 1, cfg.train.max_steps + 1):
            micro = [to_device(next(batches), env.device) for _ in range(cfg.train.grad_accum_steps)]
            out = train_step(ddp_model, micro, train_loss, optimizer, scheduler, max_grad_norm=cfg.optim.max_grad_norm,
                             precision=cfg.train.precision, step=step, env=env, last_checkpoint=last_ckpt)
            tokens_since += int(out.metrics.get("tokens", 0))
            bar.update(step, loss=out.loss, tokens=int(out.metrics.get("tokens", 0)),
                       **{k: out.metrics[k] for k in ("gen_acc", "disc_auc") if k in out.metrics})
            if step % cfg.train.log_every == 0 or step == cfg.train.max_steps:
                now = time.perf_counter()
                log.log(step, {"loss": out.loss, "lr": out.lr, "grad_norm": out.grad_norm,
                               "tokens_per_s": tokens_since / max(now - t_log, 1e-9), **out.metrics})
                t_log, tokens_since = now, 0
            if (cfg.checkpoint.every_steps and step % cfg.checkpoint.every_steps == 0) or step == cfg.train.max_steps:
                last_ckpt = save(step)  # before the step's evaluation: one that fails loses no training
            if evaluates(step):
                evaluation(step)
    finally:
        bar.close()
        log.close()

    final_model = gather_model(model, env.rank)  # FSDP: the full weights, on rank 0
    if env.is_main:
        save_final_model(unwrap_model(final_model), run_dir / "model", save_extra)  # whole or not at all
        plot_run_if_available(run_dir)
    barrier(env)
    cleanup(env)
    release_run_dir(run_dir)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """``--config FILE`` plus ``--section.key=value`` overrides."""
    parser = argparse.ArgumentParser(prog="python -m t5electra.recipes.pretrain_electra",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="FILE", help="YAML run config (sections model, data, optim, ...)")
    args, overrides = parser.parse_known_args(argv)
    try:
        train(load_config(args.config, overrides, base=default_config()))
    except T5ElectraError as e:
        print(f"pretrain_electra: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
