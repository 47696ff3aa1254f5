#!/usr/bin/env bash
# Create .venv and install t5electra.
#   bash scripts/setup.sh          the package with its data/serve extras (the main job)
#   bash scripts/setup.sh --test   also the test extras (transformers for parity) and, as root on
#                                  Debian, chromium + chromium-driver for the browser test and fresh
#                                  apt lists for the Debian-package sample data
# torch is pinned first: the CPU build of 2.13.0 lies on disk; an unpinned torch pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
extras="all"
if [ "${1:-}" = "--test" ]; then
  extras="all,test"
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null 2>&1 || echo "setup: apt-get update failed (Debian sample data may not fetch)" >&2
    if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
  fi
fi
[ -x .venv/bin/python ] || "$PY" -m venv .venv
quiet() { grep -v "^WARNING: Location" || true; }
.venv/bin/pip install -q --disable-pip-version-check "torch==2.13.0" 2>&1 | quiet
.venv/bin/pip install -q --disable-pip-version-check -e ".[$extras]" 2>&1 | quiet
.venv/bin/python -c "import t5electra, torch; print('t5electra', t5electra.__version__, '| torch', torch.__version__)"
