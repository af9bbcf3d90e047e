"""Co-interactions: how strongly the graph's ``product <- user -> product`` paths tie each
product to a user's products.

``sim(i, j) = |U_i ∩ U_j| / (sqrt(|U_i|) sqrt(|U_j|) + shrink)`` over the training pairs
(the cosine of two products' user sets), each product ``j`` keeping its ``neighbours`` most
similar products ``N(j)``. A user's score of ``j`` is ``Σ_{i ∈ history ∩ N(j)} sim(i, j)``.

A popular product sits in the ``N(j)`` of a large share of the catalog, so the products one
event reaches grow with the catalog. ``reach`` cuts that side too: each product passes its
weight on to at most ``reach`` products, its strongest links, and a request's work is at most
its history length × ``reach`` entries, whatever the catalog's size.

ItemKNN is this score on its own. kgrec adds it, scaled to the user's best product and
weighted by ``rank.co_interaction_weight``, to the cosine of its vectors: the vectors place
rare products well by their text and graph, and the path counts keep exact pair statistics
a 64-d space blurs (docs/MODEL.md, "Co-interaction paths in the score").
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from kgrec.models.history import Histories


def item_similarity(user_items: sp.csr_matrix, neighbours: int, shrink: float = 0.0) -> sp.csr_matrix:
    """Top-``neighbours`` cosine similarities per item, ``[num_products, num_products]`` CSR float32.

    Row ``i`` holds item ``i``'s most similar other items (no self-similarity).
    """
    binary = user_items.copy()
    binary.data[:] = 1.0
    co_counts = (binary.T @ binary).tocoo()  # [P, P]: users who have both items
    norms = np.sqrt(np.asarray(binary.sum(axis=0)).ravel())
    off_diagonal = co_counts.row != co_counts.col
    row, col = co_counts.row[off_diagonal], co_counts.col[off_diagonal]
    value = co_counts.data[off_diagonal] / (norms[row] * norms[col] + shrink)
    num_products = user_items.shape[1]
    return top_per_row(sp.coo_matrix((value, (row, col)), shape=(num_products, num_products)), neighbours).astype(np.float32)


def top_per_row(matrix: sp.spmatrix, limit: int) -> sp.csr_matrix:
    """``matrix`` as CSR with each row cut to its ``limit`` largest entries."""
    coo = matrix.tocoo()
    order = np.lexsort((-coo.data, coo.row))  # by row, largest first
    row, col, value = coo.row[order], coo.col[order], coo.data[order]
    rank = np.arange(row.size) - np.searchsorted(row, np.arange(matrix.shape[0]))[row]
    keep = rank < limit
    return sp.csr_matrix((value[keep], (row[keep], col[keep])), shape=matrix.shape)


class CoInteractions:
    """The co-interaction scores of a fitted product-product similarity.

    Args:
        similarity: ``[P, P]`` CSR whose row ``i`` holds the products ``j`` with ``i ∈ N(j)`` and
            their ``sim(i, j)`` (the transpose of :func:`item_similarity`), so a user's scores
            are the sum of their products' rows.
    """

    def __init__(self, similarity: sp.csr_matrix) -> None:
        self.similarity = similarity.tocsr()

    @classmethod
    def fit(
        cls, user_items: sp.csr_matrix, neighbours: int, shrink: float = 0.0, reach: int | None = None
    ) -> CoInteractions:
        """From ``[num_users, num_products]`` training pairs. ``reach``: the most products each
        product passes weight on to (its strongest links); None keeps every ``N(j)`` it is in."""
        similarity = item_similarity(user_items, neighbours, shrink).T
        return cls(similarity.tocsr() if reach is None else top_per_row(similarity, reach))

    @property
    def num_products(self) -> int:
        return int(self.similarity.shape[0])

    def _summed(self, histories: Histories) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(row, product, value)``: each user's summed similarities, sorted by (row, product).

        The history products' rows are gathered and their overlaps summed, so the work grows
        with the entries gathered, not with the catalog (scipy's sparse product clears
        catalog-long work arrays on every call). Products the similarity does not know (added
        after training) are left out of the history.
        """
        product = histories.product_index.numpy()
        known = product < self.num_products
        product, user = product[known], histories.row_of_entry.numpy()[known]
        indptr = self.similarity.indptr
        start, length = indptr[product], indptr[product + 1] - indptr[product]
        end = np.cumsum(length)
        position = np.repeat(start - (end - length), length) + np.arange(int(end[-1]) if end.size else 0)
        key = np.repeat(user.astype(np.int64), length) * self.num_products + self.similarity.indices[position]
        order = np.argsort(key, kind="stable")
        key, value = key[order], self.similarity.data[position][order]
        first = np.flatnonzero(np.diff(key, prepend=-1))  # each (row, product)'s first entry
        value = np.add.reduceat(value, first) if key.size else value
        return key[first] // self.num_products, key[first] % self.num_products, value

    def raw(self, histories: Histories) -> sp.csr_matrix:
        """``[b, P]`` sparse: each user's summed similarities."""
        row, product, value = self._summed(histories)
        return sp.csr_matrix((value, (row, product)), shape=(len(histories), self.num_products))

    def entries(self, histories: Histories) -> tuple[Tensor, Tensor, Tensor]:
        """The non-zero scores as ``(row, product, value)`` ``[nnz]`` tensors, each user's values
        divided by their largest (so the best product scores 1): what a ranking adds to its dense
        scores in place, without a second ``[b, P]`` table."""
        row, product, value = self._summed(histories)
        first = np.flatnonzero(np.diff(row, prepend=-1))  # sorted by row: each row's first entry
        if row.size:
            scale = np.maximum.reduceat(value, first)
            value = value / np.maximum(np.repeat(scale, np.diff(first, append=row.size)), 1e-12)
        return torch.from_numpy(row), torch.from_numpy(product), torch.from_numpy(value)

    def scores(self, histories: Histories, num_products: int | None = None) -> Tensor:
        """``[b, num_products]`` dense float scores (:meth:`entries`; a user without co-interactions
        scores 0 everywhere); columns past the fitted products (new ones) are 0."""
        row, product, value = self.entries(histories)
        out = torch.zeros(len(histories), self.num_products if num_products is None else num_products)
        out[row, product] = value
        return out

    def scores_at(self, entries: tuple[Tensor, Tensor, Tensor], index: Tensor) -> Tensor:
        """``[b, C]`` the scaled scores of :meth:`entries` at each user's candidate products
        ``index`` (``-1`` or a product past the fitted ones: 0), without a dense ``[b, P]`` row."""
        row, product, value = entries
        if not row.numel():
            return torch.zeros(index.shape)
        # Each (user, product) entry as one sorted key, looked up for every candidate.
        width = self.num_products
        keys, order = torch.sort(row * width + product)
        known = (index >= 0) & (index < width)
        wanted = torch.arange(index.shape[0]).unsqueeze(1) * width + index.clamp(0, width - 1)
        position = torch.searchsorted(keys, wanted).clamp(max=keys.numel() - 1)
        hit = known & (keys[position] == wanted)
        return torch.where(hit, value[order][position], torch.zeros(()))

    def top(self, entries: tuple[Tensor, Tensor, Tensor], histories: Histories, limit: int) -> Tensor:
        """``[b, limit]`` long: each user's ``limit`` products with the highest scores in
        :meth:`entries`, best first, leaving out the user's own products (``-1`` past the
        products they have any co-interaction with)."""
        row, product, value = entries
        width = self.num_products + 1
        own = torch.isin(row * width + product, histories.row_of_entry * width + histories.product_index)
        row, product, value = row[~own], product[~own], value[~own]
        order = torch.from_numpy(np.lexsort((-value.numpy(), row.numpy())))  # by user, best first
        row, product = row[order], product[order]
        start = torch.searchsorted(row, torch.arange(len(histories)))
        rank = torch.arange(row.numel()) - start[row]
        keep = rank < limit
        out = torch.full((len(histories), limit), -1, dtype=torch.long)
        out[row[keep], rank[keep]] = product[keep]
        return out

    def state(self) -> dict[str, Tensor]:
        """Tensors to save: the CSR arrays."""
        s = self.similarity
        return {
            "indptr": torch.from_numpy(s.indptr.astype(np.int64)),
            "indices": torch.from_numpy(s.indices.astype(np.int64)),
            "data": torch.from_numpy(s.data.astype(np.float32)),
        }

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> CoInteractions:
        indptr = state["indptr"].numpy()
        size = indptr.size - 1
        return cls(sp.csr_matrix((state["data"].numpy(), state["indices"].numpy(), indptr), shape=(size, size)))
