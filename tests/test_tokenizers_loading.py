"""Loading and saving T5Tokenizer / ElectraTokenizer directories that transformers (or we) wrote
after changing special tokens, against transformers on the same directories; bad files."""

from __future__ import annotations

import json
import shutil

import pytest
import transformers

from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer
from small_vocab import SMALL_VOCAB



@pytest.fixture(scope="module")
def t5_dir(spiece_model_path, tmp_path_factory):
    """A T5 tokenizer trained here and saved by us (spiece.model + tokenizer.json), T5's conventions."""
    lines = (spiece_model_path.parent / "botchan.txt").read_text(encoding="utf-8").splitlines()[:600]
    out = tmp_path_factory.mktemp("t5")
    T5Tokenizer.train(iter(lines), 300, output_dir=out, character_coverage=1.0)
    return out


def _same_ids(ours, theirs, texts):
    for args in texts:
        assert ours(*args).input_ids == theirs(*args).input_ids, args


def test_electra_directory_with_cls_and_sep_as_added_tokens_loads_as_transformers(small_dir, tmp_path):
    """transformers' add_special_tokens({"cls_token": "<cls>", ...}) makes them added tokens (ids past
    the vocabulary): such a directory failed with MissingTokenError, as did our own round trip."""
    hf = transformers.BertTokenizer.from_pretrained(small_dir)
    hf.add_special_tokens({"cls_token": "<cls>", "sep_token": "<sep>"})
    hf.save_pretrained(tmp_path / "hf")
    ours, theirs = ElectraTokenizer.from_pretrained(tmp_path / "hf"), transformers.BertTokenizer.from_pretrained(
        tmp_path / "hf")
    _same_ids(ours, theirs, [("a",), ("a b", "c"), ("hello <sep> world",)])
    assert ours("a").input_ids == [15, 5, 16] and (ours.cls_token, ours.sep_token_id) == ("<cls>", 16)
    # our own add_special_tokens -> save -> load; as in transformers, the new [SEP] goes into the
    # template when the tokenizer is built (from_pretrained), not by add_special_tokens
    mine = ElectraTokenizer.from_pretrained(small_dir)
    mine.add_special_tokens({"sep_token": "<sep>"})
    mine.save_pretrained(tmp_path / "ours")
    again = ElectraTokenizer.from_pretrained(tmp_path / "ours")
    assert again("a b", "c").input_ids == transformers.BertTokenizer.from_pretrained(tmp_path / "ours")(
        "a b", "c").input_ids == [2, 5, 6, 15, 7, 15]


def test_electra_unk_token_added_past_the_vocabulary(small_dir, tmp_path):
    """The WordPiece model needs an unknown token of its vocabulary: it keeps tokenizer.json's, and
    unk_token_id is the added token's, as transformers (whose reload then cannot encode unknown
    words at all: 'Missing [UNK] token')."""
    hf = transformers.BertTokenizer.from_pretrained(small_dir)
    hf.add_special_tokens({"unk_token": "<unk>"})
    hf.save_pretrained(tmp_path)
    ours, theirs = ElectraTokenizer.from_pretrained(tmp_path), transformers.BertTokenizer.from_pretrained(tmp_path)
    assert ours.unk_token_id == theirs.unk_token_id == 15 and ours("a <unk>").input_ids == theirs("a <unk>").input_ids
    assert ours("zzz a").input_ids == hf("zzz a").input_ids == [2, 1, 5, 3]  # as before saving


def test_t5_directory_with_a_new_unk_bos_and_sep_loads_as_transformers(t5_dir, tmp_path):
    """T5 with unk_token an added token failed (MissingTokenError), and bos_token / sep_token
    were dropped on load."""
    hf = transformers.T5Tokenizer.from_pretrained(t5_dir)
    hf.add_special_tokens({"unk_token": "<unk2>", "bos_token": "<s>", "sep_token": "<sep>"})
    hf.save_pretrained(tmp_path)
    ours, theirs = T5Tokenizer.from_pretrained(tmp_path), transformers.T5Tokenizer.from_pretrained(tmp_path)
    _same_ids(ours, theirs, [("a ☃ <unk2> b",), ("x <s> y <sep> z",), ("a", "b")])
    for name in ("unk_token", "bos_token", "sep_token", "eos_token", "pad_token"):
        assert getattr(ours, name) == getattr(theirs, name), name
        assert getattr(ours, name + "_id") == getattr(theirs, name + "_id"), name
    assert 2 in ours("☃").input_ids  # unknown text is still the model's <unk> piece, as in transformers


