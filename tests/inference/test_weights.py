"""``optimize_for_inference`` (t5electra/inference/weights.py): fp32 is exact; each bf16 / int8 kernel
computes the product of its rounded / quantised weights within a bound derived from its rounding;
the modules keep their parameters and fall back to F.linear when the kernel must not run.

Every kernel class is tested here whatever this CPU is (the native-bf16 ones run emulated, slowly,
on tiny sizes), by choosing it explicitly (``choose_kernel`` is patched)."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import t5electra.inference.weights as W
from t5electra.errors import InvalidInputError
from t5electra.generation.seq2seq import generate
from t5electra.machine import describe_cpu, native_bf16
from t5electra.models.electra import ElectraConfig, ElectraForPreTraining, ElectraForSequenceClassification
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from dispatch_ops import CountOps
from tiny_t5 import spread_tiny_t5

KERNELS = [W.Fp16Fbgemm, W.Int8Fbgemm, W.Bf16Native, W.Int8WeightOnly, W.Bf16ByRows, W.Int8AsBf16, W.Int8ByRows]
BF16_EPS = 2.0**-8  # bf16 keeps 8 significant bits: relative rounding error <= 2^-9, 2^-8 with margin


def dequantized(kernel_cls, w: torch.Tensor) -> torch.Tensor:
    """The weight values a kernel multiplies by, in fp32."""
    if kernel_cls in (W.Fp16Fbgemm, W.Bf16Native, W.Bf16ByRows):
        return w.bfloat16().float()
    scale = (w.abs().amax(1) / 127).clamp_min(1e-12)
    if kernel_cls is W.Int8WeightOnly:
        scale = scale.bfloat16().float()  # the kernel's scales are bf16
    wq = torch.round(w / (w.abs().amax(1) / 127).clamp_min(1e-12)[:, None]).clamp(-127, 127) * scale[:, None]
    return wq.bfloat16().float() if kernel_cls is W.Int8AsBf16 else wq  # dequantised to bf16


def error_bound(kernel_cls, x: torch.Tensor, wq: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Largest |kernel(x) - F.linear(x, wq)| the kernel's own rounding allows, elementwise, + float slack."""
    mag = x.abs() @ wq.abs().t()                               # sum_k |x_k| |w_jk|
    slack = 1e-5 * (mag + 1)                                   # fp32 accumulation in another order
    if kernel_cls is W.Fp16Fbgemm:                             # fp32 activations, exact weights
        return slack
    if kernel_cls is W.Int8ByRows:                             # fbgemm up to 64 rows, bf16 activations above
        if x.numel() // x.shape[-1] > W.Int8ByRows.SMALL:
            return error_bound(W.Int8AsBf16, x, wq, ref) + BF16_EPS / 2 * mag  # + the weights' bf16 rounding
        kernel_cls = W.Int8Fbgemm
    if kernel_cls is W.Int8Fbgemm:                             # activations quantised per tensor to 8 or 7 bits:
        levels = 255 if W.fbgemm_int8_full_range() else 127
        step = (x.max().clamp_min(0) - x.min().clamp_max(0)) / levels  # |x - x_q| <= step / 2
        return step / 2 * wq.abs().sum(1) + slack
    # bf16 activations (each |x_k| rounded within 2^-9) and a bf16 output (within 2^-9 of |y|)
    return BF16_EPS * (mag + ref.abs()) + slack


@pytest.mark.parametrize("kernel_cls", KERNELS)
@pytest.mark.parametrize("rows", [1, 3, 40])
@pytest.mark.parametrize("bias", [False, True])
def test_kernel_within_its_rounding_bound(kernel_cls, rows, bias):
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(48, 40, generator=g) * 0.1
    w[5] *= 30  # an outlier row: per-channel scales keep the other rows precise
    b = torch.randn(48, generator=g) if bias else None
    x = torch.randn(2, rows, 40, generator=g)
    x[0, 0, 3] = 12.0  # an activation outlier (T5's FFN has them): widens int8's activation step
    out = kernel_cls(w, b)(x)
    wq = dequantized(kernel_cls, w)
    ref = F.linear(x, wq, b)
    assert out.shape == ref.shape and out.dtype == torch.float32
    assert ((out - ref).abs() <= error_bound(kernel_cls, x, wq, ref)).all()


@pytest.mark.parametrize("kernel_cls", KERNELS + [W.Fp32OneDNN])
def test_kernel_takes_no_rows(kernel_cls):
    """An input without rows gives an output without rows, as F.linear does (Int8WeightOnly, the
    kernel of builds without fbgemm, raised: "cannot reshape tensor of 0 elements")."""
    w, b = torch.randn(48, 40), torch.randn(48)
    for shape in ((0, 40), (2, 0, 40)):
        out = kernel_cls(w, b)(torch.randn(*shape))
        assert out.shape == shape[:-1] + (48,) and out.dtype == torch.float32


