"""BERT/ELECTRA masking: the one implementation, as pure functions on tensors.

The rules follow the official ELECTRA code, ``pretrain/pretrain_helpers.py::mask``
(https://github.com/google-research/electra/blob/master/pretrain/pretrain_helpers.py):

* at most ``int((mask_prob + 0.005) * max_len)`` predictions per sequence
  (``configure_pretraining.py``: 19 for length 128 with ``mask_prob = 0.15``);
* a sequence of ``n`` real (non-pad) tokens gets ``max(1, min(cap, round(n * mask_prob)))`` of
  them chosen. Like the official code, ``n`` counts every non-pad token, [CLS] and [SEP]
  included (``tf.reduce_sum(input_mask)``); the choice is then made among the *maskable* tokens
  only, so the count is also capped by how many there are;
* special tokens ([CLS], [SEP], [MASK], [PAD] and any id passed in ``special_token_ids``) are
  never chosen;
* each chosen position independently becomes [MASK] with probability 0.85 and otherwise keeps its
  token; ELECTRA does no random-token replacement (BERT's 80/10/10 is
  ``mask_token_prob=0.8, random_token_prob=0.1``).

One deliberate difference: the official code draws the positions *with* replacement
(``tf.random.categorical``), so a duplicate silently lowers the count; we draw without
replacement, so every sequence gets exactly the number the formula says.

Everything is deterministic given a ``torch.Generator``. Random numbers are drawn on the
generator's device and moved to the ids' device, so a CPU generator gives the same masks on CPU
and GPU. ``generator`` may also be a list of one generator per row (:func:`example_generators`,
seeded per example): row ``i``'s numbers then come from generator ``i`` alone, so an example's
masks do not depend on its position in the batch, on the other rows, or on which process of a
distributed run masks it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

import torch

from ..errors import InvalidInputError

IGNORE_INDEX = -100  # label value for positions without a prediction (torch's cross_entropy default)


@dataclasses.dataclass
class MaskedBatch:
    """The result of :func:`mask_tokens`; all tensors (B, T)."""

    input_ids: torch.Tensor  # the corrupted ids fed to the generator / MLM
    labels: torch.Tensor     # original id at chosen positions, -100 elsewhere
    mask: torch.Tensor       # bool, True at the chosen positions (whether [MASK]ed or kept)


# One generator for the whole batch, one per row (example), or None: the global torch RNG.
Generators = torch.Generator | Sequence[torch.Generator] | None


def example_generators(seeds: torch.Tensor | Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One ``torch.Generator`` on ``device`` per example, seeded with its seed (B,): what
    :func:`mask_tokens` and the ELECTRA pretrainer take to make each row's draws a function of
    that row's seed only (``PackedDataset(example_seeds=True)`` gives each row one)."""
    if isinstance(seeds, torch.Tensor):
        if seeds.dim() != 1:
            raise InvalidInputError(f"example seeds must be one per example (B,), got shape {tuple(seeds.shape)}")
        seeds = seeds.tolist()  # one small host copy (a sync on GPU) per batch
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def uniform(shape: tuple[int, ...], generator: Generators, device: torch.device,
            rows: Sequence[int] | None = None) -> torch.Tensor:
    """U[0, 1) fp32 numbers of ``shape`` on ``device``, drawn on the generator's own device.

    ``generator`` a list: generator ``i`` fills ``rows[i]`` consecutive slices of dimension 0
    (default one each, so ``len(generator) == shape[0]``); each in place, no per-row copies."""
    if generator is None or isinstance(generator, torch.Generator):
        where = generator.device if generator is not None else device
        return torch.rand(shape, generator=generator, device=where, dtype=torch.float32).to(device)
    rows = [1] * len(generator) if rows is None else [int(r) for r in rows]
    if len(rows) != len(generator) or sum(rows) != shape[0]:
        raise InvalidInputError(f"uniform: {len(generator)} per-row generators for {len(rows)} row counts summing "
                                f"to {sum(rows)}; the tensor has {shape[0]} rows")
    where = generator[0].device if generator else device
    out = torch.empty(shape, device=where, dtype=torch.float32)
    start = 0
    for g, n in zip(generator, rows):
        if n:
            out.narrow(0, start, n).uniform_(generator=g)  # a contiguous slice: this row's own numbers
        start += n
    return out.to(device)


def max_predictions_per_seq(max_len: int, mask_prob: float = 0.15) -> int:
    """The official cap: ``int((mask_prob + 0.005) * max_len)``; 19 for 128, 79 for 512."""
    return int((mask_prob + 0.005) * max_len)


def num_to_mask(n_tokens: torch.Tensor, max_predictions: int, mask_prob: float = 0.15) -> torch.Tensor:
    """``max(1, min(max_predictions, round(n_tokens * mask_prob)))`` per sequence; (B,) -> (B,).

    The product is float32 and rounds half to even, as the official ``tf.round`` of
    ``float32(n) * mask_prob``: in float64, 190 x 0.15 is 28.5 (28), in float32 28.500002 (29), so
    length-512 rows of 190, 350 or 390 tokens got one mask fewer than the official code gives."""
    want = torch.round(n_tokens.to(torch.float32) * mask_prob).long()
    return want.clamp(max=max_predictions).clamp(min=1)


