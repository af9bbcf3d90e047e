"""Named reads for search: the full-text (Lucene) indexes and the products of linked entities.

Two round trips a query: :func:`find_named` (what the query may name), then
:func:`find_candidates` (full-text hits and the linked brands' and categories' products).

The indexes are created by ``schema.cypher`` (``product_text``, ``entity_names``); the
product's brand and category words are written with the graph (``write_search_text``).
Query text is always a parameter of ``db.index.fulltext.queryNodes``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from kgrec.errors import GraphStoreError, KgrecError
from kgrec.rank.search import escape_lucene
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


TITLE_HITS = 20  # full-text hits per query word searched for the word in a title


@dataclass(frozen=True)
class Named:
    """What a query may name: the entity index's brands and categories, and products by id."""

    entities: list[tuple[str, str, str, float]]  # (kind, key, name, score), best first
    products: list[tuple[str, str | None]]  # (product_id, title)
    catalog_words: list[str] = field(default_factory=list)  # query words a product title holds as spelt


@dataclass(frozen=True)
class Candidates:
    """A query's candidates by id: full-text hits (best first) and the named entities' products."""

    hits: list[tuple[str, float]]  # (product_id, score)
    brand_products: list[str]
    category_products: list[str]


def find_named(store: GraphStore, lucene: str, ids: Sequence[str], limit: int, words: Sequence[str] = ()) -> Named:
    """The brands and categories matching ``lucene`` (at most ``limit``, best first), the
    products whose id is in ``ids``, and which of ``words`` a product title holds as spelt
    (among each word's ``TITLE_HITS`` best full-text hits): one round trip."""
    pairs = [[word, escape_lucene(word)] for word in dict.fromkeys(words)]
    parameters = {"text": lucene, "limit": int(limit), "ids": list(ids), "words": pairs, "title_hits": TITLE_HITS}
    rows = _read(store, "search_named", parameters)
    row = rows[0]
    return Named(
        entities=[(kind, key, name, float(score)) for kind, key, name, score in row["entities"]],
        products=[(product_id, title) for product_id, title in row["products"]],
        catalog_words=list(row["catalog_words"]),
    )


def find_candidates(
    store: GraphStore, lucene: str, limit: int, brands: Sequence[str] = (), paths: Sequence[str] = (), member_limit: int = 0
) -> Candidates:
    """The products whose text matches ``lucene`` (at most ``limit``, best first), and the
    products of the brands ``brands`` and of the categories ``paths`` or their subcategories
    (at most ``member_limit`` of each): one round trip."""
    parameters = {
        "text": lucene, "limit": int(limit), "brands": list(brands), "paths": list(paths), "member_limit": int(member_limit)
    }
    row = _read(store, "search_candidates", parameters)[0]
    return Candidates(
        hits=list(zip(row["product_ids"], map(float, row["scores"]))),
        brand_products=list(row["brand_products"]),
        category_products=list(row["category_products"]),
    )