def test_bf16_values_fit_fp16_exactly():
    """The fbgemm bf16 path stores bf16-rounded weights as fp16: exact for magnitudes 2^-14..65504
    (fp16's normal range; its 11 significant bits hold bf16's 8)."""
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4000, generator=g).sign() * 2.0 ** (torch.rand(4000, generator=g) * 29 - 14)  # 2^-14..2^15
    wb = w.bfloat16().float()
    assert torch.equal(wb.half().float(), wb)


def test_choose_kernel_follows_the_cpu_flags(monkeypatch):
    avx2 = frozenset({"avx2", "fma", "f16c"})
    amx = avx2 | {"avx512f", "avx512_bf16", "amx_bf16"}
    assert native_bf16(amx) and not W.native_bf16(avx2)
    if W.fbgemm_available():
        assert W.choose_kernel("bf16", "cpu", amx) is W.Bf16ByRows
        assert W.choose_kernel("bf16", "cpu", avx2) is W.Fp16Fbgemm
        assert W.choose_kernel("int8", "cpu", amx) is W.Int8ByRows  # many rows in bf16 on AMX
        bf16_no_amx = avx2 | {"avx512f", "avx512_bf16"}
        assert W.choose_kernel("int8", "cpu", bf16_no_amx) is W.choose_kernel("int8", "cpu", avx2) is W.Int8Fbgemm
    monkeypatch.setattr(W, "fbgemm_available", lambda: False)  # e.g. an ARM build
    assert W.choose_kernel("bf16", "cpu", amx) is W.Bf16Native
    assert W.choose_kernel("int8", "cpu", amx) is W.Int8WeightOnly
    assert W.choose_kernel("bf16", "cuda", avx2) is W.Bf16Native
    with pytest.raises(InvalidInputError, match="CPU only"):
        W.choose_kernel("int8", "cuda", avx2)
    assert "no native bf16" in describe_cpu(avx2) and "avx512_bf16" in describe_cpu(amx)


def tiny_t5(version: str):
    return spread_tiny_t5(version, 0, 96)


def batch():
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, 96, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    return ids * mask, mask


def packed_fp32(model) -> list[str]:
    return [n for n, m in model.named_modules() if type(m) is W.InferenceLinear and type(m.kernel) is W.Fp32OneDNN]


@pytest.mark.parametrize("preferred", [True, False])
@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_fp32_is_the_same_products_and_the_old_name_remains(version, preferred, monkeypatch):
    """fp32: the same tokens as the plain model; where oneDNN is preferred (AVX-512) the encoder's
    Linears (and the cross-attention K/V projections, run on the encoder output) get packed
    weights, the decoding-step matrices and the output layer stay on the decoding hook."""
    monkeypatch.setattr(W.Fp32OneDNN, "preferred", staticmethod(lambda flags=None: preferred))
    model, plain = tiny_t5(version), tiny_t5(version)
    ids, mask = batch()
    assert model.optimize_for_inference() is model
    packed = packed_fp32(model)
    assert model.inference_report.weights == "fp32" and model.inference_report.layers == len(packed)
    if preferred:
        assert packed and all(n.startswith("encoder.") or n.endswith("cross_attn.kv") for n in packed), packed
        assert "oneDNN's AVX-512 GEMM" in model.inference_report.kernel
        # the layer count follows the kernel it counts, not the greedy screen (was "...screened ... on 10 layers")
        text = str(model.inference_report)
        assert f"(the same products) on {len(packed)} layers; greedy argmax screened" in text, text
    else:
        assert not packed and all(type(m) is nn.Linear for m in model.modules() if isinstance(m, nn.Linear))
    kw = dict(max_new_tokens=7, num_beams=2)
    assert torch.equal(generate(model, ids, mask, **kw), generate(plain, ids, mask, **kw))
    # Logits: packed (oneDNN) and plain (MKL) products are both float32 sums in some order; on this
    # spread model float32 errors reach ~2e-4, and two kernel libraries can land 2-3x apart (MKL held
    # to AVX2 on an AMX Xeon: 2.1e-4 against 1.0e-4). Bounded against float64, not against each
    # other: a reduced-precision product (TF32, bf16) would be >1000x off.
    exact = copy.deepcopy(plain).double()
    with torch.no_grad():
        want = exact(ids, mask, labels=ids).logits
        packed_err = (model(ids, mask, labels=ids).logits.double() - want).abs().max()
        plain_err = (plain(ids, mask, labels=ids).logits.double() - want).abs().max()
    assert packed_err <= 8 * plain_err + 1e-6, (packed_err, plain_err)
    assert model.optimize_for_decoding() is model and model._packed_linears is not None
    assert packed_fp32(model) == packed
    assert not packed_fp32(model.optimize_for_inference("fp32", pack_weights=False))


