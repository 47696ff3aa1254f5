"""Several processes with torchrun: process group, device, DDP wrapping, rank-0 side effects.

``torchrun --nproc_per_node N t5electra pretrain ...`` (or ``--nnodes M --rdzv-endpoint HOST:PORT``
for several machines) starts N processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each. :func:`init_distributed` reads them, joins the
process group (NCCL on GPUs, gloo on CPU) and picks the device ``cuda:LOCAL_RANK``. Without those
variables it describes a single process, and every helper here is a no-op, so recipes call them
unconditionally.

Data parallelism (``train.distributed``, :func:`parallelize`): ``ddp`` is DistributedDataParallel,
each rank holds the whole model and its optimizer state, gradients are averaged across ranks during
backward; ``fsdp`` shards parameters, gradients and optimizer state over the ranks (FSDP2
``fully_shard`` per T5 block / ELECTRA layer, train/sharded.py). Either way each rank reads its own
part of the global batch and the update equals a single process on the global batch (tested).
``train.activation_checkpointing`` recomputes each block in backward (nn/recompute.py), with any
strategy. Only rank 0 writes files (checkpoints' shared files, metrics, plots, exports): guard side
effects with ``env.is_main``; the package's warnings (logger ``t5electra``) are rank 0's alone,
errors every rank's. See docs/training.md for the memory each strategy needs.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError
from ..machine import keep_freed_memory
from ..nn.recompute import set_activation_checkpointing
from .checkpointing import rng_state
from .sharded import shard_model

STRATEGIES = ("auto", "none", "ddp", "fsdp")
_PACKAGE_LOG = logging.getLogger("t5electra")
_QUIETED: list[int] = []  # the package logger's level before init_distributed quieted a rank > 0


@dataclasses.dataclass
class DistEnv:
    """Where this process sits among the processes of the run."""

    rank: int = 0          # global rank, 0..world_size-1
    world_size: int = 1    # number of processes
    local_rank: int = 0    # rank on this machine (selects the GPU)
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    backend: str | None = None  # 'nccl' or 'gloo' when a process group is active

    @property
    def is_main(self) -> bool:
        """True on the one process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} is not an integer") from None


def resolve_device(device: str = "auto", local_rank: int = 0) -> torch.device:
    """'auto' -> cuda:LOCAL_RANK when CUDA is available, else cpu; 'cuda' -> cuda:LOCAL_RANK."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"train.device={device!r} is not a device: use 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"train.device={device!r}: {dev.type!r} devices are not supported: use 'auto', 'cpu', "
                          f"'cuda' or 'cuda:N'")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device={device!r} but CUDA is not available (use 'cpu' or 'auto')")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r} does not exist: {torch.cuda.device_count()} GPU(s) visible")
    return dev


def use_deterministic_kernels() -> None:
    """Deterministic kernels only, process-wide: on GPUs the default backward of an embedding, and
    cuBLAS's split reductions, sum in an order that changes from run to run, so a resumed run
    drifts from the uninterrupted one by rounding (tests/recipes: "resumes exactly"). cuBLAS reads
    its workspace setting when it makes its first handle: set before any GPU product."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def init_distributed(device: str = "auto", backend: str | None = None,
                     timeout_s: float = 1800.0, strategy: str = "auto", deterministic: bool = False) -> DistEnv:
    """Join the process group described by torchrun's environment (or describe one process).

    ``strategy`` is ``train.distributed``: ``fsdp`` needs a process group even for one process
    (``torchrun --nproc_per_node 1``), and is refused without torchrun, before any work.
    ``deterministic`` is ``train.deterministic``: deterministic kernels from here on, in this process."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"train.distributed={strategy!r} is not one of {', '.join(STRATEGIES)}")
    world_size = _env_int("WORLD_SIZE") or 1
    rank = _env_int("RANK") or 0
    local_rank = _env_int("LOCAL_RANK") or 0
    dev = resolve_device(device, local_rank)
    if deterministic:
        use_deterministic_kernels()
    launched = all(os.environ.get(var) for var in ("MASTER_ADDR", "MASTER_PORT"))
    if strategy == "fsdp" and not launched:
        raise ConfigError("train.distributed=fsdp shards the model over the processes of a torchrun launch, and "
                          "this process was not started by torchrun (MASTER_ADDR/MASTER_PORT unset): run "
                          "torchrun --nproc_per_node N t5electra ..., or use train.distributed=none")
    if dev.type == "cpu":
        keep_freed_memory()  # a training process on CPU: reuse the big tensors' pages (machine.py)
    if world_size == 1 and strategy != "fsdp":
        return DistEnv(device=dev)
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise ConfigError(f"WORLD_SIZE={world_size} but {var} is not set: launch with torchrun "
                              f"(torchrun --nproc_per_node N t5electra ...)")
    if not 0 <= rank < world_size:
        raise ConfigError(f"RANK={rank} is outside [0, WORLD_SIZE={world_size})")
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if dev.type == "cuda":
            kwargs["device_id"] = dev
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size,
                                timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
    if rank != 0 and _PACKAGE_LOG.level < logging.ERROR:
        # every rank loads the same checkpoint and reads the same files: their warnings (a load
        # report, a data file's) are rank 0's, said once; errors still come from every rank
        _QUIETED.append(_PACKAGE_LOG.level)
        _PACKAGE_LOG.setLevel(logging.ERROR)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=dev, backend=backend)


def wrap_ddp(model: nn.Module, env: DistEnv, **ddp_kwargs: Any) -> nn.Module:
    """``DistributedDataParallel(model)`` when several processes run; the model itself otherwise.
    Move the model to ``env.device`` first."""
    if not env.distributed:
        return model
    if env.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [env.device.index])
    return DistributedDataParallel(model, **ddp_kwargs)


def resolve_strategy(strategy: str, env: DistEnv) -> str:
    """``train.distributed``: 'auto' is ddp under torchrun with several processes, else none."""
    if strategy == "auto":
        return "ddp" if env.distributed else "none"
    if strategy == "none" and env.distributed:
        raise ConfigError(f"train.distributed=none with {env.world_size} processes: each would train its own copy "
                          f"apart from the others; use ddp or fsdp, or launch one process")
    return strategy


def parallelize(model: nn.Module, env: DistEnv, strategy: str = "auto", *, activation_checkpointing: bool = False,
                precision: str = "fp32") -> nn.Module:
    """The model a recipe trains: activation checkpointing set as asked, then DDP (a wrapper around
    ``model``), FSDP (``model`` itself, sharded in place) or ``model`` unchanged. Move the model to
    ``env.device`` first; build the optimizer on ``model``'s parameters *after* this call."""
    strategy = resolve_strategy(strategy, env)
    if activation_checkpointing and set_activation_checkpointing(model, True) == 0:
        raise ConfigError(f"train.activation_checkpointing=true: {type(model).__name__} has no T5 blocks or ELECTRA "
                          f"layers to recompute")
    if strategy == "fsdp":
        return shard_model(model, env.world_size, env.device, precision)
    if strategy == "ddp":
        return wrap_ddp(model, env)
    return model


