"""The options of ``generate`` (t5electra/generation/seq2seq.py): each checked, with a message that
names it and its value, and the defaults filled in from the model's config, as transformers 5 does
(``GenerationConfig`` and ``GenerationMixin._prepare_*``). The result is a frozen
:class:`GenerationSettings` and the decoder prompt."""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers

import torch
from torch import Tensor

from ..errors import InvalidInputError

logger = logging.getLogger("t5electra")

# transformers' GenerationConfig defaults (``_get_default_generation_params``).
DEFAULT_MAX_NEW_TOKENS = 20
DEFAULT_TOP_K = 50


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """The options of one ``generate`` call, checked and with the model's defaults filled in."""

    max_length: int                 # total decoder length, decoder prompt included
    min_length: int                 # EOS is suppressed while the output (prompt included) is shorter
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
    decoder_start_token_id: int | tuple[int, ...]  # first decoder token (or one per input row)
    prompt_length: int = 1          # decoder tokens before generation starts (start token + decoder_input_ids)
    bad_words_ids: tuple[tuple[int, ...], ...] = ()  # token sequences never generated
    forced_bos_token_id: int | None = None           # the first generated token (output length 1 -> 2)
    forced_eos_token_id: tuple[int, ...] = ()        # forced (one of them) at the last step, max_length - 1
    suppress_tokens: tuple[int, ...] = ()            # never generated
    begin_suppress_tokens: tuple[int, ...] = ()      # not generated at output length begin_suppress_index
    begin_suppress_index: int = 1
    max_time: float | None = None                    # seconds; stop after the step that passes it

    @property
    def bans_vary(self) -> bool:
        """Bans that depend on the tokens generated so far (no_repeat_ngram_size, bad words of more than
        one token): the only ones that can leave a row without a token at some step, since the fixed ones
        are refused up front when they cover the vocabulary (``_check_bans``)."""
        return self.no_repeat_ngram_size > 0 or any(len(w) > 1 for w in self.bad_words_ids)


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


def encoder_states(encoder_outputs) -> Tensor:
    """The (B, S, D) encoder output of ``encoder_outputs``: an output with ``last_hidden_state``, a
    tuple starting with it (transformers' tuple outputs) or the tensor itself."""
    states = encoder_outputs
    if not isinstance(states, Tensor):
        states = getattr(encoder_outputs, "last_hidden_state", None)
        if states is None and isinstance(encoder_outputs, (tuple, list)) and encoder_outputs:
            states = encoder_outputs[0]
    if not isinstance(states, Tensor) or states.dim() != 3 or not states.dtype.is_floating_point:
        raise InvalidInputError(f"generate: encoder_outputs must be the encoder's output (an object with "
                                f"last_hidden_state (B, S, D), a tuple starting with it, or the tensor), got "
                                f"{type(encoder_outputs).__name__}")
    return states


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

# Defaults of the options a call leaves at None (transformers' GenerationConfig defaults).
_DEFAULTS = dict(num_beams=1, length_penalty=1.0, early_stopping=False, do_sample=False, temperature=1.0,
                 num_return_sequences=1, repetition_penalty=1.0, no_repeat_ngram_size=0)


