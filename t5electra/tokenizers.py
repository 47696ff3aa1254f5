"""Tokenizers for T5 (SentencePiece unigram + 100 sentinels) and ELECTRA (BERT WordPiece).

Both are thin, readable layers over a ``tokenizers.Tokenizer`` backend built exactly as
transformers v5 builds it (``models/t5/tokenization_t5.py``, ``models/bert/tokenization_bert.py``),
so ids, offsets and decoded text are the same as transformers' on the same files (tested in
``tests/test_tokenizers.py``). ``_TokenizerBase`` holds everything the two share: special tokens,
``__call__`` with padding / truncation / ``return_tensors``, ``encode``, ``decode``, ``save_pretrained``.

T5 conventions (REFERENCE.md): SentencePiece ids pad=0, eos=1, unk=2, no BOS, EOS appended to every
sequence, and 100 sentinels after the pieces counting down: ``<extra_id_i>`` = sp_size + 99 - i.
transformers v5 splits on whitespace first and gives every word the "▁" prefix (the ``legacy`` and
``add_prefix_space`` flags of v4 are ignored), so runs of whitespace collapse and text right after a
sentinel starts a new word; we do the same.

One deliberate difference: transformers builds the T5 unigram model with ``unk_id=2`` whatever the
SentencePiece model says, so on a model whose ``<unk>`` is not id 2 (e.g. sentencepiece's own
test_model.model, where id 2 is ``</s>``) unknown characters come out as EOS. We use the model's own
unknown id (the one ``unk_token_id`` reports in both libraries). On models that follow T5's
conventions the two agree.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import AddedToken, Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram, WordPiece

from .errors import CheckpointNotFoundError, ConfigError, InvalidInputError, MissingTokenError

# transformers' "no limit" for model_max_length (tokenization_utils_base.VERY_LARGE_INTEGER).
VERY_LARGE_INTEGER = int(1e30)
LARGE_INTEGER = int(1e20)

PADDING = ("longest", "max_length", "do_not_pad")
TRUNCATION = ("longest_first", "only_first", "only_second", "do_not_truncate")
# Named special tokens, in the order transformers registers them (SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


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

    def to(self, device) -> BatchEncoding:
        """Move every tensor to ``device`` (after ``return_tensors="pt"``)."""
        for key, value in self.items():
            if hasattr(value, "to"):
                self[key] = value.to(device)
        return self

    def tokens(self, batch_index: int = 0) -> list[str]:
        return self.encodings[batch_index].tokens

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        return self.encodings[batch_index].word_ids

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """0 for tokens of the first text, 1 for the second (text pairs), None for special tokens."""
        return self.encodings[batch_index].sequence_ids


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e


def _token_content(token) -> str:
    """transformers writes special tokens either as strings or as AddedToken dicts."""
    return token["content"] if isinstance(token, dict) else str(token)


def _find_tokenizer_dir(path: str | os.PathLike, cls_name: str, wanted: tuple[str, ...]) -> Path:
    root = Path(path)
    if not root.is_dir():
        what = "is a file, not a directory" if root.exists() else "does not exist"
        raise CheckpointNotFoundError(f"{cls_name}.from_pretrained: directory {root} {what} "
                                      f"(expected one holding {' and/or '.join(wanted)})")
    if not any((root / name).is_file() for name in wanted):
        raise CheckpointNotFoundError(
            f"{cls_name}.from_pretrained: no tokenizer files in {root}: looked for {', '.join(wanted)}")
    return root


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
                 clean_up_tokenization_spaces: bool = False, name_or_path: str = ""):
        self._backend = backend
        self._special = {name: special_tokens.get(name) for name in SPECIAL_TOKEN_NAMES}
        self.extra_special_tokens = list(dict.fromkeys(extra_special_tokens))
        self.model_max_length = VERY_LARGE_INTEGER if model_max_length is None else int(model_max_length)
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.name_or_path = name_or_path
        # __call__ sets the backend's padding/truncation for one call; the lock keeps concurrent
        # callers (server threads) from seeing each other's settings.
        self._lock = threading.Lock()

    def __getstate__(self):  # picklable (DataLoader workers) without the lock
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # -- special tokens ------------------------------------------------------------------------
    def _register_special_tokens(self, *, add_missing: bool) -> None:
        """Mark the special tokens in the backend so text like "<extra_id_0>" or "[MASK]" maps to
        one id and ``skip_special_tokens`` drops them. ``add_missing`` appends tokens the vocab
        lacks (transformers does that for T5's ``<pad>``); otherwise they stay out."""
        tokens = [t for t in self._special.values() if t is not None] + self.extra_special_tokens
        tokens = list(dict.fromkeys(tokens))
        if not add_missing:
            tokens = [t for t in tokens if self._backend.token_to_id(t) is not None]
        self._backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])

    def _restore_added_tokens(self, added_tokens: list[dict], source: Path) -> None:
        """Re-add the tokens a tokenizer.json lists under "added_tokens" (e.g. from add_tokens())
        and check each lands on the id the file says."""
        registered = {t.content for t in self._backend.get_added_tokens_decoder().values()}
        for entry in sorted(added_tokens, key=lambda e: e["id"]):
            if entry["content"] not in registered:
                special = entry.get("special", False)
                token = AddedToken(entry["content"], single_word=entry.get("single_word", False),
                                   lstrip=entry.get("lstrip", False), rstrip=entry.get("rstrip", False),
                                   normalized=entry.get("normalized", not special), special=special)
                if special:
                    self._backend.add_special_tokens([token])
                    self.extra_special_tokens.append(entry["content"])
                else:
                    self._backend.add_tokens([token])
            got = self._backend.token_to_id(entry["content"])
            if got != entry["id"]:
                raise ConfigError(f"{source}: added token {entry['content']!r} has id {entry['id']} in the "
                                  f"file but {got} after rebuilding the vocabulary")

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

    def tokenize(self, text: str, pair: str | None = None, add_special_tokens: bool = False) -> list[str]:
        return self._backend.encode(text, pair, add_special_tokens=add_special_tokens).tokens

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        return self._backend.num_special_tokens_to_add(pair)

    # -- encoding ------------------------------------------------------------------------------
    def _strategies(self, padding, truncation, max_length, pad_to_multiple_of):
        """transformers' _get_padding_truncation_strategies: resolve True/False/strings, fill
        max_length from model_max_length, and check a pad token exists when padding."""
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
    def _backend_settings(self, padding, truncation, max_length, stride, pad_to_multiple_of, padding_side):
        """Set the backend's truncation and padding for one call, then clear them again."""
        if truncation != "do_not_truncate":
            self._backend.enable_truncation(max_length, stride=stride, strategy=truncation,
                                            direction=self.truncation_side)
        if padding != "do_not_pad":
            self._backend.enable_padding(
                direction=padding_side or self.padding_side, pad_id=self.pad_token_id,
                pad_type_id=self.pad_token_type_id, pad_token=self.pad_token,
                length=max_length if padding == "max_length" else None, pad_to_multiple_of=pad_to_multiple_of)
        try:
            yield
        finally:
            self._backend.no_truncation()
            self._backend.no_padding()

    def _encode(self, text, text_pair, *, add_special_tokens, padding, truncation, max_length, stride,
                is_split_into_words, pad_to_multiple_of, padding_side, return_tensors,
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

        with self._lock, self._backend_settings(padding, truncation, max_length, stride, pad_to_multiple_of,
                                                padding_side):
            try:
                encodings = self._backend.encode_batch(inputs, add_special_tokens=add_special_tokens,
                                                       is_pretokenized=is_split_into_words)
            except Exception as e:  # the Rust backend raises plain Exceptions
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
                 return_offsets_mapping: bool = False, return_length: bool = False) -> BatchEncoding:
        """Tokenize a text, a list of texts, or text pairs (``text_pair``).

        padding: True/"longest" (to the longest in the batch), "max_length", False.
        truncation: True/"longest_first", "only_first", "only_second", False; a ``max_length``
        given alone turns on "longest_first" (as in transformers).
        return_tensors: "pt" (torch), "np" (numpy) or None (lists; one text -> no batch dimension).
        text_target: targets of a seq2seq task, returned as ``labels`` (padded with the pad id,
        not -100: the collator or the model masks them).
        """
        if text is None and text_target is None:
            raise InvalidInputError("pass text or text_target (both are None)")
        padding, truncation, max_length = self._strategies(padding, truncation, max_length, pad_to_multiple_of)
        options = dict(add_special_tokens=add_special_tokens, padding=padding, truncation=truncation, stride=stride,
                       is_split_into_words=is_split_into_words, pad_to_multiple_of=pad_to_multiple_of,
                       padding_side=padding_side, return_tensors=return_tensors,
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
               padding_side: str | None = None, return_tensors: str | None = None):
        """The ids of one text (a list, or a (1, T) tensor with ``return_tensors="pt"``)."""
        return self(text, text_pair, add_special_tokens=add_special_tokens, padding=padding,
                    truncation=truncation, max_length=max_length, stride=stride, padding_side=padding_side,
                    return_tensors=return_tensors)["input_ids"]

    # -- decoding ------------------------------------------------------------------------------
    def decode(self, token_ids, skip_special_tokens: bool = False,
               clean_up_tokenization_spaces: bool | None = None) -> str | list[str]:
        """Ids -> text. A batch (list of lists, 2-D tensor) gives a list of texts."""
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
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
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
        """Write the Hugging Face layout: the vocabulary file, tokenizer.json, tokenizer_config.json
        and special_tokens_map.json (transformers loads the directory)."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self._save_vocabulary(directory)
        with self._lock:  # not while another thread has padding/truncation switched on
            self._backend.save(str(directory / "tokenizer.json"))
        named = {k: v for k, v in self._special.items() if v is not None}
        config = {"tokenizer_class": type(self).__name__, **named, **self._config_fields(),
                  "extra_special_tokens": [t for t in self.extra_special_tokens if t not in named.values()],
                  "padding_side": self.padding_side, "truncation_side": self.truncation_side,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}
        if self.model_max_length < LARGE_INTEGER:
            config["model_max_length"] = self.model_max_length
        special_map = {**named, "additional_special_tokens": config["extra_special_tokens"]}
        for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
            (directory / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        files += [directory / "tokenizer.json", directory / "tokenizer_config.json",
                  directory / "special_tokens_map.json"]
        return tuple(str(f) for f in files)

    @staticmethod
    def _base_kwargs(config: dict, name_or_path: str) -> dict[str, Any]:
        """tokenizer_config.json keys that _TokenizerBase.__init__ understands."""
        kwargs = {k: config[k] for k in ("model_max_length", "padding_side", "truncation_side",
                                         "clean_up_tokenization_spaces") if config.get(k) is not None}
        return {**kwargs, "name_or_path": name_or_path}

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
                f"len={len(self)}, special_tokens={ {k: v for k, v in self._special.items() if v} })")


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
            import torch

            out[key] = torch.tensor(value, dtype=torch.long)
        else:
            out[key] = np.asarray(value, dtype=np.int64)
    return out


# ============================================================================================
# T5: SentencePiece unigram (+ 100 sentinels), EOS appended, no BOS.
# ============================================================================================
class T5Tokenizer(_TokenizerBase):
    """T5's tokenizer: a SentencePiece unigram model plus ``extra_ids`` sentinels ``<extra_id_i>``
    (id sp_size + extra_ids - 1 - i), pad ``<pad>``, EOS ``</s>`` appended, unknown ``<unk>``.

    Load with ``T5Tokenizer.from_pretrained(dir)`` (spiece.model and/or tokenizer.json), or train a
    new one with ``T5Tokenizer.train(files, vocab_size)``.
    """

    model_input_names = ["input_ids", "attention_mask"]
    vocab_files = ("spiece.model", "tokenizer.json")

    def __init__(self, vocab: list[tuple[str, float]], *, precompiled_charsmap: bytes | None = None,
                 sp_model_proto: bytes | None = None, extra_ids: int = 100, eos_token: str = "</s>",
                 unk_token: str = "<unk>", pad_token: str = "<pad>", extra_special_tokens: Iterable[str] = (),
                 **kwargs):
        """vocab: (piece, score) pairs in id order; sentinels are appended unless already there.
        precompiled_charsmap: SentencePiece's normalization table (NFKC & co.), or None.
        sp_model_proto: the spiece.model bytes, written back by save_pretrained."""
        vocab = [(str(piece), float(score)) for piece, score in vocab]
        pieces = {piece for piece, _ in vocab}
        sentinels = [f"<extra_id_{i}>" for i in range(extra_ids)]
        if extra_ids and sentinels[0] not in pieces:
            vocab += [(s, 0.0) for s in reversed(sentinels)]  # <extra_id_0> is the last id
        self.extra_ids = extra_ids
        self.sp_model_proto = sp_model_proto
        unk_id = next((i for i, (piece, _) in enumerate(vocab) if piece == unk_token), None)
        if unk_id is None:
            raise MissingTokenError(f"T5Tokenizer: the unk_token {unk_token!r} is not among the "
                                    f"{len(vocab)} pieces of {kwargs.get('name_or_path') or 'the vocabulary'}")

        # The backend, as transformers v5 builds it (models/t5/tokenization_t5.py).
        backend = Tokenizer(Unigram(vocab, unk_id=unk_id, byte_fallback=False))
        if precompiled_charsmap:
            backend.normalizer = normalizers.Precompiled(precompiled_charsmap)
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ])
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        super().__init__(backend, special_tokens={"eos_token": eos_token, "unk_token": unk_token,
                                                  "pad_token": pad_token},
                         extra_special_tokens=[*extra_special_tokens, *sentinels], **kwargs)
        self._register_special_tokens(add_missing=True)
        backend.post_processor = processors.TemplateProcessing(
            single=["$A", eos_token], pair=["$A", eos_token, "$B", eos_token],
            special_tokens=[(eos_token, self.eos_token_id)])

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> T5Tokenizer:
        """Load from a directory with spiece.model and/or tokenizer.json (+ tokenizer_config.json).

        As in transformers, tokenizer.json wins when both exist; spiece.model is kept so that
        save_pretrained writes it back. ``overrides`` replace tokenizer_config.json keys
        (e.g. ``model_max_length=512``, ``extra_ids=0``).
        """
        root = _find_tokenizer_dir(path, cls.__name__, cls.vocab_files)
        config = _read_json(root / "tokenizer_config.json") if (root / "tokenizer_config.json").is_file() else {}
        config.update(overrides)
        kwargs: dict[str, Any] = cls._base_kwargs(config, str(path))
        for name in ("eos_token", "unk_token", "pad_token"):
            if config.get(name) is not None:
                kwargs[name] = _token_content(config[name])
        kwargs["extra_ids"] = int(config.get("extra_ids", 100))
        listed = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        extra = [_token_content(t) for t in listed]

        spiece, tok_json = root / "spiece.model", root / "tokenizer.json"
        proto = spiece.read_bytes() if spiece.is_file() else None
        added: list[dict] = []
        if tok_json.is_file():
            data = _read_json(tok_json)
            model = data.get("model", {})
            if model.get("type") != "Unigram":
                raise ConfigError(f"{tok_json}: model type {model.get('type')!r}, T5Tokenizer needs 'Unigram'")
            vocab = [(piece, score) for piece, score in model["vocab"]]
            charsmap = _precompiled_charsmap(data.get("normalizer"))
            added = data.get("added_tokens", [])
            controls = [t["content"] for t in added if t.get("special")]
        else:
            vocab, charsmap, controls = _read_spiece(proto, spiece)
        tokenizer = cls(vocab, precompiled_charsmap=charsmap, sp_model_proto=proto,
                        extra_special_tokens=[*controls, *extra], **kwargs)
        tokenizer._restore_added_tokens(added, tok_json)
        return tokenizer

    @classmethod
    def from_sentencepiece(cls, model_proto: bytes, **kwargs) -> T5Tokenizer:
        """Build from the bytes of a SentencePiece model (spiece.model)."""
        vocab, charsmap, controls = _read_spiece(model_proto, "the SentencePiece model")
        return cls(vocab, precompiled_charsmap=charsmap, sp_model_proto=model_proto,
                   extra_special_tokens=controls, **kwargs)

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def train(cls, files_or_iterator, vocab_size: int = 32000, *, output_dir: str | os.PathLike | None = None,
              extra_ids: int = 100, character_coverage: float = 0.9995, model_max_length: int | None = None,
              **sentencepiece_options) -> T5Tokenizer:
        """Train a SentencePiece unigram model with T5's conventions (pad 0, eos 1, unk 2, no BOS).

        files_or_iterator: a text file, a list of text files (one sentence/document per line), or
        any other iterable of strings (e.g. a generator over a dataset).
        vocab_size: number of SentencePiece pieces; the tokenizer then has vocab_size + extra_ids
        ids (T5: 32000 pieces + 100 sentinels; the model pads its embedding to a multiple of 128).
        sentencepiece_options: passed to SentencePieceTrainer (e.g. input_sentence_size=1_000_000,
        shuffle_input_sentence=True, num_threads=8).
        If output_dir is given the tokenizer is also saved there (HF layout).
        """
        import sentencepiece as spm

        options = dict(model_type="unigram", vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                       pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
                       character_coverage=character_coverage, minloglevel=2)
        options.update(sentencepiece_options)
        files, texts = _files_or_texts(files_or_iterator)
        model = io.BytesIO()
        try:
            if files is not None:
                spm.SentencePieceTrainer.train(input=[str(f) for f in files], model_writer=model, **options)
            else:
                spm.SentencePieceTrainer.train(sentence_iterator=iter(texts), model_writer=model, **options)
        except RuntimeError as e:
            where = ", ".join(map(str, files)) if files is not None else "the text iterator"
            raise InvalidInputError(f"SentencePiece training on {where} (vocab_size={vocab_size}) failed: {e}") from e
        tokenizer = cls.from_sentencepiece(model.getvalue(), extra_ids=extra_ids, model_max_length=model_max_length)
        if output_dir is not None:
            tokenizer.save_pretrained(output_dir)
            tokenizer.name_or_path = str(output_dir)
        return tokenizer

    # -- T5 specifics --------------------------------------------------------------------------
    def get_sentinel_tokens(self) -> list[str]:
        """``<extra_id_0>``, ``<extra_id_1>``, ... in order."""
        return [f"<extra_id_{i}>" for i in range(self.extra_ids)]

    def get_sentinel_token_ids(self) -> list[int]:
        """Ids of ``<extra_id_0>``, ``<extra_id_1>``, ... (descending: sp_size + extra_ids - 1 - i)."""
        return self.convert_tokens_to_ids(self.get_sentinel_tokens())

    def _config_fields(self) -> dict[str, Any]:
        return {"extra_ids": self.extra_ids}

    def _save_vocabulary(self, directory: Path) -> list[Path]:
        if self.sp_model_proto is None:  # loaded from tokenizer.json alone: nothing to write back
            return []
        (directory / "spiece.model").write_bytes(self.sp_model_proto)
        return [directory / "spiece.model"]


def _read_spiece(proto_bytes: bytes, source) -> tuple[list[tuple[str, float]], bytes | None, list[str]]:
    """(piece, score) list, normalization charsmap and control pieces (<s>, </s>, ...) of a
    SentencePiece model, read with sentencepiece's own protobuf schema."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(proto_bytes)
    except Exception as e:  # protobuf's DecodeError
        raise ConfigError(f"{source}: not a SentencePiece model ({e})") from e
    if not proto.pieces:
        raise ConfigError(f"{source}: a SentencePiece model without pieces")
    if proto.trainer_spec.model_type != proto.trainer_spec.UNIGRAM:
        raise ConfigError(f"{source}: SentencePiece model type {proto.trainer_spec.model_type} is not "
                          f"UNIGRAM (T5 uses unigram)")
    vocab = [(p.piece, p.score) for p in proto.pieces]
    controls = [p.piece for p in proto.pieces if p.type == p.CONTROL]
    return vocab, proto.normalizer_spec.precompiled_charsmap or None, controls


