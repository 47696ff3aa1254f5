"""Token shards (parallel, cached, crash-safe) and the packed streaming dataset (determinism,
rank x worker split, packing, exact resume)."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers

from t5electra.data.objectives import Seq2SeqCollator, SpanCorruption
from t5electra.data.shards import (
    PackedDataset,
    StreamingDataLoader,
    TokenShards,
    _round_robin,
    adapt_tokenizer,
    build_shards,
)
from t5electra.data.sources import Corpus
from t5electra.errors import ConfigError, DataError, InvalidInputError

WORDS = [f"w{i}" for i in range(400)]
SPECIALS = ["<pad>", "</s>", "<unk>", "[CLS]", "[SEP]", "[MASK]"] + [f"<extra_id_{i}>" for i in range(99, -1, -1)]
PAD, EOS, CLS, SEP = 0, 1, 3, 4


def word_level() -> Tokenizer:
    vocab = {t: i for i, t in enumerate(SPECIALS + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tok


class FakeTokenizer:
    """A callable tokenizer: 'wN' -> N + 200; crashes (os._exit) on a marker text in workers."""

    def __init__(self, crash_on: str | None = None, raise_on: str | None = None):
        self.crash_on, self.raise_on, self.calls = crash_on, raise_on, 0

    def __call__(self, texts):
        self.calls += len(texts)
        if self.crash_on in texts:
            os._exit(3)  # a worker killed mid-build
        if self.raise_on in texts:
            raise RuntimeError("simulated crash")
        return [[int(w[1:]) + 200 for w in t.split()] for t in texts]


def fake_adapter(tok):
    return adapt_tokenizer(tok, fingerprint="fake-v1", vocab_size=700, eos_token_id=EOS)


def write_corpus(path, n_docs, seed=0, max_words=40):
    rng = np.random.default_rng(seed)
    docs = [" ".join(rng.choice(WORDS, int(rng.integers(1, max_words)))) for _ in range(n_docs)]
    path.write_text("\n".join(docs) + "\n")
    return docs


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    docs = write_corpus(d / "a.txt", 600, seed=0) + write_corpus(d / "b.txt", 400, seed=1)
    return d, docs


@pytest.fixture(scope="module")
def shards(corpus_dir, tmp_path_factory):
    d, _ = corpus_dir
    return build_shards(Corpus(d), word_level(), tmp_path_factory.mktemp("cache"), num_workers=2,
                        docs_per_chunk=64, shard_tokens=4000)


# --------------------------------------------------------------------------------------------
# Building shards
# --------------------------------------------------------------------------------------------
def test_shards_hold_every_document_in_order(shards, corpus_dir):
    _, docs = corpus_dir
    tok = word_level()
    assert len(shards.shards) > 3 and shards.dtype == np.uint16
    assert shards.num_documents == len(docs)
    for i in (0, 1, 599, 600, 999):
        assert shards.document(i).tolist() == tok.encode(docs[i], add_special_tokens=False).ids
    assert shards.num_tokens == sum(len(d.split()) for d in docs)
    assert not list(shards.directory.glob("*.tmp"))


def test_cache_is_keyed_by_content_and_tokenizer(corpus_dir, tmp_path):
    d, _ = corpus_dir
    tok = FakeTokenizer()
    first = build_shards(Corpus(d), fake_adapter(tok), tmp_path, num_workers=0)
    calls = tok.calls
    again = build_shards(Corpus(d), fake_adapter(tok), tmp_path, num_workers=0)
    assert again.directory == first.directory and tok.calls == calls  # tokenised once
    other_tok = build_shards(Corpus(d), adapt_tokenizer(FakeTokenizer(), fingerprint="fake-v2", vocab_size=700),
                             tmp_path, num_workers=0)
    assert other_tok.directory != first.directory
    other_opts = build_shards(Corpus(d, document_per="paragraph"), fake_adapter(tok), tmp_path, num_workers=0)
    assert other_opts.directory != first.directory


def test_large_vocabularies_use_uint32_and_bad_ids_are_caught(tmp_path):
    (tmp_path / "c.txt").write_text("w1 w2\nw3\n")
    big = adapt_tokenizer(lambda texts: [[70000 + int(w[1:]) for w in t.split()] for t in texts],
                          fingerprint="big", vocab_size=80000)
    s = build_shards(Corpus(tmp_path / "c.txt"), big, tmp_path / "cache", num_workers=0)
    assert s.dtype == np.uint32 and s.document(0).tolist() == [70001, 70002]
    small = adapt_tokenizer(lambda texts: [[70000] for _ in texts], fingerprint="small", vocab_size=100)
    with pytest.raises(DataError, match="outside the vocabulary"):
        build_shards(Corpus(tmp_path / "c.txt"), small, tmp_path / "cache", num_workers=0)


def test_adapters(tmp_path):
    tok = word_level()
    a = adapt_tokenizer(tok)
    assert a.encode(["w1 w2"]) == [[len(SPECIALS) + 1, len(SPECIALS) + 2]]
    assert (a.pad_token_id, a.eos_token_id, a.cls_token_id, a.sep_token_id) == (PAD, EOS, CLS, SEP)
    assert a.fingerprint == adapt_tokenizer(word_level()).fingerprint and a.vocab_size == len(SPECIALS) + 400
    with pytest.raises(InvalidInputError, match="fingerprint="):
        adapt_tokenizer(lambda texts: [[1] for _ in texts], vocab_size=10)
    with pytest.raises(InvalidInputError, match="not a tokenizer"):
        adapt_tokenizer(42)


def test_adapter_for_our_tokenizers(tmp_path):
    from t5electra.tokenizers import ElectraTokenizer

    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello", "world"])}
    tok = ElectraTokenizer(vocab)
    a = adapt_tokenizer(tok)
    assert a.encode(["Hello world"]) == [[5, 6]]  # no [CLS]/[SEP]: packing adds them
    assert (a.cls_token_id, a.sep_token_id, a.pad_token_id) == (2, 3, 0) and a.vocab_size == 7
    assert a.fingerprint == adapt_tokenizer(ElectraTokenizer(vocab)).fingerprint
    assert a.fingerprint != adapt_tokenizer(ElectraTokenizer({**vocab, "extra": 7})).fingerprint


def test_t5_tokenizer_end_to_end(spiece_model_path, tmp_path):
    from t5electra.data.objectives import t5_sentinel_start_id
    from t5electra.tokenizers import T5Tokenizer

    tok = T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes())
    a = adapt_tokenizer(tok)
    text = "Hello world. This is a test."
    assert a.encode([text]) == [tok(text)["input_ids"][:-1]]  # the same ids, without the EOS
    (tmp_path / "c.jsonl").write_text("".join(f'{{"text": "{text} {i}"}}\n' for i in range(200)))
    s = build_shards(Corpus(tmp_path / "c.jsonl"), tok, tmp_path / "cache", num_workers=2)
    obj = SpanCorruption(sentinel_start_id=t5_sentinel_start_id(tok), eos_token_id=a.eos_token_id, inputs_length=32)
    ds = PackedDataset(s, row_length=obj.raw_length, eos_token_id=a.eos_token_id, seed=0, num_epochs=1)
    row = next(iter(ds))["input_ids"]
    assert (row == a.eos_token_id).any()  # EOS closes every document in the stream
    ex = obj(row, np.random.default_rng(0))
    assert ex["labels"][0] == t5_sentinel_start_id(tok) == max(tok.get_sentinel_token_ids())  # <extra_id_0>
    assert len(ex["input_ids"]) == 32 and ex["input_ids"][-1] == ex["labels"][-1] == a.eos_token_id


def test_a_killed_worker_leaves_no_used_half_shard_and_the_rerun_resumes(corpus_dir, tmp_path):
    d, docs = corpus_dir
    crashing = FakeTokenizer(crash_on=docs[700])
    with pytest.raises(DataError, match="worker process died"):
        build_shards(Corpus(d), fake_adapter(crashing), tmp_path, num_workers=2, docs_per_chunk=50,
                     shard_tokens=3000)
    (directory,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert not (directory / "index.json").exists()
    finished = sorted(directory.glob("shard_*.json"))
    assert finished  # shards completed before the crash are kept
    (directory / f"shard_{len(finished):05d}.tokens.tmp").write_bytes(b"\x01\x02\x03")  # a half shard
    with pytest.raises(DataError, match="not a complete token-shard directory"):
        TokenShards(directory)

    resumed_tok = FakeTokenizer()
    resumed = build_shards(Corpus(d), fake_adapter(resumed_tok), tmp_path, num_workers=0, docs_per_chunk=50,
                           shard_tokens=3000)
    assert resumed.directory == directory and not list(directory.glob("*.tmp"))
    assert resumed_tok.calls < len(docs)  # the finished shards were not tokenised again
    clean = build_shards(Corpus(d), fake_adapter(FakeTokenizer()), tmp_path / "clean", num_workers=0,
                         docs_per_chunk=50, shard_tokens=3000)
    assert resumed.num_documents == clean.num_documents == len(docs)
    assert all(np.array_equal(a, b) for a, b in zip(resumed, clean))


def test_an_exception_in_process_also_resumes(corpus_dir, tmp_path):
    d, docs = corpus_dir
    with pytest.raises(RuntimeError, match="simulated"):
        build_shards(Corpus(d), fake_adapter(FakeTokenizer(raise_on=docs[500])), tmp_path, num_workers=0,
                     docs_per_chunk=50, shard_tokens=2000)
    assert not list(tmp_path.rglob("*.tmp"))  # the unfinished shard is not left behind
    s = build_shards(Corpus(d), fake_adapter(FakeTokenizer()), tmp_path, num_workers=0, docs_per_chunk=50,
                     shard_tokens=2000)
    assert s.document(999).tolist() == [int(w[1:]) + 200 for w in docs[999].split()]


def test_empty_corpus_after_tokenisation(tmp_path):
    (tmp_path / "e.txt").write_text("x\n")
    nothing = adapt_tokenizer(lambda texts: [[] for _ in texts], fingerprint="none", vocab_size=5)
    with pytest.raises(DataError, match="empty corpus"):
        build_shards(Corpus(tmp_path / "e.txt"), nothing, tmp_path / "cache", num_workers=0)
    (tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(DataError, match="empty corpus"):
        build_shards(Corpus(tmp_path / "blank.txt"), nothing, tmp_path / "cache", num_workers=0)
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # no debris in the cache


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------
def rows(dataset):
    return [tuple(ex["input_ids"].tolist()) for ex in dataset]


def test_unshuffled_t5_rows_are_the_document_stream(shards):
    ds = PackedDataset(shards, row_length=50, eos_token_id=EOS, shuffle=False, num_epochs=1)
    stream = np.concatenate([np.append(doc, EOS) for doc in shards])
    got = np.concatenate([ex["input_ids"] for ex in ds])
    assert len(got) == ds.rows_per_epoch * 50 == len(stream) // 50 * 50
    np.testing.assert_array_equal(got, stream[:len(got)])


def test_each_epoch_is_a_permutation_of_the_documents(shards):
    ds = PackedDataset(shards, row_length=50, eos_token_id=EOS, seed=3, block_tokens=500)
    for epoch in (0, 1):
        order, _ = ds._epoch_layout(epoch)
        stream = np.concatenate([ds._block(epoch, int(b)) for b in order])
        docs = [tuple(x) for x in np.split(stream, np.flatnonzero(stream == EOS) + 1)[:-1]]
        expected = [tuple(d.tolist()) + (EOS,) for d in shards]
        assert collections.Counter(docs) == collections.Counter(expected)
        assert docs != expected  # shuffled
    assert rows(PackedDataset(shards, row_length=50, eos_token_id=EOS, seed=3, num_epochs=1)) == \
        rows(PackedDataset(shards, row_length=50, eos_token_id=EOS, seed=3, num_epochs=1))
    assert rows(PackedDataset(shards, row_length=50, eos_token_id=EOS, seed=4, num_epochs=1)) != \
        rows(PackedDataset(shards, row_length=50, eos_token_id=EOS, seed=3, num_epochs=1))


def test_long_documents_contribute_one_random_chunk(tmp_path):
    (tmp_path / "l.txt").write_text(" ".join(f"w{i % 400}" for i in range(300)) + "\nw5 w6\n")
    s = build_shards(Corpus(tmp_path / "l.txt"), fake_adapter(FakeTokenizer()), tmp_path / "c", num_workers=0)
    ds = PackedDataset(s, row_length=1, eos_token_id=EOS, max_document_tokens=64, seed=0)
    long_doc = s.document(0)
    for epoch in range(3):
        block = ds._block(epoch, 0)
        assert len(block) == 64 + 1 + 2 + 1
        chunk = block[:64] if block[64] == EOS else block[3:67]
        start = int(np.flatnonzero(long_doc == chunk[0])[0])
        np.testing.assert_array_equal(chunk, long_doc[start:start + 64])


def test_ranks_and_workers_split_the_rows_without_overlap_or_loss(shards):
    def make(**kw):
        return PackedDataset(shards, row_length=37, eos_token_id=EOS, seed=7, num_epochs=1,
                             shuffle_window_rows=16, **kw)

    single = rows(make(rank=0, world_size=1))
    union = []
    for rank in range(2):
        loader = torch.utils.data.DataLoader(make(rank=rank, world_size=2), batch_size=None, num_workers=2)
        union += [tuple(ex["input_ids"].tolist()) for ex in loader]
    assert len(set(single)) == len(single)            # rows are distinct, so equality below is meaningful
    assert collections.Counter(union) == collections.Counter(single)
    even = [make(rank=r, world_size=3, drop_remainder=True) for r in range(3)]
    assert len({len(rows(ds)) for ds in even}) == 1


def test_rank_comes_from_torchrun_environment(shards, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    ds = PackedDataset(shards, row_length=37, eos_token_id=EOS, seed=7, num_epochs=1)
    assert (ds.rank, ds.world_size) == (1, 2)
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ConfigError, match="rank=2, world_size=2"):
        PackedDataset(shards, row_length=37)


def test_electra_rows(shards):
    ds = PackedDataset(shards, row_length=24, packing="electra", cls_token_id=CLS, sep_token_id=SEP,
                       pad_token_id=PAD, seed=1, num_epochs=1)
    n_rows = 0
    for ex in ds:
        ids, mask = ex["input_ids"], ex["attention_mask"]
        n = int(mask.sum())
        assert len(ids) == 24 and ids[0] == CLS and ids[n - 1] == SEP and (ids[n:] == PAD).all()
        assert n >= 22                                   # a document [SEP] at either end is dropped
        assert ids[1] != SEP and ids[n - 2] != SEP       # no [CLS][SEP] or [SEP][SEP]
        n_rows += 1
    assert n_rows == ds.rows_per_epoch


def test_example_seeds_belong_to_the_row_not_to_the_consumer(shards):
    """``example_seeds=True``: each row carries a seed from (seed, epoch, row), the same whoever reads
    it (1 process, 2 ranks, DataLoader workers), distinct across rows and epochs."""
    def make(**kw):
        return PackedDataset(shards, row_length=24, packing="electra", cls_token_id=CLS, sep_token_id=SEP,
                             pad_token_id=PAD, seed=1, num_epochs=2, example_seeds=True, **kw)

    def seeded(dataset):
        return [(tuple(ex["input_ids"].tolist()), int(ex["example_seed"])) for ex in dataset]

    single = seeded(make(rank=0, world_size=1))
    seeds = [s for _, s in single]
    assert len(set(seeds)) == len(seeds) == 2 * make().rows_per_epoch   # both epochs: every row its own
    assert all(0 <= s < 2**63 for s in seeds)
    union = []
    for rank in range(2):
        loader = torch.utils.data.DataLoader(make(rank=rank, world_size=2), batch_size=3, num_workers=2)
        for batch in loader:  # collated: example_seed is an int64 tensor (B,)
            assert batch["example_seed"].dtype == torch.int64
            union += zip(map(tuple, batch["input_ids"].tolist()), batch["example_seed"].tolist())
    assert collections.Counter(union) == collections.Counter(single)
    other = [s for _, s in seeded(PackedDataset(shards, row_length=24, packing="electra", cls_token_id=CLS,
                                                sep_token_id=SEP, pad_token_id=PAD, seed=2, num_epochs=1,
                                                example_seeds=True))]
    assert not set(other) & set(seeds)                 # another train.seed, other seeds
    plain = PackedDataset(shards, row_length=24, packing="electra", cls_token_id=CLS, sep_token_id=SEP,
                          pad_token_id=PAD, seed=1)
    assert set(next(iter(plain))) == {"input_ids", "attention_mask"}  # off by default


def test_span_corruption_rows_have_fixed_lengths(shards):
    obj = SpanCorruption(sentinel_start_id=len(SPECIALS) - 1, eos_token_id=EOS, inputs_length=32)
    ds = PackedDataset(shards, row_length=obj.raw_length, transform=obj, eos_token_id=EOS, seed=0, num_epochs=1)
    lengths = {(len(ex["input_ids"]), len(ex["labels"])) for ex in ds}
    assert lengths == {(32, obj.targets_length)}


def run_loader(ds, n, *, batch_size, num_workers, collate_fn=None):
    loader = StreamingDataLoader(ds, batch_size, num_workers=num_workers, collate_fn=collate_fn)
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out, ds.state_dict()


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resume_continues_exactly(shards, num_workers):
    obj = SpanCorruption(sentinel_start_id=len(SPECIALS) - 1, eos_token_id=EOS, inputs_length=64)

    def make():  # small windows and many batches: the run crosses an epoch boundary
        return PackedDataset(shards, row_length=obj.raw_length, transform=obj, eos_token_id=EOS, seed=5,
                             shuffle_window_rows=8)

    per_epoch = make().rows_per_epoch
    batch_size = 16
    k = per_epoch // batch_size + 3
    full, _ = run_loader(make(), k + 6, batch_size=batch_size, num_workers=num_workers, collate_fn=Seq2SeqCollator())
    first, state = run_loader(make(), k, batch_size=batch_size, num_workers=num_workers, collate_fn=Seq2SeqCollator())
    fresh = make()
    fresh.load_state_dict(state)
    rest, _ = run_loader(fresh, 6, batch_size=batch_size, num_workers=num_workers, collate_fn=Seq2SeqCollator())
    for a, b in zip(full, first + rest, strict=True):
        assert all(torch.equal(a[key], b[key]) for key in ("input_ids", "attention_mask", "labels"))


def test_resume_of_a_finite_stream_near_its_end(shards):
    def make():
        return PackedDataset(shards, row_length=40, eos_token_id=EOS, seed=2, num_epochs=1)

    full, _ = run_loader(make(), 10**6, batch_size=7, num_workers=2)
    first, state = run_loader(make(), len(full) - 3, batch_size=7, num_workers=2)
    fresh = make()
    fresh.load_state_dict(state)
    rest, _ = run_loader(fresh, 10**6, batch_size=7, num_workers=2)
    assert len(rest) == 3
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(full, first + rest, strict=True))


def test_a_cursor_from_another_setup_is_refused(shards):
    ds = PackedDataset(shards, row_length=40, eos_token_id=EOS, seed=2)
    _, state = run_loader(ds, 2, batch_size=4, num_workers=2)
    with pytest.raises(ConfigError, match="seed: saved 2, now 3"):
        PackedDataset(shards, row_length=40, eos_token_id=EOS, seed=3).load_state_dict(state)
    other = PackedDataset(shards, row_length=40, eos_token_id=EOS, seed=2)
    other.load_state_dict(state)
    with pytest.raises(ConfigError, match="same num_workers"):
        run_loader(other, 1, batch_size=4, num_workers=1)


def test_round_robin_bookkeeping():
    inf = float("inf")
    assert _round_robin(5, [inf, inf]) == ([3, 2], 1)
    assert _round_robin(7, [3, 2, 2]) == ([3, 2, 2], 1)
    assert _round_robin(6, [3, 2, 2]) == ([2, 2, 2], 0)
    assert _round_robin(4, [4, 1]) == ([3, 1], 1)   # worker 1 is exhausted: worker 0 continues alone


def test_corpus_too_small_for_the_consumers(tmp_path):
    (tmp_path / "t.txt").write_text("w1 w2 w3\n")
    s = build_shards(Corpus(tmp_path / "t.txt"), fake_adapter(FakeTokenizer()), tmp_path / "c", num_workers=0)
    with pytest.raises(DataError, match="corpus too small"):
        PackedDataset(s, row_length=50, eos_token_id=EOS)
    ds = PackedDataset(s, row_length=2, eos_token_id=EOS, world_size=4, rank=3)
    with pytest.raises(DataError, match="corpus too small: 2 rows per epoch for 4 consumers"):
        next(iter(ds))
    # one finite pass (an evaluation: num_epochs=1): a rank past the rows yields nothing, the others
    # share them (a validation set of fewer rows than processes); was the same DataError on rank 3
    finite = [list(PackedDataset(s, row_length=2, eos_token_id=EOS, world_size=4, rank=r, num_epochs=1, shuffle=False))
              for r in range(4)]
    assert [len(rows) for rows in finite] == [1, 1, 0, 0]
    whole = list(PackedDataset(s, row_length=2, eos_token_id=EOS, num_epochs=1, shuffle=False))
    assert [ex["input_ids"].tolist() for ex in finite[0] + finite[1]] == [ex["input_ids"].tolist() for ex in whole]
    # two epochs: rank 3 gets a row of the second
    assert len(list(PackedDataset(s, row_length=2, eos_token_id=EOS, world_size=4, rank=3, num_epochs=2))) == 1


_POOL_SCRIPT = """
import sys
sys.path.insert(0, {here!r})
from slow_tokenizer import SlowTokenizer
from t5electra.data.shards import adapt_tokenizer, build_shards
from t5electra.data.sources import Corpus
build_shards(Corpus({corpus!r}), adapt_tokenizer(SlowTokenizer(), fingerprint="slow", vocab_size=700, eos_token_id=1),
             {cache!r}, num_workers=2, docs_per_chunk=4)
