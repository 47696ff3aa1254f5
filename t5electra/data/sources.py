"""Read documents from corpus files, streaming: plain text, JSONL, CSV/TSV and Parquet.

Every reader is a generator that holds one line, one CSV record or one Parquet record batch at a
time, so memory stays bounded whatever the file size. A :class:`Corpus` names the files and the
options, can be iterated any number of times, and has a content fingerprint (a hash of the
file bytes and the options) that the token-shard cache is keyed on (see ``shards.py``).

Formats (chosen from the extension, or forced with ``format=``; ``.gz`` is read transparently):

* ``text`` (``.txt``): one document per line (``document_per="line"``), or per block of lines
  separated by blank lines (``document_per="paragraph"``, the lines of a block joined with ``\\n``).
* ``jsonl`` (``.jsonl``, ``.json``): one JSON object per line; the document is ``obj[field]``.
* ``csv`` / ``tsv``: a header row, then records; the document is the column named ``field``.
  TSV is read without quote handling, like the GLUE loaders (a ``"`` is an ordinary character).
* ``parquet``: the column ``field``, read one record batch at a time (pyarrow).

Blank documents (empty or only whitespace) are skipped. Bytes that are not UTF-8 are replaced
by U+FFFD with one warning per file giving the count (``strict=False``, the default), or raise
:class:`~t5electra.errors.DataError` naming the file and the byte offset (``strict=True``).
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import gzip
import hashlib
import json
import os
import sys
import warnings
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import DataError

FORMATS = ("text", "jsonl", "csv", "tsv", "parquet")
_EXTENSIONS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet"}

csv.field_size_limit(sys.maxsize)  # documents can be long; the csv default caps fields at 128 KiB


def detect_format(path: str | os.PathLike) -> str:
    """The format implied by a file name (``.gz`` looked through); DataError when unknown."""
    p = Path(path)
    suffix = Path(p.stem).suffix if p.suffix == ".gz" else p.suffix
    fmt = _EXTENSIONS.get(suffix.lower())
    if fmt is None:
        raise DataError(f"{p}: cannot tell the format from the extension {suffix or '(none)'!r}; "
                        f"pass format= one of {', '.join(FORMATS)}")
    return fmt


@dataclasses.dataclass
class ReadStats:
    """What reading a corpus found; updated as documents stream out."""

    documents: int = 0          # documents yielded
    skipped_blank: int = 0      # blank documents (and JSON null / Parquet null values) skipped
    replaced_bytes: int = 0     # invalid UTF-8 sequences replaced by U+FFFD (non-strict mode)


def _decode(raw: bytes, path: Path, offset: int, strict: bool, stats: ReadStats, row: int | None = None) -> str:
    """Decode one line of bytes that starts at byte ``offset`` of ``path`` (or Parquet value ``row``)."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        if strict:
            where = (f"{path}: invalid UTF-8 at byte offset {offset + e.start}" if row is None else
                     f"{path}, row {row}: invalid UTF-8 at byte offset {e.start} of the value")
            raise DataError(f"{where} ({raw[e.start:e.end]!r}); pass strict=False to replace such "
                            f"bytes with U+FFFD instead") from None
    # Replace sequence by sequence so the count is exact (a literal U+FFFD in the text is not counted).
    parts, start = [], 0
    while True:
        try:
            parts.append(raw[start:].decode("utf-8"))
            return "".join(parts)
        except UnicodeDecodeError as e:
            parts.append(raw[start:start + e.start].decode("utf-8") + "\ufffd")
            stats.replaced_bytes += 1
            start += e.end


