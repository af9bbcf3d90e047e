"""Placing products added after training: the mean of what they link to, by part."""

from __future__ import annotations

import polars as pl
import torch
import torch.nn.functional as F

from kgrec.rank.new_products import embed_new_products
from kgrec.snapshot.idmap import IdMap


def _space():
    torch.manual_seed(0)
    return {
        "product_embedding": F.normalize(torch.randn(6, 4), dim=-1),
        "product_ids": IdMap([f"p{i}" for i in range(6)]),
        "brand_embedding": F.normalize(torch.randn(2, 4), dim=-1),
        "brand_ids": IdMap(["acme", "zenith"]),
        "category_embedding": F.normalize(torch.randn(3, 4), dim=-1),
        "category_ids": IdMap(["A", "A > B", "C"]),
    }


def _products(rows):
    schema = {"brand": pl.Utf8, "categories": pl.List(pl.Utf8), "related": pl.List(pl.Utf8)}
    return pl.DataFrame(rows, schema=schema, orient="row")


def test_each_part_weighs_the_same_and_unknown_names_are_ignored():
    space = _space()
    products = _products([("zenith", ["A", "C", "nowhere"], ["p1", "p2", "p3", "p4", "gone"])])
    embedding, placed = embed_new_products(products, **space)
    brand = space["brand_embedding"][1]
    categories = space["category_embedding"][[0, 2]].mean(0)
    related = space["product_embedding"][1:5].mean(0)
    expected = F.normalize((brand + categories + related) / 3, dim=-1)
    assert placed.tolist() == [True]
    assert torch.allclose(embedding[0], expected, atol=1e-6)


def test_a_product_with_nothing_known_is_not_placed():
    space = _space()
    products = _products([("unknown brand", ["nowhere"], []), ("acme", [], [])])
    embedding, placed = embed_new_products(products, **space)
    assert placed.tolist() == [False, True]
    assert embedding.shape == (1, 4)
    assert torch.allclose(embedding[0], space["brand_embedding"][0], atol=1e-6)


def test_text_neighbours_pull_the_product_towards_products_with_similar_text():
    space = _space()
    catalog_text = torch.eye(6, 5)  # product i has text direction i (the last is all zero)
    new_text = torch.tensor([[0.0, 0.0, 1.0, 0.1, 0.0]])  # closest to p2
    embedding, placed = embed_new_products(
        _products([(None, [], [])]), **space, new_text=new_text, catalog_text=catalog_text, text_neighbours=1
    )
    assert placed.tolist() == [True]
    assert torch.allclose(embedding[0], space["product_embedding"][2], atol=1e-6)
