"""``t5electra generate MODEL_DIR [TEXT ...]``: T5 text in, JSON lines out.

    t5electra generate runs/t5-sentiment "sentiment sentence: a gripping film"
    t5electra generate runs/t5/model --file inputs.txt --num-beams 4 --max-new-tokens 64 > out.jsonl
    cat inputs.txt | t5electra generate runs/t5/model --do-sample --top-p 0.9 --seed 0

Each input (the arguments, else one per line of ``--file``, else of stdin; blank lines skipped)
gives one line ``{"input": ..., "output": ...}`` in input order (with ``--num-return-sequences``
> 1, ``"output"`` is a list). Inputs are batched (``--batch-size``), sorted by length so that
batches need little padding. Decoding options not given as flags come from the model's
generation_config.json (e.g. a fine-tuned run's answer length), else the flags' listed defaults.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="T5 model directory (or a run directory: its model/)")
    parser.add_argument("texts", nargs="*", metavar="TEXT", help="inputs (default: --file, else stdin)")
    parser.set_defaults(trailing_words="texts")  # TEXT after the options too (cli.take_trailing_words)
    parser.add_argument("--file", metavar="F", help="read inputs from F, one per line")
    parser.add_argument("--out", metavar="F", help="write the JSON lines to F (default stdout)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N")
    parser.add_argument("--max-length", type=int, default=512, metavar="N", help="input tokens (longer: truncated)")
    gc = " (default: the model's generation_config.json, else {})"
    parser.add_argument("--max-new-tokens", type=int, default=None, metavar="N", help=gc.format(64).strip())
    parser.add_argument("--num-beams", type=int, default=None, metavar="N", help=gc.format(1).strip())
    parser.add_argument("--do-sample", action=argparse.BooleanOptionalAction, default=None,
                        help="sample instead of greedy/beam search (--no-do-sample: not even where the model's "
                             "generation_config.json says so)" + gc.format("off"))
    parser.add_argument("--temperature", type=float, default=None, help=gc.format(1.0).strip())
    parser.add_argument("--top-k", type=int, default=None, help=gc.format("none").strip())
    parser.add_argument("--top-p", type=float, default=None, help=gc.format("none").strip())
    parser.add_argument("--no-repeat-ngram-size", type=int, default=None, metavar="N", help=gc.format(0).strip())
    parser.add_argument("--num-return-sequences", type=int, default=None, metavar="N", help=gc.format(1).strip())
    parser.add_argument("--seed", type=int, default=None, help="seed for --do-sample")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--weights", default="fp32", choices=("fp32", "bf16", "int8"),
                        help="inference weights: fp32 (exact), bf16 or int8 (faster, approximate; default fp32)")


# The command's defaults where neither a flag nor the model's generation_config.json gives an option.
FALLBACK = {"max_new_tokens": 64, "num_beams": 1, "do_sample": False, "temperature": 1.0, "top_k": None,
            "top_p": None, "no_repeat_ngram_size": 0, "num_return_sequences": 1}


def generation_options(args: argparse.Namespace, model_defaults: dict) -> dict:
    """The decoding options of this run: a flag given, else the model's generation_config.json (a
    fine-tuned run's answer length, its beams), else :data:`FALLBACK` (a config's max_length alone
    still bounds the output: 64 new tokens are not added over it)."""
    from ..core.generation_config import with_defaults

    given = {k: getattr(args, k) for k in FALLBACK if getattr(args, k) is not None}
    options = with_defaults(given, {k: v for k, v in model_defaults.items() if k in FALLBACK or k == "max_length"})
    fallback = dict(FALLBACK)
    if "max_length" in options:
        fallback.pop("max_new_tokens")
    return with_defaults(options, fallback)


def read_inputs(args: argparse.Namespace) -> list[str]:
    if args.texts and args.file:  # (the file was ignored without a word)
        from ..errors import ConfigError

        raise ConfigError("give the texts as arguments or with --file, not both")
    if args.texts:
        return list(args.texts)
    if args.file:
        from ..errors import DataError

        try:
            with open(args.file, "rb") as fh:
                data, where = fh.read(), f"--file {args.file!r}"
        except FileNotFoundError:
            raise DataError(f"--file {args.file!r} does not exist") from None
    else:
        buffer = getattr(sys.stdin, "buffer", None)  # bytes: not Python's lenient decoding of a pipe
        data = buffer.read() if buffer is not None else sys.stdin.read().encode("utf-8", "surrogateescape")
        where = "standard input"
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark is not part of the first input
    except UnicodeDecodeError as e:
        from ..errors import DataError

        raise DataError(f"{where} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    # One input per line: "\n" (and "\r\n") only; str.splitlines also splits at U+2028, \x0c, \x85, ...
    # that can sit inside a line of text, which misaligned the outputs with the file's lines.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    return [line for line in lines if line.strip()]


def run(args: argparse.Namespace) -> int:
    import torch

    from ..core.jsonl import json_line
    from ..errors import InvalidInputError, T5ElectraError
    from ..models.t5 import T5ForConditionalGeneration
    from ..models.registry import model_kind
    from ..recipes.evaluate import resolve_model_dir
    from ..tokenizers import T5Tokenizer
    from . import checks

    try:
        for flag, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length),
                            ("--max-new-tokens", args.max_new_tokens), ("--num-beams", args.num_beams),
                            ("--num-return-sequences", args.num_return_sequences)):
            if value is not None:
                checks.at_least(value, 1, flag)
        if args.seed is not None and not 0 <= args.seed < 2**64:
            raise InvalidInputError(f"--seed={args.seed}: must be in [0, 2**64)")
        device = checks.device(args.device)
        out_path = checks.output_file(args.out) if args.out else None
        model_dir = resolve_model_dir(args.model_dir)
        if model_kind(model_dir) != "t5":
            raise InvalidInputError(f"{model_dir} is an ELECTRA model: ELECTRA does not generate text (use "
                                    f"ElectraPipeline.fill_mask / detect, or `t5electra demo`)")
        inputs = read_inputs(args)
        if not inputs:
            raise InvalidInputError("no inputs: give TEXT arguments, --file F, or lines on stdin")
        model = T5ForConditionalGeneration.from_pretrained(model_dir).to(device).optimize_for_inference(args.weights)
        tokenizer = T5Tokenizer.from_pretrained(model_dir)
        options = generation_options(args, model.generation_config.to_dict())
        unused = [flag for flag, value in (("--temperature", args.temperature), ("--top-k", args.top_k),
                                           ("--top-p", args.top_p), ("--seed", args.seed)) if value is not None]
        if unused and not options["do_sample"]:
            print(f"t5electra generate: warning: {', '.join(unused)} only matter with --do-sample; this run is "
                  f"{'beam search' if options['num_beams'] > 1 else 'greedy'}", file=sys.stderr)
        generator = torch.Generator(device=device).manual_seed(args.seed) if args.seed is not None else None
        outputs: list = [None] * len(inputs)
        n_ret = options["num_return_sequences"]
        order = sorted(range(len(inputs)), key=lambda i: len(inputs[i]))
        for start in range(0, len(order), args.batch_size):
            idx = order[start:start + args.batch_size]
            enc = tokenizer([inputs[i] for i in idx], padding=True, truncation=True, max_length=args.max_length,
                            return_tensors="pt")
            ids = model.generate(enc["input_ids"].to(device), enc["attention_mask"].to(device),
                                 **options, generator=generator,
                                 return_dict_in_generate=False)  # (b * n_ret, T)
            texts = [t.strip() for t in tokenizer.batch_decode(ids.tolist(), skip_special_tokens=True)]
            for j, i in enumerate(idx):
                group = texts[j * n_ret:(j + 1) * n_ret]
                outputs[i] = group[0] if n_ret == 1 else group
        lines = "".join(json_line({"input": text, "output": out}) for text, out in zip(inputs, outputs))
        if out_path is not None:
            checks.write_atomic(out_path, lines)  # all or nothing
        else:
            sys.stdout.write(lines)
    except T5ElectraError as e:
        print(f"t5electra generate: error: {e}", file=sys.stderr)
        return 1
    return 0

