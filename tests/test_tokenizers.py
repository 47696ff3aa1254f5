"""T5Tokenizer and ElectraTokenizer against transformers 5.24.0 on the same files: ids, decoded
text, padding/truncation/tensors, pairs/offsets, saving both ways, training, the CLI, errors."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import sentencepiece as spm
import torch
import transformers

from t5electra import tokenizer_base
from t5electra.cli import main as cli_main
from t5electra.errors import CheckpointNotFoundError, ConfigError, InvalidInputError, MissingTokenError
from t5electra.tokenizers import BatchEncoding, ElectraTokenizer, T5Tokenizer

# Texts every tokenizer must handle exactly as transformers does.
TEXTS = [
    "Hello world",
    "",
    " ",
    "  leading and trailing spaces  ",
    "runs   of    spaces\tand\ttabs\nand\n\nnew lines\r\n",
    "Héllo café naïve Ångström, e\u0301 combining",
    "日本語のテキストと中文",
    "emoji 😀👍🏽 in text",
    "a <extra_id_0> b",
    "<extra_id_0>x<extra_id_99>y <extra_id_5>",
    "I don't know, do you? Yes . It's 12,345.67 $!",
    "</s> and <pad> inside text",
    "ﬁ ligature and ｆｕｌｌｗｉｄｔｈ letters",  # NFKC folds these
    "UPPER lower MiXeD",
    "nbsp\u00a0and\u2003em space",
    "a" * 150 + " superlongword" * 3,
    "Greek λόγος and Cyrillic слово",
]
PAIRS = [("What is it?", "It is a test . Naïve 日本 [MASK] words"), ("Who?", ""), ("", "only second")]


def as_lists(encoding) -> dict:
    return {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in encoding.items()}


# -- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(spiece_model_path, tmp_path_factory):
    """sentencepiece's botchan.txt (a novel) plus lines in other scripts, so they get pieces."""
    lines = (spiece_model_path.parent / "botchan.txt").read_text(encoding="utf-8").splitlines()[:1200]
    lines += ["Héllo café naïve Ångström résumé", "日本語のテキストと中文の文章です", "emoji 😀👍🏽 fun"] * 20
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def sp_dir(spiece_model_path, tmp_path_factory):
    """A directory holding only sentencepiece's test_model.model as spiece.model."""
    d = tmp_path_factory.mktemp("spiece")
    shutil.copy(spiece_model_path, d / "spiece.model")
    return d


@pytest.fixture(scope="module")
def t5_trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("t5_trained")
    tok = T5Tokenizer.train(corpus, 400, output_dir=out, character_coverage=1.0)
    return out, tok


@pytest.fixture(scope="module")
def electra_trained(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("electra_trained")
    tok = ElectraTokenizer.train(corpus, 600, output_dir=out)
    return out, tok


# -- T5 ---------------------------------------------------------------------------------------
def test_t5_trained_tokenizer_identical_to_transformers(t5_trained):
    out, ours = t5_trained
    theirs = transformers.T5Tokenizer.from_pretrained(out)
    # The whole backend pipeline (normalizer, pre-tokenizer, unigram, decoder, post-processor,
    # added tokens) serialises identically ...
    assert json.loads(ours.backend_tokenizer.to_str()) == json.loads(theirs.backend_tokenizer.to_str())
    # ... and so ids, tokens and decoded text agree on every text.
    for text in TEXTS:
        ids = ours(text).input_ids
        assert ids == theirs(text).input_ids, text
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
    assert "<unk>" in ours.convert_ids_to_tokens(ours("Greek λόγος").input_ids)  # unseen script -> unk (id 2)


def test_t5_conventions_on_trained_model(t5_trained):
    _, tok = t5_trained
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.bos_token_id) == (0, 1, 2, None)
    sp_size = 400
    assert [tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in (0, 1, 99)] == [sp_size + 99, sp_size + 98, sp_size]
    assert tok.get_sentinel_token_ids() == [sp_size + 99 - i for i in range(100)]
    assert len(tok) == tok.vocab_size == sp_size + 100
    ids = tok("a <extra_id_0> b").input_ids
    assert ids[-1] == tok.eos_token_id and ids.count(sp_size + 99) == 1  # EOS appended, sentinel one id
    assert tok.convert_tokens_to_ids("not-a-piece") == tok.unk_token_id


