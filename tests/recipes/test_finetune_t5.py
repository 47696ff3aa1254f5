"""The T5 fine-tuning recipe end to end on a tiny model and a toy sentiment task: it learns to
answer in label words, keeps the best checkpoint by accuracy, scores the test split, and resuming
from a checkpoint reproduces the uninterrupted losses exactly."""

from __future__ import annotations

import json
import random
import shutil

import pytest
import torch
from safetensors.torch import load_file

from t5electra import PeftModel
from t5electra.errors import ConfigError
from t5electra.models.t5 import T5ForConditionalGeneration
from t5electra.eval.text_to_text import predict_texts, task_list
from t5electra.recipes.evaluate import evaluate_checkpoint
from t5electra.recipes.finetune_t5 import Seq2SeqBatcher, main, train
from t5electra.tokenizers import T5Tokenizer
from t5electra.train.config import load_config
from t5electra.train.logging import read_metrics
from t5electra.train.seq2seq import build_model
from train_device import DEVICE_ARGS

POS = "good great fun lovely superb moving".split()
NEG = "bad awful boring dull weak tedious".split()
FILL = "the film was a story with some actors and music".split()


def _rows(n: int, rng: random.Random) -> str:
    """sst2 layout: a sentiment word among filler words; label 1 = positive."""
    lines = ["sentence\tlabel"]
    for i in range(n):
        label = i % 2
        words = [rng.choice(FILL) for _ in range(4)] + [rng.choice(POS if label else NEG)] + \
                [rng.choice(FILL) for _ in range(2)]
        lines.append(f"{' '.join(words)}\t{label}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory, spiece_model_path):
    root = tmp_path_factory.mktemp("t5ft")
    rng = random.Random(0)
    for split, n in (("train", 200), ("validation", 32), ("test", 32)):
        (root / f"{split}.tsv").write_text(_rows(n, rng))
    T5Tokenizer.from_sentencepiece(spiece_model_path.read_bytes()).save_pretrained(root / "tokenizer")
    return root


def _args(root, run, steps=40, *extra):
    return [f"--train.output_dir={run}", "--data.task=sentiment", f"--data.task_dir={root}",
            f"--data.tokenizer={root / 'tokenizer'}", "--model.preset=t5-tiny", "--train.batch_size=16",
            f"--train.max_steps={steps}", "--train.log_every=1", "--eval.every_steps=20", "--checkpoint.every_steps=20",
            "--optim.name=adafactor", "--optim.lr=1e-2", "--schedule.name=constant", "--eval.metric=accuracy",
            "--eval.greater_is_better=true", *DEVICE_ARGS, "--train.progress=false",
            "--checkpoint.resume=auto", *extra]


def test_batches_are_prefixed_text_with_masked_label_padding(task_dir):
    tok = T5Tokenizer.from_pretrained(task_dir / "tokenizer")
    (task,) = task_list("sentiment", str(task_dir))
    examples = list(task.examples("train"))[:4]
    assert examples[0]["inputs"].startswith("sentiment sentence: ")  # the task prefix (T5's sst2 format)
    assert {ex["targets"] for ex in examples} == {"negative", "positive"}
    batch = Seq2SeqBatcher(tok, max_length=6, target_length=3)(examples)
    assert batch["input_ids"].shape == (4, 6) and batch["input_ids"][:, -1].tolist() == [tok.eos_token_id] * 4
    labels = batch["labels"]
    for row, ex in zip(labels.tolist(), examples):
        ids = tok(ex["targets"])["input_ids"]
        want = ids[:2] + [tok.eos_token_id] if len(ids) > 3 else ids  # truncation keeps EOS
        assert [t for t in row if t != -100] == want
    assert (labels == -100).any() or labels.shape[1] == 3  # padding is ignored by the loss, never the pad id


def test_finetune_learns_keeps_best_and_resumes_exactly(task_dir, tmp_path):
    run = tmp_path / "run"
    train(load_config(None, _args(task_dir, run)))
    records = read_metrics(run)
    losses = {r["step"]: r["loss"] for r in records if r["split"] == "train"}
    evals = [r for r in records if r["split"] == "eval"]
    assert sorted(losses) == list(range(1, 41))
    assert losses[40] < losses[1] / 3
    assert [r["step"] for r in evals] == [20, 40] and evals[1]["loss"] < evals[0]["loss"]
    assert evals[1]["accuracy"] > 60.0  # chance is 50; generated text that is no label counts wrong
    best = json.loads((run / "checkpoints" / "best").read_text())
    assert best["metric"] == "accuracy" and best["value"] == max(r["accuracy"] for r in evals)
    results = json.loads((run / "results.json").read_text())
    assert results["best_checkpoint"]["step"] == best["step"] and results["validation"] == {"accuracy": best["value"]}
    assert results["num_examples"] == {"validation": 32, "test": 32} and results["test"]["accuracy"] > 60.0
    assert results["majority_baseline"]["test"] == {"accuracy": 50.0}
    # RUN/model is the best checkpoint as a clean model directory that answers in label words
    model = T5ForConditionalGeneration.from_pretrained(run / "model")
    tok = T5Tokenizer.from_pretrained(run / "model")
    assert not (run / "model" / "training_state.pt").exists()
    answers = predict_texts(model, tok, ["sentiment sentence: the film was superb", "sentiment sentence: dull"],
                            max_new_tokens=8)
    assert set(answers) <= {"positive", "negative"}

    # resume from step 20: the same losses for steps 21..40, to the last bit
    shutil.rmtree(run / "checkpoints" / "step-00000040")
    (run / "checkpoints" / "latest").write_text("step-00000020\n")
    train(load_config(None, _args(task_dir, run)))
    again = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    assert [again[s] for s in range(21, 41)] == [losses[s] for s in range(21, 41)]


def test_bad_setups_fail_before_training(task_dir, tmp_path, capsys):
    with pytest.raises(ConfigError, match="no task: name one .* or give your files"):
        train(load_config(None, _args(task_dir, tmp_path / "a", 2, "--data.task=none", "--data.task_dir=none")))
    assert main(_args(task_dir, tmp_path / "b", 2, "--data.task=sentimnt", "--data.task_dir=none")) == 1
    assert "did you mean 'sentiment'" in capsys.readouterr().err
    assert main(_args(task_dir, tmp_path / "c", 2, "--model.family=electra")) == 1
    assert "this recipe fine-tunes T5" in capsys.readouterr().err
    # a resumed run under a different config is refused, naming the field
    train(load_config(None, _args(task_dir, tmp_path / "d", 2)))
    assert main(_args(task_dir, tmp_path / "d", 4, "--optim.weight_decay=0.1")) == 1
    assert "optim.weight_decay" in capsys.readouterr().err


def _own_csv(task_dir, out):
    """The toy reviews as your own CSV files: a 'review' column, labels by name."""
    out.mkdir()
    for split, name in (("train", "train"), ("validation", "dev"), ("test", "test")):
        rows = [line.split("\t") for line in (task_dir / f"{split}.tsv").read_text().splitlines()[1:]]
        (out / f"{name}.csv").write_text("review,label\n" + "".join(
            f"{text},{'positive' if label == '1' else 'negative'}\n" for text, label in rows))
    return out


def test_finetune_on_own_files_without_a_task(task_dir, tmp_path, capsys):
    """T5 fine-tunes from your files as ELECTRA does (was: "data.task is not set"): a text and a label
    column make a classification task whose targets are the class names, scored on the test file."""
    own = _own_csv(task_dir, tmp_path / "own")
    run = tmp_path / "own-run"
    args = [a for a in _args(task_dir, run, 80) if not a.startswith(("--data.task", "--data.task_dir"))]
    train(load_config(None, [*args, f"--data.train_files={own / 'train.csv'}", "--data.text_columns=[review]",
                             f"--data.validation_files={own / 'dev.csv'}", f"--data.test_files={own / 'test.csv'}"]))
    results = json.loads((run / "results.json").read_text())
    assert results["num_examples"] == {"validation": 32, "test": 32}
    assert set(results["test"]) == {"accuracy", "macro_f1"} and results["test"]["accuracy"] > 60.0
    assert results["majority_baseline"]["test"]["accuracy"] == 50.0
    # the one-second baseline next to it: TF-IDF + logistic regression on the same splits (the toy
    # reviews are separable by their one sentiment word)
    tfidf = results["tfidf_baseline"]
    assert tfidf["features"] == "word unigrams" and tfidf["train_examples"] == 200
    assert tfidf["test"] == {"accuracy": 100.0, "examples": 32}
    model, tok = T5ForConditionalGeneration.from_pretrained(run / "model"), T5Tokenizer.from_pretrained(run / "model")
    assert set(predict_texts(model, tok, ["classify review: the film was superb", "classify review: dull"],
                             max_new_tokens=8)) <= {"positive", "negative"}
    # `t5electra evaluate RUN` with no task scores the run's own data (its config.yaml: files, columns)
    scored = evaluate_checkpoint(run, split="test")
    assert scored["task"] == "classify" and scored["metrics"] == results["test"]
    # the same files in a folder, by name (T5 and ELECTRA alike): data.task=classify + data.task_dir
    (task,) = task_list("classify", str(own), text_columns=["review"])
    assert task.head.labels == ("negative", "positive") and task.num_examples("test") == 32
    (found,) = task_list(None, str(own), text_columns=["review"])  # no task named: found from the columns
    assert found.name == "classify" and found.head.labels == task.head.labels
    # a dev class the training file lacks is refused before any training, naming file and row
    (own / "dev.csv").write_text("review,label\nfine,positive\nso so,mixed\n")
    bad = [*args, f"--data.train_files={own / 'train.csv'}", f"--data.validation_files={own / 'dev.csv'}",
           "--data.text_columns=[review]"]
    assert main([*bad[:1], f"--train.output_dir={tmp_path / 'bad'}", *bad[1:]]) == 1
    assert "dev.csv:3: label 'mixed' (column 'label') is not one of the training split's classes" in \
        capsys.readouterr().err
    # the same in the test file: found before training too (it was read only after the last step)
    (own / "bad-test.csv").write_text("review,label\nfine,positive\nso so,neutral\n")
    late = [*args, f"--data.train_files={own / 'train.csv'}", f"--data.test_files={own / 'bad-test.csv'}",
            "--data.text_columns=[review]", f"--train.output_dir={tmp_path / 'late'}"]
    assert main(late) == 1 and "label 'neutral'" in capsys.readouterr().err
    assert not (tmp_path / "late" / "checkpoints").exists()


def test_resume_refuses_data_files_changed_since_the_checkpoint(task_dir, tmp_path, capsys):
    """A resumed run continues at its data cursor: after an edit of a data file that cursor points into
    other data. Checkpoints record the files' fingerprints; a change is refused, naming the file,
    unless checkpoint.allow_data_change (then a warning). Was: resumed silently on the new data."""
    own = _own_csv(task_dir, tmp_path / "own")
    run = tmp_path / "run"

    def args(steps, *extra):
        base = [a for a in _args(task_dir, run, steps) if not a.startswith(("--data.task", "--data.task_dir"))]
        return [*base, "--eval.every_steps=2", "--checkpoint.every_steps=2", "--data.text_columns=[review]",
                f"--data.train_files={own / 'train.csv'}", f"--data.validation_files={own / 'dev.csv'}", *extra]

    def back_to_step_2():  # as if the run had been killed after its first checkpoint
        for step in (4, 6):
            shutil.rmtree(run / "checkpoints" / f"step-0000000{step}", ignore_errors=True)
        (run / "checkpoints" / "latest").write_text("step-00000002\n")

    assert main(args(6)) == 0
    back_to_step_2()
    assert main(args(6)) == 0  # unchanged files: resumes
    back_to_step_2()
    with open(own / "train.csv", "a") as f:
        f.write("one more review,positive\n")
    assert main(args(6)) == 1
    err = capsys.readouterr().err
    assert "cannot resume from" in err and "the data changed since step-00000002" in err
    assert f"{(own / 'train.csv').resolve()} (" in err and "--checkpoint.allow_data_change=true" in err
    with pytest.warns(UserWarning, match="resuming anyway"):
        train(load_config(None, args(6, "--checkpoint.allow_data_change=true")))
    assert (run / "checkpoints" / "step-00000006").is_dir()


def test_text2text_on_own_files(tmp_path):
    """Input/target columns make a text2text task: inputs as written, exact match, BLEU and chrF."""
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"inputs": f"reverse: {a} {b}", "targets": f"{b} {a}"})
                                                  + "\n" for a, b in (("x", "y"), ("p", "q"))))
    (tmp_path / "dev.tsv").write_text("source\ttarget\nhello there\t今天天气很好，我们去公园\n")
    (task,) = task_list(None, files={"train": [str(tmp_path / "train.jsonl")]})
    assert task.name == "text2text" and next(task.examples("train"))["inputs"] == "reverse: x y"
    assert task.evaluate(["y x", "p q"], list(task.examples("train")))["sequence_accuracy"] == 50.0
    (zh,) = task_list("text2text", files={"validation": str(tmp_path / "dev.tsv")})
    ex = list(zh.examples("validation"))
    assert ex[0]["inputs"] == "hello there" and ex[0]["targets"] == "今天天气很好，我们去公园"
    assert zh.evaluate(["今天天气很好，我们去公园"], ex) == {"sequence_accuracy": 100.0, "bleu": pytest.approx(100.0),
                                                          "chrf": pytest.approx(100.0)}
    near = zh.evaluate(["今天天气很好，我们去学校"], ex)  # Chinese targets: BLEU over characters, not one "word"
    assert near["sequence_accuracy"] == 0.0 and near["bleu"] > 50.0
    assert zh.head.kind == "generation"
    with pytest.raises(Exception, match="neither a label column 'label'"):
        (tmp_path / "x.csv").write_text("a,b\n1,2\n")
        task_list(None, files={"train": [str(tmp_path / "x.csv")]})


