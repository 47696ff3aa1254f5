"""Tokenizers for T5 (SentencePiece unigram + 100 sentinels) and ELECTRA (BERT WordPiece).

Both are thin, readable layers over a ``tokenizers.Tokenizer`` backend built exactly as
transformers v5 builds it (``models/t5/tokenization_t5.py``, ``models/bert/tokenization_bert.py``),
so ids, offsets and decoded text are the same as transformers' on the same files (tested in
``tests/test_tokenizers.py``). ``_TokenizerBase`` (tokenizer_base.py) holds everything the two share: special tokens,
``__call__`` with padding / truncation / ``return_tensors``, ``encode``, ``decode``, ``save_pretrained``.

T5 conventions (docs/reference.md): SentencePiece ids pad=0, eos=1, unk=2, no BOS, EOS appended to every
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
import io
import logging
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm
from sentencepiece import sentencepiece_model_pb2
from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import Unigram, WordPiece

from .core.atomic import write_bytes_atomic, write_text_atomic
from .errors import ConfigError, InvalidInputError, MissingTokenError
from .tokenizer_base import BatchEncoding  # noqa: F401 (tokenizers.BatchEncoding, as in transformers)
from .tokenizer_base import _TokenizerBase
from .tokenizer_files import (SPECIAL_TOKEN_NAMES, _check_config, _find_tokenizer_dir, _listed_special_tokens,
                              _model_section, _read_json, _read_vocab_txt, _token_content, _v4_token_files)
from .wordpiece import count_words, train_wordpiece

logger = logging.getLogger("t5electra")

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
                 unk_token: str = "<unk>", pad_token: str = "<pad>", bos_token: str | None = None,
                 sep_token: str | None = None, cls_token: str | None = None, mask_token: str | None = None,
                 extra_special_tokens: Iterable[str] = (), byte_fallback: bool | None = None,
                 added_tokens: Iterable[dict] = (), model_unk_id: int | None = None, **kwargs):
        """vocab: (piece, score) pairs in id order; sentinels are appended unless already there.
        precompiled_charsmap: SentencePiece's normalization table (NFKC & co.), or None.
        sp_model_proto: the spiece.model bytes, written back by save_pretrained.
        byte_fallback: a character outside the vocabulary becomes the pieces of its UTF-8 bytes
        (``<0xE4><0xB8><0xAD>``), never ``<unk>``, and decodes back to the character; None: as
        the SentencePiece model was trained (``train(..., byte_fallback=True)``).
        added_tokens: tokens added past the pieces, as tokenizer.json's "added_tokens" entries
        ({"id", "content", "special", ...}): restored on their ids before the special tokens.
        model_unk_id: the piece unknown text becomes when ``unk_token`` is not a piece (an added
        token, as transformers' ``add_special_tokens({"unk_token": ...})`` makes it)."""
        vocab = [(str(piece), float(score)) for piece, score in vocab]
        pieces = {piece for piece, _ in vocab}
        sentinels = [f"<extra_id_{i}>" for i in range(extra_ids)]
        if extra_ids and sentinels[0] not in pieces:
            vocab += [(s, 0.0) for s in reversed(sentinels)]  # <extra_id_0> is the last id
        self.extra_ids = extra_ids
        self.sp_model_proto = sp_model_proto
        if byte_fallback is None:
            byte_fallback = _spiece_byte_fallback(sp_model_proto) if sp_model_proto else False
        self.byte_fallback = bool(byte_fallback)
        unk_id = next((i for i, (piece, _) in enumerate(vocab) if piece == unk_token), model_unk_id)
        if unk_id is None or not 0 <= unk_id < len(vocab):
            raise MissingTokenError(f"T5Tokenizer: the unk_token {unk_token!r} is not among the "
                                    f"{len(vocab)} pieces of {kwargs.get('name_or_path') or 'the vocabulary'}")

        # The backend, as transformers v5 builds it (models/t5/tokenization_t5.py), which always
        # sets byte_fallback=False: a byte-fallback model is ours (transformers' T5 gives <unk>).
        backend = Tokenizer(Unigram(vocab, unk_id=unk_id, byte_fallback=self.byte_fallback))
        if precompiled_charsmap:
            backend.normalizer = normalizers.Precompiled(precompiled_charsmap)
        backend.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
        ])
        backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
        if self.byte_fallback:  # <0xE4><0xB8><0xAD> -> "中" first (invalid UTF-8 -> U+FFFD per byte)
            backend.decoder = decoders.Sequence([decoders.ByteFallback(), backend.decoder])
        super().__init__(backend, special_tokens={"bos_token": bos_token, "eos_token": eos_token,
                                                  "unk_token": unk_token, "sep_token": sep_token,
                                                  "pad_token": pad_token, "cls_token": cls_token,
                                                  "mask_token": mask_token},
                         extra_special_tokens=[*extra_special_tokens, *sentinels], **kwargs)
        # special tokens the pieces lack are added, as transformers does (<pad> of test_model.model)
        self._add_special_tokens_to_backend(added_tokens, add_missing_named=True)
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
        spiece, tok_json = root / "spiece.model", root / "tokenizer.json"
        config, added = _v4_token_files(root, config, overrides, tok_json.is_file())
        config.update(overrides)
        _check_config(config, root, overrides, cls.__name__)
        kwargs: dict[str, Any] = cls._base_kwargs(config, str(path))
        kwargs["extra_ids"] = config.get("extra_ids", 100)

        proto = spiece.read_bytes() if spiece.is_file() else None
        if tok_json.is_file():
            data = _read_json(tok_json)
            model = _model_section(data, tok_json, "Unigram", cls.__name__)
            vocab = [(piece, score) for piece, score in model["vocab"]]
            charsmap = _precompiled_charsmap(data.get("normalizer"))
            added = data.get("added_tokens", [])
            controls = []  # the special ones among its added tokens come back with them
            kwargs["byte_fallback"] = bool(model.get("byte_fallback", False))
            kwargs["model_unk_id"] = model.get("unk_id")
        else:  # transformers lists the model's control pieces (<s>, </s>) among the extra special tokens
            vocab, charsmap, controls, kwargs["model_unk_id"] = _read_spiece(proto, spiece)
        kwargs.update(_special_token_kwargs(config))
        return cls(vocab, precompiled_charsmap=charsmap, sp_model_proto=proto, added_tokens=added,
                   extra_special_tokens=[*controls, *kwargs.pop("extra_special_tokens")], **kwargs)

    @classmethod
    def from_sentencepiece(cls, model_proto: bytes, **kwargs) -> T5Tokenizer:
        """Build from the bytes of a SentencePiece model (spiece.model)."""
        vocab, charsmap, controls, unk_id = _read_spiece(model_proto, "the SentencePiece model")
        return cls(vocab, precompiled_charsmap=charsmap, sp_model_proto=model_proto, model_unk_id=unk_id,
                   extra_special_tokens=controls, **kwargs)

    # -- training ------------------------------------------------------------------------------
    @classmethod
    def train(cls, files_or_iterator, vocab_size: int = 32000, *, output_dir: str | os.PathLike | None = None,
              extra_ids: int = 100, character_coverage: float = 0.9995, model_max_length: int | None = None,
              byte_fallback: bool = False, **sentencepiece_options) -> T5Tokenizer:
        """Train a SentencePiece unigram model with T5's conventions (pad 0, eos 1, unk 2, no BOS).

        files_or_iterator: a text file, a list of text files (one sentence/document per line), or
        any other iterable of strings (e.g. a generator over a dataset).
        vocab_size: number of SentencePiece pieces; the tokenizer then has vocab_size + extra_ids
        ids (T5: 32000 pieces + 100 sentinels; the model pads its embedding to a multiple of 128).
        byte_fallback: add the 256 byte pieces ``<0x00>``..``<0xFF>`` (ids 3..258), so that a
        character not in the vocabulary (a rare Chinese character, an emoji) is spelled in UTF-8
        bytes rather than ``<unk>``; needs vocab_size > 259 + the characters kept. For Chinese,
        also ``character_coverage=0.9995`` (SentencePiece's advice for CJK) keeps the rarest
        characters out of the vocabulary, to be spelled in bytes.
        sentencepiece_options: passed to SentencePieceTrainer (e.g. input_sentence_size=1_000_000,
        shuffle_input_sentence=True, num_threads=8).
        If output_dir is given the tokenizer is also saved there (HF layout).
        """
        _check_sizes(vocab_size=(vocab_size, 4), extra_ids=(extra_ids, 0))
        if not isinstance(character_coverage, (int, float)) or not 0 < character_coverage <= 1:
            raise InvalidInputError(f"character_coverage must be in (0, 1], got {character_coverage!r}")
        options = dict(model_type="unigram", vocab_size=vocab_size, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                       pad_piece="<pad>", eos_piece="</s>", unk_piece="<unk>",
                       character_coverage=character_coverage, byte_fallback=byte_fallback, minloglevel=2)
        options.update(sentencepiece_options)
        files, texts = _files_or_texts(files_or_iterator)
        if files is not None and _has_long_line(files):  # SentencePiece would skip those lines: read them here
            texts, files = _file_lines(files), None
        refused: list[InvalidInputError] = []  # raised inside SentencePiece's reading: reported as it is

        def sentences(texts):
            try:
                yield from (piece for text in texts for piece in _short_pieces(text))
            except InvalidInputError as e:
                refused.append(e)
                raise

        model = io.BytesIO()
        try:
            if files is not None:
                spm.SentencePieceTrainer.train(input=[str(f) for f in files], model_writer=model, **options)
            else:
                spm.SentencePieceTrainer.train(sentence_iterator=sentences(texts), model_writer=model, **options)
        except RuntimeError as e:
            if refused:
                raise refused[0] from None
            where = ", ".join(map(str, files)) if files is not None else "the text iterator"
            if "sentences_.empty()" in str(e):
                raise InvalidInputError(f"{where}: no text to train the tokenizer on (empty files, or only blank "
                                        f"lines)") from None
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
        write_bytes_atomic(directory / "spiece.model", self.sp_model_proto)
        return [directory / "spiece.model"]


