"""Tokenise a corpus once into memory-mapped token shards, and stream packed examples from them.

Two halves:

1. :func:`build_shards` reads a :class:`~t5electra.data.sources.Corpus`, tokenises chunks of
   documents in parallel worker processes, and writes shards: ``shard_00000.tokens`` (every
   token of its documents, back to back, ``uint16`` when the vocabulary fits, else ``uint32``)
   and ``shard_00000.offsets.npy`` (``int64``, where each document starts; one more entry than
   documents). They live in a cache directory named by a hash of the corpus *content*, the
   reading options and the tokenizer's fingerprint, so a corpus is tokenised once. Each shard is
   written to temporary files, renamed, and only then recorded; ``index.json`` is written last.
   An interrupted build never leaves a partial shard that is used, and a rerun resumes after the
   last complete shard; one whose files were deleted or cut short later is rebuilt from there on.

2. :class:`PackedDataset` (a torch ``IterableDataset``) streams fixed-length rows from the
   shards, the T5 way (per docs/reference.md: random chunk -> concatenate documents -> split to raw
   length -> denoise) or the ELECTRA way (``[CLS] ... [SEP]`` rows). It is deterministic for a
   seed, gives every torchrun rank and DataLoader worker a disjoint share of the rows (their
   union is exactly the single-process output), and has a cursor (``state_dict()`` /
   ``load_state_dict()``) that resumes exactly. Use it through :class:`StreamingDataLoader`
   when DataLoader workers are used, so the cursor can follow the batches that were consumed.

How rows are made, per epoch ``e`` (all randomness from ``(seed, e, ...)``):

* Documents are grouped into *blocks* of about ``block_tokens`` consecutive documents of a shard.
  The block order is shuffled, and the documents inside each block are shuffled.
* A document longer than ``max_document_tokens`` contributes one random chunk of that length
  (t5's ``select_random_chunk`` with ``max_length=65536``).
* The documents are concatenated into one stream (T5: each followed by EOS when ``eos_token_id``
  is given — the Hugging Face / nanoT5 convention; the original t5 pipeline puts nothing between
  them. ELECTRA: separated by [SEP]). Row ``r`` is the slice ``[r * L, (r + 1) * L)`` of the
  stream. Rows are shuffled within windows of ``shuffle_window_rows``.
* The epochs' shuffled rows form one stream (epoch after epoch); consumer ``k`` of
  ``K = world_size * num_workers`` takes positions ``k, k + K, k + 2K, ...`` of it; the objective
  (e.g. span corruption) is applied to a row with a generator seeded by ``(seed, e, r)``, so an
  example does not depend on who computes it. Without DataLoader workers, N ranks with batches of
  B together read positions ``[i * N * B, (i + 1) * N * B)`` at step i, as one process with batches
  of N * B: the global batch is the same whatever the number of processes, and a cursor saved by N
  processes resumes on M (``load_state_dict`` converts it; M must divide the rows consumed).
* ``example_seeds=True`` adds ``example_seed`` to every example: an int64 seed drawn from
  ``(seed, e, r)``, for randomness applied later, on the batch (ELECTRA's masks and replacement
  samples: ``ElectraPretrainer(..., example_seeds=...)``). Like the objective's, it belongs to
  the example, not to the consumer, batch or process that reads it.

Memory stays bounded: the stream reads one block at a time through a short-lived memory map
(a small LRU cache of blocks), never the whole shard.
"""

from __future__ import annotations

import collections
import concurrent.futures
from concurrent.futures.process import BrokenProcessPool
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.atomic import fsync_dir, write_text_atomic
from ..errors import ConfigError, DataError, OtherDataError
from ..machine import die_with_parent
from .packages import _locked, cache_root
from .sources import Corpus
from .tokenizer_adapter import BatchTokenizer, TokenizerAdapter, adapt_tokenizer  # noqa: F401 (shards.BatchTokenizer too)
from .worker_order import round_robin as _round_robin  # noqa: F401 (shards._round_robin too)

FORMAT_VERSION = 1
MAX_DOCUMENT_TOKENS = 65536  # t5 span_corruption: select_random_chunk(max_length=65536)


# =============================================================================================
# Shards on disk
# =============================================================================================
def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536), else uint32: half the disk and page cache."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


