"""What every model class shares: ``from_pretrained`` / ``save_pretrained`` in the HF layout, and
the output container.

A model class sets ``config_class`` and implements ``hf_keymap(config)`` (a declarative
:class:`~t5electra.checkpoint.keymap.KeyMap`). Loading checks every tensor: a missing, unexpected
or mis-shaped one raises :class:`~t5electra.errors.WeightsMismatchError` naming the key, the shapes
and the file. Parameters a class creates fresh on purpose (a new task head on an encoder-only
checkpoint) are listed by ``newly_initialized_ok`` and reported, as transformers does.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import json
import logging
import os
import re
import threading
import warnings
from pathlib import Path
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from .checkpoint.hf_options import device_from_map, pop_load_options
from .checkpoint.io import checkpoint_dir, load_state_dict, save_weights, shard_size_bytes
from .checkpoint.keymap import KeyMap
from .config import ModelConfig
from .core.outputs import ModelOutput  # noqa: F401 (modeling.ModelOutput, its old home)
from .core.atomic import write_text_atomic
from .core.generation_config import GenerationConfig
from .errors import CheckpointError, ConfigError, InvalidInputError, WeightsMismatchError
from .nn.position import RelativePositionBias
from .nn.recompute import set_activation_checkpointing

logger = logging.getLogger("t5electra")
# load_hf_state_dict's line for parameters left as initialised: FreshWarningHeld holds it back where
# the caller fills them next (a LoRA adapter's saved head, a resumed run's checkpoint)
FRESH_WARNING = "%s: newly initialised (train before use): %s"


class FreshWarningHeld(logging.Filter):
    """``with FreshWarningHeld():`` this thread's from_pretrained says nothing of newly initialised
    weights (``load_report`` still lists them): for a caller that fills them right after, where
    "train before use" would call a trained head untrained."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != FRESH_WARNING or record.thread != self.thread

    def __enter__(self) -> FreshWarningHeld:
        logger.addFilter(self)
        return self

    def __exit__(self, *exc: object) -> None:
        logger.removeFilter(self)


class TransformersDiffersWarning(UserWarning):
    """save_pretrained wrote a directory that transformers loads without an error but computes
    something else from (:meth:`PreTrainedModel.transformers_differs`)."""


# the TransformersDiffersWarning texts said so far: each once a process (as transformers' warning_once),
# not at every checkpoint of a run (Python's own once-per-place is reset by any catch_warnings block)
_SAID: set[str] = set()


@dataclasses.dataclass
class LoadReport:
    """What from_pretrained did besides the one-to-one copy."""

    unused: list[str]            # HF keys present in the files and not used (e.g. BERT's pooler)
    newly_initialized: list[str]  # our parameters not in the files, initialised fresh
    # (HF key, shape in the file, shape of the model) of tensors left fresh (ignore_mismatched_sizes=True)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = dataclasses.field(default_factory=list)


_DTYPES = {"float32": torch.float32, "float": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
           "bf16": torch.bfloat16, "float16": torch.float16, "half": torch.float16, "fp16": torch.float16}


def _resolve_dtype(value: Any, config: ModelConfig, hf_sd: dict[str, torch.Tensor]) -> torch.dtype | None:
    """``from_pretrained``'s dtype argument as a torch.dtype (None: leave the model fp32)."""
    if value is None or isinstance(value, torch.dtype):
        if value is not None and not value.is_floating_point:
            raise ConfigError(f"dtype={value}: a model's weights take a floating-point dtype "
                              f"({', '.join(sorted({str(t).replace('torch.', '') for t in _DTYPES.values()}))})")
        return value
    if isinstance(value, str):
        name = value.strip().lower().removeprefix("torch.")
        if name == "auto":
            recorded = config.extra.get("dtype") or config.extra.get("torch_dtype")
            if isinstance(recorded, str) and recorded.lower() in _DTYPES:
                return _DTYPES[recorded.lower()]
            stored = next((t.dtype for t in hf_sd.values() if t.is_floating_point()), None)
            return stored
        if name in _DTYPES:
            return _DTYPES[name]
    raise ConfigError(f"dtype={value!r}: expected a torch.dtype, 'auto' or one of {', '.join(sorted(_DTYPES))}")