def _precompiled_charsmap(normalizer: dict | None) -> bytes | None:
    """The SentencePiece charsmap inside a tokenizer.json normalizer (alone or in a Sequence)."""
    if not normalizer:
        return None
    for item in normalizer.get("normalizers", [normalizer]):
        if item.get("type") == "Precompiled" and item.get("precompiled_charsmap"):
            return base64.b64decode(item["precompiled_charsmap"])
    return None


def _files_or_texts(source) -> tuple[list[Path] | None, Iterable[str] | None]:
    """A path or list of paths -> files (checked to exist); any other iterable -> texts."""
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    if isinstance(source, (list, tuple)):
        if not source:
            raise InvalidInputError("no training files given")
        is_file = [_is_file(f) for f in source]
        if all(is_file):
            return [Path(f) for f in source], None
        missing = [repr(str(f) if len(str(f)) <= 200 else str(f)[:80] + "...") for f, ok in zip(source, is_file)
                   if not ok]
        raise InvalidInputError(f"training file(s) not found: {', '.join(missing[:3])}"
                                f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''} "
                                f"(a list is read as file paths; to train on strings, pass iter(texts))")
    return None, source


def _is_file(f) -> bool:
    try:
        return Path(f).is_file()
    except (OSError, ValueError):  # a long text is not a path (ENAMETOOLONG), nor one with NUL bytes
        return False


