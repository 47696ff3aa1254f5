"""Readers: one file -> raw example dicts (TSV, CSV, JSONL, Parquet, SQuAD JSON), and sources:
split name -> raw examples (local files, or a dataset of the optional ``datasets`` library).
Tasks (``data/tasks.py``) and the encoder-head data (``data/heads.py``) read through these."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..config import suggest
from ..errors import ConfigError, DataError

Example = dict[str, Any]

# GLUE/SQuAD TSVs contain quote characters that are text, not quoting (GLUE's own loaders read
# them with QUOTE_NONE); fields are long.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


# =================================================================================================
# Readers: one file -> raw example dicts
# =================================================================================================

def _open_text(path: Path):
    # utf-8-sig: MRPC's files start with a byte-order mark that would otherwise rename a column.
    return open(path, encoding="utf-8-sig", newline="")


def read_tsv(path: str | Path, quoting: int = csv.QUOTE_NONE) -> Iterator[Example]:
    """Rows of a TSV with a header line, as dicts (quotes are plain text, as in GLUE)."""
    with _open_text(Path(path)) as fh:
        yield from csv.DictReader(fh, delimiter="\t", quoting=quoting)


def read_csv(path: str | Path) -> Iterator[Example]:
    """Rows of a CSV with a header line (standard quoting), as dicts."""
    with _open_text(Path(path)) as fh:
        yield from csv.DictReader(fh)


def read_jsonl(path: str | Path) -> Iterator[Example]:
    """One JSON object per line; blank lines are skipped."""
    path = Path(path)
    with open(path, encoding="utf-8-sig") as fh:  # a byte-order mark is read past, as in CSV/TSV
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
            yield obj


def read_parquet(path: str | Path) -> Iterator[Example]:
    """Rows of a Parquet file, read in record batches (bounded memory)."""
    import pyarrow.parquet as pq  # the `data` extra: imported only for Parquet files

    import pyarrow

    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=4096)
    except pyarrow.ArrowException as e:
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    for batch in batches:
        yield from batch.to_pylist()


def read_squad(path: str | Path) -> Iterator[Example]:
    """SQuAD v1.1 JSON (``{"data": [{"title", "paragraphs": [{"context", "qas"}]}]}``) flattened
    to one dict per question, in the layout of the ``datasets`` "squad" dataset:
    ``{"id", "title", "context", "question", "answers": {"text": [...], "answer_start": [...]}}``."""
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        try:
            doc = json.load(fh)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(doc, dict) or "data" not in doc:
        raise DataError(f"{path}: not SQuAD JSON (no top-level 'data' list)")
    for article in doc["data"]:
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                answers = qa.get("answers", [])
                yield {
                    "id": qa.get("id", ""),
                    "title": article.get("title", ""),
                    "context": para["context"],
                    "question": qa["question"],
                    "answers": {"text": [a["text"] for a in answers],
                                "answer_start": [int(a["answer_start"]) for a in answers]},
                }


_READERS: dict[str, Callable[[Path], Iterator[Example]]] = {
    ".tsv": read_tsv, ".csv": read_csv, ".jsonl": read_jsonl, ".parquet": read_parquet, ".json": read_squad,
}


def read_records(path: str | Path) -> Iterator[Example]:
    """Dispatch on the suffix: .tsv, .csv, .jsonl, .parquet, .json (SQuAD)."""
    path = Path(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(f"{path}: unknown data format {path.suffix!r}; expected one of {sorted(_READERS)}")
    return reader(path)


# =================================================================================================
# Sources: split name -> raw examples
# =================================================================================================

@dataclasses.dataclass(frozen=True)
class FileSource:
    """Examples from local files, one file per split."""

    # split name -> file
    files: Mapping[str, Path]
    # file -> raw example dicts
    reader: Callable[[Path], Iterator[Example]] = read_records

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.files)

    def read(self, split: str) -> Iterator[Example]:
        if split not in self.files:
            raise ConfigError(f"no split {split!r}{suggest(split, self.files)}; available: {list(self.files)}")
        path = Path(self.files[split])
        if not path.is_file():
            raise DataError(f"split {split!r}: file {path} does not exist")
        return utf8_guard(path, self.reader(path))


def utf8_guard(path: Path, rows: Iterator[Example]) -> Iterator[Example]:
    # Labelled data is not silently "repaired": bytes that are not UTF-8 are an error naming the file.
    try:
        yield from rows
    except UnicodeDecodeError as e:
        bad = e.object[e.start:e.start + 4]
        raise DataError(f"{path}: not UTF-8 text ({e.reason}, bytes {bad!r}); re-encode the file as UTF-8") from None


@dataclasses.dataclass(frozen=True)
class HFDatasetSource:
    """A dataset of the optional ``datasets`` library (downloaded by it, so online the first time)."""

    # e.g. "nyu-mll/glue"
    path: str
    # configuration, e.g. "sst2"
    name: str | None = None
    # our split name -> the dataset's split name
    split_map: Mapping[str, str] = dataclasses.field(
        default_factory=lambda: {"train": "train", "validation": "validation", "test": "test"})

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(self.split_map)

    def read(self, split: str) -> Iterator[Example]:
        if split not in self.split_map:
            raise ConfigError(f"no split {split!r}{suggest(split, self.split_map)}; available: {list(self.split_map)}")
        try:
            import datasets
        except ImportError:
            raise ConfigError(
                f"reading {self.path}{'/' + self.name if self.name else ''} needs the `datasets` library "
                "(pip install datasets), or pass data_dir= with local files") from None
        yield from datasets.load_dataset(self.path, self.name, split=self.split_map[split])


def datasets_available() -> bool:
    """Whether the optional ``datasets`` library is installed (checked without importing it)."""
    return importlib.util.find_spec("datasets") is not None


def find_split_files(data_dir: str | Path, exts: Sequence[str],
                     names: Mapping[str, Sequence[str]] | None = None) -> dict[str, Path]:
    """``{split: file}`` for the files in ``data_dir`` named like a split (train, validation/dev/valid,
    test) with one of the suffixes ``exts``; ``names`` overrides the accepted stems per split."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist")
    names = names or {"train": ("train",), "validation": ("validation", "dev", "valid", "val"), "test": ("test",)}
    found: dict[str, Path] = {}
    for split, stems in names.items():
        for stem in stems:
            hit = next((data_dir / f"{stem}{e}" for e in exts if (data_dir / f"{stem}{e}").is_file()), None)
            if hit is not None:
                found[split] = hit
                break
    if not found:
        raise DataError(f"{data_dir}: no split files (train/validation/test with suffix {list(exts)})")
    return found


def spread_subset(rows: Sequence[Any], n: int | None) -> list[Any]:
    """At most ``n`` rows spread evenly over ``rows``, in their order (all of them when ``n`` is None
    or not smaller). Every subset of a split goes through this, never a prefix: data files are often
    ordered by label or source (the sentiment sample's first 500 validation rows are all positive),
    so the first ``n`` rows would be one-sided."""
    if n is None or n >= len(rows):
        return list(rows)
    if n < 0:
        raise ValueError(f"n={n}: expected >= 0 or None")
    return [rows[i * len(rows) // n] for i in range(n)]
