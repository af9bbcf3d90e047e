"""The synthetic shop: deterministic, loadable, and with its planted structure visible."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from kgrec.ingest.synthetic import generate_sample_shop, write_sample_shop
from kgrec.ingest.validate import load_tables

SMALL = {"num_products": 200, "num_users": 100, "events_per_user": 20}


@pytest.fixture(scope="module")
def shop():
    return generate_sample_shop(**SMALL, seed=0)


def test_write_sample_shop_same_seed_gives_same_bytes(tmp_path: Path) -> None:
    first = write_sample_shop(tmp_path / "a", **SMALL, seed=3)
    second = write_sample_shop(tmp_path / "b", **SMALL, seed=3)
    assert set(first) == {"products", "interactions", "relations", "users"}
    for name in first:
        assert first[name].read_bytes() == second[name].read_bytes(), name


def test_write_sample_shop_different_seed_differs(tmp_path: Path) -> None:
    first = write_sample_shop(tmp_path / "a", **SMALL, seed=1)
    second = write_sample_shop(tmp_path / "b", **SMALL, seed=2)
    assert first["interactions"].read_bytes() != second["interactions"].read_bytes()
    assert first["products"].read_bytes() != second["products"].read_bytes()


@pytest.mark.parametrize("file_format", ["csv", "jsonl", "parquet"])
def test_write_sample_shop_loads_cleanly(tmp_path: Path, file_format: str) -> None:
    paths = write_sample_shop(tmp_path, **SMALL, seed=0, file_format=file_format)
    assert paths["products"].name == f"products.{file_format}"
    tables, report = load_tables(**{name: path for name, path in paths.items()})
    assert tables.num_products == 200 and tables.num_users == 100
    assert all(count == 0 for count in report.skipped.values()), report.skipped
    assert report.notes == []
    assert tables.relations.height > 200
    assert tables.products["categories"].list.len().min() == 1
    # events_per_user is a mean
    assert 15 * 100 < tables.num_interactions < 25 * 100


def test_generate_sample_shop_category_tree_has_three_levels(shop) -> None:
    depth = shop.products["category"].str.count_matches(" > ") + 1
    assert depth.unique().to_list() == [3]
    assert 4 <= shop.products["category"].str.split(" > ").list.first().n_unique() <= 6


def test_generate_sample_shop_brands_concentrate_in_one_department(shop) -> None:
    department = shop.products.select("brand", pl.col("category").str.split(" > ").list.first().alias("department"))
    share = department.group_by("brand").agg(
        (pl.col("department") == pl.col("department").mode().first()).mean().alias("share"), pl.len()
    )
    assert shop.products["brand"].n_unique() == 20
    assert share.filter(pl.col("len") >= 5)["share"].mean() > 0.8


def test_generate_sample_shop_events_concentrate_in_favourites(shop) -> None:
    events = (
        shop.interactions.join(shop.products.select("product_id", "brand", "category"), on="product_id")
        .join(shop.preferences, on="user_id")
        .with_columns(
            favourite=pl.col("favourite_categories").list.contains(pl.col("category"))
            | pl.col("favourite_brands").list.contains(pl.col("brand"))
        )
    )
    share = dict(events.group_by("event").agg(pl.col("favourite").mean()).iter_rows())
    assert share["view"] > 0.65
    assert share["purchase"] > 0.75
    # A user's favourites are a small part of the catalog, so this is far above chance.
    in_favourites = shop.products.join(shop.preferences.explode("favourite_categories"), how="cross").filter(
        pl.col("category") == pl.col("favourite_categories")
    )
    assert in_favourites.height / (shop.products.height * shop.preferences.height) < 0.2


def test_generate_sample_shop_funnel_narrows(shop) -> None:
    counts = dict(shop.interactions["event"].value_counts().iter_rows())
    assert counts["view"] > 2 * counts["cart"]
    assert counts["view"] > counts["click"] > counts["cart"] > counts["purchase"] > 0


def test_generate_sample_shop_popularity_has_a_long_tail(shop) -> None:
    per_product = shop.interactions.group_by("product_id").len().sort("len", descending=True)["len"]
    top_decile = per_product.head(len(shop.products) // 10).sum()
    assert top_decile / per_product.sum() > 0.3


def test_generate_sample_shop_timestamps_span_about_90_days(shop) -> None:
    times = shop.interactions["timestamp"].str.to_datetime("%Y-%m-%dT%H:%M:%SZ")
    assert times.is_sorted()
    assert 80 <= (times.max() - times.min()).days <= 91


def test_generate_sample_shop_rejects_tiny_sizes() -> None:
    with pytest.raises(ValueError, match="num_products"):
        generate_sample_shop(num_products=5)


@pytest.mark.parametrize("file_format", ["csv", "jsonl", "parquet"])
def test_write_sample_shop_in_small_chunks_gives_the_content_of_one_chunk(tmp_path: Path, file_format: str) -> None:
    chunked = write_sample_shop(tmp_path / "chunked", **SMALL, seed=5, file_format=file_format, chunk_rows=7)
    whole = write_sample_shop(tmp_path / "whole", **SMALL, seed=5, file_format=file_format, chunk_rows=10**9)
    shop = generate_sample_shop(**SMALL, seed=5)
    for name in ("products", "interactions", "relations", "users"):
        if file_format == "parquet":
            assert pl.read_parquet(chunked[name]).equals(getattr(shop, name)), name
            assert pl.read_parquet(whole[name]).equals(getattr(shop, name)), name
        else:  # text formats: byte for byte, and those of the in-memory shop written whole
            frame = getattr(shop, name)
            expected = frame.write_csv(float_precision=2) if file_format == "csv" else frame.write_ndjson()
            assert chunked[name].read_bytes() == whole[name].read_bytes() == expected.encode(), name


def test_generate_sample_shop_popularity_exponent_sets_the_skew() -> None:
    def top_decile_share(exponent: float) -> float:
        shop = generate_sample_shop(**SMALL, seed=0, popularity_exponent=exponent)
        # Only the visits that follow global popularity, not a user's favourites, show the skew;
        # the purchases of all visits still concentrate more as the exponent grows.
        per_product = shop.interactions.group_by("product_id").len().sort("len", descending=True)["len"]
        return per_product.head(SMALL["num_products"] // 10).sum() / per_product.sum()

    assert top_decile_share(0.0) < top_decile_share(0.9) < top_decile_share(1.5)
    with pytest.raises(ValueError, match="popularity_exponent"):
        generate_sample_shop(**SMALL, popularity_exponent=-1.0)


def test_generate_sample_shop_default_exponent_is_the_documented_one(tmp_path: Path) -> None:
    default = write_sample_shop(tmp_path / "a", **SMALL, seed=2)
    explicit = write_sample_shop(tmp_path / "b", **SMALL, seed=2, popularity_exponent=0.9)
    assert default["interactions"].read_bytes() == explicit["interactions"].read_bytes()
