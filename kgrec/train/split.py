"""Train / valid / test splits of the (user, product) pairs of a snapshot.

Events are first aggregated per (user, product) pair:

- ``weight`` = the largest event weight of the pair (a purchase outweighs a view);
- ``timestamp`` = the pair's latest event.

:func:`leave_last_out` then orders each user's pairs by ``(timestamp, product_index)``
(so equal timestamps are broken by product index, i.e. by sorted ``product_id``: the
same graph always gives the same split) and holds out the last pair as test and the
second-to-last as valid. Users with fewer than ``min_pairs`` (default 3) pairs keep all
of them in train: they still shape the model, but are not evaluated.

Every part is a set of pairs (:class:`Pairs`), so a user can have many test products
(e.g. the fixed 80/20 splits of the KGAT benchmarks, see :func:`split_by_assignment`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import polars as pl
import scipy.sparse as sp
import torch
from torch import Tensor

from kgrec.errors import ConfigError, SchemaError, TrainingError
from kgrec.snapshot.snapshot import Snapshot

PartName = Literal["train", "valid", "test"]
PART_NAMES: tuple[PartName, ...] = ("train", "valid", "test")


@dataclass(frozen=True)
class Pairs:
    """(user, product) pairs, sorted by ``(user_index, timestamp, product_index)``.

    Attributes:
        user_index: ``[n]`` long.
        product_index: ``[n]`` long.
        weight: ``[n]`` float, the pair's largest event weight.
        timestamp: ``[n]`` long, the pair's latest event (epoch seconds, or an order).
    """

    user_index: Tensor
    product_index: Tensor
    weight: Tensor
    timestamp: Tensor

    def __len__(self) -> int:
        return int(self.user_index.numel())

    @staticmethod
    def empty() -> Pairs:
        long = torch.empty(0, dtype=torch.long)
        return Pairs(long, long.clone(), torch.empty(0, dtype=torch.float), long.clone())

    @staticmethod
    def from_indices(
        user_index: Sequence[int] | Tensor,
        product_index: Sequence[int] | Tensor,
        weight: Sequence[float] | Tensor | None = None,
        timestamp: Sequence[int] | Tensor | None = None,
    ) -> Pairs:
        """Pairs from ``[n]`` index lists (weight defaults to 1, timestamp to 0), sorted."""
        user = torch.as_tensor(user_index, dtype=torch.long)
        product = torch.as_tensor(product_index, dtype=torch.long)
        weights = torch.ones(user.numel()) if weight is None else torch.as_tensor(weight, dtype=torch.float)
        times = torch.zeros_like(user) if timestamp is None else torch.as_tensor(timestamp, dtype=torch.long)
        return Pairs.empty().concat(Pairs(user, product, weights, times))

    @staticmethod
    def from_frame(frame: pl.DataFrame) -> Pairs:
        """Pairs from a frame with ``user_index, product_index, weight, timestamp`` columns."""
        frame = frame.sort("user_index", "timestamp", "product_index")

        def column(name: str, dtype: torch.dtype) -> Tensor:
            return torch.from_numpy(frame.get_column(name).to_numpy().copy()).to(dtype)

        return Pairs(
            column("user_index", torch.long),
            column("product_index", torch.long),
            column("weight", torch.float),
            column("timestamp", torch.long),
        )

    def select(self, mask: Tensor) -> Pairs:
        """The pairs where the ``[n]`` bool ``mask`` is True (order kept)."""
        return Pairs(self.user_index[mask], self.product_index[mask], self.weight[mask], self.timestamp[mask])

    def latest(self, limit: int) -> Pairs:
        """Each user's ``limit`` latest pairs (the pairs are sorted by user, then time)."""
        counts = torch.bincount(self.user_index)
        ends = torch.cumsum(counts, 0)
        from_end = ends[self.user_index] - 1 - torch.arange(len(self))
        return self.select(from_end < limit)

    def concat(self, other: Pairs) -> Pairs:
        """Both sets of pairs, re-sorted by ``(user_index, timestamp, product_index)``."""
        user = torch.cat([self.user_index, other.user_index])
        product = torch.cat([self.product_index, other.product_index])
        timestamp = torch.cat([self.timestamp, other.timestamp])
        order = torch.from_numpy(np.lexsort((product.numpy(), timestamp.numpy(), user.numpy())))
        return Pairs(user[order], product[order], torch.cat([self.weight, other.weight])[order], timestamp[order])

    def matrix(self, num_users: int, num_products: int, weighted: bool = False) -> sp.csr_matrix:
        """CSR ``[num_users, num_products]`` float32: 1 (or the pair weight) per pair."""
        data = self.weight.numpy() if weighted else np.ones(len(self), dtype=np.float32)
        return sp.csr_matrix(
            (data.astype(np.float32), (self.user_index.numpy(), self.product_index.numpy())),
            shape=(num_users, num_products),
        )


