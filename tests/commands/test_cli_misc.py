"""`t5electra evaluate / generate / convert / demo` end to end on tiny models."""

from __future__ import annotations

import io
import json
import random
import warnings

import pytest
import torch

from t5electra.cli import main
from t5electra import modeling
from t5electra.modeling import TransformersDiffersWarning
from t5electra.models.electra import ElectraConfig, ElectraForSequenceClassification
from t5electra.models.electra_rtd import ElectraPretrainer
from t5electra.models.t5 import T5Config, T5ForConditionalGeneration
from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer
from t5electra.train.checkpointing import CheckpointManager

WORDS = "the film was a story with some good bad actors and great awful music".split()


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    """A sentiment task in the sst2 layout (sentence, label)."""
    root = tmp_path_factory.mktemp("task")
    rng = random.Random(0)
    for split, n in (("train", 40), ("validation", 12), ("test", 12)):
        rows = ["sentence\tlabel"] + [f"{' '.join(rng.choice(WORDS) for _ in range(6))}\t{i % 2}" for i in range(n)]
        (root / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory, spiece_model_path):
    d = tmp_path_factory.mktemp("t5")
    tok = T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes())
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config.from_preset("t5-tiny", vocab_size=1152))
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def electra_tok(tmp_path_factory):
    d = tmp_path_factory.mktemp("etok")
    return ElectraTokenizer.train(iter([" ".join(WORDS)] * 4), vocab_size=120, min_frequency=1, output_dir=d)


def _json_out(capsys):
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


# -- evaluate --------------------------------------------------------------------------------
def test_evaluate_t5_counts_invalid_answers_wrong(t5_dir, task_dir, tmp_path, capsys):
    preds = tmp_path / "preds.jsonl"
    assert main(["evaluate", str(t5_dir), "--task", "sentiment", "--data-dir", str(task_dir), "--split", "test",
                 "--max-new-tokens", "4", "--predictions", str(preds)]) == 0
    result = _json_out(capsys)
    assert result["task"] == "sentiment" and result["split"] == "test" and result["num_examples"] == 12
    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    assert len(rows) == 12 and rows[0]["input"].startswith("sentiment sentence: ")
    # an untrained model writes no valid label: every answer that is not the target text is wrong
    right = sum(r["prediction"] == r["target"] for r in rows)
    assert result["metrics"] == {"accuracy": pytest.approx(100.0 * right / 12)}


def test_evaluate_electra_head_matches_its_argmax(electra_tok, task_dir, tmp_path, capsys):
    torch.manual_seed(0)
    cfg = ElectraConfig.from_preset("electra-tiny", vocab_size=len(electra_tok), num_labels=2)
    model = ElectraForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path / "m")
    electra_tok.save_pretrained(tmp_path / "m")
    assert main(["evaluate", str(tmp_path / "m"), "--task", "sentiment", "--data-dir", str(task_dir)]) == 0
    result = _json_out(capsys)
    lines = (task_dir / "test.tsv").read_text().splitlines()[1:]
    texts, labels = [ln.split("\t")[0] for ln in lines], [int(ln.split("\t")[1]) for ln in lines]
    enc = electra_tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        pred = model(enc["input_ids"], enc["attention_mask"]).logits.argmax(-1).tolist()
    want = 100.0 * sum(p == y for p, y in zip(pred, labels)) / len(labels)
    assert result["num_examples"] == 12 and result["metrics"]["accuracy"] == pytest.approx(want)


def test_evaluate_own_files_without_a_task(electra_tok, task_dir, tmp_path, capsys):
    """--data-dir with your files and no --task (was: --task required): the task comes from the
    columns (a text and a label: classify), scored as the registered task on the same rows is."""
    torch.manual_seed(0)
    cfg = ElectraConfig.from_preset("electra-tiny", vocab_size=len(electra_tok), num_labels=2)
    ElectraForSequenceClassification(cfg).save_pretrained(tmp_path / "m")
    electra_tok.save_pretrained(tmp_path / "m")
    own = tmp_path / "own"
    own.mkdir()
    for split in ("train", "validation", "test"):
        (own / f"{split}.csv").write_text((task_dir / f"{split}.tsv").read_text().replace("\t", ","))
    assert main(["evaluate", str(tmp_path / "m"), "--task", "sentiment", "--data-dir", str(task_dir)]) == 0
    want = _json_out(capsys)["metrics"]["accuracy"]
    assert main(["evaluate", str(tmp_path / "m"), "--data-dir", str(own)]) == 0
    got = _json_out(capsys)
    assert got["task"] == "classify" and got["num_examples"] == 12 and got["metrics"]["accuracy"] == want
    assert main(["evaluate", str(tmp_path / "m")]) == 1  # a bare model directory: nothing says what to score
    assert "no task to score on: give --task" in capsys.readouterr().err


