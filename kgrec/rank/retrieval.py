"""Candidate retrieval: each user's best products by inner product, without a ``[b, P]`` pass.

The recommender scores a product by the inner product of the user's vector with the
product's embedding (:meth:`kgrec.train.recommender.Recommender.score`). On a large catalog
(``rank.exact_max_products``) ranking does not score every product: a :class:`Retriever`
finds each user's ``C`` best products (``rank.retrieval_candidates``) in a
:class:`ProductIndex`, adds the ``C`` most popular products (so the popularity part still
finds its winners), and :func:`kgrec.rank.ranking.rank` ranks only these
(:class:`Candidates`). Min-max normalisation stays over the whole catalog: the index also
finds each user's lowest score.

:class:`ProductIndex` searches either exactly (:func:`blocked_topk`: blocks of products with
a running top-k, memory bounded) or approximately with an inverted-file index (faiss
``IndexIVFFlat``: the products are clustered once; a query scans the ``probes`` nearest
clusters). Pure tensor code, no I/O.

Shapes: ``P`` products, ``b`` users, ``dim`` the embedding size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from kgrec.errors import ConfigError
from kgrec.models.history import Histories

RetrievalMethod = Literal["exact", "ivf"]
RETRIEVAL_METHODS: tuple[str, ...] = ("exact", "ivf")

BLOCK_SIZE = 65_536
"""Products scored at once by :func:`blocked_topk`: a ``[b, BLOCK_SIZE]`` block is 64 MiB at b = 256."""
TRAINING_POINTS_PER_LIST = 64
"""Products sampled per inverted list to cluster the catalog (faiss asks for at least 39)."""
LOW_END_PROBE_SHARE = 4
"""The search for a user's lowest score scans ``probes / 4`` lists: it only sets where 0 lies
on the min-max scale, where a small error moves every score of the user alike."""


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


def _merge_topk(values: Tensor, index: Tensor, block: Tensor, columns: Tensor, k: int, largest: bool):
    """The running top-``k`` of ``(values, index)`` and a new block of scores."""
    values, index = torch.cat([values, block], dim=1), torch.cat([index, columns], dim=1)
    top = values.topk(min(k, values.shape[1]), dim=1, largest=largest, sorted=True)
    return top.values, index.gather(1, top.indices)


class ProductIndex:
    """The products' vectors prepared once for maximum-inner-product search.

    Args:
        embedding: ``[P, dim]`` the product embeddings the recommender scores with.
        method: ``"exact"`` (:func:`blocked_topk`) or ``"ivf"`` (faiss ``IndexIVFFlat`` with
            ``round(sqrt(P))`` lists; needs the ``faiss-cpu`` package).
        probes: with ``"ivf"``, the lists a query scans (more: higher recall, slower).
    """

    def __init__(self, embedding: Tensor, method: RetrievalMethod = "exact", probes: int = 32) -> None:
        if method not in RETRIEVAL_METHODS:
            raise ConfigError(f"rank.retrieval must be one of {', '.join(RETRIEVAL_METHODS)}; found {method!r}.")
        if probes < 1:
            raise ConfigError(f"rank.retrieval_probes must be at least 1; found {probes}.")
        self.embedding = embedding.float().contiguous()
        self.method = method
        self.probes = probes
        self._ivf = self._build_ivf() if method == "ivf" else None

    @property
    def num_products(self) -> int:
        return self.embedding.shape[0]

    def _build_ivf(self):
        faiss = _import_faiss()
        num_products, dim = self.embedding.shape
        # About sqrt(P) lists of sqrt(P) products; no more lists than the sample can train.
        num_lists = max(1, min(round(math.sqrt(num_products)), num_products // 39))
        generator = torch.Generator().manual_seed(0)
        sample = torch.randperm(num_products, generator=generator)[: TRAINING_POINTS_PER_LIST * num_lists]
        with _faiss_threads(faiss):
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, num_lists, faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = 0
            index.train(self.embedding[sample.sort().values].numpy())
            index.add(self.embedding.numpy())
        return index

    @torch.no_grad()
    def search(self, queries: Tensor, k: int, lowest: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The ``k`` highest and the ``lowest`` lowest inner products of each query.

        Args:
            queries: ``[b, dim]``.

        Returns:
            ``(values [b, k], index [b, k], low_values [b, lowest], low_index [b, lowest])``,
            best first and lowest first; padded with ``-1`` and ``∓inf`` where the index
            finds fewer (``"ivf"`` returns only products of the lists it scans).
        """
        queries = queries.float().contiguous()
        if self._ivf is None:
            return blocked_topk(queries, self.embedding, k, lowest)
        values, index = self._ivf_search(queries, k, self.probes)
        low_values, low_index = self._ivf_search(-queries, lowest, max(1, self.probes // LOW_END_PROBE_SHARE))
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


@dataclass(frozen=True)
class Candidates:
    """Each user's candidate products, for :func:`kgrec.rank.ranking.rank` to rank instead of the catalog.

    Attributes:
        product_index: ``[b, C]`` long, each product at most once per row; ``-1`` = an empty slot.
        relevance: ``[b, C]`` float, the recommender's score of each candidate (``-inf`` at empty slots).
        lowest: ``[b]`` float, the user's lowest score over the catalog's products they have not
            seen (``inf``: unknown); min-max normalisation uses it so that relevance is scaled
            over the catalog, as without retrieval.
    """

    product_index: Tensor
    relevance: Tensor
    lowest: Tensor

    def __len__(self) -> int:
        return self.product_index.shape[0]


class Retriever:
    """The candidate stage: per user the ``num_candidates`` best products by inner product,
    plus the ``num_candidates`` most popular products (the same for everyone).

    Args:
        index: the products' :class:`ProductIndex`.
        popularity: ``[P]`` the popularity ranking uses (non-finite counts as none).
        num_candidates: ``C``.
    """

    def __init__(self, index: ProductIndex, popularity: Tensor, num_candidates: int) -> None:
        if num_candidates < 1:
            raise ConfigError(f"rank.retrieval_candidates must be at least 1; found {num_candidates}.")
        if popularity.numel() != index.num_products:
            raise ValueError(f"popularity has {popularity.numel()} products; the index has {index.num_products}.")
        self.index = index
        self.num_candidates = num_candidates
        finite = torch.nan_to_num(popularity.float(), nan=-torch.inf, posinf=-torch.inf)
        self.popular = finite.topk(min(num_candidates, finite.numel())).indices.sort().values

    @torch.no_grad()
    def candidates(self, user_vectors: Tensor, histories: Histories | None = None) -> Candidates:
        """The candidates of ``b`` users from their ``[b, dim]`` vectors.

        ``histories`` (one row per user) only make the search fetch more: a user's seen products
        may fill part of their best ``C``, so up to ``C`` more are fetched (as many as the longest
        history of the batch); ranking itself excludes the seen products.
        """
        b = user_vectors.shape[0]
        seen = histories.product_index if histories is not None else torch.zeros(0, dtype=torch.long)
        seen_row = histories.row_of_entry if histories is not None else torch.zeros(0, dtype=torch.long)
        longest = int(histories.lengths.max()) if histories is not None and b else 0
        extra = min(longest, self.num_candidates)
        values, index, low_values, low_index = self.index.search(user_vectors, self.num_candidates + extra, 1 + extra)
        # The popular products' scores are computed exactly: they are few.
        popular_values = user_vectors.float() @ self.index.embedding[self.popular].T  # [b, m]
        product_index = torch.cat([index, self.popular.expand(b, -1)], dim=1)
        relevance = torch.cat([values, popular_values], dim=1)
        # One slot per product: sort each row by product and empty the repeats.
        product_index, order = product_index.sort(dim=1)
        relevance = relevance.gather(1, order)
        repeat = torch.zeros_like(product_index, dtype=torch.bool)
        repeat[:, 1:] = product_index[:, 1:] == product_index[:, :-1]
        empty = repeat | (product_index < 0)
        product_index = product_index.masked_fill(empty, -1)
        relevance = relevance.masked_fill(empty, -torch.inf)
        # The lowest score among products the user has not seen (inf when all found are seen).
        num_products = self.index.num_products
        low_seen = torch.isin(torch.arange(b).unsqueeze(1) * num_products + low_index, seen_row * num_products + seen)
        lowest = low_values.masked_fill(low_seen | (low_index < 0), torch.inf).amin(dim=1)
        return Candidates(product_index, relevance, lowest)


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
