"""Optimisers and parameter groups: AdamW, nanoT5's RMS-scaled AdamW, T5's Adafactor, and ELECTRA's
layer-wise learning-rate decay.

Parameter groups (:func:`param_groups`)
    Decoupled weight decay applies to weight matrices only: biases, the weights of normalisation
    layers (LayerNorm, T5's RMSNorm) and, optionally, embedding tables are excluded, as in BERT,
    ELECTRA (``exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"]``) and nanoT5.

Layer-wise learning-rate decay (:func:`electra_layer_depth`, :func:`layerwise_lr_scales`)
    ELECTRA fine-tunes with lower learning rates for layers closer to the input. The intended rule
    (Kevin Clark, https://github.com/google-research/electra/issues/51) counts the task head as
    one more layer on top of the L encoder layers: head ``lr``, top encoder layer ``lr * d``,
    encoder layer i (0-based) ``lr * d^(L - i)``, embeddings ``lr * d^(L + 1)``.
    The official ``_get_layer_lrs`` gives the head depth ``L + 2`` (a leftover of the removed
    pooler layer) and uses ``d^(L + 2 - depth)``: every encoder layer and the embeddings get one
    factor ``d`` too many (top layer ``d^2``, embeddings ``d^(L + 2)``). We implement the intended
    rule, depth(head) = L + 1, and test the exponents.

Optimisers
    - ``adamw``: ``torch.optim.AdamW`` (decoupled decay ``p -= lr * wd * p``) with its fused kernel
      (faster, same update within float rounding; ``optim.fused: false``: the per-parameter loop).
    - ``adamw_scaled``: :class:`AdamWScale`, nanoT5's AdamW whose step is multiplied by
      ``max(1e-3, RMS(p))`` like Adafactor's ``scale_parameter`` (nanoT5/utils/copied_utils.py);
      on CPU through the same fused kernel (``optim.fused: false``: the loop).
    - ``adafactor``: :class:`Adafactor`, factored second moments (Shazeer & Stern 2018), as in T5
      and transformers' ``Adafactor`` (tested step by step against it).
    - ``optim.bias_correction: false`` (adamw, adamw_scaled): no bias correction of the moments, the
      update ``lr * (m / (sqrt(v) + eps) + wd * p)`` of the official ELECTRA/BERT
      ``AdamWeightDecayOptimizer`` (google-research/electra model/optimization.py), through
      :class:`AdamWScale`'s loop (its decay comes after the update: within ``lr^2 wd`` of it).
      torch's AdamW corrects, which makes the first steps smaller: the official update is
      ``(1 - beta1^t) / sqrt(1 - beta2^t)`` times ours, 3.2x at step 100, 1.26x at step 1000.
"""

from __future__ import annotations

import math
import re
import warnings
from typing import Any, Iterable

import torch
from torch import nn

from ..config import suggest
from ..errors import ConfigError

# --------------------------------------------------------------------------------------------
# Which parameters decay
# --------------------------------------------------------------------------------------------
DEFAULT_NO_DECAY = ("bias", "LayerNorm", "layer_norm", "layernorm", "norm.weight")


def _norm_and_embedding_params(model: nn.Module) -> tuple[set[int], set[int]]:
    """ids of parameters owned by normalisation layers, and of embedding tables."""
    norms, embeds = set(), set()
    for module in model.modules():
        own = [id(p) for p in module.parameters(recurse=False)]
        if isinstance(module, (nn.LayerNorm, nn.RMSNorm, nn.GroupNorm)) or "Norm" in type(module).__name__:
            norms.update(own)
        elif isinstance(module, nn.Embedding):
            embeds.update(own)
    return norms, embeds


def decays(name: str, param: nn.Parameter, norms: set[int], embeds: set[int],
           no_decay: Iterable[str] = DEFAULT_NO_DECAY, decay_embeddings: bool = True) -> bool:
    """Whether weight decay applies to parameter ``name``."""
    if id(param) in norms or name.endswith("bias") or any(s in name for s in no_decay):
        return False
    if id(param) in embeds:
        return decay_embeddings
    return True