def test_mixture_of_tasks_reports_each_task_and_the_average(task_dir, tmp_path):
    from t5electra.data.tasks import FileSource, classification_task, find_split_files, register_task

    files = find_split_files(task_dir, (".tsv",))
    for name in ("toy_a", "toy_b"):  # the same reviews under two task prefixes
        register_task(name, classification_task(name, FileSource(files), text_keys=("sentence",),
                                                labels=("negative", "positive")), overwrite=True)
    run = tmp_path / "mix"
    train(load_config(None, _args(task_dir, run, 4, "--data.task=toy_a+toy_b", "--data.task_dir=none",
                                  "--eval.metric=average", "--eval.max_batches=1")))
    seen = {r["step"] for r in read_metrics(run) if r["split"] == "train"}
    assert seen == {1, 2, 3, 4}
    results = json.loads((run / "results.json").read_text())
    assert set(results["test"]) == {"toy_a/accuracy", "toy_b/accuracy", "average"}
    assert results["test"]["average"] == pytest.approx((results["test"]["toy_a/accuracy"] +
                                                        results["test"]["toy_b/accuracy"]) / 2)
    assert results["num_examples"]["test"] == 64 and results["majority_baseline"] == {}
    with pytest.raises(ConfigError, match="mixture"):
        train(load_config(None, _args(task_dir, tmp_path / "bad", 1, "--data.task=toy_a+toy_b")))


