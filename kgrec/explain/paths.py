"""Why a product was recommended: knowledge-graph paths from the user, and storing them.

:func:`explain_paths` finds, in one parameterised query for all recommended products
(``store/queries/explain_paths.cypher``), the strongest paths from the user's history
to each product:

- ``relation``: a history product ``x`` is linked to the product (also_bought,
  bought_together, also_viewed, any product-product relation type);
- ``brand``: ``x`` has the product's brand;
- ``category``: ``x`` shares a category with the product, or sits in a sibling category;
- ``co_interaction``: other users who interacted with ``x`` also interacted with the product.

Heavier (purchase > view) and more recent history products make stronger reasons; the
query documents the exact strengths. :func:`write_recommendations` stores the ranked
products with their score parts and reasons as ``RECOMMENDED`` relationships, which
the analyst queries in ``cypher/`` read (see docs/RANKING.md).

All database traffic goes through :class:`~kgrec.store.connection.GraphStore`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from kgrec.errors import UnknownUserError
from kgrec.store.connection import GraphStore, query
from kgrec.store.graph_io import NON_RELATION_TYPES

ReasonKind = Literal["relation", "brand", "category", "co_interaction"]
REASON_KINDS: tuple[str, ...] = ("relation", "brand", "category", "co_interaction")

# The user's strongest event on a history product, as a verb phrase; first match wins.
_EVENT_PHRASES: tuple[tuple[str, str], ...] = (
    ("purchase", "You bought {item}"),
    ("cart", "You put {item} in your cart"),
    ("rating", "You rated {item}"),
    ("click", "You clicked on {item}"),
    ("view", "You viewed {item}"),
)
_RELATION_PHRASES: dict[str, str] = {
    "also_bought": "often bought with it",
    "also_viewed": "often viewed with it",
    "bought_together": "bought together with it",
}


@dataclass(frozen=True)
class Reason:
    """One knowledge-graph path from the user to a recommended product.

    Attributes:
        kind: ``relation``, ``brand``, ``category`` or ``co_interaction``.
        text: a readable sentence, e.g. "You bought 'Matte Eyeliner' (p1), also made by Lumen".
        via_product_id: the user's history product the path starts from.
        via: the brand name, category path, relation type (``also_bought``), or for
            ``co_interaction`` the number of co-interacting users (as text).
        strength: orders reasons; history weight × recency × the kind's factor.
    """

    kind: ReasonKind
    text: str
    via_product_id: str
    via: str
    strength: float


@dataclass
class RecommendationWrite:
    """What a :func:`write_recommendations` call changed."""

    users: int = 0
    created: int = 0
    deleted: int = 0
    skipped: int = 0
    """Items not written because their user or product is not in the graph."""
    details: dict[str, int] = field(default_factory=dict)


def explain_paths(
    store: GraphStore,
    user_id: str,
    product_ids: Sequence[str],
    per_product: int = 3,
    history_limit: int = 50,
    co_interaction_limit: int = 100,
    half_life_days: float = 30.0,
) -> dict[str, list[Reason]]:
    """The strongest knowledge-graph reasons for each recommended product, in one query.

    Args:
        store: the graph.
        user_id: the user the products were recommended to.
        product_ids: the recommended products.
        per_product: reasons kept per product. The strongest reason of each kind comes
            first (so one product's reasons are varied), then the next strongest.
        history_limit: the user's strongest history products that paths start from.
        co_interaction_limit: other users sampled per recommended product when counting
            co-interactions (keeps the query fast on popular products).
        half_life_days: a history product's strength halves every this many days before
            the user's latest event.

    Returns:
        ``{product_id: [Reason, ...]}`` with every requested product id as a key (an empty
        list when no path was found or the product is not in the graph).

    Raises:
        UnknownUserError: the user is not in the graph.
    """
    product_ids = list(dict.fromkeys(product_ids))
    found: dict[str, list[Reason]] = {pid: [] for pid in product_ids}
    if not product_ids or per_product <= 0:
        return found
    rows = store.read(
        query("explain_paths"),
        {
            "user_id": user_id,
            "product_ids": product_ids,
            "history_limit": int(history_limit),
            "co_interaction_limit": int(co_interaction_limit),
            "half_life_days": float(half_life_days),
            "reasons_per_product": int(per_product) * len(REASON_KINDS),
            "exclude": list(NON_RELATION_TYPES),
        },
    )
    if not rows and not store.read(query("explain_user_exists"), {"user_id": user_id})[0]["found"]:
        raise UnknownUserError(
            f"User {user_id!r} is not in the graph, so no reasons can be found. "
            "Run kgrec build-graph with the user's events first."
        )
    for row in rows:
        reasons = [_reason(raw) for raw in row["reasons"]]
        found[row["product_id"]] = pick_reasons(reasons, per_product)
    return found


def pick_reasons(reasons: Sequence[Reason], per_product: int) -> list[Reason]:
    """Up to ``per_product`` reasons: the strongest of each kind first, then the strongest others."""
    ordered = sorted(reasons, key=lambda r: -r.strength)
    first: list[Reason] = []
    kinds: set[str] = set()
    for reason in ordered:
        if reason.kind not in kinds:
            kinds.add(reason.kind)
            first.append(reason)
    chosen = first[:per_product]
    chosen += [r for r in ordered if r not in first][: per_product - len(chosen)]
    return sorted(chosen, key=lambda r: -r.strength)


def write_recommendations(
    store: GraphStore,
    user_id: str,
    model_id: str,
    items: Sequence[Mapping[str, Any]],
    created_at: datetime | None = None,
) -> RecommendationWrite:
    """Store one user's recommendations, replacing their previous ones from ``model_id``.

    Each item is a mapping with ``product_id``, ``rank``, ``score``, ``relevance``,
    ``popularity``, ``diversity`` and optionally ``reasons`` (:class:`Reason` objects,
    dicts with the same keys, or plain texts). The old ``RECOMMENDED`` relationships of
    this user and model are deleted and the new ones created in one transaction; other
    models' relationships stay. See ``write_recommendations.cypher`` for the properties.
    """
    return write_recommendations_batch(store, model_id, {user_id: items}, created_at=created_at)


def write_recommendations_batch(
    store: GraphStore,
    model_id: str,
    recommendations: Mapping[str, Sequence[Mapping[str, Any]]] | Iterable[tuple[str, Sequence[Mapping[str, Any]]]],
    batch_size: int = 500,
    created_at: datetime | None = None,
) -> RecommendationWrite:
    """Store many users' recommendations: ``{user_id: items}`` (items as :func:`write_recommendations`).

    Users are written ``batch_size`` at a time, one ``UNWIND`` transaction per batch; each
    user's old relationships of ``model_id`` are replaced inside the batch that writes the
    new ones. A user listed twice keeps the last list.
    """
    pairs = recommendations.items() if isinstance(recommendations, Mapping) else recommendations
    by_user: dict[str, list[dict[str, Any]]] = {}
    for user_id, items in pairs:
        by_user[str(user_id)] = [_item_row(item) for item in items]
    rows = [{"user_id": user_id, "items": items} for user_id, items in by_user.items()]
    expected = sum(len(items) for items in by_user.values())
    counters = store.write_batches(
        query("write_recommendations"),
        rows,
        batch_size,
        extra={"model": model_id, "created_at": created_at or datetime.now(timezone.utc)},
    )
    created = counters.get("relationships_created", 0)
    return RecommendationWrite(
        users=len(rows),
        created=created,
        deleted=counters.get("relationships_deleted", 0),
        skipped=expected - created,
        details=counters,
    )


# --------------------------------------------------------------------------- helpers
def _reason(raw: Mapping[str, Any]) -> Reason:
    """A :class:`Reason` with its sentence, from one reason map of ``explain_paths.cypher``."""
    kind = raw["kind"]
    via_id = raw["via_product_id"]
    title = raw.get("via_title")
    item = f"'{title}' ({via_id})" if title else str(via_id)
    events = set(raw.get("events") or ())
    subject = next((phrase for event, phrase in _EVENT_PHRASES if event in events), "You interacted with {item}")
    subject = subject.format(item=item)
    via = raw.get("via")
    detail = raw.get("detail")
    if kind == "relation":
        phrase = _RELATION_PHRASES.get(via, f"linked to it ({via})")
        text = f"{subject}; this product is {phrase}"
    elif kind == "brand":
        text = f"{subject}, also made by {via}"
    elif kind == "category" and detail is None:
        text = f"{subject}, also in {via}"
    elif kind == "category":
        text = f"{subject}, from {detail}; this product is in the sibling category {via}"
    else:
        count = int(detail or 0)
        shoppers = "other shopper who" if count == 1 else "other shoppers who"
        text = f"{subject}; {count} {shoppers} interacted with it also interacted with this product"
        via = str(count)
    return Reason(kind=kind, text=text, via_product_id=str(via_id), via=str(via), strength=float(raw["strength"]))


def _item_row(item: Mapping[str, Any]) -> dict[str, Any]:
    """One item as the flat map ``write_recommendations.cypher`` expects (parallel reason lists)."""
    missing = [key for key in ("product_id", "rank", "score") if key not in item]
    if missing:
        raise ValueError(
            f"A recommendation item lacks {missing} (found keys {sorted(item)}); each needs product_id, rank, "
            "score, relevance, popularity, diversity and optionally reasons."
        )
    reasons = [_as_reason(r) for r in item.get("reasons") or ()]
    return {
        "product_id": str(item["product_id"]),
        "rank": int(item["rank"]),
        "score": float(item["score"]),
        "relevance": float(item.get("relevance", 0.0)),
        "popularity": float(item.get("popularity", 0.0)),
        "diversity": float(item.get("diversity", 0.0)),
        "reasons": [r["text"] for r in reasons],
        "reason_kinds": [r["kind"] for r in reasons],
        "via_products": [r["via_product_id"] for r in reasons],
        "via": [r["via"] for r in reasons],
        "reason_strengths": [r["strength"] for r in reasons],
    }


def _as_reason(reason: Reason | Mapping[str, Any] | str) -> dict[str, Any]:
    if isinstance(reason, Reason):
        data = asdict(reason)
    elif isinstance(reason, str):
        data = {"kind": "", "text": reason, "via_product_id": "", "via": "", "strength": 0.0}
    else:
        data = dict(reason)
    return {
        "kind": str(data.get("kind") or ""),
        "text": str(data.get("text") or ""),
        "via_product_id": str(data.get("via_product_id") or ""),
        "via": str(data.get("via") or ""),
        "strength": float(data.get("strength") or 0.0),
    }