def _open_binary(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _lines(path: Path, strict: bool, stats: ReadStats) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its newline) of a text file, streaming."""
    offset = 0
    try:
        with _open_binary(path) as fh:
            for number, raw in enumerate(fh, start=1):
                line = _decode(raw, path, offset, strict, stats)
                yield number, line[1:] if number == 1 and line.startswith("\ufeff") else line  # a byte-order mark
                offset += len(raw)
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:  # a .gz that is not gzip, or cut short
        raise DataError(f"{path}: not a valid gzip file ({e or type(e).__name__}); a .gz name means gzip-"
                        f"compressed: compress it with gzip, or drop the .gz suffix if it is plain text") from None


def _read_text(path: Path, document_per: str, strict: bool, stats: ReadStats) -> Iterator[str]:
    if document_per == "line":
        for _, line in _lines(path, strict, stats):
            yield line.rstrip("\r\n")
        return
    block: list[str] = []
    for _, line in _lines(path, strict, stats):
        line = line.rstrip("\r\n")
        if line.strip():
            block.append(line)
        elif block:
            yield "\n".join(block)
            block = []
    if block:
        yield "\n".join(block)


def _read_jsonl(path: Path, field: str, strict: bool, stats: ReadStats) -> Iterator[str | None]:
    for number, line in _lines(path, strict, stats):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}, line {number}: not valid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}, line {number}: expected a JSON object, got {type(obj).__name__}")
        if field not in obj:
            raise DataError(f"{path}, line {number}: no field {field!r} (fields: {', '.join(map(repr, obj))}); "
                            f"pass field= (in a run config: data.text_columns=[NAME]) to choose another")
        value = obj[field]
        if value is not None and not isinstance(value, str):
            raise DataError(f"{path}, line {number}: field {field!r} is a {type(value).__name__}, not a string")
        yield value


def _read_delimited(path: Path, field: str, delimiter: str, strict: bool, stats: ReadStats) -> Iterator[str]:
    # csv.reader takes any iterable of str lines; feeding our decoded lines keeps the UTF-8 handling
    # (and the byte offsets of errors) identical to the other formats. Quoted fields may span lines.
    lines = (line for _, line in _lines(path, strict, stats))
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(lines, delimiter=delimiter, quoting=quoting)
    header = next(reader, None)
    if header is None:
        return
    if field not in header:
        raise DataError(f"{path}: no column {field!r} in the header (columns: {', '.join(map(repr, header))}); "
                        f"pass field= (in a run config: data.text_columns=[NAME]) to choose another")
    col = header.index(field)
    for record in reader:
        if not record:
            continue
        if col >= len(record):
            raise DataError(f"{path}, line {reader.line_num}: record has {len(record)} fields, "
                            f"column {field!r} is number {col + 1}")
        yield record[col]


def _read_parquet(path: Path, field: str, strict: bool, stats: ReadStats, batch_size: int = 1024) -> Iterator[str | None]:
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is in the [data] extra
        raise DataError(f"{path}: reading Parquet needs pyarrow (pip install 't5electra[data]')") from None
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid for non-Parquet bytes
        raise DataError(f"{path}: not a readable Parquet file ({e})") from None
    names = pf.schema_arrow.names
    if field not in names:
        raise DataError(f"{path}: no column {field!r} (columns: {', '.join(map(repr, names))}); "
                        f"pass field= (in a run config: data.text_columns=[NAME]) to choose another")
    row = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=[field]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, bytes):  # a binary column: decode like a text line
                value = _decode(value, path, 0, strict, stats, row=row)
            elif value is not None and not isinstance(value, str):
                raise DataError(f"{path}, row {row}: column {field!r} holds {type(value).__name__}, not text")
            row += 1
            yield value


def read_documents(path: str | os.PathLike, *, format: str = "auto", field: str = "text",
                   document_per: str = "line", strict: bool = False,
                   stats: ReadStats | None = None) -> Iterator[str]:
    """Stream the non-blank documents of one file. See the module docstring for the formats."""
    path = Path(path)
    stats = ReadStats() if stats is None else stats
    fmt = detect_format(path) if format == "auto" else format
    if fmt not in FORMATS:
        raise DataError(f"unknown format {format!r} for {path}; expected one of {', '.join(FORMATS)} or 'auto'")
    if document_per not in ("line", "paragraph"):
        raise DataError(f"document_per must be 'line' or 'paragraph', got {document_per!r}")
    if not path.is_file():
        raise DataError(f"corpus file not found: {path}")
    before = stats.replaced_bytes
    if fmt == "text":
        docs: Iterable[str | None] = _read_text(path, document_per, strict, stats)
    elif fmt == "jsonl":
        docs = _read_jsonl(path, field, strict, stats)
    elif fmt in ("csv", "tsv"):
        docs = _read_delimited(path, field, "\t" if fmt == "tsv" else ",", strict, stats)
    else:
        docs = _read_parquet(path, field, strict, stats)
    for doc in docs:
        if doc is None or not doc.strip():
            stats.skipped_blank += 1
            continue
        stats.documents += 1
        yield doc
    replaced = stats.replaced_bytes - before
    if replaced:
        warnings.warn(f"{path}: replaced {replaced} invalid UTF-8 byte sequence(s) with U+FFFD "
                      f"(read_documents(..., strict=True) refuses such a file instead)", UnicodeWarning, stacklevel=2)


def expand_paths(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Files named by paths (a name that exists is a file even with ``[``, ``?`` or ``*`` in it),
    directories (their known-format files, recursively, hidden files and folders left out: editor and
    notebook copies) and glob patterns."""
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_file():
            out.append(p)
        elif p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _known(f)
                           and not any(part.startswith(".") for part in f.relative_to(p).parts))
            if not found:
                raise DataError(f"{p}: directory has no corpus files ({', '.join(sorted(_EXTENSIONS))}, optionally .gz)")
            out.extend(found)
        elif any(ch in str(p) for ch in "*?["):
            found = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if os.path.isfile(f))
            if not found:
                raise DataError(f"no file matches the pattern {str(p)!r}")
            out.extend(found)
        else:
            raise DataError(f"corpus file not found: {p}")
    return out