def test_lora_checkpoints_hold_only_adapters_resume_exactly_and_merge(task_dir, tmp_path):
    """--lora.*: only the q/v adapters train and are checkpointed (with their optimizer state);
    resuming reproduces the losses; RUN/adapter (PEFT's files) on the base equals RUN/model (merged)."""
    run = tmp_path / "lora"
    args = _args(task_dir, run, 20, "--eval.every_steps=10", "--checkpoint.every_steps=10", "--lora.r=4",
                 "--lora.alpha=16", "--lora.target_modules=[q,v]", "--train.log_every=1")
    train(load_config(None, args))
    losses = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    assert losses[20] < losses[1]
    ckpt = run / "checkpoints" / "step-00000010"
    assert sorted(p.name for p in ckpt.glob("*.safetensors")) == ["adapter_model.safetensors"]
    keys = set(load_file(ckpt / "adapter_model.safetensors"))
    assert keys and all(k.endswith((".q.lora_A.weight", ".q.lora_B.weight", ".v.lora_A.weight",
                                    ".v.lora_B.weight")) for k in keys)
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    names = [n for g in state["optimizer"]["param_groups"] for n in g["names"]]
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert len(state["optimizer"]["state"]) == len(names) == len(keys)

    # resume from step 10: the same losses for steps 11..20
    shutil.rmtree(run / "checkpoints" / "step-00000020")
    (run / "checkpoints" / "latest").write_text("step-00000010\n")
    train(load_config(None, args))
    again = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    assert [again[s] for s in range(11, 21)] == [losses[s] for s in range(11, 21)]

    # RUN/model is the merged model; the random base is rebuilt from the same seed and preset
    merged = T5ForConditionalGeneration.from_pretrained(run / "model")
    torch.manual_seed(0)
    cfg = load_config(None, args)
    base = build_model(cfg, T5Tokenizer.from_pretrained(task_dir / "tokenizer")).eval()
    adapted = PeftModel.from_pretrained(base, run / "adapter")
    ids = torch.tensor([[5, 6, 7, 1]])
    kw = dict(input_ids=ids, decoder_input_ids=torch.tensor([[0, 5]]))
    with torch.no_grad():
        torch.testing.assert_close(adapted(**kw).logits, merged(**kw).logits, atol=1e-4, rtol=1e-4)



