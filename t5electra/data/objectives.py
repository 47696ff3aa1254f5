"""Pretraining objectives as pure functions of token ids and a random generator.

T5 (Raffel et al., 2020, section 3.1.4 and 3.3) — a port of ``t5/data/preprocessors.py`` of
https://github.com/google-research/text-to-text-transfer-transformer (functions of the same name):

* **span corruption**, the objective T5 was trained with: about 15% of the tokens, in spans of mean
  length 3, are each replaced in the input by one sentinel; the target lists the sentinels, each
  followed by the tokens it replaced. ``<extra_id_0>`` is the *highest* sentinel id and later
  spans count down (``<extra_id_i> = sp_size + 99 - i``). EOS ends both sides::

      raw:     Thank you for inviting me to your party last week .
      inputs:  Thank you <extra_id_0> me to your party <extra_id_1> week . </s>
      targets: <extra_id_0> for inviting <extra_id_1> last <extra_id_2> </s>

* **i.i.d. denoising**: each token is noise with probability p; a run of noise shares one sentinel.
* **prefix LM**: a random split point; the inputs are the prefix, the targets the rest.

Every function takes a ``numpy.random.Generator``: the same generator state gives the same
example. ELECTRA/BERT masking lives in ``masking.py`` (one implementation) and is re-exported
here with :class:`MLMCollator`, so that every objective can be imported from one module.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import InvalidInputError
from .masking import IGNORE_INDEX, MaskedBatch, mask_tokens, max_predictions_per_seq

__all__ = [
    "check_span_parameters", "compute_input_and_target_lengths", "random_spans_noise_mask", "iid_noise_mask",
    "random_prefix_noise_mask", "noise_span_to_unique_sentinel", "nonnoise_span_to_unique_sentinel",
    "span_corruption", "iid_denoising", "prefix_lm", "SpanCorruption", "IIDDenoising", "PrefixLM",
    "Seq2SeqCollator", "MLMCollator", "mask_tokens", "MaskedBatch", "max_predictions_per_seq",
    "IGNORE_INDEX", "t5_sentinel_start_id",
]


# ---------------------------------------------------------------------------------------------
# Lengths
# ---------------------------------------------------------------------------------------------
def check_span_parameters(noise_density: float, mean_noise_span_length: float) -> None:
    """InvalidInputError unless 0 < noise_density < 1 and mean_noise_span_length >= 1 (both finite).

    A density of 1 or more has no non-noise token left (the length search never ends); a mean span
    shorter than one token asks for more spans than noise tokens.
    """
    if not (isinstance(noise_density, (int, float)) and 0.0 < noise_density < 1.0):
        raise InvalidInputError(f"noise_density must be a fraction in (0, 1), e.g. 0.15; got {noise_density!r}")
    if not (isinstance(mean_noise_span_length, (int, float)) and 1.0 <= mean_noise_span_length < float("inf")):
        raise InvalidInputError(f"mean_noise_span_length must be a number >= 1 (tokens), e.g. 3; "
                                f"got {mean_noise_span_length!r}")


def _span_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """``(num_noise_tokens, num_noise_spans)`` of the span mask of ``length`` (>= 2) tokens.

    t5 clips both to at least 1 (and the noise to at most ``length - 1``) so that every mask has a
    span to predict and a token to keep; the mask and the length search share this one rule, so
    the search counts the tokens the mask really produces. The spans are also capped at the kept
    tokens: each noise span needs a kept span before it (a density of 0.8 at mean span 3 asks for
    more). t5 fails there; without the cap the mask got empty kept spans, merged noise spans and
    noised 65 of 100 tokens instead of 80, and inputs overflowed ``inputs_length``.
    """
    # t5's mask computes in float32 (tf.round(to_float(length) * noise_density)): 190 x 0.15 is 28.5
    # (28) in float64 but 28.500002 (29) in float32. round() halves to even, as tf.round does.
    f32 = np.float32
    num_noise_tokens = min(max(int(round(float(f32(length) * f32(noise_density)))), 1), length - 1)
    num_noise_spans = max(int(round(float(f32(num_noise_tokens) / f32(mean_noise_span_length)))), 1)
    return num_noise_tokens, min(num_noise_spans, length - num_noise_tokens)


def compute_input_and_target_lengths(inputs_length: int, noise_density: float = 0.15,
                                     mean_noise_span_length: float = 3.0) -> tuple[int, int]:
    """Raw tokens needed so that span corruption gives exactly ``inputs_length`` input tokens.

    t5's ``random_spans_helper`` (and ``compute_input_and_target_lengths`` of transformers'
    ``run_t5_mlm_flax.py``): the largest raw length whose corrupted inputs (non-noise tokens, one
    sentinel per noise span, one EOS) still fit. Returns ``(raw_length, targets_length)``, both
    counts including the EOS: 512 -> (568, 114) and 128 -> (141, 29).

    One difference from t5: the counts are the mask's own (:func:`_span_counts`: at least one noise
    token and one span, in float32). t5's helper counts zero spans where the mask makes one, so for
    short inputs (8 at density 0.15, mean span 3) it promised 8 input tokens and the mask gave 9;
    and it counts in float64, so for 172 it promised 38 targets where the mask makes 40. Wherever
    t5's counts are the mask's, the two agree (tests/data/test_objectives.py checks 3..1099).
    """
    if inputs_length < 3:  # the shortest corruption: one kept token, one sentinel, EOS
        raise InvalidInputError(f"inputs_length must be >= 3 for span corruption (a kept token, a sentinel and "
                                f"EOS), got {inputs_length}")
    check_span_parameters(noise_density, mean_noise_span_length)

    def lengths(tokens_length: int) -> tuple[int, int]:
        num_noise_tokens, num_noise_spans = _span_counts(tokens_length, noise_density, mean_noise_span_length)
        num_nonnoise_tokens = tokens_length - num_noise_tokens
        # inputs: non-noise tokens + a sentinel per noise span + EOS; targets: the reverse.
        return num_nonnoise_tokens + num_noise_spans + 1, num_noise_tokens + num_noise_spans + 1

    # Each raw token adds at least (1 - noise_density) input tokens, so the loop ends before this bound.
    limit = int(inputs_length / (1.0 - noise_density)) + int(mean_noise_span_length) + 2
    tokens_length = inputs_length - 1
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
        if tokens_length > limit:  # pragma: no cover - unreachable with checked parameters
            raise InvalidInputError(f"no raw length fits inputs_length={inputs_length} with noise_density="
                                    f"{noise_density}, mean_noise_span_length={mean_noise_span_length}")
    _, targets_length = lengths(tokens_length)
    # t5's "minor hack": with density 0.5 keep the targets no longer than the inputs.
    if noise_density == 0.5 and targets_length > inputs_length:
        tokens_length -= 1
        targets_length -= 1
    return tokens_length, targets_length


# ---------------------------------------------------------------------------------------------
# Noise masks: bool arrays of shape (length,), True = noise
# ---------------------------------------------------------------------------------------------
def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator) -> np.ndarray:
    """Split ``num_items`` into ``num_segments`` random non-empty parts; (num_segments,) lengths."""
    first_in_segment = np.zeros(num_items, dtype=np.int64)
    # num_segments - 1 "a new segment starts here" marks among positions 1..num_items-1.
    starts = np.arange(num_items - 1) < num_segments - 1
    rng.shuffle(starts)
    first_in_segment[1:] = starts
    segment_id = np.cumsum(first_in_segment)
    return np.bincount(segment_id, minlength=num_segments)


def random_spans_noise_mask(length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                            *, rng: np.random.Generator, random_roll: bool = False) -> np.ndarray:
    """Noise mask of random spans (t5 ``random_spans_noise_mask``).

    ``num_noise = round(length * density)`` clipped to [1, length - 1] and
    ``num_spans = max(1, round(num_noise / mean_span))``, at most the kept tokens, are fixed; the
    span lengths are random.
    Spans alternate starting with non-noise, so the mask always *ends* on a noise span.
    ``random_roll=True`` rolls the mask by a uniform offset in [0, length) (t5's option of the same
    name): the pattern may then start and end anywhere, and a span cut by the roll becomes two.
    """
    if noise_density <= 0.0:
        return np.zeros(length, dtype=bool)
    orig_length = length
    length = max(length, 2)  # avoid degeneracy (t5 does the same, then cuts back)
    num_noise_tokens, num_noise_spans = _span_counts(length, noise_density, mean_noise_span_length)
    num_nonnoise_tokens = length - num_noise_tokens

    noise_span_lengths = _random_segmentation(num_noise_tokens, num_noise_spans, rng)
    nonnoise_span_lengths = _random_segmentation(num_nonnoise_tokens, num_noise_spans, rng)
    # [nonnoise_0, noise_0, nonnoise_1, noise_1, ...] -> span number of every position.
    interleaved = np.stack([nonnoise_span_lengths, noise_span_lengths], axis=1).reshape(-1)
    span_starts = np.cumsum(interleaved)[:-1]
    span_start_indicator = np.zeros(length, dtype=np.int64)
    span_start_indicator[span_starts] = 1
    is_noise = np.cumsum(span_start_indicator) % 2 == 1
    mask = is_noise[:orig_length]
    if random_roll:
        mask = np.roll(mask, int(rng.integers(0, length)))
    return mask


def iid_noise_mask(length: int, noise_density: float = 0.15, *, rng: np.random.Generator) -> np.ndarray:
    """Each position is noise independently with probability ``noise_density`` (t5 ``iid_noise_mask``)."""
    return rng.random(length) < noise_density


def random_prefix_noise_mask(length: int, *, rng: np.random.Generator) -> np.ndarray:
    """True for a prefix of uniform length in [1, length - 1] (t5 ``random_prefix_noise_mask``)."""
    max_input_tokens = length - 1
    min_input_tokens = min(max_input_tokens, 1)
    n = int(rng.integers(min_input_tokens, max_input_tokens + 1))
    return np.arange(length) < n


# ---------------------------------------------------------------------------------------------
# Turning (tokens, mask) into inputs and targets
# ---------------------------------------------------------------------------------------------
def noise_span_to_unique_sentinel(tokens: np.ndarray, noise_mask: np.ndarray, sentinel_start_id: int) -> np.ndarray:
    """Replace each run of noise by one sentinel, counting down from ``sentinel_start_id``.

    ``sentinel_start_id`` is the id of ``<extra_id_0>`` (t5 uses ``vocab_size - 1``: the sentinels
    are the last ids of the vocabulary).
    """
    tokens = np.asarray(tokens)
    prev_is_noise = np.concatenate([[False], noise_mask[:-1]])
    first_noise = noise_mask & ~prev_is_noise
    subsequent_noise = noise_mask & prev_is_noise
    sentinel = sentinel_start_id + 1 - np.cumsum(first_noise)
    out = np.where(first_noise, sentinel, tokens)
    return out[~subsequent_noise]


def nonnoise_span_to_unique_sentinel(tokens: np.ndarray, noise_mask: np.ndarray, sentinel_start_id: int) -> np.ndarray:
    """The targets side: keep the noise, replace each run of non-noise by a sentinel."""
    return noise_span_to_unique_sentinel(tokens, ~noise_mask, sentinel_start_id)


def _denoise(tokens: np.ndarray, noise_mask: np.ndarray, sentinel_start_id: int, eos_token_id: int,
             num_sentinels: int) -> tuple[np.ndarray, np.ndarray]:
    """inputs = tokens with noise spans -> sentinels; targets = sentinel k + span k, for every span.

    When the mask starts with non-noise (always, for the reference span mask) this is exactly
    t5's ``noise_span_to_unique_sentinel`` / ``nonnoise_span_to_unique_sentinel`` pair. When it
    starts with noise (i.i.d. masks, rolled masks), t5's targets would put the first span
    *before* ``<extra_id_0>``; we prepend ``<extra_id_0>`` instead so that sentinel k always
    precedes span k in the targets, as in the inputs.
    """
    noise_mask = np.asarray(noise_mask, dtype=bool)
    n_spans = int(np.count_nonzero(noise_mask & ~np.concatenate([[False], noise_mask[:-1]])))
    if n_spans > num_sentinels:
        raise InvalidInputError(f"{n_spans} noise spans but only {num_sentinels} sentinel tokens; "
                                f"use a shorter sequence or a lower noise density")
    inputs = noise_span_to_unique_sentinel(tokens, noise_mask, sentinel_start_id)
    if len(noise_mask) and noise_mask[0]:
        targets = np.concatenate([[sentinel_start_id],
                                  nonnoise_span_to_unique_sentinel(tokens, noise_mask, sentinel_start_id - 1)])
    else:
        targets = nonnoise_span_to_unique_sentinel(tokens, noise_mask, sentinel_start_id)
    eos = np.array([eos_token_id])
    return (np.concatenate([inputs, eos]).astype(np.int64), np.concatenate([targets, eos]).astype(np.int64))


def span_corruption(tokens: Sequence[int] | np.ndarray, *, rng: np.random.Generator, sentinel_start_id: int,
                    eos_token_id: int = 1, noise_density: float = 0.15, mean_noise_span_length: float = 3.0,
                    random_roll: bool = False, num_sentinels: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """T5's objective on one raw sequence; returns ``(inputs, targets)``, each ending in EOS.

    With ``len(tokens) = compute_input_and_target_lengths(n)[0]`` the inputs have exactly ``n``
    tokens (568 -> 512 inputs, 114 targets). With ``random_roll=True`` either side can be one
    token longer (a span cut by the roll needs one more sentinel).
    """
    tokens = np.asarray(tokens)
    mask = random_spans_noise_mask(len(tokens), noise_density, mean_noise_span_length, rng=rng,
                                   random_roll=random_roll)
    return _denoise(tokens, mask, sentinel_start_id, eos_token_id, num_sentinels)


def iid_denoising(tokens: Sequence[int] | np.ndarray, *, rng: np.random.Generator, sentinel_start_id: int,
                  eos_token_id: int = 1, noise_density: float = 0.15,
                  num_sentinels: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """The T5 paper's i.i.d. baseline: noise each token with probability p, one sentinel per run."""
    tokens = np.asarray(tokens)
    mask = iid_noise_mask(len(tokens), noise_density, rng=rng)
    return _denoise(tokens, mask, sentinel_start_id, eos_token_id, num_sentinels)


