"""Replaced-token detection (ElectraPretrainer): every ELECTRA invariant of docs/reference.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, precision_score, recall_score, roc_auc_score

from t5electra.errors import ConfigError, InvalidInputError
from t5electra.models.electra import ElectraConfig, ElectraForMaskedLM, ElectraForPreTraining
from t5electra.models.electra_rtd import (
    ElectraPretrainer,
    ElectraPretrainingConfig,
    binary_auc,
    gumbel_max_sample,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
V, T = 512, 128


def tiny_disc(**kw) -> ElectraConfig:
    return ElectraConfig.from_preset("electra-tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **kw)


def make(**kw) -> ElectraPretrainer:
    return ElectraPretrainer(tiny_disc(), mask_token_id=MASK, special_token_ids=[CLS, SEP], **kw)


def batch(lengths=(128, 128, 60, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((len(lengths), T), PAD)
    for b, n in enumerate(lengths):
        ids[b, 0], ids[b, n - 1] = CLS, SEP
        ids[b, 1:n - 1] = torch.randint(10, V, (n - 2,), generator=g)
    return ids, (ids != PAD).long()


def gen_only_params(model):
    shared = {id(p) for p in model.discriminator.parameters()}
    return [(n, p) for n, p in model.generator.named_parameters() if id(p) not in shared]


def disc_only_params(model):
    shared = {id(p) for p in model.generator.parameters()}
    return [(n, p) for n, p in model.discriminator.named_parameters() if id(p) not in shared]


def test_embeddings_are_one_module_and_generator_shape():
    model = make()
    gen, disc = model.generator, model.discriminator
    assert gen.electra.embeddings is disc.electra.embeddings
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        a, b = getattr(gen.electra.embeddings, name).weight, getattr(disc.electra.embeddings, name).weight
        assert a is b and a.data_ptr() == b.data_ptr()
    # 1/4-size generator, same depth, same embedding size (shared), its own projection
    assert gen.config.hidden_size == disc.config.hidden_size // 4
    assert gen.config.num_hidden_layers == disc.config.num_hidden_layers
    assert gen.config.embedding_size == disc.config.embedding_size
    assert gen.electra.embeddings_project is not disc.electra.embeddings_project
    n_emb = sum(p.numel() for p in disc.electra.embeddings.parameters())
    assert model.num_parameters() == gen.num_parameters() + disc.num_parameters() - n_emb


def test_from_preset_uses_generator_preset():
    model = ElectraPretrainer.from_preset("electra-tiny", mask_token_id=MASK, special_token_ids=[CLS, SEP])
    want = ElectraConfig.from_preset("electra-tiny-generator")
    assert model.generator.config.hidden_size == want.hidden_size
    assert model.generator.electra.embeddings is model.discriminator.electra.embeddings


def test_step_shapes_counts_labels_and_loss_weighting():
    model = make()
    ids, am = batch()
    out = model(ids, am, generator=torch.Generator().manual_seed(0))
    # official counts: 19 for a full 128, round(0.15 * 60) = 9, round(1.35) = 1
    assert out.masked_positions.sum(-1).tolist() == [19, 19, 9, 1]
    assert not out.masked_positions[:, 0].any()
    assert not torch.isin(ids[out.masked_positions], torch.tensor([PAD, CLS, SEP])).any()
    # discriminator input: original everywhere except the chosen positions, which hold samples
    assert torch.equal(out.replaced_input_ids[~out.masked_positions], ids[~out.masked_positions])
    assert not (out.replaced_input_ids == MASK).any()
    # labels: 1 exactly where the sample differs from the original
    want = (out.replaced_input_ids != ids).long()
    assert torch.equal(out.is_replaced, want)
    assert torch.isclose(out.loss, out.generator_loss + 50.0 * out.discriminator_loss)
    # discriminator loss: BCE over non-pad tokens, mean per token
    per_tok = F.binary_cross_entropy_with_logits(out.discriminator_logits, want.float(), reduction="none")
    assert torch.isclose(out.discriminator_loss, per_tok[am.bool()].mean(), atol=1e-6)
    # a fresh model: generator loss near ln(V)
    assert abs(out.generator_loss.item() - np.log(V)) < 0.5


def test_generator_loss_matches_full_forward():
    model = make()
    ids, am = batch(seed=1)
    out = model(ids, am, generator=torch.Generator().manual_seed(1))
    logits = model.generator(out.masked_input_ids, am).logits                   # (B, T, V)
    want = F.cross_entropy(logits[out.masked_positions], ids[out.masked_positions])
    assert torch.isclose(out.generator_loss, want, atol=1e-5)
    assert model.config.disc_weight == 50.0


def test_correct_sample_is_labelled_original():
    model = make()
    ids, am = batch(seed=2)
    word = 77
    ids[:, 1:5] = word                                     # plenty of positions holding `word`
    ids[2:, 60:] = PAD
    ids[3, 8] = SEP
    am = (ids != PAD).long()
    with torch.no_grad():                                   # a generator that (almost) always says `word`
        model.generator.generator_lm_head.bias[word] = 50.0
    out = model(ids, am, generator=torch.Generator().manual_seed(3))
    chosen = out.masked_positions
    hit = chosen & (ids == word)
    assert hit.any()
    assert (out.replaced_input_ids[chosen] == word).all()
    assert (out.is_replaced[hit] == 0).all()               # sampled == original -> "original"
    assert (out.is_replaced[chosen & (ids != word)] == 1).all()
    assert (out.is_replaced[~chosen] == 0).all()
    assert out.metrics["sampled_equals_original"].item() == pytest.approx(
        float(hit.sum()) / float(chosen.sum()))


def test_no_gradient_through_the_sample():
    # disc_weight only: generator-only parameters get no gradient (sample carries none)
    model = make(gen_weight=0.0)
    ids, am = batch(seed=3)
    model(ids, am, generator=torch.Generator().manual_seed(0)).loss.backward()
    for name, p in gen_only_params(model):
        assert p.grad is None or not p.grad.any(), name
    assert model.discriminator.electra.embeddings.word_embeddings.weight.grad.abs().sum() > 0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for _, p in disc_only_params(model)
               if p.requires_grad and "bias" not in _)
    # generator loss only: the discriminator's own parameters get nothing
    model = make(disc_weight=0.0)
    model(ids, am, generator=torch.Generator().manual_seed(0)).loss.backward()
    for name, p in disc_only_params(model):
        assert p.grad is None or not p.grad.any(), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in gen_only_params(model))


def test_gumbel_max_samples_softmax_in_fp32_without_grad():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]], requires_grad=True).to(torch.bfloat16)
    many = logits.expand(40000, 4)
    s = gumbel_max_sample(many, generator=torch.Generator().manual_seed(0))
    assert s.dtype == torch.long and not s.requires_grad
    freq = torch.bincount(s, minlength=4).double() / s.numel()
    assert torch.allclose(freq, logits.float().softmax(-1)[0].detach().double(), atol=0.01)


def test_auc_matches_sklearn_with_ties():
    g = torch.Generator().manual_seed(0)
    for _ in range(5):
        scores = torch.randint(0, 20, (300,), generator=g).float() / 4    # many ties
        labels = torch.rand(300, generator=g) < 0.3
        want = roc_auc_score(labels.numpy(), scores.numpy())
        assert binary_auc(scores, labels).item() == pytest.approx(want, abs=1e-12)
    assert torch.isnan(binary_auc(torch.rand(5), torch.zeros(5)))


def test_metrics_match_sklearn():
    model = make()
    ids, am = batch(seed=4)
    out = model(ids, am, generator=torch.Generator().manual_seed(4))
    real = am.bool()
    y = out.is_replaced[real].numpy()
    logit = out.discriminator_logits[real].detach().numpy()
    pred = (logit > 0).astype(int)
    m = {k: v.item() for k, v in out.metrics.items()}
    assert m["disc_accuracy"] == pytest.approx(accuracy_score(y, pred), abs=1e-6)
    assert m["disc_precision"] == pytest.approx(precision_score(y, pred, zero_division=0), abs=1e-6)
    assert m["disc_recall"] == pytest.approx(recall_score(y, pred, zero_division=0), abs=1e-6)
    assert m["disc_auc"] == pytest.approx(roc_auc_score(y, logit), abs=1e-6)
    assert 0.0 <= m["gen_accuracy"] <= 1.0 and 0 < m["replaced_fraction"] < 0.16


def test_validation_auc_skips_a_batch_without_replaced_tokens():
    """A validation batch where every sample equals the original (a short last row and a good
    generator) has no AUC (NaN); the validation disc_auc averaged it in and was NaN for the whole
    split. It is now the mean over the batches that have one; a NaN loss would still be NaN."""
    from t5electra.recipes.pretrain_electra import make_loss_fn
    from t5electra.train.loop import evaluate

    model = make().eval()
    ids, am = batch(seed=6)
    short = torch.full((1, T), PAD)
    short[0, :3] = torch.tensor([CLS, 77, SEP])  # one maskable token, which the generator is sure of
    with torch.no_grad():
        model.generator.generator_lm_head.bias[77] = 1e4
    batches = [{"input_ids": ids, "attention_mask": am}, {"input_ids": short, "attention_mask": (short != PAD).long()}]
    one = make_loss_fn(torch.Generator().manual_seed(3))(model, batches[1])[1]
    assert torch.isnan(one["disc_auc"]) and one["replaced_fraction"] == 0  # undefined for that batch
    first = evaluate(model, batches[:1], make_loss_fn(torch.Generator().manual_seed(3)))
    both = evaluate(model, batches, make_loss_fn(torch.Generator().manual_seed(3)))
    assert both["disc_auc"] == pytest.approx(first["disc_auc"])  # the batch that has one
    assert both["disc_acc"] != pytest.approx(first["disc_acc"])  # the other metrics: both batches
    assert np.isnan(evaluate(model, batches[1:], make_loss_fn(torch.Generator().manual_seed(3)))["disc_auc"])


def test_deterministic_with_generator():
    model = make()
    ids, am = batch(seed=5)
    a = model(ids, am, generator=torch.Generator().manual_seed(9))
    b = model(ids, am, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a.replaced_input_ids, b.replaced_input_ids) and torch.equal(a.loss, b.loss)


def test_example_seeds_corrupt_an_example_the_same_in_any_batch():
    """Per-example seeds: an example's masks, [MASK]/keep choices and Gumbel replacements depend on
    the example and its seed, not on its row, the other rows or the batch size, so N processes
    corrupt the global batch as one process does (the recipe's rows carry such seeds)."""
    model = make().eval()
    ids, am = batch(lengths=(128, 128, 60, 9, 128), seed=10)
    seeds = torch.tensor([3, 2**63 - 1, 0, 12345, 3])       # rows 0 and 4: one seed, different ids
    full = model(ids, am, example_seeds=seeds)
    for rows in ([2, 0], [4, 3, 1], [1]):
        part = model(ids[rows], am[rows], example_seeds=seeds[rows])
        assert torch.equal(part.masked_positions, full.masked_positions[rows]), rows
        assert torch.equal(part.masked_input_ids, full.masked_input_ids[rows]), rows
        assert torch.equal(part.replaced_input_ids, full.replaced_input_ids[rows]), rows
    assert full.is_replaced.sum() > 10                      # the samples do replace tokens
    other = model(ids, am, example_seeds=seeds + 1)
    assert not torch.equal(other.masked_positions, full.masked_positions)
    # the MLM-only baseline masks the same way
    mlm = make(electra_objective=False).eval()
    assert torch.equal(mlm(ids[[3, 0]], am[[3, 0]], example_seeds=seeds[[3, 0]]).masked_input_ids,
                       full.masked_input_ids[[3, 0]])
    with pytest.raises(InvalidInputError, match="not both"):
        model(ids, am, generator=torch.Generator(), example_seeds=seeds)
    with pytest.raises(InvalidInputError, match="one per row"):
        model(ids, am, example_seeds=seeds[:2])


def test_save_load_restores_tying(tmp_path):
    model = make(disc_weight=30.0)
    with torch.no_grad():
        model.discriminator.electra.embeddings.word_embeddings.weight.add_(0.5)   # visible in the generator too
    model.save_pretrained(tmp_path)
    assert (tmp_path / "generator" / "config.json").is_file()
    assert (tmp_path / "discriminator" / "config.json").is_file()
    # each half is an ordinary checkpoint
    assert isinstance(ElectraForMaskedLM.from_pretrained(tmp_path / "generator"), ElectraForMaskedLM)
    assert isinstance(ElectraForPreTraining.from_pretrained(tmp_path / "discriminator"), ElectraForPreTraining)

    loaded = ElectraPretrainer.from_pretrained(tmp_path)
    assert loaded.config == model.config and loaded.config.disc_weight == 30.0
    ge, de = loaded.generator.electra.embeddings, loaded.discriminator.electra.embeddings
    assert ge is de
    assert ge.word_embeddings.weight.data_ptr() == de.word_embeddings.weight.data_ptr()
    model.eval()
    ids, am = batch(seed=6)
    a = model(ids, am, generator=torch.Generator().manual_seed(1))
    b = loaded(ids, am, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(a.loss, b.loss, atol=1e-5)
    # still tied after loading: a change through one model shows in the other
    with torch.no_grad():
        loaded.generator.electra.embeddings.LayerNorm.weight.mul_(2)
    assert torch.equal(loaded.discriminator.electra.embeddings.LayerNorm.weight,
                       loaded.generator.electra.embeddings.LayerNorm.weight)


def test_from_models_joins_checkpoints_and_reports_differences(tmp_path, caplog):
    gen = ElectraForMaskedLM(tiny_disc().generator_config(0.25))
    disc = ElectraForPreTraining(tiny_disc())           # independently initialised embeddings
    with caplog.at_level("WARNING", logger="t5electra"):
        model = ElectraPretrainer.from_models(gen, disc, mask_token_id=MASK, special_token_ids=[CLS, SEP])
    assert "embeddings differ" in caplog.text
    assert model.generator.electra.embeddings is disc.electra.embeddings
    with pytest.raises(ConfigError, match="needs a discriminator"):
        ElectraPretrainer.from_models(gen, mask_token_id=MASK)
    model.save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="did you mean 'disc_weight'"):
        ElectraPretrainer.from_pretrained(tmp_path, disc_weigth=1.0)
    assert ElectraPretrainer.from_pretrained(tmp_path, disc_weight=1.0).config.disc_weight == 1.0


def test_mlm_only_baseline(tmp_path):
    model = make(electra_objective=False)
    assert model.discriminator is None
    assert model.generator.config.hidden_size == tiny_disc().hidden_size            # discriminator-sized
    ids, am = batch(seed=7)
    out = model(ids, am, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out.loss, out.generator_loss) and out.discriminator_loss is None
    assert set(out.metrics) == {"gen_accuracy"}
    small = make(electra_objective=False, mlm_baseline_size="generator")
    assert small.generator.config.hidden_size == tiny_disc().hidden_size // 4
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "discriminator").exists()
    assert ElectraPretrainer.from_pretrained(tmp_path).discriminator is None