def test_length_grouped_batches_pad_less_use_each_example_once_and_resume(task_dir):
    """data.group_by_length: each window of k batches is the same examples as without grouping,
    each batch's lengths are close (sorted inside the window), and starting after any number of
    seen examples gives exactly the batches the uninterrupted run trains on next (exact resume)."""
    from t5electra.recipes.finetune_t5 import train_batches
    from t5electra.train.distributed import DistEnv

    tasks = task_list("sentiment", str(task_dir))
    B, k = 4, 3
    cfg = load_config(None, _args(task_dir, task_dir / "unused", 10, f"--train.batch_size={B}",
                                  f"--data.group_by_length={k}"))
    plain_cfg = load_config(None, _args(task_dir, task_dir / "unused", 10, f"--train.batch_size={B}"))
    env = DistEnv()
    grouped = [next(b) for b in [train_batches(cfg, tasks, env, 0)] for _ in range(4 * k)]
    plain = [next(b) for b in [train_batches(plain_cfg, tasks, env, 0)] for _ in range(4 * k)]
    key = lambda ex: (ex["inputs"], ex["targets"])  # noqa: E731
    for w in range(4):  # the same examples per window, regrouped
        got = sorted(key(ex) for batch in grouped[w * k:(w + 1) * k] for ex in batch)
        assert got == sorted(key(ex) for batch in plain[w * k:(w + 1) * k] for ex in batch)
    assert [len(b) for b in grouped] == [B] * len(grouped)
    lengths = [sorted(len(ex["inputs"]) for ex in batch) for batch in grouped]
    spread = sum(ls[-1] - ls[0] for ls in lengths)
    plain_spread = sum(max(len(ex["inputs"]) for ex in b) - min(len(ex["inputs"]) for ex in b) for b in plain)
    assert spread < plain_spread  # less padding than the shuffled stream
    for seen_batches in (1, k, k + 2, 2 * k):  # resume after any step: the same next batches
        again = train_batches(cfg, tasks, env, seen_batches * B)
        assert [next(again) for _ in range(5)] == grouped[seen_batches:seen_batches + 5]


