"""Padding and data order in ELECTRA fine-tuning: batches grouped by length (data.group_by_length) still
visit every example once per epoch and resume exactly, and pad less; the order is defined per global
batch, so W processes read, step by step, the examples of one process with W times the batch, and a
cursor resumes on another number of processes; a sequence gets the same logits whatever it is padded
to, so length-sorted prediction gives the same answers."""

from __future__ import annotations

import random

import pytest
import torch

from t5electra.errors import ConfigError
from t5electra.models.electra import ElectraConfig, ElectraForSequenceClassification
from t5electra.recipes.finetune_electra import ExampleStream, collate, predict
from t5electra.train.distributed import DistEnv


def _features(n: int = 256, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    return [{"id": i, "input_ids": [2] + [rng.randrange(5, 90) for _ in range(rng.randint(2, 60))] + [3],
             "token_type_ids": [0], "labels": i % 2} for i in range(n)]


def _batches(stream: ExampleStream, count: int) -> list[list[int]]:
    it = iter(stream)
    return [next(it) for _ in range(count)]


def _stream(features, group: int, seed: int = 0, batch_size: int = 8, rank: int = 0, world_size: int = 1,
            accum: int = 1) -> ExampleStream:
    return ExampleStream(features, batch_size, seed, DistEnv(rank=rank, world_size=world_size),
                         lambda b: [f["id"] for f in b], group_by_length=group, accum=accum)


def _global_steps(features, group: int, batch_size: int, world_size: int, accum: int, steps: int,
                  state: dict | None = None) -> list[list[int]]:
    """Each step's examples over all ranks and micro-batches (sorted: the set a step trains on)."""
    streams = [_stream(features, group, batch_size=batch_size, rank=r, world_size=world_size, accum=accum)
               for r in range(world_size)]
    for s in streams:
        if state is not None:
            s.load_state_dict(state)
    its = [iter(s) for s in streams]
    out = []
    for _ in range(steps):
        out.append(sorted(i for it in its for _ in range(accum) for i in next(it)))
        assert len({s.state_dict()["examples_seen"] for s in streams}) == 1  # every rank: the same cursor
    return out


def _padding(features, batches) -> int:
    lengths = {f["id"]: len(f["input_ids"]) for f in features}
    return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)