def rounded_copy(model, kernel_cls):
    """The plain fp32 model with every Linear weight (and the tied output matrix) rounded as the kernel does."""
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for m in ref.modules():
            if type(m) is nn.Linear:
                m.weight.copy_(dequantized(kernel_cls, m.weight))
        if ref.lm_head is None:  # tied: round the output layer only, not the input embedding
            ref.lm_head = nn.Linear(*reversed(ref.shared.weight.shape), bias=False)
            ref.lm_head.weight.copy_(dequantized(kernel_cls, ref.shared.weight))
    return ref


@torch.no_grad()  # as generate runs it: the kernels have no backward, a forward autograd records runs F.linear
def step_logits(model, ids, mask, targets):
    """Teacher-forced decoder logits through the generation protocol (encoder, cache, decode_step)."""
    enc = model.encode(ids, mask)
    cache = model.new_decoder_cache(enc, mask, targets.shape[1])
    return torch.cat([model.decode_step(targets[:, i:i + 1], cache) for i in range(targets.shape[1])], 1)


def standard_tiny_t5(version: str) -> T5ForConditionalGeneration:
    """A tiny T5 with the standard init (``tiny_t5``'s 3x init amplifies any rounding ~50x)."""
    torch.manual_seed(0)
    v11 = version == "v1.1"
    cfg = T5Config(vocab_size=96, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                   relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.0,
                   feed_forward_proj="gated-gelu" if v11 else "relu", tie_word_embeddings=not v11)
    return T5ForConditionalGeneration(cfg).eval()


# Relative error of the logits against the fp32 model with the kernel's rounded weights (measured
# 2-3e-7, 4-6e-3, 4-6e-3, 2-3e-2 on both ATen capabilities): fp32 activations differ only in
# summation order; bf16 activations are rounded within 2^-9 per layer input; int8's 7-bit
# activation step (per tensor) is ~1/127 of the largest |x|. Bounds with a 3x margin or more.
TOLERANCE = {W.Fp16Fbgemm: 1e-5, W.Bf16Native: 3e-2, W.Bf16ByRows: 3e-2, W.Int8WeightOnly: 3e-2, W.Int8Fbgemm: 1e-1,
             W.Int8AsBf16: 3e-2, W.Int8ByRows: 1e-1}


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("kernel_cls", KERNELS)
def test_t5_runs_every_projection_through_the_kernel(version, kernel_cls, monkeypatch):
    """The optimised model's encoder + decoding steps equal the fp32 model with the kernel's rounded
    weights within :data:`TOLERANCE`. For the fp16-stored bf16 weights the bound is 100x below what
    the weight rounding itself changes (~3e-3): a layer left out of the kernels would fail it."""
    monkeypatch.setattr(W, "choose_kernel", lambda *a, **k: kernel_cls)
    model = standard_tiny_t5(version)
    ids, mask = batch()
    targets = torch.randint(2, 96, (3, 6), generator=torch.Generator().manual_seed(2))
    ref = step_logits(rounded_copy(model, kernel_cls), ids, mask, targets)
    fp32 = step_logits(model, ids, mask, targets)
    model.optimize_for_inference("int8" if "Int8" in kernel_cls.__name__ else "bf16")
    got = step_logits(model, ids, mask, targets)
    n_linear = sum(isinstance(m, nn.Linear) for m in model.modules()) + (model.lm_head is None)
    assert model.inference_report.layers == n_linear
    err, rounding = (got - ref).norm() / ref.norm(), (fp32 - ref).norm() / ref.norm()
    assert err < TOLERANCE[kernel_cls]
    assert rounding > 100 * TOLERANCE[W.Fp16Fbgemm]


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_t5_forward_multiplies_by_the_fp32_output_matrix_and_decoding_steps_by_the_kernel(version):
    """What docs/inference.md says (it said the output layer ran the kernel everywhere): forward()'s
    logits are the plain fp32 product of the decoder output (the layers before it run the int8
    kernels), and generate's decoding steps take the output layer's int8 kernel."""
    from t5electra.nn.linear import fast_linear

    model = standard_tiny_t5(version).optimize_for_inference("int8")
    ids, mask = batch()
    weight = model.shared.weight if model.lm_head is None else model.lm_head.weight
    with torch.no_grad():
        out = model(ids, mask, decoder_input_ids=ids, output_hidden_states=True)
        assert torch.equal(out.logits, fast_linear(model._head_input(out.decoder_hidden_states[-1]), weight))
        step = model.decode_step(ids[:, :1], model.new_decoder_cache(out.encoder_last_hidden_state, mask, 4))
        cache = model.new_decoder_cache(out.encoder_last_hidden_state, mask, 4)
        x = model._head_input(model.decoder.decode(model.shared(ids[:, :1]), cache, model._packed_linears))
    kernel = model._packed_linears(x, weight)  # the output layer's int8 kernel (KernelTable)
    assert torch.equal(step, kernel) and not torch.equal(kernel, fast_linear(x, weight))