@pytest.mark.parametrize("accum", [1, 2])
def test_length_grouped_batches_are_per_global_batch(task_dir, accum):
    """data.group_by_length=2 on 2 ranks with batch B (and accumulation): at every step the ranks'
    micro-batches together are exactly one process's batch of 2 B A, micro-batch m of rank r its
    positions m 2B + r, m 2B + r + 2, ...; resuming after any step gives the same next batches."""
    from t5electra.recipes.finetune_t5 import train_batches
    from t5electra.train.distributed import DistEnv

    tasks = task_list("sentiment", str(task_dir))
    B, W, steps = 3, 2, 8
    G = B * accum * W

    def batches(batch_size, accum_steps, env, seen=0, n=steps):
        cfg = load_config(None, _args(task_dir, task_dir / "unused", 10, f"--train.batch_size={batch_size}",
                                      f"--train.grad_accum_steps={accum_steps}", "--data.group_by_length=2"))
        it = train_batches(cfg, tasks, env, seen)
        return [[next(it) for _ in range(accum_steps)] for _ in range(n)]  # per step: the micro-batches

    one = batches(G, 1, DistEnv())
    ranks = [batches(B, accum, DistEnv(rank=r, world_size=W)) for r in range(W)]
    for step in range(steps):
        (global_batch,) = one[step]
        for r in range(W):
            for m in range(accum):
                assert ranks[r][step][m] == global_batch[m * B * W + r: (m + 1) * B * W: W]
    for r in range(W):  # resume on either rank after any step: the same next micro-batches
        for done in (1, 2, 3):
            assert batches(B, accum, DistEnv(rank=r, world_size=W), seen=done * G, n=3) == ranks[r][done:done + 3]


