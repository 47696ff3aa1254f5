"""Checks of command-line values that the subcommands share: each mistake is one clear line
(:class:`~t5electra.errors.ConfigError` naming the flag, the value and what is valid), raised
before any model is loaded."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from ..core.atomic import write_output, written_through
from ..errors import ConfigError

DEVICE_TYPES = ("cpu", "cuda", "mps")


def at_least(value: int | float, low: int | float, flag: str) -> None:
    if value < low:
        raise ConfigError(f"{flag}={value!r}: must be at least {low}")


def port(value: int, flag: str = "--port") -> None:
    if not 1 <= value <= 65535:
        raise ConfigError(f"{flag}={value!r}: a TCP port is a number from 1 to 65535 (e.g. 8000)")


def port_free(host: str, port: int) -> None:
    """Bind (host, port) once and let go, so that a port in use (or a host that does not resolve)
    is one error line before the models load, not uvicorn's exit after it."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ConfigError(f"--host {host!r}: cannot be resolved ({e.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            s.bind(address)
        except OSError as e:
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror} (another server there? choose "
                              f"--port)") from None


def device(value: str, flag: str = "--device") -> torch.device:
    """``value`` as a torch device that exists here: 'cpu', 'cuda', 'cuda:N' or 'mps'."""
    valid = "'cpu', 'cuda', 'cuda:N' or 'mps'"
    try:
        dev = torch.device(value)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{flag}={value!r} is not a device: use {valid}") from None
    if dev.type not in DEVICE_TYPES:
        raise ConfigError(f"{flag}={value!r}: {dev.type!r} devices are not supported: use {valid}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{flag}={value!r}: CUDA is not available on this machine (use 'cpu')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"{flag}={value!r}: no such GPU ({torch.cuda.device_count()} visible)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{flag}={value!r}: MPS is not available on this machine (use 'cpu')")
    return dev


def writable_dir(path: str | os.PathLike, flag: str) -> Path:
    """``path`` as a directory this process can write in, created if missing; ConfigError if it is a
    file, cannot be created, or refuses a new file (read-only, /proc, no permission)."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise ConfigError(f"{flag} {str(path)!r} is a file, expected a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=p, prefix=".write-check-"):
            pass
    except OSError as e:
        raise ConfigError(f"{flag} {str(path)!r}: cannot write there ({e.strerror or e}); choose a directory "
                          f"you can write to") from None
    return p


def output_file(path: str, flag: str = "--out") -> Path | None:
    """Check, before any work, that ``path`` can be written (its directory exists and takes a new
    file); nothing is created. Write it later with :func:`write_atomic`. ``-`` (the Unix convention
    for standard output) gives None: the caller prints."""
    p = Path(path).expanduser()
    if path == "-":
        return None
    if p.is_dir():
        raise ConfigError(f"{flag} {path!r} is a directory, expected a file name")
    if written_through(p):
        return p
    parent = p.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag} {path!r}: directory {str(parent)!r} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{p.name}.", suffix=".tmp"):
            pass
    except OSError as e:
        raise ConfigError(f"{flag} {path!r}: cannot write in {str(parent)!r} ({e.strerror or e})") from None
    return p


def write_atomic(path: Path, text: str, flag: str = "--out") -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename: never half a file. A path that
    is a link, a device or a pipe (``/dev/stdout``, ``-``) is written through instead: replacing it
    would delete it (as root, ``--out /dev/stdout`` replaced the system's link with a file)."""
    try:
        write_output(path, text)
    except OSError as e:
        raise ConfigError(f"{flag} {str(path)!r}: cannot write ({e.strerror or e})") from None
