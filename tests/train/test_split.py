"""Leave-last-out splits on planted interaction histories."""

from __future__ import annotations

import polars as pl
import pytest
import torch

from kgrec.errors import ConfigError, SchemaError, TrainingError
from kgrec.ingest.tables import INTERACTION_SCHEMA, GraphTables
from kgrec.snapshot import Snapshot, snapshot_from_tables
from kgrec.train.split import NegativeSampler, Pairs, leave_last_out, split_by_assignment


def make_snapshot(events: list[tuple[str, str, str, int, float]], num_products: int = 6) -> Snapshot:
    """Events are ``(user_id, product_id, event, timestamp, weight)``; products are p0..p{n-1}."""
    interactions = pl.DataFrame(
        {
            "user_id": [e[0] for e in events],
            "product_id": [e[1] for e in events],
            "event": [e[2] for e in events],
            "timestamp": [e[3] for e in events],
            "value": [None] * len(events),
            "weight": [e[4] for e in events],
        },
        schema=INTERACTION_SCHEMA,
    )
    products = pl.DataFrame({"product_id": [f"p{i}" for i in range(num_products)]})
    users = interactions.select("user_id").unique()
    return snapshot_from_tables(GraphTables(products=products, interactions=interactions, users=users))


def pairs_of(pairs: Pairs) -> list[tuple[int, int]]:
    return list(zip(pairs.user_index.tolist(), pairs.product_index.tolist()))


def test_leave_last_out_holds_out_latest_two_pairs_per_user() -> None:
    snapshot = make_snapshot(
        [
            ("a", "p3", "view", 30, 1.0),
            ("a", "p1", "view", 10, 1.0),
            ("a", "p4", "view", 40, 1.0),
            ("a", "p2", "view", 20, 1.0),
        ]
    )
    split = leave_last_out(snapshot)

    assert pairs_of(split.train) == [(0, 1), (0, 2)]
    assert pairs_of(split.valid) == [(0, 3)]
    assert pairs_of(split.test) == [(0, 4)]
    assert split.train.timestamp.tolist() == [10, 20]
    assert (split.num_users, split.num_products) == (1, 6)


def test_leave_last_out_aggregates_events_per_pair_by_max_weight_and_latest_time() -> None:
    snapshot = make_snapshot(
        [
            ("a", "p1", "purchase", 1, 5.0),
            ("a", "p2", "view", 2, 1.0),
            ("a", "p3", "view", 3, 1.0),
            ("a", "p1", "view", 9, 1.0),  # re-viewed last: p1 becomes the latest pair
            ("a", "p0", "view", 0, 1.0),
        ]
    )
    split = leave_last_out(snapshot)

    assert pairs_of(split.test) == [(0, 1)]
    assert split.test.weight.tolist() == [5.0]
    assert split.test.timestamp.tolist() == [9]
    assert pairs_of(split.valid) == [(0, 3)]
    assert len(split.train) + len(split.valid) + len(split.test) == 4


def test_leave_last_out_breaks_timestamp_ties_by_product_index() -> None:
    snapshot = make_snapshot([("a", p, "view", 7, 1.0) for p in ("p5", "p2", "p0", "p3")])
    split = leave_last_out(snapshot)

    assert pairs_of(split.test) == [(0, 5)]
    assert pairs_of(split.valid) == [(0, 3)]


def test_leave_last_out_keeps_users_with_fewer_than_three_pairs_in_train() -> None:
    snapshot = make_snapshot(
        [("a", "p0", "view", 1, 1.0), ("a", "p1", "view", 2, 1.0), ("a", "p2", "view", 3, 1.0)]
        + [("b", "p3", "view", 1, 1.0), ("b", "p4", "view", 2, 1.0)]
    )
    split = leave_last_out(snapshot)

    assert pairs_of(split.train) == [(0, 0), (1, 3), (1, 4)]
    assert split.valid.user_index.tolist() == [0]
    assert split.test.user_index.tolist() == [0]


def test_leave_last_out_without_interactions_raises() -> None:
    with pytest.raises(TrainingError, match="no interactions"):
        leave_last_out(make_snapshot([]))


def test_leave_last_out_without_eligible_users_says_how_many_are_needed() -> None:
    snapshot = make_snapshot([("a", "p0", "view", 1, 1.0), ("a", "p1", "view", 2, 1.0), ("b", "p0", "view", 1, 1.0)])
    with pytest.raises(TrainingError, match=r"Found 0 users with ≥3 .*need at least 1"):
        leave_last_out(snapshot)


