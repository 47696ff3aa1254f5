"""The server under abuse: requests that would keep a model busy for minutes, requests abandoned
at their deadline, shutdown during a long batch, API keys and CORS, malformed values and
connections that never finish sending. Each test pins one row of docs/reliability.md ("Server").

Tests assert outcomes (status codes, counters, closed sockets), never durations: where a request
must outlast its deadline, the model is slowed down on purpose (a sleep in each forward pass).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient

from t5electra.errors import ConfigError
from t5electra.serve.app import create_app
from t5electra.serve.batching import Abandoned, DynamicBatcher
from t5electra.serve.config import ServeConfig
from t5electra.serve.demo import build_demo_models
from t5electra.serve.registry import ModelRegistry
from t5electra.serve.server import make_server


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    return build_demo_models(tmp_path_factory.mktemp("serve-hardening"))


def _app(dirs, names=("t5-tiny", "electra-tiny"), api_key=None, **config):
    reg = ModelRegistry.from_dirs([f"{n}={dirs[n]}" for n in names], ServeConfig(**config))
    return create_app(reg, api_key=api_key) if api_key is not None else create_app(reg), reg


@pytest.fixture(scope="module")
def client(dirs):
    app, _ = _app(dirs)
    with TestClient(app) as c:
        yield c


def error(resp, status: int, *words: str) -> str:
    assert resp.status_code == status, resp.text[:500]
    detail = resp.json()["detail"]
    for w in words:
        assert w in detail, detail
    return detail


# -- 1. bounded work, abandoned work ------------------------------------------------------------------
def test_work_per_request_is_capped_with_413_naming_the_limit(client):
    # The request, scaled to the tiny model's 128 positions: 32 texts full of [MASK]s, each
    # within max_texts and max_input_tokens, would take one pass over all 32 texts per [MASK].
    many = " ".join(["[MASK]"] * 120)
    detail = error(client.post("/v1/fill-mask", json={"model": "electra-tiny", "texts": [many] * 32}), 413,
                   "max_work_tokens", "65536", "[MASK]")
    assert "32 texts" in detail
    # within the cap: served
    r = client.post("/v1/fill-mask", json={"model": "electra-tiny", "texts": ["the [MASK] sat on the [MASK]."]})
    assert r.status_code == 200, r.text[:300]
    assert client.get("/v1/models").json()["limits"]["max_work_tokens"] == 65536


def test_generate_and_correct_work_is_capped(client, dirs):
    # at the defaults: 32 texts x 8 beams x 128 new tokens is within max_texts, max_beams and
    # max_new_tokens, and would keep a CPU busy for minutes (t5-small: about 8 min on a 2-core VM)
    error(client.post("/v1/generate", json={"texts": ["x"] * 32, "num_beams": 8, "max_new_tokens": 128}), 413,
          "32768 decoder steps", "4096 (max_decode_steps)", "32 texts x 8 beams or samples x 128 new tokens")
    app, _ = _app(dirs, max_work_tokens=2000)
    text = "the cat sat on the mat " * 5
    with TestClient(app) as c:
        error(c.post("/v1/correct", json={"texts": [text] * 4, "max_iters": 10}), 413, "max_work_tokens",
              "10 rounds")
        r = c.post("/v1/generate", json={"texts": [text], "max_new_tokens": 4})
        assert r.status_code == 200, r.text[:300]


def _slow_down(reg, task: str, calls: list):
    """Make every step of ``task`` sleep a little (so a request outlasts a short deadline)."""
    def pause(*_):
        calls.append(1)
        time.sleep(0.05)

    if task == "fill-mask":
        return reg.models["electra-tiny"].generator.register_forward_pre_hook(pause).remove
    t5 = reg.models["t5-tiny"].t5
    names = ("decode_step", "decode_step_argmax")  # greedy search steps through the second

    def slowed(step):
        def slow_step(*args, **kwargs):
            pause()
            return step(*args, **kwargs)
        return slow_step

    for name in names:
        setattr(t5, name, slowed(getattr(t5, name)))
    return lambda: [delattr(t5, name) for name in names]


@pytest.mark.parametrize("task", ["fill-mask", "generate"])
def test_request_past_its_deadline_is_abandoned_and_the_model_serves_the_next(dirs, task):
    app, reg = _app(dirs, request_timeout_s=1.0, max_work_tokens=10**7)
    calls: list = []
    undo = _slow_down(reg, task, calls)
    if task == "fill-mask":
        url, steps = "/v1/fill-mask", 100   # one forward pass per [MASK] (plus one for the candidates)
        body = {"model": "electra-tiny", "texts": [" ".join(["[MASK]"] * steps)] * 8}
        small = {"model": "electra-tiny", "texts": ["the [MASK] sat."]}
    else:
        url, steps = "/v1/generate", 128    # one decoding step per new token
        body = {"model": "t5-tiny", "texts": ["x"] * 8, "max_new_tokens": steps, "min_new_tokens": steps}
        small = {"model": "t5-tiny", "texts": ["x"], "max_new_tokens": 2}
    with TestClient(app) as c:
        error(c.post(url, json=body), 504, "did not answer")
        counters = {}
        for _ in range(600):  # wait (up to a minute) for the worker to drop the batch
            counters = c.get("/healthz").json()["models"][reg.models[body["model"]].name]
            if counters["abandoned_batches"]:
                break
            time.sleep(0.1)
        assert counters["abandoned_batches"] == 1, counters
        assert len(calls) < steps  # it stopped part-way, not after the last step
        undo()
        app.state.config.request_timeout_s = 120.0  # the next answer may take a while on a busy machine
        r = c.post(url, json=small)
        assert r.status_code == 200, r.text[:300]


def test_stop_does_not_wait_for_the_running_batch():
    """SIGTERM: uvicorn's shutdown stops the batchers; a batch running then ends at its next step,
    so the process is not held by the worker thread (which Python joins at exit)."""
    started, steps = threading.Event(), []

    def endless(key, payloads):
        started.set()
        while True:  # a batch that would never end without cancellation
            b.check()
            steps.append(1)
            time.sleep(0.01)

    b = DynamicBatcher("stop-test", endless, max_batch_size=1, max_wait_s=0.0)

    async def scenario():
        job = asyncio.ensure_future(b.submit("k", 1))
        while not started.is_set():
            await asyncio.sleep(0.01)
        await b.stop()
        with pytest.raises(Abandoned, match="shutting down"):
            await job

    asyncio.run(scenario())
    workers = [t for t in threading.enumerate() if t.name.startswith("model-stop-test")]
    for worker in workers:
        worker.join(timeout=60)
        assert not worker.is_alive()  # Python would join it at exit: SIGTERM would wait for it
    with pytest.raises(Abandoned, match="shutting down"):
        b.check()

    async def late():  # a request that arrives after the stop (a keep-alive connection): 503, not 500
        await b.submit("k", 2)

    with pytest.raises(Abandoned, match="shutting down"):
        asyncio.run(late())


def test_a_batch_continues_while_one_of_its_requests_still_waits():
    """Only a batch nobody waits for is abandoned: a caller that gave up does not cancel the others."""
    gate = threading.Event()
    seen = []

    def run(key, payloads):
        gate.wait(timeout=30)
        b.check()  # one of the two callers is gone: the batch goes on
        seen.append(list(payloads))
        return [p * 10 for p in payloads]

    b = DynamicBatcher("n", run, max_batch_size=2, max_wait_s=0.5)

    async def scenario():
        quitter = asyncio.ensure_future(asyncio.wait_for(b.submit("k", 1), 0.2))
        stayer = asyncio.ensure_future(b.submit("k", 2))
        with pytest.raises(asyncio.TimeoutError):
            await quitter
        gate.set()
        out = await stayer
        await b.stop()
        return out

    assert asyncio.run(scenario()) == 20
    assert [sorted(p) for p in seen] == [[1, 2]] and b.stats.abandoned == 0


# -- 2. API key and CORS ------------------------------------------------------------------------------
KEY = "k3y-for-the-tests_0123"


def test_api_key_is_required_on_every_route_but_healthz_and_the_page(dirs):
    app, _ = _app(dirs, api_key=KEY)
    good = {"Authorization": f"Bearer {KEY}"}
    with TestClient(app) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
        for method, url in [("get", "/v1/models"), ("get", "/docs"), ("get", "/openapi.json"),
                            ("post", "/v1/generate"), ("post", "/v1/fill-mask"), ("post", "/v1/attention")]:
            r = getattr(c, method)(url)
            error(r, 401, "API key", "Authorization: Bearer")
            assert r.headers["WWW-Authenticate"] == "Bearer"
        body = {"model": "t5-tiny", "texts": ["x"], "max_new_tokens": 2}
        for bad in [f"Bearer {KEY}x", f"Bearer {KEY[:-1]}", f"Basic {KEY}", KEY, "Bearer", ""]:
            error(c.post("/v1/generate", json=body, headers={"Authorization": bad}), 401, "API key")
        assert c.post("/v1/generate", json=body, headers=good).status_code == 200
        assert c.get("/v1/models", headers={"authorization": f"bearer {KEY}"}).status_code == 200
        # 401 comes before the body is read: no size or JSON error leaks out first
        error(c.post("/v1/generate", content=b"{not json"), 401)


def test_api_key_from_file_or_environment(tmp_path, dirs, capsys):
    from t5electra.cli import main
    from t5electra.serve.security import load_api_key

    f = tmp_path / "key"
    f.write_text(f"  {KEY}\n")
    assert load_api_key(f, {}) == KEY
    assert load_api_key(f, {"T5ELECTRA_API_KEY": "other-key-123"}) == KEY  # the file wins
    assert load_api_key(None, {"T5ELECTRA_API_KEY": "other-key-123"}) == "other-key-123"
    assert load_api_key(None, {}) is None
    with pytest.raises(ConfigError, match="does not exist"):
        load_api_key(tmp_path / "nope", {})
    for bad in ["", "short", "has a space inside", "ключ-ключ-ключ"]:
        f.write_text(bad)
        with pytest.raises(ConfigError, match="8 to 512 printable ASCII"):
            load_api_key(f, {})
    with pytest.raises(ConfigError, match="T5ELECTRA_API_KEY"):
        load_api_key(None, {"T5ELECTRA_API_KEY": ""})
    assert main(["serve", str(dirs["t5-tiny"]), "--api-key-file", str(tmp_path / "missing")]) == 1
    assert "API key file" in capsys.readouterr().err


def test_cors_is_off_by_default_and_follows_the_allow_list(dirs):
    preflight = {"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    app, _ = _app(dirs)
    with TestClient(app) as c:
        r = c.options("/v1/generate", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
        r = c.get("/healthz", headers={"Origin": "https://app.example.com"})
        assert "access-control-allow-origin" not in r.headers
    app, _ = _app(dirs, api_key=KEY, cors_origins=["https://app.example.com"])
    with TestClient(app) as c:
        r = c.options("/v1/generate", headers=preflight)  # a preflight carries no key
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "authorization" in r.headers["access-control-allow-headers"].lower()
        r = c.get("/v1/models", headers={"Origin": "https://app.example.com"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://app.example.com"
        r = c.get("/v1/models", headers={"Origin": "https://evil.example.com", "Authorization": f"Bearer {KEY}"})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
        r = c.options("/v1/generate", headers={**preflight, "Origin": "https://evil.example.com"})
        assert r.status_code == 400
    with pytest.raises(ConfigError, match="not an origin"):
        ServeConfig(cors_origins=["https://app.example.com/path"])


# -- 3. connections --------------------------------------------------------------------------------
@contextlib.contextmanager
def _uvicorn(app, grace_s: float = 5.0, **config):
    """The app behind uvicorn as `t5electra serve` runs it (serve/server.py), on a free port, in a
    thread: yields (port, server); ``server.should_exit = True`` is what SIGTERM does."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = make_server(app, ServeConfig(port=port, **config), "warning", grace_s=grace_s)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(600):
            if server.started:
                break
            time.sleep(0.1)
        assert server.started, "uvicorn did not start"
        yield port, server
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        assert not thread.is_alive()


