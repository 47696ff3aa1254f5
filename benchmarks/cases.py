"""The benchmark cases: each builds our model and the peer's from the same weights, times them
side by side (:func:`benchmarks.harness.compare`) and returns :class:`Result` rows.

1. ``train``: T5 training step (forward, backward, AdamW) vs transformers' T5ForConditionalGeneration;
2. ``electra_pretrain``: ELECTRA replaced-token-detection step vs transformers' ElectraForMaskedLM +
   ElectraForPreTraining composed the same way (:class:`HFElectraPretrainStep`);
3. ``generate``: T5 greedy / beam decoding vs transformers' ``generate`` and CTranslate2;
4. ``electra_infer``: ELECTRA discriminator forward vs transformers;
5. ``data``: the data pipeline (benchmarks/data_pipeline.py) vs the training step's consumption.

Weights: our model is built with its random init, written with ``save_pretrained`` and read by
transformers' ``from_pretrained`` (CTranslate2 converts that same directory), so every
implementation runs the same numbers.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
from pathlib import Path
from typing import Any

import torch

from t5electra.train.config import OptimSection
from t5electra.train.loop import autocast
from t5electra.train.optim import build_optimizer

from .ct2_process import TranslatorProcess
from .harness import Timing, compare, matmul_peak


@dataclasses.dataclass
class Result:
    """One benchmarked configuration: timings of every implementation, and what one call does."""

    case: str                       # train | electra_pretrain | generate | electra_infer | data
    label: str                      # e.g. "t5-small 8x512->114 fp32"
    unit: str                       # throughput unit: "tokens/s", "sequences/s", ...
    work: float                     # units per call (tokens per step, sequences per batch)
    timings: dict[str, Timing]      # implementation -> timing; "t5electra" is ours
    targets: dict[str, float] = dataclasses.field(default_factory=dict)  # peer -> minimum ratio
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)      # MFU, same outputs, ...

    def throughput(self, impl: str) -> float:
        return self.work / self.timings[impl].median_s

    def ratio(self, peer: str) -> float:
        """ours / peer throughput (> 1: we are faster)."""
        return self.throughput("t5electra") / self.throughput(peer)

    def to_dict(self) -> dict[str, Any]:
        return {"case": self.case, "label": self.label, "unit": self.unit, "work": self.work,
                "timings": {k: v.to_dict() for k, v in self.timings.items()},
                "throughput": {k: round(self.throughput(k), 3) for k in self.timings},
                "ratios": {p: round(self.ratio(p), 3) for p in self.timings if p != "t5electra"},
                "targets": self.targets, "extra": self.extra}


@dataclasses.dataclass
class Env:
    """What every case needs: device, timing plan, scratch directory."""

    device: str
    warmup: int
    reps: int
    threads: int
    workdir: Path
    log: Any = print
    profile: set[str] = dataclasses.field(default_factory=set)  # cases whose first configuration is profiled
    profiles: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def sync(self):
        return torch.cuda.synchronize if self.device == "cuda" else None

    def compare(self, impls):
        return compare(impls, warmup=self.warmup, reps=self.reps, sync=self.sync)

    def maybe_profile(self, case: str, label: str, impls) -> None:
        """Top ops by self time of one call of each implementation (torch.profiler), once per case."""
        if case not in self.profile:
            return
        self.profile.discard(case)
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device == "cuda" else [])
        sort = "self_cuda_time_total" if self.device == "cuda" else "self_cpu_time_total"
        for name, fn in impls.items():
            if name == "ctranslate2":
                continue  # C++ inside: nothing for torch.profiler to see
            with profile(activities=acts) as prof:
                fn()
            self.profiles[f"{label}: {name}"] = prof.key_averages().table(sort_by=sort, row_limit=14,
                                                                          max_name_column_width=48)


def _quiet_transformers() -> None:
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


# ------------------------------------------------------------------------------------------------
# 1. T5 training step
# ------------------------------------------------------------------------------------------------
def t5_train_flops(c, batch: int, src_len: int, tgt_len: int) -> float:
    """Model FLOPs of one training step (forward + backward = 3 x forward, 2 FLOPs per multiply-add)
    counting every matmul, attention at full (non-causal) size, and the LM head; no recomputation."""
    inner = c.num_heads * c.d_kv
    ff_in = c.d_ff * (2 if c.is_gated_act else 1)
    S, T, d = src_len, tgt_len, c.d_model
    attn_proj = d * 3 * inner + inner * d
    ffn = d * ff_in + c.d_ff * d
    enc = S * (attn_proj + ffn) + 2 * S * S * inner
    dec = (T * (attn_proj + ffn) + 2 * T * T * inner             # self-attention + FFN
           + T * (d * inner + inner * d) + S * d * 2 * inner + 2 * T * S * inner)  # cross-attention
    macs = batch * (c.num_layers * enc + c.decoder_layers * dec + T * d * c.vocab_size)
    return 6.0 * macs


def _t5_pair(preset: str, workdir: Path, device: str, **overrides):
    """Our T5ForConditionalGeneration (random init) and transformers' loaded from its checkpoint."""
    import transformers

    from t5electra.models.t5 import T5Config, T5ForConditionalGeneration

    _quiet_transformers()
    torch.manual_seed(0)
    ours = T5ForConditionalGeneration(T5Config.from_preset(preset, **overrides))
    path = workdir / f"hf-{preset}"
    ours.save_pretrained(path)
    peer = transformers.T5ForConditionalGeneration.from_pretrained(path)
    return ours.to(device), peer.to(device), path


