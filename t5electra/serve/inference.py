"""What the worker thread of a model runs: one function per task, each taking a *batch* of
requests (already validated and tokenized by the handlers) and returning one result per request.

Every function pads the rows of all the requests of a batch into one tensor and makes one model
call for them (``correct`` and ``attention`` go text by text: correct is an iterative loop per text,
and attention is for looking at one text). Results are plain dicts shaped like the response
models in schemas.py.

The tasks that loop (generate: one decoding step per token; fill-mask and correct: one forward
pass per [MASK] filled) see their models through :class:`Checked`, which calls the batcher's
``check`` before every forward pass and decoding step: once every request of the batch was given
up (deadline passed) or the server is stopping, ``check`` raises ``Abandoned`` and the batch stops.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Hashable

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..generation.fill_mask import correct, detect_replaced_tokens, fill_mask_generate, splice
from ..generation.seq2seq import generate
from ..modeling import OWN_CALL
from .attention import electra_attention, t5_attention
from .registry import ATTENTION, CLASSIFY, CORRECT, DETECT, FILL_MASK, GENERATE, ServedModel


def pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Right-pad id lists -> input_ids (B, T) and attention_mask (B, T)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    return ids.to(device), mask.to(device)


class Checked:
    """A model seen through a cancellation check: ``check()`` runs before each forward pass
    (``model(...)``), encoder pass and decoding step (``decode_step``, ``decode_step_argmax``);
    every other attribute is the model's."""

    def __init__(self, model: torch.nn.Module, check: Callable[[], None]):
        self._model, self._check = model, check

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._model, name)
        if name in ("decode_step", "decode_step_argmax"):  # a decoding step (greedy search takes the second)
            def step(*args, **kwargs):
                self._check()
                return attr(*args, **kwargs)
            return step
        return attr

    def __call__(self, *args, **kwargs):
        self._check()
        return self._model(*args, **kwargs)

    def encode(self, *args, **kwargs):
        self._check()
        return self._model.encode(*args, **kwargs)



def checked(sm: ServedModel, check: Callable[[], None]) -> ServedModel:
    """``sm`` with each of its models wrapped in :class:`Checked`."""
    return dataclasses.replace(sm, **{name: Checked(m, check) for name, m in
                                      (("t5", sm.t5), ("generator", sm.generator),
                                       ("discriminator", sm.discriminator)) if m is not None})


def _split(flat: list[Any], sizes: list[int]) -> list[list[Any]]:
    out, i = [], 0
    for n in sizes:
        out.append(flat[i:i + n])
        i += n
    return out


def token_strings(tok, ids: list[int]) -> list[str]:
    """The tokens of ``ids``; an id the model has but the tokenizer lacks (embeddings padded to a
    multiple of 8 or 128, as T5's are) reads as the unknown token, as the tokenizer would."""
    tokens = tok.convert_ids_to_tokens(ids)
    return [t if t is not None else (tok.unk_token or f"<id {i}>") for t, i in zip(tokens, ids)]


def _eos_ids(config) -> list[int]:
    eos = config.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


# -- T5 -------------------------------------------------------------------------------------------
def sequence_scores(model, input_ids: Tensor, attention_mask: Tensor, sequences: Tensor,
                    length_penalty: float) -> tuple[Tensor, Tensor, Tensor]:
    """Score generated ``sequences`` (N * n, L), rows starting with the decoder start token, by one
    teacher-forced pass: (score, logprob, length), each (N * n,).

    ``logprob`` sums log p(token | input, previous tokens) over the tokens up to and including the
    first EOS; ``score = logprob / length ** length_penalty``, the number beam search ranks its
    finished hypotheses by (without logits processors such as repetition_penalty, which change
    the search, not the model's probabilities).
    """
    n = sequences.shape[0] // input_ids.shape[0]
    enc_ids = input_ids.repeat_interleave(n, dim=0)                         # (N*n, S)
    enc_mask = attention_mask.repeat_interleave(n, dim=0)
    decoder_input, target = sequences[:, :-1], sequences[:, 1:]             # (N*n, L-1) each
    logits = model(input_ids=enc_ids, attention_mask=enc_mask, decoder_input_ids=decoder_input, **OWN_CALL).logits
    logp = logits.float().log_softmax(-1).gather(-1, target[..., None]).squeeze(-1)  # (N*n, L-1)
    eos = torch.tensor(_eos_ids(model.config), dtype=torch.long, device=target.device)
    is_eos = torch.isin(target, eos).long()
    valid = (is_eos.cumsum(1) - is_eos) == 0                                # up to the first EOS, inclusive
    length = valid.sum(1)
    logprob = (logp * valid).sum(1)
    return logprob / length.float() ** length_penalty, logprob, length


