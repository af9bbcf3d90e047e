"""The ranking engine: top-k by relevance and popularity, then an MMR re-ranking for diversity.

Tensor code on a batch of ``b`` users (one served request is ``b = 1``), numpy where it finds a
few entries among many faster; no I/O.
:func:`kgrec.rank.ranking.rank` is the public entry; this module holds the steps.

Shapes: ``P`` = number of products, ``b`` = users in the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from kgrec.rank.mmr import mmr_select
from kgrec.rank.params import RankParams
from kgrec.rank.parts import normalise

ExploreAt = Callable[[Tensor], Tensor]
"""``explore_at(product_index [b, m]) -> [b, m]`` exploration bonus of the pool's products."""


# --------------------------------------------------------------------------- ranking
@dataclass(frozen=True)
class RankedList:
    """A ranking with its score broken down, best first.

    For every item ``score == α·relevance + β·popularity + γ·diversity`` (computed
    from exactly these tensors; the parts are the normalised ones the ranking used).
    The tensors are ``[b, k]``, padded with ``product_index = -1``, ``score = -inf`` and
    zero parts where a user has fewer than ``k`` candidates; :meth:`user` gives one
    user's ``[n]`` list without the padding.
    """

    product_index: Tensor
    score: Tensor
    relevance: Tensor
    popularity: Tensor
    diversity: Tensor

    def __len__(self) -> int:
        return self.product_index.shape[0]

    def user(self, row: int) -> RankedList:
        """Row ``row``'s list as ``[n]`` tensors, padding dropped."""
        keep = self.product_index[row] >= 0
        return RankedList(*(getattr(self, name)[row][keep] for name in RankedList.__dataclass_fields__))

    def rows(self) -> list[dict[str, Any]]:
        """``[{product_index, rank, score, relevance, popularity, diversity}]`` of a 1-D list (rank from 1)."""
        columns = (self.product_index, self.score, self.relevance, self.popularity, self.diversity)
        return [
            {"product_index": i, "rank": r + 1, "score": s, "relevance": a, "popularity": p, "diversity": d}
            for r, (i, s, a, p, d) in enumerate(zip(*(column.tolist() for column in columns)))
        ]


