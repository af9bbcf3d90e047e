"""Baselines on public benchmark data, through kgrec's own snapshot, split and evaluator.

Usage::

    python scripts/bench_baselines.py --dataset beauty       # Amazon Beauty 2014 5-core
    python scripts/bench_baselines.py --dataset office       # Amazon Office 2014 5-core
    python scripts/bench_baselines.py --dataset amazon-book --baselines pop,itemknn

Protocol (``kgrec.train.baselines.fit_and_evaluate``): full ranking over all products,
the user's training products excluded; BPR-MF and LightGCN pick their epoch count by
early stopping on valid NDCG@10, are refitted on train + valid for that many epochs and
evaluated on test; pop and ItemKNN fit train + valid directly.

- ``beauty`` / ``office``: ``interactions.tsv.gz`` (``user_id, asin, position, loo_split``)
  becomes GraphTables with ``timestamp = position`` (one purchase per row, weight 5), and
  :func:`leave_last_out` gives last = test, second-to-last = valid; the script checks it
  agrees with the shipped ``loo_split`` column.
- ``amazon-book``: KGAT's fixed ``train.txt`` / ``test.txt`` (≈80/20 per user, no valid).
  For early stopping, one random train pair of each of ``--book-valid-users`` random users
  (with ≥ 2 train pairs) is held out as valid; it goes back into train for the final fit.
  The headline metrics are Recall@20 and NDCG@20 (standard NDCG, not KGAT's).

The data is research-only and stays in ``/work/shared/data``; this script only reads it.
Results are printed as a table and written as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from kgrec.ingest.tables import INTERACTION_SCHEMA, PRODUCT_SCHEMA, GraphTables
from kgrec.snapshot import Snapshot, snapshot_from_tables
from kgrec.train.baselines import BASELINES, BaselineResult, fit_and_evaluate
from kgrec.train.split import InteractionSplit, leave_last_out, split_by_assignment

DATA_ROOT = Path("/work/shared/data")
DEFAULT_DIRS = {
    "beauty": DATA_ROOT / "amazon_beauty_2014",
    "office": DATA_ROOT / "amazon_office_2014",
    "amazon-book": DATA_ROOT / "kgat_amazon_book",
}


def tables_from_pairs(interactions: pl.DataFrame) -> GraphTables:
    """GraphTables from ``[user_id, product_id, timestamp]``: one purchase (weight 5) per row,
    products with only an id, users with only an id."""
    frame = interactions.select(
        pl.col("user_id").cast(pl.Utf8),
        pl.col("product_id").cast(pl.Utf8),
        pl.lit("purchase").alias("event"),
        pl.col("timestamp").cast(pl.Int64),
        pl.lit(None, dtype=pl.Float64).alias("value"),
        pl.lit(5.0).alias("weight"),
    ).cast(INTERACTION_SCHEMA)
    product_ids = frame.get_column("product_id").unique().sort()
    products = pl.DataFrame({"product_id": product_ids}).with_columns(
        *[pl.lit(None, dtype=dtype).alias(name) for name, dtype in PRODUCT_SCHEMA.items() if name != "product_id"]
    )
    products = products.with_columns(pl.lit([], dtype=pl.List(pl.Utf8)).alias("categories")).select(
        list(PRODUCT_SCHEMA)
    )
    users = frame.select("user_id").unique().sort("user_id")
    return GraphTables(products=products, interactions=frame, users=users)


def load_amazon_tsv(data_dir: Path) -> tuple[Snapshot, InteractionSplit]:
    """Snapshot and leave-last-out split of an ``interactions.tsv.gz`` folder."""
    raw = pl.read_csv(data_dir / "interactions.tsv.gz", separator="\t", schema_overrides={"asin": pl.Utf8})
    tables = tables_from_pairs(raw.rename({"asin": "product_id", "position": "timestamp"}))
    snapshot = snapshot_from_tables(tables)
    split = leave_last_out(snapshot)
    _check_against_shipped_loo(snapshot, split, raw)
    return snapshot, split


def _check_against_shipped_loo(snapshot: Snapshot, split: InteractionSplit, raw: pl.DataFrame) -> None:
    for part in ("valid", "test"):
        shipped = raw.filter(pl.col("loo_split") == part)
        users = snapshot.user_ids.indices(shipped.get_column("user_id"))
        products = snapshot.product_ids.indices(shipped.get_column("asin"))
        ours = split.part(part)
        same = set(zip(users.tolist(), products.tolist())) == set(
            zip(ours.user_index.tolist(), ours.product_index.tolist())
        )
        print(f"  {part}: {len(ours):,} pairs; identical to the shipped loo_split: {same}")
        if not same:
            print(f"  WARNING: kgrec's {part} part differs from the shipped loo_split", file=sys.stderr)


def _read_kgat(path: Path, timestamp: int) -> pl.DataFrame:
    users: list[str] = []
    items: list[str] = []
    with gzip.open(path, "rt") as lines:
        for line in lines:
            tokens = line.split()
            if len(tokens) > 1:
                users.extend([tokens[0]] * (len(tokens) - 1))
                items.extend(tokens[1:])
    return pl.DataFrame({"user_id": users, "product_id": items, "timestamp": timestamp})


def load_kgat(data_dir: Path, valid_users: int, seed: int) -> tuple[Snapshot, InteractionSplit]:
    """Snapshot and fixed split of KGAT's train.txt / test.txt, with a small valid slice of train."""
    train = _read_kgat(data_dir / "train.txt.gz", 0)
    test = _read_kgat(data_dir / "test.txt.gz", 1)
    snapshot = snapshot_from_tables(tables_from_pairs(pl.concat([train, test])))
    rng = np.random.default_rng(seed)
    counts = train.group_by("user_id").len()
    eligible = counts.filter(pl.col("len") >= 2).get_column("user_id").sort().to_numpy()
    chosen = rng.choice(eligible, size=min(valid_users, eligible.size), replace=False)
    candidates = train.filter(pl.col("user_id").is_in(pl.Series(chosen).implode()))
    # one random train pair per chosen user
    held = candidates.with_columns(r=pl.Series(rng.random(candidates.height))).sort("user_id", "r").unique(
        "user_id", keep="first", maintain_order=True
    )
    assignment = pl.concat(
        [
            train.select("user_id", "product_id", part=pl.lit("train")),
            test.select("user_id", "product_id", part=pl.lit("test")),
        ]
    )
    assignment = assignment.join(
        held.select("user_id", "product_id", flag=pl.lit(True)), on=["user_id", "product_id"], how="left"
    ).select("user_id", "product_id", part=pl.when(pl.col("flag")).then(pl.lit("valid")).otherwise("part"))
    return snapshot, split_by_assignment(snapshot, assignment)


