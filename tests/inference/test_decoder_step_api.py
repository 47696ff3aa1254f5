"""The flat decoder step (inference/decoder_step.py) across the user-facing generation surface: every
call gives the same outputs (or the same error) with the flat loop as through the modules."""

from __future__ import annotations

import copy
import functools
import pickle

import pytest
import torch

from t5electra.cli import main
from t5electra.lora import LoraConfig, get_peft_model
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.nn import attention
from t5electra.nn.attention import SelfAttention
from t5electra.tokenizers import T5Tokenizer
from tests.tiny_t5 import spread_tiny_t5


def _both(flat, run) -> tuple:
    """``run()`` with the flat loop, then through the modules -> (flat's result, the modules', flat steps)."""
    flat["off"], flat["flat"] = False, 0
    with_flat = run()
    steps = flat["flat"]
    flat["off"] = True
    return with_flat, run(), steps


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if hasattr(a, "__dataclass_fields__"):
        return all(_same(getattr(a, k), getattr(b, k)) for k in a.__dataclass_fields__)
    return a == b


def _odd() -> T5ForConditionalGeneration:
    """1 encoder and 3 decoder blocks, d_kv * heads (30) != d_model (24), gated GELU, tied, dropout 0.1."""
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=64, d_model=24, d_kv=10, d_ff=40, num_layers=1, num_decoder_layers=3, num_heads=3,
                   relative_attention_num_buckets=8, relative_attention_max_distance=20, dropout_rate=0.1,
                   feed_forward_proj="gated-gelu", tie_word_embeddings=True, initializer_factor=3.0)
    return T5ForConditionalGeneration(cfg).eval()


def _eager() -> T5ForConditionalGeneration:
    model = spread_tiny_t5("v1.1", 0, 64, "mt5")
    model.set_attn_implementation("eager")
    return model


def _checkpointing() -> T5ForConditionalGeneration:
    model = spread_tiny_t5("v1.0", 0, 64)
    model.gradient_checkpointing_enable()  # in eval mode: no recomputation, the flat loop runs
    return model


def _lora(merge: bool):
    model = get_peft_model(spread_tiny_t5("v1.1", 0, 64), LoraConfig(r=2, target_modules=["q", "o", "wi_0", "wo"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5, generator=torch.Generator().manual_seed(6))  # adapters that change the outputs
    return model.merge_and_unload() if merge else model


def _loaded(tmp_path) -> T5ForConditionalGeneration:
    spread_tiny_t5("v1.1", 0, 64, "umt5").save_pretrained(tmp_path)
    return T5ForConditionalGeneration.from_pretrained(tmp_path).eval()


# (name, model maker, whether the flat loop runs)
MODELS = {
    "v1.0": (lambda tmp: spread_tiny_t5("v1.0", 0, 64), True),
    "v1.1-fp32": (lambda tmp: spread_tiny_t5("v1.1", 0, 64).optimize_for_inference("fp32"), True),
    "umt5-int8-keep": (lambda tmp: spread_tiny_t5("v1.1", 0, 64, "umt5").optimize_for_inference(
        "int8", keep=["decoder.blocks.0.*"]), True),
    "odd-bf16": (lambda tmp: _odd().optimize_for_inference("bf16"), True),
    "mt5-eager": (lambda tmp: _eager(), True),
    "checkpointing-eval": (lambda tmp: _checkpointing(), True),
    "loaded-umt5": (_loaded, True),
    "lora-merged": (lambda tmp: _lora(merge=True), True),
    "lora": (lambda tmp: _lora(merge=False), False),
    "half": (lambda tmp: spread_tiny_t5("v1.1", 0, 64).half(), True),
    "bf16-model": (lambda tmp: spread_tiny_t5("v1.0", 0, 64).to(torch.bfloat16), True),
}

IDS = torch.randint(2, 64, (3, 9), generator=torch.Generator().manual_seed(3))
MASK = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 4 + [0] * 5])

