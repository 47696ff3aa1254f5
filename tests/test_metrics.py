"""Metrics against known values: scikit-learn/scipy called directly, sacrebleu's README example,
and hand-computed SQuAD and ROUGE cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import sklearn.metrics

from t5electra import metrics as M
from t5electra.errors import InvalidInputError


def test_accuracy_counts_invalid_as_wrong():
    assert M.accuracy([1, 0, 1, 1], [1, 0, -1, 0]) == {"accuracy": 50.0}


def test_matthews_hand_computed_and_sklearn():
    # TP=1 TN=2 FP=0 FN=1: (1*2 - 0*1) / sqrt(1 * 2 * 2 * 3) = 2 / sqrt(12)
    assert M.matthews_corrcoef([1, 1, 0, 0], [1, 0, 0, 0])["mcc"] == pytest.approx(100 * 2 / math.sqrt(12))
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 2, 200), rng.integers(-1, 2, 200)  # -1: invalid generations
    assert M.matthews_corrcoef(t, p)["mcc"] == pytest.approx(100 * sklearn.metrics.matthews_corrcoef(t, p))


def test_f1_with_invalid_sets_invalid_to_the_wrong_class():
    # The invalid prediction (target 0) becomes 1: preds [1, 1, 0, 1] -> TP 2, FP 1, FN 1 -> F1 2/3.
    assert M.f1_with_invalid([1, 0, 1, 1], [1, -1, 0, 1])["f1"] == pytest.approx(200 / 3)
    assert M.f1_with_invalid([1, 0, 1], [1, 0, 1])["f1"] == 100.0


def test_macro_f1_matches_sklearn():
    t, p = [0, 1, 2, 2, 1, 0, 3], [0, 2, 2, 2, 1, -1, 3]
    expected = sklearn.metrics.f1_score(t, p, labels=[0, 1, 2, 3], average="macro")
    assert M.macro_f1(t, p)["macro_f1"] == pytest.approx(100 * expected)


def test_correlations_match_scipy_and_constant_is_zero():
    rng = np.random.default_rng(1)
    t = rng.uniform(0, 5, 50)
    p = t + rng.normal(0, 1, 50)
    assert M.pearson(t, p)["pearson"] == pytest.approx(100 * scipy.stats.pearsonr(t, p)[0])
    assert M.spearman(t, p)["spearman"] == pytest.approx(100 * scipy.stats.spearmanr(t, p)[0])
    assert M.pearson([1.0, 2.0, 3.0], [2.0, 2.0, 2.0]) == {"pearson": 0.0}


@pytest.mark.parametrize("pred, refs, em, f1", [
    ("The Cat!", ["cat"], 100.0, 100.0),                    # case, punctuation, article
    ("the big red dog", ["red dog"], 0.0, 80.0),           # P 2/3, R 1 -> 0.8
    ("Denver Broncos", ["Broncos", "Denver Broncos"], 100.0, 100.0),  # max over references
    ("in 1990s", ["the 1990s", "1990"], 0.0, 100 * 2 * 0.5 / 1.5),    # best: P 1/2, R 1 vs "1990s"
    ("", ["anything"], 0.0, 0.0),
    # Chinese: a character is a token and full-width punctuation goes (CMRC 2018); one whitespace
    # "word" made F1 equal EM (0 for a near answer)
    ("天安门广场", ["北京天安门广场"], 0.0, 100 * 2 * 1 * (5 / 7) / (1 + 5 / 7)),
    ("北京天安门", ["北京，天安门。"], 100.0, 100.0),
    ("在 2008年 北京", ["2008年北京"], 0.0, 100 * 2 * (4 / 5) * 1 / (4 / 5 + 1)),  # 在 2008 年 北 京 vs 2008 年 北 京
    # an answer and a prediction are normalised alike: the prediction without a Chinese character
    # kept its “” (one token '“iphone”', F1 0)
    ("“iPhone”", ["“iPhone”手机"], 0.0, 50.0),  # iphone vs iphone 手 机: P 1, R 1/3
    ("“2008”", ["北京", "2008年"], 0.0, 100 * 2 / 3),  # 2008 vs 2008 年: P 1, R 1/2
])
def test_squad_official_normalisation(pred, refs, em, f1):
    out = M.squad([refs], [pred])
    assert out["em"] == pytest.approx(em) and out["f1"] == pytest.approx(f1)


def test_normalize_squad():
    assert M.normalize_squad("  The  Quick, brown fox an apple! ") == "quick brown fox apple"


def test_bleu_and_chrf_sacrebleu_readme_example():
    # https://github.com/mjpost/sacrebleu#using-sacrebleu-from-python : BLEU 48.53, chrF2 59.73
    refs = [["The dog bit the man.", "It was not unexpected.", "The man bit him first."],
            ["The dog had bit the man.", "No one was surprised.", "The man had bitten the dog."]]
    hyps = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    per_example = [list(r) for r in zip(*refs)]
    assert M.bleu(per_example, hyps)["bleu"] == pytest.approx(48.53, abs=0.005)
    assert M.chrf(per_example, hyps)["chrf"] == pytest.approx(59.73, abs=0.005)
    # One reference per example: plain strings
    assert M.bleu(refs[0], refs[0])["bleu"] == pytest.approx(100.0)


@pytest.mark.parametrize("refs, tokenize", [
    (["今天天气很好。", "我喜欢读书。"], "zh"),
    (["今日は天気がいいです。", "本を読むのが好きです。"], "char"),  # kana: Japanese
    (["오늘 날씨가 좋습니다.", "나는 책 읽기를 좋아합니다."], "char"),
    (["The weather is nice.", "我喜欢读书。", "I like books."], "13a"),  # most English
])
def test_bleu_tokenises_by_the_references_script(refs, tokenize):
    import sacrebleu

    assert M.bleu_tokenizer(refs) == tokenize
    preds = [r[: len(r) // 2 + 2] for r in refs]
    expected = sacrebleu.corpus_bleu(preds, [refs], tokenize=tokenize).score
    assert M.bleu(refs, preds)["bleu"] == pytest.approx(expected)
    assert M.bleu(refs, preds, tokenize="13a")["bleu"] == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score)


def test_rouge_hand_computed_with_stemming():
    out = M.rouge(["the cat sat on the mat"], ["the cat sat"])
    # unigrams: P 3/3, R 3/6 -> F 2/3; bigrams: P 2/2, R 2/5 -> F 4/7; LCS = 3 -> as unigrams
    assert out["rouge1"] == pytest.approx(200 / 3)
    assert out["rouge2"] == pytest.approx(400 / 7)
    assert out["rougeL"] == pytest.approx(200 / 3)
    # Porter stemming: "running" and "runs" both become "run"
    assert M.rouge(["he was running"], ["he runs"])["rouge1"] == pytest.approx(80.0)


def test_rouge_scores_chinese_by_character():
    """rouge-score keeps only [a-z0-9]: every Chinese summary scored 0, a perfect one too."""
    assert M.rouge(["北京今天天气很好"], ["北京今天天气很好"]) == {"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0}
    out = M.rouge(["北京今天天气很好"], ["今天天气好"])
    # characters: P 5/5, R 5/8 -> F 10/13; bigrams 今天 天天 天气 of 4 and 7 -> F 6/11; LCS 5 -> as unigrams
    assert out["rouge1"] == pytest.approx(1000 / 13)
    assert out["rouge2"] == pytest.approx(600 / 11)
    assert out["rougeL"] == pytest.approx(1000 / 13)
    # Latin words among them keep rouge-score's tokens (lower case, stems): iphon 手 机 很 好 vs iphon 手 机
    assert M.rouge(["iPhone 手机很好"], ["iphones手机"])["rouge1"] == pytest.approx(75.0)


def test_rouge_counts_every_chinese_and_japanese_character():
    """々〆〇 (U+3005-3007) and the ideographs beyond the BMP were outside the CJK ranges, so rouge-score
    dropped them: '二〇〇八年' against '二八年' scored 100. The kana range held the punctuation ・."""
    assert M.rouge(["二〇〇八年"], ["二八年"])["rouge1"] == pytest.approx(75.0)  # P 3/3, R 3/5
    assert M.rouge(["人々が集まった"], ["人が集まった"])["rouge1"] == pytest.approx(1200 / 13)  # P 1, R 6/7
    assert M.rouge(["𠮷野家"], ["吉野家"])["rouge1"] == pytest.approx(200 / 3)  # 𠮷 (U+20BB7) is not 吉
    assert M.bleu_tokenizer(["𠮷𠮷", "〇〇"]) == "zh"
    # ・ is punctuation, dropped as 、 is (it was a kana "character": 92.3)
    assert M.rouge(["トム・ハンクス、"], ["トムハンクス"])["rouge1"] == pytest.approx(100.0)


def test_han_characters_beyond_the_bmp_count_as_chinese():
    """CJK Extension B and later (U+20000+: Cantonese 𨋢 'lift', 𡃁, 𠮶) were outside the Han range:
    ROUGE dropped them (a perfect one-character summary scored 0), SQuAD F1 read a run of them as one
    word, and BLEU tokenised a reference of them with 13a."""
    assert M.rouge(["𨋢"], ["𨋢"])["rouge1"] == 100.0
    # 𨋢 壞 咗 against 電 壞 咗: two of three characters (𨋢 had vanished from the reference: 80)
    assert M.rouge(["𨋢壞咗"], ["電壞咗"])["rouge1"] == pytest.approx(200 / 3)
    assert M.squad([["𨋢𡃁"]], ["𡃁𨋢"])["f1"] == pytest.approx(100.0)
    assert M.bleu_tokenizer(["𨋢𡃁𠮶", "𠮶𨋢"]) == "zh"


def test_rouge_reads_full_width_digits_and_letters():
    """rouge-score keeps only [a-z0-9]: full-width '１９９７' and 'ＧＤＰ' (People's Daily writes them so)
    vanished, and a summary with every number wrong scored 100."""
    out = M.rouge(["１９９７年经济增长８％"], ["２００８年经济增长５％"])
    assert out == M.rouge(["1997年经济增长8%"], ["2008年经济增长5%"])
    assert out["rouge1"] == pytest.approx(500 / 7)  # 1997 年 经 济 增 长 8 against 2008 年 经 济 增 长 5
    assert M.rouge(["ＧＤＰ增长"], ["CPI增长"])["rouge1"] == pytest.approx(200 / 3)
    assert M.rouge(["１２３"], ["１２３"])["rouge1"] == 100.0


def test_rouge_equals_rouge_score_on_english():
    from rouge_score import rouge_scorer

    refs = ["The cats were running across the old bridge.", "Markets fell sharply on Monday, traders said."]
    preds = ["A cat runs over the bridge", "On Monday the markets fell, said traders!"]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {k: 100 * sum(scorer.score(r, p)[k].fmeasure for r, p in zip(refs, preds)) / 2
                for k in ("rouge1", "rouge2", "rougeL")}
    assert M.rouge(refs, preds) == expected


def test_sequence_accuracy():
    assert M.sequence_accuracy(["a b", "c"], [" a b ", "d"]) == {"sequence_accuracy": 50.0}


def test_length_mismatch_and_empty_are_clear_errors():
    with pytest.raises(InvalidInputError, match="3 targets but 2 predictions"):
        M.accuracy([1, 0, 1], [1, 0])
    with pytest.raises(InvalidInputError, match="no examples"):
        M.bleu([], [])


def test_classification_baseline_reads_chinese_by_characters():
    """The TF-IDF row of a fine-tune's results.json: Chinese text has no spaces between words, so word
    unigrams would make each review one feature; character 1-3-grams generalise."""
    from t5electra.eval.baselines import classification_baseline

    good, bad = ["很好", "不错", "喜欢"], ["太差", "失望", "难用"]
    rows = [{"text": f"这个东西{w}了", "text_pair": None, "label": int(i % 2 == 0)}
            for i, w in enumerate(g if k % 2 == 0 else b for k in range(40) for g, b in [(good[k % 3], bad[k % 3])])]
    test = [{"text": "质量很好", "text_pair": None, "label": 1}, {"text": "让人失望", "text_pair": None, "label": 0}]
    out = classification_baseline({"train": rows, "test": test})
    assert out["features"] == "character 1-3-grams" and out["test"] == {"accuracy": 100.0, "examples": 2}
    assert classification_baseline({"validation": test}) == {}
    assert classification_baseline({"train": rows[:1], "test": test}) == {"skipped": "one class in the training split"}
