#!/usr/bin/env python
"""Where one served request's time goes: each step of ``GET /recommend``'s ranking, timed apart.

A synthetic shop goes into a throwaway Neo4j (free port, temporary folder); a model is trained
on it for each ``--config NAME=FILE`` (``-`` for the defaults) under the same ``--set``
settings; then one process ranks ``--requests`` random users one at a time, on the torch
threads a served request uses (``rank.request_threads``, and ``rank.scan_threads`` for the
scan), and times the steps of :func:`kgrec.pipeline.rank_users`:

- ``events``: the user's current events, one read from Neo4j;
- ``user_vector``: the sequence encoder over the latest events;
- ``scoring``: every product's relevance (or the candidate stage above ``rank.exact_max_products``);
- ``ranking``: normalisation, the candidate pool, MMR and the exploration bonus;
- ``rows``: the response's product rows.

In-process figures, without HTTP: for finding the step to work on. Latency targets are
measured over HTTP by ``scripts/bench_serving.py``.

Usage:
    python scripts/bench_request_steps.py --products 100000 --users 5000 \\
        --config defaults=- --config accurate=configs/accurate.yaml
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_machine import describe_machine  # noqa: E402
from bench_serving import report, throwaway_neo4j  # noqa: E402 - the serving benchmark's throwaway Neo4j and report

STEPS = ("events", "user_vector", "scoring", "ranking", "rows")
WARMUP = 50


def time_steps(config, model_dir: Path, store, user_ids: list[str]) -> dict[str, dict[str, float]]:
    """Median and 90th percentile per step (ms) over ``user_ids`` after the first ``WARMUP``."""
    import torch

    from kgrec.pipeline import _rank_params, load_model
    from kgrec.rank.ranking import rank
    from kgrec.service import items
    from kgrec.threads import scan, scan_threads, torch_threads

    loaded = load_model(config, model_dir, store)
    params = _rank_params(loaded, None, None, False)
    recommender = loaded.recommender
    times: dict[str, list[float]] = {step: [] for step in (*STEPS, "total")}
    with torch_threads(config.rank.request_threads), scan_threads(config.rank.scan_threads), torch.no_grad():
        for number, user in enumerate(user_ids):
            marks = [time.perf_counter()]
            _, histories = loaded.histories([user])
            marks.append(time.perf_counter())
            vectors = recommender.user_vectors(histories)
            marks.append(time.perf_counter())
            if loaded.retriever is not None:
                relevance = recommender.add_co_interactions(
                    loaded.retriever.candidates(vectors, histories, params.weights), histories, vectors,
                    loaded.config.rank.retrieval_candidates,
                )
            else:  # Recommender.score without its own user_vectors call: the cached [dim, P] copy
                relevance = scan(vectors, recommender._products_by_column(recommender.product_embedding))
                if recommender.co_interaction_weight:
                    relevance += recommender.co_interaction_weight * recommender.co_interactions.scores(
                        histories, relevance.shape[1]
                    )
            marks.append(time.perf_counter())
            ranked = rank(relevance, loaded.catalog, params, histories)
            marks.append(time.perf_counter())
            items(loaded, ranked.user(0))
            marks.append(time.perf_counter())
            if number >= WARMUP:
                for step, start, end in zip(STEPS, marks, marks[1:]):
                    times[step].append((end - start) * 1000)
                times["total"].append((marks[-1] - marks[0]) * 1000)
    return {
        step: {"p50_ms": round(statistics.median(values), 2), "p90_ms": round(sorted(values)[int(0.9 * len(values))], 2)}
        for step, values in times.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=5_000)
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--requests", type=int, default=400, help=f"users ranked per model (the first {WARMUP} warm up)")
    parser.add_argument("--config", dest="configs", action="append", default=[], metavar="NAME=FILE",
                        help="a model to train and time: a run config file, or - for the defaults (repeatable)")
    parser.add_argument("--set", dest="overrides", action="append", default=["model.use_text=false", "train.epochs=1"],
                        help="settings for every model (text off and one epoch by default: the timing depends on shapes)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    configs = {}
    for spec in args.configs or ["defaults=-"]:
        name, _, path = spec.partition("=")
        if not name or not path:
            parser.error(f"--config {spec!r}: expected NAME=FILE or NAME=-")
        configs[name] = None if path == "-" else path
    if args.requests <= WARMUP:
        parser.error(f"--requests must be more than the {WARMUP} warm-up requests")

    from kgrec.config import load_config
    from kgrec.ingest.synthetic import write_sample_shop
    from kgrec.pipeline import build_graph, train
    from kgrec.store.connection import GraphStore

    work = Path(tempfile.mkdtemp(prefix="kgrec-bench-steps-"))
    figures: dict = {"machine": describe_machine()}
    with throwaway_neo4j(work):
        shop = write_sample_shop(work / "shop", args.products, args.users, seed=0, events_per_user=args.events_per_user)
        build_graph(load_config(None, args.overrides), shop["products"], shop["interactions"], shop["relations"], shop["users"])
        user_ids = [line.split(",")[0] for line in shop["users"].read_text().splitlines()[1:]]
        rng = random.Random(0)
        sample = [rng.choice(user_ids) for _ in range(args.requests)]
        for name, path in configs.items():
            config = load_config(path, args.overrides)
            started = time.perf_counter()
            run = train(config, runs_dir=work / f"runs-{name}", write_embeddings=False, echo=lambda *_: None)
            figures[f"train_s@{name}"] = round(time.perf_counter() - started, 1)
            with GraphStore.connect(config.store) as store:
                figures[name] = time_steps(config, run.model_dir, store, sample)
            print(name, json.dumps(figures[name]), flush=True)
    report(figures, args.json)

if __name__ == "__main__":
    main()
