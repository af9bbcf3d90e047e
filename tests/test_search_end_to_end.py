"""Search against the real Neo4j: entity linking through the full-text indexes, each part of
the hybrid score, `kgrec search`, GET /search and GET /metrics, on a small synthetic shop."""

from __future__ import annotations

import json
import re

import polars as pl
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from kgrec.cli import cli
from kgrec.config import load_config
from kgrec.errors import ConfigError, GraphStoreError
from kgrec.ingest.synthetic import write_sample_shop
from kgrec.pipeline import add_event, build_graph, load_model, match_query, search, train
from kgrec.rank.search import EntityHit, escape_lucene, link_entities, lucene_query, tokenise
from kgrec.serve import create_app
from kgrec.store import search as store_search
from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import clear_graph, ensure_schema, write_graph
from tests.test_cypher_files import analyst_tables

# --- entity linking on a tiny planted graph ---------------------------------------------------


def linked(store: GraphStore, text: str, fuzzy: bool = True) -> list[tuple[str, str]]:
    words = tokenise(text)
    named = store_search.find_named(store, lucene_query(words, fuzzy), [], 50, words=words)
    hits = [EntityHit(kind, key, name, score) for kind, key, name, score in named.entities]
    return [(e.kind, e.key) for e in link_entities(words, hits, fuzzy, named.catalog_words)]


def test_full_text_links_brand_category_and_a_typo(graph_store: GraphStore):
    write_graph(graph_store, analyst_tables())
    assert linked(graph_store, "lumen eyeliner") == [("brand", "Lumen")]
    assert linked(graph_store, "makeup eyes") == [("category", "Beauty > Makeup > Eyes")]
    assert linked(graph_store, "lumne makeup eyes") == [("brand", "Lumen"), ("category", "Beauty > Makeup > Eyes")]
    assert linked(graph_store, "lumne", fuzzy=False) == []
    assert linked(graph_store, "garden tools") == [("category", "Garden > Tools")]
    # Lucene syntax in the user's text is matched literally, never parsed.
    assert sorted(linked(graph_store, 'lumen" OR *:* AND (verde')) == [("brand", "Lumen"), ("brand", "Verde")]
    raw = 'kohl" OR (*:*'
    with pytest.raises(GraphStoreError):  # unescaped, Lucene parses (and here rejects) the text
        store_search.find_candidates(graph_store, raw, 10)
    assert [pid for pid, _ in store_search.find_candidates(graph_store, escape_lucene(raw), 10).hits] == ["p3"]


def test_a_word_the_catalog_spells_is_no_typo_of_a_brand(graph_store: GraphStore):
    """"stapler" is 2 edits from the brand "Stanley"; in a shop that sells staplers it names them."""
    tables = analyst_tables()
    products = tables.products.with_columns(
        pl.Series("title", ["Matte Eyeliner", "Gloss", "Kohl", "Balm", "Desk Stapler", "Rake"]),
        pl.Series("brand", ["Lumen", "Aster", "Lumen", "Aster", "Verde", "Stanley"]),
        pl.Series("description", ["a stanly finish", None, None, None, None, None], dtype=pl.Utf8),
    )
    write_graph(graph_store, tables.__class__(products, tables.interactions, tables.relations, tables.users))
    named = store_search.find_named(graph_store, lucene_query(["stapler", "stanly"]), [], 50, words=["stapler", "stanly", "x:y"])
    assert named.catalog_words == ["stapler"]  # "stanly" is in a description, not a title
    assert linked(graph_store, "stapler") == []
    assert linked(graph_store, "stanly") == [("brand", "Stanley")]  # a typo still links
    assert linked(graph_store, "stanley stapler") == [("brand", "Stanley")]


