"""A careless user's inputs and the faults of a real machine: each gives one clear line naming the
flag, file or value and what is valid, never a traceback, and writes nothing half
(the catalogue is docs/reliability.md)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from t5electra.cli import main
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, spiece_model_path):
    d = tmp_path_factory.mktemp("t5")
    torch.manual_seed(0)
    T5ForConditionalGeneration(T5Config.from_preset("t5-tiny", vocab_size=1152)).save_pretrained(d)
    T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes()).save_pretrained(d)
    return d


def _error_line(capsys, command: str) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"t5electra {command}: error: "), captured.err
    return lines[0]


# -- generate ----------------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size=0: must be at least 1"),
    (["--max-length", "-5"], "--max-length=-5: must be at least 1"),
    (["--max-length", "0"], "--max-length=0: must be at least 1"),  # used to truncate nothing, silently
    (["--max-new-tokens", "0"], "--max-new-tokens=0: must be at least 1"),
    (["--num-beams", "0"], "--num-beams=0: must be at least 1"),
    (["--seed", "1180591620717411303424"], "--seed=1180591620717411303424: must be in [0, 2**64)"),
    (["--device", "tpu"], "--device='tpu' is not a device: use 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    (["--out", "/proc/x"], "--out '/proc/x': cannot write in '/proc'"),
])
def test_generate_bad_arguments_are_one_line(t5_dir, capsys, args, message):
    assert main(["generate", str(t5_dir), "hello", *args]) == 1
    assert message in _error_line(capsys, "generate")


@pytest.mark.parametrize("args, message", [
    (["--batch-size", "0"], "--batch-size=0: must be at least 1"),
    (["--max-examples", "0"], "--max-examples=0: must be at least 1"),
    (["--device", "tpu"], "--device='tpu' is not a device"),
    (["--out", "/proc/x"], "--out '/proc/x': cannot write in '/proc'"),
    (["--predictions", "/proc/x"], "--predictions '/proc/x': cannot write in '/proc'"),
])
def test_evaluate_bad_arguments_are_one_line(t5_dir, capsys, args, message):
    assert main(["evaluate", str(t5_dir), "--task", "sentiment", *args]) == 1
    assert message in _error_line(capsys, "evaluate")


def test_generate_out_is_written_whole_or_not_at_all(t5_dir, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    out.write_text("previous results\n")
    assert main(["generate", str(t5_dir), "hello", "--out", str(out), "--temperature", "inf", "--do-sample"]) == 1
    _error_line(capsys, "generate")
    assert out.read_text() == "previous results\n"  # a failed run leaves the old file as it was
    assert main(["generate", str(t5_dir), "hello", "--out", str(out), "--max-new-tokens", "3"]) == 0
    assert out.read_text().startswith('{"input": "hello", "output": ')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]  # no temporary left
    assert main(["generate", str(t5_dir), "hello", "--out", str(tmp_path)]) == 1
    assert "is a directory" in _error_line(capsys, "generate")
    assert main(["generate", str(t5_dir), "hello", "--out", str(tmp_path / "no" / "x.jsonl")]) == 1
    assert "does not exist" in _error_line(capsys, "generate")


def test_evaluate_predictions_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """--predictions F was opened (truncated) first and written task by task: an evaluation that failed
    on the second task of a mixture (out of memory, Ctrl-C) left F with the first task's lines only."""
    from types import SimpleNamespace

    from t5electra.recipes import evaluate as ev

    def score_t5(model, tokenizer, task, examples, **kw):
        if task.name == "b" and fail:
            raise MemoryError("out of memory")
        return {"accuracy": 1.0}, [f"{task.name} answer" for _ in examples]

    monkeypatch.setattr(ev, "score_t5", score_t5)
    tasks = [SimpleNamespace(name="a"), SimpleNamespace(name="b")]
    examples = {t: [{"inputs": f"{t} in", "targets": f"{t} out"}] for t in "ab"}
    path = tmp_path / "preds.jsonl"
    path.write_text("previous predictions\n")
    fail = True
    with pytest.raises(MemoryError):
        ev._score_and_write(None, None, tasks, examples, path)
    assert path.read_text() == "previous predictions\n"
    fail = False
    assert ev._score_and_write(None, None, tasks, examples, path) == {"a/accuracy": 1.0, "b/accuracy": 1.0,
                                                                      "average": 1.0}
    assert [json.loads(line)["prediction"] for line in path.read_text().splitlines()] == ["a answer", "b answer"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["preds.jsonl"]


# -- serve (argument checks only; the server itself: tests/test_serve_*.py) ---------------------
@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port=70000: a TCP port is a number from 1 to 65535"),
    (["--device", "tpu"], "--device='tpu' is not a device: use 'cpu', 'cuda', 'cuda:N' or 'mps'"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "cuda:99"], "--device='cuda:"),
])
def test_serve_bad_port_and_device_are_one_line(t5_dir, capsys, args, message):
    assert main(["serve", str(t5_dir), *args]) == 1
    assert message in _error_line(capsys, "serve")


