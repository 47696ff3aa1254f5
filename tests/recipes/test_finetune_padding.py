"""Padding in ELECTRA fine-tuning: batches grouped by length (data.group_by_length) still visit every
example once per epoch and resume exactly, and pad less; a sequence gets the same logits whatever
it is padded to, so length-sorted prediction gives the same answers."""

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


def _stream(features, group: int, seed: int = 0) -> ExampleStream:
    return ExampleStream(features, 8, seed, DistEnv(), lambda b: [f["id"] for f in b], group_by_length=group)


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
    again.load_state_dict({"consumed": 40 * 8, "num_features": len(feats), "seed": 0})
    assert _batches(again, 20) == first[40:]


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