def test_product_text_index_covers_title_and_the_brand_and_category_names(graph_store: GraphStore):
    write_graph(graph_store, analyst_tables())
    by_title = [pid for pid, _ in store_search.find_candidates(graph_store, lucene_query(["kohl"]), 10).hits]
    assert by_title == ["p3"]
    # p5 "Gloves" has no word "garden" in its own text: its category names carry it.
    by_category = {pid for pid, _ in store_search.find_candidates(graph_store, lucene_query(["garden"]), 10).hits}
    assert by_category == {"p5", "p6"}
    found = store_search.find_candidates(graph_store, "", 10, brands=["Aster"], paths=["Beauty > Makeup"], member_limit=10)
    assert found.hits == []  # no words: no full-text query
    assert set(found.category_products) == {"p1", "p2", "p3", "p4"}
    assert set(found.brand_products) == {"p2", "p4"}
    assert len(store_search.find_candidates(graph_store, "", 10, paths=["Beauty > Makeup"], member_limit=3).category_products) == 3
    named = store_search.find_named(graph_store, lucene_query(["aster"]), ["p3", "nope"], 10)
    assert [(kind, key) for kind, key, _, _ in named.entities] == [("brand", "Aster")]
    assert [product_id for product_id, _ in named.products] == ["p3"]
    assert store_search.find_named(graph_store, "", [], 10) == store_search.Named(entities=[], products=[])


# --- the hybrid search on a trained shop ------------------------------------------------------


@pytest.fixture(scope="module")
def shop(neo4j_server, tmp_path_factory):
    """One trained model on the synthetic shop, shared by the module's tests (search only reads)."""
    tmp = tmp_path_factory.mktemp("search")
    user, password = neo4j_server.auth
    with pytest.MonkeyPatch.context() as env:
        env.setenv("NEO4J_URI", neo4j_server.uri)
        env.setenv("NEO4J_USER", user)
        env.setenv("NEO4J_PASSWORD", password)
        store = GraphStore(neo4j_server.uri, auth=(user, password))
        clear_graph(store)
        files = write_sample_shop(tmp / "shop", num_products=120, num_users=80, seed=3)
        config = load_config(None, ["train.epochs=4", "train.patience=2", f"features.cache_dir={tmp / 'cache'}"])
        build_graph(config, files["products"], files["interactions"], files["relations"], files["users"])
        run = train(config, runs_dir=tmp / "runs", write_embeddings=False, echo=lambda *_: None)
        loaded = load_model(config, run.model_dir, store)
        products = pl.read_csv(files["products"])
        user_id = files["interactions"].read_text().splitlines()[1].split(",")[0]
        yield {"config": config, "run": run, "loaded": loaded, "store": store, "products": products, "user": user_id}
        store.close()


def brand_category(products: pl.DataFrame, brand: str, category: str) -> set[str]:
    rows = products.filter((pl.col("brand") == brand) & pl.col("category").str.starts_with(category))
    return set(rows.get_column("product_id").to_list())


def test_search_recognises_brand_and_category_and_ranks_their_products_first(shop):
    loaded, products = shop["loaded"], shop["products"]
    config = load_config(None, ["search.dense_candidates=10", "search.lexical_candidates=20"])
    result = search(loaded, "nevria action camera", k=5, search_config=config.search)
    assert result.recognised == "brand: Nevria; category: Electronics > Cameras > Action Camera"
    assert result.items[0]["product_id"] == "P001"  # the only Nevria action camera
    assert result.items[0]["entity"] == 1.0 and result.items[0]["lexical"] == 1.0
    nevria = set(products.filter(pl.col("brand") == "Nevria").get_column("product_id"))
    for item in result.items[1:]:  # the rest match one of the two named things at most
        assert item["entity"] <= 0.5
    assert result.candidates < loaded.num_products  # found by the indexes, not a scan
    assert {i["product_id"] for i in result.items if i["entity"] == 0.5} <= nevria | brand_category(
        products, "", "Electronics > Cameras > Action Camera"
    ) | set(products.filter(pl.col("category") == "Electronics > Cameras > Action Camera").get_column("product_id"))


def test_search_recognises_a_typo(shop):
    result = search(shop["loaded"], "nevira", k=3)  # two letters swapped
    assert result.recognised == "brand: Nevria"
    assert all(item["brand"] == "Nevria" for item in result.items)


