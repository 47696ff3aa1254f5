"""Weights edited through ``.data`` (which leaves the version counter as it was) must not leave the
prepared copies in use (inference/fingerprint.py): T5's int8 screen of the output layer (built by
the first greedy step, no opt-in), the decoding steps' packed / bf16 / int8 kernels and the
optimised layers' kernels are dropped, and the model computes with the weights it has."""

from __future__ import annotations

import copy

import pytest
import torch

from t5electra import ElectraConfig, ElectraForPreTraining
from t5electra.generation.seq2seq import generate
from t5electra.inference.fingerprint import Fingerprint
from t5electra.inference.weights import drop_stale_copies
from tiny_t5 import spread_tiny_t5

IDS = torch.tensor([[5, 6, 7, 8, 9, 10, 1], [11, 12, 13, 14, 1, 0, 0]])
MASK = (IDS != 0).long()


def plain_twin(model):
    """A model that never had a fast copy, with ``model``'s current weights."""
    twin = spread_tiny_t5("v1.1", 0, 512)
    twin.load_state_dict(model.state_dict())
    twin.screen_greedy_argmax = False
    return twin


def surgery(model, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.data.add_(torch.randn(p.shape, generator=g) * 0.3)  # .data: the version counter stays


@pytest.mark.parametrize("weights", [None, "fp32", "bf16", "int8"])
def test_generate_after_data_edits_uses_the_new_weights(weights):
    model = spread_tiny_t5("v1.1", 0, 512)
    if weights is not None:
        model.optimize_for_inference(weights)
    model.generate(IDS, MASK, max_new_tokens=8)                 # builds the screen / uses the kernels
    assert model._screened_argmax is not None or weights in ("bf16", "int8")
    surgery(model, 1)
    want = plain_twin(model).generate(IDS, MASK, max_new_tokens=8)
    for kw in (dict(), dict(num_beams=3)):
        got = model.generate(IDS, MASK, max_new_tokens=8, **kw)
        assert torch.equal(got, plain_twin(model).generate(IDS, MASK, max_new_tokens=8, **kw)), (weights, kw)
    assert torch.equal(model.generate(IDS, MASK, max_new_tokens=8), want)
    with torch.no_grad():  # the teacher-forced forward too
        torch.testing.assert_close(model(IDS, attention_mask=MASK, decoder_input_ids=want).logits,
                                   plain_twin(model)(IDS, attention_mask=MASK, decoder_input_ids=want).logits,
                                   atol=1e-4, rtol=1e-4)


def test_the_screen_sees_an_edit_of_one_row_of_the_output_layer():
    """The int8 screen (built by the first greedy step of a plain model) fingerprints every row:
    setting one token's output row (weight surgery) changes the greedy tokens, and they follow."""
    model = spread_tiny_t5("v1.1", 0, 512)
    before = model.generate(IDS, MASK, max_new_tokens=8)
    with torch.no_grad():
        model.lm_head.weight.data[300] = model.decoder.final_norm.weight * 40  # token 300 wins everywhere
    want = plain_twin(model).generate(IDS, MASK, max_new_tokens=8)
    assert not torch.equal(want, before) and (want[:, 1:] == 300).any()
    assert torch.equal(model.generate(IDS, MASK, max_new_tokens=8), want)


def test_unchanged_weights_keep_their_copies_and_edited_ones_are_dropped():
    model = spread_tiny_t5("v1.1", 0, 512).optimize_for_inference("int8")
    model.generate(IDS, MASK, max_new_tokens=4)
    assert drop_stale_copies(model) == 0 and len(model._packed_linears.kernels) > 0
    n = len(model._packed_linears.kernels)
    with torch.no_grad():
        model.lm_head.weight.data.mul_(1.5)  # the whole output layer
    assert drop_stale_copies(model) == 2  # the output layer's kernel: the layer's and the decoding steps'
    assert len(model._packed_linears.kernels) == n - 1 and model.lm_head.kernel is None
    layer = model.encoder.blocks[0].ff.wo
    with torch.no_grad():
        layer.weight.data.add_(0.01)  # an encoder layer
        model(IDS, attention_mask=MASK, decoder_input_ids=IDS[:, :3])  # the check before each forward
        assert layer.kernel is None
        x = torch.randn(80, layer.in_features)
        torch.testing.assert_close(layer(x), torch.nn.functional.linear(x, layer.weight), atol=0, rtol=0)
    others = [m for m in model.modules() if hasattr(m, "kernel") and m is not layer and m is not model.lm_head]
    assert others and all(m.kernel is not None for m in others)


def test_electra_layers_drop_kernels_of_edited_weights():
    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig.from_preset("electra-tiny")).eval()
    fast = copy.deepcopy(model).optimize_for_inference("int8")
    ids = torch.randint(5, 500, (2, 70))
    with torch.inference_mode():
        fast(ids)
    with torch.no_grad():
        for a, b in zip(fast.parameters(), model.parameters()):
            b.add_(torch.randn_like(b) * 0.3)
            a.data.copy_(b)
    with torch.inference_mode():
        torch.testing.assert_close(fast(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", [(40, 24), (24, 40), (48, 24), (7, 7), (1, 30)])
def test_fingerprint_sees_every_row_every_column_and_whole_matrices_on_any_strides(shape):
    w = torch.randn(*shape)
    for t in (w, w.t().contiguous().t()):  # row- and column-major
        fp = Fingerprint(t)
        assert fp.matches(t) and not fp.matches(t.clone()) and not fp.matches(None)  # another storage
        edits = [lambda t, r=r: t.data[r].add_(1) for r in range(t.shape[0])]
        edits += [lambda t, c=c: t.data[:, c].mul_(-2) for c in range(t.shape[1])] + [lambda t: t.data.add_(1e-3)]
        for edit in edits:
            before = t.clone()
            edit(t)
            assert not fp.matches(t)
            t.data.copy_(before)
            assert fp.matches(t)
    bias = torch.randn(24)
    fp = Fingerprint(bias)
    bias.data[3] += 1e-6
    assert not fp.matches(bias)


@pytest.mark.parametrize("weights", [None, "fp32", "int8"])
def test_a_model_made_under_inference_mode_generates_and_follows_its_edits(weights):
    """Weights made under ``torch.inference_mode()`` (a model built or loaded there; transformers'
    T5 generates so) are inference tensors, which have no version counter: reading it raised in
    the int8 screen and the kernels, and such a model could not generate, optimised or not.
    In-place edits of them (allowed inside inference_mode only, and uncounted there) are seen by
    the fingerprints, as edits through ``.data`` are."""
    with torch.inference_mode():
        model = spread_tiny_t5("v1.1", 0, 512)
        if weights is not None:
            model.optimize_for_inference(weights)
    twin = spread_tiny_t5("v1.1", 0, 512)  # the same weights as ordinary tensors
    if weights is not None:
        twin.optimize_for_inference(weights)
    assert all(p.is_inference() for p in model.parameters())
    for kw in (dict(num_beams=3), dict()):
        with torch.inference_mode():
            before = model.generate(IDS, MASK, max_new_tokens=8, **kw)
        assert torch.equal(before, twin.generate(IDS, MASK, max_new_tokens=8, **kw)), kw
    assert model._screened_argmax is not None or weights == "int8"  # the greedy screen ran on them
    with torch.inference_mode():
        for p in model.parameters():
            p.mul_(1.5)
        got = model.generate(IDS, MASK, max_new_tokens=8)
    assert not torch.equal(got, before) and torch.equal(got, plain_twin(model).generate(IDS, MASK, max_new_tokens=8))


def test_submodules_called_directly_drop_stale_kernels(monkeypatch):
    """After whole-matrix edits through ``.data``, a submodule called directly (T5's
    ``get_encoder()`` and stacks, ELECTRA's ``.electra``) ran the stale kernels: the check ran
    before the model's own forward only. Each submodule now checks its own layers, and a forward
    of the model checks each layer once."""
    import t5electra.inference.weights as W

    monkeypatch.setattr(W.Fp32OneDNN, "preferred", staticmethod(lambda flags=None: True))  # fp32: packed encoder
    t5 = spread_tiny_t5("v1.1", 0, 512).optimize_for_inference("fp32")
    assert t5.inference_report.layers > 0
    surgery(t5, 1)
    with torch.no_grad():
        got = t5.get_encoder()(input_ids=IDS, attention_mask=MASK).last_hidden_state
        want = plain_twin(t5).get_encoder()(input_ids=IDS, attention_mask=MASK).last_hidden_state
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(t5.generate(encoder_outputs=got, max_new_tokens=8),
                       plain_twin(t5).generate(encoder_outputs=want, max_new_tokens=8))

    torch.manual_seed(0)
    model = ElectraForPreTraining(ElectraConfig.from_preset("electra-tiny")).eval()
    fast = copy.deepcopy(model).optimize_for_inference("int8")
    ids = torch.randint(5, 500, (2, 70))
    checked = []
    real = W._drop_stale_layers
    monkeypatch.setattr(W, "_drop_stale_layers", lambda layers: checked.extend(layers) or real(layers))
    with torch.inference_mode():
        fast(ids)
    assert sorted(map(id, checked)) == sorted(map(id, fast._inference_layers))  # each layer once
    with torch.no_grad():
        for a, b in zip(fast.parameters(), model.parameters()):
            b.mul_(1.5)
            a.data.copy_(b)
    with torch.inference_mode():
        torch.testing.assert_close(fast.electra(ids).last_hidden_state, model.electra(ids).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(fast(ids).logits, model(ids).logits, atol=1e-5, rtol=1e-5)



@pytest.mark.parametrize("weights", [None, "fp32", "bf16", "int8"])
def test_the_generate_function_and_decoding_steps_drop_stale_copies(weights, monkeypatch):
    """``generation.seq2seq.generate(model, ...)`` (the documented function, which the server
    calls) and ``new_decoder_cache`` + ``decode_step`` ran the old decoding-step copies (packed /
    bf16 / int8, the greedy screen) and the old cross-attention kernels after whole-matrix edits
    through ``.data``: only ``model.generate`` checked. Every decoding now starts with the check,
    and computes as a twin whose edits bumped the version counters (which drops the same copies)."""
    import t5electra.inference.weights as W

    monkeypatch.setattr(W.Fp32OneDNN, "preferred", staticmethod(lambda flags=None: True))  # fp32: kernels too
    model, twin = spread_tiny_t5("v1.1", 0, 512), spread_tiny_t5("v1.1", 0, 512)
    for m in (model, twin):
        if weights is not None:
            m.optimize_for_inference(weights)
        for kw in (dict(), dict(num_beams=3)):
            generate(m, IDS, MASK, max_new_tokens=8, **kw)     # builds the screen / uses the kernels
    step = torch.zeros(2, 1, dtype=torch.long)
    for name in ("decoder.blocks.0.self_attn.qkv.weight", "decoder.blocks.1.cross_attn.kv.weight", "lm_head.weight"):
        with torch.no_grad():
            model.get_parameter(name).data.mul_(-1.5)          # .data: the version counter stays
            twin.get_parameter(name).mul_(-1.5)                # counted: its copies are dropped
        for kw in (dict(), dict(num_beams=3)):
            want = generate(twin, IDS, MASK, max_new_tokens=8, **kw)
            assert torch.equal(generate(model, IDS, MASK, max_new_tokens=8, **kw), want), (name, kw)
        with torch.inference_mode():                           # the decoding-step protocol
            enc = twin.encode(IDS, attention_mask=MASK)
            want = twin.decode_step(step, twin.new_decoder_cache(enc, MASK, 8))
            torch.testing.assert_close(model.decode_step(step, model.new_decoder_cache(enc, MASK, 8)), want,
                                       atol=0, rtol=0)
