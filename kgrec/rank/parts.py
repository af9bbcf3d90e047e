"""The parts of a recommendation's score, as pure functions on tensors (no I/O).

- **relevance**: the recommender's score of each product for the user, optionally
  mixed with a search query's similarity to the product texts (:func:`mix_query`);
- **popularity** (:func:`decayed_popularity`): the sum of event weights per product,
  each halved every ``half_life_days``;
- the **diversity** part is built during the ranking itself (:mod:`kgrec.rank.engine`,
  :mod:`kgrec.rank.exploration`).

Each part is mapped to ``[0, 1]`` over the user's candidates (:func:`normalise`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from kgrec.errors import ConfigError
from kgrec.rank.params import NormaliseMethod, Similarity

SECONDS_PER_DAY = 86_400


@torch.no_grad()
def decayed_popularity(
    product_index: Tensor,
    timestamp: Tensor,
    weight: Tensor,
    num_products: int,
    now: int,
    half_life_days: float,
) -> Tensor:
    """Time-decayed popularity: each event counts ``weight · 0.5 ** (age_days / half_life_days)``.

    Args:
        product_index: ``[n]`` long, the product of each event.
        timestamp: ``[n]`` long, epoch seconds of each event.
        weight: ``[n]`` float, the event's weight (e.g. purchase 5, view 1).
        num_products: ``P``.
        now: epoch seconds the ages are measured from; events after ``now`` count as age 0.
        half_life_days: days after which an event counts half (``> 0``).

    Returns:
        ``[P]`` float32, the summed decayed weight per product (0 for products without events).
    """
    n = product_index.numel()
    if timestamp.numel() != n or weight.numel() != n:
        raise ValueError(
            "decayed_popularity: product_index, timestamp and weight must have the same length; "
            f"found {n}, {timestamp.numel()} and {weight.numel()}."
        )
    if not half_life_days > 0:
        raise ConfigError(f"popularity half_life_days must be > 0; found {half_life_days}.")
    if n and (int(product_index.min()) < 0 or int(product_index.max()) >= num_products):
        raise ValueError(
            f"decayed_popularity: product_index must lie in 0..{num_products - 1}; "
            f"found {int(product_index.min())}..{int(product_index.max())}."
        )
    age_days = (now - timestamp.to(torch.float64)).clamp(min=0) / SECONDS_PER_DAY
    decayed = weight.to(torch.float64) * torch.exp2(-age_days / half_life_days)
    out = torch.zeros(num_products, dtype=torch.float64).index_add_(0, product_index.long(), decayed)
    top = float(out.max()) if num_products else 0.0
    if 0.0 < top < 1e-30:
        # Old events only (years of half-lives): rescale before float32 would round them all
        # to 0. Ranking normalises popularity anyway, so only the ratios matter.
        out = out / top
    return out.float()


def similarity_scores(user_vectors: Tensor, product_embeddings: Tensor, similarity: Similarity = "cosine") -> Tensor:
    """``[b, P]`` (or ``[P]`` for a ``[dim]`` user vector) similarity of users to products.

    ``"cosine"`` L2-normalises both sides first; ``"dot"`` uses the raw dot product.
    """
    if similarity not in ("cosine", "dot"):
        raise ConfigError(f"similarity must be 'cosine' or 'dot'; found {similarity!r}.")
    if user_vectors.shape[-1] != product_embeddings.shape[-1]:
        raise ValueError(
            f"user vectors have dim {user_vectors.shape[-1]} but product_embeddings [P, dim] have dim "
            f"{product_embeddings.shape[-1]}; they must come from the same model."
        )
    users, products = user_vectors.float(), product_embeddings.float()
    if similarity == "cosine":
        users, products = F.normalize(users, dim=-1), F.normalize(products, dim=-1)
    return users @ products.T


@torch.no_grad()
def normalise(scores: Tensor, method: NormaliseMethod = "minmax", mask: Tensor | None = None) -> Tensor:
    """Map scores to ``[0, 1]`` over the candidates (along the last dimension).

    - ``"minmax"``: ``(x - min) / (max - min)`` with min and max taken over the
      candidates: the best candidate gets 1, the worst 0, distances are kept.
    - ``"rank"``: the candidate's rank as a percentile, ``(rank - 1) / (n - 1)`` with
      rank 1 the lowest; ties share their mean rank. Robust to outliers (one
      blockbuster does not squash every other popularity to 0).

    A constant row (or one with fewer than 2 candidates) maps to zeros: a part that
    does not tell the candidates apart adds nothing to any of them. Non-candidates
    (``mask`` False, or non-finite scores) get 0.

    Args:
        scores: ``[..., P]`` float.
        method: ``"minmax"`` or ``"rank"``.
        mask: ``[..., P]`` bool (broadcastable), True for the candidates; default all.

    Returns:
        ``[..., P]`` float32 in ``[0, 1]``.
    """
    if method not in ("minmax", "rank"):
        raise ConfigError(f"normalisation must be 'minmax' or 'rank'; found {method!r}.")
    scores = scores.float()
    valid = torch.isfinite(scores)
    if mask is not None:
        valid = valid & mask.to(torch.bool)
    low = torch.where(valid, scores, torch.inf).amin(dim=-1, keepdim=True)
    high = torch.where(valid, scores, -torch.inf).amax(dim=-1, keepdim=True)
    spread = high - low
    informative = torch.isfinite(spread) & (spread > 0)
    if method == "minmax":
        out = (scores - low) / torch.where(informative, spread, torch.ones_like(spread))
    else:
        values = torch.where(valid, scores, torch.inf)
        ordered = values.sort(dim=-1).values
        below = torch.searchsorted(ordered, values, right=False)
        up_to = torch.searchsorted(ordered, values, right=True)
        count = valid.sum(dim=-1, keepdim=True)
        mid_rank = (below + up_to - 1).float() / 2
        out = mid_rank / (count - 1).clamp(min=1).float()
    return torch.where(valid & informative, out, torch.zeros_like(out)).clamp(0.0, 1.0)



@torch.no_grad()
def mix_query(personal: Tensor, query: Tensor, query_mix: float) -> Tensor:
    """Personalised search: ``(1 - query_mix)·minmax(personal) + query_mix·minmax(query)``.

    Both parts are min-max normalised over the catalog first (non-finite entries, e.g.
    excluded products, count as no candidate), so ``query_mix`` is a true share
    whatever the two similarity scales are. ``query_mix = 1`` is plain text search.

    Args:
        personal: ``[b, P]`` the recommender's scores.
        query: ``[b, P]`` (or ``[P]``) the query's similarity to each product's text.

    Returns:
        ``[b, P]`` float32 in ``[0, 1]``.
    """
    if not 0 <= query_mix <= 1:
        raise ConfigError(f"query_mix must be between 0 and 1; found {query_mix}.")
    return (1 - query_mix) * normalise(personal) + query_mix * normalise(query.expand_as(personal))