def random_t5_batch(vocab_size: int, batch: int, src_len: int, tgt_len: int, device: str) -> dict[str, torch.Tensor]:
    """The training benchmarks' batch: random ids (seeded) for the encoder and the labels."""
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(3, vocab_size - 100, (batch, src_len), generator=g).to(device),
            "labels": torch.randint(3, vocab_size - 100, (batch, tgt_len), generator=g).to(device)}


def train_step_fn(model, opt, batch: dict[str, torch.Tensor], device: str, dtype: str):
    """One training step (autocast forward, backward, optimiser step) as a zero-argument callable."""
    def step() -> None:
        with autocast(dtype, device):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def bench_train(env: Env, presets, shapes, dtypes, peak_flops: dict[str, float]) -> list[Result]:
    results = []
    for preset in presets:
        ours, peer, _ = _t5_pair(preset, env.workdir, env.device)
        ours.train()
        peer.train()
        # check_inputs=False where offered: the training loop skips the per-step id range check too
        if hasattr(ours, "check_inputs") and isinstance(ours.check_inputs, bool):
            ours.check_inputs = False
        # Each side's default optimiser: fused AdamW for both (our optim section's default; transformers'
        # Trainer default "adamw_torch_fused" with torch >= 2.8)
        opts = {"t5electra": build_optimizer(ours, OptimSection(lr=1e-4, weight_decay=0.0)),
                "transformers": torch.optim.AdamW(peer.parameters(), lr=1e-4, weight_decay=0.0, fused=True)}
        assert opts["t5electra"].defaults["fused"]
        V = ours.config.vocab_size
        for (B, S, T) in shapes:
            batch = random_t5_batch(V, B, S, T, env.device)
            for dtype in dtypes:
                label = f"{preset} {B}x{S}->{T} {dtype}"
                env.log(f"[train] {label}")
                impls = {"t5electra": train_step_fn(ours, opts["t5electra"], batch, env.device, dtype),
                         "transformers": train_step_fn(peer, opts["transformers"], batch, env.device, dtype)}
                timings = env.compare(impls)
                env.maybe_profile("train", label, impls)
                # The matmul peak again, right after this configuration: on a shared or virtual
                # machine one early probe can land in a slow phase (MFU above 100 % then).
                key = "bf16" if dtype == "bf16" else "fp32"
                peak_flops[key] = max(peak_flops[key], matmul_peak(key, env.device, reps=5))
                extra = {"flops_per_step": t5_train_flops(ours.config, B, S, T), "peak_key": key}
                target = 1.5 if dtype == "bf16" else 1.25
                results.append(Result("train", label, "tokens/s", B * (S + T), timings,
                                      {"transformers": target}, extra))
        del ours, peer, opts
    for r in results:  # MFU against the highest peak measured in the run
        peak = peak_flops[r.extra.pop("peak_key")]
        r.extra["peak_flops"] = peak
        r.extra["mfu"] = {k: r.extra["flops_per_step"] / t.median_s / peak for k, t in r.timings.items()}
    return results


