"""The one public ranking: :func:`rank`, for one user or a batch.

    score = α·relevance + β·popularity + γ·diversity

Each part is mapped to ``[0, 1]`` over the user's candidates first, so the weights are
comparable, and every recommended product carries the three parts its score was built
from (:class:`~kgrec.rank.engine.RankedList`). With ``γ = 0`` the ranking is exactly
the top-k by ``α·relevance + β·popularity``; with ``γ > 0`` a pool of the best
``num_candidates`` is re-ranked greedily (MMR) by the knowledge-graph exploration bonus
and the novelty against the products already picked. docs/RANKING.md explains the
rules with examples.

A served request is a batch of one: ``recommend --user``, ``recommend --all-users``
and ``GET /recommend`` run the same code on the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from kgrec.models.history import Histories
from kgrec.rank.engine import RankedList, SortedValues, rank_rows
from kgrec.rank.exploration import ExplorationGraph
from kgrec.rank.params import RankParams
from kgrec.rank.parts import mix_query
from kgrec.rank.retrieval import Candidates


@dataclass(frozen=True)
class Catalog:
    """What ranking needs to know of the products, prepared once per loaded model.

    Attributes:
        popularity: ``[P]`` float, e.g. :func:`~kgrec.rank.parts.decayed_popularity`.
        exploration: the catalog structure for the exploration bonus; a ``[P]`` or
            ``[b, P]`` bonus tensor used as is; or None (no bonus).
        product_embedding: ``[P, dim]`` for the novelty term (None: diversity is the
            exploration bonus alone).
    """

    popularity: Tensor
    exploration: ExplorationGraph | Tensor | None = None
    product_embedding: Tensor | None = None
    sorted_popularity: SortedValues = field(init=False)

    def __post_init__(self) -> None:
        popularity = self.popularity.float()
        object.__setattr__(self, "popularity", popularity)
        # Sorted once, not per request: each user's min and max over their candidates come from it.
        object.__setattr__(self, "sorted_popularity", SortedValues(popularity))
        if self.product_embedding is not None:
            # The model's own table, not a normalised copy: the ranking normalises only its pool's
            # rows, and a copy would hold another [P, dim] (102 MB for two 128-d members at 100k products).
            object.__setattr__(self, "product_embedding", self.product_embedding.float())

    @property
    def num_products(self) -> int:
        return int(self.popularity.numel())


@torch.no_grad()
def rank(
    relevance: Tensor | Candidates,
    catalog: Catalog,
    params: RankParams,
    histories: Histories | None = None,
    query: Tensor | None = None,
) -> RankedList:
    """Rank the catalog, or each user's retrieved candidates, for a batch of users.

    Args:
        relevance: ``[b, P]`` the recommender's scores (``[P]`` for one user); any scale,
            non-finite = never a candidate. Or :class:`~kgrec.rank.retrieval.Candidates`:
            only these products are ranked (with ``minmax`` normalisation, no query), their
            relevance still scaled over the catalog, popularity too.
        catalog: popularity, exploration structure and product embeddings.
        params: weights, k, pool size, normalisation, query mix, ``include_seen``.
        histories: the users' current products (``b`` rows): excluded unless
            ``params.include_seen``, and the origin of the exploration bonus.
        query: ``[b, P]`` or ``[P]`` the query's similarity to each product's text; mixed
            into relevance by ``params.query_mix`` (personalised search).

    Returns:
        :class:`RankedList` of ``[b, k]`` tensors, best first, padded with ``-1`` where a
        user has fewer than ``k`` candidates.
    """
    columns = relevance_range = None
    if isinstance(relevance, Candidates):
        if query is not None or params.normalisation != "minmax":
            raise ValueError("rank: retrieved candidates take minmax normalisation and no query; pass dense [b, P] scores.")
        columns, relevance_range = relevance.product_index, (relevance.lowest, relevance.highest)
        relevance = relevance.relevance
    if relevance.dim() == 1:
        relevance = relevance.unsqueeze(0)
    if relevance.dim() != 2 or (columns is None and relevance.shape[1] != catalog.num_products):
        raise ValueError(
            f"rank: relevance must be [b, P] with P = {catalog.num_products}; found shape {tuple(relevance.shape)}."
        )
    b = relevance.shape[0]
    if histories is not None and len(histories) != b:
        raise ValueError(f"rank: {len(histories)} histories for {b} rows of relevance; pass one per user.")
    scores = relevance.float().clone() if query is None else mix_query(relevance.float(), query.float(), params.query_mix)
    # (row, product) pairs that are never candidates: the seen products, non-finite scores and popularity.
    excluded_row = excluded_index = torch.zeros(0, dtype=torch.long)
    if histories is not None and not params.include_seen:
        excluded_row, excluded_index = histories.row_of_entry, histories.product_index
    if columns is None:
        excluded_row, excluded_index = _with_non_finite(scores, excluded_row, excluded_index)
    popularity = catalog.popularity
    if not catalog.sorted_popularity.all_finite:
        bad = (~torch.isfinite(popularity)).nonzero().reshape(-1)
        excluded_row = torch.cat([excluded_row, torch.arange(b).repeat_interleave(bad.numel())])
        excluded_index = torch.cat([excluded_index, bad.repeat(b)])
        popularity = torch.nan_to_num(popularity, nan=0.0, posinf=0.0, neginf=0.0)
    popularity_range = None
    if params.normalisation == "minmax":
        popularity_range = catalog.sorted_popularity.extremes(excluded_row, excluded_index, b)
    if columns is not None:
        # From products to the candidates' columns; empty columns are never candidates either.
        popularity = popularity[columns.clamp(min=0)]
        key = torch.arange(b).unsqueeze(1) * catalog.num_products + columns
        excluded = torch.isin(key, excluded_row * catalog.num_products + excluded_index) | (columns < 0)
        excluded_row, excluded_index = _with_non_finite(scores, *excluded.nonzero(as_tuple=True))

    explore_at = None
    exploration = catalog.exploration
    if params.weights.diversity > 0 and exploration is not None:
        if isinstance(exploration, ExplorationGraph):
            if histories is None:
                seen_indptr, seen_index = torch.zeros(b + 1, dtype=torch.long), torch.zeros(0, dtype=torch.long)
            else:
                seen_indptr, seen_index = histories.indptr, histories.product_index
            explore_at = lambda pool: exploration.bonus(seen_indptr, seen_index, pool)  # noqa: E731 - the pool only
        else:
            bonus = exploration.float().reshape(-1, catalog.num_products).expand(b, -1)
            explore_at = lambda pool: bonus.gather(1, pool)  # noqa: E731
    return rank_rows(
        scores, popularity, excluded_row, excluded_index, explore_at, catalog.product_embedding, params,
        popularity_range, columns, relevance_range,
    )


def _with_non_finite(scores: Tensor, excluded_row: Tensor, excluded_index: Tensor) -> tuple[Tensor, Tensor]:
    """The excluded ``(row, column)`` pairs and those of the non-finite ``scores``."""
    if bool(torch.isfinite(scores.sum())):  # one sum finds out whether there are any
        return excluded_row, excluded_index
    bad_row, bad_index = (~torch.isfinite(scores)).nonzero(as_tuple=True)
    return torch.cat([excluded_row, bad_row]), torch.cat([excluded_index, bad_index])
