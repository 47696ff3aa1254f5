"""The benchmark harness (benchmarks/, `t5electra bench`) on tiny random models: it runs end to
end, writes a well-formed report, and what it compares is computed correctly. No timing assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")

from benchmarks import cases as C  # noqa: E402
from benchmarks.harness import PeakRSS, compare  # noqa: E402
from benchmarks.run import CASES, main  # noqa: E402


def test_tiny_run_writes_a_complete_report(tmp_path):
    out, img, js = tmp_path / "BENCH.md", tmp_path / "img", tmp_path / "bench.json"
    rc = main(["--tiny", "--threads", "1", "--reps", "1", "--warmup", "0", "--output", str(out),
               "--img-dir", str(img), "--json", str(js), "--profile"])
    assert rc == 0
    data = json.loads(js.read_text())
    results = data["results"]
    assert {r["case"] for r in results} == set(CASES)
    for r in results:
        assert r["timings"]["t5electra"]["seconds"], r["label"]
        for impl, value in r["throughput"].items():
            assert value > 0, (r["label"], impl)
        for peer, ratio in r["ratios"].items():
            assert ratio == pytest.approx(r["throughput"]["t5electra"] / r["throughput"][peer], rel=1e-2, abs=1e-3)
    # the harness compares like with like: same tokens as transformers and CTranslate2 (fp32)
    gen = [r for r in results if r["case"] == "generate" and "fp32" in r["label"]]
    assert len(gen) == 4 and all(r["extra"]["same_tokens_as_transformers"] for r in gen)
    if any("ctranslate2" in r["timings"] for r in gen):
        assert all(r["extra"]["same_tokens_as_ctranslate2"] for r in gen)
    infer = next(r for r in results if r["case"] == "electra_infer")
    assert infer["extra"]["max_abs_logit_diff"] < 1e-4
    low = [r for r in results if r["case"] == "electra_infer" and r["label"].split()[3] in ("bf16", "int8")]
    best = max(low, key=lambda r: r["ratios"]["transformers"])  # issue #16: the best of bf16 / int8 >= 2x
    assert [r["targets"] for r in low if r is not best] == [{}] and best["targets"] == {"transformers": 2.0}
    assert best["label"].endswith("(best of bf16, int8)")
    train = [r for r in results if r["case"] == "train"]
    assert {r["label"].split()[-1] for r in train} == {"fp32", "bf16"}
    assert all(0 < r["extra"]["mfu"]["t5electra"] for r in train)
    data_row = next(r for r in results if r["case"] == "data")
    assert data_row["extra"]["train_label"] == train[0]["label"]

    text = out.read_text()
    for heading in ("## Machine", "## Summary", "## 1. T5 training step", "## 2. ELECTRA pretraining",
                    "## 3. Generation", "## 4. ELECTRA discriminator", "## 5. Data pipeline", "## Profiles"):
        assert heading in text
    assert "| transformers | 5.24.0 |" in text and "measured matmul peak (fp32)" in text
    assert "| allocator | glibc, freed memory kept" in text  # the report names what the rows ran with
    assert "### Serving: `t5electra serve` under load" in text  # benchmarks/other_results.md is kept
    tables = [line for line in text.splitlines() if line.startswith("|")]
    assert all(line.endswith("|") for line in tables)
    pngs = sorted(img.glob("bench_*.png"))
    assert {p.stem for p in pngs} == {f"bench_{c}" for c in CASES}
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_cli_bench_is_the_same_command(tmp_path):
    from t5electra.cli import main as cli_main

    out = tmp_path / "B.md"
    assert cli_main(["bench", "--tiny", "--cases", "electra_infer", "--reps", "1", "--warmup", "0",
                     "--threads", "1", "--output", str(out), "--img-dir", str(tmp_path / "img")]) == 0
    assert "## 4. ELECTRA discriminator inference" in out.read_text()
    assert main(["--tiny", "--cases", "nonsense", "--output", str(tmp_path / "x.md")]) == 2


def test_compare_alternates_and_counts():
    calls = []
    timings = compare({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, warmup=1, reps=3)
    # warm-up, rotated rounds, then one untimed call each for the memory measurement
    assert calls == ["a", "b", "a", "b", "b", "a", "a", "b", "a", "b"]
    assert all(len(t.seconds) == 3 for t in timings.values())
    with PeakRSS() as mem:
        block = torch.ones(8 << 20)  # 32 MB touched
        block += 1
    assert mem.delta_mb is None or mem.delta_mb >= 16


def test_hf_electra_composition_matches_our_pretrainer(tmp_path):
    """The transformers composition in the benchmark computes our pretrainer's loss (eval: no dropout)."""
    import transformers

    from t5electra.models.electra_rtd import ElectraPretrainer

    ours = ElectraPretrainer.from_preset("electra-tiny", mask_token_id=C.MASK_ID,
                                         special_token_ids=[C.CLS_ID, C.SEP_ID]).eval()
    ours.save_pretrained(tmp_path)
    peer = C.HFElectraPretrainStep(transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "generator"),
                                   transformers.ElectraForPreTraining.from_pretrained(tmp_path / "discriminator"))
    peer.gen.eval()
    peer.disc.eval()
    ids = torch.randint(200, 512, (3, 24))
    ids[:, 0], ids[:, -1] = C.CLS_ID, C.SEP_ID
    mask = torch.ones_like(ids)
    mask[2, 18:] = 0
    pc = ours.config
    kwargs = dict(mask_token_id=C.MASK_ID, special_token_ids=[C.CLS_ID, C.SEP_ID, 0], mask_prob=pc.mask_prob,
                  max_predictions=pc.max_predictions, mask_token_prob=pc.mask_token_prob,
                  random_token_prob=pc.random_token_prob, vocab_size=512)
    a = ours(ids, mask, generator=torch.Generator().manual_seed(7), compute_metrics=False).loss
    b = peer(ids, mask, torch.Generator().manual_seed(7), kwargs)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # the same sharing as ours: as many trained numbers (ours fuses q/k/v, so fewer tensors)
    assert sum(p.numel() for p in peer.parameters()) == sum(p.numel() for p in ours.parameters())