def _closed_by_server(sock: socket.socket) -> bool:
    """True when the server closes the connection without answering (waits up to a minute)."""
    sock.settimeout(60)
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _read_response(sock: socket.socket) -> bytes:
    """One whole HTTP response (headers and Content-Length bytes of body) from a raw socket."""
    sock.settimeout(60)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    while len(body) < length:
        body += sock.recv(65536)
    return data


def test_connections_that_never_finish_a_request_are_closed(dirs):
    app, _ = _app(dirs, names=("t5-tiny",))
    with _uvicorn(app, read_timeout_s=1.0) as (port, _):
        half_headers = socket.create_connection(("127.0.0.1", port))
        half_headers.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Ty")
        half_body = socket.create_connection(("127.0.0.1", port))
        half_body.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                          b"Content-Length: 100\r\n\r\n{\"texts\": [")
        silent = socket.create_connection(("127.0.0.1", port))
        # keep-alive: one whole request answered, then half of the next one
        second = socket.create_connection(("127.0.0.1", port))
        second.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert _read_response(second).startswith(b"HTTP/1.1 200")
        second.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        for sock in (half_headers, half_body, silent, second):
            with sock:
                assert _closed_by_server(sock)
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60).status_code == 200



def test_a_client_that_closes_its_connection_gives_its_request_up(dirs):
    """uvicorn does not cancel a handler whose client left: a request queued behind a busy model
    still ran when its turn came, and a running one to its last step, for nobody. Now a closed
    connection gives the job up as a timeout does: skipped in the queue, stopped while running."""
    app, reg = _app(dirs, names=("t5-tiny",), max_wait_ms=0, max_batch_size=1, max_work_tokens=10**7)
    sm = reg.models["t5-tiny"]
    gate, ran, inner = threading.Event(), [], sm.batcher.run_batch

    def gated(key, payloads):
        ran.append(payloads[0]["texts"][0])
        gate.wait(timeout=60)
        return inner(key, payloads)

    sm.batcher.run_batch = gated
    gave_up, submit = [], sm.batcher.submit

    async def watched(key, payload, size):
        try:
            return await submit(key, payload, size)
        except asyncio.CancelledError:
            gave_up.append(payload["texts"][0])
            raise

    sm.batcher.submit = watched
    calls: list = []
    undo = _slow_down(reg, "generate", calls)

    def send(text: str, new_tokens: int = 2) -> socket.socket:
        body = json.dumps({"texts": [text], "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}).encode()
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"POST /v1/generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        return sock

    def wait_for(condition) -> None:
        for _ in range(300):
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError("timed out")

    with _uvicorn(app) as (port, _):
        first = send("first")                       # the worker holds it (gated)
        wait_for(lambda: ran == ["first"])
        send("left in the queue").close()           # queued, then its client leaves
        wait_for(lambda: gave_up == ["left in the queue"])
        gate.set()
        with first:
            assert _read_response(first).startswith(b"HTTP/1.1 200")
        with send("next") as sock:
            assert _read_response(sock).startswith(b"HTTP/1.1 200")
        assert ran == ["first", "next"]             # the request whose client left never ran
        calls.clear()
        running = send("long", new_tokens=128)      # 128 slowed steps: its client leaves part-way
        wait_for(lambda: len(calls) > 2)
        running.close()
        wait_for(lambda: sm.batcher.stats.abandoned == 1)
        assert len(calls) < 128
        undo()


def test_connections_beyond_max_connections_get_503(dirs):
    app, _ = _app(dirs, names=("t5-tiny",))
    with _uvicorn(app, max_connections=2) as (port, _):
        with socket.create_connection(("127.0.0.1", port)), socket.create_connection(("127.0.0.1", port)):
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60)
            assert r.status_code == 503
        for _ in range(600):  # the two connections are gone once the server saw them close
            r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=60)
            if r.status_code == 200:
                break
            time.sleep(0.1)
        assert r.status_code == 200


