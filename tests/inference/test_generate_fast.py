"""The decoding fast path (t5electra/inference/decoding.py: ``decode_linear`` passed to the blocks as ``linear``, the
``T5DecoderCache.reorder`` that gathers into a spare buffer and keeps the encoder K/V shared, and
``optimize_for_decoding``: column-major weights, oneDNN-packed copies) computes what the plain
path computes.

The plain path is the modules' projections computed by ``F.linear`` (what ``layer(x)`` does);
here it is switched on by replacing ``decode_linear``. Generation must give the same tokens, and the decoder's
logits along the generated sequences must agree within 1e-5, on tiny v1.0 and v1.1 models with
padded batches, EOS that ends rows / beams at different steps, and inputs leaving beam search early.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import t5electra.models.t5 as t5mod
from t5electra.generation.seq2seq import generate
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from tiny_t5 import spread_tiny_t5

VOCAB = 96


def tiny_model(version: str, seed: int) -> T5ForConditionalGeneration:
    """Random tiny T5 whose next-token distributions are spread out (so that beams differ)."""
    return spread_tiny_t5(version, seed, VOCAB)


def padded_batch(seed: int, lengths=(10, 6, 3, 8, 5)):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, mask


def eos_that_ends_some_rows(model, ids, mask) -> int:
    """A token greedy search emits in some rows after a few steps: rows and beams then end at
    different times."""
    out = generate(model, ids, mask, max_new_tokens=12)
    counts = torch.bincount(out[:, 3:].flatten(), minlength=VOCAB)
    counts[:2] = 0
    return int(counts.argmax())


def teacher_forced_logits(model, ids, mask, out, group: int):
    """decode_step logits along ``out`` (B * group, T) one token at a time -> (B * group, T - 1, V)."""
    with torch.inference_mode():
        enc = model.encode(ids, mask)
        cache = model.new_decoder_cache(enc, mask, out.shape[1])
        if group > 1:
            cache.reorder(torch.arange(ids.shape[0]).repeat_interleave(group))
        return torch.cat([model.decode_step(out[:, i:i + 1], cache) for i in range(out.shape[1] - 1)], 1)


SEARCHES = [
    dict(max_new_tokens=14),
    dict(num_beams=3, max_new_tokens=14),
    dict(num_beams=4, num_return_sequences=2, max_new_tokens=14, length_penalty=0.6),
    dict(num_beams=2, max_new_tokens=14, early_stopping=True),
]


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("kw", SEARCHES, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_fast_path_gives_the_plain_path_tokens_and_logits(version, kw):
    ended_early = 0
    for seed in range(3):
        model = tiny_model(version, seed)
        ids, mask = padded_batch(seed)
        eos = eos_that_ends_some_rows(model, ids, mask)
        fast = generate(model, ids, mask, eos_token_id=eos, **kw)
        group = kw.get("num_return_sequences", 1)
        fast_logits = teacher_forced_logits(model, ids, mask, fast, group)
        for pack in (False, True):
            optimized = tiny_model(version, seed).optimize_for_decoding(pack_weights=pack)
            assert torch.equal(generate(optimized, ids, mask, eos_token_id=eos, **kw), fast), pack
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(t5mod, "decode_linear", lambda x, w: F.linear(x, w))
            plain = generate(model, ids, mask, eos_token_id=eos, **kw)
            plain_logits = teacher_forced_logits(model, ids, mask, fast, group)
        assert torch.equal(fast, plain), f"{kw}\nfast\n{fast}\nplain\n{plain}"
        ended_early += int((fast[:, :-1] == eos).any())
        # Both paths against the uncached forward in float64: the fast path is as accurate as the
        # plain one, within the spread of float32 kernels. (Weights inflated 3x give these models
        # float32 errors of up to ~1e-3 on both paths, and summing in another order moves the
        # largest error: with MKL held to AVX2 on an AMX Xeon the two paths land up to 3.1x apart,
        # with the machine's best kernels they are equal. A reduced-precision product (TF32, bf16)
        # would be >1000x off. test_decode_steps_match_the_full_forward uses a normal init.)
        exact = reference_logits(model, ids, mask, fast, group)
        fast_err, plain_err = (fast_logits - exact).abs().max(), (plain_logits - exact).abs().max()
        assert fast_err <= 8 * plain_err + 1e-6, (fast_err, plain_err)
    assert ended_early, "EOS never generated: the test would not cover rows that end early"


def reference_logits(model, ids, mask, out, group: int):
    """The whole decoder re-run on ``out`` (no cache), in float64 -> (B * group, T - 1, V)."""
    exact = copy.deepcopy(model).double()
    rows = torch.arange(ids.shape[0]).repeat_interleave(group)
    with torch.no_grad():
        return exact(ids[rows], mask[rows], decoder_input_ids=out[:, :-1].clone()).logits.float()


@pytest.mark.parametrize("preset", ["t5-tiny", "t5-v1_1-tiny"])
@pytest.mark.parametrize("rows", [1, 4, 12])  # decode_linear: F.linear, the 2..8-row orientation, F.linear
@pytest.mark.parametrize("optimized", [None, "layout", "packed"])
def test_decode_steps_match_the_full_forward(preset, rows, optimized):
    """Normally initialised models: every fast decoding step is within 1e-5 of the full forward."""
    torch.manual_seed(rows)
    model = T5ForConditionalGeneration(T5Config.from_preset(preset, dropout_rate=0.0)).eval()
    if optimized:
        model.optimize_for_decoding(pack_weights=optimized == "packed")
    ids = torch.randint(3, 256, (rows, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    dec = torch.randint(0, 256, (rows, 12))
    with torch.no_grad():
        full = model(ids, mask, decoder_input_ids=dec).logits
        cache = model.new_decoder_cache(model.encode(ids, mask), mask, max_length=12)
        steps = torch.cat([model.decode_step(dec[:, i:i + 1], cache) for i in range(12)], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=1e-5)


def test_decode_linear_equals_f_linear_for_every_row_count():
    w = torch.randn(40, 24)
    for rows, t in ((1, 1), (2, 1), (4, 1), (8, 1), (3, 2), (9, 1), (16, 1), (1, 12)):
        x = torch.randn(rows, t, 24)
        got = t5mod.decode_linear(x, w)
        assert got.shape == (rows, t, 40)
        torch.testing.assert_close(got, F.linear(x, w), atol=1e-5, rtol=1e-5)
    colmajor = w.t().contiguous().t()
    x = torch.randn(4, 1, 24)
    torch.testing.assert_close(t5mod.decode_linear(x, colmajor), F.linear(x, w), atol=1e-5, rtol=1e-5)


@pytest.fixture
def two_threads():
    """The one-row product on 2 threads (the suite runs on 1): its bags are shared by the threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("n_in", [24, 25, 3])  # 25: bags of unequal length; 3: fewer rows than bags
