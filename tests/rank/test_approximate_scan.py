"""One user's catalog scan in bfloat16: the error bound holds, and ranking the approximate
scores, with the engine's exact rescoring, gives the list the exact scores give."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kgrec.rank.engine import ApproximateScores, columns_outside, nth_floor, top_n
from kgrec.rank.params import RankParams, Weights
from kgrec.rank.ranking import Catalog, rank
from kgrec.train.recommender import bfloat16_scan_error
from tests.rank.test_scoring import seen_histories


@pytest.mark.parametrize("width", [30, 5_000, 100_003])
def test_the_engines_top_n_is_topk_with_ties_to_the_lower_column(width):
    generator = torch.Generator().manual_seed(width)
    values = torch.randn(3, width, generator=generator)
    values[0, ::7] = -torch.inf  # excluded products
    values[1] = values[1].round(decimals=1)  # many ties
    n = min(200, width)
    floor = nth_floor(values, n)
    assert (floor <= values.topk(n, dim=1).values[:, -1]).all()
    top_values, top_index = top_n(values, n)
    assert torch.equal(top_values, values.topk(n, dim=1).values)
    assert torch.equal(values.gather(1, top_index), top_values)
    for row in range(3):  # among equal values, the lower columns come first and are the ones kept
        order = sorted(range(width), key=lambda j: (-values[row, j].item(), j))[:n]
        assert top_index[row].tolist() == order


def test_columns_outside_lists_each_rows_columns_at_either_end_padded():
    values = torch.tensor([[0.1, 0.9, 0.5, 0.0, float("nan")], [0.8, 0.2, 0.95, 0.3, 0.4]])
    columns = columns_outside(values, above=torch.tensor([0.9, 0.8]), below=torch.tensor([0.05, -1.0]))
    assert columns.tolist() == [[1, 3], [0, 2]]
    assert columns_outside(values, above=torch.tensor([1.0, 0.9])).tolist() == [[-1], [2]]


@pytest.mark.parametrize("dim", [64, 256])
def test_a_bfloat16_scan_stays_within_its_error_bound(dim):
    generator = torch.Generator().manual_seed(dim)
    products = torch.randn(20_000, dim, generator=generator) * torch.rand(20_000, 1, generator=generator) * 3
    users = torch.randn(4, dim, generator=generator) * torch.tensor([[0.1], [1.0], [5.0], [30.0]])
    exact = users @ products.T
    approximate = (users.bfloat16() @ products.T.bfloat16().contiguous()).float()
    bound = bfloat16_scan_error(users, dim, float(products.norm(dim=1).max()))
    error = (approximate - exact).abs().amax(dim=1)
    assert (error <= bound).all()
    assert (error > bound / 50).all()  # the bound is not vacuous: it is within 50x of what happens


def exact_and_noisy(b: int, num_products: int, error: float, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    products = F.normalize(torch.randn(num_products, 16, generator=generator), dim=-1)
    users = F.normalize(torch.randn(b, 16, generator=generator), dim=-1)
    exact = users @ products.T
    noise = (torch.rand(exact.shape, generator=generator) * 2 - 1) * error
    return products, exact, exact + noise


@pytest.mark.parametrize("weights", ["relevance=0.7,popularity=0.1,diversity=0.2", "relevance=0.8,popularity=0.2,diversity=0"])
def test_ranking_approximate_scores_gives_the_exact_ranking(weights):
    """Noise as large as 0.05 on cosines in [-1, 1] reorders the naive ranking of the
    approximate scores; the engine rescores what can matter and lists what the exact scores list."""
    b, num_products, error = 3, 20_000, 0.05
    products, exact, noisy = exact_and_noisy(b, num_products, error)
    popularity = torch.rand(num_products, generator=torch.Generator().manual_seed(1))
    catalog = Catalog(popularity, None, products)
    histories = seen_histories([[0, 5, 9], [], list(range(100, 160))], b)
    params = RankParams(Weights.parse(weights), 10, 200, 0.5, "minmax")
    asked = []

    def rescore(columns: torch.Tensor) -> torch.Tensor:
        asked.append(int((columns >= 0).sum()))
        return exact.gather(1, columns.clamp(min=0))

    expected = rank(exact, catalog, params, histories)
    got = rank(ApproximateScores(noisy.clone(), torch.full((b,), error), rescore), catalog, params, histories)
    naive = rank(noisy, catalog, params, histories)
    assert torch.equal(got.product_index, expected.product_index)
    for name in ("score", "relevance", "popularity", "diversity"):
        assert torch.allclose(getattr(got, name), getattr(expected, name), atol=1e-6), name
    assert not torch.equal(naive.product_index, expected.product_index)  # the noise matters
    assert sum(asked) < b * num_products / 4  # far fewer rescored than scanned


def test_approximate_scores_need_minmax_and_no_query():
    products, exact, noisy = exact_and_noisy(1, 500, 0.01)
    catalog = Catalog(torch.rand(500), None, products)
    approximate = ApproximateScores(noisy, torch.tensor([0.01]), lambda columns: exact.gather(1, columns.clamp(min=0)))
    with pytest.raises(ValueError, match="minmax"):
        rank(approximate, catalog, RankParams(Weights.parse("relevance=1"), 5, 50, 0.5, "rank"))
    with pytest.raises(ValueError, match="query"):
        rank(approximate, catalog, RankParams(Weights.parse("relevance=1"), 5, 50, 0.5, "minmax"), query=torch.rand(500))
