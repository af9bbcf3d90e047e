#!/usr/bin/env python
"""The diversity trade-off: how the explorative weight γ moves NDCG, ILD and coverage.

For each γ the whole user base is ranked by the product's own ranker
(:func:`kgrec.rank.ranking.rank`: relevance + popularity + MMR and the knowledge-graph
exploration bonus, exactly as ``kgrec recommend --all-users``), and the top-10 lists are
scored by the evaluator every accuracy figure uses, on the model's test split. This is an
in-process figure (a trade-off curve, not an accuracy claim):

- the model directory comes from ``kgrec train --no-final-fit`` (refit on train + valid,
  test held out; a model fitted on everything is refused);
- its snapshot is split again with ``leave_last_out``; seen = train + valid products;
- popularity counts the train + valid pairs only, so the test item gets no help from it;
- α = 1 - β - γ with β fixed (``--popularity``), so every point spends the same total weight.

Usage:
    kgrec build-graph --products /tmp/beauty/products.csv --interactions /tmp/beauty/interactions.csv \\
        --relations /tmp/beauty/relations.csv
    kgrec train --no-final-fit --set train.patience=2
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
from kgrec.rank.exploration import ExplorationGraph  # noqa: E402
from kgrec.rank.params import RankParams, Weights  # noqa: E402
from kgrec.rank.ranking import Catalog, rank  # noqa: E402
from kgrec.train.recommender import pair_histories  # noqa: E402
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
    if "train + valid" not in model.metrics.get("deployed", {}).get("fit", ""):
        raise SystemExit(f"{model.path} was fitted on every interaction, test included; train with --no-final-fit.")
    snapshot = load_snapshot(model.path / MODEL_SNAPSHOT_DIR)
    split = leave_last_out(snapshot).merge_valid_into_train()
    histories = pair_histories(split.train, split.num_users)
    catalog = Catalog(
        split.product_popularity().float(),
        ExplorationGraph.from_snapshot(snapshot, levels=config.rank.exploration),
        model.product_embedding,
    )
    categories = primary_category_index(snapshot)
    rank_cfg = config.rank
    print(f"{model.path.name}: {snapshot.num_users:,} users, {snapshot.num_products:,} products, {len(split.test):,} test pairs")

    points = []
    for gamma in (float(g) for g in args.gammas.split(",")):
        weights = (1.0 - args.popularity - gamma, args.popularity, gamma)
        started = time.perf_counter()
        params = RankParams.from_config(config.rank, Weights.of(weights), K)
        parts = []
        for start_row in range(0, len(histories), rank_cfg.batch_size):
            batch = histories.select(torch.arange(start_row, min(start_row + rank_cfg.batch_size, len(histories))))
            parts.append(rank(model.score(batch), catalog, params, batch).product_index)
        top_index = torch.cat(parts)
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
