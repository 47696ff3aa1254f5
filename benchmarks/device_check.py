"""Parity with transformers and bf16 training on an accelerator, in one short run
(docs/performance.md, "On a GPU"):

    python -m benchmarks.device_check --device cuda --out device-check/

The CPU suite proves parity on CPU; the kernels a GPU runs are others (cuBLAS, SDPA's fused
attention, fused AdamW on CUDA), so this re-runs the comparisons there, on real-size presets with
random weights (our model saved, transformers loading the same checkpoint):

1. ``parity_fp32``: logits and loss of T5 v1.0 / v1.1, mT5 and ELECTRA (discriminator, generator,
   sequence / token classification, QA) against transformers on padded batches, TF32 off;
2. ``parity_bf16``: both models cast to bf16: our error against transformers' fp32 output next to
   transformers' own bf16 error (ours must not be worse than 2x theirs);
3. ``gradients``: T5 gradients in train mode (dropout 0) against transformers';
4. ``generate``: greedy and beam-4 outputs against transformers' ``generate``, and cached decoding
   against a full forward per token;
5. ``train_bf16``: 20 bf16-autocast training steps of T5 (ours and transformers' from the same
   weights, same batch and optimiser) and of the ELECTRA pretrainer: losses side by side, finite and
   falling, and the time per step with its MFU against the measured bf16 matmul peak.

Each section is recorded in ``<out>/device_check.json`` as soon as it ends (a failure in one does
not lose the others) and summarised in ``<out>/device_check.md``. ``--tiny`` runs tiny presets
(tests/test_bench_smoke.py runs it on CPU so that the script cannot rot). Not a test: it reports;
the exit status is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from .cases import MASK_ID, CLS_ID, SEP_ID, _quiet_transformers, t5_train_flops, train_step_fn
from .harness import machine_info, matmul_peak

FP32_TOL = dict(atol=1e-4, rtol=1e-4)  # the CPU parity tests' tolerance (tests/models)
PRESETS = {  # name -> (our class path, transformers class, preset), full and tiny sizes
    "full": {"t5-small": "t5-small", "t5-v1_1-small": "t5-v1_1-small", "mt5-small": "mt5-small",
             "electra": "electra-small", "electra-generator": "electra-small-generator"},
    "tiny": {"t5-small": "t5-tiny", "t5-v1_1-small": "t5-v1_1-tiny", "mt5-small": "t5-v1_1-tiny",
             "electra": "electra-tiny", "electra-generator": "electra-tiny-generator"},
}
ELECTRA_CLASSES = ("ElectraForPreTraining", "ElectraForSequenceClassification", "ElectraForTokenClassification",
                   "ElectraForQuestionAnswering")


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


def _close(a: torch.Tensor, b: torch.Tensor, tol: dict) -> bool:
    return bool(torch.isclose(a.float(), b.float(), **tol).all())


class Checker:
    """Collects sections; each is a function returning a dict with a boolean ``ok``."""

    def __init__(self, out: Path, device: str, tiny: bool):
        self.out, self.device, self.tiny = out, torch.device(device), tiny
        self.sizes = PRESETS["tiny" if tiny else "full"]
        self.workdir = Path(tempfile.mkdtemp(prefix="t5electra-devcheck-"))
        self.report: dict[str, Any] = {"machine": machine_info(self.device.type, torch.get_num_threads()),
                                       "sections": {}}

    def run(self, name: str, fn: Callable[[], dict]) -> None:
        t0 = time.perf_counter()
        try:
            result = fn()
        except Exception:  # recorded, and the next section still runs
            result = {"ok": False, "error": traceback.format_exc(limit=6)}
        result["seconds"] = round(time.perf_counter() - t0, 1)
        self.report["sections"][name] = result
        print(f"device_check: {name}: {'ok' if result['ok'] else 'FAILED'} ({result['seconds']} s)", flush=True)
        if not result["ok"]:
            print(json.dumps(result, indent=1, default=str)[:3000], flush=True)
        (self.out / "device_check.json").write_text(json.dumps(self.report, indent=1, default=str))

    # -- model pairs -------------------------------------------------------------------------------
    def t5_pair(self, key: str, **overrides):
        import transformers

        from t5electra.models.t5 import T5Config, T5ForConditionalGeneration

        torch.manual_seed(0)
        ours = T5ForConditionalGeneration(T5Config.from_preset(self.sizes[key], dropout_rate=0.0, **overrides))
        path = self.workdir / f"{key}-{len(list(self.workdir.iterdir()))}"
        ours.save_pretrained(path)
        cls = transformers.MT5ForConditionalGeneration if ours.config.model_type == "mt5" \
            else transformers.T5ForConditionalGeneration
        peer = cls.from_pretrained(path, dtype=torch.float32)
        return ours.to(self.device).eval(), peer.to(self.device).eval()

    def electra_pair(self, cls_name: str, preset: str):
        import transformers

        from t5electra.models import electra as E

        torch.manual_seed(0)
        extra = {"num_labels": 3} if cls_name != "ElectraForPreTraining" and "QuestionAnswering" not in cls_name \
            else {}
        ours = getattr(E, cls_name)(E.ElectraConfig.from_preset(preset, hidden_dropout_prob=0.0,
                                                                 attention_probs_dropout_prob=0.0, **extra))
        path = self.workdir / f"{cls_name}-{len(list(self.workdir.iterdir()))}"
        ours.save_pretrained(path)
        peer = getattr(transformers, cls_name).from_pretrained(path, dtype=torch.float32)
        return ours.to(self.device).eval(), peer.to(self.device).eval()

    def t5_batch(self, vocab: int, n: int = 4, s: int = 64, t: int = 24):
        g = torch.Generator().manual_seed(1)
        ids = torch.randint(2, min(vocab, 32000), (n, s), generator=g)
        mask = torch.ones_like(ids)
        mask[1, s // 2:] = 0  # right padding
        labels = torch.randint(2, min(vocab, 32000), (n, t), generator=g)
        labels[0, t - 5:] = -100
        return [x.to(self.device) for x in (ids, mask, labels)]

    def electra_batch(self, vocab: int, n: int = 4, s: int = 64):
        g = torch.Generator().manual_seed(2)
        ids = torch.randint(1000 if vocab > 2000 else 5, vocab, (n, s), generator=g)
        mask = torch.ones_like(ids)
        mask[2, s // 3:] = 0
        return ids.to(self.device), mask.to(self.device)

    # -- sections ---------------------------------------------------------------------------------
    def parity(self, dtype: torch.dtype) -> dict:
        rows, ok = {}, True
        for key in ("t5-small", "t5-v1_1-small", "mt5-small"):
            overrides = {"model_type": "mt5"} if self.tiny and key == "mt5-small" else {}
            ours, peer = self.t5_pair(key, **overrides)
            ids, mask, labels = self.t5_batch(ours.config.vocab_size)
            with torch.no_grad():
                ref = peer(input_ids=ids, attention_mask=mask, labels=labels)
                if dtype != torch.float32:
                    ours.to(dtype), peer.to(dtype)
                a = ours(ids, mask, labels=labels)
                b = peer(input_ids=ids, attention_mask=mask, labels=labels)
            rows[key] = self._compare(a.logits, b.logits, ref.logits, dtype) | {
                "loss": [round(a.loss.item(), 5), round(b.loss.item(), 5)]}
            ok &= rows[key]["ok"]
        for cls_name in ELECTRA_CLASSES + ("ElectraForMaskedLM",):
            preset = self.sizes["electra-generator" if cls_name == "ElectraForMaskedLM" else "electra"]
            ours, peer = self.electra_pair(cls_name, preset)
            ids, mask = self.electra_batch(ours.config.vocab_size)
            with torch.no_grad():
                ref = peer(input_ids=ids, attention_mask=mask)
                if dtype != torch.float32:
                    ours.to(dtype), peer.to(dtype)
                a, b = ours(input_ids=ids, attention_mask=mask), peer(input_ids=ids, attention_mask=mask)
            names = ("start_logits", "end_logits") if "QuestionAnswering" in cls_name else ("logits",)
            got = torch.cat([getattr(a, k).flatten() for k in names])
            want = torch.cat([getattr(b, k).flatten() for k in names])
            ref_all = torch.cat([getattr(ref, k).flatten() for k in names])
            rows[cls_name] = self._compare(got, want, ref_all, dtype)
            ok &= rows[cls_name]["ok"]
        return {"ok": ok, "models": rows, "tf32": torch.backends.cuda.matmul.allow_tf32}

    @staticmethod
    def _compare(ours: torch.Tensor, peer: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype) -> dict:
        if dtype == torch.float32:
            return {"max_abs_diff": _max_err(ours, peer), "ok": _close(ours, peer, FP32_TOL)}
        # low precision: each side's error against transformers' fp32 output
        ours_err, peer_err = _max_err(ours, ref), _max_err(peer, ref)
        return {"ours_err_vs_fp32": ours_err, "transformers_err_vs_fp32": peer_err,
                "ok": math.isfinite(ours_err) and ours_err <= 2 * peer_err + 1e-3}

    def gradients(self) -> dict:
        rows, ok = {}, True
        for key in ("t5-small", "t5-v1_1-small"):
            ours, peer = self.t5_pair(key)
            ours.train(), peer.train()
            ids, mask, labels = self.t5_batch(ours.config.vocab_size)
            ours(ids, mask, labels=labels).loss.backward()
            peer(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            hp = dict(peer.named_parameters())
            qkv = torch.cat([hp[f"decoder.block.1.layer.0.SelfAttention.{p}.weight"].grad for p in "qkv"])
            pairs = {"shared": (ours.shared.weight.grad, hp["shared.weight"].grad),
                     "decoder.1.qkv": (ours.decoder.blocks[1].self_attn.qkv.weight.grad, qkv)}
            rows[key] = {}
            for name, (a, b) in pairs.items():
                rel = _max_err(a, b) / max(b.abs().max().item(), 1e-30)
                rows[key][name] = {"max_rel_diff": rel, "ok": _close(a, b, FP32_TOL)}
                ok &= rows[key][name]["ok"]
        return {"ok": ok, "models": rows}

    def generate(self) -> dict:
        # v1.1 at its default init: random t5-small (v1.0) repeats one token, and a wider init makes
        # the model so ill-conditioned that transformers' own fp32 and fp64 outputs differ by 1e-1
        ours, peer = self.t5_pair("t5-v1_1-small")
        ids, mask, _ = self.t5_batch(ours.config.vocab_size, s=32)
        n_new, rows = 24, {}
        for beams in (1, 4):
            with torch.no_grad():
                a = ours.generate(ids, mask, max_new_tokens=n_new, num_beams=beams)
                b = peer.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n_new, num_beams=beams,
                                  do_sample=False)
            same = a.shape == b.shape and bool((a == b).all())
            row = {"same_as_transformers": same, "ours": a.tolist(), "transformers": b.tolist()}
            if not same and beams == 1:  # how close to a tie transformers' choice was where they part
                row["top2_gap_at_divergence"] = self._divergence_gaps(peer, ids, mask, a, b)
            rows[f"beams={beams}"] = row
        # cached decoding (generate) against a full forward per token, EOS suppressed on both sides
        with torch.no_grad():
            cached = ours.generate(ids, mask, max_new_tokens=n_new, min_new_tokens=n_new)
            dec = torch.zeros(ids.shape[0], 1, dtype=torch.long, device=self.device)
            for _ in range(n_new):
                logits = ours(ids, mask, decoder_input_ids=dec).logits[:, -1].float()
                logits[:, ours.config.eos_token_id] = -math.inf
                dec = torch.cat([dec, logits.argmax(-1, keepdim=True)], 1)
        rows["cached_vs_full_forward"] = {"same": bool(torch.equal(cached, dec))}
        ok = rows["cached_vs_full_forward"]["same"] and all(r["same_as_transformers"] for k, r in rows.items()
                                                             if k.startswith("beams"))
        return {"ok": ok, "checks": rows}

    @staticmethod
    def _divergence_gaps(peer, ids, mask, a: torch.Tensor, b: torch.Tensor) -> list[float]:
        """Per differing row: transformers' logit of its token minus its logit of ours, at the first
        step where the greedy outputs part (a near tie when ~1e-5 of the logits' scale)."""
        gaps = []
        for r in range(a.shape[0]):
            n = min(a.shape[1], b.shape[1])
            diff = (a[r, :n] != b[r, :n]).nonzero()
            if len(diff) == 0:
                continue
            j = int(diff[0])
            with torch.no_grad():
                logits = peer(input_ids=ids[r:r + 1], attention_mask=mask[r:r + 1],
                              decoder_input_ids=b[r:r + 1, :j]).logits[0, -1]
            gaps.append((logits[b[r, j]] - logits[a[r, j]]).item())
        return gaps

    def train_bf16(self, peak: float) -> dict:
        from t5electra.models.electra_rtd import ElectraPretrainer
        from t5electra.train.config import OptimSection
        from t5electra.train.optim import build_optimizer

        steps = 20
        B, S, T = (4, 16, 8) if self.tiny else (16, 128, 32)
        ours, peer = self.t5_pair("t5-small")
        ours.train(), peer.train()
        g = torch.Generator().manual_seed(3)
        V = ours.config.vocab_size
        batch = {"input_ids": torch.randint(3, V - 100, (B, S), generator=g).to(self.device),
                 "labels": torch.randint(3, V - 100, (B, T), generator=g).to(self.device)}
        opts = {"t5electra": build_optimizer(ours, OptimSection(lr=1e-3, weight_decay=0.0)),
                "transformers": torch.optim.AdamW(peer.parameters(), lr=1e-3, weight_decay=0.0, fused=True)}
        losses: dict[str, list[float]] = {}
        ms: dict[str, float] = {}
        for name, model in (("t5electra", ours), ("transformers", peer)):
            step = train_step_fn(model, opts[name], batch, self.device.type, "bf16")
            losses[name] = []
            for _ in range(steps):  # the loss of each step, then timed steps on the same batch
                with torch.autocast(self.device.type, torch.bfloat16), torch.no_grad():
                    losses[name].append(round(model(**batch).loss.item(), 4))
                step()
            ms[name] = self._time(step, 10)
        flops = t5_train_flops(ours.config, B, S, T)
        t5 = {"shape": f"{B}x{S}->{T}", "losses": losses, "ms_per_step": ms,
              "mfu": {k: flops / (v / 1e3) / peak for k, v in ms.items()},
              "speedup_vs_transformers": ms["transformers"] / ms["t5electra"]}
        first = [losses[k][0] for k in losses]
        t5_ok = (all(math.isfinite(x) for k in losses for x in losses[k])
                 and abs(first[0] - first[1]) <= 1e-2 * abs(first[1])
                 and losses["t5electra"][-1] < losses["t5electra"][0] - 1.0)
        del ours, peer, opts
        # the ELECTRA pretrainer (generator + discriminator) in bf16 autocast
        torch.manual_seed(0)
        rtd = ElectraPretrainer.from_preset(self.sizes["electra"], mask_token_id=MASK_ID,
                                            special_token_ids=[CLS_ID, SEP_ID]).to(self.device).train()
        Vd = rtd.discriminator.config.vocab_size
        eb, el = (4, 16) if self.tiny else (32, 128)
        ids = torch.randint(min(1000, Vd // 2), Vd, (eb, el), generator=torch.Generator().manual_seed(4))
        ids[:, 0], ids[:, -1] = CLS_ID % Vd, SEP_ID % Vd
        ids = ids.to(self.device)
        opt = build_optimizer(rtd, OptimSection(lr=1e-3, weight_decay=0.0))
        gen = torch.Generator(self.device).manual_seed(5)
        rtd_losses = []

        def rtd_step() -> float:
            with torch.autocast(self.device.type, torch.bfloat16):
                loss = rtd(ids, torch.ones_like(ids), generator=gen, compute_metrics=False).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return loss.detach()

        for _ in range(steps):
            rtd_losses.append(round(float(rtd_step()), 4))
        electra = {"shape": f"{eb}x{el}", "losses": rtd_losses, "ms_per_step": self._time(rtd_step, 10)}
        electra_ok = all(math.isfinite(x) for x in rtd_losses) and rtd_losses[-1] < rtd_losses[0]
        return {"ok": t5_ok and electra_ok, "peak_bf16_flops": peak, "t5": t5, "electra_pretrainer": electra}

    def _time(self, fn: Callable[[], Any], reps: int) -> float:
        """Median milliseconds per call (synchronised on a GPU)."""
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        times = []
        for _ in range(reps):
            sync()
            t0 = time.perf_counter()
            fn()
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        return sorted(times)[len(times) // 2]


def write_markdown(report: dict, path: Path) -> None:
    m = report["machine"]
    lines = [f"# device check on {m.get('gpu', m['device'])}", "",
             f"torch {m['torch']}, transformers {m['transformers']}, python {m['python']}", ""]
    for name, sec in report["sections"].items():
        lines.append(f"## {name}: {'ok' if sec['ok'] else 'FAILED'} ({sec['seconds']} s)")
        lines += ["", "```json", json.dumps({k: v for k, v in sec.items() if k not in ("ok", "seconds")},
                                             indent=1, default=str)[:6000], "```", ""]
    path.write_text("\n".join(lines))


SECTIONS = ("parity_fp32", "parity_bf16", "gradients", "generate", "train_bf16")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.device_check", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    p.add_argument("--out", type=Path, default=Path("device-check"), help="where the JSON and Markdown go")
    p.add_argument("--tiny", action="store_true", help="tiny presets (a smoke run of the script itself)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset, run in this order")
    a = p.parse_args(argv)
    chosen = [n.strip() for n in a.sections.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in SECTIONS]
    if unknown:
        print(f"device_check: unknown section(s) {unknown}; choose from {list(SECTIONS)}")
        return 2
    if torch.device(a.device).type == "cuda" and not torch.cuda.is_available():
        print("device_check: --device cuda but torch.cuda.is_available() is False")
        return 2
    # fp32 parity means fp32: TF32 matmuls round inputs to 10 mantissa bits
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    _quiet_transformers()
    a.out.mkdir(parents=True, exist_ok=True)
    c = Checker(a.out, a.device, a.tiny)
    sections = {
        "parity_fp32": lambda: c.parity(torch.float32),
        "parity_bf16": lambda: c.parity(torch.bfloat16),
        "gradients": c.gradients,
        "generate": c.generate,
        "train_bf16": lambda: c.train_bf16(matmul_peak("bf16", c.device.type)),
    }
    try:
        for name in chosen:
            c.run(name, sections[name])
    finally:
        shutil.rmtree(c.workdir, ignore_errors=True)  # the checkpoints both sides loaded
    write_markdown(c.report, a.out / "device_check.md")
    return 0 if all(s["ok"] for s in c.report["sections"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
