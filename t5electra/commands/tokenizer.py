"""``t5electra tokenizer train``: train a T5 (SentencePiece unigram) or ELECTRA (WordPiece)
tokenizer from text files and save it in the Hugging Face layout.

    t5electra tokenizer train --kind t5 --vocab-size 32000 --output tok/ corpus1.txt corpus2.txt
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train_help = "train a new tokenizer from text files (one text per line)"
    train = actions.add_parser("train", help=train_help, description=train_help)  # not the module doc's cut first line
    train.add_argument("files", nargs="+", metavar="FILE", help="plain-text training files")
    train.set_defaults(trailing_words="files")  # FILE after the options too (cli.take_trailing_words)
    train.add_argument("--kind", choices=("t5", "electra"), required=True,
                       help="t5: SentencePiece unigram + 100 sentinels; electra: BERT WordPiece")
    train.add_argument("--vocab-size", type=int, required=True,
                       help="t5: SentencePiece pieces (T5 used 32000; sentinels come on top); "
                            "electra: WordPiece vocabulary size (BERT/ELECTRA used 30522)")
    train.add_argument("--output", required=True, help="directory to write the tokenizer files to (a model's "
                                                        "directory, or one holding a tokenizer, is refused)")
    train.add_argument("--overwrite", action="store_true", help="replace the tokenizer --output holds")
    train.add_argument("--extra-ids", type=int, default=100, help="t5: number of <extra_id_i> sentinels")
    train.add_argument("--character-coverage", type=float, default=0.9995,
                       help="t5: fraction of characters the pieces must cover (1.0 for small alphabets)")
    train.add_argument("--byte-fallback", action="store_true",
                       help="t5: spell characters the pieces lack in UTF-8 byte pieces instead of <unk> (for "
                            "Chinese: README.zh-CN.md); needs --vocab-size above 259 + the characters kept")
    train.add_argument("--normalization", default="nmt_nfkc", choices=("nmt_nfkc", "nfkc", "nmt_nfkc_cf", "nfkc_cf",
                                                                       "identity"),
                       help="t5: SentencePiece's text normalisation (default nmt_nfkc, T5's: full-width "
                            "'５' reads as '5'); identity keeps every character as written")
    train.add_argument("--cased", action="store_true", help="electra: keep case (default: lower-case)")
    train.add_argument("--min-frequency", type=int, default=2, help="electra: minimum count of a merge")
    train.add_argument("--limit-alphabet", type=int, default=None,
                       help="electra: keep only this many most frequent characters (default: every character "
                            "seen; a cap turns the rest, e.g. rarer Chinese characters, into [UNK])")
    train.add_argument("--model-max-length", type=int, default=None,
                       help="longest input the model takes (t5 default: no limit, electra: 512)")


def run(args: argparse.Namespace) -> int:
    from ..errors import T5ElectraError
    from ..tokenizers import ElectraTokenizer, T5Tokenizer

    try:
        check_output(args.output, args.overwrite)
        files = training_input(args.files)
        if args.kind == "t5":
            tokenizer = T5Tokenizer.train(files, args.vocab_size, output_dir=args.output,
                                          extra_ids=args.extra_ids, character_coverage=args.character_coverage,
                                          model_max_length=args.model_max_length, byte_fallback=args.byte_fallback,
                                          normalization_rule_name=args.normalization)
        else:
            tokenizer = ElectraTokenizer.train(files, args.vocab_size, output_dir=args.output,
                                               lowercase=not args.cased, min_frequency=args.min_frequency,
                                               limit_alphabet=args.limit_alphabet,
                                               model_max_length=args.model_max_length or 512)
    except T5ElectraError as e:  # bad files or sizes: one readable line, no traceback
        print(f"t5electra tokenizer train: error: {e}", file=sys.stderr)
        return 1
    print(f"trained {'an' if args.kind == 'electra' else 'a'} {args.kind} tokenizer on {len(args.files)} file(s): {len(tokenizer)} tokens, "
          f"saved to {args.output}")
    return 0


# what a tokenizer's save_pretrained writes (check_output refuses to replace them)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "spiece.model", "vocab.txt",
                   "added_tokens.json")


def check_output(output: str, overwrite: bool) -> None:
    """Refuse an --output whose files the new tokenizer would replace, before the training: a model
    directory lost the tokenizer it was trained with (a WordPiece over a T5 model deleted its
    spiece.model), and a tokenizer directory lost the tokenizer its runs and shards were made with."""
    from ..checkpoint.io import BIN, SAFE, SAFE_INDEX  # here: --help must not import torch
    from ..errors import ConfigError

    d = Path(output)
    model = [f for f in ("config.json", SAFE, SAFE_INDEX, BIN) if (d / f).exists()]
    if model:
        raise ConfigError(f"--output {output!r} holds a model ({', '.join(model)}): a new tokenizer there would "
                          f"replace the one it was trained with; choose another directory")
    held = [f for f in TOKENIZER_FILES if (d / f).exists()]
    if held and not overwrite:
        raise ConfigError(f"--output {output!r} already holds a tokenizer ({', '.join(held)}); choose another "
                          f"directory, or pass --overwrite to replace it")


def training_input(paths: list[str]):
    """Plain-text files as they are; where any is JSON lines / CSV / Parquet (what `t5electra data
    fetch` writes), the documents of every file as pretraining reads them (data/sources.py)."""
    from pathlib import Path

    from ..data.sources import detect_format, read_documents
    from ..errors import DataError

    def is_text(p: str) -> bool:  # (a .gz file is decompressed here: the trainers would read its bytes)
        try:
            return not Path(p).is_file() or (detect_format(p) == "text" and not p.endswith(".gz"))
        except DataError:  # an extension pretraining does not know: plain text, as the trainers read it
            return True

    if all(map(is_text, paths)):
        return paths  # the trainers read these files themselves (and name a missing one)
    return (doc for p in paths for doc in read_documents(p))
