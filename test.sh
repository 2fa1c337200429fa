#!/usr/bin/env bash
# The test command: works by itself on a fresh clone. It creates .venv from the lock when it is
# missing or stale (scripts/ensure-env.sh), says which system package is missing and how to install
# it, then runs pytest with the given arguments (none: the whole suite, as CI runs it).
#   ./test.sh                    # everything
#   ./test.sh tests/unit -n 0    # any pytest arguments
set -euo pipefail
cd "$(dirname "$0")"
need=() warn=()
command -v python3.11 >/dev/null 2>&1 || [ -x .venv/bin/python ] || need+=("python3.11 (apt-get install python3.11 python3.11-venv)")
command -v chromium >/dev/null 2>&1 || need+=("chromium (apt-get install chromium): the browser tests drive the UIs")
command -v chromedriver >/dev/null 2>&1 || need+=("chromium-driver (apt-get install chromium-driver)")
command -v docker-compose >/dev/null 2>&1 || need+=("docker-compose (apt-get install docker-compose): Compose 1.29 validates the compose files")
if ! docker version >/dev/null 2>&1 || ! docker compose version >/dev/null 2>&1; then
  # compose mode's live test skips without a Docker engine (and fails under CI=true)
  warn+=("no Docker engine with Compose v2 answers: compose mode's live test will be skipped (bash scripts/ensure-docker.sh installs docker.io, starts dockerd and the Compose plugin)")
fi
if [ "${#need[@]}" -gt 0 ]; then
  printf 'error: missing system package: %s\n' "${need[@]}" >&2
  echo "(bash .ci/run installs all of them with apt, as root)" >&2
  exit 2
fi
if [ "${#warn[@]}" -gt 0 ]; then
  printf 'warning: %s\n' "${warn[@]}" >&2
  if [ "${CI:-}" = true ]; then exit 2; fi
fi
bash scripts/ensure-env.sh
# Python keeps its bytecode caches (git-ignored __pycache__/): this machine's environment sets
# PYTHONDONTWRITEBYTECODE, and uv installs without compiling, so every Airflow, MLflow and task
# process the tests start would compile its imports again (the cost: docs/benchmarks.md, "The
# test suite").
unset PYTHONDONTWRITEBYTECODE
# OpenMP threads (LightGBM, scikit-learn) sleep instead of spinning between parallel regions: the
# tests run dozens of processes on 2 cores, and spinning threads burn the CPU the others wait for
# (measured: docs/benchmarks.md, "The test suite"). The product's defaults are unchanged; serving
# pins one thread itself.
export OMP_WAIT_POLICY=PASSIVE
exec .venv/bin/python -m pytest "$@"