class TokenShards:
    """A complete shard directory (one with ``index.json``); read-only.

    ``document(i)`` gives the ids of document ``i`` (memory-mapped); the streaming dataset uses
    :meth:`offsets` and :meth:`read` to fetch whole blocks.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        index_path = self.directory / "index.json"
        if not index_path.is_file():
            raise DataError(f"{self.directory}: not a complete token-shard directory (no index.json); "
                            f"build it with build_shards()")
        self.index = json.loads(index_path.read_text())
        if self.index.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{index_path}: shard format version {self.index.get('format_version')}, "
                            f"this t5electra reads version {FORMAT_VERSION}; rebuild the shards")
        self.dtype = np.dtype(self.index["dtype"])
        self.shards: list[dict] = self.index["shards"]
        self._doc_starts = np.cumsum([0] + [s["documents"] for s in self.shards])

    # --- metadata -------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self.index["key"]

    @property
    def num_documents(self) -> int:
        return int(self._doc_starts[-1])

    @property
    def num_tokens(self) -> int:
        return int(sum(s["tokens"] for s in self.shards))

    @property
    def vocab_size(self) -> int:
        return int(self.index["vocab_size"])

    def __len__(self) -> int:
        return self.num_documents

    def __repr__(self) -> str:
        return (f"TokenShards({str(self.directory)!r}, shards={len(self.shards)}, "
                f"documents={self.num_documents}, tokens={self.num_tokens}, dtype={self.dtype.name})")

    # --- reading --------------------------------------------------------------------------
    def offsets(self, shard: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """int64 starts of the documents of a shard (``documents + 1`` entries), or a slice of them.

        Read through a memory map and copied, so fetching a block's few offsets costs a few pages,
        not the whole file.
        """
        mm = np.load(self.directory / f"{self.shards[shard]['name']}.offsets.npy", mmap_mode="r")
        out = np.array(mm[start:stop])
        del mm
        return out

    def memmap(self, shard: int) -> np.memmap:
        """The token array of a shard, memory-mapped read-only."""
        path = self.directory / f"{self.shards[shard]['name']}.tokens"
        if self.shards[shard]["tokens"] == 0:
            return np.zeros(0, dtype=self.dtype)  # np.memmap cannot map an empty file
        return np.memmap(path, dtype=self.dtype, mode="r", shape=(self.shards[shard]["tokens"],))

    def read(self, shard: int, spans: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Copies of ``tokens[a:b]`` for each span of one shard, through a short-lived map.

        The map is dropped before returning, so pages read do not stay in this process's
        resident memory.
        """
        mm = self.memmap(shard)
        out = [np.array(mm[a:b]) for a, b in spans]
        del mm
        return out

    def document(self, i: int) -> np.ndarray:
        """Token ids of document ``i`` (0-based over all shards)."""
        if not 0 <= i < self.num_documents:
            raise IndexError(f"document {i} out of range: {self.num_documents} documents in {self.directory}")
        shard = int(np.searchsorted(self._doc_starts, i, side="right") - 1)
        j = i - int(self._doc_starts[shard])
        a, b = self.offsets(shard, j, j + 2)
        return self.read(shard, [(int(a), int(b))])[0]

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(self.num_documents):
            yield self.document(i)

    def damaged(self) -> tuple[int, str] | None:
        """The first shard whose files are missing or not the size the index records, and what is
        wrong; None when all are there (a few stat calls: no token is read)."""
        for i, meta in enumerate(self.shards):
            tokens, offsets = (self.directory / f"{meta['name']}{ext}" for ext in (".tokens", ".offsets.npy"))
            try:
                size, n = tokens.stat().st_size, np.load(offsets, mmap_mode="r").shape[0]
            except (OSError, ValueError) as e:  # missing, or an offsets file cut short
                return i, f"{Path(getattr(e, 'filename', None) or offsets).name}: {getattr(e, 'strerror', None) or e}"
            if (size, n) != (meta["tokens"] * self.dtype.itemsize, meta["documents"] + 1):
                return i, (f"{meta['name']} holds {size} bytes of tokens and {n} offsets, the index records "
                           f"{meta['tokens'] * self.dtype.itemsize} and {meta['documents'] + 1}")
        return None


# --- building -------------------------------------------------------------------------------
_WORKER: dict[str, Any] = {}


def _init_worker(encode: Callable, dtype: str, vocab_size: int, in_process: bool = False,
                 parent_pid: int | None = None) -> None:
    if not in_process:
        # One tokenizer per process already; Rust-side thread pools would only oversubscribe the cores.
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    if parent_pid is not None:
        # A killed parent (SIGKILL, OOM) leaves its pool's workers waiting on the task queue forever,
        # each holding a tokenizer (measured: orphans asleep under init); end them with it.
        die_with_parent(parent_pid)
    _WORKER.update(encode=encode, dtype=np.dtype(dtype), vocab_size=vocab_size)