def test_glue_layout_unlabelled_test_and_mnli_mismatched(task_dir, tmp_path, capsys):
    """GLUE's folders as distributed: test.tsv without labels is not scored (it 'scored' 100 % for any
    answers, and MRPC's F1 crashed the run's end), evaluate says how to score or predict it; MNLI
    validates on the matched dev set and also reports the mismatched one."""
    glue = tmp_path / "glue"
    rows = (task_dir / "train.tsv").read_text().splitlines()
    (glue / "SST-2").mkdir(parents=True)
    (glue / "SST-2" / "train.tsv").write_text("\n".join(rows[:101]) + "\n")
    (glue / "SST-2" / "dev.tsv").write_text("\n".join(rows[:1] + rows[101:121]) + "\n")
    (glue / "SST-2" / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\t{r.split(chr(9))[0]}\n"
                                                                         for i, r in enumerate(rows[121:131])))
    base = [a for a in _args(task_dir, None, 2) if not a.startswith(("--data.task", "--train.output_dir"))]
    run = tmp_path / "sst2"
    train(load_config(None, [*base, f"--train.output_dir={run}", "--data.task=sst2", f"--data.task_dir={glue}"]))
    results = json.loads((run / "results.json").read_text())
    assert "test" not in results and results["unlabelled_splits"] == ["test"] and "accuracy" in results["validation"]
    with pytest.raises(Exception, match=r"'test' split has no labels.*--split validation.*--predictions"):
        evaluate_checkpoint(run / "model", "sst2", data_dir=str(glue))
    out = evaluate_checkpoint(run / "model", "sst2", data_dir=str(glue), predictions_file=tmp_path / "p.jsonl")
    assert out["metrics"] == {} and len((tmp_path / "p.jsonl").read_text().splitlines()) == 10
    # --task naming the run's own task reads the run's folder too (it needed --data-dir again)
    assert evaluate_checkpoint(run / "model", "sst2", split="validation")["metrics"] == results["validation"]
    # a GLUE mixture from one glue_data folder (was refused: "data_dir applies to one task only"), whose
    # test split is labelled for one task only: that task's metrics, still named "task/metric"
    (glue / "CoLA").mkdir()
    for name, n in (("train", 20), ("dev", 4), ("test", 4)):  # CoLA's headerless layout, labelled
        (glue / "CoLA" / f"{name}.tsv").write_text("".join(f"src\t{i % 2}\t\tthe film {i}\n" for i in range(n)))
    run = tmp_path / "mix"
    train(load_config(None, [*base, f"--train.output_dir={run}", "--data.task=sst2+cola", f"--data.task_dir={glue}",
                             "--eval.metric=average"]))
    results = json.loads((run / "results.json").read_text())
    assert set(results["test"]) == {"cola/mcc"} and "sst2/accuracy" in results["validation"]

    header = "index\tpromptID\tpairID\tgenre\ts1b\ts2b\ts1p\ts2p\tsentence1\tsentence2\tlabel1\tgold_label\n"
    (glue / "MNLI").mkdir()
    for name, n in (("train", 40), ("dev_matched", 6), ("dev_mismatched", 4)):
        (glue / "MNLI" / f"{name}.tsv").write_text(header + "".join(
            f"{i}\t1\t1\tg\tx\tx\tx\tx\tthe film {i}\tit was {'good' if i % 2 else 'bad'}\tx\t"
            f"{'entailment' if i % 2 else 'contradiction'}\n" for i in range(n)))
    run = tmp_path / "mnli"
    train(load_config(None, [*base, f"--train.output_dir={run}", "--data.task=mnli", f"--data.task_dir={glue}"]))
    results = json.loads((run / "results.json").read_text())
    assert results["num_examples"] == {"validation": 6, "validation_mismatched": 4}
    assert "accuracy" in results["validation_mismatched"] and results["best_checkpoint"] is not None


