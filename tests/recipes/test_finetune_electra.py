"""The ELECTRA fine-tuning recipe on tiny data: each head learns (classification beats the majority
class, regression correlates, token tags are found, QA windows and answers line up), the best
checkpoint is kept, resume is exact, real MiniLM weights fine-tune, and bad setups fail early."""

from __future__ import annotations

import json
import random
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from t5electra import PeftModel
from t5electra.cli import main as cli_main
from t5electra.data.heads import load_task_data
from t5electra.errors import ConfigError, DataError
from t5electra.models.electra import ElectraConfig, ElectraForPreTraining, ElectraForSequenceClassification
from t5electra.recipes.finetune_electra import (default_config, encode_qa, load_data, main, qa_answers, train)
from t5electra.tokenizers import ElectraTokenizer
from t5electra.train.config import load_config
from t5electra.train.logging import read_metrics
from train_device import DEVICE_ARGS

GOOD = "good great fine lovely superb".split()
BAD = "bad awful poor dull terrible".split()
FILL = "the movie plot was and a with some actors story scenes".split()


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """A tiny 'pretrained' discriminator directory (random weights + WordPiece tokenizer) and data files."""
    root = tmp_path_factory.mktemp("ft")
    rng = random.Random(0)

    def sentence(label: int) -> str:
        words = [rng.choice(FILL) for _ in range(rng.randint(3, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(GOOD if label else BAD))
        return " ".join(words)

    for split, n in (("train", 160), ("dev", 40), ("test", 40)):
        rows = [(sentence(lab), lab) for lab in (rng.randint(0, 1) for _ in range(n))]
        (root / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{'pos' if y else 'neg'}\n"
                                                                         for s, y in rows))
        # regression: the score is the number of good words minus bad words
        (root / f"{split}_reg.csv").write_text("text,score\n" + "".join(
            f"{s},{sum(w in GOOD for w in s.split()) - sum(w in BAD for w in s.split()) + 0.1 * (i % 3)}\n"
            for i, (s, _) in enumerate(rows)))
        # token classification: tag the sentiment words
        with open(root / f"{split}_tok.jsonl", "w") as f:
            for s, _ in rows:
                words = s.split()
                tags = ["POS" if w in GOOD else "NEG" if w in BAD else "O" for w in words]
                f.write(json.dumps({"tokens": words, "labels": tags}) + "\n")
    tok = _tokenizer()
    model_dir = root / "disc"
    cfg = ElectraConfig.from_preset("electra-tiny", vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)  # the same weights whichever test xdist runs first in this process
    ElectraForPreTraining(cfg).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    return root


def _tokenizer() -> ElectraTokenizer:
    """A fixed whole-word vocabulary (+ letters and ##letters for anything else). Not trained:
    tokenizers' WordPiece trainer numbers its ## pieces differently from process to process
    (huggingface/tokenizers#1794), which made this module's scores move between CI runs."""
    letters = "abcdefghijklmnopqrstuvwxyz"
    words = sorted(set(GOOD + BAD + FILL + "what which answer is where".split()) - set(letters))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *letters, *(f"##{c}" for c in letters), *words]
    return ElectraTokenizer({t: i for i, t in enumerate(tokens)})


def _args(root, run, *extra, steps=40):
    return [f"--train.output_dir={run}", f"--model.init_from={root / 'disc'}", "--data.max_length=32",
            "--train.batch_size=16", f"--train.max_steps={steps}", "--train.log_every=1",
            "--eval.every_steps=20", "--checkpoint.every_steps=20", "--optim.lr=1e-2", *DEVICE_ARGS,
            "--train.progress=false", "--train.tensorboard=false", "--checkpoint.resume=auto", *extra]


def _config(args):
    return load_config(None, args, base=default_config())


def _files(root, suffix=".tsv", name=""):
    return [f"--data.train_files={root / f'train{name}{suffix}'}",
            f"--data.validation_files={root / f'dev{name}{suffix}'}",
            f"--data.test_files={root / f'test{name}{suffix}'}"]