OPTIONS = {
    "greedy": dict(max_new_tokens=10, min_new_tokens=10),
    "sample": dict(max_new_tokens=10, do_sample=True, top_k=20, top_p=0.9, temperature=0.7, num_return_sequences=2),
    "beam": dict(max_new_tokens=10, num_beams=3, num_return_sequences=2, length_penalty=0.5, early_stopping=True,
                 return_dict_in_generate=True, output_scores=True, output_logits=True),
    "processors": dict(max_new_tokens=12, repetition_penalty=1.3, no_repeat_ngram_size=2, bad_words_ids=[[5], [6, 7]],
                       forced_bos_token_id=9, forced_eos_token_id=3, eos_token_id=[1, 4]),
    # most tokens end a row: finished rows leave the cache (cache.reorder to fewer rows)
    "rows-finish": dict(max_new_tokens=12, eos_token_id=list(range(2, 40))),
    "prefix-dict": dict(max_new_tokens=6, decoder_input_ids=torch.tensor([[0, 5, 6], [0, 7, 8], [0, 9, 10]]),
                        return_dict_in_generate=True, output_scores=True),
}


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("name", list(MODELS))
def test_generate_gives_the_modules_outputs(name, option, flat, tmp_path):
    """Greedy, sampling, beam search with scores and logits, the logits processors, rows leaving
    the cache, a decoder prefix; T5 v1.0 / v1.1 / mT5 / umT5, optimised fp32 / bf16 / int8 (layers
    kept), eager attention, an odd shape, checkpointing in eval mode, a saved and loaded model, LoRA
    (merged: flat; not merged: the modules), fp16 and bf16 models; plain and under torch.inference_mode."""
    make, runs_flat = MODELS[name]
    model = make(tmp_path)
    kwargs = OPTIONS[option]

    def run():
        gen = torch.Generator().manual_seed(5) if kwargs.get("do_sample") else None
        return model.generate(IDS, attention_mask=MASK, generator=gen, **kwargs)

    a, b, steps = _both(flat, run)
    assert _same(a, b)
    assert (steps > 0) == runs_flat
    if option == "greedy":
        with torch.inference_mode():
            a, b, _ = _both(flat, run)
        assert _same(a, b)


def _protocol(model, modes: tuple[str, str]):
    """``new_decoder_cache`` under modes[0], then ``decode_step`` under modes[1] with 3, 1, 2, 1, 1
    tokens and ``cache.reorder`` between them (rows permuted and duplicated, dropped, doubled) ->
    each step's logits and the decoded positions of the cache."""
    def grad_mode(mode):
        return torch.inference_mode() if mode == "inference" else torch.no_grad()

    def run():
        with grad_mode(modes[0]):
            enc = model.get_encoder()(IDS[:, :7]).last_hidden_state
            cache = model.new_decoder_cache(enc, max_length=10)
        reorders = {1: [2, 0, 0], 2: [1, 2], 3: [1, 1, 0, 0]}
        tokens, out = IDS[:, :3], []
        for i, t in enumerate((3, 1, 2, 1, 1)):
            with grad_mode(modes[1]):
                if i and t > 1:
                    tokens = torch.randint(2, 64, (cache.batch_size, t), generator=torch.Generator().manual_seed(i))
                out.append(model.decode_step(tokens, cache))
            tokens = out[-1][:, -1:].argmax(-1)
            if i in reorders:
                cache.reorder(torch.tensor(reorders[i]))
                tokens = tokens[reorders[i]]
        return out, cache.self_kv[..., :cache.length, :]  # past the length: unwritten memory
    return run


@pytest.mark.parametrize("modes", [("no_grad", "no_grad"), ("inference", "inference"), ("no_grad", "inference")])
@pytest.mark.parametrize("name", ["v1.0", "v1.1-fp32", "umt5-int8-keep"])
def test_decode_step_protocol_gives_the_modules_bits(name, modes, flat, tmp_path):
    """The generation protocol used directly: steps of several tokens and of one, reorders between them."""
    run = _protocol(MODELS[name][0](tmp_path), modes)
    a, b, steps = _both(flat, run)
    assert steps == 5 and _same(a, b)


def test_a_cache_under_inference_mode_stepped_outside_it_fails_alike(flat):
    """The same error either way (PyTorch refuses writing into an inference tensor outside inference mode)."""
    run = _protocol(spread_tiny_t5("v1.0", 0, 64), ("inference", "no_grad"))
    errors = []
    for off in (False, True):
        flat["off"] = off
        with pytest.raises(RuntimeError) as e:
            run()
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "inference" in errors[0].lower()


@pytest.mark.parametrize("weights", [None, "fp32"])
def test_a_cache_stepped_by_two_models_takes_each_models_weights(weights, flat):
    """One cache, a step of model ``a``, then a step of ``b`` (the same shape, other weights): ``b``'s
    step computes with ``b``'s weights. The plan made at the first step was the cache's, keyed by
    the step's ``linear`` alone: plain models share ``decode_linear``, and ``b``'s step ran ``a``'s."""
    a, b = spread_tiny_t5("v1.1", 0, 64), spread_tiny_t5("v1.1", 1, 64)
    if weights:
        a.optimize_for_inference(weights), b.optimize_for_inference(weights)

    def run():
        with torch.no_grad():
            cache = a.new_decoder_cache(a.get_encoder()(IDS).last_hidden_state, max_length=4)
            first = a.decode_step(torch.zeros(3, 1, dtype=torch.long), cache)
            return first, b.decode_step(first[:, -1:].argmax(-1), cache)

    with_flat, modules, steps = _both(flat, run)
    assert steps == 2 and _same(with_flat, modules)


