"""Sampling filters: temperature, top-k and nucleus (top-p, https://arxiv.org/abs/1904.09751).

One module, two nucleus rules, each named for what it reproduces:

* :func:`warp_scores` is transformers' own arithmetic (``TemperatureLogitsWarper`` ->
  ``TopKLogitsWarper`` -> ``TopPLogitsWarper`` in ``transformers/generation/logits_process.py``):
  scores sorted ascending, the tail whose cumulative probability is ``<= 1 - top_p`` dropped,
  ``min_tokens_to_keep`` always kept. Seq2seq sampling and beam sampling use it, so their draws
  match transformers' bit for bit (tests/generation/test_generate.py).
* :func:`filter_top_k_top_p` and :func:`sample_top_k` use the "mass before" rule: a token is
  dropped when the more likely tokens before it already reach ``top_p`` (the most likely token
  always stays). The two agree on which tokens survive except for float ties at the boundary.
  Fill-mask sampling filters the full vocabulary with the first; seq2seq sampling without beams
  draws among the top k with the second (an order of magnitude faster on CPU than sorting
  32128 scores per step).

All take ``(N, V)`` scores and leave the caller's tensor unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def warp_scores(scores: Tensor, temperature: float, top_k: int | None, top_p: float,
                min_tokens_to_keep: int = 1) -> Tensor:
    """transformers' temperature -> top-k -> top-p warpers on (N, V) ``scores``: removed
    entries become -inf. ``top_k`` 0/None disables top-k; ties with the k-th score are kept."""
    if temperature != 1.0:
        scores = scores / temperature
    if top_k:
        k = min(max(top_k, min_tokens_to_keep), scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]            # (N, 1) the k-th largest score
        scores = scores.masked_fill(scores < kth, -math.inf)     # ties with the k-th are kept
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=False)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= (1 - top_p)                        # the unlikely tail, outside the nucleus
        drop[..., -min_tokens_to_keep:] = False
        scores = scores.masked_fill(drop.scatter(1, order, drop), -math.inf)
    return scores


def filter_top_k_top_p(logits: Tensor, top_k: int | None, top_p: float | None) -> Tensor:
    """Top-k then nucleus filtering of (N, V) logits with the "mass before" rule: removed
    entries become -inf. ``None`` disables either filter."""
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]              # (N, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the tokens before it already reach top_p (the first one always stays)
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_top_k(scores: Tensor, top_k: int, top_p: float, temperature: float,
                 generator: torch.Generator | None, draw=None) -> Tensor:
    """Draw one token per row among the ``top_k`` (then ``top_p``) of ``scores`` (N, V) -> (N,).
    ``draw(probs)`` (N, 1) picks the candidates; default ``torch.multinomial(probs, 1, generator=generator)``.

    The same distribution as :func:`warp_scores` + a draw over the whole vocabulary, but sorting
    and sampling over k candidates instead of V. (Tokens tied with the k-th score are dropped
    here and kept by ``warp_scores``; with float scores that is immaterial.)
    """
    top_scores, top_ids = torch.topk(scores, min(top_k, scores.shape[-1]))  # (N, k) best first
    if temperature != 1.0:  # relative to the best score: a tiny temperature gives -inf, never inf - inf
        top_scores = (top_scores - top_scores[:, :1]) / temperature
    probs = top_scores.softmax(dim=-1)                                   # renormalised over the top k
    if top_p < 1.0:
        drop = probs.cumsum(dim=-1) - probs >= top_p                     # (N, k) more likely tokens' mass
        drop[:, 0] = False                                               # never the first candidate (top_p
        probs = probs.masked_fill(drop, 0.0)                             # rounds to 0 in fp32 below ~1e-45)
    pick = (torch.multinomial(probs, num_samples=1, generator=generator) if draw is None
            else draw(probs))                                            # (N, 1) in 0..k-1
    return top_ids.gather(1, pick).squeeze(1)
