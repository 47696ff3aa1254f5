"""The quickstart's demos, measured on held-out sentences (not only on one demo line).

- T5 span filling (:func:`span_filling_eval`): in each sentence one or two runs of whole words
  become sentinels, the pretrained T5 writes the spans, and we count the generated SentencePiece
  pieces that are words: :func:`alphabetic_fraction` (a model that learned only the format of the
  targets writes ``,,,,,``: near 0).
- ELECTRA replaced-token detection (:func:`rtd_auc`): in each sentence one random whole word is
  substituted by a random whole-word entry of the vocabulary; the discriminator's P(replaced) of
  that token against those of every original token gives the ROC AUC (:func:`roc_auc`; 0.5 = no
  separation, 1 = every substituted token above every original one).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import torch


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Area under the ROC curve: P(a random positive scores above a random negative), ties 1/2
    (the Mann-Whitney U statistic over ``len(positive) * len(negative)``)."""
    if not positive or not negative:
        raise ValueError(f"roc_auc needs scores of both classes (got {len(positive)} positive, "
                         f"{len(negative)} negative)")
    scores = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative])
    rank_sum, i = 0.0, 0
    while i < len(scores):  # average ranks (1-based) over runs of tied scores
        j = i
        while j < len(scores) and scores[j][0] == scores[i][0]:
            j += 1
        rank_sum += sum(label for _, label in scores[i:j]) * (i + 1 + j) / 2
        i = j
    n_pos, n_neg = len(positive), len(negative)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def alphabetic_fraction(pieces: Sequence[str]) -> float:
    """Fraction of SentencePiece pieces that are letters only once the word-start mark ``▁`` is
    removed (a bare ``▁`` carries no text and is not counted). 0.0 when nothing is left to count."""
    texts = [p.replace("\u2581", "") for p in pieces]
    texts = [t for t in texts if t]
    return sum(t.isalpha() for t in texts) / len(texts) if texts else 0.0


def word_fraction(texts: Sequence[str]) -> float:
    """Fraction of the whitespace-separated strings of ``texts`` that are words: letters only once
    surrounding punctuation is stripped, and two letters or more (or ``a`` / ``I``). Stricter than
    :func:`alphabetic_fraction`, which counts a plural suffix piece ``s`` as alphabetic: a model
    that writes ``s s.`` into every span has learned frequent pieces, not words. 0.0 when empty."""
    strings = [w for t in texts for w in t.split()]
    cores = [w.strip(".,;:!?\"'()[]-") for w in strings]
    good = sum(c.isalpha() and (len(c) >= 2 or c.lower() in ("a", "i")) for c in cores)
    return good / len(strings) if strings else 0.0