def run_generate(sm: ServedModel, key: Hashable, payloads: list[dict]) -> list[list[dict]]:
    options = dict(key[1])
    seed = options.pop("seed")
    model, tok = sm.t5, sm.tokenizer
    rows = [r for p in payloads for r in p["ids"]]
    ids, mask = pad(rows, model.config.pad_token_id or 0, model.device)
    generator = torch.Generator(model.device).manual_seed(seed) if seed is not None else None
    out = generate(model, ids, mask, generator=generator, **options)        # (B * n, L)
    score, logprob, length = sequence_scores(model, ids, mask, out, options["length_penalty"])
    hidden = set(_eos_ids(model.config)) | {model.config.pad_token_id}     # not shown in the text
    seqs = []
    for row, s, lp, n in zip(out.tolist(), score.tolist(), logprob.tolist(), length.tolist()):
        new = row[1:1 + n]                                                 # without the start token
        text = tok.decode([t for t in new if t not in hidden], skip_special_tokens=False)  # keeps sentinels
        seqs.append({"text": text, "tokens": token_strings(tok, new), "score": s, "logprob": lp})
    n = options["num_return_sequences"]
    per_text = _split(seqs, [n] * len(rows))
    return _split([{"input": text, "outputs": outs} for text, outs in
                   zip([t for p in payloads for t in p["texts"]], per_text)], [len(p["ids"]) for p in payloads])


# -- ELECTRA ----------------------------------------------------------------------------------------
def run_fill_mask(sm: ServedModel, key: Hashable, payloads: list[dict]) -> list[list[dict]]:
    top_k = key[1]
    model, tok = sm.generator, sm.tokenizer
    mask_id = tok.mask_token_id
    special = torch.tensor(sorted(set(tok.all_special_ids)), device=model.device)
    rows = [r for p in payloads for r in p["ids"]]
    ids, attn = pad(rows, tok.pad_token_id, model.device)
    probs = model(input_ids=ids, attention_mask=attn, **OWN_CALL).logits.float()  # (B, T, V)
    probs[..., special] = float("-inf")                                    # never propose [MASK], [CLS]...
    probs[..., len(tok):] = float("-inf")                                  # nor ids without a token (padding)
    probs = probs.softmax(-1)
    top_p, top_i = probs.topk(min(top_k, probs.shape[-1]), dim=-1)          # (B, T, k)
    filled = fill_mask_generate(model, ids, attention_mask=attn, mask_token_id=mask_id)
    results = []
    texts = [t for p in payloads for t in p["texts"]]
    for b, (row, text) in enumerate(zip(rows, texts)):
        masks = []
        for pos in [i for i, t in enumerate(row) if t == mask_id]:
            cand_ids = top_i[b, pos].tolist()
            masks.append({"position": pos, "candidates": [
                {"token": t, "token_id": i, "prob": p}
                for t, i, p in zip(tok.convert_ids_to_tokens(cand_ids), cand_ids, top_p[b, pos].tolist())]})
        results.append({"input": text, "filled": splice(tok, text, row, filled[b, :len(row)].tolist()),
                        "tokens": tok.convert_ids_to_tokens(row), "masks": masks})
    return _split(results, [len(p["ids"]) for p in payloads])


def run_detect(sm: ServedModel, key: Hashable, payloads: list[dict]) -> list[list[dict]]:
    texts = [t for p in payloads for t in p["texts"]]
    found = detect_replaced_tokens(sm.discriminator, sm.tokenizer, texts)   # one padded forward pass
    results = [{"input": text, "tokens": [{"token": t, "prob": p} for t, p in tokens]}
               for text, tokens in zip(texts, found)]
    return _split(results, [len(p["texts"]) for p in payloads])


def run_correct(sm: ServedModel, key: Hashable, payloads: list[dict]) -> list[list[dict]]:
    _, threshold, max_iters = key
    out = []
    for p in payloads:
        results = []
        for text in p["texts"]:
            fixed, edits = correct(sm.discriminator, sm.generator, sm.tokenizer, text, threshold=threshold,
                                   max_iters=max_iters)
            results.append({"input": text, "corrected": fixed, "edits": [vars(e) for e in edits]})
        out.append(results)
    return out


def run_classify(sm: ServedModel, key: Hashable, payloads: list[dict]) -> list[list[dict]]:
    model, tok = sm.classifier, sm.tokenizer
    c = model.config
    labels = [c.id2label[i] for i in range(c.num_labels)]
    rows = [r for p in payloads for r in p["ids"]]
    types = [t for p in payloads for t in p["type_ids"]]
    ids, attn = pad(rows, tok.pad_token_id, model.device)
    type_ids, _ = pad(types, 0, model.device)
    logits = model(input_ids=ids, attention_mask=attn, token_type_ids=type_ids, **OWN_CALL).logits.float()  # (B, L)
    problem = c.problem_type or ("regression" if c.num_labels == 1 else "single_label_classification")
    results = []
    texts = [t for p in payloads for t in p["texts"]]
    for text, row in zip(texts, logits):
        if problem == "regression":
            results.append({"input": text, "label": None, "score": float(row[0]),
                            "scores": {lab: float(v) for lab, v in zip(labels, row.tolist())}})
            continue
        probs = row.sigmoid() if problem == "multi_label_classification" else row.softmax(-1)
        best = int(probs.argmax())
        results.append({"input": text, "label": labels[best], "score": float(probs[best]),
                        "scores": dict(zip(labels, probs.tolist()))})
    return _split(results, [len(p["texts"]) for p in payloads])


