"""core/outputs.py: model outputs behave as transformers' ModelOutput (an ordered dict of the fields
that are not None, attribute and item access in step, tuple indexing), checked against transformers'
own class on the same values."""

import copy
import pickle

import pytest
import torch

transformers = pytest.importorskip("transformers")

from t5electra.core.outputs import SequenceClassifierOutput  # noqa: E402
from transformers import modeling_outputs as hf_outputs  # noqa: E402


def pair():
    loss, logits = torch.tensor(0.5), torch.ones(2, 3)
    return (SequenceClassifierOutput(loss=None, logits=logits),
            hf_outputs.SequenceClassifierOutput(loss=None, logits=logits), loss)


def test_reads_as_transformers_model_output():
    ours, hf, _ = pair()
    for out in (ours, hf):
        assert "logits" in out and "loss" not in out and "hidden_states" not in out
        assert list(out.keys()) == ["logits"] and len(out) == 1 and list(out) == ["logits"]
        assert list(dict(out)) == ["logits"] and list({**out}) == ["logits"]
        assert out.get("loss") is None and out.get("loss", 3) == 3 and out.get("logits") is out.logits
        assert [k for k, _ in out.items()] == ["logits"] and list(out.values())[0] is out.logits
        assert out[0] is out.logits and out["logits"] is out.logits and out[:1] == (out.logits,)
        assert out.loss is None and isinstance(out, dict)
        with pytest.raises(KeyError):
            out["loss"]


def test_attribute_and_item_assignment_stay_in_step():
    ours, hf, loss = pair()
    for out in (ours, hf):
        out.loss = loss  # a field set later comes last, as in transformers
        assert list(out.keys()) == ["logits", "loss"] and out.to_tuple()[1] is loss and out["loss"] is loss
        out["logits"] = out.logits * 2
        assert torch.equal(out.logits, torch.full((2, 3), 2.0))
        out["input_ids"] = torch.zeros(1, 4)  # transformers' fill-mask pipeline adds a key of its own
        assert out.input_ids is out["input_ids"] and list(out.keys()) == ["logits", "loss", "input_ids"]
    ours.loss = None
    assert "loss" not in ours and ours.to_tuple()[0] is ours.logits
    for refused in (lambda: ours.pop("logits"), lambda: ours.update(loss=loss), lambda: ours.__delitem__("logits")):
        with pytest.raises(TypeError, match="set a field to None"):
            refused()


def test_copies_and_pickles_keep_fields_and_added_keys():
    ours, _, loss = pair()
    ours = SequenceClassifierOutput(loss=loss, logits=ours.logits)
    ours["input_ids"] = torch.zeros(1, 4)
    for again in (copy.copy(ours), copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert type(again) is SequenceClassifierOutput and list(again.keys()) == ["loss", "logits", "input_ids"]
        assert torch.equal(again.logits, ours.logits) and torch.equal(again.input_ids, ours.input_ids)



def test_built_from_a_dict_or_pairs_and_set_to_none_and_back_as_transformers():
    """accelerate rebuilds outputs as type(out)({...}) (mixed precision: convert_to_fp32), which filled
    the first field with the whole dict: a Trainer with bf16=True crashed on our models."""
    from accelerate.utils import convert_to_fp32

    ours, hf, loss = pair()
    for cls in (SequenceClassifierOutput, type(hf)):
        for given in ({"loss": loss, "logits": ours.logits}, [("loss", loss), ("logits", ours.logits)]):
            out = cls(given)
            assert list(out.keys()) == ["loss", "logits"] and out.loss is loss and out.logits is ours.logits
    half = SequenceClassifierOutput(loss=loss.bfloat16(), logits=ours.logits.bfloat16())
    cast = convert_to_fp32(half)
    assert type(cast) is SequenceClassifierOutput and cast.logits.dtype == torch.float32
    assert list(cast.keys()) == ["loss", "logits"]
    for out in (SequenceClassifierOutput(loss=loss, logits=ours.logits), type(hf)(loss=loss, logits=ours.logits)):
        out.loss = None
        out.loss = loss  # the tuple keeps its order (transformers keeps the key all along)
        assert out[0] is loss and list(out.keys()) == ["loss", "logits"]
