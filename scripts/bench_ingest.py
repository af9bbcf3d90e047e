#!/usr/bin/env python
"""Ingest speed: kgrec's batched loader against a naive one-row-per-transaction loader.

Both load the same interactions into the same fresh local Neo4j, in the same run, so
the ratio holds even on a noisy machine. The batched load is repeated (the best counts;
the first, on a cold JVM, is reported too), and the interactions are loaded once more
through the Cypher UNWIND path that servers without kgrec's procedure get. The script starts its own throwaway server
(free port, temporary data folder) and deletes it afterwards; it never touches the
database kgrec normally uses.

Usage:
    python scripts/convert_beauty.py ../shared/data/amazon_beauty_2014 /tmp/beauty
    python scripts/bench_ingest.py --products /tmp/beauty/products.csv \\
        --interactions /tmp/beauty/interactions.csv --relations /tmp/beauty/relations.csv
    python scripts/bench_ingest.py --sample-products 20000   # synthetic shop instead
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import polars as pl

from bench_machine import describe_machine

from kgrec.ingest.config import IngestConfig
from kgrec.ingest.synthetic import write_sample_shop
from kgrec.ingest.validate import load_tables
from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import clear_graph, write_graph, write_interactions
from kgrec.store.server import free_port, start_server, stop_server

NAIVE_QUERY = """
MATCH (u:User {id: $user_id})
MATCH (p:Product {id: $product_id})
MERGE (u)-[r:INTERACTED {event: $event, timestamp: $timestamp}]->(p)
SET r.weight = $weight, r.value = $value
"""


def naive_load(store: GraphStore, interactions: pl.DataFrame) -> float:
    """One transaction per row, the way a first script often does it. Returns seconds."""
    start = time.perf_counter()
    for row in interactions.iter_rows(named=True):
        store.run(NAIVE_QUERY, row)
    return time.perf_counter() - start


def delete_interactions(store: GraphStore) -> None:
    while store.run("MATCH ()-[r:INTERACTED]->() WITH r LIMIT 10000 DELETE r RETURN count(*) AS n")[0]["n"]:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=Path)
    parser.add_argument("--interactions", type=Path)
    parser.add_argument("--relations", type=Path)
    parser.add_argument("--sample-products", type=int, default=20_000, help="synthetic shop size when no files are given")
    parser.add_argument("--naive-rows", type=int, default=3_000, help="rows the naive loader writes (it is slow)")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=2, help="batched loads into a cleared graph; the best counts")
    parser.add_argument("--json", type=Path, help="write the figures here as JSON")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="kgrec-bench-ingest-"))
    if args.products is None:
        paths = write_sample_shop(workdir / "shop", num_products=args.sample_products, num_users=args.sample_products // 2, seed=0)
        args.products, args.interactions, args.relations = paths["products"], paths["interactions"], paths.get("relations")

    t0 = time.perf_counter()
    tables, report = load_tables(args.products, args.interactions, args.relations, config=IngestConfig())
    validate_s = time.perf_counter() - t0
    print(f"validated {tables.num_interactions:,} interactions, {tables.num_products:,} products in {validate_s:.2f} s")

    port = free_port()
    state = start_server(port=port, heap_mb=2048, pagecache_mb=1024)
    try:
        with GraphStore(state.uri, auth=state.auth) as store:
            results = []
            for repeat in range(args.repeats):
                clear_graph(store)
                step_seconds: dict[str, float] = {}
                last = [time.perf_counter()]

                def progress(step: str, n: int) -> None:
                    now = time.perf_counter()
                    step_seconds[step] = step_seconds.get(step, 0.0) + now - last[0]
                    last[0] = now

                t0 = time.perf_counter()
                summary = write_graph(store, tables, args.batch_size, progress=progress)
                total_s = time.perf_counter() - t0
                results.append((step_seconds["interactions"], total_s, summary, dict(step_seconds)))
                print(
                    f"  batched load {repeat + 1}: interactions {step_seconds['interactions']:.2f} s, "
                    f"whole graph {total_s:.2f} s"
                )
            interactions_s, total_s, summary, steps = min(results, key=lambda r: r[0])

            # The Cypher UNWIND path, which a server without kgrec's procedure (NEO4J_URI) gets.
            delete_interactions(store)
            t0 = time.perf_counter()
            write_interactions(store, tables.interactions, args.batch_size, procedure=False)
            cypher_s = time.perf_counter() - t0
            print(f"  Cypher UNWIND path: interactions {cypher_s:.2f} s")

            # The naive loader writes the first rows again into a graph without interactions.
            delete_interactions(store)
            sample = tables.interactions.head(args.naive_rows)
            naive_s = naive_load(store, sample)
    finally:
        stop_server(port)
        shutil.rmtree(state.server_dir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)

    batched_rate = tables.num_interactions / interactions_s
    naive_rate = sample.height / naive_s
    figures = {
        "machine": describe_machine(),
        "interactions": tables.num_interactions,
        "products": tables.num_products,
        "users": tables.num_users,
        "relations": tables.relations.height,
        "validate_s": round(validate_s, 2),
        "batched_interactions_s": round(interactions_s, 2),
        "batched_whole_graph_s": round(total_s, 2),
        "batched_interactions_per_s": round(batched_rate),
        "first_load_interactions_per_s": round(tables.num_interactions / results[0][0]),
        "cypher_path_interactions_per_s": round(tables.num_interactions / cypher_s),
        "steps_s": {step: round(seconds, 2) for step, seconds in steps.items()},
        "naive_rows": sample.height,
        "naive_interactions_per_s": round(naive_rate),
        "speedup": round(batched_rate / naive_rate, 1),
        "graph": summary.totals,
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
