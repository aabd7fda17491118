#!/usr/bin/env bash
# Create .venv and install the project with its pinned dependencies; a no-op when already done.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
echo "setting up .venv (torch, avalanche-lib, wandb, hydra; a few minutes the first time)..." >&2
.venv/bin/python -m pip install -q --disable-pip-version-check "torch==2.14.1" "torchvision==0.29.1"
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
rm -f .venv/.installed-*
touch "$stamp"