SPM_MAX_BYTES = 4000  # under SentencePiece's max_sentence_length (4192 bytes): it skips longer sentences, unsaid


def _short_pieces(text: str, limit: int = SPM_MAX_BYTES) -> Iterator[str]:
    """``text`` in pieces of at most ``limit`` UTF-8 bytes, cut after spaces where it has any (a run
    without spaces, as Chinese text, in cuts of limit // 4 characters)."""
    if len(text.encode("utf-8")) <= limit:
        yield text
        return
    piece: list[str] = []
    size = 0
    for word in re.split(r"(?<=\s)", text):
        n = len(word.encode("utf-8"))
        if size + n > limit and piece:
            yield "".join(piece)
            piece, size = [], 0
        if n > limit:
            for i in range(0, len(word), limit // 4):
                yield word[i:i + limit // 4]
            continue
        piece.append(word)
        size += n
    if piece:
        yield "".join(piece)


def _has_long_line(files: Sequence[Path]) -> bool:
    """Whether a line is longer than SentencePiece reads; every file is checked to be UTF-8 on the
    way (SentencePiece trained on a GBK file's bytes as '\ufffd' pieces without a word)."""
    long = False
    for f in files:
        with open(f, "rb") as fh:
            for n, line in enumerate(fh, 1):
                long = long or len(line) > SPM_MAX_BYTES
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise InvalidInputError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start} of line {n})") from None
    return long