def test_evaluate_a_run_from_elsewhere_on_its_own_files(electra_tok, task_dir, tmp_path, capsys, monkeypatch):
    """`evaluate RUN` resolves the run's relative data paths from the directory it was trained in (it
    read them from the current one: another test.csv there was scored silently), works for a run made
    with data.task=classify + files (was: "task 'classify' reads your files"), reads your files with
    the model's classes (a test file of one class was refused) and takes --text-columns/--label-column."""
    from t5electra.train.config import load_config

    work = tmp_path / "work"
    work.mkdir()
    for split in ("train", "test"):
        (work / f"{split}.csv").write_text("review,label\n" + "".join(
            f"{ln.split(chr(9))[0]},{'positive' if ln.endswith('1') else 'negative'}\n"
            for ln in (task_dir / f"{split}.tsv").read_text().splitlines()[1:]))
    torch.manual_seed(0)
    cfg = ElectraConfig.from_preset("electra-tiny", vocab_size=len(electra_tok), num_labels=2,
                                    id2label={0: "negative", 1: "positive"})
    run = tmp_path / "run"
    ElectraForSequenceClassification(cfg).save_pretrained(run / "model")
    electra_tok.save_pretrained(run / "model")
    monkeypatch.chdir(work)
    load_config(None, ["--data.task=classify", "--data.train_files=train.csv", "--data.test_files=test.csv",
                       "--data.text_columns=[review]"]).save_yaml(run / "config.yaml")
    (run / "metrics.jsonl").write_text("")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "test.csv").write_text("review,label\nfine,positive\n")  # a decoy of the same name
    monkeypatch.chdir(elsewhere)
    assert main(["evaluate", str(run)]) == 0
    got = _json_out(capsys)
    assert got["task"] == "classify" and got["num_examples"] == 12
    # one class in the file: read with the model's two classes
    only = tmp_path / "only"
    only.mkdir()
    (only / "test.csv").write_text("words,y\nsome good film,positive\nawful,positive\n")
    assert main(["evaluate", str(run / "model"), "--data-dir", str(only), "--text-columns", "words",
                 "--label-column", "y"]) == 0
    assert _json_out(capsys)["num_examples"] == 2
    assert main(["evaluate", str(run), "--predictions", str(tmp_path / "p.jsonl")]) == 1  # was silently ignored
    assert "--predictions writes T5's generated texts" in capsys.readouterr().err


def test_evaluate_refuses_a_classifier_of_another_label_set(electra_tok, task_dir, tmp_path, capsys):
    """A 5-class model on the 2-class sentiment task: a traceback (or metrics that mean nothing) before."""
    cfg = ElectraConfig.from_preset("electra-tiny", vocab_size=len(electra_tok), num_labels=5,
                                    id2label={i: n for i, n in enumerate("abcde")})
    ElectraForSequenceClassification(cfg).save_pretrained(tmp_path / "m")
    electra_tok.save_pretrained(tmp_path / "m")
    assert main(["evaluate", str(tmp_path / "m"), "--task", "sentiment", "--data-dir", str(task_dir)]) == 1
    assert "predicts 5 classes (a, b, c, d, e), task 'sentiment' has 2" in capsys.readouterr().err


def test_an_electra_pretraining_output_is_named_as_such(tmp_path, capsys):
    """evaluate / generate on generator/ + discriminator/: say what it is and what to do (it said
    "no model/ or checkpoints/" while both were there)."""
    for part in ("generator", "discriminator"):
        (tmp_path / "run" / "model" / part).mkdir(parents=True)
        (tmp_path / "run" / "model" / part / "config.json").write_text("{}")
    assert main(["evaluate", str(tmp_path / "run"), "--task", "sentiment"]) == 1
    assert "is an ELECTRA pretraining output" in capsys.readouterr().err
    assert main(["generate", str(tmp_path / "run" / "model"), "a text"]) == 1
    assert "Fine-tune it first" in capsys.readouterr().err