def test_one_row_product_runs_as_embedding_bags(threads, n_in, monkeypatch):
    """One row, column-major fp32 weight, no autograd: the rows of W^T summed with the input as
    per-sample weights, in bags of consecutive rows shared by the threads (a view of the weight, no
    copy), within float rounding of F.linear; every other case keeps its path."""
    import t5electra.inference.decoding as dec

    monkeypatch.setattr(dec, "ONE_ROW_KERNEL", "bags")  # the AMD path, tested on any CPU
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    calls = []
    bags = torch.ops.aten._embedding_bag_forward_only
    monkeypatch.setattr(dec, "_embedding_bag",
                        lambda w, idx, off, *a: calls.append((w.data_ptr(), len(off))) or bags(w, idx, off, *a))
    try:
        w = torch.randn(40, n_in)
        colmajor = w.t().contiguous().t()
        x = torch.randn(1, 1, n_in)
        with torch.no_grad():
            got = dec.decode_linear(x, colmajor)
            assert got.shape == (1, 1, 40)
            torch.testing.assert_close(got, F.linear(x, w), atol=1e-5, rtol=1e-5)
            assert calls == [(colmajor.data_ptr(), min(n_in, dec.ONE_ROW_BAGS_PER_THREAD * threads))]
            packed = dec.PackedLinears([colmajor])                   # optimize_for_decoding's copies: the same path
            torch.testing.assert_close(packed(x, colmajor), got, atol=0, rtol=0)
            assert len(calls) == 2 and calls[1] == calls[0]
            calls.clear()
            dec.decode_linear(x, w)                                  # row-major weight: F.linear
            dec.decode_linear(torch.randn(3, 1, n_in), colmajor)     # 3 rows
            dec.decode_linear(x.double(), colmajor.double())         # not fp32
        y = dec.decode_linear(x.requires_grad_(), colmajor)          # autograd: F.linear, differentiable
        y.sum().backward()
        torch.testing.assert_close(x.grad[0, 0], w.sum(0))
        assert calls == []
    finally:
        torch.set_num_threads(before)


