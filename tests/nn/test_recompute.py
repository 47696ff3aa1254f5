"""Activation checkpointing (nn/recompute.py) gives the plain run's gradients, dropout included."""

from __future__ import annotations

import pytest
import torch

from t5electra.models.electra import ElectraConfig, ElectraForSequenceClassification
from t5electra.models.electra_rtd import ElectraPretrainer
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.nn.recompute import set_activation_checkpointing


def _grads(model, loss_of, seed: int, checkpointing: bool) -> tuple[float, int, dict[str, torch.Tensor]]:
    set_activation_checkpointing(model, checkpointing)
    model.zero_grad(set_to_none=True)
    # a module inside the first block counts how often it runs: twice per step when recomputed
    inner = next(next(m for m in model.modules() if hasattr(type(m), "checkpoint_activations")).children())
    calls = []
    hook = inner.register_forward_hook(lambda *_: calls.append(1))
    torch.manual_seed(seed)  # the same dropout masks (and ELECTRA masks / samples) for both runs
    loss = loss_of(model)
    loss.backward()
    hook.remove()
    return float(loss.detach()), len(calls), {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.grad is not None}


def _same_gradients(model, loss_of):
    model.train()
    loss_a, calls_a, plain = _grads(model, loss_of, 7, False)
    loss_b, calls_b, recomputed = _grads(model, loss_of, 7, True)
    assert loss_a == loss_b
    assert calls_b == 2 * calls_a > 0  # the block did run again in backward
    assert plain.keys() == recomputed.keys() and len(plain) > 10
    # the recomputation runs the same kernels on the same inputs, with the RNG state restored: bit for bit
    for name in plain:
        assert torch.equal(plain[name], recomputed[name]), name


@pytest.mark.parametrize("version", ["v1.0", "v1.1"])
def test_t5_blocks_recompute_to_the_same_gradients(version):
    torch.manual_seed(0)
    v11 = version == "v1.1"
    cfg = T5Config(vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, dropout_rate=0.1,
                   feed_forward_proj="gated-gelu" if v11 else "relu", tie_word_embeddings=not v11)
    model = T5ForConditionalGeneration(cfg)
    ids, labels = torch.randint(2, 64, (3, 9)), torch.randint(2, 64, (3, 5))
    mask = torch.ones_like(ids)
    mask[0, -3:] = 0
    assert set_activation_checkpointing(model) == 4  # every encoder and decoder block
    _same_gradients(model, lambda m: m(input_ids=ids, attention_mask=mask, labels=labels).loss)


def test_electra_layers_recompute_to_the_same_gradients():
    torch.manual_seed(0)
    disc = ElectraConfig(vocab_size=64, embedding_size=16, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=4, intermediate_size=48, max_position_embeddings=16,
                         hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
    pretrainer = ElectraPretrainer(disc, generator_size=0.5, mask_token_id=3, special_token_ids=[1, 2])
    ids = torch.randint(4, 64, (3, 12))
    _same_gradients(pretrainer, lambda m: m(ids).loss)  # generator + discriminator, masks and samples
    classifier = ElectraForSequenceClassification(disc.replace(num_labels=3))
    classifier.gradient_checkpointing_enable()
    assert all(layer.checkpoint_activations for layer in classifier.electra.layers)
    labels = torch.tensor([0, 2, 1])
    _same_gradients(classifier, lambda m: m(ids, labels=labels).loss)


def test_no_recomputation_without_gradients():
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset("t5-tiny"))
    model.gradient_checkpointing_enable()
    ids = torch.randint(2, 256, (2, 6))
    with torch.no_grad():
        plain = model.eval()(input_ids=ids, decoder_input_ids=ids).logits
    model.gradient_checkpointing_disable()
    assert not any(getattr(m, "checkpoint_activations", False) for m in model.modules())
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, decoder_input_ids=ids).logits, plain)


def test_transformers_entry_points_every_n_layers_and_offload(monkeypatch):
    """activation_checkpointing_enable / gradient_checkpointing_enable with transformers 5's arguments:
    every_n_layers picks blocks 0, n, 2n... over the whole model; offload keeps what the recomputation
    saves in host memory (save_on_cpu) and changes no gradient."""
    from t5electra.nn import recompute

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset("t5-tiny", num_layers=3, dropout_rate=0.1))
    assert model.supports_gradient_checkpointing and not model.is_gradient_checkpointing
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=None, every_n_layers=2, offload=False)
    flags = [b.checkpoint_activations for b in [*model.encoder.blocks, *model.decoder.blocks]]
    assert flags == [True, False, True, False, True, False] and model.is_activation_checkpointing
    model.activation_checkpointing_disable()
    assert not model.is_gradient_checkpointing

    offloaded = []
    real = recompute.save_on_cpu
    monkeypatch.setattr(recompute, "save_on_cpu", lambda **kw: offloaded.append(kw) or real(**kw))
    ids, labels = torch.randint(2, 256, (2, 7)), torch.randint(2, 256, (2, 5))
    model.train()

    def grads(offload: bool) -> dict[str, torch.Tensor]:
        if offload:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False},
                                                  offload=True)
        else:
            model.activation_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(7)
        model(input_ids=ids, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain, recomputed = grads(False), grads(True)
    assert len(offloaded) == 6  # every block's forward ran under save_on_cpu
    assert plain.keys() == recomputed.keys()
    for name in plain:
        assert torch.equal(plain[name], recomputed[name]), name


@pytest.mark.parametrize("bad, match", [
    (dict(every_n_layers=0), "every_n_layers must be a positive integer"),
    (dict(every_n_layers=1.5), "every_n_layers must be a positive integer"),
    (dict(offload="yes"), "offload must be True or False"),
    (dict(activation_checkpointing_kwargs={"preserve_rng_state": False}), "unknown"),
])
def test_checkpointing_arguments_refused_clearly(bad, match):
    from t5electra.errors import ConfigError

    model = ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny"))
    with pytest.raises(ConfigError, match=match):
        model.activation_checkpointing_enable(**bad)
