from __future__ import annotations

import polars as pl
import pytest
import torch

from kgrec.config import KgrecConfig
from kgrec.errors import GraphStoreError, GraphStoreUnavailable, ModelNotFoundError
from kgrec.ingest.tables import INTERACTION_SCHEMA, PRODUCT_SCHEMA, RELATION_SCHEMA, GraphTables
from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import (
    INTERACTION_PROCEDURE,
    RELATION_PROCEDURE,
    count_graph,
    read_graph,
    read_table_batches,
    relation_type,
    write_embeddings,
    write_graph,
    write_interactions,
    write_relations,
)
from kgrec.pipeline import import_embeddings
from kgrec.store.server import free_port

TRICKY_ID = "p\"'); MATCH (n) DETACH DELETE n //\\"
TRICKY_TITLE = 'Robert\'); DROP "table" \\ RETURN 1; MERGE (x) //'


def make_tables(extra_events: int = 0) -> GraphTables:
    products = pl.DataFrame(
        {
            "product_id": ["p1", "p2", "p3", TRICKY_ID],
            "title": ["Matte Eyeliner", "Gloss", None, TRICKY_TITLE],
            "description": ["long lasting", None, None, "MATCH (n) RETURN n"],
            "price": [9.5, 12.0, None, 1.0],
            "brand": ["Lumen", "Lumen", "Aster", None],
            "categories": [["Beauty > Makeup > Eyes"], ["Beauty > Makeup > Lips"], ["Beauty"], []],
        },
        schema=PRODUCT_SCHEMA,
    )
    events = [
        ("u1", "p1", "view", 100, None, 1.0),
        ("u1", "p1", "purchase", 200, None, 5.0),
        ("u1", "p2", "cart", 300, None, 3.0),
        ("u2", TRICKY_ID, "rating", 400, 4.0, 4.0),
        ("u2", "p3", "click", 500, None, 2.0),
    ]
    events += [("u3", "p2", "view", 1000 + i, None, 1.0) for i in range(extra_events)]
    interactions = pl.DataFrame(events, schema=INTERACTION_SCHEMA, orient="row")
    relations = pl.DataFrame(
        [("p1", "also_bought", "p2"), ("p2", "also_viewed", TRICKY_ID)], schema=RELATION_SCHEMA, orient="row"
    )
    users = pl.DataFrame({"user_id": sorted(interactions["user_id"].unique().to_list())})
    users = users.with_columns(pl.when(pl.col("user_id") == "u1").then(pl.lit("FR")).otherwise(None).alias("country"))
    return GraphTables(products=products, interactions=interactions, relations=relations, users=users)


def test_write_graph_creates_nodes_and_edges_of_every_kind(graph_store: GraphStore):
    summary = write_graph(graph_store, make_tables(), batch_size=2)
    totals = summary.totals
    assert (totals["User"], totals["Product"], totals["Brand"]) == (2, 4, 2)
    # Beauty, Beauty > Makeup, Beauty > Makeup > Eyes, Beauty > Makeup > Lips
    assert totals["Category"] == 4
    assert totals["SUBCATEGORY_OF"] == 3
    assert totals["INTERACTED"] == 5
    assert totals["MADE_BY"] == 3
    assert totals["IN_CATEGORY"] == 3
    assert totals["ALSO_BOUGHT"] == 1 and totals["ALSO_VIEWED"] == 1
    assert summary.created["nodes_created"] == 2 + 4 + 2 + 4


def test_write_graph_twice_changes_no_counts(graph_store: GraphStore):
    tables = make_tables()
    first = write_graph(graph_store, tables)
    second = write_graph(graph_store, tables)
    assert second.totals == first.totals
    assert second.created["nodes_created"] == 0
    assert second.created["relationships_created"] == 0


def test_write_graph_adds_new_events_incrementally(graph_store: GraphStore):
    write_graph(graph_store, make_tables())
    summary = write_graph(graph_store, make_tables(extra_events=3))
    assert summary.created["relationships_created"] == 3
    assert summary.created["nodes_created"] == 1  # the new user u3
    assert summary.totals["INTERACTED"] == 8


