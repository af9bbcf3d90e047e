"""The ranking's top-n of wide rows: topk's values, with a fixed tie order."""

from __future__ import annotations

import pytest
import torch

from kgrec.rank.engine import columns_at_least, nth_floor, top_n


@pytest.mark.parametrize("width", [30, 5_000, 100_003])
def test_top_n_is_topk_with_ties_to_the_lower_column(width):
    generator = torch.Generator().manual_seed(width)
    values = torch.randn(3, width, generator=generator)
    values[0, ::7] = -torch.inf  # excluded products
    values[1] = values[1].round(decimals=1)  # many ties
    n = min(200, width)
    assert (nth_floor(values, n) <= values.topk(n, dim=1).values[:, -1]).all()
    top_values, top_index = top_n(values, n)
    assert torch.equal(top_values, values.topk(n, dim=1).values)
    assert torch.equal(values.gather(1, top_index), top_values)
    for row in range(3):  # among equal values, the lower columns come first and are the ones kept
        assert top_index[row].tolist() == sorted(range(width), key=lambda j: (-values[row, j].item(), j))[:n]


def test_top_n_of_a_row_alone_equals_its_place_in_a_batch():
    generator = torch.Generator().manual_seed(1)
    values = torch.randn(4, 50_000, generator=generator).round(decimals=2)
    batch_values, batch_index = top_n(values, 200)
    for row in range(4):
        alone_values, alone_index = top_n(values[row : row + 1], 200)
        assert torch.equal(alone_index[0], batch_index[row]) and torch.equal(alone_values[0], batch_values[row])


def test_columns_at_least_lists_each_rows_columns_padded():
    values = torch.tensor([[0.1, 0.9, 0.5, 0.0, float("nan")], [0.8, 0.2, 0.95, 0.3, 0.4]])
    assert columns_at_least(values, torch.tensor([0.5, 0.3])).tolist() == [[1, 2, -1, -1], [0, 2, 3, 4]]
    assert columns_at_least(values, torch.tensor([1.0, 0.9])).tolist() == [[-1], [2]]
    assert columns_at_least(values[:1], torch.tensor([0.5])).tolist() == [[1, 2]]
