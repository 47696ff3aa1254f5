"""Text generation for encoder-decoder models: greedy, beam search and sampling over a KV cache.

``generate(model, input_ids, ...)`` returns what transformers' ``model.generate`` returns for the
same settings: a LongTensor ``(batch * num_return_sequences, length)`` that starts with the
decoder start token, with finished rows padded. Greedy and beam search are token-identical to
transformers 5.x (``transformers/generation/utils.py``: ``_sample``, ``_beam_search``; the
processors in ``transformers/generation/logits_process.py``), which the tests check on random
T5 v1.0 and v1.1 models.

The model is driven through four calls, so that the loop below never sees a layer:

    enc    = model.encode(input_ids, attention_mask)                    # (N, S, D)
    cache  = model.new_decoder_cache(enc, attention_mask, max_length)   # cross K/V once, self K/V preallocated
    logits = model.decode_step(decoder_input_ids, cache)                # (N, t, V); appends t positions
    cache.reorder(index)                                                # in place row select / duplicate

and, where the model has it, greedy search's ``model.decode_step_argmax(ids, cache, process)``
(next tokens (N,) of ``process(logits)``, for processors that only ban tokens), which may skip
computing every logit (T5: inference/int8.py, ScreenedArgmax).

The encoder and the cross-attention projections run once on the ``B`` inputs; ``cache.reorder``
then makes the rows for the beams or the returned samples. All beam bookkeeping lives in tensors
of shape ``(B, num_beams, ...)``.

Where transformers has a quirk we keep it, and say so, so that outputs match:

* ``max_length`` counts the decoder start token; without ``max_length`` and ``max_new_tokens``,
  20 new tokens are generated (transformers 5 adds the default 20 to the decoder prompt length).
* ``max_new_tokens`` wins over ``max_length`` when both are given (a warning is logged).
* With sampling and ``top_k=None``, transformers' default ``top_k=50`` applies; ``top_k=0`` disables it.
* Beam search pads finished hypotheses with ``pad_token_id or eos_token_id``: for T5 (pad = 0)
  that is the EOS id 1, whereas greedy and sampling pad with 0.
* ``repetition_penalty`` counts the decoder start token as already generated.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import numbers
from typing import Protocol

import torch
from torch import Tensor

from ..core.outputs import GenerateBeamEncoderDecoderOutput, GenerateEncoderDecoderOutput
from ..errors import InvalidInputError
from .sampling import sample_top_k, warp_scores

logger = logging.getLogger("t5electra")

# transformers' GenerationConfig defaults (``_get_default_generation_params``).
DEFAULT_MAX_NEW_TOKENS = 20
DEFAULT_TOP_K = 50
# The "minus infinity" transformers' beam search adds to scores it wants to rule out. It is a
# finite float32 number, and the arithmetic on it must be the same as theirs for the same choices.
_NEG = -1.0e9


class DecoderCache(Protocol):
    """Decoder state between steps: cross-attention K/V (computed once) and self-attention K/V."""

    length: int  # decoder positions stored so far

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (N',) of every cached tensor, in place (duplicates allowed)."""


class EncoderDecoderLM(Protocol):
    """What ``generate`` needs from a model (T5ForConditionalGeneration implements it)."""

    config: object  # with eos_token_id, pad_token_id, decoder_start_token_id, vocab_size

    def encode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor: ...

    def new_decoder_cache(self, encoder_hidden_states: Tensor, encoder_attention_mask: Tensor | None,
                          max_length: int) -> DecoderCache: ...

    def decode_step(self, decoder_input_ids: Tensor, cache: DecoderCache) -> Tensor: ...


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """The options of one ``generate`` call, checked and with the model's defaults filled in."""

    max_length: int                 # total decoder length, decoder start token included
    min_new_tokens: int             # EOS is suppressed until this many tokens were generated
    num_beams: int                  # 1: greedy or sampling; > 1: beam search
    length_penalty: float           # finished beam score = sum log p / (new tokens ** length_penalty)
    early_stopping: bool | str      # True, False or "never" (transformers' beam stopping rules)
    do_sample: bool                 # sample instead of argmax / top-k
    temperature: float              # logits / temperature (sampling only)
    top_k: int                      # keep the top_k most likely tokens (sampling only; 0 = off)
    top_p: float                    # keep the smallest set with probability >= top_p (sampling only)
    num_return_sequences: int       # hypotheses (beam) or samples returned per input
    repetition_penalty: float       # CTRL penalty on tokens already in the output (1.0 = off)
    no_repeat_ngram_size: int       # ban n-grams that already occur in the output (0 = off)
    eos_token_id: tuple[int, ...]   # stop tokens (empty: stop at max_length only)
    pad_token_id: int | None        # fills finished rows
    decoder_start_token_id: int     # first decoder token

    @property
    def prompt_length(self) -> int:
        """Decoder tokens before generation starts: the start token."""
        return 1


