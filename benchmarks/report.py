"""BENCHMARKS.md and the PNG charts from a list of :class:`benchmarks.cases.Result`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from t5electra.core.atomic import save_figure_atomic, write_text_atomic

from .cases import Result

TITLES = {
    "train": "1. T5 training step (forward + backward + AdamW)",
    "electra_pretrain": "2. ELECTRA pretraining step (replaced-token detection)",
    "generate": "3. Generation (T5, forced number of new tokens)",
    "electra_infer": "4. ELECTRA discriminator inference",
    "data": "5. Data pipeline vs training consumption",
}
PEERS = ("transformers", "ctranslate2", "training step")


def _fmt(x: float) -> str:
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.3g}"


def _verdict(ratio: float, target: float | None) -> str:
    if target is None:
        return ""
    return f"{'met' if ratio >= target else '**missed**'} (≥ {target:g}×)"


def _case_table(rows: list[Result]) -> list[str]:
    peers = [p for p in PEERS if any(p in r.timings for r in rows)]
    case = rows[0].case
    head = ["configuration", f"t5electra ({rows[0].unit})"]
    for p in peers:
        head += [p, f"ours / {p}", "target"]
    if case == "train":
        head += ["MFU ours / transformers", "step RSS growth MB ours / transformers"]
    if case == "generate":
        head += ["ms/token ours", "same tokens"]
    if case == "electra_infer":
        head += ["max |Δ logit|"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, _fmt(r.throughput("t5electra"))]
        for p in peers:
            if p in r.timings:
                ratio = r.ratio(p)
                cells += [_fmt(r.throughput(p)), f"{ratio:.2f}×", _verdict(ratio, r.targets.get(p))]
            else:
                cells += ["—", "—", ""]
        if case == "train":
            mfu = r.extra["mfu"]
            rss = [r.timings[k].rss_delta_mb for k in ("t5electra", "transformers")]
            cells += [f"{mfu['t5electra']:.0%} / {mfu['transformers']:.0%}",
                      " / ".join("n/a" if v is None else f"{v:.0f}" for v in rss)]
        if case == "generate":
            same = [k.removeprefix("same_tokens_as_") for k, v in r.extra.items()
                    if k.startswith("same_tokens_as_") and v]
            cells += [f"{r.extra['ms_per_token']['t5electra']:.2f}",
                      ", ".join(same) if same else ("n/a" if "token_agreement_with_fp32" in r.extra else "no")]
        if case == "electra_infer":
            cells += [f"{r.extra['max_abs_logit_diff']:.1e}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


# Why a target can be missed, and what would close it: printed under the summary for every case
# with a miss, next to the torch.profiler tables that back it (docs/performance.md has more).
WHY_MISSED = {
    "train": (
        "Training: both implementations run the same products. A trace of every matmul in one t5-small 8x128->32 "
        "step (shapes and strides, one thread) finds the same products on both sides, ours in 201 calls "
        "(q/k/v and cross-attention k/v fused) against transformers' 291, and `aten::mm` is 65-68 % of both "
        "steps. In fp32 on AVX-512 CPUs ours run them on oneDNN's GEMM instead of PyTorch's MKL call "
        "(forward and input gradient; t5electra/nn/linear.py: on the AMD EPYC here MKL ran 89-157 GFLOP/s, "
        "oneDNN 151-207): the fp32 rows went from 1.10-1.20x to 1.27-1.42x in a train-only run of 3 Dec 2026 (1.18-1.37x in the full run that followed), and the fp32 "
        "matmul peak of the MFU column is now the better of the two libraries. bf16 autocast ran on oneDNN "
        "on both sides already. The other difference is dropout: PyTorch draws one random number per element (`bernoulli_`: 16-19 % "
        "of an 8x512->114 step on both sides before we replaced it, mostly the attention probabilities); "
        "ours takes 15-bit integers from 64-bit draws and applies them as uint8 (t5electra/nn/dropout.py), "
        "2.5-3.2x faster forward + backward, which is most of the gain at 512 tokens and little at 128. "
        "Since 3 Dec 2026 both sides run with fused AdamW (each side's default) and with freed memory kept in "
        "glibc's heap (t5electra.machine.keep_freed_memory, process-wide): both steps got faster, "
        "transformers' more (it allocated more big temporaries, each faulted in again every step before), "
        "so the ratios at 512 tokens fell while our tokens/s rose. At 16x128->32 in bf16 our step ran at "
        "74 % of the measured bf16 matmul peak in a quiet train-only run of 3 Dec 2026 (1.35x transformers; "
        "the MFU column shows this run's): 1.5x there would need ~83 %, i.e. nearly everything but the "
        "matmuls free. The rest is shared: the LM head's "
        "log-softmax, autocast's casts. Our fusions (one q/k/v matmul instead of three, one gated-FFN input matmul, the "
        "position bias built once per stack, RMSNorm's backward in closed form on CPU, dropout's mask and scale in one pass) remove passes and copies, not "
        "FLOPs: a few percent at these shapes. What would close the rest: fusing the "
        "remaining elementwise chains (dropout, softmax, norms, residuals and their backward) with "
        "torch.compile/Inductor, paid back only over long runs; or a faster matmul than the one both sides "
        "share (native bf16/AMX CPUs, GPUs)."),
    "generate": (
        "Generation: at batch 1 a decode step is matrix-vector work bound by memory bandwidth; every "
        "implementation reads all decoder weights and the 32128 x 512 output matrix per token (T5-small: "
        "~154 MB in fp32, ~39 MB in int8). CTranslate2 does that from C++ with no per-op dispatch, while each "
        "of our ~200 small ops per step pays PyTorch's dispatch overhead (the non-matmul rows of the profile: "
        "~2-3 ms a step). In fp32 the weights do not fit in the caches: on the 2-core AMD EPYC (AVX-512) of "
        "3 Dec 2026 memory streams at 23 GB/s on one thread and 29 GB/s on two (a sum over 256 MB), a floor "
        "of ~5.3 ms a step that CTranslate2's fp32 (7-9 ms a step) comes close to. Greedy steps here no longer "
        "read the fp32 output matrix: an int8 copy (16 MB) with a proven bound on its error picks the "
        "candidates and their fp32 scores pick the token (the same tokens; docs/generation.md), 1.2x per step "
        "(66 -> 86 tokens/s greedy batch 1 between the full runs of 3 Dec 2026), leaving ~104 MB a step, a floor "
        "of ~3.6 ms. What keeps us above CTranslate2 is the decoder's 36 one-row products: MKL streamed them "
        "at ~14 GB/s on two threads where a plain sum over the same matrices reaches 24 GB/s; since 3 Dec 2026 "
        "(evening) they run as weighted sums of the rows of W^T through fbgemm's EmbeddingBag kernel, "
        "bags shared by the threads (~18 GB/s alone, ~15-16 in a step, where the rest of the step evicts them "
        "from the caches; greedy batch 1 +20 %, same tokens), each call still paying ~20 us of fixed cost "
        "(a step: 36 calls). What we did besides: the few-row matmul orientation "
        "that avoids MKL repacking the weights, an in-place cache "
        "reorder, and `optimize_for_inference()` (column-major and oneDNN-packed weights; bf16/int8 kernels "
        "chosen per CPU, docs/inference.md). int8 weights are ~4x fewer bytes and mostly stay in the caches, which is "
        "where we pass CTranslate2 int8. Capturing the step as one graph (torch.compile, Inductor) was "
        "measured on the Zen 2 EPYC: 60-66 s to compile per shape, at most ~8 % faster (docs/performance.md). "
        "CTranslate2 runs in its own process (benchmarks/ct2_process.py: in ours its OpenMP runtime slowed "
        "PyTorch 1.5-2x). In the full run of 4 Dec 2026 on the same kind of EPYC (a faster hour of the VM: "
        "CTranslate2 fp32 151 instead of 111 tokens/s) greedy batch 1 fp32 ran 7.1 ms a token (0.92x), and its "
        "profile reads: the 36 bags ~3.5 ms a token (~25 GB/s, near the 29 GB/s the memory streams on two "
        "threads), the int8 screen 0.5 ms, everything else ~2.2 ms (SDPA, norms, sums, copies) plus Python. "
        "Since 5 Dec 2026 (session 26) a step at inference runs as one flat loop over the same ops "
        "(t5electra/inference/decoder_step.py: the same bits, without the ~60 module calls around the ops, "
        "whose Python cost ~1 ms of a 7 ms token): greedy batch 1 fp32 7.0 -> 5.9 ms a token in alternated runs "
        "(1.14x CTranslate2 in a quick run, 1.05x in a generate-only full run, 1.01x in the full run of 5 Dec "
        "2026, whose VM hour was slower for us than for CTranslate2: 6.9 ms a token, docs/performance.md)."),
    "electra_pretrain": (
        "ELECTRA pretraining: the encoders run the same GEMMs as transformers, and both sides run the "
        "generator's output layer on the masked positions only (the peer, `cases.HFElectraPretrainStep`, "
        "gathers them as the official ELECTRA code and ours do; before 4 Dec 2026 it ran it at every position, "
        "~28 % more FLOPs). On equal work the step is 1.09x (AMX Xeon, one thread) to 1.22x (the AVX-512 EPYC, "
        "full run of 4 Dec 2026, two threads); what remains is as for T5 training above."),
    "electra_infer": (
        "ELECTRA inference: the same GEMMs as transformers (fused q/k/v is one matmul for three, same FLOPs; "
        "transformers 5 also uses SDPA and drops all-ones masks). GEMMs are ~70 % of the time on both sides; "
        "the rest is GELU (~11 %), addmm's bias copies (~8 %), attention (~8 %). Compiling the encoder was "
        "measured (Inductor, with and without freezing): 42-63 s to compile and 0.99-1.01x eager, so it was "
        "dropped (docs/electra.md). On AVX-512 CPUs `optimize_for_inference()` (the fp32 row) runs every "
        "Linear on oneDNN-packed fp32 weights with the bias inside the GEMM (`Fp32OneDNN`, docs/inference.md): "
        "on the AMD EPYC with AVX-512, PyTorch's fp32 `F.linear` (MKL) ran 89-157 GFLOP/s where oneDNN ran "
        "151-207, 1.02x -> 1.21x transformers in an ELECTRA-only run of 3 Dec 2026, 1.08x in the full run after it. On the AVX2 Zen 2 EPYC oneDNN's GEMM was the "
        "slower one, so AVX2 CPUs keep MKL. Since the full run the FFN's exact GELU runs inside that GEMM at "
        "inference (oneDNN's post-op, bitwise the same values: t5electra/nn/linear.py project_act): 1.20x in an "
        "ELECTRA-only run after it (61.8 sequences/s). Left: attention (~12-14 % of the optimised model; plain "
        "bmm + softmax measured no faster, in bf16 slower); the GEMMs run at ~92 % of the measured fp32 matmul "
        "peak, so fp32 has little left to gain. The faster rows are the low-precision ones: bf16 (its FFN "
        "activations stay bf16 between the two products, GELU inside the first: 1.52x -> 1.88x on 3 Dec 2026) "
        "and int8 (2.1-2.2x), at the accuracy cost measured in docs/inference.md. The full run of 4 Dec 2026 "
        "read 1.05x for the fp32 row: ours 61.6 sequences/s as on 3 Dec, transformers 58.6 (41-51 then); "
        "the code of 3 Dec and today's, alternated in that VM hour (`--quick --cases electra_infer --reps 7`), "
        "gave 1.07-1.11x and 1.06-1.09x: the peer ran faster in that hour, not ours slower."),
    "data": (
        "Data: the pipeline runs in the DataLoader workers; raise --workers (data_pipeline.py) or pre-tokenise "
        "to shards once (build_shards) so the stream only packs and corrupts."),
}


def misses(results: list[Result]) -> list[tuple[Result, str, float, float]]:
    out = []
    for r in results:
        for peer, target in r.targets.items():
            if peer in r.timings and r.ratio(peer) < target:
                out.append((r, peer, r.ratio(peer), target))
    return out


def write_markdown(path: Path, results: list[Result], machine: dict[str, Any], command: str, mode: str,
                   wall_s: float, peaks: dict[str, float], profiles: dict[str, str], notes: list[str],
                   charts: list[Path]) -> None:
    lines = ["# Benchmarks", "",
             "Generated by `python -m benchmarks` (same as `t5electra bench`); see docs/performance.md for the "
             "method and how to read it. Ratios are ours / peer throughput, medians of alternated runs "
             "(one process; CTranslate2 in a child process of its own): > 1 means t5electra is faster.", "",
             f"Command: `{command}`  ", f"Mode: {mode}; wall time {wall_s / 60:.1f} min", "",
             "## Machine", "", "| | |", "|---|---|"]
    for k, v in machine.items():
        lines.append(f"| {k} | {v} |")
    for k, v in peaks.items():
        lines.append(f"| measured matmul peak ({k}) | {v / 1e9:.1f} GFLOP/s |")
    lines.append("")
    m = misses(results)
    met = sum(1 for r in results for p in r.targets if p in r.timings) - len(m)
    lines += ["## Summary", "", f"Targets met: {met}; missed: {len(m)}.", ""]
    if m:
        lines += ["| missed | ratio | target |", "|---|---|---|"]
        lines += [f"| {r.label} vs {p} | {ratio:.2f}× | {t:g}× |" for r, p, ratio, t in m]
        lines.append("")
        for case in dict.fromkeys(r.case for r, *_ in m):
            lines += [WHY_MISSED[case], ""]
    for case, title in TITLES.items():
        rows = [r for r in results if r.case == case]
        if not rows:
            continue
        lines += [f"## {title}", ""] + _case_table(rows) + [""]
        for r in rows:
            reps = {k: ", ".join(f"{s:.3f}" for s in t.seconds) for k, t in r.timings.items() if r.case != "data"}
            if reps:
                lines.append(f"<details><summary>{r.label}: seconds per call</summary>\n")
                lines += [f"- {k}: {v}" for k, v in reps.items()]
                lines.append("\n</details>\n")
        if case == "generate":
            for r in rows:
                if "token_agreement_with_fp32" in r.extra:
                    agree = ", ".join(f"{k} {v:.1%}" for k, v in r.extra["token_agreement_with_fp32"].items())
                    lines += [f"{r.label}: {r.extra['kernel']}; generated tokens equal to our fp32 model's: "
                              f"{agree} (random weights: a worst case for agreement, docs/inference.md has "
                              f"trained models).", ""]
        if case == "data":
            r = rows[0]
            p = r.extra["pipeline"]
            lines += [f"Pipeline: {p['stream_examples_per_s']:,} examples/s of 512 + 114 tokens = "
                      f"{r.extra['pipeline_tokens_per_s']:,.0f} tokens/s; tokenisation "
                      f"{p['tokenise_tokens_per_s']:,} tokens/s; peak PSS of the process tree "
                      f"{p['peak_tree_pss_mb']} MB."]
            if "train_label" in r.extra:
                lines += [f"Training consumption: our step on {r.extra['train_label']} = "
                          f"{r.extra['train_tokens_per_s']:,.0f} tokens/s (input + target)."]
            lines.append("")
    if profiles:
        lines += ["## Profiles (torch.profiler, top ops by self CPU time)", ""]
        for name, table in profiles.items():
            lines += [f"### {name}", "", "```", table.rstrip(), "```", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    if charts:
        lines += ["## Charts", ""] + [f"![{c.stem}]({c.as_posix()})" for c in charts] + [""]
    other = Path(__file__).with_name("other_results.md")  # serve_load.py / data_pipeline.py numbers
    if other.is_file():
        lines += [other.read_text(encoding="utf-8").rstrip(), ""]
    write_text_atomic(path, "\n".join(lines))


def write_charts(results: list[Result], img_dir: Path, root: Path) -> list[Path]:
    """One bar chart per case: ours / peer ratio per configuration, with the target marked.
    Returns the paths relative to ``root`` (for the Markdown links)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for case, title in TITLES.items():
        rows = [r for r in results if r.case == case]
        bars = [(r.label, p, r.ratio(p), r.targets.get(p)) for r in rows for p in PEERS if p in r.timings]
        if not bars:
            continue
        fig, ax = plt.subplots(figsize=(9, 0.45 * len(bars) + 1.4))
        names = [f"{label} vs {p}" for label, p, _, _ in bars]
        values = [v for _, _, v, _ in bars]
        colors = ["#8d99ae" if t is None else "#2a9d8f" if v >= t else "#e76f51" for _, _, v, t in bars]
        y = range(len(bars))
        ax.barh(list(y), values, color=colors)
        for i, (_, _, v, t) in enumerate(bars):
            if t is not None:
                ax.plot([t, t], [i - 0.4, i + 0.4], color="black", linewidth=2)
            ax.text(v, i, f" {v:.2f}×", va="center", fontsize=8)
        ax.axvline(1.0, color="grey", linestyle=":", linewidth=1)
        ax.set_xlim(0, 1.2 * max(values + [t for *_, t in bars if t is not None]))
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("t5electra / peer throughput\n(black tick: target; green met, red missed, grey no target)")
        ax.set_title(title, fontsize=10)
        fig.tight_layout()
        out = img_dir / f"bench_{case}.png"
        save_figure_atomic(fig, out, dpi=100)
        plt.close(fig)
        try:
            written.append(out.resolve().relative_to(root.resolve()))
        except ValueError:
            written.append(out.resolve())
    return written
