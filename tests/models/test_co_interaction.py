"""Co-interaction scores: the similarity, each user's scaled sums, candidates, new products, the saved state."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from kgrec.models.co_interaction import CoInteractions, item_similarity
from kgrec.models.history import Histories


def histories(rows: list[list[int]]) -> Histories:
    """One user per list of product indices (oldest first)."""
    users = torch.tensor([u for u, row in enumerate(rows) for _ in row], dtype=torch.long)
    products = torch.tensor([p for row in rows for p in row], dtype=torch.long)
    order = torch.arange(len(products))
    return Histories.from_events(users, products, order, torch.ones(len(products)), len(rows))


def test_item_similarity_is_cosine_without_self_and_keeps_top_neighbours() -> None:
    # users × products: p0 and p1 share users 0 and 1; p2 only shares user 1 with them
    user_items = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=np.float32))

    full = item_similarity(user_items, neighbours=10).toarray()
    assert full[0, 1] == pytest.approx(2 / (np.sqrt(2) * np.sqrt(2)))
    assert full[0, 2] == pytest.approx(1 / (np.sqrt(2) * np.sqrt(2)))
    assert np.diag(full).tolist() == [0.0, 0.0, 0.0]

    top1 = item_similarity(user_items, neighbours=1).toarray()
    assert (top1 > 0).sum(axis=1).tolist() == [1, 1, 1]
    assert top1[0].argmax() == 1 and top1[1].argmax() == 0

    shrunk = item_similarity(user_items, neighbours=10, shrink=2.0).toarray()
    assert shrunk[0, 1] == pytest.approx(2 / (2 + 2))


@pytest.fixture
def co() -> CoInteractions:
    # p0 and p1 bought together by users 0, 1; p1 and p2 by user 2; p3 with nothing else
    user_items = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    return CoInteractions.fit(user_items, neighbours=10)


def test_a_users_scores_are_their_products_similarities_summed_and_scaled_to_the_best(co) -> None:
    s01, s12 = 2 / (np.sqrt(2) * np.sqrt(3)), 1 / (np.sqrt(3) * 1)
    scores = co.scores(histories([[0], [0, 2], [3]]))

    assert scores[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])  # only p1 is tied to p0
    # p1 is tied to both p0 and p2: the sum, which is the user's best, scales to 1
    assert scores[1].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])
    assert co.raw(histories([[0, 2]])).toarray()[0, 1] == pytest.approx(s01 + s12)
    assert scores[2].tolist() == [0.0, 0.0, 0.0, 0.0]  # no co-interactions: nothing added


def test_sums_match_a_sparse_product_over_random_histories() -> None:
    # The gathered rows summed per (user, product) are the history rows times the similarity.
    rng = np.random.default_rng(0)
    user_items = sp.random(60, 40, density=0.15, format="csr", random_state=1, dtype=np.float32)
    co = CoInteractions.fit(user_items, neighbours=5)
    rows = [sorted(rng.choice(40, size=rng.integers(0, 8), replace=False).tolist()) for _ in range(12)]
    users = histories(rows)

    binary = np.zeros((len(rows), 40), dtype=np.float32)
    for u, row in enumerate(rows):
        binary[u, row] = 1.0
    expected = binary @ co.similarity.toarray()
    assert np.allclose(co.raw(users).toarray(), expected, atol=1e-6)
    best = expected.max(axis=1, keepdims=True)
    assert np.allclose(co.scores(users).numpy(), np.divide(expected, best, out=np.zeros_like(expected), where=best > 0), atol=1e-6)


def test_reach_keeps_the_strongest_links_each_product_passes_on() -> None:
    # p0 is bought with every other product, so it sits in every product's neighbours.
    user_items = sp.csr_matrix(
        np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 0, 1], [0, 1, 1, 0, 0]], dtype=np.float32)
    )
    every = CoInteractions.fit(user_items, neighbours=10)
    reach2 = CoInteractions.fit(user_items, neighbours=10, reach=2)

    assert every.similarity[0].nnz == 4  # p0's events reach all four other products
    assert reach2.similarity[0].nnz == 2
    kept, all_links = reach2.similarity[0].toarray()[0], every.similarity[0].toarray()[0]
    assert np.array_equal(kept[kept > 0], all_links[kept > 0])  # kept links keep their similarity
    assert sorted(kept[kept > 0]) == sorted(np.sort(all_links)[-2:])  # and they are the two strongest
    assert max(np.diff(reach2.similarity.indptr)) <= 2


def test_new_products_get_zero_columns_and_are_ignored_in_a_history(co) -> None:
    scores = co.scores(histories([[0, 5]]), num_products=6)

    assert scores.shape == (1, 6)
    assert scores[0].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0, 0.0, 0.0])


def test_scores_at_candidates_equal_the_dense_scores_there(co) -> None:
    users = histories([[0, 2], [1], [3]])
    index = torch.tensor([[1, 0, -1, 5], [2, 0, 3, -1], [0, 1, 2, 3]])

    at = co.scores_at(co.entries(users), index)
    dense = torch.nn.functional.pad(co.scores(users), (0, 2))
    expected = dense.gather(1, index.clamp(min=0)).masked_fill(index < 0, 0.0)
    assert torch.allclose(at, expected)
    assert at[1].tolist() == pytest.approx([dense[1, 2].item(), dense[1, 0].item(), 0.0, 0.0])
    assert dense[1, 2] > 0 and dense[1, 0] > 0
    # A batch in which nobody has co-interactions adds nothing.
    assert torch.equal(co.scores_at(co.entries(histories([[3]])), torch.tensor([[0, 1, -1]])), torch.zeros(1, 3))


def test_top_lists_each_users_best_products_first(co) -> None:
    top = co.top(co.entries(users := histories([[1], [3], [1, 0]])), users, 3)

    assert top[0].tolist() == [0, 2, -1]  # p0 shares two of p1's users, p2 one; p3 none
    assert top[1].tolist() == [-1, -1, -1]
    assert top[2].tolist() == [2, -1, -1]  # the user's own p0 and p1 are left out


def test_saved_state_round_trips(co) -> None:
    again = CoInteractions.from_state(co.state())

    assert again.num_products == 4
    assert (again.similarity != co.similarity).nnz == 0
