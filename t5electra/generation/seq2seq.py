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

* ``max_length`` and ``min_length`` count the decoder prompt (the start token, then any
  ``decoder_input_ids``); without ``max_length`` and ``max_new_tokens``, 20 new tokens are generated
  (transformers 5 adds the default 20 to the decoder prompt length).
* The start token is put before ``decoder_input_ids`` only when no row starts with it already.
* ``max_new_tokens`` wins over ``max_length`` when both are set, in the call or in a generation
  config (a warning is logged); the same for ``min_new_tokens`` over ``min_length``.
* With sampling and ``top_k=None``, transformers' default ``top_k=50`` applies; ``top_k=0`` disables it.
* Beam search pads finished hypotheses with ``pad_token_id or eos_token_id``: for T5 (pad = 0)
  that is the EOS id 1, whereas greedy and sampling pad with 0.
* ``repetition_penalty`` counts the decoder start token as already generated.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from typing import Protocol

import torch
from torch import Tensor

from ..core.generation_config import CALL_KEYS, GenerationConfig, options_from, with_defaults
from ..core.outputs import GenerateBeamEncoderDecoderOutput, GenerateEncoderDecoderOutput
from ..config import suggest
from ..errors import InvalidInputError
from .options import GenerationSettings, encoder_states, settings
from .processors import LogitsProcessors
from .sampling import sample_top_k, warp_scores

logger = logging.getLogger("t5electra")

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


def generate(
    model: EncoderDecoderLM,
    input_ids: Tensor | None = None,
    attention_mask: Tensor | None = None,
    *,
    inputs: Tensor | None = None,
    generation_config=None,
    decoder_input_ids: Tensor | None = None,
    encoder_outputs=None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    min_length: int | None = None,
    min_new_tokens: int | None = None,
    max_time: float | None = None,
    num_beams: int | None = None,
    length_penalty: float | None = None,
    early_stopping: bool | str | None = None,
    do_sample: bool | None = None,
    temperature: float | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
    num_return_sequences: int | None = None,
    repetition_penalty: float | None = None,
    no_repeat_ngram_size: int | None = None,
    bad_words_ids: list[list[int]] | None = None,
    forced_bos_token_id: int | None = None,
    forced_eos_token_id: int | list[int] | None = None,
    suppress_tokens: list[int] | None = None,
    begin_suppress_tokens: list[int] | None = None,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    decoder_start_token_id: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool | None = None,
    return_dict_in_generate: bool | None = None,
    output_scores: bool | None = None,
    output_logits: bool | None = None,
    synced_gpus: bool | None = None,
    labels: Tensor | None = None,
    **unsupported,
) -> Tensor | GenerateEncoderDecoderOutput | GenerateBeamEncoderDecoderOutput:
    """Generate output ids for a batch of encoder inputs (transformers' ``generate`` semantics).

    Args:
        model: an encoder-decoder model with ``encode`` / ``new_decoder_cache`` / ``decode_step``.
        input_ids: (B, S) encoder token ids, right-padded.
        attention_mask: (B, S) 1 for tokens, 0 for padding; None means no padding. A generation config
            given here is taken as ``generation_config`` (transformers' ``generate(inputs, generation_config)``).
        generation_config: a GenerationConfig (ours or transformers') or a dict: its values are the
            defaults of this call (an option given here wins, option by option; then, as in
            transformers, max_new_tokens wins over max_length and min_new_tokens over min_length
            wherever each was given).
        decoder_input_ids: (B, P) a decoder prefix to continue; the output starts with it (after the
            decoder start token, which is prepended unless some row already starts with it).
        encoder_outputs: the encoder's output for the inputs (``model.get_encoder()(...)``, a tuple
            starting with it, or the (B, S, D) tensor): the encoder is not run again.
        max_length: total output length including the decoder prompt.
        max_new_tokens: tokens to generate after the prompt; wins over ``max_length``.
        min_length / min_new_tokens: EOS is impossible while the output (prompt included) is shorter
            than ``min_length``, or before ``min_new_tokens`` new tokens (which wins over min_length).
        max_time: seconds; generation stops after the step that passes it.
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
        synced_gpus: transformers' option for generating with weights sharded over processes (DeepSpeed
            ZeRO-3, FSDP), where every process must run as many steps as the longest: False / None only
            (this generate runs the whole model in one process); True is refused.
        labels: ignored, as transformers' generate ignores it (its Seq2SeqTrainer passes the batch,
            labels included, to generate).
        The other options are documented on :class:`GenerationSettings` and in docs/generation.md.
        An option transformers has and this function does not raises a TypeError naming it.

    Returns:
        LongTensor (B * num_return_sequences, T), T <= max_length: the decoder prompt, the
        generated tokens, then padding after EOS. Rows of one input are consecutive.
    """
    if _is_generation_config(attention_mask):  # transformers' generate(inputs, generation_config)
        _only_one_config(generation_config)
        attention_mask, generation_config = None, attention_mask
    if unsupported:
        hints = "".join(suggest(k, ARGUMENTS) for k in sorted(unsupported))
        raise TypeError(f"generate: option(s) {', '.join(sorted(unsupported))} not supported{hints} (a transformers "
                        f"option t5electra does not implement, or a misspelling); generate's arguments: "
                        f"{', '.join(ARGUMENTS)}")
    if synced_gpus not in (None, False):
        raise InvalidInputError(f"generate(synced_gpus={synced_gpus!r}): generation synchronised over processes "
                                f"(DeepSpeed ZeRO-3 / FSDP-sharded weights) is not supported; generate runs the whole "
                                f"model in this process: gather the weights into one model and pass synced_gpus=False")
    del labels  # transformers' generate ignores them too
    args = locals()
    options = {name: args[name] for name in OPTIONS}
    if generation_config is not None:
        options = with_defaults(options, options_from(generation_config))
    return _generate(model, input_ids, attention_mask, inputs=inputs, decoder_input_ids=decoder_input_ids,
                     encoder_outputs=encoder_outputs, generator=generator, **options)


