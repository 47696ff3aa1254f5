"""Logits processors of ``generate`` (t5electra/generation/seq2seq.py): the same arithmetic, in the
same order, as the processors transformers 5 builds in ``GenerationMixin._get_logits_processor``
(``transformers/generation/logits_process.py``), so that tokens and scores are equal:

    RepetitionPenalty -> NoRepeatNGram -> NoBadWords -> MinLength / MinNewTokensLength
    -> ForcedBOSToken -> ForcedEOSToken -> SuppressTokens -> SuppressTokensAtBegin

(then, when sampling, temperature -> top-k -> top-p: sampling.py). Every one but the repetition
penalty only bans tokens (sets their score to -inf), so greedy search may run them on the screened
output layer's approximate scores (T5's decode_step_argmax): the same tokens are banned. The two
forced tokens set every score to -inf but the forced ones', which become 0: greedy search takes
the full output layer at those steps (``forces``), where the first forced id wins a tie.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .options import GenerationSettings


class LogitsProcessors:
    """The processors of one ``generate`` call, their token tensors built once on ``device``."""

    def __init__(self, s: GenerationSettings, device: torch.device):
        self.s = s
        self.eos = torch.tensor(s.eos_token_id, dtype=torch.long, device=device)
        # NoBadWordsLogitsProcessor: a one-token bad word equal to an EOS id is dropped; longer ones are
        # banned where the output ends with all but their last token. Grouped by prefix length.
        single = sorted({w[0] for w in s.bad_words_ids if len(w) == 1 and w[0] not in s.eos_token_id})
        self.bad_tokens = torch.tensor(single, dtype=torch.long, device=device) if single else None
        by_prefix: dict[int, list[tuple[int, ...]]] = {}
        for w in dict.fromkeys(w for w in s.bad_words_ids if len(w) > 1):
            by_prefix.setdefault(len(w) - 1, []).append(w)
        self.bad_sequences = [(torch.tensor([w[:-1] for w in ws], device=device),   # (G, p) prefixes
                               torch.tensor([w[-1] for w in ws], device=device))    # (G,) banned next
                              for ws in by_prefix.values()]
        self.suppress = self._ids(s.suppress_tokens, device)
        self.begin_suppress = self._ids(s.begin_suppress_tokens, device)
        self.forced_eos = self._ids(s.forced_eos_token_id, device)

    @staticmethod
    def _ids(ids: tuple[int, ...], device) -> Tensor | None:
        return torch.tensor(ids, dtype=torch.long, device=device) if ids else None

    @property
    def needs_history(self) -> bool:
        """Whether __call__ reads the tokens so far (else it is given None)."""
        return self.s.repetition_penalty != 1.0 or self.s.no_repeat_ngram_size > 0 or bool(self.bad_sequences)

    def forces(self, cur_len: int) -> bool:
        """Whether this step forces a token (forced_bos_token_id / forced_eos_token_id)."""
        return ((self.s.forced_bos_token_id is not None and cur_len == 1)
                or (self.forced_eos is not None and cur_len == self.s.max_length - 1))

    def __call__(self, scores: Tensor, history: Tensor | None, cur_len: int) -> Tensor:
        """Next-token ``scores`` (N, V) given the decoder ``history`` (N, cur_len) (None unless
        ``needs_history``); returns a new tensor."""
        s = self.s
        if s.repetition_penalty != 1.0:
            # CTRL repetition penalty (https://arxiv.org/abs/1909.05858): the score of every token already
            # in the history is divided by the penalty where positive, multiplied where negative.
            picked = scores.gather(1, history)                                   # (N, cur_len)
            picked = torch.where(picked < 0, picked * s.repetition_penalty, picked / s.repetition_penalty)
            scores = scores.scatter(1, history, picked)
        if s.no_repeat_ngram_size and cur_len >= s.no_repeat_ngram_size:
            scores = _ban_repeated_ngrams(scores, history, s.no_repeat_ngram_size)
        if self.bad_tokens is not None:
            scores = scores.index_fill(1, self.bad_tokens, -math.inf)
        for prefixes, last in self.bad_sequences:
            if prefixes.shape[1] <= cur_len:  # (transformers skips prefixes longer than the output so far)
                ends_with = (history[:, None, -prefixes.shape[1]:] == prefixes).all(dim=-1)  # (N, G)
                row, word = ends_with.nonzero(as_tuple=True)
                scores = scores.index_put((row, last[word]), scores.new_tensor(-math.inf))
        if cur_len < s.min_length and self.eos.numel():
            scores = scores.index_fill(1, self.eos, -math.inf)
        if s.forced_bos_token_id is not None and cur_len == 1:
            scores = torch.full_like(scores, -math.inf)
            scores[:, s.forced_bos_token_id] = 0
        if self.forced_eos is not None and cur_len == s.max_length - 1:
            scores = torch.full_like(scores, -math.inf)
            scores[:, self.forced_eos] = 0
        if self.suppress is not None:
            scores = scores.index_fill(1, self.suppress, -math.inf)
        if self.begin_suppress is not None and cur_len == s.begin_suppress_index:
            scores = scores.index_fill(1, self.begin_suppress, -math.inf)
        return scores


def _ban_repeated_ngrams(scores: Tensor, history: Tensor, n: int) -> Tensor:
    """-inf for every token that would complete an n-gram already in ``history`` (N, L)."""
    prefix = history[:, history.shape[1] + 1 - n:]               # (N, n-1) the n-1 last tokens
    windows = history.unfold(dimension=1, size=n, step=1)        # (N, L-n+1, n) every n-gram so far
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (N, L-n+1) same first n-1 tokens
    row, start = matches.nonzero(as_tuple=True)                   # n-grams the next token would repeat
    return scores.index_put((row, windows[row, start, -1]), scores.new_tensor(-math.inf))
