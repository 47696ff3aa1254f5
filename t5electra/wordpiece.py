"""A WordPiece vocabulary trainer that gives the same vocabulary on every run.

tokenizers' ``WordPieceTrainer`` (the BPE trainer with a ``##`` prefix) numbers the ``##`` pieces
in the iteration order of a hash map, which is seeded per process, and breaks ties between
equally frequent merges by those numbers: two trainings on the same text differ by a few pieces
and by hundreds of ids (huggingface/tokenizers#1794; measured on the quickstart's corpus: 2 of
8,000 pieces and 376-1,958 ids), so a model pretrained on one vocabulary is not the model of the
next run (the quickstart's ELECTRA moved by up to 4 points between runs of one seed).

This is the same algorithm with every order fixed: the words of the corpus are split into
characters (``##`` before each non-initial one), and the most frequent adjacent pair of pieces is
merged into one piece, again and again, until the vocabulary has ``vocab_size`` pieces or no pair
is frequent enough. Ties go to the pair whose pieces sort first as strings; ids are the special
tokens, the alphabet by code point, the ``##`` characters by code point, then the merges in
order. The corpus is counted once into word frequencies (the caller's pre-tokenizer: tokenizers'
BERT normaliser and pre-tokenizer in ``ElectraTokenizer.train``).
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

PREFIX = "##"


def alphabet(word_counts: Mapping[str, int], limit: int | None) -> list[str]:
    """The characters of the words, by code point; with ``limit``, only the ``limit`` most frequent
    (ties: the smaller code point), as tokenizers' ``limit_alphabet``."""
    chars: Counter[str] = Counter()
    for word, n in word_counts.items():
        for c in word:
            chars[c] += n
    kept = list(chars)
    if limit is not None and len(kept) > limit:
        kept = sorted(kept, key=lambda c: (-chars[c], c))[:limit]
    return sorted(kept)


def train_wordpiece(word_counts: Mapping[str, int], vocab_size: int, *, special_tokens: Sequence[str] = (),
                    min_frequency: int = 2, limit_alphabet: int | None = None) -> list[str]:
    """The vocabulary (id = position) learnt from ``word_counts`` (word -> occurrences)."""
    vocab: list[str] = list(dict.fromkeys(special_tokens))
    chars = alphabet(word_counts, limit_alphabet)
    vocab += [c for c in chars if c not in vocab]
    allowed = set(chars)
    continuing = sorted({c for w in word_counts for c in w[1:] if c in allowed})
    vocab += [PREFIX + c for c in continuing if PREFIX + c not in vocab]
    ids = {piece: i for i, piece in enumerate(vocab)}

    # Each distinct word as piece ids (characters outside the alphabet dropped, as tokenizers does).
    words: list[list[int]] = []
    counts: list[int] = []
    for word, n in sorted(word_counts.items()):
        kept = [c for c in word if c in allowed]
        if kept:
            words.append([ids[kept[0]]] + [ids[PREFIX + c] for c in kept[1:]])
            counts.append(n)
    pair_count: Counter[tuple[int, int]] = Counter()
    where: dict[tuple[int, int], set[int]] = {}
    for w, (pieces, n) in enumerate(zip(words, counts)):
        for pair in zip(pieces, pieces[1:]):
            pair_count[pair] += n
            where.setdefault(pair, set()).add(w)
    heap = [(-n, vocab[a], vocab[b], a, b) for (a, b), n in pair_count.items()]
    heapq.heapify(heap)

    while len(vocab) < vocab_size and heap:
        neg, _, _, a, b = heapq.heappop(heap)
        n = pair_count.get((a, b), 0)
        if n != -neg:  # a stale entry: the pair's count went down since it was pushed
            if n > 0:
                heapq.heappush(heap, (-n, vocab[a], vocab[b], a, b))
            continue
        if n < max(min_frequency, 1):
            break
        right = vocab[b][len(PREFIX):] if vocab[b].startswith(PREFIX) else vocab[b]
        piece = vocab[a] + right
        new = ids.get(piece)
        if new is None:
            new = ids[piece] = len(vocab)
            vocab.append(piece)
        grown: set[tuple[int, int]] = set()
        for w in sorted(where.pop((a, b), ())):
            old = words[w]
            merged = _merge(old, a, b, new)
            if merged is old:
                continue
            m = counts[w]
            for pair in zip(old, old[1:]):
                pair_count[pair] -= m
            for pair in zip(merged, merged[1:]):
                pair_count[pair] += m
                grown.add(pair)
                where.setdefault(pair, set()).add(w)
            words[w] = merged
        pair_count.pop((a, b), None)
        for pair in sorted(grown):  # counts that went up must be in the heap with their new value
            if pair_count[pair] > 0 and pair != (a, b):
                heapq.heappush(heap, (-pair_count[pair], vocab[pair[0]], vocab[pair[1]], *pair))
    return vocab


def _merge(pieces: list[int], a: int, b: int, new: int) -> list[int]:
    """``pieces`` with each non-overlapping (a, b), left to right, replaced by ``new``; the same list
    when there is none."""
    out: list[int] = []
    i, found = 0, False
    while i < len(pieces):
        if i + 1 < len(pieces) and pieces[i] == a and pieces[i + 1] == b:
            out.append(new)
            i += 2
            found = True
        else:
            out.append(pieces[i])
            i += 1
    return out if found else pieces


def count_words(texts: Iterable[str], split) -> Counter[str]:
    """Word frequencies of ``texts``; ``split(text)`` gives a text's words (normalised)."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(split(text))
    return counts
