#!/usr/bin/env bash
# Local stand-ins for the base images the compose files name, for machines that reach no image
# registry (these development machines and their CI): Debian bookworm from Debian's mirror
# (debootstrap), imported as crossfit-standin/debian:bookworm, then one small build per image under
# the tag the compose files and Dockerfiles use. Each carries the label
# org.crossfit-mlops.standin=<the image it stands in for> and org.crossfit-mlops.standin.differs
# (what is not like the real image); tests/compose/standins/*/Dockerfile say the same in prose.
#
#   scripts/standins.sh build     build what is missing (a present stand-in is kept, but the Runtime
#                                 stand-in is rebuilt when requirements.lock changed; the builds
#                                 use Docker's layer cache)
#   scripts/standins.sh list      the stand-ins present, with their labels
#   scripts/standins.sh remove    remove every stand-in image and every image built on one (never
#                                 a real image)
#
# It refuses to put a stand-in over a tag that holds a real image (one without the label): on a
# machine that can pull the real images, use them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STANDINS=tests/compose/standins
BASE=crossfit-standin/debian:bookworm
LABEL=org.crossfit-mlops.standin
MIRROR="${CROSSFIT_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
WORK="${CROSSFIT_STATE_DIR:-$ROOT/.state}/standins"
# tag -> stand-in folder (order matters: python first, the others build on it)
TAGS=(
  "python:3.11-slim=python"
  "postgres:16-alpine=postgres"
  "postgres:12.6=postgres"
  "redis:7-alpine=redis"
  "chrislusf/seaweedfs:4.48=seaweedfs"
  "astrocrpublic.azurecr.io/runtime:3.3-8-python-3.12=astro-runtime"
)

label_of() {  # the stand-in label of an image, "" for a real image, "absent" when there is none
  local out
  if out="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL\" }}" "$1" 2>/dev/null)"; then
    [ "$out" = "<no value>" ] && out=""
    echo "$out"
  else
    echo absent
  fi
}

build_base() {
  [ "$(label_of "$BASE")" = "absent" ] || return 0
  command -v debootstrap >/dev/null || { echo "error: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 2; }
  local rootfs="$WORK/rootfs"
  rm -rf "$rootfs"; mkdir -p "$rootfs"
  echo "debootstrap bookworm from $MIRROR into $rootfs" >&2
  debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
    || { echo "error: debootstrap failed: see $WORK/debootstrap.log" >&2; exit 1; }
  # this machine's own CAs (a TLS-inspecting egress): apt and pip inside the builds trust what it trusts
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  tar -C "$rootfs" -c . | docker import \
    --change "LABEL $LABEL=\"debian:bookworm\"" \
    --change "LABEL $LABEL.differs=\"debootstrap --variant=minbase of bookworm, with this machine's CA certificates\"" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' - "$BASE" >/dev/null
  rm -rf "$rootfs"
}

constraints() {  # the lock's versions, without hashes: what the stand-in Runtime pins
  grep -E '^[A-Za-z0-9_.-]+(\[[^]]*\])?==' requirements.lock | sed -E 's/ *\\$//' | sort -u
}

build_one() {  # $1 tag, $2 folder
  local tag="$1" dir="$STANDINS/$2" current
  current="$(label_of "$tag")"
  if [ "$current" = "" ]; then
    echo "error: $tag is a real image here (no $LABEL label): refusing to replace it with a stand-in" >&2
    exit 2
  fi
  local ctx="$dir" extra=()
  if [ "$2" = "astro-runtime" ]; then  # its build context also needs the lock's versions
    # it pins the lock's versions: a stand-in built from another lock is rebuilt (else the project
    # image's requirements.txt would conflict with its stale pins, e.g. "you require boto3==A and boto3==B")
    local lock built
    lock="$(constraints | sha256sum | cut -c1-16)"
    built="$(docker image inspect --format "{{ index .Config.Labels \"$LABEL.lock\" }}" "$tag" 2>/dev/null || true)"
    if [ "$current" != "absent" ] && [ "$built" = "$lock" ]; then return 0; fi
    [ "$current" = "absent" ] || echo "stand-in $tag was built from another requirements.lock: rebuilding it" >&2
    ctx="$WORK/astro-runtime"; rm -rf "$ctx"; mkdir -p "$ctx"
    cp -r "$dir"/. "$ctx"/
    constraints > "$ctx/constraints.txt"
    extra=(--label "$LABEL.lock=$lock")
  else
    [ "$current" = "absent" ] || return 0
  fi
  echo "building stand-in $tag ($dir)" >&2
  local start=$SECONDS
  docker build -q --build-arg "STANDIN_FOR=$tag" "${extra[@]}" -t "$tag" "$ctx" >/dev/null
  echo "built $tag in $((SECONDS - start)) s" >&2
}

case "${1:-build}" in
  build)
    docker info >/dev/null 2>&1 || { echo "error: no Docker engine answers (start dockerd)" >&2; exit 2; }
    mkdir -p "$WORK"
    # one build at a time on this engine: the compose tests run in parallel, and two builds of one
    # tag would both debootstrap and race on the tags
    exec 9>"${TMPDIR:-/tmp}/crossfit-standins.lock"
    flock 9
    start=$SECONDS
    build_base
    echo "base $BASE ready after $((SECONDS - start)) s" >&2
    for entry in "${TAGS[@]}"; do build_one "${entry%%=*}" "${entry#*=}"; done
    ;;
  list)
    docker images --filter "label=$LABEL" --format '{{.Repository}}:{{.Tag}}\t{{.Size}}'
    ;;
  remove)  # children first: repeat until no image with the label is left (every image built on one)
    for _ in 1 2 3 4 5 6; do
      ids="$(docker images -q --filter "label=$LABEL" | sort -u)"
      [ -n "$ids" ] || break
      for id in $ids; do docker rmi -f "$id" >/dev/null 2>&1 || true; done
    done
    left="$(docker images -q --filter "label=$LABEL" | sort -u)"
    [ -z "$left" ] || { echo "error: images still present (used by containers?): $left" >&2; exit 1; }
    ;;
  *)
    echo "usage: $0 build|list|remove" >&2
    exit 2
    ;;
esac