def test_t5_real_spiece_model_matches_transformers(sp_dir, spiece_model_path):
    """sentencepiece's test_model.model has its own ids (unk 0, <s> 1, </s> 2, no <pad>)."""
    ours = T5Tokenizer.from_pretrained(sp_dir)
    theirs = transformers.T5Tokenizer.from_pretrained(sp_dir)
    # As in transformers: EOS is "</s>" (id 2), <pad> is added after the sentinels (id 1100),
    # <extra_id_0> = 1000 + 99.
    assert (ours.eos_token_id, ours.unk_token_id, ours.pad_token_id) == (2, 0, 1100)
    assert (theirs.eos_token_id, theirs.unk_token_id, theirs.pad_token_id) == (2, 0, 1100)
    assert ours.convert_tokens_to_ids("<extra_id_0>") == 1099 and len(ours) == len(theirs) == 1101
    assert ours.all_special_tokens == theirs.all_special_tokens
    # The one intended difference: transformers builds T5's unigram with unk_id=2 whatever the
    # model says, so here unknown characters become </s>; ours stay <unk> (id 0).
    mine, hf = json.loads(ours.backend_tokenizer.to_str()), json.loads(theirs.backend_tokenizer.to_str())
    assert (mine["model"].pop("unk_id"), hf["model"].pop("unk_id")) == (0, 2)
    assert mine == hf
    sp = spm.SentencePieceProcessor(model_file=str(spiece_model_path))
    for text in TEXTS:
        a, b = ours(text).input_ids, theirs(text).input_ids
        assert len(a) == len(b), text
        differ = [(x, y) for x, y in zip(a, b) if x != y]
        assert all(d == (0, 2) for d in differ), text
        if not differ:
            assert ours.decode(a, skip_special_tokens=True) == theirs.decode(b, skip_special_tokens=True)
            assert ours.decode(a) == theirs.decode(b)
    # sentencepiece agrees with us on unknowns (id 0) where whitespace is already single spaces.
    for text in ("Hello world", "héllo café", "I don't know, do you?"):
        assert ours(text).input_ids[:-1] == sp.encode(text), text


CALL_CASES = [
    dict(),
    dict(padding=True),
    dict(padding="longest", return_tensors="pt"),
    dict(padding="max_length", max_length=24, return_tensors="np"),
    dict(truncation=True, max_length=5),
    dict(max_length=4),  # max_length alone turns truncation on
    dict(padding=True, truncation=True, max_length=6, return_tensors="pt", return_attention_mask=False),
    dict(padding="max_length", truncation=True, max_length=8, pad_to_multiple_of=4),
    dict(padding=True, padding_side="left", return_tensors="pt"),
    dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_length=True),
]


@pytest.mark.parametrize("kwargs", CALL_CASES, ids=[str(k) for k in CALL_CASES])
def test_t5_call_matches_transformers(t5_trained, kwargs):
    out, ours = t5_trained
    theirs = transformers.T5Tokenizer.from_pretrained(out)
    sources = ["translate English to German: That is good.", "summarize: a <extra_id_0> b", "x"]
    targets = ["Das ist gut.", "<extra_id_0> lot of words here <extra_id_1>", ""]
    for args in ((sources[0],), (sources,)):
        a, b = ours(*args, **kwargs), theirs(*args, **kwargs)
        assert isinstance(a, BatchEncoding) and a.input_ids is a["input_ids"]
        assert as_lists(a) == as_lists(b) and list(a) == list(b)
    a, b = ours(sources, text_target=targets, **kwargs), theirs(sources, text_target=targets, **kwargs)
    assert as_lists(a) == as_lists(b) and "labels" in a
    if kwargs.get("return_tensors") == "pt":
        assert a.input_ids.dtype == torch.long and a.labels.shape[0] == 3
    if kwargs.get("return_tensors") == "np":
        assert isinstance(a.input_ids, np.ndarray) and a.input_ids.dtype == np.int64


def test_t5_seed_snippet_calls(t5_trained):
    """The seed's `tokenizer.encode(text, return_tensors="pt")` / `decode(output[0], skip_special_tokens=True)`."""
    out, ours = t5_trained
    theirs = transformers.T5Tokenizer.from_pretrained(out)
    text = "This is a sample input text."
    ids = ours.encode(text, return_tensors="pt")
    assert ids.shape == (1, len(ours.encode(text))) and ids.dtype == torch.long
    assert torch.equal(ids, theirs.encode(text, return_tensors="pt"))
    # What generate returns: decoder start (pad), tokens, a sentinel, EOS, then padding.
    output = torch.tensor([[0, *ours.encode("This is good", add_special_tokens=False), 499, 1, 0, 0]])
    for skip in (True, False):
        assert ours.decode(output[0], skip_special_tokens=skip) == theirs.decode(output[0], skip_special_tokens=skip)
    assert ours.decode(output[0], skip_special_tokens=True) == "This is good"
    assert ours.batch_decode(output) == theirs.batch_decode(output)
    assert ours.decode(output.numpy()) == [ours.decode(output[0])]