def _four_user_split():
    events = [(u, f"p{(i + k) % 6}", "view", k, 1.0 + k) for i, u in enumerate("abcd") for k in range(4)]
    return leave_last_out(make_snapshot(events))


def test_merge_valid_into_train_moves_every_valid_pair() -> None:
    split = _four_user_split()
    merged = split.merge_valid_into_train()

    assert len(merged.valid) == 0
    assert set(pairs_of(merged.train)) == set(pairs_of(split.train)) | set(pairs_of(split.valid))
    assert pairs_of(merged.test) == pairs_of(split.test)
    user, time = merged.train.user_index.tolist(), merged.train.timestamp.tolist()
    assert sorted(zip(user, time)) == list(zip(user, time))  # still chronological per user


def test_holdout_products_drops_all_train_and_valid_pairs_of_cold_products() -> None:
    split = _four_user_split()
    cold_split = split.holdout_products(fraction=0.34, seed=1)
    cold = set(cold_split.cold_product_index.tolist())

    assert len(cold) == 2
    assert not cold & set(cold_split.train.product_index.tolist())
    assert not cold & set(cold_split.valid.product_index.tolist())
    assert pairs_of(cold_split.test) == pairs_of(split.test)
    assert cold_split.holdout_products(0.34, seed=1).cold_product_index.tolist() == sorted(cold)
    with pytest.raises(ConfigError, match="fraction"):
        split.holdout_products(fraction=1.5)


def test_train_matrix_is_binary_or_weighted() -> None:
    split = _four_user_split()
    binary = split.train_matrix()
    weighted = split.train_matrix(weighted=True)

    assert binary.shape == (4, 6)
    assert binary.sum() == len(split.train)
    assert weighted.sum() == pytest.approx(float(split.train.weight.sum()))
    assert split.product_popularity().sum() == len(split.train)


def test_split_by_assignment_uses_given_parts() -> None:
    snapshot = make_snapshot([("a", f"p{i}", "view", i, 1.0) for i in range(5)])
    assignment = pl.DataFrame(
        {
            "user_id": ["a"] * 5,
            "product_id": [f"p{i}" for i in range(5)],
            "part": ["train", "test", "train", "test", "valid"],
        }
    )
    split = split_by_assignment(snapshot, assignment)

    assert pairs_of(split.test) == [(0, 1), (0, 3)]
    assert pairs_of(split.valid) == [(0, 4)]
    with pytest.raises(SchemaError, match="without a part"):
        split_by_assignment(snapshot, assignment.head(4))


def test_negative_sampler_never_returns_a_train_product() -> None:
    train = Pairs.from_indices([0, 0, 0, 1], [0, 1, 2, 3])
    sampler = NegativeSampler(train, num_products=5)
    users = torch.zeros(2000, dtype=torch.long)

    negatives = sampler.sample(users, torch.Generator().manual_seed(0))

    assert set(negatives.tolist()) == {3, 4}
    assert sampler.is_positive(torch.tensor([0, 1, 1]), torch.tensor([2, 3, 0])).tolist() == [True, True, False]


def test_negative_sampler_finds_the_last_free_product_and_tolerates_saturated_users() -> None:
    train = Pairs.from_indices([0, 0, 0, 0] + [1] * 5, [0, 1, 2, 3] + [0, 1, 2, 3, 4])
    sampler = NegativeSampler(train, num_products=5, max_rounds=1)

    negatives = sampler.sample(torch.tensor([0] * 50 + [1] * 5), torch.Generator().manual_seed(0))

    assert negatives[:50].tolist() == [4] * 50  # exact fallback after the vectorised re-draws
    assert negatives.shape == (55,)  # user 1 has no negative: it keeps a (positive) draw


def test_latest_keeps_each_users_newest_pairs() -> None:
    pairs = Pairs.from_indices([0, 0, 0, 1, 2, 2], [5, 6, 7, 8, 9, 4], timestamp=[3, 1, 2, 1, 2, 1])

    latest = pairs.latest(2)

    assert list(zip(latest.user_index.tolist(), latest.product_index.tolist())) == [(0, 7), (0, 5), (1, 8), (2, 4), (2, 9)]
