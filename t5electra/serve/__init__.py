"""Serving: ``t5electra serve`` (commands/serve.py) puts model directories behind a JSON API with a
playground page. Read in this order:

- ``config.py``: the settings (limits, batching, host/port), from YAML and flags;
- ``registry.py``: which directories load as which models, and what each can do;
- ``batching.py``: the per-model bounded queue, collector and worker thread (dynamic batching);
- ``inference.py``: what the worker runs for each task, on a batch of requests;
- ``attention.py``: attention weights recovered by forward hooks (the playground's attention view);
- ``schemas.py`` and ``app.py``: the HTTP API (FastAPI), its limits and errors;
- ``security.py``: the optional API key and CORS allow-list;
- ``server.py``: uvicorn with a read deadline, a connection limit and a shutdown that stops models;
- ``static/``: the playground (plain HTML, CSS and JavaScript);
- ``demo.py``: tiny random models with trained tokenizers, for ``--demo``, tests and benchmarks.
"""
