"""Snapshot write / load / hash on a tiny planted shop."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from kgrec.errors import SchemaError, SnapshotError
from kgrec.ingest.tables import INTERACTION_SCHEMA, PRODUCT_SCHEMA, RELATION_SCHEMA, GraphTables
from kgrec.snapshot import VERSION, content_hash, load_snapshot, snapshot_from_tables, write_snapshot, write_snapshot_batches


def make_tables(shuffle_seed: int | None = None) -> GraphTables:
    products = pl.DataFrame(
        {
            "product_id": ["p3", "p1", "p2", "p4"],
            "title": ["Mascara", "Lipstick", "Shampoo", None],
            "description": [None, "red", None, None],
            "price": [9.5, 12.0, None, 3.0],
            "brand": ["Acme", "Acme", "Bobo", None],
            "categories": [["Beauty > Makeup > Eyes"], ["Beauty > Makeup > Lips"], ["Beauty > Hair"], []],
        },
        schema=PRODUCT_SCHEMA,
    )
    interactions = pl.DataFrame(
        {
            "user_id": ["u2", "u1", "u1", "u1", "u2"],
            "product_id": ["p2", "p1", "p3", "p1", "p4"],
            "event": ["view", "view", "purchase", "purchase", "cart"],
            "timestamp": [5, 1, 2, 3, 4],
            "value": [None, None, 9.5, 12.0, None],
            "weight": [1.0, 1.0, 5.0, 5.0, 3.0],
        },
        schema=INTERACTION_SCHEMA,
    )
    relations = pl.DataFrame(
        {"product_id": ["p1", "p3"], "relation": ["also_bought", "also_bought"], "related_product_id": ["p3", "p1"]},
        schema=RELATION_SCHEMA,
    )
    users = pl.DataFrame({"user_id": ["u2", "u1", "u3"], "segment": ["b", "a", None]})
    if shuffle_seed is not None:
        products, interactions, relations, users = (
            frame.sample(fraction=1.0, shuffle=True, seed=shuffle_seed)
            for frame in (products, interactions, relations, users)
        )
    return GraphTables(products=products, interactions=interactions, relations=relations, users=users)


def test_write_snapshot_round_trip_keeps_sorted_tables(tmp_path: Path) -> None:
    written = write_snapshot(make_tables(), tmp_path / "snap")
    loaded = load_snapshot(tmp_path / "snap", verify=True)

    assert sorted(p.name for p in (tmp_path / "snap").iterdir()) == [
        "ids",
        "interactions.parquet",
        "manifest.json",
        "products.parquet",
        "relations.parquet",
        "users.parquet",
    ]
    id_files = {p.name: pl.read_parquet(p).get_column("id").to_list() for p in (tmp_path / "snap" / "ids").iterdir()}
    assert id_files["product.parquet"] == ["p1", "p2", "p3", "p4"]
    assert id_files["user.parquet"] == loaded.user_ids.ids.to_list()
    assert set(id_files) == {"user.parquet", "product.parquet", "brand.parquet", "category.parquet"}
    for name in ("products", "interactions", "relations", "users"):
        assert getattr(loaded.tables, name).equals(getattr(written.tables, name)), name
    assert loaded.tables.products.get_column("product_id").to_list() == ["p1", "p2", "p3", "p4"]
    assert loaded.tables.interactions.select("user_id", "timestamp").rows() == [
        ("u1", 1),
        ("u1", 2),
        ("u1", 3),
        ("u2", 4),
        ("u2", 5),
    ]
    assert loaded.path == tmp_path / "snap"
    assert loaded.content_hash == written.content_hash


def test_write_snapshot_manifest_holds_format_version_and_counts(tmp_path: Path) -> None:
    write_snapshot(make_tables(), tmp_path / "snap")
    manifest = json.loads((tmp_path / "snap" / "manifest.json").read_text())

    assert manifest["format"] == "kgrec-snapshot"
    assert manifest["version"] == VERSION
    assert manifest["counts"] == {
        "users": 3,
        "products": 4,
        "brands": 2,
        "categories": 5,  # Beauty, Beauty > Hair, Beauty > Makeup, ... > Eyes, ... > Lips
        "interactions": 5,
        "relations": 2,
    }
    assert {"kgrec_version", "created_at", "content_hash"} <= manifest.keys()


def test_snapshot_id_maps_follow_sorted_tables() -> None:
    snapshot = snapshot_from_tables(make_tables(shuffle_seed=3))

    assert snapshot.product_ids.ids.to_list() == ["p1", "p2", "p3", "p4"]
    assert snapshot.user_ids.ids.to_list() == ["u1", "u2", "u3"]
    assert snapshot.brand_ids.ids.to_list() == ["Acme", "Bobo"]
    assert snapshot.category_ids.index("Beauty > Makeup") == 2
    assert snapshot.user_ids is snapshot.user_ids  # cached


def test_content_hash_ignores_row_order_and_export_time(tmp_path: Path) -> None:
    first = write_snapshot(make_tables(), tmp_path / "a")
    second = write_snapshot(make_tables(shuffle_seed=7), tmp_path / "b")

    assert first.content_hash == second.content_hash == snapshot_from_tables(make_tables(shuffle_seed=1)).content_hash


def test_content_hash_changes_with_content() -> None:
    tables = make_tables()
    changed = GraphTables(
        products=tables.products.with_columns(
            pl.when(pl.col("product_id") == "p1").then(13.0).otherwise("price").alias("price")
        ),
        interactions=tables.interactions,
        relations=tables.relations,
        users=tables.users,
    )
    assert snapshot_from_tables(changed).content_hash != snapshot_from_tables(tables).content_hash
    assert content_hash(snapshot_from_tables(tables).tables) == snapshot_from_tables(tables).content_hash


def test_write_snapshot_replaces_an_old_snapshot_and_leaves_no_temp_dirs(tmp_path: Path) -> None:
    write_snapshot(make_tables(), tmp_path / "snap")
    tables = make_tables()
    smaller = GraphTables(tables.products, tables.interactions.head(2), tables.relations, tables.users)
    write_snapshot(smaller, tmp_path / "snap")

    assert load_snapshot(tmp_path / "snap").tables.num_interactions == 2
    assert [p.name for p in tmp_path.iterdir()] == ["snap"]


def test_write_snapshot_refuses_a_directory_that_is_not_a_snapshot(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "notes.txt").write_text("keep me")

    with pytest.raises(SnapshotError, match="not a kgrec snapshot"):
        write_snapshot(make_tables(), tmp_path / "docs")
    assert (tmp_path / "docs" / "notes.txt").read_text() == "keep me"


def test_write_snapshot_rejects_interaction_with_unknown_product(tmp_path: Path) -> None:
    tables = make_tables()
    products = tables.products.filter(pl.col("product_id") != "p4")
    bad = GraphTables(products, tables.interactions, tables.relations, tables.users)

    with pytest.raises(SchemaError, match=r"product_id value\(s\) have no row in the products table.*p4"):
        write_snapshot(bad, tmp_path / "snap")
    assert not (tmp_path / "snap").exists()


def test_load_snapshot_missing_dir_names_path_and_command(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match=r"nowhere does not exist.*kgrec export-graph --out"):
        load_snapshot(tmp_path / "nowhere")


def test_load_snapshot_missing_manifest(tmp_path: Path) -> None:
    (tmp_path / "snap").mkdir()
    with pytest.raises(SnapshotError, match=r"has no manifest.json.*re-export"):
        load_snapshot(tmp_path / "snap")


def test_load_snapshot_wrong_format(tmp_path: Path) -> None:
    write_snapshot(make_tables(), tmp_path / "snap")
    _edit_manifest(tmp_path / "snap", format="something-else")
    with pytest.raises(SnapshotError, match=r"format 'something-else', expected 'kgrec-snapshot'"):
        load_snapshot(tmp_path / "snap")


def test_load_snapshot_newer_version_says_to_re_export(tmp_path: Path) -> None:
    write_snapshot(make_tables(), tmp_path / "snap")
    _edit_manifest(tmp_path / "snap", version=2)
    expected = r"snapshot version 2, this kgrec reads version 1: re-export with `kgrec export-graph"
    with pytest.raises(SnapshotError, match=expected):
        load_snapshot(tmp_path / "snap")


def test_load_snapshot_missing_table_file(tmp_path: Path) -> None:
    write_snapshot(make_tables(), tmp_path / "snap")
    (tmp_path / "snap" / "relations.parquet").unlink()
    with pytest.raises(SnapshotError, match=r"missing relations.parquet"):
        load_snapshot(tmp_path / "snap")


def test_load_snapshot_verify_detects_edited_tables(tmp_path: Path) -> None:
    snapshot = write_snapshot(make_tables(), tmp_path / "snap")
    snapshot.tables.users.head(2).write_parquet(tmp_path / "snap" / "users.parquet")

    load_snapshot(tmp_path / "snap")  # without verify the edit goes unnoticed
    with pytest.raises(SnapshotError, match="changed after export"):
        load_snapshot(tmp_path / "snap", verify=True)


def test_load_snapshot_verify_checks_the_id_map_files(tmp_path: Path) -> None:
    write_snapshot(make_tables(), tmp_path / "snap")
    pl.DataFrame({"id": ["p4", "p3", "p2", "p1"]}).write_parquet(tmp_path / "snap" / "ids" / "product.parquet")

    with pytest.raises(SnapshotError, match="id maps in ids/ disagree"):
        load_snapshot(tmp_path / "snap", verify=True)


def _edit_manifest(root: Path, **changes: object) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def key_range_batches(frame: pl.DataFrame, key: str, keys_per_batch: int, seed: int = 0) -> list[pl.DataFrame]:
    """``frame`` cut into batches of ``keys_per_batch`` consecutive ``key`` values, rows shuffled
    inside each batch: how an export's pages come."""
    keys = frame.get_column(key).unique().sort()
    batches = []
    for start in range(0, max(keys.len(), 1), keys_per_batch):
        chosen = keys.slice(start, keys_per_batch)
        batch = frame.filter(pl.col(key).is_in(chosen.implode()))
        batches.append(batch.sample(fraction=1.0, shuffle=True, seed=seed))
    return batches


