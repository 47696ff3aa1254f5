"""t5electra: T5 and ELECTRA from principle to practice, in readable PyTorch.

Public names follow transformers, so ``from t5electra import T5ForConditionalGeneration`` is a
drop-in for the same import from transformers (with local checkpoint directories).
Imports are lazy: ``import t5electra`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "T5Config": "t5electra.models.t5",
    "T5Model": "t5electra.models.t5",
    "T5ForConditionalGeneration": "t5electra.models.t5",
    "T5EncoderModel": "t5electra.models.t5",
    "T5Tokenizer": "t5electra.tokenizers",
    "ElectraConfig": "t5electra.models.electra",
    "ElectraModel": "t5electra.models.electra",
    "ElectraForPreTraining": "t5electra.models.electra",
    "ElectraForMaskedLM": "t5electra.models.electra",
    "ElectraForSequenceClassification": "t5electra.models.electra",
    "ElectraForTokenClassification": "t5electra.models.electra",
    "ElectraForQuestionAnswering": "t5electra.models.electra",
    "ElectraPretrainer": "t5electra.models.electra_rtd",
    "ElectraPipeline": "t5electra.pipelines",
    "ElectraTokenizer": "t5electra.tokenizers",
    "LoraConfig": "t5electra.lora",
    "PeftModel": "t5electra.lora",
    "get_peft_model": "t5electra.lora",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 't5electra' has no attribute {name!r}")


def __dir__():
    return __all__
