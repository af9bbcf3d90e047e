"""Ranking metrics as pure functions on tensors.

Every function takes ``hits``: ``[b, K]`` bool, ``hits[u, r]`` = the item at rank
``r + 1`` of user ``u``'s top-K list is a positive; and returns one value per user
(``[b]`` float). Average over users yourself (see :func:`kgrec.train.evaluate.evaluate`).

Definitions (binary relevance, ranks start at 1):

- ``recall@k`` = hits in the top k / number of positives of the user (not capped at k,
  as in KGAT/LightGCN/KGIN, so a user with 30 positives cannot reach 1 at k=20).
- ``ndcg@k`` = DCG / IDCG with DCG = Σ_{hit ranks r ≤ k} 1 / log2(r + 1) and IDCG the DCG
  of min(#positives, k) hits at the top. This is the standard NDCG (KGIN, RecBole); KGAT's
  variant, which normalises by the ideal ordering of the *retrieved* list, is inflated.
- ``hit@k`` = 1 if any of the top k is a positive.
- ``mrr@k`` = 1 / rank of the first positive within the top k, 0 if none (truncated at k).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check(hits: Tensor, k: int) -> None:
    if hits.dim() != 2 or k < 1 or k > hits.shape[1]:
        raise ValueError(f"hits must be [b, K] with 1 ≤ k ≤ K; found shape {tuple(hits.shape)} and k={k}.")


def discounts(k: int, device: torch.device | str | None = None) -> Tensor:
    """``[k]`` float: 1 / log2(r + 1) for ranks r = 1..k."""
    return 1.0 / torch.log2(torch.arange(2, k + 2, dtype=torch.float, device=device))


def recall_at_k(hits: Tensor, num_positives: Tensor, k: int) -> Tensor:
    """``[b]``: hits in the top ``k`` / ``num_positives`` (``[b]``, each ≥ 1)."""
    _check(hits, k)
    return hits[:, :k].sum(dim=1).float() / num_positives.float()


def ndcg_at_k(hits: Tensor, num_positives: Tensor, k: int) -> Tensor:
    """``[b]``: standard binary NDCG@k; IDCG over min(``num_positives``, k) ideal hits."""
    _check(hits, k)
    gain = discounts(k, hits.device)
    dcg = (hits[:, :k].float() * gain).sum(dim=1)
    ideal_cumulative = torch.cumsum(gain, dim=0)  # [k]: IDCG for 1..k positives
    idcg = ideal_cumulative[num_positives.clamp(min=1, max=k) - 1]
    return dcg / idcg


def hit_rate_at_k(hits: Tensor, k: int) -> Tensor:
    """``[b]``: 1.0 when the top ``k`` holds at least one positive."""
    _check(hits, k)
    return hits[:, :k].any(dim=1).float()


def mrr_at_k(hits: Tensor, k: int) -> Tensor:
    """``[b]``: 1 / rank of the first positive in the top ``k``; 0 when there is none."""
    _check(hits, k)
    top = hits[:, :k]
    first = top.float().argmax(dim=1)  # index of the first True (0 when none)
    return torch.where(top.any(dim=1), 1.0 / (first + 1).float(), torch.zeros((), device=hits.device))


def intra_list_diversity(category_index: Tensor) -> Tensor:
    """``[b]``: share of item pairs in each list whose categories differ.

    Args:
        category_index: ``[b, k]`` long, the (primary) category of each recommended
            item; ``-1`` = unknown. Pairs with an unknown end are left out.

    Returns:
        ``[b]`` float; ``nan`` for a list with no pair of known categories.
    """
    known = category_index >= 0
    differ = category_index.unsqueeze(2) != category_index.unsqueeze(1)  # [b, k, k]
    valid = known.unsqueeze(2) & known.unsqueeze(1)
    upper = torch.ones_like(differ[0]).triu(diagonal=1)  # each unordered pair once
    valid = valid & upper
    pairs = valid.sum(dim=(1, 2)).float()
    return (differ & valid).sum(dim=(1, 2)).float() / pairs  # 0/0 → nan
