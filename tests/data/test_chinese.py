"""Chinese word segmentation and POS tagging as character tags (data/chinese.py) and their span F1
(metrics.span_f1): tags <-> words <-> spans, tolerant decoding of malformed predictions, and the
scores on hand-counted cases."""

from __future__ import annotations

import pytest

from t5electra import metrics as M
from t5electra.data import chinese as zh


def test_bmes_tags_and_spans_round_trip():
    words, pos = ["迈向", "充满", "希望", "的", "新", "世纪", "——", "一九九八年"], ["v", "v", "n", "u", "a", "n", "w", "t"]
    tags = zh.bmes(words)
    assert tags[:8] == ["B", "E", "B", "E", "B", "E", "S", "S"] and tags[-5:] == ["B", "M", "M", "M", "E"]
    chars = list("".join(words))
    assert len(tags) == len(chars) and zh.words_from_tags(chars, tags) == words
    assert zh.bmes(["中国", "人"], ["ns", "n"]) == ["B-ns", "E-ns", "S-n"]
    spans = zh.spans_from_tags(zh.bmes(words, pos))
    assert spans == zh.spans_from_words([f"{w}/{t}" for w, t in zip(words, pos)], with_tags=True)
    assert (0, 2, "v") in spans and (6, 7, "u") in spans
    assert zh.spans_from_words(zh.segmentation_text(words).split()) == zh.spans_from_tags(tags)
    assert zh.segmentation_text(["中国", "人"], ["ns", "n"]) == "中国/ns 人/n"


def test_spans_from_predicted_tags_tolerate_malformed_sequences():
    # B B E: the first B is cut where the next word starts; M after S starts a word; a trailing B ends at the end
    assert zh.spans_from_tags(["B", "B", "E"]) == {(0, 1, ""), (1, 3, "")}
    assert zh.spans_from_tags(["S", "M", "E", "B"]) == {(0, 1, ""), (1, 3, ""), (3, 4, "")}
    # a change of POS inside a word ends the span
    assert zh.spans_from_tags(["B-n", "E-v"]) == {(0, 1, "n"), (1, 2, "v")}
    # a generated word without a tag gets tag "", which matches no gold span
    assert zh.spans_from_words(["中国/ns", "人"], with_tags=True) == {(0, 2, "ns"), (2, 3, "")}


def test_span_f1_counts_exact_spans():
    gold = [{(0, 2, ""), (2, 3, ""), (3, 5, "")}, {(0, 1, "")}]
    pred = [{(0, 2, ""), (2, 5, "")}, {(0, 1, "")}]
    out = M.span_f1(gold, pred)  # 2 right of 3 predicted, of 4 gold
    assert out["precision"] == pytest.approx(100 * 2 / 3) and out["recall"] == pytest.approx(50.0)
    assert out["f1"] == pytest.approx(100 * 2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
    assert M.span_f1(gold, gold)["f1"] == 100.0 and M.span_f1(gold, [set(), set()])["f1"] == 0.0


def test_tag_span_f1_reads_sentences_of_label_ids():
    labels = ["B", "M", "E", "S"]
    metric = zh.tag_span_f1(labels)
    assert metric.per_sequence
    gold = [[0, 2, 3], [3, 3]]        # 中国 人 | 我 们
    pred = [[0, 2, 3], [0, 2]]        # 中国 人 | 我们 (wrong)
    out = metric(gold, pred)  # 2 of 3 predicted words right, 2 of 4 gold words found
    assert (out["precision"], out["recall"]) == (pytest.approx(100 * 2 / 3), pytest.approx(50.0))
    assert out["f1"] == pytest.approx(100 * 4 / 7)
    # a label id outside the label set (never produced by a head of this size) reads as S
    assert metric([[3]], [[9]])["f1"] == 100.0


def test_sentences_and_people_daily_lines():
    words, tags = zh.parse_tagged("迈向/v  充满/v  希望/n  。/w  新/a  世纪/n  ！/w  完/v")
    assert words[:3] == ["迈向", "充满", "希望"] and tags[-1] == "v"
    assert [w for w, _ in zh.sentences(words, tags)] == [["迈向", "充满", "希望", "。"], ["新", "世纪", "！"], ["完"]]
    assert zh.parse_tagged("http://a/b/n") == (["http://a/b"], ["n"])  # the last slash separates the tag
