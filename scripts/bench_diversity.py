#!/usr/bin/env python
"""The diversity trade-off: how the explorative weight γ moves NDCG, ILD and coverage.

For each γ the whole user base is ranked by the product's own batch ranker
(``rank_all_users``: relevance + popularity + MMR and the knowledge-graph exploration
bonus, exactly as ``kgrec recommend --all-users``), and the top-10 lists are scored by the
evaluator every accuracy figure uses, on the model's test split:

- the model directory comes from ``kgrec train`` (refit on train + valid, test held out);
- its snapshot is split again with ``leave_last_out``; seen = train + valid products;
- popularity counts the train + valid pairs only, so the test item gets no help from it;
- α = 1 - β - γ with β fixed (``--popularity``), so every point spends the same total weight.

Usage:
    kgrec build-graph --products /tmp/beauty/products.csv --interactions /tmp/beauty/interactions.csv \\
        --relations /tmp/beauty/relations.csv
    kgrec train --set train.patience=2
    python scripts/bench_diversity.py --model runs/models/latest --title 'Amazon Beauty' \\
        --plot docs/img/diversity_tradeoff_beauty.png
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kgrec.config import load_config  # noqa: E402
from kgrec.rank.scoring import ExplorationGraph, rank_all_users  # noqa: E402
from kgrec.service import MODEL_SNAPSHOT_DIR  # noqa: E402
from kgrec.snapshot.snapshot import load_snapshot  # noqa: E402
from kgrec.train.artifacts import load_model_dir  # noqa: E402
from kgrec.train.evaluate import evaluate, primary_category_index  # noqa: E402
from kgrec.train.split import leave_last_out  # noqa: E402

K = 10


def lists_as_scores(top_index: torch.Tensor, num_products: int):
    """A score function whose full ranking starts with each user's list, in order."""
    def score(user_index: torch.Tensor) -> torch.Tensor:
        rows = top_index[user_index]
        scores = torch.full((rows.size(0), num_products), float("-inf"))
        value = torch.arange(rows.size(1), 0, -1, dtype=torch.float32).expand_as(rows)
        valid = rows >= 0
        scores[torch.nonzero(valid, as_tuple=True)[0], rows[valid]] = value[valid]
        return scores

    return score


def plot(points: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gammas = [p["gamma"] for p in points]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    left.plot([p["ild@10"] for p in points], [p["ndcg@10"] for p in points], "o-")
    for p in points:
        left.annotate(f"γ={p['gamma']:g}", (p["ild@10"], p["ndcg@10"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    left.set_xlabel("category diversity ILD@10")
    left.set_ylabel("NDCG@10 (test)")
    left.set_title("accuracy against diversity")
    left.grid(alpha=0.3)
    right.plot(gammas, [p["ild@10"] for p in points], "o-", label="ILD@10")
    right.plot(gammas, [p["coverage@10"] for p in points], "s-", label="coverage@10")
    right.plot(gammas, [p["ndcg@10"] / max(points[0]["ndcg@10"], 1e-12) for p in points], "^-", label="NDCG@10 / NDCG@10 at γ=0")
    right.set_xlabel("explorative weight γ")
    right.set_title("each metric against γ")
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a model directory from `kgrec train` (or its parent)")
    parser.add_argument("--gammas", default="0,0.05,0.1,0.2,0.3,0.4,0.5,0.6")
    parser.add_argument("--popularity", type=float, default=0.1, help="β, fixed for every point")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="rank.* config overrides")
    parser.add_argument("--plot", type=Path, help="write the trade-off plot (PNG) here")
    parser.add_argument("--title", default=None, help="dataset name for the plot's title")
    parser.add_argument("--json", type=Path, help="write the points as JSON here")
    args = parser.parse_args()

    config = load_config(None, args.overrides)
    model = load_model_dir(args.model)
    snapshot = load_snapshot(model.path / MODEL_SNAPSHOT_DIR)
    split = leave_last_out(snapshot).merge_valid_into_train()
    seen = split.train_matrix()
    popularity = split.product_popularity().float()
    exploration = ExplorationGraph.from_snapshot(snapshot, levels=config.rank.exploration)
    categories = primary_category_index(snapshot)
    rank = config.rank
    print(f"{model.path.name}: {snapshot.num_users:,} users, {snapshot.num_products:,} products, {len(split.test):,} test pairs")

    points = []
    for gamma in (float(g) for g in args.gammas.split(",")):
        weights = (1.0 - args.popularity - gamma, args.popularity, gamma)
        started = time.perf_counter()
        top_index, _ = rank_all_users(
            model.user_embedding, model.product_embedding, seen, popularity, K, weights,
            batch_size=rank.batch_size, exploration=exploration, similarity=rank.similarity,
            num_candidates=rank.all_users_candidates, exploration_share=rank.exploration_share,
            normalisation=rank.normalisation,
        )
        seconds = time.perf_counter() - started
        metrics = evaluate(lists_as_scores(top_index, snapshot.num_products), split, "test", ks=(K,), product_category=categories)
        point = {"gamma": gamma, "weights": weights, "rank_seconds": round(seconds, 2),
                 **{key: metrics[f"{key}"] for key in ("ndcg@10", "recall@10", "ild@10", "coverage@10", "avg_pop@10")}}
        points.append(point)
        print(f"γ={gamma:<5g} NDCG@10 {point['ndcg@10']:.4f}  ILD@10 {point['ild@10']:.4f}  "
              f"coverage@10 {point['coverage@10']:.4f}  avg_pop@10 {point['avg_pop@10']:.1f}  ({seconds:.1f} s)", flush=True)

    base = points[0]
    for point in points[1:]:
        print(f"γ={point['gamma']:g}: NDCG@10 {100 * (point['ndcg@10'] / base['ndcg@10'] - 1):+.1f}%, "
              f"ILD@10 {100 * (point['ild@10'] / max(base['ild@10'], 1e-12) - 1):+.1f}%, "
              f"coverage@10 {100 * (point['coverage@10'] / base['coverage@10'] - 1):+.1f}% against γ=0")
    if args.plot:
        name = args.title or f"model {model.path.name}"
        plot(points, args.plot, f"Diversity trade-off, {name}: {snapshot.num_users:,} users, {snapshot.num_products:,} products")
        print(f"wrote {args.plot}")
    if args.json:
        args.json.write_text(json.dumps({"model": str(model.path), "points": points}, indent=2))


if __name__ == "__main__":
    main()
