#!/usr/bin/env bash
# Compose mode of start-all.sh / stop-all.sh: the ML services stack (services/docker-compose.yaml:
# MLflow with basic-auth on PostgreSQL, SeaweedFS for its artifacts, Redis for Feast) and the Astro
# project (astro dev start), joined on the Docker network ml-network. Needs a running Docker engine
# and the Astro CLI.
#
#   scripts/compose.sh up      start both stacks, apply Feast in the scheduler, trigger the DAG
#   scripts/compose.sh down    stop both stacks (volumes are kept)
#   scripts/compose.sh remove  remove both stacks WITH their volumes (runs, registry, features, Airflow's database)
#   scripts/compose.sh workers up|down|remove
#                              workers mode: Airflow on the CeleryExecutor, two Celery workers that
#                              are other hosts (no shared volume), the ML services, one project
#                              (services/docker-compose.workers.yaml; secrets in .state/workers.env)
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

new_value() {  # a generated value of the form variable $1 needs
  case "$1" in
    *FERNET_KEY) head -c 32 /dev/urandom | base64 | tr '+/' '-_' ;;  # Fernet: 32 url-safe base64 bytes
    *) generated ;;
  esac
}

# ensure_env FILE EXAMPLE...: FILE with every variable of the examples (a missing FILE is created,
# a variable it lacks is added: each "change-me" as a generated value, mode 0600), refused while a
# value is still "change-me", then exported
ensure_env() {
  local file="$1" example line key created="" added="" mask
  shift
  mask="$(umask)"
  umask 077
  if [ ! -f "$file" ]; then
    mkdir -p "$(dirname "$file")"
    : > "$file"
    created=1
  fi
  for example in "$@"; do
    while IFS= read -r line; do
      case "$line" in
        [A-Z]*=*)
          key="${line%%=*}"
          grep -q "^$key=" "$file" && continue
          [ -n "$created" ] || added="$added $key"
          case "$line" in *=change-me) line="$key=$(new_value "$key")" ;; esac
          echo "$line" >> "$file"
          ;;
        *) [ -z "$created" ] || echo "$line" >> "$file" ;;  # the examples' comments, in a new file only
      esac
    done < "$example"
  done
  [ -z "$created" ] || echo "created $file with generated secrets (mode 0600); the MLflow login is MLFLOW_ADMIN_USER / MLFLOW_ADMIN_PASSWORD there" >&2
  [ -z "$added" ] || echo "added to $file (generated where secret):$added" >&2
  chmod 600 "$file"
  umask "$mask"
  local unset
  unset="$(grep -E '^[A-Z_]+=change-me$' "$file" | cut -d= -f1 | tr '\n' ' ' || true)"
  if [ -n "$unset" ]; then
    echo "error: $file still has the example value change-me for: ${unset% }" >&2
    echo "set real values there (or delete the file: compose.sh up then generates them)" >&2
    exit 1
  fi
  local source="$file"
  case "$source" in /*) ;; *) source="./$source" ;; esac
  set -a
  # shellcheck disable=SC1090
  . "$source"
  set +a
}

# Workers mode: the ML services and Airflow on the CeleryExecutor with two workers, each its own
# host (services/docker-compose.workers.yaml), as one compose project on its own network
workers() {
  local env_file="${CROSSFIT_WORKERS_ENV:-${CROSSFIT_STATE_DIR:-.state}/workers.env}"
  local project="${CROSSFIT_WORKERS_PROJECT:-crossfit-workers}"
  export CROSSFIT_WORKERS_IMAGE="${CROSSFIT_WORKERS_IMAGE:-crossfit-workers/airflow:latest}"
  case "${1:-up}" in
    up)
      ensure_env "$env_file" "$EXAMPLE" services/workers.env.example
      compose_cmd
      # the project image, DAGs and include/ baked in: every Airflow container and the API run it
      docker build -q --force-rm -t "$CROSSFIT_WORKERS_IMAGE" -f Dockerfile . >/dev/null   # no container left by a failed step
      "${COMPOSE[@]}" -p "$project" -f services/docker-compose.yaml -f services/docker-compose.workers.yaml \
        --env-file "$env_file" up -d --build --wait --wait-timeout "${CROSSFIT_COMPOSE_WAIT_S:-600}"
      local bind="${CROSSFIT_BIND:-127.0.0.1}"
      echo "Airflow:        http://$bind:${CROSSFIT_AIRFLOW_PORT:-8080} (user admin, password: AIRFLOW_ADMIN_PASSWORD in $env_file)"
      echo "MLflow:         http://$bind:${MLFLOW_PORT:-5000} (user ${MLFLOW_ADMIN_USER:-admin}, password: MLFLOW_ADMIN_PASSWORD in $env_file)"
      echo "prediction API: http://$bind:${CROSSFIT_API_PORT:-8000}/docs (answers once a champion exists)"
      ;;
    down|remove)
      [ -f "$env_file" ] || { echo "no $env_file: workers mode was never started here" >&2; exit 0; }
      ensure_env "$env_file" "$EXAMPLE" services/workers.env.example
      compose_cmd
      local volumes=()  # remove: the volumes go too, so no warm shutdown to wait for
      [ "$1" = "down" ] || volumes=(--volumes --timeout 10)
      "${COMPOSE[@]}" -p "$project" -f services/docker-compose.yaml -f services/docker-compose.workers.yaml \
        --env-file "$env_file" down "${volumes[@]}" --remove-orphans
      ;;
    *)
      echo "usage: $0 workers up|down|remove" >&2
      exit 2
      ;;
  esac
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
    ensure_env "$ENV_FILE" "$EXAMPLE"           # before any container starts
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
    ensure_env "$ENV_FILE" "$EXAMPLE"
    compose_cmd
    "${ASTRO[@]}" dev stop || true
    "${ML[@]}" down                            # containers and network go, the named volumes stay
    ;;
  remove)
    [ -f "$ENV_FILE" ] || { echo "no $ENV_FILE: the ML services stack was never started here" >&2; exit 0; }
    ensure_env "$ENV_FILE" "$EXAMPLE"
    compose_cmd
    "${ASTRO[@]}" dev kill                      # the Astro project's containers and volumes
    "${ML[@]}" down --volumes --remove-orphans
    docker network rm ml-network >/dev/null 2>&1 || true   # absent already, or still used by a container of another project
    ;;
  workers)
    workers "${2:-up}"
    ;;
  *)
    echo "usage: $0 up|down|remove|mode|workers [up|down|remove]" >&2
    exit 2
    ;;
esac
