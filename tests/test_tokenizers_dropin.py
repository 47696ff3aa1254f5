"""T5Tokenizer / ElectraTokenizer as drop-ins for transformers' tokenizers: per-call settings that
must not stick or leak between threads, BatchEncoding.to, and the API the data collators use."""

from __future__ import annotations

import json
import pickle
import shutil
import threading

import pytest
import torch
import transformers

from t5electra.errors import InvalidInputError
from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer


@pytest.mark.parametrize("bad", [dict(padding_side="Left"), dict(pad_to_multiple_of=-2), dict(pad_to_multiple_of=2.5)],
                         ids=str)
def test_a_call_that_fails_leaves_no_truncation_or_padding_behind(small_dir, tmp_path, bad):
    """A call refused while setting up padding left the backend truncating: the next call was cut to
    the old max_length and save_pretrained wrote that truncation into tokenizer.json."""
    tok = ElectraTokenizer.from_pretrained(small_dir)
    with pytest.raises(InvalidInputError, match="padding_side|pad_to_multiple_of"):
        tok("a b c d e f", truncation=True, max_length=4, padding=True, **bad)
    assert tok("a b c d e f").input_ids == transformers.BertTokenizer.from_pretrained(small_dir)(
        "a b c d e f").input_ids == [2, 5, 6, 7, 8, 9, 10, 3]
    backend = json.loads(tok.backend_tokenizer.to_str())
    assert backend["truncation"] is None and backend["padding"] is None


def test_saved_tokenizer_json_never_carries_truncation_or_padding(small_dir, tmp_path):
    tok = ElectraTokenizer.from_pretrained(small_dir)
    tok.backend_tokenizer.enable_truncation(4)  # set by hand on the backend: still not the file's
    tok.backend_tokenizer.enable_padding(length=8)
    tok.save_pretrained(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "tokenizer.json").read_text(encoding="utf-8"))
    assert saved["truncation"] is None and saved["padding"] is None
    from tokenizers import Tokenizer

    assert len(Tokenizer.from_file(str(tmp_path / "out" / "tokenizer.json")).encode("a b c d e f").ids) == 8


def test_backend_settings_are_cleared_when_the_backend_refuses_one(small_dir):
    """Truncation was switched on before padding, outside the try whose finally clears both."""
    tok = ElectraTokenizer.from_pretrained(small_dir)
    real = tok.backend_tokenizer

    class RefusesPadding:
        def __getattr__(self, name):
            return getattr(real, name)

        def enable_padding(self, **kwargs):
            raise RuntimeError("refused")

    tok._backend = RefusesPadding()
    with pytest.raises(RuntimeError, match="refused"):
        tok("a b c d e f", truncation=True, max_length=4, padding=True)
    tok._backend = real
    assert real.truncation is None and real.padding is None
    assert len(tok("a b c d e f").input_ids) == 8


def test_batch_encoding_to_moves_the_device_and_never_casts_the_ids(small_dir, caplog):
    """.to(torch.float16) cast the ids (4469 -> 4468 in a real vocabulary); transformers moves only
    the device and warns about a dtype."""
    tok = ElectraTokenizer.from_pretrained(small_dir)
    enc = tok(["extraordinary world"], return_tensors="pt")
    enc["input_ids"] = enc["input_ids"] + 4466  # ids fp16 cannot hold exactly (4469 -> 4468)
    before = {k: v.clone() for k, v in enc.items()}
    with caplog.at_level("WARNING", logger="t5electra"):
        assert enc.to(torch.float16) is enc
    assert "not cast" in caplog.text
    for key, value in enc.items():
        assert value.dtype == torch.long and torch.equal(value, before[key]), key
    hf = transformers.BertTokenizer.from_pretrained(small_dir)(["extraordinary world"], return_tensors="pt")
    assert hf.to(torch.float16)["input_ids"].dtype == torch.long  # the reference does the same
    assert enc.to("cpu", non_blocking=True).input_ids.device.type == "cpu"
    assert enc.to(torch.device("cpu")).input_ids.dtype == torch.long
    with pytest.raises(InvalidInputError, match="expected a device"):
        enc.to([1])