# ------------------------------------------------------------------------------------------------
# 2. ELECTRA pretraining step
# ------------------------------------------------------------------------------------------------
MASK_ID, CLS_ID, SEP_ID = 103, 101, 102  # BERT uncased vocabulary's specials


class HFElectraPretrainStep:
    """transformers' ElectraForMaskedLM (generator) + ElectraForPreTraining (discriminator) composed
    as our ElectraPretrainer composes them (t5electra/models/electra_rtd.py): shared embeddings,
    generator output layer tied to the word embeddings, the same masking function, generator MLM
    loss on the masked positions (labels -100 elsewhere), Gumbel-max samples from the generator's
    logits at the masked positions, discriminator BCE over the real tokens, loss = gen + 50 * disc.

    The generator's output layer runs on the masked positions only (its encoder, then
    ``generator_predictions`` and ``generator_lm_head`` on the gathered rows), as ours and the
    official ELECTRA code (``pretrain_helpers.gather_positions``) do. Until 4 Dec 2026 this peer
    called ``ElectraForMaskedLM(labels=...)``, which computes the (B, T, V) logits of every position:
    ~28 % more FLOPs at 32 x 128, most of the 1.55x then published.
    """

    def __init__(self, generator, discriminator, disc_weight: float = 50.0):
        self.gen, self.disc, self.disc_weight = generator, discriminator, disc_weight
        self.gen.electra.embeddings = self.disc.electra.embeddings  # share every embedding table
        self.gen.generator_lm_head.weight = self.disc.electra.embeddings.word_embeddings.weight

    def parameters(self):
        seen = {}
        for p in list(self.gen.parameters()) + list(self.disc.parameters()):
            seen[id(p)] = p
        return list(seen.values())

    def train(self) -> None:
        self.gen.train()
        self.disc.train()

    def __call__(self, input_ids, attention_mask, generator, mask_kwargs) -> torch.Tensor:
        from t5electra.data.masking import mask_tokens
        from t5electra.models.electra_rtd import gumbel_max_sample

        m = mask_tokens(input_ids, attention_mask=attention_mask, generator=generator, **mask_kwargs)
        hidden = self.gen.electra(input_ids=m.input_ids, attention_mask=attention_mask).last_hidden_state
        logits = self.gen.generator_lm_head(self.gen.generator_predictions(hidden[m.mask]))  # (N masked, V)
        gen_loss = torch.nn.functional.cross_entropy(logits.float(), input_ids[m.mask])
        sampled = gumbel_max_sample(logits, generator=generator)
        replaced = input_ids.clone()
        replaced[m.mask] = sampled
        is_replaced = (replaced != input_ids) & m.mask
        disc_out = self.disc(input_ids=replaced, attention_mask=attention_mask, labels=is_replaced.long())
        return gen_loss + self.disc_weight * disc_out.loss


