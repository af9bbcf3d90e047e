#!/usr/bin/env python
"""Co-interactions at catalog scale: the fit's time and memory, and a request's sum.

kgrec train fits the co-interaction similarities (docs/MODEL.md, "Co-interaction paths in the
score") on every fit's pairs, and every request sums the rows of the user's products. This
script measures both on a synthetic shop (``kgrec sample-data``'s generator, in memory), for
the stored form kgrec uses (each product reaching at most ``--neighbours`` products) against
the uncut one (each product reaching every product whose neighbours it is in, as ItemKNN keeps
it), in the same run:

- **fit**: ``CoInteractions.fit`` on the shop's (user, product) pairs, each in a fresh child
  process, so its wall time and peak RSS are its own. The child's RSS before the fit (Python,
  the libraries and the pairs loaded) is reported beside the peak.
- **request**: ``CoInteractions.entries`` for one user at a time (``--requests`` random users
  with events, their own products as the history), one thread: the co-interaction part of a
  request's model stage.

Usage:
    python scripts/bench_co_interactions.py --products 1000000 --users 1000000 --events-per-user 10
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from bench_machine import describe_machine


def shop_pairs(products: int, users: int, events_per_user: int) -> sp.csr_matrix:
    """``[users, products]`` binary CSR of the synthetic shop's (user, product) pairs."""
    from kgrec.ingest.synthetic import generate_sample_shop

    shop = generate_sample_shop(num_products=products, num_users=users, events_per_user=events_per_user)
    events = shop.interactions
    user = events.get_column("user_id").str.slice(1).cast(int).to_numpy() - 1  # "U0001" -> 0
    product = events.get_column("product_id").str.slice(1).cast(int).to_numpy() - 1
    pairs = sp.csr_matrix((np.ones(user.size, dtype=np.float32), (user, product)), shape=(users, products))
    pairs.sum_duplicates()
    pairs.data[:] = 1.0
    return pairs


def memory_gib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process, from /proc: unlike ``ru_maxrss``,
    which Linux carries over from the parent across exec, these are the process's own."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 2**20
    raise RuntimeError(f"/proc/self/status has no {field}")


def fit_child(pairs_path: Path, neighbours: int, reach: int | None, out: Path) -> None:
    """In a fresh process: fit, save the similarity, report seconds and memory."""
    from kgrec.models.co_interaction import CoInteractions

    pairs = sp.load_npz(pairs_path)
    before = memory_gib("VmRSS")
    started = time.perf_counter()
    co = CoInteractions.fit(pairs, neighbours, reach=reach)
    seconds = time.perf_counter() - started
    peak = memory_gib("VmHWM")
    sp.save_npz(out, co.similarity, compressed=False)
    lengths = np.diff(co.similarity.indptr)
    print(json.dumps({
        "fit_s": round(seconds, 1), "rss_before_gib": round(before, 2), "rss_peak_gib": round(peak, 2),
        "stored_entries": int(co.similarity.nnz), "stored_mb": round(co.similarity.nnz * 12 / 1e6, 1),
        "longest_row": int(lengths.max()), "row_p99": float(np.percentile(lengths, 99)),
    }))


def request_ms(similarity: sp.csr_matrix, pairs: sp.csr_matrix, requests: int) -> dict:
    """Per-user ``entries`` time (one thread) over ``requests`` random users with events."""
    import torch

    from kgrec.models.co_interaction import CoInteractions
    from kgrec.models.history import Histories

    torch.set_num_threads(1)
    co = CoInteractions(similarity)
    rng = np.random.default_rng(0)
    active = np.flatnonzero(np.diff(pairs.indptr))
    times, entries = [], []
    for user in rng.choice(active, size=requests, replace=False):
        products = torch.from_numpy(pairs.indices[pairs.indptr[user]:pairs.indptr[user + 1]].astype(np.int64))
        n = products.numel()
        history = Histories(torch.tensor([0, n]), products, torch.ones(n), torch.tensor([0]), torch.zeros(n, dtype=torch.long))
        started = time.perf_counter()
        row, _, _ = co.entries(history)
        times.append(time.perf_counter() - started)
        entries.append(int(np.diff(similarity.indptr)[products.numpy()].sum()))
    ms = np.array(times) * 1e3
    return {"p50_ms": round(float(np.percentile(ms, 50)), 3), "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "entries_gathered_mean": round(float(np.mean(entries)), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--events-per-user", type=int, default=10)
    parser.add_argument("--neighbours", type=int, default=100, help="model.co_interaction_neighbours")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--fit-child", nargs=4, metavar=("PAIRS", "NEIGHBOURS", "REACH", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fit_child:
        pairs_path, neighbours, reach, out = args.fit_child
        fit_child(Path(pairs_path), int(neighbours), None if reach == "none" else int(reach), Path(out))
        return

    started = time.perf_counter()
    pairs = shop_pairs(args.products, args.users, args.events_per_user)
    print(f"shop: {args.products:,} products, {args.users:,} users, {pairs.nnz:,} (user, product) pairs "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    result: dict = {"machine": describe_machine(), "products": args.products,
                    "users": args.users, "pairs": int(pairs.nnz), "neighbours": args.neighbours, "rows": {}}
    with tempfile.TemporaryDirectory(prefix="kgrec-co-") as tmp:
        pairs_path = Path(tmp) / "pairs.npz"
        sp.save_npz(pairs_path, pairs, compressed=False)
        for name, reach in (("reach cut (kgrec)", str(args.neighbours)), ("uncut (ItemKNN)", "none")):
            out = Path(tmp) / f"similarity-{reach}.npz"
            child = subprocess.run(
                [sys.executable, __file__, "--fit-child", str(pairs_path), str(args.neighbours), reach, str(out)],
                check=True, capture_output=True, text=True,
            )
            row = json.loads(child.stdout.strip().splitlines()[-1])
            row.update(request_ms(sp.load_npz(out).tocsr(), pairs, args.requests))
            row["load_average"] = round(os.getloadavg()[0], 1)
            result["rows"][name] = row
            print(name, json.dumps(row), flush=True)
    cut, uncut = result["rows"]["reach cut (kgrec)"], result["rows"]["uncut (ItemKNN)"]
    print(f"\nrequest p50: {cut['p50_ms']} ms cut against {uncut['p50_ms']} ms uncut "
          f"({cut['p50_ms'] / uncut['p50_ms']:.2f}×); fit {cut['fit_s']} s against {uncut['fit_s']} s, "
          f"peak RSS {cut['rss_peak_gib']} GiB against {uncut['rss_peak_gib']} GiB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
