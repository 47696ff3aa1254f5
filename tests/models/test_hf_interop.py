"""Our models inside transformers' own machinery (pipelines, Trainer, Seq2SeqTrainer) and the
attributes and call conventions that machinery relies on, each compared with transformers' model
holding the same weights."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from t5electra.errors import ConfigError, InvalidInputError  # noqa: E402
from t5electra.models import electra as E  # noqa: E402
from t5electra.models.t5 import T5Model  # noqa: E402

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(200)] + list("abcdefghij")


def electra_pair(name: str, tmp_path, **config):
    """(ours, transformers') ELECTRA ``name`` with the same random weights (transformers' saved, ours loads)."""
    cfg = E.ElectraConfig.from_preset("electra-tiny", **config)
    cfg.save_pretrained(tmp_path / "cfg")
    hf_cfg = transformers.ElectraConfig.from_pretrained(tmp_path / "cfg", attn_implementation="eager")
    hf = getattr(transformers, name)(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    hf.save_pretrained(tmp_path / "hf")
    return getattr(E, name).from_pretrained(tmp_path / "hf"), hf


def wordpiece_tokenizer(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))


def test_fill_mask_pipeline_runs_our_masked_lm(tmp_path):
    """The pipeline adds input_ids to the model's output by item assignment and reads it back by key."""
    ours, hf = electra_pair("ElectraForMaskedLM", tmp_path)
    tok = wordpiece_tokenizer(tmp_path)
    got = transformers.pipeline("fill-mask", model=ours, tokenizer=tok, device="cpu", top_k=3)("w1 [MASK] a b")
    want = transformers.pipeline("fill-mask", model=hf, tokenizer=tok, device="cpu", top_k=3)("w1 [MASK] a b")
    assert [r["token"] for r in got] == [r["token"] for r in want]
    assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-5)


def assert_same_nested(a, b, **tol):
    """Two outputs' tuples element by element (tensors, or tuples of tensors)."""
    assert type(a) is type(b) or not isinstance(a, tuple), (type(a), type(b))
    if isinstance(a, tuple):
        assert len(a) == len(b), [getattr(x, "shape", len(x)) for x in a]
        for x, y in zip(a, b):
            assert_same_nested(x, y, **tol)
    else:
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("cls", ["T5ForConditionalGeneration", "T5Model"])
def test_t5_tuples_in_transformers_order(cls, tmp_path):
    """return_dict=False with every extra output: transformers' order (decoder's extras, then the
    encoder's), which transformers returns with use_cache=False (what its Trainer sets)."""
    import t5electra.models.t5 as T
    from tiny_t5 import tiny_pair

    tiny_pair("v1.1", 0, tmp_path)  # saved there
    ours, hf = getattr(T, cls).from_pretrained(tmp_path), getattr(transformers, cls).from_pretrained(
        tmp_path, attn_implementation="eager").eval()
    ids, dec = torch.randint(2, 128, (2, 6)), torch.randint(2, 128, (2, 4))
    call = dict(input_ids=ids, decoder_input_ids=dec, output_hidden_states=True, output_attentions=True,
                return_dict=False)
    if cls == "T5ForConditionalGeneration":
        call["labels"] = dec
    with torch.no_grad():
        a, b = ours(**call), hf(**call, use_cache=False)
    assert len(a) == len(b) == (8 if "labels" in call else 7)
    assert_same_nested(a, b, atol=2e-3, rtol=1e-3)  # the spread tiny model: logits ~10
    with torch.no_grad():
        call["return_dict"] = True
        assert list(ours(**call).keys()) == list(hf(**call, use_cache=False).keys())


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def classification_items(n: int = 8):
    g = torch.Generator().manual_seed(0)
    return [dict(input_ids=torch.randint(5, 200, (8,), generator=g), attention_mask=torch.ones(8, dtype=torch.long),
                 labels=torch.tensor(i % 3)) for i in range(n)]


@pytest.mark.parametrize("every_n_layers", [1, 2])
def test_trainer_with_gradient_checkpointing_trains_our_model(every_n_layers, tmp_path):
    """TrainingArguments(gradient_checkpointing=True): transformers' Trainer calls
    activation_checkpointing_enable(activation_checkpointing_kwargs=None, every_n_layers=.., offload=False);
    the steps then match transformers' model (same weights, same batches, no dropout)."""
    losses = {}
    pair = electra_pair("ElectraForSequenceClassification", tmp_path, num_labels=3, num_hidden_layers=3,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    for which, model in zip(("ours", "hf"), pair):
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / f"run-{which}"), per_device_train_batch_size=4, max_steps=2, report_to=[],
            use_cpu=True, save_strategy="no", logging_steps=1, learning_rate=1e-3, seed=0, gradient_checkpointing=True,
            gradient_checkpointing_kwargs={"every_n_layers": every_n_layers}, dataloader_num_workers=0)
        trainer = transformers.Trainer(model=model, args=args, train_dataset=ListDataset(classification_items()))
        losses[which] = trainer.train().training_loss
        if which == "ours":
            assert model.is_gradient_checkpointing and model.is_activation_checkpointing
            assert [layer.checkpoint_activations for layer in model.electra.layers] == [
                i % every_n_layers == 0 for i in range(3)]
    assert losses["ours"] == pytest.approx(losses["hf"], abs=1e-4)