def test_evaluate_scores_a_run_with_its_own_lengths(task_dir, tmp_path, monkeypatch):
    """Long targets (60 words): `evaluate RUN` generated 32 tokens at most and scored another number
    than the run's results.json. The run's answer length is saved in generation_config.json and
    evaluate reads it (and the run's data.max_length)."""
    rng = random.Random(1)
    for split, n in (("train", 16), ("dev", 4), ("test", 4)):
        rows = [" ".join(rng.choice(FILL + POS) for _ in range(60)) for _ in range(n)]
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps({"inputs": f"copy: {r}", "targets": r}) + "\n"
                                                         for r in rows))
    run = tmp_path / "run"
    args = [a for a in _args(task_dir, run, 2) if not a.startswith("--data.task")]
    train(load_config(None, [*args, "--data.task=text2text", f"--data.task_dir={tmp_path}", "--data.max_length=96",
                             "--eval.metric=bleu"]))
    results = json.loads((run / "results.json").read_text())
    saved = T5ForConditionalGeneration.from_pretrained(run / "model").generation_config.max_new_tokens
    assert saved > 60  # the longest target, tokenised
    calls = []  # what evaluate asks of generate (an untrained model stops at once: outputs cannot tell)
    generate, tokenize = T5ForConditionalGeneration.generate, T5Tokenizer.__call__
    monkeypatch.setattr(T5ForConditionalGeneration, "generate",
                        lambda self, *a, **kw: calls.append(kw["max_new_tokens"]) or generate(self, *a, **kw))
    monkeypatch.setattr(T5Tokenizer, "__call__",
                        lambda self, *a, **kw: calls.append(("max_length", kw.get("max_length"))) or tokenize(self, *a, **kw))
    out = evaluate_checkpoint(run / "model")
    assert out["metrics"] == results["test"] and saved in calls and ("max_length", 96) in calls
    assert 32 not in calls and ("max_length", 512) not in calls
    calls.clear()  # a checkpoint of the run (an unfinished run has no RUN/model yet) carries it too
    evaluate_checkpoint(run / "checkpoints" / "step-00000002", max_examples=1)
    assert saved in calls and 32 not in calls


def test_class_names_the_tokenizer_cannot_write_back_are_refused(task_dir, tmp_path):
    """'５星' comes back from the tokenizer as '5' (NFKC, 星 unknown): T5's answers could never equal it, and a
    perfect model scored 0. Refused before training, naming the class and what it becomes."""
    rows = "".join(f"review {i} {'good' if i % 2 else 'bad'},{'５星' if i % 2 else '１星'}\n" for i in range(40))
    for split in ("train", "dev", "test"):
        (tmp_path / f"{split}.csv").write_text("review,stars\n" + rows, encoding="utf-8")
    args = [a for a in _args(task_dir, tmp_path / "run", 2) if not a.startswith("--data.task")]
    with pytest.raises(ConfigError, match="'５星' -> '5'"):  # NFKC, and 星 is not in this vocabulary
        train(load_config(None, [*args, "--data.task=classify", f"--data.task_dir={tmp_path}",
                                 "--data.text_columns=[review]", "--data.label_column=stars"]))
    assert not (tmp_path / "run" / "checkpoints").exists()
