"""Fill-mask ``generate`` (the seed's ELECTRA snippet), replaced-token detection and correction."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from t5electra.errors import InvalidInputError
from t5electra.generation.fill_mask import fill_mask_generate, resolve_mask_token_id
from t5electra.generation.sampling import filter_top_k_top_p
from t5electra.models.electra import ElectraConfig, ElectraForMaskedLM

ROOT = Path(__file__).resolve().parents[2]
PAD, CLS, SEP, MASK = 0, 1, 2, 3


@pytest.fixture(scope="module")
def gen():
    torch.manual_seed(0)
    model = ElectraForMaskedLM(ElectraConfig.from_preset("electra-tiny-generator")).eval()
    with torch.no_grad():   # make predictions peaked enough that argmax differences are clear
        model.generator_lm_head.bias.normal_(0, 3.0)
    return model


def ids_with(masks_at, T=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, 512, (1, T), generator=g)
    ids[0, 0], ids[0, -1] = CLS, SEP
    ids[0, list(masks_at)] = MASK
    return ids


def best(model, ids):
    """(position -> (token, logprob)) of the model's best non-[MASK] token at each position."""
    logits = model(ids).logits[0].float()
    logits[:, MASK] = float("-inf")
    lp, tok = logits.log_softmax(-1).max(-1)
    return tok, lp


def test_no_mask_returns_input_unchanged(gen):
    ids = ids_with([])
    out = gen.generate(ids, max_length=50, num_return_sequences=1, mask_token_id=MASK)
    assert out.dtype == torch.long and torch.equal(out, ids)
    out = fill_mask_generate(gen, ids, do_sample=True, num_return_sequences=3, mask_token_id=MASK)
    assert torch.equal(out, ids.repeat(3, 1))


def test_single_mask_gets_the_argmax(gen):
    ids = ids_with([5])
    out = gen.generate(ids, mask_token_id=MASK)
    tok, _ = best(gen, ids)
    want = ids.clone()
    want[0, 5] = tok[5]
    assert torch.equal(out, want)


def test_biased_head_fills_that_token():
    model = ElectraForMaskedLM(ElectraConfig.from_preset("electra-tiny-generator")).eval()
    with torch.no_grad():
        model.generator_lm_head.bias[42] = 100.0
    out = model.generate(ids_with([3, 4, 7]), mask_token_id=MASK)
    assert out[0, [3, 4, 7]].tolist() == [42, 42, 42]


def test_masks_filled_one_at_a_time_most_confident_first(gen):
    ids = ids_with([2, 6, 9], seed=1)
    out = fill_mask_generate(gen, ids, mask_token_id=MASK)
    # reference: the same procedure spelled out
    cur, todo = ids.clone(), [2, 6, 9]
    while todo:
        tok, lp = best(gen, cur)
        p = max(todo, key=lambda i: lp[i].item())
        cur[0, p] = tok[p]
        todo.remove(p)
    assert torch.equal(out, cur)
    assert not (out == MASK).any()


def test_batch_rows_independent_and_padding(gen):
    a, b = ids_with([4], seed=2), ids_with([], seed=3)
    b[0, 8:] = PAD
    both = fill_mask_generate(gen, torch.cat([a, b]), mask_token_id=MASK)
    assert torch.equal(both[1], b[0])
    assert torch.equal(both[0], fill_mask_generate(gen, a, mask_token_id=MASK)[0])


def test_sampling_alternatives_and_reproducible(gen):
    ids = ids_with([3, 8], seed=4)
    kw = dict(do_sample=True, num_return_sequences=4, temperature=2.0, mask_token_id=MASK)
    a = gen.generate(ids, generator=torch.Generator().manual_seed(0), **kw)
    b = gen.generate(ids, generator=torch.Generator().manual_seed(0), **kw)
    assert a.shape == (4, 12) and torch.equal(a, b)
    assert len({tuple(r.tolist()) for r in a}) > 1                       # alternatives differ
    keep = torch.ones(12, dtype=torch.bool)
    keep[[3, 8]] = False
    assert (a[:, keep] == ids[0, keep]).all() and not (a == MASK).any()
    # top_k=1 sampling is greedy
    greedy = gen.generate(ids, mask_token_id=MASK)
    k1 = gen.generate(ids, do_sample=True, top_k=1, mask_token_id=MASK, generator=torch.Generator().manual_seed(5))
    assert torch.equal(k1, greedy)


def testfilter_top_k_top_p():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_top_k_top_p(logits, 2, None)[0, 2:]).all()
    kept = ~torch.isinf(filter_top_k_top_p(logits, None, 0.75))
    assert kept[0].tolist() == [True, True, False, False]                  # 0.5 + 0.3 >= 0.75
    kept = ~torch.isinf(filter_top_k_top_p(logits, None, 0.1))
    assert kept[0].tolist() == [True, False, False, False]                 # the top token always stays