def test_keep_leaves_named_layers_in_fp32_and_fp32_restores_plain_linears():
    model = tiny_t5("v1.0")
    params = {k: v.clone() for k, v in model.state_dict().items()}
    model.optimize_for_inference("int8", keep=[r"\.wo$", "lm_head"])
    rep = model.inference_report
    assert "lm_head (tied)" in rep.kept_fp32 and sum(".wo" in k for k in rep.kept_fp32) == 4
    assert all(type(b.ff.wo) is nn.Linear for b in model.decoder.blocks)
    assert type(model.decoder.blocks[0].ff.wi) is W.InferenceLinear
    assert id(model.shared.weight) not in model._packed_linears.kernels
    assert params.keys() == model.state_dict().keys()
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())  # weights untouched
    model.optimize_for_inference("fp32")
    assert all(type(m.kernel) is W.Fp32OneDNN for m in model.modules() if type(m) is W.InferenceLinear)
    assert not isinstance(model._packed_linears, W.KernelTable)


def test_keep_takes_one_pattern_as_a_string_and_refuses_a_bad_one():
    """``keep="lm_head"`` was iterated letter by letter (every layer with an "l", "m", ... kept in
    fp32: none ran int8); an invalid regular expression raised a bare re.error after nothing."""
    model = tiny_t5("v1.1")
    assert model.optimize_for_inference("int8", keep="lm_head").inference_report.kept_fp32 == ["lm_head"]
    assert type(model.lm_head) is nn.Linear and type(model.decoder.blocks[0].ff.wi) is W.InferenceLinear
    for bad in ("lm_head(", ["wo", "["], [3]):
        with pytest.raises(InvalidInputError, match=r"keep: .* is not a regular expression on module names"):
            model.optimize_for_inference("bf16", keep=bad)
        assert model.inference_report.weights == "int8"  # refused before any change


def test_training_mode_changed_weights_and_copies_run_plain_fp32():
    torch.manual_seed(0)
    model = ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny")).eval()
    ids = torch.randint(1, 100, (2, 7))
    plain = model(ids).logits
    model.optimize_for_inference("int8")
    layer = model.electra.layers[0].ffn_in
    assert type(layer) is W.InferenceLinear and isinstance(layer, nn.Linear)
    x = torch.randn(3, layer.in_features)
    with torch.no_grad():  # the kernels run without autograd (a recorded forward: the next test)
        assert not torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))   # the kernel runs
        assert not torch.equal(model(ids).logits, plain)
    clone = copy.deepcopy(model)
    assert torch.equal(clone(ids).logits, plain)                               # a copy: plain until optimised
    with torch.no_grad():
        model.train()
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))    # training: plain
        model.eval()
        layer.weight.mul_(2)                                                   # changed weights: plain
        assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_a_saved_model_loads_and_runs_plain_until_optimised_again(weights, monkeypatch):
    """``torch.save(model)`` of an optimised model failed ("Cannot access storage of
    OpaqueTensorImpl": oneDNN's packed weights). The prepared copies are dropped on pickling as on
    ``copy.deepcopy``: the loaded model runs the plain fp32 products (T5: the plain model's tokens),
    and ``optimize_for_inference`` again gives the saved model's outputs."""
    monkeypatch.setattr(W.Fp32OneDNN, "preferred", staticmethod(lambda flags=None: True))  # fp32: packed layers
    torch.manual_seed(0)
    ids, mask = batch()
    electra = ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny")).eval()

    @torch.no_grad()
    def run(m):
        if isinstance(m, ElectraForSequenceClassification):
            return m(ids, mask).logits
        return generate(m, ids, mask, max_new_tokens=6), m(ids, mask, decoder_input_ids=ids).logits

    for model in (electra, tiny_t5("v1.1")):
        plain = run(copy.deepcopy(model))
        model.optimize_for_inference(weights)
        fast = run(model)  # T5: greedy steps build the int8 screen of the output layer too
        buf = io.BytesIO()
        torch.save(model, buf)
        loaded = torch.load(io.BytesIO(buf.getvalue()), weights_only=False)
        layers = [m for m in loaded.modules() if type(m) is W.InferenceLinear]
        assert layers and all(m.kernel is None for m in layers)
        assert getattr(loaded, "_packed_linears", None) is getattr(loaded, "_screened_argmax", None) is None
        if isinstance(plain, tuple):
            assert torch.equal(run(loaded)[0], plain[0])
        torch.testing.assert_close(run(loaded), plain, atol=1e-5, rtol=1e-5)
        again = run(loaded.optimize_for_inference(weights))
        assert all(map(torch.equal, again, fast)) if isinstance(fast, tuple) else torch.equal(again, fast)


