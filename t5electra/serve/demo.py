"""Tiny random models with freshly trained tokenizers, to try the server without a checkpoint.

``t5electra serve --demo`` and the tests, the browser test and the load test use these. The
models are untrained (their outputs are noise) but have the real structure, so every endpoint and
every view of the playground works; they build in about a second on a CPU.

    dirs = build_demo_models("/tmp/demo")   # {"t5-tiny": ..., "electra-tiny": ..., "electra-tiny-sst2": ...}
    dirs = build_demo_models("/tmp/demo-zh", lang="zh")   # the same on Chinese text (T5: byte fallback)
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..models.electra import ElectraConfig, ElectraForSequenceClassification
from ..models.electra_rtd import ElectraPretrainer
from ..models.t5 import T5Config, T5ForConditionalGeneration
from ..tokenizers import ElectraTokenizer, T5Tokenizer

_SUBJECTS = ["the cat", "a dog", "the chef", "my friend", "the teacher", "a child", "the old man", "our team",
             "the bird", "a student", "the pilot", "her brother"]
_VERBS = ["ate", "saw", "cooked", "found", "liked", "painted", "sold", "read", "built", "carried", "wrote"]
_OBJECTS = ["the meal", "a book", "the house", "an apple", "the letter", "a small boat", "the red car",
            "a song", "the garden", "a cake", "the map", "an old chair"]
_PLACES = ["in the park", "at home", "near the river", "on monday", "after lunch", "in the city", "by the sea"]
_ADJ = ["good", "bad", "great", "boring", "funny", "sad", "wonderful", "terrible"]


# Chinese: subject, verb, object, comment (我们 看了 这本书 ， 值得 一读 。)
_ZH = (["我们", "老师", "孩子", "记者", "朋友", "同学"], ["喜欢", "看了", "买了", "写了", "读完了"],
       ["这本书", "新电影", "那家饭店", "一封信", "这件衣服"], ["很好", "太差了", "值得一读", "很失望", "非常满意"])


def demo_corpus(n: int = 400, seed: int = 0, lang: str = "en") -> list[str]:
    """``n`` short sentences from templates (English, or Chinese with ``lang="zh"``), with
    T5-style task prefixes on some."""
    rng = random.Random(seed)
    lines = []
    if lang == "zh":
        for i in range(n):
            s = "".join(rng.choice(words) for words in _ZH[:3]) + f"，{rng.choice(_ZH[3])}。"
            lines.append((f"sentiment-zh text: {s}", f"分词: {s}", s)[i % 3])
        return lines
    for i in range(n):
        s = f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} {rng.choice(_PLACES)}."
        kind = i % 4
        if kind == 1:
            s = f"translate English to German: {s}"
        elif kind == 2:
            s = f"summarize: {s} it was {rng.choice(_ADJ)}."
        elif kind == 3:
            s = f"sst2 sentence: the film was {rng.choice(_ADJ)} and {rng.choice(_ADJ)}."
        lines.append(s)
    return lines


def build_demo_models(directory: str | Path, seed: int = 0, lang: str = "en") -> dict[str, Path]:
    """Write three servable model directories under ``directory`` and return them by name:
    a T5 (``t5-tiny``), an ELECTRA pretraining run with generator and discriminator
    (``electra-tiny``) and an ELECTRA sentiment classifier (``electra-tiny-sst2``). ``lang="zh"``:
    Chinese tokenizers (T5's with byte fallback) and labels 负面 / 正面."""
    root = Path(directory)
    corpus = demo_corpus(seed=seed, lang=lang)
    zh = lang == "zh"
    torch.manual_seed(seed)
    out = {}

    d = root / "t5-tiny"
    tok = T5Tokenizer.train(iter(corpus), vocab_size=400 if zh else 160, extra_ids=20, character_coverage=1.0,
                            hard_vocab_limit=False, byte_fallback=zh, output_dir=d)
    vocab = -(-len(tok) // 8) * 8  # padded, as T5 pads its embedding
    T5ForConditionalGeneration(T5Config.from_preset("t5-tiny", vocab_size=vocab, dropout_rate=0.0)).save_pretrained(d)
    out["t5-tiny"] = d

    d = root / "electra-tiny"
    etok = ElectraTokenizer.train(iter(corpus), vocab_size=300, min_frequency=1, output_dir=d)
    evocab = len(etok)
    disc = ElectraConfig.from_preset("electra-tiny", vocab_size=evocab, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    gen = ElectraConfig.from_preset("electra-tiny-generator", vocab_size=evocab, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)
    ElectraPretrainer(disc, gen, mask_token_id=etok.mask_token_id,
                      special_token_ids=[etok.cls_token_id, etok.sep_token_id]).save_pretrained(d)
    out["electra-tiny"] = d

    d = root / "electra-tiny-sst2"
    etok.save_pretrained(d)
    labels = ("负面", "正面") if zh else ("negative", "positive")
    ElectraForSequenceClassification(disc.replace(id2label=dict(enumerate(labels)), num_labels=2)
                                     ).save_pretrained(d)
    out["electra-tiny-sst2"] = d
    return out
