"""``t5electra serve``: serve T5 / ELECTRA model directories over HTTP, with the playground at /.

    t5electra serve runs/t5-cola runs/electra --host 127.0.0.1 --port 8000
    t5electra serve sentiment=runs/electra-sst2 --config serve.yaml --max-batch-size 32
    t5electra serve --demo                      # tiny random models, to try the page

Settings come from the defaults, then ``--config FILE.yaml``, then the flags (see
t5electra/serve/config.py). The JSON API is documented at /docs.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import typing

# flag -> ServeConfig field, for the settings one sets on the command line
_FLAGS = ("host", "port", "device", "dtype", "weights", "num_threads", "max_batch_size", "max_wait_ms", "max_queue",
          "request_timeout_s", "max_texts", "max_input_tokens", "max_new_tokens", "max_beams", "max_body_bytes",
          "max_work_tokens", "max_decode_steps", "api_key_file", "read_timeout_s", "keep_alive_s", "max_connections")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..serve.config import ServeConfig

    parser.add_argument("models", nargs="*", metavar="MODEL_DIR",
                        help="model directories (a T5 or ELECTRA checkpoint, or an ELECTRA pretraining run with "
                             "generator/ and discriminator/); NAME=DIR names one (default: the directory's name)")
    parser.set_defaults(trailing_words="models")  # MODEL_DIR after the options too (cli.take_trailing_words)
    parser.add_argument("--config", metavar="FILE", help="YAML file of serve settings (flags override it)")
    parser.add_argument("--demo", action="store_true",
                        help="also serve tiny random T5 and ELECTRA models built in a temporary directory")
    parser.add_argument("--no-playground", action="store_true", help="serve the JSON API only, no page at /")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--cors-origin", dest="cors_origins", action="append", metavar="ORIGIN",
                        help=f"{ServeConfig.help_of('cors_origins')}; repeat for several")
    hints = typing.get_type_hints(ServeConfig)
    for f in dataclasses.fields(ServeConfig):
        if f.name not in _FLAGS:
            continue
        tp = hints[f.name]
        base = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
        parser.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=base, default=None,
                            help=f"{f.metadata['help']} (default: {f.default})")


def run(args: argparse.Namespace) -> int:
    from ..errors import T5ElectraError
    from ..serve.config import ServeConfig
    from . import checks  # imports torch: not at the top, so that --help stays fast

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    overrides = {name: getattr(args, name) for name in _FLAGS}
    if args.no_playground:
        overrides["playground"] = False
    overrides["cors_origins"] = args.cors_origins
    try:
        config = ServeConfig.load(args.config, **overrides)
        checks.port(config.port)
        checks.port_free(config.host, config.port)
        checks.device(config.device)
        if not args.models and not args.demo:
            raise T5ElectraError("give at least one MODEL_DIR (or --demo to try tiny random models)")
        with tempfile.TemporaryDirectory(prefix="t5electra-demo-") as tmp:
            app = build_app(args.models, config, demo_dir=tmp if args.demo else None)
            stopped_by = serve(app, config, args.log_level)
    except T5ElectraError as e:
        print(f"t5electra serve: error: {e}", file=sys.stderr)
        return 1
    if stopped_by is not None:  # cleaned up: now end as the signal asks (exit status 128 + signal)
        from ..serve.server import end_by_signal

        end_by_signal(stopped_by)
    return 0


def build_app(model_args: list[str], config, demo_dir: str | None = None):
    """Read the API key (--api-key-file or $T5ELECTRA_API_KEY), load the models and build the
    FastAPI app (no socket yet)."""
    import torch

    from ..serve.app import create_app
    from ..serve.registry import ModelRegistry
    from ..serve.security import ENV_VAR, load_api_key

    api_key = load_api_key(config.api_key_file)
    if api_key is not None:
        logging.getLogger("t5electra.serve").info(
            "API key required (from %s)", config.api_key_file or f"${ENV_VAR}")

    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    model_args = list(model_args)
    if demo_dir is not None:
        from ..serve.demo import build_demo_models

        model_args += [f"{name}={path}" for name, path in build_demo_models(demo_dir).items()]
    return create_app(ModelRegistry.from_dirs(model_args, config), config, api_key=api_key)


def serve(app, config, log_level: str = "info") -> int | None:
    """Serve until stopped; the signal that stopped it (SIGINT / SIGTERM), or None."""
    from ..serve.server import serve_app

    print(f"t5electra serve: playground at http://{config.host}:{config.port}/ , API docs at /docs", flush=True)
    return serve_app(app, config, log_level)
