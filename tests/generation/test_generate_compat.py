"""generate() used as transformers' users use it: outputs they edit and train on, generation
configs given the ways transformers takes them, length precedence, per-row start tokens,
compute_transition_scores, conflicting token constraints refused."""

from __future__ import annotations

import pytest
import torch

from t5electra.errors import InvalidInputError
from test_generate import hf_generate, padded_batch


@pytest.mark.parametrize("kw", [{}, {"num_beams": 3, "num_return_sequences": 2},
                                {"do_sample": True, "generator": torch.Generator().manual_seed(0)}],
                         ids=["greedy", "beam", "sampling"])
def test_outputs_are_ordinary_tensors_to_edit_and_train_on(models, kw):
    """generate ran under inference_mode and returned inference tensors: `out[out == 0] = -100` raised
    'Inplace update to inference tensor outside InferenceMode', and training with the output as labels
    'Inference tensors cannot be saved for backward'."""
    ours, _ = models["v1.1", 0]
    ids, mask = padded_batch(0)
    out = ours.generate(ids, mask, max_new_tokens=5, **kw)
    rec = ours.generate(ids, mask, max_new_tokens=5, return_dict_in_generate=True, output_scores=True,
                        output_logits=True, **kw)
    tensors = [out, rec.sequences, *rec.scores, *rec.logits]
    if "num_beams" in kw:
        tensors += [rec.sequences_scores, rec.beam_indices]
    assert not any(t.is_inference() for t in tensors)
    labels = out[:, 1:].clone()
    out[out == 0] = -100                                     # in place, outside inference mode
    assert (out == -100).any()
    model = ours  # trained below, its weights restored after
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        dec_in = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
        loss = model(ids.repeat_interleave(labels.shape[0] // ids.shape[0], 0),
                     mask.repeat_interleave(labels.shape[0] // ids.shape[0], 0),
                     decoder_input_ids=dec_in, labels=labels).loss
        loss.backward()
        assert model.shared.weight.grad is not None
        rec.scores[0].mul_(2)  # recorded scores too
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()
        model.load_state_dict(state)


@pytest.mark.parametrize("kw", [{"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"top_k": 1.5},
                                {"top_p": 0.0, "num_beams": 2}])
def test_top_k_and_top_p_are_ignored_without_sampling_as_in_transformers(models, kw):
    """top_p=0.0 with greedy search raised 'top_p must be in (0, 1]'; transformers ignores both
    without do_sample (as temperature already was here)."""
    ours, hf = models["v1.0", 0]
    ids, mask = padded_batch(0)
    search = {k: v for k, v in kw.items() if k == "num_beams"}
    want = ours.generate(ids, mask, max_new_tokens=4, **search)
    assert torch.equal(ours.generate(ids, mask, max_new_tokens=4, **kw), want)
    assert torch.equal(hf_generate(hf, ids, mask, max_new_tokens=4, **kw), want)
    with pytest.raises(InvalidInputError, match=r"top_p must be in \(0, 1\]|top_k must be an integer >= 0"):
        ours.generate(ids, mask, max_new_tokens=4, do_sample=True, **kw)