def barrier(env: DistEnv) -> None:
    """Wait until every process gets here (e.g. rank 0 finished writing a checkpoint)."""
    if env.distributed:
        dist.barrier()


def all_reduce_mean(value: float | torch.Tensor, env: DistEnv) -> float:
    """The mean of a scalar over all processes (every rank gets the same number)."""
    t = value.detach().float().reshape(()).clone() if isinstance(value, torch.Tensor) else torch.tensor(float(value))
    if env.distributed:
        t = t.to(env.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t = t / env.world_size
    return float(t.item())


def all_reduce_dict(metrics: dict[str, float], env: DistEnv, op: str = "mean") -> dict[str, float]:
    """Mean (or 'sum') of each metric over processes, in one collective; keys must match on all ranks."""
    if not env.distributed or not metrics:
        return dict(metrics)
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    if op == "mean":
        t = t / env.world_size
    elif op != "sum":
        raise ConfigError(f"all_reduce_dict: op must be 'mean' or 'sum', got {op!r}")
    return dict(zip(keys, t.tolist()))


def all_gather_object(obj: Any, env: DistEnv) -> list[Any]:
    """Every rank's python object, in rank order (one process: ``[obj]``)."""
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """Rank ``src``'s python object on every rank (e.g. the resume path chosen by rank 0)."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def gather_rng_states(env: DistEnv) -> list[dict[str, Any]]:
    """The RNG states of every rank, in rank order (for the checkpoint rank 0 writes)."""
    state = rng_state()
    if not env.distributed:
        return [state]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, state)
    return out


# Process groups left by cleanup(), kept until the interpreter exits. After destroy_process_group
# the last owner of the world group can be a DDP model's C++ Reducer; when that model is freed
# (the recipe returns), the Reducer's destructor runs ~ProcessGroupGloo *holding the GIL*, which
# joins Gloo's worker threads, while a worker may be freeing a finished collective's tensors,
# which needs the GIL: a deadlock, seen as a finished torchrun run whose rank 0 hangs at the end
# of train() (py-spy: MainThread in ~Reducer -> ~ProcessGroupGloo -> thread::join; the Gloo
# thread in ~AsyncWork -> decref_pyobject -> gil_scoped_acquire). Holding the Python object
# makes its (GIL-releasing) binding the last owner. pytorch/pytorch#56297 describes the class.
_LEFT_GROUPS: list[Any] = []


def cleanup(env: DistEnv) -> None:
    """Leave the process group (call once at the end of a run)."""
    if env.backend is not None and dist.is_initialized():
        _LEFT_GROUPS.append(dist.group.WORLD)
        dist.destroy_process_group()
    while _QUIETED:
        _PACKAGE_LOG.setLevel(_QUIETED.pop())
