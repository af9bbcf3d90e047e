"""A user as the products of their events, and the rule that turns those into a vector.

:class:`Histories` is the one representation of users' current events, for one user
(a served request) or many (a batch, an evaluation): each product once, at its latest
event with its heaviest weight, oldest first. :func:`history_embedding` is the one
rule that turns the latest ``history_length`` of them into a vector: the mean of their
embeddings, the product ``k`` steps back weighted ``decay ** k`` times its event weight.

Pure tensor code: it needs only torch, so ranking does not import PyTorch Geometric.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Histories:
    """Users' products in CSR form: row ``i`` holds ``product_index[indptr[i]:indptr[i + 1]]``.

    Attributes:
        indptr: ``[b + 1]`` long.
        product_index: ``[nnz]`` long, each user's products oldest first, each once.
        weight: ``[nnz]`` float, the heaviest event weight of the (user, product) pair.
        user_index: ``[b]`` long, the user's row in a model's user embeddings (``-1``: a
            user the model was not trained on).
        timestamp: ``[nnz]`` long, the pair's latest event time (epoch seconds).
    """

    indptr: Tensor
    product_index: Tensor
    weight: Tensor
    user_index: Tensor
    timestamp: Tensor

    def __len__(self) -> int:
        return int(self.indptr.numel() - 1)

    @property
    def lengths(self) -> Tensor:
        """``[b]`` products per user."""
        return self.indptr[1:] - self.indptr[:-1]

    @property
    def row_of_entry(self) -> Tensor:
        """``[nnz]`` the row each entry belongs to."""
        return torch.repeat_interleave(torch.arange(len(self)), self.lengths)

    @classmethod
    def from_events(
        cls,
        row: Tensor,
        product_index: Tensor,
        timestamp: Tensor,
        weight: Tensor,
        num_rows: int,
        user_index: Tensor | None = None,
    ) -> Histories:
        """Aggregate events into histories: one entry per (row, product), at its latest
        event with its heaviest weight, ordered by ``(timestamp, product_index)``.

        Args:
            row, product_index, timestamp, weight: ``[n]`` events (any order, repeats allowed).
            num_rows: ``b``; rows without events are empty.
            user_index: ``[b]`` (default ``arange(b)``).
        """
        row, product_index = row.long().reshape(-1), product_index.long().reshape(-1)
        timestamp, weight = timestamp.long().reshape(-1), weight.float().reshape(-1)
        if row.numel():
            # Distinct (row, product) pairs; per pair the latest timestamp and heaviest weight.
            key = row * (int(product_index.max()) + 1) + product_index
            unique, inverse = torch.unique(key, return_inverse=True)
            latest = torch.full((unique.numel(),), torch.iinfo(torch.long).min).scatter_reduce(
                0, inverse, timestamp, reduce="amax"
            )
            heaviest = torch.full((unique.numel(),), -torch.inf).scatter_reduce(0, inverse, weight, reduce="amax")
            first = torch.full((unique.numel(),), row.numel(), dtype=torch.long).scatter_reduce(
                0, inverse, torch.arange(row.numel()), reduce="amin"
            )
            pair_row, pair_product = row[first], product_index[first]
            order = torch.from_numpy(np.lexsort((pair_product.numpy(), latest.numpy(), pair_row.numpy())))
            row, product_index, weight, timestamp = pair_row[order], pair_product[order], heaviest[order], latest[order]
        counts = torch.bincount(row, minlength=num_rows)
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)])
        users = torch.arange(num_rows) if user_index is None else user_index.long().reshape(-1)
        return cls(indptr, product_index, weight, users, timestamp)

    def select(self, rows: Tensor) -> Histories:
        """The histories of ``rows`` (``[m]`` long), in that order."""
        rows = rows.long().reshape(-1)
        start, lengths = self.indptr[rows], self.lengths[rows]
        entry = torch.repeat_interleave(start - (lengths.cumsum(0) - lengths), lengths) + torch.arange(int(lengths.sum()))
        indptr = torch.cat([torch.zeros(1, dtype=torch.long), lengths.cumsum(0)])
        return Histories(
            indptr, self.product_index[entry], self.weight[entry], self.user_index[rows], self.timestamp[entry]
        )

    def latest(self, length: int, decay: float) -> tuple[Tensor, Tensor]:
        """Each user's latest ``length`` products with their weights, for :func:`history_embedding`.

        Returns:
            ``(index [b, length], weight [b, length])``, chronological left to right and
            right-aligned (the latest product in the last column). The product ``k`` steps
            before the latest weighs ``decay ** k`` times its event weight; padding has
            index 0 and weight 0.
        """
        rows, column, from_end, keep = self._window(length)
        index = torch.zeros(len(self), length, dtype=torch.long)
        weights = torch.zeros(len(self), length)
        index[rows, column] = self.product_index[keep]
        weights[rows, column] = self.weight[keep] * decay ** from_end.float()
        return index, weights

    def latest_timestamps(self, length: int) -> Tensor:
        """``[b, length]`` long: the event times of :meth:`latest`'s columns (padding 0)."""
        rows, column, _, keep = self._window(length)
        out = torch.zeros(len(self), length, dtype=torch.long)
        out[rows, column] = self.timestamp[keep]
        return out

    def _window(self, length: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Where each user's latest ``length`` entries go in a right-aligned ``[b, length]`` window:
        ``(row, column, steps before the latest)`` of the kept entries, and the ``[nnz]`` mask of them."""
        rows = self.row_of_entry
        from_end = self.indptr[1:][rows] - 1 - torch.arange(rows.numel())  # 0 for a user's latest
        keep = from_end < length
        return rows[keep], length - 1 - from_end[keep], from_end[keep], keep


def recency_weights(length: int, decay: float) -> Tensor:
    """``[length]`` weights for a chronological list: the last item 1, the one before ``decay``, ..."""
    return decay ** torch.arange(length - 1, -1, -1, dtype=torch.float32)


def history_embedding(product_emb: Tensor, history_index: Tensor, history_weight: Tensor) -> Tensor:
    """Weighted mean of product embeddings: ``[B, L]`` indices and weights → ``[B, dim]``.

    A row whose weights are all zero (no history) gives a zero vector.
    """
    emb = product_emb[history_index]  # [B, L, dim]
    w = history_weight.unsqueeze(-1).to(emb.dtype)
    return (emb * w).sum(1) / w.sum(1).clamp(min=1e-12)