@pytest.mark.parametrize("preset", ["t5-tiny", "t5-v1_1-tiny"])
def test_train_flops_formula_matches_flop_counter(preset, monkeypatch):
    """MFU's numerator: the analytic count equals torch's FlopCounterMode on a real step (with
    PyTorch's own matmuls: the counter has no formula for the oneDNN call of nn/linear.py)."""
    from torch.utils.flop_counter import FlopCounterMode

    from t5electra.machine import FP32_GEMM_ENV
    from t5electra.models.t5 import T5Config, T5ForConditionalGeneration

    monkeypatch.setenv(FP32_GEMM_ENV, "mkl")
    model = T5ForConditionalGeneration(T5Config.from_preset(preset))
    model.set_attn_implementation("eager")  # plain matmuls, which the counter sees
    x, y = torch.randint(3, 200, (2, 12)), torch.randint(3, 200, (2, 5))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=x, labels=y).loss.backward()
    assert C.t5_train_flops(model.config, 2, 12, 5) == pytest.approx(counter.get_total_flops(), rel=1e-3)


def test_ctranslate2_child_process_translates_and_reports_errors(tmp_path):
    """CTranslate2 runs in its own process (benchmarks/ct2_process.py): same hypotheses as in this
    process, and its errors arrive here as exceptions, not as a hang."""
    import ctranslate2  # a test dependency (pyproject's `test` extra)

    from benchmarks.ct2_process import TranslatorProcess

    with pytest.raises((RuntimeError, ValueError), match="child process"):
        TranslatorProcess(tmp_path / "missing", device="cpu", compute_type="float32", threads=1)
    ours, _, path = C._t5_pair("t5-tiny", tmp_path, "cpu")
    pieces = C._write_wordlevel_tokenizer(path, ours.config.vocab_size)
    child = C._ct2_translator(path, tmp_path / "ct2", "float32", "cpu", 1)
    try:
        src = [[pieces[i] for i in (5, 9, 7, 1)], [pieces[i] for i in (4, 4, 8, 1)]]
        here = ctranslate2.Translator(str(tmp_path / "ct2"), device="cpu", intra_threads=1)
        want = [r.hypotheses for r in here.translate_batch(src, max_decoding_length=6)]
        assert [r.hypotheses for r in child.translate_batch(src, max_decoding_length=6)] == want
        assert child.proc.is_alive()
    finally:
        child.close()
    assert not child.proc.is_alive()


