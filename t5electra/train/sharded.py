"""FSDP2 models: sharding per block, sharded checkpoints (torch.distributed.checkpoint), full weights.

:func:`shard_model` applies ``torch.distributed.fsdp.fully_shard`` to every T5 block / ELECTRA
layer, then to the model itself (the root unit: embeddings, relative position biases, final norms,
heads; the tied embedding and lm_head, and ELECTRA's shared generator/discriminator embedding,
stay in that one unit). Each rank then holds 1/N of every parameter, gradient and optimizer moment
(DTensor shards); a unit's full parameters exist only while it runs (all-gathered before its
forward and backward, freed after). ``bf16``: parameters are gathered and computed in bf16, the
fp32 shards are the master weights, gradients are reduced in fp32.

A sharded checkpoint keeps the model and optimizer as ``torch.distributed.checkpoint`` (DCP) files
in ``CKPT/sharded/``: every rank writes its own shard, and DCP reshards on load, so a checkpoint
written by N processes loads into M processes, FSDP or not (a single process loads it without a
process group). Next to it, written by rank 0: the model's config files (``config.json``, or
``generator/`` + ``discriminator/`` + ``pretraining_config.json``), so that ``t5electra convert``
can rebuild the model and write one Hugging Face directory (:func:`materialize`).

The reverse direction (a one-process checkpoint, HF weights + a ``torch.optim`` state dict, resumed
by an FSDP run) goes through :func:`load_full`: the weights are read into a meta-device copy of the
model made before sharding (:func:`skeleton`), then scattered as a full state dict.
"""

from __future__ import annotations

import copy
import importlib
import json
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict, set_state_dict)
from torch.distributed.tensor import DTensor

from ..core.atomic import write_text_atomic
from ..errors import CheckpointError, ConfigError, UnsafeCheckpointError

SHARDED_DIR = "sharded"  # the DCP files inside a checkpoint directory
_SKELETON = "_t5electra_skeleton"  # attribute of a sharded model: its meta-device plain copy


def shardable_blocks(model: nn.Module) -> list[nn.Module]:
    """The units FSDP shards one by one: every block with activation checkpointing support
    (``T5Block``, ``ElectraLayer``: they declare ``checkpoint_activations``)."""
    return [m for m in model.modules() if hasattr(type(m), "checkpoint_activations")]


def is_sharded(model: nn.Module) -> bool:
    """True when the model's parameters are FSDP shards (DTensors), also between a forward without
    backward (evaluation) and the next step, when the root unit's are gathered plain tensors."""
    from torch.distributed.fsdp import FSDPModule

    return any(isinstance(p, DTensor) for p in model.parameters()) or any(isinstance(m, FSDPModule) for m in model.modules())


def skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers live on the meta device (no memory): the
    same classes, names and ties. ``to_empty`` + loading weights makes it a plain model again."""
    memo: dict[int, Any] = {}
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) not in memo:
            meta = torch.empty_like(t, device="meta")
            memo[id(t)] = nn.Parameter(meta, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def shard_model(model: nn.Module, world_size: int, device: torch.device, precision: str = "fp32") -> nn.Module:
    """``fully_shard`` each block, then the root (see the module docstring); in place, returns ``model``.
    Build the optimizer afterwards: sharding replaces the parameters."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if hasattr(model, "load_adapter"):
        raise ConfigError("train.distributed=fsdp does not shard LoRA models (their frozen base is small next "
                          "to a full fine-tune's state): use train.distributed=ddp")
    blocks = shardable_blocks(model)
    if not blocks:
        raise ConfigError(f"train.distributed=fsdp: {type(model).__name__} has no T5 blocks or ELECTRA layers to "
                          f"shard (supported: the T5 and ELECTRA models of t5electra.models); use ddp")
    if not dist.is_initialized():
        raise ConfigError("train.distributed=fsdp needs a process group: launch with torchrun "
                          "(torchrun --nproc_per_node N t5electra ...)")
    object.__setattr__(model, _SKELETON, skeleton(model))  # not a submodule: invisible to state_dict / FSDP
    mesh = init_device_mesh(device.type, (world_size,))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" else None
    kwargs: dict[str, Any] = {"mesh": mesh} if mp is None else {"mesh": mesh, "mp_policy": mp}
    for block in blocks:
        fully_shard(block, **kwargs)
    fully_shard(model, **kwargs)
    return model


# --------------------------------------------------------------------------------------------
# Sharded checkpoints
# --------------------------------------------------------------------------------------------
def has_sharded_state(ckpt: str | Path) -> bool:
    return (Path(ckpt) / SHARDED_DIR / ".metadata").is_file()