def bench_electra_pretrain(env: Env, preset: str, batch: int, length: int) -> list[Result]:
    import transformers

    from t5electra.models.electra_rtd import ElectraPretrainer

    _quiet_transformers()
    torch.manual_seed(0)
    ours = ElectraPretrainer.from_preset(preset, mask_token_id=MASK_ID, special_token_ids=[CLS_ID, SEP_ID])
    path = env.workdir / f"hf-{preset}-rtd"
    ours.save_pretrained(path)
    peer = HFElectraPretrainStep(transformers.ElectraForMaskedLM.from_pretrained(path / "generator"),
                                 transformers.ElectraForPreTraining.from_pretrained(path / "discriminator"))
    ours.to(env.device).train()
    peer.gen.to(env.device)
    peer.disc.to(env.device)
    peer.train()
    V = ours.discriminator.config.vocab_size
    ids = torch.randint(min(1000, V // 2), V, (batch, length), generator=torch.Generator().manual_seed(2))
    ids[:, 0], ids[:, -1] = CLS_ID, SEP_ID
    ids = ids.to(env.device)
    mask = torch.ones_like(ids)
    pc = ours.config
    mask_kwargs = dict(mask_token_id=MASK_ID, special_token_ids=[CLS_ID, SEP_ID, 0], mask_prob=pc.mask_prob,
                       max_predictions=pc.max_predictions, mask_token_prob=pc.mask_token_prob,
                       random_token_prob=pc.random_token_prob, vocab_size=V)
    opt_ours = torch.optim.AdamW(ours.parameters(), lr=1e-4)
    opt_peer = torch.optim.AdamW(peer.parameters(), lr=1e-4)
    gens = {"t5electra": torch.Generator(env.device).manual_seed(3),
            "transformers": torch.Generator(env.device).manual_seed(3)}

    def ours_step() -> None:
        ours(ids, mask, generator=gens["t5electra"], compute_metrics=False).loss.backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)

    def peer_step() -> None:
        peer(ids, mask, gens["transformers"], mask_kwargs).backward()
        opt_peer.step()
        opt_peer.zero_grad(set_to_none=True)

    label = f"{preset} (generator 1/4) {batch}x{length} fp32"
    env.log(f"[electra_pretrain] {label}")
    impls = {"t5electra": ours_step, "transformers": peer_step}
    timings = env.compare(impls)
    env.maybe_profile("electra_pretrain", label, impls)
    return [Result("electra_pretrain", label, "tokens/s", batch * length, timings, {"transformers": 1.3})]


# ------------------------------------------------------------------------------------------------
# 3. Generation
# ------------------------------------------------------------------------------------------------
def _write_wordlevel_tokenizer(path: Path, vocab_size: int) -> list[str]:
    """A tokenizer whose pieces are simply the ids ("<pad>", "</s>", "<unk>", "t3", ...), saved as
    transformers files next to the checkpoint: CTranslate2's converter reads the vocabulary from it,
    and we translate ids to pieces and back one to one."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    pieces = ["<pad>", "</s>", "<unk>"] + [f"t{i}" for i in range(3, vocab_size)]
    tok = Tokenizer(models.WordLevel({p: i for i, p in enumerate(pieces)}, unk_token="<unk>"))
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>",
                            unk_token="<unk>").save_pretrained(path)
    return pieces


def _ct2_translator(hf_path: Path, out: Path, compute_type: str, device: str, threads: int) -> TranslatorProcess:
    """CTranslate2's translator for the checkpoint at ``hf_path`` (converted once into ``out``), run in
    its own process: in ours its OpenMP threads slow PyTorch's (benchmarks/ct2_process.py)."""
    import ctranslate2  # the converter runs here (no CTranslate2 compute); ImportError when missing

    if not (out / "model.bin").exists():
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            ctranslate2.converters.TransformersConverter(str(hf_path)).convert(str(out), force=True)
    return TranslatorProcess(out, device=device, compute_type=compute_type, threads=threads)


def bench_generate(env: Env, preset: str, batches, beams, src_len: int, new_tokens: int,
                   int8: bool) -> list[Result]:
    ours, peer, path = _t5_pair(preset, env.workdir, env.device)
    ours.eval()
    peer.eval()
    # "t5electra" is the model as the CLI, the server and the pipelines run it: after
    # optimize_for_inference() (fp32: column-major decoder weights + oneDNN-packed copies,
    # docs/inference.md); the unchanged model runs alongside as "t5electra default".
    fast = copy.deepcopy(ours).optimize_for_inference() if env.device == "cpu" else ours
    pieces = _write_wordlevel_tokenizer(path, ours.config.vocab_size)
    have_ct2 = True
    try:
        ct2 = _ct2_translator(path, env.workdir / f"ct2-{preset}", "float32", env.device, env.threads)
    except ImportError:
        have_ct2 = False
        env.log("ctranslate2 is not installed (pip install 't5electra[bench]'): CTranslate2 columns skipped")
    except (RuntimeError, ValueError) as e:  # e.g. a CPU-only ctranslate2 wheel with --device cuda
        have_ct2 = False
        env.log(f"ctranslate2 cannot run on {env.device} ({e}): CTranslate2 columns skipped")
    V = ours.config.vocab_size
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    results = []
    for B in batches:
        x = torch.randint(3, V - 100, (B, src_len), generator=torch.Generator().manual_seed(4)).to(env.device)
        src_tokens = [[pieces[i] for i in row] for row in x.tolist()]
        for nb in beams:
            out: dict[str, torch.Tensor] = {}

            def run_ours(nb=nb, x=x, out=out):
                out["t5electra"] = fast.generate(x, num_beams=nb, **kw)

            def run_default(nb=nb, x=x, out=out):
                out["t5electra default"] = ours.generate(x, num_beams=nb, **kw)

            def run_peer(nb=nb, x=x, out=out):
                with torch.inference_mode():
                    out["transformers"] = peer.generate(x, num_beams=nb, do_sample=False, **kw)

            impls = {"t5electra": run_ours, "transformers": run_peer}
            if fast is not ours:
                impls["t5electra default"] = run_default
            if have_ct2:
                def run_ct2(nb=nb, src_tokens=src_tokens, tr=ct2, out=out):
                    res = tr.translate_batch(src_tokens, beam_size=nb, min_decoding_length=new_tokens,
                                             max_decoding_length=new_tokens, return_scores=False)
                    out["ctranslate2"] = res
                impls["ctranslate2"] = run_ct2
            label = (f"{preset} {'greedy' if nb == 1 else f'beam {nb}'} batch {B}, {src_len}->{new_tokens} fp32"
                     + (" (optimize_for_inference)" if fast is not ours else ""))
            env.log(f"[generate] {label}")
            timings = env.compare(impls)
            env.maybe_profile("generate", label, impls)
            targets = {"transformers": 2.0}
            if have_ct2 and nb == 1 and B == 1:
                targets["ctranslate2"] = 1.1
            extra = {"same_tokens_as_transformers": torch.equal(out["t5electra"].cpu(), out["transformers"].cpu())}
            if "t5electra default" in out:
                extra["same_tokens_as_t5electra_default"] = torch.equal(out["t5electra"], out["t5electra default"])
            if have_ct2:
                extra["same_tokens_as_ctranslate2"] = _ct2_ids(out["ctranslate2"], pieces) == out["t5electra"][:, 1:].tolist()
            extra["ms_per_token"] = {k: t.median_s / new_tokens * 1000 for k, t in timings.items()}
            results.append(Result("generate", label, "tokens/s", B * new_tokens, timings, targets, extra))
    if have_ct2:
        ct2.close()

    if int8 and env.device == "cpu":
        results += _bench_low_precision(env, ours, fast, path, pieces, preset, batches, beams, src_len, new_tokens)
    return results


def _ct2_ids(res, pieces) -> list[list[int]]:
    return [[pieces.index(p) if p in pieces[:3] else int(p[1:]) for p in r.hypotheses[0]] for r in res]


def _bench_low_precision(env: Env, ours, fast, path: Path, pieces, preset: str, batches, beams, src_len: int,
                         new_tokens: int) -> list[Result]:
    """The same generation rows with ``optimize_for_inference("int8" / "bf16")`` (the kernels this
    CPU gets: ``inference_report``) against CTranslate2 with the same quantisation and our fp32 fast
    path; ``token_agreement_with_fp32``: the share of generated tokens equal to our fp32 model's."""
    V = ours.config.vocab_size
    kw = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens)
    results = []
    for weights, ct2_type in (("int8", "int8"), ("bf16", "bfloat16")):
        model = copy.deepcopy(ours).optimize_for_inference(weights)
        env.log(f"[generate] {model.inference_report}")
        try:
            ct2 = _ct2_translator(path, env.workdir / f"ct2-{preset}", ct2_type, "cpu", env.threads)
        except (ImportError, RuntimeError, ValueError) as e:  # no ctranslate2, or no such compute type here
            ct2 = None
            env.log(f"ctranslate2 {ct2_type}: not run ({type(e).__name__}: {e})")
        for B in batches:
            x = torch.randint(3, V - 100, (B, src_len), generator=torch.Generator().manual_seed(4))
            src_tokens = [[pieces[i] for i in row] for row in x.tolist()]
            for nb in beams:
                out: dict[str, Any] = {}
                def run(name, m, nb=nb, x=x, out=out):
                    return lambda: out.__setitem__(name, m.generate(x, num_beams=nb, **kw))

                impls = {"t5electra": run("t5electra", model), "t5electra fp32": run("t5electra fp32", fast)}
                if ct2 is not None:
                    impls["ctranslate2"] = lambda nb=nb, s=src_tokens, out=out, tr=ct2: out.__setitem__(
                        "ctranslate2", tr.translate_batch(s, beam_size=nb, min_decoding_length=new_tokens,
                                                          max_decoding_length=new_tokens))
                label = f"{preset} {'greedy' if nb == 1 else f'beam {nb}'} batch {B}, {src_len}->{new_tokens} {weights}"
                env.log(f"[generate] {label}")
                timings = env.compare(impls)
                ref = out["t5electra fp32"][:, 1:]
                agree = {"t5electra": float((out["t5electra"][:, 1:] == ref).float().mean())}
                if ct2 is not None:
                    agree["ctranslate2"] = float((torch.tensor(_ct2_ids(out["ctranslate2"], pieces)) == ref)
                                                 .float().mean())
                extra = {"ms_per_token": {k: t.median_s / new_tokens * 1000 for k, t in timings.items()},
                         "token_agreement_with_fp32": agree, "kernel": str(model.inference_report)}
                targets = {"ctranslate2": 1.2 if nb == 1 and B == 1 else 1.0} if ct2 is not None else {}
                results.append(Result("generate", label, "tokens/s", B * new_tokens, timings, targets, extra))
        if ct2 is not None:
            ct2.close()
    return results