@pytest.mark.parametrize("weights", ["fp32", "bf16", "int8"])
@pytest.mark.parametrize("arch", ["electra", "t5"])
def test_backward_in_eval_mode_gives_the_plain_models_gradients(arch, weights, monkeypatch):
    """The kernels have no backward: an eval-mode forward that autograd records (a loss in eval
    mode, saliency) ran them and left every parameter without a gradient (ELECTRA: 0 of 35; T5:
    the encoder's), silently. Such a forward now runs F.linear: the plain model's gradients."""
    monkeypatch.setattr(W.Fp32OneDNN, "preferred", staticmethod(lambda flags=None: True))  # fp32: packed layers
    torch.manual_seed(0)
    if arch == "electra":
        plain = ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny")).eval()
        ids = torch.randint(5, 500, (2, 12))
        loss = lambda m: m(ids, labels=torch.tensor([0, 1])).loss  # noqa: E731
    else:
        plain = tiny_t5("v1.1")
        ids, mask = batch()
        loss = lambda m: m(ids, mask, labels=ids).loss  # noqa: E731
    model = copy.deepcopy(plain).optimize_for_inference(weights)
    assert model.inference_report.layers > 0
    for m in (plain, model):
        loss(m).backward()
    for (name, p), q in zip(model.named_parameters(), plain.parameters()):
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    layer = next(m for m in model.modules() if type(m) is W.InferenceLinear and m.kernel is not None)
    x = torch.randn(3, layer.in_features, requires_grad=True)
    layer.requires_grad_(False)  # frozen weights, a gradient for the input (integrated gradients)
    layer(x).sum().backward()
    torch.testing.assert_close(x.grad, layer.weight.sum(0).expand(3, -1))
    with torch.no_grad():
        calls, run = [], type(layer.kernel).__call__
        monkeypatch.setattr(type(layer.kernel), "__call__", lambda self, x, *a: calls.append(1) or run(self, x, *a))
        layer(x)
    layer(x.detach())  # frozen weights, an input without grad: nothing to record, the kernel runs
    assert len(calls) == 2


@pytest.mark.parametrize("weights", ["fp32", "fp32 plain", "bf16", "int8"])
def test_electra_discriminator_fp32_same_products_others_close(weights, monkeypatch):
    """fp32: every Linear on oneDNN-packed weights where preferred (within fp32 rounding of the
    plain model), else the plain modules (bitwise equal); bf16 / int8 within their rounding."""
    monkeypatch.setattr(W.Fp32OneDNN, "preferred", staticmethod(lambda flags=None: weights == "fp32"))
    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig.from_preset("electra-tiny")).eval()
    ids = torch.randint(1, 100, (3, 11))
    with torch.no_grad():
        plain = model(ids).logits
        got = model.optimize_for_inference(weights.split()[0])(ids).logits
    if weights == "fp32":
        n_linear = sum(type(m) in (nn.Linear, W.InferenceLinear) for m in model.modules())
        assert len(packed_fp32(model)) == model.inference_report.layers == n_linear
        torch.testing.assert_close(got, plain, atol=1e-6, rtol=1e-5)
        calls, run = [], W.Fp32OneDNN.__call__
        monkeypatch.setattr(W.Fp32OneDNN, "__call__", lambda self, x: calls.append(x.shape) or run(self, x))
        layer = model.electra.layers[0].ffn_in
        x = torch.randn(4, layer.in_features)
        with torch.no_grad():
            torch.testing.assert_close(layer(x), F.linear(x, layer.weight, layer.bias))
            assert calls == [(4, layer.in_features)]                              # the packed kernel ran
            layer.train()
            assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias)) and len(calls) == 1  # training: plain
    elif weights == "fp32 plain":
        assert torch.equal(got, plain) and model.inference_report.layers == 0
    else:  # the rounding of 3-4 layers of weights and (int8) activations: ~1e-2 relative
        assert (got - plain).norm() / plain.norm() < 0.1
        assert model.inference_report.layers > 0


def test_bad_weights_are_refused_before_any_change():
    model = tiny_t5("v1.0")
    with pytest.raises(InvalidInputError, match="weights='int4'"):
        model.optimize_for_inference("int4")
    assert not hasattr(model, "inference_report")