def test_evaluate_errors_are_one_line(t5_dir, task_dir, tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing"), "--task", "sentiment"]) == 1
    assert "is not a directory" in capsys.readouterr().err
    assert main(["evaluate", str(t5_dir), "--task", "sentimnt", "--data-dir", str(task_dir)]) == 1
    assert "did you mean 'sentiment'" in capsys.readouterr().err


# -- generate --------------------------------------------------------------------------------
def test_out_writes_through_links_and_devices(t5_dir, tmp_path, capsys):
    """`--out /dev/stdout` replaced the system's /dev/stdout link with a file (as root); a symlink was
    replaced by a file. They are written through now; `--out -` is standard output."""
    target = tmp_path / "real.jsonl"
    target.write_text("")
    (tmp_path / "link.jsonl").symlink_to(target)
    assert main(["generate", str(t5_dir), "a text", "--max-new-tokens", "2", "--out", str(tmp_path / "link.jsonl")]) == 0
    assert (tmp_path / "link.jsonl").is_symlink() and json.loads(target.read_text().splitlines()[0])["input"] == "a text"
    capsys.readouterr()
    assert main(["generate", str(t5_dir), "a text", "--max-new-tokens", "2", "--out", "-"]) == 0
    assert '"input": "a text"' in capsys.readouterr().out and not (tmp_path / "-").exists()
    (tmp_path / "in.txt").write_bytes(b"\xef\xbb\xbfa text\n")  # a BOM stayed in the first input
    assert main(["generate", str(t5_dir), "--file", str(tmp_path / "in.txt"), "--max-new-tokens", "2"]) == 0
    assert '"input": "a text"' in capsys.readouterr().out
    assert main(["generate", str(t5_dir), "x", "--file", str(tmp_path / "in.txt")]) == 1  # the file was ignored
    assert "not both" in capsys.readouterr().err


def test_generate_from_args_file_and_stdin(t5_dir, tmp_path, capsys, monkeypatch):
    texts = ["translate English to German: a house", "summarize: the cat sat on the mat", "a"]
    model = T5ForConditionalGeneration.from_pretrained(t5_dir)
    tok = T5Tokenizer.from_pretrained(t5_dir)
    want = []
    for t in texts:  # one at a time: batching and sorting must not change the outputs
        ids = model.generate(tok(t, return_tensors="pt")["input_ids"], max_new_tokens=6, num_beams=2)
        want.append(tok.decode(ids[0].tolist(), skip_special_tokens=True).strip())

    assert main(["generate", str(t5_dir), *texts, "--max-new-tokens", "6", "--num-beams", "2",
                 "--batch-size", "2"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows == [{"input": t, "output": w} for t, w in zip(texts, want)]

    f = tmp_path / "in.txt"
    f.write_text(texts[0] + "\n\n" + texts[1] + "\n")
    assert main(["generate", str(t5_dir), "--file", str(f), "--max-new-tokens", "6", "--num-beams", "2",
                 "--out", str(tmp_path / "out.jsonl")]) == 0
    assert [json.loads(x)["output"] for x in (tmp_path / "out.jsonl").read_text().splitlines()] == want[:2]

    monkeypatch.setattr("sys.stdin", io.StringIO(texts[2] + "\n"))
    assert main(["generate", str(t5_dir), "--do-sample", "--seed", "1", "--num-return-sequences", "3",
                 "--max-new-tokens", "4"]) == 0
    (row,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert row["input"] == "a" and isinstance(row["output"], list) and len(row["output"]) == 3


def test_list_positionals_may_follow_the_options(t5_dir, tmp_path, capsys, monkeypatch):
    """argparse fills TEXT / FILE / MODEL_DIR with the words before the first option only: the words
    after an option were refused as unrecognized arguments (``generate MODEL --num-beams 2 TEXT``)."""
    assert main(["generate", str(t5_dir), "a", "--max-new-tokens", "3", "b"]) == 0
    after = capsys.readouterr().out
    assert main(["generate", str(t5_dir), "a", "b", "--max-new-tokens", "3"]) == 0
    assert after == capsys.readouterr().out and len(after.splitlines()) == 2

    (tmp_path / "a.txt").write_text("alpha beta\n")
    (tmp_path / "b.txt").write_text("gamma delta\n")
    assert main(["tokenizer", "train", str(tmp_path / "a.txt"), "--kind", "electra", "--vocab-size", "60",
                 "--output", str(tmp_path / "tok"), str(tmp_path / "b.txt")]) == 0
    assert "on 2 file(s)" in capsys.readouterr().out

    seen = {}
    monkeypatch.setattr("t5electra.commands.serve.run", lambda args: seen.setdefault("models", args.models) and 0)
    assert main(["serve", "x=/a", "--port", "8001", "y=/b"]) == 0
    assert seen["models"] == ["x=/a", "y=/b"]


def test_generate_reads_lines_as_written_and_refuses_other_encodings(t5_dir, tmp_path, capsys, monkeypatch):
    """One input per line of the file: U+2028, form feeds and NEL inside a line are text
    (str.splitlines made 4 inputs of 2 lines); GBK on standard input is named, as with --file."""
    f = tmp_path / "in.txt"
    f.write_bytes("第一行\u2028同一行\r\n第二行\x0c续\x85尾\n".encode())
    assert main(["generate", str(t5_dir), "--file", str(f), "--max-new-tokens", "2"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines()]  # escaped: any line reader sees one record a line
    assert [r["input"] for r in rows] == ["第一行\u2028同一行", "第二行\x0c续\x85尾"] and "第一行" in out
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO("我爱北京\n".encode("gbk"))))
    assert main(["generate", str(t5_dir)]) == 1
    assert "standard input is not UTF-8 text" in capsys.readouterr().err


def test_generate_refuses_electra_and_empty_input(electra_tok, t5_dir, tmp_path, capsys, monkeypatch):
    ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny")).save_pretrained(tmp_path / "e")
    assert main(["generate", str(tmp_path / "e"), "hello"]) == 1
    assert "ELECTRA does not generate text" in capsys.readouterr().err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n"))
    assert main(["generate", str(t5_dir)]) == 1
    assert "no inputs" in capsys.readouterr().err


# -- convert ---------------------------------------------------------------------------------
def test_convert_training_checkpoint_to_clean_hf_dir(t5_dir, tmp_path, capsys):
    model = T5ForConditionalGeneration.from_pretrained(t5_dir)
    tok = T5Tokenizer.from_pretrained(t5_dir)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = CheckpointManager(tmp_path / "run").save(7, model, opt, save_extra=tok.save_pretrained)
    assert (ckpt / "training_state.pt").is_file()
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "out")]) == 0  # a run dir: its latest checkpoint
    assert "verified" in capsys.readouterr().out
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", *[p.name for p in t5_dir.iterdir() if p.name not in
                                               ("config.json", "model.safetensors")]])
    again = T5ForConditionalGeneration.from_pretrained(out)
    ids = torch.tensor([[5, 6, 7, 1]])
    assert torch.equal(again(input_ids=ids, decoder_input_ids=ids).logits, model(input_ids=ids, decoder_input_ids=ids).logits)
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "out")]) == 1  # DST not empty
    assert "not empty" in capsys.readouterr().err


