"""The whole pipeline on a small synthetic shop against the real Neo4j:
build-graph → train → recommend (CLI, service, HTTP) → explanations stored → real-time events."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from kgrec.cli import cli
from kgrec.config import load_config
from kgrec.errors import ConfigError, UnknownUserError
from kgrec.ingest.synthetic import write_sample_shop
from kgrec import pipeline
from kgrec.pipeline import add_event, build_graph, load_model, recommend, train
from kgrec.rank.params import Weights
from kgrec.serve import create_app
from kgrec.store.connection import GraphStore


@pytest.fixture
def trained(graph_store: GraphStore, tmp_path: Path):
    shop = write_sample_shop(tmp_path / "shop", num_products=120, num_users=80, seed=3)
    config = load_config(None, ["train.epochs=4", "train.patience=2", f"features.cache_dir={tmp_path / 'cache'}"])
    build_graph(config, shop["products"], shop["interactions"], shop["relations"], shop["users"])
    run = train(config, runs_dir=tmp_path / "runs", write_embeddings=True, echo=lambda *_: None)
    user_id = shop["interactions"].read_text().splitlines()[1].split(",")[0]
    return config, run, user_id


def test_train_writes_a_model_dir_and_embeddings_with_a_vector_index(trained, graph_store: GraphStore):
    config, run, _ = trained
    assert (run.model_dir / "curves.png").is_file() and (run.model_dir / "snapshot" / "manifest.json").is_file()
    assert run.metrics["test"]["ndcg@10"] >= 0
    assert run.embeddings_written == 120 + 80
    rows = graph_store.read(
        "MATCH (p:Product) WITH p LIMIT 1 "
        "CALL db.index.vector.queryNodes('product_embedding', 3, p.embedding) YIELD node RETURN node.id AS id"
    )
    assert len(rows) == 3


def test_recommend_splits_each_score_into_its_parts(trained, graph_store: GraphStore):
    config, run, user_id = trained
    loaded = load_model(config, run.model_dir, graph_store)
    result = recommend(loaded, user_id, k=5, weights=Weights.of((0.6, 0.2, 0.2)))
    assert len(result.items) == 5
    seen = {r["id"] for r in graph_store.read("MATCH (:User {id: $u})-[:INTERACTED]->(p) RETURN p.id AS id", {"u": user_id})}
    for item in result.items:
        assert item["product_id"] not in seen
        expected = 0.6 * item["relevance"] + 0.2 * item["popularity"] + 0.2 * item["diversity"]
        assert item["score"] == pytest.approx(expected, abs=1e-4)


def test_recommend_rejects_bad_requests_with_clear_errors(trained, graph_store: GraphStore):
    config, run, user_id = trained
    loaded = load_model(config, run.model_dir, graph_store)
    with pytest.raises(UnknownUserError, match="not in the graph"):
        recommend(loaded, "no-such-user")
    with pytest.raises(ConfigError, match="k must be between"):
        recommend(loaded, user_id, k=0)
    with pytest.raises(ConfigError, match="query is empty"):
        recommend(loaded, user_id, query="   ")


def test_explain_stores_reasons_and_rerunning_replaces_them(trained, graph_store: GraphStore):
    config, run, user_id = trained
    loaded = load_model(config, run.model_dir, graph_store)
    assert not graph_store.read("MATCH ()-[r:RECOMMENDED]->() RETURN r LIMIT 1")
    explained = recommend(loaded, user_id, k=4, explain=True)
    assert explained.explained and not explained.stored  # reading reasons writes nothing
    assert not graph_store.read("MATCH ()-[r:RECOMMENDED]->() RETURN r LIMIT 1")
    for _ in range(2):
        pipeline.store_reasons(loaded, recommend(loaded, user_id, k=4))
    rows = graph_store.read(
        "MATCH (:User {id: $u})-[r:RECOMMENDED {model: $m}]->(p) RETURN r.rank AS rank, r.reasons AS reasons",
        {"u": user_id, "m": run.model_dir.name},
    )
    assert sorted(r["rank"] for r in rows) == [1, 2, 3, 4]
    assert any(r["reasons"] for r in rows)


def batch_lists(loaded, out: Path, **options) -> dict[str, list[str]]:
    pipeline.recommend_all(loaded, out, **options)
    return {line["user_id"]: line["items"] for line in map(json.loads, out.read_text().splitlines())}


def test_a_new_event_changes_the_next_recommendations_without_retraining(trained, graph_store: GraphStore, tmp_path: Path):
    config, run, user_id = trained
    loaded = load_model(config, run.model_dir, graph_store)
    before = recommend(loaded, user_id, k=5)
    batch_before = batch_lists(loaded, tmp_path / "before.jsonl", k=5)[user_id]
    assert batch_before == [item["product_id"] for item in before.items]
    target = before.items[0]["product_id"]
    add_event(config, user_id, target, "purchase")
    after = recommend(loaded, user_id, k=5)
    assert after.history_size == before.history_size + 1
    assert target not in [item["product_id"] for item in after.items]
    batch_after = batch_lists(loaded, tmp_path / "after.jsonl", k=5)[user_id]
    assert batch_after == [item["product_id"] for item in after.items] != batch_before


def test_http_api_answers_and_maps_user_errors_to_4xx(trained, graph_store: GraphStore):
    config, run, user_id = trained
    client = TestClient(create_app(load_model(config, run.model_dir, graph_store)))
    health = client.get("/health").json()
    assert health["status"] == "ok" and "database" not in health and "bolt" not in json.dumps(health)
    body = client.get("/recommend", params={"user": user_id, "k": 3}).json()
    assert len(body["items"]) == 3 and {"relevance", "popularity", "diversity"} <= set(body["items"][0])
    assert client.get("/recommend", params={"user": "nobody"}).status_code == 404
    assert client.get("/recommend", params={"user": user_id, "k": 0}).status_code == 400
    assert client.get("/recommend", params={"user": user_id, "weights": "relevance=-1"}).status_code == 400
    assert client.get("/recommend", params={"user": user_id, "query": ""}).status_code == 400
    assert client.get("/health").status_code == 200  # still alive


def test_cli_recommend_json_and_all_users(trained, tmp_path: Path):
    config, run, user_id = trained
    runner = CliRunner()
    result = runner.invoke(cli, ["recommend", "--user", user_id, "-k", "3", "--format", "json", "--model", str(run.model_dir),
                                 "--set", "train.epochs=4"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["items"]) == 3
    out = tmp_path / "recs.jsonl"
    result = runner.invoke(cli, ["recommend", "--all-users", "-k", "5", "--out", str(out), "--model", str(run.model_dir)])
    assert result.exit_code == 0, result.output
    assert "Ranking users" in result.output and "80/80" in result.output  # the progress bar, finished
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 80 and all(len(line["items"]) == 5 == len(line["scores"]) for line in lines)


def add_twin_product(config, tmp_path: Path) -> None:
    """A twin of P001 (same title, brand, category), NEW-1, arrives after training, with one event."""
    twin = tmp_path / "new_products.csv"
    twin.write_text(
        "product_id,title,description,brand,category,price\n"
        'NEW-1,Nevria Rugged Action Camera,"A rugged action camera.",Nevria,Electronics > Cameras > Action Camera,30.0\n'
    )
    events = tmp_path / "new_events.csv"
    events.write_text("user_id,product_id,event,timestamp\nnewcomer,NEW-1,view,2025-01-01T00:00:00\n")
    build_graph(config, twin, events)


def test_products_added_after_training_are_ranked_through_their_graph_neighbours(
    trained, graph_store: GraphStore, tmp_path: Path
):
    config, run, user_id = trained
    add_twin_product(config, tmp_path)

    loaded = load_model(config, run.model_dir, graph_store)
    assert "NEW-1" in loaded.product_ids and len(loaded.product_ids) == 121
    embedding = loaded.recommender.product_embedding
    similarity = embedding @ embedding[loaded.product_index("NEW-1")]
    twin_rank = int((similarity[:120] > similarity[loaded.product_index("P001")]).sum())
    assert twin_rank < 12  # among the 10% of catalog products closest to the new one

    _, histories = loaded.histories([user_id])
    everything = recommend(loaded, user_id, k=121 - int(histories.lengths[0]))
    assert "NEW-1" in [item["product_id"] for item in everything.items]
    assert recommend(loaded, "newcomer", k=3).history_size == 1  # its event counts in real time

    offline = load_model(config, run.model_dir, None)
    assert "NEW-1" not in offline.product_ids


@pytest.mark.parametrize("retrieval", ["exact", "pca"])
def test_retrieved_candidates_rank_like_the_full_pass_and_include_new_products(
    trained, graph_store: GraphStore, tmp_path: Path, retrieval: str
):
    """Forced onto the candidate stage (rank.exact_max_products=0) with the exact index, or a
    principal-directions scan that keeps every direction, 30 candidates of 121 products (and the
    user's 30 with the most co-interaction weight) keep the full pass's top 10; a product added
    after training is retrieved. The candidates' min-max scale is the vectors' over the catalog,
    so products close in score may swap places."""
    config, run, _ = trained
    add_twin_product(config, tmp_path)
    small_pool = {"num_candidates": 30, "retrieval_candidates": 30}
    config = config.model_copy(update={"rank": config.rank.model_copy(update=small_pool)})
    full = load_model(config, run.model_dir, graph_store)
    assert full.retriever is None
    width = full.recommender.product_embedding.shape[1]
    forced = config.model_copy(
        update={"rank": config.rank.model_copy(update={"exact_max_products": 0, "retrieval": retrieval, "pca_components": width})}
    )
    retrieving = load_model(forced, run.model_dir, graph_store)
    assert retrieving.retriever is not None and "NEW-1" in retrieving.product_ids
    expected, retrieved = batch_lists(full, tmp_path / "full.jsonl", k=10), batch_lists(retrieving, tmp_path / "r.jsonl", k=10)
    assert retrieved.keys() == expected.keys()
    kept = sum(len(set(expected[u]) & set(retrieved[u])) for u in expected) / sum(len(v) for v in expected.values())
    assert kept >= 0.99
    assert sum(expected[u][:3] == retrieved[u][:3] for u in expected) >= 0.95 * len(expected)
    new = retrieving.product_index("NEW-1")
    vector = retrieving.recommender.product_embedding[new : new + 1]
    assert new in retrieving.retriever.candidates(vector, None, Weights.of((1, 0, 0))).product_index[0].tolist()


def test_a_model_ranks_with_the_rank_settings_it_was_trained_with(graph_store: GraphStore, tmp_path: Path):
    """Trained with rank settings (as with configs/accurate.yaml), a model is ranked with them
    by a command that names no rank key; a key the command names wins."""
    shop = write_sample_shop(tmp_path / "shop", num_products=120, num_users=80, seed=3)
    cache = f"features.cache_dir={tmp_path / 'cache'}"
    config = load_config(None, ["train.epochs=2", cache, "rank.k=4", "rank.exact_max_products=0", "rank.retrieval=pca"])
    build_graph(config, shop["products"], shop["interactions"], shop["relations"], shop["users"])
    run = train(config, runs_dir=tmp_path / "runs", write_embeddings=False, echo=lambda *_: None)
    user_id = shop["interactions"].read_text().splitlines()[1].split(",")[0]

    loaded = load_model(load_config(None, [cache]), run.model_dir, graph_store)
    assert loaded.retriever is not None and loaded.retriever.scan is not None  # rank.retrieval: pca
    assert len(recommend(loaded, user_id).items) == 4

    named = load_model(load_config(None, [cache, "rank.k=6", "rank.exact_max_products=200000"]), run.model_dir, graph_store)
    assert named.retriever is None and named.config.rank.retrieval == "pca"
    assert len(recommend(named, user_id).items) == 6

    result = CliRunner().invoke(cli, ["recommend", "--user", user_id, "--format", "json", "--model", str(run.model_dir)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["items"]) == 4
    client = TestClient(create_app(loaded))
    assert len(client.get("/recommend", params={"user": user_id}).json()["items"]) == 4  # the HTTP API too
    assert len(client.get("/recommend", params={"user": user_id, "k": 2}).json()["items"]) == 2


def test_one_user_batch_and_http_give_identical_lists(trained, graph_store: GraphStore, tmp_path: Path):
    """recommend --user, recommend --all-users and GET /recommend agree for 50 random users,
    under the configured weights (diversity on) and under explicit ones."""
    import random

    config, run, _ = trained
    runner = CliRunner()
    model = ["--model", str(run.model_dir)]
    loaded = load_model(config, run.model_dir, graph_store)
    client = TestClient(create_app(loaded))
    users = sorted(batch_lists(loaded, tmp_path / "all.jsonl", k=10))
    sample = random.Random(0).sample(users, 50)
    for weights in (None, "relevance=0.5,popularity=0.2,diversity=0.3"):
        flags = ["--weights", weights] if weights else []
        out = tmp_path / "cli.jsonl"
        result = runner.invoke(cli, ["recommend", "--all-users", "-k", "10", "--out", str(out), *flags, *model])
        assert result.exit_code == 0, result.output
        batch = {line["user_id"]: line["items"] for line in map(json.loads, out.read_text().splitlines())}
        for user_id in sample:
            one = runner.invoke(cli, ["recommend", "--user", user_id, "-k", "10", "--format", "json", *flags, *model])
            assert one.exit_code == 0, one.output
            single = [item["product_id"] for item in json.loads(one.stdout)["items"]]
            params = {"user": user_id, "k": 10, **({"weights": weights} if weights else {})}
            http = [item["product_id"] for item in client.get("/recommend", params=params).json()["items"]]
            assert single == batch[user_id] == http, user_id


def test_all_users_honours_query_and_include_seen_and_rejects_explain(trained, graph_store: GraphStore, tmp_path: Path):
    config, run, user_id = trained
    loaded = load_model(config, run.model_dir, graph_store)
    query = "rugged action camera"
    batch = batch_lists(loaded, tmp_path / "q.jsonl", k=5, query=query)
    assert batch[user_id] == [item["product_id"] for item in recommend(loaded, user_id, k=5, query=query).items]
    plain = batch_lists(loaded, tmp_path / "p.jsonl", k=5)
    assert batch != plain  # the query changed the lists
    _, histories = loaded.histories([user_id])
    seen = set(loaded.product_ids.ids.gather(histories.product_index.tolist()).to_list())
    with_seen = batch_lists(loaded, tmp_path / "s.jsonl", k=40, include_seen=True)[user_id]
    assert seen & set(with_seen) and not seen & set(plain[user_id])
    result = CliRunner().invoke(cli, ["recommend", "--all-users", "--explain", "--out", str(tmp_path / "x.jsonl"),
                                      "--model", str(run.model_dir)])
    assert result.exit_code != 0 and "--explain" in result.output and not (tmp_path / "x.jsonl").exists()


def test_get_never_writes_and_post_stores(trained, graph_store: GraphStore):
    config, run, user_id = trained
    client = TestClient(create_app(load_model(config, run.model_dir, graph_store)))
    count = "MATCH ()-[r:RECOMMENDED]->() RETURN count(r) AS n"
    body = client.get("/recommend", params={"user": user_id, "k": 3, "explain": "true"}).json()
    assert body["explained"] and "reasons" in body["items"][0]
    assert graph_store.read(count)[0]["n"] == 0
    stored = client.post("/recommend", params={"user": user_id, "k": 3}).json()
    assert stored["stored"] and graph_store.read(count)[0]["n"] == 3


def test_api_key_guards_every_endpoint_but_health(trained, graph_store: GraphStore):
    config, run, user_id = trained
    client = TestClient(create_app(load_model(config, run.model_dir, graph_store), api_key="s3cret"))
    assert client.get("/health").status_code == 200
    assert client.get("/recommend", params={"user": user_id}).status_code == 401
    assert client.get("/recommend", params={"user": user_id}, headers={"X-API-Key": "wrong"}).status_code == 401
    assert client.get("/recommend", params={"user": user_id}, headers={"X-API-Key": "s3cret"}).status_code == 200
    assert client.post("/recommend", params={"user": user_id}).status_code == 401