@pytest.mark.parametrize("kind", ["electra", "t5"])
def test_named_special_tokens_outside_the_class_set_survive_save_and_load(kind, small_dir, t5_dir, tmp_path):
    """ELECTRA's bos/eos and T5's bos/sep/cls/mask were dropped by from_pretrained."""
    ours = ElectraTokenizer.from_pretrained(small_dir) if kind == "electra" else T5Tokenizer.from_pretrained(t5_dir)
    extra = {"bos_token": "<s>", "eos_token": "</s>"} if kind == "electra" else {
        "bos_token": "<s>", "sep_token": "<sep>", "cls_token": "<cls>", "mask_token": "<mask>"}
    ours.add_special_tokens(extra)
    ours.save_pretrained(tmp_path)
    again = type(ours).from_pretrained(tmp_path)
    theirs = (transformers.BertTokenizer if kind == "electra" else transformers.T5Tokenizer).from_pretrained(tmp_path)
    for name in extra:
        assert getattr(again, name) == getattr(theirs, name) == extra[name], name
        assert getattr(again, name + "_id") == getattr(theirs, name + "_id") == getattr(ours, name + "_id"), name
    assert again.special_tokens_map == theirs.special_tokens_map


def test_electra_adds_extra_special_tokens_the_vocabulary_lacks(small_dir):
    """additional_special_tokens not in vocab.txt were silently left out ('<ent>' split into pieces);
    transformers (and our T5Tokenizer) add them. Named ones ([MASK], [PAD]) still are not added."""
    ours = ElectraTokenizer.from_pretrained(small_dir, additional_special_tokens=["<ent>"])
    theirs = transformers.BertTokenizer.from_pretrained(small_dir, additional_special_tokens=["<ent>"])
    assert len(ours) == len(theirs) == 16 and ours("a <ent> b").input_ids == theirs("a <ent> b").input_ids
    assert "<ent>" in ours.all_special_tokens and ours.decode(ours("a <ent>").input_ids, skip_special_tokens=True) == "a"
    # listed by tokenizer_config.json alone (no added_tokens.json)
    (small_dir / "tokenizer_config.json").write_text(json.dumps({"additional_special_tokens": ["<ent>", "<x>"]}))
    ours, theirs = ElectraTokenizer.from_pretrained(small_dir), transformers.BertTokenizer.from_pretrained(small_dir)
    assert len(ours) == len(theirs) == 17
    _same_ids(ours, theirs, [("a <x> <ent> b",)])
    # a vocabulary without [MASK]: still not appended (docs/tokenizers.md)
    (small_dir / "vocab.txt").write_text("\n".join(t for t in SMALL_VOCAB if t != "[MASK]") + "\n")
    assert "[MASK]" not in ElectraTokenizer.from_pretrained(small_dir).get_vocab()


def test_t5_extra_special_tokens_are_the_sentinels_in_order(t5_dir, spiece_model_path, tmp_path):
    """From a directory with tokenizer.json, extra_special_tokens began with <pad>, </s>, <unk>,
    <extra_id_99>, ... (tokenizer.json's order); a re-save handed that order to transformers."""
    for directory in (t5_dir, tmp_path / "resaved", tmp_path / "hf"):
        if directory.name == "resaved":
            T5Tokenizer.from_pretrained(t5_dir).save_pretrained(directory)
        elif directory.name == "hf":
            transformers.T5Tokenizer.from_pretrained(t5_dir).save_pretrained(directory)
        ours, theirs = T5Tokenizer.from_pretrained(directory), transformers.T5Tokenizer.from_pretrained(directory)
        assert ours.extra_special_tokens == theirs.extra_special_tokens == ours.get_sentinel_tokens(), directory
        assert ours.all_special_tokens == theirs.all_special_tokens, directory
        assert ours.all_special_ids == theirs.all_special_ids, directory
    # spiece.model alone: transformers lists the control pieces too, and so do we
    shutil.copy(spiece_model_path, tmp_path / "spiece.model")
    ours, theirs = T5Tokenizer.from_pretrained(tmp_path), transformers.T5Tokenizer.from_pretrained(tmp_path)
    assert ours.extra_special_tokens == theirs.extra_special_tokens


