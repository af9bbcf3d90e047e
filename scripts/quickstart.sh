#!/usr/bin/env bash
# From a fresh clone to explained recommendations on a synthetic shop.
# Idempotent: re-running reuses the venv, the Neo4j jars, the running server and the
# sample files, and build-graph changes nothing the second time.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install.sh
export PATH="$PWD/.venv/bin:$PATH"

SHOP=${KGREC_SAMPLE_DIR:-sample_shop}

kgrec db start
if [ ! -f "$SHOP/interactions.csv" ]; then
  kgrec sample-data --out "$SHOP" --products 1000 --users 600
fi
kgrec build-graph --products "$SHOP/products.csv" --interactions "$SHOP/interactions.csv" \
                  --relations "$SHOP/relations.csv" --users "$SHOP/users.csv"
kgrec train
kgrec evaluate --baselines pop,itemknn,bpr,lightgcn
user=$(sed -n 2p "$SHOP/interactions.csv" | cut -d, -f1)
kgrec recommend --user "$user" -k 5 --explain
