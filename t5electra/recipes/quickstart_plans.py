"""The quickstart's plans: model sizes and step budgets (``Plan``, ``PLANS``), the plan sized to this
machine (``choose_plan``: measured matmul peaks decide) and the training precision of a plan.
recipes/quickstart.py runs them; docs/quickstart.md has the numbers behind each budget.
"""

from __future__ import annotations

import dataclasses

import torch

from ..machine import amx_bf16, cpu_flags, matmul_peak, native_bf16, onednn_fp32_preferred

# --------------------------------------------------------------------------------------------
# The plan: sizes and step budgets
# --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    """Model sizes and step budgets of one quickstart."""

    corpus_chars: int            # characters of the sample corpus used for tokenizers + pretraining
    t5_vocab: int                # SentencePiece pieces (plus 100 sentinels)
    electra_vocab: int           # WordPiece vocabulary
    t5_model: dict               # T5Config fields over the t5-v1_1-small preset
    electra_model: dict          # ElectraConfig fields over the electra-small preset (discriminator)
    seq_len: int                 # pretraining sequence length (tokens)
    pretrain_batch: int          # pretraining sequences per step
    t5_pretrain_steps: int
    electra_pretrain_steps: int
    finetune_batch: int          # fine-tuning examples per step
    finetune_max_length: int     # fine-tuning input length (tokens)
    t5_finetune_steps: int
    electra_finetune_steps: int
    t5_finetune_lr: float        # peak lr of t5_finetune_optim (T5's own recipe: Adafactor, constant 1e-3)
    electra_finetune_lr: float   # AdamW peak, linear warmup + decay, layer-wise decay 0.8
    electra_pretrain_lr: float   # AdamW peak (ELECTRA-Small's 5e-4 at batch 128; here 5e-4 and 1e-3 collapsed the discriminator)
    minilm_steps: int            # 0: skip the MiniLM stage
    eval_every: int              # fine-tuning: evaluate (and checkpoint) every this many steps
    eval_examples: int | None    # validation examples scored at each evaluation, which picks the kept
                                 # checkpoint (None: the whole split; the final scores always use all)
    sentiment_subset: int | None = None  # use only N examples of each sentiment split (tiny mode)
    in_domain: bool = True       # pretrain (and train the tokenizers) on unlabelled review text too (pretraining_text)
    other_snippets: int | None = None  # use at most N of the other_snippets() (tiny mode)
    pretrain_dropout: float = 0.1  # dropout while pretraining (fine-tuning uses finetune_dropout)
    finetune_dropout: float = 0.1
    t5_pretrain_lr: float = 1e-2   # peak lr of t5_pretrain_optim, cosine schedule
    t5_pretrain_optim: str = "adamw_scaled"  # nanoT5's RMS-scaled AdamW, or "adamw"
    t5_noise_density: float = 0.15  # span corruption: fraction of the tokens corrupted (T5's 15 %)
    t5_finetune_optim: str = "adafactor"     # "adafactor" (constant lr), "adamw" or "adamw_scaled" (linear warmup + decay)
    t5_finetune_scale_parameter: bool = True  # Adafactor: step relative to each weight's RMS (mesh-tf's default)
    electra_generator_size: float = 0.25
    electra_pretrain_warmup: float = 0.05
    minilm_lr: float = 1e-4
    finetune_llrd: float | None = 0.8  # ELECTRA fine-tuning: layer-wise lr decay (None: off; MiniLM: off)
    finetune_warmup: float = 0.1       # ELECTRA/MiniLM fine-tuning: warmup fraction of the linear schedule
    pooling: str = "first"             # ELECTRA/MiniLM classifier input: "first" ([CLS]) or "mean" (ElectraConfig.classifier_pooling)
    group_by_length: int = 0           # ELECTRA/MiniLM fine-tuning: batches of similar lengths (data.group_by_length)
    t5_group_by_length: int = 0        # the same for T5 fine-tuning
    precision: str = "auto"            # training: "fp32", "bf16" (autocast) or "auto" (train_precision)