def test_classification_beats_majority_keeps_best_and_resumes_exactly(root, tmp_path):
    run = tmp_path / "cls"
    args = _args(root, run, "--electra.head=classification", *_files(root), steps=100)
    train(_config(args))
    results = json.loads((run / "results.json").read_text())
    # 8 weight seeds: 97.5-100 % (a random tiny encoder sits on a plateau for 20-80 steps, then learns)
    assert results["test"]["accuracy"] >= 90 and results["majority_baseline"]["test"]["accuracy"] == 50
    best = results["best_checkpoint"]
    evals = {r["step"]: r for r in read_metrics(run) if r["split"] == "eval"}
    assert best["metric"] == "accuracy" and best["value"] == max(r["accuracy"] for r in evals.values())
    assert results["validation"]["accuracy"] == pytest.approx(evals[best["step"]]["accuracy"])
    model = ElectraForSequenceClassification.from_pretrained(run / "model")
    assert model.config.id2label == {0: "neg", 1: "pos"}  # label names read from the file
    ElectraTokenizer.from_pretrained(run / "model")
    lrs = [r["lr"] for r in read_metrics(run) if r["split"] == "train"]
    assert lrs[0] == 0.0 and max(lrs) == pytest.approx(1e-2) and lrs.index(max(lrs)) == 10  # 10% warmup

    # layer-wise decay: the head at lr, the top layer at 0.8 lr, the embeddings at 0.8^3 lr (2 layers)
    state = torch.load(run / "checkpoints" / "step-00000080" / "training_state.pt", weights_only=True)
    scales = {n: g["lr_scale"] for g in state["optimizer"]["param_groups"] for n in g["names"]}
    assert scales["classifier.out_proj.weight"] == 1.0
    assert scales["electra.layers.1.ffn_in.weight"] == pytest.approx(0.8)
    assert scales["electra.embeddings.word_embeddings.weight"] == pytest.approx(0.8 ** 3)

    # resume at step 80: identical losses for 81..100
    first = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    shutil.rmtree(run / "checkpoints" / "step-00000100")
    (run / "checkpoints" / "latest").write_text("step-00000080\n")
    train(_config(args))
    again = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    assert [again[s] for s in range(81, 101)] == [first[s] for s in range(81, 101)]


