"""Seconds per T5 training step as our recipes run it, in this process (docs/performance.md):

    python -m benchmarks.train_step --preset t5-small --shape 16x128x32 [--precision bf16] [--steps 6]
    python -m benchmarks.train_step --device cuda --preset t5-base --shape 32x512x128 --mfu

The recipe's pieces: ``init_distributed("cpu")`` (and with it the allocator setting of
``t5electra.machine.keep_freed_memory``), the optim section's default optimiser (fused AdamW),
autocast, forward + backward + step on one random batch. Run it from two checkouts, alternated, to
compare commits; the median and the peak RSS are printed (on a GPU each step is synchronised;
``--mfu``: model FLOPs utilisation against the matmul peak measured in the same run, as the
benchmark's MFU column). Not a test: timings depend on the machine.
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

from .cases import random_t5_batch, t5_train_flops, train_step_fn
from .harness import matmul_peak


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="t5-small")
    p.add_argument("--shape", default="16x128x32", help="BATCHxSOURCExTARGET tokens")
    p.add_argument("--precision", default="bf16", choices=["fp32", "bf16"])
    p.add_argument("--steps", type=int, default=6, help="timed steps (after 2 untimed)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--mfu", action="store_true", help="also measure the matmul peak and report MFU")
    a = p.parse_args(argv)
    B, S, T = (int(v) for v in a.shape.split("x"))
    device = init_distributed(a.device).device
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset(a.preset)).to(device).train()
    opt = build_optimizer(model, OptimSection(lr=1e-4))
    batch = random_t5_batch(model.config.vocab_size, B, S, T, device.type)
    step = train_step_fn(model, opt, batch, device.type, a.precision)
    for _ in range(2):
        step()
    times = []
    for _ in range(a.steps):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    out = {"preset": a.preset, "shape": a.shape, "precision": a.precision, "device": device.type,
           "median_s": round(median, 4), "tokens_per_s": round(B * (S + T) / median),
           "seconds": [round(t, 4) for t in times],
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    if a.mfu:
        peak = matmul_peak(a.precision, device.type)
        out.update(peak_gflops=round(peak / 1e9), mfu=round(t5_train_flops(model.config, B, S, T) / median / peak, 4))
    print(out, flush=True)
    return out


if __name__ == "__main__":
    main()
