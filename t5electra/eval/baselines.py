"""The one-second baseline every trained model should beat: TF-IDF features + logistic regression
(scikit-learn), fitted on a train split and scored on the others. The English quickstart uses word
unigrams, the Chinese one character 1-3-grams."""

from __future__ import annotations

import importlib.util
import time
from typing import Any

from ..data.readers import spread_subset
from ..metrics import HAN_CHAR


def tfidf_logreg(splits: dict[str, tuple[list[str], list[int]]], C: float = 4.0, **vectorizer: Any) -> dict[str, Any]:
    """Fit on ``splits["train"]`` (texts, labels), score every other split: ``{split: {"accuracy": %,
    "examples": n}, "seconds": s}``. ``vectorizer``: TfidfVectorizer options (sublinear tf is on)."""
    # scikit-learn is the optional `data` extra and slow to import: only this baseline needs it.
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    t = time.perf_counter()
    tfidf = TfidfVectorizer(sublinear_tf=True, **vectorizer)
    texts, labels = splits["train"]
    clf = LogisticRegression(C=C, max_iter=1000).fit(tfidf.fit_transform(texts), labels)
    res: dict[str, Any] = {}
    for split, (texts, labels) in splits.items():
        if split == "train":
            continue
        predicted = clf.predict(tfidf.transform(texts)) if texts else []
        res[split] = {"accuracy": 100.0 * sum(int(p) == y for p, y in zip(predicted, labels)) / max(1, len(texts)),
                      "examples": len(texts)}
    res["seconds"] = round(time.perf_counter() - t, 2)
    return res


MAX_TRAIN = 50_000  # rows the fine-tuning recipes' baseline fits on (evenly spread): seconds, not minutes


def classification_baseline(splits: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """The TF-IDF + logistic-regression row of a classification fine-tune's ``results.json``, from
    head examples (``{"text", "text_pair", "label": class id}``; a pair is joined by a space): fitted
    on at most MAX_TRAIN training rows, scored on validation and test. Word unigrams, or character
    1-3-grams when the text is Chinese (no spaces between words). {} without a train split; a note
    instead of numbers without scikit-learn."""
    if not splits.get("train"):
        return {}
    if importlib.util.find_spec("sklearn") is None:
        return {"skipped": "scikit-learn is not installed (pip install 't5electra[data]')"}

    def xy(rows):
        rows = [r for r in rows if r["label"] != -1]
        return ([f"{r['text']} {r['text_pair']}" if r.get("text_pair") else str(r["text"]) for r in rows],
                [int(r["label"]) for r in rows])

    train = spread_subset(splits["train"], MAX_TRAIN)
    if len({r["label"] for r in train}) < 2:
        return {"skipped": "one class in the training split"}
    chinese = any(HAN_CHAR.search(str(r["text"])) for r in train[:200])
    options = {"analyzer": "char", "ngram_range": (1, 3)} if chinese else {}
    held_out = {s: xy(splits[s]) for s in ("validation", "test") if splits.get(s)}
    # a split without labels (GLUE's test files) has nothing to score: no "accuracy 0 over 0 examples"
    out = tfidf_logreg({"train": xy(train), **{s: v for s, v in held_out.items() if v[0]}}, **options)
    return {**out, "features": "character 1-3-grams" if chinese else "word unigrams", "train_examples": len(train)}
