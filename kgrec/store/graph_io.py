"""Moving :class:`~kgrec.ingest.tables.GraphTables` into Neo4j and back out.

Writes are batched ``UNWIND`` transactions that ``MERGE`` on the uniquely
constrained keys, so loading the same tables twice changes no counts and loading
new events adds them. Reads are a handful of bulk queries, one per table.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources

import polars as pl

from kgrec.errors import GraphStoreError
from kgrec.ingest.tables import (
    INTERACTION_SCHEMA,
    KGREC_RELATIONSHIP_TYPES,
    PRODUCT_SCHEMA,
    RELATION_NAME_PATTERN,
    RELATION_SCHEMA,
    RESERVED_USER_PROPERTIES,
    GraphTables,
)
from kgrec.store.connection import GraphStore, query

# Called as progress(step_name, rows_done_in_this_call).
Progress = Callable[[str, int], None]

INTERACTION_WRITERS = 2
"""Concurrent transactions writing interactions (one Cypher transaction keeps one core busy)."""

INTERACTION_PROCEDURE = "kgrec.mergeInteractions"
RELATION_PROCEDURE = "kgrec.mergeProductRelations"
"""The managed server's bulk writers (``store/java/KgrecNeo4j.java``): the same rows and the same
result as the Cypher in ``write_interactions.cypher`` and ``write_relations.cypher``."""

# Ingest checks relation names against the same rule before anything is written; this is the last guard.
RELATION_TYPE_PATTERN = re.compile(RELATION_NAME_PATTERN)
NON_RELATION_TYPES = KGREC_RELATIONSHIP_TYPES

PRODUCT_PROPERTIES = ("title", "description", "price")
"""Product fields stored as properties of the Product node (brand and categories are edges)."""


@dataclass
class WriteSummary:
    """What one load created, and what the graph holds afterwards."""

    created: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)


def ensure_schema(store: GraphStore) -> None:
    """Create the uniqueness constraints (idempotent); always before any write."""
    store.run_script(resources.files("kgrec.store").joinpath("schema.cypher").read_text(encoding="utf-8"))


def relation_type(relation: str) -> str:
    """``also_bought`` → ``ALSO_BOUGHT``; the name is checked first, so a type is never arbitrary text."""
    if not RELATION_TYPE_PATTERN.match(relation) or relation.upper() in NON_RELATION_TYPES:
        raise GraphStoreError(
            f"Relation name {relation!r} cannot be a relationship type: use lower snake case "
            f"(e.g. also_bought), not one of {', '.join(t.lower() for t in NON_RELATION_TYPES)}."
        )
    return relation.upper()


def write_steps(tables: GraphTables) -> dict[str, int]:
    """Rows each write step will send, in order (for a progress bar's total)."""
    return {
        "products": tables.products.height,
        "brands": tables.brands().height,
        "categories": tables.categories().height,
        "made_by": tables.made_by().height,
        "in_category": tables.in_category().height,
        "search_text": tables.products.height,
        "users": tables.users.height,
        "interactions": tables.interactions.height,
        "relations": tables.relations.height,
    }


def write_graph(store: GraphStore, tables: GraphTables, batch_size: int = 10_000, progress: Progress | None = None) -> WriteSummary:
    """Write ``tables`` into the graph: nodes first, then the edges between them."""
    ensure_schema(store)
    summary = WriteSummary()

    def on_batch(name: str) -> Callable[[int], None] | None:
        return (lambda n: progress(name, n)) if progress else None

    def count(counters: dict[str, int]) -> None:
        for key in ("nodes_created", "relationships_created", "relationships_deleted"):
            summary.created[key] = summary.created.get(key, 0) + counters.get(key, 0)

    def step(name: str, cypher: str, rows: list) -> None:
        count(store.write_batches(cypher, rows, batch_size, on_batch=on_batch(name)))

    # Only the fields the products file gave: a field it lacks keeps its stored value.
    given = [name for name in PRODUCT_PROPERTIES if name in tables.product_columns]
    if given:
        products = tables.products.select(pl.col("product_id").alias("id"), pl.struct(given).alias("fields")).to_dicts()
    else:
        products = [{"id": product_id, "fields": {}} for product_id in tables.products.get_column("product_id")]
    step("products", query("write_products"), products)
    step("brands", query("write_brands"), tables.brands().get_column("name").to_list())
    step("categories", query("write_categories"), tables.categories().to_dicts())
    step("made_by", query("write_made_by"), tables.made_by().rows())
    step("in_category", query("write_in_category"), tables.in_category().rows())
    # The words `kgrec search` matches a product by, beside its own text: its brand's and categories' names.
    step("search_text", query("write_search_text"), tables.products.get_column("product_id").to_list())

    attribute_columns = [c for c in tables.users.columns if c != "user_id"]
    users = [
        {"id": row[0], "attributes": {k: v for k, v in zip(attribute_columns, row[1:]) if v is not None}}
        for row in tables.users.select("user_id", *attribute_columns).rows()
    ]
    step("users", query("write_users"), users)
    count(write_interactions(store, tables.interactions, batch_size, on_batch=on_batch("interactions")))
    count(write_relations(store, tables.relations, batch_size, on_batch=on_batch("relations")))

    summary.totals = count_graph(store)
    return summary


def element_ids(store: GraphStore, label: str, ids: list[str]) -> dict[str, str]:
    """``{id: elementId}`` of the ``User`` or ``Product`` nodes with these ids (missing ones left out)."""
    name = {"User": "read_element_ids_users", "Product": "read_element_ids_products"}[label]
    found: dict[str, str] = {}
    for start in range(0, len(ids), 50_000):
        columns = store.read_columns(query(name), {"ids": ids[start : start + 50_000]})
        found.update(zip(columns.get("id", []), columns.get("element_id", [])))
    return found


def write_interactions(
    store: GraphStore,
    interactions: pl.DataFrame,
    batch_size: int = 10_000,
    on_batch: Callable[[int], None] | None = None,
    writers: int = INTERACTION_WRITERS,
    procedure: bool | None = None,
) -> dict[str, int]:
    """MERGE one ``INTERACTED`` relationship per event; the users and products must exist.

    ``procedure``: write through the managed server's ``kgrec.mergeInteractions`` (True),
    through Cypher (False), or the procedure whenever the server has it (None). The
    procedure finds the nodes by id itself; Cypher gets their element ids, read first.

    ``writers`` transactions run at once. Each writer owns a disjoint set of users and
    goes through its rows in product order, so concurrent writers take node locks in
    the same order and seldom deadlock; when they do, the driver retries the batch.
    """
    if interactions.is_empty():
        return {}
    if procedure is None:
        procedure = store.has_procedure(INTERACTION_PROCEDURE)
    user, product = pl.col("user_id"), pl.col("product_id")
    if not procedure:
        user_ids = element_ids(store, "User", interactions.get_column("user_id").unique().to_list())
        product_ids = element_ids(store, "Product", interactions.get_column("product_id").unique().to_list())
        user = user.replace_strict(user_ids, return_dtype=pl.String)
        product = product.replace_strict(product_ids, return_dtype=pl.String)
    rows = interactions.select(
        user.alias("user"),
        product.alias("product"),
        "event", "timestamp", "weight", "value",
        (pl.col("user_id").hash(seed=0) % writers).alias("writer"),
    )
    parts = [part.sort("product").drop("writer").rows() for _, part in rows.group_by("writer")]
    cypher = query("write_interactions_procedure" if procedure else "write_interactions")
    totals: Counter[str] = Counter()
    driver_log = logging.getLogger("neo4j.session")
    driver_log.addFilter(_drop_deadlock_retries)
    try:
        with ThreadPoolExecutor(max_workers=writers) as pool:
            for counters in pool.map(lambda part: store.write_batches(cypher, part, batch_size, on_batch=on_batch), parts):
                totals += counters
    finally:
        driver_log.removeFilter(_drop_deadlock_retries)
    return dict(totals)


def _drop_deadlock_retries(record: logging.LogRecord) -> bool:
    # The writers' rare deadlocks are retried by the driver; its warning would only alarm.
    return "DeadlockDetected" not in record.getMessage()


def write_relations(
    store: GraphStore,
    relations: pl.DataFrame,
    batch_size: int = 10_000,
    on_batch: Callable[[int], None] | None = None,
    procedure: bool | None = None,
) -> dict[str, int]:
    """MERGE one product-to-product relationship per row, typed by its ``relation``; both products must exist.

    ``procedure``: as :func:`write_interactions` (``kgrec.mergeProductRelations`` or Cypher).
    A missing product fails the procedure's batch, where Cypher would skip the row; the
    ingest step drops relations outside the catalog before anything is written.
    """
    if relations.is_empty():
        return {}
    if procedure is None:
        procedure = store.has_procedure(RELATION_PROCEDURE)
    cypher = query("write_relations_procedure" if procedure else "write_relations")
    totals: Counter[str] = Counter()
    for (relation,), group in relations.group_by("relation", maintain_order=True):
        rows = group.select("product_id", "related_product_id").rows()
        totals += store.write_batches(cypher, rows, batch_size, extra={"type": relation_type(relation)}, on_batch=on_batch)
    return dict(totals)


def write_interaction_rows(store: GraphStore, tables: GraphTables, batch_size: int = 10_000) -> dict[str, int]:
    """Write only the interactions of ``tables`` (creating their users); products must exist."""
    users = [{"id": user_id, "attributes": {}} for user_id in tables.interactions.get_column("user_id").unique().to_list()]
    store.write_batches(query("write_users"), users, batch_size)
    return write_interactions(store, tables.interactions, batch_size)


def count_graph(store: GraphStore) -> dict[str, int]:
    """Node counts per label and relationship counts per type, from the count store (fast)."""
    counts: dict[str, int] = {}
    for label in ("User", "Product", "Brand", "Category"):
        counts[label] = store.read(f"MATCH (n:{label}) RETURN count(n) AS n")[0]["n"]
    for row in store.read("CALL db.relationshipTypes() YIELD relationshipType RETURN relationshipType AS type"):
        rel_type = row["type"]
        # A type from the database itself, checked against a strict pattern before it goes into the text;
        # Cypher 5 cannot parameterise the type in a count-store pattern.
        if re.fullmatch(r"[A-Z][A-Z0-9_]*", rel_type):
            n = store.read(f"MATCH ()-[r:{rel_type}]->() RETURN count(r) AS n")[0]["n"]
            if n:
                counts[rel_type] = n
    return counts


def clear_graph(store: GraphStore, batch_size: int = 10_000) -> None:
    """Delete every node and relationship, in batches (constraints stay).

    Relationships go first: a DETACH DELETE of dense nodes would pull all their
    relationships into one transaction and can exceed its memory limit.
    """
    for cypher in (
        "MATCH ()-[r]->() WITH r LIMIT $size DELETE r RETURN count(*) AS n",
        "MATCH (n) WITH n LIMIT $size DETACH DELETE n RETURN count(*) AS n",
    ):
        while store.run(cypher, {"size": batch_size})[0]["n"]:
            pass


def read_graph(store: GraphStore) -> GraphTables:
    """Read the whole graph back as :class:`GraphTables` (bulk queries, one per table)."""
    products = pl.DataFrame(store.read_columns(query("read_products")), schema=PRODUCT_SCHEMA, strict=False)
    interactions = pl.DataFrame(
        store.read_columns(query("read_interactions")), schema=INTERACTION_SCHEMA, strict=False
    )
    relations = pl.DataFrame(
        store.read_columns(query("read_relations"), {"exclude": list(NON_RELATION_TYPES)}),
        schema=RELATION_SCHEMA,
        strict=False,
    )
    user_rows = store.read_columns(query("read_users"))
    attributes = user_rows.pop("attributes", [])
    users = pl.DataFrame(user_rows, schema={"user_id": pl.Utf8})
    # Properties kgrec sets itself (the id, the embeddings written back by train) are not the
    # user's attributes: exported as such they would bloat every later snapshot.
    attribute_names = sorted({key for attrs in attributes for key in attrs if key not in RESERVED_USER_PROPERTIES})
    if attribute_names:
        users = users.with_columns(
            pl.Series(name, [None if a.get(name) is None else str(a.get(name)) for a in attributes], dtype=pl.Utf8)
            for name in attribute_names
        )
    return GraphTables(products=products, interactions=interactions, relations=relations, users=users)


VECTOR_INDEX = "product_embedding"


def write_embeddings(
    store: GraphStore,
    label: str,
    ids: list[str],
    embeddings,
    model_id: str,
    batch_size: int = 5_000,
    progress: Progress | None = None,
) -> int:
    """Set ``embedding`` (a list of floats) and ``embedding_model`` on User or Product nodes.

    ``embeddings`` is ``[len(ids), dim]`` (a tensor or array). Returns the number of nodes set.
    """
    cypher = {"User": "write_embeddings_users", "Product": "write_embeddings_products"}.get(label)
    if cypher is None:
        raise GraphStoreError(f"Embeddings go on User or Product nodes, not {label!r}.")
    vectors = embeddings.tolist()
    rows = [[node_id, vector] for node_id, vector in zip(ids, vectors)]
    counters = store.write_batches(
        query(cypher),
        rows,
        batch_size,
        extra={"model": model_id},
        on_batch=(lambda n: progress(label, n)) if progress else None,
    )
    return counters.get("properties_set", 0) // 2


def ensure_vector_index(store: GraphStore, dim: int) -> None:
    """Create the ``product_embedding`` cosine vector index for ``dim``-d vectors.

    An index of another dimension (from an earlier model) is dropped first, and the
    call waits until the index is online so that queries see every vector.
    """
    existing = store.read(
        "SHOW VECTOR INDEXES YIELD name, options WHERE name = $name RETURN options", {"name": VECTOR_INDEX}
    )
    if existing and existing[0]["options"]["indexConfig"].get("vector.dimensions") != dim:
        store.run(f"DROP INDEX {VECTOR_INDEX}")  # a constant name, not user input
    options = {"indexConfig": {"vector.dimensions": dim, "vector.similarity_function": "cosine"}}
    store.run(query("vector_index"), {"options": options})
    store.run("CALL db.awaitIndexes(300)")