@dataclass(frozen=True)
class InteractionSplit:
    """The pairs of one snapshot cut into train, valid and test.

    Attributes:
        num_users: rows of the user index space (all snapshot users, evaluated or not).
        num_products: size of the catalog; every ranking is over all of it.
        train, valid, test: disjoint :class:`Pairs`.
        cold_product_index: ``[c]`` long, products withheld from train and valid by
            :meth:`holdout_products` (``None`` otherwise).
    """

    num_users: int
    num_products: int
    train: Pairs
    valid: Pairs
    test: Pairs
    cold_product_index: Tensor | None = None

    def part(self, name: PartName) -> Pairs:
        """The pairs of part ``name``; raises :class:`TrainingError` for an unknown name."""
        if name not in PART_NAMES:
            raise TrainingError(f"Unknown split part {name!r}; expected one of {list(PART_NAMES)}.")
        return getattr(self, name)

    def merge_valid_into_train(self) -> InteractionSplit:
        """The split with valid moved into train (valid becomes empty): for the final test figure."""
        return replace(self, train=self.train.concat(self.valid), valid=Pairs.empty())

    def merge_test_into_train(self) -> InteractionSplit:
        """The split with test moved into train too: every pair is training input (the deployed fit)."""
        return replace(self, train=self.train.concat(self.valid).concat(self.test), valid=Pairs.empty(), test=Pairs.empty())

    def holdout_products(self, fraction: float = 0.1, seed: int = 0) -> InteractionSplit:
        """A cold-start variant: a random ``fraction`` of the catalog loses all its train pairs.

        Products are drawn uniformly from the whole catalog with ``seed``. Their train
        *and* valid pairs are dropped (valid is training input too: it drives early
        stopping and is merged into train for the final figure); their test pairs stay,
        and :attr:`cold_product_index` lists them so that ``evaluate(...,
        restrict_products=split.cold_product_index)`` scores only cold test pairs.
        """
        if not 0.0 < fraction < 1.0:
            raise ConfigError(f"holdout fraction must be between 0 and 1 (exclusive), found {fraction}.")
        count = max(1, round(fraction * self.num_products))
        generator = torch.Generator().manual_seed(seed)
        cold = torch.randperm(self.num_products, generator=generator)[:count].sort().values
        is_cold = torch.zeros(self.num_products, dtype=torch.bool)
        is_cold[cold] = True
        return replace(
            self,
            train=self.train.select(~is_cold[self.train.product_index]),
            valid=self.valid.select(~is_cold[self.valid.product_index]),
            cold_product_index=cold,
        )

    def train_matrix(self, weighted: bool = False) -> sp.csr_matrix:
        """CSR ``[num_users, num_products]`` float32 of the train pairs (1, or the pair weight)."""
        return self.train.matrix(self.num_users, self.num_products, weighted)

    def product_popularity(self) -> Tensor:
        """``[num_products]`` long: how many train pairs each product has."""
        return torch.bincount(self.train.product_index, minlength=self.num_products)


def aggregate_pairs(snapshot: Snapshot) -> pl.DataFrame:
    """One row per (user, product) pair: ``[user_index, product_index, weight, timestamp]``.

    ``weight`` is the largest event weight of the pair, ``timestamp`` its latest event.
    Rows are sorted by ``(user_index, timestamp, product_index)``.

    Raises:
        TrainingError: the snapshot has no interactions.
    """
    interactions = snapshot.tables.interactions
    if interactions.height == 0:
        raise TrainingError(
            "The snapshot has no interactions, so there is nothing to train or evaluate on. "
            "Load events with kgrec build-graph (an interactions file) and export the graph again."
        )
    indexed = pl.DataFrame(
        {
            "user_index": snapshot.user_ids.indices(interactions.get_column("user_id")),
            "product_index": snapshot.product_ids.indices(interactions.get_column("product_id")),
            "weight": interactions.get_column("weight").cast(pl.Float64),
            "timestamp": interactions.get_column("timestamp").cast(pl.Int64),
        }
    )
    return (
        indexed.group_by("user_index", "product_index")
        .agg(pl.col("weight").max(), pl.col("timestamp").max())
        .sort("user_index", "timestamp", "product_index")
    )


def leave_last_out(snapshot: Snapshot, min_pairs: int = 3) -> InteractionSplit:
    """Temporal leave-one-out over each user's (user, product) pairs.

    Per user, pairs are ordered by ``(timestamp, product_index)``; the last is test, the
    second-to-last valid, the rest train. Users with fewer than ``min_pairs`` pairs
    (default 3) put all their pairs in train and are not evaluated.

    Raises:
        TrainingError: no interactions, or no user has ``min_pairs`` pairs.
    """
    if min_pairs < 3:
        raise ConfigError(f"min_pairs must be at least 3 (one train, one valid, one test pair), found {min_pairs}.")
    pairs = aggregate_pairs(snapshot).with_columns(
        from_end=(pl.len().over("user_index") - 1 - pl.int_range(pl.len()).over("user_index")),
        held_out=pl.len().over("user_index") >= min_pairs,
    )
    eval_users = pairs.filter(pl.col("held_out")).get_column("user_index").n_unique()
    if eval_users == 0:
        counts = pairs.group_by("user_index").len().get_column("len")
        raise TrainingError(
            f"Found 0 users with ≥{min_pairs} interacted products (most for one user: {counts.max()}); "
            f"need at least 1 to hold out a valid and a test product. "
            "Add more interactions per user, or evaluate on a split made with split_by_assignment."
        )
    is_test = pl.col("held_out") & (pl.col("from_end") == 0)
    is_valid = pl.col("held_out") & (pl.col("from_end") == 1)
    return InteractionSplit(
        num_users=snapshot.num_users,
        num_products=snapshot.num_products,
        train=Pairs.from_frame(pairs.filter(~is_test & ~is_valid)),
        valid=Pairs.from_frame(pairs.filter(is_valid)),
        test=Pairs.from_frame(pairs.filter(is_test)),
    )