# -- 4. malformed values -------------------------------------------------------------------------------
def _raw(c, url: str, body: bytes):
    return c.post(url, content=body, headers={"content-type": "application/json"})


def test_out_of_range_integers_are_422_naming_the_field_and_bound(client):
    body = {"texts": ["x"], "do_sample": True, "seed": 1180591620717411303424}  # was a 500 (torch overflow)
    error(client.post("/v1/generate", json=body), 422, "body.seed", "9223372036854775807")
    for field in ("no_repeat_ngram_size", "top_k", "min_new_tokens", "max_new_tokens", "num_beams"):
        error(client.post("/v1/generate", json={"texts": ["x"], field: 10**30}), 422, f"body.{field}", "2147483647")
    error(client.post("/v1/attention", json={"model": "t5-tiny", "text": "x", "head": 10**30}), 422, "body.head")
    error(client.post("/v1/generate", json={"texts": ["x"], "seed": -1}), 422, "body.seed", "0")
    # an integer too long for Python's int() (over 4300 digits) is a malformed body
    error(_raw(client, "/v1/generate", b'{"texts": ["x"], "seed": ' + b"9" * 5000 + b"}"), 422, "not valid JSON")
    assert client.post("/v1/generate", json={"texts": ["x"], "do_sample": True, "seed": 2**63 - 1,
                                              "max_new_tokens": 2}).status_code == 200


