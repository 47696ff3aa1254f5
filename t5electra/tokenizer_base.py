"""What the T5 and ELECTRA tokenizers share (``tokenizers.py`` holds the two): special tokens,
``__call__`` with padding / truncation / ``return_tensors`` as transformers v5 does it,
``encode``, ``decode``, ``save_pretrained``, and :class:`BatchEncoding`."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import tokenizers
import torch
from tokenizers import AddedToken, Tokenizer

from .core.atomic import write_text_atomic
from .errors import ConfigError, InvalidInputError, MissingTokenError
from .tokenizer_files import SPECIAL_TOKEN_NAMES

logger = logging.getLogger("t5electra")

# transformers' "no limit" for model_max_length (tokenization_utils_base.VERY_LARGE_INTEGER).
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)
VOCABULARY_FILES = ("spiece.model", "vocab.txt")  # what _save_vocabulary writes, by tokenizer kind

PADDING = ("longest", "max_length", "do_not_pad")
TRUNCATION = ("longest_first", "only_first", "only_second", "do_not_truncate")
# tokenizers 0.23.1 and 0.23.2 stop tokenizing a truncated text at max_length tokens, so the windows
# of return_overflowing_tokens cover only the start of a long text (huggingface/tokenizers#2091; 0.23.3
# windows the whole text again). A QA context would lose its answer silently: such calls are refused.
OVERFLOW_BROKEN_VERSIONS = ("0.23.1", "0.23.2")


class BatchEncoding(dict):
    """What ``tokenizer(...)`` returns: a dict (``input_ids``, ``attention_mask``, ...) whose keys are
    also attributes (``enc.input_ids``), like transformers' BatchEncoding."""

    def __init__(self, data: dict[str, Any], encodings: list | None = None):
        super().__init__(data)
        self.encodings = encodings  # the backend's tokenizers.Encoding objects, one per row

    def __getattr__(self, name: str):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key {name!r} (keys: {list(self)})") from None

    def to(self, device: str | torch.device | int, *, non_blocking: bool = False) -> BatchEncoding:
        """Move every tensor to ``device`` (after ``return_tensors="pt"``), as transformers does: the
        device only. A dtype (``.to(torch.float16)``, as mixed-precision code calls on every input)
        is not applied (a warning says so): it would change the token ids (4469 -> 4468 in fp16)."""
        if isinstance(device, torch.dtype):
            logger.warning("BatchEncoding.to(%s): a BatchEncoding is not cast to another dtype (its token ids "
                           "would change); only .to(device) moves it", device)
            return self
        if isinstance(device, bool) or not isinstance(device, (str, int, torch.device)):
            raise InvalidInputError(f"BatchEncoding.to: expected a device ('cuda', 'cpu', 0, torch.device), "
                                    f"got {device!r}")
        for key, value in self.items():
            if isinstance(value, torch.Tensor):
                self[key] = value.to(device=device, non_blocking=non_blocking)
        return self

    def _encoding(self, method: str, batch_index: int):
        if self.encodings is None:
            raise InvalidInputError(f"BatchEncoding.{method}() needs the tokenizer's encodings, which only the "
                                    f"result of tokenizer(...) has (not one of pad() or of a dict); call "
                                    f"tokenizer(texts) for {method}()")
        return self.encodings[batch_index]

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self._encoding("tokens", batch_index).tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self._encoding("word_ids", batch_index).word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0 for tokens of the first text, 1 for the second (text pairs), None for special tokens."""
        return self._encoding("sequence_ids", batch_index).sequence_ids


def _to_python_ids(token_ids) -> Any:
    """Tensors / arrays / ints -> (nested) Python lists of ints."""
    if hasattr(token_ids, "tolist"):
        token_ids = token_ids.tolist()
    return token_ids


class _TokenizerBase:
    """Padding, truncation, tensors, decoding and saving, shared by the T5 and ELECTRA tokenizers.

    A subclass builds ``backend`` (normalizer, pre-tokenizer, model, decoder, post-processor) and
    passes the special tokens; everything else goes through this class.
    """

    model_input_names: list[str] = ["input_ids", "attention_mask"]

    def __init__(self, backend: Tokenizer, *, special_tokens: dict[str, str | None],
                 extra_special_tokens: Iterable[str] = (), model_max_length: int | None = None,
                 padding_side: str = "right", truncation_side: str = "right",
                 clean_up_tokenization_spaces: bool = False, split_special_tokens: bool = False,
                 name_or_path: str = ""):
        self._backend = backend
        self._special = {name: special_tokens.get(name) for name in SPECIAL_TOKEN_NAMES}
        self.extra_special_tokens = list(dict.fromkeys(extra_special_tokens))
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.split_special_tokens = split_special_tokens
        self.name_or_path = name_or_path
        # __call__ sets the backend's padding/truncation for one call; the lock keeps concurrent
        # callers (server threads) from seeing each other's settings.
        self._lock = threading.Lock()

    def __getstate__(self):  # picklable (DataLoader workers) without the lock
        with self._lock:  # a copy of the backend without another thread's per-call padding / truncation
            state = {k: v for k, v in self.__dict__.items() if k != "_lock"}
            state["_backend"] = Tokenizer.from_str(self._backend.to_str())
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- special tokens ------------------------------------------------------------------------
    def _add_special_tokens_to_backend(self, added_tokens: Iterable[dict], *, add_missing_named: bool) -> None:
        """Make the backend's added tokens: first those a saved tokenizer lists (tokenizer.json's
        "added_tokens"), on their ids, then the special tokens not yet among them, so that text
        like "<extra_id_0>" or "[MASK]" maps to one id and ``skip_special_tokens`` drops them.
        Extra special tokens the vocabulary lacks get new ids (as in transformers); named ones
        only with ``add_missing_named`` (T5's ``<pad>``), else they stay out."""
        self._restore_added_tokens(list(added_tokens))
        registered = {t.content for t in self._backend.get_added_tokens_decoder().values()}
        named = [t for t in self._special.values() if t is not None]
        if not add_missing_named:
            named = [t for t in named if self._backend.token_to_id(t) is not None]
        tokens = [t for t in dict.fromkeys(named + self.extra_special_tokens) if t not in registered]
        self._backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])

    def add_tokens(self, new_tokens: str | AddedToken | Iterable[str | AddedToken], special_tokens: bool = False) -> int:
        """transformers' ``add_tokens``: tokens the vocabulary lacks get the next ids (each matched as
        one piece in text); returns how many were new. Then ``model.resize_token_embeddings(len(tok))``.
        ``save_pretrained`` keeps them (tokenizer.json's "added_tokens")."""
        items = [new_tokens] if isinstance(new_tokens, (str, AddedToken)) else list(new_tokens)
        for t in items:
            if not isinstance(t, (str, AddedToken)) or not str(t):
                raise InvalidInputError(f"add_tokens: each token must be a non-empty string, got {t!r}")
        before = len(self)
        tokens = [t if isinstance(t, AddedToken) else AddedToken(t, special=special_tokens, normalized=not special_tokens)
                  for t in items]
        with self._lock:  # not while another thread encodes
            if special_tokens:
                self._backend.add_special_tokens(tokens)
                self.extra_special_tokens += [t.content for t in tokens if t.content not in self.extra_special_tokens]
            else:
                self._backend.add_tokens(tokens)
        return len(self) - before

    def add_special_tokens(self, special_tokens_dict: dict[str, Any]) -> int:
        """transformers' ``add_special_tokens``: ``{"additional_special_tokens": [...]}`` and/or named
        ones (``"pad_token"``, ``"mask_token"``, ...); returns how many tokens were new."""
        if not isinstance(special_tokens_dict, dict):
            raise InvalidInputError(f"add_special_tokens takes a dict, got {type(special_tokens_dict).__name__}")
        added = 0
        for key, value in special_tokens_dict.items():
            if key in ("additional_special_tokens", "extra_special_tokens"):
                added += self.add_tokens(value, special_tokens=True)
            elif key in self._special:
                added += self.add_tokens([str(value)], special_tokens=True)
                self._special[key] = str(value)
            else:
                raise InvalidInputError(f"add_special_tokens: unknown key {key!r}; use one of "
                                        f"{', '.join(SPECIAL_TOKEN_NAMES)} or 'additional_special_tokens'")
        return added

    def _restore_added_tokens(self, added_tokens: list[dict]) -> None:
        """Re-add the tokens a tokenizer.json lists under "added_tokens" (e.g. from add_tokens())
        and check each lands on the id the file says. A special one that is neither named nor
        already listed joins ``extra_special_tokens``."""
        registered = {t.content for t in self._backend.get_added_tokens_decoder().values()}
        named = set(self._special.values())
        for entry in sorted(added_tokens, key=lambda e: e["id"]):
            if entry["content"] not in registered:
                special = entry.get("special", False)
                token = AddedToken(entry["content"], single_word=entry.get("single_word", False),
                                   lstrip=entry.get("lstrip", False), rstrip=entry.get("rstrip", False),
                                   normalized=entry.get("normalized", not special), special=special)
                if special:
                    self._backend.add_special_tokens([token])
                    if entry["content"] not in named and entry["content"] not in self.extra_special_tokens:
                        self.extra_special_tokens.append(entry["content"])
                else:
                    self._backend.add_tokens([token])
            got = self._backend.token_to_id(entry["content"])
            if got != entry["id"]:
                raise ConfigError(f"{self.name_or_path or 'added_tokens'}: added token {entry['content']!r} has id "
                                  f"{entry['id']} in the file but {got} after rebuilding the vocabulary")

    def _token(self, name: str) -> str | None:
        return self._special[name]

    def _token_id(self, name: str) -> int | None:
        token = self._special[name]
        if token is None:
            return None
        index = self._backend.token_to_id(token)
        if index is None:
            raise MissingTokenError(f"{type(self).__name__} ({self.name_or_path or 'in memory'}): the "
                                    f"{name} {token!r} is not in the vocabulary ({len(self)} tokens)")
        return index

    bos_token = property(lambda self: self._token("bos_token"))
    eos_token = property(lambda self: self._token("eos_token"))
    unk_token = property(lambda self: self._token("unk_token"))
    sep_token = property(lambda self: self._token("sep_token"))
    pad_token = property(lambda self: self._token("pad_token"))
    cls_token = property(lambda self: self._token("cls_token"))
    mask_token = property(lambda self: self._token("mask_token"))
    bos_token_id = property(lambda self: self._token_id("bos_token"))
    eos_token_id = property(lambda self: self._token_id("eos_token"))
    unk_token_id = property(lambda self: self._token_id("unk_token"))
    sep_token_id = property(lambda self: self._token_id("sep_token"))
    pad_token_id = property(lambda self: self._token_id("pad_token"))
    cls_token_id = property(lambda self: self._token_id("cls_token"))
    mask_token_id = property(lambda self: self._token_id("mask_token"))
    pad_token_type_id = 0

    @property
    def all_special_tokens(self) -> list[str]:
        named = [t for t in self._special.values() if t is not None]
        return list(dict.fromkeys(named + self.extra_special_tokens))

    @property
    def all_special_ids(self) -> list[int]:
        ids = (self._backend.token_to_id(t) for t in self.all_special_tokens)
        return [i for i in ids if i is not None]

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named special tokens that are set ({"unk_token": "[UNK]", ...}), as transformers v5
        (the extra ones are ``extra_special_tokens``)."""
        return {name: token for name, token in self._special.items() if token is not None}

    is_fast = True  # a tokenizers backend (offsets, word_ids), as transformers' fast tokenizers

    # the template's special tokens: T5 "A </s> (B </s>)", ELECTRA "[CLS] A [SEP] (B [SEP])"
    _tokens_before_text = 0

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None, already_has_special_tokens: bool = False
                                ) -> list[int]:
        """1 for a special token, 0 for a text token (DataCollatorForLanguageModeling's call).
        ``already_has_special_tokens``: ``token_ids_0`` is a whole encoded sequence, and the special
        ones are those among ``all_special_ids`` (transformers v5). Otherwise the mask of the
        sequence the template would make of the texts' ids (``[CLS] A [SEP] B [SEP]`` -> 1 0.. 1 0.. 1,
        as transformers v4; v5's fast tokenizers raise NotImplementedError there)."""
        ids = _to_python_ids(token_ids_0)
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise InvalidInputError("get_special_tokens_mask: token_ids_1 must be None when the ids already "
                                        "have their special tokens (already_has_special_tokens=True)")
            special = set(self.all_special_ids)
            return [1 if int(i) in special else 0 for i in ids]
        mask = [1] * self._tokens_before_text + [0] * len(ids) + [1]
        if token_ids_1 is not None:
            mask += [0] * len(_to_python_ids(token_ids_1)) + [1]
        return mask

    # -- vocabulary ----------------------------------------------------------------------------
    @property
    def backend_tokenizer(self) -> Tokenizer:
        """The ``tokenizers.Tokenizer`` doing the work."""
        return self._backend

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary, without tokens added on top (transformers' meaning)."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        return self._backend.get_vocab(with_added_tokens=True)

    def get_added_vocab(self) -> dict[str, int]:
        """The tokens the backend holds as added tokens (special tokens, add_tokens()), token -> id
        in id order, as transformers."""
        added = self._backend.get_added_tokens_decoder()
        return {added[i].content: i for i in sorted(added)}

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Unknown tokens map to ``unk_token_id``."""
        if isinstance(tokens, str):
            index = self._backend.token_to_id(tokens)
            return self.unk_token_id if index is None else index
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        ids = _to_python_ids(ids)
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(int(i)) for i in ids if int(i) not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return self._backend.decoder.decode(tokens)

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs) -> list[str]:
        """The tokens of one text; ``kwargs`` are ``__call__``'s (``split_special_tokens``,
        ``truncation``, ...), as in transformers. Under the lock, like every call: another
        thread's padding or truncation is never seen."""
        if not isinstance(text, str):
            raise InvalidInputError(f"tokenize takes one text (a str), got {type(text).__name__}")
        return self(text, pair, add_special_tokens=add_special_tokens, **kwargs).tokens()

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._backend.num_special_tokens_to_add(pair)

    # -- encoding ------------------------------------------------------------------------------
    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of, padding_side=None):
        """transformers' _get_padding_truncation_strategies: resolve True/False/strings, fill
        max_length from model_max_length, and check a pad token exists when padding. Every value
        is checked here, before the backend is touched."""
        _check_padding_options(pad_to_multiple_of, padding_side)
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # max_length alone means "truncate to it"
        padding = {True: "longest", False: "do_not_pad", None: "do_not_pad"}.get(padding, padding)
        truncation = {True: "longest_first", False: "do_not_truncate", None: "do_not_truncate"}.get(
            truncation, truncation)
        if padding not in PADDING:
            raise InvalidInputError(f"padding={padding!r}: expected True, False or one of {PADDING}")
        if truncation not in TRUNCATION:
            raise InvalidInputError(f"truncation={truncation!r}: expected True, False or one of {TRUNCATION}")
        if max_length is None:  # fall back to model_max_length; without one, neither pad nor cut
            unlimited = self.model_max_length > LARGE_INTEGER
            if padding == "max_length" and unlimited:
                padding = "do_not_pad"
            if truncation != "do_not_truncate" and unlimited:
                truncation = "do_not_truncate"
            if not unlimited and (padding == "max_length" or truncation != "do_not_truncate"):
                max_length = self.model_max_length
        if padding != "do_not_pad":
            if self.pad_token is None:
                raise MissingTokenError(f"{type(self).__name__}: cannot pad, there is no pad token")
            self._token_id("pad_token")  # raises MissingTokenError when the vocab lacks it
        if (truncation != "do_not_truncate" and padding != "do_not_pad" and pad_to_multiple_of
                and max_length is not None and max_length % pad_to_multiple_of):
            raise InvalidInputError(f"truncation length {max_length} is not a multiple of "
                                    f"pad_to_multiple_of={pad_to_multiple_of}")
        return padding, truncation, max_length

    @contextlib.contextmanager
    def _backend_settings(self, padding, truncation, max_length, stride, pad_to_multiple_of, padding_side,
                          split_special_tokens):
        """Set the backend's truncation and padding for one call, then clear them again (also when
        setting them fails: a setting left behind would apply to every later call, and be saved)."""
        try:
            self._backend.encode_special_tokens = split_special_tokens
            if truncation != "do_not_truncate":
                self._backend.enable_truncation(max_length, stride=stride, strategy=truncation,
                                                direction=self.truncation_side)
            if padding != "do_not_pad":
                self._backend.enable_padding(
                    direction=padding_side or self.padding_side, pad_id=self.pad_token_id,
                    pad_type_id=self.pad_token_type_id, pad_token=self.pad_token,
                    length=max_length if padding == "max_length" else None,
                    pad_to_multiple_of=pad_to_multiple_of or None)
            yield
        finally:
            self._backend.no_truncation()
            self._backend.no_padding()
            self._backend.encode_special_tokens = False

    def _encode(self, text, text_pair, *, add_special_tokens, padding, truncation, max_length, stride,
                is_split_into_words, pad_to_multiple_of, padding_side, split_special_tokens, return_tensors,
                return_token_type_ids, return_attention_mask, return_overflowing_tokens,
                return_special_tokens_mask, return_offsets_mapping, return_length) -> BatchEncoding:
        if is_split_into_words:
            batched = isinstance(text, (list, tuple)) and bool(text) and isinstance(text[0], (list, tuple))
        else:
            batched = isinstance(text, (list, tuple))
        if batched:
            if text_pair is not None and (isinstance(text_pair, str) or len(text_pair) != len(text)):
                raise InvalidInputError(f"text_pair must be a list as long as text ({len(text)} items), "
                                        f"got {type(text_pair).__name__}")
            inputs = list(zip(text, text_pair)) if text_pair is not None else list(text)
        else:
            inputs = [(text, text_pair)] if text_pair else [text]
        if not all(isinstance(t, (str, list, tuple)) for t in inputs):
            raise InvalidInputError(f"text must be a str or a list of str, got {type(text).__name__}")

        if (return_overflowing_tokens and truncation != "do_not_truncate"
                and tokenizers.__version__ in OVERFLOW_BROKEN_VERSIONS):
            raise ConfigError(f"tokenizers {tokenizers.__version__} drops the overflowing windows of long texts "
                              "(huggingface/tokenizers#2091): install another version, "
                              "pip install 'tokenizers>=0.23.3'")
        with self._lock, self._backend_settings(padding, truncation, max_length, stride, pad_to_multiple_of,
                                                padding_side, split_special_tokens):
            try:
                encodings = self._backend.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                       is_pretokenized=is_split_into_words)
            except BaseException as e:  # the Rust backend raises plain Exceptions, and a PanicException
                # (a BaseException) where a Rust assertion fails, e.g. a stride that leaves no room
                if not isinstance(e, Exception) and type(e).__name__ != "PanicException":
                    raise
                raise InvalidInputError(f"{type(self).__name__}: cannot encode (truncation={truncation!r}, "
                                        f"max_length={max_length}, stride={stride}): {e}") from e

        # One row per encoding; overflowing windows (return_overflowing_tokens) become extra rows.
        if return_token_type_ids is None:
            return_token_type_ids = "token_type_ids" in self.model_input_names
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        data: dict[str, list] = {"input_ids": []}
        wanted = {"token_type_ids": return_token_type_ids, "attention_mask": return_attention_mask,
                  "special_tokens_mask": return_special_tokens_mask, "offset_mapping": return_offsets_mapping,
                  "length": return_length}
        data.update({key: [] for key, on in wanted.items() if on})
        rows, sample_of_row = [], []
        for sample, encoding in enumerate(encodings):
            for e in [encoding] + (encoding.overflowing if return_overflowing_tokens else []):
                rows.append(e)
                sample_of_row.append(sample)
                data["input_ids"].append(e.ids)
                for key, values in (("token_type_ids", e.type_ids), ("attention_mask", e.attention_mask),
                                    ("special_tokens_mask", e.special_tokens_mask),
                                    ("offset_mapping", e.offsets), ("length", len(e.ids))):
                    if key in data:
                        data[key].append(values)
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_of_row
        if not batched and return_tensors is None and not return_overflowing_tokens:
            # A single text: no batch dimension (per-row scalars such as "length" stay lists, as in transformers).
            data = {key: value[0] if isinstance(value[0], list) else value for key, value in data.items()}
        return BatchEncoding(_as_tensors(data, return_tensors), rows)

    def __call__(self, text=None, text_pair=None, text_target=None, text_pair_target=None, *,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, max_target_length: int | None = None, stride: int = 0,
                 is_split_into_words: bool = False, pad_to_multiple_of: int | None = None,
                 padding_side: str | None = None, return_tensors: str | None = None,
                 return_token_type_ids: bool | None = None, return_attention_mask: bool | None = None,
                 return_overflowing_tokens: bool = False, return_special_tokens_mask: bool = False,
                 return_offsets_mapping: bool = False, return_length: bool = False,
                 split_special_tokens: bool | None = None, **kwargs) -> BatchEncoding:
        """Tokenize a text, a list of texts, or text pairs (``text_pair``).

        padding: True/"longest" (to the longest in the batch), "max_length", False.
        truncation: True/"longest_first", "only_first", "only_second", False; a ``max_length``
        given alone turns on "longest_first" (as in transformers).
        return_tensors: "pt" (torch), "np" (numpy) or None (lists; one text -> no batch dimension).
        text_target: targets of a seq2seq task, returned as ``labels`` (padded with the pad id,
        not -100: the collator or the model masks them).
        split_special_tokens: special tokens written in the text ("[CLS]") are tokenized as text
        (default: the tokenizer's ``split_special_tokens``, False unless tokenizer_config.json says so).
        """
        _refuse_unknown(self, "__call__", kwargs)
        if text is None and text_target is None:
            raise InvalidInputError("pass text or text_target (both are None)")
        padding, truncation, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of,
                                                           padding_side)
        options = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation, stride=stride,
                       is_split_into_words=is_split_into_words, pad_to_multiple_of=pad_to_multiple_of,
                       padding_side=padding_side, return_tensors=return_tensors,
                       split_special_tokens=self.split_special_tokens if split_special_tokens is None
                       else bool(split_special_tokens),
                       return_token_type_ids=return_token_type_ids, return_attention_mask=return_attention_mask,
                       return_overflowing_tokens=return_overflowing_tokens,
                       return_special_tokens_mask=return_special_tokens_mask,
                       return_offsets_mapping=return_offsets_mapping, return_length=return_length)
        encoded = target = None
        if text is not None:
            encoded = self._encode(text, text_pair, max_length=max_length, **options)
        if text_target is not None:
            target = self._encode(text_target, text_pair_target, **options,
                                  max_length=max_target_length if max_target_length is not None else max_length)
        if encoded is None:
            return target
        if target is not None:
            encoded["labels"] = target["input_ids"]
        return encoded

    def encode(self, text, text_pair=None, add_special_tokens: bool = True, padding: bool | str = False,
               truncation: bool | str | None = None, max_length: int | None = None, stride: int = 0,
               padding_side: str | None = None, return_tensors: str | None = None, **kwargs):
        """The ids of one text (a list, or a (1, T) tensor with ``return_tensors="pt"``); other
        keywords are ``__call__``'s (``is_split_into_words``, ``pad_to_multiple_of``,
        ``split_special_tokens``), as in transformers."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding,
                    truncation=truncation, max_length=max_length, stride=stride, padding_side=padding_side,
                    return_tensors=return_tensors, **kwargs)["input_ids"]

    def pad(self, encoded_inputs, padding: bool | str = True, max_length: int | None = None,
            pad_to_multiple_of: int | None = None, padding_side: str | None = None,
            return_attention_mask: bool | None = None, return_tensors: str | None = None,
            verbose: bool = True) -> BatchEncoding:
        """Pad encodings made earlier into a batch, as transformers' ``tokenizer.pad`` (what
        DataCollatorWithPadding calls): a list of encodings (dicts of id lists), one dict of
        lists, or one encoding (``tokenizer("text")``: flat lists, padded as one example).
        ``input_ids`` get the pad id, ``attention_mask`` 0 (added where missing, unless
        ``return_attention_mask=False``), ``token_type_ids`` 0, ``special_tokens_mask`` 1; other
        keys (``labels``...) pass through unchanged. ``padding``: True / "longest", "max_length"
        (to ``max_length``, else ``model_max_length``), False / "do_not_pad". Tensors in give
        tensors out unless ``return_tensors`` says otherwise."""
        if isinstance(encoded_inputs, (list, tuple)):
            if not encoded_inputs or not all(isinstance(e, Mapping) for e in encoded_inputs):
                raise InvalidInputError("pad() takes a non-empty list of encodings (dicts with 'input_ids') or one dict")
            encoded_inputs = {k: [e[k] for e in encoded_inputs] for k in encoded_inputs[0]}
        if not isinstance(encoded_inputs, Mapping) or "input_ids" not in encoded_inputs:
            raise InvalidInputError("pad() needs 'input_ids' (the encodings tokenizer(...) returns)")
        strategy, _, max_length = self._strategies(padding, False, max_length, pad_to_multiple_of, padding_side)
        if return_attention_mask is None:
            return_attention_mask = "attention_mask" in self.model_input_names
        if len(encoded_inputs["input_ids"]) == 0:  # nothing to pad (transformers returns it as it is)
            return BatchEncoding({**encoded_inputs, **({"attention_mask": []} if return_attention_mask else {})})
        if return_tensors is None:
            return_tensors = _tensor_kind(encoded_inputs["input_ids"])
        single = _is_one_sequence(encoded_inputs["input_ids"])  # tok.pad(tok("text")): one example
        data = {k: [list(_to_python_ids(r)) for r in ([v] if single else v)] if k in _PAD_VALUES else v
                for k, v in encoded_inputs.items()}
        rows = data["input_ids"]
        side = padding_side or self.padding_side
        width = max(map(len, rows)) if strategy == "longest" else max_length or 0
        if pad_to_multiple_of and strategy != "do_not_pad":
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        if return_attention_mask and "attention_mask" not in data:
            data["attention_mask"] = [[1] * len(r) for r in rows]
        for key, value in _PAD_VALUES.items():
            if key in data and strategy != "do_not_pad":
                fill = self.pad_token_id if value is None else value
                data[key] = [_padded(r, width, fill, side) for r in data[key]]
        if single:
            data = {k: v[0] if k in _PAD_VALUES else v for k, v in data.items()}
        return BatchEncoding(_as_tensors(data, return_tensors))

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None, **kwargs) -> str | list[str]:
        """Ids -> text. A batch (list of lists, 2-D tensor) gives a list of texts. The backend's
        decoder places the spaces: ``spaces_between_special_tokens`` (of transformers' Python
        tokenizers; its fast ones ignore it) is refused rather than ignored."""
        _refuse_unknown(self, "decode", kwargs)
        token_ids = _to_python_ids(token_ids)
        if isinstance(token_ids, int):
            token_ids = [token_ids]
        if token_ids and isinstance(token_ids[0], (list, tuple)):
            return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in token_ids]
        bad = [i for i in token_ids if i < 0]
        if bad:
            raise InvalidInputError(f"decode: negative id {bad[0]} (labels use -100 for ignored positions: "
                                    f"replace them with pad_token_id before decoding)")
        text = self._backend.decode(token_ids, skip_special_tokens=skip_special_tokens)
        if self.clean_up_tokenization_spaces if clean_up_tokenization_spaces is None else clean_up_tokenization_spaces:
            text = self.clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None, **kwargs) -> list[str]:
        _refuse_unknown(self, "batch_decode", kwargs)
        sequences = _to_python_ids(sequences)
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in sequences]

    @staticmethod
    def clean_up_tokenization(text: str) -> str:
        """transformers' clean-up of spaces before punctuation and English contractions."""
        for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                              (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
            text = text.replace(before, after)
        return text

    # -- saving --------------------------------------------------------------------------------
    def _config_fields(self) -> dict[str, Any]:
        """Model-specific keys of tokenizer_config.json (overridden by subclasses)."""
        return {}

    def _save_vocabulary(self, directory: Path) -> list[Path]:
        """Write the model's own vocabulary file(s) (spiece.model / vocab.txt)."""
        return []

    def save_pretrained(self, save_directory: str | os.PathLike) -> tuple[str, ...]:
        """Write the Hugging Face layout: the vocabulary file, tokenizer.json, special_tokens_map.json
        and tokenizer_config.json (transformers loads the directory). Each file is written whole
        (core.atomic), tokenizer_config.json last: a directory that has it holds the other files (the
        quickstart and the experiment grids take it for a trained tokenizer)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self._save_vocabulary(directory)
        for name in sorted(set(VOCABULARY_FILES) - {Path(f).name for f in files}):
            # another tokenizer's, saved there before: transformers' slow tokenizers (and a loader that
            # looks for spiece.model / vocab.txt first, as `t5electra convert`'s) would read it
            (directory / name).unlink(missing_ok=True)
        with self._lock:  # not while another thread has padding/truncation switched on
            backend = json.loads(self._backend.to_str())
        # padding and truncation are per call (tokenizer(...) arguments), never the file's: a raw
        # tokenizers.Tokenizer.from_file would apply them to every text
        backend.update(truncation=None, padding=None)
        write_text_atomic(directory / "tokenizer.json", json.dumps(backend, indent=2, ensure_ascii=False) + "\n")
        named = {k: v for k, v in self._special.items() if v is not None}
        config = {"tokenizer_class": type(self).__name__, **named, **self._config_fields(),
                  "extra_special_tokens": [t for t in self.extra_special_tokens if t not in named.values()],
                  "padding_side": self.padding_side, "truncation_side": self.truncation_side,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}
        if self.split_special_tokens:
            config["split_special_tokens"] = True
        if self.model_max_length < LARGE_INTEGER:
            config["model_max_length"] = self.model_max_length
        special_map = {**named, "additional_special_tokens": config["extra_special_tokens"]}
        for name, content in (("special_tokens_map.json", special_map), ("tokenizer_config.json", config)):
            write_text_atomic(directory / name, json.dumps(content, indent=2, ensure_ascii=False) + "\n")
        files += [directory / "tokenizer.json", directory / "tokenizer_config.json",
                  directory / "special_tokens_map.json"]
        return tuple(str(f) for f in files)

    @staticmethod
    def _base_kwargs(config: dict, name_or_path: str) -> dict[str, Any]:
        """tokenizer_config.json keys that _TokenizerBase.__init__ understands."""
        kwargs = {k: config[k] for k in ("model_max_length", "padding_side", "truncation_side",
                                         "clean_up_tokenization_spaces", "split_special_tokens")
                  if config.get(k) is not None}
        return {**kwargs, "name_or_path": name_or_path}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"len={len(self)}, special_tokens={ {k: v for k, v in self._special.items() if v} })")


# Keywords transformers takes that change nothing here (verbose: its warnings only).
_ACCEPTED_NO_EFFECT = ("verbose",)
_NOT_SUPPORTED = {
    "spaces_between_special_tokens": "the tokenizers backend's decoder places the spaces (transformers' fast "
                                      "tokenizers ignore this argument)",
}


def _refuse_unknown(tokenizer, method: str, kwargs: dict) -> None:
    """An argument this tokenizer cannot honour is an error, never silently ignored."""
    for name in kwargs:
        if name in _ACCEPTED_NO_EFFECT:
            continue
        why = _NOT_SUPPORTED.get(name, "not an argument of this tokenizer (docs/tokenizers.md lists them)")
        raise InvalidInputError(f"{type(tokenizer).__name__}.{method}: {name}= is not supported: {why}")


def _check_padding_options(pad_to_multiple_of, padding_side) -> None:
    if pad_to_multiple_of is not None and (isinstance(pad_to_multiple_of, bool) or not isinstance(
            pad_to_multiple_of, int) or pad_to_multiple_of < 0):
        raise InvalidInputError(f"pad_to_multiple_of={pad_to_multiple_of!r}: expected a positive integer or None")
    if padding_side is not None and padding_side not in ("left", "right"):
        raise InvalidInputError(f"padding_side={padding_side!r}: expected 'left' or 'right'")


def _is_one_sequence(ids) -> bool:
    """A flat list of ids (or a 1-D tensor / array): one example, not a batch."""
    if hasattr(ids, "ndim"):
        return ids.ndim == 1
    first = ids[0]
    return isinstance(first, (int, np.integer)) or (hasattr(first, "ndim") and first.ndim == 0)


def _tensor_kind(ids) -> str | None:
    """"pt" / "np" when the ids come as torch tensors / numpy arrays (pad() then returns the same)."""
    probe = ids if hasattr(ids, "ndim") else ids[0]
    if isinstance(probe, torch.Tensor):
        return "pt"
    return "np" if isinstance(probe, np.ndarray) else None


def _padded(row: list, width: int, fill: int, side: str) -> list:
    pad = [fill] * max(0, width - len(row))
    return row + pad if side == "right" else pad + row


# pad() fill values per key (None: the pad token id)
_PAD_VALUES = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}


def _as_tensors(data: dict[str, list], return_tensors: str | None) -> dict[str, Any]:
    """Lists -> torch / numpy int64 tensors; a ragged batch is an error that says what to do."""
    if return_tensors is None:
        return data
    if return_tensors not in ("pt", "np"):
        raise InvalidInputError(f"return_tensors={return_tensors!r}: expected 'pt', 'np' or None")
    out = {}
    for key, value in data.items():
        lengths = {len(row) for row in value} if value and isinstance(value[0], (list, tuple)) else set()
        if len(lengths) > 1:
            raise InvalidInputError(f"cannot make one tensor of {key!r}: the sequences have lengths "
                                    f"{sorted(lengths)}; pass padding=True (and truncation=True if needed)")
        if return_tensors == "pt":
            out[key] = torch.tensor(value, dtype=torch.long)
        else:
            out[key] = np.asarray(value, dtype=np.int64)
    return out
