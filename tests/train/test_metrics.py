"""Metrics and the evaluator, checked against planted answers."""

from __future__ import annotations

import math

import polars as pl
import pytest
import torch

from kgrec.errors import TrainingError
from kgrec.ingest.tables import GraphTables
from kgrec.snapshot import snapshot_from_tables
from kgrec.train import metrics
from kgrec.train.evaluate import evaluate, primary_category_index
from kgrec.train.split import InteractionSplit, Pairs


def make_split(num_users: int, num_products: int, train=(), valid=(), test=()) -> InteractionSplit:
    """A split from lists of (user, product) pairs."""

    def pairs(items) -> Pairs:
        items = list(items)
        return Pairs.from_indices([u for u, _ in items], [p for _, p in items])

    return InteractionSplit(num_users, num_products, pairs(train), pairs(valid), pairs(test))


def oracle(split: InteractionSplit, part: str = "test", seen_bonus: float = 0.0):
    """Scores the part's positives 1 (and, with ``seen_bonus``, train products even higher)."""
    positives = split.part(part)

    def score(user_index: torch.Tensor) -> torch.Tensor:
        dense = torch.zeros(split.num_users, split.num_products)
        dense[positives.user_index, positives.product_index] = 1.0
        dense[split.train.user_index, split.train.product_index] += seen_bonus
        return dense[user_index]

    return score


# --- pure metric functions -------------------------------------------------


def test_ndcg_of_single_positive_at_rank_three_is_one_over_log2_of_four() -> None:
    hits = torch.tensor([[False, False, True, False, False]])
    assert metrics.ndcg_at_k(hits, torch.tensor([1]), k=5).item() == pytest.approx(1 / math.log2(4))
    assert metrics.ndcg_at_k(hits, torch.tensor([1]), k=2).item() == 0.0


def test_ndcg_with_two_positives_normalises_by_two_ideal_hits() -> None:
    hits = torch.tensor([[True, False, True]])
    expected = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert metrics.ndcg_at_k(hits, torch.tensor([2]), k=3).item() == pytest.approx(expected)


def test_ndcg_idcg_is_capped_at_k_positives() -> None:
    hits = torch.tensor([[True, True]])
    assert metrics.ndcg_at_k(hits, torch.tensor([5]), k=2).item() == pytest.approx(1.0)


def test_recall_hit_and_mrr_on_planted_ranks() -> None:
    hits = torch.tensor([[False, True, False, True], [False, False, False, False]])
    num_positives = torch.tensor([4, 1])

    assert metrics.recall_at_k(hits, num_positives, 4).tolist() == [0.5, 0.0]
    assert metrics.recall_at_k(hits, num_positives, 1).tolist() == [0.0, 0.0]
    assert metrics.hit_rate_at_k(hits, 2).tolist() == [1.0, 0.0]
    assert metrics.mrr_at_k(hits, 4).tolist() == [0.5, 0.0]
    assert metrics.mrr_at_k(hits, 1).tolist() == [0.0, 0.0]


def test_intra_list_diversity_counts_pairs_in_different_categories() -> None:
    categories = torch.tensor([[0, 0, 1], [2, 2, 2], [3, -1, -1], [0, 1, -1]])
    ild = metrics.intra_list_diversity(categories)

    assert ild[0].item() == pytest.approx(2 / 3)
    assert ild[1].item() == 0.0
    assert math.isnan(ild[2].item())  # no pair of known categories
    assert ild[3].item() == 1.0


# --- the evaluator -----------------------------------------------------------


def test_evaluate_oracle_gets_ndcg_and_recall_one_with_many_positives() -> None:
    split = make_split(3, 30, train=[(0, 0), (1, 1)], test=[(0, 5), (0, 6), (0, 7), (1, 9), (2, 29)])
    result = evaluate(oracle(split), split, "test", ks=(3, 10))

    for k in (3, 10):
        assert result[f"ndcg@{k}"] == pytest.approx(1.0)
        assert result[f"recall@{k}"] == pytest.approx(1.0)
        assert result[f"hit@{k}"] == pytest.approx(1.0)
        assert result[f"mrr@{k}"] == pytest.approx(1.0)
    assert result["users"] == 3


