#!/usr/bin/env bash
# The full lock: every package the local environment and CI install, with its hashes, resolved
# from requirements-dev.txt (which includes requirements.txt) for Python 3.11 on every platform.
#
#   scripts/lock.sh            regenerate requirements.lock (keeps the versions it already has,
#                              changes only what the requirements files ask for)
#   scripts/lock.sh --check    exit 1, with the difference, if the lock no longer matches them
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV="${UV:-$ROOT/.venv/bin/uv}"
[ -x "$UV" ] || UV="$(command -v uv)"
compile() {  # $1: output file (its current content is the preference for unchanged packages)
  "$UV" pip compile requirements-dev.txt --universal --python-version 3.11 --generate-hashes \
    --no-header --quiet --output-file "$1"
}
if [ "${1:-}" = "--check" ]; then
  tmp="$(mktemp)"; trap 'rm -f "$tmp"' EXIT
  cp requirements.lock "$tmp"
  compile "$tmp"
  if ! diff -u requirements.lock "$tmp"; then
    echo "requirements.lock does not match requirements.txt / requirements-dev.txt: run scripts/lock.sh" >&2
    exit 1
  fi
  echo "requirements.lock matches requirements.txt and requirements-dev.txt"
else
  compile requirements.lock
  echo "wrote requirements.lock ($(grep -c '==' requirements.lock) packages)"
fi
