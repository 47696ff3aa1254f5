"""``get_peft_model`` / ``PeftModel``: LoRA adapters on our models, in PEFT's names and files.

Which of our layers a transformers module name means comes from the model's checkpoint key map
(t5electra/checkpoint/): our ``encoder.blocks.0.self_attn.qkv.weight`` is exported as
``encoder.block.0.layer.0.SelfAttention.{q,k,v}.weight``, so the module ``...SelfAttention.v`` is
the third row block of our ``qkv``. Targets are matched against those transformers module paths
with PEFT's rule (a list entry matches a path equal to it or ending in ``.entry``; a string is a
regex over the whole path), so the same ``LoraConfig`` picks the same modules here and in PEFT.

Files (``save_pretrained``): ``adapter_config.json`` and ``adapter_model.safetensors`` with PEFT's
keys, ``base_model.model.<transformers module path>.lora_A.weight`` / ``.lora_B.weight``, and the
modules_to_save tensors as ``base_model.model.<transformers parameter name>``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint.electra import normalize_prefix
from ..checkpoint.io import checkpoint_dir, load_safetensors, save_state_dict
from ..errors import CheckpointNotFoundError, ConfigError, WeightsMismatchError
from .config import DEFAULT_TARGETS, TASK_HEADS, WEIGHTS_NAME, LoraConfig
from .layers import LoraLinear


ALL_LINEAR = "all-linear"  # PEFT's target_modules shorthand
OUTPUT_LAYERS = {"lm_head", "generator_lm_head"}  # what "all-linear" leaves out (PEFT: the output embeddings)
PREFIX = "base_model.model."  # PEFT's prefix of every saved key (PeftModel.base_model = LoraModel.model)


def _matches(path: str, targets: list[str] | str) -> bool:
    """PEFT's rule (peft.tuners.tuners_utils.check_target_module_exists)."""
    if isinstance(targets, str):
        return re.fullmatch(targets, path) is not None
    return any(path == t or path.endswith("." + t) for t in targets)


def linear_modules(model: nn.Module) -> dict[str, list[tuple[str, int, int]]]:
    """Our nn.Linear layers that have transformers names: our module path -> [(transformers module
    path, first output row, end row)], one entry per row block (3 for a fused q/k/v)."""
    keymap = model.hf_keymap(model.config)
    out = {}
    for name, module in model.named_modules():
        if not isinstance(module, nn.Linear):  # optimize_for_inference's InferenceLinear is one too
            continue
        hf = keymap.hf_names(f"{name}.weight")
        if not hf:
            continue
        rows = module.out_features // len(hf)
        out[name] = [(h.removesuffix(".weight"), i * rows, (i + 1) * rows) for i, h in enumerate(hf)]
    return out


def _saved_parameters(model: nn.Module, names: list[str], optional: tuple[str, ...]) -> dict[str, str]:
    """modules_to_save -> {our parameter name: transformers parameter name} of the modules they name.

    PEFT's rule (peft.utils.other._set_trainable): a module whose path ends with the name, no dot needed
    ('layer_norm' also names T5's final_layer_norm), so that both sides train and save the same tensors."""
    keymap = model.hf_keymap(model.config)
    for t in names:
        if t.rsplit(".", 1)[-1] == "embed_tokens":  # T5's encoder/decoder aliases of `shared`
            _refuse_shared(t, t)
    found: dict[str, str] = {}
    matched = set()
    for key, _ in model.named_parameters():
        hf = keymap.hf_names(key)
        if not hf:
            continue
        for t in names:
            module_paths = {h.rsplit(".", 1)[0] for h in hf}
            hits = [p for p in module_paths if any(q.endswith(t) for q in _ancestors(p))]
            if not hits:
                continue
            if len(hf) > 1:
                raise ConfigError(f"modules_to_save {t!r} names part of our fused {key!r} ({', '.join(hf)}); "
                                  f"adapt it with target_modules instead")
            if _is_shared(model, hf[0]):
                _refuse_shared(t, hf[0].rsplit(".", 1)[0])
            found[key] = hf[0]
            matched.add(t)
    missing = [t for t in names if t not in matched and t not in optional]
    if missing:
        heads = sorted({k.split(".")[0] for k in found} | _top_level_modules(model, keymap))
        raise ConfigError(f"modules_to_save {missing} match no module of {type(model).__name__} "
                          f"(its top-level modules in transformers' names: {heads})")
    return found


def _refuse_shared(name: str, module: str) -> None:
    raise ConfigError(f"modules_to_save {name!r} names the shared/tied embedding {module!r}: PEFT trains a copy of "
                      f"that module, but the model's other users of the same weights (T5's shared and encoder/"
                      f"decoder embed_tokens, a tied output layer) keep the original, so PEFT would ignore the "
                      f"trained copy and compute other logits than this model; adapt the layers around it with "
                      f"target_modules instead, or fine-tune without LoRA")


