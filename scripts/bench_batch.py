#!/usr/bin/env python
"""Batch ranking speed: ``kgrec recommend --all-users`` against a naive per-user loop.

Both rank from the same warm :class:`~kgrec.service.LoadedModel` (no database:
histories from the model's snapshot, as ``--all-users`` does), with the configured
weights, MMR and exploration bonus, top-``k``. The batched path ranks every user; the
naive loop calls the single-user path for ``--naive-users`` users, and the ratio is per
user, measured in the same run.

Usage:
    python scripts/bench_batch.py --model runs/models/latest
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from bench_machine import describe_machine

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the kgrec CLI does
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kgrec.config import load_config  # noqa: E402
from kgrec import pipeline  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--naive-users", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3, help="batched runs; the best counts")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    config = load_config(None, args.overrides)
    started = time.perf_counter()
    loaded = pipeline.load_model(config, args.model, None)
    load_s = time.perf_counter() - started
    users = loaded.recommender.user_ids.ids.to_list()
    with tempfile.TemporaryDirectory() as tmp:
        runs = []
        for _ in range(args.repeats):
            started = time.perf_counter()
            n = pipeline.recommend_all(loaded, Path(tmp) / "recs.jsonl", k=args.k)
            runs.append(time.perf_counter() - started)
    batch_s = min(runs)
    sample = random.Random(0).sample(users, min(args.naive_users, len(users)))
    started = time.perf_counter()
    for user in sample:
        pipeline.recommend(loaded, user, k=args.k)
    naive_s = time.perf_counter() - started
    figures = {
        "machine": describe_machine(),
        "users": n,
        "products": loaded.num_products,
        "k": args.k,
        "load_model_s": round(load_s, 2),
        "all_users_s": round(batch_s, 2),
        "all_users_runs_s": [round(r, 2) for r in runs],
        "naive_users": len(sample),
        "naive_ms_per_user": round(naive_s / len(sample) * 1000, 2),
        "naive_all_users_s_estimate": round(naive_s / len(sample) * n, 1),
        "speedup": round((naive_s / len(sample)) / (batch_s / n), 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