def _encode_chunk(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Worker: texts -> (all ids back to back, per-document lengths)."""
    ids = _WORKER["encode"](texts)
    if len(ids) != len(texts):
        raise DataError(f"tokenizer returned {len(ids)} id lists for {len(texts)} texts")
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    if ids and all(isinstance(x, np.ndarray) for x in ids):  # an encoder may return arrays
        flat = np.concatenate(ids).astype(np.int64)
    else:
        flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    if flat.size and (flat.min() < 0 or flat.max() >= _WORKER["vocab_size"]):
        bad = int(flat.max()) if flat.max() >= _WORKER["vocab_size"] else int(flat.min())
        raise DataError(f"tokenizer produced id {bad}, outside the vocabulary [0, {_WORKER['vocab_size']})")
    return flat.astype(_WORKER["dtype"]), lengths


def _chunks(docs: Iterator[str], docs_per_chunk: int, chars_per_chunk: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    chars = 0
    for doc in docs:
        chunk.append(doc)
        chars += len(doc)
        if len(chunk) >= docs_per_chunk or chars >= chars_per_chunk:
            yield chunk
            chunk, chars = [], 0
    if chunk:
        yield chunk


class _ShardWriter:
    """Appends encoded chunks to the current shard; finishes a shard atomically."""

    def __init__(self, directory: Path, dtype: np.dtype, shard_tokens: int, first_shard: int):
        self.directory, self.dtype, self.shard_tokens = directory, dtype, shard_tokens
        self.index = first_shard
        self._open()

    def _open(self) -> None:
        self.name = f"shard_{self.index:05d}"
        self.fh = open(self.directory / f"{self.name}.tokens.tmp", "wb")
        self.lengths: list[np.ndarray] = []
        self.tokens = 0
        self.source_documents = 0

    def discard(self) -> None:
        """After a failure: close and remove the unfinished shard (a rerun resumes after the complete
        ones; the piece would be deleted then anyway)."""
        self.fh.close()
        (self.directory / f"{self.name}.tokens.tmp").unlink(missing_ok=True)

    def add(self, flat: np.ndarray, lengths: np.ndarray, n_source: int) -> None:
        keep = lengths > 0  # a text that tokenises to nothing is not a document
        self.fh.write(flat.tobytes())
        self.lengths.append(lengths[keep])
        self.tokens += int(flat.size)
        self.source_documents += n_source
        if self.tokens >= self.shard_tokens:
            self.finish()
            self._open()

    def finish(self) -> dict | None:
        """Close the current shard: tokens and offsets renamed into place, then its json."""
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        tmp_tokens = self.directory / f"{self.name}.tokens.tmp"
        if self.source_documents == 0:
            tmp_tokens.unlink()
            return None
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        with open(self.directory / f"{self.name}.offsets.npy.tmp", "wb") as fh:
            np.save(fh, offsets)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp_tokens, self.directory / f"{self.name}.tokens")  # both fsynced above; the
        os.replace(self.directory / f"{self.name}.offsets.npy.tmp", self.directory / f"{self.name}.offsets.npy")
        fsync_dir(self.directory)                                       # json below makes it count
        meta = {"name": self.name, "documents": int(lengths.size), "tokens": self.tokens,
                "source_documents": self.source_documents}
        write_text_atomic(self.directory / f"{self.name}.json", json.dumps(meta))  # the shard counts from here on
        self.index += 1
        return meta


def _complete_shards(directory: Path) -> list[dict]:
    """Shards 0..m-1 that finished (their json exists); everything else there is debris."""
    done = []
    for i in itertools.count():
        meta = directory / f"shard_{i:05d}.json"
        if not meta.is_file():
            break
        done.append(json.loads(meta.read_text()))
    keep = {f"{m['name']}{ext}" for m in done for ext in (".tokens", ".offsets.npy", ".json")}
    for f in directory.iterdir():
        if f.name.startswith("shard_") and f.name not in keep:
            f.unlink()  # temporary files and pieces of an unfinished shard
    return done


def shard_cache_key(corpus: Corpus, adapter: TokenizerAdapter, shard_tokens: int) -> str:
    """Hash of the corpus content + options, the tokenizer fingerprint and the layout."""
    payload = {"format_version": FORMAT_VERSION, "corpus": corpus.fingerprint(),
               "tokenizer": adapter.fingerprint, "vocab_size": adapter.vocab_size, "shard_tokens": shard_tokens}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def build_shards(corpus: Corpus | str | os.PathLike | Sequence[str | os.PathLike], tokenizer: Any,
                 cache_dir: str | os.PathLike | None = None, *, num_workers: int | None = None,
                 docs_per_chunk: int = 512, chars_per_chunk: int = 1 << 21, shard_tokens: int = 1 << 26,
                 fingerprint: str | None = None, vocab_size: int | None = None,
                 mp_context: str | None = None) -> TokenShards:
    """Tokenise ``corpus`` into shards under ``cache_dir`` (once; later calls reuse them).

    Args:
        corpus: a :class:`Corpus`, or paths (read with the default options).
        tokenizer: anything :func:`adapt_tokenizer` accepts.
        cache_dir: where shard directories live (default ``$T5ELECTRA_CACHE/shards``).
        num_workers: tokeniser processes (default: CPU count, at most 8); 0 tokenises in this process.
        docs_per_chunk / chars_per_chunk: a chunk sent to a worker ends at either limit.
        shard_tokens: a shard is closed once it holds at least this many tokens.
        fingerprint / vocab_size: passed to :func:`adapt_tokenizer`.
        mp_context: multiprocessing start method (default ``fork`` where available, which needs
            no pickling of the tokenizer).

    Returns the :class:`TokenShards`. Safe to call from several processes at once (a file lock
    makes one build while the others wait), and resumable after a crash or a kill.
    """
    if not isinstance(corpus, Corpus):
        corpus = Corpus(corpus)
    adapter = adapt_tokenizer(tokenizer, fingerprint=fingerprint, vocab_size=vocab_size)
    if shard_tokens < 1:
        raise ConfigError(f"shard_tokens must be >= 1, got {shard_tokens}")
    root = Path(cache_dir) if cache_dir is not None else cache_root() / "shards"
    key = shard_cache_key(corpus, adapter, shard_tokens)
    directory = root / key[:24]
    if (directory / "index.json").is_file() and TokenShards(directory).damaged() is None:
        return TokenShards(directory)
    with _locked(directory):
        if (directory / "index.json").is_file():
            damaged = TokenShards(directory).damaged()
            if damaged is None:
                return TokenShards(directory)
            warnings.warn(f"{directory}: the token-shard cache is damaged ({damaged[1]}): shard {damaged[0]} and those "
                          f"after it are tokenised again", UserWarning, stacklevel=2)
            (directory / "index.json").unlink()  # and shard damaged[0]'s json: from there on, debris to rebuild
            (directory / f"shard_{damaged[0]:05d}.json").unlink(missing_ok=True)
        _build_locked(corpus, adapter, directory, key, num_workers, docs_per_chunk, chars_per_chunk,
                      shard_tokens, mp_context)
    return TokenShards(directory)


def _build_locked(corpus: Corpus, adapter: TokenizerAdapter, directory: Path, key: str, num_workers: int | None,
                  docs_per_chunk: int, chars_per_chunk: int, shard_tokens: int, mp_context: str | None) -> None:
    dtype = token_dtype(adapter.vocab_size)
    done = _complete_shards(directory)
    skip = sum(m["source_documents"] for m in done)  # documents already in complete shards
    writer = _ShardWriter(directory, dtype, shard_tokens, first_shard=len(done))
    docs = itertools.islice(iter(corpus), skip, None)
    chunks = _chunks(docs, docs_per_chunk, chars_per_chunk)
    if num_workers is None:
        num_workers = min(os.cpu_count() or 1, 8)
    try:
        if num_workers == 0:
            _init_worker(adapter.encode, dtype.str, adapter.vocab_size, in_process=True)
            for chunk in chunks:
                flat, lengths = _encode_chunk(chunk)
                writer.add(flat, lengths, len(chunk))
        else:
            _encode_parallel(chunks, adapter, dtype, writer, num_workers, mp_context)
        writer.finish()
    except BrokenProcessPool:
        writer.discard()
        raise DataError(f"a tokenizer worker process died while building {directory}; the complete "
                        f"shards are kept and a rerun resumes after them") from None
    except BaseException:
        writer.discard()
        raise
    shards = _complete_shards(directory)
    if not any(m["documents"] for m in shards):
        raise DataError(f"empty corpus: the tokenizer produced no tokens for {corpus!r}")
    index = {
        "format_version": FORMAT_VERSION, "key": key, "dtype": dtype.name, "vocab_size": adapter.vocab_size,
        "tokenizer_fingerprint": adapter.fingerprint, "corpus": [str(p) for p in corpus.paths],
        "corpus_options": corpus.options(), "documents": sum(m["documents"] for m in shards),
        "source_documents": sum(m["source_documents"] for m in shards),
        "tokens": sum(m["tokens"] for m in shards), "replaced_utf8_sequences": corpus.stats.replaced_bytes,
        "shards": shards,
    }
    write_text_atomic(directory / "index.json", json.dumps(index, indent=1))


def _encode_parallel(chunks: Iterator[list[str]], adapter: TokenizerAdapter, dtype: np.dtype,
                     writer: _ShardWriter, num_workers: int, mp_context: str | None) -> None:
    """Ordered, bounded: at most 2 chunks per worker in flight (Pool.imap would read ahead unboundedly)."""
    method = mp_context or ("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    ctx = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(num_workers, mp_context=ctx, initializer=_init_worker,
                                                initargs=(adapter.encode, dtype.str, adapter.vocab_size, False,
                                                          os.getpid())) as pool:
        pending: collections.deque = collections.deque()
        try:
            for chunk in chunks:
                pending.append((pool.submit(_encode_chunk, chunk), len(chunk)))
                if len(pending) >= 2 * num_workers:
                    future, n = pending.popleft()
                    writer.add(*future.result(), n)
            while pending:
                future, n = pending.popleft()
                writer.add(*future.result(), n)
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


# =============================================================================================
# Streaming: packed rows over the shards
# =============================================================================================
def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


# Distinct first words keep the random streams of different purposes independent.
_BLOCK_ORDER, _BLOCK_DOCS, _ROW_WINDOW, _ROW_TRANSFORM, _ROW_SEED = 1, 2, 3, 4, 5


def _dist_env(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """rank/world size from the arguments, else torchrun's RANK/WORLD_SIZE, else (0, 1)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else int(rank)
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else int(world_size)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"invalid distributed setting: rank={rank}, world_size={world_size}")
    return rank, world_size


