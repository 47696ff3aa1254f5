"""The server's settings: limits, batching, where to listen. Read from a YAML file and/or flags.

Every field has a one-line help text (``option``), which ``t5electra serve --help`` shows. A YAML
file holds the same keys at the top level::

    host: 127.0.0.1
    port: 8000
    max_batch_size: 16
    max_wait_ms: 5
    max_input_tokens: 512

Command-line flags win over the file; the file wins over the defaults.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from pathlib import Path
from typing import Any, Optional

import yaml

from ..core.typed_config import coerce, option, suggest
from ..errors import ConfigError


MAX_WAIT_MS = 10_000.0  # a batching wait longer than this would only be a typo (1e9 sent every request to 504)


@dataclasses.dataclass
class ServeConfig:
    """How ``t5electra serve`` listens, batches, and what it refuses."""

    host: str = option("127.0.0.1", "address to listen on (0.0.0.0 exposes the server to the network)")
    port: int = option(8000, "TCP port")
    device: str = option("cpu", "torch device the models run on ('cpu', 'cuda', 'cuda:1')")
    dtype: Optional[str] = option(None, "cast the models to this dtype ('bfloat16', 'float16'); None keeps float32")
    num_threads: Optional[int] = option(None, "torch intra-op threads (None: torch's default)")
    weights: str = option("fp32", "inference weights: 'fp32' (exact fast path), 'bf16' or 'int8' (faster, "
                                  "approximate; model.optimize_for_inference, docs/inference.md)")
    # -- dynamic batching --
    max_batch_size: int = option(16, "most rows (texts x beams) merged requests run in one forward / generate "
                                         "call (one request is never split)")
    max_wait_ms: float = option(5.0, "how long the first request of a batch waits for others to join")
    max_queue: int = option(256, "requests waiting per model; beyond it the server answers 503 + Retry-After")
    request_timeout_s: float = option(60.0, "a request still unanswered after this many seconds gets 504")
    # -- limits on what one request may ask --
    max_texts: int = option(32, "texts per request (413 beyond)")
    max_input_tokens: int = option(512, "tokens per input text, special tokens included (413 beyond)")
    max_new_tokens: int = option(128, "largest max_new_tokens a generate request may ask for (400 beyond)")
    max_beams: int = option(8, "largest num_beams (and num_return_sequences) a request may ask for (400 beyond)")
    max_body_bytes: int = option(1_000_000, "largest request body in bytes (413 beyond)")
    max_work_tokens: int = option(65_536, "most encoder token passes one request may cost (413 beyond): fill-mask "
                                          "texts x longest text x most [MASK]s in a text (one pass per [MASK]); "
                                          "correct texts x longest x 2 x max_iters; detect, classify texts x "
                                          "longest")
    max_decode_steps: int = option(4_096, "most decoder steps one generate request may cost (413 beyond): texts x "
                                          "max(num_beams, num_return_sequences) x max_new_tokens")
    # -- access --
    api_key_file: Optional[str] = option(None, "file holding the API key: every endpoint but /healthz and the "
                                               "page then needs 'Authorization: Bearer KEY' (401 without); "
                                               "the T5ELECTRA_API_KEY environment variable works too")
    cors_origins: list[str] = option([], "origins (https://app.example.com) whose pages may call the API from a "
                                         "browser (CORS); none by default")
    # -- connections --
    read_timeout_s: float = option(10.0, "a connection that has not sent a whole request within this many "
                                         "seconds (of connecting, or of its previous answer) is closed")
    keep_alive_s: float = option(5.0, "an idle keep-alive connection is closed after this many seconds")
    max_connections: int = option(512, "open connections at most; beyond it new requests get 503")
    # -- the page --
    playground: bool = option(True, "serve the playground page at / (the JSON API is always on)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        positive = ("port", "max_batch_size", "max_queue", "max_texts", "max_input_tokens", "max_new_tokens",
                    "max_beams", "max_body_bytes", "max_work_tokens", "max_decode_steps",
                    "max_connections")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"serve config: {name}={getattr(self, name)!r} must be at least 1")
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS:  # NaN and inf too: NaN left requests to the 10 s timer
            raise ConfigError(f"serve config: max_wait_ms={self.max_wait_ms!r} must be in [0, {MAX_WAIT_MS}] "
                              f"(milliseconds a request may wait for others to batch with)")
        if self.num_threads is not None and (isinstance(self.num_threads, bool) or self.num_threads < 0):
            raise ConfigError(f"serve config: num_threads={self.num_threads!r} must be >= 1, or 0 / null for "
                              f"PyTorch's default")
        for name in ("request_timeout_s", "read_timeout_s", "keep_alive_s"):
            value = getattr(self, name)
            if not value > 0 or value == float("inf"):
                raise ConfigError(f"serve config: {name}={value!r} must be a number of seconds > 0")
        for origin in self.cors_origins:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ConfigError(f"serve config: cors_origins: {origin!r} is not an origin like "
                                  f"https://app.example.com (scheme and host[:port], no path) or '*'")
        if self.dtype not in (None, "float32", "bfloat16", "float16"):
            raise ConfigError(f"serve config: dtype={self.dtype!r} is not one of float32, bfloat16, float16")
        if self.weights not in ("fp32", "bf16", "int8"):
            raise ConfigError(f"serve config: weights={self.weights!r} is not one of fp32, bf16, int8")
        if self.weights != "fp32" and self.dtype not in (None, "float32"):
            raise ConfigError(f"serve config: weights={self.weights!r} runs on float32 models; drop dtype="
                              f"{self.dtype!r} (or use weights='fp32')")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def help_of(cls, name: str) -> str:
        return next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == name)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, **overrides: Any) -> "ServeConfig":
        """Defaults, then the YAML file at ``path``, then ``overrides`` (None values are ignored)."""
        values: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            try:
                data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
            except FileNotFoundError:
                raise ConfigError(f"serve config file {p} does not exist") from None
            except (UnicodeDecodeError, IsADirectoryError) as e:
                raise ConfigError(f"serve config file {p}: cannot be read as UTF-8 text ({e.__class__.__name__})") from None
            except yaml.YAMLError as e:
                raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
            if not isinstance(data, dict):
                raise ConfigError(f"{p}: expected a mapping of settings at the top level, got {type(data).__name__}")
            values.update({k: (v, str(p)) for k, v in data.items()})
        values.update({k: (v, "command line") for k, v in overrides.items() if v is not None})
        names = cls.field_names()
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, (value, source) in values.items():
            if key not in names:
                raise ConfigError(f"{source}: unknown serve setting {key!r}{suggest(key, names)}")
            kwargs[key] = coerce(value, hints[key], f"{source}: {key}", parse_strings=source == "command line")
        return cls(**kwargs)