@pytest.mark.parametrize("call", ["tokenize", "tokenize-split", "encode", "pickle"])
def test_no_call_sees_another_threads_padding_or_truncation(small_dir, call):
    """tokenize() ran outside the lock that keeps one call's backend settings from another's
    ('hello world' -> 16 tokens with [PAD]s), and a pickle taken meanwhile kept them."""
    tok = ElectraTokenizer.from_pretrained(small_dir)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            tok(["a b c"] * 8, padding="max_length", max_length=16)
            tok(["[CLS] a b c d e f"] * 8, truncation=True, max_length=3, split_special_tokens=True)

    thread = threading.Thread(target=busy)
    thread.start()
    try:
        wrong = 0
        for _ in range(200):
            if call == "tokenize":
                wrong += tok.tokenize("hello world [SEP]") != ["hello", "world", "[SEP]"]
            elif call == "tokenize-split":
                wrong += tok.tokenize("hello [SEP]", split_special_tokens=True) != ["hello", "[UNK]", "[UNK]", "[UNK]"]
            elif call == "encode":
                wrong += tok.encode("hello world a b") != [2, 11, 12, 5, 6, 3]
            else:
                wrong += pickle.loads(pickle.dumps(tok)).encode("hello world a b") != [2, 11, 12, 5, 6, 3]
    finally:
        stop.set()
        thread.join()
    assert wrong == 0


def test_encode_tokenize_and_call_take_transformers_keywords(minilm_dir, tmp_path):
    """encode(..., is_split_into_words=, pad_to_multiple_of=) and split_special_tokens were TypeErrors;
    what the backend cannot do (spaces_between_special_tokens) is refused by name, never ignored."""
    ours, theirs = ElectraTokenizer.from_pretrained(minilm_dir), transformers.BertTokenizer.from_pretrained(minilm_dir)
    for args, kwargs in [((["hello", "world"],), dict(is_split_into_words=True)),
                         (("hello world",), dict(padding=True, pad_to_multiple_of=8)),
                         (("a [SEP] b [MASK]",), dict(split_special_tokens=True)),
                         (("a [SEP] b [MASK]",), dict(split_special_tokens=False)),
                         (("a [SEP] b",), dict(verbose=False))]:
        assert ours.encode(*args, **kwargs) == theirs.encode(*args, **kwargs), kwargs
        assert ours(*args, **kwargs).input_ids == theirs(*args, **kwargs).input_ids, kwargs
    for kwargs in (dict(split_special_tokens=True), dict(), dict(add_special_tokens=True)):
        assert ours.tokenize("a [SEP] b", **kwargs) == theirs.tokenize("a [SEP] b", **kwargs), kwargs
    assert ours.tokenize("a [SEP] b") == ["a", "[SEP]", "b"]  # the setting does not stick
    # a tokenizer_config.json split_special_tokens is the default, kept by save_pretrained
    ours.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**config, "split_special_tokens": True}))
    split = ElectraTokenizer.from_pretrained(tmp_path)
    assert split("a [SEP]").input_ids == transformers.BertTokenizer.from_pretrained(tmp_path)("a [SEP]").input_ids
    assert split.tokenize("[SEP]") != ["[SEP]"] and split.tokenize("[SEP]", split_special_tokens=False) == ["[SEP]"]
    split.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "tokenizer_config.json").read_text())["split_special_tokens"] is True
    with pytest.raises(InvalidInputError, match="spaces_between_special_tokens= is not supported"):
        ours.decode([101, 7592, 102], spaces_between_special_tokens=False)
    with pytest.raises(InvalidInputError, match="batch_decode: spaces_between_special_tokens="):
        ours.batch_decode([[101, 7592, 102]], spaces_between_special_tokens=True)
    with pytest.raises(InvalidInputError, match=r"__call__: return_dict= is not supported"):
        ours.encode("hello", return_dict=True)
    with pytest.raises(InvalidInputError, match="tokenize takes one text"):
        ours.tokenize(["a", "b"])


@pytest.fixture(scope="module")
def pairs(minilm_dir, spiece_model_path, tmp_path_factory):
    """(ours, transformers') on the MiniLM vocabulary and on sentencepiece's test model (T5)."""
    sp = tmp_path_factory.mktemp("sp")
    shutil.copy(spiece_model_path, sp / "spiece.model")
    return {"electra": (ElectraTokenizer.from_pretrained(minilm_dir), transformers.BertTokenizer.from_pretrained(
        minilm_dir)), "t5": (T5Tokenizer.from_pretrained(sp), transformers.T5Tokenizer.from_pretrained(sp))}


