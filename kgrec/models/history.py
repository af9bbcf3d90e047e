"""A user as the products of their events, and the rule that turns those into a vector.

:class:`Histories` is the one representation of users' current events, for one user
(a served request) or many (a batch, an evaluation): each product once, at its latest
event with its heaviest weight, oldest first. :func:`history_embedding` is the one
rule that turns the latest ``history_length`` of them into a vector: the mean of their
embeddings, the product ``k`` steps back weighted ``decay ** k`` times its event weight.

torch and numpy only: ranking does not import PyTorch Geometric.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

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

    @cached_property
    def row_of_entry(self) -> Tensor:
        """``[nnz]`` the row each entry belongs to (derived once: a served request reads it in its
        window, its co-interactions and its ranking)."""
        counts = self.lengths.numpy()
        return torch.from_numpy(np.repeat(np.arange(counts.size), counts))

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
            row, product_index, timestamp, weight: ``[n]`` events (any order, repeats allowed;
                on any device, the histories are on the CPU).
            num_rows: ``b``; rows without events are empty.
            user_index: ``[b]`` (default ``arange(b)``).
        """
        # numpy inside: for one served user's few dozen events, torch's per-call cost was most
        # of the work (~0.4 ms a request); for millions of events both sort at the same speed.
        row, product_index = (t.long().reshape(-1).cpu().numpy() for t in (row, product_index))
        timestamp, weight = timestamp.long().reshape(-1).cpu().numpy(), weight.float().reshape(-1).cpu().numpy()
        if row.size:
            # Distinct (row, product) pairs; per pair the latest timestamp and heaviest weight.
            width = int(product_index.max()) + 1
            key = row * width + product_index
            by_key = np.argsort(key, kind="stable")
            key = key[by_key]
            first = np.flatnonzero(np.diff(key, prepend=-1))  # each pair's first event in key order
            latest = np.maximum.reduceat(timestamp[by_key], first)
            heaviest = np.maximum.reduceat(weight[by_key], first)
            pair_row, pair_product = key[first] // width, key[first] % width
            order = np.lexsort((pair_product, latest, pair_row))
            row, product_index, weight, timestamp = pair_row[order], pair_product[order], heaviest[order], latest[order]
        indptr = np.concatenate([[0], np.cumsum(np.bincount(row, minlength=num_rows))]).astype(np.int64)
        users = torch.arange(num_rows) if user_index is None else user_index.long().reshape(-1).cpu()
        return cls(
            torch.from_numpy(indptr),
            torch.from_numpy(product_index.astype(np.int64, copy=False)),
            torch.from_numpy(weight.astype(np.float32, copy=False)),
            users,
            torch.from_numpy(timestamp.astype(np.int64, copy=False)),
        )

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
        index = np.zeros((len(self), length), dtype=np.int64)
        weights = np.zeros((len(self), length), dtype=np.float32)
        index[rows, column] = self.product_index.numpy()[keep]
        weights[rows, column] = self.weight.numpy()[keep] * np.float32(decay) ** from_end.astype(np.float32)
        return torch.from_numpy(index), torch.from_numpy(weights)

    def latest_timestamps(self, length: int) -> Tensor:
        """``[b, length]`` long: the event times of :meth:`latest`'s columns (padding 0)."""
        rows, column, _, keep = self._window(length)
        out = np.zeros((len(self), length), dtype=np.int64)
        out[rows, column] = self.timestamp.numpy()[keep]
        return torch.from_numpy(out)

    def _window(self, length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Where each user's latest ``length`` entries go in a right-aligned ``[b, length]`` window:
        ``(row, column, steps before the latest)`` of the kept entries, and the ``[nnz]`` mask of
        them. numpy, like :meth:`from_events`: a served user's window is a few dozen entries."""
        rows = self.row_of_entry.numpy()
        from_end = self.indptr.numpy()[1:][rows] - 1 - np.arange(rows.size)  # 0 for a user's latest
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