FIRST_KEYS = {"products": "product_id", "interactions": "user_id", "relations": "product_id", "users": "user_id"}


@pytest.mark.parametrize("keys_per_batch", [1, 2, 1000])
def test_write_snapshot_batches_gives_the_snapshot_of_the_whole_tables(tmp_path: Path, keys_per_batch: int) -> None:
    tables = make_tables(shuffle_seed=3)
    whole = write_snapshot(tables, tmp_path / "whole")
    batches = {name: key_range_batches(getattr(tables, name), key, keys_per_batch) for name, key in FIRST_KEYS.items()}
    batched = write_snapshot_batches(batches, tmp_path / "batched")

    assert batched.content_hash == whole.content_hash
    assert batched.manifest["counts"] == whole.manifest["counts"]
    for file in ("products", "interactions", "relations", "users", "ids/user", "ids/product", "ids/brand", "ids/category"):
        assert pl.read_parquet(tmp_path / "batched" / f"{file}.parquet").equals(
            pl.read_parquet(tmp_path / "whole" / f"{file}.parquet")
        ), file
    loaded = load_snapshot(tmp_path / "batched", verify=True)  # hash and id maps check out
    assert loaded.tables.interactions.equals(whole.tables.interactions)
    # The returned snapshot reads its tables from the files when first asked.
    assert batched.tables.products.equals(whole.tables.products)
    assert batched.product_ids == whole.product_ids


