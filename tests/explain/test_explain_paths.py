from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from kgrec.errors import UnknownUserError
from kgrec.explain import Reason, explain_paths, pick_reasons, write_recommendations, write_recommendations_batch
from kgrec.ingest.tables import INTERACTION_SCHEMA, PRODUCT_SCHEMA, RELATION_SCHEMA, GraphTables
from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import write_graph

TRICKY_USER = "u\"'}) MATCH (n) DETACH DELETE n //"
TRICKY_PRODUCT = "p'); RETURN 1 UNION MATCH (x) DELETE x //\\"
EYES, LIPS, FACE = "Beauty > Makeup > Eyes", "Beauty > Makeup > Lips", "Beauty > Makeup > Face"


def planted_tables() -> GraphTables:
    """u1 bought p1 (Lumen, Eyes) long ago and viewed p2 (Aster, Lips) recently.

    Each target product is planted to have one kind of path from u1:
    t_brand (Lumen, far category), t_cat (Eyes, other brand), t_sib (Face: a sibling of Eyes
    and Lips), t_rel (p2 also_bought it), t_co (u2, u3 interacted with p1 and with it),
    t_both (in Eyes and Lips: category paths from both p1 and p2).
    """
    products = pl.DataFrame(
        {
            "product_id": ["p1", "p2", "t_brand", "t_cat", "t_sib", "t_rel", "t_co", "t_both", TRICKY_PRODUCT],
            "title": ["Matte Eyeliner", "Gloss", "Garden Gloves", "Kohl", "Blush", "Lip Balm", "Mystery", "Duo", "Odd 'one'"],
            "description": [None] * 9,
            "price": [None] * 9,
            "brand": ["Lumen", "Aster", "Lumen", "Nova", "Orra", None, None, "Vega", "Lumen"],
            "categories": [[EYES], [LIPS], ["Garden"], [EYES], [FACE], ["Garden > Tools"], [], [EYES, LIPS], ["Garden"]],
        },
        schema=PRODUCT_SCHEMA,
    )
    events = [
        ("u1", "p1", "view", 1_000, None, 1.0),
        ("u1", "p1", "purchase", 1_100, None, 5.0),
        ("u1", "p2", "view", 2_000, None, 1.0),
        ("u2", "p1", "view", 500, None, 1.0),
        ("u2", "t_co", "purchase", 600, None, 5.0),
        ("u3", "p1", "cart", 700, None, 3.0),
        ("u3", "t_co", "view", 800, None, 1.0),
        (TRICKY_USER, TRICKY_PRODUCT, "purchase", 900, None, 5.0),
    ]
    interactions = pl.DataFrame(events, schema=INTERACTION_SCHEMA, orient="row")
    relations = pl.DataFrame([("p2", "also_bought", "t_rel")], schema=RELATION_SCHEMA, orient="row")
    users = pl.DataFrame({"user_id": sorted({e[0] for e in events})})
    return GraphTables(products=products, interactions=interactions, relations=relations, users=users)


@pytest.fixture
def planted(graph_store: GraphStore) -> GraphStore:
    write_graph(graph_store, planted_tables())
    return graph_store


def test_explain_paths_finds_each_planted_kind_of_path(planted: GraphStore):
    targets = ["t_brand", "t_cat", "t_sib", "t_rel", "t_co"]
    reasons = explain_paths(planted, "u1", targets + ["no_such_product"], per_product=3)
    assert set(reasons) == set(targets) | {"no_such_product"}
    assert reasons["no_such_product"] == []
    kinds = {pid: {(r.kind, r.via_product_id, r.via) for r in reasons[pid]} for pid in targets}
    assert kinds["t_brand"] == {("brand", "p1", "Lumen")}
    assert kinds["t_cat"] == {("category", "p1", EYES), ("category", "p2", EYES)}  # same, and sibling of Lips
    assert reasons["t_cat"][0].text == f"You bought 'Matte Eyeliner' (p1), also in {EYES}"
    assert kinds["t_sib"] == {("category", "p1", FACE), ("category", "p2", FACE)}
    assert kinds["t_rel"] == {("relation", "p2", "also_bought")}
    assert kinds["t_co"] == {("co_interaction", "p1", "2")}


def test_explain_paths_writes_readable_sentences(planted: GraphStore):
    reasons = explain_paths(planted, "u1", ["t_brand", "t_rel", "t_co", "t_sib"])
    assert reasons["t_brand"][0].text == "You bought 'Matte Eyeliner' (p1), also made by Lumen"
    assert reasons["t_rel"][0].text == "You viewed 'Gloss' (p2); this product is often bought with it"
    assert reasons["t_co"][0].text == (
        "You bought 'Matte Eyeliner' (p1); 2 other shoppers who interacted with it also interacted with this product"
    )
    assert reasons["t_sib"][-1].text == f"You viewed 'Gloss' (p2), from {LIPS}; this product is in the sibling category {FACE}"


def test_explain_paths_ranks_heavier_history_first(planted: GraphStore):
    # t_both shares a category with p1 (bought: weight 6) and with p2 (viewed: weight 1, but later)
    reasons = explain_paths(planted, "u1", ["t_both"], per_product=2)["t_both"]
    assert [r.via_product_id for r in reasons] == ["p1", "p2"]
    assert reasons[0].strength > reasons[1].strength > 0