def test_mask_id_resolution(gen, tmp_path):
    model = ElectraForMaskedLM(ElectraConfig.from_preset("electra-tiny-generator"))
    with pytest.raises(InvalidInputError, match="cannot tell which id is \\[MASK\\]"):
        model.generate(ids_with([3]))
    assert resolve_mask_token_id(model, 7) == 7
    model.config.extra["mask_token_id"] = 9
    assert resolve_mask_token_id(model) == 9
    model.mask_token_id = 5
    assert resolve_mask_token_id(model) == 5
    # from the tokenizer files saved next to the model
    gen.save_pretrained(tmp_path)
    (tmp_path / "vocab.txt").write_text("[PAD]\n[CLS]\n[SEP]\n[MASK]\n[UNK]\n", encoding="utf-8")
    loaded = ElectraForMaskedLM.from_pretrained(tmp_path)
    assert resolve_mask_token_id(loaded) == MASK
    assert torch.equal(loaded.generate(ids_with([6])), gen.generate(ids_with([6]), mask_token_id=MASK))


def test_bad_arguments(gen):
    ids = ids_with([3])
    with pytest.raises(InvalidInputError, match="num_beams"):
        gen.generate(ids, num_beams=4, mask_token_id=MASK)
    with pytest.raises(InvalidInputError, match="max_length=5"):
        gen.generate(ids, max_length=5, mask_token_id=MASK)
    with pytest.raises(InvalidInputError, match="needs do_sample=True"):
        gen.generate(ids, num_return_sequences=2, mask_token_id=MASK)
    with pytest.raises(InvalidInputError, match="temperature"):
        gen.generate(ids, do_sample=True, temperature=0, mask_token_id=MASK)
    with pytest.raises(InvalidInputError, match="temperature must be a finite number > 0, got inf"):
        gen.generate(ids, do_sample=True, temperature=float("inf"), mask_token_id=MASK)
    with pytest.raises(InvalidInputError, match="do_sample must be True or False, got 'yes'"):
        gen.generate(ids, do_sample="yes", mask_token_id=MASK)
    with pytest.raises(InvalidInputError, match="integer ids"):
        gen.generate(ids.float(), mask_token_id=MASK)


# -- with a tokenizer: the seed snippet, detection and correction ----------------------------------
CORPUS = ["This is a sample input text.", "The capital of France is Paris.", "The cat sat on the mat.",
          "The dog ate the bone on the roof.", "A chef cooked the meal and ate it."] * 20


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from t5electra import ElectraTokenizer

    return ElectraTokenizer.train(iter(CORPUS), vocab_size=200, min_frequency=1)


@pytest.fixture(scope="module")
def generator_dir(tokenizer, tmp_path_factory):
    """A tiny generator whose head prefers "paris", saved with its tokenizer (the HF layout)."""
    d = tmp_path_factory.mktemp("electra-generator")
    torch.manual_seed(0)
    model = ElectraForMaskedLM(ElectraConfig.from_preset("electra-tiny-generator", vocab_size=len(tokenizer)))
    with torch.no_grad():
        model.generator_lm_head.bias[tokenizer.convert_tokens_to_ids("paris")] = 100.0
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)
    return d


def run_example(name, argv, capsys, monkeypatch):
    import runpy

    monkeypatch.setattr(sys, "argv", [name, *argv])
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    return capsys.readouterr().out


def test_seed_snippet_returns_text_without_mask_unchanged(generator_dir, tokenizer, capsys, monkeypatch):
    out = run_example("seed_electra.py", [str(generator_dir)], capsys, monkeypatch)
    assert out.strip() == "this is a sample input text."   # lower-cased by the uncased tokenizer, else unchanged


def test_seed_snippet_fills_the_mask_with_the_argmax(generator_dir, capsys, monkeypatch):
    out = run_example("seed_electra.py", [str(generator_dir), "The capital of France is [MASK]."],
                      capsys, monkeypatch)
    assert out.strip() == "the capital of france is paris."


def test_seed_snippet_as_a_script(generator_dir):
    env = {**os.environ, "ELECTRA_MODEL_DIR": str(generator_dir), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "seed_electra.py")], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "this is a sample input text."


class FlagToken(torch.nn.Module):
    """A discriminator with a known answer: "replaced" (p = 0.99) exactly where ``token`` is."""

    def __init__(self, token: int):
        super().__init__()
        self.token = token
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.dummy.device

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        logits = torch.where(input_ids == self.token, 4.6, -4.6)
        return type("Out", (), {"logits": logits})()