def test_lone_surrogates_are_422_with_a_plain_message(client):
    for url, body in [("/v1/generate", b'{"texts": ["ok", "a \\ud800 b"]}'),
                      ("/v1/fill-mask", b'{"model": "electra-tiny", "texts": ["\\udfff [MASK]"]}'),
                      ("/v1/detect", b'{"texts": ["\\ud800"]}'),
                      ("/v1/attention", b'{"model": "t5-tiny", "text": "x", "target": "\\ud800"}')]:
        detail = error(_raw(client, url, body), 422, "not valid Unicode", "lone surrogate")
        assert "TextEncodeInput" not in detail and "Value error" not in detail
    detail = error(_raw(client, "/v1/generate", b'{"texts": ["ok", "a \\ud800 b"]}'), 422, "body.texts.1")
    assert "character 2" in detail
    # a surrogate pair is one character (an emoji): fine
    assert _raw(client, "/v1/generate", b'{"texts": ["\\ud83d\\ude00"], "max_new_tokens": 2}').status_code == 200


def test_body_that_is_not_utf8_is_422(client):
    detail = error(_raw(client, "/v1/generate", b'{"texts": ["\xff\xfe x"]}'), 422, "not valid UTF-8", "position 12")
    assert "error parsing the body" not in detail


@pytest.mark.parametrize("field,value", [("temperature", b"Infinity"), ("temperature", b"NaN"),
                                         ("length_penalty", b"NaN"), ("length_penalty", b"-Infinity"),
                                         ("repetition_penalty", b"Infinity"), ("top_p", b"NaN")])
