"""A user as the recency-weighted mean of their latest products' embeddings.

Pure tensor functions, shared by training (:mod:`kgrec.models.kgrec_model`) and ranking
(:mod:`kgrec.train.artifacts`, the real-time rule). They need only torch, so loading a
trained model for ranking does not import PyTorch Geometric.
"""

from __future__ import annotations

import torch
from torch import Tensor


def recency_weights(length: int, decay: float) -> Tensor:
    """``[length]`` weights for a chronological list: the last item 1, the one before ``decay``, ..."""
    return decay ** torch.arange(length - 1, -1, -1, dtype=torch.float32)


def build_histories(
    user_index: Tensor,
    product_index: Tensor,
    order: Tensor,
    num_users: int,
    history_length: int,
    decay: float,
    weight: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Every user's latest ``history_length`` products with their recency weights.

    Args:
        user_index, product_index: ``[n]`` interactions.
        order: ``[n]`` sort key (timestamp or position); ties keep input order.
        weight: ``[n]`` event weights multiplied into the recency weight (None: 1).

    Returns:
        ``(history_index [num_users, L], history_weight [num_users, L])``, chronological
        left to right, right-aligned (the latest product is in the last column);
        padding has index 0 and weight 0.
    """
    length = history_length
    index = torch.zeros(num_users, length, dtype=torch.long)
    hist_w = torch.zeros(num_users, length)
    if user_index.numel() == 0:
        return index, hist_w
    w = torch.ones(user_index.numel()) if weight is None else weight.float()
    # Sort by (user, order), stable, then take each user's last `length` rows.
    perm = torch.argsort(order.double(), stable=True)
    perm = perm[torch.argsort(user_index[perm], stable=True)]
    users, prods, ws = user_index[perm], product_index[perm], w[perm]
    counts = torch.bincount(users, minlength=num_users)
    ends = torch.cumsum(counts, 0)
    # Position from the end of each user's list: 0 for the latest.
    from_end = ends[users] - 1 - torch.arange(users.numel())
    keep = from_end < length
    col = length - 1 - from_end[keep]
    index[users[keep], col] = prods[keep]
    hist_w[users[keep], col] = ws[keep] * decay ** from_end[keep].float()
    return index, hist_w


def history_embedding(product_emb: Tensor, history_index: Tensor, history_weight: Tensor) -> Tensor:
    """Weighted mean of product embeddings: ``[B, L]`` indices and weights → ``[B, dim]``.

    A row whose weights are all zero (no history) gives a zero vector.
    """
    emb = product_emb[history_index]  # [B, L, dim]
    w = history_weight.unsqueeze(-1)
    return (emb * w).sum(1) / w.sum(1).clamp(min=1e-12)


def user_embedding_from_history(
    product_emb: Tensor,
    product_index: Tensor,
    weights: Tensor | None = None,
    decay: float = 0.7,
    history_length: int = 20,
) -> Tensor:
    """A user's vector from their products, the rule the model was trained with.

    Args:
        product_emb: ``[num_products, dim]`` final product embeddings, L2-normalised
            (as :meth:`KgrecModel.get_embedding` returns them).
        product_index: ``[n]`` the user's products, oldest first (repeats allowed).
        weights: ``[n]`` event weights (None: all 1).
        decay, history_length: ``model.recency_decay`` and ``model.history_length``.

    Returns:
        ``[dim]``; zeros for an empty history.
    """
    product_index = product_index[-history_length:]
    n = product_index.numel()
    if n == 0:
        return product_emb.new_zeros(product_emb.size(1))
    w = recency_weights(n, decay).to(product_emb.device)
    if weights is not None:
        w = w * weights[-history_length:].to(w)
    return history_embedding(product_emb, product_index.view(1, -1), w.view(1, -1))[0]