def test_t5_save_and_load_both_ways(t5_trained, sp_dir, tmp_path):
    out, ours = t5_trained
    names = {p.name for p in out.iterdir()}
    assert {"spiece.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= names
    # Ours -> ours.
    again = T5Tokenizer.from_pretrained(out)
    assert all(again(t).input_ids == ours(t).input_ids for t in TEXTS)
    # transformers' own save (tokenizer.json + tokenizer_config.json, no spiece.model), with a
    # token added through add_tokens(), loads in ours with the same ids.
    theirs = transformers.T5Tokenizer.from_pretrained(sp_dir)
    theirs.add_tokens(["<new_token>"])
    theirs.save_pretrained(tmp_path / "hf")
    assert not (tmp_path / "hf" / "spiece.model").exists()
    loaded = T5Tokenizer.from_pretrained(tmp_path / "hf")
    assert loaded.convert_tokens_to_ids("<new_token>") == theirs.convert_tokens_to_ids("<new_token>") == 1101
    for text in TEXTS + ["x <new_token> y"]:
        a, b = loaded(text).input_ids, theirs(text).input_ids
        assert [0 if (x, y) == (0, 2) else y for x, y in zip(a, b)] == a, text  # unk_id: see the test above
    # A v4-converted tokenizer.json (normalizer Sequence[Precompiled, Replace], Metaspace only):
    # v5 takes only the pieces and the charsmap from it, and so do we.
    data = json.loads((tmp_path / "hf" / "tokenizer.json").read_text(encoding="utf-8"))
    data["normalizer"] = {"type": "Sequence", "normalizers": [
        data["normalizer"], {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": "▁"}]}
    data["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    (tmp_path / "v4").mkdir()
    (tmp_path / "v4" / "tokenizer.json").write_text(json.dumps(data), encoding="utf-8")
    shutil.copy(tmp_path / "hf" / "tokenizer_config.json", tmp_path / "v4" / "tokenizer_config.json")
    v4_ours, v4_theirs = T5Tokenizer.from_pretrained(tmp_path / "v4"), transformers.T5Tokenizer.from_pretrained(
        tmp_path / "v4")
    for text in ("Hello   world  again", "a <extra_id_0>.x", "x <new_token> y"):
        assert v4_ours(text).input_ids == v4_theirs(text).input_ids == loaded(text).input_ids, text
    # Saved without spiece.model, ours writes only what it has; transformers reloads it.
    loaded.save_pretrained(tmp_path / "ours")
    assert not (tmp_path / "ours" / "spiece.model").exists()
    reloaded = transformers.T5Tokenizer.from_pretrained(tmp_path / "ours")
    assert reloaded("x <new_token> y").input_ids == theirs("x <new_token> y").input_ids
    # spiece.model alone, copied from our save: same tokenizer.
    (tmp_path / "sp_only").mkdir()
    shutil.copy(out / "spiece.model", tmp_path / "sp_only" / "spiece.model")
    alone = T5Tokenizer.from_pretrained(tmp_path / "sp_only")
    assert all(alone(t).input_ids == ours(t).input_ids for t in TEXTS)


def test_t5_v4_style_directory_matches_transformers(t5_trained, tmp_path):
    """spiece.model + a transformers-v4 tokenizer_config.json (legacy flag, cleanup, max length)."""
    out, ours_trained = t5_trained
    shutil.copy(out / "spiece.model", tmp_path / "spiece.model")
    config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 100, "legacy": True, "model_max_length": 512,
              "additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)],
              "clean_up_tokenization_spaces": True, "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = T5Tokenizer.from_pretrained(tmp_path), transformers.T5Tokenizer.from_pretrained(tmp_path)
    assert ours.model_max_length == theirs.model_max_length == 512
    text = "I don't know . Is it ? Yes , it 's fine !"
    ids = ours(text).input_ids
    assert ids == theirs(text).input_ids == ours_trained(text).input_ids
    for skip in (False, True):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.decode(ids, skip_special_tokens=True) == "I don't know. Is it? Yes, it's fine!"  # cleaned up
    assert ours.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False) == text
    # truncation=True / padding="max_length" without max_length use model_max_length.
    long = "word " * 600
    assert len(ours(long, truncation=True).input_ids) == len(theirs(long, truncation=True).input_ids) == 512
    assert ours("x", padding="max_length").input_ids == theirs("x", padding="max_length").input_ids
    # Picklable (DataLoader workers), and the copy tokenizes the same.
    copy = pickle.loads(pickle.dumps(ours))
    assert copy(long, truncation=True).input_ids == ours(long, truncation=True).input_ids


def _v4_layout(kind: str, t5_trained, electra_trained, root):
    """A transformers-v4 directory without tokenizer.json, keeping tokens where v4 kept them."""
    if kind == "t5-added_tokens_decoder":  # spiece.model; the added tokens in tokenizer_config.json
        shutil.copy(t5_trained[0] / "spiece.model", root / "spiece.model")
        n = len(t5_trained[1])
        decoder = {str(n): {"content": "newword", "lstrip": False, "normalized": True, "rstrip": False,
                            "single_word": False, "special": False},
                   str(n + 1): {"content": "<ent>", "lstrip": False, "normalized": False, "rstrip": False,
                                "single_word": False, "special": True}}
        config = {"tokenizer_class": "T5Tokenizer", "extra_ids": 100, "added_tokens_decoder": decoder,
                  "additional_special_tokens": [f"<extra_id_{i}>" for i in range(100)]}
        (root / "tokenizer_config.json").write_text(json.dumps(config))
        return T5Tokenizer, transformers.T5Tokenizer
    vocab = (electra_trained[0] / "vocab.txt").read_text().splitlines()
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer",
                                                            "do_lower_case": True}))
    if kind == "electra-added_tokens.json":  # added_tokens.json; <ent> special by special_tokens_map.json
        (root / "added_tokens.json").write_text(json.dumps({"newword": len(vocab), "<ent>": len(vocab) + 1}))
        special = {"additional_special_tokens": ["<ent>"]}
    else:  # a vocabulary line made a special token by special_tokens_map.json alone
        vocab[7] = "<ent>"
        special = {"additional_special_tokens": ["<ent>"], "mask_token": "[MASK]"}
    (root / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (root / "special_tokens_map.json").write_text(json.dumps(special))
    return ElectraTokenizer, transformers.BertTokenizer


@pytest.mark.parametrize("kind", ["t5-added_tokens_decoder", "electra-added_tokens.json", "electra-special_tokens_map"])
def test_v4_added_and_special_tokens_outside_tokenizer_json_match_transformers(kind, t5_trained, electra_trained,
                                                                               tmp_path):
    """added_tokens_decoder, added_tokens.json and special_tokens_map.json's additional_special_tokens
    were ignored: the tokens were split into pieces and skip_special_tokens kept them. convert's
    tokenizer copy keeps them too."""
    from t5electra.commands.convert import copy_tokenizer

    (tmp_path / "v4").mkdir()
    ours_cls, theirs_cls = _v4_layout(kind, t5_trained, electra_trained, tmp_path / "v4")
    ours, theirs = ours_cls.from_pretrained(tmp_path / "v4"), theirs_cls.from_pretrained(tmp_path / "v4")
    text = "the newword <ent> cat" if "newword" in theirs.get_vocab() else "the <ent> cat"
    ids = ours(text).input_ids
    assert len(ours) == len(theirs) and ids == theirs(text).input_ids
    assert theirs.convert_tokens_to_ids("<ent>") in ids and "<ent>" in ours.all_special_tokens
    assert ours.decode(ids) == theirs.decode(ids)
    stripped, expected = ours.decode(ids, skip_special_tokens=True), theirs.decode(ids, skip_special_tokens=True)
    if kind == "electra-added_tokens.json":
        # transformers lists this <ent> among all_special_tokens but adds it from added_tokens.json as a
        # plain token, so its skip_special_tokens keeps it; ours strips what it calls special
        expected = expected.replace(" <ent>", "")
    assert stripped == expected and "<ent>" not in stripped
    copy_tokenizer(tmp_path / "v4", tmp_path / "converted")
    assert ours_cls.from_pretrained(tmp_path / "converted")(text).input_ids == ids
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "converted")
    assert again(text).input_ids == ids and again.decode(ids, skip_special_tokens=True) == stripped


def test_t5_train_from_iterator_and_bad_input(corpus, tmp_path):
    lines = corpus.read_text(encoding="utf-8").splitlines()
    tok = T5Tokenizer.train(iter(lines), 300, extra_ids=10)
    assert len(tok) == 310 and tok.convert_tokens_to_ids("<extra_id_0>") == 309
    assert "<extra_id_10>" not in tok.get_vocab()
    with pytest.raises(InvalidInputError, match="Vocabulary size too high"):
        T5Tokenizer.train(iter(lines[:20]), 5000)
    with pytest.raises(InvalidInputError, match="nope.txt"):
        T5Tokenizer.train([tmp_path / "nope.txt"], 300)
    # A GBK file: SentencePiece trained on its bytes as U+FFFD pieces without a word (ELECTRA refused it)
    (tmp_path / "gbk.txt").write_bytes(("我爱北京天安门\n" * 50).encode("gbk"))
    with pytest.raises(InvalidInputError, match=r"gbk.txt: not UTF-8 text .* of line 1"):
        T5Tokenizer.train([tmp_path / "gbk.txt"], 20)
    # Texts passed as a list by mistake: a short error that says what to do, not the whole corpus.
    with pytest.raises(InvalidInputError, match=r"iter\(texts\)") as err:
        T5Tokenizer.train(lines + [" ".join(lines[:400])], 300)
    assert len(str(err.value)) < 400
    # A BPE SentencePiece model is not T5's.
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines[:300]), model_prefix=str(tmp_path / "spiece"),
                                   vocab_size=100, model_type="bpe", minloglevel=2)
    with pytest.raises(ConfigError, match="not UNIGRAM"):
        T5Tokenizer.from_pretrained(tmp_path)


