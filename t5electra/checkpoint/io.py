"""Read and write Hugging Face checkpoint directories.

Reads, in this order of preference: ``model.safetensors``, sharded safetensors with
``model.safetensors.index.json``, ``pytorch_model.bin`` (and its sharded index) through
``torch.load(weights_only=True)`` — a pickle that needs code execution is refused.
Writes ``model.safetensors`` atomically (temporary file + rename); tied tensors are written once;
:func:`save_weights` splits them into shards + ``model.safetensors.index.json`` as transformers
does (``max_shard_size``) and removes what an earlier save left that would be read instead.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..core.atomic import replace_atomic, temp_path, write_text_atomic
from ..errors import CheckpointError, CheckpointNotFoundError, ConfigError, UnsafeCheckpointError

SAFE = "model.safetensors"
SAFE_INDEX = "model.safetensors.index.json"
BIN = "pytorch_model.bin"
BIN_INDEX = "pytorch_model.bin.index.json"

StateDict = dict[str, torch.Tensor]


def write_error(e: BaseException, where: str | os.PathLike) -> str:
    """A write failure in words; a full disk says so, with the free space left at ``where``."""
    text = getattr(e, "strerror", None) or str(e)
    if getattr(e, "errno", None) == errno.ENOSPC or "No space left" in str(e):
        try:
            free = f"{shutil.disk_usage(where).free / 1e6:,.0f} MB free"
        except OSError:
            free = "free space unknown"
        return f"disk full: no space left on device ({free} at {where}); free some space, then resume"
    return text


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """The directory as a Path; a clear error if it does not exist or is a file."""
    p = Path(path).expanduser()
    if not p.exists():
        raise CheckpointNotFoundError(
            f"checkpoint directory {str(p)!r} does not exist (no download hub here: pass a local directory "
            f"written by save_pretrained or by transformers)")
    if not p.is_dir():
        raise CheckpointNotFoundError(f"{str(p)!r} is a file, expected a checkpoint directory")
    return p


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointNotFoundError(f"missing {path.name} in {path.parent}") from None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None


def _load_safetensors(path: Path) -> StateDict:
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read safetensors file ({e})") from None


def load_safetensors(path: str | os.PathLike) -> StateDict:
    """One safetensors file on the CPU; CheckpointError naming it when it cannot be read."""
    return _load_safetensors(Path(path))


_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _unsafe_global(message: str) -> str:
    """What torch's weights-only unpickler refused, in a few words (its message is a paragraph)."""
    m = _GLOBAL.search(message)
    if m:
        return f"it calls {m.group(1)}"
    lines = [x.strip() for x in message.splitlines() if x.strip()]
    hint = next((x for x in lines if "WeightsUnpickler error" in x), None)
    return hint.replace("WeightsUnpickler error: ", "").split(" Please use")[0].rstrip(".") if hint else \
        "an object that is not a tensor"


def _not_torch_file(path: Path) -> str:
    """What a file torch.load cannot parse probably is, in a few words."""
    with open(path, "rb") as fh:
        head = fh.read(64)
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the weights: fetch them with `git lfs pull`"
    return "damaged, or a file of another format"