def seq2seq_collate(features):
    """Right-padded input_ids / attention_mask (pad 0) and labels (-100), as DataCollatorForSeq2Seq pads."""
    def pad(key, value):
        n = max(len(f[key]) for f in features)
        return torch.tensor([f[key] + [value] * (n - len(f[key])) for f in features])
    return {"input_ids": pad("input_ids", 0), "attention_mask": pad("attention_mask", 0), "labels": pad("labels", -100)}


@pytest.mark.parametrize("num_beams", [1, 2])
def test_seq2seq_trainer_predict_with_generate_as_transformers(num_beams, tmp_path):
    """Seq2SeqTrainer(predict_with_generate=True).predict passes labels and synced_gpus=False to generate,
    then reads and clears model.generation_config._from_model_config and fills its defaults."""
    import numpy as np
    from tiny_t5 import tiny_pair

    items = [dict(input_ids=list(range(2, 7 + i % 3)), attention_mask=[1] * (5 + i % 3),
                  labels=list(range(10, 12 + i % 4))) for i in range(6)]
    results = []
    for model in tiny_pair("v1.0", 1, tmp_path):
        assert model.generation_config._from_model_config is not None
        args = transformers.Seq2SeqTrainingArguments(
            output_dir=str(tmp_path / "run"), per_device_eval_batch_size=4, report_to=[], use_cpu=True,
            predict_with_generate=True, generation_max_length=6, generation_num_beams=num_beams)
        trainer = transformers.Seq2SeqTrainer(model=model, args=args, data_collator=seq2seq_collate)
        results.append(trainer.predict(ListDataset(items)))
        assert model.generation_config._from_model_config is False
    ours, theirs = results
    assert ours.predictions.shape == theirs.predictions.shape and np.array_equal(ours.predictions, theirs.predictions)
    assert np.array_equal(ours.label_ids, theirs.label_ids)
    assert ours.metrics["test_loss"] == pytest.approx(theirs.metrics["test_loss"], abs=1e-4)