def prefix_lm(tokens: Sequence[int] | np.ndarray, *, rng: np.random.Generator,
              eos_token_id: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Prefix LM: inputs = a random prefix (>= 1 token), targets = the rest; EOS on both."""
    tokens = np.asarray(tokens)
    if len(tokens) < 2:
        raise InvalidInputError(f"prefix_lm needs at least 2 tokens, got {len(tokens)}")
    mask = random_prefix_noise_mask(len(tokens), rng=rng)
    eos = np.array([eos_token_id])
    return (np.concatenate([tokens[mask], eos]).astype(np.int64),
            np.concatenate([tokens[~mask], eos]).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Objectives as transforms of packed rows (what shards.PackedDataset applies, row by row)
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class SpanCorruption:
    """T5 span corruption for fixed input lengths: rows of ``raw_length`` -> inputs/labels."""

    sentinel_start_id: int              # id of <extra_id_0> (32099 for the t5 vocabulary)
    eos_token_id: int = 1               # </s>
    inputs_length: int = 512            # encoder length the corrupted inputs must fill, EOS included
    noise_density: float = 0.15         # fraction of raw tokens that are noise
    mean_noise_span_length: float = 3.0 # mean length of a noise span
    random_roll: bool = False           # roll the span pattern by a random offset (see random_spans_noise_mask)
    num_sentinels: int = 100            # how many sentinel ids exist below sentinel_start_id (inclusive)

    def __post_init__(self) -> None:
        check_span_parameters(self.noise_density, self.mean_noise_span_length)

    @property
    def raw_length(self) -> int:
        """Tokens to pack per example (568 for inputs_length 512)."""
        return compute_input_and_target_lengths(self.inputs_length, self.noise_density, self.mean_noise_span_length)[0]

    @property
    def targets_length(self) -> int:
        """Longest targets, EOS included (114 for 512; one more with random_roll)."""
        t = compute_input_and_target_lengths(self.inputs_length, self.noise_density, self.mean_noise_span_length)[1]
        return t + int(self.random_roll)

    @property
    def max_inputs_length(self) -> int:
        return self.inputs_length + int(self.random_roll)

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        inputs, targets = span_corruption(
            tokens, rng=rng, sentinel_start_id=self.sentinel_start_id, eos_token_id=self.eos_token_id,
            noise_density=self.noise_density, mean_noise_span_length=self.mean_noise_span_length,
            random_roll=self.random_roll, num_sentinels=self.num_sentinels)
        return {"input_ids": inputs, "labels": targets}


@dataclasses.dataclass(frozen=True)
class IIDDenoising:
    """i.i.d. denoising for rows of ``inputs_length - 1`` raw tokens (t5 ``iid_denoising``)."""

    sentinel_start_id: int      # id of <extra_id_0>
    eos_token_id: int = 1       # </s>
    inputs_length: int = 512    # raw rows have inputs_length - 1 tokens; noise only shortens them
    noise_density: float = 0.15 # probability that a token is noise
    num_sentinels: int = 100    # sentinel ids available

    @property
    def raw_length(self) -> int:
        return self.inputs_length - 1

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        inputs, targets = iid_denoising(tokens, rng=rng, sentinel_start_id=self.sentinel_start_id,
                                        eos_token_id=self.eos_token_id, noise_density=self.noise_density,
                                        num_sentinels=self.num_sentinels)
        return {"input_ids": inputs, "labels": targets}


@dataclasses.dataclass(frozen=True)
class PrefixLM:
    """Prefix LM for rows of ``inputs_length - 1`` raw tokens (t5 ``prefix_lm``)."""

    eos_token_id: int = 1       # </s>
    inputs_length: int = 512    # both sides are at most this long, EOS included

    @property
    def raw_length(self) -> int:
        return self.inputs_length - 1

    def __call__(self, tokens: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
        inputs, targets = prefix_lm(tokens, rng=rng, eos_token_id=self.eos_token_id)
        return {"input_ids": inputs, "labels": targets}


def t5_sentinel_start_id(tokenizer) -> int:
    """The id of ``<extra_id_0>`` in a tokenizer (ours, transformers' or a ``tokenizers.Tokenizer``)."""
    for method in ("convert_tokens_to_ids", "token_to_id"):
        fn = getattr(tokenizer, method, None)
        if fn is not None:
            tid = fn("<extra_id_0>")
            if tid is not None and tid != getattr(tokenizer, "unk_token_id", None):
                return int(tid)
    raise InvalidInputError(f"{type(tokenizer).__name__} has no <extra_id_0> token; span corruption needs "
                            f"T5's sentinels (pass sentinel_start_id= explicitly)")


def t5_sentinel_count(tokenizer, start_id: int) -> int:
    """How many sentinels ``<extra_id_0>``, ``<extra_id_1>``, ... count down from ``start_id`` (100
    for T5's vocabulary; a tokenizer trained with fewer ``extra_ids`` has fewer)."""
    fn = getattr(tokenizer, "convert_tokens_to_ids", None) or tokenizer.token_to_id
    n = 0
    while n < start_id and fn(f"<extra_id_{n}>") == start_id - n:
        n += 1
    return n


# ---------------------------------------------------------------------------------------------
# Collators: lists of examples -> padded torch batches
# ---------------------------------------------------------------------------------------------
def _pad(seqs: list[np.ndarray], value: int, length: int | None, multiple: int | None, name: str) -> torch.Tensor:
    longest = max(len(s) for s in seqs)
    target = longest if length is None else length
    if longest > target:
        raise InvalidInputError(f"{name}: an example has {longest} tokens, more than the fixed length {target}")
    if multiple:
        target = -(-target // multiple) * multiple
    out = np.full((len(seqs), target), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, :len(s)] = s
    return torch.from_numpy(out)


@dataclasses.dataclass
class Seq2SeqCollator:
    """Pad ``{"input_ids", "labels"}`` examples into a T5 batch.

    Returns ``input_ids`` (B, S) padded with ``pad_token_id``, ``attention_mask`` (B, S) with 1 on
    real tokens, and ``labels`` (B, T) padded with -100 (ignored by the loss; the model shifts
    labels right into decoder inputs, turning -100 into pad).
    """

    pad_token_id: int = 0                   # T5's pad id
    label_pad_token_id: int = IGNORE_INDEX  # -100: ignored by cross-entropy
    inputs_length: int | None = None        # pad inputs to exactly this many tokens (None: longest in batch)
    targets_length: int | None = None       # pad labels to exactly this many tokens (None: longest in batch)
    pad_to_multiple_of: int | None = None   # round padded lengths up (tensor-core friendly shapes)

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise InvalidInputError("Seq2SeqCollator: empty list of examples")
        inputs = [np.asarray(e["input_ids"]) for e in examples]
        labels = [np.asarray(e["labels"]) for e in examples]
        input_ids = _pad(inputs, self.pad_token_id, self.inputs_length, self.pad_to_multiple_of, "input_ids")
        attention_mask = _pad([np.ones(len(s), dtype=np.int64) for s in inputs], 0, self.inputs_length,
                              self.pad_to_multiple_of, "attention_mask")
        labels_t = _pad(labels, self.label_pad_token_id, self.targets_length, self.pad_to_multiple_of, "labels")
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels_t}


@dataclasses.dataclass
class MLMCollator:
    """ELECTRA/BERT batches: stack ``{"input_ids", "attention_mask"}`` rows and mask them.

    The masking is :func:`masking.mask_tokens` (official ELECTRA rules). Its generator is seeded
    from ``seed`` and the batch's own token ids, so a batch is masked the same way whichever
    DataLoader worker builds it, and a resumed run masks exactly as the uninterrupted one did.
    Returns ``input_ids`` (corrupted), ``attention_mask``, ``labels`` (-100 off the chosen
    positions) and ``original_input_ids``; pass ``mask=False`` to get plain batches (the ELECTRA
    pretrainer masks on the device itself).
    """

    mask_token_id: int                         # [MASK]
    pad_token_id: int = 0                      # [PAD]
    special_token_ids: tuple[int, ...] = ()    # never masked: [CLS], [SEP], ...
    mask_prob: float = 0.15                    # fraction of real tokens to predict
    mask_token_prob: float = 0.85              # chosen positions that become [MASK] (the rest keep their token)
    seed: int = 0                              # mixed with the batch contents into the masking seed
    mask: bool = True                          # False: only stack and pad

    def __call__(self, examples: list[dict]) -> dict[str, torch.Tensor]:
        ids = _pad([np.asarray(e["input_ids"]) for e in examples], self.pad_token_id, None, None, "input_ids")
        if "attention_mask" in examples[0]:
            attn = _pad([np.asarray(e["attention_mask"]) for e in examples], 0, None, None, "attention_mask")
        else:
            attn = _pad([np.ones(len(e["input_ids"]), dtype=np.int64) for e in examples], 0, None, None,
                        "attention_mask")
        if not self.mask:
            return {"input_ids": ids, "attention_mask": attn}
        digest = hashlib.blake2b(ids.numpy().tobytes(), digest_size=8, key=str(self.seed).encode()).digest()
        gen = torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
        out = mask_tokens(ids, mask_token_id=self.mask_token_id, special_token_ids=self.special_token_ids,
                          attention_mask=attn, pad_token_id=self.pad_token_id, mask_prob=self.mask_prob,
                          mask_token_prob=self.mask_token_prob, generator=gen)
        return {"input_ids": out.input_ids, "attention_mask": attn, "labels": out.labels,
                "original_input_ids": ids}