def test_a_copied_cache_steps_with_the_models_own_modules(flat):
    """``copy.deepcopy(cache)`` leaves the plan out (it would copy the decoder's weights with it) and
    plans again at its next step, with the model's own modules: a weight edited in place after the
    copy is used, as the modules use it. A pickled cache leaves it out too."""
    model = spread_tiny_t5("v1.0", 0, 64)
    wo = model.decoder.blocks[1].ff.wo.weight

    def run():
        with torch.no_grad():
            wo.copy_(spread_tiny_t5("v1.0", 0, 64).decoder.blocks[1].ff.wo.weight)
            cache = model.new_decoder_cache(model.get_encoder()(IDS).last_hidden_state, max_length=4)
            first = model.decode_step(IDS[:, :2], cache)
            copied = copy.deepcopy(cache)
            assert copied.flat_step is None and copied.self_kv is not cache.self_kv
            assert pickle.loads(pickle.dumps(cache)).flat_step is None
            wo.mul_(3.0)
            return first, model.decode_step(first[:, -1:].argmax(-1), copied), model.decode_step(IDS[:, 2:3], cache)

    a, b, steps = _both(flat, run)
    assert steps == 3 and _same(a, b)


@pytest.mark.parametrize("flags", [["--weights", "int8", "--num-beams", "2", "--num-return-sequences", "2"],
                                   ["--weights", "fp32", "--do-sample", "--seed", "3", "--batch-size", "1"]])
def test_the_generate_command_writes_the_same_lines(flags, flat, tmp_path):
    """``t5electra generate`` on Chinese text (a byte-fallback SentencePiece trained here): the same JSON lines."""
    d = tmp_path / "m"
    corpus = ["迈向充满希望的新世纪", "这本书写得非常好，值得一读。", "质量太差了，千万别买。", "物流很快，包装也不错。"] * 20
    tok = T5Tokenizer.train(iter(corpus), vocab_size=320, byte_fallback=True, character_coverage=1.0,
                            hard_vocab_limit=False, extra_ids=4, output_dir=d)
    spread_tiny_t5("v1.1", 0, len(tok)).save_pretrained(d)
    lines = []
    for off in (False, True):
        flat["off"], flat["flat"] = off, 0
        out = tmp_path / f"out-{off}.jsonl"
        assert main(["generate", str(d), "这本书写得非常好", "质量太差了，千万别买。饕餮", "--max-new-tokens", "6",
                     "--out", str(out), *flags]) == 0
        lines.append(out.read_text(encoding="utf-8"))
        assert (flat["flat"] > 0) != off
    assert lines[0] == lines[1] and len(lines[0].splitlines()) == 2


def _scaled(fn):
    """``fn`` with its output scaled: a patch that changes what the modules' path computes."""
    def patched(*args, **kwargs):
        return fn(*args, **kwargs) * 1.5
    return patched


def _patch(where: str, model, monkeypatch) -> None:
    block = model.decoder.blocks[0]
    if where == "block._forward":  # on the instance
        monkeypatch.setattr(block, "_forward", _scaled(block._forward), raising=False)
    elif where == "cross_attn._attend":
        monkeypatch.setattr(block.cross_attn, "_attend", _scaled(block.cross_attn._attend), raising=False)
    elif where == "T5Block._forward":  # on the class
        monkeypatch.setattr(type(block), "_forward", _scaled(type(block)._forward))
    elif where == "SelfAttention.forward":  # a functools.wraps wrapper keeps the name
        monkeypatch.setattr(SelfAttention, "forward", functools.wraps(SelfAttention.forward)(
            _scaled(SelfAttention.forward)))
    else:  # a function the attention modules look up in their module at each call
        monkeypatch.setattr(attention, "attend", _scaled(attention.attend))


@pytest.mark.parametrize("where", ["block._forward", "cross_attn._attend", "T5Block._forward",
                                   "SelfAttention.forward", "attention.attend"])
def test_methods_replaced_on_an_instance_a_class_or_a_module_take_the_modules(where, flat, monkeypatch):
    """A method the modules' path calls replaced on a module, on its class, or a function replaced in
    nn/attention.py: the modules run it (the flat loop, which calls the originals, ran without it)."""
    model = spread_tiny_t5("v1.0", 0, 64)
    plain = model.generate(IDS, attention_mask=MASK, max_new_tokens=6, min_new_tokens=6)
    _patch(where, model, monkeypatch)
    a, b, steps = _both(flat, lambda: model.generate(IDS, attention_mask=MASK, max_new_tokens=6, min_new_tokens=6))
    assert steps == 0 and _same(a, b) and not torch.equal(a, plain)
