"""The final score of a recommendation, as pure functions on tensors (no I/O, no Neo4j).

    score = α·relevance + β·popularity + γ·diversity

Each part is mapped to ``[0, 1]`` over the user's candidates first (:func:`normalise`),
so the weights ``(α, β, γ)`` are comparable, and every recommended product carries
the three parts its score was built from (:class:`RankedList`):

- **relevance** (:func:`relevance`): similarity of the user vector to each product
  embedding, optionally mixed with a search query's similarity to the product texts
  (personalised search).
- **popularity** (:func:`decayed_popularity`): the sum of event weights per product,
  each halved every ``half_life_days``.
- **diversity**: chosen greedily, MMR style (:mod:`kgrec.rank.mmr`), from the
  knowledge-graph exploration bonus (:func:`exploration_bonus`, products next to the
  user's history but new to them) and the product's novelty against the products
  already picked (1 - max cosine similarity).

With ``γ = 0`` the ranking is exactly the top-k by ``α·relevance + β·popularity``.
:func:`rank_products` ranks one user; :func:`rank_all_users` ranks every user in
batches with matrix products. docs/RANKING.md explains the rules with examples.

Shapes: ``P`` = number of products, ``C`` = categories, ``U`` = users, ``b`` = users
in one batch, ``dim`` = embedding size.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Union

import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from kgrec.errors import ConfigError
from kgrec.rank.config import ExplorationLevels
from kgrec.rank.mmr import mmr_select

if TYPE_CHECKING:
    from kgrec.snapshot.snapshot import Snapshot

Weights = tuple[float, float, float]
"""``(α, β, γ)``: the weights of relevance, popularity and diversity."""
NormaliseMethod = Literal["minmax", "rank"]
Similarity = Literal["cosine", "dot"]

CategoryLists = Union[Tensor, Sequence[Union[Tensor, Sequence[int]]], tuple[Tensor, Tensor]]
"""Categories per product: ``[P, max_c]`` padded with ``-1``, ``P`` index lists, or ``(product_index, category_index)`` pairs."""

WEIGHT_NAMES: tuple[str, str, str] = ("relevance", "popularity", "diversity")
WEIGHTS_EXAMPLE = "relevance=0.7,popularity=0.1,diversity=0.2"
SECONDS_PER_DAY = 86_400


# --------------------------------------------------------------------------- weights
def parse_weights(text: str) -> Weights:
    """``"relevance=0.7,popularity=0.1,diversity=0.2"`` → ``(0.7, 0.1, 0.2)``.

    Names are ``relevance``, ``popularity`` and ``diversity`` (any case, any order,
    each at most once); a name left out weighs 0. The weights are rescaled to sum to 1,
    so ``relevance=7,popularity=1,diversity=2`` means the same as the example above and
    the final score stays in ``[0, 1]``.

    Raises:
        ConfigError: an entry is not ``name=value``, a name is unknown or repeated, a
            value is not a finite number or is negative, or every weight is 0. The
            message names the bad entry, the allowed names and an example.
    """
    hint = f"Allowed names: {', '.join(WEIGHT_NAMES)}; e.g. --weights {WEIGHTS_EXAMPLE}."
    if not text or not text.strip():
        raise ConfigError(f"--weights is empty. {hint}")
    found: dict[str, float] = {}
    for entry in text.split(","):
        name, sep, raw = entry.partition("=")
        name = name.strip().lower()
        if not sep or not name:
            raise ConfigError(f"--weights entry {entry.strip()!r} (in {text!r}) is not of the form name=value. {hint}")
        if name not in WEIGHT_NAMES:
            raise ConfigError(f"--weights has an unknown name {name!r} (in {text!r}). {hint}")
        if name in found:
            raise ConfigError(f"--weights names {name!r} twice (in {text!r}); give each weight once. {hint}")
        try:
            value = float(raw.strip())
        except ValueError:
            raise ConfigError(f"--weights: the value {raw.strip()!r} of {name!r} is not a number. {hint}") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"--weights: {name}={raw.strip()} must be a number >= 0. {hint}")
        found[name] = value
    total = sum(found.values())
    if total <= 0:
        raise ConfigError(f"--weights {text!r} makes every weight 0; give at least one a positive value. {hint}")
    return tuple(found.get(name, 0.0) / total for name in WEIGHT_NAMES)  # type: ignore[return-value]


def check_weights(weights: Sequence[float]) -> Weights:
    """``weights`` as a float triple, after checking it: three finite numbers >= 0, not all 0.

    Raises:
        ConfigError: naming the bad value (the weights are used as given, not rescaled).
    """
    values = tuple(float(w) for w in weights)
    if len(values) != 3:
        raise ConfigError(
            f"weights must be 3 numbers ({', '.join(WEIGHT_NAMES)}); found {len(values)}: {values}. "
            f"E.g. {WEIGHTS_EXAMPLE}."
        )
    for name, value in zip(WEIGHT_NAMES, values):
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"weight {name} must be a finite number >= 0; found {value}. E.g. {WEIGHTS_EXAMPLE}.")
    if sum(values) <= 0:
        raise ConfigError(f"weights {values} are all 0; give at least one a positive value. E.g. {WEIGHTS_EXAMPLE}.")
    return values  # type: ignore[return-value]


# --------------------------------------------------------------------------- parts
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
def relevance(
    user_vector: Tensor,
    product_embeddings: Tensor,
    query_vector: Tensor | None = None,
    product_text_embeddings: Tensor | None = None,
    query_mix: float = 0.5,
    similarity: Similarity = "cosine",
) -> Tensor:
    """Personal relevance of every product, optionally mixed with a search query (personalised search).

    The mixing rule::

        personal = minmax(sim(user_vector, product_embeddings))          over all P products
        query    = minmax(cos(query_vector, product_text_embeddings))    over all P products
        relevance = (1 - query_mix)·personal + query_mix·query

    Both parts are min-max normalised over the catalog first, so ``query_mix`` is a
    true share whatever the two similarity scales are. Without a query (or with
    ``query_mix = 0``) it is ``personal``. ``query_mix = 1`` is plain text search.

    Args:
        user_vector: ``[dim]`` (or ``[b, dim]`` for several users).
        product_embeddings: ``[P, dim]``.
        query_vector: ``[d_text]`` (or ``[b, d_text]``), the encoded query, or ``None``.
        product_text_embeddings: ``[P, d_text]``; required with ``query_vector``.
        query_mix: share of the query part, in ``[0, 1]``.
        similarity: how the user vector is compared with product embeddings.

    Returns:
        ``[P]`` (or ``[b, P]``) float32 in ``[0, 1]``.
    """
    if not 0 <= query_mix <= 1:
        raise ConfigError(f"query_mix must be between 0 and 1; found {query_mix}.")
    personal = normalise(similarity_scores(user_vector, product_embeddings, similarity))
    if query_vector is None or query_mix == 0:
        return personal
    if product_text_embeddings is None:
        raise ValueError("relevance: a query_vector needs product_text_embeddings [P, d_text] to compare it with.")
    if product_text_embeddings.shape[0] != product_embeddings.shape[0]:
        raise ValueError(
            f"relevance: product_text_embeddings has {product_text_embeddings.shape[0]} rows but "
            f"product_embeddings has {product_embeddings.shape[0]}; both need one row per product."
        )
    query = normalise(similarity_scores(query_vector, product_text_embeddings, "cosine"))
    return (1 - query_mix) * personal + query_mix * query


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


# --------------------------------------------------------------------------- exploration
@dataclass(frozen=True)
class ExplorationGraph:
    """The catalog structure :func:`exploration_bonus` reads, prepared once.

    Build it with :meth:`build`; :meth:`bonus` then scores a whole batch of users at
    once (index arithmetic on ``[b, C]`` and ``[b, B]`` tables, no per-user Python loop),
    for every product or only for given ones (e.g. a ranking's candidate pool).

    The rule, for a product the user has **not** seen (a seen product always gets 0):

    ====================================================  ==================================
    the product is …                                      bonus (:class:`ExplorationLevels`)
    ====================================================  ==================================
    in a touched category, by a new brand (or no brand)   ``new_brand_same_category`` (1.0)
    in a touched category, by a touched brand             ``familiar`` (0.25)
    otherwise the highest of:
    in a nearby category (sibling, parent or child of a   ``nearby_category`` (0.75)
    touched one)
    by a touched brand                                    ``known_brand_new_category`` (0.5)
    by a neighbour brand (sells in a touched category,    ``neighbour_brand`` (0.25)
    or linked to a touched brand by ``brand_neighbours``)
    none of these (far from the whole history)            0
    ====================================================  ==================================

    "Touched" means: a category listed on, or the brand of, a product the user has seen.
    Top-level categories (no parent) are not siblings of each other.
    """

    num_products: int
    num_brands: int
    num_categories: int
    product_brand: Tensor  # [P] long; num_brands (an always-empty slot) = no brand
    product_categories: Tensor  # [P, max_c] long; num_categories (an always-empty slot) = padding
    category_parent: Tensor  # [C] long; num_categories = top level
    brand_in_category: Tensor  # sparse CSR [B, C] float: 1 where a brand sells in a category
    brand_link: Tensor | None  # sparse CSR [B, B] float, symmetric, or None
    levels: ExplorationLevels

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        product_brand: Tensor,
        product_categories: CategoryLists,
        category_parent: Tensor,
        brand_neighbours: Tensor | None = None,
        num_brands: int | None = None,
        levels: ExplorationLevels | None = None,
    ) -> ExplorationGraph:
        """Prepare the catalog structure.

        Args:
            product_brand: ``[P]`` long brand index per product, ``-1`` = no brand.
            product_categories: the categories listed on each product: ``[P, max_c]`` long
                padded with ``-1``, a sequence of ``P`` index lists, or a
                ``(product_index [n], category_index [n])`` pair of tensors.
            category_parent: ``[C]`` long parent category index, ``-1`` for a top-level one.
            brand_neighbours: optional ``[2, E]`` long brand-brand edges (read both ways),
                e.g. brands whose products are often bought together.
            num_brands: ``B``; default one more than the largest brand index given.
            levels: the bonus per kind of closeness; default :class:`ExplorationLevels`.
        """
        product_brand = product_brand.long().reshape(-1)
        num_products = product_brand.numel()
        category_parent = category_parent.long().reshape(-1)
        num_categories = category_parent.numel()
        rows, cols = _category_pairs(product_categories, num_products)
        if cols.numel() and int(cols.max()) >= num_categories:
            raise ValueError(
                f"product_categories holds category index {int(cols.max())}, but category_parent "
                f"has only {num_categories} entries (one per category)."
            )
        if num_categories and int(category_parent.max()) >= num_categories:
            raise ValueError(
                f"category_parent holds {int(category_parent.max())}, beyond its {num_categories} categories."
            )
        largest = int(product_brand.max()) if num_products else -1
        if brand_neighbours is not None and brand_neighbours.numel():
            if brand_neighbours.dim() != 2 or brand_neighbours.shape[0] != 2:
                raise ValueError(
                    f"brand_neighbours must be a [2, E] edge index; found shape {tuple(brand_neighbours.shape)}."
                )
            largest = max(largest, int(brand_neighbours.max()))
        num_brands = num_brands if num_brands is not None else largest + 1
        if largest >= num_brands:
            raise ValueError(f"brand indices go up to {largest} but num_brands is {num_brands}.")

        slot = rows.new_zeros(rows.shape)
        if rows.numel():  # position of each (product, category) pair within its product's row
            starts = torch.searchsorted(rows, rows, right=False)
            slot = torch.arange(rows.numel()) - starts
        width = int(slot.max()) + 1 if rows.numel() else 1
        padded = torch.full((num_products, width), num_categories, dtype=torch.long)
        padded[rows, slot] = cols
        branded = product_brand[rows] >= 0
        brand_in_category = _sparse(product_brand[rows][branded], cols[branded], (num_brands, num_categories))
        brand_link = None
        if brand_neighbours is not None and brand_neighbours.numel():
            a, b = brand_neighbours.long()
            brand_link = _sparse(torch.cat([a, b]), torch.cat([b, a]), (num_brands, num_brands))
        return cls(
            num_products=num_products,
            num_brands=num_brands,
            num_categories=num_categories,
            product_brand=torch.where(product_brand >= 0, product_brand, num_brands),
            product_categories=padded,
            category_parent=torch.where(category_parent >= 0, category_parent, num_categories),
            brand_in_category=brand_in_category,
            brand_link=brand_link,
            levels=levels or ExplorationLevels(),
        )

    @classmethod
    def from_snapshot(
        cls,
        snapshot: Snapshot,
        brand_neighbours: Tensor | None = None,
        levels: ExplorationLevels | None = None,
        extra_products: pl.DataFrame | None = None,
    ) -> ExplorationGraph:
        """The catalog structure of a snapshot, indexed like its id maps.

        Products are ``snapshot.product_ids``, then the rows of ``extra_products`` (columns
        ``brand``, ``categories``: products added after the snapshot); brands are
        ``snapshot.brand_ids``, categories ``snapshot.category_ids`` (every path and its
        ancestors). Brands and categories the snapshot does not know are left out.
        """
        products = snapshot.tables.products.select("brand", "categories")
        if extra_products is not None:
            products = pl.concat([products, extra_products.select(products.columns)], how="vertical_relaxed")
        brand = snapshot.brand_ids.indices(products.get_column("brand").fill_null(""), strict=False).copy()
        listed = products.select("categories").with_row_index("row").explode("categories").drop_nulls("categories")
        category = snapshot.category_ids.indices(listed.get_column("categories"), strict=False)
        known = category >= 0
        rows = torch.from_numpy(listed.get_column("row").to_numpy().astype("int64")[known])
        cols = torch.from_numpy(category[known].copy())
        parents = snapshot.tables.categories().get_column("parent").fill_null("")
        parent = snapshot.category_ids.indices(parents, strict=False).copy()
        return cls.build(
            torch.from_numpy(brand),
            (rows, cols),
            torch.from_numpy(parent),
            brand_neighbours,
            num_brands=len(snapshot.brand_ids),
            levels=levels,
        )

    @torch.no_grad()
    def bonus(self, seen_indptr: Tensor, seen_index: Tensor, product_index: Tensor | None = None) -> Tensor:
        """Exploration bonus for a batch of users.

        Args:
            seen_indptr: ``[b + 1]`` long, CSR row pointers: user ``i`` saw
                ``seen_index[seen_indptr[i]:seen_indptr[i + 1]]``.
            seen_index: ``[nnz]`` long product indices.
            product_index: ``[b, m]`` long, the products to score per user; default all ``P``.

        Returns:
            ``[b, m]`` (or ``[b, P]``) float32 in ``[0, 1]``.
        """
        seen_indptr, seen_index = seen_indptr.long(), seen_index.long()
        b, num_categories, num_brands = seen_indptr.numel() - 1, self.num_categories, self.num_brands
        user = torch.repeat_interleave(torch.arange(b), seen_indptr[1:] - seen_indptr[:-1])
        if product_index is None:
            product_index = torch.arange(self.num_products).expand(b, self.num_products)
        product_index = product_index.long()

        # Categories: touched, and one step away in the tree. One extra, always-False
        # column (index C) stands for "no category" / "no parent".
        touched = torch.zeros((b, num_categories + 1))
        listed = self.product_categories[seen_index]  # [nnz, max_c]
        touched[user.unsqueeze(1).expand_as(listed), listed] = 1.0
        touched[:, num_categories] = 0.0
        parents = torch.zeros((b, num_categories + 1)).index_add_(1, self.category_parent, touched[:, :num_categories])
        parents[:, num_categories] = 0.0
        children = touched[:, self.category_parent]  # [b, C]: my parent is touched
        siblings = parents[:, self.category_parent]  # my parent is a touched one's parent
        nearby = torch.zeros((b, num_categories + 1), dtype=torch.bool)
        nearby[:, :num_categories] = (parents[:, :num_categories] + children + siblings) > 0

        # Brands: touched, and neighbours (sell in a touched category, or linked). Column B = no brand.
        touched_brand = torch.zeros((b, num_brands + 1))
        touched_brand[user, self.product_brand[seen_index]] = 1.0
        touched_brand[:, num_brands] = 0.0

        m = product_index.shape[1]
        categories = self.product_categories[product_index].reshape(b, -1)  # [b, m * max_c]
        in_touched = touched.gather(1, categories).reshape(b, m, -1).amax(-1) > 0
        in_nearby = nearby.gather(1, categories).reshape(b, m, -1).any(-1)
        brand = self.product_brand[product_index]
        brand_known = touched_brand.gather(1, brand) > 0
        if b == 1:
            # One served request: walk the CSR rows of the few brands asked about (0.05 ms for a
            # pool of 200) rather than multiply the whole [B, C] matrix (0.2 ms).
            brand_neighbour = _row_meets(self.brand_in_category, brand, touched)
            if self.brand_link is not None:
                brand_neighbour |= _row_meets(self.brand_link, brand, touched_brand)
        else:
            # A batch: one sparse product serves every user (5x faster than the walk at b = 256).
            neighbour = torch.zeros((b, num_brands + 1))
            neighbour[:, :num_brands] = torch.sparse.mm(self.brand_in_category, touched[:, :num_categories].t()).t()
            if self.brand_link is not None:
                neighbour[:, :num_brands] += torch.sparse.mm(self.brand_link, touched_brand[:, :num_brands].t()).t()
            brand_neighbour = neighbour.gather(1, brand) > 0
        brand_neighbour &= ~brand_known

        lv = self.levels
        zero = torch.zeros(())
        inside = torch.where(brand_known, lv.familiar, lv.new_brand_same_category)
        outside = torch.maximum(
            torch.where(in_nearby, lv.nearby_category, zero),
            torch.maximum(
                torch.where(brand_known, lv.known_brand_new_category, zero),
                torch.where(brand_neighbour, lv.neighbour_brand, zero),
            ),
        )
        out = torch.where(in_touched, inside, outside).float()
        seen_key = torch.unique(user * self.num_products + seen_index)
        asked_key = torch.arange(b).unsqueeze(1) * self.num_products + product_index
        return out.masked_fill(torch.isin(asked_key, seen_key), 0.0)


@torch.no_grad()
def exploration_bonus(
    seen_products: Tensor,
    product_brand: Tensor,
    product_categories: CategoryLists,
    category_parent: Tensor,
    brand_neighbours: Tensor | None = None,
    levels: ExplorationLevels | None = None,
) -> Tensor:
    """Bonus for unseen products next to one user's history in the knowledge graph.

    See :class:`ExplorationGraph` for the rule (same category but new brand > nearby
    category > known brand elsewhere > neighbour brand > far: 0; seen: 0). To score
    many users, build an :class:`ExplorationGraph` once and call its ``bonus``.

    Args:
        seen_products: ``[n]`` long, products the user interacted with.
        product_brand: ``[P]`` long, ``-1`` = no brand.
        product_categories: ``[P, max_c]`` long padded with ``-1``, ``P`` index lists, or
            ``(product_index, category_index)`` pairs.
        category_parent: ``[C]`` long, ``-1`` = top level.
        brand_neighbours: optional ``[2, E]`` brand-brand edges.
        levels: the bonus levels; default :class:`ExplorationLevels`.

    Returns:
        ``[P]`` float32 in ``[0, 1]``.
    """
    graph = ExplorationGraph.build(product_brand, product_categories, category_parent, brand_neighbours, levels=levels)
    seen = seen_products.long().reshape(-1)
    if seen.numel() and (int(seen.min()) < 0 or int(seen.max()) >= graph.num_products):
        raise ValueError(f"seen_products must lie in 0..{graph.num_products - 1}; found {seen.min()}..{seen.max()}.")
    return graph.bonus(torch.tensor([0, seen.numel()]), seen)[0]


# --------------------------------------------------------------------------- ranking
@dataclass(frozen=True)
class RankedList:
    """A ranking with its score broken down, best first.

    For every item ``score == α·relevance + β·popularity + γ·diversity`` (computed
    from exactly these tensors; the parts are the normalised ones the ranking used).
    From :func:`rank_products` the tensors are ``[n]``, ``n <= k`` (fewer when the user
    has fewer candidates); from :func:`rank_batch` they are ``[b, k]``, padded with
    ``product_index = -1``, ``score = -inf`` and zero parts.
    """

    product_index: Tensor
    score: Tensor
    relevance: Tensor
    popularity: Tensor
    diversity: Tensor

    def __len__(self) -> int:
        return self.product_index.shape[0]

    def rows(self) -> list[dict[str, Any]]:
        """``[{product_index, rank, score, relevance, popularity, diversity}]`` of a 1-D list (rank from 1)."""
        columns = (self.product_index, self.score, self.relevance, self.popularity, self.diversity)
        return [
            {"product_index": i, "rank": r + 1, "score": s, "relevance": a, "popularity": p, "diversity": d}
            for r, (i, s, a, p, d) in enumerate(zip(*(column.tolist() for column in columns)))
        ]


ExploreAt = Callable[[Tensor], Tensor]
"""``explore_at(pool_index [b, m]) -> [b, m]`` exploration bonus of the pool's products."""


@torch.no_grad()
def rank_batch(
    relevance: Tensor,
    popularity: Tensor,
    exploration: Tensor | ExploreAt | None,
    weights: Sequence[float],
    k: int,
    candidate_mask: Tensor | None = None,
    product_embeddings: Tensor | None = None,
    num_candidates: int = 200,
    exploration_share: float = 0.5,
    normalisation: NormaliseMethod = "minmax",
    sorted_popularity: SortedValues | None = None,
    excluded: tuple[Tensor, Tensor] | None = None,
) -> RankedList:
    """Rank the products for a batch of users; :func:`rank_products` for ``b`` users at once.

    The steps, per user:

    1. relevance and popularity are normalised to ``[0, 1]`` over the user's candidates
       (:func:`normalise`): ``rel``, ``pop``; ``base = α·rel + β·pop``;
    2. ``γ = 0``: the top-k by ``base``, diversity parts 0;
    3. ``γ > 0``: the pool of the ``num_candidates`` best by ``base``, re-ranked greedily
       (:func:`kgrec.rank.mmr.mmr_select`) by ``base + γ·div`` with
       ``div = s·exploration + (1 - s)·(1 - max cosine similarity to the picks so far)``.

    Args:
        relevance: ``[b, P]`` float (any scale; non-finite = not a candidate).
        popularity: ``[P]`` or ``[b, P]`` float (any scale; non-finite = not a candidate).
        exploration: ``[P]`` or ``[b, P]`` float in ``[0, 1]`` (used as is), a function
            ``pool [b, m] -> bonus [b, m]`` that computes it for the re-ranked pool only
            (e.g. :meth:`ExplorationGraph.bonus`; cheaper on large catalogs), or ``None`` (0).
        weights: ``(α, β, γ)``, each ``>= 0``, not all 0 (used as given, not rescaled).
        k: items per user.
        candidate_mask: ``[P]`` or ``[b, P]`` bool, False = excluded (e.g. seen); default all.
        product_embeddings: ``[P, dim]`` for the novelty term; ``None``: diversity = exploration.
        num_candidates: pool size of the re-ranking (at least ``k`` are used).
        exploration_share: ``s`` in ``[0, 1]``.
        normalisation: ``"minmax"`` or ``"rank"``.
        sorted_popularity: ``SortedValues(popularity)`` for a ``[P]`` popularity, made once
            and reused across calls (saves sorting all ``P`` products per call).
        excluded: ``(row [n], product [n])`` long pairs that are never candidates: the same
            as a ``candidate_mask``, without a dense ``[b, P]`` mask (cheaper when few are
            excluded, e.g. a user's seen products). Both may be given.

    Returns:
        :class:`RankedList` of ``[b, k]`` tensors (padded where a user has fewer than ``k`` candidates).
    """
    if relevance.dim() != 2:
        raise ValueError(f"rank_batch: relevance must be [b, P]; found shape {tuple(relevance.shape)}.")
    b, num_products = relevance.shape
    scores = relevance.float().clone()
    popularity = popularity.float()
    _per_user(popularity, b, num_products, "popularity")  # checks the shape
    pairs = [] if excluded is None else [(excluded[0].long(), excluded[1].long())]
    if candidate_mask is not None:
        pairs.append((~_per_user(candidate_mask, b, num_products, "candidate_mask").to(torch.bool)).nonzero(as_tuple=True))
    # Non-finite scores are never candidates. One sum finds out whether there are any
    # (NaN and ±inf make it non-finite); only then is the element-wise test run.
    if not bool(torch.isfinite(scores.sum())):
        pairs.append((~torch.isfinite(scores)).nonzero(as_tuple=True))
    popularity_finite = sorted_popularity.all_finite if sorted_popularity is not None else bool(torch.isfinite(popularity.sum()))
    if not popularity_finite:
        pairs.append((~torch.isfinite(_per_user(popularity, b, num_products, "popularity"))).nonzero(as_tuple=True))
    if pairs:
        excluded_row, excluded_index = torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    else:
        excluded_row = excluded_index = torch.zeros(0, dtype=torch.long)
    explore_at = None
    if isinstance(exploration, Tensor):
        bonus = _per_user(exploration, b, num_products, "exploration").float()
        explore_at = lambda pool: bonus.gather(1, pool)  # noqa: E731
    elif exploration is not None:
        explore_at = exploration
    if popularity.dim() == 2 and popularity.shape[0] == 1:
        popularity = popularity[0]
    popularity_range = None
    if popularity.dim() == 1:
        if not popularity_finite:
            popularity = torch.nan_to_num(popularity)  # non-finite entries are excluded anyway
        if sorted_popularity is not None and normalisation == "minmax":
            popularity_range = sorted_popularity.extremes(excluded_row, excluded_index, b)
    return _rank_rows(
        scores, popularity, excluded_row, excluded_index, explore_at, weights, k,
        product_embeddings, num_candidates, exploration_share, normalisation, popularity_range,
    )


@torch.no_grad()
def rank_products(
    relevance: Tensor,
    popularity: Tensor,
    exploration: Tensor | ExploreAt | None,
    weights: Sequence[float],
    k: int,
    candidate_mask: Tensor | None = None,
    product_embeddings: Tensor | None = None,
    num_candidates: int = 200,
    exploration_share: float = 0.5,
    normalisation: NormaliseMethod = "minmax",
    sorted_popularity: SortedValues | None = None,
    exclude: Tensor | None = None,
) -> RankedList:
    """Rank the products for one user by ``α·relevance + β·popularity + γ·diversity``.

    Relevance and popularity are normalised to ``[0, 1]`` over the candidates; the
    diversity part of each pick is ``s·exploration + (1 - s)·(1 - max cosine similarity
    to the products picked before it)``, chosen greedily (MMR) among the
    ``num_candidates`` best by ``α·rel + β·pop``. With ``γ = 0`` the result is exactly
    the top-k by ``α·rel + β·pop``. See :func:`rank_batch` for the steps.

    Args:
        relevance: ``[P]`` float, e.g. from :func:`relevance`.
        popularity: ``[P]`` float, e.g. from :func:`decayed_popularity`.
        exploration: ``[P]`` float in ``[0, 1]`` from :func:`exploration_bonus`, a function of
            the pool as :func:`rank_batch` takes, or ``None``.
        weights: ``(α, β, γ)``, e.g. from :func:`parse_weights` or ``RankConfig.weights``.
        k: how many products.
        candidate_mask: ``[P]`` bool, False = never recommend (e.g. already seen).
        product_embeddings: ``[P, dim]`` for the novelty term; ``None``: diversity = exploration.
        num_candidates: how many of the best candidates the re-ranking looks at.
        exploration_share: ``s`` in ``[0, 1]``.
        normalisation: ``"minmax"`` or ``"rank"``.
        sorted_popularity: as :func:`rank_batch`.
        exclude: ``[n]`` long product indices never to recommend: the same as a
            ``candidate_mask`` that is False there, without building a ``[P]`` mask.

    Returns:
        :class:`RankedList` of ``[n]`` tensors, ``n = min(k, number of candidates)``.
    """
    if relevance.dim() != 1:
        raise ValueError(f"rank_products: relevance must be [P]; found shape {tuple(relevance.shape)}.")
    ranked = rank_batch(
        relevance.unsqueeze(0),
        popularity,
        exploration,
        weights,
        k,
        candidate_mask,
        product_embeddings,
        num_candidates,
        exploration_share,
        normalisation,
        sorted_popularity,
        None if exclude is None else (torch.zeros_like(exclude, dtype=torch.long), exclude.long()),
    )
    keep = ranked.product_index[0] >= 0
    return RankedList(*(getattr(ranked, name)[0][keep] for name in RankedList.__dataclass_fields__))


@torch.no_grad()
def rank_all_users(
    user_vectors: Tensor,
    product_embeddings: Tensor,
    seen: Any,
    popularity: Tensor,
    k: int,
    weights: Sequence[float],
    batch_size: int = 256,
    exploration: ExplorationGraph | None = None,
    similarity: Similarity = "cosine",
    num_candidates: int = 50,
    exploration_share: float = 0.5,
    normalisation: NormaliseMethod = "minmax",
    num_threads: int | None = None,
) -> tuple[Tensor, Tensor]:
    """Top-k for every user, in batches of matrix products (no per-user Python loop).

    Each batch scores ``[b, dim] @ [dim, P]``, excludes the users' seen products and runs
    the same steps as :func:`rank_products` (the MMR re-ranking is vectorised over the
    batch too, and the exploration bonus is computed only for each user's pool), so a
    user's row equals ``rank_products`` on that user's similarity scores. Without
    ``exploration`` the diversity part is novelty alone (when ``γ > 0``).

    Args:
        user_vectors: ``[U, dim]``.
        product_embeddings: ``[P, dim]``.
        seen: the products to exclude per user, as CSR: an ``(indptr [U + 1], indices [nnz])``
            pair, a torch sparse CSR ``[U, P]`` tensor, a ``scipy.sparse`` matrix ``[U, P]``,
            or a list of ``U`` index tensors.
        popularity: ``[P]`` float.
        k: items per user.
        weights: ``(α, β, γ)``.
        batch_size: users per batch (memory ≈ 3 × batch_size × P floats; batches up to
            ~640 users × 12k products stay below glibc's mmap threshold, which is faster).
        exploration: an :class:`ExplorationGraph` for the exploration bonus, or ``None``.
        similarity: ``"cosine"`` or ``"dot"``.
        num_candidates: MMR pool per user (smaller than :func:`rank_products`' 200 by
            default: the pool's top-k selection dominates the cost of a batch).
        exploration_share, normalisation: as :func:`rank_products`.
        num_threads: torch threads for this call (restored afterwards); ``None`` keeps the
            current setting. On a machine whose cores are busy with other work, ``1`` (or
            ``OMP_WAIT_POLICY=PASSIVE`` in the environment) avoids OpenMP threads spin-waiting
            for each other, which can make the call 5-15x slower.

    Returns:
        ``(top_index [U, k] long, top_score [U, k] float)``, best first; ``-1`` / ``-inf``
        pad the rows of users with fewer than ``k`` unseen products.
    """
    num_users, num_products = user_vectors.shape[0], product_embeddings.shape[0]
    if batch_size < 1:
        raise ConfigError(f"batch_size must be at least 1; found {batch_size}.")
    if popularity.shape != (num_products,):
        raise ValueError(f"popularity must be [P] with P = {num_products}; found shape {tuple(popularity.shape)}.")
    if exploration is not None and exploration.num_products != num_products:
        raise ValueError(
            f"exploration was built for {exploration.num_products} products; the embeddings have {num_products}."
        )
    indptr, indices = seen_csr(seen, num_users, num_products)
    gamma = check_weights(weights)[2]
    users, products = user_vectors.float(), product_embeddings.float()
    if similarity == "cosine":
        users, products = F.normalize(users, dim=-1), F.normalize(products, dim=-1)
    elif similarity != "dot":
        raise ConfigError(f"similarity must be 'cosine' or 'dot'; found {similarity!r}.")
    products_t = products.T.contiguous()
    popularity = torch.nan_to_num(popularity.float())
    seen_user = torch.repeat_interleave(torch.arange(num_users), indptr[1:] - indptr[:-1])
    if normalisation == "minmax":  # every user's popularity range over their unseen products, at once
        pop_low, pop_high = SortedValues(popularity).extremes(seen_user, indices, num_users)
    top_index = torch.empty((num_users, k), dtype=torch.long)
    top_score = torch.empty((num_users, k), dtype=torch.float32)
    with torch_threads(num_threads):
        for start in range(0, num_users, batch_size):
            stop = min(start + batch_size, num_users)
            scores = users[start:stop] @ products_t  # [b, P]
            first, last = int(indptr[start]), int(indptr[stop])
            batch_indptr = indptr[start : stop + 1] - first
            batch_index = indices[first:last]
            explore_at = None
            if exploration is not None and gamma > 0:
                explore_at = lambda pool: exploration.bonus(batch_indptr, batch_index, pool)  # noqa: E731
            ranked = _rank_rows(
                scores, popularity, seen_user[first:last] - start, batch_index, explore_at, weights, k,
                product_embeddings, num_candidates, exploration_share, normalisation,
                (pop_low[start:stop], pop_high[start:stop]) if normalisation == "minmax" else None,
            )
            top_index[start:stop] = ranked.product_index
            top_score[start:stop] = ranked.score
    return top_index, top_score


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """Run the block with ``num_threads`` torch threads (``None``: unchanged), then restore."""
    if num_threads is None:
        yield
        return
    if num_threads < 1:
        raise ConfigError(f"num_threads must be at least 1; found {num_threads}.")
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seen_csr(seen: Any, num_users: int, num_products: int) -> tuple[Tensor, Tensor]:
    """``(indptr [U + 1], indices [nnz])`` long tensors from any of the ``seen`` forms :func:`rank_all_users` takes."""
    if isinstance(seen, Tensor) and seen.layout == torch.sparse_csr:
        indptr, indices = seen.crow_indices(), seen.col_indices()
    elif isinstance(seen, tuple) and len(seen) == 2:
        indptr, indices = (torch.as_tensor(part) for part in seen)
    elif hasattr(seen, "tocsr"):  # scipy.sparse
        csr = seen.tocsr()
        indptr, indices = torch.from_numpy(csr.indptr.astype("int64")), torch.from_numpy(csr.indices.astype("int64"))
    elif isinstance(seen, Sequence):
        lengths = torch.tensor([len(items) for items in seen], dtype=torch.long)
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        parts = [torch.as_tensor(items, dtype=torch.long).reshape(-1) for items in seen]
        indices = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    else:
        raise ValueError(
            "seen must be an (indptr, indices) pair, a torch sparse CSR tensor, a scipy.sparse matrix "
            f"or a list of index tensors; found {type(seen).__name__}."
        )
    indptr, indices = indptr.long().reshape(-1), indices.long().reshape(-1)
    if indptr.numel() != num_users + 1:
        raise ValueError(f"seen has {indptr.numel() - 1} user rows; expected one per user ({num_users}).")
    if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= num_products):
        raise ValueError(f"seen holds product indices outside 0..{num_products - 1}.")
    return indptr, indices


