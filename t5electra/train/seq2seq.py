"""What the T5 recipes share (pretraining and fine-tuning): the tokenizer and the model a run
config names, and the teacher-forced loss."""

from __future__ import annotations

import torch

from ..errors import ConfigError
from ..modeling import OWN_CALL
from ..models.t5 import T5Config, T5ForConditionalGeneration
from ..tokenizers import T5Tokenizer
from .checkpointing import is_electra_pretraining_output, run_model_dir
from .config import RunConfig
from .loop import LOSS_WEIGHT

DEFAULT_PRESET = "t5-v1_1-small"


def load_tokenizer(cfg: RunConfig) -> T5Tokenizer:
    source = cfg.data.tokenizer or cfg.model.init_from
    if source is None:
        raise ConfigError("data.tokenizer is not set: give a T5 tokenizer directory (train one with "
                          "`t5electra tokenizer train`), or model.init_from a checkpoint that has one")
    return T5Tokenizer.from_pretrained(run_model_dir(source))


def build_model(cfg: RunConfig, tokenizer: T5Tokenizer) -> T5ForConditionalGeneration:
    """From ``model.init_from`` (a checkpoint) or ``model.preset``, with ``model.overrides``.

    A fresh model's vocabulary is sized to the tokenizer (rounded up to a multiple of 128, as
    t5-small's 32100 tokens use 32128 rows) unless ``model.overrides`` sets ``vocab_size``. The
    tokenizer must fit the model's vocabulary: checked here, before the first step.
    """
    m = cfg.model
    if m.family != "t5":
        raise ConfigError(f"model.family={m.family!r}: this recipe pretrains T5 (use 't5')")
    overrides = dict(m.overrides)

    def check_vocab(vocab_size: int) -> None:
        if len(tokenizer) > vocab_size:
            raise ConfigError(f"the tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab_size}: "
                              f"ids past it would crash the embedding (use a matching tokenizer, or set "
                              f"--model.overrides='{{vocab_size: {len(tokenizer)}}}' for a fresh model)")

    if m.init_from:
        source = run_model_dir(m.init_from)
        if is_electra_pretraining_output(source):
            raise ConfigError(f"model.init_from={m.init_from!r} is an ELECTRA pretraining output ({source}: "
                              f"generator/ + discriminator/): T5 starts from a T5 model or from model.preset")
        model = T5ForConditionalGeneration.from_pretrained(source, **overrides)
        check_vocab(model.config.vocab_size)
    else:
        overrides.setdefault("vocab_size", -(-len(tokenizer) // 128) * 128)
        check_vocab(overrides["vocab_size"])
        overrides.setdefault("pad_token_id", tokenizer.pad_token_id)
        overrides.setdefault("eos_token_id", tokenizer.eos_token_id)
        overrides.setdefault("decoder_start_token_id", tokenizer.pad_token_id)
        model = T5ForConditionalGeneration(T5Config.from_preset(m.preset or DEFAULT_PRESET, **overrides))
    return model.train()


def loss_fn(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """Mean cross-entropy over the target tokens; also the tokens seen (inputs + targets), and the
    target tokens as the loss's weight (train_step: the mean over the step's global batch; evaluate:
    over a whole split)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                **OWN_CALL)
    targets = int((batch["labels"] != -100).sum())
    # no target token (every label -100): the mean over none is NaN, which would stop training (or
    # poison the split's validation loss); a zero loss with zero gradients, of weight 0, adds nothing
    loss = out.loss if targets else out.logits.float().sum() * 0.0
    return loss, {"tokens": int(batch["attention_mask"].sum()) + targets, LOSS_WEIGHT: targets}