def test_train_step_script_times_our_recipe_step():
    from benchmarks.train_step import main as train_step

    out = train_step(["--preset", "t5-tiny", "--shape", "2x12x6", "--steps", "2", "--precision", "fp32"])
    assert out["shape"] == "2x12x6" and len(out["seconds"]) == 2 and out["median_s"] > 0 and out["peak_rss_mb"] > 0


def test_device_check_runs_every_section_and_records_it(tmp_path):
    """benchmarks/device_check.py (run on a GPU machine: docs/performance.md) on tiny presets on CPU:
    every section passes here too, and a failing section is recorded without stopping the others."""
    from benchmarks import device_check

    assert device_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "device_check.json").read_text())
    sections = report["sections"]
    assert list(sections) == ["parity_fp32", "parity_bf16", "gradients", "generate", "train_bf16"]
    assert all(s["ok"] for s in sections.values())
    assert sections["parity_fp32"]["models"]["ElectraForQuestionAnswering"]["max_abs_diff"] < 1e-4
    assert sections["generate"]["checks"]["cached_vs_full_forward"]["same"]
    t5 = sections["train_bf16"]["t5"]
    assert len(t5["losses"]["t5electra"]) == len(t5["losses"]["transformers"]) == 20
    assert "## train_bf16: ok" in (tmp_path / "device_check.md").read_text()

    class Boom(device_check.Checker):
        def gradients(self):
            raise RuntimeError("planted")

    device_check.Checker = Boom
    try:
        rc = device_check.main(["--device", "cpu", "--tiny", "--out", str(tmp_path / "b"),
                                "--sections", "gradients,parity_fp32"])
    finally:
        device_check.Checker = Boom.__mro__[1]
    sections = json.loads((tmp_path / "b" / "device_check.json").read_text())["sections"]
    assert rc == 1 and "planted" in sections["gradients"]["error"] and sections["parity_fp32"]["ok"]


def test_dist_check_compares_torchrun_runs_with_one_process(tmp_path):
    """benchmarks/dist_check.py (NCCL on a GPU machine) on two gloo processes: torchrun DDP and FSDP
    through the CLI log one process's losses, the sharded checkpoint resumes in one process; a failed
    or diverging run is reported as a failure, not as a pass."""
    from benchmarks import dist_check

    assert dist_check.main(["--device", "cpu", "--nproc", "2", "--out", str(tmp_path),
                            "--objectives", "t5-span-corruption"]) == 0
    checks = json.loads((tmp_path / "dist_check.json").read_text())["checks"]["t5-span-corruption"]["checks"]
    assert set(checks) == {"ddp", "fsdp", "fsdp->1", "learns"} and all(c["ok"] for c in checks.values())
    assert checks["fsdp"]["max_abs_diff"] <= dist_check.TOL
    # a run that failed, or lost a step, is a failure of the check
    ref = {"rc": 0, "rows": {s: {"loss": 1.0} for s in (1, 2)}}
    assert not dist_check.compare({"rc": 1, "rows": {}}, ref, range(1, 3), ("loss",))["ok"]
    assert not dist_check.compare({"rc": 0, "rows": {1: {"loss": 1.0}}}, ref, range(1, 3), ("loss",))["ok"]
    assert not dist_check.compare({"rc": 0, "rows": {1: {"loss": 1.0}, 2: {"loss": 1.1}}}, ref, range(1, 3),
                                  ("loss",))["ok"]


def test_charts_go_next_to_their_report_and_the_full_runs_into_docs_img(tmp_path, monkeypatch):
    """--full into BENCHMARKS.md (by default or named with --output) writes docs/img, whose charts the
    published report links; any other report gets bench-<mode>-img/ beside it."""
    from benchmarks.run import ROOT, default_img_dir

    monkeypatch.chdir(ROOT)
    assert default_img_dir("full", None) == ROOT / "docs" / "img"
    assert default_img_dir("full", Path("BENCHMARKS.md")) == ROOT / "docs" / "img"
    assert default_img_dir("full", tmp_path / "B.md") == tmp_path / "bench-full-img"
    assert default_img_dir("quick", tmp_path / "q.md") == tmp_path / "bench-quick-img"
    assert default_img_dir("quick", None) == Path("bench-quick-img")
