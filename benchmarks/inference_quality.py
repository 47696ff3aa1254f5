"""What bf16 / int8 weights cost in quality on trained models (docs/inference.md):

    python -m benchmarks.inference_quality --t5 RUN/t5-sentiment/model --t5-spans RUN/t5-pretrain/model \\
        --spans-text RUN/data/corpus_validation.jsonl --electra RUN/electra-sentiment/model \\
        --electra RUN/minilm-sentiment/model [--variants fp32 bf16 int8 'int8:\\.wo$'] [--max-examples N] [--json OUT]

Variants: ``WEIGHTS`` (the default ``keep``) or ``WEIGHTS:REGEX,REGEX`` (``keep``: these layers stay
fp32; ``WEIGHTS:`` keeps none); the first is the reference (fp32).
For each variant against the reference (``model.optimize_for_inference``): greedy token agreement (the
share of fp32's generated tokens, up to and including its EOS, that the other model generates at
the same position) and the task accuracy (``evaluate_checkpoint``: the sentiment task's test split)
for a fine-tuned T5, with where the outputs first part: fp32's own top-2 logit margin there (a
near-tie the reference itself hardly decides, or a real change); the agreement alone on span filling (held-out sentences with word spans
masked, :func:`t5electra.recipes.quickstart_demos.mask_word_spans`) for a pretrained T5; the
accuracy and the share of identical predictions for an ELECTRA classifier.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from pathlib import Path

import torch

from t5electra.data.readers import spread_subset
from t5electra.data.tasks import get_task
from t5electra.inference import weights as inference_weights
from t5electra.machine import describe_cpu
from t5electra.models.t5 import T5ForConditionalGeneration
from t5electra.recipes.evaluate import evaluate_checkpoint
from t5electra.recipes.quickstart_demos import mask_word_spans
from t5electra.tokenizers import T5Tokenizer

VARIANTS = ("fp32", "bf16", "int8")


def parse_variant(spec: str) -> tuple[str, tuple[str, ...] | None]:
    """'int8' -> ('int8', None: the default keep); 'int8:\\.wo$,lm_head' -> ('int8', ('\\.wo$', 'lm_head'))."""
    weights, colon, keep = spec.partition(":")
    return weights, (tuple(k for k in keep.split(",") if k) if colon else None)


@contextlib.contextmanager
def default_keep(spec: str):
    """Run code that calls ``optimize_for_inference(weights)`` (evaluate_checkpoint) with this variant's keep."""
    weights, keep = parse_variant(spec)
    saved = dict(inference_weights.DEFAULT_KEEP)
    if keep is not None:
        inference_weights.DEFAULT_KEEP[weights] = keep
    try:
        yield weights
    finally:
        inference_weights.DEFAULT_KEEP.update(saved)


def _length(row: list[int], eos: int) -> int:
    """Tokens of a generated row up to and including its first EOS (all of them without one)."""
    return row.index(eos) + 1 if eos in row else len(row)


def token_agreement(ref: torch.Tensor, other: torch.Tensor, eos: int) -> float:
    """Share of ``ref``'s tokens (each row up to and including its first EOS) equal in ``other``."""
    same = total = 0
    for a, b in zip(ref.tolist(), other.tolist()):
        n = _length(a, eos)
        b = b + [-1] * max(0, n - len(b))
        same += sum(x == y for x, y in zip(a[:n], b[:n]))
        total += n
    return same / max(total, 1)


def first_divergences(ref: torch.Tensor, other: torch.Tensor, eos: int) -> list[tuple[int, int]]:
    """(row, position) of the first token of ``other`` that differs from ``ref`` (up to ``ref``'s EOS)."""
    out = []
    for i, (a, b) in enumerate(zip(ref.tolist(), other.tolist())):
        n = _length(a, eos)
        for t in range(n):
            if t >= len(b) or a[t] != b[t]:
                out.append((i, t))
                break
    return out


@torch.no_grad()
def reference_margins(model, batches: list, ref: torch.Tensor) -> torch.Tensor:
    """(rows, steps) top-1 minus top-2 logit of ``model`` along its own greedy output ``ref`` (teacher
    forced); ``batches``: the tokenized inputs that produced ``ref``, in order."""
    margins, i = [], 0
    start = torch.full((ref.shape[0], 1), model.config.decoder_start_token_id)
    dec = torch.cat([start, ref.clamp_min(0)], 1)[:, :-1]  # the inputs that produced each ref token
    for enc in batches:
        n = enc["input_ids"].shape[0]
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                       decoder_input_ids=dec[i:i + n]).logits
        i += n
        top = logits.topk(2, -1).values
        margins.append(top[..., 0] - top[..., 1])
    return torch.cat(margins)


