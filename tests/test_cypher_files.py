"""Every analyst query in cypher/ runs against a small graph with stored recommendations and returns rows."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from kgrec.explain import explain_paths, write_recommendations_batch
from kgrec.ingest.tables import INTERACTION_SCHEMA, PRODUCT_SCHEMA, RELATION_SCHEMA, GraphTables
from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import write_graph

CYPHER_DIR = Path(__file__).resolve().parents[1] / "cypher"
QUERY_FILES = sorted(p for p in CYPHER_DIR.glob("*.cypher") if p.name != "schema.cypher")
PARAMS_LINE = re.compile(r"^//\s*params:\s*(\{.*\})\s*$", re.MULTILINE)
MODEL = "kgrec-v1"
EMBEDDINGS = {
    "p1": [1.0, 0.0, 0.0, 0.0],
    "p2": [0.7, 0.7, 0.0, 0.0],
    "p3": [0.9, 0.1, 0.0, 0.1],
    "p4": [0.0, 1.0, 0.0, 0.0],
    "p5": [0.0, 0.0, 1.0, 0.0],
    "p6": [0.1, 0.0, 0.9, 0.2],
}
RECOMMENDATIONS = {"u1": ["p3", "p4", "p6"], "u2": ["p3", "p2"], "u3": ["p1", "p3", "p4"]}


def analyst_tables() -> GraphTables:
    products = pl.DataFrame(
        {
            "product_id": list(EMBEDDINGS),
            "title": ["Matte Eyeliner", "Gloss", "Kohl", "Balm", "Gloves", "Rake"],
            "description": [None] * 6,
            "price": [9.5, 12.0, 7.0, 4.0, 15.0, 30.0],
            "brand": ["Lumen", "Aster", "Lumen", "Aster", "Verde", None],
            "categories": [
                ["Beauty > Makeup > Eyes"],
                ["Beauty > Makeup > Lips"],
                ["Beauty > Makeup > Eyes"],
                ["Beauty > Makeup > Lips", "Beauty > Skin"],
                ["Garden > Tools"],
                ["Garden > Tools"],
            ],
        },
        schema=PRODUCT_SCHEMA,
    )
    events = [
        ("u1", "p1", "purchase", 1_000, None, 5.0),
        ("u1", "p2", "view", 2_000, None, 1.0),
        ("u2", "p1", "view", 1_500, None, 1.0),
        ("u2", "p4", "purchase", 1_600, None, 5.0),
        ("u3", "p2", "cart", 1_700, None, 3.0),
        ("u3", "p5", "view", 1_800, None, 1.0),
    ]
    interactions = pl.DataFrame(events, schema=INTERACTION_SCHEMA, orient="row")
    relations = pl.DataFrame([("p2", "also_bought", "p4"), ("p5", "bought_together", "p6")], schema=RELATION_SCHEMA, orient="row")
    return GraphTables(products, interactions, relations, pl.DataFrame({"user_id": ["u1", "u2", "u3"]}))


@pytest.fixture
def analyst_graph(graph_store: GraphStore):
    """The graph, recommendations with real reasons for three users, and the vector index."""
    write_graph(graph_store, analyst_tables())
    batch = {}
    for user_id, product_ids in RECOMMENDATIONS.items():
        reasons = explain_paths(graph_store, user_id, product_ids)
        batch[user_id] = [
            {
                "product_id": pid,
                "rank": rank + 1,
                "score": 0.9 - 0.1 * rank,
                "relevance": 1.0 - 0.2 * rank,
                "popularity": 0.5,
                "diversity": 0.25 * rank,
                "reasons": reasons[pid],
            }
            for rank, pid in enumerate(product_ids)
        ]
    when = datetime(2024, 5, 1, 12, tzinfo=timezone.utc)
    assert write_recommendations_batch(graph_store, MODEL, batch, created_at=when).created == 8
    graph_store.run(
        "UNWIND $rows AS row MATCH (p:Product {id: row.id}) SET p.embedding = row.embedding",
        {"rows": [{"id": pid, "embedding": vector} for pid, vector in EMBEDDINGS.items()]},
    )
    # A leftover index from another test may have other dimensions: start from ours, and drop it after.
    graph_store.run("DROP INDEX product_embedding IF EXISTS")
    graph_store.run(
        "CREATE VECTOR INDEX product_embedding IF NOT EXISTS FOR (p:Product) ON p.embedding "
        "OPTIONS {indexConfig: {`vector.dimensions`: 4, `vector.similarity_function`: 'cosine'}}"
    )
    graph_store.run("CALL db.awaitIndexes(60)")
    yield graph_store
    graph_store.run("DROP INDEX product_embedding IF EXISTS")


def header_params(path: Path) -> dict:
    found = PARAMS_LINE.search(path.read_text(encoding="utf-8"))
    assert found, f"{path.name} has no '// params: {{...}}' line"
    return json.loads(found.group(1))


def test_cypher_folder_holds_the_analyst_questions():
    names = {p.name for p in QUERY_FILES}
    assert {
        "why_recommended.cypher",
        "users_for_product.cypher",
        "top_brands.cypher",
        "top_categories.cypher",
        "coverage_by_category.cypher",
        "similar_products.cypher",
    } <= names
    readme = (CYPHER_DIR / "README.md").read_text(encoding="utf-8")
    for name in names:
        assert name in readme, f"cypher/README.md does not list {name}"


def split_header(text: str) -> tuple[str, str]:
    """``(leading comment lines, the query)``."""
    lines = text.splitlines()
    end = next((i for i, line in enumerate(lines) if not line.startswith("//")), len(lines))
    return "\n".join(lines[:end]), "\n".join(lines[end:])


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: p.name)
def test_cypher_file_is_documented(path: Path):
    header, body = split_header(path.read_text(encoding="utf-8"))
    params = header_params(path)
    assert header.startswith("// Question:"), f"{path.name} must start with '// Question: ...'"
    assert "Example result:" in header and "| ---" not in header and "|--" in header, f"{path.name} needs an example table"
    for name in params:
        assert f":param {name} =>" in header, f"{path.name} documents no ':param {name} => ...' usage"
    used = set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", body))
    assert used == set(params), f"{path.name}: the query uses {sorted(used)}, the params line declares {sorted(params)}"


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: p.name)
def test_cypher_file_returns_rows(analyst_graph: GraphStore, path: Path):
    rows = analyst_graph.read(path.read_text(encoding="utf-8"), header_params(path))
    assert len(rows) >= 1, f"{path.name} returned no rows with {header_params(path)}"


def test_why_recommended_shows_the_stored_reasons(analyst_graph: GraphStore):
    rows = analyst_graph.read((CYPHER_DIR / "why_recommended.cypher").read_text(), header_params(CYPHER_DIR / "why_recommended.cypher"))
    assert {row["reason_kind"] for row in rows} >= {"brand", "category"}
    assert rows[0]["reason"] == "You bought 'Matte Eyeliner' (p1), also made by Lumen"
    assert rows[0]["your_events"] == ["purchase"]


def test_similar_products_uses_the_vector_index(analyst_graph: GraphStore):
    rows = analyst_graph.read((CYPHER_DIR / "similar_products.cypher").read_text(), {"product_id": "p1", "k": 2})
    assert [row["product_id"] for row in rows] == ["p3", "p2"]


# --- the analyst's desk: `kgrec query` ----------------------------------------------------------


def kgrec_query(*args: str):
    from click.testing import CliRunner

    from kgrec.cli import cli

    return CliRunner().invoke(cli, ["query", *args])


@pytest.mark.parametrize("path", QUERY_FILES, ids=lambda p: p.name)
def test_kgrec_query_runs_every_cypher_file_with_its_header_params(analyst_graph: GraphStore, path: Path):
    result = kgrec_query(str(path), "--format", "json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    direct = analyst_graph.read(path.read_text(encoding="utf-8"), header_params(path))
    assert rows == json.loads(json.dumps(direct, default=lambda v: v.to_native().isoformat()))
    assert len(rows) >= 1


def test_kgrec_query_prints_times_as_iso_8601(analyst_graph: GraphStore):
    rows = json.loads(kgrec_query(str(CYPHER_DIR / "users_for_product.cypher"), "--format", "json").stdout)
    assert rows[0]["created_at"] == "2024-05-01T12:00:00+00:00"


def test_kgrec_query_params_override_the_header_and_formats_agree(analyst_graph: GraphStore):
    path = str(CYPHER_DIR / "similar_products.cypher")
    rows = json.loads(kgrec_query(path, "--param", "k=2", "--format", "json").stdout)
    assert [row["product_id"] for row in rows] == ["p3", "p2"]
    csv_out = kgrec_query(path, "--param", "k=2", "--param", "product_id=p1", "--format", "csv")
    assert csv_out.exit_code == 0, csv_out.output
    assert csv_out.stdout.splitlines()[0] == "product_id,title,brand,similarity"
    assert csv_out.stdout.splitlines()[1].startswith("p3,Kohl,Lumen,")
    table = kgrec_query(path, "--param", "k=2")
    assert table.exit_code == 0 and "Kohl" in table.output and "2 row(s)" in table.output


def test_kgrec_query_runs_a_string_and_is_read_only_unless_write(analyst_graph: GraphStore):
    rows = json.loads(kgrec_query("--format", "json", "--param", "n=2", "--",
                                  "MATCH (b:Brand) RETURN b.name AS brand ORDER BY brand LIMIT $n").stdout)
    assert rows == [{"brand": "Aster"}, {"brand": "Lumen"}]
    refused = kgrec_query("--", "CREATE (:Brand {name: 'Intruder'})")
    assert refused.exit_code == 1 and "--write" in refused.output and "Traceback" not in refused.output
    assert not analyst_graph.read("MATCH (b:Brand {name: 'Intruder'}) RETURN b")
    written = kgrec_query("--write", "--", "CREATE (:Brand {name: 'Intruder'})")
    assert written.exit_code == 0, written.output
    assert analyst_graph.read("MATCH (b:Brand {name: 'Intruder'}) RETURN count(b) AS n")[0]["n"] == 1


def test_kgrec_query_names_a_missing_parameter_and_a_missing_file(analyst_graph: GraphStore, tmp_path: Path):
    missing = kgrec_query("--", "MATCH (p:Product {id: $product_id}) RETURN p.id")
    assert missing.exit_code == 1 and "$product_id" in missing.output and "--param product_id=" in missing.output
    nofile = kgrec_query(str(tmp_path / "nope.cypher"))
    assert nofile.exit_code == 1 and "does not exist" in nofile.output
    bad = kgrec_query("--param", "no equals", "--", "RETURN 1")
    assert bad.exit_code == 1 and "name=value" in bad.output
