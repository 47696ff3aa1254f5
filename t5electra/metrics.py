"""Evaluation metrics: thin wrappers over scikit-learn, scipy, sacrebleu and rouge-score.

Every metric takes ``(targets, predictions)`` (lists of equal length, already post-processed:
class ids, floats, strings, or lists of reference answers) and returns ``{name: value}`` with
values in percent, as in the T5 code base
(https://github.com/google-research/text-to-text-transfer-transformer/blob/main/t5/evaluation/metrics.py),
so GLUE/SQuAD/CNN-DM numbers read the way papers report them.

Invalid generations never crash a metric: task post-processors turn them into a sentinel
(``INVALID_LABEL`` = -1 for classes, ``INVALID_VALUE`` = -1.0 for regression), which counts as
wrong.

The libraries are the ``data`` extra, so each metric imports its own inside the function: the
module (and the task registry on top of it) loads without them.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
import warnings
from collections.abc import Sequence

import numpy as np

from .errors import InvalidInputError

# What post-processors return for text that is not a valid label / number (counted as wrong).
INVALID_LABEL = -1
INVALID_VALUE = -1.0

# Han ideographs, Japanese kana, Korean Hangul (jamo and syllables): BLEU's 13a tokenisation reads
# an unspaced Chinese or Japanese sentence as one word and rouge-score drops these characters
# altogether (it keeps [a-z0-9]), so both score text in these scripts by character. Han includes
# 々〆〇 (U+3005-3007: 人々, 二〇〇八年) and the ideographs beyond U+FFFF (Extensions B to H and the
# compatibility supplement, the ranges sacrebleu's zh tokenizer uses: Cantonese 𨋢, 𠮶, names like 𠮷),
# which rouge-score dropped unseen: '二〇〇八年' against '二八年' scored ROUGE 100.
_HAN = "\u3005-\u3007\u3400-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f\U00030000-\U000323af"
# Kana without its two punctuation marks ゠ (U+30A0) and ・ (U+30FB), dropped as 、 and 。 are
# (ROUGE counted 'トム・ハンクス' against 'トムハンクス' a token short)
_KANA, _HANGUL = "\u3040-\u309f\u30a1-\u30fa\u30fc-\u30ff", "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
HAN_CHAR = re.compile(f"[{_HAN}]")  # a Chinese character (the TF-IDF baseline's test for Chinese text too)
_SCRIPTS = (("ja", re.compile(f"[{_KANA}]")), ("ko", re.compile(f"[{_HANGUL}]")), ("zh", HAN_CHAR))
_CJK_CHAR = re.compile(f"([{_HAN}{_KANA}{_HANGUL}])")
# Full-width ASCII forms (U+FF01-U+FF5E: '１９９７', 'ＧＤＰ', '％') and the ideographic space as their
# ASCII: Chinese text writes numbers and Latin letters in either width (People's Daily in full width).
_HALF_WIDTH = {**{c: c - 0xFEE0 for c in range(0xFF01, 0xFF5F)}, 0x3000: 0x20}


def _check(targets: Sequence, predictions: Sequence, metric: str) -> None:
    if len(targets) != len(predictions):
        raise InvalidInputError(
            f"{metric}: {len(targets)} targets but {len(predictions)} predictions")
    if len(targets) == 0:
        raise InvalidInputError(f"{metric}: no examples to score")


# -- classification and regression (scikit-learn, scipy) ------------------------------------------

def accuracy(targets: Sequence, predictions: Sequence) -> dict[str, float]:
    """Percentage of exact matches (GLUE sst2, mnli, qnli, rte, wnli)."""
    from sklearn.metrics import accuracy_score

    _check(targets, predictions, "accuracy")
    return {"accuracy": 100.0 * float(accuracy_score(list(targets), list(predictions)))}


def matthews_corrcoef(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Matthews correlation x 100 (GLUE CoLA). An invalid prediction (-1) is an extra class,
    which lowers the score exactly as T5's sklearn wrapper does."""
    from sklearn.metrics import matthews_corrcoef as mcc

    _check(targets, predictions, "matthews_corrcoef")
    return {"mcc": 100.0 * float(mcc(list(targets), list(predictions)))}


