"""Pretrain T5 with span corruption — the whole loop, top to bottom.

    python -m t5electra.recipes.pretrain_t5 --config run.yaml --train.max_steps=1000
    torchrun --nproc_per_node 4 -m t5electra.recipes.pretrain_t5 --config run.yaml

Pipeline (Raffel et al. 2020, §3.1.4; docs/reference.md): text files -> token shards (tokenised once,
cached) -> packed rows of ``raw_length`` tokens (568 for inputs of 512) -> span corruption (15%
noise, mean span 3, one sentinel per span, EOS on both sides) -> fixed-shape batches -> the
encoder-decoder's cross-entropy on the targets. Each torchrun rank reads its own rows.

The optimiser/schedule come from the config: T5's own recipe is ``optim.name=adafactor``,
``schedule.name=inverse_sqrt``, ``optim.lr=0.01``, ``schedule.warmup_steps=10000``; nanoT5's is
``optim.name=adamw_scaled``, ``optim.lr=2e-2``, ``schedule.name=cosine``. Everything a resumed run
needs is in each checkpoint (``--checkpoint.resume=auto``); the checkpoint directories and
``RUN/model`` are complete model directories (weights, config.json, tokenizer).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
import torch

from ..data.objectives import Seq2SeqCollator, SpanCorruption, t5_sentinel_count, t5_sentinel_start_id
from ..data.sources import Corpus
from ..data.shards import PackedDataset, StreamingDataLoader, build_shards
from ..errors import ConfigError, DataError, T5ElectraError
from ..tokenizers import T5Tokenizer
from ..plot import plot_run_if_available
from ..train.checkpointing import (CheckpointManager, load_data_cursor, prepare_run_dir, release_run_dir, save_final_model,
                                   unwrap_model)
from ..train.config import RunConfig, load_config, run_inputs
from ..train.distributed import DistEnv, barrier, cleanup, init_distributed, parallelize
from ..train.logging import MetricsLogger, Progress
from ..train.lora import refuse_lora
from ..train.loop import evaluate, seed_everything, to_device, train_step
from ..train.optim import build_optimizer
from ..train.saving import report_evaluation, resume_evaluation, save_checkpoint
from ..train.schedules import build_scheduler
from ..train.sharded import gather_model, is_sharded
from ..train.seq2seq import DEFAULT_PRESET, build_model, load_tokenizer, loss_fn  # noqa: F401 (DEFAULT_PRESET)



# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------
def build_loader(cfg: RunConfig, files: list[str], tokenizer: T5Tokenizer, objective: SpanCorruption,
                 env: DistEnv, *, train: bool) -> StreamingDataLoader:
    """Shards (built once, cached; rank 0 builds while the others wait) -> packed, corrupted rows."""
    if not files:
        raise DataError("data.train_files is empty: give text/jsonl/csv/parquet files or directories"
                        if train else "data.validation_files is empty")
    # a JSONL field / CSV or Parquet column other than 'text': data.text_columns=[NAME]
    shards = build_shards(Corpus(files, field=(cfg.data.text_columns or ["text"])[0]), tokenizer)
    if shards.num_tokens == 0:
        raise DataError(f"{', '.join(files)}: no tokens (empty files?)")
    dataset = PackedDataset(shards, row_length=objective.raw_length, packing="t5", transform=objective,
                            seed=cfg.train.seed, num_epochs=None if train else 1, rank=env.rank,
                            world_size=env.world_size, eos_token_id=tokenizer.eos_token_id, shuffle=train)
    collate = Seq2SeqCollator(pad_token_id=tokenizer.pad_token_id, inputs_length=objective.max_inputs_length,
                              targets_length=objective.targets_length)
    batch_size = cfg.train.batch_size if train else (cfg.eval.batch_size or cfg.train.batch_size)
    # A DataLoader draws its base seed from the global torch RNG each time it is iterated; its own
    # generator keeps that draw out of the dropout stream, which must continue exactly on resume.
    return StreamingDataLoader(dataset, batch_size=batch_size, num_workers=cfg.data.num_workers if train else 0,
                               collate_fn=collate, generator=torch.Generator().manual_seed(cfg.train.seed))


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def train(cfg: RunConfig) -> Path:
    """Pretrain as ``cfg`` says; returns the run directory (``RUN/model`` is the final model)."""
    refuse_lora(cfg.lora, "T5 pretraining")
    if cfg.data.target_length is not None:  # read only by T5 fine-tuning: refused, not silently ignored
        raise ConfigError(f"data.target_length={cfg.data.target_length} is for T5 fine-tuning; T5 pretraining derives its "
                          f"targets from data.max_length (span corruption: with data.noise_density and data.mean_noise_span_length)")
    env = init_distributed(cfg.train.device, strategy=cfg.train.distributed, deterministic=cfg.train.deterministic)
    run_dir = Path(cfg.train.output_dir)
    prepare_run_dir(run_dir, cfg.checkpoint.resume, cfg.checkpoint.overwrite, env.is_main,
                    inputs=run_inputs(cfg))  # before any work
    seed_everything(cfg.train.seed)  # identical initial weights on every rank

    tokenizer = load_tokenizer(cfg)
    model = build_model(cfg, tokenizer).to(env.device)
    sentinel = t5_sentinel_start_id(tokenizer)
    objective = SpanCorruption(sentinel_start_id=sentinel, eos_token_id=tokenizer.eos_token_id,
                               inputs_length=cfg.data.max_length, noise_density=cfg.data.noise_density,
                               mean_noise_span_length=cfg.data.mean_noise_span_length,
                               num_sentinels=t5_sentinel_count(tokenizer, sentinel))  # fewer than 100: an error
    ckpt = CheckpointManager.for_run(cfg, run_dir, env.world_size)
    resume_from = ckpt.resolve_checked(cfg.checkpoint.resume)  # every rank reads the (shared) run directory
    if env.is_main:  # build the token shards once (validation's too: a bad file stops the run before step 1,
        # not at its first evaluation); the other ranks then find them in the cache
        build_loader(cfg, cfg.data.train_files, tokenizer, objective, env, train=True)
        if cfg.data.validation_files:
            build_loader(cfg, cfg.data.validation_files, tokenizer, objective, env, train=False)
    barrier(env)
    loader = build_loader(cfg, cfg.data.train_files, tokenizer, objective, env, train=True)

    # DDP wraps the model (ddp_model), FSDP shards it in place: the optimizer comes after.
    ddp_model = parallelize(model, env, cfg.train.distributed, activation_checkpointing=cfg.train.activation_checkpointing,
                            precision=cfg.train.precision)
    sharded = is_sharded(model)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.train.max_steps)

    # Resume: model, optimizer, scheduler, RNG and the data cursor, all from one checkpoint.
    start, last_ckpt = 0, None
    if resume_from is not None:
        state = ckpt.load(resume_from, model, optimizer, scheduler, rank=env.rank)
        load_data_cursor(loader, state["data"], cfg.checkpoint.allow_data_change)
        start, last_ckpt = state["step"], Path(resume_from)
    else:
        seed_everything(cfg.train.seed, env.rank)  # each rank its own dropout stream
    if env.is_main:
        cfg.save_yaml(run_dir / "config.yaml")

    log = MetricsLogger(run_dir, enabled=env.is_main, tensorboard=cfg.train.tensorboard, resume_step=start)
    batches = iter(loader)
    bar = Progress(cfg.train.max_steps, initial=start, enabled=env.is_main and cfg.train.progress,
                   desc=f"pretrain {run_dir.name}")
    if env.is_main and start:
        bar.write(f"resumed from {resume_from} at step {start}")

    def run_eval() -> dict[str, float]:
        if not cfg.data.validation_files:
            return {}
        val = build_loader(cfg, cfg.data.validation_files, tokenizer, objective, env, train=False)
        metrics = evaluate(ddp_model, (to_device(b, env.device) for b in val), loss_fn, precision=cfg.train.precision,
                           env=env, max_batches=cfg.eval.max_batches)
        metrics.pop("tokens", None)
        return metrics

    def save(step: int) -> Path:
        return save_checkpoint(ckpt, env, step, model, optimizer, scheduler, loader.dataset.state_dict(),
                               save_extra=tokenizer.save_pretrained, sharded=sharded, last_good=last_ckpt)

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
            out = train_step(ddp_model, micro, loss_fn, optimizer, scheduler, max_grad_norm=cfg.optim.max_grad_norm,
                             precision=cfg.train.precision, step=step, env=env, last_checkpoint=last_ckpt)
            tokens_since += int(out.metrics.get("tokens", 0))
            bar.update(step, loss=out.loss, tokens=int(out.metrics.get("tokens", 0)))
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
        save_final_model(unwrap_model(final_model), run_dir / "model", tokenizer.save_pretrained)  # whole or not at all
        plot_run_if_available(run_dir)
    barrier(env)
    cleanup(env)
    release_run_dir(run_dir)
    return run_dir


def main(argv: list[str] | None = None) -> int:
    """``--config FILE`` plus ``--section.key=value`` overrides."""
    parser = argparse.ArgumentParser(prog="python -m t5electra.recipes.pretrain_t5", description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="FILE", help="YAML run config (sections model, data, optim, ...)")
    args, overrides = parser.parse_known_args(argv)
    try:
        cfg = load_config(args.config, overrides)
        if cfg.data.objective != "t5-span-corruption":
            raise ConfigError(f"data.objective={cfg.data.objective!r}: this recipe trains 't5-span-corruption'")
        train(cfg)
    except T5ElectraError as e:
        print(f"pretrain_t5: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