# -- attention --------------------------------------------------------------------------------------
def run_attention(sm: ServedModel, key: Hashable, payloads: list[dict]) -> list[dict]:
    return [_attention_one(sm, p) for p in payloads]


def _attention_one(sm: ServedModel, p: dict) -> dict:
    req = p["request"]
    tok = sm.tokenizer
    components = sm.components()
    name = req.component or next(iter(components))
    if name not in components:
        raise InvalidInputError(f"model {sm.name!r} has no {name} component; it has: {', '.join(components)}")
    model = components[name]
    ids = torch.tensor([p["ids"]], dtype=torch.long, device=model.device)   # (1, S)
    in_tokens = tok.convert_ids_to_tokens(p["ids"])
    if name == "t5":
        dec = _decoder_input(sm, ids, p)                                    # (1, T)
        stacks = t5_attention(model, ids, dec)
        weights = stacks[req.stack]                                         # (L, H, T|S, S|T)
        out_tokens = token_strings(tok, dec[0].tolist())
        queries = in_tokens if req.stack == "encoder" else out_tokens
        keys = out_tokens if req.stack == "decoder" else in_tokens
    else:
        if req.stack != "encoder":
            raise InvalidInputError(f"stack={req.stack!r}: ELECTRA is an encoder; only 'encoder' attention exists")
        weights = electra_attention(model, ids)                             # (L, H, S, S)
        queries = keys = in_tokens
    n_layers, n_heads = weights.shape[:2]
    if req.layer >= n_layers:
        raise InvalidInputError(f"layer={req.layer} is out of range: the {req.stack} of {sm.name!r} has {n_layers} "
                                f"layers (0..{n_layers - 1})")
    if req.head is not None and req.head >= n_heads:
        raise InvalidInputError(f"head={req.head} is out of range: {sm.name!r} has {n_heads} heads "
                                f"(0..{n_heads - 1}); leave it out for the mean over heads")
    w = weights[req.layer]
    w = w.mean(0) if req.head is None else w[req.head]                      # (queries, keys)
    return {"model": sm.name, "component": name, "stack": req.stack, "layer": req.layer, "head": req.head,
            "num_layers": n_layers, "num_heads": n_heads, "query_tokens": queries, "key_tokens": keys,
            "weights": [[round(v, 5) for v in r] for r in w.tolist()]}


def _decoder_input(sm: ServedModel, input_ids: Tensor, p: dict) -> Tensor:
    """Decoder input for a teacher-forced pass: the start token, then the target without its EOS
    (the request's target, or the model's greedy output; for the encoder's attention without a
    target, the start token alone: the encoder does not read the decoder). The greedy output is
    generate()'s with the model config's tokens, not model.generate's: a generation_config.json's
    beams, sampling or lengths made it another output, or a 400 about options no request sent."""
    model = sm.t5
    start = model.config.decoder_start_token_id
    eos = set(_eos_ids(model.config))
    if p.get("target_ids") is not None:
        body = list(p["target_ids"])
    elif p["request"].stack == "encoder":
        body = []
    else:
        out = generate(model, input_ids, max_new_tokens=p["max_new_tokens"])[0, 1:].tolist()  # greedy
        body = out[:next((i for i, t in enumerate(out) if t in eos), len(out))]
    body = body[:-1] if body and body[-1] in eos else body
    return torch.tensor([[start] + body], dtype=torch.long, device=input_ids.device)


RUNNERS = {GENERATE: run_generate, FILL_MASK: run_fill_mask, DETECT: run_detect, CORRECT: run_correct,
           CLASSIFY: run_classify, ATTENTION: run_attention}


LOOPING = (GENERATE, FILL_MASK, CORRECT)  # tasks whose work grows with steps: checked between them


def run_batch(sm: ServedModel, key: Hashable, payloads: list[dict],
              check: Callable[[], None] | None = None) -> list[Any]:
    """The batcher's entry point: ``key[0]`` names the task; ``check`` (the batcher's) is called
    between the steps of the looping tasks and raises to stop an abandoned batch."""
    if check is not None and key[0] in LOOPING:
        sm = checked(sm, check)
    return RUNNERS[key[0]](sm, key, payloads)
