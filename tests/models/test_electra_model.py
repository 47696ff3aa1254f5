"""ELECTRA model family (t5electra/models/electra.py): parity with transformers 5.24 on random tiny
models, checkpoint conversion both ways, config round trips, presets, clear errors."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")

from t5electra.errors import ConfigError, InvalidInputError, ModelTypeError, WeightsMismatchError  # noqa: E402
from t5electra.models import electra as E  # noqa: E402

CLASSES = ["ElectraModel", "ElectraForPreTraining", "ElectraForMaskedLM", "ElectraForSequenceClassification",
           "ElectraForTokenClassification", "ElectraForQuestionAnswering"]
TOL = dict(atol=1e-4, rtol=1e-4)
B, T = 3, 11


def tiny(preset: str = "electra-tiny", **kw) -> E.ElectraConfig:
    return E.ElectraConfig.from_preset(preset, **kw)


def hf_model(name: str, cfg: E.ElectraConfig, tmp_path, attn: str = "eager"):
    """A transformers model with the same config, random weights perturbed so that no bias is 0
    and no LayerNorm is the identity (a swapped key would then show)."""
    cfg.save_pretrained(tmp_path / "cfg")
    hf_cfg = transformers.ElectraConfig.from_pretrained(tmp_path / "cfg", attn_implementation=attn)
    model = getattr(transformers, name)(hf_cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def batch(cfg: E.ElectraConfig, name: str) -> dict[str, torch.Tensor]:
    """Padded batch with token types and the labels of the class."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, cfg.vocab_size, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    ids[mask == 0] = cfg.pad_token_id
    types = torch.zeros(B, T, dtype=torch.long)
    types[:, 5:] = 1
    inputs = dict(input_ids=ids, attention_mask=mask, token_type_ids=types)
    if name == "ElectraForPreTraining":
        inputs["labels"] = torch.randint(0, 2, (B, T), generator=g)
    elif name == "ElectraForMaskedLM":
        labels = torch.full((B, T), -100)
        labels[:, 2] = ids[:, 2]
        labels[0, 5] = 7
        inputs["labels"] = labels
    elif name == "ElectraForSequenceClassification":
        inputs["labels"] = torch.randint(0, cfg.num_labels, (B,), generator=g)
    elif name == "ElectraForTokenClassification":
        labels = torch.randint(0, cfg.num_labels, (B, T), generator=g)
        inputs["labels"] = labels.masked_fill(mask == 0, -100)
    elif name == "ElectraForQuestionAnswering":
        inputs["start_positions"] = torch.tensor([1, 3, 40])  # 40 is past the end: ignored (clamped)
        inputs["end_positions"] = torch.tensor([2, 5, 6])
    return inputs


def outputs(out, name: str) -> dict[str, torch.Tensor]:
    if name == "ElectraModel":
        return {"last_hidden_state": out.last_hidden_state}
    if name == "ElectraForQuestionAnswering":
        return {"loss": out.loss, "start_logits": out.start_logits, "end_logits": out.end_logits}
    return {"loss": out.loss, "logits": out.logits}


@pytest.mark.parametrize("preset", ["electra-tiny", "electra-tiny-noproj"])
@pytest.mark.parametrize("name", CLASSES)
def test_parity_and_conversion_both_ways(name, preset, tmp_path):
    """HF-saved dir -> ours: same outputs and losses within 1e-4. Ours -> save_pretrained ->
    transformers: exactly the original weights, hence the same outputs."""
    cfg = tiny(preset, num_labels=3 if name != "ElectraForQuestionAnswering" else 2)
    assert (cfg.embedding_size != cfg.hidden_size) == (preset == "electra-tiny")
    hf = hf_model(name, cfg, tmp_path)
    hf.save_pretrained(tmp_path / "hf")
    ours = getattr(E, name).from_pretrained(tmp_path / "hf")
    assert ours.load_report.newly_initialized == [] and ours.load_report.unused == []
    assert hasattr(ours.electra if name != "ElectraModel" else ours, "embeddings_project") == (preset == "electra-tiny")
    inputs = batch(cfg, name)
    with torch.no_grad():
        want = outputs(hf(**inputs), name)
        got = outputs(ours(**inputs), name)
    for k in want:
        torch.testing.assert_close(got[k], want[k], **TOL, msg=f"{name}.{k}")
    ours.save_pretrained(tmp_path / "ours")
    back = getattr(transformers, name).from_pretrained(tmp_path / "ours", attn_implementation="eager").eval()
    hf_sd, back_sd = hf.state_dict(), back.state_dict()
    assert hf_sd.keys() == back_sd.keys() and all(torch.equal(hf_sd[k], back_sd[k]) for k in hf_sd)
    with torch.no_grad():
        again = outputs(back(**inputs), name)
    for k in want:  # same weights; only memory layout may differ (last-bit float noise)
        torch.testing.assert_close(again[k], want[k], atol=1e-6, rtol=1e-6, msg=f"{name}.{k} after our export")


