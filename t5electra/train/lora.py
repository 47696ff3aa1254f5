"""LoRA in the fine-tuning recipes: the run config's ``lora`` section -> adapters on the model, and
what a LoRA run writes.

With ``lora.r`` set, the model built by a recipe is wrapped by ``get_peft_model`` (t5electra/lora/):
the base is frozen, so the optimizer holds only the adapters and the trained modules (an ELECTRA
task head, ``lora.modules_to_save``), and each checkpoint (``save_pretrained`` of the wrapper) is
PEFT's adapter_config.json + adapter_model.safetensors with their optimizer state: a few MB for
t5-base instead of a GB. Resuming rebuilds the base from ``model.init_from`` (the run config must
match, as for any resume) and loads the adapters. At the end ``RUN/adapter`` is the best adapter
(PEFT's files, loads with ``peft.PeftModel.from_pretrained``) and ``RUN/model`` the model with it
merged in: a plain checkpoint for evaluate, generate, serve and transformers.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from ..errors import ConfigError
from ..lora import LoraConfig, PeftModel, get_peft_model
from .checkpointing import save_final_model, unwrap_model

# The PEFT task type of each fine-tuning head; for the ELECTRA heads PEFT (and we) train the head
# in full (modules_to_save: classifier / qa_outputs).
TASK_TYPES = {"t5": "SEQ_2_SEQ_LM", "classification": "SEQ_CLS", "regression": "SEQ_CLS",
              "token_classification": "TOKEN_CLS", "qa": "QUESTION_ANS"}


def lora_config(section, task: str) -> LoraConfig | None:
    """The LoraConfig of a run's ``lora`` section (None: full fine-tuning); ``task``: 't5' or the ELECTRA head."""
    if section.r is None:
        return None
    return LoraConfig(r=section.r, lora_alpha=section.alpha, lora_dropout=section.dropout,
                      target_modules=list(section.target_modules) or None,
                      modules_to_save=list(section.modules_to_save) or None, use_rslora=section.rslora,
                      task_type=TASK_TYPES[task])


def refuse_lora(section, recipe: str) -> None:
    """Pretraining recipes: a ``lora.r`` there is a mistake, not something to ignore silently."""
    if section.r is not None:
        raise ConfigError(f"lora.r={section.r}: LoRA adapters are for fine-tuning (t5electra finetune); "
                          f"{recipe} trains every weight")


def add_lora(model: nn.Module, section, task: str) -> nn.Module:
    """``model`` with LoRA adapters when ``lora.r`` is set, else ``model`` unchanged."""
    config = lora_config(section, task)
    if config is None:
        return model
    base = getattr(model, "name_or_path", None)  # model.init_from; None for a fresh model from a preset
    # absolute, so that convert --merge and serve find the base from any working directory
    config.base_model_name_or_path = str(Path(base).resolve()) if base else None
    return get_peft_model(model, config)


def export_model(model: nn.Module, run_dir: Path) -> nn.Module:
    """The model to save as ``RUN/model``: a LoRA model writes ``RUN/adapter`` first, then its
    adapters are merged into the weights (in place: call this last); other models as they are."""
    model = unwrap_model(model)
    if not isinstance(model, PeftModel):
        return model
    save_final_model(model, Path(run_dir) / "adapter")  # whole or not at all
    return model.merge_and_unload()