def test_t5_get_encoder_and_get_decoder_are_modules_over_the_models_parameters(tmp_path):
    """get_encoder() was a function (get_encoder().parameters() failed); get_decoder() was missing."""
    import t5electra.models.t5 as T
    from tiny_t5 import tiny_pair

    ours, hf = tiny_pair("v1.1", 0, tmp_path)
    keys = list(ours.state_dict())
    own = {id(p) for p in ours.parameters()}
    for name in ("get_encoder", "get_decoder"):
        view, theirs = getattr(ours, name)(), getattr(hf, name)()
        assert isinstance(view, torch.nn.Module) and {id(p) for p in view.parameters()} <= own
        assert sum(p.numel() for p in view.parameters()) == sum(p.numel() for p in theirs.parameters())
    ids, dec = torch.randint(2, 128, (2, 7)), torch.randint(2, 128, (2, 4))
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    tol = dict(atol=2e-3, rtol=1e-3)
    with torch.no_grad():
        enc, hf_enc = (m.get_encoder()(input_ids=ids, attention_mask=mask) for m in (ours, hf))
        torch.testing.assert_close(enc.last_hidden_state, hf_enc.last_hidden_state, **tol)
        out, hf_out = (m.get_decoder()(input_ids=dec, encoder_hidden_states=enc.last_hidden_state,
                                       encoder_attention_mask=mask) for m in (ours, hf))
        torch.testing.assert_close(out.last_hidden_state, hf_out.last_hidden_state, **tol)
        assert ours.get_encoder()(ids, mask, return_dict=False)[0].shape == (2, 7, 32)
    ours.train()
    ours.get_encoder().requires_grad_(False).eval()  # freeze the encoder through the view
    assert not ours.shared.weight.requires_grad and not any(p.requires_grad for p in ours.encoder.parameters())
    assert all(p.requires_grad for p in ours.decoder.parameters()) and ours.lm_head.weight.requires_grad
    assert not ours.encoder.training and ours.decoder.training and list(ours.state_dict()) == keys
    with pytest.raises(InvalidInputError, match="pass encoder_hidden_states"):
        ours.get_decoder()(input_ids=dec)
    # config.json's return_dict: false / output_hidden_states: true reach the views too, as transformers'
    # stacks read them (the view returned its output object whatever the config said)
    hf.config.return_dict, hf.config.output_hidden_states = False, True
    hf.save_pretrained(tmp_path / "flags")  # transformers' stacks copy the config when built: set in the file
    flagged = (T.T5ForConditionalGeneration.from_pretrained(tmp_path / "flags"),
               type(hf).from_pretrained(tmp_path / "flags").eval())
    with torch.no_grad():
        got, want = (m.get_encoder()(input_ids=ids, attention_mask=mask) for m in flagged)
    assert isinstance(got, tuple) and isinstance(want, tuple) and len(got) == len(want) == 2
    torch.testing.assert_close(got[0], want[0], **tol)
    assert len(got[1]) == len(want[1]) == ours.config.num_layers + 1
    encoder_only = T.T5EncoderModel.from_pretrained(tmp_path)
    assert sum(p.numel() for p in encoder_only.get_encoder().parameters()) == encoder_only.num_parameters()
    assert not hasattr(encoder_only, "get_decoder")


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_t5_set_output_embeddings_unties_and_saves_for_transformers(version, tmp_path):
    from tiny_t5 import tiny_pair

    ours, _ = tiny_pair(version, 0, tmp_path / "src")
    ids, dec = torch.randint(2, 128, (2, 6)), torch.randint(2, 128, (2, 4))
    tied = ours.config.tie_word_embeddings
    ours.set_output_embeddings(ours.get_output_embeddings())  # the layer itself: nothing changes
    assert ours.config.tie_word_embeddings == tied and (ours.lm_head is None) == tied
    with pytest.raises(ConfigError, match=r"takes an nn.Linear\(32, 128, bias=False\)"):
        ours.set_output_embeddings(torch.nn.Linear(32, 100, bias=False))
    new = torch.nn.Linear(32, 128, bias=False)
    with torch.no_grad():
        new.weight.copy_(ours.get_output_embeddings().weight * 1.5)
        before = ours(input_ids=ids, decoder_input_ids=dec).logits
    ours.set_output_embeddings(new)
    assert ours.get_output_embeddings() is new and not ours.config.tie_word_embeddings
    assert ours.get_input_embeddings().weight is not new.weight
    with torch.no_grad():
        after = ours(input_ids=ids, decoder_input_ids=dec).logits
        torch.testing.assert_close(after, before * 1.5, atol=1e-4, rtol=1e-4)  # v1.0 keeps its rescaling
        ours.save_pretrained(tmp_path / "out")
        hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
        torch.testing.assert_close(hf(input_ids=ids, decoder_input_ids=dec).logits, after, atol=2e-3, rtol=1e-3)
    with pytest.raises(ConfigError, match="T5Model has no output layer"):
        T5Model.from_pretrained(tmp_path / "out").set_output_embeddings(new)


def test_electra_set_output_embeddings_unties_the_generator(tmp_path):
    ours, _ = electra_pair("ElectraForMaskedLM", tmp_path)
    ids = torch.randint(5, 200, (2, 6))
    layer = ours.get_output_embeddings()
    new = torch.nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        new.weight.copy_(layer.weight * 2)
        new.bias.copy_(layer.bias)
    ours.set_output_embeddings(new)
    assert not ours.tied and ours.get_output_embeddings() is new
    with torch.no_grad():
        ours.save_pretrained(tmp_path / "out")
        hf = transformers.ElectraForMaskedLM.from_pretrained(tmp_path / "out").eval()
        torch.testing.assert_close(hf(input_ids=ids).logits, ours(ids).logits, atol=1e-4, rtol=1e-4)
        assert not torch.equal(hf.generator_lm_head.weight, hf.electra.embeddings.word_embeddings.weight)


@pytest.mark.parametrize("labels, problem", [
    (torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "multi_label_classification"),
    (torch.tensor([2, 0]), "single_label_classification")])