# -- ELECTRA / BERT ---------------------------------------------------------------------------
ELECTRA_CASES = [
    dict(),
    dict(padding=True, return_tensors="pt"),
    dict(padding="max_length", max_length=32, return_tensors="np"),
    dict(truncation=True, max_length=8),
    dict(truncation="only_second", max_length=9),
    dict(truncation="only_first", max_length=16),
    dict(truncation="longest_first", max_length=10, padding=True, return_tensors="pt"),
    dict(truncation="only_second", max_length=12, stride=3, return_overflowing_tokens=True,
         return_offsets_mapping=True, padding=True),
    dict(return_offsets_mapping=True, return_special_tokens_mask=True, return_token_type_ids=False),
]


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    return ElectraTokenizer.from_pretrained(minilm_dir), transformers.BertTokenizer.from_pretrained(minilm_dir)


def test_electra_minilm_texts_match_transformers(minilm):
    ours, theirs = minilm
    assert json.loads(ours.backend_tokenizer.to_str())["model"] == json.loads(theirs.backend_tokenizer.to_str())["model"]
    assert (ours.cls_token_id, ours.sep_token_id, ours.mask_token_id, ours.pad_token_id, ours.unk_token_id) == (
        101, 102, 103, 0, 100)
    assert ours.model_max_length == theirs.model_max_length == 512 and len(ours) == len(theirs)
    for text in TEXTS + ["[CLS] [MASK] [SEP] [mask] x", "Don't   STOP!!  ...", "\x00\ufffd control chars"]:
        a, b = ours(text, return_offsets_mapping=True), theirs(text, return_offsets_mapping=True)
        assert as_lists(a) == as_lists(b), text
        assert ours.tokenize(text) == theirs.tokenize(text)
        for skip in (False, True):
            assert ours.decode(a.input_ids, skip_special_tokens=skip) == theirs.decode(b.input_ids,
                                                                                      skip_special_tokens=skip)
    assert ours("a" * 150).input_ids == [101, 100, 102]  # words over 100 characters -> [UNK]
    assert ours.tokenize("Héllo 日本") == ["hello", "日", "本"]  # lower-cased, accents stripped, CJK split


