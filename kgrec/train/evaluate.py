"""The one evaluator: full ranking over the whole catalog, for kgrec and every baseline.

Protocol of :func:`evaluate`:

- Every user with at least one positive in the evaluated part is ranked against **all**
  products (no sampled candidates).
- Products the model saw as the user's training input are removed from the ranking:
  the user's train products, and when evaluating ``test`` also the user's valid
  products (unless valid was merged into train, where they are train products anyway).
  This is the usual leave-one-out protocol (RecBole, S3-Rec) and the KGAT/KGIN one.
- Every pair of the part is a positive: a user may have many (80/20 splits).
- Accuracy metrics are defined in :mod:`kgrec.train.metrics` and averaged over users.
- Beyond accuracy, for each K:
  ``coverage@K`` = share of the catalog that appears in at least one top-K list;
  ``avg_pop@K`` = mean train popularity (number of train pairs) of the recommended
  items, and ``avg_pop_norm@K`` the same divided by the most popular product's count;
  ``ild@K`` (only with ``product_category``) = mean over users of the share of
  recommended pairs whose primary categories differ (unknown categories left out).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import polars as pl
import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from kgrec.errors import TrainingError
from kgrec.snapshot.snapshot import Snapshot
from kgrec.train import metrics
from kgrec.train.recommender import Recommender, split_scorer
from kgrec.train.split import InteractionSplit

ScoreFn = Callable[[Tensor], Tensor]
"""``score_fn(user_index [b] long, on the CPU) -> scores [b, num_products] float`` (any device)."""


SCORES_PER_BATCH = 1 << 26
"""Scores held at once by :func:`evaluate` by default: 256 MiB of floats (67 users at 1M products)."""


@torch.no_grad()
def evaluate(
    score_fn: ScoreFn | Recommender,
    split: InteractionSplit,
    part: Literal["valid", "test"] = "valid",
    ks: Sequence[int] = (10, 20),
    batch_size: int | None = None,
    product_category: Tensor | None = None,
    product_popularity: Tensor | None = None,
    restrict_products: Tensor | None = None,
    max_users: int | None = None,
    per_user: dict[str, Tensor] | None = None,
) -> dict[str, float]:
    """Rank all products for every user of ``part`` and average the metrics.

    Args:
        score_fn: a :class:`Recommender` (each user scored from the pairs before ``part``,
            see :func:`~kgrec.train.recommender.split_scorer`), or any
            ``user_index [b] -> scores [b, num_products]``; higher is better.
        split: the split; its train (and, for test, valid) pairs are excluded.
        part: which pairs are the positives.
        ks: cut-offs; each metric is reported at each.
        batch_size: users scored at once (memory ≈ batch_size × num_products floats);
            default: up to 1,024, fewer on large catalogs (:data:`SCORES_PER_BATCH` scores).
        product_category: ``[num_products]`` long primary category per product (``-1`` =
            none), e.g. :func:`primary_category_index`; enables ``ild@K``.
        product_popularity: ``[num_products]`` popularity for ``avg_pop@K``; default
            :meth:`InteractionSplit.product_popularity` (train pairs per product).
        restrict_products: ``[c]`` long; when given only positives among these products
            count (e.g. ``split.cold_product_index``), the ranking is still over all products.
        max_users: score a fixed random sample of this many of the part's users when it
            has more (the same sample every call; each still ranked against every product).
            The result's ``sampled_from`` then says how many users the part has.
        per_user: when given, filled with ``"users"`` ``[n]`` (the scored users, sorted) and
            ``"ndcg@K"`` ``[n]`` for each k: every user's own value, so two models scored on the
            same users can be compared pair by pair (:func:`paired_ratio`).

    Returns:
        ``{"recall@10": ..., "ndcg@10": ..., "hit@10": ..., "mrr@10": ..., "coverage@10": ...,
        "avg_pop@10": ..., "avg_pop_norm@10": ..., ["ild@10": ...,] ..., "users": n}``.

    Raises:
        TrainingError: bad ``part`` or ``ks``, nothing to evaluate, or ``score_fn``
            returns the wrong shape or NaN.
    """
    if part not in ("valid", "test"):
        raise TrainingError(f"evaluate: part must be 'valid' or 'test', found {part!r}.")
    if isinstance(score_fn, Recommender):
        score_fn = split_scorer(score_fn, split, part)
    ks = sorted(set(int(k) for k in ks))
    num_products = split.num_products
    if not ks or ks[0] < 1 or ks[-1] > num_products:
        raise TrainingError(f"evaluate: every k must be between 1 and the {num_products} products; found ks={ks}.")
    positives = split.part(part)
    if restrict_products is not None:
        allowed = torch.zeros(num_products, dtype=torch.bool)
        allowed[restrict_products.cpu()] = True
        positives = positives.select(allowed[positives.product_index])
    if len(positives) == 0:
        raise TrainingError(
            f"The split has no {part} pairs to evaluate"
            + (" among restrict_products" if restrict_products is not None else "")
            + ("; valid was merged into train, evaluate on 'test'." if part == "valid" else ".")
        )

    positive_matrix = positives.matrix(split.num_users, num_products)
    seen = split.train_matrix()
    if part == "test" and len(split.valid):
        seen = seen + split.valid.matrix(split.num_users, num_products)
    popularity = (product_popularity if product_popularity is not None else split.product_popularity()).float()
    users = torch.unique(positives.user_index)  # sorted
    part_users = users.numel()
    if max_users is not None and part_users > max_users:
        sample = torch.randperm(part_users, generator=torch.Generator().manual_seed(0))[:max_users]
        users = users[sample].sort().values
    k_max = ks[-1]
    if batch_size is None:
        batch_size = max(1, min(1024, SCORES_PER_BATCH // num_products))

    sums = {f"{name}@{k}": 0.0 for k in ks for name in ("recall", "ndcg", "hit", "mrr", "avg_pop")}
    ild_sums = {k: 0.0 for k in ks}
    ild_counts = {k: 0 for k in ks}
    covered: dict[int, Tensor] = {}
    user_ndcg: dict[int, list[Tensor]] = {k: [] for k in ks}
    for start in range(0, users.numel(), batch_size):
        batch = users[start : start + batch_size]
        scores = score_fn(batch)
        if scores.shape != (batch.numel(), num_products):
            raise TrainingError(
                f"score_fn returned shape {tuple(scores.shape)}; expected [{batch.numel()}, {num_products}] "
                "(one score per product for each user)."
            )
        if torch.isnan(scores).any():
            raise TrainingError("score_fn returned NaN scores; check the model for a diverged training run.")
        device = scores.device
        rows = batch.numpy()
        seen_row, seen_col = _nonzero(seen, rows)
        scores = scores.float().index_put(
            (seen_row.to(device), seen_col.to(device)), torch.tensor(-torch.inf, device=device)
        )
        top = torch.topk(scores, k_max, dim=1).indices  # [b, k_max]
        is_positive = torch.zeros(batch.numel(), num_products, dtype=torch.bool, device=device)
        pos_row, pos_col = _nonzero(positive_matrix, rows)
        is_positive[pos_row.to(device), pos_col.to(device)] = True
        hits = is_positive.gather(1, top)  # [b, k_max]
        num_positives = torch.from_numpy(np.diff(positive_matrix.indptr)[rows]).to(device)
        top_popularity = popularity.to(device)[top]  # [b, k_max]
        top_category = product_category.to(device)[top] if product_category is not None else None
        for k in ks:
            sums[f"recall@{k}"] += metrics.recall_at_k(hits, num_positives, k).sum().item()
            ndcg = metrics.ndcg_at_k(hits, num_positives, k)
            sums[f"ndcg@{k}"] += ndcg.sum().item()
            if per_user is not None:  # only when asked: evaluation runs every epoch
                user_ndcg[k].append(ndcg.cpu())
            sums[f"hit@{k}"] += metrics.hit_rate_at_k(hits, k).sum().item()
            sums[f"mrr@{k}"] += metrics.mrr_at_k(hits, k).sum().item()
            sums[f"avg_pop@{k}"] += top_popularity[:, :k].mean(dim=1).sum().item()
            mask = covered.setdefault(k, torch.zeros(num_products, dtype=torch.bool, device=device))
            mask[top[:, :k].reshape(-1)] = True
            if top_category is not None:
                ild = metrics.intra_list_diversity(top_category[:, :k])
                ild_sums[k] += torch.nan_to_num(ild, nan=0.0).sum().item()
                ild_counts[k] += int((~torch.isnan(ild)).sum())

    num_users = users.numel()
    result = {key: value / num_users for key, value in sums.items()}
    max_popularity = max(float(popularity.max()), 1.0)
    for k in ks:
        result[f"avg_pop_norm@{k}"] = result[f"avg_pop@{k}"] / max_popularity
        result[f"coverage@{k}"] = float(covered[k].float().mean())
        if product_category is not None:
            result[f"ild@{k}"] = ild_sums[k] / ild_counts[k] if ild_counts[k] else float("nan")
    result["users"] = float(num_users)
    if per_user is not None:
        per_user["users"] = users
        per_user.update({f"ndcg@{k}": torch.cat(user_ndcg[k]).float() for k in ks})
    if num_users < part_users:
        result["sampled_from"] = float(part_users)
    return dict(sorted(result.items(), key=lambda item: _key_order(item[0])))


def paired_ratio(a: Tensor, b: Tensor) -> tuple[float, float]:
    """``mean(a) / mean(b)`` and its standard error, for two models' per-user metrics on the
    same users (``per_user`` of :func:`evaluate`).

    The delta method on the paired samples: the users both models are scored on are one
    sample, so what they share (easy and hard users) cancels, and the error is that of the
    difference between the models, not of each figure on its own.
    """
    if a.shape != b.shape or a.numel() < 2:
        raise ValueError(f"paired_ratio needs two equal-length samples of at least 2 users; found {tuple(a.shape)} and {tuple(b.shape)}")
    a, b = a.double(), b.double()
    mean_a, mean_b = float(a.mean()), float(b.mean())
    if mean_b == 0:
        return float("inf"), float("nan")
    ratio = mean_a / mean_b
    # ratio ≈ ratio + (a - ratio · b) / mean_b around the means: the error of its mean.
    linear = (a - ratio * b) / mean_b
    return ratio, float(linear.std(unbiased=True)) / a.numel() ** 0.5


def primary_category_index(snapshot: Snapshot) -> Tensor:
    """``[num_products]`` long: index (in ``snapshot.category_ids``) of each product's most
    specific listed category, ``-1`` for a product without categories. Input for ``ild@K``.

    "Most specific" is the listed category with the fewest products (ties: the first
    listed). A child path never has more products than its parent, so this picks the
    deepest path; on catalogs that list flat names (Amazon's "Beauty|Nail Tools|…") it
    skips the name every product carries, which would make every list look uniform.
    """
    products = snapshot.tables.products
    if "categories" not in products.columns:
        return torch.full((products.height,), -1, dtype=torch.long)
    listed = (
        products.select(pl.col("categories"))
        .with_row_index("row")
        .explode("categories")
        .drop_nulls("categories")
        .with_row_index("order")
    )
    listed = listed.with_columns(pl.len().over("categories").alias("products"))
    primary = listed.sort("products", "order").unique("row", keep="first")
    index = torch.full((products.height,), -1, dtype=torch.long)
    rows = torch.from_numpy(primary.get_column("row").to_numpy().astype("int64"))
    index[rows] = torch.from_numpy(snapshot.category_ids.indices(primary.get_column("categories"), strict=False).astype("int64"))
    return index


def _nonzero(matrix: sp.csr_matrix, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """(row within the batch, column) of the stored entries of ``matrix[rows]``: two ``[n]`` long."""
    block = matrix[rows].tocoo()
    return torch.from_numpy(block.row.astype(np.int64)), torch.from_numpy(block.col.astype(np.int64))


_METRIC_ORDER = ("recall", "ndcg", "hit", "mrr", "coverage", "avg_pop", "avg_pop_norm", "ild")


def _key_order(key: str) -> tuple[int, int, str]:
    name, _, k = key.partition("@")
    rank = _METRIC_ORDER.index(name) if name in _METRIC_ORDER else len(_METRIC_ORDER)
    return (int(k) if k else 10**9, rank, name)