def test_a_few_steps_learn():
    torch.manual_seed(0)
    model = make()
    ids, am = batch(lengths=(64,) * 8, seed=8)
    ids, am = ids[:, :64], am[:, :64]
    ids[:, 1:63] = 10 + ids[:, 1:63] % 20       # a 20-word language: ln(20) = 3.0 is learnable fast
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    first = None
    for _ in range(40):
        out = model(ids, am, generator=g)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first or (out.generator_loss.item(), out.discriminator_loss.item())
    assert out.generator_loss.item() < first[0] - 1.5          # from ln(512) = 6.2 towards ln(20) = 3.0
    assert out.discriminator_loss.item() < first[1] - 0.2


def test_config_errors():
    with pytest.raises(ConfigError, match="mask_token_id"):
        ElectraPretrainer(tiny_disc())
    with pytest.raises(ConfigError, match="disc_weigth|did you mean 'disc_weight'"):
        ElectraPretrainer(tiny_disc(), mask_token_id=MASK, disc_weigth=10)
    with pytest.raises(ConfigError, match="embedding_size must match"):
        ElectraPretrainer(tiny_disc(), tiny_disc().generator_config(0.25).replace(embedding_size=8),
                          mask_token_id=MASK)
    with pytest.raises(ConfigError, match="mlm_baseline_size"):
        ElectraPretrainingConfig(mlm_baseline_size="huge")


def test_saved_pair_loads_in_transformers(tmp_path):
    import transformers

    model = make().eval()
    model.save_pretrained(tmp_path)
    ids, am = batch(lengths=(40, 25), seed=10)
    ids, am = ids[:, :40], am[:, :40]
    hf_gen = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "generator").eval()
    hf_disc = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "discriminator").eval()
    with torch.no_grad():
        assert torch.allclose(hf_gen(input_ids=ids, attention_mask=am).logits,
                              model.generator(ids, am).logits, atol=1e-4)
        assert torch.allclose(hf_disc(input_ids=ids, attention_mask=am).logits,
                              model.discriminator(ids, am).logits, atol=1e-4)
    # the two files carry the same (shared) embeddings
    assert torch.equal(hf_gen.electra.embeddings.word_embeddings.weight,
                       hf_disc.electra.embeddings.word_embeddings.weight)