def test_sdpa_attention_equals_the_plain_formula():
    """Our attention (fused QKV + scaled_dot_product_attention, boolean padding mask) is
    softmax(q k^T / sqrt(D) + mask) v, written out."""
    cfg = tiny()
    attn = E.ElectraSelfAttention(cfg).eval()
    x = torch.randn(2, 6, cfg.hidden_size)
    keep = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]).bool()
    with torch.no_grad():
        got = attn(x, keep[:, None, None, :])
        H, N = cfg.hidden_size, cfg.num_attention_heads
        q, k, v = attn.qkv(x).split(H, dim=-1)
        q, k, v = (t.view(2, 6, N, H // N).transpose(1, 2) for t in (q, k, v))  # (B, N, T, D)
        scores = q @ k.transpose(-1, -2) / (H // N) ** 0.5 + torch.where(keep, 0.0, float("-inf"))[:, None, None, :]
        want = attn.out((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 6, H))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_parity_with_transformers_sdpa_and_no_mask(tmp_path):
    """Also against transformers' own SDPA path, and without attention_mask / token_type_ids."""
    cfg = tiny()
    hf = hf_model("ElectraModel", cfg, tmp_path, attn="sdpa")
    hf.save_pretrained(tmp_path / "hf")
    ours = E.ElectraModel.from_pretrained(tmp_path / "hf")
    ids = torch.randint(0, cfg.vocab_size, (2, 9))
    mask = torch.tensor([[1] * 9, [1] * 5 + [0] * 4])
    with torch.no_grad():
        for kw in ({}, {"attention_mask": mask}):
            torch.testing.assert_close(ours(ids, **kw).last_hidden_state, hf(ids, **kw).last_hidden_state, **TOL)


def test_training_gradients_match_transformers(tmp_path):
    """One backward pass of the generator (tied output layer) gives transformers' gradients,
    including the fused QKV gradient = the three HF gradients stacked."""
    cfg = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = hf_model("ElectraForMaskedLM", cfg, tmp_path)
    hf.save_pretrained(tmp_path / "hf")
    ours = E.ElectraForMaskedLM.from_pretrained(tmp_path / "hf").train()
    hf.train()
    inputs = batch(cfg, "ElectraForMaskedLM")
    ours(**inputs).loss.backward()
    hf(**inputs).loss.backward()
    emb = hf.electra.embeddings.word_embeddings.weight.grad
    torch.testing.assert_close(ours.electra.embeddings.word_embeddings.weight.grad, emb, **TOL)
    a = hf.electra.encoder.layer[1].attention.self
    hf_qkv = torch.cat([a.query.weight.grad, a.key.weight.grad, a.value.weight.grad])
    torch.testing.assert_close(ours.electra.layers[1].attention.qkv.weight.grad, hf_qkv, **TOL)


@pytest.mark.parametrize("num_labels,labels,problem", [
    (1, torch.tensor([0.5, -1.0, 2.0]), "regression"),
    (3, torch.tensor([0, 2, 1]), "single_label_classification"),
    (3, torch.tensor([[1.0, 0, 1], [0, 0, 0], [0, 1, 0]]), "multi_label_classification"),
])
def test_sequence_classification_losses_match_transformers(num_labels, labels, problem, tmp_path):
    cfg = tiny(num_labels=num_labels)
    hf = hf_model("ElectraForSequenceClassification", cfg, tmp_path)
    hf.save_pretrained(tmp_path / "hf")
    ours = E.ElectraForSequenceClassification.from_pretrained(tmp_path / "hf")
    inputs = {**batch(cfg, "ElectraModel"), "labels": labels}
    with torch.no_grad():
        got, want = ours(**inputs), hf(**inputs)
    torch.testing.assert_close(got.loss, want.loss, **TOL)
    assert want.logits.shape == got.logits.shape == (B, num_labels)
    assert hf.config.problem_type == problem  # transformers infers it; we infer the same loss


def test_encoder_and_heads_load_across_classes(tmp_path):
    """A discriminator checkpoint fine-tunes as a classifier (new head reported, discriminator head
    unused); a bare encoder loads into head classes and back (the "electra." prefix is moved)."""
    cfg = tiny()
    disc = E.ElectraForPreTraining(cfg).eval()
    disc.save_pretrained(tmp_path / "disc")
    clf = E.ElectraForSequenceClassification.from_pretrained(tmp_path / "disc", num_labels=5)
    assert clf.config.num_labels == 5 and clf.config.id2label[4] == "LABEL_4"
    assert sorted(clf.load_report.newly_initialized) == ["classifier.dense.bias", "classifier.dense.weight",
                                                          "classifier.out_proj.bias", "classifier.out_proj.weight"]
    assert sorted(clf.load_report.unused) == sorted(k for k in disc.hf_keymap(cfg).to_hf(disc.state_dict())
                                                    if k.startswith("discriminator_predictions."))
    torch.testing.assert_close(clf.electra.layers[0].ffn_in.weight, disc.electra.layers[0].ffn_in.weight)

    enc = E.ElectraModel.from_pretrained(tmp_path / "disc")
    ids = torch.randint(0, cfg.vocab_size, (2, 5))
    with torch.no_grad():
        torch.testing.assert_close(enc(ids).last_hidden_state, disc.electra(ids).last_hidden_state)
    enc.save_pretrained(tmp_path / "enc")
    keys = set(json.loads((tmp_path / "enc" / "config.json").read_text()))
    assert {"model_type", "embedding_size", "id2label", "architectures"} <= keys and "num_labels" not in keys
    gen = E.ElectraForMaskedLM.from_pretrained(tmp_path / "enc")
    assert gen.load_report.newly_initialized == ["generator_predictions.dense.weight",
                                                 "generator_predictions.dense.bias",
                                                 "generator_predictions.LayerNorm.weight",
                                                 "generator_predictions.LayerNorm.bias",
                                                 "generator_lm_head.bias"]
    hf_enc = transformers.ElectraModel.from_pretrained(tmp_path / "enc").eval()
    with torch.no_grad():
        torch.testing.assert_close(hf_enc(ids).last_hidden_state, enc(ids).last_hidden_state, **TOL)


def test_bert_task_checkpoint_with_bert_prefix_loads(tmp_path):
    """A BertForSequenceClassification file (encoder under "bert.", pooler, a one-layer classifier):
    the encoder loads, BERT's head and pooler are reported unused, ours is created fresh."""
    hf_cfg = transformers.BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, num_labels=3, attn_implementation="eager")
    bert = transformers.BertForSequenceClassification(hf_cfg).eval()
    bert.save_pretrained(tmp_path)
    ours = E.ElectraForSequenceClassification.from_pretrained(tmp_path)
    assert ours.config.embedding_size == 32 and ours.config.num_labels == 3
    assert sorted(ours.load_report.unused) == ["bert.pooler.dense.bias", "bert.pooler.dense.weight",
                                               "classifier.bias", "classifier.weight"]
    assert len(ours.load_report.newly_initialized) == 4
    inputs = batch(ours.config, "ElectraModel")
    with torch.no_grad():
        torch.testing.assert_close(ours.electra(**inputs).last_hidden_state,
                                   bert.bert(**inputs).last_hidden_state, **TOL)


def test_generator_output_layer_is_the_embedding(tmp_path):
    cfg = tiny()
    gen = E.ElectraForMaskedLM(cfg).eval()
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])  # does not use row 9 of the embedding
    # A non-uniform change: adding a constant to row 9 would move its logit by h . 1 = sum(h), and
    # h leaves a LayerNorm with zero bias, so that sum is 0 up to rounding (the old test's bug:
    # it held by rounding luck on AVX2 and failed on AVX-512).
    delta = torch.randn(cfg.embedding_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = gen.generator_predictions(gen.electra(ids).last_hidden_state)  # (1, T, E)
        before = gen(ids).logits
        gen.electra.embeddings.word_embeddings.weight[9].add_(delta)
        after = gen(ids).logits
    # The output logit of token 9 moved by exactly h . delta (the output layer IS the embedding
    # matrix); every other logit is unchanged.
    moved = after[..., 9] - before[..., 9]
    torch.testing.assert_close(moved, h @ delta, rtol=1e-4, atol=1e-4)
    assert (h @ delta).abs().max() > 1.0  # a real change, far above rounding
    torch.testing.assert_close(before[..., :9], after[..., :9], rtol=0, atol=0)
    # A transformers 4.x file that also stores generator_lm_head.weight loads (read as an alias).
    from safetensors.torch import load_file, save_file
    gen.save_pretrained(tmp_path / "g")
    sd = load_file(tmp_path / "g" / "model.safetensors")
    assert "generator_lm_head.weight" not in sd
    sd["generator_lm_head.weight"] = sd.pop("electra.embeddings.word_embeddings.weight")
    save_file(sd, tmp_path / "g" / "model.safetensors")
    again = E.ElectraForMaskedLM.from_pretrained(tmp_path / "g")
    assert again.load_report.unused == []
    emb = again.electra.embeddings.word_embeddings.weight
    torch.testing.assert_close(emb, gen.electra.embeddings.word_embeddings.weight)


def test_a_generator_head_other_than_the_embeddings_loads_untied_as_in_transformers(tmp_path):
    """A file storing a generator_lm_head.weight that is not the word-embedding matrix: transformers 5
    unties the two and uses it; ours dropped it for the embeddings (other logits, load_report silent).
    A config with tie_word_embeddings=false was refused. Both now load untied, with transformers'
    logits, and save what transformers loads the same way."""
    from safetensors.torch import load_file, save_file

    cfg = tiny(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = hf_model("ElectraForMaskedLM", cfg, tmp_path)
    hf.save_pretrained(tmp_path / "distinct")
    sd = load_file(tmp_path / "distinct" / "model.safetensors")
    sd["generator_lm_head.weight"] = torch.randn(cfg.vocab_size, cfg.embedding_size) * 0.5
    save_file(sd, tmp_path / "distinct" / "model.safetensors", metadata={"format": "pt"})
    hf_untied = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        **{k: v for k, v in cfg.to_dict().items() if k != "model_type"}, tie_word_embeddings=False)).eval()
    hf_untied.save_pretrained(tmp_path / "untied")
    ids = batch(cfg, "ElectraForMaskedLM")["input_ids"]
    for name in ("distinct", "untied"):
        theirs = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / name).eval()
        ours = E.ElectraForMaskedLM.from_pretrained(tmp_path / name)
        assert not ours.tied and ours.load_report.unused == []
        with torch.no_grad():
            want = theirs(input_ids=ids).logits
            torch.testing.assert_close(ours(ids).logits, want, **TOL)
            ours.save_pretrained(tmp_path / f"{name}-ours")
            assert json.loads((tmp_path / f"{name}-ours" / "config.json").read_text())["tie_word_embeddings"] is False
            back = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / f"{name}-ours").eval()
            torch.testing.assert_close(back(input_ids=ids).logits, want, **TOL)
    ours.resize_token_embeddings(cfg.vocab_size + 3)  # the untied output layer grows with the vocabulary
    assert ours.get_output_embeddings().weight.shape[0] == ours(ids).logits.shape[-1] == cfg.vocab_size + 3