# The options a generation config may give (generation_config=, model.generation_config).
OPTIONS = CALL_KEYS


def _is_generation_config(x) -> bool:
    """A generation config object (ours, transformers' or a subclass of it: what has ``to_dict``), not a
    tensor or a dict."""
    return isinstance(x, GenerationConfig) or (not isinstance(x, (Tensor, dict)) and x is not None
                                               and callable(getattr(x, "to_dict", None)))


def _only_one_config(given) -> None:
    if given is not None:
        raise InvalidInputError("generate: a generation config given both as the second positional argument "
                                "(transformers' generate(inputs, generation_config)) and as generation_config=: "
                                "give one")


def call_arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """``model.generate(*args, **kwargs)`` with a generation config given as the second positional
    argument (transformers' ``generate(inputs, generation_config, ...)``; ours takes attention_mask
    there) moved to ``generation_config=``, so that model.generation_config fills in under it."""
    if len(args) >= 2 and _is_generation_config(args[1]):
        _only_one_config(kwargs.get("generation_config"))
        return (args[0], *args[2:]), {**kwargs, "generation_config": args[1]}
    return args, kwargs
ARGUMENTS = ("input_ids", "attention_mask", "inputs", "generation_config", "decoder_input_ids", "encoder_outputs",
             "generator", *OPTIONS, "synced_gpus", "labels")