# What DCP's .metadata pickle is made of (torch 2.3-2.13): its own dataclasses and enums, paths,
# torch.Size and dtypes. Anything else in the file is code to run, not metadata.
_DCP_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem",
                "torch.distributed.checkpoint.planner")
_METADATA_GLOBALS = {("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"), ("pathlib", "WindowsPath"),
                     ("pathlib", "PureWindowsPath"), ("torch", "Size"), ("torch.serialization", "_get_layout"),
                     ("collections", "OrderedDict")}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = getattr(importlib.import_module(module), name, None) if module in _DCP_MODULES else None
        if isinstance(found, type) or (module, name) in _METADATA_GLOBALS or (
                module == "torch" and isinstance(getattr(torch, name, None), (torch.dtype, torch.layout,
                                                                                torch.memory_format))):
            return super().find_class(module, name)
        raise UnsafeCheckpointError(f"names {module}.{name}")


def check_metadata(ckpt: str | Path) -> None:
    """DCP reads ``sharded/.metadata`` with a plain ``pickle.load``, which runs whatever the file names
    (a checkpoint from elsewhere could run code at ``convert`` or resume): read it first with an
    unpickler that builds only DCP's metadata classes, the rule of ``torch.load(weights_only=True)``."""
    path = Path(ckpt) / SHARDED_DIR / ".metadata"
    try:
        with open(path, "rb") as fh:
            _MetadataUnpickler(fh).load()
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{path}: {e}: a pickle that would run code, not DCP metadata; refused") from None
    except OSError:
        raise
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises many classes
        raise CheckpointError(f"{path}: not readable DCP metadata ({type(e).__name__}: {e})") from None


def sharded_damage(ckpt: str | Path) -> str | None:
    """What makes ``ckpt/sharded`` unloadable (no, unsafe or unreadable metadata, a missing or truncated
    shard file), or None. Reads the metadata only: every item's (file, offset, length) must exist."""
    path = Path(ckpt) / SHARDED_DIR
    try:
        check_metadata(ckpt)
        metadata = dcp.FileSystemReader(str(path)).read_metadata()
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises many classes
        return f"{SHARDED_DIR}/.metadata: {getattr(e, 'strerror', None) or e}"
    needed: dict[str, int] = {}
    for info in (metadata.storage_data or {}).values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        f = path / name
        if not f.is_file() or f.stat().st_size < size:
            return f"{SHARDED_DIR}/{name}: {'missing' if not f.is_file() else 'truncated'}"
    return None


def save_sharded(model: nn.Module, optimizer: torch.optim.Optimizer | None, directory: Path) -> None:
    """Every rank writes its shard of the model (and optimizer) to ``directory/sharded`` (a collective)."""
    if optimizer is not None:
        msd, osd = get_state_dict(model, optimizer)
        state = {"model": msd, "optim": osd}
    else:
        state = {"model": get_model_state_dict(model)}
    dcp.save(state, checkpoint_id=str(Path(directory) / SHARDED_DIR))