# -- config ------------------------------------------------------------------------------------

def test_presets_have_the_released_shapes():
    """Parameter counts equal transformers' for the same configs (ELECTRA-Small discriminator ~13.5M)."""
    for preset, name in (("electra-small", "ElectraForPreTraining"), ("electra-small-generator", "ElectraForMaskedLM")):
        ours_cls, hf_cls = getattr(E, name), getattr(transformers, name)
        cfg = E.ElectraConfig.from_preset(preset)
        hf_cfg = transformers.ElectraConfig(**{k: v for k, v in cfg.to_dict().items()
                                               if k not in ("model_type", "position_embedding_type")})
        n_hf = sum(p.numel() for p in hf_cls(hf_cfg).parameters())  # tied weights counted once
        assert ours_cls(cfg).num_parameters() == n_hf
    small = E.ElectraConfig.from_preset("electra-small")
    shape = (small.embedding_size, small.hidden_size, small.num_attention_heads, small.intermediate_size)
    assert shape == (128, 256, 4, 1024)
    # Generator presets follow the rule (hidden x multiplier, heads max(1, hidden // 64), FFN 4 x hidden,
    # same depth and embeddings) with the paper's multipliers.
    for disc, mult in (("small", 1 / 4), ("base", 1 / 3), ("large", 1 / 4), ("tiny", 1 / 4)):
        gen = E.ElectraConfig.from_preset(f"electra-{disc}-generator")
        assert E.ElectraConfig.from_preset(f"electra-{disc}").generator_config(mult) == gen
    gens = [E.ElectraConfig.from_preset(f"electra-{p}-generator") for p in ("small", "base", "large")]
    assert [(g.hidden_size, g.num_attention_heads, g.intermediate_size, g.num_hidden_layers, g.embedding_size)
            for g in gens] == [(64, 1, 256, 12, 128), (256, 4, 1024, 12, 768), (256, 4, 1024, 24, 1024)]