@pytest.mark.parametrize("weights", ["bf16", "int8"])
def test_bf16_and_int8_refuse_a_model_that_is_not_fp32(weights):
    """A bf16 / fp16 model's forward after optimize_for_inference('bf16' | 'int8') failed on mixed
    dtypes (layer_norm, oneDNN): refused before any change, saying what to do; 'fp32' keeps the dtype."""
    torch.manual_seed(0)
    electra = ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny")).eval().bfloat16()
    t5 = standard_tiny_t5("v1.1").half()  # v1.1 keeps ff.wo in fp32: half the model is fp16
    ids, mask = batch()
    for model, dtype, kw in ((electra, "bfloat16", {}), (t5, "float16", {"decoder_input_ids": ids})):
        with pytest.raises(InvalidInputError, match=rf"the model is {dtype}: optimize_for_inference\('{weights}'\) "
                                                    r"takes an fp32 model; call \.float\(\) first"):
            model.optimize_for_inference(weights)
        assert not hasattr(model, "inference_report") and W.InferenceLinear not in map(type, model.modules())
        with torch.no_grad():
            logits = model.optimize_for_inference("fp32")(ids, mask, **kw).logits
        assert logits.dtype == getattr(torch, dtype) and logits.isfinite().all()
    with torch.no_grad():
        assert electra.float().optimize_for_inference(weights)(ids, mask).logits.dtype == torch.float32


