"""A complete, tiny training run on the shared training engine (used by test_checkpointing.py and
test_distributed.py as a subprocess; also a template for the real recipes).

    python tests/toy_train.py --train.output_dir=RUN --train.max_steps=12 [--checkpoint.resume=auto]
    torchrun --nproc_per_node 2 tests/toy_train.py ...

Model: a tiny MLP language model with dropout (so the RNG state matters) over a deterministic
token stream with a cursor (so the data position matters). Test hooks (environment variables):
TOY_KILL_AT_STEP=k SIGKILLs the process in the middle of step k (after its forward/backward
started, before the update); TOY_KILL_DURING_SAVE=k SIGKILLs it half-way through writing
checkpoint k; TOY_NAN_AFTER_STEP=k writes a NaN into a weight after step k (an update that diverged
with a finite loss and gradient). TOY_DROPOUT sets the dropout (default 0.1).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from t5electra.checkpoint.io import save_state_dict
from t5electra.train.checkpointing import CheckpointManager
from t5electra.train.config import load_config
from t5electra.train.distributed import cleanup, init_distributed, wrap_ddp
from t5electra.train.logging import MetricsLogger
from t5electra.train.loop import seed_everything, train_step
from t5electra.train.optim import build_optimizer
from t5electra.train.saving import save_checkpoint
from t5electra.train.schedules import build_scheduler

VOCAB, CONTEXT = 32, 4


class ToyLM(nn.Module):
    """Predict a token from the CONTEXT tokens before it."""

    def __init__(self, dropout: float):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, 16)
        self.norm = nn.LayerNorm(16 * CONTEXT)
        self.hidden = nn.Linear(16 * CONTEXT, 32)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(32, VOCAB)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # (B, CONTEXT) -> (B, VOCAB)
        h = self.norm(self.embed(tokens).flatten(1))
        return self.out(self.drop(torch.nn.functional.gelu(self.hidden(h))))


class ToyStream:
    """Global batches ``(B, CONTEXT + 1)`` that depend only on (seed, cursor); rank r of W takes
    rows r::W of each global batch, so W processes together see what one process sees."""

    def __init__(self, seed: int, global_batch: int):
        self.seed, self.global_batch, self.cursor = seed, global_batch, 0

    def next(self, rank: int = 0, world_size: int = 1) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.cursor)
        self.cursor += 1
        ctx = torch.randint(0, VOCAB, (self.global_batch, CONTEXT), generator=g)
        target = (ctx[:, 0] * 3 + ctx[:, -1]) % VOCAB  # learnable rule
        return torch.cat([ctx, target[:, None]], dim=1)[rank::world_size]

    def state_dict(self) -> dict:
        return {"cursor": self.cursor, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.cursor = int(state["cursor"])


def loss_fn(model: nn.Module, batch: torch.Tensor):
    logits = model(batch[:, :CONTEXT])
    loss = nn.functional.cross_entropy(logits, batch[:, CONTEXT])
    return loss, {"tokens": batch.numel()}


def main(argv: list[str]) -> int:
    torch.set_num_threads(1)
    cfg = load_config(None, argv)
    run_dir = Path(cfg.train.output_dir)
    env = init_distributed(cfg.train.device)
    seed_everything(cfg.train.seed)  # same init on every rank (DDP also broadcasts rank 0's weights)
    model = ToyLM(float(os.environ.get("TOY_DROPOUT", "0.1"))).to(env.device)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.schedule, cfg.train.max_steps)
    ckpt = CheckpointManager(run_dir, cfg.to_dict(), keep_last=cfg.checkpoint.keep_last)
    stream = ToyStream(cfg.train.seed, cfg.train.batch_size * env.world_size)

    start, last = 0, None
    resume_from = ckpt.resolve(cfg.checkpoint.resume)
    if resume_from is not None:
        state = ckpt.load(resume_from, model, optimizer, scheduler, rank=env.rank)
        start, last = state["step"], resume_from
        stream.load_state_dict(state["data"])
    else:
        seed_everything(cfg.train.seed, env.rank)  # per-rank dropout streams
    if env.is_main:
        cfg.save_yaml(run_dir / "config.yaml")
    model = wrap_ddp(model, env)
    kill_at = int(os.environ.get("TOY_KILL_AT_STEP", "0"))
    kill_save = int(os.environ.get("TOY_KILL_DURING_SAVE", "0"))
    nan_after = int(os.environ.get("TOY_NAN_AFTER_STEP", "0"))

    with MetricsLogger(run_dir, enabled=env.is_main, tensorboard=False) as log:
        for step in range(start + 1, cfg.train.max_steps + 1):
            micro = [stream.next(env.rank, env.world_size).to(env.device) for _ in range(cfg.train.grad_accum_steps)]
            if step == kill_at:
                model(micro[0][:, :CONTEXT]).sum().backward()  # mid-step: gradients half-made
                os.kill(os.getpid(), signal.SIGKILL)
            out = train_step(model, micro, loss_fn, optimizer, scheduler, max_grad_norm=cfg.optim.max_grad_norm,
                             precision=cfg.train.precision, step=step, env=env, last_checkpoint=last)
            log.log(step, {"loss": out.loss, "lr": out.lr, "grad_norm": out.grad_norm, **out.metrics})
            if step == nan_after:
                with torch.no_grad():
                    next(model.parameters())[0, 0] = float("nan")
            if step % cfg.checkpoint.every_steps == 0 or step == cfg.train.max_steps:
                if env.is_main and step == kill_save:
                    ckpt.on_partial_write = lambda tmp: os.kill(os.getpid(), signal.SIGKILL)
                last = save_checkpoint(ckpt, env, step, model, optimizer, scheduler, stream.state_dict(),
                                       last_good=last)
    if env.is_main:
        params = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        save_state_dict({k.removeprefix("module."): v for k, v in params.items()}, run_dir, "final.safetensors")
    cleanup(env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