def test_search_score_is_the_weighted_sum_of_its_parts(shop):
    loaded = shop["loaded"]
    result = search(loaded, "compact notebook", user_id=shop["user"], k=8)
    assert result.recognised.startswith("category: ") and result.recognised.endswith(" > Notebook")
    assert set(result.mix) == {"lexical", "dense", "entity", "personal"}
    assert set(search(loaded, "slim graphite", k=3).mix) == {"lexical", "dense"}  # nothing named, no user
    assert sum(result.mix.values()) == pytest.approx(1.0)
    w = result.weights
    for item in result.items:
        for name in ("lexical", "dense", "personal", "relevance", "popularity", "diversity"):
            assert 0.0 <= item[name] <= 1.0
        assert item["score"] == pytest.approx(
            w["relevance"] * item["relevance"] + w["popularity"] * item["popularity"] + w["diversity"] * item["diversity"], abs=1e-4
        )
    scores = [item["score"] for item in result.items]
    assert scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("part", ["lexical", "dense", "personal"])
def test_each_part_alone_puts_its_best_candidate_first(shop, part: str):
    """With one part weighing (nearly) everything and popularity off, the first product is
    that part's best candidate (1.0 after normalisation)."""
    overrides = [f"search.{name}={100.0 if name == part else 0.001}" for name in ("lexical", "dense", "entity", "personal")]
    config = load_config(None, [*overrides, "search.popularity=0"])
    result = search(
        shop["loaded"], "halona compact notebook", user_id=shop["user"], k=3, include_seen=True, search_config=config.search
    )
    assert result.items[0][part] == pytest.approx(1.0)


def test_search_filter_mode_keeps_only_the_named_products(shop):
    config = load_config(None, ["search.entity_mode=filter"])
    products = shop["products"]
    nevria = set(products.filter(pl.col("brand") == "Nevria").get_column("product_id"))
    match = match_query(shop["loaded"], "nevria gadget", config.search)
    assert match.candidates.numel() == len(nevria)
    result = search(shop["loaded"], "nevria gadget", k=len(nevria) + 5, match=match)
    assert {item["product_id"] for item in result.items} == nevria


def test_search_for_a_user_excludes_their_products_and_plain_search_does_not(shop):
    loaded, store, user_id = shop["loaded"], shop["store"], shop["user"]
    seen = {r["id"] for r in store.read("MATCH (:User {id: $u})-[:INTERACTED]->(p) RETURN p.id AS id", {"u": user_id})}
    title = shop["products"].filter(pl.col("product_id") == sorted(seen)[0]).get_column("title")[0]
    plain = search(loaded, title, k=10)
    assert plain.items[0]["product_id"] == sorted(seen)[0] and plain.user_id is None and "personal" not in plain.mix
    personal = search(loaded, title, user_id=user_id, k=10)
    assert not seen & {item["product_id"] for item in personal.items}
    assert personal.history_size == len(seen)


def test_search_rejects_bad_requests(shop):
    loaded = shop["loaded"]
    with pytest.raises(ConfigError, match="query is empty"):
        search(loaded, "  ")
    with pytest.raises(ConfigError, match="k must be between"):
        search(loaded, "camera", k=0)


def test_kgrec_search_prints_what_it_recognised(shop):
    runner = CliRunner()
    model = ["--model", str(shop["run"].model_dir)]
    result = runner.invoke(cli, ["search", "--query", "nevria action camera", "-k", "3", "--format", "json", *model])
    assert result.exit_code == 0, result.output
    body = json.loads(result.stdout)
    assert body["recognised"] == "brand: Nevria; category: Electronics > Cameras > Action Camera"
    assert [item["product_id"] for item in body["items"]][0] == "P001" and len(body["items"]) == 3
    table = runner.invoke(cli, ["search", "--query", "nevria action camera", "--user", shop["user"], "-k", "3", *model])
    assert table.exit_code == 0, table.output
    assert "recognised: brand: Nevria; category: Electronics > Cameras > Action Camera" in table.output
    assert "person." in table.output and "P001" in table.output
    empty = runner.invoke(cli, ["search", "--query", " ", *model])
    assert empty.exit_code == 1 and "query is empty" in empty.output and "Traceback" not in empty.output


