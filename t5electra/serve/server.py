"""The socket side: uvicorn with limits on connections that never finish a request.

uvicorn closes an idle keep-alive connection after ``timeout_keep_alive`` seconds, but a
connection that sends half a request (or nothing) is never timed out: 500 such connections hold
500 sockets forever. :func:`timed_h11_protocol` gives uvicorn's h11 protocol a deadline: a
connection that has not sent a whole request (headers and body) within ``read_timeout_s`` of
connecting, or of its previous answer, is closed. ``max_connections`` becomes uvicorn's
``limit_concurrency`` (beyond it, new requests get 503).

On SIGTERM / SIGINT (:class:`Server`), requests in flight get ``grace_s`` seconds to finish; then
the models' batchers stop: a running batch ends at its next step and its requests, like those
still queued, get 503. So shutdown takes about ``grace_s`` plus one model step, not as long as the
longest request, and no client gets a bare 500.

    serve_app(app, config)    # what `t5electra serve` does after loading the models
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .config import ServeConfig

logger = logging.getLogger("t5electra.serve")


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections that take over ``read_timeout_s`` to send a request."""

    read_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._read_timer: asyncio.TimerHandle | None = None
        self._arm_read_timer()

    def _arm_read_timer(self) -> None:
        if getattr(self, "_read_timer", None) is not None:
            self._read_timer.cancel()
        self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)

    def _read_timed_out(self) -> None:
        self._read_timer = None
        # IDLE: the request line / headers are incomplete; SEND_BODY: the body is. DONE: the
        # request is in and the app is answering (request_timeout_s bounds that).
        if not self.transport.is_closing() and self.conn.their_state in (h11.IDLE, h11.SEND_BODY):
            logger.info("closing a connection from %s: no whole request within %s s (read_timeout_s)",
                        self.client, self.read_timeout_s)
            self.transport.close()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_read_timer()  # the next request on this connection gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if getattr(self, "_read_timer", None) is not None:
            self._read_timer.cancel()
            self._read_timer = None
        super().connection_lost(exc)


def timed_h11_protocol(read_timeout_s: float) -> type[TimedH11Protocol]:
    """A :class:`TimedH11Protocol` subclass with this deadline (uvicorn takes a class)."""
    return type("TimedH11Protocol", (TimedH11Protocol,), {"read_timeout_s": float(read_timeout_s)})


GRACE_S = 5.0  # seconds requests in flight may still finish after SIGTERM


class Server(uvicorn.Server):
    """uvicorn's server; at shutdown, the app's model batchers stop after ``grace_s`` seconds."""

    def __init__(self, config: uvicorn.Config, grace_s: float = GRACE_S):
        super().__init__(config)
        self.grace_s = grace_s

    async def _stop_models_later(self) -> None:
        await asyncio.sleep(self.grace_s)
        registry = getattr(self.config.app.state, "registry", None)
        for sm in (registry.models.values() if registry is not None else ()):
            if sm.batcher is not None:
                await sm.batcher.stop()

    async def shutdown(self, sockets=None) -> None:
        stopper = asyncio.ensure_future(self._stop_models_later())
        try:
            await super().shutdown(sockets)
        finally:
            stopper.cancel()


def make_server(app, config: ServeConfig, log_level: str = "info", grace_s: float = GRACE_S) -> Server:
    """The server for ``app`` with ``config``'s address, keep-alive, read deadline and connection
    limit; uvicorn's own graceful-shutdown timeout is ``grace_s`` + 5 s, a backstop."""
    cfg = uvicorn.Config(app, host=config.host, port=config.port, log_level=log_level,
                         http=timed_h11_protocol(config.read_timeout_s), timeout_keep_alive=config.keep_alive_s,
                         limit_concurrency=config.max_connections, timeout_graceful_shutdown=int(grace_s) + 5)
    return Server(cfg, grace_s)


class _Stopped(BaseException):
    """Raised by :func:`serve_app`'s handler when uvicorn hands the stop signal back after shutdown."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame) -> None:
    raise _Stopped(signum)


def serve_app(app, config: ServeConfig, log_level: str = "info") -> int | None:
    """Run ``app`` until SIGINT / SIGTERM; returns the signal that stopped it (None otherwise).

    After its graceful shutdown uvicorn raises the signal again with the handler it found, so
    that the process ends "killed by SIGTERM" (or with a KeyboardInterrupt traceback for Ctrl-C).
    With the default handler that skips every ``finally`` and ``with`` exit of the caller
    (`t5electra serve --demo` left its temporary model directory behind). Here the handler it
    finds raises :class:`_Stopped`, which unwinds normally; the caller cleans up and then ends the
    process by the same signal (:func:`end_by_signal`), so process managers see what they expect."""
    if threading.current_thread() is not threading.main_thread():  # signals: main thread only
        make_server(app, config, log_level).run()
        return None
    previous = {sig: signal.signal(sig, _raise_stopped) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        make_server(app, config, log_level).run()
    except _Stopped as stopped:
        return stopped.signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return None


def end_by_signal(signum: int) -> None:
    """End this process by ``signum`` with its default action (exit status 128 + signum, no
    traceback), as a server stopped by that signal is expected to."""
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)