@pytest.mark.parametrize("kwargs", ELECTRA_CASES, ids=[str(k) for k in ELECTRA_CASES])
def test_electra_pairs_match_transformers(minilm, kwargs):
    ours, theirs = minilm
    first, second = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    a, b = ours(first, second, **kwargs), theirs(first, second, **kwargs)
    assert as_lists(a) == as_lists(b) and list(a) == list(b)
    a, b = ours(PAIRS[0][0], PAIRS[0][1], **kwargs), theirs(PAIRS[0][0], PAIRS[0][1], **kwargs)
    assert as_lists(a) == as_lists(b)
    if kwargs.get("return_overflowing_tokens"):  # QA windows: which sample, which sequence
        assert a.overflow_to_sample_mapping == b["overflow_to_sample_mapping"]
        assert a.sequence_ids(0) == b.sequence_ids(0)


def test_electra_split_into_words_matches_transformers(minilm):
    ours, theirs = minilm
    words = [["Hello", "wörld", "!"], ["x"]]
    a = ours(words, is_split_into_words=True, padding=True)
    b = theirs(words, is_split_into_words=True, padding=True)
    assert as_lists(a) == as_lists(b) and a.word_ids(0) == b.word_ids(0)


def test_electra_vocab_txt_and_cased_config_match_transformers(minilm_dir, tmp_path):
    # vocab.txt alone (no tokenizer.json), cased, accents kept: the config decides.
    shutil.copy(minilm_dir / "vocab.txt", tmp_path / "vocab.txt")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "strip_accents": False}))
    ours, theirs = ElectraTokenizer.from_pretrained(tmp_path), transformers.BertTokenizer.from_pretrained(tmp_path)
    assert ours.do_lower_case is False
    for text in TEXTS[:8]:
        assert ours(text).input_ids == theirs(text).input_ids, text
    assert ours("Hello").input_ids != ElectraTokenizer.from_pretrained(minilm_dir)("Hello").input_ids


def test_electra_train_save_and_transformers_loads(electra_trained, tmp_path):
    out, ours = electra_trained
    assert {"vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"} <= {
        p.name for p in out.iterdir()}
    assert [ours.pad_token_id, ours.unk_token_id, ours.cls_token_id, ours.sep_token_id, ours.mask_token_id] == [
        0, 1, 2, 3, 4]
    assert len(ours) == 600
    for theirs in (transformers.BertTokenizer.from_pretrained(out), transformers.AutoTokenizer.from_pretrained(out)):
        for text in TEXTS:
            assert ours(text).input_ids == theirs(text).input_ids, text
    reloaded = ElectraTokenizer.from_pretrained(out)
    pair = ("the cat sat", "on the [MASK] mat")
    assert as_lists(reloaded(*pair)) == as_lists(ours(*pair))
    n_first, n_all = len(reloaded(pair[0]).input_ids), len(reloaded(*pair).input_ids)  # [CLS] A [SEP] | B [SEP]
    assert reloaded(*pair).token_type_ids == [0] * n_first + [1] * (n_all - n_first)
    # Tokens transformers added (one special, one not) come back from its tokenizer.json.
    theirs = transformers.BertTokenizer.from_pretrained(out)
    theirs.add_special_tokens({"additional_special_tokens": ["<ent>"]})
    theirs.add_tokens(["newword"])
    theirs.save_pretrained(tmp_path / "added")
    loaded = ElectraTokenizer.from_pretrained(tmp_path / "added")
    text = "the <ent> newword cat"
    ids = loaded(text).input_ids
    assert ids == theirs(text).input_ids and {600, 601} <= set(ids)
    assert loaded.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    assert loaded.convert_ids_to_tokens(ids, skip_special_tokens=True) == theirs.convert_ids_to_tokens(
        ids, skip_special_tokens=True)
    # From an iterator, cased.
    cased = ElectraTokenizer.train(iter(["Hello World hello world"] * 50), 80, lowercase=False, min_frequency=1)
    assert cased.tokenize("Hello hello") == ["Hello", "hello"]