def _is_shared(model: nn.Module, hf_key: str) -> bool:
    """Is this transformers parameter one that several modules of transformers' model use (T5's
    ``shared`` = encoder/decoder ``embed_tokens``; word embeddings tied to an output layer)?"""
    module = hf_key.rsplit(".", 1)[0]
    leaf = module.rsplit(".", 1)[-1]
    if leaf in ("shared", "embed_tokens"):
        return True
    return leaf == "word_embeddings" and bool(getattr(model, "tied", False))  # ElectraForMaskedLM's tie


def _ancestors(path: str) -> list[str]:
    parts = path.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _top_level_modules(model: nn.Module, keymap) -> set[str]:
    return {h.split(".")[0] for k, _ in model.named_parameters() for h in (keymap.hf_names(k) or ())}


def _resolve(model: nn.Module, config: LoraConfig, saved: dict[str, str]
             ) -> dict[str, dict[str, tuple[str, int, int]]]:
    """Our module path -> {part name: (transformers module path, start, stop)} for the targets."""
    targets = config.target_modules
    if targets is None:
        model_type = getattr(model.config, "model_type", "")
        if model_type not in DEFAULT_TARGETS:
            raise ConfigError(f"LoRA target_modules not given and no default for model type {model_type!r}")
        targets = DEFAULT_TARGETS[model_type]
        config.target_modules = list(targets)  # saved resolved, as PEFT does (PEFT has no default for umt5)
    saved_modules = {h.rsplit(".", 1)[0] for h in saved.values()}
    linears = linear_modules(model)
    if isinstance(targets, list) and [t.lower() for t in targets] == [ALL_LINEAR]:  # a run config's list
        targets = ALL_LINEAR
    all_linear = isinstance(targets, str) and targets.lower() == ALL_LINEAR
    if all_linear:
        # PEFT's shorthand: every linear layer but the output layer, saved as the list of the paths
        # adapted (below: not a modules_to_save head such as TOKEN_CLS's classifier, which PEFT
        # refuses to find among the targets too)
        targets = sorted({p for blocks in linears.values() for p, _, _ in blocks} - OUTPUT_LAYERS)
    chosen: dict[str, dict[str, tuple[str, int, int]]] = {}
    for ours, blocks in linears.items():
        for hf_path, start, stop in blocks:
            if not _matches(hf_path, targets):
                continue
            if config.exclude_modules is not None and _matches(hf_path, config.exclude_modules):
                continue
            if any(hf_path == m or hf_path.startswith(m + ".") for m in saved_modules):
                continue  # PEFT trains a module_to_save in full, never adapts inside it
            part = hf_path.rsplit(".", 1)[-1]
            chosen.setdefault(ours, {})[part] = (hf_path, start, stop)
    if all_linear:
        config.target_modules = sorted(p for parts in chosen.values() for p, _, _ in parts.values())
    valid = sorted({p.rsplit(".", 1)[-1] for blocks in linears.values() for p, _, _ in blocks})
    if isinstance(targets, str):
        if not chosen:
            raise ConfigError(f"LoRA target_modules regex {targets!r} matches no linear module of "
                              f"{type(model).__name__}; its module names are: {', '.join(valid)}")
    else:
        missing = [t for t in targets if not any(_matches(p, [t]) for blocks in linears.values()
                                                  for p, _, _ in blocks)]
        if missing:
            raise ConfigError(f"LoRA target_modules {missing} match no linear module of "
                              f"{type(model).__name__}; valid names (transformers'): {', '.join(valid)}")
        if not chosen:
            raise ConfigError(f"LoRA target_modules {targets}: every match is excluded (exclude_modules) or "
                              f"inside a module trained in full (modules_to_save)")
    return chosen


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, module)


DEFAULT = "default"  # PEFT's name of a model's only adapter

