"""ELECTRA pretraining: replaced-token detection with a generator and a discriminator.

One training step (Clark et al. 2020, https://arxiv.org/abs/2003.10555, section 2; official code
``run_pretraining.py`` and ``pretrain/pretrain_helpers.py`` in google-research/electra):

1. mask ~15% of the real tokens (:func:`t5electra.data.masking.mask_tokens`: 85% [MASK], 15% kept);
2. the *generator*, a small masked LM, predicts the original tokens at the chosen positions
   (cross-entropy there only: the generator loss);
3. a token is *sampled* from the generator at each chosen position with Gumbel-max, in fp32 and
   without gradient, and written into the original text;
4. the *discriminator* reads that text and predicts, for every real token, whether it was
   replaced. A sampled token equal to the original counts as original (label 0);
5. loss = gen_weight * generator loss + disc_weight * discriminator BCE (1 and 50).

The generator and discriminator share their embeddings (token, position, token type and the
embedding LayerNorm): the generator's ``electra.embeddings`` module IS the discriminator's, and
the generator's output layer is tied to the word embeddings. Because the sample carries no
gradient, the discriminator loss reaches the generator only through those shared embeddings.

Hugging Face has no joint model: :meth:`ElectraPretrainer.save_pretrained` writes ``generator/``
(an ``ElectraForMaskedLM``) and ``discriminator/`` (an ``ElectraForPreTraining``) plus
``pretraining_config.json``; :meth:`ElectraPretrainer.from_pretrained` loads both and ties them
again.

MLM-only baseline (``electra_objective=False``): no sampling, no discriminator; one masked LM is
trained with the same masking. By default it is *discriminator-sized* (a BERT of the
discriminator's shape, saved under ``generator/``), as in the official code, whose comparison is
"same model, same steps: which objective trains a better encoder". Set
``mlm_baseline_size="generator"`` to train only the small generator instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint.io import SAFE, SAFE_INDEX, SHARD_NAME
from ..core.atomic import write_text_atomic
from ..core.typed_config import check_keys, option
from ..data.masking import Generators, example_generators, mask_tokens, uniform
from ..errors import CheckpointNotFoundError, ConfigError, InvalidInputError
from ..core.outputs import ModelOutput
from .electra import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining

logger = logging.getLogger("t5electra")

PRETRAINING_CONFIG_NAME = "pretraining_config.json"


@dataclasses.dataclass(kw_only=True)
class ElectraPretrainingConfig:
    """How the two models are trained together (saved as ``pretraining_config.json``)."""

    disc_weight: float = option(50.0, "weight of the discriminator's BCE in the total loss (50 in the paper and "
                                      "official code)")
    gen_weight: float = option(1.0, "weight of the generator's MLM loss")
    electra_objective: bool = option(True, "False: MLM-only baseline (no discriminator), for comparisons at equal "
                                           "compute")
    mlm_baseline_size: str = option("discriminator", "size of the MLM-only baseline: 'discriminator' (official; a "
                                                     "BERT of the discriminator's shape) or 'generator' (only the "
                                                     "small generator)")
    mask_prob: float = option(0.15, "fraction of real tokens to predict")
    mask_token_prob: float = option(0.85, "of the chosen positions, the fraction replaced by [MASK] (the rest keep "
                                          "their token)")
    random_token_prob: float = option(0.0, "of the chosen positions, the fraction replaced by a random token (0 in "
                                           "ELECTRA)")
    max_predictions: int | None = option(None, "cap of chosen positions per sequence; None: int((mask_prob + 0.005) *"
                                               " sequence length)")
    temperature: float = option(1.0, "temperature of the generator's softmax when sampling replacements (official: "
                                     "1.0)")
    mask_token_id: int | None = option(None, "id of [MASK] in the vocabulary")
    special_token_ids: list[int] = option([], "ids never masked besides [MASK] and [PAD] (usually [CLS] and [SEP])")

    def __post_init__(self) -> None:
        if self.mlm_baseline_size not in ("discriminator", "generator"):
            raise ConfigError(f"ElectraPretrainingConfig.mlm_baseline_size must be 'discriminator' or "
                              f"'generator', got {self.mlm_baseline_size!r}")
        if self.disc_weight < 0 or self.gen_weight < 0:
            raise ConfigError(f"ElectraPretrainingConfig: loss weights must be >= 0, got gen_weight="
                              f"{self.gen_weight}, disc_weight={self.disc_weight}")
        if self.temperature <= 0:
            raise ConfigError(f"ElectraPretrainingConfig.temperature must be > 0, got {self.temperature}")
        self.special_token_ids = [int(i) for i in self.special_token_ids]

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "<dict>") -> "ElectraPretrainingConfig":
        check_keys(d, [f.name for f in dataclasses.fields(cls)], source, "pretraining config key")
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class ElectraPretrainerOutput(ModelOutput):
    """Losses (with gradient) and batch metrics (detached 0-d tensors) of one step."""

    loss: torch.Tensor                           # gen_weight * generator_loss + disc_weight * discriminator_loss
    generator_loss: torch.Tensor                 # cross-entropy over the masked positions
    discriminator_loss: torch.Tensor | None = None   # sigmoid BCE over the real tokens (mean per token)
    metrics: dict[str, torch.Tensor] | None = None
    masked_input_ids: torch.Tensor | None = None     # (B, T) generator input
    masked_positions: torch.Tensor | None = None     # (B, T) bool, the positions chosen for prediction
    replaced_input_ids: torch.Tensor | None = None   # (B, T) discriminator input (samples written in)
    is_replaced: torch.Tensor | None = None          # (B, T) 1 where the sample differs from the original
    discriminator_logits: torch.Tensor | None = None  # (B, T)


def gumbel_max_sample(logits: torch.Tensor, generator: Generators = None,
                      rows: list[int] | None = None) -> torch.Tensor:
    """One token per row of ``logits`` (..., V) with the Gumbel-max trick, in fp32, no gradient:
    ``argmax(logits + g)`` with ``g = -log(-log(u + 1e-9) + 1e-9)``, ``u ~ U[0, 1)`` (official
    ``sample_from_softmax``). Equivalent to sampling from ``softmax(logits)``.

    ``generator`` a list of per-example generators: ``logits`` is (M, V) and generator ``i``
    draws the noise of the next ``rows[i]`` rows (example ``i``'s masked positions)."""
    with torch.no_grad():
        logits = logits.detach().float()
        g = uniform(tuple(logits.shape), generator, logits.device, rows)  # u, a fresh (M, V) tensor
        # the same operations in place: (M, V) tensors are the step's largest, and each
        # out-of-place one costs a fresh allocation (page faults on CPU) and a pass over memory
        g.add_(1e-9).log_().neg_().add_(1e-9).log_().neg_()
        return g.add_(logits).argmax(-1)


def binary_auc(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Area under the ROC curve from 1-d scores and 0/1 labels, by the rank-sum (Mann-Whitney)
    formula with average ranks for ties; equals ``sklearn.metrics.roc_auc_score``. NaN when only
    one class is present (where sklearn raises)."""
    scores, labels = scores.detach().double().flatten(), labels.flatten().bool()
    n_pos, n = int(labels.sum()), labels.numel()
    n_neg = n - n_pos
    if n_pos == 0 or n_neg == 0:
        return torch.tensor(float("nan"), dtype=torch.float64, device=scores.device)
    uniq, inverse, counts = torch.unique(scores, return_inverse=True, return_counts=True)  # sorted
    # the tied group j spans ranks end_j - count_j + 1 ... end_j (1-based); its average rank:
    ends = counts.cumsum(0).double()
    avg_rank = ends - (counts.double() - 1) / 2
    rank_sum_pos = avg_rank[inverse][labels].sum()
    return (rank_sum_pos - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _with_overrides(config: ElectraPretrainingConfig | None, overrides: dict[str, Any]) -> ElectraPretrainingConfig:
    pc = config or ElectraPretrainingConfig()
    check_keys(overrides, [f.name for f in dataclasses.fields(pc)], "ElectraPretrainer", "pretraining option")
    pc = dataclasses.replace(pc, **overrides) if overrides else pc
    if pc.mask_token_id is None:
        raise ConfigError("ElectraPretrainer needs mask_token_id (tokenizer.mask_token_id) to mask inputs")
    return pc


def _check_shared_shapes(gen_cfg: ElectraConfig, disc_cfg: ElectraConfig) -> None:
    for field in ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size"):
        if getattr(gen_cfg, field) != getattr(disc_cfg, field):
            raise ConfigError(
                f"generator and discriminator share embeddings, so their {field} must match: "
                f"generator {getattr(gen_cfg, field)}, discriminator {getattr(disc_cfg, field)}")


class ElectraPretrainer(nn.Module):
    """A generator and a discriminator with shared embeddings, trained with replaced-token detection.

    Build it from two configs, from a discriminator config and a generator size, or from a
    preset name:

    >>> disc = ElectraConfig.from_preset("electra-small")
    >>> model = ElectraPretrainer(disc, generator_size=0.25, mask_token_id=103, special_token_ids=[101, 102])
    >>> out = model(input_ids, attention_mask)          # out.loss, out.metrics["disc_auc"], ...
    """

    def __init__(self, discriminator_config: ElectraConfig, generator_config: ElectraConfig | None = None, *,
                 generator_size: float = 0.25, config: ElectraPretrainingConfig | None = None,
                 **config_overrides: Any):
        super().__init__()
        pc = _with_overrides(config, config_overrides)
        disc_cfg = discriminator_config
        gen_cfg = generator_config or disc_cfg.generator_config(generator_size)
        if not pc.electra_objective:
            # MLM-only baseline: one masked LM and nothing else.
            mlm_cfg = disc_cfg if pc.mlm_baseline_size == "discriminator" else gen_cfg
            self._attach(ElectraForMaskedLM(mlm_cfg), None, pc)
        else:
            _check_shared_shapes(gen_cfg, disc_cfg)
            self._attach(ElectraForMaskedLM(gen_cfg), ElectraForPreTraining(disc_cfg), pc)

    @classmethod
    def from_models(cls, generator: ElectraForMaskedLM, discriminator: ElectraForPreTraining | None = None, *,
                    config: ElectraPretrainingConfig | None = None, **config_overrides: Any) -> "ElectraPretrainer":
        """Join existing models, e.g. loaded checkpoints, to continue pretraining. The embeddings
        become one module (the discriminator's); a generator copy that differs is reported."""
        pc = _with_overrides(config, config_overrides)
        if pc.electra_objective and discriminator is None:
            raise ConfigError("ElectraPretrainer.from_models: electra_objective=True needs a discriminator")
        if discriminator is not None:
            _check_shared_shapes(generator.config, discriminator.config)
            g_emb, d_emb = generator.electra.embeddings.state_dict(), discriminator.electra.embeddings.state_dict()
            differ = [k for k in d_emb if not torch.equal(g_emb[k], d_emb[k])]
            if differ:
                logger.warning("ElectraPretrainer: generator and discriminator embeddings differ in %s; "
                               "sharing the discriminator's", differ)
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model._attach(generator, discriminator if pc.electra_objective else None, pc)
        return model

    def _attach(self, generator: ElectraForMaskedLM, discriminator: ElectraForPreTraining | None,
                config: ElectraPretrainingConfig) -> None:
        self.config = config
        self.generator = generator
        self.discriminator = discriminator
        self.tie_weights()

    @classmethod
    def from_preset(cls, name: str, generator: str | None = None, **config_overrides: Any) -> "ElectraPretrainer":
        """``name`` is a discriminator preset ("electra-small"); the generator is the preset
        ``generator`` (default ``name + "-generator"`` when it exists, else the 1/4-size rule)."""
        disc = ElectraConfig.from_preset(name)
        gen_name = generator or f"{name}-generator"
        if generator is not None or gen_name in ElectraConfig.presets:
            gen = ElectraConfig.from_preset(gen_name)
        else:
            gen = None
        return cls(disc, gen, **config_overrides)

    def tie_weights(self) -> None:
        """Share the embeddings: the generator's embedding module (word, position, token type,
        LayerNorm) becomes the discriminator's. The generator's output layer multiplies by
        ``electra.embeddings.word_embeddings.weight`` (ElectraForMaskedLM ties it), so it follows."""
        if self.discriminator is not None:
            self.generator.electra.embeddings = self.discriminator.electra.embeddings

    # -- the step -------------------------------------------------------------------------------
    def _special_ids(self) -> list[int]:
        ids = list(self.config.special_token_ids)
        pad = self.generator.config.pad_token_id
        return ids + ([pad] if pad is not None else [])

    def _generator_logits(self, input_ids, attention_mask, token_type_ids, positions) -> torch.Tensor:
        """Generator logits at the chosen positions only, (M, V): the LM head over B*T positions
        would be the largest tensor of the step (official code gathers too)."""
        gen = self.generator
        hidden = gen.electra(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids, return_dict=True).last_hidden_state  # (B, T, Hg)
        return gen.lm_logits(hidden[positions])                                       # (M, V)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, generator: torch.Generator | None = None,
                compute_metrics: bool = True, example_seeds: torch.Tensor | None = None) -> ElectraPretrainerOutput:
        """One pretraining step on a batch of *original* (unmasked) token ids (B, T).

        ``generator`` is a ``torch.Generator`` making masking and sampling reproducible. Use one
        on the model's device for speed (a CPU generator works on GPU, but the (M, V) Gumbel noise
        is then drawn on the CPU and copied).

        ``example_seeds`` (B,) int64, one seed per example (``PackedDataset(example_seeds=True)``),
        instead: row ``i``'s masks, [MASK]/keep choices and Gumbel noise all come from a generator
        seeded with ``example_seeds[i]`` (on the ids' device), so an example is corrupted the same
        way whatever batch, position or process it lands in. Training with them on N processes
        sees the corruption of one process on the same global batch, and resumes on another
        number of processes exactly. Neither given: the global torch RNG.
        """
        pc = self.config
        if input_ids.dim() != 2:
            raise InvalidInputError(f"ElectraPretrainer: input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        if example_seeds is not None:
            if generator is not None:
                raise InvalidInputError("ElectraPretrainer: give generator or example_seeds, not both")
            if example_seeds.shape != input_ids.shape[:1]:
                raise InvalidInputError(f"ElectraPretrainer: example_seeds must be one per row {tuple(input_ids.shape[:1])}, "
                                        f"got {tuple(example_seeds.shape)}")
        draws: Generators = generator if example_seeds is None else example_generators(example_seeds, input_ids.device)
        if attention_mask is None:
            pad = self.generator.config.pad_token_id
            attention_mask = (input_ids != pad).long() if pad is not None else torch.ones_like(input_ids)
        real = attention_mask.bool()                                                  # (B, T)

        # 1. masking
        m = mask_tokens(input_ids, mask_token_id=pc.mask_token_id, special_token_ids=self._special_ids(),
                        attention_mask=attention_mask, mask_prob=pc.mask_prob, max_predictions=pc.max_predictions,
                        mask_token_prob=pc.mask_token_prob, random_token_prob=pc.random_token_prob,
                        vocab_size=self.generator.config.vocab_size, generator=draws)
        positions = m.mask                                                            # (B, T) bool
        targets = input_ids[positions]                                                # (M,)

        # 2. generator MLM loss on the chosen positions
        gen_logits = self._generator_logits(m.input_ids, attention_mask, token_type_ids, positions)  # (M, V)
        gen_loss = F.cross_entropy(gen_logits.float(), targets) if targets.numel() else gen_logits.sum() * 0.0
        if self.discriminator is None:
            metrics = None
            if compute_metrics:
                with torch.no_grad():
                    metrics = {"gen_accuracy": (gen_logits.argmax(-1) == targets).float().mean()}
            return ElectraPretrainerOutput(loss=pc.gen_weight * gen_loss, generator_loss=gen_loss, metrics=metrics,
                                           masked_input_ids=m.input_ids, masked_positions=positions)

        # 3. replacements: Gumbel-max samples (fp32, no gradient) written into the original text
        scaled = gen_logits if pc.temperature == 1.0 else gen_logits / pc.temperature   # x / 1 == x: skip the copy
        # per-row generators: row i's noise is (its masked positions, V), in row-major order as positions
        rows = positions.sum(-1).tolist() if isinstance(draws, list) else None
        sampled = gumbel_max_sample(scaled, generator=draws, rows=rows)               # (M,)
        replaced = input_ids.clone()
        replaced[positions] = sampled
        is_replaced = (replaced != input_ids) & positions                            # (B, T) a right guess is "original"

        # 4. discriminator BCE over the real tokens, mean per token
        disc_logits = self.discriminator(input_ids=replaced, attention_mask=attention_mask,
                                         token_type_ids=token_type_ids, return_dict=True).logits  # (B, T)
        per_token = F.binary_cross_entropy_with_logits(disc_logits.float(), is_replaced.float(), reduction="none")
        disc_loss = (per_token * real).sum() / real.sum().clamp(min=1)

        # 5. total
        loss = pc.gen_weight * gen_loss + pc.disc_weight * disc_loss
        metrics = None
        if compute_metrics:
            metrics = self._metrics(gen_logits, targets, sampled, disc_logits, is_replaced, real)
        return ElectraPretrainerOutput(loss=loss, generator_loss=gen_loss, discriminator_loss=disc_loss,
                                       metrics=metrics, masked_input_ids=m.input_ids, masked_positions=positions,
                                       replaced_input_ids=replaced,
                                       is_replaced=is_replaced.long(), discriminator_logits=disc_logits)

    @staticmethod
    @torch.no_grad()
    def _metrics(gen_logits, targets, sampled, disc_logits, is_replaced, real) -> dict[str, torch.Tensor]:
        """The official eval metrics (run_pretraining.py ``metric_fn``), over real tokens."""
        labels = is_replaced[real]                                                   # (N,) bool
        logits = disc_logits.detach()[real].float()
        preds = logits > 0
        tp = (preds & labels).sum().float()
        return {
            "gen_accuracy": (gen_logits.argmax(-1) == targets).float().mean(),          # masked_lm_accuracy
            "sampled_equals_original": (sampled == targets).float().mean(),            # sampled_masked_lm_accuracy
            "disc_accuracy": (preds == labels).float().mean(),
            "disc_precision": tp / preds.sum().clamp(min=1),                           # 0 when nothing is flagged
            "disc_recall": tp / labels.sum().clamp(min=1),
            "disc_auc": binary_auc(logits, labels).float(),                            # NaN if one class only
            "replaced_fraction": labels.float().mean(),
        }

    # -- saving and loading -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``generator/``, ``discriminator/`` (HF checkpoints) and ``pretraining_config.json``. A
        single model saved into ``directory`` before is deleted (its config.json, weights and
        generation_config.json): loaders take a directory with config.json for that model, so it hid
        this one."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.generator.save_pretrained(d / "generator")
        if self.discriminator is not None:
            self.discriminator.save_pretrained(d / "discriminator")
        write_text_atomic(d / PRETRAINING_CONFIG_NAME, json.dumps(self.config.to_dict(), indent=2, sort_keys=True) + "\n")
        for f in d.iterdir():
            if f.name in ("config.json", SAFE, SAFE_INDEX, "generation_config.json") or SHARD_NAME.fullmatch(f.name):
                f.unlink()
        return d

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **config_overrides: Any) -> "ElectraPretrainer":
        """Load what :meth:`save_pretrained` wrote and tie the embeddings again (the discriminator's
        copy is used; a generator copy that differs is reported)."""
        d = Path(directory)
        cfg_path = d / PRETRAINING_CONFIG_NAME
        if not cfg_path.is_file():
            raise CheckpointNotFoundError(f"{d}: no {PRETRAINING_CONFIG_NAME} (not written by ElectraPretrainer)")
        try:
            pc = ElectraPretrainingConfig.from_dict(json.loads(cfg_path.read_text(encoding="utf-8")), str(cfg_path))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{cfg_path}: not valid JSON ({e})") from None
        pc = _with_overrides(pc, config_overrides)
        gen = ElectraForMaskedLM.from_pretrained(d / "generator")
        disc = ElectraForPreTraining.from_pretrained(d / "discriminator") if pc.electra_objective else None
        return cls.from_models(gen, disc, config=pc).eval()   # like every from_pretrained; .train() to go on

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())  # shared tensors counted once
