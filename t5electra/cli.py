"""The ``t5electra`` command. Each subcommand lives in its own module under
``t5electra/commands/`` with ``add_arguments(parser)`` and ``run(args) -> int``; only the chosen
one is imported, so ``t5electra --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from .core.launch import is_rank_zero

# name -> (module, one-line help). Add a line here to add a subcommand.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("t5electra.commands.demo", "build tiny T5 and ELECTRA models, save, reload and run them"),
    "tokenizer": ("t5electra.commands.tokenizer", "train a tokenizer"),
    "data": ("t5electra.commands.data", "fetch and list sample datasets"),
    "pretrain": ("t5electra.commands.pretrain", "pretrain T5 (span corruption) or ELECTRA (RTD / MLM)"),
    "finetune": ("t5electra.commands.finetune", "fine-tune T5 (text-to-text) or ELECTRA (heads)"),
    "evaluate": ("t5electra.commands.evaluate", "score a checkpoint on a task split (metrics as JSON)"),
    "generate": ("t5electra.commands.generate", "generate text with a T5 model (JSON lines out)"),
    "convert": ("t5electra.commands.convert", "convert checkpoints to a clean Hugging Face directory"),
    "plot": ("t5electra.commands.plot", "plot a run's curves to PNG"),
    "bench": ("t5electra.commands.bench", "benchmark against transformers and CTranslate2"),
    "config": ("t5electra.commands.config", "print the resolved run config (YAML + overrides), or --list the options"),
    "serve": ("t5electra.commands.serve", "serve models over HTTP with a playground"),
    "quickstart": ("t5electra.commands.quickstart", "pretrain, fine-tune and evaluate T5 and ELECTRA on sample data"),
    "experiment": ("t5electra.commands.experiment", "run a paper-reproduction experiment grid"),
}


# the commands that run as one job over several processes under torchrun (DDP / FSDP); any other
# command would run whole in every process, each writing the same outputs
DISTRIBUTED_COMMANDS = ("pretrain", "finetune")


DESCRIPTION = ("T5 and ELECTRA in PyTorch: pretrain, fine-tune, evaluate, generate, serve, and convert "
               "checkpoints to and from the Hugging Face format. 't5electra COMMAND --help' lists a command's options.")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="t5electra", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if only is None or name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    only = chosen if chosen in COMMANDS else None
    parser = build_parser(only if only else "")
    args, extra = parser.parse_known_args(argv)
    extra = take_trailing_words(args, extra)
    if extra:  # --section.key=value overrides, for the subcommands that take a run config
        if not getattr(args, "accepts_overrides", False):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = extra
    if not args.command:
        parser.print_help()
        return 2
    refused = one_process_only(args.command)
    if refused is not None:
        if is_rank_zero():  # torchrun: said once, not once per process
            print(f"t5electra {args.command}: error: {refused}", file=sys.stderr)
        return 1
    from .machine import keep_freed_memory  # here, not at the top: --help must not import torch
    from .train.run_dir import discard_unused_run_dirs, pending_run_dirs

    pending = pending_run_dirs()  # runs started from Python before this call: theirs, not this command's
    keep_freed_memory()  # every command: big tensors' pages reused, not faulted in again (machine.py)
    mod = importlib.import_module(COMMANDS[args.command][0])
    shown_as = warnings.formatwarning
    warnings.formatwarning = command_warning_format(args.command)
    try:
        return int(mod.run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: finished stages and checkpoints are kept; a rerun resumes
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        print(f"\nt5electra {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `t5electra ... | head`: the reader left; no traceback, no second error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        # a path the command cannot use (a file where a directory is wanted, no permission, a full
        # disk): one line, as for the commands' own errors; T5ELECTRA_TRACEBACK=1 shows where
        if os.environ.get(TRACEBACK_ENV) == "1":
            raise
        where = f": {e.filename}" + (f" -> {e.filename2}" if e.filename2 else "") if e.filename else ""
        print(f"t5electra {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
    finally:
        # a run refused before it wrote anything leaves no empty train.output_dir behind (a finished run
        # was released and keeps its directory); run_dir does it at exit too, for train() from Python
        discard_unused_run_dirs(keep=pending)
        warnings.formatwarning = shown_as


TRACEBACK_ENV = "T5ELECTRA_TRACEBACK"


PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def command_warning_format(command: str):
    """``warnings.formatwarning`` while a command runs: a warning on one line under the command's
    name, as its errors are (``t5electra pretrain: warning: ...``), instead of Python's
    ``/path/file.py:123: UnicodeWarning: ...`` followed by the source line that called
    ``warnings.warn``. The category is named unless it is a plain UserWarning; a warning from
    another library keeps its file and line."""
    def format_warning(message, category, filename, lineno, line=None) -> str:
        kind = "" if category is UserWarning else f" [{category.__name__}]"
        ours = os.path.abspath(filename).startswith(PACKAGE_DIR + os.sep)
        where = "" if ours else f" ({filename}:{lineno})"
        return f"t5electra {command}: warning: {message}{kind}{where}\n"
    return format_warning


def take_trailing_words(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Give the words argparse left over to the command's list positional (named by its parser's
    ``set_defaults(trailing_words=DEST)``) and return the rest. argparse fills a ``nargs="*"`` / ``"+"``
    positional with the words before the first option only, so ``generate MODEL --num-beams 4 TEXT``
    refused TEXT as an unrecognized argument (also ``serve A --port 8001 B``, ``tokenizer train a.txt
    --kind t5 ... b.txt``)."""
    dest = getattr(args, "trailing_words", None)
    words = [a for a in extra if not a.startswith("-")]
    if dest is None or not words:
        return extra
    setattr(args, dest, [*(getattr(args, dest) or []), *words])
    return [a for a in extra if a.startswith("-")]


def one_process_only(command: str) -> str | None:
    """Why ``command`` cannot run under this torchrun launch (None: it can). Only pretrain and
    finetune share their work among the processes; evaluate, generate, convert, quickstart, ... would
    each run whole in every process, write the same files and print the same output N times."""
    world = os.environ.get("WORLD_SIZE", "").strip()
    if command in DISTRIBUTED_COMMANDS or not world.isdigit() or int(world) <= 1:
        return None
    return (f"{command} runs in one process, and torchrun started {world} (WORLD_SIZE={world}): each would do the "
            f"whole work and write the same outputs; run `t5electra {command} ...` without torchrun (only "
            f"{' and '.join(DISTRIBUTED_COMMANDS)} share their work among torchrun's processes)")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
