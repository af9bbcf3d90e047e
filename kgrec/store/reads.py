"""Named reads of the live graph for ranking: users' events and products added after training.

Every function takes a :class:`~kgrec.store.connection.GraphStore` and returns plain
Python or polars values; the Cypher lives in ``queries/`` beside this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

from kgrec.store.connection import GraphStore, query

EVENT_SCHEMA = {"user_id": pl.Utf8, "product_id": pl.Utf8, "timestamp": pl.Int64, "weight": pl.Float32}


def read_user_events(store: GraphStore, user_id: str) -> list[tuple[str, int, float]] | None:
    """One user's ``(product_id, timestamp, weight)`` events, in one round trip; None: no such user."""
    rows = store.read_now(query("read_user_history"), {"user_id": user_id})
    if not rows:
        return None
    return [tuple(event) for event in rows[0]["events"]]  # type: ignore[misc]


def read_events(store: GraphStore, user_ids: Sequence[str] | None = None) -> pl.DataFrame:
    """Every interaction event as ``user_id, product_id, timestamp, weight`` (all users, or ``user_ids``)."""
    if user_ids is None:
        columns = store.read_columns(query("read_interactions"))
    else:
        # One record per user, not per event: the driver decodes each record in Python, and
        # for a served batch of users one per event cost more than ranking them.
        rows = store.read_now(query("read_users_events"), {"user_ids": list(dict.fromkeys(user_ids))})
        events = [(row["user_id"], *event) for row in rows for event in row["events"]]
        columns = dict(zip(EVENT_SCHEMA, map(list, zip(*events))))  # user_id, product_id, timestamp, weight
    return pl.DataFrame({name: columns.get(name, []) for name in EVENT_SCHEMA}, schema=EVENT_SCHEMA)


def read_new_products(store: GraphStore, known: Sequence[str]) -> pl.DataFrame | None:
    """Products in the graph that are not in ``known`` (a model's ids), with brand, categories,
    related products and text; None when there are none."""
    rows = store.read_columns(query("read_new_products"), {"known": list(known)})
    if not rows.get("product_id"):
        return None
    schema = {
        "product_id": pl.Utf8, "title": pl.Utf8, "description": pl.Utf8, "brand": pl.Utf8,
        "categories": pl.List(pl.Utf8), "related": pl.List(pl.Utf8),
    }
    return pl.DataFrame({name: rows[name] for name in schema}, schema=schema)