def test_write_snapshot_batches_refuses_batches_out_of_order_and_writes_nothing(tmp_path: Path) -> None:
    tables = make_tables()
    batches = {name: key_range_batches(getattr(tables, name), key, 1) for name, key in FIRST_KEYS.items()}
    batches["interactions"] = batches["interactions"][::-1]  # u2's events before u1's

    with pytest.raises(SnapshotError, match=r"interactions: a batch starts at user_id 'u1', not after .*'u2'"):
        write_snapshot_batches(batches, tmp_path / "snap")
    assert list(tmp_path.iterdir()) == []


def test_write_snapshot_batches_of_an_empty_graph_is_a_loadable_snapshot(tmp_path: Path) -> None:
    empty = {"products": PRODUCT_SCHEMA, "interactions": INTERACTION_SCHEMA, "relations": RELATION_SCHEMA, "users": {"user_id": pl.Utf8}}
    written = write_snapshot_batches({name: [pl.DataFrame(schema=schema)] for name, schema in empty.items()}, tmp_path / "snap")
    loaded = load_snapshot(tmp_path / "snap", verify=True)
    assert written.manifest["counts"] == dict.fromkeys(("users", "products", "brands", "categories", "interactions", "relations"), 0)
    assert loaded.content_hash == snapshot_from_tables(loaded.tables).content_hash