# ============================================================================================
# ELECTRA / BERT: WordPiece with BERT's normalizer ([CLS] A [SEP] B [SEP], token types 0/1).
# ============================================================================================
ELECTRA_SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]",
                          "sep_token": "[SEP]", "mask_token": "[MASK]"}


class ElectraTokenizer(_TokenizerBase):
    """ELECTRA's (= BERT's) WordPiece tokenizer: optional lower-casing and accent stripping,
    Chinese characters split one per token, ``[CLS] A [SEP] (B [SEP])`` with token_type_ids.

    Load with ``ElectraTokenizer.from_pretrained(dir)`` (vocab.txt or tokenizer.json), or train
    a new vocabulary with ``ElectraTokenizer.train(files, vocab_size)``. A vocabulary without
    [MASK] or [PAD] loads; asking for ``mask_token_id`` / padding then raises MissingTokenError.
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]
    vocab_files = ("vocab.txt", "tokenizer.json")

    def __init__(self, vocab: dict[str, int], *, do_lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, unk_token: str = "[UNK]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", cls_token: str = "[CLS]", mask_token: str = "[MASK]",
                 extra_special_tokens: Iterable[str] = (), **kwargs):
        """vocab: token -> id. strip_accents None follows do_lower_case (as in original BERT)."""
        self.do_lower_case, self.strip_accents = do_lower_case, strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        source = kwargs.get("name_or_path") or "the vocabulary"
        for name, token in (("unk_token", unk_token), ("cls_token", cls_token), ("sep_token", sep_token)):
            if token not in vocab:
                raise MissingTokenError(f"ElectraTokenizer: the {name} {token!r} is not in {source} "
                                        f"({len(vocab)} tokens)")

        # The backend, as transformers v5 builds it (models/bert/tokenization_bert.py).
        backend = Tokenizer(WordPiece(vocab, unk_token=unk_token))
        backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                                        strip_accents=strip_accents, lowercase=do_lower_case)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        super().__init__(backend, special_tokens={"unk_token": unk_token, "sep_token": sep_token,
                                                  "pad_token": pad_token, "cls_token": cls_token,
                                                  "mask_token": mask_token},
                         extra_special_tokens=extra_special_tokens, **kwargs)
        self._register_special_tokens(add_missing=False)
        backend.post_processor = processors.TemplateProcessing(
            single=f"{cls_token}:0 $A:0 {sep_token}:0",
            pair=f"{cls_token}:0 $A:0 {sep_token}:0 $B:1 {sep_token}:1",
            special_tokens=[(cls_token, self.cls_token_id), (sep_token, self.sep_token_id)])

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> ElectraTokenizer:
        """Load from a directory with vocab.txt and/or tokenizer.json (+ tokenizer_config.json for
        do_lower_case, strip_accents, special tokens, model_max_length). tokenizer.json wins when
        both exist, as in transformers; without a config, its normalizer gives the lower-casing."""
        root = _find_tokenizer_dir(path, cls.__name__, cls.vocab_files)
        config = _read_json(root / "tokenizer_config.json") if (root / "tokenizer_config.json").is_file() else {}
        tok_json, vocab_txt = root / "tokenizer.json", root / "vocab.txt"
        added: list[dict] = []
        if tok_json.is_file():
            data = _read_json(tok_json)
            model = data.get("model", {})
            if model.get("type") != "WordPiece":
                raise ConfigError(f"{tok_json}: model type {model.get('type')!r}, ElectraTokenizer needs 'WordPiece'")
            vocab = dict(model["vocab"])
            added = data.get("added_tokens", [])
            norm = data.get("normalizer") or {}
            if norm.get("type") == "BertNormalizer":  # defaults when tokenizer_config.json is silent
                config = {"do_lower_case": norm.get("lowercase", True), "strip_accents": norm.get("strip_accents"),
                          "tokenize_chinese_chars": norm.get("handle_chinese_chars", True), **config}
        else:
            vocab = WordPiece.read_file(str(vocab_txt))  # what transformers v5 reads vocab.txt with
        config.update(overrides)
        kwargs: dict[str, Any] = cls._base_kwargs(config, str(path))
        for name in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
            if name in config:
                kwargs[name] = config[name]
        for name in ELECTRA_SPECIAL_TOKENS:
            if config.get(name) is not None:
                kwargs[name] = _token_content(config[name])
        listed = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
        tokenizer = cls(vocab, extra_special_tokens=[_token_content(t) for t in listed], **kwargs)
        tokenizer._restore_added_tokens(added, tok_json)
        return tokenizer

    @classmethod
    def train(cls, files_or_iterator, vocab_size: int = 30522, *, output_dir: str | os.PathLike | None = None,
              lowercase: bool = True, strip_accents: bool | None = None, tokenize_chinese_chars: bool = True,
              min_frequency: int = 2, limit_alphabet: int = 1000,
              model_max_length: int | None = 512) -> ElectraTokenizer:
        """Train a new WordPiece vocabulary with tokenizers' BertWordPieceTokenizer pipeline.

        files_or_iterator: a text file, a list of text files, or any other iterable of strings.
        Special tokens get the first ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
        If output_dir is given the tokenizer is also saved there (HF layout).
        """
        from tokenizers.implementations import BertWordPieceTokenizer

        trainer = BertWordPieceTokenizer(clean_text=True, handle_chinese_chars=tokenize_chinese_chars,
                                         strip_accents=strip_accents, lowercase=lowercase)
        options = dict(vocab_size=vocab_size, min_frequency=min_frequency, limit_alphabet=limit_alphabet,
                       special_tokens=list(ELECTRA_SPECIAL_TOKENS.values()), show_progress=False)
        files, texts = _files_or_texts(files_or_iterator)
        if files is not None:
            trainer.train([str(f) for f in files], **options)
        else:
            trainer.train_from_iterator(texts, **options)
        tokenizer = cls(trainer.get_vocab(), do_lower_case=lowercase, strip_accents=strip_accents,
                        tokenize_chinese_chars=tokenize_chinese_chars, model_max_length=model_max_length)
        if output_dir is not None:
            tokenizer.save_pretrained(output_dir)
            tokenizer.name_or_path = str(output_dir)
        return tokenizer

    def _config_fields(self) -> dict[str, Any]:
        return {"do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars}

    def _save_vocabulary(self, directory: Path) -> list[Path]:
        """vocab.txt: one token per line, line number = id."""
        vocab = self._backend.get_vocab(with_added_tokens=False)
        by_id = sorted(vocab.items(), key=lambda kv: kv[1])
        if [i for _, i in by_id] != list(range(len(by_id))):
            raise ConfigError(f"ElectraTokenizer ({self.name_or_path}): vocabulary ids are not 0..{len(by_id) - 1} "
                              f"without gaps, so they cannot be written as vocab.txt lines")
        path = directory / "vocab.txt"
        path.write_text("".join(token + "\n" for token, _ in by_id), encoding="utf-8")
        return [path]