def test_lora_trains_adapters_and_head_resumes_exactly_and_merges(root, tmp_path):
    """--lora.*: the encoder is frozen, the query/value/dense adapters and the classification head train
    and are all a checkpoint holds; resume is exact; RUN/adapter on the base equals RUN/model."""
    # The base: an encoder that already tells the classes apart (fully fine-tuned here, its head
    # dropped), as a LoRA user's pretrained model would. On the random tiny encoder, LoRA rank 8
    # left the loss on its plateau in 4 of 8 weight seeds after 100 steps.
    tuned = tmp_path / "tuned"
    train(_config(_args(root, tuned, "--electra.head=classification", *_files(root), "--eval.every_steps=0",
                        "--checkpoint.every_steps=0", steps=100)))
    ElectraForPreTraining.from_pretrained(tuned / "model").save_pretrained(tmp_path / "base")
    ElectraTokenizer.from_pretrained(root / "disc").save_pretrained(tmp_path / "base")
    run = tmp_path / "lora"
    args = _args(root, run, "--electra.head=classification", *_files(root), "--lora.r=8", "--lora.alpha=32",
                 "--lora.target_modules=[query,value,dense]", f"--model.init_from={tmp_path / 'base'}", steps=40)
    train(_config(args))
    evals = {r["step"]: r for r in read_metrics(run) if r["split"] == "eval"}
    assert evals[40]["accuracy"] >= 90  # the new head learns on the adapted encoder
    losses = [r["loss"] for r in read_metrics(run) if r["split"] == "train"]
    assert sum(losses[-5:]) < 0.2 * sum(losses[:5])
    ckpt = run / "checkpoints" / "step-00000020"
    assert sorted(p.name for p in ckpt.glob("*.safetensors")) == ["adapter_model.safetensors"]
    keys = set(load_file(ckpt / "adapter_model.safetensors"))
    head = {f"base_model.model.classifier.{n}.{w}" for n in ("dense", "out_proj") for w in ("weight", "bias")}
    assert head <= keys and all(k.endswith(("query.lora_A.weight", "query.lora_B.weight", "value.lora_A.weight",
                                            "value.lora_B.weight", "dense.lora_A.weight", "dense.lora_B.weight"))
                                for k in keys - head)
    state = torch.load(ckpt / "training_state.pt", weights_only=True)
    names = [n for g in state["optimizer"]["param_groups"] for n in g["names"]]
    assert len(names) == len(keys) and all("lora_" in n or ".classifier." in n for n in names)
    adapters = load_file(ckpt / "adapter_model.safetensors")
    assert all(adapters[k].abs().max() > 0 for k in keys if "lora_B" in k)  # B starts at zero: it trained

    first = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    shutil.rmtree(run / "checkpoints" / "step-00000040")
    (run / "checkpoints" / "latest").write_text("step-00000020\n")
    train(_config(args))
    again = {r["step"]: r["loss"] for r in read_metrics(run) if r["split"] == "train"}
    assert [again[s] for s in range(21, 41)] == [first[s] for s in range(21, 41)]

    merged = ElectraForSequenceClassification.from_pretrained(run / "model")
    base = ElectraForSequenceClassification.from_pretrained(tmp_path / "base", num_labels=2)
    assert torch.equal(merged.electra.embeddings.word_embeddings.weight,  # frozen: the base's own
                       base.electra.embeddings.word_embeddings.weight)
    adapted = PeftModel.from_pretrained(base, run / "adapter")
    ids = torch.tensor([[2, 5, 9, 7, 3]])
    with torch.no_grad():
        torch.testing.assert_close(adapted(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5, rtol=1e-4)
    # the adapter names its base by absolute path: `convert --merge RUN` finds both from anywhere
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str((tmp_path / "base").resolve())
    assert cli_main(["convert", "--merge", str(run), str(tmp_path / "merged")]) == 0
    again = ElectraForSequenceClassification.from_pretrained(tmp_path / "merged")
    assert again.config.id2label == merged.config.id2label  # the run's label names, not LABEL_0, ...
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("lora", [False, True])
def test_a_resumed_run_does_not_call_its_trained_head_newly_initialised(lora, root, tmp_path, caplog):
    """Resuming logged "newly initialised (train before use): classifier.*" from the base's load,
    though the checkpoint then restores the trained head (the whole model, or LoRA's adapters and
    head). A fresh start says it, as it should."""
    run = tmp_path / "run"
    extra = ["--lora.r=2", "--lora.target_modules=[query]"] if lora else []
    args = _args(root, run, "--electra.head=classification", *_files(root), "--eval.every_steps=0",
                 "--checkpoint.every_steps=2", *extra, steps=4)
    with caplog.at_level("WARNING", logger="t5electra"):
        train(_config(args))
    assert "newly initialised (train before use): ['classifier." in caplog.text
    shutil.rmtree(run / "checkpoints" / "step-00000004")
    (run / "checkpoints" / "latest").write_text("step-00000002\n")
    caplog.clear()
    with caplog.at_level("WARNING", logger="t5electra"):
        train(_config(args))
    assert [r["step"] for r in read_metrics(run) if r["split"] == "train"][-2:] == [3, 4]  # it resumed
    assert "newly initialised" not in caplog.text


def test_regression_and_token_classification(root, tmp_path):
    run = tmp_path / "reg"
    train(_config(_args(root, run, "--electra.head=regression", "--data.text_columns=text",
                        "--data.label_column=score", *_files(root, ".csv", "_reg"), steps=60)))
    results = json.loads((run / "results.json").read_text())
    assert results["best_checkpoint"]["metric"] == "pearson" and results["test"]["pearson"] > 40
    assert ElectraForSequenceClassification.from_pretrained(run / "model").config.num_labels == 1

    run = tmp_path / "tok"
    train(_config(_args(root, run, "--electra.head=token_classification", *_files(root, ".jsonl", "_tok"))))
    results = json.loads((run / "results.json").read_text())
    assert results["test"]["accuracy"] > 85 and "macro_f1" in results["test"]
    # a tagger is scored on new files with the model's tags, though they hold only some of them (was
    # refused: the tags were re-read from the files, 2 classes against the model's 3)
    new = tmp_path / "new"
    new.mkdir()
    (new / "test.jsonl").write_text(json.dumps({"tokens": ["a", "superb", "film"], "labels": ["O", "POS", "O"]}) + "\n")
    scored = cli_main(["evaluate", str(run / "model"), "--data-dir", str(new)])
    assert scored == 0
    (new / "test.jsonl").write_text(json.dumps({"tokens": ["a", "film"], "labels": ["O", "MISC"]}) + "\n")
    with pytest.raises(DataError, match="tag 'MISC' is not one of the model's tags"):
        load_task_data("token_classification", files={"test": [str(new / "test.jsonl")]}, labels=["NEG", "O", "POS"])
    # a tag the training file never has: trained on nothing, so said
    (new / "train.jsonl").write_text(json.dumps({"tokens": ["a", "film"], "labels": ["O", "O"]}) + "\n")
    with pytest.warns(UserWarning, match=r"tag\(s\) \['MISC'\] never occur in the training file"):
        load_task_data("token_classification", files={"train": [str(new / "train.jsonl")],
                                                      "test": [str(new / "test.jsonl")]})


def test_qa_windows_postprocessing_and_training(root, tmp_path):
    tok = ElectraTokenizer.from_pretrained(root / "disc")
    context = " ".join(f"{FILL[i % len(FILL)]} {GOOD[i % 5]}" for i in range(30)) + " the answer is superb and fine ."
    start = context.index("superb and fine")
    examples = [{"id": "q1", "question": "what is the answer", "context": context, "answers": ["superb and fine"],
                 "answer_start": start, "answer_text": "superb and fine"}]
    feats = encode_qa(examples, tok, max_length=32, doc_stride=8)
    assert len(feats) > 3  # a long context: several overlapping windows
    holding = [f for f in feats if f["start_positions"] > 0]
    assert holding and all(f["start_positions"] == f["end_positions"] == 0 for f in feats if f not in holding)
    for f in holding:  # the labelled token span maps back to exactly the answer's characters
        a, b = f["offsets"][f["start_positions"]][0], f["offsets"][f["end_positions"]][1]
        assert context[a:b] == "superb and fine"
    # post-processing: the best valid span over all windows, in characters of the context
    preds = []
    for f in feats:
        s, e = np.zeros(len(f["input_ids"])), np.zeros(len(f["input_ids"]))
        if f is holding[0]:
            s[f["start_positions"]], e[f["end_positions"]] = 5.0, 5.0
            e[0] = s[0] = 50.0  # [CLS] is not a context token: never an answer
        preds.append((s, e))
    assert qa_answers(examples, feats, preds, max_answer_length=30) == ["superb and fine"]
    assert qa_answers(examples, feats, preds, max_answer_length=2) != ["superb and fine"]

    # SQuAD JSON -> training -> EM/F1
    data = {"data": [{"title": "t", "paragraphs": [{"context": f"the movie was {w} and the plot was dull",
                                                    "qas": [{"id": f"{i}", "question": "what was the movie",
                                                             "answers": [{"text": w, "answer_start": 14}]}]}
                                                   for i, w in enumerate(GOOD * 4)]}]}
    for split in ("train", "dev"):
        (root / f"{split}-squad.json").write_text(json.dumps(data))
    run = tmp_path / "qa"
    train(_config(_args(root, run, "--electra.head=qa", f"--data.train_files={root / 'train-squad.json'}",
                        f"--data.validation_files={root / 'dev-squad.json'}")))
    results = json.loads((run / "results.json").read_text())
    assert list(results["validation"])[:3] == ["loss", "f1", "em"] and results["validation"]["f1"] > 50
    assert results["best_checkpoint"]["metric"] == "f1"


def test_qa_loss_of_an_example_does_not_depend_on_its_batchs_padding(root):
    """A QA example's loss is its own, however far its batch is padded: the padding's start/end logits
    are masked out (as the official ELECTRA does). The model's own loss spread probability over the
    padding, so a short window batched with a long one lost more (measured 3.38 for the pair against
    3.15 for the mean of the two alone), and 2 DDP processes of batch 4 trained otherwise than one
    process of batch 8 (tests/recipes/test_finetune_fsdp.py's equality, which the other heads keep)."""
    from t5electra.eval.heads import predict
    from t5electra.models.electra import ElectraForQuestionAnswering
    from t5electra.recipes.finetune_electra import collate, loss_fn

    tok = ElectraTokenizer.from_pretrained(root / "disc")
    context = "the movie was superb and the plot was dull"
    examples = [{"question": "what was the movie", "context": c, "answers": ["superb"], "answer_start": c.index("superb"),
                 "answer_text": "superb"} for c in (context, " ".join(FILL * 2) + " " + context)]
    short, long = encode_qa(examples, tok, max_length=64, doc_stride=16)
    assert len(long["input_ids"]) > len(short["input_ids"]) + 10  # the pair pads the short one by 10+ tokens
    torch.manual_seed(0)
    model = ElectraForQuestionAnswering.from_pretrained(root / "disc", num_labels=2).eval()
    with torch.no_grad():
        alone = [float(loss_fn(model, collate([f], tok.pad_token_id))[0]) for f in (short, long)]
        pair = float(loss_fn(model, collate([short, long], tok.pad_token_id))[0])
    assert pair == pytest.approx(sum(alone) / 2, abs=1e-6)
    # evaluation's loss (the validation loss, eval.metric=loss) alike, in batches of 2 and of 1
    assert predict(model, [short, long], 2, tok.pad_token_id, torch.device("cpu"))[1] == pytest.approx(pair, abs=1e-6)
    assert predict(model, [short, long], 1, tok.pad_token_id, torch.device("cpu"))[1] == pytest.approx(pair, abs=1e-6)


def test_qa_answer_of_an_example_does_not_depend_on_its_batchs_padding(root, monkeypatch):
    """The padding's start/end logits are no answer's and take no n-best place: they filled the 20
    places of a short window batched with a long one, which then had no answer at all ('' instead of
    the span found alone; 14 of 40 answers of a random tiny model changed with the batch). The loss
    masks the padding (never trained there); the official code masks its logits for predictions too."""
    from t5electra.core.outputs import QuestionAnsweringModelOutput
    from t5electra.eval.heads import predict
    from t5electra.models.electra import ElectraForQuestionAnswering

    tok = ElectraTokenizer.from_pretrained(root / "disc")
    examples = [{"question": "what was the movie", "context": c, "answers": ["superb"], "answer_start": c.index("superb"),
                 "answer_text": "superb"} for c in ("the movie was superb", " ".join(FILL * 3) + " the movie was superb")]
    feats = encode_qa(examples, tok, max_length=64, doc_stride=16)
    assert len(feats) == 2 and len(feats[1]["input_ids"]) - len(feats[0]["input_ids"]) > 20  # padding > n_best
    model = ElectraForQuestionAnswering.from_pretrained(root / "disc", num_labels=2)

    def forward(input_ids, attention_mask=None, token_type_ids=None, **_):  # logits rising with the position
        logits = torch.arange(input_ids.shape[1], dtype=torch.float32).expand(input_ids.shape[0], -1)
        return QuestionAnsweringModelOutput(start_logits=logits, end_logits=logits)

    monkeypatch.setattr(model, "forward", forward)
    alone = [qa_answers([ex], [{**f, "example": 0}], predict(model, [f], 1, tok.pad_token_id, torch.device("cpu"))[0], 30)
             for ex, f in zip(examples, feats)]
    batched = qa_answers(examples, feats, predict(model, feats, 2, tok.pad_token_id, torch.device("cpu"))[0], 30)
    assert alone == [["superb"], ["superb"]] and batched == ["superb", "superb"]


def test_qa_question_longer_than_the_window_is_cut_as_the_official_code_does(root):
    """A question keeps min(64, max_length // 2) tokens (official max_query_length 64): one longer
    than the window made the tokenizer refuse the whole split ('Sequence to truncate too short')."""
    tok = ElectraTokenizer.from_pretrained(root / "disc")
    context = " ".join(FILL * 3) + " the answer is superb ."
    start = context.index("superb")
    ex = {"question": "what is the answer", "context": context, "answers": ["superb"], "answer_start": start,
          "answer_text": "superb"}
    long = {**ex, "question": "what is the answer " + " ".join(FILL * 4)}  # 48 tokens, window 32
    feats = encode_qa([ex, long], tok, max_length=32, doc_stride=8)
    for i, example in enumerate((ex, long)):
        mine = [f for f in feats if f["example"] == i]
        question = tok(example["question"], add_special_tokens=False)["input_ids"][:16]  # 32 // 2 tokens
        assert all(len(f["input_ids"]) <= 32 and f["input_ids"][1:len(question) + 2] == question + [tok.sep_token_id]
                   for f in mine)
        held = [f for f in mine if f["start_positions"] > 0]
        assert held and all(context[f["offsets"][f["start_positions"]][0]:f["offsets"][f["end_positions"]][1]]
                            == "superb" for f in held)


def test_qa_answer_with_whitespace_around_it_is_held_by_its_window(root):
    """An answer written with a space before it at the context's start, or after it at the context's
    end (SQuAD has such answer texts), is in a window: no token covers that space, so the window's
    tokens ended before the answer's last character and every window was trained to point at [CLS]."""
    tok = ElectraTokenizer.from_pretrained(root / "disc")
    cases = [(" superb and fine was the movie", " superb", 0), ("the movie was superb ", "superb ", 14),
             ("the movie was superb \t", "superb \t", 14), ("a good movie", " ", 1)]
    examples = [{"question": "what was the movie", "context": c, "answers": [t], "answer_start": s, "answer_text": t}
                for c, t, s in cases]
    feats = encode_qa(examples, tok, max_length=32, doc_stride=8)
    assert len(feats) == len(cases)  # one window each: the whole context
    assert [f["start_positions"] > 0 for f in feats] == [True, True, True, False]  # a blank answer: none
    spans = [examples[f["example"]]["context"][f["offsets"][f["start_positions"]][0]:f["offsets"][f["end_positions"]][1]]
             for f in feats[:3]]
    assert spans == ["superb"] * 3


def test_minilm_bert_fine_tunes(root, tmp_path, minilm_dir):
    run = tmp_path / "minilm"
    train(_config([f"--train.output_dir={run}", f"--model.init_from={minilm_dir}", "--electra.head=classification",
                   *_files(root), "--data.max_length=32", "--train.batch_size=8", "--train.max_steps=2",
                   "--optim.lr=1e-4", *DEVICE_ARGS, "--train.progress=false", "--train.tensorboard=false",
                   "--checkpoint.every_steps=0"]))
    model = ElectraForSequenceClassification.from_pretrained(run / "model")
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert json.loads((run / "results.json").read_text())["test"]["accuracy"] >= 0


def test_bad_setups_fail_before_training(root, tmp_path, capsys):
    big = ElectraTokenizer.train(iter([" ".join(f"w{i}" for i in range(400))]), vocab_size=600, min_frequency=1)
    big.save_pretrained(tmp_path / "bigtok")
    with pytest.raises(ConfigError, match=r"tokenizer has \d+ tokens but the model's vocab_size is \d+"):
        train(_config(_args(root, tmp_path / "a", "--electra.head=classification", *_files(root),
                            f"--data.tokenizer={tmp_path / 'bigtok'}")))
    assert not (tmp_path / "a" / "checkpoints").exists()
    # your files without a head: a label column of classes is a classification, as T5 reads it
    assert load_data(_config(_files(root))).head == "classification"
    with pytest.raises(ConfigError, match="electra.head is not set"):
        load_data(_config([]))
    with pytest.raises(DataError, match="no column 'labl'"):
        load_data(_config([*_files(root), "--electra.head=classification", "--data.label_column=labl"]))
    with pytest.raises(DataError, match="does not exist"):
        load_data(_config(["--electra.head=classification", f"--data.train_files={tmp_path / 'nope.tsv'}"]))
    assert main(_args(root, tmp_path / "b", "--electra.head=clasification", *_files(root))) == 1
    assert "did you mean 'classification'" in capsys.readouterr().err
    assert main(_args(root, tmp_path / "c", "--data.task=bbc_headline")) == 1
    assert "generation task" in capsys.readouterr().err
    # a row with a cell missing (csv gives None: it used to become a class named "None"), and a
    # regression label that is not a number (it used to be a ValueError traceback)
    (tmp_path / "ragged.tsv").write_text("sentence\tlabel\na good film\t1\nbad\n")
    with pytest.raises(DataError, match=r"ragged.tsv:3: no value in column 'label'"):
        load_data(_config(["--electra.head=classification", f"--data.train_files={tmp_path / 'ragged.tsv'}"]))
    (tmp_path / "words.tsv").write_text("sentence\tlabel\ngood\tpos\nbad\tneg\n")
    with pytest.raises(DataError, match=r"regression label 'pos' .* is not a number"):
        load_data(_config(["--electra.head=regression", f"--data.train_files={tmp_path / 'words.tsv'}"]))
    # an empty validation file (a header only): refused before training, as T5 fine-tuning does (was:
    # trained without an evaluation, and results.json listed 'unlabelled_splits': ['validation'])
    (tmp_path / "empty.tsv").write_text("sentence\tlabel\n")
    empty = f"--data.validation_files={tmp_path / 'empty.tsv'}"
    with pytest.raises(DataError, match=r"data.validation_files=.*empty.tsv: the 'validation' split is empty .*leave "
                                        r"data.validation_files unset"):
        load_data(_config([*_files(root), empty, "--electra.head=classification"]))
    assert main(_args(root, tmp_path / "e", "--electra.head=classification", *_files(root), empty)) == 1
    assert "the 'validation' split is empty" in capsys.readouterr().err
    assert not (tmp_path / "e" / "checkpoints").exists()


def test_a_misspelt_eval_metric_stops_at_the_first_evaluation_after_saving_it(root, tmp_path, capsys):
    """eval.metric names no metric: no checkpoint could ever be ranked best (it used to run on
    silently with RUN/model not the best). The step is saved; fixing the name and resuming works."""
    run = tmp_path / "m"
    args = _args(root, run, "--electra.head=classification", *_files(root), steps=40)
    # a name whose direction is not known: refused before any work (eval.greater_is_better follows the metric)
    assert main([*args, "--eval.metric=acuracy"]) == 1
    assert "did you mean 'accuracy'" in capsys.readouterr().err and not run.exists()
    # with a direction given, the typo shows at the first evaluation, after its step is saved
    assert main([*args, "--eval.metric=acuracy", "--eval.greater_is_better=true"]) == 1
    assert "did you mean 'accuracy'" in capsys.readouterr().err
    assert (run / "checkpoints" / "step-00000020").is_dir()
    assert main([*args, "--eval.metric=accuracy"]) == 0
    assert json.loads((run / "checkpoints" / "best").read_text())["metric"] == "accuracy"


def test_regression_scores_of_minus_one_are_scored():
    """-1 marks an unlabelled class; a regression label of -1.0 is a score (it was dropped from the
    metrics: Pearson 99.6 instead of 2.3 on these rows). Unlabelled scores are NaN."""
    from scipy.stats import pearsonr

    from t5electra import metrics as M
    from t5electra.data.heads import TaskData
    from t5electra.eval.heads import score

    labels, preds = [-1.0, -0.5, 0.0, 0.5, 1.0, -1.0], [0.9, -0.4, 0.1, 0.4, 0.9, 0.8]
    rows = [{"text": "t", "text_pair": None, "label": v} for v in labels]
    data = TaskData("regression", [], {"validation": rows}, (M.pearson, M.spearman))
    assert score(data, rows, [{}] * 6, preds, None)["pearson"] == pytest.approx(100 * pearsonr(labels, preds)[0])
    rows[0]["label"] = float("nan")
    assert score(data, rows, [{}] * 6, preds, None)["pearson"] == pytest.approx(100 * pearsonr(labels[1:], preds[1:])[0])


def test_evaluate_refuses_a_head_it_would_score_from_random_weights(root, tmp_path, capsys):
    """A transformers BertForSequenceClassification: its pooler classifier has no place in ELECTRA's
    head, which started from random values and was scored as the model's (a log line only)."""
    import transformers

    tok = ElectraTokenizer.from_pretrained(root / "disc")
    cfg = transformers.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=64, id2label={0: "neg", 1: "pos"}, label2id={"neg": 0, "pos": 1})
    transformers.BertForSequenceClassification(cfg).save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    assert cli_main(["evaluate", str(tmp_path / "bert"), "--task", "classify", "--data-dir", str(root)]) == 1
    err = capsys.readouterr().err
    assert "would be scored from random values" in err and "classifier" in err