def divergence_summary(margins: torch.Tensor, ref: torch.Tensor, other: torch.Tensor, eos: int,
                       near_tie: float = 0.05) -> dict[str, float]:
    """How many rows part from the reference and how close fp32's own choice was where they do."""
    at = [float(margins[i, t]) for i, t in first_divergences(ref, other, eos)]
    valid = torch.cat([margins[i, :_length(r, eos)] for i, r in enumerate(ref.tolist())])
    return {"rows_diverging": len(at),
            "median_margin_at_divergence": round(float(torch.tensor(at).median()), 4) if at else None,
            f"share_of_divergences_at_margin_below_{near_tie}":
                round(sum(m < near_tie for m in at) / len(at), 3) if at else None,
            f"share_of_all_positions_at_margin_below_{near_tie}": round(float((valid < near_tie).float().mean()), 3),
            "median_margin_all_positions": round(float(valid.median()), 4)}


@torch.no_grad()
def greedy_agreement(model_dir: str, texts: list[str], max_new_tokens: int, batch_size: int = 32,
                     variants: tuple[str, ...] = VARIANTS) -> dict[str, dict[str, float]]:
    """Per variant: token agreement with ``variants[0]`` and the seconds its generation took."""
    model = T5ForConditionalGeneration.from_pretrained(model_dir)
    tok = T5Tokenizer.from_pretrained(model_dir)
    batches = [tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
               for i in range(0, len(texts), batch_size)]
    outs, secs = {}, {}
    for spec in variants:
        weights, keep = parse_variant(spec)
        model.optimize_for_inference(weights, keep=keep)
        rows, t0 = [], time.perf_counter()
        for enc in batches:
            ids = model.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens,
                                 return_dict_in_generate=False)
            rows += [r[1:] for r in ids]  # without the decoder start token
        outs[spec], secs[spec] = rows, time.perf_counter() - t0
    eos = model.config.eos_token_id
    pad = lambda rows: torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-1)  # noqa: E731
    ref = pad(outs[variants[0]])
    weights, keep = parse_variant(variants[0])
    model.optimize_for_inference(weights, keep=keep)
    margins = reference_margins(model, batches, ref)
    return {v: {"agreement": token_agreement(ref, pad(outs[v]), eos), "seconds": round(secs[v], 2),
                **divergence_summary(margins, ref, pad(outs[v]), eos)}
            for v in variants}


def sentiment_texts(split: str, n: int | None) -> list[str]:
    task = get_task("sentiment")
    return [ex["inputs"] for ex in spread_subset(list(task.examples(split)), n)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--t5", help="a fine-tuned T5 (sentiment)")
    p.add_argument("--t5-spans", help="a pretrained T5 (span filling)")
    p.add_argument("--spans-text", help="JSONL with a 'text' field: held-out sentences for --t5-spans")
    p.add_argument("--electra", action="append", default=[],
                   help="a fine-tuned ELECTRA classifier (sentiment; ELECTRA or MiniLM); repeatable")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS),
                   help="WEIGHTS or WEIGHTS:KEEP_REGEX,... (the first is the reference)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-examples", type=int, default=None,
                   help="N evenly spaced examples of the split (and at most N span-filling sentences)")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    variants = tuple(a.variants)
    res: dict = {"cpu": describe_cpu(), "variants": variants}
    models = [("t5_sentiment", a.t5)] if a.t5 else []
    models += [(f"electra_sentiment:{d}", d) for d in a.electra]
    for key, d in models:
        acc = {}
        for spec in variants:
            with default_keep(spec) as weights:
                r = evaluate_checkpoint(d, "sentiment", a.split, max_examples=a.max_examples, weights=weights)
            acc[spec] = r["metrics"]["accuracy"]
        res[key] = {"accuracy": acc}
        print(key, res[key], flush=True)
    if a.t5:
        res["t5_sentiment"]["greedy_token_agreement"] = greedy_agreement(
            a.t5, sentiment_texts(a.split, a.max_examples), 8, variants=variants)
        print("t5_sentiment", res["t5_sentiment"], flush=True)
    if a.t5_spans and a.spans_text:
        rng = random.Random(0)
        lines = [json.loads(line)["text"] for line in Path(a.spans_text).read_text().splitlines() if line.strip()]
        sentences = [s for line in lines for s in line.split(". ") if len(s.split()) >= 8][:a.max_examples or 512]
        masked = [mask_word_spans(s, rng)[0] for s in sentences]
        res["t5_span_filling"] = {"sentences": len(masked),
                                  "greedy_token_agreement": greedy_agreement(a.t5_spans, masked, 16,
                                                                            variants=variants)}
        print("t5_span_filling", res["t5_span_filling"], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