def test_a_convert_that_fails_or_is_killed_leaves_no_dst(t5_dir, tmp_path, capsys, monkeypatch):
    """DST is written under a temporary name and renamed once verified: a failed verification wrote a
    wrong DST, and a conversion killed half-way left one without its tokenizer that reruns refused."""
    from t5electra.commands import convert
    from t5electra.errors import WeightsMismatchError

    def wrong(*args, **kwargs):
        raise WeightsMismatchError("the converted model's outputs differ")

    monkeypatch.setattr(convert, "verify", wrong)
    assert main(["convert", str(t5_dir), str(tmp_path / "out")]) == 1
    assert "outputs differ" in capsys.readouterr().err

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # (SIGKILL leaves the temporary directory: the next convert removes it)

    monkeypatch.setattr(convert, "copy_tokenizer", killed)
    assert main(["convert", str(t5_dir), str(tmp_path / "out")]) == 130  # Ctrl-C after the weights, before the tokenizer
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no DST, no temporary beside it
    monkeypatch.undo()
    assert main(["convert", str(t5_dir), str(tmp_path / "out")]) == 0
    assert f"-> {tmp_path / 'out'} + T5Tokenizer; verified" in capsys.readouterr().out
    assert (tmp_path / "out" / "spiece.model").is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_convert_reads_the_official_t5_checkpoints_old_architecture_name(t5_dir, tmp_path, capsys):
    """t5-small's config.json says "T5WithLMHeadModel"; convert used to refuse it."""
    import shutil

    shutil.copytree(t5_dir, tmp_path / "src")
    cfg = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**cfg, "architectures": ["T5WithLMHeadModel"]}))
    assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    assert "verified" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["T5ForConditionalGeneration"]