def test_native_bf16_follows_the_aten_capability(monkeypatch):
    """On an AMX CPU run with ATEN_CPU_CAPABILITY=avx2 or default, oneDNN's bf16 kernels refuse to
    run: the machine then counts as having no native bf16 (training stays fp32)."""
    import t5electra.machine as M

    monkeypatch.setattr(M, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16", "amx_bf16"}))
    for capability, native in (("AVX512", True), ("AVX2", False), ("DEFAULT", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        assert M.native_bf16() is native
        # the report says so: the flags alone named a bf16 CPU next to the kernels of one without it
        assert ("no native bf16" in M.describe_cpu()) is not native
        assert (capability in M.describe_cpu()) is not native
        assert "no native bf16" not in M.describe_cpu(M.cpu_flags())  # the flags of a CPU: as they are


def test_bf16_by_rows_keeps_fp32_activations_for_decoding_steps():
    """Up to 64 rows (decoding steps up to 64 sequences x beams) the fp16-stored bf16 weights with
    fp32 activations; more rows (encoders, prefill) bf16 activations (docs/inference.md: quality)."""
    w = torch.randn(24, 16)
    kernel = W.Bf16ByRows.__new__(W.Bf16ByRows)  # the routing alone: no fbgemm needed to build it
    used = []
    kernel.small = lambda x: used.append("fp32 activations") or x @ w.t()
    kernel.large = lambda x: used.append("bf16 activations") or x @ w.t()
    for rows in (1, 4, 16, 64, 65, 512):
        kernel(torch.randn(rows, 16))
    assert used == ["fp32 activations"] * 4 + ["bf16 activations"] * 2
    used.clear()
    kernel(torch.randn(8, 8, 16))  # rows are counted over every leading dimension: 64
    assert used == ["fp32 activations"]


def test_int8_by_rows_quantises_decoding_steps_and_multiplies_encoders_in_bf16():
    """With AMX: up to 64 rows (decoding steps) fbgemm's int8 with quantised activations; more rows
    (encoders, prefill) the same int8 weights dequantised to bf16, with bf16 activations, an
    activation inside the GEMM where oneDNN packs bf16. Both use one quantisation."""
    w = torch.randn(24, 16)
    kernel = W.Int8ByRows.__new__(W.Int8ByRows)  # the routing alone
    used = []
    kernel.small = lambda x: used.append("fbgemm") or x @ w.t()
    kernel.large = lambda x: used.append("bf16") or x @ w.t()
    for rows in (1, 16, 64, 65, 512):
        kernel(torch.randn(rows, 16))
    assert used == ["fbgemm"] * 3 + ["bf16"] * 2
    real = W.Int8ByRows(w, None)
    qt = real.small.packed.unpack()[0]  # fbgemm's int8 weight: the bf16 path multiplies these values
    x = torch.randn(80, 16).bfloat16()
    wq = (qt.int_repr().float() * qt.q_per_channel_scales().float()[:, None]).bfloat16()  # what the bf16 path multiplies
    expected = F.linear(x.float(), wq.float())
    torch.testing.assert_close(real(x.float()), expected, rtol=2**-8, atol=1e-5)
    assert real.fuses(x) == W.bf16_packing_available() and not real.fuses(x[:64])
    if real.fuses(x):  # GELU inside the GEMM, bf16 out: the same as GELU after it, within bf16 rounding
        fused = real(x, ("gelu", "none"))
        assert fused.dtype == torch.bfloat16
        torch.testing.assert_close(fused.float(), F.gelu(expected), rtol=2**-7, atol=1e-5)


def test_int8_activations_take_8_bits_only_where_sums_do_not_saturate():
    """An input whose uint8 x int8 pairs overflow int16 (255 * 127 * 2 > 32767) comes out of
    :class:`Int8Fbgemm` within the activation step on every CPU: with 8-bit activations (the probe
    said VNNI-style int32 sums) and with 7-bit ones (AVX2's saturating pairs never see 255)."""
    w = torch.ones(16, 128)
    x = torch.rand(3, 128, generator=torch.Generator().manual_seed(0)) * 0.01 + 1.0
    x[:, 0] = 0.0  # zero point 0: every other entry quantises to the top code
    kernel = W.Int8Fbgemm(w, None)
    assert kernel.reduce_range is not W.fbgemm_int8_full_range()
    bits = "8-bit" if W.fbgemm_int8_full_range() else "7-bit"
    assert bits in W.Int8Fbgemm.describe()
    ref = x @ w.t()
    assert torch.allclose(kernel(x), ref, rtol=1e-2)  # saturated sums would be ~half
    # the kernel used here really is the saturation-prone one without reduce_range, or exact
    full = torch.ops.quantized.linear_dynamic(x, kernel.packed, False)
    assert torch.allclose(full, ref, rtol=1e-2) is W.fbgemm_int8_full_range()


def test_bf16_kernel_runs_an_activation_inside_the_gemm_and_returns_it_in_bf16():
    """Bf16Native on CPU multiplies by weights packed once for oneDNN: the values of F.linear in
    bf16; with ``post`` the activation runs inside the GEMM and the result stays bf16 (the values
    the next bf16 product rounds its input to anyway); a bf16 input goes in as it is."""
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(64, 32, generator=g) * 0.2, torch.randn(64, generator=g)
    x = torch.randn(80, 32, generator=g)
    kernel = W.Bf16Native(w, b)
    ref = F.linear(x.bfloat16(), w.bfloat16(), b.bfloat16()).float()
    if not W.bf16_packing_available():  # an AVX2-only CPU: no packing, no fused activation (next test)
        assert kernel.packed is None and not kernel.fuses(x)
        torch.testing.assert_close(kernel(x), ref, rtol=0, atol=0)
        return
    assert kernel.packed is not None and kernel.accepts_bf16 and kernel.fuses(x)
    out = kernel(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=2 * BF16_EPS, atol=1e-3)  # one bf16 ulp: another summation order
    for post, act in ((("gelu", "none"), F.gelu), (("relu", ""), F.relu)):
        h = kernel(x, post)
        assert h.dtype == torch.bfloat16
        torch.testing.assert_close(h.float(), act(ref), rtol=2 * BF16_EPS, atol=1e-3)
    torch.testing.assert_close(kernel(x.bfloat16()), out, rtol=0, atol=0)  # the same rounding of x


def test_bf16_kernel_without_bf16_packing_runs_f_linear_in_bf16(monkeypatch):
    """Where oneDNN cannot pack bf16 weights (AVX2-only CPUs: ``_reorder_linear_weight`` raises;
    forced here), Bf16Native keeps its plain bf16 weights: F.linear's values, no fused activation,
    an fp32 result; the probe itself answers on this CPU without raising."""
    assert isinstance(W.bf16_packing_available(), bool)
    monkeypatch.setattr(W, "bf16_packing_available", lambda: False)
    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(64, 32, generator=g) * 0.2, torch.randn(64, generator=g)
    x = torch.randn(80, 32, generator=g)
    kernel = W.Bf16Native(w, b)
    assert kernel.packed is None and kernel.weight.dtype == torch.bfloat16 and not kernel.fuses(x)
    out = kernel(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.linear(x.bfloat16(), w.bfloat16(), b.bfloat16()).float(), rtol=0, atol=0)
    # a bf16 model's decoding weights stay unpacked there too (the plain decoding product)
    import t5electra.inference.decoding as D

    monkeypatch.setattr(D, "packing_available", lambda dtype: dtype == torch.float32)
    wb = w.bfloat16()
    packs = D.PackedLinears([wb, w])
    assert list(packs.packs) == [id(w)]  # the fp32 one is packed, the bf16 one is not
    xb = x[:4].bfloat16().view(4, 1, 32)
    torch.testing.assert_close(packs(xb, wb), D.decode_linear(xb, wb), rtol=0, atol=0)


def test_electra_bf16_keeps_ffn_activations_in_bf16_between_its_two_products(monkeypatch):
    """ELECTRA with bf16 weights (oneDNN's bf16 kernel, forced): each layer's GELU runs inside the
    first FFN product and its bf16 output goes to the second as it is: one GELU op less per layer,
    logits as with the separate GELU within bf16 rounding. ``keep=["ffn_out"]`` (an fp32 layer
    after a fused bf16 one) and a second layer whose weights changed widen the activations."""
    import t5electra.nn.linear as L

    monkeypatch.setattr(W, "choose_kernel", lambda *a, **k: W.Bf16Native)
    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig.from_preset("electra-tiny")).eval()
    ids = torch.randint(5, 500, (3, 40), generator=torch.Generator().manual_seed(1))  # 120 rows
    with torch.inference_mode():
        fp32 = model(ids).logits
    model.optimize_for_inference("bf16")
    layers = model.config.num_hidden_layers

    def logits(m):
        with torch.inference_mode(), CountOps() as ops:
            return m(ids).logits, ops.ops

    fused, ops = logits(model)
    with monkeypatch.context() as m:
        m.setattr(L, "_POST_OPS", {})
        plain, ops_plain = logits(model)
    fused_layers = layers if W.bf16_packing_available() else 0  # AVX2-only CPUs: nothing fuses, same values
    assert ops_plain.count("gelu") - ops.count("gelu") == fused_layers
    assert ops_plain.count("to") - ops.count("to") == fused_layers  # the (rows, d_ff) activations are not widened
    assert ((fused - plain).norm() / plain.norm()) < 3e-2 and ((fused - fp32).norm() / fp32.norm()) < 3e-2
    kept = copy.deepcopy(model).optimize_for_inference("bf16", keep=["ffn_out"])
    assert type(kept.electra.layers[0].ffn_out) is nn.Linear
    changed = copy.deepcopy(model).optimize_for_inference("bf16")
    with torch.no_grad():
        changed.electra.layers[0].ffn_out.weight.mul_(1.0)  # new version: its kernel is stale
    for other in (kept, changed):
        got, _ = logits(other)
        assert ((got - fp32).norm() / fp32.norm()) < 3e-2


@pytest.fixture
def no_fp16_packing(monkeypatch):
    """oneDNN as on a CPU without AVX512-FP16 or AVX-NE-CONVERT (AVX2; AVX512-BF16 CPUs such as
    the AMD Zen 4): fp16 weights cannot be packed (the real message)."""
    import t5electra.inference.decoding as D

    real = torch.ops.mkldnn._reorder_linear_weight

    def reorder(w, *args):
        if w.dtype == torch.float16:
            raise RuntimeError("mkldnn_reorder_linear_weight: fp16 path needs the cpu support avx_ne_convert "
                               "or avx512_fp16")
        return real(w, *args)

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", reorder)
    D.packing_available.cache_clear()
    yield
    D.packing_available.cache_clear()  # the next probe sees the real kernel


@pytest.mark.parametrize("fp16_packing", ["this CPU", "missing"])
def test_fp16_t5_takes_the_default_fast_path_with_or_without_fp16_packing(fp16_packing, request):
    """An fp16 T5's default optimize_for_inference() (and so a server with dtype: float16) packed
    its decoding weights unconditionally, which raised where oneDNN has no fp16 kernels; those
    weights now stay unpacked there (the plain decoding product)."""
    import t5electra.inference.decoding as D
    from t5electra.serve.config import ServeConfig
    from t5electra.serve.registry import _prepare

    if fp16_packing == "missing":
        request.getfixturevalue("no_fp16_packing")
    plain = standard_tiny_t5("v1.1").half()
    model = standard_tiny_t5("v1.1").half().optimize_for_inference()
    fp16_packed = D.packing_available(torch.float16)  # AVX512-FP16 or AVX-NE-CONVERT
    assert fp16_packing == "this CPU" or not fp16_packed
    packed_dtypes = {entry[0].dtype for entry in model._packed_linears.packs.values()}  # v1.1 keeps ff.wo in fp32
    assert packed_dtypes == ({torch.float16, torch.float32} if fp16_packed else {torch.float32})
    ids, mask = batch()
    targets = torch.randint(2, 96, (3, 6), generator=torch.Generator().manual_seed(2))
    got, want = step_logits(model, ids, mask, targets), step_logits(plain, ids, mask, targets)
    assert (got - want).norm() / want.norm() < 1e-2  # fp16 outputs, sums in another order
    served = _prepare(standard_tiny_t5("v1.0"), ServeConfig(dtype="float16"))  # what `serve` runs at start-up
    assert served.shared.weight.dtype == torch.float16 and served.inference_report.weights == "fp32"
    assert generate(served, ids, mask, max_new_tokens=4).shape == (3, 5)