def _generate(model, input_ids, attention_mask, *, inputs, decoder_input_ids, encoder_outputs, generator,
              use_cache, return_dict_in_generate, output_scores, output_logits, **options):
    started = time.monotonic()
    if inputs is not None:
        if input_ids is not None:
            raise InvalidInputError("generate: give input_ids or inputs (transformers' name for it), not both")
        input_ids = inputs
    if input_ids is None and encoder_outputs is None:
        raise InvalidInputError("generate: input_ids is missing (or give encoder_outputs)")
    use_cache = True if use_cache is None else use_cache
    asked_for_tensor = return_dict_in_generate is False  # (given: a config's output_scores is then moot)
    return_dict_in_generate, output_scores, output_logits = (
        False if x is None else x for x in (return_dict_in_generate, output_scores, output_logits))
    for name, flag in (("use_cache", use_cache), ("return_dict_in_generate", return_dict_in_generate),
                       ("output_scores", output_scores), ("output_logits", output_logits)):
        if not isinstance(flag, bool):
            raise InvalidInputError(f"generate: {name} must be True or False, got {flag!r}")
    if (output_scores or output_logits) and not return_dict_in_generate and not asked_for_tensor:
        logger.warning("generate: output_scores / output_logits need return_dict_in_generate=True "
                       "(as in transformers); returning the sequences only")
    record = _Record(output_scores, output_logits) if return_dict_in_generate else None
    enc = None if encoder_outputs is None else encoder_states(encoder_outputs)
    s, prompt = settings(model, input_ids, attention_mask, enc, decoder_input_ids, **options)
    with torch.inference_mode():  # (what it returns is copied out of inference mode: normal())
        # The encoder runs once per input, and the cross-attention K/V are computed once per input:
        # the cache then duplicates its rows for the beams / samples (B -> B * expand rows, grouped
        # by input), which a cache may do without copying (T5DecoderCache shares them).
        if enc is None:
            enc = model.encode(input_ids, attention_mask=attention_mask)  # (B, S, D)
        device = enc.device
        batch_size = enc.shape[0]
        cache = model.new_decoder_cache(enc, attention_mask, s.max_length)
        del enc
        expand = max(s.num_beams, s.num_return_sequences)
        if expand > 1:
            cache.reorder(torch.arange(batch_size, device=device).repeat_interleave(expand))
        prompt = prompt.to(device).repeat_interleave(expand, dim=0)        # (B * expand, P)
        timer = _Timer(started, s.max_time)
        if s.num_beams > 1:
            return _beam_search(model, cache, prompt, s, generator, record, timer)
        return _greedy_or_sample(model, cache, prompt, s, generator, record, timer)


def normal(t: Tensor | None) -> Tensor | None:
    """A tensor made under ``torch.inference_mode()`` as an ordinary one (a copy; the outputs are
    small): callers edit outputs in place (``out[out == 0] = -100``) and train on them as labels,
    which PyTorch refuses for inference tensors. transformers' generate runs under no_grad."""
    if t is None or not t.is_inference():
        return t
    with torch.inference_mode(False):
        return t.clone()


@dataclasses.dataclass
class _Timer:
    """``max_time``: has it passed since generate was called? (transformers' MaxTimeCriteria)"""

    started: float
    max_time: float | None

    def out(self) -> bool:
        return self.max_time is not None and time.monotonic() - self.started > self.max_time


@dataclasses.dataclass
class _Record:
    """What ``return_dict_in_generate`` asked to keep of each step."""

    scores: bool
    logits: bool
    steps_scores: list[Tensor] = dataclasses.field(default_factory=list)
    steps_logits: list[Tensor] = dataclasses.field(default_factory=list)

    def step(self, logits: Tensor, scores: Tensor) -> None:
        with torch.inference_mode(False):  # copies the caller may edit and train with (see normal())
            if self.scores:
                self.steps_scores.append(scores.clone())
            if self.logits:
                self.steps_logits.append(logits.clone())

    def tuples(self) -> dict[str, tuple[Tensor, ...] | None]:
        return {"scores": tuple(self.steps_scores) if self.scores else None,
                "logits": tuple(self.steps_logits) if self.logits else None}


# --------------------------------------------------------------------------------------------
# Greedy search and sampling
# --------------------------------------------------------------------------------------------

