"""``t5electra quickstart``: pretrain, fine-tune and evaluate T5 and ELECTRA on real sample data.

    t5electra quickstart                        # runs/quickstart, 8.5-13.2 min on 2 CPU cores (plan by CPU)
    t5electra quickstart --out /tmp/qs --tiny   # the same pipeline on toy sizes, < 1 min
    t5electra quickstart --no-minilm            # skip fine-tuning the real MiniLM weights
    t5electra quickstart --plan long            # ~10x the pretraining (docs/quickstart.md)
    t5electra quickstart --lang zh [--tiny]     # Chinese: reviews and word segmentation (README.zh-CN.md)
    t5electra quickstart --seed 1 --control     # another seed, plus fine-tuning from random weights
    t5electra quickstart --plan long --seeds 3  # seeds 0-2 (OUT/seed-k), pretrained vs no pretraining

See docs/quickstart.md for every stage and the numbers it gives. An interrupted quickstart
continues where it stopped (finished stages are kept); delete OUT to start over.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", help="output directory (default runs/quickstart, with --lang zh "
                                                     "runs/quickstart-zh)")
    parser.add_argument("--tiny", action="store_true", help="toy sizes and a few steps: checks the pipeline in "
                                                            "< 1 min (accuracy near chance or below: tiny T5 rarely writes a label)")
    parser.add_argument("--plan", default="auto", choices=("auto", "full", "full-bf16", "full-amx", "full-avx512bf16",
                                                            "full-fast-fp32", "long"),
                        help="auto (default): full-amx where one thread multiplies bf16 on AMX at >= 1200 GFLOP/s, "
                             "full-bf16 on slower AMX CPUs, full-avx512bf16 where bf16 is native without AMX, full-fast-fp32 "
                             "where one thread's fp32 matmuls reach 95 GFLOP/s on oneDNN (AVX-512), else full; "
                             "full: the fp32 plan (13 min on a 2-core AVX2 EPYC); full-bf16: more steps in bf16 "
                             "(5-11 min on 2-core AMX Xeons); full-amx: full-bf16 with 2x T5 pretraining and 1.5x its "
                             "fine-tuning (8.7 min on a fast AMX Xeon); full-avx512bf16: full-bf16 with 1.5x T5 "
                             "pretraining (8.7 min on a Zen 4 EPYC); full-fast-fp32: full-bf16's steps in fp32; "
                             "long: ~10x the pretraining (docs/quickstart.md)")
    parser.add_argument("--lang", default="en", choices=("en", "zh"),
                        help="en: English sentiment (default); zh: Chinese sentiment and word segmentation")
    parser.add_argument("--no-minilm", action="store_true", help="skip the real MiniLM-L6 fine-tuning stage")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="train.seed of every training stage (default 0; the data and tokenizers do not depend "
                             "on it); with --seeds, the first seed. An OUT trained with another seed is refused")
    parser.add_argument("--control", action="store_true",
                        help="also fine-tune T5 and ELECTRA from random weights (the no-pretraining control)")
    parser.add_argument("--seeds", type=int, metavar="K",
                        help="the comparison: K quickstarts with the control (seeds N..N+K-1, in OUT/seed-<k>, "
                             "sharing data and tokenizers), then pretrained vs no pretraining, mean ± sd, in "
                             "OUT/comparison.json (MiniLM skipped; results: docs/quickstart.md)")
    parser.add_argument("--threads", type=int, metavar="N", help="torch CPU threads (default: all cores)")
    parser.add_argument("--lanes", type=int, choices=(1, 2), metavar="{1,2}",
                        help="2: the T5 stages run in a second process beside the ELECTRA and MiniLM stages, each "
                             "with half the threads (default with 2+ threads: faster for these small models); "
                             "1: one stage at a time")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default=None,
                        help="training precision (default auto: bf16 autocast on CPUs with native bf16 "
                             "(AVX512-BF16/AMX), fp32 elsewhere)")
    parser.add_argument("--cache", metavar="DIR", help="cache root for packages and sample datasets "
                                                       "(default $T5ELECTRA_CACHE or ~/.cache/t5electra)")


def run(args: argparse.Namespace) -> int:
    import os

    if args.cache:
        os.environ["T5ELECTRA_CACHE"] = os.path.abspath(os.path.expanduser(args.cache))
    from ..errors import T5ElectraError
    from ..recipes.quickstart import quickstart

    try:
        out = args.out or ("runs/quickstart-zh" if args.lang == "zh" else "runs/quickstart")
        if args.seeds is not None:
            from ..errors import ConfigError
            from ..experiments.quickstart_seeds import compare

            ignored = [flag for flag, given in (("--lang zh", args.lang == "zh"), ("--precision", args.precision),
                                                ("--lanes", args.lanes), ("--no-minilm", args.no_minilm),
                                                ("--control", args.control)) if given]
            if ignored:  # compare() runs the English quickstart with the control and its own settings
                raise ConfigError(f"--seeds runs the English comparison (control included, MiniLM skipped, the "
                                  f"plan's precision); it does not take {', '.join(ignored)}")

            compare(out, seeds=args.seeds, first_seed=args.seed, plan=args.plan, tiny=args.tiny,
                    threads=args.threads)
        else:
            quickstart(out, tiny=args.tiny, minilm=False if args.no_minilm else None, threads=args.threads,
                       plan=args.plan, seed=args.seed, control=args.control, lang=args.lang, lanes=args.lanes,
                       precision=args.precision)
    except T5ElectraError as e:
        print(f"t5electra quickstart: error: {e}", file=sys.stderr)
        return 1
    return 0