# --------------------------------------------------------------------------------------------
# T5: span filling on held-out sentences
# --------------------------------------------------------------------------------------------
def mask_word_spans(sentence: str, rng: random.Random, spans: int = 2, max_span_words: int = 3) -> tuple[str, list[str]]:
    """``sentence`` with up to ``spans`` runs of 1..``max_span_words`` whole words (separated by at
    least one kept word, as in span corruption) replaced by ``<extra_id_0>``, ``<extra_id_1>``, ...; returns (masked text, the removed spans)."""
    words = sentence.split()
    n = min(spans, max(1, len(words) // 4))
    starts = []
    for start in sorted(rng.sample(range(len(words)), n)) if words else []:
        if not starts or start - starts[-1] >= 2:  # at least one kept word between two spans
            starts.append(start)
    out, removed, i, k = [], [], 0, 0
    while i < len(words):
        if k < len(starts) and i == starts[k]:
            length = min(rng.randint(1, max_span_words), len(words) - i)
            if k + 1 < len(starts):
                length = min(length, starts[k + 1] - i - 1)
            out.append(f"<extra_id_{k}>")
            removed.append(" ".join(words[i:i + length]))
            i, k = i + length, k + 1
        else:
            out.append(words[i])
            i += 1
    return " ".join(out), removed


@torch.no_grad()
def span_filling_eval(model, tokenizer, sentences: Sequence[str], *, seed: int = 0, batch_size: int = 32,
                      max_new_tokens: int = 16, examples: int = 3) -> dict[str, Any]:
    """Mask word spans in each sentence (:func:`mask_word_spans`), let ``model`` (a T5) generate the
    spans greedily, and measure the generated pieces: ``alphabetic`` is :func:`alphabetic_fraction`
    over every generated piece that is not a sentinel or special token; ``words`` is
    :func:`word_fraction` of the decoded spans; ``exact_words`` the fraction of removed words
    written back at their place in the right span."""
    rng = random.Random(seed)
    masked = [mask_word_spans(s, rng) for s in sentences]
    special = set(tokenizer.all_special_ids) | {tokenizer.pad_token_id, tokenizer.eos_token_id}
    sentinel_ids = set(tokenizer.convert_tokens_to_ids([f"<extra_id_{i}>" for i in range(100)]))
    model.eval()
    if hasattr(model, "optimize_for_inference"):  # the exact fast path (column-major, packed decoder weights)
        model.optimize_for_inference("fp32")
    pieces: list[str] = []
    texts: list[str] = []
    hits = total = 0
    shown = []
    for start in range(0, len(masked), batch_size):
        chunk = masked[start:start + batch_size]
        enc = tokenizer([m for m, _ in chunk], padding=True, return_tensors="pt")
        ids = model.generate(enc["input_ids"].to(model.device), enc["attention_mask"].to(model.device),
                             max_new_tokens=max_new_tokens, return_dict_in_generate=False)  # whatever the json says
        for (text, removed), row in zip(chunk, ids.tolist()):
            spans: list[list[int]] = []
            for t in row:
                if t in sentinel_ids:
                    spans.append([])
                elif t == tokenizer.eos_token_id:
                    break
                elif t not in special and spans:
                    spans[-1].append(t)
            for span in spans:  # an id past the tokenizer (padded embedding rows) is a piece, not a word
                pieces += [p if p is not None else "?" for p in tokenizer.convert_ids_to_tokens(span)]
            texts += [tokenizer.decode(s) for s in spans]
            written = [tokenizer.decode(s).split() for s in spans]
            for k, words in enumerate(removed):
                truth = words.split()
                got = written[k] if k < len(written) else []
                hits += sum(a == b for a, b in zip(truth, got))
                total += len(truth)
            if len(shown) < examples:
                shown.append({"input": text, "removed": removed, "generated": [tokenizer.decode(s) for s in spans]})
    return {"sentences": len(sentences), "pieces": len(pieces), "alphabetic": alphabetic_fraction(pieces),
            "words": word_fraction(texts), "exact_words": hits / total if total else 0.0, "examples": shown}


# --------------------------------------------------------------------------------------------
# ELECTRA: replaced-token detection on held-out sentences
# --------------------------------------------------------------------------------------------
def whole_word_ids(tokenizer) -> list[int]:
    """Vocabulary entries that are whole alphabetic words of two letters or more (no ``##``
    continuation, not special)."""
    special = set(tokenizer.all_special_ids)
    vocab = tokenizer.get_vocab()
    return sorted(i for w, i in vocab.items() if i not in special and w.isalpha() and len(w) > 1)


def substitute_one_word(ids: list[int], tokenizer, candidates: Sequence[int], rng: random.Random) -> tuple[list[int], int] | None:
    """``ids`` (a ``[CLS] ... [SEP]`` encoding) with one whole-word token (a token that is a whole
    alphabetic word: neither it nor the next token is a ``##`` piece) replaced by a different random
    entry of ``candidates``; returns (new ids, position), or None if the sentence has no such word."""
    tokens = tokenizer.convert_ids_to_tokens(ids)
    special = set(tokenizer.all_special_ids)
    positions = [i for i, (t, tok) in enumerate(zip(ids, tokens)) if t not in special and tok.isalpha()
                 and (i + 1 >= len(tokens) or not tokens[i + 1].startswith("##"))]
    if not positions:
        return None
    pos = rng.choice(positions)
    new = ids[pos]
    while new == ids[pos]:
        new = rng.choice(candidates)
    return ids[:pos] + [new] + ids[pos + 1:], pos


@torch.no_grad()
def rtd_auc(discriminator, tokenizer, sentences: Sequence[str], *, seed: int = 0, max_length: int = 128,
            batch_size: int = 64) -> dict[str, Any]:
    """One random whole word substituted per sentence (:func:`substitute_one_word`); the ROC AUC of
    the discriminator's P(replaced) for the substituted tokens against every original token
    (special tokens and padding left out), with the mean P(replaced) of each group."""
    rng = random.Random(seed)
    candidates = whole_word_ids(tokenizer)
    rows = []
    for s in sentences:
        ids = tokenizer(s, truncation=True, max_length=max_length)["input_ids"]
        sub = substitute_one_word(ids, tokenizer, candidates, rng)
        if sub is not None:
            rows.append(sub)
    if not rows:
        raise ValueError("rtd_auc: no sentence has a whole word to substitute")
    special = set(tokenizer.all_special_ids)
    pos_scores: list[float] = []
    neg_scores: list[float] = []
    discriminator.eval()
    for start in range(0, len(rows), batch_size):
        chunk = rows[start:start + batch_size]
        T = max(len(ids) for ids, _ in chunk)
        input_ids = torch.tensor([ids + [tokenizer.pad_token_id] * (T - len(ids)) for ids, _ in chunk])
        mask = torch.tensor([[1] * len(ids) + [0] * (T - len(ids)) for ids, _ in chunk])
        probs = discriminator(input_ids=input_ids.to(discriminator.device), attention_mask=mask.to(discriminator.device),
                              return_dict=True).logits.float().sigmoid().cpu()  # whatever config.json says
        for b, (ids, pos) in enumerate(chunk):
            for i, t in enumerate(ids):
                if t in special:
                    continue
                (pos_scores if i == pos else neg_scores).append(float(probs[b, i]))
    return {"sentences": len(rows), "auc": roc_auc(pos_scores, neg_scores),
            "mean_p_substituted": sum(pos_scores) / len(pos_scores),
            "mean_p_original": sum(neg_scores) / len(neg_scores) if neg_scores else 0.0}