def test_tagging_scores_every_word_even_past_max_length(root):
    """Words cut off by max_length (or of no tokens) have no guess and count as wrong: only the kept
    ones were scored, so a sentence of which a third was seen scored 100."""
    from t5electra import metrics as M
    from t5electra.data.heads import TaskData, encode
    from t5electra.eval.heads import score

    tok = ElectraTokenizer.from_pretrained(root / "disc")
    words = "the movie was good and the plot was dull".split()
    rows = [{"tokens": words, "labels": [i % 3 for i in range(len(words))]},
            {"tokens": ["good", "\u200b", "dull"], "labels": [1, 2, 0]}]  # a zero-width word: no token
    data = TaskData("token_classification", ["O", "POS", "NEG"], {"test": rows}, (M.accuracy,))
    feats = encode(data, "test", tok, 5)  # [CLS] + 3 words + [SEP] of the first sentence
    perfect = [[lab if lab != -100 else 0 for lab in f["labels"]] for f in feats]  # right on every kept word
    assert feats[1]["words"] == [0, 2]
    assert score(data, rows, feats, perfect, None)["accuracy"] == pytest.approx(100 * (3 + 2) / (9 + 3))


def test_glue_unlabelled_test_split_is_listed_not_scored(root, tmp_path):
    """GLUE's SST-2/test.tsv has no label column: results.json had "test": {} and a TF-IDF row of
    'accuracy 0.0 over 0 examples'; it now lists the split as unlabelled, as T5's fine-tuning does."""
    sst = tmp_path / "SST-2"
    sst.mkdir()
    shutil.copy(root / "train.tsv", sst / "train.tsv")
    (sst / "dev.tsv").write_text((root / "dev.tsv").read_text().replace("\tpos\n", "\t1\n").replace("\tneg\n", "\t0\n"))
    (sst / "train.tsv").write_text((root / "train.tsv").read_text().replace("\tpos\n", "\t1\n").replace("\tneg\n", "\t0\n"))
    (sst / "test.tsv").write_text("index\tsentence\n" + "".join(f"{i}\tthe movie was good\n" for i in range(4)))
    run = tmp_path / "run"
    train(_config(_args(root, run, "--data.task=sst2", f"--data.task_dir={tmp_path}", steps=2)))
    results = json.loads((run / "results.json").read_text())
    assert results["unlabelled_splits"] == ["test"] and "test" not in results and "accuracy" in results["validation"]
    assert "test" not in results["tfidf_baseline"] and "validation" in results["tfidf_baseline"]


