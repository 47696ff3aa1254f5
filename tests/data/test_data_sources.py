"""Corpus readers: formats, options, bad input (named errors), UTF-8 handling, fingerprints."""

from __future__ import annotations

import gzip
import json
import warnings

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from t5electra.data.sources import Corpus, ReadStats, detect_format, read_documents
from t5electra.errors import DataError


def test_text_one_document_per_line_skips_blank_lines(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("first doc\n\n   \nsecond doc\r\nthird\n")
    assert list(read_documents(p)) == ["first doc", "second doc", "third"]


def test_text_paragraph_mode_joins_lines_of_a_block(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("line one\nline two\n\n\npara two\n  \nlast\n")
    assert list(read_documents(p, document_per="paragraph")) == ["line one\nline two", "para two", "last"]


def test_gzip_text_is_read_transparently(tmp_path):
    p = tmp_path / "a.txt.gz"
    with gzip.open(p, "wt") as fh:
        fh.write("alpha\nbeta\n")
    assert detect_format(p) == "text"
    assert list(read_documents(p)) == ["alpha", "beta"]


def test_gz_that_is_not_gzip_or_cut_short_is_a_named_error(tmp_path):
    plain = tmp_path / "plain.jsonl.gz"
    plain.write_text(json.dumps({"text": "one"}) + "\n")  # gzip.BadGzipFile used to come out as a traceback
    with pytest.raises(DataError, match=r"plain\.jsonl\.gz: not a valid gzip file \(Not a gzipped file.*drop the "
                                        r"\.gz suffix if it is plain text"):
        list(read_documents(plain))
    cut = tmp_path / "cut.txt.gz"
    cut.write_bytes(gzip.compress(b"alpha\nbeta\n" * 100)[:30])
    with pytest.raises(DataError, match=r"cut\.txt\.gz: not a valid gzip file \(Compressed file ended"):
        list(Corpus([cut]))


def test_jsonl_field_and_named_errors(tmp_path):
    p = tmp_path / "a.jsonl"
    p.write_text(json.dumps({"text": "one", "id": 1}) + "\n\n" + json.dumps({"body": "two"}) + "\n")
    assert next(read_documents(p, field="text")) == "one"
    with pytest.raises(DataError) as e:
        list(read_documents(p, field="text"))
    msg = str(e.value)
    assert str(p) in msg and "line 3" in msg and "'text'" in msg and "'body'" in msg
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"bad.jsonl, line 2: not valid JSON"):
        list(read_documents(bad))
    num = tmp_path / "num.jsonl"
    num.write_text('{"text": 3}\n')
    with pytest.raises(DataError, match="is a int, not a string"):
        list(read_documents(num))


def test_csv_and_tsv_columns(tmp_path):
    c = tmp_path / "a.csv"
    c.write_text('id,sentence\n1,"a, quoted\nmulti-line field"\n2,plain\n')
    assert list(read_documents(c, field="sentence")) == ["a, quoted\nmulti-line field", "plain"]
    t = tmp_path / "a.tsv"
    t.write_text('sentence\tlabel\nsays "hi there\t1\nno quotes\t0\n')  # GLUE-style: quotes are literal
    assert list(read_documents(t, field="sentence")) == ['says "hi there', "no quotes"]
    with pytest.raises(DataError) as e:
        list(read_documents(c, field="text"))
    assert "no column 'text'" in str(e.value) and "'sentence'" in str(e.value) and str(c) in str(e.value)


def test_parquet_column_streams_by_record_batch(tmp_path):
    p = tmp_path / "a.parquet"
    table = pa.table({"text": [f"doc {i}" for i in range(2500)] + [None, ""], "n": list(range(2502))})
    pq.write_table(table, p, row_group_size=700)
    stats = ReadStats()
    docs = read_documents(p, stats=stats)
    assert next(docs) == "doc 0"            # lazily: nothing else read yet
    rest = list(docs)
    assert len(rest) == 2499 and rest[-1] == "doc 2499"
    assert stats.documents == 2500 and stats.skipped_blank == 2
    with pytest.raises(DataError, match="no column 'body'.*'text', 'n'"):
        list(read_documents(p, field="body"))


def test_invalid_utf8_replaced_with_warning_and_count(tmp_path):
    p = tmp_path / "a.txt"
    p.write_bytes(b"good line\nbad \xff byte and \xfe\xfe two more\n")
    corpus = Corpus(p)
    with pytest.warns(UnicodeWarning, match=r"replaced 3 invalid UTF-8"):
        docs = list(corpus)
    assert docs == ["good line", "bad \ufffd byte and \ufffd\ufffd two more"]
    assert corpus.stats.replaced_bytes == 3


def test_invalid_utf8_strict_names_file_and_byte_offset(tmp_path):
    p = tmp_path / "a.jsonl"
    first, prefix = b'{"text": "fine"}\n', b'{"text": "caf'
    p.write_bytes(first + prefix + b'\xe9"}\n')
    with pytest.raises(DataError) as e:
        list(read_documents(p, strict=True))
    assert str(p) in str(e.value) and f"byte offset {len(first) + len(prefix)} " in str(e.value)  # 30


def test_valid_text_reads_without_warnings(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("naïve café \ufffd already here\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(read_documents(p)) == ["naïve café \ufffd already here"]


def test_empty_corpus_is_a_clear_error(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("\n  \n\n")
    with pytest.raises(DataError, match="empty corpus: no non-blank documents in .*a.txt"):
        list(Corpus(p))
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    with pytest.raises(DataError, match="no corpus files"):
        Corpus(empty_dir)
    with pytest.raises(DataError, match="not found"):
        Corpus(tmp_path / "missing.txt")
    with pytest.raises(DataError, match="no file matches"):
        Corpus(str(tmp_path / "*.parquet"))


def test_unknown_extension_asks_for_format(tmp_path):
    p = tmp_path / "a.dat"
    p.write_text("x\n")
    with pytest.raises(DataError, match="pass format="):
        list(Corpus(p))
    assert list(Corpus(p, format="text")) == ["x"]


def test_corpus_expands_directories_and_globs_in_order(tmp_path):
    (tmp_path / "b.txt").write_text("b1\nb2\n")
    (tmp_path / "a.jsonl").write_text('{"text": "a1"}\n')
    (tmp_path / "notes.md").write_text("ignored\n")
    assert list(Corpus(tmp_path)) == ["a1", "b1", "b2"]
    assert list(Corpus(str(tmp_path / "*.txt"))) == ["b1", "b2"]


def test_fingerprint_follows_content_and_options(tmp_path):
    p = tmp_path / "a.txt"
    p.write_text("one\ntwo\n")
    fp = Corpus(p).fingerprint()
    assert Corpus(p).fingerprint() == fp
    assert Corpus(p, document_per="paragraph").fingerprint() != fp
    p.write_text("one\ntwo!\n")
    assert Corpus(p).fingerprint() != fp


def test_byte_order_mark_and_hidden_files(tmp_path):
    """A BOM (Windows editors write one) broke JSON line 1 and renamed CSV's first column; a directory's
    hidden files (.ipynb_checkpoints copies) were read as more corpus."""
    from t5electra.data.sources import Corpus

    (tmp_path / "a.jsonl").write_bytes(b"\xef\xbb\xbf" + b'{"text": "first doc"}\n{"text": "second"}\n')
    (tmp_path / "b.csv").write_bytes(b"\xef\xbb\xbftext,x\nthird,1\n")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.jsonl").write_text('{"text": "a copy"}\n')
    assert list(Corpus([tmp_path])) == ["first doc", "second", "third"]