# -- the top-level help --------------------------------------------------------------------------
def test_top_level_help_is_whole_sentences(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    description = " ".join(out.split("positional arguments")[0].split("\n", 2)[2].split())
    assert description.endswith(".") and "Each subcommand lives in its own module" not in description
    assert "pretrain, fine-tune, evaluate, generate, serve" in description



# -- data fetch --cache ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["file", "proc", "read-only"])
def test_data_fetch_cache_that_cannot_be_written_is_one_line(tmp_path, capsys, monkeypatch, kind):
    monkeypatch.setenv("T5ELECTRA_CACHE", str(tmp_path / "cache"))  # restored after: the command sets it from --cache
    cache = {"file": tmp_path / "a-file", "proc": "/proc/t5electra-cache", "read-only": "/sys"}[kind]
    if kind == "file":
        cache.write_text("not a directory")
    assert main(["data", "fetch", "sentiment", "--cache", str(cache)]) == 1
    line = _error_line(capsys, "data fetch")
    assert f"--cache '{cache}'" in line
    assert ("is a file, expected a directory" if kind == "file" else "cannot write there") in line


# -- pretrain / finetune: the run config and the data, before any work ----------------------------
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    words = "the cat sat on a mat while the dog ran after a red ball in the park".split()
    (root / "corpus.txt").write_text("\n".join(" ".join(words[i % 7:i % 7 + 8]) for i in range(60)) + "\n")
    ElectraTokenizer.train([str(root / "corpus.txt")], vocab_size=60, output_dir=root / "tok", min_frequency=1)
    (root / "plain.txt.gz").write_text("this is not gzip\n")
    return root


def _pretrain(corpus, run, *extra):
    return ["pretrain", "--objective", "electra-rtd", f"--train.output_dir={run}",
            f"--data.train_files={corpus / 'corpus.txt'}", f"--data.tokenizer={corpus / 'tok'}",
            "--model.preset=electra-tiny", "--data.max_length=16", "--train.batch_size=4", "--train.max_steps=2",
            "--train.device=cpu", "--train.progress=false", "--train.tensorboard=false", *extra]


@pytest.mark.parametrize("override, message", [
    ("--optim.lr=-1", "optim.lr=-1.0: must be a learning rate > 0"),
    ("--optim.lr=nan", "optim.lr=nan: expected a finite number"),
    ("--optim.betas=[2,3]", "optim.betas=[2.0, 3.0]: expected two coefficients in [0, 1)"),
    ("--data.noise_density=2", "data.noise_density=2.0: must be a fraction in (0, 1)"),  # looped forever
    ("--data.mean_noise_span_length=0", "data.mean_noise_span_length=0.0: must be a span length >= 1"),
    ("--train.device=tpu", "train.device='tpu' is not a device"),
])
def test_pretrain_bad_config_is_one_line_before_any_work(corpus, tmp_path, capsys, override, message):
    run = tmp_path / "run"
    assert main(_pretrain(corpus, run, override)) == 1
    assert message in _error_line(capsys, "pretrain")
    assert not run.exists()


def test_pretrain_on_a_gz_that_is_not_gzip_is_one_line(corpus, tmp_path, capsys):
    assert main(_pretrain(corpus, tmp_path / "run", f"--data.train_files={corpus / 'plain.txt.gz'}")) == 1
    assert "plain.txt.gz: not a valid gzip file" in _error_line(capsys, "pretrain")


@pytest.mark.parametrize("command, bad_data", [("pretrain", "not a valid gzip file"),
                                                ("finetune", "unknown data format '.gz'")])
def test_a_run_refused_before_writing_leaves_no_empty_output_dir(corpus, tmp_path, capsys, command, bad_data):
    """Refused after its output directory was created (a data file it cannot read, a tokenizer that
    does not exist): the directory it created, parents included, is removed (it was left empty);
    one that existed before is kept as it was, empty or holding another run."""
    def refused(run, *extra):
        if command == "pretrain":
            argv = _pretrain(corpus, run, f"--data.train_files={corpus / 'plain.txt.gz'}", *extra)
        else:
            argv = ["finetune", "--model.family=electra", "--model.preset=electra-tiny", "--electra.head=classification",
                    f"--data.train_files={corpus / 'plain.txt.gz'}", f"--data.tokenizer={corpus / 'tok'}",
                    f"--train.output_dir={run}", "--train.device=cpu", "--train.progress=false", *extra]
        assert main(argv) == 1
        return _error_line(capsys, command)

    def files(run):  # but this process's lock, given back at its exit
        return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.name != ".lock")

    assert bad_data in refused(tmp_path / "new" / "runs" / "run")
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nthe cat sat\t0\na red ball\t1\n")
    good = corpus / "corpus.txt" if command == "pretrain" else tmp_path / "train.tsv"
    assert "does not exist" in refused(tmp_path / "new" / "runs" / "run", f"--data.train_files={good}",
                                       f"--data.tokenizer={tmp_path / 'no-tok'}")
    assert not (tmp_path / "new").exists()
    (tmp_path / "empty").mkdir()
    refused(tmp_path / "empty")
    assert (tmp_path / "empty").is_dir() and files(tmp_path / "empty") == []
    held = tmp_path / "held"
    (held / "checkpoints" / "step-00000002").mkdir(parents=True)
    (held / "config.yaml").write_text("a: 1\n")
    refused(held, "--checkpoint.resume=auto")
    assert files(held) == ["checkpoints", "checkpoints/step-00000002", "config.yaml"]


def test_output_dir_that_is_a_file_is_one_line(corpus, tmp_path, capsys):
    (tmp_path / "run").write_text("a file")
    assert main(_pretrain(corpus, tmp_path / "run")) == 1
    assert "is a file, expected a run directory" in _error_line(capsys, "pretrain")


# -- broken checkpoints through the CLI -----------------------------------------------------------
@pytest.mark.parametrize("damage, message", [
    ("qkv", "the tensors fused into 'encoder.blocks.0.self_attn.qkv.weight' must have one shape"),
    ("nan", "refusing weights that are not finite: 'encoder.block.0.layer.0.SelfAttention.k.weight'"),
])
def test_generate_on_a_broken_checkpoint_is_one_line(t5_dir, tmp_path, capsys, damage, message):
    broken = tmp_path / "broken"
    shutil.copytree(t5_dir, broken)
    sd = load_file(broken / "model.safetensors")
    key = "encoder.block.0.layer.0.SelfAttention.k.weight"
    sd[key] = sd[key][:, :-1].contiguous() if damage == "qkv" else sd[key].clone().fill_(float("nan"))
    save_file(sd, broken / "model.safetensors")
    assert main(["generate", str(broken), "hello"]) == 1
    assert message in _error_line(capsys, "generate")
