"""Data pipeline benchmark: tokenisation, streaming + span corruption + batching, and memory.

    python benchmarks/data_pipeline.py --size-mb 200            # quick run
    python benchmarks/data_pipeline.py --size-mb 2048           # the >= 2 GB memory check
    python benchmarks/data_pipeline.py --size-mb 50 --no-model  # skip the T5-small step timing

What it does, in a work directory (default: a temporary one, deleted afterwards):

1. writes a synthetic English-like corpus of ``--size-mb`` (pseudo-words with Zipfian frequencies,
   sentences, one document per line) unless one of that size is already there;
2. trains a small WordPiece tokenizer (``tokenizers``) on its first few MB, with T5's specials and 100
   sentinels;
3. tokenises the whole corpus into shards (``build_shards``, ``--workers`` processes): docs/s,
   MB/s and tokens/s;
4. streams one epoch (or ``--max-rows``) through ``PackedDataset`` + ``SpanCorruption(512)`` +
   ``Seq2SeqCollator`` in a ``StreamingDataLoader`` (batch 32, ``--workers`` workers): raw tokens/s;
5. times a T5-small training step (forward + backward + AdamW, batch 8 x 512/114) on this
   machine and reports how many times faster the pipeline makes tokens than the step consumes them;
6. samples the memory of the whole process tree (this process + its tokeniser and DataLoader
   workers) every 0.2 s from /proc: the peak of the summed PSS (shared pages counted once) and the
   peak RSS of any single process (``ru_maxrss``).

Prints a JSON record and a Markdown section for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t5electra.data.objectives import Seq2SeqCollator, SpanCorruption  # noqa: E402
from t5electra.data.shards import PackedDataset, StreamingDataLoader, build_shards  # noqa: E402
from t5electra.data.sources import Corpus  # noqa: E402

MB = 1 << 20


# ------------------------------------------------------------------------------------------------
# Memory of the process tree, from /proc (Linux)
# ------------------------------------------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as fh:
                out += [int(c) for c in fh.read().split()]
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    todo, seen = [pid], []
    while todo:
        p = todo.pop()
        seen.append(p)
        todo += _children(p)
    return seen


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeMemory:
    """Samples the summed PSS of this process tree in a thread; ``peak_mb`` after ``stop()``."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak_kb, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_kb = max(self.peak_kb, sum(_pss_kb(p) for p in _tree(os.getpid())))
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024


