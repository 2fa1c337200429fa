#!/usr/bin/env bash
# The main job: start the local stack and run the training pipeline once.
#
#   1. create the virtualenv if missing (scripts/ensure-env.sh)
#   2. start (or reuse) supervisord (one per state directory), which runs and restarts the MLflow
#      server (:5000) and Airflow's scheduler, dag-processor, triggerer and api-server (:8080),
#      LocalExecutor, as processes of this machine (logs in .state/logs, `python -m crossfit_stack status` shows them)
#   3. apply the Feast definitions, set the Variables of airflow_settings.yaml
#   4. unpause and trigger crossfit_training_pipeline through the REST API, show progress,
#      print the leaderboard, the gate's decision and the URLs
#
# Knobs: CROSSFIT_SNAPSHOT (snapshot id, default today UTC), CROSSFIT_ROWS (raw rows to generate,
# default: the DAG's, the real file's 423,006), CROSSFIT_SAMPLE_SIZE (athletes to train on, 0 = all), CROSSFIT_TRIGGER=0 (start
# the stack only), CROSSFIT_MLFLOW_PORT, CROSSFIT_AIRFLOW_PORT, CROSSFIT_STATE_DIR,
# CROSSFIT_MLFLOW_AUTH=1 (MLflow's basic-auth), CROSSFIT_PROFILE=cluster (CeleryExecutor with two
# workers, PostgreSQL, Redis, SeaweedFS as the S3 artifact store); see README.
# Passwords are never printed: they are in .state/airflow/secrets.json (mode 0600).
#
# Mode (CROSSFIT_MODE): "auto" (default) runs compose mode when a Docker engine answers and the Astro
# CLI is installed (scripts/compose.sh: MLflow + PostgreSQL + Redis stack and `astro dev start` on
# the network ml-network), else the local mode above. "local" / "compose" force one.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")" && pwd)"
cd "$ROOT"
if [ "$(bash scripts/compose.sh mode)" = "compose" ]; then
  exec bash scripts/compose.sh up
fi
bash scripts/ensure-env.sh
PY="$ROOT/.venv/bin/python"
export MLFLOW_DISABLE_TELEMETRY=true FEAST_USAGE=False PYTHONWARNINGS="ignore::FutureWarning,ignore::DeprecationWarning"
"$PY" -m crossfit_stack up
if [ "${CROSSFIT_TRIGGER:-1}" = "0" ]; then
  echo "CROSSFIT_TRIGGER=0: stack is up, no pipeline run triggered"
  exit 0
fi
args=()
[ -n "${CROSSFIT_ROWS:-}" ] && args+=(--rows "$CROSSFIT_ROWS")
[ -n "${CROSSFIT_SNAPSHOT:-}" ] && args+=(--snapshot "$CROSSFIT_SNAPSHOT")
[ -n "${CROSSFIT_SAMPLE_SIZE:-}" ] && args+=(--sample-size "$CROSSFIT_SAMPLE_SIZE")
[ -n "${CROSSFIT_PIPELINE_CONF:-}" ] && args+=(--conf "$CROSSFIT_PIPELINE_CONF")
"$PY" -m crossfit_stack pipeline "${args[@]}"
echo "stop everything with ./stop-all.sh"