def _greedy_or_sample(model, cache, prompt: Tensor, s: GenerationSettings, generator: torch.Generator | None,
                      record: _Record | None, timer: _Timer):
    """One token per row and step (argmax, or a draw from the warped distribution).

    Rows that finish are fed ``pad`` and their output is ``pad``, as in transformers. Once a quarter
    of the rows still in the cache have finished, they are dropped from it (``cache.reorder``), so
    a batch of mixed lengths stops paying for its finished rows.
    """
    (n_rows, cur_len), device = prompt.shape, prompt.device
    process = LogitsProcessors(s, device)
    eos = process.eos
    pad = s.pad_token_id if s.pad_token_id is not None else 0  # only used once a row hit EOS
    out = torch.full((n_rows, s.max_length), pad, dtype=torch.long, device=device)
    out[:, :cur_len] = prompt
    rows = torch.arange(n_rows, device=device)       # (A,) output row of each row in the cache
    done = torch.zeros(n_rows, dtype=torch.bool, device=device)  # (A,) finished, still in the cache

    tokens = prompt                                   # (A, t) next decoder input: the prompt, then one token
    # Greedy with processors that only ban tokens: the model may skip the full output layer
    # (decode_step_argmax; the same tokens). Not at a step that forces a token: the forced tokens
    # all score 0, and the first of them wins, whatever their logits.
    argmax_step = (getattr(model, "decode_step_argmax", None)
                   if not s.do_sample and s.repetition_penalty == 1.0 and record is None else None)
    while True:
        history = out[rows, :cur_len] if process.needs_history else None
        if argmax_step is not None and not process.forces(cur_len):
            bans = functools.partial(process, history=history, cur_len=cur_len)
            next_tokens = argmax_step(tokens, cache, bans)
        else:
            logits = model.decode_step(tokens, cache)[:, -1].float()    # (A, V)
            scores = process(logits, history, cur_len)
            if record is not None:  # transformers records the scores after its warpers too
                record.step(logits, warp_scores(scores, s.temperature, s.top_k, s.top_p, min_tokens_to_keep=1)
                            if s.do_sample else scores)
            if s.do_sample:
                if s.bans_vary:  # (a copy and a pass over (A, V) a step: only where a row can run out)
                    _check_some_token_left(scores[~done], cur_len)
                draw = functools.partial(_draw, rows=rows, n_rows=n_rows, generator=generator)
            if s.do_sample and s.top_k:
                next_tokens = sample_top_k(scores, s.top_k, s.top_p, s.temperature, generator, draw)
            elif s.do_sample:
                probs = warp_scores(scores, s.temperature, s.top_k, s.top_p, min_tokens_to_keep=1).softmax(dim=-1)
                next_tokens = draw(probs).squeeze(1)
            else:
                next_tokens = scores.argmax(dim=-1)                       # (A,)
        if eos.numel():
            next_tokens = next_tokens.masked_fill(done, pad)
        out[rows, cur_len] = next_tokens
        cur_len += 1
        if cur_len >= s.max_length or timer.out():
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
        return GenerateEncoderDecoderOutput(sequences=normal(out[:, :cur_len]), **record.tuples())
    return normal(out[:, :cur_len])


def _draw(probs: Tensor, rows: Tensor, n_rows: int, generator: torch.Generator | None) -> Tensor:
    """``torch.multinomial(probs, 1)`` (A, 1) for the rows still in the cache (output rows ``rows``), drawn
    as if all ``n_rows`` were there: torch draws one random number per row and candidate (for one sample,
    argmax of probs / Exp(1) noise), so rows dropped from the cache would shift the later rows' draws,
    and the tokens would depend on when finished rows left (which return_dict_in_generate, keeping them
    all, changes) and differ from transformers' draws for the same seed."""
    if probs.shape[0] == n_rows:
        return torch.multinomial(probs, num_samples=1, generator=generator)
    full = probs.new_zeros(n_rows, probs.shape[1])
    full[:, 0] = 1.0                                  # the rows that left draw too (and are discarded)
    full[rows] = probs
    return torch.multinomial(full, num_samples=1, generator=generator)[rows]


