"""Moving :class:`~kgrec.ingest.tables.GraphTables` into Neo4j and back out.

Writes are batched ``UNWIND`` transactions that ``MERGE`` on the uniquely
constrained keys, so loading the same tables twice changes no counts and loading
new events adds them. Reads go one page of nodes at a time, in id order, so an export of a
million products holds one page in memory (:func:`read_table_batches`).
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
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


EXPORT_TABLES: tuple[str, ...] = ("products", "interactions", "relations", "users")
EXPORT_KEYS: dict[str, str] = {"products": "product_id", "interactions": "user_id", "relations": "product_id", "users": "user_id"}
"""The id each table is paged by: its rows come in ascending, disjoint ranges of it."""
EXPORT_LABELS: dict[str, str] = {"products": "Product", "interactions": "User", "relations": "Product", "users": "User"}


def read_graph(store: GraphStore, batch_size: int = 10_000) -> GraphTables:
    """Read the whole graph back as :class:`GraphTables` (the batches of :func:`read_table_batches`, joined)."""
    return GraphTables(**{name: pl.concat(read_table_batches(store, name, batch_size)) for name in EXPORT_TABLES})


def read_table_batches(store: GraphStore, table: str, batch_size: int = 10_000) -> Iterator[pl.DataFrame]:
    """One table of the graph, ``batch_size`` nodes at a time: products, or users with their events.

    Pages go through the id index in id order (keyset pagination: each page starts after the
    last id of the one before), so memory holds one page, however large the graph, and the
    frames come in ascending, disjoint ranges of ``EXPORT_KEYS[table]``; rows
    inside a frame are in no particular order. Every frame has the same columns, and at least
    one frame comes (empty for an empty table). ``users`` has ``user_id`` and the users'
    attribute columns (Utf8, sorted by name), without the properties kgrec sets itself.

    The order is the id constraint's index order, which compares strings by code point as
    polars and Python do (Cypher's own ``ORDER BY`` on unindexed values compares UTF-16 units
    and would not); the snapshot writer checks that each page starts after the last.

    Raises:
        GraphStoreError: some ``Product`` or ``User`` nodes have an id that is not a
            non-empty string (pages could not reach them); checked before the first page.
    """
    if table not in EXPORT_TABLES:
        raise ValueError(f"table must be one of {', '.join(EXPORT_TABLES)}; found {table!r}")
    if table == "users":
        attributes = [row["key"] for row in store.read(query("read_user_attribute_names"), {"reserved": list(RESERVED_USER_PROPERTIES)})]
        parameters: dict = {"attributes": attributes}
    else:
        attributes, parameters = [], {"exclude": list(NON_RELATION_TYPES)} if table == "relations" else {}
    if table in ("products", "users"):
        _check_pageable_ids(store, EXPORT_LABELS[table])
    cypher = query(f"read_{table}_page")
    after, first = "", True
    while True:
        page = store.read_columns(cypher, {**parameters, "after": after, "size": batch_size})
        ids = page.get(EXPORT_KEYS[table], [])
        if ids or first:
            yield _page_frame(table, page, attributes)
        first = False
        if len(ids) < batch_size:
            break
        after = ids[-1]


def _check_pageable_ids(store: GraphStore, label: str) -> None:
    # The label comes from EXPORT_LABELS, never from input.
    found = f"MATCH (n:{label}) WHERE NOT coalesce(n.id > '', false) RETURN count(n) AS n"
    bad = store.read(found)[0]["n"]
    if bad:
        raise GraphStoreError(
            f"{bad:,} {label} node(s) have an id that is not a non-empty string, so the export cannot page "
            f"through them (kgrec writes only such ids). Find them with `kgrec query -- \"{found.replace('count(n) AS n', 'n LIMIT 10')}\"`, "
            "then fix their ids or delete them, and export again."
        )


def _page_frame(table: str, page: dict[str, list], attributes: list[str]) -> pl.DataFrame:
    """One page of :func:`read_table_batches` as a frame of the table's schema."""
    if table == "products":
        return pl.DataFrame({name: page.get(name, []) for name in PRODUCT_SCHEMA}, schema=PRODUCT_SCHEMA, strict=False)
    if table == "interactions":
        # [user, [[product, event, timestamp, value, weight], ...]] → one row per event
        rows = [(user, *event) for user, events in zip(page.get("user_id", []), page.get("events", [])) for event in events]
        return pl.DataFrame(rows, schema=INTERACTION_SCHEMA, orient="row", strict=False)
    if table == "relations":
        rows = [(product, *related) for product, relations in zip(page.get("product_id", []), page.get("related", []))
                for related in relations]
        return pl.DataFrame(rows, schema=RELATION_SCHEMA, orient="row", strict=False)
    values = page.get("attributes", [])
    columns = {"user_id": page.get("user_id", [])}
    # Attributes come back as stored; the users table holds them as text.
    columns |= {name: [None if v[i] is None else str(v[i]) for v in values] for i, name in enumerate(attributes)}
    return pl.DataFrame(columns, schema={name: pl.Utf8 for name in columns})


VECTOR_INDEX = "product_embedding"


def write_embeddings(
    store: GraphStore,
    label: str,
    ids: Sequence[str] | pl.Series,
    embeddings,
    model_id: str,
    batch_size: int = 5_000,
    progress: Progress | None = None,
) -> int:
    """Set ``embedding`` (a list of floats) and ``embedding_model`` on User or Product nodes.

    ``embeddings`` is ``[len(ids), dim]`` (a tensor or array). Returns the number of nodes set.
    One transaction per ``batch_size`` nodes, each turned into Python lists only when it is
    sent, so memory holds one batch. Each node gets its vector and model id in one statement,
    and writing the same model again sets the same values: an import that stopped part way
    is completed by running it again.
    """
    cypher = {"User": "write_embeddings_users", "Product": "write_embeddings_products"}.get(label)
    if cypher is None:
        raise GraphStoreError(f"Embeddings go on User or Product nodes, not {label!r}.")
    if len(ids) != len(embeddings):
        raise GraphStoreError(f"{len(ids):,} {label} ids but {len(embeddings):,} embeddings; they must pair up.")
    written = 0
    for start in range(0, len(ids), batch_size):
        rows = [[node_id, vector] for node_id, vector in zip(ids[start : start + batch_size], embeddings[start : start + batch_size].tolist())]
        counters = store.write_batches(query(cypher), rows, len(rows), extra={"model": model_id})
        written += counters.get("properties_set", 0) // 2
        if progress:
            progress(label, len(rows))
    return written


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