def test_read_graph_returns_what_was_written(graph_store: GraphStore):
    tables = make_tables()
    write_graph(graph_store, tables)
    back = read_graph(graph_store)
    assert back.products.sort("product_id").equals(tables.products.sort("product_id"))
    key = ["user_id", "product_id", "event", "timestamp"]
    assert back.interactions.sort(key).equals(tables.interactions.select(back.interactions.columns).sort(key))
    assert back.relations.sort("product_id").equals(tables.relations.sort("product_id"))
    assert back.users.sort("user_id").equals(tables.users.sort("user_id"))


def test_read_graph_leaves_out_the_embeddings_train_wrote_on_users(graph_store: GraphStore):
    tables = make_tables()
    write_graph(graph_store, tables)
    user_id = tables.users.get_column("user_id")[0]
    graph_store.run("MATCH (u:User {id: $id}) SET u.embedding = [0.1, 0.2], u.embedding_model = 'm1'", {"id": user_id})
    back = read_graph(graph_store)
    assert "embedding" not in back.users.columns and "embedding_model" not in back.users.columns
    assert back.users.sort("user_id").equals(tables.users.sort("user_id"))


def test_write_graph_stores_quotes_and_cypher_keywords_literally(graph_store: GraphStore):
    write_graph(graph_store, make_tables())
    rows = graph_store.read("MATCH (p:Product {id: $id}) RETURN p.title AS title", {"id": TRICKY_ID})
    assert rows == [{"title": TRICKY_TITLE}]
    assert count_graph(graph_store)["Product"] == 4  # nothing was deleted by the "injection"


def test_write_graph_replaces_a_changed_brand(graph_store: GraphStore):
    tables = make_tables()
    write_graph(graph_store, tables)
    rebranded = tables.products.with_columns(
        pl.when(pl.col("product_id") == "p1").then(pl.lit("Aster")).otherwise(pl.col("brand")).alias("brand")
    )
    write_graph(graph_store, GraphTables(rebranded, tables.interactions, tables.relations, tables.users))
    rows = graph_store.read("MATCH (:Product {id: 'p1'})-[:MADE_BY]->(b) RETURN b.name AS brand")
    assert rows == [{"brand": "Aster"}]


def _product(store: GraphStore, product_id: str) -> dict:
    """The product's stored fields; search_text (derived from its brand and categories) left out."""
    props = store.read("MATCH (p:Product {id: $id}) RETURN properties(p) AS props", {"id": product_id})[0]["props"]
    props.pop("search_text", None)
    return props


def test_write_graph_leaves_product_fields_the_tables_do_not_give(graph_store: GraphStore):
    tables = make_tables()
    write_graph(graph_store, tables)
    # A products file with only product_id and title: its other fields are null in the table.
    retitled = tables.products.head(1).with_columns(
        pl.lit("Matte Eyeliner 2").alias("title"), pl.lit(None, pl.Utf8).alias("description"), pl.lit(None, pl.Float64).alias("price")
    )
    write_graph(graph_store, GraphTables(retitled, tables.interactions.head(0), product_columns=frozenset({"title"})))
    assert _product(graph_store, "p1") == {"id": "p1", "title": "Matte Eyeliner 2", "description": "long lasting", "price": 9.5}
    untouched = GraphTables(tables.products.head(1), tables.interactions.head(0), product_columns=frozenset())
    write_graph(graph_store, untouched)
    assert _product(graph_store, "p1")["title"] == "Matte Eyeliner 2"


def test_write_graph_clears_a_product_field_given_as_null(graph_store: GraphStore):
    tables = make_tables()
    write_graph(graph_store, tables)
    cleared = tables.products.head(1).with_columns(pl.lit(None, pl.Utf8).alias("description"), pl.lit(None, pl.Float64).alias("price"))
    write_graph(graph_store, GraphTables(cleared, tables.interactions.head(0)))  # every field given
    assert _product(graph_store, "p1") == {"id": "p1", "title": "Matte Eyeliner"}


@pytest.mark.parametrize("name", ["Also Bought", "x`]->(n) DELETE n //", "made_by", ""])
def test_relation_type_rejects_names_that_are_not_plain_snake_case(name: str):
    with pytest.raises(GraphStoreError, match="lower snake case"):
        relation_type(name)


