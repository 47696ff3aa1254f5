"""Peak memory per process of a T5 training step: one process, DDP x2, FSDP x2, each with and without
activation checkpointing (docs/training.md, "Memory per process").

    nice -n 19 python benchmarks/fsdp_memory.py --preset t5-base --batch 2 --length 128 --target 32

Each configuration starts its processes (forked, with torchrun's environment variables, gloo on
CPU), builds the model from the preset (same seed), applies ``parallelize`` as the recipes do,
builds AdamW and runs ``--steps`` training steps (``train_step``) on a fixed random batch per rank. A
thread samples the process's resident memory (/proc/self/statm) every 2 ms; reported per rank: the
resident memory before the last step (weights, gradients and optimizer state of that rank, plus
the Python/torch baseline) and its peak during the last step. ``MALLOC_MMAP_THRESHOLD_=65536`` is set
(the script re-executes itself with it) so that freed tensors go back to the system and the
numbers follow the tensors alive, not glibc's caching. CPU memory: on GPUs
``torch.cuda.max_memory_allocated`` is the number to read, the proportions are the same.

Prints a JSON record per configuration and a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [("none", 1, False), ("none", 1, True), ("ddp", 2, False), ("ddp", 2, True), ("fsdp", 2, False),
           ("fsdp", 2, True)]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


class Peak:
    """Samples the resident memory in a thread between start() and stop()."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss())
            time.sleep(0.002)

    def __enter__(self):
        self.peak = rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss())


def worker(args, strategy: str, world: int, ckpt: bool, rank: int, port: int, queue) -> None:
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    if world == 1 and strategy == "none":
        for k in ("MASTER_ADDR", "MASTER_PORT"):
            os.environ.pop(k)
    sys.path.insert(0, str(ROOT))
    import torch

    from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
    from t5electra.train.distributed import cleanup, init_distributed, parallelize
    from t5electra.train.loop import train_step
    from t5electra.train.seq2seq import loss_fn

    torch.set_num_threads(1)
    env = init_distributed("cpu", strategy=strategy)
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset(args.preset, dropout_rate=0.0))
    params = sum(p.numel() for p in model.parameters())
    trained = parallelize(model, env, strategy, activation_checkpointing=ckpt)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(rank)
    V = model.config.vocab_size
    batch = {"input_ids": torch.randint(2, V, (args.batch, args.length), generator=g),
             "attention_mask": torch.ones(args.batch, args.length, dtype=torch.long),
             "labels": torch.randint(2, V, (args.batch, args.target), generator=g)}
    for step in range(args.steps):
        before = rss()
        t0 = time.perf_counter()
        with Peak() as peak:
            train_step(trained, [batch], loss_fn, optimizer, max_grad_norm=1.0, step=step + 1, env=env)
        seconds = time.perf_counter() - t0
    queue.put({"strategy": strategy, "processes": world, "activation_checkpointing": ckpt, "rank": rank,
               "params": params, "rss_before_mb": before / 2**20, "peak_step_mb": peak.peak / 2**20,
               "step_s": seconds})
    cleanup(env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="t5-base")
    parser.add_argument("--batch", type=int, default=2, help="examples per process")
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--target", type=int, default=32)
    parser.add_argument("--steps", type=int, default=2, help="the last one is measured (the first makes Adam's state)")
    parser.add_argument("--only", help="one configuration, e.g. fsdp,2,1")
    args = parser.parse_args()
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") != "65536":
        os.environ["MALLOC_MMAP_THRESHOLD_"] = "65536"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    configs = CONFIGS
    if args.only:
        s, w, c = args.only.split(",")
        configs = [(s, int(w), bool(int(c)))]
    ctx = multiprocessing.get_context("fork")
    rows = []
    for port, (strategy, world, ckpt) in enumerate(configs, start=29611):
        queue = ctx.Queue()
        procs = [ctx.Process(target=worker, args=(args, strategy, world, ckpt, r, port, queue)) for r in range(world)]
        for p in procs:
            p.start()
        got = sorted((queue.get(timeout=3600) for _ in procs), key=lambda r: r["rank"])
        for p in procs:
            p.join()
        for r in got:
            print(json.dumps(r), flush=True)
        rows.append(got)
    print(f"\n{args.preset}, batch {args.batch} x {args.length} -> {args.target} per process, AdamW fp32, "
          f"{rows[0][0]['params'] / 1e6:.0f} M parameters\n")
    print("| strategy | processes | activation checkpointing | resident before the step, per rank (MB) "
          "| peak during the step, per rank (MB) |")
    print("|---|---|---|---|---|")
    for got in rows:
        r = got[0]
        print(f"| {r['strategy']} | {r['processes']} | {'yes' if r['activation_checkpointing'] else 'no'} | "
              + " / ".join(f"{x['rss_before_mb']:.0f}" for x in got) + " | "
              + " / ".join(f"{x['peak_step_mb']:.0f}" for x in got) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