class PeftModel(nn.Module):
    """A model with LoRA adapters; calls and attributes pass through to ``base_model``."""

    def __init__(self, model: nn.Module, config: LoraConfig):
        super().__init__()
        if isinstance(model, PeftModel):
            raise ConfigError("this model already has LoRA adapters (merge_and_unload() it first)")
        adapted = next((n for n, m in model.named_modules() if isinstance(m, LoraLinear)), None)
        if adapted is not None:
            # a second PeftModel on the same base object would stack onto the first adapter (both
            # models would then compute A + B)
            raise ConfigError(f"this model already holds LoRA layers (e.g. {adapted!r}): it is the base of another "
                              f"PeftModel. Load each adapter on a fresh base model (from_pretrained again, or "
                              f"copy.deepcopy(base) before the first adapter), or merge_and_unload() the first "
                              f"adapter before adding another")
        if not hasattr(model, "hf_keymap"):
            raise ConfigError(f"LoRA needs a t5electra model (with a transformers key map), got {type(model).__name__}")
        # as PEFT: adapter name -> config; one adapter per model here, PEFT's default name
        self.peft_config: dict[str, LoraConfig] = {DEFAULT: config}
        self.active_adapter = DEFAULT
        saved = _saved_parameters(model, config.all_modules_to_save(), TASK_HEADS.get(config.task_type, ()))
        targets = _resolve(model, config, saved)
        for p in model.parameters():
            p.requires_grad_(False)
        # PEFT key -> our parameter name inside base_model
        self._peft_keys: dict[str, str] = {}
        self._base_keys: dict[str, str] = {}  # optional in a file: a base weight PEFT saved (loaded like PEFT)
        for ours, parts in targets.items():
            base = model.get_submodule(ours)
            _set_module(model, ours, LoraLinear(base, {n: (s, e) for n, (_, s, e) in parts.items()}, r=config.r,
                                                scaling=config.scaling, dropout=config.lora_dropout,
                                                init_lora_weights=config.init_lora_weights))
            for n, (hf_path, _, _) in parts.items():
                for ab in ("lora_A", "lora_B"):
                    self._peft_keys[f"{PREFIX}{hf_path}.{ab}.weight"] = f"{ours}.{ab}.{n}.weight"
            if len(parts) == 1:  # PEFT saves an adapted output layer's own weight too (save_embedding_layers)
                (hf_path, _, _), = parts.values()
                self._base_keys[f"{PREFIX}{hf_path}.base_layer.weight"] = f"{ours}.base_layer.weight"
        for ours, hf in saved.items():
            self._peft_keys[PREFIX + hf] = ours
        params = dict(model.named_parameters())
        # modules_to_save train in place; disable_adapter() puts the base's values back for its block, as
        # PEFT's ModulesToSaveWrapper runs its original module then (PEFT too keeps both copies)
        self._saved_originals = {ours: params[ours].detach().clone() for ours in saved}
        for ours in self._peft_keys.values():
            params[ours].requires_grad_(not config.inference_mode)
        self.base_model = model

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)  # parameters, buffers, submodules of this wrapper
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    def forward(self, *args, **kwargs):
        return self.base_model(*args, **kwargs)

    def generate(self, *args, **kwargs):
        return self.base_model.generate(*args, **kwargs)

    @property
    def active_adapters(self) -> list[str]:
        return [self.active_adapter]

    def get_base_model(self) -> nn.Module:
        """The wrapped model (its LoRA layers still in place), as PEFT's method."""
        return self.base_model

    @contextlib.contextmanager
    def disable_adapter(self):
        """``with model.disable_adapter():`` the base model's outputs (every adapter off, and the
        modules_to_save with the base's weights, not the trained ones), as PEFT's."""
        layers = self._lora_layers()
        if any(m.merged for m in layers):
            raise ConfigError("disable_adapter: the adapters are merged into the base weights")
        params = dict(self.base_model.named_parameters())
        trained = {k: params[k].detach().clone() for k in self._saved_originals}
        with torch.no_grad():
            for k, t in self._saved_originals.items():
                params[k].copy_(t)
        for m in layers:
            m.disabled = True
        try:
            yield
        finally:
            for m in layers:
                m.disabled = False
            with torch.no_grad():
                for k, t in trained.items():
                    params[k].copy_(t)

    def _lora_layers(self) -> list[LoraLinear]:
        return [m for m in self.base_model.modules() if isinstance(m, LoraLinear)]

    # -- parameters -----------------------------------------------------------------------------
    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts (the frozen base included in all)."""
        params = {id(p): p for p in self.parameters()}.values()
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        t, n = self.get_nb_trainable_parameters()
        print(f"trainable params: {t:,d} || all params: {n:,d} || trainable%: {100 * t / n:.4f}")

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The adapter and modules_to_save tensors under PEFT's key names."""
        if self.__dict__.get("_unloaded"):
            raise ConfigError("the adapters were merged into the base weights (merge_and_unload): there is no "
                              "adapter left to save or load")
        params = dict(self.base_model.named_parameters())
        return {k: params[ours] for k, ours in self._peft_keys.items()}

    def load_adapter_state_dict(self, sd: dict[str, torch.Tensor], source: str = "the adapter") -> None:
        """Copy PEFT-named tensors in, checking that every key is ours and every shape fits."""
        if self.__dict__.get("_unloaded"):
            raise ConfigError("the adapters were merged into the base weights (merge_and_unload): load the "
                              "adapter into a fresh base model")
        sd = {_peft_key(k): v for k, v in sd.items()}
        prefix = getattr(self.base_model, "encoder_prefix", None)
        if prefix is not None:  # ELECTRA classes: a BERT adapter's "bert." (or a bare encoder's) body keys
            body, _ = normalize_prefix({k.removeprefix(PREFIX): v for k, v in sd.items()}, {}, prefix)
            sd = {PREFIX + k: v for k, v in body.items()}
        unexpected = sorted(set(sd) - set(self._peft_keys) - set(self._base_keys))
        if unexpected:
            raise WeightsMismatchError(
                f"{source}: {len(unexpected)} tensor(s) this model has no place for, e.g. {unexpected[:3]} "
                f"(an adapter for another model, or a config whose target_modules differ?)")
        missing = sorted(set(self._peft_keys) - set(sd))
        if missing:
            raise WeightsMismatchError(f"{source}: {len(missing)} adapter tensor(s) missing, e.g. {missing[:3]}")
        params = dict(self.base_model.named_parameters())
        names = {**self._base_keys, **self._peft_keys}
        for k, t in sd.items():
            want = params[names[k]].shape
            if t.shape != want:
                raise WeightsMismatchError(f"{source}: {k!r} has shape {tuple(t.shape)}, this model expects "
                                           f"{tuple(want)} (an adapter trained on another base model?)")
        with torch.no_grad():
            for k, t in sd.items():
                params[names[k]].copy_(t)  # a saved base weight replaces the model's, as PEFT loads it

    # -- files ----------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """adapter_config.json + adapter_model.safetensors, as peft.PeftModel.save_pretrained writes them."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        config = self.peft_config[DEFAULT]
        if config.base_model_name_or_path is None and getattr(self.base_model, "name_or_path", None):
            config.base_model_name_or_path = self.base_model.name_or_path
        save_state_dict(self.adapter_state_dict(), d, WEIGHTS_NAME)
        config.save_pretrained(d)
        return d

    @classmethod
    def from_pretrained(cls, model: nn.Module, directory: str | os.PathLike, adapter_name: str = DEFAULT, *,
                        is_trainable: bool = False) -> PeftModel:
        """``model`` with the adapter of ``directory`` (written here or by PEFT); frozen and in eval
        mode (dropout off, as PEFT leaves it) unless ``is_trainable``."""
        _one_adapter(adapter_name)
        d = checkpoint_dir(directory)
        config = LoraConfig.from_pretrained(d)
        config.inference_mode = not is_trainable
        peft_model = cls(model, config)
        peft_model.load_adapter(d)
        if not is_trainable:  # for inference: a base left in train mode would answer with dropout on
            peft_model.eval()
        return peft_model

    def load_adapter(self, directory: str | os.PathLike, adapter_name: str = DEFAULT) -> None:
        """Load the adapter weights of ``directory`` (a save_pretrained of the same config) into this model."""
        _one_adapter(adapter_name)
        path = checkpoint_dir(directory) / WEIGHTS_NAME
        if not path.is_file():
            found = ", ".join(sorted(p.name for p in path.parent.iterdir())) or "nothing"
            raise CheckpointNotFoundError(f"no {WEIGHTS_NAME} in {path.parent} (found: {found}); adapters are "
                                          f"read from safetensors only")
        self.load_adapter_state_dict(load_safetensors(path), str(path))

    # -- merging --------------------------------------------------------------------------------
    @torch.no_grad()
    def merge_and_unload(self) -> nn.Module:
        """Fold every adapter into its base weight and return the plain model (its class, its
        save_pretrained); modules_to_save are already trained in place."""
        return self._unload(merge=True)

    @torch.no_grad()
    def unload(self) -> nn.Module:
        """The plain model without the adapters (not merged: the base weights as they were), as PEFT's."""
        if any(m.merged for m in self._lora_layers()):
            raise ConfigError("unload: the adapters are merged into the base weights (use merge_and_unload)")
        return self._unload(merge=False)

    def _unload(self, merge: bool) -> nn.Module:
        model = self.base_model
        for name, module in list(model.named_modules()):
            if isinstance(module, LoraLinear):
                if merge:
                    module.merge()
                _set_module(model, name, module.base_layer)
        self._unloaded = True
        return model


def _one_adapter(name: str) -> None:
    if name != DEFAULT:
        raise ConfigError(f"adapter_name={name!r}: a model holds one adapter here, named {DEFAULT!r} (PEFT's default); "
                          f"for several, load each on its own copy of the base model, or merge_and_unload() one first")


def _peft_key(key: str) -> str:
    """PEFT names saved by older versions or for a named adapter (``lora_A.default.weight``)."""
    return re.sub(r"\.(lora_[AB])\.default\.weight\Z", r".\1.weight", key)


def get_peft_model(model: nn.Module, config: LoraConfig) -> PeftModel:
    """Freeze ``model`` and add the LoRA adapters ``config`` describes (PEFT's function)."""
    if not isinstance(config, LoraConfig):
        raise ConfigError(f"get_peft_model needs a t5electra LoraConfig, got {type(config).__name__}")
    return PeftModel(model, config)
