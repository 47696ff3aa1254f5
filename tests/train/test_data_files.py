"""Fingerprints of a run's data files (train/data_files.py): what a resume compares."""

from __future__ import annotations

from t5electra.train import data_files as D


def test_changes_are_named_per_file(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    (d / "train.csv").write_text("text,label\na,pos\n")
    (d / "dev.csv").write_text("text,label\nb,neg\n")
    tok = tmp_path / "tok.json"
    tok.write_text("{}")
    inputs = {"data.task_dir": str(d), "data.tokenizer": str(tok), "data.test_files": [], "model.init_from": None}
    before = D.run_data_fingerprint(inputs)
    assert len(before) == 3 and D.changed_files(before, D.run_data_fingerprint(inputs)) == []
    (d / "train.csv").write_text("text,label\na,neg\n")  # same size, one label changed
    (d / "dev.csv").unlink()
    (d / "test.csv").write_text("text,label\nc,pos\n")
    assert D.changed_files(before, D.run_data_fingerprint(inputs)) == [
        f"{(d / 'dev.csv').resolve()} (gone)", f"{(d / 'test.csv').resolve()} (new since the checkpoint)",
        f"{(d / 'train.csv').resolve()} (same size, other content)"]


def test_large_files_are_sampled_and_still_catch_size_and_block_edits(tmp_path, monkeypatch):
    monkeypatch.setattr(D, "FULL_HASH_BYTES", 4096)
    monkeypatch.setattr(D, "EDGE_BYTES", 512)
    monkeypatch.setattr(D, "BLOCK_BYTES", 64)
    path = tmp_path / "corpus.txt"
    data = bytearray(b"x" * 20_000)
    path.write_bytes(data)
    fp = D.file_fingerprint(path)
    assert fp["sampled"] and fp["size"] == 20_000
    data[10] = ord("y")  # inside the first EDGE_BYTES
    path.write_bytes(data)
    assert D.file_fingerprint(path)["sha256"] != fp["sha256"]
    path.write_bytes(b"x" * 20_001)
    assert D.changed_files({"f": fp}, {"f": D.file_fingerprint(path)}) == ["f (20000 -> 20001 bytes)"]
    globbed = D.data_fingerprint({"data.train_files": [str(tmp_path / "*.txt")]})
    assert list(globbed) == [str(path.resolve())]


def test_a_task_dir_counts_its_split_files_only(tmp_path):
    """A run inside data.task_dir (its checkpoints, .lock), a README or predictions written there
    blocked every resume: only the split files a task reads count, never the run's own directory."""
    d = tmp_path / "td"
    d.mkdir()
    for name in ("train.tsv", "dev_matched.tsv", "test.tsv"):
        (d / name).write_text("sentence\tlabel\na\t1\n")
    inputs = {"data.task_dir": str(d), "data.train_files": []}
    before = D.run_data_fingerprint(inputs, run_dir=d / "run")
    assert sorted(p.rsplit("/", 1)[1] for p in before) == ["dev_matched.tsv", "test.tsv", "train.tsv"]
    (d / "run" / "checkpoints").mkdir(parents=True)
    (d / "run" / "checkpoints" / "train_state.json").write_text("{}")
    (d / "README.txt").write_text("notes")
    (d / "preds.jsonl").write_text("{}\n")
    assert D.changed_files(before, D.run_data_fingerprint(inputs, run_dir=d / "run")) == []
    # a directory given as training files is read whole (a corpus, shards), but not the run inside it
    corpus = {"data.train_files": [str(d)]}
    assert not any("/run/" in p for p in D.run_data_fingerprint(corpus, run_dir=d / "run"))


def test_many_files_share_one_reading_budget(tmp_path, monkeypatch):
    """A corpus of many files was hashed in full at every start (all of it, up to 64 MiB a file)."""
    monkeypatch.setattr(D, "TOTAL_BYTES", 40_000)
    monkeypatch.setattr(D, "MIN_BYTES", 1_000)
    for i in range(10):
        (tmp_path / f"part{i}.txt").write_text("x" * 10_000)
    fps = D.data_fingerprint({"data.train_files": [str(tmp_path)]})
    assert len(fps) == 10 and all(fp["sampled"] for fp in fps.values())  # 4,000 bytes each, not 10,000