def _check_some_token_left(scores: Tensor, cur_len: int) -> None:
    """Sampling: refuse a row whose every score is -inf (the constraints banned every token; options.py
    refuses the static cases), which torch.multinomial reports as 'probability tensor contains inf, nan'."""
    empty = torch.isneginf(scores).all(dim=-1)
    if bool(empty.any()):
        raise InvalidInputError(
            f"generate: at output length {cur_len} the constraints (no_repeat_ngram_size, bad_words_ids, "
            f"suppress_tokens, begin_suppress_tokens, min_length with EOS) ban every token of row "
            f"{int(empty.nonzero()[0])}: nothing is left to sample; loosen them")


# --------------------------------------------------------------------------------------------
# Beam search (transformers 5's vectorised beam search: `_beam_search` and helpers)
# --------------------------------------------------------------------------------------------

def _beam_search(model, cache, prompt_ids: Tensor, s: GenerationSettings, generator: torch.Generator | None,
                 record: _Record | None, timer: _Timer):
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
    nb, L, V = s.num_beams, s.max_length, model.config.vocab_size
    (B, prompt), device = (prompt_ids.shape[0] // nb, prompt_ids.shape[1]), prompt_ids.device
    process = LogitsProcessors(s, device)
    eos = process.eos
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
    running[:, :, :prompt] = prompt_ids.view(B, nb, prompt)
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

    tokens = prompt_ids                          # (B * nb, P): the prompt, then one token per step
    cur_len = prompt
    while True:
        logits = model.decode_step(tokens, cache)[:, -1].float()            # (b * nb, V)
        log_probs = torch.log_softmax(logits, dim=-1)
        history = running[:, :, :cur_len].reshape(b * nb, cur_len) if process.needs_history else None
        log_probs = process(log_probs, history, cur_len)
        # c. The K best continuations (or K drawn without replacement), best first, by accumulated
        # score (running score + log-prob of the token).
        if s.do_sample:
            log_probs = warp_scores(log_probs, s.temperature, s.top_k, s.top_p, min_tokens_to_keep=min_keep)
        if record is not None:
            record.step(logits, log_probs)
        if s.do_sample:
            log_probs = (log_probs.view(b, nb, V) + running_scores[:, :, None]).view(b, nb * V)
            if s.bans_vary:
                _check_some_token_left(log_probs, cur_len)
            cand = torch.multinomial(log_probs.softmax(dim=-1), num_samples=K, generator=generator)
            cand_scores = log_probs.gather(1, cand)
            cand_scores, order = cand_scores.sort(dim=-1, descending=True)
            cand = cand.gather(1, order)
            cand_beam = cand // V                                            # (b, K) beam it extends
            cand_token = cand % V                                            # (b, K) token it appends
        elif process.forces(cur_len):
            # A forced token scores 0 in every beam: ties, which only transformers' own top-k over all
            # nb * V continuations breaks as transformers does.
            cand_scores, cand = torch.topk((log_probs.view(b, nb, V) + running_scores[:, :, None]).view(b, nb * V), K)
            cand_beam, cand_token = cand // V, cand % V
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
        if cur_len + 1 >= L or timer.out():  # (max_time: every candidate ends here, as transformers)
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
    sequences = normal(out[:, :, :length].reshape(B * nrs, length))
    if record is None:
        return sequences
    # (with a record no input left early: finished holds every input, in order)
    return GenerateBeamEncoderDecoderOutput(
        sequences=sequences, sequences_scores=normal(finished_scores[:, :nrs].reshape(-1)) if record.scores else None,
        **record.tuples(),
        beam_indices=normal(finished_bi[:, :nrs, :length - prompt].reshape(B * nrs, length - prompt)))


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
