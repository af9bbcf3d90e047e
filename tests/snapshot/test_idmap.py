"""IdMap: the only id ↔ index conversion."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from kgrec.errors import KgrecError, SchemaError, UnknownProductError, UnknownUserError
from kgrec.snapshot import IdMap


def test_idmap_index_and_id_are_inverse() -> None:
    products = IdMap(["p1", "p2", "p3"], kind="product")

    assert len(products) == 3
    assert [products.index(i) for i in ["p1", "p2", "p3"]] == [0, 1, 2]
    assert [products.id(i) for i in range(3)] == ["p1", "p2", "p3"]
    assert "p2" in products and "p9" not in products
    assert products.ids.to_list() == ["p1", "p2", "p3"]


def test_idmap_indices_is_vectorised_and_keeps_order() -> None:
    products = IdMap(pl.Series([f"p{i}" for i in range(1000)]), kind="product")
    query = pl.Series(["p999", "p0", "p500", "p0"])

    found = products.indices(query)

    assert found.dtype == np.int64
    assert found.tolist() == [999, 0, 500, 0]
    assert products.indices(["p7"]).tolist() == [7]
    assert products.ids_at(torch.tensor([999, 1])) == ["p999", "p1"]


def test_idmap_unknown_product_raises_product_error_naming_ids() -> None:
    products = IdMap(["p1", "p2"], kind="product")

    with pytest.raises(UnknownProductError, match=r"Unknown product 'p9': not among the 2 products"):
        products.index("p9")
    with pytest.raises(UnknownProductError, match=r"'x', 'y'"):
        products.indices(["p1", "x", "y"])


def test_idmap_unknown_user_raises_user_error_with_next_step() -> None:
    users = IdMap(["u1"], kind="user")

    with pytest.raises(UnknownUserError, match="run kgrec build-graph"):
        users.index("u42")


def test_idmap_non_strict_indices_mark_unknown_with_minus_one() -> None:
    brands = IdMap(["Acme", "Bobo"], kind="brand")

    assert brands.indices(["Bobo", "Zed", None], strict=False).tolist() == [1, -1, -1]
    assert brands.get("Zed") is None
    with pytest.raises(KgrecError):
        brands.index("Zed")


def test_idmap_out_of_range_index_raises() -> None:
    products = IdMap(["p1"], kind="product")
    with pytest.raises(UnknownProductError, match="valid indices are 0..0"):
        products.id(3)
    with pytest.raises(UnknownProductError):
        products.ids_at([0, -1])


def test_idmap_rejects_duplicate_and_null_ids() -> None:
    with pytest.raises(SchemaError, match=r"must be unique; found duplicates \['a'\]"):
        IdMap(["a", "b", "a"])
    with pytest.raises(SchemaError, match="null"):
        IdMap(pl.Series(["a", None]))


def test_short_and_long_id_lists_are_looked_up_alike() -> None:
    ids = IdMap([f"p{i}" for i in range(3000)], kind="product")
    wanted = [f"p{i}" for i in range(2999, -1, -2)] + ["missing"]
    long = ids.indices(wanted, strict=False)  # a polars join
    short = np.concatenate([ids.indices(wanted[i : i + 100], strict=False) for i in range(0, len(wanted), 100)])
    assert long.tolist() == short.tolist()
    assert long[0] == 2999 and long[-1] == -1
    with pytest.raises(UnknownProductError, match="'missing'"):
        ids.indices(["p1", "missing"])
