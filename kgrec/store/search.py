"""Named reads for search: the full-text (Lucene) indexes and the products of linked entities.

The indexes are created by ``schema.cypher`` (``product_text``, ``entity_names``); the
product's brand and category words are written with the graph (``write_search_text``).
Query text is always a parameter of ``db.index.fulltext.queryNodes``.
"""

from __future__ import annotations

from collections.abc import Sequence

from kgrec.errors import GraphStoreError, KgrecError
from kgrec.store.connection import GraphStore, query

PRODUCT_TEXT_INDEX = "product_text"
ENTITY_INDEX = "entity_names"


class SearchIndexMissing(KgrecError):
    """The graph has no full-text index for search (built before search existed)."""


def _read(store: GraphStore, name: str, parameters: dict) -> list[dict]:
    try:
        return store.read_now(query(name), parameters)
    except GraphStoreError as e:
        if "no such fulltext schema index" in str(e).lower():
            raise SearchIndexMissing(
                f"The graph at {store.uri} has no full-text index for search ({PRODUCT_TEXT_INDEX}, {ENTITY_INDEX}): "
                "it was built before kgrec had search. Run `kgrec build-graph` with your files once more "
                "(idempotent: nothing is duplicated), or call kgrec.pipeline.prepare_search(config.store); either "
                "creates the indexes and the products' search text."
            ) from e
        raise


def find_entities(store: GraphStore, lucene: str, limit: int) -> list[tuple[str, str, str, float]]:
    """``(kind, key, name, score)`` of the brands and categories matching ``lucene``, best first."""
    if not lucene:
        return []
    rows = _read(store, "search_entities", {"text": lucene, "limit": int(limit)})
    return [(row["kind"], row["key"], row["name"], float(row["score"])) for row in rows]


def find_products(store: GraphStore, lucene: str, limit: int) -> list[tuple[str, float]]:
    """``(product_id, score)`` of the products whose text matches ``lucene``, best first."""
    if not lucene:
        return []
    rows = _read(store, "search_products", {"text": lucene, "limit": int(limit)})
    return [(row["product_id"], float(row["score"])) for row in rows]


def brand_products(store: GraphStore, names: Sequence[str], limit: int) -> list[str]:
    """Ids of the products made by any of the brands ``names`` (at most ``limit``)."""
    if not names:
        return []
    rows = store.read_now(query("search_brand_products"), {"names": list(names), "limit": int(limit)})
    return list(rows[0]["product_ids"]) if rows else []


def category_products(store: GraphStore, paths: Sequence[str], limit: int) -> list[str]:
    """Ids of the products in any of the categories ``paths`` or their subcategories (at most ``limit``)."""
    if not paths:
        return []
    rows = store.read_now(query("search_category_products"), {"paths": list(paths), "limit": int(limit)})
    return list(rows[0]["product_ids"]) if rows else []


def products_by_id(store: GraphStore, ids: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(product_id, title)`` of the products whose id is in ``ids``."""
    if not ids:
        return []
    rows = store.read_now(query("search_products_by_id"), {"ids": list(ids)})
    return [(row["product_id"], row["title"]) for row in rows]