def resized_rows(module: nn.Module, n: int) -> nn.Module:
    """A copy of an Embedding or Linear with ``n`` rows (output features): the first rows kept, new
    ones at the mean of the old ones, a new bias entry 0."""
    w = module.weight
    keep = min(n, w.shape[0])
    if isinstance(module, nn.Embedding):
        new = nn.Embedding(n, w.shape[1], padding_idx=module.padding_idx if (module.padding_idx or 0) < n else None,
                           device=w.device, dtype=w.dtype)
    else:
        new = nn.Linear(w.shape[1], n, bias=module.bias is not None, device=w.device, dtype=w.dtype)
        if module.bias is not None:
            new.bias.zero_()
            new.bias[:keep] = module.bias[:keep]
    new.weight[:keep] = w[:keep]
    new.weight[keep:] = w.float().mean(0).to(w.dtype)
    new.requires_grad_(w.requires_grad)  # a frozen embedding stays frozen
    return new


class ModuleView(nn.Module):
    """Some of a model's submodules (the same modules, not copies) as one nn.Module, callable: what
    transformers' ``get_encoder()`` / ``get_decoder()`` return. ``parameters()``, ``eval()``,
    ``requires_grad_()``, ``to()`` act on the model's own parameters; calling it runs ``call`` (a
    method of the model); ``return_dict=False`` gives the tuple, and options left out take the model
    config's values (``return_dict``, ``output_hidden_states`` / ``output_attentions`` where ``call``
    takes them), as a model call does. Not registered
    in the model (its state dict is unchanged); each ``get_...()`` call makes a new view of the
    model's current modules, so hooks belong on the modules themselves."""

    def __init__(self, call: Any, **modules: nn.Module):
        super().__init__()
        self.call = call
        # the output options ``call`` takes, which a config may switch on (forward)
        self._config_options = [n for n in ("output_hidden_states", "output_attentions")
                                if n in inspect.signature(call).parameters]
        for name, module in modules.items():
            self.add_module(name, module)

    def forward(self, *args: Any, return_dict: bool | None = None, **kwargs: Any):
        config = getattr(getattr(self.call, "__self__", None), "config", None)
        for name in self._config_options:
            if kwargs.get(name) is None and getattr(config, name, False):
                kwargs[name] = True
        out = self.call(*args, **kwargs)
        if return_dict is None:
            return_dict = getattr(config, "return_dict", True)
        return out.to_tuple() if return_dict is False else out


# How the library calls its own models: an output object, and no hidden states or attention maps
# whatever a config.json asks for (transformers' call defaults, honoured for your calls: output_attentions
# true in a saved config made every forward of serve, evaluation and training ~40 % slower)
OWN_CALL = {"return_dict": True, "output_hidden_states": False, "output_attentions": False}


