"""The flat decoder step (inference/decoder_step.py) gives the modules' bits, and runs only where it may."""

from __future__ import annotations

import pytest
import torch

from t5electra.inference.decoding import decode_linear
from t5electra.lora import LoraConfig, get_peft_model
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from tests.tiny_t5 import spread_tiny_t5


def _model(version: str, weights: str | None, model_type: str = "t5") -> T5ForConditionalGeneration:
    model = spread_tiny_t5(version, 0, 64, model_type)
    return model if weights is None else model.optimize_for_inference(weights)


def _steps(model, count_flat, off: bool, rows: int = 1, n: int = 6):
    """Hidden states and cache of a 3-token decoder prompt, then ``n`` - 1 greedy steps of one token,
    for ``rows`` inputs of 7 tokens (the modules' path with ``off``)."""
    count_flat["off"] = off
    ids = torch.randint(2, 64, (rows, 7), generator=torch.Generator().manual_seed(1))
    linear = getattr(model, "_packed_linears", None) or decode_linear  # what decode_step passes
    with torch.no_grad():
        cache = model.new_decoder_cache(model.get_encoder()(ids).last_hidden_state, max_length=n + 2)
        tokens, hidden = torch.randint(2, 64, (rows, 3), generator=torch.Generator().manual_seed(2)), []
        for _ in range(n):
            hidden.append(model._decode_hidden(tokens, cache, linear))
            tokens = model.lm_logits(hidden[-1][:, -1:]).argmax(-1)
    return hidden, cache


@pytest.mark.parametrize("version,model_type", [("v1.0", "t5"), ("v1.1", "t5"), ("v1.1", "umt5")])
@pytest.mark.parametrize("weights", [None, "fp32", "bf16", "int8"])
@pytest.mark.parametrize("rows", [1, 3, 40])
def test_flat_step_gives_the_modules_bits(version, model_type, weights, rows, count_flat):
    """Every step's hidden state and the whole KV cache bitwise equal to the modules' (v1.0's ReLU,
    v1.1's gated GELU, umT5's per-layer position bias; plain, optimised fp32 (one row: the one-row
    kernel called directly), bf16 and int8 (the prepared kernels through ``project``); 1, 3 and 40
    rows (40: the plain attention formula of many-row steps, nn/attention.py's _few_queries); a
    3-token prompt, then one token a step)."""
    model = _model(version, weights, model_type)
    flat, flat_cache = _steps(model, count_flat, off=False, rows=rows)
    assert count_flat["flat"] == 6
    modules, modules_cache = _steps(model, count_flat, off=True, rows=rows)
    assert count_flat["flat"] == 6  # the second run took the modules
    for a, b in zip(flat, modules):
        assert torch.equal(a, b)
    assert torch.equal(flat_cache.self_kv, modules_cache.self_kv)


