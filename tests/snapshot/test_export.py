"""Exporting the graph in Neo4j to a snapshot, one page of nodes at a time."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from kgrec.errors import GraphStoreError
from kgrec.ingest.synthetic import write_sample_shop
from kgrec.ingest.validate import load_tables
from kgrec.pipeline import export_graph
from kgrec.snapshot import load_snapshot, write_snapshot
from kgrec.store.config import StoreConfig
from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import write_graph

SNAPSHOT_FILES = ("products", "interactions", "relations", "users", "ids/user", "ids/product", "ids/brand", "ids/category")


@pytest.fixture
def sample_tables(tmp_path: Path):
    shop = write_sample_shop(tmp_path / "shop", num_products=60, num_users=30, events_per_user=6, seed=7)
    tables, _ = load_tables(shop["products"], shop["interactions"], shop["relations"], shop["users"])
    return tables


def test_export_graph_in_pages_of_7_gives_the_snapshot_of_one_page(graph_store: GraphStore, sample_tables, tmp_path: Path) -> None:
    write_graph(graph_store, sample_tables)
    paged = export_graph(StoreConfig(batch_size=7), tmp_path / "paged")
    whole = export_graph(StoreConfig(batch_size=100_000), tmp_path / "whole")

    assert paged.content_hash == whole.content_hash
    assert paged.manifest["counts"] == whole.manifest["counts"]
    assert paged.manifest["counts"]["products"] == 60 and paged.manifest["counts"]["users"] == 30
    for file in SNAPSHOT_FILES:
        assert (tmp_path / "paged" / f"{file}.parquet").read_bytes() == (tmp_path / "whole" / f"{file}.parquet").read_bytes(), file
    load_snapshot(tmp_path / "paged", verify=True)  # the hash and the id maps check out


def test_export_graph_holds_exactly_the_tables_that_were_written(graph_store: GraphStore, sample_tables, tmp_path: Path) -> None:
    write_graph(graph_store, sample_tables)
    exported = export_graph(StoreConfig(batch_size=7), tmp_path / "exported")
    # The graph keeps a user's attributes as properties; the export lists them by name.
    users = sample_tables.users.select("user_id", *sorted(sample_tables.users.columns[1:]))
    direct = write_snapshot(replace(sample_tables, users=users), tmp_path / "direct")

    assert exported.content_hash == direct.content_hash
    for name in ("products", "interactions", "relations", "users"):
        assert getattr(exported.tables, name).equals(getattr(direct.tables, name)), name


def test_export_graph_refuses_nodes_it_cannot_page_and_writes_nothing(graph_store: GraphStore, sample_tables, tmp_path: Path) -> None:
    write_graph(graph_store, sample_tables)
    graph_store.run("CREATE (:Product {id: 42, title: 'written by another tool'})")

    with pytest.raises(GraphStoreError, match=r"1 Product node\(s\) have an id that is not a non-empty string"):
        export_graph(StoreConfig(batch_size=7), tmp_path / "snap")
    assert list(tmp_path.glob("snap*")) == [] and list(tmp_path.glob(".snap*")) == []
