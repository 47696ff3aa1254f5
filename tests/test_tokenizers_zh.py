"""Tokenizers on Chinese: T5's SentencePiece with byte fallback (a character outside the
vocabulary becomes its UTF-8 byte pieces, never <unk>, and decodes back), and ELECTRA's WordPiece
trained on Chinese text (every CJK character its own token, as transformers' BertTokenizer)."""

from __future__ import annotations

import pytest
import sentencepiece as spm
import transformers

from t5electra.tokenizers import ElectraTokenizer, T5Tokenizer

CORPUS = ["迈向充满希望的新世纪", "中共中央总书记、国家主席发表新年讲话", "这本书写得非常好，值得一读。",
          "质量太差了，千万别买。", "我们在北京参加了新年联欢会", "物流很快，包装也不错，孩子很喜欢。"] * 30
RARE = "饕餮🐉 and 中国"  # 饕餮 and the dragon are in no training line; 中, 国 are


@pytest.fixture(scope="module")
def byte_fallback_t5(tmp_path_factory):
    d = tmp_path_factory.mktemp("t5-zh")
    return T5Tokenizer.train(iter(CORPUS), vocab_size=400, byte_fallback=True, character_coverage=1.0,
                             hard_vocab_limit=False, extra_ids=10, output_dir=d), d


def test_byte_fallback_spells_unknown_characters_in_bytes_and_decodes_them(byte_fallback_t5):
    tok, _ = byte_fallback_t5
    assert tok.byte_fallback
    assert tok.convert_ids_to_tokens([3, 258]) == ["<0x00>", "<0xFF>"]  # the 256 byte pieces follow <unk>
    ids = tok(RARE)["input_ids"]
    pieces = tok.convert_ids_to_tokens(ids)
    assert tok.unk_token_id not in ids
    assert pieces[:7] == ["▁", "<0xE9>", "<0xA5>", "<0x95>", "<0xE9>", "<0xA4>", "<0xAE>"]  # 饕 = E9 A5 95
    assert "<0xF0>" in pieces and pieces[-1] == "</s>"
    assert tok.decode(ids, skip_special_tokens=True) == RARE
    # the same ids as SentencePiece itself (which appends no EOS)
    sp = spm.SentencePieceProcessor(model_proto=tok.sp_model_proto)
    assert sp.encode(RARE) == ids[:-1] and sp.decode(ids[:-1]) == RARE
    # batches and sentinels decode as well
    texts = [RARE, "新年<extra_id_0>讲话"]
    assert tok.batch_decode(tok(texts)["input_ids"], skip_special_tokens=True) == [RARE, "新年 讲话"]


def test_byte_fallback_survives_save_and_load_both_ways(byte_fallback_t5, tmp_path):
    tok, d = byte_fallback_t5
    ids = tok(RARE)["input_ids"]
    loaded = T5Tokenizer.from_pretrained(d)  # tokenizer.json wins
    assert loaded.byte_fallback and loaded(RARE)["input_ids"] == ids
    only_spiece = T5Tokenizer.from_sentencepiece(tok.sp_model_proto, extra_ids=10)
    assert only_spiece.byte_fallback and only_spiece(RARE)["input_ids"] == ids
    (d2 := tmp_path / "json-only").mkdir()
    loaded.save_pretrained(d2)
    (d2 / "spiece.model").unlink()
    from_json = T5Tokenizer.from_pretrained(d2)
    assert from_json.byte_fallback and from_json.decode(ids, skip_special_tokens=True) == RARE


def test_without_byte_fallback_a_rare_character_is_unk(tmp_path):
    tok = T5Tokenizer.train(iter(CORPUS), vocab_size=120, character_coverage=1.0, hard_vocab_limit=False, extra_ids=0)
    assert not tok.byte_fallback
    ids = tok("饕餮")["input_ids"]
    assert tok.unk_token_id in ids and "饕" not in tok.decode(ids)  # what T5's and Flan-T5's vocabularies do to Chinese


def test_wordpiece_trained_on_chinese_splits_characters_like_bert(tmp_path):
    tok = ElectraTokenizer.train(iter(CORPUS + ["hello world 2024"] * 5), vocab_size=300, min_frequency=1,
                                 output_dir=tmp_path / "wp")
    text = "中共中央总书记发表新年讲话，hello！"
    pieces = tok.tokenize(text)
    assert pieces[:7] == list("中共中央总书记") and "hello" in pieces
    bert = transformers.BertTokenizer.from_pretrained(str(tmp_path / "wp"))
    assert bert.tokenize(text) == pieces
    assert bert(text)["input_ids"] == tok(text)["input_ids"]
    assert tok.tokenize("饕餮") == ["[UNK]", "[UNK]"]  # BERT's way: an unknown character is [UNK]


def test_wordpiece_keeps_every_chinese_character_seen(tmp_path):
    """1,500 distinct characters, each seen a few times: all become tokens (tokenizers' default
    alphabet cap of 1,000 made the rest [UNK]); ``limit_alphabet`` still caps where asked."""
    chars = [chr(0x4E00 + 7 * i) for i in range(1500)]
    lines = ["".join(chars[j:j + 30]) for j in range(0, 1500, 30)] * 3
    tok = ElectraTokenizer.train(iter(lines), vocab_size=200, min_frequency=1)
    assert tok.unk_token not in tok.tokenize("".join(chars))
    capped = ElectraTokenizer.train(iter(lines), vocab_size=200, min_frequency=1, limit_alphabet=1000)
    assert capped.tokenize("".join(chars)).count(capped.unk_token) >= 400


@pytest.mark.parametrize("kwargs, match", [
    (dict(vocab_size=0), "vocab_size must be an integer >= 6"),
    (dict(vocab_size=100, min_frequency=-1), "min_frequency must be an integer >= 0"),
    (dict(vocab_size=100, limit_alphabet=0), "limit_alphabet must be an integer >= 1"),
])
def test_wordpiece_sizes_are_checked(kwargs, match):
    from t5electra.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=match):
        ElectraTokenizer.train(iter(["a b c"] * 5), **kwargs)
    with pytest.raises(InvalidInputError, match="extra_ids must be an integer >= 0"):
        T5Tokenizer.train(iter(["a b c"] * 5), 50, extra_ids=-1)


def test_cli_trains_a_t5_tokenizer_that_writes_chinese_back(tmp_path, capsys):
    """README.zh-CN.md asks for byte fallback (and class names as written): the CLI had no way to ask.
    --byte-fallback spells an unseen character in bytes; --normalization identity keeps '５' as '５'
    (T5's nmt_nfkc reads it as '5', so a class named '５星' could never be answered)."""
    from t5electra.cli import main

    corpus = tmp_path / "c.txt"
    corpus.write_text("".join(f"这部电影 {i} 星 ５星 好看 评论 一般 电影院 观众\n" for i in range(300)), encoding="utf-8")
    # (<unk> is a special token: skipped in decode)
    for size, extra, back in ((40, [], "5星 "), (300, ["--byte-fallback", "--normalization", "identity"], "５星 龘")):
        out = tmp_path / f"tok{len(extra)}"
        assert main(["tokenizer", "train", "--kind", "t5", "--vocab-size", str(size), *extra, "--output", str(out),
                     str(corpus)]) == 0
        tok = T5Tokenizer.from_pretrained(out)
        assert tok.decode(tok("５星 龘")["input_ids"], skip_special_tokens=True) == back
