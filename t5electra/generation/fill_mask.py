"""What ELECTRA can honestly do with text: fill [MASK]s, spot replaced tokens, and fix them.

ELECTRA is not a text generator. Pretraining trains two encoders: a small *generator* (a masked
language model) that fills masked positions with plausible tokens, and a *discriminator* that
reads the corrupted text and predicts, for every token, whether it was replaced. So:

* :func:`fill_mask_generate` (what ``ElectraForMaskedLM.generate`` calls): the generator fills
  every [MASK] in the input, one at a time, most confident position first, re-reading the text
  after each fill. Greedy by default; sampling gives alternatives. Text without [MASK] comes back
  unchanged, and the output always has the input's length.
* :func:`detect_replaced_tokens`: the discriminator's probability, per token, that it was replaced.
* :func:`correct`: the discriminator flags suspicious tokens, the generator proposes replacements
  at those positions; repeated until nothing changes.

:class:`t5electra.pipelines.ElectraPipeline` bundles a tokenizer, a generator and a discriminator
for the three. This module depends on the models' interfaces only (``model(input_ids=...).logits`` or ``[0]``,
``model.device``, ``model.config``), never on the model classes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidInputError
from .sampling import filter_top_k_top_p

_GENERATE_ARGS = ("input_ids", "max_length", "num_return_sequences", "do_sample", "temperature", "top_k",
                  "top_p", "generator", "attention_mask", "token_type_ids", "mask_token_id", "bad_token_ids")


# -- the [MASK] id -------------------------------------------------------------------------------
def mask_id_from_dir(directory: str | os.PathLike) -> int | None:
    """The id of [MASK] in the tokenizer files saved next to a model (vocab.txt / tokenizer.json)."""
    d = Path(directory)
    tok_json = d / "tokenizer.json"
    if tok_json.is_file():
        data = json.loads(tok_json.read_text(encoding="utf-8"))
        for t in data.get("added_tokens", []):
            if t.get("content") == "[MASK]":
                return int(t["id"])
        vocab = (data.get("model") or {}).get("vocab")
        if isinstance(vocab, dict) and "[MASK]" in vocab:
            return int(vocab["[MASK]"])
    vocab_txt = d / "vocab.txt"
    if vocab_txt.is_file():
        with vocab_txt.open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if line.rstrip("\n") == "[MASK]":
                    return i
    return None


def resolve_mask_token_id(model: torch.nn.Module, mask_token_id: int | None = None) -> int:
    """Where the [MASK] id comes from, in order: the argument, ``model.mask_token_id``, the model
    config (a ``mask_token_id`` field or extra key), then the tokenizer files saved in the model's
    directory (``model.name_or_path``, set by ``from_pretrained``)."""
    if mask_token_id is not None:
        return int(mask_token_id)
    if getattr(model, "mask_token_id", None) is not None:
        return int(model.mask_token_id)
    config = getattr(model, "config", None)
    if getattr(config, "mask_token_id", None) is not None:
        return int(config.mask_token_id)
    if config is not None and (getattr(config, "extra", None) or {}).get("mask_token_id") is not None:
        return int(config.extra["mask_token_id"])
    where = getattr(model, "name_or_path", None)
    if where is not None:
        found = mask_id_from_dir(where)
        if found is not None:
            return found
    raise InvalidInputError(
        f"{type(model).__name__}: cannot tell which id is [MASK]: pass mask_token_id=tokenizer.mask_token_id, "
        f"set model.mask_token_id, or save the tokenizer (vocab.txt or tokenizer.json with a [MASK] token) "
        f"in the model directory ({where or 'model was not loaded from a directory'})")


# -- filling masks -------------------------------------------------------------------------------
@torch.no_grad()
def fill_mask_generate(model: torch.nn.Module, input_ids: torch.Tensor | None = None, max_length: int | None = None,
                       num_return_sequences: int = 1, do_sample: bool = False, temperature: float = 1.0,
                       top_k: int | None = None, top_p: float | None = None,
                       generator: torch.Generator | None = None, attention_mask: torch.Tensor | None = None,
                       token_type_ids: torch.Tensor | None = None, mask_token_id: int | None = None,
                       bad_token_ids: Sequence[int] | None = None, **unknown: Any) -> torch.Tensor:
    """Fill every [MASK] of ``input_ids`` with an ELECTRA generator (an ``ElectraForMaskedLM``).

    One [MASK] is filled per step: the model reads the current text, the masked position whose
    best token is most probable is filled (with that token, or a sample when ``do_sample``), and
    the model reads the text again. So a single [MASK] gets exactly the argmax token (greedy), and
    later fills see earlier ones. [MASK] itself is never proposed.

    Args:
        input_ids: (B, T) or (T,) ids; rows without [MASK] come back unchanged.
        max_length: accepted because ``transformers``' ``generate`` takes it (the seed passes
            ``max_length=50``). ELECTRA fills masks in place and never lengthens text, so the
            output always has the input's length; ``max_length`` only checks that the input is
            not longer (an :class:`InvalidInputError` otherwise; nothing is truncated silently).
        num_return_sequences: alternatives per input, rows ``b * n ... b * n + n - 1`` of the output.
            More than one needs ``do_sample=True`` (greedy filling has only one answer).
        do_sample, temperature, top_k, top_p: sample the fill token from the softmax of
            ``logits / temperature`` restricted to the top-k tokens / the top-p nucleus.
        generator: a ``torch.Generator`` for reproducible sampling.
        attention_mask, token_type_ids: (B, T), passed to the model; by default every position
            that is not ``config.pad_token_id`` is attended.
        mask_token_id: the [MASK] id; see :func:`resolve_mask_token_id` for where it comes from
            otherwise.

    Returns:
        LongTensor (B * num_return_sequences, T).
    """
    if unknown:
        raise InvalidInputError(
            f"{type(model).__name__}.generate() fills [MASK] tokens and does not take {sorted(unknown)}; "
            f"accepted arguments: {', '.join(_GENERATE_ARGS)}")
    if input_ids is None:
        raise InvalidInputError(f"{type(model).__name__}.generate() needs input_ids")
    input_ids = torch.as_tensor(input_ids)
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2 or input_ids.dtype not in (torch.int64, torch.int32):
        raise InvalidInputError(f"generate(): input_ids must be integer ids of shape (batch, length), "
                                f"got {tuple(input_ids.shape)} {input_ids.dtype}")
    B, T = input_ids.shape
    if max_length is not None and T > max_length:
        raise InvalidInputError(
            f"generate(): the input has {T} tokens but max_length={max_length}; ELECTRA fills [MASK] tokens "
            f"in place and the output has the input's length, so max_length cannot shorten it (truncate the "
            f"input with the tokenizer instead)")
    if num_return_sequences < 1:
        raise InvalidInputError(f"generate(): num_return_sequences must be >= 1, got {num_return_sequences}")
    if num_return_sequences > 1 and not do_sample:
        raise InvalidInputError(
            f"generate(): num_return_sequences={num_return_sequences} needs do_sample=True: greedy filling "
            f"gives one answer per input")
    if not isinstance(do_sample, bool):
        raise InvalidInputError(f"generate(): do_sample must be True or False, got {do_sample!r}")
    if not (isinstance(temperature, (int, float)) and 0 < temperature < math.inf):
        raise InvalidInputError(f"generate(): temperature must be a finite number > 0, got {temperature}")
    if top_k is not None and top_k < 1:
        raise InvalidInputError(f"generate(): top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise InvalidInputError(f"generate(): top_p must be in (0, 1], got {top_p}")
    mask_id = resolve_mask_token_id(model, mask_token_id)

    device = model.device if hasattr(model, "device") else input_ids.device
    ids = input_ids.to(device).long().repeat_interleave(num_return_sequences, dim=0)    # (N, T)
    if attention_mask is None:
        pad_id = getattr(getattr(model, "config", None), "pad_token_id", None)
        attention_mask = (ids != pad_id).long() if pad_id is not None else torch.ones_like(ids)
    else:
        attention_mask = torch.as_tensor(attention_mask).to(device).reshape(B, T).repeat_interleave(
            num_return_sequences, dim=0)
    if token_type_ids is not None:
        token_type_ids = torch.as_tensor(token_type_ids).to(device).reshape(B, T).repeat_interleave(
            num_return_sequences, dim=0)

    todo = (ids == mask_id) & attention_mask.bool()          # (N, T) positions still to fill
    rows = torch.arange(ids.shape[0], device=device)
    while todo.any():
        logits = _logits(model(input_ids=ids, attention_mask=attention_mask, token_type_ids=token_type_ids))
        logits = logits.float()                              # (N, T, V), choose in fp32
        logits[..., mask_id] = float("-inf")                 # never "fill" a mask with [MASK]
        if bad_token_ids:                                    # nor with [CLS], [SEP], [PAD], [UNK] (pipelines)
            logits[..., list(bad_token_ids)] = float("-inf")
        logp = logits.log_softmax(-1)
        best_logp, best_tok = logp.max(-1)                   # (N, T)
        # the most confident masked position of each row
        pos = best_logp.masked_fill(~todo, float("-inf")).argmax(-1)     # (N,)
        active = todo[rows, pos]                             # rows that still have a mask
        if do_sample:
            chosen_logits = filter_top_k_top_p(logits[rows, pos] / temperature, top_k, top_p)   # (N, V)
            probs = chosen_logits.softmax(-1)
            if generator is not None:            # sample where the generator lives (CPU generator, GPU model)
                probs = probs.to(generator.device)
            tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1).to(device)
        else:
            tok = best_tok[rows, pos]
        ids[rows[active], pos[active]] = tok[active]
        todo[rows[active], pos[active]] = False
    return ids


# -- replaced-token detection and correction --------------------------------------------------
def _special_ids(tokenizer) -> set[int]:
    """[CLS], [SEP], [PAD], [MASK], [UNK] and any extra special token: never scored, never edited."""
    return set(tokenizer.all_special_ids)


def splice(tokenizer, text: str, old_ids: list[int], new_ids: list[int]) -> str:
    """``text`` with only the tokens that differ between ``old_ids`` (its encoding) and ``new_ids``
    replaced, in place (through the tokenizer's character offsets): case, punctuation, spacing and
    [UNK] characters elsewhere stay as written. A decode of ``new_ids`` would lower-case the text,
    drop what became [UNK] and put spaces between Chinese characters. Falls back to that decode
    where the offsets do not line up with ``old_ids`` (a truncated encoding)."""
    enc = tokenizer(text, return_offsets_mapping=True)
    if list(enc["input_ids"]) != list(old_ids[:len(enc["input_ids"])]) or len(old_ids) != len(enc["input_ids"]):
        return tokenizer.decode(new_ids, skip_special_tokens=True)
    pieces, pos = [], 0
    for i, (old, new) in enumerate(zip(old_ids, new_ids)):
        start, end = enc["offset_mapping"][i]
        if old == new or start == end:  # unchanged, or a token without text ([CLS], [SEP])
            continue
        token = tokenizer.convert_ids_to_tokens(int(new))
        word = token[2:] if token.startswith("##") else token
        joined = start > 0 and not text[start - 1].isspace()  # glued to what comes before
        if joined and not token.startswith("##") and tokenizer.convert_ids_to_tokens(int(old)).startswith("##"):
            word = " " + word  # a whole word where a word piece was
        pieces += [text[pos:start], word]
        pos = end
    return "".join(pieces + [text[pos:]])


def encode_texts(tokenizer, texts: list[str], device) -> dict[str, torch.Tensor]:
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    return {k: enc[k].to(device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}


@torch.no_grad()
def _replaced_probs(discriminator, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
    """(B, T) sigmoid of the discriminator's per-token logits."""
    out = discriminator(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    return _logits(out).float().sigmoid()


def _logits(out) -> torch.Tensor:
    """A model call's logits: ``.logits``, or the first element of a tuple (a config with return_dict=False)."""
    return out[0] if isinstance(out, tuple) else out.logits


def detect_replaced_tokens(discriminator, tokenizer, text: str | list[str]):
    """Per-token probability that each token was replaced, from an ``ElectraForPreTraining``.

    Returns ``[(token, prob), ...]`` for one text, a list of such lists for a list of texts.
    Special tokens ([CLS], [SEP], padding) are left out; ``[UNK]`` stays: it stands for characters
    of the text (one outside the vocabulary), and dropping it would hide them from the result.
    """
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        return []
    enc = encode_texts(tokenizer, texts, discriminator.device)
    probs = _replaced_probs(discriminator, **enc)                          # (B, T)
    special = _special_ids(tokenizer) - {tokenizer.unk_token_id}
    results = []
    for b in range(len(texts)):
        ids = enc["input_ids"][b].tolist()
        keep = [i for i, t in enumerate(ids) if t not in special and int(enc["attention_mask"][b, i]) == 1]
        tokens = tokenizer.convert_ids_to_tokens([ids[i] for i in keep])
        results.append([(tok, float(probs[b, i])) for tok, i in zip(tokens, keep)])
    return results[0] if isinstance(text, str) else results


@dataclasses.dataclass
class Edit:
    """One replacement made by :func:`correct`."""

    position: int   # token index in the tokenized text ([CLS] is 0)
    old: str        # the token that was flagged
    new: str        # the generator's replacement
    prob: float     # the discriminator's probability that ``old`` was a replaced token


@torch.no_grad()
def correct(discriminator, generator, tokenizer, text: str, threshold: float = 0.5, max_iters: int = 3,
            do_sample: bool = False, torch_generator: torch.Generator | None = None) -> tuple[str, list[Edit]]:
    """Let ELECTRA fix a text: flag, re-fill, repeat until stable.

    Each round the discriminator scores every token; tokens with probability above ``threshold``
    are replaced by [MASK] and the generator fills them (:func:`fill_mask_generate`, greedy by
    default). A round that changes nothing ends the loop, as does ``max_iters``. The token count
    never changes (one WordPiece for one WordPiece), so positions are stable across rounds.

    Returns ``(corrected_text, edits)``: ``text`` with the edited tokens replaced in place
    (:func:`splice`: the rest as written) and the :class:`Edit` list in the order the changes were made.
    """
    if not 0.0 < threshold < 1.0:
        raise InvalidInputError(f"correct(): threshold must be in (0, 1), got {threshold}")
    if not isinstance(max_iters, int) or isinstance(max_iters, bool) or max_iters < 1:
        raise InvalidInputError(f"correct(): max_iters must be an integer >= 1, got {max_iters!r}")
    mask_id = tokenizer.mask_token_id          # MissingTokenError when the vocabulary has no [MASK]
    enc = encode_texts(tokenizer, [text], discriminator.device)
    ids = enc["input_ids"]                                               # (1, T)
    special = torch.tensor(sorted(_special_ids(tokenizer)), device=ids.device)
    editable = ~torch.isin(ids, special) & enc["attention_mask"].bool()  # (1, T)
    edits: list[Edit] = []
    for _ in range(max_iters):
        probs = _replaced_probs(discriminator, **{**enc, "input_ids": ids})
        flagged = editable & (probs > threshold)
        if not flagged.any():
            break
        masked = ids.masked_fill(flagged, mask_id)
        filled = fill_mask_generate(generator, masked.to(generator.device), do_sample=do_sample,
                                    generator=torch_generator, attention_mask=enc["attention_mask"],
                                    token_type_ids=enc.get("token_type_ids"), mask_token_id=mask_id,
                                    bad_token_ids=special.tolist()).to(ids.device)
        changed = (filled != ids) & flagged
        if not changed.any():
            break
        for i in changed[0].nonzero().flatten().tolist():
            old, new = tokenizer.convert_ids_to_tokens([int(ids[0, i]), int(filled[0, i])])
            edits.append(Edit(position=i, old=old, new=new, prob=float(probs[0, i])))
        ids = torch.where(changed, filled, ids)
    return splice(tokenizer, text, enc["input_ids"][0].tolist(), ids[0].tolist()), edits