class PreTrainedModel(nn.Module):
    config_class: ClassVar[type[ModelConfig]]
    # Regexes of our keys that may be absent from a checkpoint (fresh task heads).
    newly_initialized_ok: ClassVar[tuple[str, ...]] = ()
    # Names of submodules (last name component) that stay fp32 when the model is cast to fp16
    # (``half()``, ``to(torch.float16)``, ``from_pretrained(torch_dtype=torch.float16)``), as transformers'.
    _keep_in_fp32_modules: ClassVar[tuple[str, ...]] = ()
    # Module path of the token embedding (get/set_input_embeddings, resize_token_embeddings).
    input_embeddings_path: ClassVar[str]

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.generation_config = GenerationConfig(_from_model_config=True)  # generation_config.json's decoding defaults

    def __call__(self, *args: Any, return_dict: bool | None = None, use_cache: bool | None = None, **kwargs: Any):
        """``forward``, also taking two of transformers' call options: ``return_dict=False`` gives the
        output as a tuple of its fields that are not None, in transformers' order (as transformers'
        with ``use_cache=False``: a full forward here returns no cache), and ``use_cache``: False or
        None (what transformers' Trainer, Seq2SeqTrainer and pipelines pass, if anything); True is
        refused, since a full forward keeps and returns no cache (T5 decodes incrementally through
        ``generate`` or ``new_decoder_cache`` + ``decode_step``).
        As in transformers, ``return_dict``, ``output_hidden_states`` and ``output_attentions`` left out
        (or None) take the config's values (config.json's, default True / False / False); the
        library's own callers pass ``return_dict=True``."""
        for name, flag in (("return_dict", return_dict), ("use_cache", use_cache)):
            if flag is not None and not isinstance(flag, bool):
                raise InvalidInputError(f"{name} must be True, False or None, got {flag!r}")
        if use_cache:
            how = (" decode incrementally with model.generate(...), or model.new_decoder_cache(...) + "
                   "model.decode_step(...);" if hasattr(self, "decode_step") else "")
            raise InvalidInputError(f"{type(self).__name__}(use_cache=True): a full forward here keeps no cache and "
                                    f"returns none;{how} pass use_cache=False or leave it out")
        positional = self._positional_names()
        if len(args) > len(positional):
            raise TypeError(f"{type(self).__name__} takes {len(positional)} positional arguments "
                            f"({', '.join(positional)}), got {len(args)}: pass the others by keyword (labels=..., "
                            f"...); transformers' next positional argument is not one this model takes")
        for name in ("output_hidden_states", "output_attentions"):
            if kwargs.get(name) is None:
                kwargs.pop(name, None)
                if getattr(self.config, name):
                    kwargs[name] = True
        out = super().__call__(*args, **kwargs)
        if return_dict is None:
            return_dict = self.config.return_dict
        return out.to_tuple() if return_dict is False and hasattr(out, "to_tuple") else out

    @classmethod
    def _positional_names(cls) -> tuple[str, ...]:
        """The arguments ``forward`` takes by position (those before its ``*``), as in transformers' order."""
        names = cls.__dict__.get("_forward_positional")
        if names is None:
            params = list(inspect.signature(cls.forward).parameters.values())[1:]
            names = tuple(p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
            type.__setattr__(cls, "_forward_positional", names)
        return names

    # -- to be provided by each model ---------------------------------------------------------
    @classmethod
    def hf_keymap(cls, config: ModelConfig) -> KeyMap:  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def config_for_checkpoint(cls, config: ModelConfig, hf_sd: dict[str, torch.Tensor]) -> ModelConfig:
        """Adjust the config to what the weights show (e.g. an lm_head stored untied); default: as is."""
        return config

    def tie_weights(self) -> None:
        """Re-establish parameter sharing after loading; default: nothing to tie."""

    def to(self, *args: Any, **kwargs: Any):
        """``nn.Module.to``; to fp16, the modules named in ``_keep_in_fp32_modules`` stay fp32."""
        super().to(*args, **kwargs)
        dtype = torch._C._nn._parse_to(*args, **kwargs)[1]
        if dtype == torch.float16:
            self._keep_fp32()
        return self

    def half(self):
        super().half()
        self._keep_fp32()
        return self

    def _keep_fp32(self) -> None:
        for name, module in self.named_modules():
            if name.rsplit(".", 1)[-1] in self._keep_in_fp32_modules:
                module.float()

    # transformers' flag: activation checkpointing is available (T5 blocks, ELECTRA layers)
    supports_gradient_checkpointing: ClassVar[bool] = True

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict[str, Any] | None = None,
                                        every_n_layers: int = 1, offload: bool = False) -> None:
        """Recompute blocks' activations in backward instead of keeping them (nn/recompute.py), as
        transformers' method of this name (5.x; what its Trainer calls for ``gradient_checkpointing=True``).
        ``every_n_layers``: only blocks 0, n, 2n, ... (over the whole model, encoder then decoder);
        ``offload``: what the recomputation keeps (each block's input) waits in host memory.
        ``activation_checkpointing_kwargs``: only ``use_reentrant`` is known; the non-reentrant
        recomputation is what runs (same gradients, RNG state restored)."""
        unknown = set(activation_checkpointing_kwargs or {}) - {"use_reentrant"}
        if unknown:
            raise ConfigError(f"activation_checkpointing_kwargs: unknown {sorted(unknown)} (only use_reentrant)")
        if isinstance(every_n_layers, bool) or not isinstance(every_n_layers, int) or every_n_layers < 1:
            raise ConfigError(f"every_n_layers must be a positive integer (1: every block), got {every_n_layers!r}")
        if not isinstance(offload, bool):
            raise ConfigError(f"offload must be True or False, got {offload!r}")
        if set_activation_checkpointing(self, True, every_n_layers=every_n_layers, offload=offload) == 0:
            raise ConfigError(f"{type(self).__name__} has no blocks that support activation checkpointing")

    def activation_checkpointing_disable(self) -> None:
        set_activation_checkpointing(self, False)

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None,
                                      every_n_layers: int = 1, offload: bool = False) -> None:
        """transformers' older name of ``activation_checkpointing_enable`` (the same arguments)."""
        self.activation_checkpointing_enable(gradient_checkpointing_kwargs, every_n_layers, offload)

    def gradient_checkpointing_disable(self) -> None:
        self.activation_checkpointing_disable()

    @property
    def is_activation_checkpointing(self) -> bool:
        """Whether any block recomputes its activations in backward."""
        return any(getattr(m, "checkpoint_activations", False) for m in self.modules())

    @property
    def is_gradient_checkpointing(self) -> bool:
        """transformers' older name of ``is_activation_checkpointing``."""
        return self.is_activation_checkpointing

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """Parameters counted once each (tied ones once); transformers' two filters (embeddings: its
        nn.Embedding tables, which include T5's relative position bias)."""
        params = {id(p): p for p in self.parameters() if p.requires_grad or not only_trainable}
        if exclude_embeddings:
            for m in self.modules():
                if isinstance(m, (nn.Embedding, RelativePositionBias)):
                    params.pop(id(m.weight), None)
        return sum(p.numel() for p in params.values())

    # -- loading --------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, *, torch_dtype: torch.dtype | str | None = None,
                        dtype: torch.dtype | str | None = None, config: Any = None,
                        attn_implementation: str | None = None, subfolder: str = "", device_map: Any = None,
                        ignore_mismatched_sizes: bool = False, output_loading_info: bool = False,
                        use_safetensors: bool | None = None, **config_overrides: Any):
        """Load a checkpoint directory written by transformers or by ``save_pretrained``.

        ``dtype`` (transformers 5's name; ``torch_dtype`` is the older one): a ``torch.dtype``, its
        name (``"bfloat16"``), or ``"auto"`` (the dtype config.json records, else that of the stored
        weights); None keeps fp32 (transformers 5's default is "auto"). ``config``: use (a copy of)
        this config instead of config.json's (ours, or transformers' config object, read through its
        ``to_dict()``). ``attn_implementation``: "sdpa" or "eager" (set_attn_implementation, where the
        model has it). ``subfolder``: the checkpoint is ``directory/subfolder``. ``device_map``: the one
        device the model goes to ("cuda", "cpu", 0, ``{"": device}``; maps that split it are refused).
        ``ignore_mismatched_sizes``: a tensor whose shape differs from the model's is left initialised
        afresh, with a warning (``load_report.mismatched``), instead of a WeightsMismatchError (e.g. a
        new ``num_labels``). ``output_loading_info``: return ``(model, info)``, ``info`` as transformers'
        (``missing_keys``, ``unexpected_keys``, ``mismatched_keys``, ``error_msgs``; transformers' names).
        ``use_safetensors=False``: read pytorch_model.bin (or its shards) only, even where .safetensors are
        present (None, True: .safetensors first, else .bin; a .bin only through torch.load(weights_only=True)).
        transformers' loading options that change nothing for a local directory are accepted
        (``local_files_only``, ``low_cpu_mem_usage``, ``token``, ...: hf_options.HF_LOAD_OPTIONS),
        with other values refused by name. Other keyword arguments override config fields
        (``num_labels=3``, ``output_attentions=True``). generation_config.json, where present, becomes
        ``model.generation_config`` (generate's defaults).
        """
        if torch_dtype is not None and dtype is not None and torch_dtype != dtype:
            raise ConfigError(f"both dtype={dtype!r} and torch_dtype={torch_dtype!r} given: pass one")
        pop_load_options(config_overrides)
        for name, flag in (("ignore_mismatched_sizes", ignore_mismatched_sizes),
                           ("output_loading_info", output_loading_info), ("use_safetensors", use_safetensors)):
            if not isinstance(flag, bool) and not (name == "use_safetensors" and flag is None):
                raise ConfigError(f"from_pretrained({name}={flag!r}): expected True or False")
        if directory is None or not isinstance(subfolder, (str, os.PathLike)):
            raise ConfigError(f"from_pretrained takes a checkpoint directory (and subfolder a folder name in it), got "
                              f"{directory!r}" + (f", subfolder={subfolder!r}" if subfolder else ""))
        device = device_from_map(device_map)  # checked before anything is read
        wanted = dtype if dtype is not None else torch_dtype
        d = checkpoint_dir(Path(directory) / subfolder)
        given_config = config is not None
        if given_config:
            config = cls._own_config(config)
            config = config.replace(**config_overrides) if config_overrides else config
        else:
            config = cls.config_class.from_pretrained(d, **config_overrides)
        hf_sd, sources = load_state_dict(d, safetensors=use_safetensors is not False)
        config = cls.config_for_checkpoint(config, hf_sd)
        target = _resolve_dtype(wanted, config, hf_sd)  # checked before the model is built
        model = cls(config)
        # tie_word_embeddings=False (a keyword, or a config= that says so) on a tied checkpoint: its
        # output layer is not in the file (the embedding is); transformers initialises a fresh one, as
        # here (reported). Only then: an untied checkpoint without its output layer stays an error.
        untie = config_overrides.get("tie_word_embeddings") is False or (
            given_config and getattr(config, "tie_word_embeddings", True) is False)
        model.load_hf_state_dict(hf_sd, sources, ignore_mismatched_sizes=ignore_mismatched_sizes,
                                 fresh_output_layer=untie)
        if target is not None:
            model.to(target)
        if device is not None:
            model.to(device)
        model.name_or_path = str(d)
        model.generation_config = GenerationConfig.from_dir(d)
        if attn_implementation is not None:
            if not hasattr(model, "set_attn_implementation"):
                raise ConfigError(f"{cls.__name__} has one attention implementation: drop attn_implementation")
            model.set_attn_implementation(attn_implementation)
        model.eval()
        return (model, model._loading_info()) if output_loading_info else model

    def _loading_info(self) -> dict[str, Any]:
        """``load_report`` as transformers' ``output_loading_info`` dict (HF names, as its keys are)."""
        report, keymap = self.load_report, self.hf_keymap(self.config)
        return {"missing_keys": {n for k in report.newly_initialized for n in (keymap.hf_names(k) or (k,))},
                "unexpected_keys": set(report.unused), "mismatched_keys": set(report.mismatched), "error_msgs": []}

    @classmethod
    def _own_config(cls, config: Any) -> ModelConfig:
        """``from_pretrained(config=...)``: a copy of our config (the model's changes, e.g. a resized
        vocabulary, stay out of the caller's object, as transformers copies it), or transformers' (its
        ``to_dict()``, read as its config.json would be: same fields, the same checks)."""
        if isinstance(config, cls.config_class):
            return copy.deepcopy(config)
        name = f"{type(config).__module__}.{type(config).__name__}"
        if name.startswith("transformers.") and callable(getattr(config, "to_dict", None)):
            return cls.config_class.from_dict(config.to_dict(), source=f"config={name}")
        raise ConfigError(f"config must be a t5electra.{cls.config_class.__name__} or a transformers config, got {name}")

    def load_hf_state_dict(self, hf_sd: dict[str, torch.Tensor], sources: dict[str, str] | None = None, *,
                           ignore_mismatched_sizes: bool = False, fresh_output_layer: bool = False) -> LoadReport:
        """Copy an HF-named state dict into this model, checking every key and shape
        (``ignore_mismatched_sizes``: a tensor of another shape is skipped, its parameter left as it is;
        ``fresh_output_layer``: an untied output layer missing from the file keeps its initialisation)."""
        sources = sources or {}
        keymap = self.hf_keymap(self.config)
        ours, unused, origin = keymap.from_hf(hf_sd, sources)
        unexpected = [k for k in unused if not keymap.is_ignored(k)]
        expected = self.state_dict()
        if unexpected and set(hf_sd) <= set(expected):
            # our own names (``model.state_dict()`` saved as is, e.g. by a generic trainer): loaded as
            # they are, with the same checks; tied duplicates may be left out, as safetensors requires
            ours, unused, origin = dict(hf_sd), [], {k: k for k in hf_sd}
            expected = {k: v for k, v in expected.items() if k in hf_sd or k not in self._tied_aliases(hf_sd)}
        elif unexpected:
            where = sources.get(unexpected[0], "the checkpoint")
            raise WeightsMismatchError(
                f"{where}: {len(unexpected)} unexpected tensor(s) for {type(self).__name__}, "
                f"e.g. {unexpected[:5]} (wrong model class or config?)")
        extra = [k for k in ours if k not in expected]
        if extra:
            raise WeightsMismatchError(
                f"key map produced {extra[:5]}, which {type(self).__name__} does not have (config mismatch?)")
        missing = [k for k in expected if k not in ours]
        head = self.get_output_embeddings() if fresh_output_layer else None
        untied_head = ({n for n, p in self.named_parameters() if p is head.weight}
                       if head is not None and head.weight is not self.get_input_embeddings().weight else set())
        fresh = [k for k in missing if k in untied_head or any(re.fullmatch(p, k) for p in self.newly_initialized_ok)]
        hard_missing = [k for k in missing if k not in fresh]
        if hard_missing:
            raise WeightsMismatchError(
                f"{sorted(set(sources.values())) or 'the checkpoint'}: {len(hard_missing)} tensor(s) missing "
                f"for {type(self).__name__}, e.g. {hard_missing[:5]}")
        mismatched = []
        for k, t in list(ours.items()):
            want = expected[k].shape
            if t.shape == want:
                continue
            hf_key = origin[k]
            if not ignore_mismatched_sizes:
                raise WeightsMismatchError(
                    f"{sources.get(hf_key, 'the checkpoint')}: tensor {hf_key!r} (our {k!r}) has shape {tuple(t.shape)}, model expects {tuple(want)} "
                    f"(config says {self._shape_hint()}); from_pretrained(..., ignore_mismatched_sizes=True) "
                    f"initialises such tensors afresh instead")
            del ours[k]
            names = keymap.hf_names(k) or (hf_key,)
            if len(names) == 1:
                mismatched.append((hf_key, tuple(t.shape), tuple(want)))
            else:  # a fused parameter: each HF tensor is 1/n of its rows
                n = len(names)
                mismatched += [(name, (t.shape[0] // n, *t.shape[1:]), (want[0] // n, *want[1:])) for name in names]
        with torch.no_grad():
            self.load_state_dict(ours, strict=False)
        self.tie_weights()
        if unused:
            logger.warning("%s: unused weights in checkpoint: %s", type(self).__name__, unused)
        if fresh:
            logger.warning(FRESH_WARNING, type(self).__name__, fresh)
        if mismatched:
            logger.warning("%s: newly initialised, the checkpoint's tensors having other shapes "
                           "(ignore_mismatched_sizes=True; train before use): %s", type(self).__name__,
                           ", ".join(f"{k} {tuple(a)} -> {tuple(b)}" for k, a, b in mismatched))
        self.load_report = LoadReport(unused=list(unused), newly_initialized=fresh, mismatched=mismatched)
        return self.load_report

    def _tied_aliases(self, present: Mapping[str, Any]) -> set[str]:
        """State-dict names of tensors that share their storage with one of ``present``'s names."""
        by_ptr: dict[tuple, list[str]] = {}
        for name, t in self.state_dict(keep_vars=True).items():
            by_ptr.setdefault((t.data_ptr(), tuple(t.shape), t.stride()), []).append(name)
        return {n for names in by_ptr.values() if any(m in present for m in names) for n in names if n not in present}

    # -- vocabulary (transformers' names) -------------------------------------------------------
    def get_input_embeddings(self) -> nn.Embedding:
        return self.get_submodule(self.input_embeddings_path)

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        parent, _, name = self.input_embeddings_path.rpartition(".")
        setattr(self.get_submodule(parent), name, value)  # get_submodule("") is the model itself

    def get_output_embeddings(self) -> nn.Module | None:
        """The output layer (None: the model has none); a tied one is a Linear over the input
        embedding's own weight (``get_output_embeddings().weight is get_input_embeddings().weight``)."""
        return None

    def set_output_embeddings(self, value: nn.Linear) -> None:
        """transformers' setter of the output layer: an nn.Linear shaped as ``get_output_embeddings()``
        (with a bias where it has one). A layer over the input embedding's own weight keeps a tied
        model tied; another weight unties them: the layer becomes the model's own output layer and
        ``config`` says so (T5: ``tie_word_embeddings=False``, v1.0's decoder-output rescaling kept),
        so that save_pretrained writes it and transformers loads it untied."""
        current = self.get_output_embeddings()
        if current is None:
            raise ConfigError(f"{type(self).__name__} has no output layer to set (get_output_embeddings() is None)")
        want = f"nn.Linear({current.in_features}, {current.out_features}, bias={current.bias is not None})"
        if (not isinstance(value, nn.Linear) or value.weight.shape != current.weight.shape
                or (value.bias is None) != (current.bias is None)):
            raise ConfigError(f"set_output_embeddings takes an {want} like get_output_embeddings(), got {value!r} "
                              f"(a new vocabulary size: resize_token_embeddings)")
        tied, shared = current.weight is self.get_input_embeddings().weight, value.weight is self.get_input_embeddings().weight
        if shared and not tied:
            raise ConfigError(f"{type(self).__name__}'s output layer has weights of its own (tie_word_embeddings="
                              f"False): a layer over the input embedding's weight would tie them; load or build the "
                              f"model with tie_word_embeddings=True instead")
        if not (shared and value.bias is current.bias):
            self._set_output(value)

    def _set_output(self, layer: nn.Linear) -> None:
        """Install ``layer`` as the output layer: each model with one (get_output_embeddings() not None)
        defines where it goes; the others never get here (set_output_embeddings refuses them)."""
        raise ConfigError(f"{type(self).__name__} has no output layer to set")

    @staticmethod
    def _tied_linear(weight: nn.Parameter, bias: nn.Parameter | None = None) -> nn.Linear:
        """An nn.Linear whose parameters are ``weight`` / ``bias`` themselves (not copies), as
        transformers' tied output layers: for callers that read or hook it, not registered here."""
        with torch.device("meta"):
            layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        layer.weight = weight
        if bias is not None:
            layer.bias = bias
        return layer

    def _resize_output(self, new_num_tokens: int) -> None:
        """Resize the rows of an output layer of the model's own (untied weights, a bias); default none."""

    @torch.no_grad()
    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None,
                                mean_resizing: bool = True) -> nn.Embedding:
        """Give the vocabulary ``new_num_tokens`` rows (rounded up to ``pad_to_multiple_of``), as
        transformers' method: after ``tokenizer.add_tokens(...)``, ``model.resize_token_embeddings(
        len(tokenizer))``. Existing rows are kept; new rows of the input embedding and of an untied
        output layer start at the mean of the existing rows (transformers samples around that mean), or,
        ``mean_resizing=False``, are drawn as the model initialises those layers; a new output bias is 0.
        ``config.vocab_size`` follows; tied output layers stay tied. Returns the input embedding."""
        if not isinstance(mean_resizing, bool):
            raise ConfigError(f"mean_resizing must be True or False, got {mean_resizing!r}")
        old = self.get_input_embeddings()
        n = old.num_embeddings if new_num_tokens is None else new_num_tokens
        if pad_to_multiple_of is not None:
            if isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1:
                raise ConfigError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of!r}")
            n = -(-n // pad_to_multiple_of) * pad_to_multiple_of
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigError(f"new_num_tokens must be a positive integer, got {new_num_tokens!r}")
        if n == old.num_embeddings:
            return old
        self.set_input_embeddings(resized_rows(old, n))
        self._resize_output(n)
        self.config.vocab_size = n
        self.tie_weights()
        if not mean_resizing:
            emb, out = self.get_input_embeddings(), self.get_output_embeddings()
            emb.weight[old.num_embeddings:].normal_(0.0, self._init_std(emb))
            if out is not None and out.weight is not emb.weight:
                out.weight[old.num_embeddings:].normal_(0.0, self._init_std(out))
        return self.get_input_embeddings()

    def _init_std(self, layer: nn.Module) -> float:
        """The std this model's init draws ``layer``'s weights with (an embedding or an output layer);
        each model family's own (T5PreTrainedModel, ElectraPreTrainedModel)."""
        raise ConfigError(f"{type(self).__name__} does not say how it initialises {type(layer).__name__} "
                          f"(resize_token_embeddings(mean_resizing=False) draws new rows as the init does)")

    def _shape_hint(self) -> str:
        c = self.config
        keys = ("vocab_size", "d_model", "hidden_size", "num_layers", "num_hidden_layers", "num_heads",
                "num_attention_heads", "embedding_size")
        return ", ".join(f"{k}={getattr(c, k)}" for k in keys if k in c.field_names())

    # -- saving ---------------------------------------------------------------------------------
    def hf_config_dict(self) -> dict[str, Any]:
        d = self.config.to_dict()
        d["architectures"] = [type(self).__name__]
        # the dtype of the weights written: under both names (transformers 5 reads "dtype", older
        # versions "torch_dtype"), replacing what a loaded config.json said
        d["torch_dtype"] = d["dtype"] = str(self.dtype).replace("torch.", "")
        return d

    def save_pretrained(self, directory: str | os.PathLike, *, safe_serialization: bool = True,
                        is_main_process: bool = True, max_shard_size: int | str | None = None,
                        state_dict: Mapping[str, torch.Tensor] | None = None, **hf_options: Any) -> Path:
        """Write config.json + model.safetensors that transformers loads with identical outputs.
        transformers' options: ``max_shard_size`` ("200KB", "5GB", bytes): weights larger than that are
        written as ``model-0000i-of-0000n.safetensors`` shards + ``model.safetensors.index.json``, as
        transformers writes them (left out: one file, however large; transformers 5 shards at "50GB");
        what an earlier save left that a reader would take instead is removed. ``state_dict``: these
        tensors instead of the model's own (the model's names, all of them, the model's shapes: e.g. a
        state dict gathered from FSDP ranks). ``safe_serialization`` must stay True (safetensors only,
        by design); ``is_main_process=False`` writes nothing (other ranks); ``push_to_hub`` can only be False."""
        if safe_serialization is not True:
            raise ConfigError("save_pretrained writes safetensors only (safe_serialization=False would write a "
                              "pickle, which loading runs as code); transformers reads model.safetensors")
        for name, value in hf_options.items():
            if name == "push_to_hub" and value is False:
                continue
            raise ConfigError(f"save_pretrained({name}=...) is not supported (no hub upload, no variants, this "
                              f"model's own config)")
        if max_shard_size is not None:
            shard_size_bytes(max_shard_size)  # a bad size is refused before anything is written
        if not is_main_process:
            return Path(directory)
        sd = self._state_dict_to_save(state_dict)
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise CheckpointError(f"save_pretrained: {str(d)!r} is a file, expected a directory (or a new path)")
        d.mkdir(parents=True, exist_ok=True)
        save_weights(self.hf_keymap(self.config).to_hf(sd), d, max_shard_size, total_parameters=self.num_parameters())
        write_text_atomic(d / "config.json", json.dumps(self.hf_config_dict(), indent=2, sort_keys=True) + "\n")
        self.generation_config.save(d, {k: getattr(self.config, k, None)
                                        for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id")})
        differs = self.transformers_differs()
        if differs and differs not in _SAID:
            _SAID.add(differs)
            warnings.warn(differs, TransformersDiffersWarning, stacklevel=2)
        return d

    def transformers_differs(self) -> str | None:
        """Why transformers' class would load this model's save_pretrained directory without an error
        but compute something else (None: it computes the same); save_pretrained warns with it, as
        ``t5electra convert`` does. The loading check cannot see it: it reloads with our class."""
        return None

    def _state_dict_to_save(self, state_dict: Mapping[str, torch.Tensor] | None) -> dict[str, torch.Tensor]:
        """``save_pretrained(state_dict=...)`` checked against the model's own state dict: the same
        names (tied copies may be left out) and shapes; None: the model's."""
        own = self.state_dict()
        if state_dict is None:
            return own
        if not isinstance(state_dict, Mapping) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
            raise ConfigError(f"save_pretrained(state_dict=...) takes a dict of tensors (model.state_dict()'s "
                              f"names), got {type(state_dict).__name__}")
        unknown, tied = [k for k in state_dict if k not in own], self._tied_aliases(state_dict)
        missing = [k for k in own if k not in state_dict and k not in tied]
        wrong = [f"{k} {tuple(state_dict[k].shape)} (model: {tuple(own[k].shape)})" for k in state_dict
                 if k in own and state_dict[k].shape != own[k].shape]
        for what, keys in (("names the model does not have", unknown), ("lacks the model's", missing),
                           ("has other shapes than the model's", wrong)):
            if keys:
                raise ConfigError(f"save_pretrained(state_dict=...) {what}: {keys[:5]}{' ...' if len(keys) > 5 else ''} "
                                  f"(config.json is the model's: the tensors must be model.state_dict()'s, by its names)")
        return dict(state_dict)
