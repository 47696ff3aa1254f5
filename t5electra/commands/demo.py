"""``t5electra demo``: the toolkit in under a minute, on tiny models and a dozen sentences.

    t5electra demo                  # works in a temporary directory
    t5electra demo --out demo/      # keep the tokenizers and models

What it does, step by step (each step prints what it means):

1. trains two tokenizers on the sentences below: SentencePiece for T5 (+ sentinel tokens),
   WordPiece for ELECTRA;
2. builds a tiny T5 from a config, teaches it a toy text-to-text task for a few dozen steps
   (review -> "positive"/"negative"), saves it in the Hugging Face layout, reloads it and
   generates with it;
3. builds a tiny ELECTRA pair (generator + discriminator with shared embeddings), pretrains it
   with replaced-token detection on the same sentences, saves and reloads it, then fills a
   [MASK] with the generator and asks the discriminator which tokens look replaced.

The models are far too small to be good: the point is the API, end to end. ``t5electra
quickstart`` does the same on real data with models that learn something.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REVIEWS = [
    ("the film was a delight from start to finish", "positive"),
    ("a warm funny and moving story", "positive"),
    ("the actors are wonderful and the music is great", "positive"),
    ("i loved every minute of it", "positive"),
    ("a clever film with a big heart", "positive"),
    ("the best story i have seen this year", "positive"),
    ("the film was a mess from start to finish", "negative"),
    ("a dull slow and boring story", "negative"),
    ("the actors are wooden and the music is awful", "negative"),
    ("i hated every minute of it", "negative"),
    ("a lazy film with no heart", "negative"),
    ("the worst story i have seen this year", "negative"),
]
SENTENCES = [text for text, _ in REVIEWS] + [
    "the cat sat on the mat", "the dog sat on the rug", "the cat chased the mouse around the house",
    "a dog and a cat played in the garden", "the sun was warm and the garden was green",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="keep the tokenizers and models here (default: a temporary "
                                                     "directory, removed at the end)")
    parser.add_argument("--steps", type=int, default=60, metavar="N", help="training steps of each model (default 60)")
    parser.add_argument("--seed", type=int, default=0)


def say(title: str, meaning: str) -> None:
    print(f"\n== {title}\n   {meaning}")


def demo(out: Path, steps: int = 60, seed: int = 0) -> dict:
    """Run the demo in ``out``; returns what it produced (for tests)."""
    import torch

    from ..pipelines import ElectraPipeline
    from ..modeling import OWN_CALL
    from ..models.electra import ElectraConfig
    from ..models.electra_rtd import ElectraPretrainer
    from ..models.t5 import T5Config, T5ForConditionalGeneration
    from ..tokenizers import ElectraTokenizer, T5Tokenizer

    torch.manual_seed(seed)
    result: dict = {}

    say("1. tokenizers", "SentencePiece (T5: pieces + <extra_id_N> sentinels) and WordPiece (ELECTRA: [CLS] [SEP] "
        "[MASK] ...) learn their vocabularies from text")
    t5_tok = T5Tokenizer.train(iter(SENTENCES), vocab_size=120, extra_ids=10, output_dir=out / "t5",
                               hard_vocab_limit=False, character_coverage=1.0)
    el_tok = ElectraTokenizer.train(iter(SENTENCES), vocab_size=200, min_frequency=1, output_dir=out / "electra")
    print(f"   T5: {len(t5_tok)} ids, e.g. {t5_tok.tokenize(SENTENCES[0])[:6]}")
    print(f"   ELECTRA: {len(el_tok)} ids, e.g. {el_tok.tokenize(SENTENCES[0])[:6]}")

    say("2. T5", "an encoder reads the input text, a decoder writes the output text token by token; every task "
        "is text to text")
    config = T5Config.from_preset("t5-tiny", vocab_size=len(t5_tok), pad_token_id=t5_tok.pad_token_id,
                                  eos_token_id=t5_tok.eos_token_id, decoder_start_token_id=t5_tok.pad_token_id)
    model = T5ForConditionalGeneration(config)
    print(f"   built from a config: {model.num_parameters():,} parameters ({config.num_layers} layers, "
          f"d_model {config.d_model})")
    enc = t5_tok([f"review: {t}" for t, _ in REVIEWS], padding=True, return_tensors="pt")
    labels = t5_tok([label for _, label in REVIEWS], padding=True, return_tensors="pt")["input_ids"]
    labels = labels.masked_fill(labels == t5_tok.pad_token_id, -100)  # padding is not a target
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for step in range(1, steps + 1):
        loss = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels,
                     **OWN_CALL).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step in (1, steps):
            print(f"   step {step:>3}: loss {loss.item():.3f} (teacher forcing: the decoder sees the right answer "
                  f"shifted by one)")
    model.save_pretrained(out / "t5")
    model = T5ForConditionalGeneration.from_pretrained(out / "t5")
    print(f"   saved and reloaded {out / 't5'}: config.json + model.safetensors + tokenizer (Hugging Face layout)")
    prompts = ["review: the film was wonderful from start to finish", "review: a boring film with no heart"]
    batch = t5_tok(prompts, padding=True, return_tensors="pt")
    ids = model.generate(batch["input_ids"], batch["attention_mask"], max_new_tokens=5)
    result["t5"] = list(zip(prompts, t5_tok.batch_decode(ids.tolist(), skip_special_tokens=True)))
    for prompt, answer in result["t5"]:
        print(f"   generate({prompt!r}) -> {answer!r}")

    say("3. ELECTRA", "a small generator fills [MASK]ed tokens; a discriminator reads the result and learns, for "
        "every token, whether it was replaced (replaced-token detection)")
    disc = ElectraConfig.from_preset("electra-tiny", vocab_size=len(el_tok), pad_token_id=el_tok.pad_token_id)
    pretrainer = ElectraPretrainer(disc, ElectraConfig.from_preset("electra-tiny-generator", vocab_size=len(el_tok),
                                                                   pad_token_id=el_tok.pad_token_id),
                                   mask_token_id=el_tok.mask_token_id,
                                   special_token_ids=[el_tok.cls_token_id, el_tok.sep_token_id])
    print(f"   generator + discriminator, embeddings shared: {pretrainer.num_parameters():,} parameters")
    enc = el_tok(SENTENCES, padding=True, return_tensors="pt")
    opt = torch.optim.AdamW(pretrainer.parameters(), lr=5e-3)
    pretrainer.train()
    for step in range(1, steps + 1):
        out_ = pretrainer(enc["input_ids"], enc["attention_mask"])
        out_.loss.backward()
        opt.step()
        opt.zero_grad()
        if step in (1, steps):
            m = out_.metrics
            print(f"   step {step:>3}: loss {out_.loss.item():.3f}, generator accuracy "
                  f"{float(m['gen_accuracy']):.2f}, discriminator accuracy {float(m['disc_accuracy']):.2f}")
    pretrainer.save_pretrained(out / "electra")
    pipe = ElectraPipeline.from_pretrained(out / "electra")
    print(f"   saved and reloaded {out / 'electra'}: generator/ + discriminator/ (two Hugging Face checkpoints)")
    masked = "the cat sat on the [MASK]"
    result["fill_mask"] = (masked, pipe.fill_mask(masked))
    print(f"   generator fills the mask: {masked!r} -> {result['fill_mask'][1]!r}")
    odd = "the cat sat on the music"
    result["detect"] = (odd, pipe.detect(odd))
    marks = " ".join(f"{t}({p:.2f})" for t, p in result["detect"][1])
    print(f"   discriminator, P(replaced) per token of {odd!r}: {marks}")
    return result


def run(args: argparse.Namespace) -> int:
    from ..errors import T5ElectraError

    start = time.perf_counter()
    if args.steps < 1:
        print(f"t5electra demo: error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 1
    try:
        if args.out:
            demo(Path(args.out), args.steps, args.seed)
        else:
            with tempfile.TemporaryDirectory(prefix="t5electra-demo-") as tmp:
                demo(Path(tmp), args.steps, args.seed)
    except T5ElectraError as e:
        print(f"t5electra demo: error: {e}", file=sys.stderr)
        return 1
    print(f"\ndone in {time.perf_counter() - start:.0f} s. Next: `t5electra quickstart` trains both on real data.")
    return 0