# ------------------------------------------------------------------------------------------------
# 4. ELECTRA discriminator inference
# ------------------------------------------------------------------------------------------------
def bench_electra_infer(env: Env, preset: str, batch: int, length: int) -> list[Result]:
    import transformers

    from t5electra.models.electra import ElectraConfig, ElectraForPreTraining

    _quiet_transformers()
    torch.manual_seed(0)
    ours = ElectraForPreTraining(ElectraConfig.from_preset(preset))
    path = env.workdir / f"hf-{preset}-disc"
    ours.save_pretrained(path)
    peer = transformers.ElectraForPreTraining.from_pretrained(path)
    ours.to(env.device).eval()
    peer.to(env.device).eval()
    V = ours.config.vocab_size
    ids = torch.randint(min(1000, V // 2), V, (batch, length), generator=torch.Generator().manual_seed(6)).to(env.device)
    mask = torch.ones_like(ids)
    out = {}

    def run(name, model):
        def call():
            with torch.inference_mode():
                out[name] = model(input_ids=ids, attention_mask=mask).logits
        return call

    # "t5electra" is the model as the CLI, the server and the pipelines run it: after
    # optimize_for_inference() (fp32: oneDNN-packed weights on AVX-512 CPUs, docs/inference.md);
    # the unchanged model runs alongside as "t5electra default".
    fast = copy.deepcopy(ours).optimize_for_inference() if env.device == "cpu" else ours
    impls = {"t5electra": run("t5electra", fast), "transformers": run("transformers", peer)}
    if fast is not ours:
        impls["t5electra default"] = run("t5electra default", ours)
    label = f"{preset} discriminator {batch}x{length} fp32" + (" (optimize_for_inference)" if fast is not ours else "")
    env.log(f"[electra_infer] {label}: {getattr(fast, 'inference_report', 'plain modules')}")
    timings = env.compare(impls)
    diff = float((out["t5electra"].float() - out["transformers"].float()).abs().max())
    extra = {"max_abs_logit_diff": diff}
    if fast is not ours:
        extra["max_abs_logit_diff_vs_default"] = float((out["t5electra"] - out["t5electra default"]).abs().max())
        extra["kernel"] = str(fast.inference_report)
    results = [Result("electra_infer", label, "sequences/s", batch, timings, {"transformers": 1.3}, extra)]
    if env.device == "cpu":  # bf16 / int8 weights (optimize_for_inference) against transformers fp32
        ref = out["t5electra"].float()
        low = []
        for weights in ("bf16", "int8"):
            model = copy.deepcopy(ours).optimize_for_inference(weights)
            label = f"{preset} discriminator {batch}x{length} {weights}"
            env.log(f"[electra_infer] {label}: {model.inference_report}")
            timings = env.compare({"t5electra": run("t5electra", model), "transformers": run("transformers", peer)})
            got = out["t5electra"].float()
            low.append(Result("electra_infer", label, "sequences/s", batch, timings, {}, {
                "max_abs_logit_diff": float((got - out["transformers"].float()).abs().max()),
                "decisions_equal_to_fp32": float(((got > 0) == (ref > 0)).float().mean()),
                "kernel": str(model.inference_report)}))
        # issue #16's target: the best of bf16 / int8 at >= 2x transformers fp32 (on the faster row)
        best = max(low, key=lambda r: r.ratio("transformers"))
        best.targets["transformers"] = 2.0
        best.label += " (best of bf16, int8)"
        results += low
    return results


# ------------------------------------------------------------------------------------------------
# 5. Data pipeline vs training consumption
# ------------------------------------------------------------------------------------------------
def bench_data(env: Env, size_mb: float, workers: int, train: Result | None) -> list[Result]:
    """Runs benchmarks/data_pipeline.py (tokenise, stream, span-corrupt, batch) and compares the
    tokens it produces per second (inputs 512 + targets 114 per example) with the tokens per second
    our training step consumed in case 1."""
    from . import data_pipeline

    env.log(f"[data] {size_mb:g} MB synthetic corpus, {workers} workers")
    with contextlib.redirect_stdout(io.StringIO()):
        r = data_pipeline.main(["--size-mb", str(size_mb), "--workers", str(workers), "--no-model",
                                "--workdir", str(env.workdir / "data")])
    produced = r["stream_examples_per_s"] * (512 + 114)  # inputs + targets per example
    seconds_per_batch = 1.0  # nominal: throughput below is produced tokens per second
    timings = {"t5electra": Timing([seconds_per_batch])}
    extra = {"pipeline": r, "pipeline_tokens_per_s": produced}
    targets = {}
    if train is not None:
        consumed = train.throughput("t5electra")
        extra.update(train_label=train.label, train_tokens_per_s=consumed)
        timings["training step"] = Timing([seconds_per_batch * produced / consumed])
        targets = {"training step": 20.0}
    return [Result("data", f"span corruption 512->114 + batching, {workers} workers", "tokens/s",
                   produced, timings, targets, extra)]