def test_detect_replaced_tokens(tokenizer):
    from t5electra.generation.fill_mask import detect_replaced_tokens

    bone = tokenizer.convert_tokens_to_ids("bone")
    res = detect_replaced_tokens(FlagToken(bone), tokenizer, "the dog ate the bone.")
    assert [t for t, _ in res] == ["the", "dog", "ate", "the", "bone", "."]      # no [CLS] / [SEP]
    assert [round(p, 2) for _, p in res] == [0.01, 0.01, 0.01, 0.01, 0.99, 0.01]
    many = detect_replaced_tokens(FlagToken(bone), tokenizer, ["the bone", "the cat sat on the mat"])
    assert len(many) == 2 and len(many[0]) == 2 and len(many[1]) == 6           # padding left out
    # a word outside the vocabulary is scored as [UNK], not dropped (the text keeps its length)
    unk = detect_replaced_tokens(FlagToken(bone), tokenizer, "the zzqxj bone")
    assert [t for t, _ in unk] == ["the", tokenizer.unk_token, "bone"]


def test_correct_flags_refills_until_stable(tokenizer, generator_dir):
    from t5electra.generation.fill_mask import Edit, correct

    gen = ElectraForMaskedLM.from_pretrained(generator_dir)                      # proposes "paris"
    bone = tokenizer.convert_tokens_to_ids("bone")
    text, edits = correct(FlagToken(bone), gen, tokenizer, "the dog ate the bone on the roof.")
    assert text == "the dog ate the paris on the roof."
    assert edits == [Edit(position=5, old="bone", new="paris", prob=pytest.approx(0.99, abs=1e-3))]
    # nothing flagged: unchanged, no edits
    text, edits = correct(FlagToken(bone), gen, tokenizer, "the cat sat on the mat.")
    assert (text, edits) == ("the cat sat on the mat.", [])
    # the generator re-proposes the flagged token itself: stable after one round, no edit
    paris = tokenizer.convert_tokens_to_ids("paris")
    text, edits = correct(FlagToken(paris), gen, tokenizer, "the capital of france is paris.")
    assert (text, edits) == ("the capital of france is paris.", [])
    with pytest.raises(InvalidInputError, match="threshold"):
        correct(FlagToken(bone), gen, tokenizer, "x", threshold=1.5)


def test_pipeline_and_example_on_a_pretrained_pair(tokenizer, tmp_path, capsys, monkeypatch):
    from t5electra.pipelines import ElectraPipeline
    from t5electra.models.electra_rtd import ElectraPretrainer

    pre = ElectraPretrainer(ElectraConfig.from_preset("electra-tiny", vocab_size=len(tokenizer)),
                            mask_token_id=tokenizer.mask_token_id,
                            special_token_ids=[tokenizer.cls_token_id, tokenizer.sep_token_id])
    enc = tokenizer(CORPUS[:5], padding=True, return_tensors="pt")
    opt = torch.optim.Adam(pre.parameters(), lr=3e-3)
    for _ in range(5):
        loss = pre(enc["input_ids"], enc["attention_mask"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    pre.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    pipe = ElectraPipeline.from_pretrained(tmp_path)
    scores = pipe.detect("the cat sat on the mat.")
    assert [t for t, _ in scores] == ["the", "cat", "sat", "on", "the", "mat", "."]
    assert all(0.0 < p < 1.0 for _, p in scores)
    filled = pipe.fill_mask("the cat sat on the [MASK].")
    assert filled.startswith("the cat sat on the ") and "[MASK]" not in filled
    text, edits = pipe.correct("the cat sat on the mat.", threshold=0.5)
    assert len(tokenizer.encode(text)) == len(tokenizer.encode("the cat sat on the mat."))
    assert all(e.prob > 0.5 and e.old != e.new for e in edits)
    # lists: one answer per text (a list was read as a text pair: 'a. b.'); special tokens never fill
    assert pipe.fill_mask(["the cat sat on the [MASK].", "the [MASK] sat."]) == [
        filled, pipe.fill_mask("the [MASK] sat.")]
    assert pipe.correct(["the cat sat on the mat.", "a dog."], threshold=0.5)[0] == (text, edits)
    samples = pipe.fill_mask("the [MASK] sat.", do_sample=True, num_return_sequences=200, temperature=5.0,
                             generator=torch.Generator().manual_seed(0))
    words = {s.split()[1] for s in samples}
    assert pipe.detect([]) == []  # (was "input_ids must be (batch, seq_len)")
    with pytest.raises(InvalidInputError, match="max_iters must be an integer >= 1"):
        pipe.correct("a b", max_iters=-1)
    assert len(words) > 5 and not words & {"[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]"}

    out = run_example("detect_and_correct.py", [str(tmp_path), "the cat sat on the mat."], capsys, monkeypatch)
    assert "P(replaced) per token:" in out and "corrected:" in out
    with pytest.raises(InvalidInputError, match="generator/"):
        ElectraPipeline.from_pretrained(tmp_path / "generator")