def test_explain_paths_keeps_per_product_reasons(planted: GraphStore):
    assert len(explain_paths(planted, "u1", ["t_sib"], per_product=1)["t_sib"]) == 1
    assert explain_paths(planted, "u1", ["t_sib"], per_product=0) == {"t_sib": []}


def test_explain_paths_rejects_an_unknown_user(planted: GraphStore):
    with pytest.raises(UnknownUserError, match="'nobody' is not in the graph"):
        explain_paths(planted, "nobody", ["t_brand"])


def test_pick_reasons_prefers_one_reason_of_each_kind():
    def reason(kind: str, strength: float) -> Reason:
        return Reason(kind=kind, text=kind, via_product_id="x", via="v", strength=strength)  # type: ignore[arg-type]

    picked = pick_reasons([reason("co_interaction", 5), reason("co_interaction", 4), reason("brand", 1)], 2)
    assert [(r.kind, r.strength) for r in picked] == [("co_interaction", 5), ("brand", 1)]


def items_for(product_ids: list[str], scale: float = 1.0) -> list[dict]:
    return [
        {
            "product_id": pid,
            "rank": rank + 1,
            "score": scale / (rank + 1),
            "relevance": 0.5,
            "popularity": 0.25,
            "diversity": 0.125,
            "reasons": [Reason("brand", f"reason for {pid}", "p1", "Lumen", 4.0)] if rank == 0 else [],
        }
        for rank, pid in enumerate(product_ids)
    ]


def recommended(store: GraphStore, user_id: str, model: str | None = None) -> list[dict]:
    return store.read(
        "MATCH (:User {id: $user_id})-[r:RECOMMENDED]->(p:Product) WHERE $model IS NULL OR r.model = $model "
        "RETURN p.id AS product_id, r.rank AS rank, r.score AS score, r.model AS model, r.reasons AS reasons, "
        "r.reason_kinds AS kinds, r.via_products AS via_products, r.via AS via, r.created_at AS created_at "
        "ORDER BY r.model, r.rank",
        {"user_id": user_id, "model": model},
    )


def test_write_recommendations_stores_parts_and_reasons(planted: GraphStore):
    when = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
    summary = write_recommendations(planted, "u1", "m1", items_for(["t_brand", "t_cat", "t_rel"]), created_at=when)
    assert (summary.created, summary.deleted, summary.skipped) == (3, 0, 0)
    rows = recommended(planted, "u1")
    assert [r["product_id"] for r in rows] == ["t_brand", "t_cat", "t_rel"]
    assert rows[0]["reasons"] == ["reason for t_brand"] and rows[0]["kinds"] == ["brand"]
    assert rows[0]["via_products"] == ["p1"] and rows[0]["via"] == ["Lumen"]
    assert rows[1]["reasons"] == []
    assert rows[0]["created_at"].to_native() == when


def test_write_recommendations_again_replaces_the_same_model_only(planted: GraphStore):
    write_recommendations(planted, "u1", "m1", items_for(["t_brand", "t_cat", "t_rel"]))
    write_recommendations(planted, "u1", "m2", items_for(["t_co"]))
    summary = write_recommendations(planted, "u1", "m1", items_for(["t_sib", "t_cat", "t_both"], scale=2.0))
    assert (summary.created, summary.deleted) == (3, 3)
    rows = recommended(planted, "u1", "m1")
    assert [(r["product_id"], r["rank"], r["score"]) for r in rows] == [
        ("t_sib", 1, 2.0),
        ("t_cat", 2, 1.0),
        ("t_both", 3, 2.0 / 3),
    ]
    assert [r["product_id"] for r in recommended(planted, "u1", "m2")] == ["t_co"]


def test_write_recommendations_batch_writes_many_users_and_skips_unknown_ones(planted: GraphStore):
    batch = {"u1": items_for(["t_brand", "t_cat"]), "u2": items_for(["t_rel"]), "ghost": items_for(["t_co"])}
    summary = write_recommendations_batch(planted, "m1", batch, batch_size=2)
    assert (summary.users, summary.created, summary.skipped) == (3, 3, 1)
    write_recommendations_batch(planted, "m1", batch, batch_size=2)
    assert len(recommended(planted, "u1")) == 2 and len(recommended(planted, "u2")) == 1


def test_ids_with_quotes_and_cypher_keywords_are_data(planted: GraphStore):
    reasons = explain_paths(planted, TRICKY_USER, ["t_brand", TRICKY_PRODUCT])
    assert {(r.kind, r.via_product_id) for r in reasons["t_brand"]} == {("brand", TRICKY_PRODUCT), ("category", TRICKY_PRODUCT)}
    write_recommendations(planted, TRICKY_USER, "m'1\"", items_for(["t_brand", TRICKY_PRODUCT]))
    rows = recommended(planted, TRICKY_USER)
    assert [(r["product_id"], r["model"]) for r in rows] == [("t_brand", "m'1\""), (TRICKY_PRODUCT, "m'1\"")]
    assert planted.read("MATCH (n) RETURN count(n) AS n")[0]["n"] > 10  # nothing was deleted
