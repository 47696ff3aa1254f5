"""``t5electra evaluate CHECKPOINT [--task NAME]``: a checkpoint's task metrics as JSON.

    t5electra evaluate runs/t5-sentiment --task sentiment --split test
    t5electra evaluate runs/my-run                       # the data the run was fine-tuned on (its config.yaml)
    t5electra evaluate runs/my-run/model --data-dir mydata/   # your train/dev/test files (classify or text2text)
    t5electra evaluate runs/electra-sst2/model --task sst2 --data-dir glue_data/SST-2 --split validation
    t5electra evaluate runs/t5-sentiment --task sentiment --predictions preds.jsonl   # also the texts

A T5 checkpoint generates its answers, which the task's postprocessor reads (an answer that is
not a valid label counts as wrong); an ELECTRA checkpoint with a classification/regression head
predicts from its logits. CHECKPOINT may be a run directory (its ``model/``), a training
checkpoint or a model directory.
"""

from __future__ import annotations

import argparse
import json
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="run, checkpoint or model directory")
    parser.add_argument("--task", help="registered task (`t5electra data list --tasks`), a mixture 'a+b' (T5), or "
                                       "classify / text2text over your files in --data-dir; default: the task or "
                                       "files the checkpoint's run was fine-tuned on")
    parser.add_argument("--split", default="test", help="split to score (default: test)")
    parser.add_argument("--text-columns", nargs="+", metavar="COL", help="your files: the text column(s), one or a "
                        "pair (classify), or the input column (text2text); default: the run's, else sentence/text")
    parser.add_argument("--label-column", metavar="COL", help="your files: the label (classify) or target "
                        "(text2text) column; default: the run's, else label / targets")
    parser.add_argument("--data-dir", metavar="DIR", help="folder with the task's files (GLUE, SQuAD, your own)")
    parser.add_argument("--batch-size", type=int, default=32, metavar="N")
    parser.add_argument("--max-examples", type=int, metavar="N",
                        help="score N examples spread evenly over the split (never its first N rows: files are "
                             "often sorted by label)")
    parser.add_argument("--max-length", type=int, metavar="N", help="input tokens (longer: truncated); default: "
                        "the run's data.max_length, else 512")
    parser.add_argument("--max-new-tokens", type=int, metavar="N", help="T5: longest answer; default: the length "
                        "the run fine-tuned with (the model's generation_config.json), else 32")
    parser.add_argument("--num-beams", type=int, default=1, metavar="N", help="T5: beam search width (1: greedy)")
    parser.add_argument("--predictions", metavar="FILE", help="T5: also write input/target/prediction JSONL here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default cpu)")
    parser.add_argument("--weights", default="fp32", choices=("fp32", "bf16", "int8"),
                        help="inference weights: fp32 (exact), bf16 or int8 (faster, approximate; default fp32)")
    parser.add_argument("--out", metavar="FILE", help="also write the JSON here")


def run(args: argparse.Namespace) -> int:
    from ..errors import ConfigError, T5ElectraError
    from ..recipes.evaluate import evaluate_checkpoint
    from . import checks

    try:
        for flag, value in (("--batch-size", args.batch_size), ("--max-length", args.max_length),
                            ("--max-new-tokens", args.max_new_tokens), ("--num-beams", args.num_beams),
                            ("--max-examples", args.max_examples)):
            if value is not None:
                checks.at_least(value, 1, flag)
        checks.device(args.device)
        out = checks.output_file(args.out) if args.out else None
        if args.predictions == "-":
            raise ConfigError("--predictions -: give a file name (standard output carries the metrics JSON)")
        predictions = checks.output_file(args.predictions, "--predictions") if args.predictions else None
        result = evaluate_checkpoint(args.checkpoint, args.task, args.split, data_dir=args.data_dir,
                                     text_columns=args.text_columns, label_column=args.label_column,
                                     batch_size=args.batch_size, max_examples=args.max_examples,
                                     max_length=args.max_length, max_new_tokens=args.max_new_tokens,
                                     num_beams=args.num_beams, device=args.device, weights=args.weights,
                                     predictions_file=predictions)
        text = json.dumps(result, indent=2, ensure_ascii=False)  # Chinese class names and paths as written
        if out is not None:
            checks.write_atomic(out, text + "\n")
    except T5ElectraError as e:
        print(f"t5electra evaluate: error: {e}", file=sys.stderr)
        return 1
    print(text)
    return 0
