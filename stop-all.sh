#!/usr/bin/env bash
# Stop exactly what start-all.sh started (the processes recorded under <state>/run/), each with the
# whole process group it forked. Data, MLflow runs and the Airflow database are kept.
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
"$ROOT/.venv/bin/python" -m crossfit_mlops stack down