def test_http_search_and_metrics(shop):
    config, loaded, user_id = shop["config"], shop["loaded"], shop["user"]
    client = TestClient(create_app(loaded))
    other = TestClient(create_app(loaded))  # a second app: its own registry, no clash
    body = client.get("/search", params={"query": "nevria action camera", "k": 3}).json()
    assert body["recognised"].startswith("brand: Nevria") and body["items"][0]["product_id"] == "P001"
    assert body == search(loaded, "nevria action camera", k=3).to_dict()
    assert client.get("/search", params={"query": "camera", "user": user_id}).json()["user_id"] == user_id
    assert client.get("/search", params={"query": "camera", "user": "nobody"}).status_code == 404
    assert client.get("/search", params={"query": ""}).status_code == 400
    assert client.get("/recommend", params={"user": user_id, "k": 2}).status_code == 200

    text = client.get("/metrics").text

    def sample(name: str, **labels: str) -> float:
        for line in text.splitlines():
            found = re.fullmatch(r"([a-z_]+)(?:\{(.*)\})? (\S+)", line)
            if found and found.group(1) == name and dict(re.findall(r'(\w+)="([^"]*)"', found.group(2) or "")) == labels:
                return float(found.group(3))
        raise AssertionError(f"{name}{labels} missing from /metrics:\n{text}")

    assert sample("kgrec_http_requests_total", endpoint="/search", method="GET", status="200") == 2
    assert sample("kgrec_http_requests_total", endpoint="/search", method="GET", status="404") == 1
    assert sample("kgrec_http_errors_total", endpoint="/search", method="GET", kind="client") == 2
    assert sample("kgrec_http_request_duration_seconds_count", endpoint="/recommend", method="GET") == 1
    # The one GET /recommend was one ranked batch: each stage observed once, within the request's time.
    stages = {stage: sample("kgrec_rank_stage_seconds_sum", stage=stage) for stage in ("events", "model", "ranking")}
    assert all(sample("kgrec_rank_stage_seconds_count", stage=stage) == 1 for stage in stages)
    assert all(spent > 0 for spent in stages.values())
    assert sum(stages.values()) <= sample("kgrec_http_request_duration_seconds_sum", endpoint="/recommend", method="GET")
    assert sample("kgrec_model_info", model=loaded.model_id) == 1
    assert 0 <= sample("kgrec_model_age_seconds") < 3600
    assert sample("kgrec_events_since_training") == 0
    add_event(config, user_id, "P001", "view")
    assert "kgrec_events_since_training 1.0" in client.get("/metrics").text
    other_text = other.get("/metrics").text
    assert 'endpoint="/search"' not in other_text and 'stage="events"' not in other_text  # the other app ranked nothing


def test_search_on_a_graph_without_the_indexes_says_how_to_fix_it(shop):
    store = shop["store"]
    store.run("DROP INDEX product_text IF EXISTS")
    try:
        with pytest.raises(store_search.SearchIndexMissing, match="kgrec build-graph"):
            search(shop["loaded"], "camera")
    finally:
        ensure_schema(store)
        store.run("CALL db.awaitIndexes(60)")


def test_search_with_a_model_trained_without_text_uses_lexical_and_entity_parts(shop, tmp_path):
    from kgrec.snapshot.snapshot import load_snapshot
    from kgrec.train.artifacts import KgrecRecommender, save_model_dir
    from kgrec.train.split import leave_last_out

    config = load_config(None, ["model.use_text=false"])
    snapshot = load_snapshot(shop["run"].model_dir / "snapshot")
    model = KgrecRecommender(config, seed=0, epochs=1).fit(leave_last_out(snapshot), snapshot)
    model_dir = save_model_dir(model, tmp_path / "models" / "no-text", {}, snapshot=snapshot)
    loaded = load_model(config, model_dir, shop["store"])
    result = search(loaded, "nevria action camera", k=3)
    assert result.items[0]["product_id"] == "P001"
    assert "dense" not in result.items[0] or result.items[0]["dense"] == 0.0