def _file_lines(files: Sequence[Path]) -> Iterator[str]:
    for f in files:
        try:
            with open(f, encoding="utf-8") as fh:
                yield from (line.rstrip("\r\n") for line in fh)
        except UnicodeDecodeError as e:
            raise InvalidInputError(f"{f}: not UTF-8 text ({e.reason} at byte {e.start} of a line)") from None


def _read_spiece(proto_bytes: bytes, source) -> tuple[list[tuple[str, float]], bytes | None, list[str], int | None]:
    """(piece, score) list, normalization charsmap, control pieces (<s>, </s>, ...) and the id of
    the unknown piece of a SentencePiece model, read with sentencepiece's own protobuf schema."""
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
    unk_id = next((i for i, p in enumerate(proto.pieces) if p.type == p.UNKNOWN), None)
    return vocab, proto.normalizer_spec.precompiled_charsmap or None, controls, unk_id


def _spiece_byte_fallback(proto_bytes: bytes) -> bool:
    """Whether a SentencePiece model was trained with byte_fallback (trainer_spec.byte_fallback)."""
    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString(proto_bytes)
    except Exception:  # protobuf's DecodeError: _read_spiece reports it
        return False
    return bool(proto.trainer_spec.byte_fallback)


def _precompiled_charsmap(normalizer: dict | None) -> bytes | None:
    """The SentencePiece charsmap inside a tokenizer.json normalizer (alone or in a Sequence)."""
    if not normalizer:
        return None
    for item in normalizer.get("normalizers", [normalizer]):
        if item.get("type") == "Precompiled" and item.get("precompiled_charsmap"):
            return base64.b64decode(item["precompiled_charsmap"])
    return None


