"""The HTTP API (t5electra/serve): every endpoint, limit and error, in process.

Models: tiny random T5 / ELECTRA models with tokenizers trained on a few hundred generated lines
(t5electra.serve.demo). Results are checked against the library called directly, so the server
adds transport, batching and limits, and changes no number.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import httpx
import pytest
import torch
import yaml
from fastapi.testclient import TestClient

from t5electra.errors import CheckpointNotFoundError, ConfigError
from t5electra.generation.fill_mask import correct, detect_replaced_tokens
from t5electra.pipelines import ElectraPipeline
from t5electra.nn import attention_capture as att
from t5electra.serve.app import create_app
from t5electra.serve.batching import DynamicBatcher
from t5electra.serve.config import ServeConfig
from t5electra.serve.demo import build_demo_models
from t5electra.serve.registry import ModelRegistry, parse_model_arg

T5_PROMPT = "translate English to German: the cat ate the meal."


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-models")
    out = build_demo_models(root)
    # A generator alone (ElectraForMaskedLM checkpoint + tokenizer): a second model that can fill masks.
    gen = root / "gen-only"
    shutil.copytree(out["electra-tiny"] / "generator", gen)
    for f in out["electra-tiny"].glob("*.*"):
        if f.name != "pretraining_config.json":
            shutil.copy(f, gen / f.name)
    out["gen-only"] = gen
    return out


def _registry(dirs, **config) -> ModelRegistry:
    cfg = ServeConfig(**config)
    return ModelRegistry.from_dirs([f"{k}={v}" for k, v in dirs.items()], cfg)


@pytest.fixture(scope="module")
def registry(dirs):
    return _registry(dirs, max_texts=4, max_input_tokens=48, max_new_tokens=16, max_beams=4, max_body_bytes=20_000)


@pytest.fixture(scope="module")
def client(registry):
    with TestClient(create_app(registry)) as c:
        yield c


def ok(resp) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()


def error(resp, status: int, *words: str) -> str:
    assert resp.status_code == status, resp.text
    detail = resp.json()["detail"]
    for w in words:
        assert w in detail, detail
    return detail


# -- metadata -------------------------------------------------------------------------------------
def test_healthz_and_models(client, dirs):
    assert ok(client.get("/healthz"))["status"] == "ok"
    resp = client.get("/v1/models")
    data = ok(resp)
    by_name = {m["name"]: m for m in data["models"]}
    assert by_name["t5-tiny"]["tasks"] == ["generate", "attention"]
    assert by_name["electra-tiny"]["tasks"] == ["fill-mask", "detect", "correct", "attention"]
    assert by_name["electra-tiny-sst2"]["labels"] == ["negative", "positive"]
    assert by_name["gen-only"]["kind"] == "electra-generator"
    assert data["limits"]["max_texts"] == 4
    assert str(dirs["t5-tiny"].parent) not in resp.text  # no file paths leak
    assert client.get("/openapi.json").json()["paths"].keys() >= {
        "/v1/generate", "/v1/fill-mask", "/v1/detect", "/v1/correct", "/v1/classify", "/v1/attention"}
    assert client.get("/docs").status_code == 200


def test_playground_files_are_served(client):
    page = client.get("/")
    assert page.status_code == 200 and 'id="attention-map"' in page.text
    for f in ("app.js", "style.css"):
        assert client.get(f"/static/{f}").status_code == 200
    # Works offline: the page loads nothing from another host.
    assert "http://" not in page.text and "https://" not in page.text


# -- T5 -------------------------------------------------------------------------------------------
def test_generate_takes_what_a_request_leaves_out_from_generation_config_json(client, registry):
    """As `t5electra generate`: the model's generation_config.json fills the options a request leaves
    out (it was ignored: a fine-tuned run's answer length became 20 tokens); the request wins, and the
    limits apply to the merged values."""
    gen = registry.models["t5-tiny"].t5.generation_config
    gen.max_new_tokens, gen.num_beams = 3, 2
    try:
        filled = ok(client.post("/v1/generate", json={"texts": [T5_PROMPT], "min_new_tokens": 3}))
        assert len(filled["results"][0]["outputs"][0]["tokens"]) == 3
        asked = ok(client.post("/v1/generate", json={"texts": [T5_PROMPT], "min_new_tokens": 5, "max_new_tokens": 5}))
        assert len(asked["results"][0]["outputs"][0]["tokens"]) == 5
        beam = ok(client.post("/v1/generate", json={"texts": [T5_PROMPT], "num_return_sequences": 2}))
        assert len(beam["results"][0]["outputs"]) == 2  # num_beams 2 from the file (greedy would refuse 2)
        greedy = ok(client.post("/v1/generate", json={"texts": [T5_PROMPT], "num_beams": 1, "min_new_tokens": 3}))
        assert len(greedy["results"][0]["outputs"]) == 1  # the request's search, not the file's outputs
        gen.num_return_sequences, gen.temperature = 2, 0.0  # (temperature: greedy ignores it)
        gen.max_new_tokens, gen.num_beams = 10**6, 10**3  # capped at the server's limits, as the defaults are
        capped = ok(client.post("/v1/generate", json={"texts": [T5_PROMPT]}))
        assert len(capped["results"][0]["outputs"]) == 2
        error(client.post("/v1/generate", json={"texts": [T5_PROMPT], "max_new_tokens": 10**6}), 400,
              "max_new_tokens=1000000 is over the limit")  # what a request sends is refused
        gen.max_new_tokens = gen.num_beams = gen.num_return_sequences = gen.temperature = None
        gen.max_length = 4  # a length counting the start token: 3 new ones
        assert len(ok(client.post("/v1/generate", json={"texts": [T5_PROMPT], "min_new_tokens": 3}))
                   ["results"][0]["outputs"][0]["tokens"]) == 3
    finally:
        gen.max_new_tokens = gen.num_beams = gen.num_return_sequences = gen.temperature = gen.max_length = None


@torch.no_grad()
def test_generate_greedy_matches_the_library(client, registry):
    data = ok(client.post("/v1/generate", json={"texts": [T5_PROMPT, "summarize: a dog."], "max_new_tokens": 8}))
    assert data["model"] == "t5-tiny" and [r["input"] for r in data["results"]] == [T5_PROMPT, "summarize: a dog."]
    sm = registry.models["t5-tiny"]
    for r in data["results"]:
        ids = sm.tokenizer(r["input"], return_tensors="pt")["input_ids"]
        want = sm.t5.generate(ids, max_new_tokens=8)[0, 1:].tolist()
        (out,) = r["outputs"]
        n = len(out["tokens"])
        assert out["tokens"] == sm.tokenizer.convert_ids_to_tokens(want[:n])
        # the score is the mean log-prob of the output: minus the model's own loss on it
        loss = sm.t5(input_ids=ids, labels=torch.tensor([want[:n]])).loss
        assert out["score"] == pytest.approx(-loss.item(), abs=1e-4)
        assert out["logprob"] == pytest.approx(-loss.item() * n, abs=1e-3)


@torch.no_grad()
def test_generate_beams_and_scores(client, registry):
    body = {"model": "t5-tiny", "texts": [T5_PROMPT], "num_beams": 4, "num_return_sequences": 3,
            "max_new_tokens": 6, "length_penalty": 0.5}
    (r,) = ok(client.post("/v1/generate", json=body))["results"]
    outs = r["outputs"]
    assert len(outs) == 3
    sm = registry.models["t5-tiny"]
    ids = sm.tokenizer(T5_PROMPT, return_tensors="pt")["input_ids"]
    want = sm.t5.generate(ids, num_beams=4, num_return_sequences=3, max_new_tokens=6, length_penalty=0.5)
    for o, row in zip(outs, want.tolist()):
        n = len(o["tokens"])
        assert o["tokens"] == sm.tokenizer.convert_ids_to_tokens(row[1:1 + n])
        assert o["score"] == pytest.approx(o["logprob"] / n ** 0.5, rel=1e-5)
    scores = [o["score"] for o in outs]
    assert scores == sorted(scores, reverse=True)  # beam search returns its best first


def test_generate_sampling_with_seed_is_reproducible(client):
    body = {"texts": [T5_PROMPT], "do_sample": True, "num_return_sequences": 3, "seed": 7, "max_new_tokens": 6}
    a = ok(client.post("/v1/generate", json=body))
    b = ok(client.post("/v1/generate", json=body))
    assert a == b and len(a["results"][0]["outputs"]) == 3


def test_seeded_sampling_is_not_merged_with_other_requests(dirs):
    """Eight identical seeded requests in flight together give what one gives alone (they were
    merged into one batch with one generator: eight different texts)."""
    reg = _registry({"t5-tiny": dirs["t5-tiny"]}, max_batch_size=16, max_wait_ms=500)
    app = create_app(reg)
    body = {"model": "t5-tiny", "texts": ["hi there"], "do_sample": True, "seed": 7, "max_new_tokens": 8}
    together = asyncio.run(_post_all(app, [("/v1/generate", body)] * 8))
    with TestClient(app) as c:
        alone = ok(c.post("/v1/generate", json=body))
    assert all(ok(r) == alone for r in together)


def test_extreme_sampling_values_are_answered_not_500(client):
    """Tiny temperatures and top_p, huge length penalties: a 400 naming the value, or a sample."""
    for extra, status in (({"temperature": 1e-300}, 400), ({"top_p": 1e-300}, 200),
                          ({"num_beams": 2, "length_penalty": 1000.0}, 400)):
        r = client.post("/v1/generate", json={"texts": ["a"], "do_sample": True, "max_new_tokens": 3, **extra})
        assert r.status_code == status, (extra, r.text)


def test_healthz_answers_head_and_models_report_their_weights(client):
    assert client.head("/healthz").status_code == 200
    models = ok(client.get("/v1/models"))["models"]
    assert {m["weights"] for m in models} == {"fp32"} and all(m["kernels"] for m in models)


# -- ELECTRA --------------------------------------------------------------------------------------
@torch.no_grad()
def test_corrected_and_filled_text_keep_what_was_not_edited(client, registry):
    """Case, punctuation, spacing and [UNK] characters outside the edits stay as written (the
    texts were decoded from tokens: lower-cased, [UNK] dropped, Chinese characters spaced)."""
    text = "The Cat, sat on the MAT!!  twice"
    (r,) = ok(client.post("/v1/correct", json={"model": "electra-tiny", "texts": [text], "threshold": 0.99}))["results"]
    assert r["edits"] == [] and r["corrected"] == text
    masked = "The Cat, sat on the [MASK]!!  twice"
    (f,) = ok(client.post("/v1/fill-mask", json={"model": "electra-tiny", "texts": [masked]}))["results"]
    assert f["filled"].startswith("The Cat, sat on the ") and f["filled"].endswith("!!  twice")
    assert "[MASK]" not in f["filled"]


@torch.no_grad()
def test_fill_mask(client, registry):
    text = "the chef [MASK] the [MASK]."
    (r,) = ok(client.post("/v1/fill-mask", json={"model": "electra-tiny", "texts": [text], "top_k": 4}))["results"]
    sm = registry.models["electra-tiny"]
    pipe = ElectraPipeline(sm.tokenizer, sm.generator, sm.discriminator)
    assert r["filled"] == pipe.fill_mask(text)
    assert [m["position"] for m in r["masks"]] == [i for i, t in enumerate(r["tokens"]) if t == "[MASK]"]
    for m in r["masks"]:
        probs = [c["prob"] for c in m["candidates"]]
        assert len(probs) == 4 and probs == sorted(probs, reverse=True)
        assert "[MASK]" not in [c["token"] for c in m["candidates"]]


@torch.no_grad()
def test_detect_and_correct_match_the_library(client, registry):
    texts = ["the chef ate the meal.", "a dog read the map."]
    sm = registry.models["electra-tiny"]
    data = ok(client.post("/v1/detect", json={"model": "electra-tiny", "texts": texts}))
    for r, want in zip(data["results"], detect_replaced_tokens(sm.discriminator, sm.tokenizer, texts)):
        assert [t["token"] for t in r["tokens"]] == [t for t, _ in want]
        assert [t["prob"] for t in r["tokens"]] == pytest.approx([p for _, p in want], abs=1e-5)
    data = ok(client.post("/v1/correct", json={"model": "electra-tiny", "texts": texts[:1], "threshold": 0.4}))
    fixed, edits = correct(sm.discriminator, sm.generator, sm.tokenizer, texts[0], threshold=0.4)
    assert data["results"][0]["corrected"] == fixed
    assert [(e["position"], e["old"], e["new"]) for e in data["results"][0]["edits"]] == [
        (e.position, e.old, e.new) for e in edits]


@torch.no_grad()
def test_classify_uses_label_names(client, registry):
    texts = ["the film was good.", "the film was bad."]
    data = ok(client.post("/v1/classify", json={"texts": texts}))
    sm = registry.models["electra-tiny-sst2"]
    enc = sm.tokenizer(texts, padding=True, return_tensors="pt")
    probs = sm.classifier(**enc).logits.softmax(-1)
    for r, p in zip(data["results"], probs):
        assert set(r["scores"]) == {"negative", "positive"}
        assert r["scores"]["positive"] == pytest.approx(p[1].item(), abs=1e-5)
        assert r["label"] == ("positive" if p[1] > p[0] else "negative")
    ok(client.post("/v1/classify", json={"texts": ["a"], "text_pairs": ["b"]}))


# -- attention ------------------------------------------------------------------------------------
def test_attention_views(client, registry):
    sm = registry.models["t5-tiny"]
    enc = ok(client.post("/v1/attention", json={"model": "t5-tiny", "text": T5_PROMPT, "layer": 1, "head": 2}))
    tokens = sm.tokenizer.convert_ids_to_tokens(sm.tokenizer(T5_PROMPT)["input_ids"])
    assert enc["query_tokens"] == enc["key_tokens"] == tokens and enc["num_heads"] == 4
    w = torch.tensor(enc["weights"])
    assert w.shape == (len(tokens), len(tokens)) and torch.allclose(w.sum(-1), torch.ones(len(tokens)), atol=1e-3)
    heads = [torch.tensor(ok(client.post("/v1/attention", json={"model": "t5-tiny", "text": T5_PROMPT, "head": h}))
                          ["weights"]) for h in range(4)]
    mean = torch.tensor(ok(client.post("/v1/attention", json={"model": "t5-tiny", "text": T5_PROMPT}))["weights"])
    assert torch.allclose(torch.stack(heads).mean(0), mean, atol=1e-4)
    dec = ok(client.post("/v1/attention", json={"model": "t5-tiny", "text": T5_PROMPT, "stack": "decoder",
                                                "target": "die Katze"}))
    d = torch.tensor(dec["weights"])
    assert dec["query_tokens"][0] == "<pad>" and d.shape[0] == d.shape[1] == len(dec["query_tokens"])
    assert torch.equal(d.triu(1), torch.zeros_like(d))  # causal: no token looks ahead
    cross = ok(client.post("/v1/attention", json={"model": "t5-tiny", "text": T5_PROMPT, "stack": "cross"}))
    assert cross["key_tokens"] == tokens and cross["query_tokens"][0] == "<pad>"  # greedy output as the target
    el = ok(client.post("/v1/attention", json={"model": "electra-tiny", "text": "the cat ate",
                                               "component": "generator"}))
    assert el["component"] == "generator" and el["query_tokens"][0] == "[CLS]" and el["num_heads"] == 1
    # a generation_config.json's options are not the attention view's: the encoder runs no generation,
    # the default target stays the greedy output (they gave a 400 about options no request sent)
    gen = sm.t5.generation_config
    gen.num_return_sequences, gen.do_sample, gen.min_new_tokens = 2, True, 40
    try:
        again = ok(client.post("/v1/attention", json={"model": "t5-tiny", "text": T5_PROMPT, "stack": "cross"}))
        assert again["query_tokens"] == cross["query_tokens"] and again["weights"] == cross["weights"]
        assert torch.equal(torch.tensor(ok(client.post("/v1/attention", json={"model": "t5-tiny",
                                                                          "text": T5_PROMPT}))["weights"]), mean)
    finally:
        gen.num_return_sequences = gen.do_sample = gen.min_new_tokens = None


def _rebuild_output(module, weights, x, memory=None):
    """What the attention module outputs, computed from ``weights`` (B, H, T, S) and its own v projection."""
    if memory is None:
        v = att._heads(module.qkv(x), 3, module.num_heads)[2]
    else:
        v = att._heads(module.kv(memory), 2, module.num_heads)[1]
    y = torch.matmul(weights, v.float())  # (B, H, T, Dh)
    b, h, t, d = y.shape
    out = getattr(module, "o", None) or module.out
    return out(y.transpose(1, 2).reshape(b, t, h * d))


def test_captured_weights_reproduce_the_module_outputs(registry):
    """The hooks recompute exactly what the fused SDPA kernels computed (padding included)."""
    sm = registry.models["t5-tiny"]
    enc = sm.tokenizer([T5_PROMPT, "summarize: a dog."], padding=True, return_tensors="pt")
    t5 = sm.t5
    dec_ids = torch.tensor([[0, 5, 9, 3], [0, 7, 2, 2]])
    checks = [(t5.encoder.blocks[1].self_attn, att.t5_self_weights), (t5.decoder.blocks[0].self_attn,
              att.t5_self_weights), (t5.decoder.blocks[1].cross_attn, att.t5_cross_weights)]
    disc = registry.models["electra-tiny"].discriminator
    checks_el = [(disc.electra.layers[1].attention, att.electra_weights)]
    seen = []

    def hook(module, args, kwargs, output, fn):
        w = fn(module, args, kwargs)
        memory = args[1] if fn is att.t5_cross_weights else None
        seen.append(torch.allclose(_rebuild_output(module, w, args[0], memory), output, atol=1e-5))

    handles = [m.register_forward_hook(lambda mod, a, k, o, fn=fn: hook(mod, a, k, o, fn), with_kwargs=True)
               for m, fn in checks + checks_el]
    with torch.no_grad():
        t5(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], decoder_input_ids=dec_ids)
        etok = registry.models["electra-tiny"].tokenizer
        e = etok(["the cat ate the meal.", "a dog"], padding=True, return_tensors="pt")
        disc(input_ids=e["input_ids"], attention_mask=e["attention_mask"])
    for h in handles:
        h.remove()
    assert seen == [True, True, True, True]


# -- batching -------------------------------------------------------------------------------------
async def _post_all(app, requests):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        return await asyncio.gather(*(c.post(url, json=body) for url, body in requests))


def test_concurrent_requests_are_batched_with_unchanged_results(dirs, client):
    reg = _registry({"t5-tiny": dirs["t5-tiny"], "electra-tiny": dirs["electra-tiny"]},
                    max_batch_size=8, max_wait_ms=3000)  # batches fill up (8 rows) long before that
    app = create_app(reg)
    prompts = [T5_PROMPT, "summarize: a dog.", "x", "sst2 sentence: the film was good and sad."]
    body = {"max_new_tokens": 6, "num_beams": 2}
    reqs = [("/v1/generate", {"model": "t5-tiny", "texts": [p], **body}) for p in prompts]
    reqs += [("/v1/detect", {"model": "electra-tiny", "texts": [p]}) for p in prompts * 2]
    responses = asyncio.run(_post_all(app, reqs))
    stats = {n: sm.batcher.stats for n, sm in reg.models.items()}
    assert stats["t5-tiny"].max_rows > 2 and stats["t5-tiny"].batches < len(prompts)
    assert stats["electra-tiny"].max_rows > 1
    alone = [client.post(url, json=b) for url, b in reqs]  # the module's server: one at a time
    for batched, single in zip(responses, alone):
        a, b = ok(batched), ok(single)
        for ra, rb in zip(a["results"], b["results"]):
            if "outputs" in ra:
                assert [o["tokens"] for o in ra["outputs"]] == [o["tokens"] for o in rb["outputs"]]
                assert [o["score"] for o in ra["outputs"]] == pytest.approx([o["score"] for o in rb["outputs"]],
                                                                            abs=1e-4)
            else:
                assert [t["prob"] for t in ra["tokens"]] == pytest.approx([t["prob"] for t in rb["tokens"]], abs=1e-5)


def _blocked_app(dirs, **config):
    """An app whose T5 worker waits on ``gate`` before each batch (to fill the queue on purpose);
    ``started`` is set when the worker holds a batch."""
    reg = _registry({"t5-tiny": dirs["t5-tiny"]}, **config)
    app = create_app(reg)
    sm = reg.models["t5-tiny"]
    gate, started, inner = threading.Event(), threading.Event(), sm.batcher.run_batch

    def slow(key, payloads):
        started.set()
        gate.wait(timeout=30)
        return inner(key, payloads)

    sm.batcher.run_batch = slow
    return app, gate, started, sm


def test_full_queue_answers_503_with_retry_after(dirs):
    app, gate, started, sm = _blocked_app(dirs, max_batch_size=1, max_queue=1, max_wait_ms=0)
    body = {"texts": ["x"], "max_new_tokens": 2}

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            first = asyncio.create_task(c.post("/v1/generate", json=body))   # taken by the worker, blocked
            while not started.is_set():
                await asyncio.sleep(0.01)
            second = asyncio.create_task(c.post("/v1/generate", json=body))  # waits in the queue
            while sm.batcher.queued < 1:
                await asyncio.sleep(0.01)
            third = await c.post("/v1/generate", json=body)                   # no room
            gate.set()
            return await first, await second, third

    first, second, third = asyncio.run(scenario())
    assert first.status_code == second.status_code == 200
    error(third, 503, "busy")
    assert int(third.headers["Retry-After"]) >= 1


def test_slow_request_times_out_with_504_and_server_recovers(dirs):
    app, gate, _, _ = _blocked_app(dirs, request_timeout_s=0.3)
    with TestClient(app) as c:
        error(c.post("/v1/generate", json={"texts": ["x"], "max_new_tokens": 2}), 504, "did not answer")
        gate.set()
        app.state.config.request_timeout_s = 120.0  # the next answer may take a while on a busy machine
        ok(c.post("/v1/generate", json={"texts": ["x"], "max_new_tokens": 2}))


def test_failed_batch_is_retried_per_request_and_500_does_not_stop_the_server(dirs):
    reg = _registry({"t5-tiny": dirs["t5-tiny"]}, max_wait_ms=200)
    app = create_app(reg)
    sm = reg.models["t5-tiny"]
    inner = sm.batcher.run_batch

    def flaky(key, payloads):
        if any(p["texts"] == ["boom"] for p in payloads):
            raise RuntimeError("simulated failure")
        return inner(key, payloads)

    sm.batcher.run_batch = flaky
    body = {"max_new_tokens": 2}
    good, bad = asyncio.run(_post_all(app, [("/v1/generate", {"texts": ["fine"], **body}),
                                            ("/v1/generate", {"texts": ["boom"], **body})]))
    ok(good)
    error(bad, 500, "RuntimeError", "simulated failure")
    with TestClient(app) as c:
        ok(c.post("/v1/generate", json={"texts": ["still up"], **body}))


def test_batcher_groups_only_equal_keys():
    calls = []

    def run(key, payloads):
        calls.append((key, list(payloads)))
        return [f"{key}:{p}" for p in payloads]

    async def scenario():
        b = DynamicBatcher("m", run, max_batch_size=3, max_wait_s=0.2, max_queue=10)
        jobs = [b.submit(k, p) for k, p in [("a", 1), ("b", 2), ("a", 3), ("a", 4), ("a", 5)]]
        out = await asyncio.gather(*jobs)
        await b.stop()
        return out

    out = asyncio.run(scenario())
    assert out == ["a:1", "b:2", "a:3", "a:4", "a:5"]
    assert calls[0] == ("a", [1, 3, 4])  # at most 3 rows, same key only, in arrival order
    assert sorted(calls[1:]) == [("a", [5]), ("b", [2])]


# -- errors and limits ----------------------------------------------------------------------------
def test_bad_json_and_bad_fields_are_422(client):
    r = client.post("/v1/generate", content=b"{not json", headers={"content-type": "application/json"})
    error(r, 422, "not valid JSON")
    error(client.post("/v1/generate", json={"texts": "one string"}), 422, "body.texts")
    error(client.post("/v1/generate", json={"texts": []}), 422, "body.texts")
    error(client.post("/v1/generate", json={"texts": ["x"], "num_beams": "4"}), 422, "num_beams")
    error(client.post("/v1/generate", json={"texts": ["x"], "temperature": 0}), 422, "temperature")
    # No request can name a file or load a model: unknown fields are refused, names are checked.
    error(client.post("/v1/generate", json={"texts": ["x"], "model_dir": "/tmp"}), 422, "model_dir", "unknown field")
    error(client.post("/v1/generate", json={"texts": ["x"], "model": "../t5-tiny"}), 422, "model")
    error(client.post("/v1/attention", json={"text": "x", "stack": "middle"}), 422, "stack")


def test_a_body_not_sent_as_json_is_415_saying_so(client):
    """curl -d sends application/x-www-form-urlencoded; FastAPI then hands pydantic the raw bytes and
    the answer was a 422 "Input should be a valid dictionary" for a body that is a JSON object."""
    body = json.dumps({"texts": ["x"], "max_new_tokens": 2}).encode()
    for given, said in (("application/x-www-form-urlencoded", "'application/x-www-form-urlencoded'"),
                        ("text/plain", "'text/plain'"), (None, "has none")):
        r = client.post("/v1/generate", content=body, headers={"content-type": given} if given else {})
        error(r, 415, "Content-Type: application/json", said)
    ok(client.post("/v1/generate", content=body, headers={"content-type": "application/json; charset=utf-8"}))
    error(client.post("/v1/generate", content=b"[1]", headers={"content-type": "application/json"}), 422, "body")


def test_unknown_or_unsuitable_model(client):
    error(client.post("/v1/generate", json={"model": "nope", "texts": ["x"]}), 404, "unknown model 'nope'", "t5-tiny")
    error(client.post("/v1/detect", json={"model": "t5-tiny", "texts": ["x"]}), 400, "cannot do detect",
          "electra-tiny")
    error(client.post("/v1/fill-mask", json={"texts": ["a [MASK]"]}), 400, "several models", "gen-only")
    error(client.post("/v1/attention", json={"text": "x"}), 400, "several models")
    error(client.post("/v1/attention", json={"model": "electra-tiny", "text": "x", "stack": "decoder"}), 400,
          "encoder")
    error(client.post("/v1/attention", json={"model": "gen-only", "text": "x", "component": "discriminator"}), 400,
          "no discriminator")


def test_parameter_limits_are_400(client):
    g = "/v1/generate"
    error(client.post(g, json={"texts": ["x"], "max_new_tokens": 17}), 400, "max_new_tokens=17", "16")
    error(client.post(g, json={"texts": ["x"], "num_beams": 5}), 400, "num_beams=5")
    error(client.post(g, json={"texts": ["x"], "num_beams": 2, "num_return_sequences": 3}), 400, "larger than")
    error(client.post(g, json={"texts": ["x"], "num_return_sequences": 2}), 400, "greedy")
    error(client.post("/v1/fill-mask", json={"model": "electra-tiny", "texts": ["no mask"]}), 400, "[MASK]")
    error(client.post("/v1/attention", json={"model": "t5-tiny", "text": "x", "layer": 2}), 400, "layer=2")
    error(client.post("/v1/attention", json={"model": "t5-tiny", "text": "x", "head": 4}), 400, "head=4")
    error(client.post("/v1/classify", json={"texts": ["a", "b"], "text_pairs": ["c"]}), 400, "text_pairs")


def test_size_limits_are_413(client):
    error(client.post("/v1/detect", json={"model": "electra-tiny", "texts": ["a"] * 5}), 413, "5 texts", "4")
    error(client.post("/v1/generate", json={"texts": ["x", "the cat " * 40]}), 413, "texts[1]", "max_input_tokens")
    error(client.post("/v1/generate", json={"texts": ["x " * 15_000]}), 413, "request body too large")
    r = client.post("/v1/attention", json={"model": "t5-tiny", "text": "the cat " * 40})
    error(r, 413, "text is ")  # one string: not 'text[0]'

    def chunks():  # no Content-Length: the limit applies while reading
        yield b'{"texts": ["'
        for _ in range(30):
            yield b"x" * 1000
        yield b'"]}'

    r = client.post("/v1/generate", content=chunks(), headers={"content-type": "application/json"})
    error(r, 413, "request body too large")


# -- configuration, loading, command line -----------------------------------------------------------
@pytest.mark.parametrize("settings, match", [
    ({"max_wait_ms": float("nan")}, "max_wait_ms=nan must be in"), ({"max_wait_ms": 1e9}, "max_wait_ms"),
    ({"num_threads": -3}, "num_threads=-3 must be >= 1"),
])
def test_serve_settings_out_of_range_are_config_errors(settings, match):
    with pytest.raises(ConfigError, match=match):
        ServeConfig(**settings)


def test_serve_config_file_that_is_not_text_is_a_config_error(tmp_path):
    (tmp_path / "c.yaml").write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot be read as UTF-8"):
        ServeConfig.load(tmp_path / "c.yaml")


def test_serve_config_file_and_overrides(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"port": 9001, "max_batch_size": 4, "max_wait_ms": 2}))
    cfg = ServeConfig.load(path, max_batch_size="8", host=None)
    assert (cfg.port, cfg.max_batch_size, cfg.max_wait_ms, cfg.host) == (9001, 8, 2.0, "127.0.0.1")
    path.write_text("max_batch_sise: 4\n")
    with pytest.raises(ConfigError, match="did you mean 'max_batch_size'"):
        ServeConfig.load(path)
    with pytest.raises(ConfigError, match="max_queue=0"):
        ServeConfig(max_queue=0)


def test_model_directories_are_recognised(dirs, tmp_path):
    assert parse_model_arg("sst=/x/y") == ("sst", Path("/x/y"))
    assert parse_model_arg(str(dirs["t5-tiny"]))[0] == "t5-tiny"
    with pytest.raises(ConfigError, match="model name"):
        parse_model_arg("a/b=/x")
    with pytest.raises(CheckpointNotFoundError, match="not a model directory"):
        ModelRegistry.from_dirs([str(tmp_path)], ServeConfig())
    with pytest.raises(ConfigError, match="two models are named"):
        ModelRegistry.from_dirs([f"a={dirs['t5-tiny']}", f"a={dirs['gen-only']}"], ServeConfig())
    enc_only = tmp_path / "enc"
    shutil.copytree(dirs["t5-tiny"], enc_only)
    cfg = json.loads((enc_only / "config.json").read_text())
    cfg["architectures"] = ["T5EncoderModel"]
    (enc_only / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="T5ForConditionalGeneration"):
        ModelRegistry.from_dirs([str(enc_only)], ServeConfig())


def test_a_training_run_directory_serves_its_model(dirs, tmp_path):
    """As generate and evaluate: RUN/model, else RUN's latest checkpoint (docs/serve.md's
    `serve runs/t5-small-cola` was refused: "not a model directory")."""
    run = tmp_path / "t5-run"
    shutil.copytree(dirs["t5-tiny"], run / "model")
    (run / "config.yaml").write_text("train: {}\n")
    killed = tmp_path / "electra-run"  # stopped before its end: checkpoints only
    step = killed / "checkpoints" / "step-00000002"
    shutil.copytree(dirs["electra-tiny"], step)
    (step / "training_state.pt").write_bytes(b"")
    (step / "meta.json").write_text("{}")
    (killed / "checkpoints" / "latest").write_text("step-00000002\n")
    reg = ModelRegistry.from_dirs([str(run), str(killed)], ServeConfig())
    assert reg.models["t5-run"].kind == "t5" and reg.models["electra-run"].kind == "electra-pretrainer"
    with pytest.raises(CheckpointNotFoundError, match="is a file, not a directory"):
        ModelRegistry.from_dirs([str(run / "config.yaml")], ServeConfig())


def test_cli_reports_bad_arguments_without_traceback(dirs, tmp_path, capsys):
    from t5electra.cli import main

    assert main(["serve", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["serve"]) == 1
    assert "--demo" in capsys.readouterr().err
    assert main(["serve", str(dirs["t5-tiny"]), "--max-queue", "0"]) == 1
    assert "max_queue=0" in capsys.readouterr().err
    import socket

    with socket.socket() as busy:  # a port in use: one line before the models load
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(dirs["t5-tiny"]), "--host", "127.0.0.1", "--port", str(port)]) == 1
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
