#!/usr/bin/env bash
# Compose mode of start-all.sh / stop-all.sh: the ML services stack (services/docker-compose.yaml:
# MLflow with basic-auth on PostgreSQL, SeaweedFS for its artifacts, Redis for Feast) and the Astro
# project (astro dev start), joined on the Docker network ml-network. Needs a running Docker engine
# and the Astro CLI.
#
#   scripts/compose.sh up      start both stacks, apply Feast in the scheduler, trigger the DAG
#   scripts/compose.sh down    stop both stacks (volumes are kept)
#   scripts/compose.sh mode    print "compose" or "local": CROSSFIT_MODE, or for "auto" (default)
#                              compose when a Docker engine answers and the Astro CLI is installed
#
# Secrets: services/.env (CROSSFIT_COMPOSE_ENV; git-ignored, mode 0600). If it is missing, `up`
# creates it from services/.env.example with every "change-me" replaced by a generated value; it
# refuses to start while any value is still "change-me". Passwords are never printed.
#
# NOT RUN ON THE DEVELOPMENT MACHINES (no Docker engine there): the compose files are validated
# statically by tests/compose, which also run this script's secret handling with stand-ins for
# docker and astro.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PROJECT=crossfit-ml-services
ENV_FILE="${CROSSFIT_COMPOSE_ENV:-services/.env}"
EXAMPLE=services/.env.example

compose_cmd() {
  if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
  ML=("${COMPOSE[@]}" -p "$PROJECT" -f services/docker-compose.yaml --env-file "$ENV_FILE")
}

scheduler() {
  docker ps --filter "name=scheduler" --filter "network=ml-network" --format '{{.Names}}' | head -n1
}

generated() {  # a random value of 48 hex digits
  od -An -tx1 -N24 /dev/urandom | tr -d ' \n'
}

ensure_env() {
  if [ ! -f "$ENV_FILE" ]; then
    umask 077
    while IFS= read -r line; do
      case "$line" in
        *=change-me) echo "${line%%=*}=$(generated)" ;;
        *) echo "$line" ;;
      esac
    done < "$EXAMPLE" > "$ENV_FILE"
    echo "created $ENV_FILE with generated secrets (mode 0600); the MLflow login is MLFLOW_ADMIN_USER / MLFLOW_ADMIN_PASSWORD there" >&2
  fi
  chmod 600 "$ENV_FILE"
  local unset
  unset="$(grep -E '^[A-Z_]+=change-me$' "$ENV_FILE" | cut -d= -f1 | tr '\n' ' ' || true)"
  if [ -n "$unset" ]; then
    echo "error: $ENV_FILE still has the example value change-me for: ${unset% }" >&2
    echo "set real values there (or delete the file: compose.sh up then generates them)" >&2
    exit 1
  fi
  local source="$ENV_FILE"
  case "$source" in /*) ;; *) source="./$source" ;; esac
  set -a
  # shellcheck disable=SC1090
  . "$source"
  set +a
}

case "${1:-up}" in
  mode)
    mode="${CROSSFIT_MODE:-auto}"
    if [ "$mode" = "auto" ]; then
      if command -v astro >/dev/null 2>&1 && docker info >/dev/null 2>&1; then mode=compose; else mode=local; fi
    fi
    echo "$mode"
    ;;
  up)
    ensure_env                                  # before any container starts
    compose_cmd
    "${ML[@]}" up -d --build --wait             # waits for the health checks (and bucket-init)
    astro dev start --no-browser                # builds Dockerfile, merges docker-compose.override.yml
    container="$(scheduler)"
    [ -n "$container" ] || { echo "no scheduler container on ml-network: see 'astro dev logs'" >&2; exit 1; }
    # registry + Redis online store, as the pipeline does it (feast apply on the yaml also works)
    docker exec "$container" python -m crossfit_mlops feast-apply
    if [ "${CROSSFIT_TRIGGER:-1}" != "0" ]; then
      astro dev run dags unpause crossfit_training_pipeline
      astro dev run dags unpause crossfit_batch_inference
      astro dev run dags trigger crossfit_training_pipeline
    fi
    bind="${CROSSFIT_BIND:-127.0.0.1}"
    echo "Airflow:        http://localhost:8080 (DAG crossfit_training_pipeline)"
    echo "MLflow:         http://$bind:${MLFLOW_PORT:-5000} (user ${MLFLOW_ADMIN_USER:-admin}, password: MLFLOW_ADMIN_PASSWORD in $ENV_FILE)"
    echo "prediction API: http://$bind:8000/docs (answers once a champion exists)"
    ;;
  down)
    [ -f "$ENV_FILE" ] || { echo "no $ENV_FILE: the ML services stack was never started here" >&2; astro dev stop || true; exit 0; }
    ensure_env
    compose_cmd
    astro dev stop || true
    "${ML[@]}" down
    ;;
  *)
    echo "usage: $0 up|down|mode" >&2
    exit 2
    ;;
esac
