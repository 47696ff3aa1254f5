"""Reading the files of a tokenizer directory (tokenizer_config.json, special_tokens_map.json,
added_tokens.json, ...) as transformers reads them, for ``tokenizers.py``'s ``from_pretrained``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tokenizers.models import WordPiece

from .errors import CheckpointNotFoundError, ConfigError

# Named special tokens, in the order transformers registers them (SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: Path) -> dict:
    """A JSON object ({...}) from a file; anything else is a ConfigError naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a JSON object ({{...}}), found a JSON {type(data).__name__}")
    return data


def _read_vocab_txt(path: Path) -> dict[str, int]:
    """vocab.txt, read as transformers v5 reads it (tokenizers' WordPiece.read_file: the later of
    two equal lines wins)."""
    try:
        path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}); vocab.txt holds one token per "
                          f"line, in UTF-8") from None
    try:
        return WordPiece.read_file(str(path))
    except Exception as e:  # the Rust reader raises plain Exceptions
        raise ConfigError(f"{path}: cannot be read as a vocabulary ({e})") from e


def _token_content(token) -> str:
    """transformers writes special tokens either as strings or as AddedToken dicts."""
    return str(token.get("content")) if isinstance(token, dict) else str(token)


def _is_token(value) -> bool:
    return isinstance(value, str) or (isinstance(value, dict) and isinstance(value.get("content"), str))


def _is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _model_section(data: dict, path: Path, model_type: str, cls_name: str) -> dict:
    """tokenizer.json's "model", checked: its type, and a "vocab" of that type's shape."""
    model = data.get("model")
    found = model.get("type") if isinstance(model, dict) else model
    if found != model_type:
        raise ConfigError(f"{path}: model type {found!r}, {cls_name} needs {model_type!r}")
    vocab = model.get("vocab")
    if model_type == "Unigram":
        shape = "[[piece, score], ...]"
        ok = isinstance(vocab, list) and all(isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)
                                             and isinstance(v[1], (int, float)) for v in vocab)
    else:
        shape = '{"token": id, ...}'
        ok = isinstance(vocab, dict) and all(_is_id(i) for i in vocab.values())
    if not ok or not vocab:
        raise ConfigError(f"{path}: model.vocab is {'missing' if vocab is None else 'not ' + shape}; a {model_type} "
                          f"tokenizer.json needs it (save the tokenizer again, or take tokenizer.json from the model)")
    added = data.get("added_tokens", [])
    if not isinstance(added, list) or not all(isinstance(t, dict) and _is_id(t.get("id")) and
                                              isinstance(t.get("content"), str) for t in added):
        raise ConfigError(f"{path}: \"added_tokens\" must be a list of {{\"id\": int, \"content\": str, ...}}")
    return model


# tokenizer_config.json keys the tokenizers read, and what each must be
_BOOL_KEYS = ("do_lower_case", "tokenize_chinese_chars", "clean_up_tokenization_spaces", "split_special_tokens")


def _check_config(config: dict, root: Path, overrides: dict, cls_name: str) -> None:
    """The types of the tokenizer_config.json values we use (a "false" string would be true):
    a ConfigError naming the file, or the from_pretrained keyword, and the key."""
    def bad(key: str, expected: str):
        tokens = key in SPECIAL_TOKEN_NAMES or key.endswith("special_tokens")
        where = (f"{cls_name}.from_pretrained({key}=...)" if key in overrides else
                 f"{root / 'tokenizer_config.json'}{' (or special_tokens_map.json)' if tokens else ''}: {key}")
        raise ConfigError(f"{where} must be {expected}, got {config[key]!r}")

    for key in _BOOL_KEYS:
        if config.get(key) is not None and not isinstance(config[key], bool):
            bad(key, "true or false")
    if config.get("strip_accents") is not None and not isinstance(config["strip_accents"], bool):
        bad("strip_accents", "true, false or null")
    if "extra_ids" in config and not _is_id(config["extra_ids"]):
        bad("extra_ids", "an integer >= 0")
    length = config.get("model_max_length")
    if length is not None and (isinstance(length, bool) or not isinstance(length, (int, float)) or not length >= 1):
        bad("model_max_length", "a positive number")
    for key in ("padding_side", "truncation_side"):
        if config.get(key) is not None and config[key] not in ("left", "right"):
            bad(key, "'left' or 'right'")
    for key in SPECIAL_TOKEN_NAMES:
        if config.get(key) is not None and not _is_token(config[key]):
            bad(key, 'a token (a string, or {"content": "..."})')
    for key in ("extra_special_tokens", "additional_special_tokens"):
        tokens = config.get(key)
        tokens = list(tokens.values()) if isinstance(tokens, dict) else tokens  # v5 also names them
        if tokens is not None and not (isinstance(tokens, list) and all(map(_is_token, tokens))):
            bad(key, "a list of tokens")