# --------------------------------------------------------------------------- engine
@torch.no_grad()
def rank_rows(
    scores: Tensor,
    popularity: Tensor,
    excluded_row: Tensor,
    excluded_index: Tensor,
    explore_at: ExploreAt | None,
    product_embeddings: Tensor | None,
    params: RankParams,
    popularity_range: tuple[Tensor, Tensor] | None = None,
    columns: Tensor | None = None,
    relevance_range: tuple[Tensor, Tensor] | None = None,
) -> RankedList:
    """The ranking engine. ``scores [b, P]`` are raw relevances and are overwritten.

    The excluded ``(row, column)`` pairs are never candidates. ``popularity_range``, the
    per-row ``(low, high)`` of the popularity over the candidates, may be precomputed. Dense ``[b, P]`` work is
    kept to a few passes: with min-max normalisation the per-user minimum and maximum
    come from in-place masking, and the normalised parts are only materialised for the
    pool; ``base`` is the one dense intermediate.

    ``columns`` ``[b, C]``: the product of each column, when ``scores [b, C]`` (and a
    ``[b, C]`` popularity) hold retrieved candidates rather than the catalog (``-1`` = an
    empty column, which must be excluded); ``None``: column ``j`` is product ``j``.
    ``relevance_range`` ``([b], [b])``: a wider range of relevance than the columns hold (the
    catalog's, for retrieved candidates), for min-max normalisation.
    """
    alpha, beta, gamma = params.weights.as_tuple()
    k, normalisation, num_candidates = params.k, params.normalisation, params.num_candidates
    exploration_share = params.exploration_share
    b, num_products = scores.shape
    take = min(k, num_products)

    if normalisation == "minmax":
        scores[excluded_row, excluded_index] = torch.inf
        rel_low = scores.amin(dim=1)
        scores[excluded_row, excluded_index] = -torch.inf
        rel_high = scores.amax(dim=1)
        if relevance_range is not None:
            rel_low, rel_high = torch.minimum(rel_low, relevance_range[0]), torch.maximum(rel_high, relevance_range[1])
        rel_scale, rel_shift = minmax_affine(rel_low, rel_high)
        if popularity_range is not None:
            pop_low, pop_high = popularity_range
        elif popularity.dim() == 1:
            pop_low, pop_high = SortedValues(popularity).extremes(excluded_row, excluded_index, b)
        else:
            masked = popularity.clone()
            masked[excluded_row, excluded_index] = torch.inf
            pop_low = masked.amin(dim=1)
            masked[excluded_row, excluded_index] = -torch.inf
            pop_high = masked.amax(dim=1)
        pop_scale, pop_shift = minmax_affine(pop_low, pop_high)

        def parts_at(pool: Tensor) -> tuple[Tensor, Tensor]:
            rel = (scores.gather(1, pool) * rel_scale[:, None] + rel_shift[:, None]).clamp(0.0, 1.0)
            pop = (_gather(popularity, pool) * pop_scale[:, None] + pop_shift[:, None]).clamp(0.0, 1.0)
            return rel, pop

        # base = α·rel + β·pop less a per-row constant (α·rel_shift + β·pop_shift): base only
        # orders a row's candidates, and the parts themselves come from parts_at. Two passes.
        base = scores * (alpha * rel_scale)[:, None]
        if beta > 0:
            base.addcmul_((beta * pop_scale)[:, None], popularity)
    else:
        mask = torch.ones_like(scores, dtype=torch.bool)
        mask[excluded_row, excluded_index] = False
        rel_dense = normalise(scores, "rank", mask)
        pop_dense = normalise(popularity.expand(b, num_products), "rank", mask)

        def parts_at(pool: Tensor) -> tuple[Tensor, Tensor]:
            return rel_dense.gather(1, pool), pop_dense.gather(1, pool)

        base = alpha * rel_dense + beta * pop_dense
    base[excluded_row, excluded_index] = -torch.inf

    def products_of(column: Tensor) -> Tensor:
        return column if columns is None else columns.gather(1, column).clamp(min=0)

    size = take if gamma == 0 else min(max(num_candidates, take), num_products)
    top_values, top_index = top_n(base, size)
    if gamma == 0:
        index, picked = top_index, torch.isfinite(top_values)
        rel, pop = parts_at(index)
        div = torch.zeros_like(rel)
    else:
        pool_index, valid = top_index, torch.isfinite(top_values)
        pool_rel, pool_pop = parts_at(pool_index)
        explore = torch.zeros_like(pool_rel)
        if explore_at is not None:  # a NaN bonus counts as none, so it cannot knock a candidate out
            explore = explore_at(products_of(pool_index)).float().nan_to_num(0.0).clamp(0.0, 1.0)
        share = exploration_share if product_embeddings is not None else 1.0
        pool_embeddings = None
        if product_embeddings is not None and share < 1.0:
            if columns is None and product_embeddings.shape[0] != num_products:
                raise ValueError(
                    f"product_embeddings has {product_embeddings.shape[0]} rows; expected one per product ({num_products})."
                )
            pool_embeddings = F.normalize(product_embeddings[products_of(pool_index)].float(), dim=-1)  # [b, M, dim]
        position, div, picked = mmr_select(
            alpha * pool_rel + beta * pool_pop, explore, pool_embeddings, take, gamma, share, valid
        )
        index = pool_index.gather(1, position)
        rel, pop = pool_rel.gather(1, position), pool_pop.gather(1, position)

    score = alpha * rel + beta * pop + gamma * div
    if gamma == 0:  # recomputed from the parts: keep the shown scores in order to the last bit
        order = score.masked_fill(~picked, -torch.inf).argsort(dim=1, descending=True, stable=True)
        index, score, rel, pop, div, picked = (t.gather(1, order) for t in (index, score, rel, pop, div, picked))
    ranked = RankedList(
        product_index=products_of(index).masked_fill(~picked, -1),
        score=score.masked_fill(~picked, -torch.inf),
        relevance=rel.masked_fill(~picked, 0.0),
        popularity=pop.masked_fill(~picked, 0.0),
        diversity=div.masked_fill(~picked, 0.0),
    )
    return _pad(ranked, k) if take < k else ranked


