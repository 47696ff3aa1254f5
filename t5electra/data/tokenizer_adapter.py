"""Tokenizers for :func:`~t5electra.data.shards.build_shards`: a small protocol
(texts -> token ids, without special tokens) and :func:`adapt_tokenizer`, which wraps ours, a
``tokenizers.Tokenizer``, a transformers tokenizer or a plain callable, with the fingerprint that
names the shard cache and the special-token ids the packers need."""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import tokenizers as hf_tokenizers

from ..errors import InvalidInputError

@runtime_checkable
class BatchTokenizer(Protocol):
    """What :func:`build_shards` needs: texts -> token ids, without special tokens."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


class _TokenizersEncoder:
    """``tokenizers.Tokenizer``: its own (Rust) batch encoder."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]


class _CallEncoder:
    """transformers-style tokenizers (ours included): ``tok(texts, add_special_tokens=False)``."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tok(texts, add_special_tokens=False)["input_ids"]]


class _EncodeEachEncoder:
    """Tokenizers with only ``encode(text, add_special_tokens=False)``."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [list(self.tok.encode(t, add_special_tokens=False)) for t in texts]


class _MethodEncoder:
    """Objects with ``encode_batch(list[str]) -> list[list[int]]`` (the BatchTokenizer protocol)."""

    def __init__(self, tok):
        self.tok = tok

    def __call__(self, texts: list[str]) -> list[list[int]]:
        return [list(ids) for ids in self.tok.encode_batch(texts)]


@dataclasses.dataclass
class TokenizerAdapter:
    """A tokenizer reduced to what sharding and packing need.

    Build it with :func:`adapt_tokenizer`. ``encode`` never adds special tokens: packing adds
    them (EOS after each document for T5; [CLS]/[SEP] around each row for ELECTRA).
    """

    encode: Callable[[list[str]], list[list[int]]]  # texts -> ids, no special tokens
    fingerprint: str                                # changes whenever the ids could change
    vocab_size: int                                 # every id is < vocab_size
    pad_token_id: int | None = None
    eos_token_id: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self.encode(texts)


def _sha256_files(directory: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(f.relative_to(directory).as_posix().encode() + b"\0")
        h.update(f.read_bytes())
    return h.hexdigest()


def _special_id(tok, attr: str, tokens: Sequence[str]) -> int | None:
    value = getattr(tok, attr, None)
    if isinstance(value, int):
        return value
    for method in ("token_to_id", "convert_tokens_to_ids"):
        fn = getattr(tok, method, None)
        if fn is None:
            continue
        for t in tokens:
            try:
                tid = fn(t)
            except Exception:  # noqa: BLE001 - any lookup failure just means "not this token"
                continue
            if isinstance(tid, int) and tid != getattr(tok, "unk_token_id", None):
                return tid
    return None


def adapt_tokenizer(tokenizer: Any, *, fingerprint: str | None = None, vocab_size: int | None = None,
                    **special_ids: int | None) -> TokenizerAdapter:
    """Wrap a tokenizer for :func:`build_shards` and :class:`PackedDataset`.

    Accepts a :class:`TokenizerAdapter` (returned as is), a ``tokenizers.Tokenizer``, our
    ``T5Tokenizer`` / ``ElectraTokenizer`` or any transformers-style tokenizer (called as
    ``tok(texts, add_special_tokens=False)``), an object with ``encode_batch(list[str])``, or a
    plain callable ``texts -> list of id lists``. The fingerprint is, in order: ``fingerprint=``;
    the tokenizer's own ``fingerprint`` attribute; a hash of ``tokenizers.Tokenizer.to_str()``;
    a hash of the files ``save_pretrained`` writes. A callable needs ``fingerprint=`` and
    ``vocab_size=``. ``special_ids`` (``eos_token_id=``, ``pad_token_id=``, ...) override the
    ids found on the tokenizer.
    """
    if isinstance(tokenizer, TokenizerAdapter):
        return dataclasses.replace(tokenizer, **{k: v for k, v in special_ids.items() if v is not None})
    tok = tokenizer
    name = type(tok).__name__
    if isinstance(tok, hf_tokenizers.Tokenizer):
        encode: Callable = _TokenizersEncoder(tok)
        fp = fingerprint or "tokenizers:" + hashlib.sha256(tok.to_str().encode()).hexdigest()
        vs = vocab_size or tok.get_vocab_size(with_added_tokens=True)
    else:
        backend = getattr(tok, "backend_tokenizer", None)
        if isinstance(backend, hf_tokenizers.Tokenizer):
            # Ours and transformers' fast tokenizers: tok(texts, add_special_tokens=False) is exactly
            # the backend's encode_batch; calling it directly skips building attention masks.
            encode = _TokenizersEncoder(backend)
        elif hasattr(tok, "convert_tokens_to_ids") and callable(tok):
            encode = _CallEncoder(tok)
        elif hasattr(tok, "encode") and hasattr(tok, "convert_tokens_to_ids"):
            encode = _EncodeEachEncoder(tok)
        elif hasattr(tok, "encode_batch"):
            encode = _MethodEncoder(tok)
        elif callable(tok):
            encode = tok
        else:
            raise InvalidInputError(f"{name} is not a tokenizer: expected a tokenizers.Tokenizer, a "
                                    f"transformers-style tokenizer, an object with encode_batch(), or a callable")
        fp = fingerprint
        if fp is None:
            own = getattr(tok, "fingerprint", None)
            fp = own() if callable(own) else own
        if fp is None and hasattr(tok, "save_pretrained"):
            with tempfile.TemporaryDirectory() as tmp:
                tok.save_pretrained(tmp)
                fp = f"{name}:" + _sha256_files(Path(tmp))
        if fp is None:
            raise InvalidInputError(f"cannot fingerprint {name} for the shard cache: pass fingerprint= "
                                    f"(a string that changes whenever its token ids could change)")
        vs = vocab_size
        if vs is None:
            try:
                vs = len(tok)
            except TypeError:
                vs = getattr(tok, "vocab_size", None)
        if vs is None:
            raise InvalidInputError(f"cannot tell the vocabulary size of {name}: pass vocab_size=")
    ids = {
        "pad_token_id": _special_id(tok, "pad_token_id", ["<pad>", "[PAD]"]),
        "eos_token_id": _special_id(tok, "eos_token_id", ["</s>"]),
        "cls_token_id": _special_id(tok, "cls_token_id", ["[CLS]"]),
        "sep_token_id": _special_id(tok, "sep_token_id", ["[SEP]"]),
    }
    ids.update({k: v for k, v in special_ids.items() if v is not None})
    unknown = set(special_ids) - set(ids)
    if unknown:
        raise InvalidInputError(f"adapt_tokenizer: unknown special id argument(s) {sorted(unknown)}; "
                                f"expected {sorted(ids)}")
    return TokenizerAdapter(encode=encode, fingerprint=str(fp), vocab_size=int(vs), **ids)
