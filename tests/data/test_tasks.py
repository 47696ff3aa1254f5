"""Task registry: T5's exact prefixes/labels on GLUE files in their standard TSV layout, SQuAD,
summarisation and translation files, post-processing of invalid generations, ELECTRA head
mapping, clear errors, and seqio-style mixtures."""

from __future__ import annotations

import collections
import itertools
import json
import math
import sys
import types
import warnings

import pytest

from t5electra import metrics as M
from t5electra.data import tasks as T
from t5electra.errors import ConfigError, DataError


def _write(path, text, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    """A miniature glue_data/ with each task's real column layout (quotes are literal text)."""
    g = tmp_path_factory.mktemp("glue_data")
    # CoLA train/dev: no header; source, label, original label, sentence
    _write(g / "CoLA/train.tsv", 'gj04\t1\t\tOur friends won\'t buy this analysis.\nclc95\t0\t*\tThey drank the pub "dry".\n')
    _write(g / "CoLA/dev.tsv", "gj04\t1\t\tThe sailors rode the breeze.\n\n")  # a last blank line: no warning
    _write(g / "CoLA/test.tsv", "index\tsentence\n0\tBill whistled past the house.\n")
    _write(g / "SST-2/train.tsv", "sentence\tlabel\nit 's a charming journey . \t1\na \"masterpiece\" of dullness \t0\n")
    _write(g / "SST-2/dev.tsv", "sentence\tlabel\nunflinchingly bleak\t0\n")
    _write(g / "MRPC/train.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                 "1\t702876\t702977\tAmrozi accused his brother.\tReferring to him, Amrozi accused.\n", bom=True)
    _write(g / "QQP/train.tsv", "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                                "1\t1\t2\tWhy is the sky blue?\tWhat makes the sky blue?\t1\n"
                                "2\t3\t4\tbroken row with no second question\n")
    _write(g / "STS-B/train.tsv", "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                                  "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t3.38\n"
                                  "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man plays.\tA man sings.\t1.3\n")
    mnli_header = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t" \
                  "sentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
    _write(g / "MNLI/train.tsv", mnli_header + "0\t1\t1n\tgov\tx\tx\tx\tx\tThe cat sat.\tA cat is sitting.\tentailment\tentailment\n")
    _write(g / "MNLI/dev_matched.tsv", mnli_header + "0\t1\t1n\tgov\tx\tx\tx\tx\tIt rained.\tIt was dry.\tcontradiction\tcontradiction\n")
    _write(g / "MNLI/dev_mismatched.tsv", mnli_header + "0\t1\t1n\tgov\tx\tx\tx\tx\tHe ran.\tHe moved.\tneutral\tneutral\n")
    _write(g / "QNLI/train.tsv", "index\tquestion\tsentence\tlabel\n0\tWhen?\tIn 1990.\tentailment\n")
    _write(g / "RTE/train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tA b.\tC d.\tnot_entailment\n")
    _write(g / "WNLI/train.tsv", "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tThe pin stuck.\t1\n")
    return g


@pytest.mark.parametrize("name, split, inputs, targets", [
    ("cola", "train", "cola sentence: Our friends won't buy this analysis.", "acceptable"),
    ("sst2", "train", "sst2 sentence: it 's a charming journey .", "positive"),
    ("mrpc", "train", "mrpc sentence1: Amrozi accused his brother. sentence2: Referring to him, Amrozi accused.",
     "equivalent"),
    ("qqp", "train", "qqp question1: Why is the sky blue? question2: What makes the sky blue?", "duplicate"),
    ("stsb", "train", "stsb sentence1: A plane is taking off. sentence2: An air plane is taking off.", "3.4"),
    ("mnli", "train", "mnli hypothesis: A cat is sitting. premise: The cat sat.", "entailment"),
    ("mnli", "validation", "mnli hypothesis: It was dry. premise: It rained.", "contradiction"),  # matched
    ("mnli", "validation_mismatched", "mnli hypothesis: He moved. premise: He ran.", "neutral"),
    ("mnli_matched", "validation", "mnli hypothesis: It was dry. premise: It rained.", "contradiction"),
    ("qnli", "train", "qnli question: When? sentence: In 1990.", "entailment"),
    ("rte", "train", "rte sentence1: A b. sentence2: C d.", "not_entailment"),
    ("wnli", "train", "wnli sentence1: I stuck a pin. sentence2: The pin stuck.", "entailment"),
])
def test_glue_prefixes_and_labels_match_t5(glue_dir, name, split, inputs, targets):
    ex = next(T.get_task(name, data_dir=glue_dir).examples(split))
    assert (ex["inputs"], ex["targets"]) == (inputs, targets)


def test_glue_malformed_rows_are_skipped_with_a_warning(glue_dir):
    with pytest.warns(UserWarning, match=r"QQP/train.tsv: skipped 1 malformed rows"):
        rows = list(T.get_task("qqp", data_dir=glue_dir).examples("train"))
    assert len(rows) == 1


def test_glue_quotes_are_text_and_task_folder_also_accepted(glue_dir):
    rows = list(T.get_task("sst2", data_dir=glue_dir / "SST-2").examples("train"))
    assert rows[1]["inputs"] == 'sst2 sentence: a "masterpiece" of dullness' and rows[1]["label"] == 0
    cola = T.get_task("cola", data_dir=glue_dir)
    assert [e["targets"] for e in cola.examples("train")] == ["acceptable", "unacceptable"]
    test = next(cola.examples("test"))  # CoLA's test file has a header and no labels
    assert (test["inputs"], test["targets"], test["label"]) == ("cola sentence: Bill whistled past the house.", "<unk>", -1)
    with warnings.catch_warnings():  # dev.tsv ends in a blank line: 'skipped 1 malformed rows' was warned
        warnings.simplefilter("error")
        assert len(list(cola.examples("validation"))) == 1


@pytest.mark.parametrize("score, text", [(3.38, "3.4"), (1.3, "1.2"), (2.5, "2.4"), (0.0, "0.0"), (5.0, "5.0"),
                                         (4.9, "4.8"), (0.1, "0.0"), (4.95, "5.0")])
def test_stsb_rounds_to_fifths_half_to_even(score, text):
    assert T.round_to_fifth(score) == text


def test_stsb_scored_against_exact_scores(glue_dir):
    task = T.get_task("stsb", data_dir=glue_dir)
    exs = list(task.examples("train"))
    assert [task.target_fn(e) for e in exs] == [3.38, 1.3]
    out = task.evaluate(["3.4", "1.2"], exs)
    assert out["pearson"] == pytest.approx(100.0) and out["spearman"] == pytest.approx(100.0)
    # Garbage and nan generations become -1 (wrong), never an exception
    assert task.postprocess("three") == M.INVALID_VALUE and task.postprocess("nan") == M.INVALID_VALUE
    assert task.evaluate(["oops", "1.2"], exs)["spearman"] == pytest.approx(-100.0)  # -1 < 1.2


def test_invalid_labels_count_as_wrong(glue_dir):
    task = T.get_task("mrpc", data_dir=glue_dir)
    exs = list(task.examples("train"))
    assert task.postprocess(" equivalent ") == 1
    assert task.postprocess("Equivalent!") == M.INVALID_LABEL
    assert task.evaluate(["paraphrase"], exs) == {"f1": 0.0, "accuracy": 0.0}
    assert task.evaluate(["equivalent"], exs) == {"f1": 100.0, "accuracy": 100.0}


def test_unlabelled_rows_are_not_scored(tmp_path):
    """GLUE's test files have no label column: their rows are unlabelled (class -1, score NaN), and
    an invalid answer is -1 too; scored together, garbage 'matched' (accuracy 100) and MRPC's F1 saw
    classes {-1, 2}. Unlabelled rows are left out; a score of -1.0 is a score."""
    _write(tmp_path / "SST-2/test.tsv", "index\tsentence\n0\ta fine film\n1\ta dull film\n")
    _write(tmp_path / "SST-2/dev.tsv", "sentence\tlabel\nfine\t1\ndull\t0\n")
    _write(tmp_path / "MRPC/test.tsv", "index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1\t2\tA b.\tA b c.\n")
    _write(tmp_path / "STS-B/test.tsv", "index\tsentence1\tsentence2\n0\tA b.\tC d.\n")
    sst2 = T.get_task("sst2", data_dir=tmp_path)
    test = list(sst2.examples("test"))
    assert [e["label"] for e in test] == [-1, -1] and not any(map(sst2.labelled, test))
    assert sst2.evaluate(["xx", "yy"], test) == {} == sst2.evaluate(["positive", "negative"], test)
    dev = list(sst2.examples("validation"))  # labelled and unlabelled together: only the labelled count
    assert sst2.evaluate(["positive", "garbage", "negative"], [dev[0], test[0], dev[1]]) == {"accuracy": 100.0}
    mrpc = T.get_task("mrpc", data_dir=tmp_path)
    assert mrpc.evaluate(["garbage"], list(mrpc.examples("test"))) == {}  # was sklearn's "pos_label=1" ValueError
    stsb = T.get_task("stsb", data_dir=tmp_path)
    (row,) = stsb.examples("test")
    assert math.isnan(row["label"]) and row["targets"] == "<unk>" and not stsb.labelled(row)
    assert stsb.labelled({"label": -1.0}) and stsb.labelled({"label": 0.0})


def test_glue_head_mapping(glue_dir):
    mnli = T.get_task("mnli", data_dir=glue_dir)
    assert mnli.head.labels == ("entailment", "neutral", "contradiction")
    assert next(mnli.head_examples("validation")) == \
        {"text": "It rained.", "text_pair": "It was dry.", "label": 2}  # premise first, as BERT/ELECTRA
    stsb = T.get_task("stsb", data_dir=glue_dir)
    assert stsb.head.kind == "regression" and next(stsb.head_examples("train"))["label"] == 3.38
    sst2 = next(T.get_task("sst2", data_dir=glue_dir).head_examples("validation"))
    assert sst2 == {"text": "unflinchingly bleak", "text_pair": None, "label": 0}


SQUAD = {"version": "1.1", "data": [{"title": "Broncos", "paragraphs": [{
    "context": "The Denver Broncos defeated the Carolina Panthers 24-10 to earn their third Super Bowl title.",
    "qas": [{"id": "q1", "question": "Which team won?", "answers": [
        {"text": "Denver Broncos", "answer_start": 4}, {"text": "The Denver Broncos", "answer_start": 0}]},
            {"id": "q2", "question": "What was the score?", "answers": [{"text": "24-10", "answer_start": 50}]}]}]}]}


def test_squad_json(tmp_path):
    _write(tmp_path / "dev-v1.1.json", json.dumps(SQUAD))
    task = T.get_task("squad", data_dir=tmp_path)
    exs = list(task.examples("validation"))
    assert exs[0]["inputs"] == ("question: Which team won? context: The Denver Broncos defeated the Carolina "
                                "Panthers 24-10 to earn their third Super Bowl title.")
    assert exs[0]["targets"] == "Denver Broncos"
    assert task.evaluate(["the Denver Broncos.", "24 to 10"], exs) == pytest.approx({"em": 50.0, "f1": 50.0})
    head = next(task.head_examples("validation"))
    assert head["context"][head["answer_start"]:].startswith(head["answer_text"]) and head["answer_start"] == 4
    padded = T.get_task("squad", data_dir=tmp_path, pad_punct=True)
    assert next(padded.examples("validation"))["inputs"].startswith("question: Which team won ? context: The")


def test_summarization_jsonl_with_cnn_dailymail_fields(tmp_path):
    rows = [{"article": "The  cat sat\non the mat all day.", "highlights": "Cat sat on mat."}]
    _write(tmp_path / "validation.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    task = T.get_task("summarize", data_dir=tmp_path)
    ex = next(task.examples("validation"))
    assert (ex["inputs"], ex["targets"]) == ("summarize: The cat sat on the mat all day.", "Cat sat on mat.")
    assert task.evaluate(["Cat sat on mat."], [ex])["rougeL"] == pytest.approx(100.0)
    assert task.head.kind == "generation"
    with pytest.raises(ConfigError, match="generation task"):
        task.head_example(ex)


@pytest.mark.parametrize("layout", ["tsv_header", "tsv_plain", "jsonl_flat", "jsonl_wmt"])
def test_translation_any_pair_and_layout(tmp_path, layout):
    pairs = [("Das Haus ist klein.", "La casa es pequeña."), ("Guten Morgen.", "Buenos días.")]
    if layout == "tsv_header":
        _write(tmp_path / "test.tsv", "es\tde\n" + "".join(f"{es}\t{de}\n" for de, es in pairs))
    elif layout == "tsv_plain":
        _write(tmp_path / "test.tsv", "".join(f"{de}\t{es}\n" for de, es in pairs))
    elif layout == "jsonl_flat":
        _write(tmp_path / "test.jsonl", "".join(json.dumps({"de": de, "es": es}) + "\n" for de, es in pairs))
    else:
        _write(tmp_path / "test.jsonl",
               "".join(json.dumps({"translation": {"de": de, "es": es}}) + "\n" for de, es in pairs))
    task = T.get_task("translate", data_dir=tmp_path, source_lang="de", target_lang="es")
    exs = list(task.examples("test"))
    assert exs[0]["inputs"] == "translate German to Spanish: Das Haus ist klein."
    assert exs[0]["targets"] == "La casa es pequeña."
    scores = task.evaluate([e["targets"] for e in exs], exs)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)


def test_translation_into_chinese_scores_bleu_by_character(tmp_path):
    """translate_en_zh scored BLEU with 13a (a Chinese sentence is one "word": BLEU ~0 for good
    translations) while text2text over the same pairs used sacrebleu's zh; one rule now scores both."""
    import sacrebleu

    from t5electra.data.file_tasks import text2text_task

    pairs = [("The weather is nice today.", "今天天气很好。"), ("I like reading books.", "我喜欢读书。")]
    _write(tmp_path / "validation.tsv", "en\tzh\n" + "".join(f"{en}\t{zh}\n" for en, zh in pairs))
    task = T.get_task("translate_en_zh", data_dir=tmp_path)
    preds = ["今天天气很好。", "我喜欢看书。"]
    expected = sacrebleu.corpus_bleu(preds, [[zh for _, zh in pairs]], tokenize="zh").score
    assert expected > 50
    assert task.evaluate(preds, list(task.examples("validation")))["bleu"] == pytest.approx(expected)
    _write(tmp_path / "t2t" / "validation.tsv", "inputs\ttargets\n" + "".join(f"{en}\t{zh}\n" for en, zh in pairs))
    t2t = text2text_task(tmp_path / "t2t")
    assert t2t.evaluate(preds, list(t2t.examples("validation")))["bleu"] == pytest.approx(expected)


def test_language_names():
    assert T.language_name("en") == "English" and T.language_name("ro") == "Romanian"
    assert T.language_name("German") == "German" and T.language_name("pt-br") == "Portuguese"
    with pytest.raises(ConfigError, match="unknown language code 'xx'"):
        T.language_name("xx")


def test_unknown_task_suggests_close_names():
    with pytest.raises(ConfigError, match=r"unknown task 'sst'.*did you mean 'sst2'"):
        T.get_task("sst")
    with pytest.raises(ConfigError, match=r"did you mean .*'mnli_matched'"):
        T.get_task("mnli_matchd")


def test_bad_inputs_are_clear_errors(tmp_path, glue_dir):
    with pytest.raises(DataError, match="does not exist"):
        T.get_task("summarize", data_dir=tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"no split 'valid'.*did you mean 'validation'"):
        next(T.get_task("sst2", data_dir=glue_dir).examples("valid"))
    _write(tmp_path / "train.jsonl", json.dumps({"text": "no summary here"}) + "\n")
    with pytest.raises(DataError, match="none of the fields"):
        next(T.get_task("summarize", data_dir=tmp_path).examples("train"))
    _write(tmp_path / "bad" / "train.tsv", "sentence\tlabel\nfine\tmaybe\n")
    with pytest.raises(DataError, match=r"train.tsv: row 1: label 'maybe' is not one of"):
        next(T.get_task("sst2", data_dir=tmp_path / "bad").examples("train"))
    _write(tmp_path / "broken" / "train.jsonl", '{"article": "x"\n')
    with pytest.raises(DataError, match=r"train.jsonl:1: not valid JSON"):
        next(T.get_task("summarize", data_dir=tmp_path / "broken").examples("train"))
    (tmp_path / "latin1").mkdir()
    (tmp_path / "latin1" / "train.tsv").write_bytes("sentence\tlabel\ncaf\u00e9 au lait\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"train.tsv: not UTF-8 text .*re-encode"):
        next(T.get_task("sst2", data_dir=tmp_path / "latin1").examples("train"))
    (tmp_path / "pq").mkdir()
    (tmp_path / "pq" / "train.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        next(T.get_task("summarize", data_dir=tmp_path / "pq").examples("train"))


def test_glue_without_files_or_datasets_library_explains(monkeypatch):
    monkeypatch.setattr(T, "datasets_available", lambda: False)
    with pytest.raises(ConfigError, match="needs data_dir="):
        T.get_task("rte")


def test_datasets_library_source_when_installed(monkeypatch):
    """The optional `datasets` path: records with the GLUE field names flow through unchanged."""
    calls = []

    def load_dataset(path, name, split):
        calls.append((path, name, split))
        return [{"sentence": "a gem", "label": 1, "idx": 0}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    monkeypatch.setattr(T, "datasets_available", lambda: True)
    task = T.glue_task("sst2")
    ex = next(task.examples("validation"))
    assert (ex["inputs"], ex["targets"]) == ("sst2 sentence: a gem", "positive")
    assert calls == [("nyu-mll/glue", "sst2", "validation")]


def test_register_custom_task_and_duplicate_name(tmp_path):
    _write(tmp_path / "train.tsv", "text\tlabel\ngreat\tyes\nawful\tno\n")
    task = T.classification_task("likes", T.FileSource({"train": tmp_path / "train.tsv"}),
                                 text_keys=("text",), labels=("no", "yes"))
    T.register_task("likes_test", task, overwrite=True)
    assert T.get_task("likes_test") is task
    assert [e["inputs"] for e in task.examples("train")] == ["likes text: great", "likes text: awful"]
    with pytest.raises(ConfigError, match="already registered"):
        T.register_task("likes_test", task)


# -- mixtures -----------------------------------------------------------------------------------

def test_examples_proportional_rates_follow_seqio():
    # min(n, cap) then ** (1/T), normalised
    assert T.examples_proportional_rates([100, 10_000], cap=1000) == pytest.approx([100 / 1100, 1000 / 1100])
    r = T.examples_proportional_rates([100, 10_000], cap=1000, temperature=2.0)
    assert r == pytest.approx([10 / (10 + math.sqrt(1000)), math.sqrt(1000) / (10 + math.sqrt(1000))])
    assert T.examples_proportional_rates([1, 4, 9], temperature=1e9) == pytest.approx([1 / 3] * 3, abs=1e-6)
    with pytest.raises(ConfigError):
        T.examples_proportional_rates([1], temperature=0)


def _toy_task(tmp_path, name, n):
    path = _write(tmp_path / f"{name}.tsv", "sentence\tlabel\n" + "".join(f"{name} {i}\t{i % 2}\n" for i in range(n)))
    return T.classification_task(name, T.FileSource({"train": path}, T.read_tsv), text_keys=("sentence",),
                                 labels=("negative", "positive"))


def test_mixture_is_deterministic_proportional_and_cycles_epochs(tmp_path):
    a, b = _toy_task(tmp_path, "aa", 30), _toy_task(tmp_path, "bb", 90)
    mix = T.Mixture.examples_proportional("ab", [a, b])
    assert mix.rates == pytest.approx((0.25, 0.75))
    draws = [e["inputs"] for e in itertools.islice(mix.sample(seed=3), 4000)]
    assert draws == [e["inputs"] for e in itertools.islice(mix.sample(seed=3), 4000)]
    assert draws != [e["inputs"] for e in itertools.islice(mix.sample(seed=4), 4000)]
    counts = collections.Counter(d.split()[2] for d in draws)
    assert counts["aa"] / 4000 == pytest.approx(0.25, abs=0.03)
    # Every example of a task is seen once before any repeats (epoch-wise shuffling)
    first_a = [d for d in draws if d.split()[2] == "aa"][:30]
    assert len(set(first_a)) == 30
    capped = T.Mixture.examples_proportional("ab", [a, b], cap=30)
    assert capped.rates == pytest.approx((0.5, 0.5))


def test_mixture_average_is_t5s_glue_average(tmp_path, monkeypatch):
    """T5's compute_avg_glue: each task's metrics averaged first (MRPC F1 with accuracy), MNLI matched
    and mismatched one entry, then the mean over entries. The average was the mean of each task's
    first metric (MRPC F1 alone, MNLI twice)."""
    from t5electra.eval import text_to_text as TT

    mnli = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
    _write(tmp_path / "MRPC/dev.tsv", "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                      "1\t1\t2\ta b\ta b\n0\t1\t2\tc d\te f\n1\t1\t2\tg h\tg h\n0\t1\t2\ti j\tk l\n")
    _write(tmp_path / "MNLI/dev_matched.tsv", mnli + "0\t1\t1\tg\tx\tx\tx\tx\tA man.\tA person.\te\tentailment\n"
                                                     "1\t1\t1\tg\tx\tx\tx\tx\tA man.\tA dog.\tc\tcontradiction\n")
    _write(tmp_path / "MNLI/dev_mismatched.tsv", mnli + "0\t1\t1\tg\tx\tx\tx\tx\tHe ran.\tHe moved.\tn\tneutral\n")
    _write(tmp_path / "SST-2/dev.tsv", "sentence\tlabel\ngreat movie\t1\n")
    tasks = [T.get_task(n, data_dir=tmp_path) for n in ("mrpc", "mnli_matched", "mnli_mismatched", "sst2")]
    examples = {t.name: list(t.examples("validation")) for t in tasks}
    # MRPC: "equivalent" for all four -> F1 66.7, accuracy 50; MNLI-m 50, MNLI-mm 100; SST-2 100
    answers = {"He moved": "neutral", "great movie": "positive"}
    monkeypatch.setattr(TT, "predict_texts", lambda model, tok, inputs, **kw: [
        next((a for k, a in answers.items() if k in x), "equivalent" if x.startswith("mrpc") else "entailment")
        for x in inputs])
    out = TT.score_tasks(None, None, tasks, examples)
    assert (out["mrpc/f1"], out["mrpc/accuracy"]) == (pytest.approx(200 / 3), 50.0)
    assert (out["mnli_matched/accuracy"], out["mnli_mismatched/accuracy"], out["sst2/accuracy"]) == (50, 100, 100)
    assert out["average"] == pytest.approx(((200 / 3 + 50) / 2 + (50 + 100) / 2 + 100) / 3)  # 77.8, was 79.2
    assert TT.mixture_average({"mnli_matched": {"accuracy": 60.0}, "rte": {"accuracy": 70.0}}) == 65.0
    # WNLI is not in T5's average (it counted: 50 here), unless nothing else is scored
    assert TT.mixture_average({"rte": {"accuracy": 70.0}, "wnli": {"accuracy": 30.0}}) == 70.0
    assert TT.mixture_average({"wnli": {"accuracy": 30.0}}) == 30.0


def test_mixture_metrics_same_with_predictions_and_when_a_task_is_unlabelled(tmp_path, monkeypatch):
    """A mixture's split where one task has no labels (GLUE's test.tsv) and the other has: `evaluate`
    raised ZeroDivisionError (the average over the unlabelled task's {}), where results.json reports the
    scored task; and `evaluate --predictions FILE` left the mixture's "average" out of its metrics."""
    from t5electra.eval import text_to_text as TT
    from t5electra.recipes import evaluate as ev

    _write(tmp_path / "SST-2/dev.tsv", "sentence\tlabel\nfine\t1\ndull\t0\n")
    _write(tmp_path / "SST-2/test.tsv", "index\tsentence\n0\ta fine film\n1\ta dull film\n")
    for split in ("dev", "test"):  # CoLA's headerless layout, labelled
        _write(tmp_path / f"CoLA/{split}.tsv", "".join(f"src\t{i % 2}\t\tthe film {i}\n" for i in range(4)))
    tasks = TT.task_list("sst2+cola", str(tmp_path))
    monkeypatch.setattr(TT, "predict_texts", lambda model, tok, inputs, **kw: [
        "positive" if x.startswith("sst2") else ("acceptable" if int(x[-1]) % 2 else "garbage") for x in inputs])
    valid = {t.name: list(t.examples("validation")) for t in tasks}
    expected = {"sst2/accuracy": 50.0, "cola/mcc": pytest.approx(50.0), "average": pytest.approx(50.0)}
    assert TT.score_tasks(None, None, tasks, valid) == expected
    assert ev._score_and_write(None, None, tasks, valid, tmp_path / "p.jsonl") == expected  # had no "average"
    test = {t.name: list(t.examples("test")) for t in tasks}
    assert TT.score_tasks(None, None, tasks, test) == {"cola/mcc": pytest.approx(50.0)}  # was ZeroDivisionError
    assert ev._score_and_write(None, None, tasks, test, tmp_path / "p.jsonl") == TT.score_tasks(None, None, tasks, test)
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 6  # every prediction, the unlabelled too


def test_t5_preprocessing_details_as_the_reference(monkeypatch):
    """pad_punctuation is RE2's [[:punct:]] (ASCII, "_" too; \\W split "–", "£", "’"); a 3-letter language
    code is not cut to 2 ("est" became Spanish); a SQuAD question without answers is unlabelled (scoring
    raised); nyu-mll/glue's mnli splits are validation_matched / test_matched ('Unknown split'), and its
    STS-B test scores of -1.0 mean none (they were trained on and scored)."""
    from t5electra.data import readers
    from t5electra.data.task_base import unlabelled

    assert T.pad_punctuation("from 1990–1995, £5, snake_case’s") == "from 1990–1995 , £5 , snake _ case’s"
    assert T.language_name("pt-BR") == "Portuguese" and T.language_name("de") == "German"
    for code in ("est", "fil", "arg"):
        with pytest.raises(ConfigError, match="unknown language code"):
            T.language_name(code)
    assert unlabelled([]) and not unlabelled(["Denver"]) and unlabelled(-1) and not unlabelled(-1.0)

    asked = []

    def fake_rows(self, split):
        asked.append((self.name, self.split_map[split]))
        yield {"sentence1": "a", "sentence2": "b", "label": -1.0 if "test" in split else 3.2, "idx": 0}

    monkeypatch.setattr(T, "datasets_available", lambda: True)
    monkeypatch.setattr(readers.HFDatasetSource, "read", fake_rows)
    T.glue_task("mnli").source.read("validation").__next__()
    assert asked[-1] == ("mnli", "validation_matched")
    stsb = T.glue_task("stsb")
    assert math.isnan(next(stsb.source.read("test"))["label"]) and next(stsb.source.read("train"))["label"] == 3.2


def test_record_readers_agree_across_formats(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"article": 'He said "hi", then left.', "summary": "Greeting."}, {"article": "b c", "summary": "d"}]
    _write(tmp_path / "a.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write(tmp_path / "a.tsv", "article\tsummary\n" + "".join(f"{r['article']}\t{r['summary']}\n" for r in rows))
    _write(tmp_path / "a.csv", 'article,summary\n"He said ""hi"", then left.",Greeting.\nb c,d\n')
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for suffix in ("jsonl", "tsv", "csv", "parquet"):
        assert list(T.read_records(tmp_path / f"a.{suffix}")) == rows, suffix
    with pytest.raises(DataError, match="unknown data format '.xml'"):
        T.read_records(tmp_path / "a.xml")


# -- subsets ------------------------------------------------------------------------------------

def test_subsets_are_spread_over_a_label_sorted_split_never_its_first_rows(tmp_path):
    from t5electra.data.readers import spread_subset
    from t5electra.recipes.evaluate import _examples
    from t5electra.recipes.finetune_t5 import split_examples

    assert spread_subset(list(range(10)), 4) == [0, 2, 5, 7]
    assert spread_subset(list(range(1000)), 600)[-1] == 998  # the old rows[::len // n][:n] stopped at 599
    assert spread_subset([1, 2], None) == spread_subset([1, 2], 5) == [1, 2] and spread_subset([1, 2], 0) == []
    with pytest.raises(ValueError):
        spread_subset([1], -1)
    # a split sorted by label, as the sentiment sample's validation file (500 positive rows first)
    path = _write(tmp_path / "sorted.tsv", "sentence\tlabel\n" + "".join(
        f"s{i}\t{int(i < 60)}\n" for i in range(100)))
    task = T.classification_task("sorted", T.FileSource({"validation": path}, T.read_tsv),
                                 text_keys=("sentence",), labels=("negative", "positive"))
    for rows in (_examples(task, "validation", 10), split_examples([task], "validation", 10)["sorted"]):
        assert [e["targets"] for e in rows].count("negative") == 4  # 40 % of the split, not 0


# -- own files for the encoder heads: what used to be read wrong --------------------------------------

@pytest.mark.parametrize("train, dev, match", [
    ("text,label\na,pos\nb,neg\n", "text,label\nc,mixed\n", r"label 'mixed' .* not one of the training split's classes"),
    ("text,label\na,pos\nb,\n", "text,label\nc,pos\n", r"train.csv:3: an empty label"),
    ("text,label\na,pos\nb,c,neg\n", "text,label\nc,pos\n", r"train.csv:3: 3 cells where the header has 2"),
    ("text,label\na,pos\ntext,label\nb,neg\n", "text,label\nc,pos\n", r"train.csv:3: the row repeats the header"),
    # one class: training ran, then sklearn's metrics failed with a traceback
    ("text,label\na,pos\nb,pos\n", "text,label\nc,pos\n", r"train.csv: every training row has the label 'pos'"),
])
def test_own_classification_files_are_read_as_written_or_refused(tmp_path, train, dev, match):
    """A class seen only in validation, an empty label cell, an unquoted comma and a second header line
    were a silent extra class, a traceback, a misread row and a class named 'label'."""
    from t5electra.data.heads import load_task_data
    from t5electra.errors import DataError

    (tmp_path / "train.csv").write_text(train)
    (tmp_path / "dev.csv").write_text(dev)
    with pytest.raises(DataError, match=match):
        load_task_data("classification", task_dir=tmp_path)


def test_own_qa_and_token_files_are_checked(tmp_path):
    from t5electra.data.heads import load_task_data
    from t5electra.errors import DataError

    row = {"id": "1", "question": "who?", "context": "Bob met Ann."}
    listed = dict(row, answers=[{"text": "Bob", "answer_start": 0}])  # SQuAD's list layout is read
    (tmp_path / "train.jsonl").write_text(json.dumps(listed) + "\n")
    (tmp_path / "dev.jsonl").write_text(json.dumps(listed) + "\n")
    data = load_task_data("qa", task_dir=tmp_path)
    assert data.splits["validation"][0]["answer_text"] == "Bob"
    shifted = dict(row, answers={"text": ["Ann"], "answer_start": [5]})  # Ann is at 8
    (tmp_path / "dev.jsonl").write_text(json.dumps(shifted) + "\n")
    with pytest.raises(DataError, match=r"dev.jsonl: example 1: answer 'Ann' is not at answer_start=5 of the context \(there: 'et '\)"):
        load_task_data("qa", task_dir=tmp_path)
    tokens = tmp_path / "tok"
    tokens.mkdir()
    (tokens / "train.jsonl").write_text(json.dumps({"tokens": "abc", "labels": "xyz"}) + "\n")
    with pytest.raises(DataError, match="'tokens' and 'labels' must be lists"):
        load_task_data("token_classification", task_dir=tokens)


def test_translation_tsv_skips_blank_lines_and_counts_lines_from_the_file(tmp_path):
    from t5electra.errors import DataError

    path = tmp_path / "train.tsv"
    path.write_text("en\tde\nhouse\tHaus\n\ncat\tKatze\n\n")  # blank lines, a trailing one too
    assert [r["de"] for r in T.read_translation(path, "en", "de")] == ["Haus", "Katze"]
    path.write_text("en\tde\nhouse\tHaus\ncat\n")
    with pytest.raises(DataError, match=r"line 3: expected 2 tab-separated columns, got 1"):
        list(T.read_translation(path, "en", "de"))


def test_translate_task_for_another_language_pair_by_name(tmp_path):
    """`--data.task=translate_en_fr`: the CLI's way to a pair other than translate's en -> de (was an
    unknown task, and `translate` trained en -> de prompts on French targets)."""
    from t5electra.eval.text_to_text import task_list

    (tmp_path / "train.tsv").write_text("en\tfr\ncat\tchat\nhouse\tmaison\n")
    task = T.get_task("translate_en_fr", data_dir=tmp_path)
    assert [e["inputs"] for e in task.examples("train")] == ["translate English to French: cat",
                                                              "translate English to French: house"]
    assert [t.name for t in task_list("translate_en_fr", tmp_path)] == ["translate_en_fr"]
    with pytest.raises(ConfigError, match="unknown language code 'xx'"):
        T.get_task("translate_en_xx", data_dir=tmp_path)
