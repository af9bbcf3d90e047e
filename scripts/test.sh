#!/usr/bin/env bash
# Install what is missing, then run the whole test suite against a real Neo4j.
# The tests start their own throwaway Neo4j (free port, own data folder) and stop it
# at the end; extra arguments go to pytest, e.g. ./scripts/test.sh -k ingest
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh
exec .venv/bin/python -m pytest "$@"
