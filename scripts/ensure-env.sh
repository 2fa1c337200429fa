#!/usr/bin/env bash
# Create the project's virtualenv (.venv, Python 3.11) and install exactly the locked stack
# (requirements.lock: every package with its hashes) when missing or when the lock changed since
# the last install. uv installs it (tens of seconds; pip took minutes). Used by start-all.sh and .ci/run.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CROSSFIT_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3.11}"
stamp="$VENV/.requirements.sha256"
want="$(cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating virtualenv $VENV with $PYTHON_BIN" >&2
  "$PYTHON_BIN" -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "installing requirements.lock into $VENV" >&2
  uv_pin="$(grep -E '^uv==' "$ROOT/requirements.lock" | cut -d' ' -f1)"
  [ -x "$VENV/bin/uv" ] || "$VENV/bin/python" -m pip install -q --disable-pip-version-check "$uv_pin"
  "$VENV/bin/uv" pip sync --quiet --python "$VENV/bin/python" "$ROOT/requirements.lock"
  "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --no-deps -e "$ROOT"
  echo "$want" > "$stamp"
fi