def test_nan_and_infinity_are_422(client, field, value):
    body = b'{"texts": ["x"], "do_sample": true, "' + field.encode() + b'": ' + value + b"}"
    error(_raw(client, "/v1/generate", body), 422, f"body.{field}", "finite number")


def test_inconsistent_or_mistyped_generate_options_are_422(client):
    error(client.post("/v1/generate", json={"texts": ["x"], "min_new_tokens": 10, "max_new_tokens": 5}), 422,
          "min_new_tokens=10", "max_new_tokens=5")
    # max_new_tokens left out: the default (20) applies, and min_new_tokens must fit it too
    error(client.post("/v1/generate", json={"texts": ["x"], "min_new_tokens": 30}), 422, "min_new_tokens=30",
          "max_new_tokens=20")
    error(client.post("/v1/generate", json={"texts": ["x"], "do_sample": "yes"}), 422, "body.do_sample", "boolean")
    error(client.post("/v1/generate", json={"texts": ["x"], "do_sample": 1}), 422, "body.do_sample")


def test_ids_without_a_token_are_shown_as_unknown_not_a_500(dirs):
    """T5 pads its vocabulary (t5-small: 32128 ids, 32100 tokens): a generated padding id has no
    token, which made the response invalid (500; the emoji request of the surrogate test hit it).
    It reads as the unknown token instead (and fill-mask never proposes such ids)."""
    from t5electra.serve.inference import token_strings
    from t5electra.tokenizers import T5Tokenizer

    tok = T5Tokenizer.from_pretrained(dirs["t5-tiny"])
    assert tok.convert_ids_to_tokens([len(tok)]) == [None]
    assert token_strings(tok, [0, len(tok), 1]) == [tok.convert_ids_to_tokens(0), tok.unk_token,
                                                    tok.convert_ids_to_tokens(1)]


def test_shutdown_answers_503_to_a_request_in_flight_instead_of_waiting_for_it(dirs):
    """SIGTERM while a long fill-mask runs: after the grace period the batch is dropped at its next
    step, its client gets 503 (not a bare 500 after a wait as long as the request), and the server exits."""
    app, reg = _app(dirs, names=("electra-tiny",), max_work_tokens=10**7)
    calls: list = []
    _slow_down(reg, "fill-mask", calls)
    body = {"texts": [" ".join(["[MASK]"] * 100)] * 8}
    answer = {}
    with _uvicorn(app, grace_s=0.5) as (port, server):
        def post():
            answer["r"] = httpx.post(f"http://127.0.0.1:{port}/v1/fill-mask", json=body, timeout=120)

        client = threading.Thread(target=post)
        client.start()
        for _ in range(600):
            if calls:
                break
            time.sleep(0.1)
        assert calls, "the request never reached the model"
        server.should_exit = True  # what uvicorn's SIGTERM handler does
        client.join(timeout=120)
    assert not client.is_alive()
    error(answer["r"], 503, "shutting down")
    assert len(calls) < 100
