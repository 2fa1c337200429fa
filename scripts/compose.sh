#!/usr/bin/env bash
# Compose mode of start-all.sh / stop-all.sh: the ML services stack (services/docker-compose.yaml:
# MLflow with basic-auth on PostgreSQL, SeaweedFS for its artifacts, Redis for Feast) and the Astro
# project (astro dev start), joined on the Docker network ml-network. Needs a running Docker engine
# and the Astro CLI.
#
#   scripts/compose.sh up      start both stacks, apply Feast in the scheduler, trigger the DAG
#   scripts/compose.sh down    stop both stacks (volumes are kept)
#   scripts/compose.sh remove  remove both stacks WITH their volumes (runs, registry, features, Airflow's database)
#   scripts/compose.sh mode    print "compose" or "local": CROSSFIT_MODE, or for "auto" (default)
#                              compose when a Docker engine answers and the Astro CLI is installed
#
# Secrets: services/.env (CROSSFIT_COMPOSE_ENV; git-ignored, mode 0600). If it is missing, `up`
# creates it from services/.env.example with every "change-me" replaced by a generated value; it
# refuses to start while any value is still "change-me". Passwords are never printed.
#
# Needs Docker Compose v2 (the Astro CLI 1.45 embeds v2.40.3; scripts/ensure-docker.sh installs it):
# Compose 1.x does not know `up --wait`, prints its usage, exits 0 and starts nothing, so it is
# refused. CROSSFIT_ASTRO names the Astro CLI command (default `astro`; the tests use the stand-in
# tests/compose/astro_cli.py, since the CLI cannot be installed on the development machines).
# Run for real in CI by tests/compose/test_compose_live.py, on local stand-ins of the base images
# (scripts/standins.sh).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PROJECT=crossfit-ml-services
ENV_FILE="${CROSSFIT_COMPOSE_ENV:-services/.env}"
EXAMPLE=services/.env.example

read -r -a ASTRO <<< "${CROSSFIT_ASTRO:-astro}"
API_IMAGE=crossfit-prediction-api:latest

compose_cmd() {  # Compose v2 or a clear refusal (never a Compose that would start nothing)
  local version
  if version="$(docker compose version --short 2>/dev/null)"; then
    COMPOSE=(docker compose)
  elif version="$(docker-compose version --short 2>/dev/null)"; then
    COMPOSE=(docker-compose)
  else
    echo "error: Docker Compose v2 is not installed (the Astro CLI embeds v2.40.3; scripts/ensure-docker.sh installs it)" >&2
    exit 2
  fi
  version="${version#v}"
  if ! [[ "${version%%.*}" =~ ^[0-9]+$ ]] || [ "${version%%.*}" -lt 2 ]; then
    echo "error: Docker Compose $version is not supported: compose mode needs Compose v2 (the Astro CLI embeds v2.40.3; Compose 1.x does not know 'up --wait' and starts nothing)" >&2
    exit 2
  fi
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
      if command -v "${ASTRO[0]}" >/dev/null 2>&1 && docker info >/dev/null 2>&1; then mode=compose; else mode=local; fi
    fi
    echo "$mode"
    ;;
  up)
    ensure_env                                  # before any container starts
    compose_cmd
    docker network inspect ml-network >/dev/null 2>&1 || docker network create ml-network >/dev/null
    "${ML[@]}" up -d --build --wait --wait-timeout "${CROSSFIT_COMPOSE_WAIT_S:-300}"  # health checks, bucket-init
    # the prediction API's image first: `astro dev start` builds only the project image and starts
    # the merged services without building (a missing image would fail with "No such image")
    docker build -q -t "$API_IMAGE" -f services/Dockerfile.api . >/dev/null
    "${ASTRO[@]}" dev start --no-browser        # builds Dockerfile, merges docker-compose.override.yml
    container="$(scheduler)"
    [ -n "$container" ] || { echo "no scheduler container on ml-network: see 'astro dev logs'" >&2; exit 1; }
    # registry + Redis online store, as the pipeline does it (feast apply on the yaml also works)
    docker exec "$container" python -m crossfit_mlops feast-apply
    if [ "${CROSSFIT_TRIGGER:-1}" != "0" ]; then
      "${ASTRO[@]}" dev run dags unpause crossfit_training_pipeline
      "${ASTRO[@]}" dev run dags unpause crossfit_batch_inference
      "${ASTRO[@]}" dev run dags trigger crossfit_training_pipeline
    fi
    bind="${CROSSFIT_BIND:-127.0.0.1}"
    echo "Airflow:        http://localhost:8080 (DAG crossfit_training_pipeline)"
    echo "MLflow:         http://$bind:${MLFLOW_PORT:-5000} (user ${MLFLOW_ADMIN_USER:-admin}, password: MLFLOW_ADMIN_PASSWORD in $ENV_FILE)"
    echo "prediction API: http://$bind:${CROSSFIT_API_PORT:-8000}/docs (answers once a champion exists)"
    ;;
  down)
    [ -f "$ENV_FILE" ] || { echo "no $ENV_FILE: the ML services stack was never started here" >&2; "${ASTRO[@]}" dev stop || true; exit 0; }
    ensure_env
    compose_cmd
    "${ASTRO[@]}" dev stop || true
    "${ML[@]}" down                            # containers and network go, the named volumes stay
    ;;
  remove)
    [ -f "$ENV_FILE" ] || { echo "no $ENV_FILE: the ML services stack was never started here" >&2; exit 0; }
    ensure_env
    compose_cmd
    "${ASTRO[@]}" dev kill                      # the Astro project's containers and volumes
    "${ML[@]}" down --volumes --remove-orphans
    docker network rm ml-network >/dev/null 2>&1 || true   # absent already, or still used by a container of another project
    ;;
  *)
    echo "usage: $0 up|down|remove|mode" >&2
    exit 2
    ;;
esac
