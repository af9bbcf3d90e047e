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
  echo "Installing kgrec and its dependencies into .venv (the first time downloads torch: a few minutes)…"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[test,fast]"
  echo "$want" > "$stamp"
fi
