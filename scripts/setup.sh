#!/usr/bin/env bash
# Create .venv and install t5electra with everything the tests need.
# torch is pinned first: the CPU build of 2.13.0 lies on disk; an unpinned torch pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/pip install -q --disable-pip-version-check -e ".[all,test]" 2>&1 | grep -v "^WARNING: Location" || true
.venv/bin/python -c "import t5electra, torch; print('t5electra', t5electra.__version__, 'torch', torch.__version__)"
