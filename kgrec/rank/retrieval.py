"""Candidate retrieval: each user's best products for the ranking, without a ``[b, P]`` pass.

The recommender scores a product by the inner product of the user's vector with the
product's embedding (:meth:`kgrec.train.recommender.Recommender.score`). On a large catalog
(``rank.exact_max_products``) ranking does not score every product: a :class:`Retriever`
finds each user's ``C`` best products (``rank.retrieval_candidates``) by the ranking's own
``α·relevance + β·popularity`` and :func:`kgrec.rank.ranking.rank` ranks only these
(:class:`Candidates`).

That sum is an inner product too. With relevance and popularity min-max normalised over
the catalog (``rel = (u·e - low) / (high - low)``, likewise popularity), it orders a user's
products as ``[α·u/(high - low), β/(pop_high - pop_low)] · [e, pop]`` does: one more column
on the product side, the user's weights and scales on the query side. So the index holds
``[e, pop]`` and a user is searched twice: first with ``[u, 0]`` for the lowest and highest
relevance (the scale), then with the weighted query for the candidates. With an exact index
the candidates hold the full pass's MMR pool and top-k. The ``C`` most popular products are
added for everyone: an approximate index scans the clusters near the user, and misses popular
products elsewhere.

:class:`ProductIndex` searches either exactly (:func:`blocked_topk`: blocks of products with
a running top-k, memory bounded) or approximately with an inverted-file index (faiss
``IndexIVFFlat``: the products are clustered once; a query scans the ``probes`` nearest
clusters). Pure tensor code, no I/O.

With ``method="pca"`` there is no index: :class:`PrincipalScan` keeps the product table in
its top ``components`` principal directions, so one pass scores the whole catalog at a
fraction of the width (a two-member ensemble's 256 columns in 64, a quarter of the memory read
per request). That one pass gives the scale and the candidates at once; the candidates, and
the products at the top and bottom of the approximate scale, are then scored exactly.

Shapes: ``P`` products, ``b`` users, ``dim`` the embedding size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from kgrec.errors import ConfigError
from kgrec.models.history import Histories
from kgrec.rank.engine import SortedValues, minmax_affine, top_n
from kgrec.rank.params import Weights

RetrievalMethod = Literal["exact", "ivf", "pca"]
RETRIEVAL_METHODS: tuple[str, ...] = ("exact", "ivf", "pca")

BLOCK_SIZE = 65_536
"""Products scored at once by :func:`blocked_topk`: a ``[b, BLOCK_SIZE]`` block is 64 MiB at b = 256."""
TRAINING_POINTS_PER_LIST = 64
"""Products sampled per inverted list to cluster the catalog (faiss asks for at least 39)."""
SCAN_SCORES = 1 << 24
"""Approximate scores a :class:`PrincipalScan` pass holds at once (``[rows, P]``, 64 MiB)."""
LOWEST_BLOCK, LOWEST_BLOCKS = 16, 8
"""A user's lowest score is taken exactly over the 8 blocks of 16 products with the lowest approximate minimum."""