def load_sharded(model: nn.Module, optimizer: torch.optim.Optimizer | None, ckpt: Path) -> None:
    """Read ``ckpt/sharded`` into ``model`` (and ``optimizer``), whatever the number of processes that
    wrote it; ``model`` may be sharded, wrapped in DDP or plain (then no process group is needed)."""
    path = str(Path(ckpt) / SHARDED_DIR)
    check_metadata(ckpt)
    try:
        if optimizer is not None:
            msd, osd = get_state_dict(model, optimizer)
            state = {"model": msd, "optim": osd}
            dcp.load(state, checkpoint_id=path)
            set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
        else:
            state = {"model": get_model_state_dict(model)}
            dcp.load(state, checkpoint_id=path)
            set_model_state_dict(model, state["model"])
    except (RuntimeError, KeyError, ValueError) as e:  # DCP reports missing / mismatched keys as these
        raise CheckpointError(f"{ckpt}: the sharded model/optimizer state does not fit this model ({e})") from None


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's state dict on CPU: for a sharded model a collective (every rank calls it)
    that gives rank 0 the tensors and the other ranks ``{}``; else ``model.state_dict()``."""
    if not is_sharded(model):
        return model.state_dict()
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def plain_copy(model: nn.Module, full_sd: dict[str, torch.Tensor]) -> nn.Module:
    """A plain (unsharded, CPU) model holding ``full_sd``, built on the skeleton kept by :func:`shard_model`."""
    skel = getattr(model, _SKELETON, None)
    if skel is None:
        raise ConfigError(f"{type(model).__name__} was not sharded by shard_model: no plain copy to build")
    plain = copy.deepcopy(skel)
    plain.load_state_dict(full_sd, assign=True, strict=True)
    if hasattr(plain, "tie_weights"):
        plain.tie_weights()
    return plain


def gather_model(model: nn.Module, rank: int) -> nn.Module | None:
    """The model to export: a sharded model's full weights gathered into a plain CPU copy on rank 0
    (a collective: every rank calls it; the others get None); any other model as it is."""
    if not is_sharded(model):
        return model
    full = full_state_dict(model)
    return plain_copy(model, full) if rank == 0 else None


def load_full(model: nn.Module, optimizer: torch.optim.Optimizer | None, load_weights, optim_state: dict | None
              ) -> None:
    """Load a one-process checkpoint into a sharded model: ``load_weights(plain)`` fills a plain CPU copy
    (e.g. ``load_model_weights(plain, ckpt)``), which every rank then scatters into its shards;
    ``optim_state`` is a ``torch.optim`` state dict (parameters by index) of the same parameter order."""
    plain = copy.deepcopy(getattr(model, _SKELETON)).to_empty(device="cpu")
    load_weights(plain)
    full = {k: v for k, v in plain.state_dict().items()}
    set_model_state_dict(model, full, options=StateDictOptions(full_state_dict=True))
    del plain, full
    if optimizer is None or optim_state is None:
        return
    names = {id(p): n for n, p in model.named_parameters()}
    order = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
    saved_groups = optim_state["param_groups"]
    if sum(len(g["params"]) for g in saved_groups) != len(order):
        raise CheckpointError("the saved optimizer state has a different number of parameters than this model")
    fqn_state = {"state": {order[i]: s for i, s in optim_state["state"].items()},
                 "param_groups": [{**g, "params": [order[i] for i in g["params"]]} for g in saved_groups]}
    set_optimizer_state_dict(model, optimizer, fqn_state, options=StateDictOptions(full_state_dict=True))


# --------------------------------------------------------------------------------------------
# What ``t5electra convert`` needs to rebuild the model
# --------------------------------------------------------------------------------------------
def write_model_configs(model: nn.Module, directory: Path) -> None:
    """The config files of ``save_pretrained`` without the weights: ``config.json`` for one model;
    ``generator/`` + ``discriminator/`` config.json and ``pretraining_config.json`` for ELECTRA pretraining."""
    from ..models.electra_rtd import PRETRAINING_CONFIG_NAME, ElectraPretrainer

    model = getattr(model, _SKELETON, model)
    d = Path(directory)
    parts = {"": model} if hasattr(model, "hf_config_dict") else {
        n: m for n, m in model.named_children() if hasattr(m, "hf_config_dict")}
    for name, part in parts.items():
        (d / name).mkdir(parents=True, exist_ok=True)
        write_text_atomic(d / name / "config.json", json.dumps(part.hf_config_dict(), indent=2, sort_keys=True) + "\n")
    if isinstance(model, ElectraPretrainer):
        write_text_atomic(d / PRETRAINING_CONFIG_NAME, json.dumps(model.config.to_dict(), indent=2, sort_keys=True)
                          + "\n")


def materialize(ckpt: Path) -> nn.Module:
    """The model of a sharded checkpoint as one plain CPU model (no process group needed): built
    from its config files, weights read from ``ckpt/sharded``."""
    from ..models.electra import ElectraConfig
    from ..models.electra_rtd import PRETRAINING_CONFIG_NAME, ElectraPretrainer, ElectraPretrainingConfig
    from ..models.registry import model_class

    ckpt = Path(ckpt)
    if (ckpt / PRETRAINING_CONFIG_NAME).is_file():
        pc = ElectraPretrainingConfig.from_dict(json.loads((ckpt / PRETRAINING_CONFIG_NAME).read_text("utf-8")))
        gen = ElectraConfig.from_json_file(ckpt / "generator" / "config.json")
        disc_file = ckpt / "discriminator" / "config.json"
        disc = ElectraConfig.from_json_file(disc_file) if disc_file.is_file() else gen
        model: nn.Module = ElectraPretrainer(disc, gen, config=pc)
    else:
        cls = model_class(ckpt)
        model = cls(cls.config_class.from_json_file(ckpt / "config.json"))
    load_sharded(model, None, ckpt)
    return model.eval()