def test_electra_training_gives_the_same_vocabulary_on_every_run(corpus, tmp_path):
    """tokenizers' WordPiece trainer numbers its ## pieces in hash-map order (seeded per process), so
    its vocabularies differed run to run (t5electra/wordpiece.py); ours: the same vocab.txt in two
    processes with different hash seeds, and the same pieces as tokenizers' trainer but for ties."""
    import os
    import subprocess
    import sys

    script = ("import sys; from t5electra.tokenizers import ElectraTokenizer; "
              "ElectraTokenizer.train(sys.argv[1], 600, output_dir=sys.argv[2])")
    for seed in ("1", "2"):
        subprocess.run([sys.executable, "-c", script, str(corpus), str(tmp_path / seed)], check=True,
                       env={**os.environ, "PYTHONHASHSEED": seed})
    ours = (tmp_path / "1" / "vocab.txt").read_text(encoding="utf-8")
    assert ours == (tmp_path / "2" / "vocab.txt").read_text(encoding="utf-8")
    from tokenizers.implementations import BertWordPieceTokenizer
    from tokenizers.trainers import WordPieceTrainer

    ref = BertWordPieceTokenizer(lowercase=True)
    ref._tokenizer.train([str(corpus)], trainer=WordPieceTrainer(
        vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"], show_progress=False,
        continuing_subword_prefix="##"))
    theirs = set(ref.get_vocab())
    assert len(theirs & set(ours.splitlines())) >= 0.95 * len(theirs)


def test_electra_missing_special_tokens(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[UNK]", "[CLS]", "[SEP]", "hello", "world"]) + "\n")
    tok = ElectraTokenizer.from_pretrained(tmp_path)
    assert tok("hello world").input_ids == [1, 3, 4, 2]
    with pytest.raises(MissingTokenError, match=r"mask_token '\[MASK\]' is not in the vocabulary"):
        _ = tok.mask_token_id
    with pytest.raises(MissingTokenError, match=r"\[PAD\]"):
        tok(["hello", "hello world"], padding=True)
    (tmp_path / "vocab.txt").write_text("[CLS]\n[SEP]\nhello\n")
    with pytest.raises(MissingTokenError, match=r"unk_token '\[UNK\]'.*" + str(tmp_path)):
        ElectraTokenizer.from_pretrained(tmp_path)


# -- errors and CLI ---------------------------------------------------------------------------
def test_missing_directories_and_files(tmp_path, t5_trained, electra_trained):
    with pytest.raises(CheckpointNotFoundError, match="nowhere does not exist"):
        T5Tokenizer.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(CheckpointNotFoundError, match="is a file"):
        T5Tokenizer.from_pretrained(t5_trained[0] / "spiece.model")
    with pytest.raises(CheckpointNotFoundError, match="spiece.model, tokenizer.json"):
        T5Tokenizer.from_pretrained(tmp_path)
    with pytest.raises(CheckpointNotFoundError, match="vocab.txt, tokenizer.json"):
        ElectraTokenizer.from_pretrained(tmp_path)
    # The other family's files, or a broken file: ConfigError naming the file.
    with pytest.raises(ConfigError, match="tokenizer.json: model type 'Unigram'"):
        ElectraTokenizer.from_pretrained(t5_trained[0])
    with pytest.raises(ConfigError, match="tokenizer.json: model type 'WordPiece'"):
        T5Tokenizer.from_pretrained(electra_trained[0])
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ConfigError, match="tokenizer.json: not valid JSON"):
        T5Tokenizer.from_pretrained(tmp_path)


def test_bad_call_arguments(minilm):
    tok, _ = minilm
    with pytest.raises(InvalidInputError, match="lengths"):
        tok(["a", "a b c"], return_tensors="pt")
    with pytest.raises(InvalidInputError, match="padding='sideways'"):
        tok("a", padding="sideways")
    with pytest.raises(InvalidInputError, match="-100"):
        tok.decode([101, -100, 102])
    with pytest.raises(InvalidInputError, match="text_pair"):
        tok(["a", "b"], ["only one"])
    with pytest.raises(InvalidInputError, match="cannot encode"):
        tok("a b c", "d e f", truncation="only_second", max_length=5)
    # a question longer than max_length with overflowing windows: the Rust backend panics
    # (pyo3's PanicException is a BaseException, which `except Exception` let through)
    with pytest.raises(InvalidInputError, match="cannot encode.*stride=128"):
        tok(["what " * 300], ["context word " * 400], truncation="only_second", max_length=384, stride=128,
            return_overflowing_tokens=True, padding="max_length")
    assert tok("a b c")["input_ids"]  # the tokenizer still works after the panic


