"""The one-second baseline every trained model should beat: TF-IDF features + logistic regression
(scikit-learn), fitted on a train split and scored on the others. The English quickstart uses word
unigrams, the Chinese one character 1-3-grams."""

from __future__ import annotations

import time
from typing import Any


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