def f1_with_invalid(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Binary F1 (positive class 1) x 100 where any prediction other than 0/1 is set to the wrong
    class first (T5's ``f1_score_with_invalid``; GLUE MRPC and QQP)."""
    from sklearn.metrics import f1_score

    _check(targets, predictions, "f1")
    t = np.asarray(targets, dtype=np.int64)
    p = np.asarray(predictions, dtype=np.int64).copy()
    invalid = (p != 0) & (p != 1)
    p[invalid] = 1 - t[invalid]
    return {"f1": 100.0 * float(f1_score(t, p, zero_division=0.0))}


def macro_f1(targets: Sequence[int], predictions: Sequence[int]) -> dict[str, float]:
    """Unweighted mean of per-class F1 x 100 over the classes present in the targets."""
    from sklearn.metrics import f1_score

    _check(targets, predictions, "macro_f1")
    labels = sorted(set(int(t) for t in targets))
    return {"macro_f1": 100.0 * float(
        f1_score(list(targets), list(predictions), labels=labels, average="macro", zero_division=0.0))}


def _correlation(fn, name: str, targets, predictions) -> dict[str, float]:
    _check(targets, predictions, name)
    t = np.asarray(targets, dtype=np.float64)
    p = np.asarray(predictions, dtype=np.float64)
    if len(t) < 2 or np.all(t == t[0]) or np.all(p == p[0]):
        # Undefined (scipy would return nan and warn); report 0 so model selection never picks it.
        return {name: 0.0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: 100.0 * float(fn(t, p)[0])}


def pearson(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """Pearson correlation x 100 (GLUE STS-B), via ``scipy.stats.pearsonr``."""
    from scipy.stats import pearsonr

    return _correlation(pearsonr, "pearson", targets, predictions)


def spearman(targets: Sequence[float], predictions: Sequence[float]) -> dict[str, float]:
    """Spearman rank correlation x 100 (GLUE STS-B), via ``scipy.stats.spearmanr``."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, "spearman", targets, predictions)


# -- extractive QA (the official SQuAD v1.1 evaluation script) ------------------------------------

_PUNCT = set(string.punctuation)


def normalize_squad(text: str, cjk: bool | None = None) -> str:
    """Lower-case, drop punctuation, drop articles (a/an/the), collapse whitespace: the
    normalisation of the official SQuAD v1.1 ``evaluate-v1.1.py``. A text with Chinese, Japanese or
    Korean characters also loses its other punctuation (，。《》“”, as CMRC 2018's evaluation does);
    text without them is normalised exactly as the official script does. ``cjk``: whether to drop
    that punctuation (None: when ``text`` has such characters; :func:`squad` decides it for an
    answer and a prediction together, so both are normalised alike)."""
    cjk = _CJK_CHAR.search(text) is not None if cjk is None else cjk
    text = "".join(ch for ch in text.lower()
                   if ch not in _PUNCT and not (cjk and unicodedata.category(ch).startswith("P")))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _squad_tokens(text: str) -> list[str]:
    """Whitespace tokens; each Chinese/Japanese/Korean character a token of its own (CMRC 2018's
    mixed segmentation: '北京天安门广场' vs '天安门广场' has F1 0.83, not 0 as one 'word')."""
    if not _CJK_CHAR.search(text):
        return text.split()
    return [tok for i, part in enumerate(_CJK_CHAR.split(text)) for tok in ([part] if i % 2 else part.split())]


def _token_f1(reference: str, prediction: str) -> float:
    pred, ref = _squad_tokens(prediction), _squad_tokens(reference)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def squad(targets: Sequence[Sequence[str]], predictions: Sequence[str]) -> dict[str, float]:
    """Exact match and token F1 x 100, each the max over a question's reference answers."""
    _check(targets, predictions, "squad")
    em = f1 = 0.0
    for refs, pred in zip(targets, predictions):
        if isinstance(refs, str):
            refs = [refs]
        if not refs:
            raise InvalidInputError("squad: an example has no reference answer")
        # an answer and the prediction normalised alike: one with CJK characters drops the other's “”
        # too ('“iPhone”' against '“iPhone”手机' had F1 0, 'iPhone' 50)
        pred_cjk = _CJK_CHAR.search(pred) is not None
        cjk = [pred_cjk or _CJK_CHAR.search(r) is not None for r in refs]
        pairs = [(normalize_squad(r, c), normalize_squad(pred, c)) for r, c in zip(refs, cjk)]
        em += max(float(r == p) for r, p in pairs)
        f1 += max(_token_f1(r, p) for r, p in pairs)
    n = len(predictions)
    return {"em": 100.0 * em / n, "f1": 100.0 * f1 / n}


# -- generation (rouge-score, sacrebleu) ----------------------------------------------------------

class _RougeTokenizer:
    """rouge-score's tokenizer with every Han, kana or Hangul character a token of its own.

    rouge-score keeps only [a-z0-9], so Chinese scored ROUGE 0 whatever the summary; by character
    is how Chinese ROUGE is usually reported (LCSTS, for one). Text between such characters, and
    text without any, gets rouge-score's own tokens (lower case, Porter stems): English is unchanged.
    Full-width digits and letters are read as their ASCII first: rouge-score dropped them, so a
    summary with the wrong year ('２００８年' for '１９９７年') scored 100.
    """

    def __init__(self, use_stemmer: bool):
        from rouge_score import tokenizers

        self._words = tokenizers.DefaultTokenizer(use_stemmer)

    def tokenize(self, text: str) -> list[str]:
        text = text.translate(_HALF_WIDTH)
        if not _CJK_CHAR.search(text):
            return self._words.tokenize(text)
        # split() with a group keeps each matched character as its own item, between the other runs
        return [tok for i, part in enumerate(_CJK_CHAR.split(text))
                for tok in ([part] if i % 2 else self._words.tokenize(part))]


def rouge(targets: Sequence[str], predictions: Sequence[str],
          keys: Sequence[str] = ("rouge1", "rouge2", "rougeL"), use_stemmer: bool = True) -> dict[str, float]:
    """Mean ROUGE F-measure x 100 per key, with rouge-score's Porter stemming; Chinese, Japanese
    and Korean characters count one token each (:class:`_RougeTokenizer`).

    T5 reports the bootstrap "mid" of the same per-example scores, which is the mean up to
    resampling noise; the plain mean is deterministic.
    """
    from rouge_score import rouge_scorer

    _check(targets, predictions, "rouge")
    scorer = rouge_scorer.RougeScorer(list(keys), tokenizer=_RougeTokenizer(use_stemmer))
    totals = dict.fromkeys(keys, 0.0)
    for ref, pred in zip(targets, predictions):
        scores = scorer.score(target=ref, prediction=pred)
        for k in keys:
            totals[k] += scores[k].fmeasure
    return {k: 100.0 * v / len(targets) for k, v in totals.items()}


def _references(targets: Sequence) -> list[list[str]]:
    # sacrebleu wants one list per reference stream; a target may itself be a list of references.
    if targets and not isinstance(targets[0], str):
        n = max(len(t) for t in targets)
        return [[t[i] if i < len(t) else t[0] for t in targets] for i in range(n)]
    return [list(targets)]


def _script(text: str) -> str | None:
    """``"ja"`` (any kana), ``"ko"`` (any Hangul), ``"zh"`` (Han characters and neither), else None."""
    return next((script for script, chars in _SCRIPTS if chars.search(text)), None)


def bleu_tokenizer(references: Sequence[str]) -> str:
    """The sacrebleu tokenizer for ``references`` (one text per example): ``"zh"`` when most are
    Chinese, ``"char"`` when most are Japanese or Korean, else ``"13a"``.

    13a splits on spaces and punctuation, so a Chinese sentence is one "word" and BLEU is ~0.
    ``zh`` is sacrebleu's (and WMT's) Chinese tokenisation: each Han character a token. For
    Japanese and Korean sacrebleu's own tokenizers (``ja-mecab``, ``ko-mecab``) need MeCab packages
    that are not dependencies here; ``char`` (every character a token) needs none.
    """
    scripts = [_script(str(r)) for r in references]
    cjk = [s for s in scripts if s]
    if len(cjk) * 2 <= len(scripts):
        return "13a"
    return "zh" if cjk.count("zh") * 2 > len(cjk) else "char"


def bleu(targets: Sequence, predictions: Sequence[str], tokenize: str | None = None) -> dict[str, float]:
    """Corpus BLEU with sacrebleu's defaults (exp smoothing) and the tokenisation of
    :func:`bleu_tokenizer` for the references (``13a``, sacrebleu's default, unless most are
    Chinese, Japanese or Korean), or ``tokenize`` when given; T5's own eval used ``"intl"``."""
    import sacrebleu

    _check(targets, predictions, "bleu")
    references = _references(targets)
    tokenize = tokenize or bleu_tokenizer(references[0])
    return {"bleu": float(sacrebleu.corpus_bleu(list(predictions), references, tokenize=tokenize).score)}


def chrf(targets: Sequence, predictions: Sequence[str]) -> dict[str, float]:
    """Corpus chrF (character 6-grams, beta 2) via sacrebleu."""
    import sacrebleu

    _check(targets, predictions, "chrf")
    return {"chrf": float(sacrebleu.corpus_chrf(list(predictions), _references(targets)).score)}


def sequence_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """Percentage of generations equal to the target after stripping surrounding whitespace."""
    _check(targets, predictions, "sequence_accuracy")
    hits = sum(str(t).strip() == str(p).strip() for t, p in zip(targets, predictions))
    return {"sequence_accuracy": 100.0 * hits / len(targets)}


# -- spans (Chinese word segmentation, POS tagging) ------------------------------------------------

def span_f1(targets: Sequence[set], predictions: Sequence[set]) -> dict[str, float]:
    """Micro precision, recall and F1 x 100 of predicted spans against gold spans, one set of
    spans per sentence (e.g. ``(start, end, tag)`` of each word): a span counts only if it is
    exactly right. Word-level F1 of the SIGHAN segmentation bakeoffs, span F1 of CoNLL tagging."""
    _check(targets, predictions, "span_f1")
    gold = pred = hits = 0
    for t, p in zip(targets, predictions):
        t, p = set(t), set(p)
        gold, pred, hits = gold + len(t), pred + len(p), hits + len(t & p)
    precision = hits / pred if pred else 0.0
    recall = hits / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    return {"f1": 100.0 * f1, "precision": 100.0 * precision, "recall": 100.0 * recall}
