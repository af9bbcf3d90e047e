"""The one contract every recommender implements: kgrec and each baseline.

In the spirit of implicit's ``RecommenderBase``, small:

- :meth:`Recommender.fit` learns from a split's train pairs (and early-stops on valid);
- :attr:`Recommender.product_embedding` is the ``[P, dim]`` product space, when the
  model has one (the diversity re-ranking measures novelty in it);
- :meth:`Recommender.user_vectors` turns users' *current* events (:class:`Histories`)
  into vectors, when the model has a vector space;
- :meth:`Recommender.score` scores every product for a batch of users from their events.

Evaluation, ``kgrec evaluate``, ``recommend --user``, ``recommend --all-users``, the HTTP
API and the benchmarks all go through :meth:`score` with histories built by the same
rule (:meth:`Histories.from_events`), so they rank a user the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from kgrec.errors import TrainingError
from kgrec.models.history import Histories
from kgrec.threads import scan

if TYPE_CHECKING:
    from kgrec.rank.engine import ApproximateScores
    from kgrec.snapshot.snapshot import Snapshot
    from kgrec.train.split import InteractionSplit, Pairs


BFLOAT16_ROUNDOFF = 2.0**-8
"""bfloat16 keeps 8 significant bits: rounding to it changes a value by at most this share of it."""


def bfloat16_scan_error(vectors: Tensor, dim: int, largest_norm: float) -> Tensor:
    """``[b]``: the most a bfloat16 scan's score can differ from the float32 one, for each of
    ``vectors`` against products of norm at most ``largest_norm``.

    Rounding the user and product vectors to bfloat16 (``ε`` each) moves ``u·p`` by at most
    ``(2ε + ε²)·Σ|u_i p_i| <= (2ε + ε²)·|u|·|p|``; the float32 sums of ``dim`` terms add at most
    ``dim·2^-24`` of that, and rounding the result to bfloat16 ``ε`` of its size. 1% on top
    covers the float32 steps after the scan (adding co-interaction scores)."""
    eps, summing = BFLOAT16_ROUNDOFF, dim * 2.0**-24
    share = (3 * eps + 4 * eps**2 + 1.1 * summing) * 1.01
    return share * vectors.float().norm(dim=1) * largest_norm


class Recommender(ABC):
    """A model that scores every product for a user from the user's events. ``fit`` returns ``self``."""

    name: ClassVar[str]
    trainable: ClassVar[bool] = False
    """Whether :meth:`fit` trains for epochs (then ``best_epoch`` and ``best_valid_ndcg`` tell
    what early stopping chose, and the constructor takes ``epochs``)."""

    @abstractmethod
    def fit(self, split: InteractionSplit, snapshot: Snapshot | None = None, device: str = "cpu") -> Recommender:
        """Learn from ``split.train`` (trainable models early-stop on ``split.valid``)."""

    @property
    def product_embedding(self) -> Tensor | None:
        """``[P, dim]`` the product space, or None for a model without one."""
        return None

    def user_vectors(self, histories: Histories) -> Tensor | None:
        """``[b, dim]`` vectors of the users from their events, or None without a vector space."""
        return None

    def score(self, histories: Histories) -> Tensor:
        """``[b, P]`` float scores of every product for each user of ``histories``; higher is better."""
        vectors = self.user_vectors(histories)
        products = self.product_embedding
        if vectors is None or products is None:
            raise NotImplementedError(f"{type(self).__name__} must implement score() or user_vectors().")
        return scan(vectors.to(products.device), self._products_by_column(products))

    def approximate_score(self, histories: Histories) -> ApproximateScores:
        """:meth:`score` from a bfloat16 scan of the catalog, half the memory read of float32, as
        :class:`~kgrec.rank.engine.ApproximateScores`: within :func:`bfloat16_scan_error` of the
        float32 scores, any of which it gives exactly on request. Ranked by
        :func:`~kgrec.rank.ranking.rank`, they give the ranking the float32 scores give."""
        vectors = self.user_vectors(histories)
        if vectors is None or self.product_embedding is None:
            raise NotImplementedError(f"{type(self).__name__} has no vector space to scan.")
        return self._bfloat16_scan(vectors)

    def _bfloat16_scan(self, vectors: Tensor) -> ApproximateScores:
        """The bfloat16 scan of :meth:`approximate_score` for the users' ``vectors [b, dim]``."""
        from kgrec.rank.engine import ApproximateScores

        products = self.product_embedding
        assert products is not None
        vectors = vectors.to(products.device).float()
        scores = scan(vectors.bfloat16(), self._products_by_column(products, torch.bfloat16)).float()
        error = bfloat16_scan_error(vectors, products.shape[1], self._largest_norm(products))

        def exact(columns: Tensor) -> Tensor:
            return torch.bmm(products[columns.clamp(min=0)], vectors.unsqueeze(2)).squeeze(2)

        return ApproximateScores(scores, error, exact)

    def _products_by_column(self, products: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
        """``[dim, P]``: a contiguous copy of ``products.T`` in ``dtype``, made once per product table.

        A user vector times it reads the catalog row by row: on one thread, a ``[100k, 256]``
        scan took 8.5–9.0 ms against 11.3–12.4 ms through the transposed view
        (``scripts/bench_scan.py``; the 64-wide gain varies more by run). The copy is keyed by the table's storage and
        version, so a detached view of the same table reuses it and a table changed in place
        does not; it holds the table, so the storage cannot be freed and its address reused."""
        cached = self._table_cache(products)
        if dtype not in cached:
            cached[dtype] = products.T.to(dtype).contiguous()
        return cached[dtype]

    def _largest_norm(self, products: Tensor) -> float:
        """The largest norm of a row of ``products``, computed once per product table."""
        cached = self._table_cache(products)
        if "largest_norm" not in cached:
            cached["largest_norm"] = float(products.norm(dim=1).max()) if products.shape[0] else 0.0
        return cached["largest_norm"]

    def _table_cache(self, products: Tensor) -> dict:
        """What is derived from one product table (see :meth:`_products_by_column`)."""
        key = (products.data_ptr(), tuple(products.shape), products.stride(), products._version)
        cached = getattr(self, "_by_column", None)
        if cached is None or cached["key"] != key:
            self._by_column = cached = {"key": key, "products": products}
        return cached

    def _check_fitted(self, attribute: str) -> None:
        if getattr(self, attribute, None) is None:
            raise TrainingError(f"{type(self).__name__} is not fitted yet; call fit(split) before scoring.")


def pair_histories(pairs: Pairs, num_users: int) -> Histories:
    """Every user's history from a split's pairs (row ``u`` = user index ``u``)."""
    return Histories.from_events(pairs.user_index, pairs.product_index, pairs.timestamp, pairs.weight, num_users)


def split_scorer(recommender: Recommender, split: InteractionSplit, part: str):
    """``score_fn(user_index [b]) -> [b, P]`` for the evaluator: each user is scored from the
    pairs the model may see before ``part`` (train, plus valid when ``part`` is test)."""
    seen = split.train if part == "valid" or not len(split.valid) else split.train.concat(split.valid)
    histories = pair_histories(seen, split.num_users)

    def score(user_index: Tensor) -> Tensor:
        return recommender.score(histories.select(user_index.cpu()))

    return score


def known_users(histories: Histories, num_users: int) -> tuple[Tensor, Tensor]:
    """``(rows, user_index)`` of the users a model trained on ``num_users`` users knows."""
    known = (histories.user_index >= 0) & (histories.user_index < num_users)
    return known.nonzero().reshape(-1), histories.user_index[known]