def test_inferred_problem_type_is_kept_and_saved_as_transformers(labels, problem, tmp_path):
    """A multi-label model saved after training had problem_type null: transformers' pipeline then
    applied softmax to it instead of sigmoid."""
    import json

    for model in electra_pair("ElectraForSequenceClassification", tmp_path, num_labels=3):
        model.train()
        model(input_ids=torch.randint(5, 200, (2, 5)), labels=labels).loss.backward()
        assert model.config.problem_type == problem
    pair = electra_pair("ElectraForSequenceClassification", tmp_path / "again", num_labels=3)
    pair[0](input_ids=torch.randint(5, 200, (2, 5)), labels=labels)
    pair[0].save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["problem_type"] == problem
    tok = wordpiece_tokenizer(tmp_path)
    reloaded = transformers.ElectraForSequenceClassification.from_pretrained(tmp_path / "saved")
    scores = transformers.pipeline("text-classification", model=reloaded, tokenizer=tok, device="cpu",
                                   top_k=None)(["w1 w2 a b"])[0]
    assert reloaded.config.problem_type == problem
    assert (sum(r["score"] for r in scores) == pytest.approx(1.0)) == (problem == "single_label_classification")


def test_config_attributes_transformers_code_reads(tmp_path):
    """T5Config's transformers aliases (attribute_map), the call defaults of both configs and ELECTRA's
    encoder flags, equal to transformers' configs loaded from the same config.json; to_dict unchanged."""
    from t5electra.models.t5 import T5Config

    t5 = T5Config.from_preset("t5-v1_1-tiny")
    before = t5.to_dict()
    t5.save_pretrained(tmp_path / "t5")
    hf_t5 = transformers.T5Config.from_pretrained(tmp_path / "t5")
    electra = E.ElectraConfig.from_preset("electra-tiny")
    electra.save_pretrained(tmp_path / "electra")
    hf_electra = transformers.ElectraConfig.from_pretrained(tmp_path / "electra")
    names = ["hidden_size", "num_attention_heads", "num_hidden_layers", "head_dim", "return_dict",
             "output_hidden_states", "output_attentions", "is_encoder_decoder"]
    assert {k: getattr(t5, k) for k in names} == {k: getattr(hf_t5, k) for k in names}
    names = ["hidden_size", "num_attention_heads", "num_hidden_layers", "return_dict", "output_hidden_states",
             "output_attentions", "is_encoder_decoder", "is_decoder", "tie_word_embeddings"]
    assert {k: getattr(electra, k) for k in names} == {k: getattr(hf_electra, k) for k in names}
    assert t5.use_return_dict is True and t5.to_dict() == before and "hidden_size" not in before
    t5.hidden_size = 48  # transformers' aliases set the field
    assert t5.d_model == 48 and t5.to_dict()["d_model"] == 48
    with pytest.raises(ConfigError, match="return_dict must be True or False"):
        t5.return_dict = "no"
    assert not E.ElectraConfig.from_dict({**electra.to_dict(), "tie_word_embeddings": False}).tie_word_embeddings
    untied = E.ElectraConfig.from_dict(electra.to_dict())
    untied.tie_word_embeddings = False  # as transformers' code sets it, before the model is built
    mlm = E.ElectraForMaskedLM(untied)
    assert mlm.generator_lm_head.weight is not mlm.electra.embeddings.word_embeddings.weight
    assert untied.to_dict()["tie_word_embeddings"] is False


@pytest.mark.parametrize("name", ["ElectraForSequenceClassification", "ElectraForMaskedLM"])
def test_config_call_defaults_are_honoured_as_transformers(name, tmp_path):
    """config.json's return_dict: false (and output_hidden_states / output_attentions: true) were kept in
    config.extra and ignored: transformers' model then returns a tuple with the extras, ours an object."""
    ours, hf = electra_pair(name, tmp_path, num_labels=3)
    hf.config.return_dict, hf.config.output_hidden_states, hf.config.output_attentions = False, True, True
    hf.save_pretrained(tmp_path / "flags")
    ours = getattr(E, name).from_pretrained(tmp_path / "flags")
    assert (ours.config.return_dict, ours.config.output_hidden_states, ours.config.output_attentions) == (
        False, True, True)
    ids = torch.randint(5, 200, (2, 6))
    with torch.no_grad():
        got, want = ours(ids), hf(input_ids=ids)
        assert isinstance(got, tuple) and len(got) == len(want) == 3  # logits, hidden states, attentions
        assert_same_nested(got, want, atol=1e-4, rtol=1e-4)
        assert ours(ids, return_dict=True, output_attentions=False).attentions is None  # the call's options win
    if name == "ElectraForMaskedLM":  # the library's own callers ask for the output object
        from t5electra.generation.fill_mask import fill_mask_generate

        ids[:, 2] = 4
        assert fill_mask_generate(ours, ids, mask_token_id=4).shape == ids.shape
    if name == "ElectraForSequenceClassification":  # evaluation (and serve, training) ask for no extras: the
        from t5electra.eval.heads import predict   # config's output_attentions made them ~40 % slower

        seen = []
        ours.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs), with_kwargs=True)
        features = [{"input_ids": [2, 7, 9, 3], "token_type_ids": [0] * 4, "labels": 1},
                    {"input_ids": [2, 8, 3], "token_type_ids": [0] * 3, "labels": 0}]
        preds, _ = predict(ours, features, batch_size=2, pad_token_id=0, device=torch.device("cpu"))
        assert len(preds) == 2 and seen and all(
            not k.get("output_attentions") and not k.get("output_hidden_states") for k in seen)