def test_grouped_batches_cover_each_epoch_once_pad_less_and_resume():
    feats = _features()
    for group in (0, 4, 16):
        epoch = _batches(_stream(feats, group), len(feats) // 8)
        assert sorted(i for b in epoch for i in b) == list(range(len(feats)))
    plain, grouped = (_batches(_stream(feats, g), 32) for g in (0, 16))
    assert _padding(feats, grouped) < 0.4 * _padding(feats, plain)
    assert grouped != _batches(_stream(feats, 16, seed=1), 32)  # the seed shuffles the groups too

    # resume from the cursor after 40 batches (the second epoch): the same next batches
    stream = _stream(feats, 16)
    first = _batches(stream, 60)
    again = _stream(feats, 16)
    again.load_state_dict(stream_state(len(feats), 40 * 8))
    assert _batches(again, 20) == first[40:]
    # a cursor of the per-rank order (before the global one) is read as examples seen by all ranks
    old = _stream(feats, 16)
    old.load_state_dict({"consumed": 20 * 4, "num_features": len(feats), "seed": 0, "world_size": 2})
    assert old.consumed == 20 * 8 and _batches(old, 1) == [first[20]]


def stream_state(n: int, seen: int) -> dict:
    return {"examples_seen": seen, "num_features": n, "seed": 0}


@pytest.mark.parametrize("group", [0, 3])
def test_data_order_is_per_global_batch_not_per_rank(group):
    """Global batch 16 (2 epochs of 100 features over 14 steps): one process with batch 16, two with 8,
    four with 2 x 2 accumulation train each step on the same examples; the two-process cursor after
    5 steps continues in one process and in four, and the one-process cursor in two, with the same
    steps. Grouped: micro-batches of every layout still pad less than ungrouped ones."""
    feats = _features(100)
    one = _global_steps(feats, group, 16, 1, 1, 14)
    assert _global_steps(feats, group, 8, 2, 1, 14) == one
    assert _global_steps(feats, group, 2, 4, 2, 14) == one
    state = _stream(feats, group, batch_size=8, world_size=2)
    it = iter(state)
    for _ in range(5):
        next(it)
    saved = state.state_dict()
    assert saved["examples_seen"] == 5 * 16
    assert _global_steps(feats, group, 16, 1, 1, 9, saved) == one[5:]
    assert _global_steps(feats, group, 2, 4, 2, 9, saved) == one[5:]
    assert _global_steps(feats, group, 8, 2, 1, 9, stream_state(100, 5 * 16)) == one[5:]
    with pytest.raises(ConfigError, match="whole number of global batches"):
        _stream(feats, group, batch_size=8, world_size=2).load_state_dict(stream_state(100, 5 * 16 + 8))
    if group:
        rank1 = _batches(_stream(feats, group, batch_size=8, rank=1, world_size=2), 12)
        plain = _batches(_stream(feats, 0, batch_size=8, rank=1, world_size=2), 12)
        assert _padding(feats, rank1) < 0.6 * _padding(feats, plain)


def test_logits_do_not_depend_on_padding_and_sorted_prediction_keeps_the_order():
    torch.manual_seed(0)
    config = ElectraConfig.from_preset("electra-tiny", vocab_size=100, num_labels=2)
    model = ElectraForSequenceClassification(config).eval()
    feats = [{k: v for k, v in f.items() if k != "id"} for f in _features(40, seed=1)]
    for f in feats:
        f["token_type_ids"] = [0] * len(f["input_ids"])
    with torch.no_grad():
        alone = [model(**{k: v for k, v in collate([f], 0).items() if k != "labels"}).logits[0] for f in feats[:6]]
        batch = collate(feats[:6], 0)  # padded to the longest of the six
        batch["input_ids"] = torch.cat([batch["input_ids"], torch.zeros(6, 7, dtype=torch.long)], 1)  # and 7 more
        batch["token_type_ids"] = torch.cat([batch["token_type_ids"], torch.zeros(6, 7, dtype=torch.long)], 1)
        batch["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(6, 7, dtype=torch.long)], 1)
        padded = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    torch.testing.assert_close(torch.stack(alone), padded, atol=1e-5, rtol=1e-4)

    plain, loss = predict(model, feats, 8, 0, torch.device("cpu"))
    by_length, loss_sorted = predict(model, feats, 8, 0, torch.device("cpu"), by_length=True)
    assert by_length == plain
    assert abs(loss_sorted - loss) < 1e-5


def test_mean_pooling_reads_only_the_real_tokens():
    torch.manual_seed(0)
    config = ElectraConfig.from_preset("electra-tiny", vocab_size=100, num_labels=2, classifier_pooling="mean")
    model = ElectraForSequenceClassification(config).eval()
    ids = torch.randint(5, 100, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    with torch.no_grad():
        both = model(ids, mask).logits
        short = model(ids[1:, :6], mask[1:, :6]).logits
        h = model.electra(ids[1:, :6], mask[1:, :6]).last_hidden_state
        by_hand = model.classifier.out_proj(torch.nn.functional.gelu(model.classifier.dense(h.mean(1))))
        first = ElectraForSequenceClassification(config.replace(classifier_pooling="first")).eval()
        first.load_state_dict(model.state_dict())
        cls_logits = first(ids[1:, :6], mask[1:, :6]).logits
    torch.testing.assert_close(both[1:], short, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(short, by_hand, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(short, cls_logits, atol=1e-4)  # [CLS] alone reads something else
    with pytest.raises(ConfigError, match="classifier_pooling"):
        ElectraConfig.from_preset("electra-tiny", classifier_pooling="max")
