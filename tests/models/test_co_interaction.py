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