def test_electra_saves_a_vocabulary_with_a_repeated_line(small_dir, tmp_path, caplog):
    """vocab.txt with a line twice loads with transformers' ids (the later line wins, leaving a gap)
    but save_pretrained raised ConfigError, so ELECTRA fine-tuning crashed at its first checkpoint."""
    (small_dir / "vocab.txt").write_text("\n".join([*SMALL_VOCAB, "hello", "zz"]) + "\n", encoding="utf-8")
    ours, theirs = ElectraTokenizer.from_pretrained(small_dir), transformers.BertTokenizer.from_pretrained(small_dir)
    texts = [("hello world zz a",), ("extraordinary", "hello")]
    _same_ids(ours, theirs, texts)
    with caplog.at_level("WARNING", logger="t5electra"):
        ours.save_pretrained(tmp_path)
    assert "not 0..16 without gaps (1 missing" in caplog.text
    _same_ids(ElectraTokenizer.from_pretrained(tmp_path), theirs, texts)
    _same_ids(transformers.BertTokenizer.from_pretrained(tmp_path), theirs, texts)
    (tmp_path / "tokenizer.json").unlink()  # vocab.txt alone keeps the ids too
    assert len((tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()) == 17
    _same_ids(ElectraTokenizer.from_pretrained(tmp_path), theirs, texts)
    _same_ids(transformers.BertTokenizer.from_pretrained(tmp_path), theirs, texts)


BAD_FILES = {  # name: (class, files, from_pretrained keywords, the ConfigError's message)
    "unigram without vocab": (T5Tokenizer, {"tokenizer.json": {"model": {"type": "Unigram"}}}, {},
                              r"tokenizer.json: model.vocab is missing"),
    "wordpiece without vocab": (ElectraTokenizer, {"tokenizer.json": {"model": {"type": "WordPiece"}}}, {},
                                r"tokenizer.json: model.vocab is missing"),
    "wordpiece vocab a list": (ElectraTokenizer, {"tokenizer.json": {"model": {"type": "WordPiece", "vocab": ["a"]}}},
                               {}, r"tokenizer.json: model.vocab is not \{"),
    "tokenizer.json a list": (T5Tokenizer, {"tokenizer.json": []}, {}, r"tokenizer.json: expected a JSON object"),
    "bad added_tokens": (ElectraTokenizer, {"tokenizer.json": {"model": {"type": "WordPiece", "vocab": {"[UNK]": 0}},
                                                               "added_tokens": [{"content": 1}]}}, {},
                         r"tokenizer.json: \"added_tokens\" must be a list"),
    "latin-1 vocab.txt": (ElectraTokenizer, {"vocab.txt": "[PAD]\n[UNK]\n[CLS]\n[SEP]\ncafé\n".encode("latin-1")}, {},
                          r"vocab.txt: not UTF-8 text"),
    "added_tokens.json a list": (ElectraTokenizer, {"vocab.txt": SMALL_VOCAB, "added_tokens.json": [1, 2]}, {},
                                 r"added_tokens.json: expected a JSON object"),
    "added_tokens.json ids": (ElectraTokenizer, {"vocab.txt": SMALL_VOCAB, "added_tokens.json": {"<x>": "15"}}, {},
                              r"added_tokens.json: must map tokens to ids"),
    "tokenizer_config.json a list": (T5Tokenizer, {"spiece.model": None, "tokenizer_config.json": []}, {},
                                     r"tokenizer_config.json: expected a JSON object"),
    "extra_ids a word": (T5Tokenizer, {"spiece.model": None, "tokenizer_config.json": {"extra_ids": "lots"}}, {},
                         r"tokenizer_config.json: extra_ids must be an integer >= 0, got 'lots'"),
    "do_lower_case a string": (ElectraTokenizer, {"vocab.txt": SMALL_VOCAB,
                                                  "tokenizer_config.json": {"do_lower_case": "false"}}, {},
                               r"tokenizer_config.json: do_lower_case must be true or false, got 'false'"),
    "do_lower_case keyword": (ElectraTokenizer, {"vocab.txt": SMALL_VOCAB}, {"do_lower_case": "no"},
                              r"ElectraTokenizer.from_pretrained\(do_lower_case=...\) must be true or false"),
    "padding_side": (ElectraTokenizer, {"vocab.txt": SMALL_VOCAB, "tokenizer_config.json": {"padding_side": "Left"}},
                     {}, r"tokenizer_config.json: padding_side must be 'left' or 'right'"),
    "mask_token a list": (ElectraTokenizer, {"vocab.txt": SMALL_VOCAB, "tokenizer_config.json": {"mask_token": [1]}},
                          {}, r"special_tokens_map.json\): mask_token must be a token"),
    "added_tokens_decoder": (T5Tokenizer, {"spiece.model": None, "tokenizer_config.json": {
        "added_tokens_decoder": {"x": "<a>"}}}, {}, r"tokenizer_config.json: added_tokens_decoder must map ids"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_tokenizer_files_are_config_errors_naming_the_file(case, tmp_path, spiece_model_path):
    """Were KeyError 'vocab', AttributeError, a bare 'Exception: stream did not contain valid UTF-8'
    without the path, ValueError, TypeError; a tokenizer_config.json that is a list loaded as {}."""
    from t5electra.errors import ConfigError

    cls, files, keywords, message = BAD_FILES[case]
    for name, content in files.items():
        path = tmp_path / name
        if name == "spiece.model":
            shutil.copy(spiece_model_path, path)
        elif name == "vocab.txt" and isinstance(content, list):
            path.write_text("\n".join(content) + "\n", encoding="utf-8")
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(json.dumps(content), encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as error:
        cls.from_pretrained(tmp_path, **keywords)
    assert str(tmp_path) in str(error.value) or keywords


@pytest.mark.parametrize("cls", [T5Tokenizer, ElectraTokenizer])
@pytest.mark.parametrize("source, message", [
    (lambda: iter([1, 2]), "training text 0 is a int, not a str"),
    (lambda: iter(["fine text"] * 5 + [b"bytes"]), "training text 5 is a bytes, not a str"),
    (lambda: 5, "an iterable of texts"),
    (lambda: ["a.txt", 3], r"training file\(s\) not found: 'a.txt', '3'")], ids=["ints", "bytes", "int", "list"])
def test_training_on_what_is_not_text_is_an_invalid_input_error(cls, source, message):
    """T5Tokenizer.train(iter([1, 2])) was an AttributeError, ElectraTokenizer's a TypeError."""
    from t5electra.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=message):
        cls.train(source(), 60)


def test_t5_user_defined_symbols_of_a_spiece_model_only_directory(spiece_model_path, tmp_path):
    """docs/tokenizers.md: from spiece.model alone, SentencePiece's user_defined_symbols are text
    pieces here, as sentencepiece makes them, and special tokens in transformers; a directory that
    either library saved gives the same ids in both."""
    import io

    import sentencepiece as spm

    lines = (spiece_model_path.parent / "botchan.txt").read_text(encoding="utf-8").splitlines()[:600]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_writer=model, vocab_size=300, pad_id=0,
                                   eos_id=1, unk_id=2, bos_id=-1, user_defined_symbols=["<sep>", "@@"],
                                   minloglevel=2)
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "spiece.model").write_bytes(model.getvalue())
    ours, theirs = T5Tokenizer.from_pretrained(tmp_path / "sp"), transformers.T5Tokenizer.from_pretrained(tmp_path / "sp")
    text = "a <sep> b @@ c"
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    assert ours(text).input_ids == sp.encode(text) + [1]
    assert ours.tokenize(text) == ["▁a", "▁", "<sep>", "▁b", "▁", "@@", "▁", "c"]
    assert theirs.tokenize(text) == ["▁a", "<sep>", "▁b", "@@", "▁", "c"]  # <sep>, @@ as special tokens
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    for directory in ("ours", "theirs"):
        a = T5Tokenizer.from_pretrained(tmp_path / directory)(text).input_ids
        assert a == transformers.T5Tokenizer.from_pretrained(tmp_path / directory)(text).input_ids, directory
