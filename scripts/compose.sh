#!/usr/bin/env bash
# Compose mode of start-all.sh / stop-all.sh: the ML services stack (services/docker-compose.yaml:
# MLflow on PostgreSQL, Redis for Feast) and the Astro project (astro dev start), joined on the
# Docker network ml-network. Needs a running Docker engine and the Astro CLI.
#
#   scripts/compose.sh up      start both stacks, apply Feast in the scheduler, trigger the DAG
#   scripts/compose.sh down    stop both stacks (volumes are kept)
#   scripts/compose.sh mode    print "compose" or "local": CROSSFIT_MODE, or for "auto" (default)
#                              compose when a Docker engine answers and the Astro CLI is installed
#
# NOT RUN ON THE DEVELOPMENT MACHINES (no Docker engine there): the compose files are validated
# statically by tests/compose; this script follows the README's compose instructions step by step.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PROJECT=crossfit-ml-services
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi
ML=("${COMPOSE[@]}" -p "$PROJECT" -f services/docker-compose.yaml --env-file services/.env)

scheduler() {
  docker ps --filter "name=scheduler" --filter "network=ml-network" --format '{{.Names}}' | head -n1
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
    if [ ! -f services/.env ]; then
      cp services/.env.example services/.env
      echo "created services/.env from services/.env.example: set MLFLOW_DB_PASSWORD there" >&2
    fi
    "${ML[@]}" up -d --build --wait             # waits for the health checks
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
    echo "Airflow:        http://localhost:8080 (DAG crossfit_training_pipeline)"
    echo "MLflow:         http://localhost:${MLFLOW_PORT:-5000}"
    echo "prediction API: http://localhost:8000/docs (answers once a champion exists)"
    ;;
  down)
    astro dev stop || true
    "${ML[@]}" down
    ;;
  *)
    echo "usage: $0 up|down|mode" >&2
    exit 2
    ;;
esac
