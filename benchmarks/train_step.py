"""Seconds per T5 training step as our recipes run it, in this process (docs/performance.md):

    python -m benchmarks.train_step --preset t5-small --shape 16x128x32 [--precision bf16] [--steps 6]

The recipe's pieces: ``init_distributed("cpu")`` (and with it the allocator setting of
``t5electra.machine.keep_freed_memory``), the optim section's default optimiser (fused AdamW),
autocast, forward + backward + step on one random batch. Run it from two checkouts, alternated, to
compare commits; the median and the peak RSS are printed. Not a test: timings depend on the machine.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.train.config import OptimSection
from t5electra.train.distributed import init_distributed
from t5electra.train.optim import build_optimizer

from .cases import random_t5_batch, train_step_fn


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="t5-small")
    p.add_argument("--shape", default="16x128x32", help="BATCHxSOURCExTARGET tokens")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=6, help="timed steps (after 2 untimed)")
    a = p.parse_args(argv)
    B, S, T = (int(v) for v in a.shape.split("x"))
    init_distributed("cpu")
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset(a.preset)).train()
    opt = build_optimizer(model, OptimSection(lr=1e-4))
    step = train_step_fn(model, opt, random_t5_batch(model.config.vocab_size, B, S, T, "cpu"), "cpu", a.precision)
    for _ in range(2):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out = {"preset": a.preset, "shape": a.shape, "precision": a.precision,
           "median_s": round(statistics.median(times), 3), "seconds": [round(t, 3) for t in times],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    print(out, flush=True)
    return out


if __name__ == "__main__":
    main()