def test_overflow_windows_cover_the_whole_text(minilm, monkeypatch):
    """QA windows must reach the end of a long context (tokenizers 0.23.1-2 stopped after the first
    window or two: huggingface/tokenizers#2091); those versions are refused by name, not used."""
    tok, theirs = minilm
    context = " ".join(f"word{i}" for i in range(200))
    enc = tok(["which word"], [context], truncation="only_second", max_length=32, stride=8,
              return_overflowing_tokens=True, return_offsets_mapping=True)
    assert enc["input_ids"] == theirs(["which word"], [context], truncation="only_second", max_length=32,
                                      stride=8, return_overflowing_tokens=True)["input_ids"]
    assert len(enc["input_ids"]) > 5 and all(len(ids) <= 32 for ids in enc["input_ids"])
    ends = [max(o[1] for o, s in zip(enc["offset_mapping"][r], enc.sequence_ids(r)) if s == 1)
            for r in range(len(enc["input_ids"]))]
    assert ends == sorted(ends) and ends[-1] == len(context)  # the last window ends where the text ends
    monkeypatch.setattr(tokenizer_base.tokenizers, "__version__", "0.23.2")
    with pytest.raises(ConfigError, match=r"tokenizers 0.23.2 .*tokenizers>=0.23.3"):
        tok(["which word"], [context], truncation="only_second", max_length=32, stride=8,
            return_overflowing_tokens=True)
    assert tok(["which word"], [context], truncation="only_second", max_length=32)["input_ids"]  # no windows


def test_cli_trains_both_kinds(corpus, tmp_path, capsys):
    assert cli_main(["tokenizer", "train", "--kind", "electra", "--vocab-size", "300",
                     "--output", str(tmp_path / "e"), str(corpus)]) == 0
    assert ElectraTokenizer.from_pretrained(tmp_path / "e").mask_token_id == 4
    assert cli_main(["tokenizer", "train", "--kind", "t5", "--vocab-size", "250", "--extra-ids", "3",
                     "--output", str(tmp_path / "t"), str(corpus)]) == 0
    assert len(T5Tokenizer.from_pretrained(tmp_path / "t")) == 253
    assert "253 tokens" in capsys.readouterr().out
    assert cli_main(["tokenizer", "train", "--kind", "t5", "--vocab-size", "250",
                     "--output", str(tmp_path / "x"), str(tmp_path / "missing.txt")]) == 1
    assert "missing.txt" in capsys.readouterr().err


def test_cli_keeps_the_tokenizer_of_a_model_or_run(corpus, tmp_path, capsys):
    """--output into a model directory replaced its tokenizer without a word (a WordPiece over a T5
    model deleted its spiece.model), as into a tokenizer directory that runs were made with."""
    model = tmp_path / "t5-model"
    assert cli_main(["tokenizer", "train", "--kind", "t5", "--vocab-size", "250", "--output", str(model),
                     str(corpus)]) == 0
    (model / "config.json").write_text("{}")
    before = {f.name: f.read_bytes() for f in model.iterdir()}
    args = ["tokenizer", "train", "--kind", "electra", "--vocab-size", "300", str(corpus), "--output"]
    capsys.readouterr()
    assert cli_main([*args, str(model)]) == 1
    assert "holds a model (config.json)" in capsys.readouterr().err
    assert cli_main([*args, str(model), "--overwrite"]) == 1
    assert {f.name: f.read_bytes() for f in model.iterdir()} == before
    (model / "config.json").unlink()
    assert cli_main([*args, str(model)]) == 1
    assert "already holds a tokenizer (tokenizer.json" in capsys.readouterr().err
    assert T5Tokenizer.from_pretrained(model)("the cat")["input_ids"]  # unchanged
    assert cli_main([*args, str(model), "--overwrite"]) == 0
    assert ElectraTokenizer.from_pretrained(model).mask_token_id == 4


@pytest.mark.parametrize("kwargs", [dict(), dict(padding="max_length", max_length=12), dict(pad_to_multiple_of=8),
                                    dict(padding_side="left"), dict(return_tensors="pt")], ids=str)
def test_pad_matches_transformers(minilm, kwargs):
    """tokenizer.pad on encodings made without padding (DataCollatorWithPadding's call)."""
    tok, hf = minilm
    texts = ["a short one", "a somewhat longer sentence here", "x"]
    ours = tok.pad([{**tok(t), "labels": i} for i, t in enumerate(texts)], **kwargs)
    theirs = hf.pad([{**hf(t), "labels": i} for i, t in enumerate(texts)], **kwargs)
    assert set(ours) == set(theirs)
    for key in theirs:
        a, b = ours[key], theirs[key]
        assert (a.tolist() if hasattr(a, "tolist") else a) == (b.tolist() if hasattr(b, "tolist") else b), key


def test_jsonl_files_are_read_by_the_cli_and_refused_as_plain_text_by_the_api(tmp_path, capsys):
    """`t5electra data fetch` writes JSON lines ({"text": ...}): the CLI trains on their texts (as
    pretraining reads them); the API, which reads files as plain text, refuses them by name."""
    import json as _json

    from t5electra.cli import main

    rows = [{"text": f"the film number {i} was good and the cast was great"} for i in range(60)]
    (tmp_path / "c.jsonl").write_text("".join(_json.dumps(r) + "\n" for r in rows))
    assert main(["tokenizer", "train", "--kind", "electra", "--vocab-size", "200", "--min-frequency", "1",
                 "--output", str(tmp_path / "el"), str(tmp_path / "c.jsonl")]) == 0
    tok = ElectraTokenizer.from_pretrained(tmp_path / "el")
    assert "text" not in tok.get_vocab() and "{" not in tok.tokenize("the film")
    assert main(["tokenizer", "train", "--kind", "t5", "--vocab-size", "35", "--output", str(tmp_path / "t5"),
                 str(tmp_path / "c.jsonl")]) == 0
    t5 = T5Tokenizer.from_pretrained(tmp_path / "t5")
    assert t5.decode(t5("the film was good")["input_ids"], skip_special_tokens=True) == "the film was good"
    with pytest.raises(InvalidInputError, match="c.jsonl: not plain text"):
        ElectraTokenizer.train(tmp_path / "c.jsonl", vocab_size=50)