@pytest.mark.parametrize("name", ["ElectraForPreTraining", "ElectraForMaskedLM", "ElectraForSequenceClassification",
                                  "ElectraForTokenClassification", "ElectraForQuestionAnswering", "ElectraModel"])
def test_electra_positional_arguments_stop_where_transformers_differ(name, tmp_path):
    """transformers' 4th positional argument is position_ids: ours(ids, mask, types, positions) computed a
    loss with the positions as labels. Labels / start / end positions are keyword-only."""
    ours, hf = electra_pair(name, tmp_path)
    ids = torch.randint(5, 200, (2, 6))
    mask, types, positions = torch.ones_like(ids), torch.zeros_like(ids), torch.arange(6).expand(2, 6)
    assert ours._positional_names() == ("input_ids", "attention_mask", "token_type_ids")
    with pytest.raises(TypeError, match=r"takes 3 positional arguments \(input_ids, attention_mask, "
                                        r"token_type_ids\), got 4: pass the others by keyword"):
        ours(ids, mask, types, positions)
    with torch.no_grad():
        assert_same_nested(ours(ids, mask, types).to_tuple(), hf(ids, mask, types).to_tuple(), atol=1e-4, rtol=1e-4)


def test_t5_positional_arguments_are_transformers_first_five():
    from t5electra.models.t5 import T5EncoderModel, T5ForConditionalGeneration

    five = ("input_ids", "attention_mask", "decoder_input_ids", "decoder_attention_mask", "encoder_outputs")
    assert T5ForConditionalGeneration._positional_names() == T5Model._positional_names() == five
    assert T5EncoderModel._positional_names() == ("input_ids", "attention_mask")
    import inspect

    for ours, theirs in ((T5ForConditionalGeneration, transformers.T5ForConditionalGeneration),
                         (T5Model, transformers.T5Model), (T5EncoderModel, transformers.T5EncoderModel)):
        hf_names = list(inspect.signature(theirs.forward).parameters)[1:]
        assert hf_names[:len(ours._positional_names())] == list(ours._positional_names())


@pytest.mark.parametrize("name", ["ElectraModel", "ElectraForPreTraining", "ElectraForMaskedLM",
                                  "ElectraForSequenceClassification", "ElectraForTokenClassification",
                                  "ElectraForQuestionAnswering"])
@pytest.mark.parametrize("shape", [(0, 5), (2, 0)])
def test_an_empty_electra_batch_is_refused_clearly(name, shape):
    """It failed deep inside attention with a reshape error (the input check returned early on it)."""
    model = getattr(E, name)(E.ElectraConfig.from_preset("electra-tiny")).eval()
    with pytest.raises(InvalidInputError, match=r"input_ids must be \(batch, seq_len\) with batch and seq_len > 0, "
                                                 rf"got shape \({shape[0]}, {shape[1]}\)"):
        model(torch.zeros(shape, dtype=torch.long))


def test_use_cache_true_is_refused_in_a_forward(tmp_path):
    """use_cache=True was accepted and ignored (no cache returned). transformers' Trainer and
    Seq2SeqTrainer never pass it to a forward (they set config.use_cache and call generate), its pipelines
    pass use_cache=False at most: False and None stay accepted."""
    from tiny_t5 import tiny_pair

    t5, _ = tiny_pair("v1.1", 0, tmp_path)
    ids = torch.randint(2, 128, (2, 5))
    with torch.no_grad():
        for use_cache in (False, None):
            assert t5(input_ids=ids, decoder_input_ids=ids, use_cache=use_cache).cache is None
        with pytest.raises(InvalidInputError, match=r"use_cache=True\): a full forward here keeps no cache.*"
                                                     r"model.generate\(...\), or model.new_decoder_cache"):
            t5(input_ids=ids, decoder_input_ids=ids, use_cache=True)
        electra = E.ElectraForSequenceClassification(E.ElectraConfig.from_preset("electra-tiny"))
        with pytest.raises(InvalidInputError, match=r"ElectraForSequenceClassification\(use_cache=True\): .* "
                                                     r"returns none; pass use_cache=False"):
            electra(ids, use_cache=True)