# --------------------------------------------------------------------------------------------
# ELECTRA layer-wise learning-rate decay
# --------------------------------------------------------------------------------------------
_EMBEDDINGS = re.compile(r"(?:^|\.)embeddings(?:_project)?\.")
_LAYER = re.compile(r"(?:^|\.)(?:layer|layers)\.(\d+)\.")


def electra_layer_depth(name: str, num_layers: int) -> int:
    """Depth of an ELECTRA parameter: embeddings 0, encoder layer i -> i + 1, anything else (the
    task head) -> ``num_layers + 1``. Works on HF names (``electra.encoder.layer.3.attention...``)
    with or without a ``module.`` (DDP) prefix."""
    if _EMBEDDINGS.search(name):
        return 0
    m = _LAYER.search(name)
    if m:
        i = int(m.group(1))
        if i >= num_layers:
            raise ConfigError(f"parameter {name!r} is in layer {i}, but num_layers={num_layers}")
        return i + 1
    return num_layers + 1


def layerwise_lr_scales(names: Iterable[str], num_layers: int, decay: float) -> dict[str, float]:
    """``{name: decay ** (num_layers + 1 - depth)}``: head 1, top layer ``decay``, embeddings
    ``decay ** (num_layers + 1)`` (see the module docstring for the official code's extra factor)."""
    if not 0.0 < decay <= 1.0:
        raise ConfigError(f"optim.layerwise_lr_decay must be in (0, 1], got {decay}")
    return {n: decay ** (num_layers + 1 - electra_layer_depth(n, num_layers)) for n in names}