def test_convert_keeps_a_half_precision_checkpoint_in_its_dtype(t5_dir, tmp_path, capsys):
    model = T5ForConditionalGeneration.from_pretrained(t5_dir, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "bf16")
    assert main(["convert", str(tmp_path / "bf16"), str(tmp_path / "out")]) == 0
    assert "verified" in capsys.readouterr().out
    assert json.loads((tmp_path / "out" / "config.json").read_text())["dtype"] == "bfloat16"
    size = (tmp_path / "out" / "model.safetensors").stat().st_size
    assert size == (tmp_path / "bf16" / "model.safetensors").stat().st_size  # not fp32's twice


@pytest.mark.parametrize("sharded", [False, True])
def test_convert_pytorch_bin_to_safetensors(electra_tok, tmp_path, capsys, sharded):
    torch.manual_seed(0)
    model = ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny", vocab_size=len(electra_tok)))
    src = tmp_path / "src"
    model.save_pretrained(src)  # then rewrite its weights as transformers' pickles
    electra_tok.save_pretrained(src)
    from safetensors.torch import load_file

    sd = load_file(str(src / "model.safetensors"))
    (src / "model.safetensors").unlink()
    if sharded:
        keys = sorted(sd)
        parts = {"pytorch_model-00001-of-00002.bin": keys[: len(keys) // 2],
                 "pytorch_model-00002-of-00002.bin": keys[len(keys) // 2:]}
        for name, ks in parts.items():
            torch.save({k: sd[k] for k in ks}, src / name)
        weight_map = {k: name for name, ks in parts.items() for k in ks}
        (src / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    else:
        torch.save(sd, src / "pytorch_model.bin")
    assert main(["convert", str(src), str(tmp_path / "dst")]) == 0
    assert "ElectraForSequenceClassification" in capsys.readouterr().out
    names = {p.name for p in (tmp_path / "dst").iterdir()}
    assert "model.safetensors" in names and "vocab.txt" in names and not any(n.endswith(".bin") for n in names)


def test_convert_warns_that_transformers_pools_a_mean_pooling_classifier_differently(tmp_path, capsys, monkeypatch):
    """classifier_pooling "mean" (the quickstart's classifiers): transformers' class loads the
    converted directory but reads [CLS]; convert said "verified" (against our class) and nothing more.
    Said once: convert's line naming DST, not save_pretrained's warning (which says it elsewhere) too."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny", classifier_pooling="mean"))
    monkeypatch.setattr(modeling, "_SAID", set())  # as in a new process
    with pytest.warns(TransformersDiffersWarning, match="reads the \\[CLS\\] vector"):
        model.save_pretrained(tmp_path / "src")
    monkeypatch.setattr(modeling, "_SAID", set())  # convert in a new process
    with warnings.catch_warnings(record=True) as caught:  # said once: convert's line, not save_pretrained's too
        warnings.simplefilter("always")
        assert main(["convert", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    assert not [w for w in caught if issubclass(w.category, TransformersDiffersWarning)]
    captured = capsys.readouterr()
    assert "verified" in captured.out
    assert captured.err.count("warning") == 1 and captured.err.count("predicts differently") == 1
    assert f"warning: {tmp_path / 'out'}: " in captured.err and "reads the [CLS] vector" in captured.err
    ids = torch.tensor([[2, 5, 9, 7, 3, 8]])
    with torch.no_grad():  # the warning's claim
        theirs = transformers.ElectraForSequenceClassification.from_pretrained(tmp_path / "out").eval()(input_ids=ids)
        assert not torch.allclose(theirs.logits, model.eval()(input_ids=ids).logits)
    ElectraForSequenceClassification(ElectraConfig.from_preset("electra-tiny")).save_pretrained(tmp_path / "first")
    assert main(["convert", str(tmp_path / "first"), str(tmp_path / "out2")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_convert_electra_pretrainer_to_generator_and_discriminator(electra_tok, tmp_path, capsys):
    from t5electra.pipelines import ElectraPipeline

    disc = ElectraConfig.from_preset("electra-tiny", vocab_size=len(electra_tok))
    gen = ElectraConfig.from_preset("electra-tiny-generator", vocab_size=len(electra_tok))
    pre = ElectraPretrainer(disc, gen, mask_token_id=electra_tok.mask_token_id)
    pre.save_pretrained(tmp_path / "run" / "model")
    electra_tok.save_pretrained(tmp_path / "run" / "model")
    assert main(["convert", str(tmp_path / "run"), str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "ElectraForMaskedLM" in out and "ElectraForPreTraining" in out
    pipe = ElectraPipeline.from_pretrained(tmp_path / "hf")
    assert "[MASK]" not in pipe.fill_mask("the film [MASK] good")


def test_convert_refuses_a_checkpoint_whose_head_has_no_place_in_our_class(tmp_path, capsys):
    """A BERT sequence classifier (its head reads the pooled output): converting it to
    ElectraForSequenceClassification used to write a random head and report "verified"."""
    transformers = pytest.importorskip("transformers")
    cfg = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, num_labels=3)
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path / "bert")
    assert main(["convert", str(tmp_path / "bert"), str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "would start from random values" in err and "classifier.out_proj.weight" in err and "classifier.weight" in err
    assert not (tmp_path / "out").exists()


def test_cli_reports_unusable_paths_in_one_line(tmp_path, capsys):
    """OSErrors (a file where a directory is wanted) are one error line, not a traceback."""
    (tmp_path / "file").write_text("x")
    assert main(["demo", "--out", str(tmp_path / "file"), "--steps", "1"]) == 1
    assert "t5electra demo: error: Not a directory" in capsys.readouterr().err


# -- demo ------------------------------------------------------------------------------------
def test_demo_runs_end_to_end(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "30"]) == 0
    out = capsys.readouterr().out
    for step in ("1. tokenizers", "2. T5", "3. ELECTRA", "generate(", "fills the mask", "P(replaced)"):
        assert step in out
    assert T5ForConditionalGeneration.from_pretrained(tmp_path / "t5").config.num_layers == 2
    assert (tmp_path / "electra" / "generator" / "config.json").is_file()
    assert (tmp_path / "electra" / "discriminator" / "config.json").is_file()


def test_every_help_description_is_plain_text():
    """Every command's and action's --help description is plain prose: `tokenizer train --help` and
    `data fetch --help` showed their module docstring's first line, reST markup and cut mid-sentence."""
    import argparse

    from t5electra.cli import build_parser

    def parsers(p):
        yield p
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    found = list(parsers(build_parser()))
    assert len(found) > 15
    for p in found:
        text = p.description or ""
        assert "``" not in text, (p.prog, text)


def test_a_commands_warnings_read_as_one_line_under_its_name(tmp_path, capsys):
    """A package warning during a command is one line under the command's name, as its errors: it
    was Python's `/path/sources.py:218: UnicodeWarning: ...` plus the source line that warned."""
    import json
    import warnings as w

    rows = [json.dumps({"text": f"line {i} with some words to learn from"}) for i in range(40)]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes("\n".join(rows).encode() + b'\n{"text": "bad \xff bytes"}\n')
    before = w.formatwarning
    with w.catch_warnings():
        w.simplefilter("always")
        w.showwarning = lambda *a, **k: print(w.formatwarning(*a[:4]), end="", file=__import__("sys").stderr)
        assert main(["tokenizer", "train", "--kind", "electra", "--vocab-size", "120",
                     "--output", str(tmp_path / "tok"), str(bad)]) == 0
    err = capsys.readouterr().err
    assert "t5electra tokenizer: warning: " in err and "U+FFFD" in err and "[UnicodeWarning]" in err, err
    assert "warnings.warn" not in err and "return (doc" not in err and ".py:" not in err, err
    assert w.formatwarning is before  # restored when the command ends