MIN_TEMPERATURE = 1e-4     # below it sampling is greedy in effect, and scores / temperature overflow
MAX_LENGTH_PENALTY = 10.0  # beam scores divide by length ** length_penalty (transformers' values: 0.6-2)


def _number(x) -> bool:
    """A finite int or float (not a bool, NaN or infinity)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _plain(x):
    """Python scalars for what users pass from numpy and torch: a numpy integer or float, or a 0-d
    tensor, becomes an int / float (a 1-d tensor of token ids, a list); anything else is returned
    as it is, for the checks below to refuse by name."""
    if isinstance(x, Tensor) and x.dim() <= 1 and x.dtype != torch.bool:
        return x.tolist()
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return int(x)
    if isinstance(x, numbers.Real) and not isinstance(x, (bool, int)):
        return float(x)
    return x


def generate(
    model: EncoderDecoderLM,
    input_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
    *,
    inputs: Tensor | None = None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    min_new_tokens: int = 0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_return_sequences: int = 1,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    return_dict_in_generate: bool = False,
    output_scores: bool = False,
    output_logits: bool = False,
) -> Tensor | GenerateEncoderDecoderOutput | GenerateBeamEncoderDecoderOutput:
    """Generate output ids for a batch of encoder inputs (transformers' ``generate`` semantics).

    Args:
        model: an encoder-decoder model with ``encode`` / ``new_decoder_cache`` / ``decode_step``.
        input_ids: (B, S) encoder token ids, right-padded.
        attention_mask: (B, S) 1 for tokens, 0 for padding; None means no padding.
        max_length: total output length including the decoder start token.
        max_new_tokens: tokens to generate after the start token; wins over ``max_length``.
        generator: a ``torch.Generator`` that makes sampling reproducible (on the model's device).
        inputs: transformers' name for ``input_ids`` (give one of the two).
        use_cache: accepted for transformers' callers; decoding always uses the KV cache, whose
            tokens the tests prove equal to a full forward per step.
        return_dict_in_generate: return a GenerateEncoderDecoderOutput (greedy, sampling) or a
            GenerateBeamEncoderDecoderOutput (beam search) instead of the tensor, with
            ``output_scores`` (each step's scores after the processors; beam search: also
            ``sequences_scores`` and ``beam_indices``) and ``output_logits`` (the raw logits), as
            transformers returns them. Recording turns off what would change them: finished rows
            stay in the batch, and greedy search computes every logit.
        The other options are documented on :class:`GenerationSettings` and in docs/generation.md.

    Returns:
        LongTensor (B * num_return_sequences, T), T <= max_length: the decoder start token, the
        generated tokens, then padding after EOS. Rows of one input are consecutive.
    """
    if inputs is not None:
        if input_ids is not None:
            raise InvalidInputError("generate: give input_ids or inputs (transformers' name for it), not both")
        input_ids = inputs
    if input_ids is None:
        raise InvalidInputError("generate: input_ids is missing")
    for name, flag in (("use_cache", use_cache), ("return_dict_in_generate", return_dict_in_generate),
                       ("output_scores", output_scores), ("output_logits", output_logits)):
        if not isinstance(flag, bool):
            raise InvalidInputError(f"generate: {name} must be True or False, got {flag!r}")
    if (output_scores or output_logits) and not return_dict_in_generate:
        logger.warning("generate: output_scores / output_logits need return_dict_in_generate=True "
                       "(as in transformers); returning the sequences only")
    record = _Record(output_scores, output_logits) if return_dict_in_generate else None
    s = _settings(model, input_ids, attention_mask, max_length=max_length, max_new_tokens=max_new_tokens,
                  min_new_tokens=min_new_tokens, num_beams=num_beams, length_penalty=length_penalty,
                  early_stopping=early_stopping, do_sample=do_sample, temperature=temperature, top_k=top_k,
                  top_p=top_p, num_return_sequences=num_return_sequences,
                  repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                  eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                  decoder_start_token_id=decoder_start_token_id)
    with torch.inference_mode():
        # The encoder runs once per input, and the cross-attention K/V are computed once per input:
        # the cache then duplicates its rows for the beams / samples (B -> B * expand rows, grouped
        # by input), which a cache may do without copying (T5DecoderCache shares them).
        enc = model.encode(input_ids, attention_mask=attention_mask)  # (B, S, D)
        device = enc.device
        cache = model.new_decoder_cache(enc, attention_mask, s.max_length)
        del enc
        expand = max(s.num_beams, s.num_return_sequences)
        if expand > 1:
            cache.reorder(torch.arange(input_ids.shape[0], device=device).repeat_interleave(expand))
        if s.num_beams > 1:
            return _beam_search(model, cache, input_ids.shape[0], device, s, generator, record)
        return _greedy_or_sample(model, cache, input_ids.shape[0] * expand, device, s, generator, record)


@dataclasses.dataclass
class _Record:
    """What ``return_dict_in_generate`` asked to keep of each step."""

    scores: bool
    logits: bool
    steps_scores: list[Tensor] = dataclasses.field(default_factory=list)
    steps_logits: list[Tensor] = dataclasses.field(default_factory=list)

    def step(self, logits: Tensor, scores: Tensor) -> None:
        if self.scores:
            self.steps_scores.append(scores.clone())
        if self.logits:
            self.steps_logits.append(logits.clone())

    def tuples(self) -> dict[str, tuple[Tensor, ...] | None]:
        return {"scores": tuple(self.steps_scores) if self.scores else None,
                "logits": tuple(self.steps_logits) if self.logits else None}


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

def _settings(model, input_ids, attention_mask, *, max_length, max_new_tokens, min_new_tokens, num_beams,
              length_penalty, early_stopping, do_sample, temperature, top_k, top_p, num_return_sequences,
              repetition_penalty, no_repeat_ngram_size, eos_token_id, pad_token_id,
              decoder_start_token_id) -> GenerationSettings:
    """Check every option and the inputs; fill the defaults from ``model.config``."""
    config = model.config
    (max_length, max_new_tokens, min_new_tokens, num_beams, length_penalty, temperature, top_k, top_p,
     num_return_sequences, repetition_penalty, no_repeat_ngram_size, eos_token_id, pad_token_id,
     decoder_start_token_id) = map(_plain, (
        max_length, max_new_tokens, min_new_tokens, num_beams, length_penalty, temperature, top_k, top_p,
        num_return_sequences, repetition_penalty, no_repeat_ngram_size, eos_token_id, pad_token_id,
        decoder_start_token_id))
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (
            torch.int64, torch.int32):
        what = (f"a {input_ids.dtype} tensor of shape {tuple(input_ids.shape)}" if isinstance(input_ids, Tensor)
                else type(input_ids).__name__)
        raise InvalidInputError(f"generate: input_ids must be an integer tensor of shape (batch, length), got {what}")
    if input_ids.numel() == 0:
        raise InvalidInputError(f"generate: input_ids is empty (shape {tuple(input_ids.shape)})")
    vocab_size = config.vocab_size
    lo, hi = int(input_ids.min()), int(input_ids.max())
    if lo < 0 or hi >= vocab_size:
        bad = lo if lo < 0 else hi
        row, col = (input_ids == bad).nonzero()[0].tolist()
        raise InvalidInputError(f"generate: input_ids[{row}, {col}] = {bad} is outside the vocabulary "
                                f"[0, {vocab_size}) of the model (config.vocab_size)")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise InvalidInputError(f"generate: attention_mask has shape {tuple(attention_mask.shape)}, "
                                f"input_ids has shape {tuple(input_ids.shape)}; they must match")

    # Special tokens: arguments first, then the model config (as transformers does).
    eos = eos_token_id if eos_token_id is not None else getattr(config, "eos_token_id", None)
    eos_ids = () if eos is None else (int(eos),) if isinstance(eos, int) else tuple(int(e) for e in eos)
    pad = pad_token_id if pad_token_id is not None else getattr(config, "pad_token_id", None)
    if pad is None and eos_ids:
        pad = eos_ids[0]
    start = decoder_start_token_id if decoder_start_token_id is not None else getattr(
        config, "decoder_start_token_id", None)
    if start is None:
        raise InvalidInputError("generate: decoder_start_token_id is not set (argument or model.config)")
    for name, value in (("eos_token_id", eos_ids), ("pad_token_id", (pad,) if pad is not None else ()),
                        ("decoder_start_token_id", (start,))):
        for v in value:
            if not 0 <= v < vocab_size:
                raise InvalidInputError(f"generate: {name}={v} is outside the vocabulary [0, {vocab_size})")

    # Lengths. The decoder prompt is the start token alone.
    prompt = 1
    if max_new_tokens is not None:
        if not isinstance(max_new_tokens, int) or max_new_tokens <= 0:
            raise InvalidInputError(f"generate: max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        if max_length is not None:
            logger.warning("generate: both max_new_tokens=%d and max_length=%d given; max_new_tokens wins "
                           "(as in transformers)", max_new_tokens, max_length)
        max_length = prompt + max_new_tokens
    elif max_length is None:
        max_length = prompt + DEFAULT_MAX_NEW_TOKENS
    elif not isinstance(max_length, int) or max_length <= prompt:
        raise InvalidInputError(
            f"generate: max_length={max_length!r} leaves no room to generate: it counts the decoder prompt "
            f"({prompt} token, the decoder start token), so it must be at least {prompt + 1}; "
            f"or set max_new_tokens")
    if not isinstance(min_new_tokens, int) or isinstance(min_new_tokens, bool) or min_new_tokens < 0:
        raise InvalidInputError(f"generate: min_new_tokens must be an integer >= 0, got {min_new_tokens!r}")
    if min_new_tokens > max_length - prompt:
        raise InvalidInputError(f"generate: min_new_tokens={min_new_tokens} is more than the {max_length - prompt} "
                                f"new tokens allowed (max_new_tokens, or max_length minus the decoder prompt)")
    if not isinstance(do_sample, bool):
        raise InvalidInputError(f"generate: do_sample must be True or False, got {do_sample!r}")

    # Search.
    if not isinstance(num_beams, int) or num_beams < 1:
        raise InvalidInputError(f"generate: num_beams must be an integer >= 1, got {num_beams!r}")
    if not isinstance(num_return_sequences, int) or num_return_sequences < 1:
        raise InvalidInputError(
            f"generate: num_return_sequences must be an integer >= 1, got {num_return_sequences!r}")
    if num_beams > 1 and num_return_sequences > num_beams:
        raise InvalidInputError(f"generate: num_return_sequences={num_return_sequences} is larger than "
                                f"num_beams={num_beams}; beam search returns at most num_beams hypotheses")
    if num_beams == 1 and not do_sample and num_return_sequences > 1:
        raise InvalidInputError(f"generate: greedy search returns one sequence per input, got "
                                f"num_return_sequences={num_return_sequences}; use num_beams >= "
                                f"{num_return_sequences} or do_sample=True")
    if early_stopping not in (True, False, "never"):
        raise InvalidInputError(f"generate: early_stopping must be True, False or 'never', got {early_stopping!r}")
    if not do_sample:
        temperature = 1.0  # only sampling reads it (transformers ignores it too; temperature=0 is common)
    elif not _number(temperature) or not temperature > 0:
        raise InvalidInputError(f"generate: temperature must be a finite number > 0, got {temperature!r} "
                                f"(for deterministic output use do_sample=False)")
    elif temperature < MIN_TEMPERATURE:  # scores / temperature overflow float32; it is greedy in effect
        raise InvalidInputError(f"generate: temperature={temperature!r} is below {MIN_TEMPERATURE:g}, where "
                                f"sampling is greedy search in effect: use do_sample=False")
    if top_k is None:
        top_k = DEFAULT_TOP_K
    if not isinstance(top_k, int) or top_k < 0:
        raise InvalidInputError(f"generate: top_k must be an integer >= 0 (0 disables it), got {top_k!r}")
    if top_p is None:
        top_p = 1.0
    if not _number(top_p) or not 0.0 < top_p <= 1.0:
        raise InvalidInputError(f"generate: top_p must be in (0, 1], got {top_p!r}")
    if not _number(repetition_penalty) or not repetition_penalty > 0:
        raise InvalidInputError(f"generate: repetition_penalty must be a finite number > 0 (1.0 = off), "
                                f"got {repetition_penalty!r}")
    if not isinstance(no_repeat_ngram_size, int) or no_repeat_ngram_size < 0:
        raise InvalidInputError(
            f"generate: no_repeat_ngram_size must be an integer >= 0 (0 = off), got {no_repeat_ngram_size!r}")
    if not _number(length_penalty) or abs(length_penalty) > MAX_LENGTH_PENALTY:
        raise InvalidInputError(f"generate: length_penalty must be a finite number in [-{MAX_LENGTH_PENALTY:g}, "
                                f"{MAX_LENGTH_PENALTY:g}] (1.0 = none; length ** it must stay a float), got "
                                f"{length_penalty!r}")

    return GenerationSettings(
        max_length=max_length, min_new_tokens=min_new_tokens, num_beams=num_beams,
        length_penalty=float(length_penalty), early_stopping=early_stopping, do_sample=bool(do_sample),
        temperature=float(temperature), top_k=top_k, top_p=float(top_p),
        num_return_sequences=num_return_sequences, repetition_penalty=float(repetition_penalty),
        no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=eos_ids, pad_token_id=pad,
        decoder_start_token_id=int(start))


# --------------------------------------------------------------------------------------------
# Logits processors: the same arithmetic, in the same order, as transformers' processors
# (RepetitionPenalty -> NoRepeatNGram -> MinNewTokensLength, then for sampling Temperature ->
# TopK -> TopP), so that scores are bitwise equal.
# --------------------------------------------------------------------------------------------

def _needs_history(s: GenerationSettings) -> bool:
    return s.repetition_penalty != 1.0 or s.no_repeat_ngram_size > 0


def _process(scores: Tensor, history: Tensor | None, cur_len: int, s: GenerationSettings, eos: Tensor) -> Tensor:
    """Penalties and constraints on next-token ``scores`` (N, V), given the decoder ``history`` (N, cur_len)
    (None unless ``_needs_history``)."""
    if s.repetition_penalty != 1.0:
        # CTRL repetition penalty (https://arxiv.org/abs/1909.05858): the score of every token already
        # in the history is divided by the penalty where positive, multiplied where negative.
        picked = scores.gather(1, history)                                   # (N, cur_len)
        picked = torch.where(picked < 0, picked * s.repetition_penalty, picked / s.repetition_penalty)
        scores = scores.scatter(1, history, picked)
    if s.no_repeat_ngram_size and cur_len >= s.no_repeat_ngram_size:
        scores = _ban_repeated_ngrams(scores, history, s.no_repeat_ngram_size)
    if cur_len - s.prompt_length < s.min_new_tokens and eos.numel():
        scores = scores.index_fill(1, eos, -math.inf)
    return scores


def _ban_repeated_ngrams(scores: Tensor, history: Tensor, n: int) -> Tensor:
    """-inf for every token that would complete an n-gram already in ``history`` (N, L)."""
    prefix = history[:, history.shape[1] + 1 - n:]               # (N, n-1) the n-1 last tokens
    windows = history.unfold(dimension=1, size=n, step=1)        # (N, L-n+1, n) every n-gram so far
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)  # (N, L-n+1) same first n-1 tokens
    row, start = matches.nonzero(as_tuple=True)                   # n-grams the next token would repeat
    return scores.index_put((row, windows[row, start, -1]), scores.new_tensor(-math.inf))


# --------------------------------------------------------------------------------------------
# Greedy search and sampling
# --------------------------------------------------------------------------------------------

def _greedy_or_sample(model, cache, n_rows: int, device, s: GenerationSettings,
                      generator: torch.Generator | None, record: _Record | None = None):
    """One token per row and step (argmax, or a draw from the warped distribution).

    Rows that finish are fed ``pad`` and their output is ``pad``, as in transformers. Once a quarter
    of the rows still in the cache have finished, they are dropped from it (``cache.reorder``), so
    a batch of mixed lengths stops paying for its finished rows.
    """
    eos = torch.tensor(s.eos_token_id, dtype=torch.long, device=device)
    pad = s.pad_token_id if s.pad_token_id is not None else 0  # only used once a row hit EOS
    out = torch.full((n_rows, s.max_length), pad, dtype=torch.long, device=device)
    out[:, 0] = s.decoder_start_token_id
    rows = torch.arange(n_rows, device=device)       # (A,) output row of each row in the cache
    done = torch.zeros(n_rows, dtype=torch.bool, device=device)  # (A,) finished, still in the cache

    tokens = out[:, :1]                               # (A, 1) next decoder input
    cur_len = s.prompt_length
    # Greedy with processors that only ban tokens: the model may skip the full output layer
    # (decode_step_argmax; the same tokens).
    argmax_step = (getattr(model, "decode_step_argmax", None)
                   if not s.do_sample and s.repetition_penalty == 1.0 and record is None else None)
    while True:
        history = out[rows, :cur_len] if _needs_history(s) else None
        if argmax_step is not None:
            bans = functools.partial(_process, history=history, cur_len=cur_len, s=s, eos=eos)
            next_tokens = argmax_step(tokens, cache, bans)
        else:
            logits = model.decode_step(tokens, cache)[:, -1].float()    # (A, V)
            scores = _process(logits, history, cur_len, s, eos)
            if record is not None:  # transformers records the scores after its warpers too
                record.step(logits, warp_scores(scores, s.temperature, s.top_k, s.top_p, min_tokens_to_keep=1)
                            if s.do_sample else scores)
            if s.do_sample and s.top_k:
                next_tokens = sample_top_k(scores, s.top_k, s.top_p, s.temperature, generator)
            elif s.do_sample:
                probs = warp_scores(scores, s.temperature, s.top_k, s.top_p, min_tokens_to_keep=1).softmax(dim=-1)
                next_tokens = torch.multinomial(probs, num_samples=1, generator=generator).squeeze(1)
            else:
                next_tokens = scores.argmax(dim=-1)                       # (A,)
        if eos.numel():
            next_tokens = next_tokens.masked_fill(done, pad)
        out[rows, cur_len] = next_tokens
        cur_len += 1
        if cur_len >= s.max_length:
            break
        if eos.numel():
            done |= torch.isin(next_tokens, eos)
            n_done = int(done.sum())
            if n_done == done.numel():
                break
            if 4 * n_done >= done.numel() and record is None:
                keep = (~done).nonzero().squeeze(1)   # (A',) rows still generating
                cache.reorder(keep)
                rows, next_tokens, done = rows[keep], next_tokens[keep], done[keep]
        tokens = next_tokens[:, None]
    if record is not None:
        return GenerateEncoderDecoderOutput(sequences=out[:, :cur_len], **record.tuples())
    return out[:, :cur_len]


# --------------------------------------------------------------------------------------------
# Beam search (transformers 5's vectorised beam search: `_beam_search` and helpers)
# --------------------------------------------------------------------------------------------

def _beam_search(model, cache, batch_size: int, device: torch.device, s: GenerationSettings,
                 generator: torch.Generator | None, record: _Record | None = None):
    """Keep ``num_beams`` running hypotheses and ``num_beams`` finished ones per input.

    Each step scores every continuation of every running beam, keeps the best ``K = 2 * num_beams``
    (more with several EOS ids) candidates, continues the best ``num_beams`` that did not finish, and
    merges the finished ones (score = sum of log-probs / new_length ** length_penalty) into the
    finished set. An input is done when no running beam can beat its worst finished hypothesis
    (``early_stopping``), or when max_length is reached. Done inputs are dropped from the search
    (and the cache) once they are a quarter of those left: from then on nothing can change their
    result, transformers only keeps computing them.

    The loop state covers the ``b`` inputs still searching (``items``); ``out`` and ``out_len``
    receive each input's best ``num_return_sequences`` hypotheses when it leaves. With a ``record``
    (return_dict_in_generate) no input leaves early, and each hypothesis also carries its beam
    indices (``running_bi`` / ``finished_bi``: per new token, the cache row of the beam it extended).
    """
    B, nb, L, V = batch_size, s.num_beams, s.max_length, model.config.vocab_size
    prompt = s.prompt_length
    eos = torch.tensor(s.eos_token_id, dtype=torch.long, device=device)
    n_eos = len(s.eos_token_id)
    K = max(2, 1 + n_eos) * nb                   # candidates kept per input and step
    top_nb = torch.arange(K, device=device) < nb  # (K,) the first num_beams candidates
    min_keep = n_eos + 1 if n_eos else 2         # tokens top-k / top-p keep in beam sampling
    nrs = s.num_return_sequences
    fill = (s.pad_token_id or s.eos_token_id[0]) if n_eos else -1  # transformers' output fill value
    out = torch.full((B, nrs, L), fill, dtype=torch.long, device=device)
    out_len = torch.full((B, nrs), prompt, dtype=torch.long, device=device)

    # Per input still searching: `running`, the tokens of the live beams; `finished`, the best
    # finished hypotheses, with their lengths, scores, and whether the slot holds one yet.
    b = B
    items = torch.arange(B, device=device)       # (b,) input of each row of the loop state
    batch_offset = torch.arange(b, device=device)[:, None] * nb  # (b, 1) first cache row of each input
    running = torch.full((B, nb, L), fill, dtype=torch.long, device=device)
    running[:, :, 0] = s.decoder_start_token_id
    finished = running.clone()
    running_bi = torch.full((B, nb, L - prompt), -1, dtype=torch.long, device=device)
    finished_bi = running_bi.clone()
    finished_len = torch.full((B, nb), prompt, dtype=torch.long, device=device)
    finished_scores = torch.full((B, nb), _NEG, dtype=torch.float, device=device)
    is_finished = torch.zeros((B, nb), dtype=torch.bool, device=device)
    # Only beam 0 is live at first, so that the num_beams first candidates differ.
    running_scores = torch.zeros((B, nb), dtype=torch.float, device=device)
    running_scores[:, 1:] = _NEG
    can_improve = torch.ones((B, 1), dtype=torch.bool, device=device)  # early-stop heuristic per input

    tokens = running[:, :, 0].reshape(B * nb, 1)
    cur_len = prompt
    while True:
        logits = model.decode_step(tokens, cache)[:, -1].float()            # (b * nb, V)
        log_probs = torch.log_softmax(logits, dim=-1)
        history = running[:, :, :cur_len].reshape(b * nb, cur_len) if _needs_history(s) else None
        log_probs = _process(log_probs, history, cur_len, s, eos)
        # c. The K best continuations (or K drawn without replacement), best first, by accumulated
        # score (running score + log-prob of the token).
        if s.do_sample:
            log_probs = warp_scores(log_probs, s.temperature, s.top_k, s.top_p, min_tokens_to_keep=min_keep)
        if record is not None:
            record.step(logits, log_probs)
        if s.do_sample:
            log_probs = (log_probs.view(b, nb, V) + running_scores[:, :, None]).view(b, nb * V)
            cand = torch.multinomial(log_probs.softmax(dim=-1), num_samples=K, generator=generator)
            cand_scores = log_probs.gather(1, cand)
            cand_scores, order = cand_scores.sort(dim=-1, descending=True)
            cand = cand.gather(1, order)
            cand_beam = cand // V                                            # (b, K) beam it extends
            cand_token = cand % V                                            # (b, K) token it appends
        else:
            # The best K of an input are among the best K of each of its beams: pick those per row
            # first, then add the running scores to nb * K values instead of nb * V (the same sums).
            k = min(K, V)
            top, top_token = torch.topk(log_probs, k=k)                     # (b * nb, k)
            cand_scores, j = torch.topk((top.view(b, nb, k) + running_scores[:, :, None]).view(b, nb * k), k=K)
            cand_beam = j // k                                               # (b, K) beam it extends
            cand_token = top_token.view(b, nb * k).gather(1, j)              # (b, K) token it appends
        # d. Candidates that end here: EOS, or the output is full.
        hits = torch.isin(cand_token, eos) if n_eos else torch.zeros_like(cand_token, dtype=torch.bool)
        if cur_len + 1 >= L:
            hits = torch.ones_like(hits)

        # f. Merge candidates that just finished (among the first num_beams) into the finished set.
        just_finished = hits & top_nb
        if bool(just_finished.any()):
            new_scores = cand_scores / ((cur_len + 1 - prompt) ** s.length_penalty)
            if s.early_stopping is True:
                full = is_finished.all(dim=-1, keepdim=True)
                new_scores += full.to(torch.float32) * _NEG
            new_scores += (~can_improve).to(torch.float32) * _NEG
            new_scores += (~just_finished) * _NEG
            merged = torch.topk(torch.cat((finished_scores, new_scores), dim=1), k=nb)[1]  # (b, nb) in nb + K
            from_old = merged < nb
            old = merged.clamp(max=nb - 1)
            new = (merged - nb).clamp(min=0)
            new_beam, new_token = cand_beam.gather(1, new), cand_token.gather(1, new)
            seqs = _gather_beams(running, new_beam)                                  # (b, nb, L)
            seqs[:, :, cur_len] = new_token
            finished = torch.where(from_old[..., None], _gather_beams(finished, old), seqs)
            if record is not None:
                seqs_bi = _gather_beams(running_bi, new_beam)
                seqs_bi[:, :, cur_len - prompt] = new_beam + batch_offset
                finished_bi = torch.where(from_old[..., None], _gather_beams(finished_bi, old), seqs_bi)
            finished_scores = torch.where(from_old, finished_scores.gather(1, old), new_scores.gather(1, new))
            finished_len = torch.where(from_old, finished_len.gather(1, old), cur_len + 1)
            is_finished = torch.where(from_old, is_finished.gather(1, old), just_finished.gather(1, new))

        # e. The best num_beams candidates that did not finish keep running.
        live_scores = cand_scores + hits.to(torch.float32) * _NEG
        best = torch.topk(live_scores, k=nb)[1]                                       # (b, nb) in K
        running_scores = live_scores.gather(1, best)
        src_beam = cand_beam.gather(1, best)
        next_tokens = cand_token.gather(1, best)                                      # (b, nb)
        running = _gather_beams(running, src_beam)
        running[:, :, cur_len] = next_tokens
        if record is not None:
            running_bi = _gather_beams(running_bi, src_beam)
            running_bi[:, :, cur_len - prompt] = src_beam + batch_offset

        # g. An input is done when it cannot improve, or is full with early_stopping=True. Stop
        # when all are done or every candidate ended (max_length).
        cur_len += 1
        can_improve = _can_improve(can_improve, running_scores, finished_scores, is_finished, cur_len, s)
        done = ~can_improve[:, 0]                                                     # (b,)
        if s.early_stopping is True:
            done |= is_finished.all(dim=-1)
        if bool(done.all()) or bool(hits.all()):
            break
        rows = src_beam + batch_offset                          # (b, nb) cache row each beam continues
        n_done = int(done.sum())
        if n_done and 4 * n_done >= b and not s.do_sample and record is None:  # (beam sampling: keep
            out[items[done]], out_len[items[done]] = finished[done, :nrs], finished_len[done, :nrs]  # its draws)
            keep = (~done).nonzero().squeeze(1)                                       # (b',)
            items, rows, next_tokens = items[keep], rows[keep], next_tokens[keep]
            running, running_scores, can_improve = running[keep], running_scores[keep], can_improve[keep]
            finished, finished_scores = finished[keep], finished_scores[keep]
            finished_len, is_finished = finished_len[keep], is_finished[keep]
            b = keep.numel()
            batch_offset = batch_offset[:b]
        cache.reorder(rows.view(-1))
        tokens = next_tokens.view(-1, 1)

    out[items], out_len[items] = finished[:, :nrs], finished_len[:, :nrs]
    length = int(out_len.max())
    sequences = out[:, :, :length].reshape(B * nrs, length)
    if record is None:
        return sequences
    # (with a record no input left early: finished holds every input, in order)
    return GenerateBeamEncoderDecoderOutput(
        sequences=sequences, sequences_scores=finished_scores[:, :nrs].reshape(-1) if record.scores else None,
        **record.tuples(),
        beam_indices=finished_bi[:, :nrs, :length - prompt].reshape(B * nrs, length - prompt))


def _gather_beams(t: Tensor, beam: Tensor) -> Tensor:
    """``t`` (B, nb, L) rows picked per input by ``beam`` (B, k) -> (B, k, L)."""
    return t.gather(1, beam[:, :, None].expand(-1, -1, t.shape[2]))


def _can_improve(can_improve: Tensor, running_scores: Tensor, finished_scores: Tensor, is_finished: Tensor,
                 cur_len: int, s: GenerationSettings) -> Tensor:
    """(B, 1): can the best running beam still beat the worst finished hypothesis?

    transformers' heuristic (`_check_early_stop_heuristic`): the best running score is divided by
    the current new length ** length_penalty, or with early_stopping="never" and a positive
    length_penalty by the longest possible one. Once False, it stays False.
    """
    if s.early_stopping == "never" and s.length_penalty > 0.0:
        best_length = s.max_length - s.prompt_length
    else:
        best_length = cur_len - s.prompt_length
    best_running = running_scores[:, :1] / (best_length ** s.length_penalty)
    worst_finished = torch.where(is_finished, finished_scores.min(dim=1, keepdim=True)[0], _NEG)
    return can_improve & (best_running > worst_finished).any(dim=-1, keepdim=True)
