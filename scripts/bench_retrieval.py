#!/usr/bin/env python
"""Candidate retrieval on a large catalog: the full pass against exact blocked top-k and the IVF index.

A synthetic clustered catalog (no Neo4j, no training): ``--products`` unit vectors of
``--dim`` around ``products / 500`` random centres, a brand and a category tree for the
exploration bonus, a skewed popularity. Each user has seen 10 products of one cluster and
their vector is the mean of those (as kgrec's history rule builds it).

For each way of ranking, the same users are ranked top-``k`` with the default weights
(0.7, 0.1, 0.2: MMR over a pool of 200 and the exploration bonus) by
:func:`kgrec.rank.ranking.rank`:

- ``full pass``: every product scored (``[b, P]``), as catalogs up to ``rank.exact_max_products``;
- ``exact``: the candidate stage with exact blocked top-k (``rank.retrieval=exact``);
- ``ivf, p probes``: the candidate stage with the faiss IVF index (``rank.retrieval=ivf``).

Times are per user, for batches of ``--batch`` users (``--all-users``, all threads) and for
single users with one torch thread (a served request, without HTTP or the history read).
Recall is against exact: ``recall@C`` of the retrieved candidates against the exact index's
(the true top-C by ``α·relevance + β·popularity``), and ``top-k recall`` / ``same list`` of the
final lists against the full pass's.

Usage:
    python scripts/bench_retrieval.py --products 1000000 --users 1024 --single-users 100
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the kgrec CLI does
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_machine import describe_machine

from kgrec.models.history import Histories  # noqa: E402
from kgrec.rank.config import RankConfig  # noqa: E402
from kgrec.rank.engine import RankedList  # noqa: E402
from kgrec.threads import torch_threads  # noqa: E402
from kgrec.rank.exploration import ExplorationGraph  # noqa: E402
from kgrec.rank.params import RankParams  # noqa: E402
from kgrec.rank.ranking import Catalog, rank  # noqa: E402
from kgrec.rank.retrieval import Retriever  # noqa: E402

PRODUCTS_PER_CLUSTER = 500
SEEN_PER_USER = 10


def synthetic_catalog(num_products: int, num_users: int, dim: int, seed: int):
    """``(products [P, dim], users [U, dim], histories, catalog)``, clustered as the module docstring says."""
    generator = torch.Generator().manual_seed(seed)
    num_clusters = max(1, num_products // PRODUCTS_PER_CLUSTER)
    centres = F.normalize(torch.randn(num_clusters, dim, generator=generator), dim=-1)
    cluster = torch.randint(num_clusters, (num_products,), generator=generator)
    noise = F.normalize(torch.randn(num_products, dim, generator=generator), dim=-1)
    products = F.normalize(centres[cluster] + 0.6 * noise, dim=-1)
    # Users: 10 products of one cluster each, their vector the normalised mean.
    order = cluster.argsort()
    start = torch.searchsorted(cluster[order], torch.arange(num_clusters))
    size = torch.bincount(cluster, minlength=num_clusters)
    user_cluster = torch.multinomial(size.float(), num_users, replacement=True, generator=generator)
    pick = (torch.rand(num_users, SEEN_PER_USER, generator=generator) * size[user_cluster, None]).long()
    seen = order[start[user_cluster, None] + pick]  # [U, 10]
    users = F.normalize(products[seen].mean(1), dim=-1)
    n = seen.numel()
    histories = Histories.from_events(
        torch.arange(num_users).repeat_interleave(SEEN_PER_USER), seen.reshape(-1), torch.zeros(n), torch.ones(n), num_users
    )
    # The knowledge graph: 20 top categories, 40 leaves under each; a cluster sits in one leaf.
    num_top, leaves_per_top = 20, 40
    parent = torch.cat([torch.full((num_top,), -1), torch.arange(num_top).repeat_interleave(leaves_per_top)])
    category = num_top + cluster % (num_top * leaves_per_top)
    brand = torch.randint(max(1, num_products // 200), (num_products,), generator=generator)
    popularity = torch.rand(num_products, generator=generator) ** 8 * 1000
    graph = ExplorationGraph.build(brand, category.unsqueeze(1), parent)
    return products, users, histories, Catalog(popularity, graph, products)


def rank_all(users, histories, catalog, params, relevance_of, batch: int) -> RankedList:
    parts = []
    for start in range(0, users.shape[0], batch):
        rows = torch.arange(start, min(start + batch, users.shape[0]))
        selected = histories.select(rows)
        parts.append(rank(relevance_of(users[rows], selected), catalog, params, selected))
    return RankedList(*(torch.cat([getattr(p, f) for p in parts]) for f in RankedList.__dataclass_fields__))


def timed(fn, *args):
    started = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1024, help="users ranked in batches")
    parser.add_argument("--single-users", type=int, default=100, help="users ranked one at a time (1 thread)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64, help="users per batch (a full-pass batch is [batch, P] floats)")
    parser.add_argument("--probes", default="8,16,32", help="IVF probe counts to compare")
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    load_before = os.getloadavg()
    products, users, histories, catalog = synthetic_catalog(args.products, args.users, args.dim, args.seed)
    config = RankConfig()
    params = RankParams.from_config(config, k=args.k)
    num_candidates = config.retrieval_candidates

    def full_pass(vectors, _histories):
        return vectors @ products.T

    def candidates_of(retriever: Retriever):
        return lambda vectors, selected: retriever.candidates(vectors, selected, params.weights)

    exact = Retriever(products, catalog.sorted_popularity, num_candidates, "exact")
    ways = {"full pass": (full_pass, 0.0, None), "exact": (candidates_of(exact), 0.0, exact)}
    ivf, build_s = timed(Retriever, products, catalog.sorted_popularity, num_candidates, "ivf")
    for probes in (int(p) for p in args.probes.split(",")):
        retriever = _with_probes(ivf, probes)
        ways[f"ivf, {probes} probes"] = (candidates_of(retriever), build_s, retriever)

    def all_candidates(retriever: Retriever):
        rows = torch.arange(args.users).split(args.batch)
        return torch.cat([retriever.candidates(users[r], histories.select(r), params.weights).product_index for r in rows])

    exact_candidates = all_candidates(exact)
    single = torch.arange(min(args.single_users, args.users))
    results, reference = [], None
    for name, (relevance_of, build, retriever) in ways.items():
        with torch_threads(os.cpu_count()):
            ranked, batch_s = timed(rank_all, users, histories, catalog, params, relevance_of, args.batch)
        with torch_threads(1):
            _, single_s = timed(rank_all, users[single], histories.select(single), catalog, params, relevance_of, 1)
            retrieve_s = None
            if retriever is not None:
                _, retrieve_s = timed(lambda: [relevance_of(users[i : i + 1], histories.select(torch.tensor([i]))) for i in single.tolist()])
        row = {
            "way": name,
            "index_build_s": round(build, 1),
            "batch_ms_per_user": round(batch_s / args.users * 1000, 3),
            "single_ms_per_user": round(single_s / single.numel() * 1000, 2),
            "single_retrieval_ms": None if retrieve_s is None else round(retrieve_s / single.numel() * 1000, 2),
        }
        if retriever is not None:
            row["recall_at_C"] = round(recall(all_candidates(retriever), exact_candidates), 4)
        if reference is None:
            reference = ranked.product_index
        else:
            row["top_k_recall"] = round(recall(ranked.product_index, reference), 4)
            row["same_list"] = round(same_list_share(ranked.product_index, reference), 4)
        results.append(row)
        print(json.dumps(row), flush=True)

    figures = {
        "machine": describe_machine(),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "products": args.products, "users": args.users, "single_users": int(single.numel()), "dim": args.dim,
        "batch": args.batch, "k": args.k, "retrieval_candidates": num_candidates, "results": results,
    }
    print(json.dumps(figures, indent=2))
    print(markdown(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


def _with_probes(retriever: Retriever, probes: int) -> Retriever:
    """The same built index searching ``probes`` lists (shallow copies: the faiss index is shared)."""
    import copy

    out = copy.copy(retriever)
    out.index = copy.copy(retriever.index)
    out.index.probes = probes
    return out


def recall(found, reference) -> float:
    """The share of ``reference``'s entries that ``found`` also lists, row by row (lists of
    rows or ``[b, k]`` tensors; ``-1`` is padding)."""
    found, reference = _rows(found), _rows(reference)
    hits = sum(len(set(f) & set(e) - {-1}) for f, e in zip(found, reference))
    return hits / max(1, sum(sum(entry != -1 for entry in e) for e in reference))


def same_list_share(found, reference) -> float:
    """The share of rows where ``found`` lists exactly ``reference``, in its order."""
    found, reference = _rows(found), _rows(reference)
    return sum(f == e for f, e in zip(found, reference)) / max(1, len(reference))


def _rows(lists) -> list[list]:
    return lists.tolist() if isinstance(lists, torch.Tensor) else lists


def markdown(figures: dict) -> str:
    full = figures["results"][0]
    lines = [
        "| way | index build | batch, per user | one user (1 thread) | of which retrieval | recall@C | top-10 recall | same list |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in figures["results"]:
        def ratio(key):
            return f"{row[key]} ms ({full[key] / row[key]:.1f}×)" if row is not full else f"{row[key]} ms"

        lines.append(
            f"| {row['way']} | {row['index_build_s']} s | {ratio('batch_ms_per_user')} | {ratio('single_ms_per_user')} | "
            f"{row.get('single_retrieval_ms') or '–'} | {row.get('recall_at_C', '–')} | {row.get('top_k_recall', 1.0)} | "
            f"{row.get('same_list', 1.0)} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