def test_connect_to_unreachable_server_says_how_to_start_one():
    port = free_port()
    with pytest.raises(GraphStoreUnavailable, match="kgrec db start"):
        GraphStore(f"bolt://127.0.0.1:{port}", managed=True)


def _interaction_rows(store: GraphStore) -> list[tuple]:
    rows = store.read(
        "MATCH (u:User)-[r:INTERACTED]->(p:Product) "
        "RETURN u.id AS u, p.id AS p, r.event AS e, r.timestamp AS t, r.weight AS w, r.value AS v"
    )
    return sorted((r["u"], r["p"], r["e"], r["t"], r["w"], r["v"]) for r in rows)


def test_the_managed_server_offers_the_bulk_interaction_writer(graph_store: GraphStore):
    assert graph_store.has_procedure(INTERACTION_PROCEDURE)
    assert not graph_store.has_procedure("kgrec.noSuchProcedure")


@pytest.mark.parametrize("first, second", [(False, True), (True, False), (True, True)])
def test_procedure_and_cypher_writers_merge_the_same_relationships(graph_store: GraphStore, first: bool, second: bool):
    tables = make_tables()
    write_graph(graph_store, GraphTables(tables.products, tables.interactions.head(0), tables.relations, tables.users))
    created = write_interactions(graph_store, tables.interactions, batch_size=2, procedure=first)
    assert created["relationships_created"] == 5
    expected = _interaction_rows(graph_store)
    assert len(expected) == 5
    # The same events again, one with a new weight and value: updated in place, nothing added.
    changed = tables.interactions.with_columns(
        pl.when(pl.col("event") == "cart").then(9.0).otherwise(pl.col("weight")).alias("weight"),
        pl.when(pl.col("event") == "rating").then(None).otherwise(pl.col("value")).alias("value"),
    ).with_columns(pl.when(pl.col("event") == "click").then(None).otherwise(pl.col("weight")).alias("weight"))
    again = write_interactions(graph_store, changed, batch_size=3, procedure=second)
    assert again.get("relationships_created", 0) == 0
    after = _interaction_rows(graph_store)
    assert len(after) == 5
    assert ("u1", "p2", "cart", 300, 9.0, None) in after
    assert ("u2", TRICKY_ID, "rating", 400, 4.0, None) in after  # a null value removes the property
    assert ("u2", "p3", "click", 500, None, None) in after  # so does a null weight
    assert [row for row in after if row[2] not in ("cart", "rating", "click")] == [
        row for row in expected if row[2] not in ("cart", "rating", "click")
    ]


def test_procedure_writer_names_a_missing_product_and_writes_nothing(graph_store: GraphStore):
    tables = make_tables()
    write_graph(graph_store, GraphTables(tables.products, tables.interactions.head(0), tables.relations, tables.users))
    events = pl.DataFrame([("u1", "p1", "view", 1, None, 1.0), ("u1", "nope", "view", 2, None, 1.0)], schema=INTERACTION_SCHEMA, orient="row")
    with pytest.raises(GraphStoreError, match=r"No \(:Product \{id: 'nope'\}\)"):
        write_interactions(graph_store, events, procedure=True)
    assert _interaction_rows(graph_store) == []  # the batch's transaction was rolled back


def test_read_now_returns_rows_with_nested_values_and_reports_bad_cypher(graph_store: GraphStore):
    write_graph(graph_store, make_tables())
    rows = graph_store.read_now(
        "MATCH (u:User {id: $id})-[r:INTERACTED]->(p) RETURN u.id AS user, collect([p.id, r.timestamp]) AS events",
        {"id": "u1"},
    )
    assert len(rows) == 1 and rows[0]["user"] == "u1"
    assert sorted(rows[0]["events"]) == [["p1", 100], ["p1", 200], ["p2", 300]]
    with pytest.raises(GraphStoreError, match="rejected a query"):
        graph_store.read_now("RETURN $missing +")