@pytest.mark.parametrize("kind", ["t5", "electra"])
def test_add_tokens_and_add_special_tokens_as_transformers(kind, sp_dir, electra_trained, tmp_path):
    """README: tokenizer.add_tokens([...]) then model.resize_token_embeddings(len(tokenizer))."""
    if kind == "t5":
        ours, theirs = T5Tokenizer.from_pretrained(sp_dir), transformers.T5Tokenizer.from_pretrained(sp_dir)
    else:
        out, _ = electra_trained
        ours, theirs = ElectraTokenizer.from_pretrained(out), transformers.BertTokenizer.from_pretrained(out)
    n = len(ours)
    assert ours.add_tokens(["newword", "zzqx"]) == theirs.add_tokens(["newword", "zzqx"]) == 2
    assert ours.add_tokens("newword") == 0 and len(ours) == len(theirs) == n + 2
    assert ours.add_special_tokens({"additional_special_tokens": ["<ent>"]}) == 1
    theirs.add_special_tokens({"additional_special_tokens": ["<ent>"]})
    text = "the newword <ent> zzqx cat"
    assert ours(text).input_ids == theirs(text).input_ids
    ids = ours(text).input_ids
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True)
    ours.save_pretrained(tmp_path)
    again = type(ours).from_pretrained(tmp_path)
    assert again(text).input_ids == ids and "<ent>" in again.all_special_tokens
    with pytest.raises(InvalidInputError, match="unknown key 'pad'"):
        ours.add_special_tokens({"pad": "<p>"})


def test_t5_training_reads_documents_longer_than_sentencepieces_limit(tmp_path):
    """SentencePiece skips sentences over 4,192 bytes without a word: a corpus of one long article per
    line trained on nothing ("[!sentences_.empty()]") or on the few short lines. They are cut into
    pieces of <= 4,000 bytes at spaces (Chinese: in runs of characters) and all read."""
    import gzip
    import random

    from t5electra.commands.tokenizer import training_input
    from t5electra.tokenizers import _short_pieces

    rng = random.Random(0)
    words = [f"w{a}{b}" for a in "abcdefghij" for b in "klmnopqrst"]
    docs = [" ".join(rng.choice(words) for _ in range(1500)) for _ in range(40)]  # ~6-7 kB each
    path = tmp_path / "long.txt"
    path.write_text("\n".join(docs) + "\n")
    tok = T5Tokenizer.train(str(path), vocab_size=80, extra_ids=4)  # was: "[!sentences_.empty()]"
    assert tok.unk_token_id not in tok("wak wbl")["input_ids"] and len(tok.tokenize("wak wbl")) <= 6
    assert all(len(p.encode()) <= 4000 for d in docs for p in _short_pieces(d))
    assert "".join(_short_pieces(docs[0])) == docs[0]
    zh = "中文句子" * 2000  # 24,000 bytes, no spaces
    assert "".join(_short_pieces(zh)) == zh and max(len(p.encode()) for p in _short_pieces(zh)) <= 4000
    (tmp_path / "empty.txt").write_text("\n\n")  # was SentencePiece's "INTERNAL: ... [!sentences_.empty()]"
    with pytest.raises(InvalidInputError, match="empty.txt: no text to train the tokenizer on"):
        T5Tokenizer.train(str(tmp_path / "empty.txt"), vocab_size=50)
    # a .txt.gz is decompressed for the trainer (it trained on the compressed bytes)
    with gzip.open(tmp_path / "c.txt.gz", "wt") as f:
        f.write("Emma Woodhouse, handsome\nclever, and rich\n")
    assert list(training_input([str(tmp_path / "c.txt.gz")])) == ["Emma Woodhouse, handsome", "clever, and rich"]


def test_electra_tokenizer_from_a_vocab_txt_path_as_bert_tokenizer(tmp_path):
    """``ElectraTokenizer("vocab.txt")``, transformers' ``BertTokenizer(vocab_file)`` form: it was a
    TypeError ("'in <string>' requires string as left operand") from deep inside."""
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "film", "##s", "good"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    ours = ElectraTokenizer(str(path))
    theirs = transformers.BertTokenizer(str(path))
    text = "The films good, unknown"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert ElectraTokenizer(path).get_vocab() == theirs.get_vocab()
    with pytest.raises(ConfigError, match="not a vocab.txt file"):
        ElectraTokenizer(str(tmp_path))
    with pytest.raises(ConfigError, match="a token -> id dict or a vocab.txt path"):
        ElectraTokenizer(tokens)
