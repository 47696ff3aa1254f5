"""What bf16 / int8 weights cost in quality on trained models (docs/inference.md):

    python -m benchmarks.inference_quality --t5 RUN/t5-sentiment/model --t5-spans RUN/t5-pretrain/model \\
        --electra RUN/electra-sentiment/model [--max-examples N] [--json OUT]

For each weight type against fp32 (``model.optimize_for_inference``): greedy token agreement (the
share of fp32's generated tokens, up to and including its EOS, that the other model generates at
the same position) and the task accuracy (``evaluate_checkpoint``: the sentiment task's test split)
for a fine-tuned T5; the agreement alone on span filling (held-out sentences with word spans
masked, :func:`t5electra.recipes.quickstart_demos.mask_word_spans`) for a pretrained T5; the
accuracy and the share of identical predictions for an ELECTRA classifier.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch

from t5electra.data.tasks import get_task
from t5electra.inference.weights import describe_cpu
from t5electra.models.t5 import T5ForConditionalGeneration
from t5electra.recipes.evaluate import evaluate_checkpoint
from t5electra.recipes.quickstart_demos import mask_word_spans
from t5electra.tokenizers import T5Tokenizer

WEIGHTS = ("fp32", "bf16", "int8")


def token_agreement(ref: torch.Tensor, other: torch.Tensor, eos: int) -> float:
    """Share of ``ref``'s tokens (each row up to and including its first EOS) equal in ``other``."""
    same = total = 0
    for a, b in zip(ref.tolist(), other.tolist()):
        n = a.index(eos) + 1 if eos in a else len(a)
        b = b + [-1] * max(0, n - len(b))
        same += sum(x == y for x, y in zip(a[:n], b[:n]))
        total += n
    return same / max(total, 1)


@torch.no_grad()
def greedy_agreement(model_dir: str, texts: list[str], max_new_tokens: int, batch_size: int = 32) -> dict[str, float]:
    model = T5ForConditionalGeneration.from_pretrained(model_dir)
    tok = T5Tokenizer.from_pretrained(model_dir)
    outs = {}
    for w in WEIGHTS:
        model.optimize_for_inference(w)
        rows = []
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=128, return_tensors="pt")
            ids = model.generate(enc["input_ids"], enc["attention_mask"], max_new_tokens=max_new_tokens)
            rows += [r[1:] for r in ids]  # without the decoder start token
        outs[w] = rows
    eos = model.config.eos_token_id
    pad = lambda rows: torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-1)  # noqa: E731
    return {w: token_agreement(pad(outs["fp32"]), pad(outs[w]), eos) for w in WEIGHTS[1:]}


def sentiment_texts(split: str, n: int | None) -> list[str]:
    task = get_task("sentiment")
    return [ex["inputs"] for ex in list(task.examples(split))[:n]]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--t5", help="a fine-tuned T5 (sentiment)")
    p.add_argument("--t5-spans", help="a pretrained T5 (span filling)")
    p.add_argument("--spans-text", help="JSONL with a 'text' field: held-out sentences for --t5-spans")
    p.add_argument("--electra", help="a fine-tuned ELECTRA classifier (sentiment)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-examples", type=int, default=None)
    p.add_argument("--json", help="write the results here")
    a = p.parse_args(argv)
    res: dict = {"cpu": describe_cpu()}
    for key, d in (("t5_sentiment", a.t5), ("electra_sentiment", a.electra)):
        if d:
            r = {w: evaluate_checkpoint(d, "sentiment", a.split, max_examples=a.max_examples, weights=w)["metrics"]
                 for w in WEIGHTS}
            res[key] = {"accuracy": {w: r[w]["accuracy"] for w in WEIGHTS}}
            print(key, res[key], flush=True)
    if a.t5:
        res["t5_sentiment"]["greedy_token_agreement"] = greedy_agreement(
            a.t5, sentiment_texts(a.split, a.max_examples), 8)
        print("t5_sentiment", res["t5_sentiment"], flush=True)
    if a.t5_spans and a.spans_text:
        rng = random.Random(0)
        lines = [json.loads(line)["text"] for line in Path(a.spans_text).read_text().splitlines() if line.strip()]
        sentences = [s for line in lines for s in line.split(". ") if len(s.split()) >= 8][:a.max_examples or 512]
        masked = [mask_word_spans(s, rng)[0] for s in sentences]
        res["t5_span_filling"] = {"sentences": len(masked),
                                  "greedy_token_agreement": greedy_agreement(a.t5_spans, masked, 16)}
        print("t5_span_filling", res["t5_span_filling"], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