def test_qa_and_tagging_files_are_read_as_meant(root, tmp_path):
    """A one-answer dict without its lists ({"text": "Zurich"}) became one answer per character; the
    defaults (max_length 128, doc_stride 128) moved QA windows one token at a time; a tag with spaces
    around it was a KeyError; evaluate of a QA run used doc_stride 128 / 30-token spans whatever the
    run had (another score than results.json)."""
    from t5electra.data.heads import _qa_example
    from t5electra.recipes.evaluate import run_data

    row = {"question": "where", "context": "The capital is Zurich today.", "answers": {"text": "Zurich", "answer_start": 15}}
    assert _qa_example(row, "x")["answers"] == ["Zurich"] and _qa_example(row, "x")["answer_start"] == 15
    with pytest.raises(DataError, match="character offsets"):
        _qa_example({**row, "answers": {"text": ["Zurich"], "answer_start": ["fifteen"]}}, "x")
    # an answer without its offset is found in the context (was trained as unanswerable)
    for answers in ({"text": ["Zurich"]}, [{"text": "Zurich"}], {"text": "Zurich"}):
        assert _qa_example({**row, "answers": answers}, "x")["answer_start"] == 15
    unanswerable = _qa_example({**row, "answers": {"text": [""], "answer_start": [-1]}}, "x")  # was found at 0
    assert (unanswerable["answers"], unanswerable["answer_start"]) == ([], -1)
    with pytest.raises(DataError, match="'Geneva' does not occur in the context"):
        _qa_example({**row, "answers": {"text": ["Geneva"]}}, "x")

    tok = ElectraTokenizer.from_pretrained(root / "disc")
    context = " ".join(FILL[i % len(FILL)] for i in range(200))
    feats = encode_qa([{"id": "q", "question": "what", "context": context, "answers": [], "answer_start": -1,
                        "answer_text": ""}], tok, max_length=64, doc_stride=128)
    assert 6 <= len(feats) <= 9  # 200 words in windows of 60 advancing by 30 (were ~140 windows, a token apart)

    (tmp_path / "train.jsonl").write_text(json.dumps({"tokens": ["Mary", "visits", "London"],
                                                      "labels": ["B-PER", "O", " B-LOC"]}) + "\n")
    data = load_task_data("token_classification", files={"train": [str(tmp_path / "train.jsonl")]})
    assert data.splits["train"][0]["labels"] == [data.labels.index(t) for t in ("B-PER", "O", "B-LOC")]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"tokens": ["a", "b"], "labels": ["O", ""]}) + "\n")
    with pytest.raises(DataError, match="empty token label"):
        load_task_data("token_classification", files={"train": [str(tmp_path / "bad.jsonl")]})

    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("")
    (run / "config.yaml").write_text("data: {max_length: 64}\n"
                                     "electra: {head: qa, doc_stride: 16, max_answer_length: 3}\n")
    found = run_data(run / "model")
    assert (found["max_length"], found["doc_stride"], found["max_answer_length"]) == (64, 16, 3)