@pytest.mark.parametrize("first, second", [(False, True), (True, False), (True, True)])
def test_procedure_and_cypher_write_the_same_product_relations(graph_store: GraphStore, first: bool, second: bool):
    tables = make_tables()
    write_graph(graph_store, GraphTables(tables.products, tables.interactions, tables.relations.head(0), tables.users))
    relations = pl.concat([tables.relations, tables.relations.head(1)])  # a repeated row merges into one
    assert write_relations(graph_store, relations, batch_size=2, procedure=first)["relationships_created"] == 2
    assert write_relations(graph_store, relations, batch_size=1, procedure=second).get("relationships_created", 0) == 0
    rows = graph_store.read("MATCH (a:Product)-[r]->(b:Product) RETURN a.id AS a, type(r) AS t, b.id AS b ORDER BY t")
    assert [(r["a"], r["t"], r["b"]) for r in rows] == [("p1", "ALSO_BOUGHT", "p2"), ("p2", "ALSO_VIEWED", TRICKY_ID)]
    assert graph_store.has_procedure(RELATION_PROCEDURE)


def test_read_table_batches_pages_through_ids_in_order(graph_store: GraphStore):
    tables = make_tables()
    write_graph(graph_store, tables)
    pages = list(read_table_batches(graph_store, "products", batch_size=1))
    assert [page.get_column("product_id").to_list() for page in pages] == [[p] for p in sorted(tables.products["product_id"])]
    users = list(read_table_batches(graph_store, "interactions", batch_size=1))
    assert [page.get_column("user_id").unique().to_list() for page in users] == [["u1"], ["u2"]]
    assert read_graph(graph_store, batch_size=1).interactions.height == 5


def test_read_table_batches_of_an_empty_graph_give_one_empty_frame(graph_store: GraphStore):
    pages = list(read_table_batches(graph_store, "interactions", batch_size=3))
    assert len(pages) == 1 and pages[0].is_empty() and pages[0].schema == pl.Schema(INTERACTION_SCHEMA)


def _embeddings(store: GraphStore) -> dict[str, tuple]:
    rows = store.read("MATCH (n) WHERE n.embedding IS NOT NULL RETURN n.id AS id, n.embedding AS e, n.embedding_model AS m")
    return {row["id"]: (tuple(row["e"]), row["m"]) for row in rows}


def test_write_embeddings_in_batches_sets_the_values_of_one_batch(graph_store: GraphStore):
    write_graph(graph_store, make_tables())
    ids = ["p1", "p2", "p3", TRICKY_ID, "not-in-graph"]
    vectors = torch.arange(15, dtype=torch.float32).reshape(5, 3) / 7
    assert write_embeddings(graph_store, "Product", ids, vectors, "m1", batch_size=2) == 4  # the unknown one skipped
    batched = _embeddings(graph_store)
    assert write_embeddings(graph_store, "Product", ids, vectors, "m1", batch_size=100) == 4
    assert _embeddings(graph_store) == batched
    assert batched["p2"] == (tuple(vectors[1].tolist()), "m1")


def test_write_embeddings_stopped_part_way_is_completed_by_running_it_again(graph_store: GraphStore):
    write_graph(graph_store, make_tables())
    ids = ["p1", "p2", "p3", TRICKY_ID]
    vectors = torch.randn(4, 8, generator=torch.Generator().manual_seed(0))

    def lose_connection_after_first_batch(label: str, n: int) -> None:
        raise GraphStoreUnavailable("Neo4j is not reachable")

    with pytest.raises(GraphStoreUnavailable):
        write_embeddings(graph_store, "Product", ids, vectors, "m2", batch_size=3, progress=lose_connection_after_first_batch)
    assert set(_embeddings(graph_store)) == {"p1", "p2", "p3"}  # the first batch was committed, no more
    assert write_embeddings(graph_store, "Product", ids, vectors, "m2", batch_size=3) == 4
    stored = _embeddings(graph_store)
    assert {key: value[1] for key, value in stored.items()} == dict.fromkeys(ids, "m2")
    assert stored[TRICKY_ID][0] == pytest.approx(tuple(vectors[3].tolist()))


def test_import_embeddings_of_a_damaged_model_writes_nothing(graph_store: GraphStore, tmp_path):
    write_graph(graph_store, make_tables())
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "embeddings.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ModelNotFoundError):
        import_embeddings(KgrecConfig(), model_dir)
    assert _embeddings(graph_store) == {}