def test_wide_one_row_product_runs_in_column_blocks_on_two_threads(two_threads, monkeypatch):
    """Outputs wider than the bags take (a vocabulary-sized output layer): one column block of W^T
    per thread through one bmm (a view of the weight, no copy), within float rounding of F.linear."""
    import t5electra.inference.decoding as dec

    monkeypatch.setattr(dec, "ONE_ROW_BAGS_MAX_OUT", 32)
    monkeypatch.setattr(dec, "ONE_ROW_KERNEL", "bags")
    calls = []
    bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b: calls.append(b.shape) or bmm(a, b))
    for out, blocked in ((40, True), (41, False), (32, False)):  # 41 cannot be cut in 2; 32 runs as bags
        w = torch.randn(out, 24)
        colmajor = w.t().contiguous().t()
        x = torch.randn(1, 1, 24)
        calls.clear()
        with torch.no_grad():
            got = dec.decode_linear(x, colmajor)
            assert got.shape == (1, 1, out)
            torch.testing.assert_close(got, F.linear(x, w), atol=1e-5, rtol=1e-5)
            if out == 40:  # optimize_for_decoding's copies: the same path for this width
                torch.testing.assert_close(dec.PackedLinears([colmajor])(x, colmajor), got, atol=0, rtol=0)
        assert calls == ([(2, 24, out // 2)] * 2 if blocked else []), out


def test_one_row_product_on_intel_cpus_is_mkls(monkeypatch):
    """Where MKL's matrix-vector product is the fast one (Intel CPUs), a one-row fp32 product on a
    column-major weight is ``F.linear`` itself (the same values bit for bit), also through
    optimize_for_decoding's copies; no bags, no column blocks. The choice follows the vendor."""
    import t5electra.inference.decoding as dec

    monkeypatch.setattr(dec, "ONE_ROW_KERNEL", "mkl")
    calls = []
    monkeypatch.setattr(dec, "_embedding_bag", lambda *a: calls.append("bags"))
    bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b: calls.append("bmm") or bmm(a, b))
    for out in (40, 64):
        w = torch.randn(out, 24)
        colmajor = w.t().contiguous().t()
        x = torch.randn(1, 1, 24)
        with torch.no_grad():
            want = F.linear(x, colmajor)
            assert torch.equal(dec.decode_linear(x, colmajor), want)
            assert torch.equal(dec.PackedLinears([colmajor])(x, colmajor), want)
    assert calls == []
    for vendor, kernel in (("GenuineIntel", "mkl"), ("AuthenticAMD", "bags"), ("", "bags")):
        monkeypatch.setattr(dec, "cpu_vendor", lambda v=vendor: v)
        assert dec._one_row_kernel() == (kernel if dec._FBGEMM else "blocks")


def test_cpu_vendor_reads_proc_cpuinfo(monkeypatch, tmp_path):
    """The vendor_id line of /proc/cpuinfo; "" where there is none (ARM's has no such line) or no file."""
    import t5electra.machine as machine

    info = tmp_path / "cpuinfo"
    monkeypatch.setattr(machine, "Path", lambda _: info)
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n")
    assert machine.cpu_vendor.__wrapped__() == "AuthenticAMD"
    info.write_text("processor\t: 0\nFeatures\t: fp asimd\n")
    assert machine.cpu_vendor.__wrapped__() == ""
    info.unlink()
    assert machine.cpu_vendor.__wrapped__() == ""


@pytest.mark.parametrize("kernel", ["bags", "mkl"])
@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_one_row_product_keeps_greedy_tokens(two_threads, version, kernel, monkeypatch):
    """Greedy batch 1 on 2 threads through either one-row product: the plain path's tokens."""
    import t5electra.inference.decoding as dec

    monkeypatch.setattr(dec, "ONE_ROW_KERNEL", kernel)
    model = tiny_model(version, 0)
    ids, mask = padded_batch(0, lengths=(9,))
    plain = generate(model, ids, mask, max_new_tokens=14)
    fast = generate(tiny_model(version, 0).optimize_for_decoding(), ids, mask, max_new_tokens=14)
    assert torch.equal(fast, plain)


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_reorder_keeps_encoder_kv_shared_when_inputs_leave(version):
    """Beam search drops inputs whose search is over: the remaining beams still share one encoder
    K/V row per input (no copy per beam), and decoding goes on exactly."""
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset(
        "t5-tiny" if version == "v1.0" else "t5-v1_1-tiny", dropout_rate=0.0)).eval()
    ids, mask = padded_batch(3)
    g, n_src = 3, ids.shape[0]
    dec = torch.randint(0, VOCAB, (n_src * g, 9))
    with torch.inference_mode():
        enc = model.encode(ids, mask)
        cache = model.new_decoder_cache(enc, mask, max_length=9)
        cache.reorder(torch.arange(n_src).repeat_interleave(g))
        model.decode_step(dec[:, :3], cache)
        # inputs 1 and 3 stay, each keeps 3 beams taken from its own group (duplicates allowed)
        rows = torch.tensor([3, 3, 5, 10, 9, 11])
        cache.reorder(rows)
        assert cache.batch_size == 6 and cache.cross_kv.shape[2] == 2 and cache.cross_bias.shape[0] == 2
        got = model.decode_step(dec[rows, 3:5], cache)
        # a same-size reorder twice: the rows are gathered into the spare buffer, then back
        again = torch.tensor([1, 0, 0, 5, 3, 4])
        cache.reorder(again)
        cache.reorder(torch.arange(6))  # identity: nothing moves
        assert cache.cross_kv.shape[2] == 2
        got2 = model.decode_step(dec[rows][again, 5:8], cache)
        # rows of different inputs interleaved: one encoder K/V row per decoder row
        mixed = torch.tensor([0, 3, 1])
        cache.reorder(mixed)
        assert cache.cross_kv.shape[2] == 3
        src = torch.arange(n_src).repeat_interleave(g)[rows][again][mixed]
        ref = model(ids[src], mask[src], decoder_input_ids=dec[rows][again][mixed]).logits
    full = model(ids.repeat_interleave(g, 0)[rows], mask.repeat_interleave(g, 0)[rows], decoder_input_ids=dec[rows]).logits
    torch.testing.assert_close(got, full[:, 3:5], atol=1e-5, rtol=1e-5)
    full2 = model(ids.repeat_interleave(g, 0)[rows][again], mask.repeat_interleave(g, 0)[rows][again],
                  decoder_input_ids=dec[rows][again]).logits
    torch.testing.assert_close(got2, full2[:, 5:8], atol=1e-5, rtol=1e-5)
    with torch.inference_mode():
        last = model.decode_step(dec[rows][again][mixed, 8:9], cache)
    torch.testing.assert_close(last, ref[:, 8:9], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_reorder_within_inputs_moves_only_forked_beams(version):
    """Same-size reorders that keep every row in its input's group go through the slot map: a
    permutation copies nothing, a fork copies only the extra continuations (one slot each), and
    decoding along the reordered histories gives the full forward's logits, also after inputs
    leave (which gathers every row and resets the map)."""
    model = tiny_model(version, 3)
    ids, mask = padded_batch(3, lengths=(7, 4, 9))
    g, n_src, steps = 4, 3, 12
    gen = torch.Generator().manual_seed(0)
    hist = torch.zeros(n_src * g, 0, dtype=torch.long)
    src = torch.arange(n_src).repeat_interleave(g)  # input of each logical row
    with torch.inference_mode():
        cache = model.new_decoder_cache(model.encode(ids, mask), mask, max_length=steps)
        cache.reorder(src.clone())
        moved_total = 0
        for step in range(steps):
            tok = torch.randint(2, VOCAB, (hist.shape[0], 1), generator=gen)
            got = model.decode_step(tok, cache)
            hist = torch.cat([hist, tok], 1)
            ref = model(ids[src], mask[src], decoder_input_ids=hist).logits[:, -1:]
            # (a wrong history is off by O(1); fp32 rounding of this spread-out model reaches 4e-5
            # with the machine's best kernels, 3.2e-4 with MKL held to AVX2 on an AMX Xeon)
            torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-4)
            if step == steps - 1:
                break
            groups = hist.shape[0] // g
            if step == 8:  # input 1 leaves: a smaller cache, every row gathered, identity slots
                index = torch.cat([torch.arange(0, g), torch.arange(2 * g, 3 * g)])
            elif step % 3 == 0:  # a permutation inside each input: no K/V moves
                index = torch.cat([torch.randperm(g, generator=gen) + i * g for i in range(groups)])
            else:  # beams fork: parents drawn with replacement inside each input
                index = torch.cat([torch.randint(0, g, (g,), generator=gen) + i * g for i in range(groups)])
            before = cache.self_kv[..., :cache.length, :].clone()
            slots_before = cache.slot
            cache.reorder(index)
            hist, src = hist[index], src[index]
            if index.numel() == before.shape[2]:
                changed = (cache.self_kv[..., :cache.length, :] != before).flatten(3).any(-1).any(0).any(0)
                parents = (index if slots_before is None else slots_before[index]).tolist()
                forks = len(parents) - len(set(parents))
                assert int(changed.sum()) == forks, (step, index)  # one slot written per extra continuation
                moved_total += forks
            else:
                assert cache.slot is None and cache.self_kv.shape[2] == index.numel()
    assert moved_total > 0 and cache.cross_kv.shape[2] == 2


def test_beam_search_shares_encoder_kv_after_inputs_leave():
    """In a real beam search with inputs ending at different steps, the encoder K/V never hold
    more rows than inputs (the old reorder copied them once per beam)."""
    model = tiny_model("v1.0", 1)
    ids, mask = padded_batch(1)
    eos = eos_that_ends_some_rows(model, ids, mask)
    seen = []
    new_cache = model.new_decoder_cache

    def tracking_cache(*args, **kwargs):
        cache = new_cache(*args, **kwargs)
        reorder = type(cache).reorder

        def tracked(index):
            reorder(cache, index)
            seen.append((cache.batch_size, cache.cross_kv.shape[2]))
        cache.reorder = tracked
        return cache

    model.new_decoder_cache = tracking_cache
    generate(model, ids, mask, num_beams=3, eos_token_id=eos, max_new_tokens=14)
    assert any(rows < 3 * ids.shape[0] for rows, _ in seen), "no input left early: the test covers nothing"
    assert all(src * 3 == rows for rows, src in seen), seen


@pytest.mark.parametrize("kernel", ["bags", "mkl"])
def test_optimized_weights_keep_values_names_and_training(kernel, monkeypatch):
    """Column-major decoder weights where the one-row kernel streams W^T's rows (bags), row-major
    where MKL's product runs (Intel CPUs); values, names and training unchanged either way."""
    import t5electra.inference.decoding as dec

    monkeypatch.setattr(dec, "ONE_ROW_KERNEL", kernel)
    model = tiny_model("v1.1", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids, mask = padded_batch(2)
    labels = torch.randint(2, VOCAB, (ids.shape[0], 7))
    loss_before = model(ids, mask, labels=labels).loss
    assert model.optimize_for_decoding() is model
    assert model._packed_linears is not None and len(model._packed_linears.packs) == 2 * 6 + 1
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    if kernel == "bags":
        assert not model.lm_head.weight.is_contiguous() and model.lm_head.weight.t().is_contiguous()
    else:
        assert model.lm_head.weight.is_contiguous() and model.decoder.blocks[0].ff.wo.weight.is_contiguous()
    assert model._column_major == (kernel == "bags")
    assert model.encoder.blocks[0].self_attn.qkv.weight.is_contiguous()  # the encoder is left as it was
    model.train()
    loss = model(ids, mask, labels=labels).loss
    torch.testing.assert_close(loss, loss_before, atol=1e-5, rtol=1e-5)
    loss.backward()
    w = model.decoder.blocks[0].ff.wo.weight
    assert w.grad is not None and w.grad.shape == w.shape


def test_packed_copies_are_not_used_once_the_weights_change():
    """After an optimiser step the packed copies are stale: decoding uses the new weights."""
    model = tiny_model("v1.0", 1).optimize_for_decoding()
    ids, mask = padded_batch(1)
    model.train()
    loss = model(ids, mask, labels=torch.randint(2, VOCAB, (ids.shape[0], 6))).loss
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.5).step()
    model.eval()
    fresh = copy.deepcopy(model)  # the copy has no packed weights
    assert fresh._packed_linears is None
    kw = dict(num_beams=3, max_new_tokens=8)
    assert torch.equal(generate(model, ids, mask, **kw), generate(fresh, ids, mask, **kw))
    assert torch.equal(generate(model.optimize_for_decoding(), ids, mask, **kw), generate(fresh, ids, mask, **kw))


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_int8_quantized_model_decodes_through_its_modules(version):
    """torch.ao dynamic int8 Linear layers (whose ``weight`` is a method) take the modules' path."""
    import warnings

    model = tiny_model(version, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks its quantized tensor types deprecated
        qmodel = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    ids, mask = padded_batch(0)
    for kw in (dict(max_new_tokens=6), dict(num_beams=3, max_new_tokens=6)):
        out = generate(qmodel, ids, mask, **kw)
        assert out.shape == (ids.shape[0], 7)
        # the first generated token: the int8 model's teacher-forced argmax (computed without the cache)
        with torch.no_grad():
            first = qmodel(ids, mask, decoder_input_ids=out[:, :1]).logits[:, 0].argmax(-1)
        if "num_beams" not in kw:
            assert torch.equal(out[:, 1], first)