def format_table(results: list[BaselineResult], ks: tuple[int, ...]) -> str:
    columns = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg", "hit", "mrr")]
    columns += [f"coverage@{ks[0]}", f"avg_pop@{ks[0]}"]
    header = f"{'model':<10} {'epochs':>6} " + " ".join(f"{c:>11}" for c in columns) + f" {'seconds':>8}"
    lines = [header, "-" * len(header)]
    for r in results:
        values = " ".join(f"{r.test[c]:>11.4f}" if "avg_pop" not in c else f"{r.test[c]:>11.1f}" for c in columns)
        epochs = str(r.epochs) if r.epochs is not None else "-"
        lines.append(f"{r.name:<10} {epochs:>6} {values} {r.seconds:>8.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=sorted(DEFAULT_DIRS), required=True)
    parser.add_argument("--data-dir", type=Path, help="default: the dataset's folder under /work/shared/data")
    parser.add_argument("--baselines", default="pop,itemknn,bpr,lightgcn", help="comma-separated, from %(default)s")
    parser.add_argument("--out", type=Path, help="JSON output (default: runs/bench_<dataset>.json)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--epochs", type=int, help="cap on training epochs for bpr/lightgcn (default: theirs)")
    parser.add_argument("--set", action="append", default=[], metavar="MODEL.KEY=VALUE",
                        help="hyperparameter override, e.g. --set lightgcn.lr=0.002 (repeatable)")
    parser.add_argument("--book-valid-users", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's; 1 is fastest on a busy box)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")

    names = [n.strip() for n in args.baselines.split(",") if n.strip()]
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        parser.error(f"unknown baseline(s) {unknown}; choose from {sorted(BASELINES)}")
    overrides: dict[str, dict[str, object]] = {n: {} for n in names}
    for item in args.set:
        key, _, raw = item.partition("=")
        model, _, name = key.partition(".")
        if model not in overrides or not name:
            parser.error(f"--set {item!r}: expected MODEL.KEY=VALUE with MODEL in {names}")
        overrides[model][name] = json.loads(raw)
    data_dir = args.data_dir or DEFAULT_DIRS[args.dataset]

    started = time.perf_counter()
    print(f"loading {args.dataset} from {data_dir}")
    if args.dataset == "amazon-book":
        snapshot, split = load_kgat(data_dir, args.book_valid_users, args.seed)
        ks: tuple[int, ...] = (20, 10)
    else:
        snapshot, split = load_amazon_tsv(data_dir)
        ks = (10, 20)
    print(
        f"  {split.num_users:,} users, {split.num_products:,} products; pairs train {len(split.train):,}, "
        f"valid {len(split.valid):,}, test {len(split.test):,} (loaded in {time.perf_counter() - started:.1f}s)"
    )

    results: list[BaselineResult] = []
    for name in names:
        kwargs = dict(overrides[name])
        if args.epochs and name in ("bpr", "lightgcn"):
            kwargs.setdefault("epochs", args.epochs)
        if name in ("bpr", "lightgcn"):
            kwargs.setdefault("seed", args.seed)
        print(f"running {name} {kwargs or ''}")
        result = fit_and_evaluate(
            name, split, snapshot, device=args.device, ks=tuple(sorted(ks)), **kwargs  # type: ignore[arg-type]
        )
        print(f"  {name}: " + ", ".join(f"{k}={result.test[k]:.4f}" for k in (f"recall@{ks[0]}", f"ndcg@{ks[0]}")) +
              f" ({result.seconds:.0f}s)")
        results.append(result)

    print()
    print(format_table(results, ks))
    out = args.out or Path("runs") / f"bench_{args.dataset.replace('-', '_')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "dataset": args.dataset,
        "data_dir": str(data_dir),
        "protocol": "full ranking, seen excluded; epochs chosen on valid NDCG@10, refit on train+valid, test",
        "split": {"users": split.num_users, "products": split.num_products, "train": len(split.train),
                  "valid": len(split.valid), "test": len(split.test)},
        "machine": {"device": args.device, "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
        "results": {r.name: {"test": r.test, "epochs": r.epochs, "valid_ndcg@10": r.valid_ndcg,
                             "seconds": round(r.seconds, 1), "settings": overrides[r.name]} for r in results},
        "total_seconds": round(time.perf_counter() - started, 1),
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