def _special_token_kwargs(config: dict) -> dict[str, Any]:
    """The named special tokens (every one transformers knows, not only the class's own) and the
    extra ones of a tokenizer_config.json, as constructor keywords."""
    kwargs: dict[str, Any] = {name: _token_content(config[name]) for name in SPECIAL_TOKEN_NAMES
                              if config.get(name) is not None}
    kwargs["extra_special_tokens"] = _listed_special_tokens(config)
    return kwargs


def _check_sizes(**values: tuple[int | None, int]) -> None:
    """Each ``name=(value, least)``: an integer >= least (None passes: "no limit")."""
    for name, (value, least) in values.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise InvalidInputError(f"{name} must be an integer >= {least}, got {value!r}")


def _bert_normalizer(lowercase: bool, strip_accents: bool | None, chinese: bool) -> normalizers.Normalizer:
    """ELECTRA's (BERT's) normaliser: the tokenizer's backend, and the word counts of its training."""
    return normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=chinese, strip_accents=strip_accents,
                                      lowercase=lowercase)


def _read_lines(files: list[Path]) -> Iterable[str]:
    """The lines of text files (UTF-8), one text each, as tokenizers' trainers read files."""
    for path in files:
        try:
            with open(path, encoding="utf-8") as fh:
                yield from fh
        except UnicodeDecodeError as e:
            raise InvalidInputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def _files_or_texts(source) -> tuple[list[Path] | None, Iterable[str] | None]:
    """A path or list of paths -> files (checked to exist); any other iterable -> texts."""
    if isinstance(source, (str, os.PathLike)):
        source = [source]
    if isinstance(source, (list, tuple)):
        if not source:
            raise InvalidInputError("no training files given")
        is_file = [_is_file(f) for f in source]
        if all(is_file):
            files = [Path(f) for f in source]
            structured = [str(f) for f in files if f.suffix in (".jsonl", ".json", ".csv", ".tsv", ".parquet")]
            if structured:  # trained as plain text, their JSON / columns would become the vocabulary
                raise InvalidInputError(
                    f"{', '.join(structured[:3])}: not plain text (one text per line); pass the texts, e.g. "
                    f"iter(t5electra.data.sources.read_documents(path)), or use `t5electra tokenizer train`, "
                    f"which reads these formats")
            return files, None
        dirs = [str(f) for f, ok in zip(source, is_file) if not ok and _is_dir(f)]
        if dirs:
            raise InvalidInputError(f"{', '.join(dirs[:3])}: a directory; give the text files in it "
                                    f"(one text per line), e.g. {dirs[0]}/*.txt")
        missing = [repr(str(f) if len(str(f)) <= 200 else str(f)[:80] + "...") for f, ok in zip(source, is_file)
                   if not ok]
        raise InvalidInputError(f"training file(s) not found: {', '.join(missing[:3])}"
                                f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''} "
                                f"(a list is read as file paths; to train on strings, pass iter(texts))")
    if isinstance(source, (bytes, dict)) or not isinstance(source, Iterable):
        raise InvalidInputError(f"train takes text files or an iterable of texts (str), got {type(source).__name__}")
    return None, _texts_only(source)


def _texts_only(texts: Iterable) -> Iterator[str]:
    for n, text in enumerate(texts):
        if not isinstance(text, str):
            raise InvalidInputError(f"training text {n} is a {type(text).__name__}, not a str: pass an iterable of "
                                    f"texts (e.g. a generator over a dataset's 'text' column)")
        yield text


def _is_dir(f) -> bool:
    try:
        return Path(f).is_dir()
    except (OSError, ValueError, TypeError):
        return False


