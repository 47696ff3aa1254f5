"""CLI subcommands, one module each (see t5electra/cli.py)."""