@torch.no_grad()
def blocked_topk(
    queries: Tensor, keys: Tensor, k: int, lowest: int = 0, block_size: int = BLOCK_SIZE
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Exact top-``k`` of ``queries @ keys.T`` per row, ``block_size`` keys at a time.

    Memory is ``[b, block_size + k]`` whatever ``P``; the result equals ``torch.topk`` of the
    dense product (ties aside).

    Args:
        queries: ``[b, dim]``.
        keys: ``[P, dim]``.
        k: the best scores kept per row (capped at ``P``).
        lowest: also keep the ``lowest`` smallest scores per row (0: none).

    Returns:
        ``(values [b, k], index [b, k], low_values [b, lowest], low_index [b, lowest])``, the
        best first and the lowest first.
    """
    queries, keys = queries.float(), keys.float()
    b, num_keys = queries.shape[0], keys.shape[0]
    k, lowest = min(k, num_keys), min(lowest, num_keys)
    values = torch.full((b, 0), -torch.inf)
    index = torch.zeros((b, 0), dtype=torch.long)
    low_values = torch.full((b, 0), torch.inf)
    low_index = torch.zeros((b, 0), dtype=torch.long)
    for start in range(0, num_keys, block_size):
        block = queries @ keys[start : start + block_size].T  # [b, block]
        columns = torch.arange(start, start + block.shape[1]).expand(b, -1)
        values, index = _merge_topk(values, index, block, columns, k, largest=True)
        if lowest:
            low_values, low_index = _merge_topk(low_values, low_index, block, columns, lowest, largest=False)
    return values, index, low_values, low_index


def best_blocks(values: Tensor, count: int, block: int = 16, largest: bool = True) -> tuple[Tensor, Tensor]:
    """The ``count`` blocks of ``block`` consecutive values per row with the highest (lowest)
    maximum (minimum): ``(padded [rows, n'], members [rows, count · block])``, the row padded
    with ``∓inf`` to whole blocks and the positions of every member of those blocks in it.

    They hold the ``count`` highest (lowest) values of the row: a block holding one of them has
    an end no worse than the ``count``-th value, and at most ``count - 1`` blocks beat it."""
    rows, n = values.shape
    fill = -torch.inf if largest else torch.inf
    padded = F.pad(values, (0, -n % block), value=fill).view(rows, -1, block)
    ends = padded.amax(dim=2) if largest else padded.amin(dim=2)
    blocks = ends.topk(min(count, ends.shape[1]), dim=1, largest=largest).indices
    return padded.view(rows, -1), (blocks.unsqueeze(2) * block + torch.arange(block)).reshape(rows, -1)


def _merge_topk(values: Tensor, index: Tensor, block: Tensor, columns: Tensor, k: int, largest: bool):
    """The running top-``k`` of ``(values, index)`` and a new block of scores."""
    values, index = torch.cat([values, block], dim=1), torch.cat([index, columns], dim=1)
    top = values.topk(min(k, values.shape[1]), dim=1, largest=largest, sorted=True)
    return top.values, index.gather(1, top.indices)


class ProductIndex:
    """The products' vectors prepared once for maximum-inner-product search.

    Args:
        embedding: ``[P, dim]`` one vector per product (for a :class:`Retriever`, the product
            embedding with popularity as one more column).
        method: ``"exact"`` (:func:`blocked_topk`) or ``"ivf"`` (faiss ``IndexIVFFlat`` with
            ``round(sqrt(P))`` lists; needs the ``faiss-cpu`` package).
        probes: with ``"ivf"``, the lists a query scans (more: higher recall, slower).
    """

    def __init__(self, embedding: Tensor, method: RetrievalMethod = "exact", probes: int = 64) -> None:
        if method not in ("exact", "ivf"):
            raise ConfigError(f"rank.retrieval must be one of {', '.join(RETRIEVAL_METHODS)}; found {method!r}.")
        if probes < 1:
            raise ConfigError(f"rank.retrieval_probes must be at least 1; found {probes}.")
        self.method = method
        self.probes = probes
        self.num_products = embedding.shape[0]
        embedding = embedding.float().contiguous()
        # faiss keeps its own copy of the vectors: the exact search alone needs them here.
        self.embedding = embedding if method == "exact" else None
        self._ivf = self._build_ivf(embedding) if method == "ivf" else None

    def _build_ivf(self, embedding: Tensor):
        faiss = _import_faiss()
        num_products, dim = embedding.shape
        # About sqrt(P) lists of sqrt(P) products; no more lists than the sample can train.
        num_lists = max(1, min(round(math.sqrt(num_products)), num_products // 39))
        generator = torch.Generator().manual_seed(0)
        sample = torch.randperm(num_products, generator=generator)[: TRAINING_POINTS_PER_LIST * num_lists]
        with _faiss_threads(faiss):
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, num_lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = 0
            index.train(embedding[sample.sort().values].numpy())
            index.add(embedding.numpy())
        return index

    @torch.no_grad()
    def search(
        self, queries: Tensor, k: int, lowest: int = 0, probes: int | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The ``k`` highest and the ``lowest`` lowest inner products of each query.

        Args:
            queries: ``[b, dim]``.
            probes: with ``"ivf"``, the lists scanned (default: the index's ``probes``).

        Returns:
            ``(values [b, k], index [b, k], low_values [b, lowest], low_index [b, lowest])``,
            best first and lowest first; padded with ``-1`` and ``∓inf`` where the index
            finds fewer (``"ivf"`` returns only products of the lists it scans).
        """
        queries = queries.float().contiguous()
        if self.embedding is not None:
            return blocked_topk(queries, self.embedding, k, lowest)
        probes = self.probes if probes is None else probes
        values, index = self._ivf_search(queries, k, probes)
        low_values, low_index = self._ivf_search(-queries, lowest, probes)
        return values, index, -low_values, low_index

    def _ivf_search(self, queries: Tensor, k: int, probes: int) -> tuple[Tensor, Tensor]:
        b = queries.shape[0]
        k = min(k, self.num_products)
        if k == 0 or b == 0:
            return torch.full((b, k), -torch.inf), torch.full((b, k), -1, dtype=torch.long)
        faiss = _import_faiss()
        with _faiss_threads(faiss):
            values, index = self._ivf.search(queries.numpy(), k, params=faiss.SearchParametersIVF(nprobe=probes))
        index = torch.from_numpy(index)
        values = torch.from_numpy(values).masked_fill(index < 0, -torch.inf)
        return values, index


class PrincipalScan:
    """The product table projected onto its top ``components`` principal directions.

    The directions are the top eigenvectors of ``EᵀE`` (not centred: inner products, not
    distances, are kept), so ``(u·B)·(e·B)`` approximates ``u·e``: the part of either vector
    outside the kept directions is all that is lost. Trained tables put most of their energy in
    a few directions (a two-member 128-d Office model: 78% in 64 of 256, 98% in 128).

    Args:
        embedding: ``[P, dim]`` the product vectors.
        components: the directions kept (at most ``dim``).
    """

    def __init__(self, embedding: Tensor, components: int) -> None:
        if components < 1:
            raise ConfigError(f"rank.pca_components must be at least 1; found {components}.")
        embedding = embedding.float()
        components = min(components, embedding.shape[1])
        gram = torch.zeros(embedding.shape[1], embedding.shape[1], dtype=torch.float64)
        for block in embedding.split(BLOCK_SIZE):  # EᵀE a block at a time: no float64 copy of the table
            gram += (block.T @ block).double()
        directions = torch.linalg.eigh(gram).eigenvectors  # ascending eigenvalues
        self.basis = directions[:, -components:].flip(1).float().contiguous()  # [dim, components]
        # [components, P]: a query times it reads the projected table row by row.
        self.keys_by_column = (embedding @ self.basis).T.contiguous()

    @torch.no_grad()
    def scores(self, queries: Tensor) -> Tensor:
        """``[b, P]`` approximate inner products of ``queries [b, dim]`` with every product."""
        return (queries.float() @ self.basis) @ self.keys_by_column


def unique_per_row(index: Tensor) -> Tensor:
    """``[b, C]`` candidate products in product order (ties then break as in the full pass), each
    product once per row: a repeat becomes ``-1``, an empty slot."""
    index = index.sort(dim=1).values
    repeat = torch.zeros_like(index, dtype=torch.bool)
    repeat[:, 1:] = index[:, 1:] == index[:, :-1]
    return index.masked_fill(repeat, -1)


@dataclass(frozen=True)
class Candidates:
    """Each user's candidate products, for :func:`kgrec.rank.ranking.rank` to rank instead of the catalog.

    Attributes:
        product_index: ``[b, C]`` long, each product at most once per row; ``-1`` = an empty slot.
        relevance: ``[b, C]`` float, the recommender's score of each candidate (``-inf`` at empty slots).
        lowest, highest: ``[b]`` float, the user's lowest and highest score over the catalog's
            products they have not seen (``inf`` and ``-inf``: unknown); min-max normalisation
            uses them, so relevance is scaled over the catalog as without retrieval.
    """

    product_index: Tensor
    relevance: Tensor
    lowest: Tensor
    highest: Tensor

    def __len__(self) -> int:
        return self.product_index.shape[0]


class Retriever:
    """The candidate stage: per user the ``num_candidates`` best products by
    ``α·relevance + β·popularity``, both min-max normalised over the catalog (module docstring),
    and the ``num_candidates`` most popular products.

    Args:
        product_embedding: ``[P, dim]`` the embeddings the recommender scores with.
        popularity: the popularity ranking uses, sorted (``Catalog.sorted_popularity``).
        num_candidates: ``C``.
        method, probes: the :class:`ProductIndex` over ``[embedding, popularity]``; or
            ``method="pca"``: one :class:`PrincipalScan` pass of ``components`` columns.
    """

    def __init__(
        self,
        product_embedding: Tensor,
        popularity: SortedValues,
        num_candidates: int,
        method: RetrievalMethod = "exact",
        probes: int = 64,
        components: int = 64,
    ) -> None:
        if method not in RETRIEVAL_METHODS:
            raise ConfigError(f"rank.retrieval must be one of {', '.join(RETRIEVAL_METHODS)}; found {method!r}.")
        if num_candidates < 1:
            raise ConfigError(f"rank.retrieval_candidates must be at least 1; found {num_candidates}.")
        if popularity.values.numel() != product_embedding.shape[0]:
            raise ValueError(
                f"popularity has {popularity.values.numel()} products; product_embedding has {product_embedding.shape[0]}."
            )
        self.embedding = product_embedding.float()
        self.popularity = popularity
        self.num_candidates = num_candidates
        finite = torch.nan_to_num(popularity.values.float(), nan=0.0, posinf=0.0, neginf=0.0)
        self.finite_popularity = finite
        self.scan = self.index = None
        if method == "pca":
            self.scan = PrincipalScan(self.embedding, components)
            return
        # Popularity as one more key column, scaled to [0, 1] so that it does not swamp the clustering.
        self.popularity_unit = float(finite.abs().max()) if finite.numel() and float(finite.abs().max()) > 0 else 1.0
        keys = torch.cat([self.embedding, (finite / self.popularity_unit).unsqueeze(1)], dim=1)
        self.index = ProductIndex(keys, method, probes)
        # An index scans the lists near the user; the most popular products are added for everyone.
        self.popular = finite.topk(min(num_candidates, finite.numel())).indices

    @property
    def num_products(self) -> int:
        return self.embedding.shape[0]

    @torch.no_grad()
    def candidates(self, user_vectors: Tensor, histories: Histories | None, weights: Weights) -> Candidates:
        """The candidates of ``b`` users from their ``[b, dim]`` vectors, for ``weights``.

        ``histories`` (one row per user): their products are skipped in the scale and make the
        search fetch more, since they may fill part of a user's best ``C`` (up to ``C`` more, as
        many as the longest history of the batch); ranking itself excludes them.
        """
        b = user_vectors.shape[0]
        user_vectors = user_vectors.float()
        if histories is None:
            seen_row = seen = torch.zeros(0, dtype=torch.long)
        else:
            seen_row, seen = histories.row_of_entry, histories.product_index
        pop_low, pop_high = self.popularity.extremes(seen_row, seen, b)
        pop_scale = minmax_affine(pop_low, pop_high)[0]
        if self.scan is not None:
            alpha, beta, _ = weights.as_tuple()
            return self._scan(user_vectors, seen_row, seen, alpha, beta * pop_scale)
        index, lowest, high = self._search(user_vectors, histories, seen_row, seen, weights, pop_scale)
        # 3. The most popular products too: an approximate index scans the lists near the user
        # and misses popular products far from them, which popularity and MMR's novelty favour.
        index = torch.cat([index, self.popular.expand(b, -1)], dim=1)
        index = unique_per_row(index)
        relevance = torch.bmm(self.embedding[index.clamp(min=0)], user_vectors.unsqueeze(2)).squeeze(2)
        return Candidates(index, relevance.masked_fill(index < 0, -torch.inf), lowest, high)

    def _search(
        self, user_vectors: Tensor, histories: Histories | None, seen_row: Tensor, seen: Tensor, weights: Weights,
        pop_scale: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Two index searches: ``(index [b, C + extra], lowest [b], highest [b])``."""
        b = user_vectors.shape[0]
        extra = min(int(histories.lengths.max()) if histories is not None and b else 0, self.num_candidates)
        seen_key = seen_row * self.num_products + seen
        rows = torch.arange(b).unsqueeze(1)

        def unseen(values: Tensor, index: Tensor, fill: float) -> Tensor:
            return values.masked_fill(torch.isin(rows * self.num_products + index, seen_key) | (index < 0), fill)

        # 1. Each user's scale: the highest and lowest relevance over the products they have not seen.
        plain = torch.cat([user_vectors, user_vectors.new_zeros(b, 1)], dim=1)
        high_values, high_index, low_values, low_index = self.index.search(plain, 1 + extra, 1 + extra)
        high = unseen(high_values, high_index, -torch.inf).amax(dim=1)
        lowest = unseen(low_values, low_index, torch.inf).amin(dim=1)
        rel_scale = minmax_affine(lowest, high)[0]
        # 2. The best by alpha·relevance + beta·popularity, as the ranking orders them.
        alpha, beta, _ = weights.as_tuple()
        query = torch.cat([alpha * rel_scale[:, None] * user_vectors, (beta * pop_scale * self.popularity_unit)[:, None]], dim=1)
        _, index, _, _ = self.index.search(query, self.num_candidates + extra)
        return index, lowest, high

    def _scan(self, user_vectors: Tensor, seen_row: Tensor, seen: Tensor, alpha: float, pop_weight: Tensor) -> Candidates:
        """One :class:`PrincipalScan` pass, ``SCAN_SCORES // P`` users at a time: each user's ``C``
        best unseen products by the ranking's own sum on the approximate scale, scored exactly
        (``-1`` where a user has fewer than ``C`` others). The pass scans every product, so
        popular products compete as in the full pass and none is added.

        The scale the ranking gets is exact at the top (the best of the candidates and of the
        approximately best product, exactly scored) and at the bottom the exact lowest over the
        products nearest the approximate lowest (:meth:`_exact_lowest`): what the full pass
        finds unless the approximation moves a product past about a hundred others."""
        b, num_products = user_vectors.shape[0], self.num_products
        take = min(self.num_candidates, num_products)
        rows_per_pass = max(1, SCAN_SCORES // max(num_products, 1))
        parts: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []
        for start in range(0, b, rows_per_pass):
            users = user_vectors[start : start + rows_per_pass]
            mine = (seen_row >= start) & (seen_row < start + users.shape[0])
            row, column = seen_row[mine] - start, seen[mine]
            scores = self.scan.scores(users)  # [rows, P]
            scores[row, column] = torch.inf
            lowest = self._exact_lowest(users, scores)
            low = scores.amin(dim=1)
            scores[row, column] = -torch.inf
            high = scores.max(dim=1)
            rel_scale = minmax_affine(low, high.values)[0]
            # The candidates: α·rel + β·pop on the approximate scale, less a per-user constant.
            base = scores.mul_((alpha * rel_scale)[:, None])
            base.addcmul_(pop_weight[start : start + users.shape[0], None], self.finite_popularity)
            base[row, column] = -torch.inf
            best_values, best_index = top_n(base, take)
            # Columns in product order (ties then break as in the full pass).
            index = best_index.masked_fill(~torch.isfinite(best_values), -1).sort(dim=1).values
            scored = torch.cat([index.clamp(min=0), high.indices[:, None]], dim=1)
            exact = torch.bmm(self.embedding[scored], users.unsqueeze(2)).squeeze(2)
            relevance = exact[:, :-1].masked_fill(index < 0, -torch.inf)
            highest = torch.where(torch.isfinite(high.values), torch.maximum(relevance.amax(dim=1), exact[:, -1]), -torch.inf)
            parts.append((index, relevance, lowest, highest))
        if not parts:
            empty = torch.zeros(0)
            return Candidates(torch.zeros(0, take, dtype=torch.long), torch.zeros(0, take), empty, empty)
        return Candidates(*(torch.cat(column) for column in zip(*parts)))

    def _exact_lowest(self, users: Tensor, scores: Tensor) -> Tensor:
        """``[rows]`` the exact lowest score over the products whose approximate ``scores [rows, P]``
        are finite (``inf`` for a row without any): over every product of the ``LOWEST_BLOCKS``
        blocks of ``LOWEST_BLOCK`` products with the lowest approximate minimum
        (:func:`best_blocks`), which hold the ``LOWEST_BLOCKS`` approximately lowest products."""
        num_products = scores.shape[1]
        padded, product = best_blocks(scores, LOWEST_BLOCKS, LOWEST_BLOCK, largest=False)
        known = torch.isfinite(padded.gather(1, product))  # seen products and padding are inf
        product = product.clamp(max=num_products - 1)
        exact = torch.bmm(self.embedding[product], users.unsqueeze(2)).squeeze(2)
        return exact.masked_fill(~known, torch.inf).amin(dim=1)


def _import_faiss():
    try:
        import faiss
    except ImportError as e:
        raise ConfigError(
            "rank.retrieval='ivf' needs the faiss-cpu package, which is not installed. "
            "Install it (pip install faiss-cpu, or scripts/install.sh), or set rank.retrieval=exact."
        ) from e
    return faiss


@contextmanager
def _faiss_threads(faiss) -> Iterator[None]:
    """faiss runs with as many OpenMP threads as torch has at the time of the call (one for a request)."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(torch.get_num_threads())
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)
