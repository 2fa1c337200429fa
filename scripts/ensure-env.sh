#!/usr/bin/env bash
# Create the project's virtualenv (.venv, Python 3.11) and install the pinned stack when missing or
# when requirements.txt changed since the last install. Sourced by start-all.sh and .ci/run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CROSSFIT_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3.11}"
stamp="$VENV/.requirements.sha256"
want="$(cat "$ROOT/requirements.txt" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV with $PYTHON_BIN" >&2
  "$PYTHON_BIN" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing requirements into $VENV (first time: about 2 minutes)" >&2
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r "$ROOT/requirements.txt" -e "$ROOT"
  echo "$want" > "$stamp"
fi
