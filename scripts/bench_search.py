"""Personalised product search, the HEM protocol (Ai et al., SIGIR 2017), through kgrec's own path.

    python scripts/bench_search.py shop/ --work /tmp/bench-search          # kgrec sample-data --out shop/
    python scripts/bench_search.py /tmp/pp-beauty/source --work /tmp/pp-beauty

``DATA_DIR`` holds kgrec input files (``products.csv``, ``interactions.csv``, optionally
``relations.csv``). Steps:

1. Each user's last product (latest timestamp, ties by product id) is held out with every
   event of that user on it; users with fewer than 3 products keep everything (the same
   rule as ``scripts/bench_product_path.py``).
2. The rest is loaded with ``kgrec build-graph`` into the benchmark's own managed Neo4j
   (``KGREC_HOME=--work/kgrec-home``, port ``--port``) and ``kgrec train`` fits the model.
   A work folder that already has ``heldout.csv`` and ``runs/models/model`` (e.g. one
   ``bench_product_path.py`` left) is reused as it is: its server is started, the search
   indexes are added (``prepare_search``), nothing is retrained.
3. For every held-out pair the query is the target product's category path: its most
   specific category and its parents (for a flat list: all its categories), as words,
   stop words and repeats removed, e.g. ``action camera cameras electronics``.
4. Five rankers on the same users, in the same run, each a full ranking of the catalog
   with the user's loaded products left out: dense text only, lexical (full-text) only,
   hybrid without personalisation, the personalised hybrid (``kgrec search --user``), and
   pure recommendation without the query (``kgrec recommend``, relevance only).
5. NDCG@10 and Recall@10 of the held-out product; the ratio of the personalised hybrid to
   the best non-personalised search and to pure recommendation (target: 1.15 or more).

Prints one table and writes ``--work/search_result.json``. The data stays where it is.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
from bench_product_path import hold_out_last  # noqa: E402 - one hold-out rule for both benchmarks
MODEL_DIR = Path("runs") / "models" / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path, help="kgrec input files: products.csv, interactions.csv[, relations.csv]")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (held-out split, database, model, result)")
    parser.add_argument("--port", type=int, default=7695, help="Bolt port of the benchmark's own managed Neo4j")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for train and search, e.g. search.lexical=0.4")
    parser.add_argument("--users", type=int, default=0, help="score only this many held-out users (a seeded sample); 0 = all")
    args = parser.parse_args()

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["KGREC_HOME"] = str(work / "kgrec-home")
    os.environ.pop("NEO4J_URI", None)
    kgrec = [str(Path(sys.executable).with_name("kgrec"))]
    port = ["--set", f"store.port={args.port}"]
    overrides = [part for o in args.overrides for part in ("--set", o)]
    timings: dict[str, float] = {}

    def run(name: str, command: list[str]) -> None:
        print(f"$ {' '.join(command)}", flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True, env=os.environ, cwd=work)
        timings[name] = round(time.perf_counter() - started, 1)

    reuse = (work / "heldout.csv").exists() and (work / MODEL_DIR).is_dir()
    run("db start", kgrec + ["db", "start"] + port)
    try:
        if reuse:
            print(f"Reusing the split and model in {work}.")
            heldout = pl.read_csv(work / "heldout.csv", schema_overrides={"user_id": pl.Utf8, "product_id": pl.Utf8})
        else:
            input_dir, heldout = hold_out_last(args.data_dir.resolve(), work / "input")
            files = ["--products", str(input_dir / "products.csv"), "--interactions", str(input_dir / "interactions.csv")]
            if (input_dir / "relations.csv").exists():
                files += ["--relations", str(input_dir / "relations.csv")]
            run("build-graph", kgrec + ["build-graph", *files] + port)
            run("train", kgrec + ["train", "--out", str(work / MODEL_DIR)] + port + overrides)
        result = score(work, heldout, args, timings)
    finally:
        subprocess.run(kgrec + ["db", "stop"] + port, env=os.environ, cwd=work)
    (work / "search_result.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"\n{'ranker':26} {'NDCG@10':>8} {'R@10':>7}")
    for name, m in result["rows"].items():
        print(f"{name:26} {m['ndcg@10']:8.4f} {m['recall@10']:7.4f}")
    print(f"users: {result['users']}, distinct queries: {result['queries']}")
    print(f"personalised hybrid / best non-personalised search: {result['over_best_search']:.3f}")
    print(f"personalised hybrid / pure recommendation:          {result['over_recommendation']:.3f}")
    print(f"seconds: {timings}")


def category_query(categories: list[str]) -> str:
    """The HEM query of a product: its most specific category and its parents, as words."""
    from kgrec.rank.search import content_words, tokenise

    names: list[str] = []
    for path in sorted(categories, key=lambda p: -p.count(">")):  # the most specific path first
        names.extend(reversed([part.strip() for part in path.split(">")]))
    return " ".join(content_words(tokenise(" ".join(names))))


def score(work: Path, heldout: pl.DataFrame, args: argparse.Namespace, timings: dict[str, float]) -> dict:
    import random

    from kgrec.config import load_config
    from kgrec.pipeline import load_model, match_query, prepare_search, rank_users, search
    from kgrec.rank.params import RankParams, Weights
    from kgrec.store.connection import GraphStore

    config = load_config(None, [f"store.port={args.port}", *args.overrides])
    started = time.perf_counter()
    updated = prepare_search(config.store)
    timings["prepare_search"] = round(time.perf_counter() - started, 1)
    print(f"Search indexes ready ({updated:,} products' search text written).")
    mixes = {
        "dense text only": ["search.lexical=0", "search.dense=1", "search.entity=0", "search.personal=0"],
        "lexical only": ["search.lexical=1", "search.dense=0", "search.entity=0", "search.personal=0"],
        "hybrid": [],
        "personalised hybrid": [],
    }
    configs = {name: load_config(None, [f"store.port={args.port}", *args.overrides, *extra]) for name, extra in mixes.items()}

    with GraphStore.connect(config.store) as store:
        loaded = load_model(config, work / MODEL_DIR, store)
        products = loaded.snapshot.tables.products.select("product_id", "categories")
        categories = dict(zip(products.get_column("product_id").to_list(), products.get_column("categories").to_list()))
        known_users = set(loaded.recommender.user_ids.ids.to_list())  # type: ignore[union-attr]
        pairs = [
            (u, p) for u, p in heldout.select("user_id", "product_id").iter_rows()
            if u in known_users and p in loaded.product_ids and categories.get(p)
        ]
        print(f"{heldout.height - len(pairs):,} held-out pairs name a user or product the model lacks (or one without categories); left out.")
        if args.users and args.users < len(pairs):
            pairs = random.Random(0).sample(pairs, args.users)
        k = 10
        ranks: dict[str, list[int | None]] = {name: [] for name in [*mixes, "recommendation (no query)"]}

        started = time.perf_counter()
        params = RankParams.from_config(config.rank, Weights.of((1.0, 0.0, 0.0)), k)
        user_ids, ranked, _ = rank_users(loaded, [u for u, _ in pairs], params)
        for row, (_, target) in enumerate(pairs):
            listed = loaded.product_ids.ids.gather(ranked.product_index[row][ranked.product_index[row] >= 0].tolist()).to_list()
            ranks["recommendation (no query)"].append(listed.index(target) + 1 if target in listed else None)
        timings["recommendation"] = round(time.perf_counter() - started, 1)

        started = time.perf_counter()
        matches: dict[str, object] = {}
        for i, (user_id, target) in enumerate(pairs):
            query = category_query(categories[target])
            if query not in matches:
                matches[query] = match_query(loaded, query, config.search)
            for name, cfg in configs.items():
                result = search(cfg, loaded, query, user_id=user_id, k=k, match=matches[query],  # type: ignore[arg-type]
                                personal=name == "personalised hybrid")
                listed = [item["product_id"] for item in result.items]
                ranks[name].append(listed.index(target) + 1 if target in listed else None)
            if (i + 1) % 1000 == 0:
                print(f"  {i + 1:,} of {len(pairs):,} users ({time.perf_counter() - started:.0f} s)", flush=True)
        timings["search"] = round(time.perf_counter() - started, 1)

    rows = {name: metrics(found) for name, found in ranks.items()}
    best_search = max(rows[name]["ndcg@10"] for name in ("dense text only", "lexical only", "hybrid"))
    personal = rows["personalised hybrid"]["ndcg@10"]
    recommendation = rows["recommendation (no query)"]["ndcg@10"]
    return {
        "data_dir": str(args.data_dir),
        "protocol": "HEM (Ai et al. 2017): last product held out per user; query = its category path as words; "
        "full ranking, the user's loaded products excluded",
        "overrides": args.overrides,
        "users": len(pairs),
        "queries": len(matches),
        "rows": rows,
        "over_best_search": personal / best_search if best_search > 0 else math.inf,
        "over_recommendation": personal / recommendation if recommendation > 0 else math.inf,
        "seconds": timings,
    }


def metrics(found: list[int | None]) -> dict[str, float]:
    """NDCG@10 and Recall@10 of one held-out product per user (rank from 1; None = not in the top 10)."""
    n = max(len(found), 1)
    return {
        "ndcg@10": sum(1 / math.log2(r + 1) for r in found if r is not None) / n,
        "recall@10": sum(r is not None for r in found) / n,
    }


if __name__ == "__main__":
    main()