# Side runs on the shared 2-core machine (docs/quickstart.md: what was tried, and the times):
# hidden 256 at 64-token packed rows (matmul shapes the CPU runs well; the snippets are ~30
# tokens), in-domain unlabelled text, dropout off in pretraining. ELECTRA at lr 2e-4 with 20%
# warmup: at 5e-4 and 1e-3 the discriminator's token vectors collapsed to one direction (cosine
# 0.93-1.0 between tokens) and fine-tuning then sat at loss ln 2. Classifiers read the mean of
# the tokens (MiniLM was trained for that pooling) and see batches grouped by length. T5 is
# fine-tuned with nanoT5's RMS-scaled AdamW (every step moves each weight by ~lr x its RMS): its
# embeddings start at std 1.0, so plain AdamW or Adafactor at 1e-3 barely moved them and T5 sat
# at loss ln 2 for 300+ steps (56-65 % after 450); at 1e-2 it leaves the plateau by step 150.
_FULL = Plan(corpus_chars=1_000_000, t5_vocab=8000, electra_vocab=8000,
             t5_model=dict(d_model=256, d_kv=64, d_ff=512, num_layers=3, num_heads=4),
             electra_model=dict(embedding_size=128, hidden_size=256, intermediate_size=1024, num_hidden_layers=4,
                                num_attention_heads=4),
             seq_len=64, pretrain_batch=32, t5_pretrain_steps=250, electra_pretrain_steps=200,
             finetune_batch=32, finetune_max_length=64, t5_finetune_steps=600, electra_finetune_steps=600,
             t5_finetune_optim="adamw_scaled", t5_finetune_lr=1e-2, electra_finetune_lr=3e-4,
             electra_pretrain_lr=2e-4, minilm_steps=100,
             eval_every=150, eval_examples=None, pretrain_dropout=0.0, electra_pretrain_warmup=0.2,
             finetune_llrd=0.8, pooling="mean", group_by_length=16, t5_group_by_length=16)

# "full" where the CPU multiplies bf16 natively (AVX512-BF16 / AMX): bf16 autocast makes the
# steps ~1.3-1.9x faster on the 4th-gen Xeon of docs/quickstart.md, and the 15 minutes buy
# 2.4x the T5 pretraining, 1.5x the ELECTRA pretraining and 1.33x the fine-tuning (measured there,
# seeds 0/1: T5 73.8/72.9 %, ELECTRA 77.1/75.6 %, span filling 61/75 % alphabetic pieces, 11.6 min).
_FULL_BF16 = dataclasses.replace(
    _FULL, t5_pretrain_steps=600, t5_finetune_steps=800, electra_pretrain_steps=300, electra_finetune_steps=800,
    eval_every=200, precision="bf16")

PLANS = {
    "full": _FULL,
    "full-bf16": _FULL_BF16,
    # full-bf16 with 2x T5's pretraining and 1.5x its fine-tuning, where one thread multiplies bf16
    # on AMX fast (fast_bf16): 8.4-8.7 min, T5 76.8 / 74.8 % for seeds 0 / 1 (full-bf16: 74.1 / 71.1).
    "full-amx": dataclasses.replace(_FULL_BF16, t5_pretrain_steps=1200, t5_finetune_steps=1200),
    # full-bf16 with 1.5x T5's pretraining, where bf16 is native without AMX (AVX512-BF16: the Zen 4
    # EPYC of docs/quickstart.md), whose T5 lane (the critical path) ran full-bf16 in 411 s (7.4 min
    # in all) and this plan in ~500 s: T5 76.9 / 73.7 / 73.4 % for seeds 0 / 1 / 2 (full-bf16: 72.8 /
    # 70.6 / 74.0, seed 1 under the 72 % line), span filling 29 / 59 / 34 % words (17 / 58 / 32).
    "full-avx512bf16": dataclasses.replace(_FULL_BF16, t5_pretrain_steps=900),
    # full-bf16's step budgets in fp32, where fp32 alone is fast enough for them (fast_fp32: no native
    # bf16, oneDNN's AVX-512 fp32 GEMM at >= FAST_FP32_PEAK on one thread). Measured on the AVX-512
    # EPYC of docs/quickstart.md forced to fp32 (107 GFLOP/s): 11.3 min, T5 72.6 % (full: 69.8 %).
    "full-fast-fp32": dataclasses.replace(_FULL_BF16, precision="fp32"),
    # About 10x the pretraining and 3x the fine-tuning of "full" (meant for <= 2 h on 2 cores;
    # docs/quickstart.md). ELECTRA at 5e-5: the official ELECTRA-Small lr (5e-4 at 128 x 128 tokens)
    # scaled to these 32 x 64-token batches; at 2e-4 and 1e-4 the discriminator got worse after
    # ~400 steps (RTD AUC on 300 held-out sentences 0.745 / 0.805 after 2,000 steps, 0.860 at 5e-5; last
    # layer's token vectors cosine 0.86 / 0.83 / 0.62).
    "long": dataclasses.replace(
        _FULL, corpus_chars=4_000_000, t5_pretrain_steps=2500, electra_pretrain_steps=2000, t5_finetune_steps=900,
        electra_finetune_steps=900, minilm_steps=530,
        electra_pretrain_warmup=0.1, electra_pretrain_lr=5e-5),
    # The same pipeline on toy sizes (tests, and a first look in < 1 minute); accuracy near chance.
    "tiny": Plan(corpus_chars=100_000, t5_vocab=1000, electra_vocab=1000,
                 t5_model=dict(d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4),
                 electra_model=dict(embedding_size=16, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4),
                 seq_len=64, pretrain_batch=8, t5_pretrain_steps=6, electra_pretrain_steps=6,
                 finetune_batch=16, finetune_max_length=48, t5_finetune_steps=8, electra_finetune_steps=8,
                 t5_finetune_lr=1e-3, electra_finetune_lr=1e-3, electra_pretrain_lr=5e-4, minilm_steps=0, eval_every=8,
                 eval_examples=32, sentiment_subset=64, other_snippets=200, pretrain_dropout=0.0, pooling="mean",
                 group_by_length=4),
}