def settings(model, input_ids, attention_mask, enc, decoder_input_ids, *, max_length, max_new_tokens, min_length,
              min_new_tokens, max_time, num_beams, length_penalty, early_stopping, do_sample, temperature, top_k,
              top_p, num_return_sequences, repetition_penalty, no_repeat_ngram_size, bad_words_ids,
              forced_bos_token_id, forced_eos_token_id, suppress_tokens, begin_suppress_tokens, eos_token_id,
              pad_token_id, decoder_start_token_id) -> tuple[GenerationSettings, Tensor]:
    """Check every option and the inputs; fill the defaults from ``model.config``. Returns the
    settings and the decoder prompt (B, P): the start token, then ``decoder_input_ids``."""
    config = model.config
    (max_length, max_new_tokens, min_length, min_new_tokens, max_time, num_beams, length_penalty, temperature,
     top_k, top_p, num_return_sequences, repetition_penalty, no_repeat_ngram_size, forced_bos_token_id,
     eos_token_id, pad_token_id, decoder_start_token_id) = map(_plain, (
        max_length, max_new_tokens, min_length, min_new_tokens, max_time, num_beams, length_penalty, temperature,
        top_k, top_p, num_return_sequences, repetition_penalty, no_repeat_ngram_size, forced_bos_token_id,
        eos_token_id, pad_token_id, decoder_start_token_id))
    d = _DEFAULTS
    num_beams, length_penalty, early_stopping, do_sample, temperature, num_return_sequences, repetition_penalty, \
        no_repeat_ngram_size = (d[k] if v is None else v for k, v in (
            ("num_beams", num_beams), ("length_penalty", length_penalty), ("early_stopping", early_stopping),
            ("do_sample", do_sample), ("temperature", temperature), ("num_return_sequences", num_return_sequences),
            ("repetition_penalty", repetition_penalty), ("no_repeat_ngram_size", no_repeat_ngram_size)))
    vocab_size = config.vocab_size
    batch_size = _check_inputs(input_ids, attention_mask, enc, vocab_size, getattr(config, "d_model", None))

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
    if isinstance(start, (list, tuple)):  # one per input row, as transformers takes it
        start = token_ids("decoder_start_token_id", start, vocab_size)
        if len(start) != batch_size:
            raise InvalidInputError(f"generate: decoder_start_token_id has {len(start)} ids; give one per input "
                                    f"row ({batch_size}) or a single id")
    elif not isinstance(start, int) or isinstance(start, bool):
        raise InvalidInputError(f"generate: decoder_start_token_id must be a token id or a list of one per input "
                                f"row, got {start!r}")
    for name, value in (("eos_token_id", eos_ids), ("pad_token_id", (pad,) if pad is not None else ()),
                        ("decoder_start_token_id", start if isinstance(start, tuple) else (start,))):
        for v in value:
            if not 0 <= v < vocab_size:
                raise InvalidInputError(f"generate: {name}={v} is outside the vocabulary [0, {vocab_size})")
    prompt_ids = _decoder_prompt(decoder_input_ids, start, batch_size, vocab_size)

    # Lengths. max_length and min_length count the decoder prompt: the start token, then decoder_input_ids.
    prompt = prompt_ids.shape[1]
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
        what = "the decoder start token" if prompt == 1 else "the decoder start token and decoder_input_ids"
        raise InvalidInputError(
            f"generate: max_length={max_length!r} leaves no room to generate: it counts the decoder prompt "
            f"({prompt} token{'s' if prompt > 1 else ''}, {what}), so it must be at least {prompt + 1}; "
            f"or set max_new_tokens")
    for name, value in (("min_new_tokens", min_new_tokens), ("min_length", min_length)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise InvalidInputError(f"generate: {name} must be an integer >= 0, got {value!r}")
    if min_new_tokens is not None:
        if min_new_tokens > max_length - prompt:
            raise InvalidInputError(f"generate: min_new_tokens={min_new_tokens} is more than the "
                                    f"{max_length - prompt} new tokens allowed (max_new_tokens, or max_length "
                                    f"minus the decoder prompt)")
        if min_length is not None:
            logger.warning("generate: both min_new_tokens=%d and min_length=%d given; min_new_tokens wins "
                           "(as in transformers)", min_new_tokens, min_length)
        min_length = prompt + min_new_tokens
    elif min_length is not None and min_length > max_length:
        logger.warning("generate: min_length=%d is more than max_length=%d: EOS is suppressed to the end "
                       "(as in transformers)", min_length, max_length)
    if max_time is not None and (not _number(max_time) or max_time <= 0):
        raise InvalidInputError(f"generate: max_time must be a number of seconds > 0, got {max_time!r}")
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
    if top_k is None or not do_sample:  # top_k and top_p: like temperature, only sampling reads them
        top_k = DEFAULT_TOP_K
    if not isinstance(top_k, int) or top_k < 0:
        raise InvalidInputError(f"generate: top_k must be an integer >= 0 (0 disables it), got {top_k!r}")
    if top_p is None or not do_sample:
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

    # Token constraints (processors.py).
    if forced_bos_token_id is not None and (not isinstance(forced_bos_token_id, int) or isinstance(
            forced_bos_token_id, bool) or not 0 <= forced_bos_token_id < vocab_size):
        raise InvalidInputError(f"generate: forced_bos_token_id must be a token id in [0, {vocab_size}), "
                                f"got {forced_bos_token_id!r}")
    bad_words = token_sequences("bad_words_ids", bad_words_ids, vocab_size)
    forced_eos = token_ids("forced_eos_token_id", forced_eos_token_id, vocab_size)
    suppress = token_ids("suppress_tokens", suppress_tokens, vocab_size)
    begin_suppress = token_ids("begin_suppress_tokens", begin_suppress_tokens, vocab_size)
    # transformers: the first generated token, or the second after a forced BOS
    begin_index = prompt + (prompt == 1 and forced_bos_token_id is not None)
    _check_bans(vocab_size, prompt, max_length, min_length or 0, eos_ids, bad_words, forced_bos_token_id,
                forced_eos, suppress, begin_suppress, begin_index)
    return GenerationSettings(
        max_length=max_length, min_length=min_length or 0, num_beams=num_beams,
        length_penalty=float(length_penalty), early_stopping=early_stopping, do_sample=do_sample,
        temperature=float(temperature), top_k=top_k, top_p=float(top_p),
        num_return_sequences=num_return_sequences, repetition_penalty=float(repetition_penalty),
        no_repeat_ngram_size=no_repeat_ngram_size, eos_token_id=eos_ids, pad_token_id=pad,
        decoder_start_token_id=start, prompt_length=prompt,
        bad_words_ids=bad_words, forced_bos_token_id=forced_bos_token_id, forced_eos_token_id=forced_eos,
        suppress_tokens=suppress, begin_suppress_tokens=begin_suppress, begin_suppress_index=begin_index,
        max_time=None if max_time is None else float(max_time)), prompt_ids


def _check_bans(vocab_size: int, prompt: int, max_length: int, min_length: int, eos: tuple[int, ...],
                bad_words: tuple[tuple[int, ...], ...], forced_bos: int | None, forced_eos: tuple[int, ...],
                suppress: tuple[int, ...], begin_suppress: tuple[int, ...], begin_index: int) -> None:
    """Refuse token constraints that ban every token at some step (processors.py applies the
    suppressions after the forced tokens): greedy search then emitted token 0, beam search returned
    the start token alone and sampling raised torch's "probability tensor contains inf, nan".
    transformers refuses a forced token that is also in suppress_tokens (GenerationConfig.validate)."""
    always = set(suppress)
    for name, forced in (("forced_bos_token_id", () if forced_bos is None else (forced_bos,)),
                         ("forced_eos_token_id", forced_eos)):
        if forced and set(forced) <= always:
            raise InvalidInputError(
                f"generate: every token of {name} ({', '.join(map(str, sorted(set(forced))))}) is also in "
                f"suppress_tokens: forcing a token while suppressing it leaves nothing to generate at that step; "
                f"remove it from one of the two (to prevent an early EOS, use min_new_tokens)")
    if forced_eos and max_length - 1 == begin_index and set(forced_eos) <= always | set(begin_suppress):
        raise InvalidInputError(
            f"generate: forced_eos_token_id ({', '.join(map(str, sorted(set(forced_eos))))}) is forced at the step "
            f"where begin_suppress_tokens suppresses it (output length {begin_index}, the first new token): nothing "
            f"is left to generate; remove it from begin_suppress_tokens or allow more new tokens")
    always |= {w[0] for w in bad_words if len(w) == 1 and w[0] not in eos}
    steps = [("every step", always, "suppress_tokens and one-token bad_words_ids")]
    if prompt < min(min_length, max_length):
        steps.append((f"output lengths below min_length={min_length}", always | set(eos),
                      "suppress_tokens, bad_words_ids and EOS (banned before min_length / min_new_tokens)"))
    if begin_index < max_length:
        steps.append((f"the first new token (output length {begin_index})",
                      always | set(begin_suppress) | (set(eos) if begin_index < min_length else set()),
                      "suppress_tokens, bad_words_ids and begin_suppress_tokens"
                      + (" (and EOS, before min_length)" if begin_index < min_length else "")))
    for where, banned, names in steps:
        if len(banned) >= vocab_size:
            raise InvalidInputError(f"generate: {names} ban all {vocab_size} tokens of the vocabulary at {where}: "
                                    f"nothing is left to generate; ban fewer tokens")


def _check_inputs(input_ids, attention_mask, enc: Tensor | None, vocab_size: int, d_model: int | None) -> int:
    """Check the encoder inputs (ids, mask, or its precomputed output ``enc``); returns the batch size."""
    if input_ids is not None:
        if not isinstance(input_ids, Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (
                torch.int64, torch.int32):
            what = (f"a {input_ids.dtype} tensor of shape {tuple(input_ids.shape)}" if isinstance(input_ids, Tensor)
                    else type(input_ids).__name__)
            raise InvalidInputError(f"generate: input_ids must be an integer tensor of shape (batch, length), "
                                    f"got {what}")
        if input_ids.numel() == 0:
            raise InvalidInputError(f"generate: input_ids is empty (shape {tuple(input_ids.shape)})")
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            row, col = (input_ids == bad).nonzero()[0].tolist()
            raise InvalidInputError(f"generate: input_ids[{row}, {col}] = {bad} is outside the vocabulary "
                                    f"[0, {vocab_size}) of the model (config.vocab_size)")
    if enc is not None and d_model is not None and enc.shape[-1] != d_model:
        raise InvalidInputError(f"generate: encoder_outputs has hidden size {enc.shape[-1]}, the model's is {d_model} "
                                f"(shape {tuple(enc.shape)}: the output of another model's encoder?)")
    if enc is not None and input_ids is not None and enc.shape[0] != input_ids.shape[0]:
        raise InvalidInputError(f"generate: encoder_outputs has {enc.shape[0]} rows, input_ids "
                                f"{input_ids.shape[0]}; they must match")
    shape, what = (enc.shape[:2], "encoder_outputs (batch, length)") if enc is not None else (
        input_ids.shape, "input_ids")
    if attention_mask is not None and not isinstance(attention_mask, Tensor):
        raise InvalidInputError(f"generate: attention_mask must be a tensor of shape {tuple(shape)}, got "
                                f"{type(attention_mask).__name__} (a generation config goes in generation_config=)")
    if attention_mask is not None and attention_mask.shape != shape:
        raise InvalidInputError(f"generate: attention_mask has shape {tuple(attention_mask.shape)}, "
                                f"{what} has shape {tuple(shape)}; they must match")
    return shape[0]


def _decoder_prompt(decoder_input_ids, start: int | tuple[int, ...], batch_size: int, vocab_size: int) -> Tensor:
    """(B, P): the decoder start token (``start``: one, or one per row), then ``decoder_input_ids`` if
    given. As transformers, the start token is not prepended when some row already starts with its own
    start token (then each row is taken as is)."""
    first = (torch.tensor(start, dtype=torch.long) if isinstance(start, tuple)
             else torch.full((batch_size,), start, dtype=torch.long))[:, None]      # (B, 1)
    if decoder_input_ids is None:
        return first
    d = decoder_input_ids
    if (not isinstance(d, Tensor) or d.dim() != 2 or d.dtype not in (torch.int64, torch.int32)
            or d.shape[0] != batch_size or d.shape[1] == 0):
        what = f"shape {tuple(d.shape)}, {d.dtype}" if isinstance(d, Tensor) else type(d).__name__
        raise InvalidInputError(f"generate: decoder_input_ids must be an integer tensor (batch={batch_size}, "
                                f"length >= 1), got {what}")
    token_ids("decoder_input_ids", d.flatten(), vocab_size)
    d = d.long()
    if bool((d[:, :1] != first.to(d.device)).all()):
        d = torch.cat([first.to(d.device), d], dim=1)
    return d


def token_ids(name: str, value, vocab_size: int) -> tuple[int, ...]:
    """An int or a list of ints, each a token id in [0, vocab_size) -> a tuple (None -> ())."""
    if value is None:
        return ()
    if isinstance(value, Tensor):
        value = value.tolist()
    items = [value] if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    if not isinstance(items, (list, tuple)) or not all(
            isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
        raise InvalidInputError(f"generate: {name} must be a token id or a list of token ids, got {value!r}")
    for v in items:
        if not 0 <= v < vocab_size:
            raise InvalidInputError(f"generate: {name} has id {int(v)}, outside the vocabulary [0, {vocab_size})")
    return tuple(int(v) for v in items)


def token_sequences(name: str, value, vocab_size: int) -> tuple[tuple[int, ...], ...]:
    """``bad_words_ids``: a non-empty list of non-empty lists of token ids (as transformers requires)."""
    if value is None:
        return ()
    if isinstance(value, Tensor):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value or not all(
            isinstance(seq, (list, tuple, Tensor)) and len(seq) for seq in value):
        raise InvalidInputError(f"generate: {name} must be a non-empty list of non-empty lists of token ids "
                                f"(e.g. [[5], [17, 9]]), got {value!r}")
    return tuple(token_ids(name, list(seq.tolist() if isinstance(seq, Tensor) else seq), vocab_size)
                 for seq in value)
