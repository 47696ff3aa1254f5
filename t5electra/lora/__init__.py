"""LoRA adapters for T5 and ELECTRA with PEFT's API, names and files (``LoraConfig``,
``get_peft_model``, ``PeftModel``): see config.py, layers.py, model.py."""

from .config import LoraConfig
from .layers import LoraLinear
from .model import PeftModel, get_peft_model, linear_modules

__all__ = ["LoraConfig", "LoraLinear", "PeftModel", "get_peft_model", "linear_modules"]