def _describe(obj: Any) -> str:
    """A description that is stable across processes (no memory addresses)."""
    text = repr(obj)
    if " at 0x" in text:
        text = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"
    return text


class PackedDataset(torch.utils.data.IterableDataset):
    """Fixed-length examples packed from token shards; see the module docstring for the recipe.

    Args:
        shards: a :class:`TokenShards` or its directory.
        row_length: tokens per example. T5: the raw length fed to the objective
            (``SpanCorruption(...).raw_length``, 568 for inputs of 512). ELECTRA: ``max_length``
            including [CLS] and [SEP].
        packing: ``"t5"`` (rows are slices of the document stream, then ``transform``) or
            ``"electra"`` (``[CLS] slice [SEP]``, padded; slices never start or end with [SEP]).
        transform: ``f(row_ids, rng) -> dict`` applied to each row (an objective from
            ``objectives.py``); default: ``{"input_ids": row}`` (+ ``attention_mask`` for ELECTRA).
        seed: the seed of every shuffle and every objective draw.
        num_epochs: ``None`` streams forever (epochs follow each other); else stop after that many.
        rank, world_size: this process's share; default from torchrun's RANK / WORLD_SIZE.
        eos_token_id: T5: appended after every document (``None``: documents touch, as in t5).
        cls_token_id, sep_token_id, pad_token_id: ELECTRA packing ids.
        max_document_tokens: longer documents contribute one random chunk of this length.
        block_tokens: documents are shuffled within blocks of about this many tokens, blocks among themselves.
        shuffle: False keeps the corpus order (blocks, documents and rows).
        shuffle_window_rows: rows are also shuffled within windows of this many rows.
        drop_remainder: drop the rows that would give some consumers one more row than others.
        example_seeds: add ``example_seed`` (an int64 in [0, 2**63) from ``(seed, epoch, row)``) to
            every example, for randomness drawn on the batch later (ELECTRA masking).
    """

    def __init__(self, shards: TokenShards | str | os.PathLike, *, row_length: int, packing: str = "t5",
                 transform: Callable[[np.ndarray, np.random.Generator], dict] | None = None, seed: int = 0,
                 num_epochs: int | None = None, rank: int | None = None, world_size: int | None = None,
                 eos_token_id: int | None = None, cls_token_id: int | None = None, sep_token_id: int | None = None,
                 pad_token_id: int = 0, max_document_tokens: int = MAX_DOCUMENT_TOKENS, block_tokens: int = 1 << 16,
                 shuffle: bool = True, shuffle_window_rows: int = 1024, drop_remainder: bool = False,
                 example_seeds: bool = False):
        super().__init__()
        self.shards = shards if isinstance(shards, TokenShards) else TokenShards(shards)
        if packing not in ("t5", "electra"):
            raise ConfigError(f"packing must be 't5' or 'electra', got {packing!r}")
        if packing == "electra" and (cls_token_id is None or sep_token_id is None):
            raise ConfigError("ELECTRA packing needs cls_token_id and sep_token_id")
        min_row = 3 if packing == "electra" else 1
        if row_length < min_row:
            raise ConfigError(f"row_length must be >= {min_row} for {packing} packing, got {row_length}")
        if num_epochs is not None and num_epochs < 1:
            raise ConfigError(f"num_epochs must be None (forever) or >= 1, got {num_epochs}")
        self.row_length, self.packing, self.transform, self.seed = row_length, packing, transform, int(seed)
        self.num_epochs = num_epochs
        self.rank, self.world_size = _dist_env(rank, world_size)
        self.eos_token_id, self.cls_token_id, self.sep_token_id = eos_token_id, cls_token_id, sep_token_id
        self.pad_token_id = pad_token_id
        self.max_document_tokens, self.block_tokens = int(max_document_tokens), int(block_tokens)
        self.shuffle, self.shuffle_window_rows, self.drop_remainder = shuffle, int(shuffle_window_rows), drop_remainder
        self.example_seeds = bool(example_seeds)
        # ELECTRA keeps two slots per row for [CLS] and [SEP].
        self.stream_row_length = row_length - 2 if packing == "electra" else row_length
        self.separator = sep_token_id if packing == "electra" else eos_token_id
        self._build_blocks()
        # Cursor: rows already delivered by each local consumer (one per DataLoader worker), and
        # which consumer's batch comes next (a resumed DataLoader starts its round robin there).
        self._rows_done: list[int] = [0]
        self._phase = 0
        self._cache: collections.OrderedDict = collections.OrderedDict()

    # --- static layout ----------------------------------------------------------------------
    def _build_blocks(self) -> None:
        """Group consecutive documents of each shard into blocks of about block_tokens stream tokens."""
        sep = int(self.separator is not None)
        shard_ids, doc0, doc1, lengths = [], [], [], []
        for s in range(len(self.shards.shards)):
            off = self.shards.offsets(s)
            if len(off) < 2:
                continue
            eff = np.minimum(np.diff(off), self.max_document_tokens) + sep   # stream tokens per document
            start = np.cumsum(eff) - eff
            block_of_doc = start // self.block_tokens
            cut = np.flatnonzero(np.diff(block_of_doc)) + 1
            firsts = np.concatenate([[0], cut])
            lasts = np.concatenate([cut, [len(eff)]])
            sums = np.add.reduceat(eff, firsts)
            shard_ids.append(np.full(len(firsts), s))
            doc0.append(firsts)
            doc1.append(lasts)
            lengths.append(sums)
        self._b_shard = np.concatenate(shard_ids).astype(np.int64)
        self._b_doc0 = np.concatenate(doc0).astype(np.int64)
        self._b_doc1 = np.concatenate(doc1).astype(np.int64)
        self._b_len = np.concatenate(lengths).astype(np.int64)
        self.stream_tokens = int(self._b_len.sum())  # per epoch: fixed, whatever the shuffle
        self.rows_per_epoch = self.stream_tokens // self.stream_row_length
        if self.rows_per_epoch == 0:
            raise DataError(f"corpus too small: {self.stream_tokens} tokens per epoch make no row of "
                            f"{self.stream_row_length} tokens ({self.shards.directory})")

    def signature(self) -> dict:
        """What a saved cursor must agree with to be meaningful for this dataset."""
        return {"shards": self.shards.key, "row_length": self.row_length, "packing": self.packing,
                "seed": self.seed, "eos_token_id": self.eos_token_id, "cls_token_id": self.cls_token_id,
                "sep_token_id": self.sep_token_id, "max_document_tokens": self.max_document_tokens,
                "block_tokens": self.block_tokens, "shuffle": self.shuffle,
                "shuffle_window_rows": self.shuffle_window_rows, "drop_remainder": self.drop_remainder,
                "transform": _describe(self.transform), "rank": self.rank, "world_size": self.world_size}

    def rows_per_stream_epoch(self, K: int) -> int:
        """Stream positions per epoch for ``K`` consumers (drop_remainder: a multiple of K)."""
        return self.rows_per_epoch - (self.rows_per_epoch % K if self.drop_remainder else 0)

    # --- the epoch stream -------------------------------------------------------------------
    def _epoch_layout(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(block order, cumulative start of each block in the stream) for an epoch; cached."""
        key = ("layout", epoch)
        if key not in self._cache:
            n = len(self._b_len)
            order = _rng(_BLOCK_ORDER, self.seed, epoch).permutation(n) if self.shuffle else np.arange(n)
            starts = np.concatenate([[0], np.cumsum(self._b_len[order])])
            self._cache_put(key, (order, starts), limit=False)
        return self._cache[key]

    def _cache_put(self, key, value, limit: bool = True) -> None:
        self._cache[key] = value
        if limit:
            # Keep enough blocks to cover a shuffle window (+ slack) so each block is read once per epoch.
            window_tokens = self.shuffle_window_rows * self.stream_row_length
            keep = 4 + math.ceil(window_tokens / max(self.block_tokens, 1))
            blocks = [k for k in self._cache if k[0] == "block"]
            for k in blocks[:-keep] if len(blocks) > keep else []:
                del self._cache[k]
        layouts = [k for k in self._cache if k[0] == "layout"]
        for k in layouts[:-2]:
            del self._cache[k]

    def _block(self, epoch: int, b: int) -> np.ndarray:
        """Stream tokens of block ``b`` in epoch ``epoch``: its documents shuffled, chunked, separated."""
        key = ("block", epoch, b)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        shard, d0, d1 = int(self._b_shard[b]), int(self._b_doc0[b]), int(self._b_doc1[b])
        off = self.shards.offsets(shard, d0, d1 + 1)
        lengths = np.diff(off)
        rng = _rng(_BLOCK_DOCS, self.seed, epoch, b)
        order = rng.permutation(len(lengths)) if self.shuffle else np.arange(len(lengths))
        spans = []
        for i in order:
            a, n = int(off[i]), int(lengths[i])
            if n > self.max_document_tokens:  # t5 select_random_chunk: one random chunk of a long document
                a += int(rng.integers(0, n - self.max_document_tokens + 1))
                n = self.max_document_tokens
            spans.append((a, a + n))
        pieces = self.shards.read(shard, spans)
        if self.separator is not None:
            sep = np.array([self.separator], dtype=self.shards.dtype)
            pieces = [p for piece in pieces for p in (piece, sep)]
        tokens = np.concatenate(pieces)
        self._cache_put(key, tokens)
        return tokens

    def _row_index(self, epoch: int, p: int) -> int:
        """Row at shuffled position ``p``: rows are permuted within windows of shuffle_window_rows."""
        W = self.shuffle_window_rows
        if not self.shuffle or W <= 1:
            return p
        w = p // W
        key = ("window", epoch, w)
        if key not in self._cache:
            size = min(W, self.rows_per_epoch - w * W)
            for k in [k for k in self._cache if k[0] == "window"]:
                del self._cache[k]
            self._cache[key] = _rng(_ROW_WINDOW, self.seed, epoch, w).permutation(size)
        return w * W + int(self._cache[key][p - w * W])

    def row_tokens(self, epoch: int, r: int) -> np.ndarray:
        """Stream tokens ``[r * L, (r + 1) * L)`` of an epoch (L = stream_row_length)."""
        order, starts = self._epoch_layout(epoch)
        lo, hi = r * self.stream_row_length, (r + 1) * self.stream_row_length
        i = int(np.searchsorted(starts, lo, side="right") - 1)
        pieces = []
        while lo < hi:
            block = self._block(epoch, int(order[i]))
            a = lo - int(starts[i])
            take = min(hi - lo, len(block) - a)
            pieces.append(block[a:a + take])
            lo += take
            i += 1
        return np.concatenate(pieces).astype(np.int64) if len(pieces) > 1 else pieces[0].astype(np.int64)

    def example(self, epoch: int, r: int) -> dict[str, np.ndarray]:
        """The example built from row ``r`` of ``epoch`` (what some consumer yields for it)."""
        ex = self._example(epoch, r)
        if self.example_seeds:
            ex["example_seed"] = np.int64(_rng(_ROW_SEED, self.seed, epoch, r).integers(2**63))
        return ex

    def _example(self, epoch: int, r: int) -> dict[str, np.ndarray]:
        row = self.row_tokens(epoch, r)
        if self.packing == "electra":
            if len(row) and row[0] == self.sep_token_id:
                row = row[1:]
            if len(row) and row[-1] == self.sep_token_id:
                row = row[:-1]
            ids = np.full(self.row_length, self.pad_token_id, dtype=np.int64)
            n = len(row) + 2
            ids[0], ids[1:n - 1], ids[n - 1] = self.cls_token_id, row, self.sep_token_id
            attention_mask = (np.arange(self.row_length) < n).astype(np.int64)
            if self.transform is None:
                return {"input_ids": ids, "attention_mask": attention_mask}
            row = ids
        if self.transform is None:
            return {"input_ids": row}
        return self.transform(row, _rng(_ROW_TRANSFORM, self.seed, epoch, r))

    def __getstate__(self) -> dict:
        # DataLoader workers get a copy: leave the block cache behind, they build their own.
        state = dict(self.__dict__)
        state["_cache"] = collections.OrderedDict()
        return state

    # --- sharing out the rows -----------------------------------------------------------------
    def rows_for_consumer(self, k: int, K: int, epochs: int = 1) -> int:
        """How many rows consumer ``k`` of ``K`` gets in the first ``epochs`` epochs (positions k, k+K, ...)."""
        return len(range(k, self.rows_per_stream_epoch(K) * epochs, K))

    def _consumer(self) -> tuple[int, int, int, int]:
        """(local worker id, local workers, global consumer id, global consumers)."""
        info = torch.utils.data.get_worker_info()
        if info is None:
            return 0, 1, self.rank, self.world_size
        # A resumed DataLoader asks worker 0 first: it plays the consumer whose turn it is.
        w = (info.id + self._phase) % info.num_workers
        return w, info.num_workers, self.rank * info.num_workers + w, self.world_size * info.num_workers

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        w, W, k, K = self._consumer()
        if len(self._rows_done) != W:
            if any(self._rows_done):
                raise ConfigError(f"the data cursor was saved with {len(self._rows_done)} DataLoader worker(s) "
                                  f"per rank, this run uses {W}; resume with the same num_workers")
            self._rows_done = [0] * W
        # A finite pass (num_epochs: an evaluation) gives a consumer without rows nothing: the others
        # have them (a validation set of fewer rows than processes). An endless one needs rows for all.
        end = None if self.num_epochs is None else self.rows_for_consumer(k, K, self.num_epochs)
        if end is None and self.rows_for_consumer(k, K) == 0:
            raise DataError(f"corpus too small: {self.rows_per_epoch} rows per epoch for {K} consumers "
                            f"(ranks x DataLoader workers); use fewer workers or a shorter row_length")
        per_epoch = self.rows_per_stream_epoch(K)  # stream positions per epoch
        n = self._rows_done[w]
        in_main = torch.utils.data.get_worker_info() is None
        while end is None or n < end:
            epoch, j = divmod(k + n * K, per_epoch)  # the n-th row of consumer k: stream position k + n K
            r = self._row_index(epoch, j)
            ex = self.example(epoch, r)
            n += 1
            if in_main:
                self._rows_done[w] = n  # counted when handed out: the cursor follows consumption
            yield ex

    # --- cursor -------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """The cursor: rows delivered per local consumer, and what they refer to."""
        return {"format_version": FORMAT_VERSION, "rows_done": list(self._rows_done), "next_worker": self._phase,
                "signature": self.signature()}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly after the rows counted in ``state`` (from :meth:`state_dict`)."""
        try:
            saved, rows = state["signature"], state["rows_done"]
        except (KeyError, TypeError):
            raise ConfigError("not a PackedDataset state dict (needs 'signature' and 'rows_done')") from None
        mine = self.signature()
        diff = [f"{k}: saved {saved.get(k)!r}, now {mine[k]!r}" for k in mine
                if saved.get(k) != mine[k] and k not in ("rank", "world_size")]
        if diff:
            raise OtherDataError("the data cursor belongs to a different dataset; " + "; ".join(diff))
        rows = [int(x) for x in rows]
        saved_ws = int(saved.get("world_size", self.world_size))
        if saved_ws != self.world_size:
            # Every rank consumed as many rows as the saved one (rank 0's): positions [0, n * saved_ws)
            # of the stream are done, which M ranks continue from position n * saved_ws / M each.
            done = rows[0] * saved_ws if len(rows) == 1 else -1
            if done < 0 or self.drop_remainder or done % self.world_size:
                why = ("it was saved with DataLoader workers (data.num_workers > 0)" if done < 0 else
                       "drop_remainder makes the epochs depend on it" if self.drop_remainder else
                       f"{done} rows were consumed, which {self.world_size} processes cannot share evenly")
                raise ConfigError(f"the data cursor was saved by {saved_ws} process(es) and cannot continue on "
                                  f"{self.world_size}: {why}")
            rows = [done // self.world_size]
        self._rows_done = rows
        self._phase = int(state.get("next_worker", 0))
        self._cache.clear()


class StreamingDataLoader(torch.utils.data.DataLoader):
    """A DataLoader over a :class:`PackedDataset` that keeps the dataset's cursor in step.

    DataLoader workers hold copies of the dataset, so the copy in the training process never
    sees what they produced. This loader counts the batches it hands out and, knowing the
    DataLoader's round-robin order, updates ``dataset.state_dict()`` after every batch: save it
    with the checkpoint, ``load_state_dict`` it into a fresh dataset, build a new loader with
    the same ``batch_size`` and ``num_workers``, and the batches continue exactly.
    """

    def __init__(self, dataset: PackedDataset, batch_size: int = 1, *, num_workers: int = 0,
                 drop_last: bool = False, **kwargs: Any):
        if not isinstance(dataset, PackedDataset):
            raise ConfigError(f"StreamingDataLoader needs a PackedDataset, got {type(dataset).__name__}")
        if kwargs.get("persistent_workers"):
            raise ConfigError("StreamingDataLoader: persistent_workers would keep stale cursors in the workers")
        if kwargs.get("in_order") is False:
            raise ConfigError("StreamingDataLoader: in_order=False makes the cursor unknowable")
        if batch_size is None or batch_size < 1:
            raise ConfigError(f"StreamingDataLoader: batch_size must be >= 1, got {batch_size}")
        super().__init__(dataset, batch_size=batch_size, num_workers=num_workers, drop_last=drop_last, **kwargs)

    def check_cursor(self) -> None:
        """Refuse a data cursor this loader cannot continue (saved with another number of workers):
        called by ``__iter__``, and by a resuming recipe before it changes any file of the run."""
        ds: PackedDataset = self.dataset
        if self.num_workers and len(ds._rows_done) != self.num_workers and any(ds._rows_done):
            raise ConfigError(f"the data cursor was saved with {len(ds._rows_done)} DataLoader worker(s) "
                              f"per rank, this loader has {self.num_workers}; resume with the same num_workers")

    def __iter__(self):
        ds: PackedDataset = self.dataset
        if self.num_workers == 0:
            yield from super().__iter__()  # the dataset runs here and counts its own rows
            return
        W, B = self.num_workers, self.batch_size
        self.check_cursor()
        if len(ds._rows_done) != W:
            ds._rows_done = [0] * W
        start, phase = list(ds._rows_done), ds._phase
        K = ds.world_size * W
        # Work in the loader's order: its i-th worker plays consumer (i + phase) % W.
        remaining, totals = [], []
        for i in range(W):
            w = (i + phase) % W
            if ds.num_epochs is None:
                remaining.append(math.inf)
                totals.append(math.inf)
            else:
                rows = ds.rows_for_consumer(ds.rank * W + w, K, ds.num_epochs) - start[w]
                remaining.append(rows)
                totals.append(rows // B if self.drop_last else -(-rows // B))
        for n, batch in enumerate(super().__iter__(), start=1):
            counts, nxt = _round_robin(n, totals)
            done = list(start)
            for i in range(W):
                done[(i + phase) % W] = int(start[(i + phase) % W] + min(counts[i] * B, remaining[i]))
            ds._rows_done, ds._phase = done, (nxt + phase) % W
            yield batch
