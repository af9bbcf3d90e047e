#!/usr/bin/env python
"""The catalog scan of one served request: a user vector times every product vector.

Times :meth:`kgrec.train.recommender.Recommender.score` (a contiguous ``[dim, P]`` copy of
the product table, made once per table) against the same product through the transposed
view ``vectors @ products.T`` and against a bfloat16 copy of the table (half the bytes; CPUs
with AMX or AVX512-BF16 multiply it natively), on one torch thread as a served request runs,
alternating the ways so that all see the same machine. Random unit vectors: the time depends
on the shape only.

Back to back, a table may stay in the CPU's last-level cache between scans, which a served
request's other work (the history read, HTTP, ranking) would have evicted. ``--evict-mb N``
streams ``N`` MB through the cache before each timed scan (outside the timing), as that
work does.

Usage:
    python scripts/bench_scan.py --products 100000 --widths 64,128,256
    python scripts/bench_scan.py --products 100000 --widths 64,256 --evict-mb 400
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench_machine import describe_machine  # noqa: E402
from kgrec.train.recommender import Recommender  # noqa: E402


class FixedUser(Recommender):
    """One fixed user vector against a product table: the scan alone."""

    name = "scan"

    def __init__(self, products: torch.Tensor, user: torch.Tensor) -> None:
        self.products, self.user = products, user

    def fit(self, split, snapshot=None, device="cpu"):
        return self

    @property
    def product_embedding(self) -> torch.Tensor:
        return self.products

    def user_vectors(self, histories) -> torch.Tensor:
        return self.user


def median_ms(run, repeats: int, evict: torch.Tensor | None = None) -> float:
    times = []
    for _ in range(repeats):
        if evict is not None:
            evict.sum()
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--widths", default="64,128,256", help="comma-separated vector widths (model.dim x ensemble_size)")
    parser.add_argument("--repeats", type=int, default=50, help="timed scans per way, per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternations of the ways")
    parser.add_argument("--evict-mb", type=int, default=0, help="MB streamed through the cache before each timed scan")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    evict = torch.ones(args.evict_mb * 2**18) if args.evict_mb else None  # float32: 4 bytes each
    for width in (int(w) for w in args.widths.split(",")):
        products = F.normalize(torch.randn(args.products, width), dim=-1)
        user = F.normalize(torch.randn(1, width), dim=-1)
        model = FixedUser(products, user)
        assert torch.allclose(model.score(None), user @ products.T, atol=1e-5)
        half_products, half_user = products.bfloat16(), user.bfloat16()
        assert torch.allclose(F.linear(half_user, half_products).float(), user @ products.T, atol=0.02)
        view, copy, half = [], [], []
        for _ in range(args.rounds):
            view.append(median_ms(lambda: user @ products.T, args.repeats, evict))
            copy.append(median_ms(lambda: model.score(None), args.repeats, evict))
            half.append(median_ms(lambda: F.linear(half_user, half_products), args.repeats, evict))
        row = {"products": args.products, "width": width, "evict_mb": args.evict_mb,
               "view_ms": round(statistics.median(view), 2), "contiguous_ms": round(statistics.median(copy), 2),
               "bfloat16_ms": round(statistics.median(half), 2)}
        row["view_over_contiguous"] = round(row["view_ms"] / row["contiguous_ms"], 2)
        row["contiguous_over_bfloat16"] = round(row["contiguous_ms"] / row["bfloat16_ms"], 2)
        print(json.dumps(row), flush=True)
    print(json.dumps({"machine": describe_machine(), "threads": 1}))


if __name__ == "__main__":
    main()
