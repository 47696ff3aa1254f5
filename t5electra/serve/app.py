"""The HTTP server: a FastAPI app over a :class:`~t5electra.serve.registry.ModelRegistry`.

    app = create_app(ModelRegistry.from_dirs(["runs/t5-cola", "runs/electra"], config), config)
    uvicorn.run(app, host="127.0.0.1", port=8000)      # what `t5electra serve` does

Each POST handler validates the JSON (pydantic, 422), checks the configured limits (413 for sizes,
400 for parameters), tokenizes, and submits the request to the model's dynamic batcher
(batching.py); the model work happens in that model's worker thread (inference.py), never on
the event loop. Errors always come back as JSON ``{"detail": "..."}``: unknown model 404, queue
full 503 with Retry-After, a request not answered within ``request_timeout_s`` 504, anything
unexpected 500 (logged with its traceback); the server keeps serving.

With an API key (security.py) every route but /healthz and the page answers 401 without
``Authorization: Bearer KEY``; ``cors_origins`` lets pages on other origins call the API.

Routes: GET / (the playground), /healthz, /v1/models; POST /v1/generate, /v1/fill-mask,
/v1/detect, /v1/correct, /v1/classify, /v1/attention; OpenAPI at /docs and /openapi.json.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from .. import __version__
from ..errors import T5ElectraError
from . import schemas as S
from .batching import Abandoned, DynamicBatcher, QueueFullError
from .config import ServeConfig
from .inference import run_batch
from .registry import ATTENTION, CLASSIFY, CORRECT, DETECT, FILL_MASK, GENERATE, ModelRegistry, ServedModel
from .security import ApiKeyAuth

logger = logging.getLogger("t5electra.serve")
STATIC = Path(__file__).parent / "static"


class ApiError(HTTPException):
    """An error with a status code and a readable message (and optional headers)."""


class BodyTooLarge(ApiError):
    def __init__(self, limit: int, size: int | None = None):
        got = f"{size} bytes" if size is not None else f"more than {limit} bytes (chunked)"
        super().__init__(413, f"request body too large: {got}; the limit is {limit} bytes (max_body_bytes)")


class BodySizeLimit:
    """ASGI middleware: 413 before reading a body whose Content-Length is over the limit, and
    while reading one sent without Content-Length (chunked) as soon as it passes the limit."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                size = -1
            if size < 0 or size > self.max_bytes:
                detail = (f"request body too large: {size} bytes, the limit is {self.max_bytes} bytes "
                          f"(max_body_bytes)") if size >= 0 else "invalid Content-Length header"
                response = JSONResponse({"detail": detail}, status_code=413 if size >= 0 else 400)
                return await response(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)


def _validation_message(errors: list[dict]) -> str:
    """pydantic's errors -> one line per problem: 'body.texts.0: Input should be a valid string'."""
    lines = []
    for e in errors:
        loc = ".".join(str(p) for p in e.get("loc", ()))
        msg = e.get("msg", "invalid")
        if e.get("type") == "json_invalid":
            where = e["loc"][-1] if len(e.get("loc", ())) > 1 else "?"
            lines.append(f"the body is not valid JSON: {(e.get('ctx') or {}).get('error', 'decode error')} "
                         f"(at character {where})")
            continue
        if e.get("type") == "extra_forbidden":
            msg = "unknown field (see /docs for the fields this endpoint takes)"
        elif e.get("type") == "value_error":
            msg = msg.removeprefix("Value error, ")
        lines.append(f"{loc}: {msg}" if loc else msg)
    return "; ".join(lines)