def split_by_assignment(snapshot: Snapshot, assignment: pl.DataFrame) -> InteractionSplit:
    """A split whose parts are given, e.g. a benchmark's fixed train/test files.

    Args:
        snapshot: the graph; its interactions are aggregated per pair as usual.
        assignment: ``[user_id, product_id, part]`` with ``part`` in train/valid/test,
            one row per interacted pair (every pair of the snapshot must appear).

    Raises:
        SchemaError: ``assignment`` misses a column, has an unknown part, or does not
            cover every pair exactly once.
    """
    missing = [c for c in ("user_id", "product_id", "part") if c not in assignment.columns]
    if missing:
        raise SchemaError(f"assignment lacks column(s) {missing}; expected user_id, product_id, part.")
    bad_parts = set(assignment.get_column("part").unique().to_list()) - set(PART_NAMES)
    if bad_parts:
        raise SchemaError(f"assignment has part(s) {sorted(map(str, bad_parts))}; expected {list(PART_NAMES)}.")
    keyed = pl.DataFrame(
        {
            "user_index": snapshot.user_ids.indices(assignment.get_column("user_id")),
            "product_index": snapshot.product_ids.indices(assignment.get_column("product_id")),
            "part": assignment.get_column("part"),
        }
    )
    if keyed.select("user_index", "product_index").is_duplicated().any():
        raise SchemaError("assignment lists a (user_id, product_id) pair more than once; give each pair one part.")
    pairs = aggregate_pairs(snapshot).join(keyed, on=["user_index", "product_index"], how="left")
    unassigned = pairs.get_column("part").null_count()
    if unassigned:
        raise SchemaError(f"assignment leaves {unassigned:,} interacted pair(s) without a part; give every pair one.")
    parts = {name: Pairs.from_frame(pairs.filter(pl.col("part") == name)) for name in PART_NAMES}
    if len(parts["test"]) == 0:
        raise TrainingError("assignment puts no pair in test, so there is nothing to evaluate on.")
    return InteractionSplit(snapshot.num_users, snapshot.num_products, **parts)


class NegativeSampler:
    """Uniform random negatives: products a user has no train pair with.

    Draws uniformly and re-draws the samples that hit a train pair (``max_rounds``
    times, vectorised); the few that still collide (users who interacted with much of
    the catalog) are drawn exactly from the user's non-positive products. A user whose
    train pairs cover the whole catalog has no negative and keeps a positive.

    Args:
        train: the pairs whose products count as positives.
        num_products: the catalog size.
        max_rounds: vectorised re-draws before the exact fallback.
    """

    def __init__(self, train: Pairs, num_products: int, max_rounds: int = 5) -> None:
        self.num_products = num_products
        self.max_rounds = max_rounds
        self._keys = (train.user_index * num_products + train.product_index).sort().values

    def is_positive(self, user_index: Tensor, product_index: Tensor) -> Tensor:
        """``[n]`` bool: whether each (user, product) is a train pair."""
        if self._keys.numel() == 0:
            return torch.zeros_like(user_index, dtype=torch.bool)
        query = user_index * self.num_products + product_index
        position = torch.searchsorted(self._keys, query).clamp(max=self._keys.numel() - 1)
        return self._keys[position] == query

    def sample(self, user_index: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``[n]`` long: one negative product per entry of the ``[n]`` ``user_index``."""
        negative = torch.randint(self.num_products, user_index.shape, generator=generator)
        clash = self.is_positive(user_index, negative)
        for _ in range(self.max_rounds):
            if not clash.any():
                return negative
            negative[clash] = torch.randint(self.num_products, (int(clash.sum()),), generator=generator)
            clash = self.is_positive(user_index, negative)
        for position in clash.nonzero().flatten().tolist():
            user = int(user_index[position])
            start, end = torch.searchsorted(self._keys, torch.tensor([user, user + 1]) * self.num_products).tolist()
            allowed = torch.ones(self.num_products, dtype=torch.bool)
            allowed[self._keys[start:end] - user * self.num_products] = False
            choices = allowed.nonzero().flatten()
            if choices.numel():
                negative[position] = choices[torch.randint(choices.numel(), (1,), generator=generator)]
        return negative