PRECISIONS = ("auto", "fp32", "bf16")


# One thread's fp32 matmul FLOP/s from which "full-fast-fp32" fits 15 minutes: its T5 lane (the
# critical path) took 666 s at 107 GFLOP/s on the AVX-512 EPYC (docs/quickstart.md); stage times
# scale with 1/peak, so at 95 it takes ~750 s, which leaves ~2 min for the data (cold cache),
# tokenizers, report and this VM's run-to-run spread.
FAST_FP32_PEAK = 95e9


def fast_fp32() -> tuple[bool, float]:
    """Whether this CPU runs full-bf16's step budgets in fp32 within 15 minutes, and the one-thread
    fp32 matmul peak that says so (0.0 where not measured). Only where fp32 products run on oneDNN
    (AVX-512: onednn_fp32_preferred), the only fp32 path whose stage efficiency was measured this
    high (MFU 66 % in T5 pretraining; 49 % with MKL on the AVX2 EPYC, whose peak is also lower)."""
    if not onednn_fp32_preferred():
        return False, 0.0
    peak = _one_thread_peak(torch.float32)
    return peak >= FAST_FP32_PEAK, peak


def _one_thread_peak(dtype: torch.dtype) -> float:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the quickstart's two lanes run one thread each
    try:
        return matmul_peak(dtype=dtype)
    finally:
        torch.set_num_threads(threads)


# One thread's bf16 matmul FLOP/s (AMX) from which "full-amx" fits 15 minutes (8.4-8.7 min at
# 1,508-1,622; the first AMX Xeon of docs/quickstart.md, 960, keeps full-bf16).
FAST_BF16_PEAK = 1200e9


def fast_bf16() -> tuple[bool, float]:
    """Whether full-amx fits 15 minutes here, and the one-thread bf16 matmul peak (0.0: no AMX)."""
    peak = _one_thread_peak(torch.bfloat16) if amx_bf16() else 0.0
    return peak >= FAST_BF16_PEAK, peak


def choose_plan() -> tuple[str, str]:
    """The plan sized to fit 15 minutes on 2 cores of this machine, and why: "full-amx" where one
    thread multiplies bf16 fast on AMX (fast_bf16), "full-bf16" on slower AMX CPUs,
    "full-avx512bf16" where bf16 is native without AMX, "full-fast-fp32" where its fp32 matmuls
    are fast (fast_fp32), "full" elsewhere."""
    if native_bf16():
        fast, peak = fast_bf16()
        if fast:
            return "full-amx", (f"this CPU multiplies bf16 on AMX: one thread {peak / 1e9:.0f} GFLOP/s >= "
                                f"{FAST_BF16_PEAK / 1e9:.0f}")
        if peak:
            return "full-bf16", (f"this CPU multiplies bf16 natively (AMX: one thread {peak / 1e9:.0f} GFLOP/s < "
                                 f"{FAST_BF16_PEAK / 1e9:.0f})")
        if "avx512_bf16" in cpu_flags():
            return "full-avx512bf16", "this CPU multiplies bf16 natively (AVX512-BF16, no AMX)"
        return "full-bf16", "this CPU multiplies bf16 natively"  # ARM's BF16: not measured
    fast, peak = fast_fp32()
    if not peak:
        return "full", "no native bf16; fp32 on MKL"
    return ("full-fast-fp32" if fast else "full"), (f"no native bf16; fp32 matmul peak of one thread "
                                                    f"{peak / 1e9:.0f} GFLOP/s {'>=' if fast else '<'} "
                                                    f"{FAST_FP32_PEAK / 1e9:.0f}")


def default_plan() -> str:
    """choose_plan's plan."""
    return choose_plan()[0]


def train_precision(plan: Plan) -> str:
    """The plan's training precision; "auto" is bf16 autocast where the CPU multiplies bf16
    natively (AVX512-BF16 / AMX: 8x the fp32 matmul peak on the Xeon of docs/quickstart.md) and
    fp32 elsewhere (emulated bf16 matmuls are slower than fp32)."""
    if plan.precision == "auto":
        return "bf16" if native_bf16() else "fp32"
    return plan.precision
