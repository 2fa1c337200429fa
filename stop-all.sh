#!/usr/bin/env bash
# Stop what start-all.sh started: supervisord stops every service with its whole process tree
# (SIGTERM, SIGKILL after a grace period), then exits; anything still in its session is ended.
# Data, MLflow runs and the Airflow database are kept.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
cd "$ROOT"
if [ "$(bash scripts/compose.sh mode)" = "compose" ]; then
  exec bash scripts/compose.sh down
fi
if [ ! -x "$ROOT/.venv/bin/python" ]; then
  echo "no virtualenv: start-all.sh never ran here, nothing to stop"
  exit 0
fi
"$ROOT/.venv/bin/python" -m crossfit_stack down