@pytest.mark.parametrize("weights", ["fp32", "int8"])
def test_generate_gives_the_same_outputs(weights, count_flat):
    """Greedy and sampled batch 1, a padded batch, beam search (its beams share their input's
    cross-attention keys: CrossAttention's folding) with scores: the same as through the modules."""
    model = _model("v1.1", weights)
    ids = torch.randint(2, 64, (3, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0
    runs = {}
    for off in (False, True):
        count_flat["off"] = off
        runs[off] = [
            model.generate(ids[:1], max_new_tokens=12, min_new_tokens=12),
            model.generate(ids[:1], max_new_tokens=12, do_sample=True, top_k=20,
                           generator=torch.Generator().manual_seed(5)),
            model.generate(ids, attention_mask=mask, max_new_tokens=8),
            model.generate(ids, attention_mask=mask, max_new_tokens=8, num_beams=4, num_return_sequences=2,
                           return_dict_in_generate=True, output_scores=True).sequences_scores]
        if not off:  # every step of every call took the flat loop
            assert count_flat["flat"] == count_flat["steps"] >= 12 + 12 + 1 + 1
    for a, b in zip(runs[False], runs[True]):
        assert torch.equal(a, b)


def test_the_modules_run_where_the_flat_loop_would_skip_something(count_flat):
    """Grad, dropout in training mode, a hook, a subclassed block or a LoRA-wrapped layer: the
    modules' path, as before (a hook fires at every step)."""
    model = _model("v1.0", "fp32")
    ids = torch.randint(2, 64, (2, 5), generator=torch.Generator().manual_seed(2))
    seen = []
    handle = model.decoder.blocks[1].cross_attn.register_forward_hook(lambda *a: seen.append(1))
    model.generate(ids[:1], max_new_tokens=4, min_new_tokens=4)
    handle.remove()
    assert count_flat["flat"] == 0 and len(seen) == 4

    model.decoder.blocks[0].ff.train()  # one submodule in training mode (dropout 0 here, but its own call)
    model.generate(ids[:1], max_new_tokens=3)
    assert count_flat["flat"] == 0
    model.eval()

    block_type = type(model.decoder.blocks[0])
    model.decoder.blocks[0].__class__ = type("MyBlock", (block_type,), {})
    model.generate(ids[:1], max_new_tokens=3)
    assert count_flat["flat"] == 0
    model.decoder.blocks[0].__class__ = block_type

    with torch.enable_grad():  # decode_step runs under no_grad itself: call the stack directly
        cache = model.new_decoder_cache(torch.randn(1, 5, 32), max_length=2)
        x = model.shared(torch.zeros(1, 1, dtype=torch.long))
        model.decoder.decode(x, cache, model._packed_linears)
    assert count_flat["flat"] == 0

    model.generate(ids[:1], max_new_tokens=3, min_new_tokens=3)
    assert count_flat["flat"] == 3  # and back once nothing stands in its way


def test_lora_adapters_take_the_modules(count_flat):
    model = get_peft_model(_model("v1.1", None), LoraConfig(r=2, target_modules=["q", "o"]))
    ids = torch.randint(2, 64, (1, 5), generator=torch.Generator().manual_seed(2))
    model.generate(ids, max_new_tokens=3)
    assert count_flat["flat"] == 0


def test_changes_between_two_generate_calls_are_seen(count_flat):
    """The plan is made per cache: a weight reassigned after one generate call is used by the next."""
    model = _model("v1.0", "fp32")
    ids = torch.randint(2, 64, (1, 6), generator=torch.Generator().manual_seed(4))
    model.generate(ids, max_new_tokens=5)
    wo = model.decoder.blocks[1].ff.wo
    with torch.no_grad():
        wo.weight.data = (torch.randn_like(wo.weight) * 3).t().contiguous().t()
    flat = model.generate(ids, max_new_tokens=5, min_new_tokens=5)
    count_flat["off"] = True
    assert torch.equal(flat, model.generate(ids, max_new_tokens=5, min_new_tokens=5))
    reference = T5ForConditionalGeneration(T5Config.from_dict(model.config.to_dict())).eval()
    reference.load_state_dict(model.state_dict())
    assert torch.equal(flat, reference.generate(ids, max_new_tokens=5, min_new_tokens=5))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
@pytest.mark.parametrize("rows", [1, 40])
def test_half_precision_models_give_the_modules_bits(dtype, version, rows, count_flat):
    """A bf16 / fp16 model (RMSNorm's other branch: fp32 statistics, the scale in the model's dtype;
    fp16's FFN rule): the flat loop runs, and every hidden state and the KV cache equal the modules'."""
    model = spread_tiny_t5(version, 0, 64).to(dtype)
    flat, flat_cache = _steps(model, count_flat, off=False, rows=rows)
    assert count_flat["flat"] == 6
    modules, modules_cache = _steps(model, count_flat, off=True, rows=rows)
    assert all(torch.equal(a, b) for a, b in zip(flat, modules)) and flat[0].dtype == dtype
    assert torch.equal(flat_cache.self_kv, modules_cache.self_kv)
