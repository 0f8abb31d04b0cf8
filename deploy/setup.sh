#!/usr/bin/env bash
# Set-up shared by `make demo` and `make test`: the .venv with smartport installed (editable),
# then the local stack. Idempotent: a second run reuses the venv and the running services.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
stamp=.venv/.installed
want=$(cat pyproject.toml | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  echo "creating .venv with $($PYTHON --version)" >&2
  "$PYTHON" -m venv .venv
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "installing smartport and its dependencies into .venv (first run takes a few minutes)" >&2
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet --progress-bar off -e ".[dev,embedded,evm]"
  echo "$want" > "$stamp"
fi
.venv/bin/smartport stack up