def _is_json(media_type: str) -> bool:
    """Whether FastAPI parses a body of this media type as JSON (application/json, application/*+json)."""
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def _disconnected(request: Request) -> None:
    """Return once the client has closed the connection. The handler has read the body, so what
    ``receive`` gives next is ``http.disconnect``: when the socket closes (uvicorn), or after the
    response (test clients)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(registry: ModelRegistry, config: ServeConfig | None = None, api_key: str | None = None) -> FastAPI:
    """The app serving the registry's models with ``config``'s limits and batching; with ``api_key``
    (see security.load_api_key) every route but /healthz and the page needs it (401 without)."""
    config = config or registry.config
    for sm in registry.models.values():
        sm.batcher = DynamicBatcher(sm.name, lambda key, payloads, sm=sm: run_batch(sm, key, payloads,
                                                                                  sm.batcher.check),
                                    max_batch_size=config.max_batch_size, max_wait_s=config.max_wait_ms / 1000,
                                    max_queue=config.max_queue)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        for sm in registry.models.values():
            sm.batcher.start()
        yield
        for sm in registry.models.values():
            await sm.batcher.stop()

    app = FastAPI(title="t5electra", version=__version__, lifespan=lifespan,
                  description="T5 and ELECTRA over HTTP: text-to-text generation, fill-mask, replaced-token "
                              "detection and correction, classification, attention weights. Requests that "
                              "arrive together are batched. The playground is at /.")
    app.state.registry, app.state.config = registry, config
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    if api_key is not None:  # added after: runs before the body is read
        app.add_middleware(ApiKeyAuth, api_key=api_key, page=config.playground)
    if config.cors_origins:  # outermost: preflights need no key, and 401s carry the CORS headers
        app.add_middleware(CORSMiddleware, allow_origins=config.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"], max_age=600)

    # -- errors -------------------------------------------------------------------------------------
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        media = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not _is_json(media) and any(tuple(e.get("loc", ())) == ("body",) for e in exc.errors()):
            # FastAPI reads a body as JSON only under a JSON content type; under another or none (curl -d
            # sends application/x-www-form-urlencoded) pydantic said "Input should be a valid dictionary"
            given = f"this request's is {media!r}" if media else "this request has none"
            return JSONResponse({"detail": f"the body must be JSON sent with 'Content-Type: application/json' "
                                           f"({given}; with curl: -H 'content-type: application/json')"},
                                status_code=415)
        errors = [{k: v for k, v in e.items() if k in ("loc", "msg", "type")} for e in exc.errors()]
        return JSONResponse({"detail": _validation_message(exc.errors()), "errors": json.loads(
            json.dumps(errors, default=str))}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        cause = exc.__cause__
        if exc.status_code == 400 and not isinstance(exc, ApiError) and cause is not None:
            # FastAPI's "There was an error parsing the body": bytes that are not UTF-8, or JSON
            # that Python will not read (an integer of over 4300 digits). A malformed body is 422.
            if isinstance(cause, UnicodeDecodeError):
                detail = (f"the body is not valid UTF-8 (byte {cause.object[cause.start:cause.start + 1]!r} at "
                          f"position {cause.start}); send JSON encoded as UTF-8")
            else:
                detail = f"the body is not valid JSON ({type(cause).__name__}: {cause})"
            return JSONResponse({"detail": detail}, status_code=422)
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(QueueFullError)
    async def _busy(request: Request, exc: QueueFullError):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(T5ElectraError)
    async def _bad_input(request: Request, exc: T5ElectraError):
        return JSONResponse({"detail": str(exc)}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        logger.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}: {exc}); the server logged it"},
                            status_code=500)

    # -- helpers ------------------------------------------------------------------------------------
    def pick(task: str, name: str | None) -> ServedModel:
        """The model a request names (404 if unknown), or the only one that can do ``task``."""
        if name is None:
            able = registry.with_task(task)
            if len(able) == 1:
                return registry.models[able[0]]
            if not able:
                raise ApiError(400, f"no loaded model can do {task}; loaded: {', '.join(registry.names())}")
            raise ApiError(400, f"several models can do {task} ({', '.join(able)}): name one in \"model\"")
        sm = registry.models.get(name)
        if sm is None:
            raise ApiError(404, f"unknown model {name!r}; loaded: {', '.join(registry.names())} (GET /v1/models)")
        if task not in sm.tasks:
            able = registry.with_task(task)
            raise ApiError(400, f"model {name!r} ({sm.kind}) cannot do {task}; it can do {', '.join(sm.tasks)}"
                                + (f"; models that can: {', '.join(able)}" if able else ""))
        return sm

    def check_count(texts: list[str]) -> None:
        if len(texts) > config.max_texts:
            raise ApiError(413, f"{len(texts)} texts in one request; the limit is {config.max_texts} (max_texts)")

    def check_work(work: int, how: str, fewer: str, limit: str = "max_work_tokens",
                   unit: str = "token passes") -> None:
        """413 when a request would cost more than the ``limit`` setting allows."""
        if work > getattr(config, limit):
            raise ApiError(413, f"this request would cost {work} {unit} ({how}); the limit is "
                                f"{getattr(config, limit)} ({limit}): send {fewer}")

    def token_limit(sm: ServedModel) -> tuple[int, str]:
        limit, why = config.max_input_tokens, "max_input_tokens"
        positions = sm.max_positions()
        if positions is not None and positions < limit:
            limit, why = positions, "the model's max_position_embeddings"
        return limit, why

    async def tokenize(sm: ServedModel, texts: list[str], pairs: list[str] | None = None,
                       field: str = "texts") -> dict[str, list]:
        """Ids of each text (special tokens included), checked against the token limit (413)."""
        def encode():
            return sm.tokenizer(texts, pairs, return_token_type_ids=True)
        enc = await run_in_threadpool(encode)
        limit, why = token_limit(sm)
        for i, ids in enumerate(enc["input_ids"]):
            if len(ids) > limit:
                where = field if field in ("text", "target") else f"{field}[{i}]"  # one string, or a list's i-th
                raise ApiError(413, f"{where} is {len(ids)} tokens long; the limit is {limit} ({why})")
        return {"ids": enc["input_ids"], "type_ids": enc["token_type_ids"]}

    async def submit(sm: ServedModel, key: tuple, payload: dict, size: int, request: Request) -> Any:
        """Queue the request on the model's batcher and wait (504 after request_timeout_s); a client
        that closes its connection gives its job up (uvicorn does not cancel the handler: it ran anyway)."""
        work = asyncio.ensure_future(asyncio.wait_for(sm.batcher.submit(key, payload, size),
                                                      config.request_timeout_s))
        gone = asyncio.ensure_future(_disconnected(request))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # the client left (or this handler was cancelled): the job is skipped, or its batch
            gone.cancel()  # stops at its next step once nobody waits for any of it
            left = not work.done()
            if left:
                work.cancel()
        if left:
            raise ApiError(499, "the client closed the connection before the answer")
        try:
            return work.result()
        except asyncio.TimeoutError:
            raise ApiError(504, f"model {sm.name!r} did not answer within {config.request_timeout_s} s "
                                f"(request_timeout_s); try fewer texts or fewer new tokens") from None
        except (HTTPException, QueueFullError, T5ElectraError):
            raise
        except Abandoned as e:  # the server is stopping
            raise ApiError(503, f"{e}; retry on another server or later") from None
        except Exception as e:  # a bug or a torch failure: 500 for this request, the server goes on
            logger.exception("model %s failed on %s", sm.name, key[0])
            raise ApiError(500, f"internal error in model {sm.name!r} ({type(e).__name__}: {e}); "
                                f"the server logged it") from None

    # -- pages and metadata -------------------------------------------------------------------------
    if config.playground:
        app.mount("/static", StaticFiles(directory=STATIC), name="static")

        @app.get("/", include_in_schema=False)
        async def playground():
            return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="liveness, queue lengths and batching counters")
    async def healthz() -> dict:
        return {"status": "ok", "models": {name: {"queued": sm.batcher.queued, **sm.batcher.stats.as_dict()}
                                           for name, sm in registry.models.items()}}

    app.add_api_route("/healthz", healthz, methods=["HEAD"], include_in_schema=False)  # load-balancer probes

    @app.get("/v1/models", summary="the loaded models, what each can do, and the request limits")
    async def models() -> dict:
        limits = {k: getattr(config, k) for k in ("max_texts", "max_input_tokens", "max_new_tokens", "max_beams",
                                                  "max_body_bytes", "max_batch_size", "max_work_tokens",
                                                  "max_decode_steps", "request_timeout_s")}
        return {"models": [sm.info() for sm in registry.models.values()], "limits": limits}

    # -- tasks --------------------------------------------------------------------------------------
    errors = {400: {"model": S.ErrorResponse}, 404: {"model": S.ErrorResponse}, 413: {"model": S.ErrorResponse},
              422: {"model": S.ErrorResponse}, 503: {"model": S.ErrorResponse}, 504: {"model": S.ErrorResponse}}

    default_new_tokens = min(20, config.max_new_tokens)  # transformers' default, within the server's limit

    def with_model_defaults(req: S.GenerateRequest, sm: ServedModel) -> S.GenerateRequest:
        """The request with what it leaves out taken from the model's generation_config.json (a fine-tuned
        run's answer length, its beams), as ``t5electra generate`` does; then the schema's defaults. The
        limits are checked on the result."""
        given = req.model_dump(exclude_unset=True)
        file = {k: v for k, v in sm.t5.generation_config.to_dict().items() if v is not None}
        for total, new in (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens")):
            if total in file and new not in file:  # lengths counting the decoder start token
                file[new] = max(int(file[total]) - 1, 0 if new == "min_new_tokens" else 1)
        if "num_beams" in given or "do_sample" in given:  # the request chose its search: not the file's outputs
            file.pop("num_return_sequences", None)
        if not given.get("do_sample", file.get("do_sample", False)):  # sampling settings mean nothing then
            for k in ("temperature", "top_k", "top_p"):
                file.pop(k, None)
        # the file's values are capped at the server's limits, as the built-in defaults are (only what a
        # request sends above them is refused)
        caps = {"max_new_tokens": config.max_new_tokens, "num_beams": config.max_beams,
                "num_return_sequences": config.max_beams}
        fill = {k: (min(v, caps[k]) if k in caps and isinstance(v, int) else v) for k, v in file.items()
                if k in S.GenerateRequest.model_fields and k not in ("model", "texts", "seed") and k not in given}
        most = fill.get("max_new_tokens", given.get("max_new_tokens", default_new_tokens))
        if fill.get("min_new_tokens", 0) > most:
            fill["min_new_tokens"] = most
        if not fill:
            return req
        try:
            return S.GenerateRequest(**{**fill, **given})
        except ValueError as e:  # pydantic's ValidationError: the file's values, not the request's
            raise ApiError(500, f"model {sm.name!r}: its generation_config.json sets options the API refuses "
                                f"({', '.join(sorted(fill))}): {e}") from None

    @app.post("/v1/generate", response_model=S.GenerateResponse, responses=errors,
              summary="T5 text-to-text generation (greedy, beam search, sampling) with sequence scores")
    async def generate(req: S.GenerateRequest, request: Request):
        sm = pick(GENERATE, req.model)
        req = with_model_defaults(req, sm)
        check_count(req.texts)
        if req.max_new_tokens is None:
            req.max_new_tokens = default_new_tokens
        if req.max_new_tokens > config.max_new_tokens:
            raise ApiError(400, f"max_new_tokens={req.max_new_tokens} is over the limit of {config.max_new_tokens} "
                                f"(max_new_tokens)")
        for name in ("num_beams", "num_return_sequences"):
            if getattr(req, name) > config.max_beams:
                raise ApiError(400, f"{name}={getattr(req, name)} is over the limit of {config.max_beams} (max_beams)")
        if req.num_beams > 1 and req.num_return_sequences > req.num_beams:
            raise ApiError(400, f"num_return_sequences={req.num_return_sequences} is larger than "
                                f"num_beams={req.num_beams}: beam search returns at most num_beams outputs")
        if req.num_beams == 1 and not req.do_sample and req.num_return_sequences > 1:
            raise ApiError(400, f"greedy search has one output per text: num_return_sequences="
                                f"{req.num_return_sequences} needs num_beams >= {req.num_return_sequences} "
                                f"or do_sample=true")
        if req.min_new_tokens > req.max_new_tokens:
            raise ApiError(422, f"min_new_tokens={req.min_new_tokens} is larger than max_new_tokens="
                                f"{req.max_new_tokens}: it must be at most max_new_tokens")
        enc = await tokenize(sm, req.texts)
        expand = max(req.num_beams, req.num_return_sequences)
        check_work(len(req.texts) * expand * req.max_new_tokens,
                   f"{len(req.texts)} texts x {expand} beams or samples x {req.max_new_tokens} new tokens",
                   "fewer texts, fewer beams or a smaller max_new_tokens", "max_decode_steps", "decoder steps")
        options = req.model_dump(exclude={"model", "texts"})
        # Seeded sampling runs alone: merged with other requests, its draws would depend on what else
        # is in the batch, and `seed` promises the same output for the same request.
        alone = object() if req.do_sample and req.seed is not None else None
        key = (GENERATE, tuple(sorted(options.items())), alone)
        rows = len(req.texts) * max(req.num_beams, req.num_return_sequences)
        results = await submit(sm, key, {"ids": enc["ids"], "texts": req.texts}, rows, request)
        return {"model": sm.name, "results": results}

    @app.post("/v1/fill-mask", response_model=S.FillMaskResponse, responses=errors,
              summary="ELECTRA generator: alternatives for each [MASK] and the text filled greedily")
    async def fill_mask(req: S.FillMaskRequest, request: Request):
        sm = pick(FILL_MASK, req.model)
        check_count(req.texts)
        enc = await tokenize(sm, req.texts)
        mask_id = sm.tokenizer.mask_token_id
        missing = [i for i, ids in enumerate(enc["ids"]) if mask_id not in ids]
        if missing:
            raise ApiError(400, f"texts[{missing[0]}] has no {sm.tokenizer.mask_token} token: fill-mask fills "
                                f"{sm.tokenizer.mask_token} (write it where a word is missing)")
        longest, masks = max(map(len, enc["ids"])), max(ids.count(mask_id) for ids in enc["ids"])
        check_work(len(req.texts) * longest * masks,
                   f"{len(req.texts)} texts x {longest} tokens x {masks} [MASK]s: one pass over every text per "
                   f"[MASK] filled", "fewer texts, fewer [MASK]s per text or shorter texts")
        results = await submit(sm, (FILL_MASK, req.top_k), {"ids": enc["ids"], "texts": req.texts}, len(req.texts),
                               request)
        return {"model": sm.name, "results": results}

    @app.post("/v1/detect", response_model=S.DetectResponse, responses=errors,
              summary="ELECTRA discriminator: per-token probability of having been replaced")
    async def detect(req: S.DetectRequest, request: Request):
        sm = pick(DETECT, req.model)
        check_count(req.texts)
        enc = await tokenize(sm, req.texts)
        longest = max(map(len, enc["ids"]))
        check_work(len(req.texts) * longest, f"{len(req.texts)} texts x {longest} tokens", "fewer or shorter texts")
        results = await submit(sm, (DETECT,), {"texts": req.texts}, len(req.texts), request)
        return {"model": sm.name, "results": results}

    @app.post("/v1/correct", response_model=S.CorrectResponse, responses=errors,
              summary="ELECTRA detect-and-correct: flagged tokens are refilled by the generator")
    async def correct(req: S.CorrectRequest, request: Request):
        sm = pick(CORRECT, req.model)
        check_count(req.texts)
        enc = await tokenize(sm, req.texts)
        longest = max(map(len, enc["ids"]))
        check_work(len(req.texts) * longest * 2 * req.max_iters,
                   f"{len(req.texts)} texts x {longest} tokens x 2 passes x {req.max_iters} rounds",
                   "fewer or shorter texts, or a smaller max_iters")
        results = await submit(sm, (CORRECT, req.threshold, req.max_iters), {"texts": req.texts}, len(req.texts),
                               request)
        return {"model": sm.name, "results": results}

    @app.post("/v1/classify", response_model=S.ClassifyResponse, responses=errors,
              summary="a fine-tuned classification head; label names from the model's id2label")
    async def classify(req: S.ClassifyRequest, request: Request):
        sm = pick(CLASSIFY, req.model)
        check_count(req.texts)
        if req.text_pairs is not None and len(req.text_pairs) != len(req.texts):
            raise ApiError(400, f"text_pairs has {len(req.text_pairs)} items and texts {len(req.texts)}; "
                                f"give one pair per text")
        enc = await tokenize(sm, req.texts, req.text_pairs)
        longest = max(map(len, enc["ids"]))
        check_work(len(req.texts) * longest, f"{len(req.texts)} texts x {longest} tokens", "fewer or shorter texts")
        payload = {"ids": enc["ids"], "type_ids": enc["type_ids"], "texts": req.texts}
        results = await submit(sm, (CLASSIFY,), payload, len(req.texts), request)
        return {"model": sm.name, "results": results}

    @app.post("/v1/attention", response_model=S.AttentionResponse, responses=errors,
              summary="attention weights of one layer and head (or the mean of the heads) over the tokens")
    async def attention(req: S.AttentionRequest, request: Request):
        sm = pick(ATTENTION, req.model)
        if sm.family != "t5" and req.stack != "encoder":
            raise ApiError(400, f"stack={req.stack!r}: {sm.name!r} is an ELECTRA encoder; only 'encoder' exists")
        if req.component is not None and req.component not in sm.components():
            raise ApiError(400, f"model {sm.name!r} has no {req.component} component; it has: "
                                f"{', '.join(sm.components())}")
        enc = await tokenize(sm, [req.text], field="text")
        payload = {"request": req, "ids": enc["ids"][0], "target_ids": None,
                   "max_new_tokens": min(32, config.max_new_tokens)}
        if req.target is not None and sm.family == "t5":
            payload["target_ids"] = (await tokenize(sm, [req.target], field="target"))["ids"][0]
        return await submit(sm, (ATTENTION,), payload, 1, request)

    return app