def top_n(values: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """``(values [b, n], index [b, n])``: each row's ``n`` largest values (``n <= P``; no NaN),
    best first, a tie to the lower column. ``values.topk(n)`` with a fixed tie order, without
    looking at more than the few values above :func:`nth_floor`."""
    candidates = columns_at_least(values, nth_floor(values, n))
    gathered = values.gather(1, candidates.clamp(min=0)).masked_fill(candidates < 0, -torch.inf)
    return best_columns(gathered, candidates, n)


def nth_floor(values: Tensor, n: int) -> Tensor:
    """``[b]``: a lower bound of each row's ``n``-th largest value (``n <= P``; no NaN).

    The ``n``-th largest of the maxima of the row's groups of columns: ``n`` groups each hold a
    value at least that large. About ``8n`` groups keep the bound close, so few values pass it;
    a narrow row gets its exact ``n``-th value. A group is every ``g``-th column (``g`` groups),
    so one vectorised pass over the row finds every maximum."""
    b, width = values.shape
    size = width // (8 * n)
    if size < 2:
        return values.topk(n, dim=1).values[:, -1]
    groups = width // size
    maxima = values[:, : groups * size].reshape(b, size, groups).amax(dim=1)
    if groups * size < width:
        maxima = torch.cat([maxima, values[:, groups * size :].amax(dim=1, keepdim=True)], dim=1)
    return maxima.topk(n, dim=1).values[:, -1]


def columns_at_least(values: Tensor, floor: Tensor) -> Tensor:
    """``[b, C]`` long: each row's columns whose value is at least ``floor [b]``, in ascending
    order, padded with ``-1`` (``C``: the most in any row)."""
    b, width = values.shape
    if values.device.type == "cpu":  # numpy compares 100k values and finds the few hits ~10x faster
        flat = torch.from_numpy(np.flatnonzero(values.numpy() >= floor.numpy()[:, None]))
    else:
        flat = (values >= floor.unsqueeze(1)).reshape(-1).nonzero().squeeze(1)
    if b == 1:
        return flat.unsqueeze(0)
    rows, columns = flat // width, flat % width
    counts = torch.bincount(rows, minlength=b)
    start = counts.cumsum(0) - counts
    out = torch.full((b, int(counts.max()) if rows.numel() else 0), -1, dtype=torch.long, device=values.device)
    out[rows, torch.arange(rows.numel(), device=values.device) - start[rows]] = columns
    return out


def best_columns(values: Tensor, columns: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The ``n`` best of each row's candidate ``columns [b, C]`` by their ``values [b, C]``
    (``-inf`` at padding; ``columns`` ascending in a row, as :func:`columns_at_least` gives them):
    ``(values [b, n], columns [b, n])``, best first, a tie to the lower column: a product's
    place never depends on which other users share its batch."""
    order = values.sort(dim=1, descending=True, stable=True).indices[:, :n]
    return values.gather(1, order), columns.gather(1, order).clamp(min=0)


class SortedValues:
    """``[P]`` values sorted once, to find each user's min and max over their candidates.

    A user's minimum over the non-excluded products is the first value in ascending
    order that the user does not exclude; users exclude few products, so this costs
    ``O(nnz log nnz)`` instead of a pass over ``[b, P]``.
    """

    def __init__(self, values: Tensor) -> None:
        self.values = values
        self.all_finite = bool(torch.isfinite(values).all())
        self.order = values.argsort()
        self.position = torch.empty_like(self.order)
        self.position[self.order] = torch.arange(values.numel())

    def extremes(self, excluded_row: Tensor, excluded_index: Tensor, b: int) -> tuple[Tensor, Tensor]:
        """``(low [b], high [b])`` over each row's candidates; ``(inf, -inf)`` for a row without any."""
        n = self.values.numel()
        position = self.position[excluded_index]
        if b == 1:  # one user (a served request): a walk over a few positions in Python
            taken = set(position.tolist())
            low = next(i for i in range(n + 1) if i not in taken)
            high = next(i for i in range(n - 1, -2, -1) if i not in taken)
            low, high = torch.tensor([low]), torch.tensor([high])
        else:
            low = self._skip(excluded_row, position, b)
            high = n - 1 - self._skip(excluded_row, n - 1 - position, b)
        found = (low < n) & (high >= 0)
        low_value = torch.where(found, self.values[self.order[low.clamp(max=n - 1)]], torch.inf)
        high_value = torch.where(found, self.values[self.order[high.clamp(min=0)]], -torch.inf)
        return low_value, high_value

    @staticmethod
    def _skip(row: Tensor, position: Tensor, b: int) -> Tensor:
        """Per row, how many of the positions ``0, 1, 2, ...`` are excluded before the first free one."""
        n = 1 + (int(position.max()) if position.numel() else 0)
        key = torch.unique(row * n + position)  # sorted, distinct
        key_row, key_position = key // n, key % n
        first = torch.searchsorted(key_row, torch.arange(b))
        rank_in_row = torch.arange(key.numel()) - first[key_row]
        return torch.zeros(b, dtype=torch.long).index_add_(0, key_row, (key_position == rank_in_row).long())


def minmax_affine(low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``x·scale + shift = (x - low) / (high - low)``; ``(0, 0)`` when high <= low."""
    spread = high - low
    informative = torch.isfinite(spread) & (spread > 0)
    scale = torch.where(informative, 1.0 / torch.where(informative, spread, 1.0), 0.0)
    shift = torch.where(informative, -low * scale, 0.0)
    return scale, shift


def _gather(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for ``[P]`` values, or row-wise ``gather`` for ``[b, P]`` ones."""
    return values[index] if values.dim() == 1 else values.gather(1, index)


def _pad(ranked: RankedList, k: int) -> RankedList:
    def pad(t: Tensor, value: float) -> Tensor:
        return F.pad(t, (0, k - t.shape[1]), value=value)

    return RankedList(
        product_index=pad(ranked.product_index, -1),
        score=pad(ranked.score, -torch.inf),
        relevance=pad(ranked.relevance, 0.0),
        popularity=pad(ranked.popularity, 0.0),
        diversity=pad(ranked.diversity, 0.0),
    )