def _is_file(f) -> bool:
    try:
        return Path(f).is_file()
    except (OSError, ValueError, TypeError):  # a long text is not a path (ENAMETOOLONG), nor one with NUL bytes
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
    _tokens_before_text = 1  # [CLS]

    def __init__(self, vocab: dict[str, int], *, do_lower_case: bool = True, strip_accents: bool | None = None,
                 tokenize_chinese_chars: bool = True, unk_token: str = "[UNK]", sep_token: str = "[SEP]",
                 pad_token: str = "[PAD]", cls_token: str = "[CLS]", mask_token: str = "[MASK]",
                 bos_token: str | None = None, eos_token: str | None = None,
                 extra_special_tokens: Iterable[str] = (), added_tokens: Iterable[dict] = (),
                 model_unk_token: str | None = None, **kwargs):
        """vocab: token -> id, or the path of a vocab.txt (one token per line, as transformers'
        ``BertTokenizer(vocab_file)``). strip_accents None follows do_lower_case (as in original BERT).
        added_tokens: tokens added past the vocabulary, as tokenizer.json's "added_tokens" entries
        ({"id", "content", "special", ...}): restored on their ids, so [CLS] / [SEP] / [UNK] may be
        among them (transformers' ``add_special_tokens({"cls_token": "<cls>"})``).
        model_unk_token: the WordPiece model's unknown token (tokenizer.json's model "unk_token")
        when ``unk_token`` is an added token; the WordPiece model needs one of its vocabulary."""
        self.do_lower_case, self.strip_accents = do_lower_case, strip_accents
        self.tokenize_chinese_chars = tokenize_chinese_chars
        if isinstance(vocab, (str, os.PathLike)):
            if not Path(vocab).is_file():
                raise ConfigError(f"ElectraTokenizer({str(vocab)!r}): not a vocab.txt file (a directory: "
                                  f"ElectraTokenizer.from_pretrained)")
            kwargs.setdefault("name_or_path", str(vocab))
            vocab = _read_vocab_txt(Path(vocab))
        elif not isinstance(vocab, dict):
            raise ConfigError(f"ElectraTokenizer(vocab): a token -> id dict or a vocab.txt path, got "
                              f"{type(vocab).__name__}")
        source = kwargs.get("name_or_path") or "the vocabulary"

        # The backend, as transformers v5 builds it (models/bert/tokenization_bert.py).
        model_unk = unk_token if unk_token in vocab or model_unk_token not in vocab else model_unk_token
        backend = Tokenizer(WordPiece(vocab, unk_token=model_unk))
        backend.normalizer = _bert_normalizer(do_lower_case, strip_accents, tokenize_chinese_chars)
        backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        backend.decoder = decoders.WordPiece(prefix="##")
        super().__init__(backend, special_tokens={"bos_token": bos_token, "eos_token": eos_token,
                                                  "unk_token": unk_token, "sep_token": sep_token,
                                                  "pad_token": pad_token, "cls_token": cls_token,
                                                  "mask_token": mask_token},
                         extra_special_tokens=extra_special_tokens, **kwargs)
        # named tokens the vocabulary lacks stay out ([MASK], [PAD]: docs/tokenizers.md); extra ones are added
        self._add_special_tokens_to_backend(added_tokens, add_missing_named=False)
        for name, token in (("unk_token", unk_token), ("cls_token", cls_token), ("sep_token", sep_token)):
            if backend.token_to_id(token) is None:
                raise MissingTokenError(f"ElectraTokenizer: the {name} {token!r} is not in {source} "
                                        f"({len(vocab)} tokens), nor among its added tokens")
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
        config, added = _v4_token_files(root, config, overrides, tok_json.is_file())
        model_unk = None
        if tok_json.is_file():
            data = _read_json(tok_json)
            model = _model_section(data, tok_json, "WordPiece", cls.__name__)
            vocab = dict(model["vocab"])
            added = data.get("added_tokens", [])
            model_unk = model.get("unk_token")
            norm = data.get("normalizer") or {}
            if norm.get("type") == "BertNormalizer":  # defaults when tokenizer_config.json is silent
                config = {"do_lower_case": norm.get("lowercase", True), "strip_accents": norm.get("strip_accents"),
                          "tokenize_chinese_chars": norm.get("handle_chinese_chars", True), **config}
        else:
            vocab = _read_vocab_txt(vocab_txt)  # what transformers v5 reads vocab.txt with
        config.update(overrides)
        _check_config(config, root, overrides, cls.__name__)
        kwargs: dict[str, Any] = cls._base_kwargs(config, str(path))
        for name in ("do_lower_case", "strip_accents", "tokenize_chinese_chars"):
            if name in config and (name == "strip_accents" or config[name] is not None):  # strip_accents null: follow
                kwargs[name] = config[name]
        return cls(vocab, added_tokens=added, model_unk_token=model_unk, **kwargs, **_special_token_kwargs(config))

    @classmethod
    def train(cls, files_or_iterator, vocab_size: int = 30522, *, output_dir: str | os.PathLike | None = None,
              lowercase: bool = True, strip_accents: bool | None = None, tokenize_chinese_chars: bool = True,
              min_frequency: int = 2, limit_alphabet: int | None = None,
              model_max_length: int | None = 512) -> ElectraTokenizer:
        """Train a new WordPiece vocabulary: tokenizers' BERT normaliser and pre-tokenizer split the
        text into words, and t5electra.wordpiece learns the pieces (tokenizers' WordPiece trainer,
        with its ties and ids made the same on every run: the same text gives the same vocabulary).

        files_or_iterator: a text file, a list of text files, or any other iterable of strings.
        Special tokens get the first ids: [PAD]=0, [UNK]=1, [CLS]=2, [SEP]=3, [MASK]=4.
        limit_alphabet: keep only this many of the most frequent characters (the rest become
        [UNK]); None (default) keeps every character seen. tokenizers' own default, 1000, turned
        most Chinese characters of a Chinese corpus into [UNK] (968 of 3,301 kept).
        If output_dir is given the tokenizer is also saved there (HF layout).
        """
        _check_sizes(vocab_size=(vocab_size, len(ELECTRA_SPECIAL_TOKENS) + 1), min_frequency=(min_frequency, 0),
                     limit_alphabet=(limit_alphabet, 1))
        # the words as the tokenizer itself will see them: its normaliser, then BERT's pre-tokenizer
        normalizer, splitter = _bert_normalizer(lowercase, strip_accents, tokenize_chinese_chars), \
            pre_tokenizers.BertPreTokenizer()

        def words(text: str) -> list[str]:
            return [w for w, _ in splitter.pre_tokenize_str(normalizer.normalize_str(text))]

        files, texts = _files_or_texts(files_or_iterator)
        counts = count_words(_read_lines(files) if files is not None else texts, words)
        vocab = train_wordpiece(counts, vocab_size, special_tokens=list(ELECTRA_SPECIAL_TOKENS.values()),
                                min_frequency=min_frequency, limit_alphabet=limit_alphabet)
        if len(vocab) <= len(ELECTRA_SPECIAL_TOKENS):
            raise InvalidInputError(f"WordPiece training on {', '.join(map(str, files)) if files else 'the texts'} "
                                    f"found no text (empty or blank input): the vocabulary would hold only the "
                                    f"special tokens")
        tokenizer = cls({piece: i for i, piece in enumerate(vocab)}, do_lower_case=lowercase, strip_accents=strip_accents,
                        tokenize_chinese_chars=tokenize_chinese_chars, model_max_length=model_max_length)
        if output_dir is not None:
            tokenizer.save_pretrained(output_dir)
            tokenizer.name_or_path = str(output_dir)
        return tokenizer

    def _config_fields(self) -> dict[str, Any]:
        return {"do_lower_case": self.do_lower_case, "strip_accents": self.strip_accents,
                "tokenize_chinese_chars": self.tokenize_chinese_chars}

    def _save_vocabulary(self, directory: Path) -> list[Path]:
        """vocab.txt: one token per line, line number = id.

        A vocabulary whose ids have gaps (read from a vocab.txt with a repeated line: the later line
        wins, in transformers as here) is written with each missing id's line repeating the token
        of the next id, so that vocab.txt read again gives every token the same id (transformers
        v4 wrote the tokens one after the other, shifting the ids after a gap)."""
        by_id = {i: token for token, i in self._backend.get_vocab(with_added_tokens=False).items()}
        lines, following = [""] * (max(by_id, default=-1) + 1), ""
        for i in range(len(lines) - 1, -1, -1):
            following = lines[i] = by_id.get(i, following)
        path = directory / "vocab.txt"
        if len(lines) != len(by_id):
            logger.warning("%s: the vocabulary's ids are not 0..%d without gaps (%d missing, as after a repeated "
                           "line in the vocab.txt read); each missing id's line repeats the next token so that "
                           "the ids stay the same", path, len(lines) - 1, len(lines) - len(by_id))
        write_text_atomic(path, "".join(token + "\n" for token in lines))
        return [path]