def maskable_positions(input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                       special_token_ids: Iterable[int]) -> torch.Tensor:
    """Bool (B, T): real tokens that are not special tokens."""
    ok = torch.ones_like(input_ids, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
    special = torch.tensor(sorted(set(int(i) for i in special_token_ids)), dtype=input_ids.dtype,
                           device=input_ids.device)
    if special.numel():
        ok = ok & ~torch.isin(input_ids, special)
    return ok


def mask_tokens(
    input_ids: torch.Tensor,
    *,
    mask_token_id: int,
    special_token_ids: Iterable[int] = (),
    attention_mask: torch.Tensor | None = None,
    pad_token_id: int | None = None,
    mask_prob: float = 0.15,
    max_predictions: int | None = None,
    mask_token_prob: float = 0.85,
    random_token_prob: float = 0.0,
    vocab_size: int | None = None,
    generator: Generators = None,
) -> MaskedBatch:
    """Choose positions to predict and corrupt them, ELECTRA-style.

    Args:
        input_ids: (B, T) token ids.
        mask_token_id: id of [MASK]; it is also never chosen itself.
        special_token_ids: ids never to choose ([CLS], [SEP], ...). [MASK] and ``pad_token_id``
            are added automatically.
        attention_mask: (B, T), 1 for real tokens. Without it, real tokens are those that are
            not ``pad_token_id`` (all of them when that is None too).
        pad_token_id: id of [PAD], used when ``attention_mask`` is None.
        mask_prob: fraction of real tokens to predict (0.15).
        max_predictions: per-sequence cap; default ``int((mask_prob + 0.005) * T)``.
        mask_token_prob: probability that a chosen position becomes [MASK] (0.85 in ELECTRA).
        random_token_prob: probability that it becomes a random token (0 in ELECTRA, 0.1 in BERT);
            needs ``vocab_size``. The remaining probability keeps the original token.
        generator: a ``torch.Generator`` for reproducible masks, or a list of B generators, one
            per row (:func:`example_generators`): row ``i``'s masks then depend on its ids and
            generator ``i`` only, not on the other rows.

    Returns:
        :class:`MaskedBatch` with ``input_ids`` (corrupted), ``labels`` (original ids at chosen
        positions, -100 elsewhere) and ``mask`` (bool, chosen positions).
    """
    if input_ids.dim() != 2:
        raise InvalidInputError(f"mask_tokens: input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise InvalidInputError(f"mask_tokens: attention_mask shape {tuple(attention_mask.shape)} "
                                f"differs from input_ids shape {tuple(input_ids.shape)}")
    if not 0.0 < mask_prob < 1.0:
        raise InvalidInputError(f"mask_tokens: mask_prob must be in (0, 1), got {mask_prob}")
    if mask_token_prob < 0 or random_token_prob < 0 or mask_token_prob + random_token_prob > 1.0 + 1e-9:
        raise InvalidInputError(
            f"mask_tokens: need mask_token_prob >= 0, random_token_prob >= 0 and their sum <= 1, "
            f"got {mask_token_prob} and {random_token_prob}")
    if random_token_prob > 0 and vocab_size is None:
        raise InvalidInputError("mask_tokens: random_token_prob > 0 needs vocab_size")
    if generator is not None and not isinstance(generator, torch.Generator) and len(generator) != input_ids.shape[0]:
        raise InvalidInputError(f"mask_tokens: {len(generator)} per-row generators for a batch of {input_ids.shape[0]} rows")

    B, T = input_ids.shape
    device = input_ids.device
    if attention_mask is None:
        attention_mask = (torch.ones_like(input_ids, dtype=torch.bool) if pad_token_id is None
                          else input_ids != pad_token_id)
    attention_mask = attention_mask.bool()
    special = set(int(i) for i in special_token_ids) | {int(mask_token_id)}
    if pad_token_id is not None:
        special.add(int(pad_token_id))
    candidates = maskable_positions(input_ids, attention_mask, special)  # (B, T)

    cap = max_predictions_per_seq(T, mask_prob) if max_predictions is None else int(max_predictions)
    n_tokens = attention_mask.sum(-1)                                     # (B,) non-pad, [CLS]/[SEP] included
    k = num_to_mask(n_tokens, cap, mask_prob)                             # (B,)
    k = torch.minimum(k, candidates.sum(-1))                              # cannot exceed what is maskable

    # Uniform choice of k positions among the candidates without replacement: give every
    # candidate a uniform random score, rank them, keep the k best.
    scores = uniform((B, T), generator, device)
    scores = scores.masked_fill(~candidates, -1.0)                        # non-candidates rank last
    order = scores.argsort(dim=-1, descending=True)                       # (B, T)
    ranks = torch.empty_like(order).scatter_(1, order, torch.arange(T, device=device).expand(B, T))
    chosen = candidates & (ranks < k[:, None])                            # (B, T)

    # What each chosen position becomes: [MASK] / random token / itself.
    u = uniform((B, T), generator, device)
    to_mask = chosen & (u < mask_token_prob)
    to_random = chosen & (u >= mask_token_prob) & (u < mask_token_prob + random_token_prob)

    corrupted = input_ids.masked_fill(to_mask, mask_token_id)
    if random_token_prob > 0:
        random_ids = (uniform((B, T), generator, device) * vocab_size).long().clamp(max=vocab_size - 1)
        corrupted = torch.where(to_random, random_ids, corrupted)
    labels = input_ids.masked_fill(~chosen, IGNORE_INDEX)
    return MaskedBatch(input_ids=corrupted, labels=labels, mask=chosen)