def test_config_roundtrip_with_transformers(tmp_path):
    hf_cfg = transformers.ElectraConfig(hidden_size=64, num_attention_heads=2, id2label={0: "neg", 1: "neu", 2: "pos"},
                                        problem_type="single_label_classification")
    hf_cfg.save_pretrained(tmp_path / "a")
    ours = E.ElectraConfig.from_pretrained(tmp_path / "a")
    assert (ours.hidden_size, ours.num_labels, ours.id2label[2], ours.label2id["neu"]) == (64, 3, "pos", 1)
    assert ours.problem_type == "single_label_classification" and ours.extra["transformers_version"]
    ours.replace(num_labels=4).save_pretrained(tmp_path / "b")
    back = transformers.ElectraConfig.from_pretrained(tmp_path / "b")
    assert back.num_labels == 4 and back.id2label[3] == "LABEL_3" and back.hidden_size == 64
    assert E.ElectraConfig.from_pretrained(tmp_path / "b") == ours.replace(num_labels=4)


def test_from_pretrained_with_the_checkpoints_own_label_count_keeps_its_label_names(tmp_path):
    """from_pretrained(dir, num_labels=N) reset id2label to LABEL_i even when N was the checkpoint's
    count; transformers keeps the names then (and resets them for another count)."""
    names = {0: "neg", 1: "neu", 2: "pos"}
    E.ElectraForSequenceClassification(tiny(id2label=names, problem_type="single_label_classification")
                                       ).save_pretrained(tmp_path)
    theirs = transformers.ElectraForSequenceClassification.from_pretrained(tmp_path, num_labels=3).config
    ours = E.ElectraForSequenceClassification.from_pretrained(tmp_path, num_labels=3).config
    assert ours.id2label == theirs.id2label == names and ours.label2id == {"neg": 0, "neu": 1, "pos": 2}
    assert ours.problem_type == "single_label_classification"
    assert E.ElectraConfig.from_pretrained(tmp_path, num_labels=4).id2label == {i: f"LABEL_{i}" for i in range(4)}


