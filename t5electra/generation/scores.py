"""``compute_transition_scores``: the score of each generated token, from what ``generate`` records with
``return_dict_in_generate=True, output_scores=True`` (transformers' ``GenerationMixin.compute_transition_scores``,
the same values)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..errors import InvalidInputError


def compute_transition_scores(sequences: Tensor, scores: Sequence[Tensor], beam_indices: Tensor | None = None,
                              normalize_logits: bool = False) -> Tensor:
    """(N, T) the score of each generated token of ``sequences``, as transformers computes it.

    Args:
        sequences: (N, L) ``output.sequences``; its last T columns are the generated tokens.
        scores: ``output.scores``, T tensors (rows, V): each step's scores (beam search: per beam row).
        beam_indices: ``output.beam_indices`` (N, T') of a beam search (-1 past a hypothesis' end), the
            row of ``scores`` each token came from; None (greedy search, sampling): row i of each step.
        normalize_logits: log-softmax each step's scores over the vocabulary first (for ``output.logits``
            or scores that are not log-probabilities).

    Returns:
        (N, T) with T = len(scores), or for beam search the longest hypothesis' length: entry [i, t] is
        ``scores[t][beam_indices[i, t], token]`` for the t-th generated token of row i; 0 past the end of
        a beam hypothesis. For greedy search and sampling, ``exp`` of it with ``normalize_logits=True`` is
        each token's probability.
    """
    if not isinstance(sequences, Tensor) or sequences.dim() != 2:
        raise InvalidInputError(f"compute_transition_scores: sequences must be the (N, L) output.sequences, got "
                                f"{tuple(sequences.shape) if isinstance(sequences, Tensor) else type(sequences).__name__}")
    if (not isinstance(scores, (tuple, list)) or not scores
            or not all(isinstance(s, Tensor) and s.dim() == 2 and s.shape == scores[0].shape for s in scores)):
        raise InvalidInputError("compute_transition_scores: scores must be output.scores, a non-empty tuple of "
                                "(rows, vocab) tensors of one shape (generate with return_dict_in_generate=True, "
                                "output_scores=True)")
    n_steps, (rows, vocab) = len(scores), scores[0].shape
    if normalize_logits:  # in transformers' layout, (rows, V, T): the same sums, bit for bit
        flat = torch.stack(tuple(scores)).reshape(n_steps, -1).transpose(0, 1)          # (rows * V, T)
        steps = torch.log_softmax(flat.reshape(rows, vocab, n_steps), dim=1).permute(0, 2, 1)
    else:
        steps = torch.stack(tuple(scores), dim=1)                                         # (rows, T, V)
    if beam_indices is None:
        if sequences.shape[0] != rows:
            raise InvalidInputError(f"compute_transition_scores: sequences has {sequences.shape[0]} rows, each step "
                                    f"of scores {rows}: beam search outputs need their beam_indices")
        beam_indices = torch.arange(rows, device=steps.device)[:, None].expand(-1, n_steps)
    if (not isinstance(beam_indices, Tensor) or beam_indices.dim() != 2
            or beam_indices.shape[0] != sequences.shape[0] or beam_indices.shape[1] > n_steps):
        raise InvalidInputError(f"compute_transition_scores: beam_indices must be output.beam_indices, (N={sequences.shape[0]}, "
                                f"T <= {n_steps}), got {tuple(getattr(beam_indices, 'shape', ()))}")
    ended = beam_indices < 0                                          # past the end of a hypothesis
    length = int((~ended).sum(dim=-1).max())                          # the longest hypothesis
    if length > sequences.shape[1]:
        raise InvalidInputError(f"compute_transition_scores: {length} generated tokens, sequences has only "
                                f"{sequences.shape[1]} columns")
    beams = beam_indices[:, :length].clamp(min=0).to(steps.device)
    if beams.numel() and int(beams.max()) >= rows:
        raise InvalidInputError(f"compute_transition_scores: beam_indices has row {int(beams.max())}, scores have {rows}")
    tokens = sequences[:, sequences.shape[1] - length:].to(steps.device)
    picked = steps[beams, torch.arange(length, device=steps.device)[None, :], tokens]   # (N, length)
    return picked.masked_fill(ended[:, :length].to(steps.device), 0.0)