def test_evaluate_excludes_train_items_even_when_scored_highest() -> None:
    split = make_split(2, 20, train=[(0, 1), (0, 2), (1, 3)], test=[(0, 4), (1, 5)])
    result = evaluate(oracle(split, seen_bonus=10.0), split, "test", ks=(1,))

    assert result["ndcg@1"] == pytest.approx(1.0)
    assert result["recall@1"] == pytest.approx(1.0)


def test_evaluate_test_also_excludes_valid_items_but_valid_does_not_exclude_test() -> None:
    split = make_split(1, 10, train=[(0, 0)], valid=[(0, 1)], test=[(0, 2)])

    def valid_first(user_index: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.0, 3.0, 2.0] + [0.0] * 7]).expand(user_index.numel(), -1)

    def test_first(user_index: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[0.0, 2.0, 3.0] + [0.0] * 7]).expand(user_index.numel(), -1)

    assert evaluate(valid_first, split, "test", ks=(1,))["ndcg@1"] == 1.0  # valid item 1 is excluded
    assert evaluate(test_first, split, "valid", ks=(2,))["ndcg@2"] == pytest.approx(1 / math.log2(3))


def test_evaluate_hand_computed_ndcg_for_positive_at_rank_three() -> None:
    split = make_split(1, 8, test=[(0, 5)])

    def score(user_index: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[8.0, 7.0, 1.0, 1.0, 1.0, 6.0, 1.0, 1.0]]).expand(user_index.numel(), -1)

    result = evaluate(score, split, "test", ks=(2, 5))
    assert result["ndcg@5"] == pytest.approx(0.5)
    assert result["mrr@5"] == pytest.approx(1 / 3)
    assert result["ndcg@2"] == 0.0


def test_evaluate_random_scorer_matches_expected_ndcg_and_recall() -> None:
    num_users, num_products, k = 4000, 100, 10
    split = make_split(num_users, num_products, test=[(u, (7 * u) % num_products) for u in range(num_users)])
    generator = torch.Generator().manual_seed(0)

    def random_scores(user_index: torch.Tensor) -> torch.Tensor:
        return torch.rand(user_index.numel(), num_products, generator=generator)

    result = evaluate(random_scores, split, "test", ks=(k,))
    expected_ndcg = sum(1 / math.log2(r + 1) for r in range(1, k + 1)) / num_products  # ≈ 0.0454
    assert result[f"ndcg@{k}"] == pytest.approx(expected_ndcg, abs=0.01)
    assert result[f"recall@{k}"] == pytest.approx(k / num_products, abs=0.02)
    assert result[f"coverage@{k}"] == 1.0


def test_evaluate_reports_coverage_popularity_and_ild() -> None:
    # product popularity in train: p0 ← 3 users, p1 ← 2, p2 ← 1; users 3..5 are evaluated
    train = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (0, 2)]
    split = make_split(6, 10, train=train, test=[(3, 9), (4, 9), (5, 9)])

    def most_popular(user_index: torch.Tensor) -> torch.Tensor:
        return split.product_popularity().float().expand(user_index.numel(), -1)

    category = torch.tensor([0, 0, 1, -1, -1, -1, -1, -1, -1, -1])
    result = evaluate(most_popular, split, "test", ks=(2, 3), product_category=category)

    assert result["coverage@2"] == pytest.approx(0.2)
    assert result["avg_pop@2"] == pytest.approx(2.5)
    assert result["avg_pop_norm@2"] == pytest.approx(2.5 / 3)
    assert result["avg_pop@3"] == pytest.approx(2.0)
    assert result["ild@2"] == 0.0  # p0 and p1 share category 0
    assert result["ild@3"] == pytest.approx(2 / 3)
    assert list(result)[:4] == ["recall@2", "ndcg@2", "hit@2", "mrr@2"]


def test_evaluate_restrict_products_counts_only_those_positives() -> None:
    split = make_split(2, 10, test=[(0, 1), (0, 2), (1, 3)])

    def prefer(product: int):
        def score(user_index: torch.Tensor) -> torch.Tensor:
            scores = torch.zeros(user_index.numel(), 10)
            scores[:, product] = 1.0
            return scores

        return score

    cold = torch.tensor([2])
    assert evaluate(prefer(2), split, "test", ks=(1,), restrict_products=cold)["recall@1"] == 1.0
    result = evaluate(prefer(1), split, "test", ks=(1,), restrict_products=cold)
    assert result["recall@1"] == 0.0  # p1 is a test product of user 0, but not a cold one
    assert result["users"] == 1  # user 1 has no cold positive
    with pytest.raises(TrainingError, match="no test pairs to evaluate among restrict_products"):
        evaluate(prefer(1), split, "test", ks=(1,), restrict_products=torch.tensor([9]))