def test_bert_config_loads_with_bert_defaults():
    cfg = E.ElectraConfig.from_dict({"model_type": "bert", "hidden_size": 384, "num_attention_heads": 12})
    assert cfg.embedding_size == 384 and cfg.intermediate_size == 3072
    assert E.ElectraConfig.from_dict({"model_type": "bert"}).hidden_size == 768
    assert cfg.to_dict()["model_type"] == "electra"


@pytest.mark.parametrize("overrides,match", [
    ({"position_embedding_type": "relative_key"}, "position_embedding_type='relative_key'"),
    ({"hidden_size": 30}, "hidden_size=30 is not a multiple of num_attention_heads=4"),
    ({"hidden_act": "gleu"}, "hidden_act='gleu'"),
    ({"problem_type": "ranking"}, "problem_type='ranking'"),
])
def test_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        tiny(**overrides)


# -- bad input -----------------------------------------------------------------------------------

def test_wrong_model_type_names_file_and_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5", "d_model": 8}))
    with pytest.raises(ModelTypeError, match=rf"{tmp_path / 'config.json'}.*'t5'.*ElectraConfig"):
        E.ElectraModel.from_pretrained(tmp_path)


def test_invalid_inputs_are_clear_errors():
    cfg = tiny()
    model = E.ElectraForPreTraining(cfg).eval()
    with pytest.raises(InvalidInputError, match=r"sequence length 129 .* max_position_embeddings=128 .*truncation=True"):
        model(torch.zeros(1, 129, dtype=torch.long))
    with pytest.raises(InvalidInputError, match=r"input_ids contains 512, outside \[0, 512\).*vocab"):
        model(torch.tensor([[1, 2, 512]]))
    with pytest.raises(InvalidInputError, match=r"input_ids contains -1"):
        model(torch.tensor([[1, -1]]))
    with pytest.raises(InvalidInputError, match=r"token_type_ids contains 2, outside \[0, 2\).*type_vocab_size"):
        model(torch.tensor([[1, 2]]), token_type_ids=torch.tensor([[0, 2]]))
    with pytest.raises(InvalidInputError, match=r"attention_mask has shape \(1, 3\), input_ids \(1, 2\)"):
        model(torch.tensor([[1, 2]]), attention_mask=torch.ones(1, 3))
    with pytest.raises(InvalidInputError, match=r"\(batch, seq_len\)"):
        model(torch.tensor([1, 2]))
    with pytest.raises(ConfigError, match="num_labels must be 2"):
        E.ElectraForQuestionAnswering(tiny(num_labels=3))