@pytest.mark.parametrize("kind", ["electra", "t5"])
def test_special_tokens_api_as_transformers(pairs, kind):
    """get_special_tokens_mask (DataCollatorForLanguageModeling), special_tokens_map, get_added_vocab
    and is_fast were missing."""
    ours, theirs = pairs[kind]
    assert ours.special_tokens_map == theirs.special_tokens_map and ours.is_fast is theirs.is_fast is True
    assert ours.get_added_vocab() == theirs.get_added_vocab()
    ids = ours("a <extra_id_0> [MASK] hello", "world").input_ids
    assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == theirs.get_special_tokens_mask(
        ids, already_has_special_tokens=True)
    assert ours.get_special_tokens_mask(torch.tensor(ids), already_has_special_tokens=True) == \
        ours.get_special_tokens_mask(ids, already_has_special_tokens=True)
    # without special tokens yet: where the template puts them (transformers v4's answer)
    a, b = ours.encode("a b c", add_special_tokens=False), ours.encode("hello", add_special_tokens=False)
    assert ours.get_special_tokens_mask(a) == ours("a b c", return_special_tokens_mask=True).special_tokens_mask
    assert ours.get_special_tokens_mask(a, b) == ours("a b c", "hello", return_special_tokens_mask=True
                                                      ).special_tokens_mask
    with pytest.raises(InvalidInputError, match="token_ids_1 must be None"):
        ours.get_special_tokens_mask(a, b, already_has_special_tokens=True)


def test_data_collator_for_language_modeling_works_as_with_transformers(pairs):
    ours, theirs = pairs["electra"]
    texts = ["hello world", "a much longer sentence about the world", "x"]
    for examples in (lambda tok: [dict(tok(t)) for t in texts], lambda tok: [tok(t).input_ids for t in texts]):
        out = []
        for tok in (ours, theirs):
            collator = transformers.DataCollatorForLanguageModeling(tok, mlm_probability=1.0, mask_replace_prob=1.0,
                                                                    random_replace_prob=0.0, pad_to_multiple_of=8)
            out.append({k: v.tolist() for k, v in collator(examples(tok)).items()})
        assert out[0] == out[1]
        assert ours.mask_token_id in out[0]["input_ids"][0] and out[0]["labels"][0][0] == -100  # [CLS] unmasked


@pytest.mark.parametrize("kwargs", [dict(padding="max_length", max_length=6), dict(padding="max_length"),
                                    dict(padding=True, pad_to_multiple_of=4), dict(return_tensors="pt"),
                                    dict(padding="max_length", max_length=7, padding_side="left")], ids=str)
@pytest.mark.parametrize("kind", ["electra", "t5"])
def test_pad_one_encoding_and_tensors_as_transformers(pairs, kind, kwargs):
    """tok.pad(tok("hello"), ...) failed ('int' object is not iterable); padding='max_length' without
    max_length needed one (transformers uses model_max_length)."""
    ours, theirs = pairs[kind]
    for tok in (ours, theirs):
        tok.model_max_length = 9
    try:
        for inputs in (lambda tok: tok("hello"), lambda tok: tok("hello", return_tensors="pt"),
                       lambda tok: {"input_ids": tok("hello", return_tensors="pt").input_ids[0]},
                       lambda tok: [{k: v[0] for k, v in tok(t, return_tensors="np").items()} for t in ("hello", "a b c")]
                       if "max_length" in str(kwargs) else tok(["hello"])):
            a, b = ours.pad(inputs(ours), **kwargs), theirs.pad(inputs(theirs), **kwargs)
            assert {k: type(v) for k, v in a.items()} == {k: type(v) for k, v in b.items()}
            assert {k: v.tolist() if hasattr(v, "tolist") else v for k, v in a.items()} == {
                k: v.tolist() if hasattr(v, "tolist") else v for k, v in b.items()}
    finally:
        for tok in (ours, theirs):
            tok.model_max_length = int(1e30)
    with pytest.raises(InvalidInputError, match=r"tokens\(\) needs the tokenizer's encodings"):
        a.tokens(0)
