"""Accuracy of kgrec, its ablations and the baselines on Amazon Beauty / Office.

Usage::

    python scripts/bench_accuracy.py --dataset beauty --data-dir /work/shared/data/amazon_beauty_2014 --out beauty.json
    python scripts/bench_accuracy.py --dataset office --data-dir /work/shared/data/amazon_office_2014 --cold-start

Protocol (one snapshot, one split, one evaluator for every row):

- The source folder is converted with ``scripts/convert_<dataset>.py`` into a
  temporary folder (never inside the repository) and read with ``kgrec.ingest.load_tables``,
  exactly as a shop's files would be. ``timestamp`` = position in the user's sequence.
- :func:`kgrec.train.split.leave_last_out`: per user, last product = test, second-to-last
  = valid, rest = train.
- kgrec variants pick their epoch count by early stopping on valid NDCG@10, are retrained
  on train + valid for that many epochs, and are evaluated on test. The baselines follow
  the same protocol (``kgrec.train.baselines.fit_and_evaluate``).
- Full ranking over all products with the user's train products excluded
  (``kgrec.train.evaluate.evaluate``).
- ``--cold-start``: 10% of products lose all their train and valid interactions
  (``InteractionSplit.holdout_products``); every model is trained on what is left and
  Recall@20 is reported on the test pairs of those cold products, next to a random ranking.

The data is research-only: it stays where it is; this script only reads it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kgrec.config import load_config  # noqa: E402
from kgrec.ingest import load_tables  # noqa: E402
from kgrec.snapshot import Snapshot, snapshot_from_tables  # noqa: E402
from kgrec.train.baselines import fit_and_evaluate  # noqa: E402
from kgrec.train.evaluate import evaluate, primary_category_index  # noqa: E402
from kgrec.train.loop import train_and_refit  # noqa: E402
from kgrec.train.split import InteractionSplit, leave_last_out  # noqa: E402

VARIANTS: dict[str, list[str]] = {
    "kgrec": [],
    "kgrec-no-text": ["model.use_text=false"],
    "kgrec-no-kg": ["model.use_kg=false"],
}
BASELINE_NAMES = ("pop", "itemknn", "bpr", "lightgcn")
COLUMNS = (
    ("ndcg@10", "NDCG@10"),
    ("ndcg@20", "NDCG@20"),
    ("recall@10", "Recall@10"),
    ("recall@20", "Recall@20"),
    ("hit@10", "HR@10"),
    ("mrr@10", "MRR@10"),
    ("coverage@10", "Cov@10"),
    ("ild@10", "ILD@10"),
)


def load_dataset(dataset: str, data_dir: Path) -> Snapshot:
    """Convert ``data_dir`` with the dataset's converter and ingest it into a snapshot."""
    script = REPO / "scripts" / f"convert_{dataset}.py"
    spec = importlib.util.spec_from_file_location(f"convert_{dataset}", script)
    if spec is None or spec.loader is None:
        raise SystemExit(f"{script} is missing; it converts the {dataset} folder into kgrec input files.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    convert = getattr(module, f"convert_{dataset}")
    with tempfile.TemporaryDirectory(prefix=f"kgrec-bench-{dataset}-") as tmp:
        paths = convert(data_dir, Path(tmp), "parquet")
        tables, _ = load_tables(paths["products"], paths["interactions"], paths.get("relations"))
    return snapshot_from_tables(tables)


def random_scores(num_products: int, seed: int):
    generator = torch.Generator().manual_seed(seed)

    def score(user_index: torch.Tensor) -> torch.Tensor:
        return torch.rand(user_index.numel(), num_products, generator=generator)

    return score


def run_kgrec(
    name: str,
    overrides: list[str],
    snapshot: Snapshot,
    split: InteractionSplit,
    categories: torch.Tensor,
    cold: torch.Tensor | None,
    seed: int,
    progress: bool,
) -> dict[str, Any]:
    config = load_config(None, overrides)
    started = time.perf_counter()
    selection, final = train_and_refit(
        snapshot, split, config.model, config.train, config.features, seed=seed, progress=progress
    )
    merged = split.merge_valid_into_train()
    test = evaluate(final.score, merged, "test", ks=(10, 20), product_category=categories)
    row: dict[str, Any] = {
        "name": name,
        "test": test,
        "epochs": selection.best_epoch,
        "valid_ndcg": selection.valid_metrics.get("ndcg@10"),
        "seconds": time.perf_counter() - started,
        "overrides": overrides,
    }
    if cold is not None:
        row["cold_recall@20"] = evaluate(final.score, merged, "test", ks=(20,), restrict_products=cold)["recall@20"]
    return row


def run_baseline(
    name: str, snapshot: Snapshot, split: InteractionSplit, categories: torch.Tensor, cold: torch.Tensor | None
) -> dict[str, Any]:
    result = fit_and_evaluate(name, split, snapshot, product_category=categories)  # type: ignore[arg-type]
    row: dict[str, Any] = {
        "name": name,
        "test": result.test,
        "epochs": result.epochs,
        "valid_ndcg": result.valid_ndcg,
        "seconds": result.seconds,
    }
    if cold is not None:
        # Refit on the same merged split to score the cold products' test pairs.
        from kgrec.train.baselines import make_baseline

        merged = split.merge_valid_into_train()
        kwargs = {"epochs": result.epochs} if result.epochs else {}
        model = make_baseline(name, **kwargs).fit(merged, snapshot)  # type: ignore[arg-type]
        row["cold_recall@20"] = evaluate(model.score, merged, "test", ks=(20,), restrict_products=cold)["recall@20"]
    return row


def format_table(rows: list[dict[str, Any]], cold: bool) -> str:
    header = ["model"] + [title for _, title in COLUMNS] + ["epochs", "time"]
    if cold:
        header.append("cold R@20")
    lines = [header]
    for row in rows:
        cells = [row["name"]]
        for key, _ in COLUMNS:
            value = row["test"].get(key)
            cells.append("-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.4f}")
        cells.append(str(row.get("epochs") or "-"))
        cells.append(f"{row['seconds']:.0f}s")
        if cold:
            value = row.get("cold_recall@20")
            cells.append("-" if value is None else f"{value:.4f}")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths))) for line in lines]
    out.insert(1, "-" * len(out[0]))
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["beauty", "office"], required=True)
    parser.add_argument("--data-dir", type=Path, required=True, help="the amazon_<dataset>_2014 folder")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"kgrec rows to run (of {','.join(VARIANTS)})")
    parser.add_argument("--baselines", default=",".join(BASELINE_NAMES), help="baselines to run ('' for none)")
    parser.add_argument("--cold-start", action="store_true", help="hold out 10%% of products from training")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="config override for every kgrec row")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    started = time.perf_counter()
    snapshot = load_dataset(args.dataset, args.data_dir)
    split = leave_last_out(snapshot)
    cold = None
    if args.cold_start:
        split = split.holdout_products(0.1, seed=args.seed)
        cold = split.cold_product_index
    categories = primary_category_index(snapshot)
    print(
        f"{args.dataset}: {snapshot.num_users:,} users, {snapshot.num_products:,} products, "
        f"{len(split.train):,} train / {len(split.valid):,} valid / {len(split.test):,} test pairs"
        + (f", {cold.numel():,} cold products" if cold is not None else ""),
        flush=True,
    )

    rows: list[dict[str, Any]] = []
    for name in [v for v in args.variants.split(",") if v]:
        if name not in VARIANTS:
            raise SystemExit(f"Unknown variant {name!r}; choose from {list(VARIANTS)}.")
        row = run_kgrec(name, args.overrides + VARIANTS[name], snapshot, split, categories, cold, args.seed, not args.quiet)
        print(f"{name}: test ndcg@10 {row['test']['ndcg@10']:.4f} ({row['seconds']:.0f}s)", flush=True)
        rows.append(row)
    for name in [b for b in args.baselines.split(",") if b]:
        row = run_baseline(name, snapshot, split, categories, cold)
        print(f"{name}: test ndcg@10 {row['test']['ndcg@10']:.4f} ({row['seconds']:.0f}s)", flush=True)
        rows.append(row)
    if cold is not None:
        merged = split.merge_valid_into_train()
        test = evaluate(random_scores(snapshot.num_products, args.seed), merged, "test", ks=(10, 20), product_category=categories)
        test_cold = evaluate(random_scores(snapshot.num_products, args.seed), merged, "test", ks=(20,), restrict_products=cold)
        rows.append({"name": "random", "test": test, "epochs": None, "seconds": 0.0, "cold_recall@20": test_cold["recall@20"]})

    print()
    print(format_table(rows, cold is not None))
    best_baseline = max((r for r in rows if r["name"] in BASELINE_NAMES), key=lambda r: r["test"]["ndcg@10"], default=None)
    kgrec_row = next((r for r in rows if r["name"] == "kgrec"), None)
    summary: dict[str, Any] = {}
    if best_baseline and kgrec_row:
        ratio = kgrec_row["test"]["ndcg@10"] / max(best_baseline["test"]["ndcg@10"], 1e-12)
        summary = {"best_baseline": best_baseline["name"], "ndcg@10_ratio": ratio}
        print(f"\nkgrec / best baseline ({best_baseline['name']}) test NDCG@10: {ratio:.3f}x")
    total = time.perf_counter() - started
    print(f"total wall time {total:.0f}s")
    if args.out:
        payload = {
            "dataset": args.dataset,
            "data_dir": str(args.data_dir),
            "protocol": "temporal leave-one-out; full ranking; train items excluded; epochs chosen on valid, refit on train+valid",
            "cold_start": args.cold_start,
            "seed": args.seed,
            "overrides": args.overrides,
            "counts": {"users": snapshot.num_users, "products": snapshot.num_products, "train": len(split.train)},
            "rows": rows,
            "summary": summary,
            "wall_seconds": total,
            "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        }
        args.out.write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