def max_rss_mb() -> dict:
    """Peak RSS of this process and of the largest waited-for child (ru_maxrss is in KiB on Linux)."""
    return {"self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "largest_child": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


# ------------------------------------------------------------------------------------------------
# Synthetic corpus and tokenizer
# ------------------------------------------------------------------------------------------------
def write_corpus(path: Path, size_mb: float, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    syllables = [a + b for a in "bcdfghklmnprstvwz" for b in ("a", "e", "i", "o", "u", "ai", "ou", "ea")]
    parts = rng.integers(0, len(syllables), size=(30000, 3))
    n_parts = rng.integers(1, 4, size=30000)
    words = sorted({"".join(syllables[j] for j in row[:n]) for row, n in zip(parts, n_parts)})
    freq = 1.0 / np.arange(1, len(words) + 1)  # Zipf
    freq /= freq.sum()
    lengths = rng.integers(4, 25, size=50000)
    drawn = rng.choice(len(words), size=int(lengths.sum()), p=freq)  # word indices, all at once
    ends = np.cumsum(lengths)
    sentences = [" ".join(words[j] for j in drawn[e - n:e]).capitalize() + "." for e, n in zip(ends, lengths)]
    target = int(size_mb * MB)
    written = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        while written < target:
            picks = rng.integers(0, len(sentences), size=(1000, 30))
            lengths = rng.integers(1, 30, size=1000)
            lines = "\n".join(" ".join(sentences[j] for j in row[:n]) for row, n in zip(picks, lengths)) + "\n"
            fh.write(lines)
            written += len(lines)
    os.replace(tmp, path)


def train_tokenizer(corpus: Path, vocab_size: int = 8000):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    specials = ["<pad>", "</s>", "<unk>"]
    tok = Tokenizer(models.WordPiece(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    sample = []
    with open(corpus) as fh:
        for line in fh:
            sample.append(line)
            if len(sample) > 3000:
                break
    tok.train_from_iterator(sample, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    tok.add_special_tokens([f"<extra_id_{i}>" for i in range(99, -1, -1)])  # <extra_id_0> = highest id
    return tok


class ByteTokenizer:
    """UTF-8 bytes as ids 3..258 (0 pad, 1 EOS, 2 unk) and 100 sentinels above: a tokenizer whose
    own cost is negligible, for measuring the pipeline's memory on multi-GB corpora quickly."""

    fingerprint = "bytes-v1"

    def __len__(self) -> int:
        return 259 + 100

    def __call__(self, texts: list[str]) -> list[np.ndarray]:
        return [np.frombuffer(t.encode("utf-8"), dtype=np.uint8).astype(np.int64) + 3 for t in texts]

    def token_to_id(self, token: str) -> int | None:
        if token.startswith("<extra_id_"):
            return 259 + 99 - int(token[10:-1])
        return None


# ------------------------------------------------------------------------------------------------
# T5-small step
# ------------------------------------------------------------------------------------------------
def t5_small_step_seconds(batch: int = 8, steps: int = 3) -> float:
    import torch

    from t5electra.models.t5 import T5Config, T5ForConditionalGeneration

    model = T5ForConditionalGeneration(T5Config.from_preset("t5-small"))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(3, 32000, (batch, 512))
    y = torch.randint(3, 32000, (batch, 114))
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        loss = model(input_ids=x, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t)
    return float(np.median(times[1:]))  # the first step warms up allocators


# ------------------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=float, default=200, help="synthetic corpus size (2048 for the memory check)")
    ap.add_argument("--workers", type=int, default=2, help="tokeniser processes and DataLoader workers")
    ap.add_argument("--workdir", type=Path, default=None, help="keep corpus and shards here (default: temporary)")
    ap.add_argument("--max-rows", type=int, default=None, help="stop streaming after this many rows")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--no-model", action="store_true", help="skip timing the T5-small step")
    ap.add_argument("--keep-shards", action="store_true",
                    help="reuse shards already in --workdir (then the tokenise numbers measure a cache hit)")
    ap.add_argument("--tokenizer", choices=["wordpiece", "bytes"], default="wordpiece",
                    help="wordpiece: trained on the corpus; bytes: UTF-8 bytes (near-free, for the memory run)")
    ap.add_argument("--row-length", type=int, default=None,
                    help="pack rows of this length without an objective (default: span corruption 568->512)")
    args = ap.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="t5electra-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    corpus_path = workdir / f"corpus-{args.size_mb:g}mb.txt"
    result: dict = {"size_mb": args.size_mb, "workers": args.workers, "cpus": os.cpu_count(),
                    "batch_size": args.batch_size}
    try:
        if not corpus_path.exists():
            t = time.perf_counter()
            write_corpus(corpus_path, args.size_mb)
            result["corpus_write_s"] = round(time.perf_counter() - t, 1)
        result["corpus_bytes"] = corpus_path.stat().st_size
        if args.tokenizer == "bytes":
            from t5electra.data.shards import adapt_tokenizer

            byte_tok = ByteTokenizer()
            tok = adapt_tokenizer(byte_tok, fingerprint=byte_tok.fingerprint, vocab_size=len(byte_tok))
            sentinel = byte_tok.token_to_id("<extra_id_0>")
        else:
            tok = train_tokenizer(corpus_path)
            sentinel = tok.token_to_id("<extra_id_0>")
        result["tokenizer"] = args.tokenizer
        cache = workdir / "shards"
        if not args.keep_shards:
            shutil.rmtree(cache, ignore_errors=True)

        with TreeMemory() as mem:
            t = time.perf_counter()
            shards = build_shards(Corpus(corpus_path), tok, cache, num_workers=args.workers)
            tok_s = time.perf_counter() - t
            result.update(documents=shards.num_documents, tokens=shards.num_tokens, shards=len(shards.shards),
                          tokenise_s=round(tok_s, 1),
                          tokenise_mb_per_s=round(result["corpus_bytes"] / MB / tok_s, 2),
                          tokenise_tokens_per_s=round(shards.num_tokens / tok_s))
            result["tokenise_peak_pss_mb"] = round(mem.peak_mb, 1)

            objective = SpanCorruption(sentinel_start_id=sentinel, eos_token_id=1, inputs_length=512)
            if args.row_length:  # packing only
                row_length, transform, collate = args.row_length, None, None
            else:
                row_length, transform = objective.raw_length, objective
                collate = Seq2SeqCollator(inputs_length=512, targets_length=objective.targets_length)
            ds = PackedDataset(shards, row_length=row_length, transform=transform, eos_token_id=1, seed=0,
                               num_epochs=1)
            loader = StreamingDataLoader(ds, args.batch_size, num_workers=args.workers, collate_fn=collate)
            rows = 0
            t = time.perf_counter()
            for batch in loader:
                rows += batch["input_ids"].shape[0]
                if args.max_rows and rows >= args.max_rows:
                    break
            stream_s = time.perf_counter() - t
        result.update(rows=rows, rows_per_epoch=ds.rows_per_epoch, stream_s=round(stream_s, 1),
                      row_length=row_length, stream_raw_tokens_per_s=round(rows * row_length / stream_s),
                      stream_examples_per_s=round(rows / stream_s),
                      peak_tree_pss_mb=round(mem.peak_mb, 1), max_rss_mb=max_rss_mb())
        if not args.no_model:
            step = t5_small_step_seconds()
            consumed = 8 * objective.raw_length / step
            result.update(t5_small_step_s=round(step, 3), t5_small_raw_tokens_per_s=round(consumed),
                          pipeline_speedup=round(result["stream_raw_tokens_per_s"] / consumed, 1))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print(json.dumps(result, indent=1))
    print(markdown(result))
    return result


def markdown(r: dict) -> str:
    rss = r.get("max_rss_mb", {})
    stage = "span corruption 568->512/114" if r["row_length"] == 568 else f"packing to {r['row_length']} (no objective)"
    lines = [
        f"### Data pipeline ({r['size_mb']:g} MB synthetic corpus, {r['workers']} workers, {r['cpus']} CPUs)",
        "",
        "| stage | result |",
        "|---|---|",
        f"| tokenise ({'WordPiece 8k' if r['tokenizer'] == 'wordpiece' else 'UTF-8 bytes'}, `build_shards`) | "
        f"{r['tokenise_s']} s: {r['tokenise_mb_per_s']} MB/s, "
        f"{r['tokenise_tokens_per_s']:,} tokens/s ({r['documents']:,} docs, {r['tokens']:,} tokens) |",
        f"| stream + {stage} + collate (batch {r['batch_size']}) | {r['stream_raw_tokens_per_s']:,} raw tokens/s, "
        f"{r['stream_examples_per_s']:,} examples/s ({r['rows']:,} rows) |",
        f"| peak memory, whole process tree (summed PSS) | {r['peak_tree_pss_mb']} MB |",
        f"| peak RSS of one process (main / largest child) | {rss.get('self', 0):.0f} MB / "
        f"{rss.get('largest_child', 0):.0f} MB |",
    ]
    if "t5_small_step_s" in r:
        lines.append(f"| T5-small train step, batch 8 x 512 (same machine) | {r['t5_small_step_s']} s = "
                     f"{r['t5_small_raw_tokens_per_s']:,} raw tokens/s; pipeline is {r['pipeline_speedup']}x faster |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
