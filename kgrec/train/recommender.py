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

from torch import Tensor

from kgrec.errors import TrainingError
from kgrec.models.history import Histories
from kgrec.threads import scan

if TYPE_CHECKING:
    from kgrec.snapshot.snapshot import Snapshot
    from kgrec.train.split import InteractionSplit, Pairs


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

    def _products_by_column(self, products: Tensor) -> Tensor:
        """``[dim, P]``: a contiguous copy of ``products.T``, made once per product table.

        A user vector times it reads the catalog row by row: on one thread, a ``[100k, 256]``
        scan took 8.5–9.0 ms against 11.3–12.4 ms through the transposed view
        (``scripts/bench_scan.py``; the 64-wide gain varies more by run). The copy is keyed by the table's storage and
        version, so a detached view of the same table reuses it and a table changed in place
        does not; it holds the table, so the storage cannot be freed and its address reused."""
        key = (products.data_ptr(), tuple(products.shape), products.stride(), products._version)
        cached = getattr(self, "_by_column", None)
        if cached is None or cached[0] != key:
            self._by_column = cached = (key, products, products.T.contiguous())
        return cached[2]

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