def test_evaluate_rejects_wrong_shape_nan_and_missing_valid() -> None:
    split = make_split(1, 5, valid=[(0, 1)], test=[(0, 2)])

    with pytest.raises(TrainingError, match=r"shape \(1, 4\); expected \[1, 5\]"):
        evaluate(lambda u: torch.zeros(u.numel(), 4), split, "test", ks=(1,))
    with pytest.raises(TrainingError, match="NaN"):
        evaluate(lambda u: torch.full((u.numel(), 5), float("nan")), split, "test", ks=(1,))
    with pytest.raises(TrainingError, match="merged into train"):
        evaluate(lambda u: torch.zeros(u.numel(), 5), split.merge_valid_into_train(), "valid", ks=(1,))
    with pytest.raises(TrainingError, match="every k"):
        evaluate(lambda u: torch.zeros(u.numel(), 5), split, "test", ks=(6,))


def test_primary_category_index_takes_the_most_specific_listed_category() -> None:
    # Flat names as Amazon lists them: every product carries "Beauty", so it is never primary.
    products = pl.DataFrame(
        {
            "product_id": ["p1", "p2", "p3", "p4"],
            "categories": [["Beauty", "Nails", "Tools"], [], ["Beauty", "Tools"], ["Beauty", "Hair > Irons", "Hair"]],
        },
        schema={"product_id": pl.Utf8, "categories": pl.List(pl.Utf8)},
    )
    interactions = pl.DataFrame(
        {"user_id": ["u"], "product_id": ["p1"], "event": ["view"], "timestamp": [0], "weight": [1.0]}
    )
    snapshot = snapshot_from_tables(GraphTables(products, interactions, users=pl.DataFrame({"user_id": ["u"]})))

    ids = snapshot.category_ids
    # p1: Nails (1 product) over Tools (2); p3: Tools; p4: the first of its two 1-product categories.
    assert primary_category_index(snapshot).tolist() == [ids.index("Nails"), -1, ids.index("Tools"), ids.index("Hair > Irons")]


def test_evaluate_per_user_gives_each_users_ndcg_in_user_order() -> None:
    # User 0's positive at rank 1, user 2's at rank 3, user 1 has no test pair (not scored).
    split = make_split(3, 5, test=[(0, 4), (2, 1)])
    ranking = torch.tensor([[0.0, 0.1, 0.2, 0.3, 0.9], [0.0] * 5, [0.1, 0.5, 0.2, 0.9, 0.8]])
    values: dict[str, torch.Tensor] = {}
    result = evaluate(lambda users: ranking[users], split, "test", ks=(1, 5), per_user=values)
    assert values["users"].tolist() == [0, 2]
    assert values["ndcg@1"].tolist() == [1.0, 0.0]
    assert values["ndcg@5"].tolist() == pytest.approx([1.0, 1 / math.log2(4)])
    assert result["ndcg@5"] == pytest.approx(float(values["ndcg@5"].mean()))


def test_paired_ratio_error_is_that_of_the_difference_not_of_each_figure() -> None:
    from kgrec.train.evaluate import paired_ratio

    gen = torch.Generator().manual_seed(0)
    base = torch.rand(4000, generator=gen)
    # Strongly paired: a model 10% better on every user, plus a little noise of its own.
    ratio, error = paired_ratio(base * 1.1 + 0.01 * torch.randn(4000, generator=gen), base)
    assert ratio == pytest.approx(1.1, abs=0.005)
    assert error < 0.001
    # Unpaired samples of the same size: the error is that of two independent means.
    ratio, error = paired_ratio(torch.rand(4000, generator=gen), base)
    assert ratio == pytest.approx(1.0, abs=0.05)
    expected = math.sqrt(2 / 12) / 0.5 / math.sqrt(4000)  # sd of (a - b) over mean(b), per sqrt(n)
    assert error == pytest.approx(expected, rel=0.1)
    with pytest.raises(ValueError, match="equal-length"):
        paired_ratio(base, base[:10])
