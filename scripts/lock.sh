#!/usr/bin/env bash
# The locks: every package the local environment and CI install, with its hashes, resolved from
# requirements-dev.txt (which includes requirements.txt) for Python 3.11 and later on every platform
# (requirements.lock); and the prediction API image's subset, requirements-serving.txt resolved
# with the full lock's versions as constraints (requirements-serving.lock).
#
#   scripts/lock.sh            regenerate both locks (keeps the versions they already have,
#                              changes only what the requirements files ask for)
#   scripts/lock.sh --check    exit 1, with the difference, if a lock no longer matches its files
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV="${UV:-$ROOT/.venv/bin/uv}"
[ -x "$UV" ] || UV="$(command -v uv)"
tmpdir="$(mktemp -d)"; trap 'rm -rf "$tmpdir"' EXIT
compile_full() {  # $1: output file (its current content is the preference for unchanged packages)
  "$UV" pip compile requirements-dev.txt --universal --python-version 3.11 --generate-hashes \
    --no-header --quiet --output-file "$1"
}
compile_serving() {  # $1: full lock to take versions from, $2: output file
  grep -E '^[A-Za-z0-9_.-]+(\[[^]]*\])?==' "$1" | sed -E 's/ *\\$//' > "$tmpdir/constraints.txt"
  "$UV" pip compile requirements-serving.txt --constraint "$tmpdir/constraints.txt" --universal \
    --python-version 3.11 --generate-hashes --no-annotate --no-header --quiet --output-file "$2"
}
if [ "${1:-}" = "--check" ]; then
  cp requirements.lock "$tmpdir/full.lock"
  cp requirements-serving.lock "$tmpdir/serving.lock" 2>/dev/null || : > "$tmpdir/serving.lock"
  compile_full "$tmpdir/full.lock"
  compile_serving requirements.lock "$tmpdir/serving.lock"
  stale=0
  diff -u requirements.lock "$tmpdir/full.lock" || stale=1
  diff -u requirements-serving.lock "$tmpdir/serving.lock" || stale=1
  if [ "$stale" = 1 ]; then
    echo "the locks do not match requirements*.txt: run scripts/lock.sh" >&2
    exit 1
  fi
  echo "requirements.lock and requirements-serving.lock match the requirements files"
else
  compile_full requirements.lock
  compile_serving requirements.lock requirements-serving.lock
  echo "wrote requirements.lock ($(grep -c '==' requirements.lock) packages) and requirements-serving.lock ($(grep -c '==' requirements-serving.lock))"
fi