def _two_taggers(labelled: list[int]):
    """Two equal tiny taggers (dropout off), an SGD optimiser each, and ``batch(rows)`` of 4 rows of 6
    tokens whose row i has its first ``labelled[i]`` tokens tagged (-100 after)."""
    import copy

    from t5electra.models.electra import ElectraForTokenClassification

    cfg = ElectraConfig.from_preset("electra-tiny", num_labels=3, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    a = ElectraForTokenClassification(cfg)
    b = copy.deepcopy(a)
    g = torch.Generator().manual_seed(1)
    ids, tags = torch.randint(5, 500, (4, 6), generator=g), torch.randint(0, 3, (4, 6), generator=g)
    tags[torch.arange(6) >= torch.tensor(labelled)[:, None]] = -100

    def batch(rows):
        return {"input_ids": ids[rows], "attention_mask": torch.ones_like(ids[rows]), "labels": tags[rows]}

    return a, b, torch.optim.SGD(a.parameters(), lr=0.5), torch.optim.SGD(b.parameters(), lr=0.5), batch


def test_tagging_trains_on_the_token_mean_of_the_whole_step():
    """A tagger's loss is a mean over its labelled tokens: micro-batches of 9 and 2 of them (words of
    different lengths) train as one batch of both (a mean of means weighed each of the 2 as 4.5)."""
    from t5electra.recipes.finetune_electra import loss_fn
    from t5electra.train.loop import train_step

    big, small, opt_big, opt_small, batch = _two_taggers([5, 4, 1, 1])
    for _ in range(2):
        a = train_step(big, [batch(slice(0, 4))], loss_fn, opt_big)
        b = train_step(small, [batch(slice(0, 2)), batch(slice(2, 4))], loss_fn, opt_small)
        assert b.loss == pytest.approx(a.loss, rel=1e-6) and b.grad_norm == pytest.approx(a.grad_norm, rel=1e-6)
    for p, q in zip(big.parameters(), small.parameters()):
        assert torch.allclose(p, q, atol=1e-6), (p - q).abs().max()


def test_a_taggers_validation_loss_is_the_token_mean_whatever_the_batch_size():
    """predict's loss for a tagger is the mean over every labelled token of the split (was: each
    batch's token mean weighted by its examples, so it changed with eval.batch_size)."""
    from t5electra.eval.heads import predict
    from t5electra.models.electra import ElectraForTokenClassification

    cfg = ElectraConfig.from_preset("electra-tiny", num_labels=3)
    torch.manual_seed(0)
    model = ElectraForTokenClassification(cfg)
    g = torch.Generator().manual_seed(2)
    features = []
    for n, tagged in ((6, 5), (4, 1), (5, 0), (3, 3)):  # a feature without a tagged token too
        ids = torch.randint(5, 500, (n,), generator=g).tolist()
        tags = torch.randint(0, 3, (n,), generator=g).tolist()
        features.append({"input_ids": ids, "token_type_ids": [0] * n, "labels": tags[:tagged] + [-100] * (n - tagged)})
    with torch.no_grad():
        model.eval()
        per_token = [torch.nn.functional.cross_entropy(model(torch.tensor([f["input_ids"]])).logits[0],
                                                       torch.tensor(f["labels"]), ignore_index=-100, reduction="sum")
                     for f in features]
    expected = float(sum(per_token)) / 9
    for batch_size in (1, 2, 4):
        _, loss = predict(model, features, batch_size, 0, torch.device("cpu"))
        assert loss == pytest.approx(expected, rel=1e-5), batch_size


def test_a_tagger_micro_batch_without_labelled_tokens_adds_nothing():
    """A micro-batch whose labels are all -100 weighs 0 (as T5's without target tokens): its mean over
    no token is NaN, which stopped training with the NaN guard's 'lower optim.lr' advice."""
    from t5electra.recipes.finetune_electra import loss_fn
    from t5electra.train.loop import train_step

    a, b, opt_a, opt_b, batch = _two_taggers([6, 6, 0, 0])
    x = train_step(a, [batch(slice(0, 2))], loss_fn, opt_a)
    y = train_step(b, [batch(slice(0, 2)), batch(slice(2, 4))], loss_fn, opt_b)
    assert y.loss == pytest.approx(x.loss, rel=1e-6) and y.grad_norm == pytest.approx(x.grad_norm, rel=1e-6)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, atol=1e-6), (p - q).abs().max()


