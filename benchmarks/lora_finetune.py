"""LoRA vs full fine-tuning of t5-base on this CPU: trainable parameters, peak memory, step time.

    python benchmarks/lora_finetune.py                         # t5-base, batch 8 x 128 -> 32, 5 steps
    python benchmarks/lora_finetune.py --preset t5-small --steps 3

Each mode runs in a fresh subprocess (so ``ru_maxrss``, the peak resident memory, is that mode's
alone) on random weights: a model from the preset, ``get_peft_model`` with the given targets for
LoRA, AdamW over the trainable parameters (``param_groups`` as the recipes build them), and
``--steps`` steps of forward + backward + optimizer step on one fixed random batch (inputs
``--batch`` x ``--length``, targets ``--target-length``). The step time is the median of the steps
after the first (which allocates the optimizer state). Prints a Markdown table for docs/training.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from t5electra.lora import LoraConfig, get_peft_model
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.train.optim import param_groups


def one_mode(args) -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    model = T5ForConditionalGeneration(T5Config.from_preset(args.preset, dropout_rate=0.0)).train()
    total = model.num_parameters()
    if args.mode == "lora":
        model = get_peft_model(model, LoraConfig(r=args.r, lora_alpha=2 * args.r, target_modules=args.targets))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW(param_groups(model, 1e-4, 0.01), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    ids = torch.randint(2, vocab, (args.batch, args.length), generator=g)
    labels = torch.randint(2, vocab, (args.batch, args.target_length), generator=g)
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    optimizer_state = sum(v.numel() * v.element_size() for s in opt.state.values() for v in s.values()
                          if torch.is_tensor(v))
    return {"mode": args.mode, "params": total, "trainable": trainable, "optimizer_state_mb": optimizer_state / 2**20,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "step_s": statistics.median(times[1:]) if len(times) > 1 else times[0], "steps_s": times}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="t5-base")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=128)
    ap.add_argument("--target-length", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--targets", nargs="+", default=["q", "v"])
    ap.add_argument("--mode", choices=("full", "lora"), help=argparse.SUPPRESS)  # the subprocess's part
    args = ap.parse_args(argv)
    if args.mode:
        print(json.dumps(one_mode(args)))
        return 0
    rows = []
    for mode in ("full", "lora"):
        out = subprocess.run([sys.executable, __file__, *(argv if argv is not None else sys.argv[1:]),
                              f"--mode={mode}"], check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\n{args.preset}, batch {args.batch} x {args.length} -> {args.target_length}, AdamW, {args.steps} steps, "
          f"{args.threads} threads; LoRA r={args.r} on {', '.join(args.targets)}\n")
    print("| | trainable parameters | optimizer state | peak RSS | step time (median) |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        name = "full fine-tuning" if r["mode"] == "full" else f"LoRA r={args.r} ({', '.join(args.targets)})"
        print(f"| {name} | {r['trainable']:,} ({100 * r['trainable'] / r['params']:.2f} %) | "
              f"{r['optimizer_state_mb']:,.0f} MB | {r['peak_rss_mb']:,.0f} MB | {r['step_s']:.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
