"""CTranslate2 in a child process, called like a ``ctranslate2.Translator`` (``translate_batch``).

Why a separate process: CTranslate2's wheel ships its own copy of GNU OpenMP (libgomp), next to
PyTorch's. Measured on the 2-core AMD EPYC (AVX-512) of BENCHMARKS.md, one thread pool each of 2
threads: after one ``translate_batch`` call in the same process, every later PyTorch decoding run
in that process is 1.5-2x slower and stays so (T5-small int8 greedy batch 1: 204-252 tokens/s
before, 108-147 after, also seconds later; PyTorch's OpenMP worker thread then does half the work
it did), and CTranslate2 alternated with PyTorch in one process also lost 5-20 %. With
CTranslate2 at one thread the effect disappears (212 -> 198 tokens/s). So the numbers of one shared
process depend on which library ran last, not on either library: each runs in its own process,
alternated in time as before (one runs while the other waits), so both have the machine alone.
The round trip through the pipe (a few token lists) costs well under a millisecond a call.
"""

from __future__ import annotations

import multiprocessing
import types
from pathlib import Path


def _serve(conn, model_dir: str, device: str, compute_type: str, threads: int) -> None:
    """The child: load the converted model, then answer ``("translate", batch, options)`` until None."""
    try:
        import ctranslate2

        translator = ctranslate2.Translator(model_dir, device=device, compute_type=compute_type,
                                            intra_threads=threads, inter_threads=1)
    except Exception as e:  # sent to the parent, which raises it as the same kind of error
        conn.send(("error", (type(e).__name__, str(e))))
        return
    conn.send(("ok", None))
    while (msg := conn.recv()) is not None:
        _, batch, options = msg
        try:
            results = translator.translate_batch(batch, **options)
            conn.send(("ok", [r.hypotheses for r in results]))
        except Exception as e:
            conn.send(("error", (type(e).__name__, str(e))))


_ERRORS = {"ValueError": ValueError, "ImportError": ImportError, "ModuleNotFoundError": ImportError}


class TranslatorProcess:
    """``ctranslate2.Translator(model_dir, ...)`` running in a spawned child process.

    ``translate_batch(batch, **options)`` returns objects with ``.hypotheses`` (what the benchmark
    reads of ctranslate2's results). Errors of the child (no ctranslate2, an unsupported compute
    type) are raised here as ImportError / ValueError / RuntimeError, as the in-process translator
    raises them."""

    def __init__(self, model_dir: Path, *, device: str, compute_type: str, threads: int):
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: no PyTorch thread pool in it
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(child, str(model_dir), device, compute_type, threads),
                                daemon=True)
        self.proc.start()
        child.close()
        self._check(self.conn.recv())

    def _check(self, reply):
        kind, payload = reply
        if kind == "error":
            self.close()
            name, message = payload
            raise _ERRORS.get(name, RuntimeError)(f"ctranslate2 (child process): {name}: {message}")
        return payload

    def translate_batch(self, batch, **options):
        self.conn.send(("translate", batch, options))
        return [types.SimpleNamespace(hypotheses=h) for h in self._check(self.conn.recv())]

    def close(self) -> None:
        proc = getattr(self, "proc", None)  # None: __init__ failed before the child existed
        if proc is not None and proc.is_alive():
            try:
                self.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()

    def __del__(self):
        self.close()