# --------------------------------------------------------------------------------------------
# Param groups
# --------------------------------------------------------------------------------------------
def param_groups(model: nn.Module, lr: float | None, weight_decay: float, *,
                 no_decay: Iterable[str] = DEFAULT_NO_DECAY, decay_embeddings: bool = True,
                 layerwise_lr_decay: float | None = None, num_layers: int | None = None) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim`` optimisers: one per (weight decay on/off, lr scale).

    Each group carries ``names`` (for inspection; saved with the optimizer state) and
    ``lr_scale``. Shared (tied) parameters appear once; frozen ones are skipped.
    """
    no_decay = tuple(no_decay)
    norms, embeds = _norm_and_embedding_params(model)
    named: list[tuple[str, nn.Parameter]] = []
    seen: set[int] = set()
    for n, p in model.named_parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            named.append((n, p))
    scales = {n: 1.0 for n, _ in named}
    if layerwise_lr_decay is not None:
        if num_layers is None:
            raise ConfigError("layer-wise lr decay needs num_layers (the encoder depth)")
        scales = layerwise_lr_scales([n for n, _ in named], num_layers, layerwise_lr_decay)
    groups: dict[tuple[bool, float], dict[str, Any]] = {}
    for n, p in named:
        d = decays(n, p, norms, embeds, no_decay, decay_embeddings)
        key = (d, scales[n])
        if key not in groups:
            groups[key] = {"params": [], "names": [], "weight_decay": weight_decay if d else 0.0,
                           "lr_scale": scales[n]}
            if lr is not None:
                groups[key]["lr"] = lr * scales[n]
        groups[key]["params"].append(p)
        groups[key]["names"].append(n)
    return list(groups.values())


# --------------------------------------------------------------------------------------------
# nanoT5's AdamW with an RMS-scaled step
# --------------------------------------------------------------------------------------------
def _rms(t: torch.Tensor) -> torch.Tensor:
    return t.norm(2) / (t.numel() ** 0.5)


def _fusable(p: torch.Tensor, grad: torch.Tensor) -> bool:
    """Whether torch's fused AdamW kernel can update ``p``: a plain dense CPU tensor (FSDP's DTensor
    shards and GPUs keep the loop: the kernel wants its step counters on the device) of a float type."""
    return (p.device.type == "cpu" and type(p.data) is torch.Tensor and grad.layout == torch.strided
            and p.dtype in (torch.float32, torch.bfloat16, torch.float16) and grad.dtype == p.dtype)


class AdamWScale(torch.optim.Optimizer):
    """AdamW whose step is scaled by ``max(1e-3, RMS(param))`` (nanoT5, "Adagrad-style" scaling).

    Follows nanoT5's ``AdamWScale`` (from transformers' old AdamW): eps is added to ``sqrt(v)``
    (not to the bias-corrected one), and the decoupled weight decay ``p -= lr * wd * p`` is applied
    after the Adam update. ``scale_by_rms=False`` gives transformers' plain AdamW.

    ``fused`` (default): each CPU parameter is updated by torch's fused AdamW kernel, one pass over
    its weights and moments instead of ~8 elementwise ops: that kernel divides by
    ``sqrt(v) / sqrt(1 - b2^t) + eps'``, so ``eps' = eps / sqrt(1 - b2^t)`` gives this update
    (``lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``) with the RMS-scaled lr of the
    parameter, within float rounding of the loop (test). On one thread, the quickstart's T5 (8.9M
    parameters, 54 tensors): 21 -> 10 ms a step (docs/training.md). ``fused=False`` (or
    ``correct_bias=False``, FSDP shards, GPUs): the loop.
    """

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, correct_bias: bool = True, scale_by_rms: bool = True, fused: bool = True):
        if lr < 0.0 or eps < 0.0 or not (0.0 <= betas[0] < 1.0 and 0.0 <= betas[1] < 1.0):
            raise ConfigError(f"AdamWScale: invalid lr={lr}, betas={betas} or eps={eps}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                        correct_bias=correct_bias, scale_by_rms=scale_by_rms)
        super().__init__(params, defaults)
        self.fused = fused

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p)     # m: running mean of g
                    state["exp_avg_sq"] = torch.zeros_like(p)  # v: running mean of g^2
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1
                step = int(state["step"].item())
                lr = group["lr"] * (max(1e-3, _rms(p).item()) if group["scale_by_rms"] else 1.0)
                if self.fused and group["correct_bias"] and _fusable(p, grad):
                    torch._fused_adamw_([p], [grad], [exp_avg], [exp_avg_sq], [], [state["step"]], lr=lr,
                                        beta1=beta1, beta2=beta2, weight_decay=0.0,
                                        eps=group["eps"] / math.sqrt(1.0 - beta2 ** step), amsgrad=False,
                                        maximize=False)
                else:
                    exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                    denom = exp_avg_sq.sqrt().add_(group["eps"])
                    step_size = lr
                    if group["correct_bias"]:
                        step_size = step_size * math.sqrt(1.0 - beta2 ** step) / (1.0 - beta1 ** step)
                    p.addcdiv_(exp_avg, denom, value=-step_size)
                if group["weight_decay"] > 0.0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


# --------------------------------------------------------------------------------------------
# Adafactor (T5)
# --------------------------------------------------------------------------------------------
class Adafactor(torch.optim.Optimizer):
    """Adafactor (Shazeer & Stern 2018, https://arxiv.org/abs/1804.04235), the optimiser of T5.

    For a matrix gradient G (.., R, C) the second moment is kept factored as a row vector (.., R)
    and a column vector (.., C) instead of a full (.., R, C) tensor; vectors keep a full one.
    Per step t (1-based), as in transformers' ``Adafactor`` (a port of fairseq's):

    - ``beta2_t = 1 - t^decay_rate`` (decay_rate -0.8);
    - lr: the external ``lr`` or, with ``relative_step``, ``min(1e-2, 1/sqrt(t))`` (``min(1e-6 t,
      1/sqrt(t))`` with ``warmup_init``); times ``max(eps2, RMS(p))`` with ``scale_parameter``;
    - ``update = G / sqrt(v_hat)``, then divided by ``max(1, RMS(update) / clip_threshold)``;
    - optional momentum ``beta1`` on the scaled update; decoupled weight decay ``p -= wd * lr * p``.

    With ``relative_step`` the group lr is ignored (``lr`` may be None).
    """

    def __init__(self, params, lr: float | None = None, eps: tuple[float, float] = (1e-30, 1e-3),
                 clip_threshold: float = 1.0, decay_rate: float = -0.8, beta1: float | None = None,
                 weight_decay: float = 0.0, scale_parameter: bool = True, relative_step: bool = True,
                 warmup_init: bool = False):
        if lr is not None and relative_step:
            raise ConfigError("Adafactor: a manual lr cannot be combined with relative_step=True (set lr to None)")
        if lr is None and not relative_step:
            raise ConfigError("Adafactor: relative_step=False needs an lr")
        if warmup_init and not relative_step:
            raise ConfigError("Adafactor: warmup_init=True requires relative_step=True")
        defaults = dict(lr=0.0 if lr is None else lr, eps=tuple(eps), clip_threshold=clip_threshold,
                        decay_rate=decay_rate, beta1=beta1, weight_decay=weight_decay,
                        scale_parameter=scale_parameter, relative_step=relative_step, warmup_init=warmup_init)
        super().__init__(params, defaults)

    @staticmethod
    def step_size(group: dict, step: int, param_rms: float) -> float:
        """The learning rate of step ``step`` (1-based) for a parameter of RMS ``param_rms``."""
        lr = group["lr"]
        if group["relative_step"]:
            min_step = 1e-6 * step if group["warmup_init"] else 1e-2
            lr = min(min_step, 1.0 / math.sqrt(step))
        if group["scale_parameter"]:
            lr = lr * max(group["eps"][1], param_rms)
        return lr

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As torch's, except that the statistics of 16-bit parameters stay float32, as they were saved
        (torch casts every floating state tensor to its parameter's dtype: after a resume, the moments
        of bf16 weights were kept and updated in bf16 for the rest of the run)."""
        super().load_state_dict(state_dict)
        saved = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved, params):
            if p.dtype not in (torch.float16, torch.bfloat16) or i not in state_dict["state"]:
                continue
            for k, v in state_dict["state"][i].items():
                if k != "step" and torch.is_tensor(v) and v.is_floating_point():
                    self.state[p][k] = v.to(device=p.device, dtype=torch.float32, copy=True)

    def current_lr(self) -> float:
        """The lr the next step uses before parameter scaling (for logging): the group lr, or with
        ``relative_step`` ``min(1e-2, 1/sqrt(t))`` (``min(1e-6 t, 1/sqrt(t))`` with warmup_init)."""
        group = self.param_groups[0]
        if not group["relative_step"]:
            return max(float(g["lr"]) for g in self.param_groups)
        t = 1 + max((int(s["step"]) for s in self.state.values()), default=0)
        return self.step_size({**group, "scale_parameter": False}, t, 1.0)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float()  # statistics in fp32 even for bf16 parameters
                factored = grad.dim() >= 2
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    if group["beta1"] is not None:
                        state["exp_avg"] = torch.zeros_like(grad)
                    if factored:
                        state["exp_avg_sq_row"] = grad.new_zeros(grad.shape[:-1])                    # (.., R)
                        state["exp_avg_sq_col"] = grad.new_zeros(grad.shape[:-2] + grad.shape[-1:])  # (.., C)
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(grad)
                p32 = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
                state["step"] += 1
                step = int(state["step"].item())
                lr = self.step_size(group, step, _rms(p32).item())
                beta2t = 1.0 - math.pow(step, group["decay_rate"])
                sq = grad.square() + group["eps"][0]
                if factored:
                    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
                    row.mul_(beta2t).add_(sq.mean(dim=-1), alpha=1.0 - beta2t)
                    col.mul_(beta2t).add_(sq.mean(dim=-2), alpha=1.0 - beta2t)
                    # v_hat = outer(row, col) / mean(row): rsqrt of it, as a product of two factors
                    r = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)  # (.., R, 1)
                    c = col.unsqueeze(-2).rsqrt()                                     # (.., 1, C)
                    update = (r * c).mul_(grad)
                else:
                    v = state["exp_avg_sq"]
                    v.mul_(beta2t).add_(sq, alpha=1.0 - beta2t)
                    update = v.rsqrt().mul_(grad)
                update.div_((_rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                update.mul_(lr)
                if group["beta1"] is not None:
                    m = state["exp_avg"]
                    m.mul_(group["beta1"]).add_(update, alpha=1.0 - group["beta1"])
                    update = m
                if group["weight_decay"] != 0.0:
                    p32.add_(p32, alpha=-group["weight_decay"] * lr)
                p32.add_(-update)
                if p32 is not p:
                    p.copy_(p32)
        return loss


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------
def build_optimizer(model: nn.Module, cfg, num_layers: int | None = None) -> torch.optim.Optimizer:
    """The optimiser described by an :class:`~t5electra.train.config.OptimSection`.

    ``num_layers`` (the encoder depth) is needed only with ``cfg.layerwise_lr_decay``.
    """
    relative = cfg.name == "adafactor" and cfg.adafactor_relative_step
    if relative and cfg.lr is not None:  # the default 1e-3 included: the run's lr is not what the config reads
        warnings.warn(f"optim.lr={cfg.lr} is not used: with optim.adafactor_relative_step=true Adafactor sets its "
                      f"own lr, min(1e-2, 1/sqrt(step)); set optim.lr=null to say so, or "
                      f"optim.adafactor_relative_step=false to train with optim.lr", stacklevel=2)
    groups = param_groups(model, None if relative else cfg.lr, cfg.weight_decay, no_decay=cfg.no_decay,
                          decay_embeddings=cfg.decay_embeddings, layerwise_lr_decay=cfg.layerwise_lr_decay,
                          num_layers=num_layers)
    if not groups:
        raise ConfigError(f"{type(model).__name__} has no trainable parameters")
    fused = getattr(cfg, "fused", None)  # configs written before the option existed lack it
    if fused and cfg.name not in ("adamw", "adamw_scaled"):
        raise ConfigError(f"optim.fused=true is for optim.name='adamw' or 'adamw_scaled' (torch's fused AdamW "
                          f"kernel), not {cfg.name!r}")
    correct = getattr(cfg, "bias_correction", True)  # configs written before the option existed lack it
    if not correct and (cfg.name not in ("adamw", "adamw_scaled") or fused):
        raise ConfigError(f"optim.bias_correction=false is for optim.name=adamw or adamw_scaled without optim.fused "
                          f"(torch's fused kernel always corrects), not name={cfg.name!r}, fused={fused}")
    if not correct:  # the official ELECTRA/BERT AdamWeightDecayOptimizer: AdamWScale's loop, no correction
        return AdamWScale(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                          correct_bias=False, scale_by_rms=cfg.name == "adamw_scaled", fused=False)
    if cfg.name == "adamw":
        # fused (the default): one kernel per parameter instead of ~8 elementwise ops and their
        # temporaries (measured on one CPU thread, 10.7M parameters shaped like ELECTRA-Small's: 41 ms
        # instead of 127 ms CPU time per step; T5-small on 2 threads ~140 -> ~45 ms; max |difference|
        # 4e-9 after a step). transformers' Trainer also defaults to it (adamw_torch_fused, torch >= 2.8).
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay, fused=None if fused is False else True)
    if cfg.name == "adamw_scaled":
        return AdamWScale(groups, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay,
                          fused=fused is not False)
    if cfg.name == "adafactor":
        if relative and cfg.layerwise_lr_decay is not None:
            raise ConfigError("optim.layerwise_lr_decay needs an explicit lr (not adafactor_relative_step)")
        return Adafactor(groups, lr=None if relative else cfg.lr, clip_threshold=cfg.adafactor_clip_threshold,
                         decay_rate=cfg.adafactor_decay_rate, beta1=cfg.adafactor_beta1,
                         weight_decay=cfg.weight_decay, scale_parameter=cfg.adafactor_scale_parameter,
                         relative_step=relative, warmup_init=cfg.adafactor_warmup_init)
    names = ("adamw", "adamw_scaled", "adafactor")
    raise ConfigError(f"optim.name={cfg.name!r} is not one of {', '.join(names)}{suggest(cfg.name, names)}")
