"""train_step: gradient accumulation, clipping, bf16 autocast, metrics; evaluate."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from t5electra.errors import ConfigError, DataError
from t5electra.train.loop import LOSS_WEIGHT, autocast, evaluate, seed_everything, train_step


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.Linear(16, 3))


def _loss(model, batch):
    x, y = batch
    return nn.functional.cross_entropy(model(x), y), {"tokens": x.shape[0], "acc": 0.5}


def _data(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)


def _one_batch_vs_accumulated(make_model, whole, parts, loss_fn, optim, clip):
    """Three steps of one model on ``whole`` and of a copy on the micro-batches ``parts``: the same
    losses, gradient norms and weights; returns the accumulated side's last StepOutput."""
    big, small = make_model(), make_model()
    opt_big, opt_small = optim(big.parameters()), optim(small.parameters())
    for _ in range(3):
        a = train_step(big, [whole], loss_fn, opt_big, max_grad_norm=clip)
        b = train_step(small, parts, loss_fn, opt_small, max_grad_norm=clip)
        assert b.loss == pytest.approx(a.loss, abs=1e-6) and b.grad_norm == pytest.approx(a.grad_norm, abs=1e-6)
    for p, q in zip(big.parameters(), small.parameters()):
        assert torch.allclose(p, q, atol=1e-6), (p - q).abs().max()
    return b


def test_accumulation_equals_one_big_batch():
    x, y = _data()
    b = _one_batch_vs_accumulated(_model, (x, y), [(x[:4], y[:4]), (x[4:], y[4:])], _loss,
                                  lambda ps: torch.optim.AdamW(ps, lr=0.1), 0.5)
    assert b.metrics == {"tokens": 8.0, "acc": 0.5}  # counts summed, other metrics averaged


def _token_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Embedding(10, 8), nn.Tanh(), nn.Linear(8, 10))


def token_loss(model, batch):
    """Cross-entropy averaged over the labelled tokens (-100: none), as T5's; its weight is their count."""
    ids, labels = batch
    loss = nn.functional.cross_entropy(model(ids).flatten(0, 1), labels.flatten(), ignore_index=-100)
    return loss, {LOSS_WEIGHT: int((labels != -100).sum()), "tokens": ids.numel()}


