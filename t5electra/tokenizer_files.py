"""Reading the files of a tokenizer directory (tokenizer_config.json, special_tokens_map.json,
added_tokens.json, ...) as transformers reads them, for ``tokenizers.py``'s ``from_pretrained``."""

from __future__ import annotations

import json
import os
from pathlib import Path

from .errors import CheckpointNotFoundError, ConfigError

# Named special tokens, in the order transformers registers them (SPECIAL_TOKENS_ATTRIBUTES).
SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from e


def _token_content(token) -> str:
    """transformers writes special tokens either as strings or as AddedToken dicts."""
    return token["content"] if isinstance(token, dict) else str(token)


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
        special |= {_token_content(t) for t in config.get("extra_special_tokens") or
                    config.get("additional_special_tokens") or []}
        for content, index in _read_json(root / "added_tokens.json").items():
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