"""

_SLOW_TOKENIZER = """
import time

class SlowTokenizer:
    def __call__(self, texts):
        time.sleep(300)  # a worker busy on its chunk when the build is killed
        return [[5] for _ in texts]
"""


def test_a_killed_build_takes_its_worker_processes_along(tmp_path):
    """SIGKILL on a process building shards (no cleanup runs in it): its pool's workers end too
    (machine.die_with_parent in the worker initializer), instead of living on under init; found
    orphaned before, asleep on the task queue. Linux, as the project: processes read from /proc."""
    import signal
    import subprocess
    import sys
    import time

    from processes import children, gone

    (tmp_path / "slow_tokenizer.py").write_text(_SLOW_TOKENIZER)
    write_corpus(tmp_path / "c.txt", 40)
    script = _POOL_SCRIPT.format(here=str(tmp_path), corpus=str(tmp_path / "c.txt"), cache=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 60
    while len(children(proc.pid)) < 2 and time.time() < deadline:
        assert proc.poll() is None, "the build ended early"
        time.sleep(0.2)
    workers = children(proc.pid)
    assert len(workers) >= 2
    time.sleep(1.0)  # the workers have taken their chunks (and run their initializer)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while not all(gone(w) for w in workers) and time.time() < deadline:
        time.sleep(0.2)
    alive = [w for w in workers if not gone(w)]
    for w in alive:
        os.kill(w, signal.SIGKILL)
    assert not alive, "shard workers outlived the killed build"


@pytest.mark.parametrize("damage", ["delete tokens", "truncate tokens", "delete offsets", "truncate offsets"])
def test_a_cache_damaged_after_it_was_built_is_rebuilt_not_used(corpus_dir, tmp_path, damage):
    """A complete shard directory whose files were deleted or cut short later (a /tmp cleaner, a bad
    copy): found when build_shards opens it, and the damaged shard and those after it are tokenised
    again (was: used, failing mid-training on the missing file, at every run)."""
    d, docs = corpus_dir
    built = build_shards(Corpus(d), fake_adapter(FakeTokenizer()), tmp_path, num_workers=0, docs_per_chunk=50,
                         shard_tokens=3000)
    assert len(built.shards) > 3 and built.damaged() is None
    name = built.shards[2]["name"]
    path = built.directory / (f"{name}.tokens" if "tokens" in damage else f"{name}.offsets.npy")
    if damage.startswith("delete"):
        path.unlink()
    else:
        path.write_bytes(path.read_bytes()[:100])
    assert TokenShards(built.directory).damaged()[0] == 2
    tok = FakeTokenizer()
    with pytest.warns(UserWarning, match=r"token-shard cache is damaged .*shard 2 and those after it"):
        rebuilt = build_shards(Corpus(d), fake_adapter(tok), tmp_path, num_workers=0, docs_per_chunk=50,
                               shard_tokens=3000)
    assert rebuilt.directory == built.directory and rebuilt.damaged() is None
    assert 0 < tok.calls < len(docs)  # shards 0 and 1 were kept
    clean = build_shards(Corpus(d), fake_adapter(FakeTokenizer()), tmp_path / "clean", num_workers=0,
                         docs_per_chunk=50, shard_tokens=3000)
    assert rebuilt.num_documents == clean.num_documents == len(docs)
    assert all(np.array_equal(a, b) for a, b in zip(rebuilt, clean))