def token_batches(counts=(5, 4, 1, 1)):
    """Rows of 5 tokens whose first ``counts[i]`` are labelled, -100 after (targets of different lengths)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 10, (len(counts), 5), generator=g)
    labels = torch.randint(0, 10, (len(counts), 5), generator=g)
    labels[torch.arange(5) >= torch.tensor(counts)[:, None]] = -100
    return ids, labels


def test_accumulation_is_the_token_mean_over_the_whole_step():
    """Micro-batches with 9 and 2 target tokens: the step's loss and gradient are the mean over the 11
    tokens, as one batch of both; a mean of the micro-batches' means weighed each of the 2 tokens as
    4.5 of the others."""
    ids, labels = token_batches()
    b = _one_batch_vs_accumulated(_token_model, (ids, labels), [(ids[:2], labels[:2]), (ids[2:], labels[2:])],
                                  token_loss, lambda ps: torch.optim.SGD(ps, lr=0.5), 1.0)
    assert b.metrics == {"tokens": 20.0}  # the weight is not a metric


def test_one_micro_batch_on_one_process_keeps_the_plain_gradient_bit_for_bit():
    """The token weighting changes nothing where there is nothing to weigh: one micro-batch on one
    process backpropagates its loss as it is (scaled by its token count and back, the gradients
    rounded differently and runs drifted from the ones before the weighting)."""
    ids, labels = token_batches((5, 3, 4, 2, 5, 1, 3, 4))
    a, b = _token_model(), _token_model()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5)
    for _ in range(3):
        train_step(a, [(ids, labels)], token_loss, opt_a)
        opt_b.zero_grad()
        loss = token_loss(b, (ids, labels))[0]
        loss.backward()
        opt_b.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q), (p - q).abs().max()


def test_a_loss_weight_for_some_micro_batches_only_is_refused():
    ids, labels = token_batches()
    model = _token_model()
    calls = iter([True, False])

    def loss_fn(m, batch):
        loss, logs = token_loss(m, batch)
        return (loss, logs) if next(calls) else loss

    with pytest.raises(ConfigError, match="loss_weight' for some micro-batches"):
        train_step(model, [(ids[:2], labels[:2]), (ids[2:], labels[2:])], loss_fn,
                   torch.optim.SGD(model.parameters(), lr=0.1))


def test_clipping_reports_the_norm_before_clipping_and_lr_of_the_step():
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    before = [p.detach().clone() for p in model.parameters()]
    out = train_step(model, [_data()], _loss, opt, sched, max_grad_norm=1e-3)
    assert out.grad_norm > 1e-3 and out.lr == 1.0 and opt.param_groups[0]["lr"] == 0.5
    step = torch.cat([(p - b).flatten() for p, b in zip(model.parameters(), before)])
    assert step.norm().item() == pytest.approx(1e-3, rel=1e-4)  # SGD lr 1: the update is the clipped gradient


def test_bf16_autocast_trains_close_to_fp32():
    seed_everything(0)
    results = {}
    for precision in ("fp32", "bf16"):
        model = _model()
        opt = torch.optim.AdamW(model.parameters(), lr=0.05)
        results[precision] = [train_step(model, [_data()], _loss, opt, precision=precision).loss for _ in range(5)]
        assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    assert results["bf16"][-1] < results["bf16"][0]
    assert results["bf16"] == pytest.approx(results["fp32"], rel=0.05)
    with pytest.raises(ConfigError, match="fp16 overflows"):
        autocast("fp16", "cpu")


def test_evaluate_averages_in_eval_mode_and_restores_train_mode():
    model = nn.Sequential(nn.Linear(6, 3), nn.Dropout(0.9))
    model.train()
    x, y = _data(8)
    batches = [(x[:4], y[:4]), (x[4:], y[4:]), (x, y)]
    with torch.no_grad():
        model.eval()
        expected = sum(nn.functional.cross_entropy(model(a), b).item() for a, b in batches[:2]) / 2
        model.train()
    out = evaluate(model, batches, _loss, max_batches=2)
    assert out["loss"] == pytest.approx(expected, rel=1e-6) and out["tokens"] == 8
    assert model.training
    assert evaluate(model, [], _loss) == {}


def test_evaluate_averages_a_metric_over_the_batches_where_it_is_defined():
    logs = iter([(1.0, {"auc": 0.5, "acc": 1.0}), (3.0, {"auc": float("nan"), "acc": 0.0}),
                 (float("nan"), {"auc": 0.7, "acc": 0.5})])

    def loss_fn(model, batch):
        loss, metrics = next(logs)
        return torch.tensor(loss), metrics

    out = evaluate(nn.Linear(1, 1), range(2), loss_fn)
    assert out == {"loss": 2.0, "auc": 0.5, "acc": 0.5}  # auc: undefined in the second batch
    out = evaluate(nn.Linear(1, 1), range(1), loss_fn)
    assert out["auc"] == 0.7 and out["loss"] != out["loss"]  # a NaN loss stays NaN


@pytest.mark.parametrize("name", ["adamw", "adamw_scaled"])
def test_a_step_bumps_the_parameters_version_so_greedy_screens_are_rebuilt(name):
    """torch's fused AdamW kernel leaves version counters as they were: T5's int8 greedy screen,
    built by an evaluation's generate, then looked current after training steps and the next
    evaluation screened with the old output layer (caught by the fingerprint check, fixed here)."""
    import copy
    import sys
    from pathlib import Path

    from t5electra.train.config import OptimSection
    from t5electra.train.optim import build_optimizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tiny_t5 import spread_tiny_t5

    model = spread_tiny_t5("v1.1", 0, 512)
    ids = torch.randint(3, 500, (4, 9), generator=torch.Generator().manual_seed(0))
    model.generate(ids, max_new_tokens=6)  # builds the screen
    opt = build_optimizer(model, OptimSection(name=name, lr=3e-2))
    versions = [p._version for p in model.parameters()]
    batch = {"input_ids": ids, "labels": ids[:, :5]}
    train_step(model, [batch], lambda m, b: m(**b).loss, opt)
    assert all(p._version > v for p, v in zip(model.parameters(), versions))
    model.eval()
    fresh = copy.deepcopy(model)  # a copy has no screen: the full product
    assert not model._screened_argmax.current(model.lm_head.weight)
    assert torch.equal(model.generate(ids, max_new_tokens=6), fresh.generate(ids, max_new_tokens=6))


def test_a_t5_micro_batch_without_target_tokens_adds_nothing():
    """Every label -100 in one micro-batch: T5's mean over no tokens is NaN (transformers' too), which
    stopped training (the NaN guard) and poisoned evaluate's loss; now it weighs 0."""
    import sys
    from pathlib import Path

    from t5electra.train.seq2seq import loss_fn

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tiny_t5 import spread_tiny_t5

    ids = torch.randint(3, 500, (4, 9), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids[:2], "attention_mask": torch.ones_like(ids[:2]), "labels": ids[:2, :5]}
    empty = {"input_ids": ids[2:], "attention_mask": torch.ones_like(ids[2:]),
             "labels": torch.full_like(ids[2:, :5], -100)}
    a, b = spread_tiny_t5("v1.1", 0, 512).train(), spread_tiny_t5("v1.1", 0, 512).train()
    opt_a, opt_b = torch.optim.SGD(a.parameters(), lr=0.1), torch.optim.SGD(b.parameters(), lr=0.1)
    x = train_step(a, [batch], loss_fn, opt_a, max_grad_norm=1.0)
    y = train_step(b, [batch, empty], loss_fn, opt_b, max_grad_norm=1.0)
    assert y.loss == pytest.approx(x.loss, abs=1e-6) and y.grad_norm == pytest.approx(x.grad_norm, rel=1e-6)
    assert all(torch.allclose(p, q, atol=1e-6) for p, q in zip(a.parameters(), b.parameters()))
    assert evaluate(a, [batch, empty], loss_fn)["loss"] == pytest.approx(evaluate(a, [batch], loss_fn)["loss"])
    with pytest.raises(DataError, match="loss_weight is 0 over the whole step"):  # not a NaN loss
        train_step(a, [empty], loss_fn, opt_a, step=7)


def test_evaluate_of_batches_without_any_target_token_is_nan_not_a_zero_division():
    ids, labels = token_batches((0, 0))
    out = evaluate(_token_model(), [(ids, labels)], lambda m, b: (token_loss(m, b)[0].nan_to_num() * 0.0,
                                                                   token_loss(m, b)[1]))
    assert out["loss"] != out["loss"] and out["tokens"] == 10
