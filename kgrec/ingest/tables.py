"""The clean tables every later stage works from.

Ingest turns a shop's files into :class:`GraphTables`; the graph store writes them
to Neo4j and reads them back (``export``); the snapshot writes them to disk. So the
same frames, with the same columns and dtypes, flow through the whole pipeline, and
training can run from files alone.

Columns (polars dtypes):

``products``
    ``product_id`` Utf8 (unique, non-null), ``title`` Utf8?, ``description`` Utf8?,
    ``price`` Float64?, ``brand`` Utf8?, ``categories`` List(Utf8): category paths,
    each normalised to ``"Beauty > Makeup > Eyes"`` (may be empty).
``interactions``
    ``user_id`` Utf8, ``product_id`` Utf8, ``event`` Utf8 (one of :data:`EVENT_TYPES`),
    ``timestamp`` Int64 (epoch seconds, UTC), ``value`` Float64?, ``weight`` Float64.
    One row per event; rows equal on (user_id, product_id, event, timestamp) are one event.
``relations``
    ``product_id`` Utf8, ``relation`` Utf8 (e.g. ``also_bought``), ``related_product_id``
    Utf8. Both ends are catalog products.
``users``
    ``user_id`` Utf8 (unique) plus optional Utf8 attribute columns. Every user that
    appears in ``interactions`` has a row.

``product_columns`` says which product fields the products file gave: a write leaves the
fields it lacks as the graph stores them (a null in a given field clears it).

The constants below are the graph store's limits, checked by ingest before anything is
written (see ``docs/RELIABILITY.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

EVENT_TYPES: tuple[str, ...] = ("view", "click", "cart", "purchase", "rating")
CATEGORY_SEPARATOR = " > "

MAX_KEY_BYTES = 4_000
"""Longest id, brand name or category path, in UTF-8 bytes. Each is a uniquely constrained key
(``store/schema.cypher``), and Neo4j 5's range index refuses keys over about 8 kB; half that
leaves room for the index's own overhead in every Neo4j version."""

KGREC_RELATIONSHIP_TYPES: tuple[str, ...] = ("INTERACTED", "MADE_BY", "IN_CATEGORY", "SUBCATEGORY_OF", "RECOMMENDED")
"""The relationship types kgrec writes itself; no product relation may take one of these names."""

RELATION_NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
"""A relation name (after normalisation) that can become a relationship type: ASCII, so the
type can be matched and written back safely, and starting with a letter as Cypher names do."""

RESERVED_USER_PROPERTIES: tuple[str, ...] = ("id", "embedding", "embedding_model")
"""Properties kgrec sets on User nodes itself (``write_users``, ``write_embeddings_users``):
a users-file attribute column with one of these names would overwrite them."""

PRODUCT_FIELDS: frozenset[str] = frozenset({"title", "description", "price", "brand", "categories"})
"""The product columns besides ``product_id``."""

PRODUCT_SCHEMA: dict[str, pl.DataType] = {
    "product_id": pl.Utf8,
    "title": pl.Utf8,
    "description": pl.Utf8,
    "price": pl.Float64,
    "brand": pl.Utf8,
    "categories": pl.List(pl.Utf8),
}
INTERACTION_SCHEMA: dict[str, pl.DataType] = {
    "user_id": pl.Utf8,
    "product_id": pl.Utf8,
    "event": pl.Utf8,
    "timestamp": pl.Int64,
    "value": pl.Float64,
    "weight": pl.Float64,
}
RELATION_SCHEMA: dict[str, pl.DataType] = {
    "product_id": pl.Utf8,
    "relation": pl.Utf8,
    "related_product_id": pl.Utf8,
}


@dataclass(frozen=True)
class GraphTables:
    """The validated content of one shop's graph. See the module docstring for columns."""

    products: pl.DataFrame
    interactions: pl.DataFrame
    relations: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=RELATION_SCHEMA))
    users: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema={"user_id": pl.Utf8}))
    product_columns: frozenset[str] = PRODUCT_FIELDS
    """The product fields the products file gave; only these are written (the others stay as stored)."""

    @property
    def num_products(self) -> int:
        return self.products.height

    @property
    def num_users(self) -> int:
        return self.users.height

    @property
    def num_interactions(self) -> int:
        return self.interactions.height

    def brands(self) -> pl.DataFrame:
        """Distinct brand names, sorted: ``[name]``."""
        return (
            self.products.select(pl.col("brand").alias("name"))
            .drop_nulls()
            .unique()
            .sort("name")
        )

    def made_by(self) -> pl.DataFrame:
        """Product → brand edges: ``[product_id, brand]``."""
        return self.products.select("product_id", "brand").drop_nulls()

    def in_category(self) -> pl.DataFrame:
        """Product → category edges (the listed, most specific paths): ``[product_id, category]``."""
        return (
            self.products.select("product_id", pl.col("categories").alias("category"))
            .explode("category")
            .drop_nulls()
            .unique(maintain_order=True)
        )

    def categories(self) -> pl.DataFrame:
        """Every category path and all its ancestors: ``[path, name, parent]``.

        ``name`` is the last segment; ``parent`` is the path one level up (null at the top).
        """
        listed = self.in_category().get_column("category").unique().to_list()
        rows: dict[str, tuple[str, str | None]] = {}
        for path in listed:
            parts = path.split(CATEGORY_SEPARATOR)
            for depth in range(1, len(parts) + 1):
                sub = CATEGORY_SEPARATOR.join(parts[:depth])
                parent = CATEGORY_SEPARATOR.join(parts[: depth - 1]) or None
                rows[sub] = (parts[depth - 1], parent)
        paths = sorted(rows)
        return pl.DataFrame(
            {
                "path": paths,
                "name": [rows[p][0] for p in paths],
                "parent": [rows[p][1] for p in paths],
            },
            schema={"path": pl.Utf8, "name": pl.Utf8, "parent": pl.Utf8},
        )


@dataclass
class IngestReport:
    """What ingest kept and what it skipped, for the build-graph summary."""

    rows_read: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