# --------------------------------------------------------------------------- engine
def _rank_rows(
    scores: Tensor,
    popularity: Tensor,
    excluded_row: Tensor,
    excluded_index: Tensor,
    explore_at: ExploreAt | None,
    weights: Sequence[float],
    k: int,
    product_embeddings: Tensor | None,
    num_candidates: int,
    exploration_share: float,
    normalisation: NormaliseMethod,
    popularity_range: tuple[Tensor, Tensor] | None = None,
) -> RankedList:
    """The ranking engine. ``scores [b, P]`` are raw relevances and are overwritten.

    The excluded ``(row, product)`` pairs are never candidates. ``popularity_range``, the
    per-row ``(low, high)`` of a ``[P]`` popularity over the candidates, may be precomputed. Dense ``[b, P]`` work is
    kept to a few passes: with min-max normalisation the per-user minimum and maximum
    come from in-place masking, and the normalised parts are only materialised for the
    pool; ``base`` is the one dense intermediate.
    """
    alpha, beta, gamma = check_weights(weights)
    if k < 1:
        raise ConfigError(f"k must be at least 1; found {k}.")
    if normalisation not in ("minmax", "rank"):
        raise ConfigError(f"normalisation must be 'minmax' or 'rank'; found {normalisation!r}.")
    if not 0 <= exploration_share <= 1:
        raise ConfigError(f"exploration_share must be between 0 and 1; found {exploration_share}.")
    b, num_products = scores.shape
    take = min(k, num_products)

    if normalisation == "minmax":
        scores[excluded_row, excluded_index] = torch.inf
        rel_low = scores.amin(dim=1)
        scores[excluded_row, excluded_index] = -torch.inf
        rel_scale, rel_shift = _minmax_affine(rel_low, scores.amax(dim=1))
        if popularity.dim() == 1:
            if popularity_range is None:
                popularity_range = SortedValues(popularity).extremes(excluded_row, excluded_index, b)
            pop_low, pop_high = popularity_range
        else:
            masked = popularity.clone()
            masked[excluded_row, excluded_index] = torch.inf
            pop_low = masked.amin(dim=1)
            masked[excluded_row, excluded_index] = -torch.inf
            pop_high = masked.amax(dim=1)
        pop_scale, pop_shift = _minmax_affine(pop_low, pop_high)

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

    if gamma == 0:
        top = base.topk(take, dim=1)
        index, picked = top.indices, torch.isfinite(top.values)
        rel, pop = parts_at(index)
        div = torch.zeros_like(rel)
    else:
        pool = base.topk(min(max(num_candidates, take), num_products), dim=1)
        pool_index, valid = pool.indices, torch.isfinite(pool.values)
        pool_rel, pool_pop = parts_at(pool_index)
        explore = torch.zeros_like(pool_rel)
        if explore_at is not None:  # a NaN bonus counts as none, so it cannot knock a candidate out
            explore = explore_at(pool_index).float().nan_to_num(0.0).clamp(0.0, 1.0)
        share = exploration_share if product_embeddings is not None else 1.0
        pool_embeddings = None
        if product_embeddings is not None and share < 1.0:
            if product_embeddings.shape[0] != num_products:
                raise ValueError(
                    f"product_embeddings has {product_embeddings.shape[0]} rows; expected one per product ({num_products})."
                )
            pool_embeddings = F.normalize(product_embeddings[pool_index].float(), dim=-1)  # [b, M, dim]
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
        product_index=index.masked_fill(~picked, -1),
        score=score.masked_fill(~picked, -torch.inf),
        relevance=rel.masked_fill(~picked, 0.0),
        popularity=pop.masked_fill(~picked, 0.0),
        diversity=div.masked_fill(~picked, 0.0),
    )
    return _pad(ranked, k) if take < k else ranked


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


