#!/usr/bin/env bash
# Create .venv if missing and install kgrec into it (editable, with test extras).
# Idempotent: a second run only checks that the install matches pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
for tool in java javac mvn; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "error: '$tool' was not found. The managed local Neo4j needs Java 17+ and Maven." >&2
    echo "       Install them (e.g. apt-get install openjdk-17-jdk maven), or point kgrec at your own" >&2
    echo "       server with NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD." >&2
    exit 1
  fi
done

if [ ! -x .venv/bin/python ]; then
  echo "Creating .venv with $($PYTHON --version)…"
  "$PYTHON" -m venv .venv
fi

stamp=.venv/.kgrec-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # torch from PyPI brings its CUDA libraries: about 6.5 GB installed. Say so before
  # pip fails half-way with "No space left on device".
  need_gib=8
  free_kib=$(df -Pk .venv | awk 'NR==2 {print $4}')
  if [ "$free_kib" -lt $((need_gib * 1024 * 1024)) ]; then
    echo "error: $(pwd)/.venv needs about ${need_gib} GiB free for torch and its CUDA libraries;" >&2
    echo "       only $((free_kib / 1024 / 1024)) GiB is free there. Free some space, or clone kgrec onto a larger disk." >&2
    exit 1
  fi
  echo "Installing kgrec and its dependencies into .venv (the first time downloads torch: a few minutes)…"
  # --no-cache-dir: pip's wheel cache would hold a second copy of torch (about 3.5 GB).
  .venv/bin/python -m pip install --quiet --no-cache-dir --upgrade pip
  .venv/bin/python -m pip install --quiet --no-cache-dir -e ".[test,fast]"
  echo "$want" > "$stamp"
fi