def _not_a_state_dict(sd: object) -> str:
    """What a .bin holds instead of a dict of tensors; where the tensors are when they are nested
    one level down (a training framework's {"state_dict": {...}})."""
    if not isinstance(sd, dict):
        return f"found a {type(sd).__name__}"
    nested = [k for k, v in sd.items() if isinstance(v, dict) and v and all(isinstance(t, torch.Tensor) for t in v.values())]
    if nested:
        k = nested[0]
        return (f"found a dict whose {k!r} entry holds the {len(sd[k])} tensors (a training checkpoint's nested "
                f"state dict); save that dict alone, e.g. torch.save(torch.load(path, weights_only=True)[{k!r}], "
                f"'pytorch_model.bin')")
    other = [f"{k!r} ({type(v).__name__})" for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    return f"found a dict with entries that are not tensors: {', '.join(other[:3])}{' ...' if len(other) > 3 else ''}"


def _load_bin(path: Path) -> StateDict:
    try:
        sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported operand" in str(e):  # a byte no pickle torch.save writes starts with: no code, no checkpoint
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (torch.save's format): {_not_torch_file(path)}"
                                  ) from None
        raise UnsafeCheckpointError(
            f"refused to load {path}: it is a pickle that would run code ({_unsafe_global(str(e))}), and only "
            f"plain tensors are loaded (torch.load weights_only=True); convert it to safetensors with a tool "
            f"you trust.") from None
    except (RuntimeError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: cannot read PyTorch checkpoint ({e})") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: expected a dict of tensors (a state dict), {_not_a_state_dict(sd)}")
    return sd


def _shard_name(name: str, index: Path) -> str:
    """``name`` if it is a file name inside the index's directory; UnsafeCheckpointError for an absolute
    path or one that climbs out (``../x.safetensors``), so an index cannot make us read any file."""
    parts = name.replace("\\", "/").split("/")
    if not name or name.startswith(("/", "\\", "~")) or ".." in parts or (len(name) > 1 and name[1] == ":"):
        raise UnsafeCheckpointError(f"{index} names shard {name!r}, which is outside {index.parent}: an index "
                                    f"may only name files in its own directory (e.g. 'model-00001-of-00002.safetensors')")
    return name


def check_finite(sd: StateDict, sources: dict[str, str]) -> None:
    """CheckpointError naming the tensors (and files) that hold NaN or infinity: such weights give
    NaN outputs (T5 then generates ""), so they are refused at load, not discovered later."""
    bad = []
    for key, t in sd.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad.append(f"{key!r} in {Path(sources.get(key, '?')).name} ({int((~torch.isfinite(t)).sum())} of "
                       f"{t.numel()} values NaN or infinite)")
    if bad:
        where = Path(next(iter(sources.values()))).parent if sources else "the checkpoint"
        raise CheckpointError(f"{where}: refusing weights that are not finite: {'; '.join(bad[:3])}"
                              f"{f' and {len(bad) - 3} more tensors' if len(bad) > 3 else ''}; the run that "
                              f"wrote them diverged or the file is damaged: load an earlier checkpoint")


def load_state_dict(directory: str | os.PathLike, safetensors: bool = True) -> tuple[StateDict, dict[str, str]]:
    """All tensors of a checkpoint directory, and for each key the file it came from; weights that
    are NaN or infinite are refused (:func:`check_finite`). ``safetensors=False``: the .bin files
    only (transformers' ``use_safetensors=False``)."""
    sd, sources = _load_state_dict(directory, safetensors)
    check_finite(sd, sources)
    return sd, sources


def _load_state_dict(directory: str | os.PathLike, safetensors: bool = True) -> tuple[StateDict, dict[str, str]]:
    d = checkpoint_dir(directory)
    formats = ((SAFE, SAFE_INDEX, _load_safetensors), (BIN, BIN_INDEX, _load_bin))
    for single, index, loader in formats if safetensors else formats[1:]:
        if (d / single).is_file():
            sd = loader(d / single)
            return sd, {k: str(d / single) for k in sd}
        if (d / index).is_file():
            weight_map = read_json(d / index).get("weight_map")
            if not isinstance(weight_map, dict):
                raise CheckpointError(f"{d / index}: no 'weight_map' object")
            sd, src = {}, {}
            for fname in sorted(set(map(str, weight_map.values()))):
                shard = d / _shard_name(fname, d / index)
                if not shard.is_file():
                    raise CheckpointNotFoundError(f"{d / index} names shard {fname!r}, which is missing")
                part = loader(shard)
                sd.update(part)
                src.update({k: str(shard) for k in part})
            missing = sorted(set(weight_map) - set(sd))
            if missing:
                raise CheckpointError(f"{d / index}: keys listed but absent from their shards: {missing[:5]}")
            return sd, src
    expected = f"{SAFE}, {SAFE_INDEX}, {BIN} or {BIN_INDEX}" if safetensors else f"{BIN} or {BIN_INDEX} (use_safetensors=False)"
    # an FSDP training checkpoint (train/sharded.py) keeps its weights as DCP shards in sharded/
    sharded = next((c for c in (d, d.parent) if (c / "sharded" / ".metadata").is_file()), None)
    hint = (f"; {sharded} is a sharded checkpoint of an FSDP run: `t5electra convert {sharded} OUT_DIR` writes it as "
            f"a model directory (or use the run's model/)") if sharded is not None else ""
    raise CheckpointNotFoundError(
        f"no weights in {d}: expected {expected} (found: {', '.join(sorted(p.name for p in d.iterdir())) or 'nothing'})"
        + hint)


def save_state_dict(sd: StateDict, directory: str | os.PathLike, filename: str = SAFE) -> Path:
    """Write tensors as safetensors, atomically. Tensors sharing storage are copied apart."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    seen: set[int] = set()
    out = {}
    for k, v in sd.items():
        v = v.detach().cpu()
        storage = v.untyped_storage()
        whole = v.is_contiguous() and v.numel() * v.element_size() == storage.nbytes()
        out[k] = v if whole and storage.data_ptr() not in seen else v.clone(memory_format=torch.contiguous_format)
        seen.add(storage.data_ptr())
    path = d / filename
    tmp = temp_path(path)
    try:
        save_file(out, str(tmp), metadata={"format": "pt"})
        replace_atomic(tmp, path)
    except (OSError, SafetensorError) as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path} ({write_error(e, d)})") from None
    return path


# transformers' shard names (huggingface_hub's split_torch_state_dict_into_shards): model-00001-of-00003.safetensors
SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_SIZE_UNITS = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,  # huggingface_hub's units: decimal
               "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}


def shard_size_bytes(value: int | str) -> int:
    """``max_shard_size`` in bytes: a positive int, or a number and a unit as transformers takes them
    ("200KB", "5GB": powers of 10; "500MiB": powers of 2)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([KMGT]I?B)\s*", value.upper()) if isinstance(value, str) else None
    if m and float(m.group(1)) * _SIZE_UNITS[m.group(2)] >= 1:
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ConfigError(f"max_shard_size={value!r}: expected a positive number of bytes or a size such as '200KB', "
                      f"'5GB' (KB, MB, GB, TB; KiB, MiB, GiB, TiB)")


def _split(sd: StateDict, max_bytes: int) -> list[list[str]]:
    """Keys in shards of at most ``max_bytes`` each, in order, as huggingface_hub splits them: a tensor
    larger than the limit gets a shard of its own."""
    shards: list[list[str]] = []
    current: list[str] = []
    size = 0
    for key, t in sd.items():
        n = t.numel() * t.element_size()
        if n > max_bytes:
            shards.append([key])
            continue
        if current and size + n > max_bytes:
            shards.append(current)
            current, size = [], 0
        current.append(key)
        size += n
    return shards + [current] if current or not shards else shards


def save_weights(sd: StateDict, directory: str | os.PathLike, max_shard_size: int | str | None = None,
                 total_parameters: int | None = None) -> Path:
    """A model's weights as transformers' save_pretrained writes them: ``model.safetensors``, or, when
    they exceed ``max_shard_size``, ``model-0000i-of-0000n.safetensors`` + ``model.safetensors.index.json``
    (``{"metadata": {"total_size", "total_parameters"}, "weight_map": {key: file}}``). What an earlier
    save left in the directory and a reader would take instead (a ``model.safetensors`` next to new
    shards, an index and shards next to a new single file, shards of another count) is removed after
    the new files are complete. Returns the file written (single) or the index."""
    d = Path(directory)
    shards = [list(sd)] if max_shard_size is None else _split(sd, shard_size_bytes(max_shard_size))
    if len(shards) == 1:
        path = save_state_dict(sd, d, SAFE)
        stale = [d / SAFE_INDEX] + [p for p in d.iterdir() if SHARD_NAME.fullmatch(p.name)]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
        for name, keys in zip(names, shards):
            save_state_dict({k: sd[k] for k in keys}, d, name)
        metadata = {"total_size": sum(t.numel() * t.element_size() for t in sd.values())}
        if total_parameters is not None:
            metadata["total_parameters"] = total_parameters
        index = {"metadata": metadata, "weight_map": {k: name for name, keys in zip(names, shards) for k in keys}}
        try:
            path = write_text_atomic(d / SAFE_INDEX, json.dumps(index, indent=2, sort_keys=True) + "\n")
        except OSError as e:
            raise CheckpointError(f"cannot write {d / SAFE_INDEX} ({write_error(e, d)})") from None
        stale = [d / SAFE] + [p for p in d.iterdir() if SHARD_NAME.fullmatch(p.name) and p.name not in names]
    for p in stale:
        p.unlink(missing_ok=True)
    return path