def _known(f: Path) -> bool:
    suffix = Path(f.stem).suffix if f.suffix == ".gz" else f.suffix
    return suffix.lower() in _EXTENSIONS


class Corpus:
    """Files and reading options; iterate it (as often as needed) for the documents.

    ``Corpus(["books/", "web.jsonl"], field="text")`` reads every corpus file under ``books/``
    and the JSONL file. After (or during) an iteration, ``stats`` holds the counts of that pass.

    Args:
        paths: files, directories (their corpus files, recursively, sorted) and glob patterns.
        format: "auto" (from each extension) or one of ``FORMATS`` for every file.
        field: the JSONL field / CSV-TSV column / Parquet column holding the text.
        document_per: plain text only: "line" or "paragraph" (blocks separated by blank lines).
        strict: invalid UTF-8 is an error (True) or replaced by U+FFFD with a warning (False).
    """

    def __init__(self, paths, *, format: str = "auto", field: str = "text", document_per: str = "line",
                 strict: bool = False):
        self.paths = expand_paths(paths)
        if not self.paths:
            raise DataError("empty corpus: no input files given")
        if format != "auto" and format not in FORMATS:
            raise DataError(f"unknown format {format!r}; expected 'auto' or one of {', '.join(FORMATS)}")
        self.format, self.field, self.document_per, self.strict = format, field, document_per, strict
        self.stats = ReadStats()

    def __repr__(self) -> str:
        return f"Corpus({[str(p) for p in self.paths]!r}, **{self.options()!r})"

    def __iter__(self) -> Iterator[str]:
        self.stats = ReadStats()
        for path in self.paths:
            yield from read_documents(path, format=self.format, field=self.field,
                                      document_per=self.document_per, strict=self.strict, stats=self.stats)
        if self.stats.documents == 0:
            names = ", ".join(str(p) for p in self.paths[:5]) + (" ..." if len(self.paths) > 5 else "")
            raise DataError(f"empty corpus: no non-blank documents in {names} "
                            f"(format={self.format}, field={self.field!r}, document_per={self.document_per})")

    def options(self) -> dict:
        """The reading options, as they enter the fingerprint."""
        return {"format": self.format, "field": self.field, "document_per": self.document_per,
                "strict": self.strict}

    def fingerprint(self) -> str:
        """SHA-256 of the options and of every file's name, size and bytes (in order).

        Hashing the content (not the modification time) means a copied or touched corpus keeps
        its token-shard cache, and an edited one gets a new cache.
        """
        h = hashlib.sha256(json.dumps(self.options(), sort_keys=True).encode())
        for path in self.paths:
            h.update(f"\0{path.name}\0{path.stat().st_size}\0".encode())
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    h.update(chunk)
        return h.hexdigest()
