"""transformers' ``from_pretrained`` keyword arguments that are not config fields: which are honoured,
which are accepted because they change nothing for a local directory, and which are refused by name
(rather than reported as an unknown config field, or ignored).

Honoured in ``PreTrainedModel.from_pretrained`` itself: ``dtype`` / ``torch_dtype``, ``config``,
``subfolder``, ``device_map`` (one device: :func:`device_from_map`), ``ignore_mismatched_sizes``,
``output_loading_info``, ``attn_implementation``, ``use_safetensors`` (False: the .bin files only). The others are in :data:`HF_LOAD_OPTIONS`.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError


def _is_bool(v: Any) -> bool:
    return isinstance(v, bool)


# option -> (check, what is accepted): accepted with the values that mean "nothing to do" for a local
# directory of safetensors / weights-only .bin files, refused otherwise (ConfigError naming the option).
HF_LOAD_OPTIONS: dict[str, tuple[Any, str]] = {
    "local_files_only": (_is_bool, "True or False (only a local directory is read)"),
    "low_cpu_mem_usage": (_is_bool, "True or False"),
    "trust_remote_code": (lambda v: v in (False, None), "False (no code is downloaded)"),
    "cache_dir": (lambda v: True, "anything (nothing is downloaded)"),
    "token": (lambda v: True, "anything (nothing is downloaded)"),
    "proxies": (lambda v: True, "anything (nothing is downloaded)"),
    "weights_only": (lambda v: v is True, "True (a .bin is read with torch.load(weights_only=True) only)"),
    "revision": (lambda v: v in (None, "main"), "None or 'main' (a local directory has one version)"),
    "force_download": (lambda v: v in (False, None), "False (nothing is downloaded)"),
    "variant": (lambda v: v is None, "None (model.safetensors / pytorch_model.bin are read, not model.<variant>.*)"),
    "from_tf": (lambda v: v in (False, None), "False (TensorFlow checkpoints are not read)"),
    "from_flax": (lambda v: v in (False, None), "False (Flax checkpoints are not read)"),
    "state_dict": (lambda v: v is None, "None (load a state dict into a built model with load_hf_state_dict)"),
    "quantization_config": (lambda v: v is None, "None (no quantized loading; see optimize_for_inference)"),
    "max_memory": (lambda v: v is None, "None (the model is loaded whole on one device)"),
    "offload_folder": (lambda v: v is None, "None (nothing is offloaded to disk)"),
    "offload_state_dict": (lambda v: v in (False, None), "False"),
    "gguf_file": (lambda v: v is None, "None (GGUF files are not read)"),
    "key_mapping": (lambda v: v is None, "None (the key maps are the model classes' own)"),
}

# device_map values that spread a model over several devices, which is not done here
_SPREADING = ("auto", "balanced", "balanced_low_0", "sequential")


def device_from_map(device_map: Any) -> torch.device | None:
    """``from_pretrained(device_map=...)``: the one device the whole model goes to (None: stay on
    the CPU), as transformers places it: a device name (``"cpu"``, ``"cuda"``, ``"cuda:1"``), a GPU
    index (``0``), a ``torch.device``, or ``{"": device}``. Maps that split the model ("auto", one
    device per module) are refused: load it on one device, or use transformers with accelerate."""
    if device_map is None:
        return None
    if isinstance(device_map, dict) and set(device_map) == {""}:
        device_map = device_map[""]
    if isinstance(device_map, str) and device_map in _SPREADING or isinstance(device_map, dict):
        raise ConfigError(f"device_map={device_map!r} spreads a model over devices, which is not done here: pass "
                          f"one device (device_map='cuda', 'cpu', 0, ...) or move the model with model.to(device)")
    try:
        device = (torch.device("cuda", device_map) if isinstance(device_map, int) and not isinstance(device_map, bool)
                  else torch.device(device_map))
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device_map={device_map!r}: expected a device ('cpu', 'cuda', 'cuda:1', 0, a "
                          f"torch.device) or {{'': device}}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device_map={device_map!r}: no CUDA device is available here (device_map='cpu' or leave "
                          f"it out)")
    return device


def pop_load_options(overrides: dict[str, Any]) -> None:
    """Take transformers' loading options (:data:`HF_LOAD_OPTIONS`) out of ``overrides`` (what is left
    overrides config fields); a ConfigError names one given a value that would change what is loaded."""
    for name in [k for k in overrides if k in HF_LOAD_OPTIONS]:
        value = overrides.pop(name)
        accepts, allowed = HF_LOAD_OPTIONS[name]
        if not accepts(value):
            raise ConfigError(f"from_pretrained({name}={value!r}) is not supported here: {name} can only be "
                              f"{allowed}")