def test_weight_shape_mismatch_names_key_and_shapes(tmp_path):
    E.ElectraModel(tiny()).save_pretrained(tmp_path)
    with pytest.raises(WeightsMismatchError, match=r"embeddings.word_embeddings.weight.*\(512, 16\).*\(600, 16\)"):
        E.ElectraModel.from_pretrained(tmp_path, vocab_size=600)


def test_check_inputs_is_a_flag_as_in_t5_and_a_head_forwards_it():
    """``model.check_inputs = False`` skips the id range check (its host sync), on the encoder or a head."""
    cfg = tiny()
    ids = torch.full((1, 4), cfg.vocab_size)
    for cls in (E.ElectraModel, E.ElectraForSequenceClassification):
        model = cls(cfg).eval()
        with pytest.raises(InvalidInputError, match="outside"):
            model(ids)
        model.check_inputs = False
        assert model.check_inputs is False and getattr(model, "electra", model).check_inputs is False
        with pytest.raises(IndexError):  # torch's own error remains
            model(ids)


def test_label_names_set_the_label_count_as_in_transformers():
    """id2label alone (a preset, an override, from_pretrained(..., id2label=...)) sets num_labels;
    num_labels alone gives default names (it was a "num_labels=2 but id2label has 3" error)."""
    names = {0: "neg", 1: "neutral", 2: "pos"}
    for cfg in (E.ElectraConfig.from_preset("electra-tiny", id2label=names),
                E.ElectraConfig.from_preset("electra-tiny").replace(id2label=names)):
        assert cfg.num_labels == 3 and cfg.label2id == {"neg": 0, "neutral": 1, "pos": 2}
    assert E.ElectraConfig.from_preset("electra-tiny").replace(num_labels=3).id2label[2] == "LABEL_2"


def test_save_pretrained_warns_that_transformers_pools_a_mean_classifier_differently(tmp_path, monkeypatch):
    """classifier_pooling "mean" (the quickstart's ELECTRA and MiniLM classifiers): transformers'
    class loads the saved directory without an error but reads [CLS]; only `t5electra convert` said
    so. Once a process (a run saves a checkpoint every few steps, and its scoring's catch_warnings
    made Python's own once-per-place say it again); [CLS] pooling and the other classes say nothing."""
    import warnings

    from t5electra import modeling
    from t5electra.modeling import TransformersDiffersWarning

    monkeypatch.setattr(modeling, "_SAID", set())  # as in a new process
    mean = E.ElectraForSequenceClassification(tiny(classifier_pooling="mean"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        for name in ("step-1", "step-2"):
            mean.save_pretrained(tmp_path / name)
            with warnings.catch_warnings():  # e.g. metrics.py between two checkpoints
                warnings.simplefilter("ignore")
        mean.save_pretrained(tmp_path / "other", is_main_process=False)  # writes nothing
        E.ElectraForSequenceClassification(tiny()).save_pretrained(tmp_path / "first")
        E.ElectraModel(tiny(classifier_pooling="mean")).save_pretrained(tmp_path / "encoder")
    said = [str(w.message) for w in caught if issubclass(w.category, TransformersDiffersWarning)]
    assert len(said) == 1 and "classifier_pooling='mean'" in said[0] and "reads the [CLS] vector" in said[0]
    assert "predicts differently" in said[0] and said[0] == mean.transformers_differs()
