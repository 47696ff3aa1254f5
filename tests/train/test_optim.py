"""Optimisers, parameter groups, ELECTRA layer-wise lr decay, schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from t5electra.errors import ConfigError
from t5electra.train.config import load_config
from t5electra.train.optim import (Adafactor, AdamWScale, build_optimizer, electra_layer_depth,
                                   layerwise_lr_scales, param_groups)
from t5electra.train.schedules import Schedule, build_scheduler, inverse_sqrt, linear


class RMSNormLike(nn.Module):  # a norm our models define themselves (T5's RMSNorm)
    def __init__(self, d):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(11, 6)
        self.norm = RMSNormLike(6)
        self.proj = nn.Linear(6, 8)
        self.ln = nn.LayerNorm(8)
        self.head = nn.Linear(8, 11, bias=False)
        self.scale3d = nn.Parameter(torch.randn(2, 3, 4) * 0.1)  # a 3-D tensor: factored over the last two dims

    def forward(self, ids):
        h = self.ln(self.proj(self.norm(self.embed(ids))))
        h = h + (self.scale3d.sum(0).mean() * h)
        return self.head(h)


def _loss(model, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 11, (4, 5), generator=g)
    return nn.functional.cross_entropy(model(ids).flatten(0, 1), ids.roll(1, 1).flatten())


# -- Adafactor: parity with transformers, step by step ----------------------------------------
@pytest.mark.parametrize("kwargs", [
    dict(lr=None, relative_step=True, scale_parameter=True, warmup_init=False),
    dict(lr=None, relative_step=True, scale_parameter=True, warmup_init=True),
    dict(lr=1e-2, relative_step=False, scale_parameter=False, beta1=0.9, weight_decay=0.1, clip_threshold=0.5),
    dict(lr=3e-2, relative_step=False, scale_parameter=True, decay_rate=-0.6),
])
def test_adafactor_matches_transformers_step_by_step(kwargs):
    from transformers.optimization import Adafactor as HFAdafactor

    ours, ref = Tiny(), Tiny()
    ref.load_state_dict(ours.state_dict())
    opt_ours = Adafactor(ours.parameters(), **kwargs)
    opt_ref = HFAdafactor(ref.parameters(), **kwargs)
    for step in range(6):
        for model, opt in ((ours, opt_ours), (ref, opt_ref)):
            opt.zero_grad()
            _loss(model, step).backward()
            opt.step()
        for (name, a), b in zip(ours.named_parameters(), ref.parameters()):
            assert torch.allclose(a, b, atol=1e-6, rtol=0), f"step {step}: {name} differs by {(a - b).abs().max()}"
    # the matrices really used factored statistics
    assert opt_ours.state[ours.proj.weight]["exp_avg_sq_row"].shape == (8,)
    assert opt_ours.state[ours.scale3d]["exp_avg_sq_col"].shape == (2, 4)


def test_adafactor_on_bf16_weights_matches_transformers_and_resumes_with_fp32_statistics():
    """16-bit weights: the statistics are float32 (transformers' too), also after a resume: torch's
    load_state_dict casts every state tensor to its parameter's dtype, and the resumed run updated its
    moments in bf16 (it drifted from the uninterrupted one)."""
    import io

    from transformers.optimization import Adafactor as HFAdafactor

    kwargs = dict(lr=1e-2, relative_step=False, beta1=0.9, weight_decay=0.01)
    ours, ref = Tiny().to(torch.bfloat16), Tiny().to(torch.bfloat16)
    ref.load_state_dict(ours.state_dict())
    opt_ours, opt_ref = Adafactor(ours.parameters(), **kwargs), HFAdafactor(ref.parameters(), **kwargs)

    def step(model, opt, seed):
        opt.zero_grad()
        _loss(model, seed).backward()
        opt.step()

    for seed in range(3):
        step(ours, opt_ours, seed)
        step(ref, opt_ref, seed)
    for a, b in zip(ours.parameters(), ref.parameters()):  # (a float32 rounding of the lr may flip a bf16 ulp)
        assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=2**-7)
    buf = io.BytesIO()  # a checkpoint: the weights and the optimizer state, saved and read back
    torch.save({"model": ours.state_dict(), "optim": opt_ours.state_dict()}, buf)
    buf.seek(0)
    saved = torch.load(buf, weights_only=True)
    resumed = Tiny().to(torch.bfloat16)
    resumed.load_state_dict(saved["model"])
    opt_resumed = Adafactor(resumed.parameters(), **kwargs)
    opt_resumed.load_state_dict(saved["optim"])
    state = opt_resumed.state[resumed.proj.weight]
    assert {k: v.dtype for k, v in state.items() if k != "step"} == dict.fromkeys(
        ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col"), torch.float32)
    assert opt_resumed.state[resumed.proj.bias]["exp_avg_sq"].dtype == torch.float32
    for seed in range(3, 9):
        step(ours, opt_ours, seed)
        step(resumed, opt_resumed, seed)
    for (name, a), b in zip(ours.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), f"{name} differs by {(a.float() - b.float()).abs().max()}"


def test_adafactor_reports_its_relative_step_lr():
    from t5electra.train.loop import train_step

    model = Tiny()
    opt = Adafactor(model.parameters(), lr=None, relative_step=True, warmup_init=True)
    lrs = [train_step(model, [s], lambda m, s: _loss(m, s), opt).lr for s in range(3)]
    assert lrs == pytest.approx([1e-6, 2e-6, 3e-6])
    assert Adafactor(model.parameters(), lr=0.02, relative_step=False).current_lr() == 0.02


def test_adafactor_rejects_inconsistent_options():
    p = [nn.Parameter(torch.zeros(2))]
    with pytest.raises(ConfigError, match="relative_step"):
        Adafactor(p, lr=1e-3, relative_step=True)
    with pytest.raises(ConfigError, match="warmup_init"):
        Adafactor(p, lr=1e-3, relative_step=False, warmup_init=True)


# -- nanoT5's RMS-scaled AdamW -----------------------------------------------------------------
def test_adamw_scaled_first_step_is_lr_times_rms_times_sign():
    big = nn.Parameter(torch.tensor([[2.0, -4.0], [1.0, 3.0]]))    # RMS = sqrt(30/4)
    tiny = nn.Parameter(torch.tensor([1e-5, -2e-5]))                # RMS < 1e-3: the floor applies
    opt = AdamWScale([big, tiny], lr=0.1, eps=1e-12)
    big.grad = torch.tensor([[0.5, -1.0], [2.0, -0.1]])
    tiny.grad = torch.tensor([-3.0, 1.0])
    b0, t0 = big.detach().clone(), tiny.detach().clone()
    opt.step()
    # step 1: m = (1-b1) g, v = (1-b2) g^2, step = lr * sqrt(1-b2)/(1-b1) * rms -> lr * rms * sign(g)
    assert torch.allclose(big - b0, -0.1 * math.sqrt(30 / 4) * big.grad.sign(), atol=1e-6)
    assert torch.allclose(tiny - t0, -0.1 * 1e-3 * tiny.grad.sign(), atol=1e-9)


def test_adamw_scaled_weight_decay_is_decoupled_and_after_the_update():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = AdamWScale([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(2)   # no Adam update: only the decay moves the weights
    opt.step()
    assert torch.allclose(p, torch.tensor([1.0, -2.0]) * (1 - 0.1 * 0.5))


def test_adamw_scaled_without_rms_is_plain_adam():
    p = nn.Parameter(torch.tensor([5.0, -5.0]))
    q = nn.Parameter(p.detach().clone())
    ours = AdamWScale([p], lr=0.01, eps=1e-8, scale_by_rms=False)
    ref = torch.optim.Adam([q], lr=0.01, eps=0.0)
    for i in range(3):
        p.grad = torch.tensor([1.0 + i, -0.5])
        q.grad = p.grad.clone()
        ours.step()
        ref.step()
    assert torch.allclose(p, q, atol=1e-6)


def test_adamw_scaled_fused_kernel_equals_the_loop():
    """The fused kernel (eps rescaled by sqrt(1 - b2^t)) gives the loop's update within float
    rounding over 30 steps: parameters with RMS above and below the 1e-3 floor, gradients near eps
    (where the rescaled eps matters), weight decay, one parameter without a gradient; the same state
    (step counts, moments); built by build_optimizer with fused unless optim.fused=false."""
    g = torch.Generator().manual_seed(0)
    shapes = [((64, 32), 1.0, 0.1), ((300,), 1e-5, 0.1), ((16, 16), 0.05, 1e-6)]  # (shape, |p|, |grad|)
    start = [torch.randn(*shape, generator=g) * scale for shape, scale, _ in shapes]
    grads = [[torch.randn(*shape, generator=g) * gs for shape, _, gs in shapes] for _ in range(30)]
    runs = {}
    for fused in (True, False):
        params = [nn.Parameter(t.clone()) for t in start] + [nn.Parameter(torch.ones(3))]  # the last: no grad
        opt = AdamWScale([{"params": params[:2], "weight_decay": 0.1}, {"params": params[2:]}], lr=1e-2,
                         fused=fused)
        for step_grads in grads:
            for q, gr in zip(params, step_grads):
                q.grad = gr.clone()
            opt.step()
        runs[fused] = (params, opt)
    (fp, fo), (lp, lo) = runs[True], runs[False]
    for a, b, s0 in zip(fp, lp, start):
        assert (a - s0).abs().max() > 1e-4 * s0.abs().max()  # every parameter moved
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6 * s0.abs().max().item())  # float rounding of the scale
    assert torch.equal(fp[3], torch.ones(3)) and fp[3] not in fo.state
    for a, b in zip(fp[:3], lp[:3]):
        sa, sb = fo.state[a], lo.state[b]
        assert sa["step"].item() == sb["step"].item() == 30
        for key in ("exp_avg", "exp_avg_sq"):  # the kernel's m update is a lerp: rounding of the scale
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6 * sb[key].abs().max().item())
    base = ["--model.preset=t5-tiny", "--optim.name=adamw_scaled"]
    model = nn.Linear(4, 4)
    assert build_optimizer(model, load_config(None, base).optim).fused
    assert not build_optimizer(model, load_config(None, base + ["--optim.fused=false"]).optim).fused


# -- parameter groups --------------------------------------------------------------------------
def test_weight_decay_exclusions_and_tied_parameters():
    model = Tiny()
    groups = param_groups(model, lr=1e-3, weight_decay=0.01, decay_embeddings=False)
    by_name = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert by_name == {"embed.weight": 0.0, "norm.weight": 0.0, "proj.weight": 0.01, "proj.bias": 0.0,
                       "ln.weight": 0.0, "ln.bias": 0.0, "head.weight": 0.01, "scale3d": 0.01}
    groups = param_groups(model, lr=1e-3, weight_decay=0.01, decay_embeddings=True)
    assert {n: g["weight_decay"] for g in groups for n in g["names"]}["embed.weight"] == 0.01
    # a tied parameter appears once
    tied = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 5, bias=False))
    tied[1].weight = tied[0].weight
    names = [n for g in param_groups(tied, 1e-3, 0.1) for n in g["names"]]
    assert names == ["0.weight"]


# -- ELECTRA layer-wise learning-rate decay ----------------------------------------------------
def _electra_names(num_layers):
    from transformers import ElectraConfig, ElectraForSequenceClassification

    cfg = ElectraConfig(vocab_size=30, embedding_size=8, hidden_size=16, num_hidden_layers=num_layers,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=16)
    return ElectraForSequenceClassification(cfg)


def test_layerwise_decay_exponents_are_the_intended_ones():
    L, d = 3, 0.8
    model = _electra_names(L)
    names = [n for n, _ in model.named_parameters()]
    scales = layerwise_lr_scales(names, L, d)
    exponents = {n: round(math.log(s) / math.log(d)) for n, s in scales.items()}
    for n, e in exponents.items():
        assert scales[n] == pytest.approx(d ** e, rel=1e-12)
        if n.startswith("classifier."):
            assert e == 0, n                                  # head: full lr
        elif n.startswith(("electra.embeddings.", "electra.embeddings_project.")):
            assert e == L + 1, n                              # embeddings: one below layer 0
        else:
            i = int(n.split(".")[3])                          # electra.encoder.layer.{i}.
            assert e == L - i, n                              # top layer (i = L-1): d^1
    # The official code (google-research/electra model/optimization.py _get_layer_lrs) uses depth
    # L + 2 for the head and d^(L + 2 - depth): one extra factor d for every non-head parameter.
    for n in names:
        depth = electra_layer_depth(n, L)
        official_depth = L + 2 if depth == L + 1 else depth
        official = d ** (L + 2 - official_depth)
        assert official == pytest.approx(scales[n] * (d if depth <= L else 1.0), rel=1e-12)


def test_layerwise_depths_cover_our_electra_names():
    from t5electra.models.electra import ElectraConfig, ElectraForSequenceClassification

    L = 3
    model = ElectraForSequenceClassification(ElectraConfig(
        vocab_size=30, embedding_size=8, hidden_size=16, num_hidden_layers=L, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16))
    depth = {n: electra_layer_depth(n, L) for n, _ in model.named_parameters()}
    assert {d for n, d in depth.items() if ".embeddings" in n} == {0}
    assert {d for n, d in depth.items() if n.startswith("classifier.")} == {L + 1}
    for i in range(L):
        layer = [d for n, d in depth.items() if f".{i}." in n and "embeddings" not in n]
        assert layer and set(layer) == {i + 1}
    assert set(depth.values()) == set(range(L + 2))  # no depth skipped


def test_layerwise_groups_and_scheduler_keep_the_ratios():
    L = 2
    model = _electra_names(L)
    cfg = load_config(None, ["--optim.lr=1e-3", "--optim.layerwise_lr_decay=0.5", "--optim.weight_decay=0.01",
                             "--schedule.name=linear", "--schedule.warmup_steps=2"])
    opt = build_optimizer(model, cfg.optim, num_layers=L)
    sched = build_scheduler(opt, cfg.schedule, total_steps=10)
    lr_of = {n: g["initial_lr"] for g in opt.param_groups for n in g["names"]}  # the peaks
    assert lr_of["classifier.out_proj.weight"] == pytest.approx(1e-3)
    assert lr_of["electra.encoder.layer.1.output.dense.weight"] == pytest.approx(1e-3 * 0.5)
    assert lr_of["electra.encoder.layer.0.output.dense.weight"] == pytest.approx(1e-3 * 0.25)
    assert lr_of["electra.embeddings.word_embeddings.weight"] == pytest.approx(1e-3 * 0.125)
    # LayerNorm / bias excluded from decay in every depth group
    wd_of = {n: g["weight_decay"] for g in opt.param_groups for n in g["names"]}
    assert wd_of["electra.encoder.layer.0.output.LayerNorm.weight"] == 0.0
    assert wd_of["electra.encoder.layer.0.output.dense.bias"] == 0.0
    assert wd_of["electra.encoder.layer.0.output.dense.weight"] == 0.01
    opt.step()
    sched.step()  # step 1 of 2 warmup steps: half of each group's peak
    lr_now = {n: g["lr"] for g in opt.param_groups for n in g["names"]}
    assert lr_now["electra.embeddings.word_embeddings.weight"] == pytest.approx(1e-3 * 0.125 * 0.5)
    with pytest.raises(ConfigError, match="layer 5"):
        electra_layer_depth("electra.encoder.layer.5.output.dense.weight", 2)
    with pytest.raises(ConfigError, match="num_layers"):
        build_optimizer(model, cfg.optim)


def test_build_optimizer_names():
    model = Tiny()
    base = ["--optim.lr=1e-3"]
    assert isinstance(build_optimizer(model, load_config(None, base).optim), torch.optim.AdamW)
    assert isinstance(build_optimizer(model, load_config(None, base + ["--optim.name=adamw_scaled"]).optim),
                      AdamWScale)
    rel = load_config(None, ["--optim.name=adafactor", "--optim.lr=none", "--optim.adafactor_relative_step=true"])
    opt = build_optimizer(model, rel.optim)
    assert isinstance(opt, Adafactor) and opt.param_groups[0]["relative_step"]
    with pytest.raises(ConfigError, match="optim.lr is None"):
        load_config(None, ["--optim.lr=none"])
    # an lr beside relative_step (the default 1e-3 too) is ignored by Adafactor: said, not silent
    for lr in (["--optim.lr=0.01"], []):
        cfg = load_config(None, ["--optim.name=adafactor", "--optim.adafactor_relative_step=true", *lr])
        with pytest.warns(UserWarning, match=r"optim.lr=0.0*1 is not used: with optim.adafactor_relative_step=true"):
            assert build_optimizer(model, cfg.optim).param_groups[0]["relative_step"]


def test_no_bias_correction_is_the_official_electra_optimizer():
    """optim.bias_correction=false: google-research/electra model/optimization.py
    AdamWeightDecayOptimizer, step by step (no bias correction; decay lr * wd * p on the weights
    only); the default AdamW corrects and differs."""
    torch.manual_seed(0)
    model, ref_model = Tiny(), Tiny()
    ref_model.load_state_dict(model.state_dict())
    lr, wd, eps, (b1, b2) = 1e-3, 0.01, 1e-6, (0.9, 0.999)
    cfg = load_config(None, [f"--optim.lr={lr}", f"--optim.weight_decay={wd}", f"--optim.eps={eps}",
                             "--optim.bias_correction=false"])
    opt = build_optimizer(model, cfg.optim)
    decays = {n: g["weight_decay"] > 0 for g in opt.param_groups for n in g["names"]}
    ref = {n: p.detach().clone() for n, p in ref_model.named_parameters()}
    m = {n: torch.zeros_like(p) for n, p in ref.items()}
    v = {n: torch.zeros_like(p) for n, p in ref.items()}
    for step in range(6):
        opt.zero_grad()
        _loss(model, step).backward()
        ref_model.zero_grad()
        _loss(ref_model, step).backward()
        grads = {n: p.grad.detach().clone() for n, p in ref_model.named_parameters()}
        opt.step()
        for n, g in grads.items():  # the official update, written out
            m[n] = b1 * m[n] + (1 - b1) * g
            v[n] = b2 * v[n] + (1 - b2) * g * g
            update = m[n] / (v[n].sqrt() + eps) + (wd * ref[n] if decays[n] else 0.0)
            ref[n] = ref[n] - lr * update
        with torch.no_grad():
            for n, p in ref_model.named_parameters():
                p.copy_(ref[n])
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach(), ref[n], rtol=0, atol=1e-6, msg=n)  # decay after the update: lr^2 wd
    # torch's AdamW (the default) corrects: its first step is lr * sign(g), the official one 3.16x that
    plain = Tiny()
    plain.load_state_dict(ref_model.state_dict())
    start = plain.proj.weight.detach().clone()
    default = build_optimizer(plain, load_config(None, [f"--optim.lr={lr}", f"--optim.eps={eps}"]).optim)
    _loss(plain, 0).backward()
    default.step()
    assert (plain.proj.weight.detach() - start).abs().max() == pytest.approx(lr, rel=1e-3)
    for bad, match in ((["--optim.name=adafactor"], "adamw or adamw_scaled"), (["--optim.fused=true"], "fused"),
                       (["--train.distributed=fsdp"], "fsdp")):
        with pytest.raises(ConfigError, match=match):
            load_config(None, ["--optim.lr=1e-3", "--optim.bias_correction=false", *bad])


# -- schedules -----------------------------------------------------------------------------------
def test_inverse_sqrt_is_t5s_schedule():
    lr = lambda step: 0.01 * inverse_sqrt(step, 10_000)  # noqa: E731
    assert lr(0) == pytest.approx(0.01) and lr(10_000) == pytest.approx(0.01)
    assert lr(40_000) == pytest.approx(1 / math.sqrt(40_000)) == pytest.approx(0.005)
    assert lr(1_000_000) == pytest.approx(0.001)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_linear_and_cosine_match_transformers(name):
    from transformers.optimization import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    make = {"linear": get_linear_schedule_with_warmup, "cosine": get_cosine_schedule_with_warmup}[name]
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = make(opt, num_warmup_steps=10, num_training_steps=110).lr_lambdas[0]
    ours = Schedule(name, warmup_steps=10, total_steps=110)
    for step in list(range(0, 111, 3)) + [10, 60, 110]:  # (past the end transformers' cosine rises again)
        assert ours(step) == pytest.approx(ref(step), abs=1e-12), step


def test_schedule_key_steps():
    s = Schedule("linear", warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert [s(0), s(5), s(10), s(60), s(110), s(500)] == pytest.approx([0, 0.5, 1, 0.55, 0.1, 0.1])
    c = Schedule("cosine", warmup_steps=10, total_steps=110, min_lr_ratio=0.1)
    assert [c(10), c(60), c(110)] == pytest.approx([1, 0.55, 0.1])
    assert [Schedule("constant", 4)(k) for k in (0, 2, 4, 99)] == pytest.approx([0, 0.5, 1, 1])
    # ELECTRA's official form: warmup ramp times a decay counted from step 0
    assert linear(5, 10, 110, decay_from_start=True) == pytest.approx(0.5 * (1 - 5 / 110))
    assert linear(10, 10, 110, decay_from_start=True) == pytest.approx(1 - 10 / 110)
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        Schedule("cosin")


def test_scheduler_drives_the_optimizer_and_round_trips():
    cfg = load_config(None, ["--optim.lr=0.5", "--schedule.name=linear", "--schedule.warmup_ratio=0.1"])
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    sched = build_scheduler(opt, cfg.schedule, total_steps=100)  # warmup 10 from the ratio
    for _ in range(5):
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.25)
    state = sched.state_dict()
    opt2 = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=cfg.optim.lr)
    sched2 = build_scheduler(opt2, cfg.schedule, total_steps=100)
    sched2.load_state_dict(state)
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(0.3)


def test_a_warmup_as_long_as_the_run_is_warned_about():
    """schedule.warmup_steps >= train.max_steps: the lr rises the whole run and never reaches optim.lr
    (accepted silently before); inverse_sqrt's warmup steps are at the peak, so not there."""
    import warnings

    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.5)
    for name in ("linear", "cosine", "constant"):
        cfg = load_config(None, [f"--schedule.name={name}", "--schedule.warmup_steps=100"])
        with pytest.warns(UserWarning, match=r"warmup_steps=100 >= the 50 training steps: .* never reaches optim.lr"):
            build_scheduler(opt, cfg.schedule, total_steps=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_scheduler(opt, load_config(None, ["--schedule.name=inverse_sqrt", "--schedule.warmup_steps=100"]).schedule,
                        total_steps=50)
        build_scheduler(opt, load_config(None, ["--schedule.name=linear", "--schedule.warmup_steps=49"]).schedule,
                        total_steps=50)
