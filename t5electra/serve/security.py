"""Who may call the server: an optional API key (``Authorization: Bearer KEY``) and an optional
CORS allow-list.

    key = load_api_key(config.api_key_file, os.environ)   # None: no key asked for
    app = create_app(registry, config, api_key=key)

With a key, every request answers 401 without the right ``Authorization`` header, except
``GET /healthz`` (for load balancers and probes) and the playground's static files (``/`` and
``/static/...``: the page holds no data and must load to ask for the key). The key is compared in
constant time. Browsers on other origins may call the API only when their origin is in
``cors_origins`` (off by default: same-origin pages, curl and scripts are unaffected).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Mapping
from pathlib import Path

from fastapi.responses import JSONResponse

from ..errors import ConfigError

ENV_VAR = "T5ELECTRA_API_KEY"
OPEN_PATHS = ("/healthz",)            # answered without a key
PAGE_PATHS = ("/", "/favicon.ico")    # the playground page (and /static/...) when it is on
_KEY = re.compile(r"^[\x21-\x7e]{8,512}$")  # printable ASCII, no spaces: it travels in a header


def _check_key(key: str, where: str) -> str:
    if not _KEY.match(key):
        raise ConfigError(f"{where}: the API key must be 8 to 512 printable ASCII characters without spaces "
                          f"(it is sent as 'Authorization: Bearer KEY'); got {len(key)} characters")
    return key


def load_api_key(path: str | os.PathLike | None, env: Mapping[str, str] | None = None) -> str | None:
    """The key from ``path`` (surrounding whitespace stripped), else from ``$T5ELECTRA_API_KEY``,
    else None (no key required). ConfigError for a missing, unreadable or malformed key."""
    if path is not None:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"API key file {p} does not exist") from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"API key file {p} cannot be read ({type(e).__name__}: {e})") from None
        return _check_key(text.strip(), f"API key file {p}")
    value = (env if env is not None else os.environ).get(ENV_VAR)
    if value is None:
        return None
    return _check_key(value.strip(), f"${ENV_VAR}")


def _digest(value: bytes) -> bytes:
    return hashlib.sha256(value).digest()


class ApiKeyAuth:
    """ASGI middleware: 401 unless ``Authorization: Bearer <key>`` (scheme case-insensitive)."""

    def __init__(self, app, api_key: str, page: bool = True):
        self.app, self._digest = app, _digest(api_key.encode("ascii"))
        self.page = page

    def _open(self, path: str) -> bool:
        if path in OPEN_PATHS:
            return True
        return self.page and (path in PAGE_PATHS or path.startswith("/static/"))

    def authorized(self, headers: list[tuple[bytes, bytes]]) -> bool:
        value = next((v for k, v in headers if k == b"authorization"), b"")
        scheme, _, token = value.partition(b" ")
        ok = hmac.compare_digest(_digest(token.strip()), self._digest)  # constant time in the key
        return ok and scheme.lower() == b"bearer"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or self._open(scope["path"]) or self.authorized(scope.get("headers") or []):
            return await self.app(scope, receive, send)
        response = JSONResponse({"detail": "this server needs an API key: send the header 'Authorization: Bearer "
                                           "KEY' (missing or wrong key)"}, status_code=401,
                                headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)