def _listed_special_tokens(config: dict) -> list[str]:
    """tokenizer_config.json's extra special tokens (v5 "extra_special_tokens", a list or a dict of
    named ones; v4 "additional_special_tokens")."""
    listed = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    return [_token_content(t) for t in (listed.values() if isinstance(listed, dict) else listed)]


def _v4_token_files(root: Path, config: dict, overrides: dict, has_tokenizer_json: bool) -> tuple[dict, list[dict]]:
    """The tokens a transformers-v4 directory keeps outside tokenizer.json, read as transformers v5
    reads them (tokenization_utils_base._from_pretrained): ``config`` (tokenizer_config.json) with
    special_tokens_map.json merged in, and the added tokens as tokenizer.json's "added_tokens" entries
    (``{"id", "content", "special", ...}``), for ``_restore_added_tokens``.

    tokenizer_config.json's ``added_tokens_decoder`` is the record when present; otherwise
    special_tokens_map.json's named tokens win over tokenizer_config.json's (not over ``overrides``),
    its ``additional_special_tokens`` count where the config lists none, and added_tokens.json gives
    the ids (special when they are among the special tokens). tokenizer.json, when there, carries its
    own added tokens: then only the special tokens are read here."""
    config = dict(config)
    decoder = config.pop("added_tokens_decoder", None)
    added: list[dict] = []
    if decoder is not None:
        if not isinstance(decoder, dict) or not all(str(i).isdigit() and _is_token(t) for i, t in decoder.items()):
            raise ConfigError(f"{root / 'tokenizer_config.json'}: added_tokens_decoder must map ids to tokens "
                              f'({{"30522": {{"content": "<ent>", ...}}}})')
        for index, token in decoder.items():
            entry = {k: v for k, v in token.items() if k != "__type"} if isinstance(token, dict) else {
                "content": str(token)}
            added.append({**entry, "id": int(index)})
        return config, ([] if has_tokenizer_json else added)
    if (root / "special_tokens_map.json").is_file():
        for key, value in _read_json(root / "special_tokens_map.json").items():
            if key in overrides:
                continue
            if key in ("additional_special_tokens", "extra_special_tokens") and isinstance(value, list):
                listed = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
                if key == "extra_special_tokens" or not listed:  # v5 ignores additional_* beside a list
                    config["extra_special_tokens"] = list(dict.fromkeys(map(_token_content, [*listed, *value])))
            elif key in SPECIAL_TOKEN_NAMES and value is not None:
                config[key] = value
    if (root / "added_tokens.json").is_file() and not has_tokenizer_json:
        special = {_token_content(config[k]) for k in SPECIAL_TOKEN_NAMES if config.get(k)}
        special |= set(_listed_special_tokens(config))
        tokens = _read_json(root / "added_tokens.json")
        if not all(_is_id(i) for i in tokens.values()):
            raise ConfigError(f"{root / 'added_tokens.json'}: must map tokens to ids ({{\"<ent>\": 30522}})")
        for content, index in tokens.items():
            added.append({"id": int(index), "content": content, "special": content in special,
                          "normalized": content not in special})
    return config, added


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
