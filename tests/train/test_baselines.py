"""Baselines: one contract for all, plus planted-structure checks per model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kgrec.errors import ConfigError, TrainingError
from kgrec.train.baselines import BASELINES, fit_and_evaluate, make_baseline
from kgrec.train.recommender import pair_histories


def users_of(split: InteractionSplit, users: list[int]):
    """The histories of ``users`` as the split's train pairs give them."""
    return pair_histories(split.train, split.num_users).select(torch.tensor(users))
from kgrec.train.evaluate import evaluate
from kgrec.train.split import InteractionSplit, Pairs



@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors train faster on one thread (and a shared CI box does not thrash)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


FAST = {  # small-data settings for the trainable models
    "bpr": {"lr": 0.05, "batch_size": 64, "epochs": 30, "eval_every": 5, "patience": 3},
    "lightgcn": {"lr": 0.05, "batch_size": 64, "epochs": 30, "eval_every": 5, "patience": 3},
}


def block_split(seed: int = 0) -> InteractionSplit:
    """Two planted communities: users 0-19 take 6 of products 0-9, users 20-39 of products 10-19.

    Per user the 6 products come in random order; the last is test, the one before valid.
    A model that learns the blocks puts the test product in the top 5 of the 15 unseen ones.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[tuple[int, int]]] = {"train": [], "valid": [], "test": []}
    for user in range(40):
        block = 0 if user < 20 else 10
        items = (block + rng.permutation(10)[:6]).tolist()
        parts["train"] += [(user, p) for p in items[:4]]
        parts["valid"].append((user, items[4]))
        parts["test"].append((user, items[5]))

    def pairs(items: list[tuple[int, int]]) -> Pairs:
        return Pairs.from_indices([u for u, _ in items], [p for _, p in items])

    return InteractionSplit(40, 20, pairs(parts["train"]), pairs(parts["valid"]), pairs(parts["test"]))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_contract_fit_returns_self_and_scores_every_product(name: str) -> None:
    split = block_split()
    model = make_baseline(name, **FAST.get(name, {}))

    with pytest.raises(TrainingError, match="not fitted"):
        model.score(users_of(split, [0]))
    assert model.fit(split) is model
    scores = model.score(users_of(split, [0, 5, 39]))

    assert model.name == name
    assert scores.shape == (3, 20)
    assert scores.dtype.is_floating_point
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("name", ["itemknn", "bpr", "lightgcn"])
def test_baseline_learns_planted_communities(name: str) -> None:
    split = block_split()
    model = make_baseline(name, **FAST.get(name, {})).fit(split)

    result = evaluate(model, split, "test", ks=(5,))

    assert result["hit@5"] >= 0.9  # random ranking: 5/15 ≈ 0.33


def test_popularity_ranks_products_by_train_pairs() -> None:
    split = InteractionSplit(
        3, 4, Pairs.from_indices([0, 1, 2, 0, 1, 0], [2, 2, 2, 0, 0, 3]), Pairs.empty(), Pairs.empty()
    )
    model = make_baseline("pop").fit(split)

    assert model.score(users_of(split, [1])).argsort(descending=True)[0].tolist() == [2, 0, 3, 1]


def test_itemknn_scores_each_candidate_from_its_own_neighbours() -> None:
    # p0 ← users 0,1,2,4; p1 ← users 0,1; p2 ← users 2,3. With one neighbour each,
    # N(p2) = {p0} although p0's own nearest is p1, so user 4 (history {p0}) scores p2.
    users, products = [0, 1, 2, 4, 0, 1, 2, 3], [0, 0, 0, 0, 1, 1, 2, 2]
    split = InteractionSplit(5, 3, Pairs.from_indices(users, products), Pairs.empty(), Pairs.empty())
    model = make_baseline("itemknn", neighbours=1).fit(split)

    scores = model.score(users_of(split, [4]))[0]
    assert scores[1].item() == pytest.approx(2 / (2 * np.sqrt(2)))
    assert scores[2].item() == pytest.approx(1 / (2 * np.sqrt(2)))


def test_early_stopping_restores_the_best_valid_state() -> None:
    split = block_split()
    model = make_baseline("bpr", lr=0.05, batch_size=64, epochs=200, eval_every=1, patience=2).fit(split)

    history = model.history
    assert max(history.valid_ndcg) < 200  # stopped early
    assert history.best_ndcg == max(history.valid_ndcg.values())
    assert evaluate(model, split, "valid", ks=(10,))["ndcg@10"] == pytest.approx(history.best_ndcg)


def test_training_without_valid_runs_the_given_epochs() -> None:
    split = block_split().merge_valid_into_train()
    model = make_baseline("lightgcn", lr=0.05, batch_size=64, epochs=3).fit(split)

    assert model.history.valid_ndcg == {}
    assert model.history.best_epoch == 3


def test_fit_and_evaluate_picks_epochs_on_valid_then_tests() -> None:
    result = fit_and_evaluate("bpr", block_split(), ks=(5, 10), **FAST["bpr"])

    assert result.epochs in (5, 10, 15, 20, 25, 30)
    assert result.valid_ndcg is not None and result.valid_ndcg > 0.3
    assert {"recall@5", "ndcg@10", "coverage@10", "avg_pop@5"} <= result.test.keys()
    assert fit_and_evaluate("pop", block_split(), ks=(5,)).epochs is None


def test_trainable_baselines_are_reproducible_with_a_seed() -> None:
    split = block_split()
    first = make_baseline("lightgcn", seed=3, **FAST["lightgcn"]).fit(split).score(users_of(split, [0, 1]))
    second = make_baseline("lightgcn", seed=3, **FAST["lightgcn"]).fit(split).score(users_of(split, [0, 1]))
    assert torch.equal(first, second)


def test_make_baseline_unknown_name_lists_the_allowed_ones() -> None:
    expected = r"Unknown baseline 'knn'; choose from \['bpr', 'itemknn', 'lightgcn', 'pop', 'sasrec'\]"
    with pytest.raises(ConfigError, match=expected):
        make_baseline("knn")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="does not take"):
        make_baseline("pop", lr=0.1)
    with pytest.raises(ConfigError, match="lr > 0"):
        make_baseline("bpr", lr=-1.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_baselines_train_and_score_on_cuda() -> None:
    split = block_split()
    for name in sorted(BASELINES):
        model = make_baseline(name, **FAST.get(name, {})).fit(split, device="cuda")
        assert model.score(users_of(split, [0, 1])).device.type == "cuda"
        assert evaluate(model, split, "test", ks=(5,))["users"] == 40