def _minmax_affine(low: Tensor, high: Tensor) -> tuple[Tensor, Tensor]:
    """``(scale, shift)`` with ``x·scale + shift = (x - low) / (high - low)``; ``(0, 0)`` when high <= low."""
    spread = high - low
    informative = torch.isfinite(spread) & (spread > 0)
    scale = torch.where(informative, 1.0 / torch.where(informative, spread, 1.0), 0.0)
    shift = torch.where(informative, -low * scale, 0.0)
    return scale, shift


def _gather(values: Tensor, index: Tensor) -> Tensor:
    """``values[index]`` for ``[P]`` values, or row-wise ``gather`` for ``[b, P]`` ones."""
    return values[index] if values.dim() == 1 else values.gather(1, index)


# --------------------------------------------------------------------------- helpers
def _row_meets(matrix: Tensor, row_index: Tensor, marked: Tensor) -> Tensor:
    """``[b, m]`` bool: whether row ``row_index[i, j]`` of the sparse CSR ``matrix [R, N]``
    has an entry in a column that ``marked[i]`` (``[b, >= N]``, > 0 = marked) marks.
    Row index ``R`` (one past the last) stands for an empty row."""
    b, m = row_index.shape
    crow, col = matrix.crow_indices(), matrix.col_indices()
    num_rows = crow.numel() - 1
    flat = row_index.reshape(-1)
    start, end = crow[flat.clamp(max=num_rows)], crow[(flat + 1).clamp(max=num_rows)]
    count = end - start
    entry = torch.repeat_interleave(torch.arange(flat.numel()), count)  # the (i, j) slot of each entry
    offset = torch.arange(entry.numel()) - (count.cumsum(0) - count)[entry]
    hit = marked[entry // m, col[start[entry] + offset]] > 0
    found = torch.zeros(flat.numel(), dtype=torch.long).index_add_(0, entry, hit.long())
    return (found > 0).reshape(b, m)


def _per_user(values: Tensor, b: int, num_products: int, name: str) -> Tensor:
    if values.shape[-1] != num_products or values.dim() > 2 or (values.dim() == 2 and values.shape[0] not in (1, b)):
        raise ValueError(f"{name} must be [P] or [b, P] with P = {num_products}, b = {b}; found shape {tuple(values.shape)}.")
    return values.reshape(-1, num_products).expand(b, num_products)


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


def _category_pairs(
    product_categories: CategoryLists, num_products: int
) -> tuple[Tensor, Tensor]:
    """``(product_index, category_index)`` pairs, sorted by product, from any :data:`CategoryLists` form."""
    if isinstance(product_categories, tuple) and len(product_categories) == 2:
        rows, cols = (torch.as_tensor(part, dtype=torch.long).reshape(-1) for part in product_categories)
        if rows.numel() != cols.numel() or (rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= num_products)):
            raise ValueError(
                "product_categories as (product_index, category_index) pairs needs two equally long index "
                f"tensors with product indices in 0..{num_products - 1}."
            )
        keep = cols >= 0
        order = torch.argsort(rows[keep], stable=True)
        return rows[keep][order], cols[keep][order]
    if isinstance(product_categories, Tensor):
        padded = product_categories.long()
        if padded.dim() == 1:
            padded = padded.unsqueeze(1)
        if padded.shape[0] != num_products:
            raise ValueError(
                f"product_categories has {padded.shape[0]} rows; expected one per product ({num_products})."
            )
        rows, slot = (padded >= 0).nonzero(as_tuple=True)
        return rows, padded[rows, slot]
    if len(product_categories) != num_products:
        raise ValueError(
            f"product_categories has {len(product_categories)} entries; expected one per product ({num_products})."
        )
    parts = [torch.as_tensor(c, dtype=torch.long).reshape(-1) for c in product_categories]
    lengths = torch.tensor([p.numel() for p in parts], dtype=torch.long)
    rows = torch.repeat_interleave(torch.arange(num_products), lengths)
    cols = torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)
    keep = cols >= 0
    return rows[keep], cols[keep]


def _sparse(rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> Tensor:
    """A sparse CSR ``shape`` matrix with 1.0 at each distinct ``(rows, cols)``.

    CSR, not COO: a product with a dense matrix is about 8× faster, and :meth:`ExplorationGraph.bonus`
    does one per request."""
    key = torch.unique(rows.long() * shape[1] + cols.long())
    index = torch.stack([key // shape[1], key % shape[1]])
    coo = torch.sparse_coo_tensor(index, torch.ones(key.numel()), shape, check_invariants=False).coalesce()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return coo.to_sparse_csr()