def test_results_keep_chinese_class_names_and_paths_as_written(root, tmp_path, capsys):
    """results.json, the results `t5electra finetune` prints and `t5electra evaluate`'s JSON wrote
    Chinese as \\uXXXX escapes ("label": "\\u8d1f\\u9762" for the majority class 负面), where the run's
    config.yaml, the predictions and `generate` keep it as written."""
    (own := tmp_path / "评论").mkdir()
    for split in ("train", "dev", "test"):
        (own / f"{split}.csv").write_text("评论,标签\n" + "".join(f"{t},{y}\n" for t, y in (
            ("质量太差了", "负面"), ("很失望", "负面"), ("非常好", "正面"))) , encoding="utf-8")
    run = tmp_path / "情感"
    args = [a for a in _args(root, run, "--electra.head=classification", "--data.text_columns=[评论]",
                             "--data.label_column=标签", *_files(own, ".csv"), steps=2)
            if not a.startswith(("--eval.every_steps", "--checkpoint.every_steps"))]
    assert cli_main(["finetune", *args]) == 0
    assert '"label": "负面"' in capsys.readouterr().out
    assert '"label": "负面"' in (run / "results.json").read_text(encoding="utf-8")
    assert cli_main(["evaluate", str(run), "--split", "test", "--out", str(tmp_path / "scored.json")]) == 0
    assert f'"checkpoint": "{run / "model"}"' in capsys.readouterr().out
    assert "情感" in (tmp_path / "scored.json").read_text(encoding="utf-8")
