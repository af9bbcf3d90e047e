"""``kgrec build-graph`` end to end, against the real test Neo4j.

Bad input is refused with one message that names the file, column, row and value,
a non-zero exit and no traceback, and leaves the graph exactly as it was. Good input
is stored literally, idempotently and incrementally. The ``graph_store`` fixture
points ``NEO4J_URI`` at the test server, so the CLI talks to it.
"""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner, Result

from kgrec.cli import cli
from kgrec.ingest.synthetic import write_sample_shop
from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import clear_graph, count_graph
from kgrec.store.server import free_port

TRICKY_PRODUCT_ID = 'p\\"\'); MATCH (n) DETACH DELETE n //\\'
TRICKY_TITLE = 'Robert\'); DROP "table" \\ RETURN 1; MERGE (x) //'
TRICKY_USER_ID = 'u"}) DETACH DELETE u RETURN "\\'
TRICKY_BRAND = 'Acme "Pro" \\ MATCH (b) DELETE b'

# A tiny valid shop of products and users that the baseline does not hold: if a
# rejected run wrote anything at all, the counts would change.
NEW_PRODUCTS = [
    ["product_id", "title", "brand", "category", "price"],
    ["n1", "New Pen", "Newbrand", "Stationery > Pens", "1.50"],
    ["n2", "New Pad", "Newbrand", "Stationery > Paper", "3"],
    ["n3", "New Ink", "Inkco", "Stationery > Pens", ""],
]
NEW_INTERACTIONS = [
    ["user_id", "product_id", "event", "timestamp"],
    ["nu1", "n1", "view", "2024-05-01T10:00:00Z"],
    ["nu1", "n1", "purchase", "2024-05-01T10:05:00Z"],
    ["nu2", "n3", "cart", "2024-05-02 08:00:00+02:00"],
]


# ----------------------------------------------------------------------------- helpers


def write_rows(path: Path, rows: Sequence[Sequence[str]]) -> Path:
    """``rows`` (header first) as a properly quoted UTF-8 CSV."""
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def build(*args: str | Path) -> Result:
    return CliRunner().invoke(cli, ["build-graph", *map(str, args)])


def assert_success(result: Result) -> None:
    assert result.exit_code == 0, result.output
    assert result.exception is None, result.exc_info


def assert_user_error(result: Result, *fragments: str) -> None:
    """A clean refusal: exit 1 through ``sys.exit`` (not an exception CliRunner swallowed), no traceback."""
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, SystemExit), f"crashed with {result.exception!r}:\n{result.output}"
    assert "Traceback" not in result.output
    assert "error:" in result.stderr
    for fragment in fragments:
        assert fragment in result.output, f"{fragment!r} not in:\n{result.output}"


def graph_state(store: GraphStore) -> tuple[dict[str, int], list[str], list[str]]:
    """Counts plus every node's and relationship's properties: equal states mean an unchanged graph."""
    nodes = store.read("MATCH (n) RETURN labels(n) AS labels, properties(n) AS props")
    rels = store.read(
        "MATCH (a)-[r]->(b) RETURN type(r) AS type, properties(r) AS props, "
        "coalesce(a.id, a.path, a.name) AS start, coalesce(b.id, b.path, b.name) AS end"
    )

    def canonical(row: dict) -> str:
        return repr(sorted((k, sorted(v.items()) if isinstance(v, dict) else v) for k, v in row.items()))

    return count_graph(store), sorted(map(canonical, nodes)), sorted(map(canonical, rels))


def shop_args(shop: dict[str, Path]) -> list[str | Path]:
    return [
        "--products", shop["products"],
        "--interactions", shop["interactions"],
        "--relations", shop["relations"],
        "--users", shop["users"],
    ]  # fmt: skip


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small synthetic shop (60 products, 30 users) with every file kind."""
    return write_sample_shop(tmp_path_factory.mktemp("shop"), num_products=60, num_users=30, events_per_user=5)


@pytest.fixture
def loaded_shop(graph_store: GraphStore, shop: dict[str, Path]) -> dict[str, Path]:
    """A cleared graph with the shop loaded, for tests that change it."""
    assert_success(build(*shop_args(shop)))
    return shop


@pytest.fixture(scope="module")
def _shop_state() -> dict[str, tuple]:
    """The graph state right after loading the shop (filled by ``shop_graph`` on first use)."""
    return {}


@pytest.fixture
def shop_graph(neo4j_server, monkeypatch: pytest.MonkeyPatch, shop: dict[str, Path], _shop_state: dict[str, tuple]):
    """The test server holding exactly the loaded shop, with ``NEO4J_URI`` pointing at it.

    For tests that must leave the graph unchanged: the shop is loaded once and reloaded
    only when the graph differs from it (another test cleared or changed it), which keeps
    the many rejection cases quick.
    """
    monkeypatch.setenv("NEO4J_URI", neo4j_server.uri)
    user, password = neo4j_server.auth
    monkeypatch.setenv("NEO4J_USER", user)
    monkeypatch.setenv("NEO4J_PASSWORD", password)
    with GraphStore(neo4j_server.uri, auth=neo4j_server.auth) as store:
        if not _shop_state or graph_state(store) != _shop_state["state"]:
            clear_graph(store)
            assert_success(build(*shop_args(shop)))
            _shop_state["state"] = graph_state(store)
        yield store


# ------------------------------------------------------------------- rejected input


def _bad_file(tmp_path: Path, name: str, content: bytes | list[list[str]] | None) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        write_rows(path, content)
    return path  # content None: the file does not exist


# (case id, which file is bad, its name, its content, extra CLI args, what the message must name)
BAD_INPUTS = [
    ("missing_file", "products", "no_such_products.csv", None, [], ["no_such_products.csv", "does not exist"]),
    (
        "unsupported_format", "products", "products.xlsx", b"PK\x03\x04 not really a workbook", [],
        ["products.xlsx", "unsupported file extension", ".csv"],
    ),
    ("empty_file", "products", "products_empty.csv", b"", [], ["products_empty.csv", "no data rows"]),
    ("header_only", "interactions", "events_header.csv", b"user_id,product_id\n", [], ["events_header.csv", "no data rows"]),
    (
        "missing_required_column", "interactions", "events_nouser.csv",
        [["customer", "product_id"], ["nu1", "n1"]], [],
        ["events_nouser.csv", "'user_id'", "customer"],
    ),
    (
        "non_numeric_price", "products", "products_price.csv",
        [NEW_PRODUCTS[0], NEW_PRODUCTS[1], ["n2", "New Pad", "Newbrand", "Stationery", "12,99 EUR"]], [],
        ["products_price.csv", "'price'", "data row 2", "'12,99 EUR'"],
    ),
    (
        "unparseable_timestamp", "interactions", "events_time.csv",
        [*NEW_INTERACTIONS[:3], ["nu2", "n3", "cart", "last tuesday"]], [],
        ["events_time.csv", "'timestamp'", "data row 3", "'last tuesday'"],
    ),
    (
        "conflicting_duplicate_product", "products", "products_dup.csv",
        [*NEW_PRODUCTS, ["n1", "Another Pen", "Newbrand", "Stationery > Pens", "1.50"]], [],
        ["products_dup.csv", "'n1'", "data rows 1 and 4", "'title'", "'New Pen'", "'Another Pen'"],
    ),
    (
        "unknown_event_type", "interactions", "events_type.csv",
        [NEW_INTERACTIONS[0], NEW_INTERACTIONS[1], ["nu1", "n2", "wishlist", "2024-05-01T11:00:00Z"]], [],
        ["events_type.csv", "'event'", "data row 2", "'wishlist'", "purchase"],
    ),
    (
        "null_product_id", "products", "products_null.csv",
        [NEW_PRODUCTS[0], NEW_PRODUCTS[1], ["", "Nameless", "Newbrand", "Stationery", "2"]], [],
        ["products_null.csv", "'product_id'", "data row 2", "empty cell"],
    ),
    (
        "null_user_id", "interactions", "events_null.csv",
        [*NEW_INTERACTIONS[:3], ["", "n3", "cart", "2024-05-02T08:00:00Z"]], [],
        ["events_null.csv", "'user_id'", "data row 3", "empty cell"],
    ),
    (
        "non_utf8_bytes", "products", "products_latin1.csv",
        "product_id,title\nn1,Pen\nn2,Crème brûlée\n".encode("latin-1"), [],
        ["products_latin1.csv", "UTF-8", "line 3"],
    ),
    (
        "unknown_product_rejected", "interactions", "events_ghost.csv",
        [NEW_INTERACTIONS[0], NEW_INTERACTIONS[1], ["nu2", "ghost", "view", "2024-05-03T00:00:00Z"]],
        ["--set", "ingest.unknown_products=reject"],
        ["events_ghost.csv", "'product_id'", "data row 2", "'ghost'", "unknown_products"],
    ),
    ("unknown_config_key", None, None, None, ["--set", "ingest.nope=1"], ["ingest.nope", "unknown key"]),
    (
        "bad_config_value", None, None, None, ["--set", "ingest.unknown_products=maybe"],
        ["ingest.unknown_products", "'maybe'"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(
    ("bad_kind", "name", "content", "extra_args", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUTS],
)
def test_build_graph_rejects_bad_input_and_leaves_the_graph_unchanged(
    shop_graph: GraphStore,
    tmp_path: Path,
    bad_kind: str | None,
    name: str | None,
    content: bytes | list[list[str]] | None,
    extra_args: list[str],
    expected: list[str],
):
    before = graph_state(shop_graph)
    files = {
        "products": write_rows(tmp_path / "new_products.csv", NEW_PRODUCTS),
        "interactions": write_rows(tmp_path / "new_interactions.csv", NEW_INTERACTIONS),
    }
    if bad_kind is not None:
        files[bad_kind] = _bad_file(tmp_path, name, content)

    result = build("--products", files["products"], "--interactions", files["interactions"], *extra_args)

    assert_user_error(result, *expected)
    assert graph_state(shop_graph) == before


LONG_ID = "u" * 40_000


def _parquet_with_struct_title(path: Path) -> None:
    pl.DataFrame({"product_id": ["n1", "n2", "n3"], "title": [{"en": "Pen"}, {"en": "Pad"}, {"en": "Ink"}]}).write_parquet(path)


def _jsonl_with_a_broken_line(path: Path) -> None:
    path.write_text('{"product_id": "n1"}\n{"product_id": "n2"}\n{"product_id": "n3", "title": }\n', encoding="utf-8")


# (case id, {kind: (file name, CSV rows or a writer)}, what the message must name). The other
# files are NEW_PRODUCTS and NEW_INTERACTIONS, so each case passes every check but its own.
BAD_SHOPS = [
    (
        "relation_starting_with_a_digit",
        {"relations": ("rel_digit.csv", [["product_id", "relation", "related_product_id"], ["n1", "also_bought", "n2"], ["n1", "2nd_choice", "n3"]])},
        ["rel_digit.csv", "'relation'", "data row 2", "'2nd_choice'"],
    ),
    (
        "relation_named_like_kgrec_type",
        {"relations": ("rel_own.csv", [["product_id", "relation", "related_product_id"], ["n1", "interacted", "n2"]])},
        ["rel_own.csv", "'relation'", "data row 1", "'interacted'"],
    ),
    (
        "relation_not_ascii",
        {"relations": ("rel_umlaut.csv", [["product_id", "relation", "related_product_id"], ["n1", "ähnlich", "n3"]])},
        ["rel_umlaut.csv", "'relation'", "data row 1", "'ähnlich'"],
    ),
    (
        "user_id_too_long_for_the_index",
        {"interactions": ("events_long.csv", [*NEW_INTERACTIONS, [LONG_ID, "n2", "view", "2024-05-03T00:00:00Z"]])},
        ["events_long.csv", "'user_id'", "data row 4", "40,000 bytes", "4,000 bytes"],
    ),
    (
        "users_file_id_too_long_for_the_index",
        {"users": ("users_long.csv", [["user_id", "country"], ["nu1", "DE"], [LONG_ID, "FR"]])},
        ["users_long.csv", "'user_id'", "data row 2", "40,000 bytes"],
    ),
    (
        "brand_too_long_for_the_index",
        {"products": ("products_brand.csv", [*NEW_PRODUCTS, ["n4", "Pen", "B" * 9_000, "Stationery", "1"]])},
        ["products_brand.csv", "'brand'", "data row 4", "9,000 bytes"],
    ),
    (
        "users_file_id_column",
        {"users": ("users_id.csv", [["user_id", "id"], ["nu1", "RENAMED"]])},
        ["users_id.csv", "'id'", "reserved"],
    ),
    (
        "users_file_unnamed_column",
        {"users": ("users_unnamed.csv", [["user_id", ""], ["nu1", "x"]])},
        ["users_unnamed.csv", "no name"],
    ),
    (
        "timestamp_before_1970",
        {"interactions": ("events_1969.csv", [*NEW_INTERACTIONS, ["nu2", "n2", "view", "1969-07-20T20:17:00Z"]])},
        ["events_1969.csv", "'timestamp'", "data row 4", "'1969-07-20T20:17:00Z'", "1970"],
    ),
    (
        "timestamp_in_the_future",
        {"interactions": ("events_future.csv", [*NEW_INTERACTIONS, ["nu2", "n2", "view", "2999-01-01T00:00:00Z"]])},
        ["events_future.csv", "'timestamp'", "data row 4", "'2999-01-01T00:00:00Z'", "future_timestamp_margin_s"],
    ),
    (
        "parquet_struct_as_title",
        {"products": ("products_struct.parquet", _parquet_with_struct_title)},
        ["products_struct.parquet", "'title'", "Struct"],
    ),
    (
        "jsonl_broken_line",
        {"products": ("products_broken.jsonl", _jsonl_with_a_broken_line)},
        ["products_broken.jsonl", "line 3"],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("files", "expected"), [pytest.param(*case[1:], id=case[0]) for case in BAD_SHOPS])
def test_build_graph_rejects_what_the_graph_cannot_hold_and_leaves_it_unchanged(
    shop_graph: GraphStore, tmp_path: Path, files: dict, expected: list[str]
):
    before = graph_state(shop_graph)
    paths = {
        "products": write_rows(tmp_path / "new_products.csv", NEW_PRODUCTS),
        "interactions": write_rows(tmp_path / "new_interactions.csv", NEW_INTERACTIONS),
    }
    for kind, (name, content) in files.items():
        paths[kind] = tmp_path / name
        content(paths[kind]) if callable(content) else write_rows(paths[kind], content)

    result = build(*(arg for kind, path in paths.items() for arg in (f"--{kind}", path)))

    assert_user_error(result, *expected)
    assert graph_state(shop_graph) == before


def test_build_graph_with_the_same_good_files_would_have_changed_the_graph(
    graph_store: GraphStore, loaded_shop: dict[str, Path], tmp_path: Path
):
    """The control for the rejection cases: their valid companion files do add to the graph."""
    before = count_graph(graph_store)
    products = write_rows(tmp_path / "new_products.csv", NEW_PRODUCTS)
    result = build("--products", products, "--interactions", write_rows(tmp_path / "new_interactions.csv", NEW_INTERACTIONS))
    assert_success(result)
    after = count_graph(graph_store)
    assert after["Product"] == before["Product"] + 3
    assert after["User"] == before["User"] + 2
    assert after["INTERACTED"] == before["INTERACTED"] + 3


def test_build_graph_skips_and_counts_interactions_of_unknown_products_by_default(graph_store: GraphStore, tmp_path: Path):
    products = write_rows(tmp_path / "products.csv", NEW_PRODUCTS)
    events = write_rows(tmp_path / "events.csv", [*NEW_INTERACTIONS, ["nu2", "ghost", "view", "2024-05-03T00:00:00Z"]])

    result = build("--products", products, "--interactions", events)

    assert_success(result)
    assert re.search(r"skipped 1 interactions? unknown product", result.output), result.output
    assert "'ghost'" in result.output  # the note names an example
    assert count_graph(graph_store)["INTERACTED"] == 3
    assert graph_store.read("MATCH (p:Product {id: $id}) RETURN p", {"id": "ghost"}) == []


# ------------------------------------------------------------------- literal storage


def _write_tricky_shop(tmp_path: Path, file_format: str) -> tuple[Path, Path]:
    products = [
        {"product_id": "p1", "title": "Plain Pen", "brand": "Plainco", "category": "Office", "price": "1"},
        {"product_id": TRICKY_PRODUCT_ID, "title": TRICKY_TITLE, "brand": TRICKY_BRAND, "category": "Office", "price": "2"},
    ]
    events = [
        {"user_id": "u1", "product_id": "p1", "event": "view", "timestamp": "2024-05-01T10:00:00Z"},
        {"user_id": TRICKY_USER_ID, "product_id": TRICKY_PRODUCT_ID, "event": "purchase", "timestamp": "2024-05-01T11:00:00Z"},
    ]
    paths = []
    for name, rows in (("products", products), ("interactions", events)):
        path = tmp_path / f"{name}.{file_format}"
        if file_format == "csv":
            write_rows(path, [list(rows[0]), *(list(row.values()) for row in rows)])
        else:
            path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_build_graph_stores_quotes_backslashes_and_cypher_keywords_literally(
    graph_store: GraphStore, tmp_path: Path, file_format: str
):
    products, events = _write_tricky_shop(tmp_path, file_format)

    assert_success(build("--products", products, "--interactions", events))

    rows = graph_store.read(
        "MATCH (u:User {id: $user_id})-[r:INTERACTED]->(p:Product {id: $product_id})-[:MADE_BY]->(b:Brand) "
        "RETURN p.title AS title, b.name AS brand, r.event AS event",
        {"user_id": TRICKY_USER_ID, "product_id": TRICKY_PRODUCT_ID},
    )
    assert rows == [{"title": TRICKY_TITLE, "brand": TRICKY_BRAND, "event": "purchase"}]
    counts = count_graph(graph_store)  # nothing was deleted by the "injections"
    assert (counts["Product"], counts["User"], counts["Brand"], counts["INTERACTED"]) == (2, 2, 2, 2)


def test_build_graph_error_shows_a_value_with_square_brackets_literally(graph_store: GraphStore, tmp_path: Path):
    products = write_rows(tmp_path / "products.csv", [["product_id", "price"], ["n1", "1"], ["n2", "[red]9"]])
    events = write_rows(tmp_path / "events.csv", NEW_INTERACTIONS)
    assert_user_error(build("--products", products, "--interactions", events), "'[red]9'")


def test_build_graph_error_with_a_closing_markup_tag_in_the_value_is_a_message(graph_store: GraphStore, tmp_path: Path):
    products = write_rows(tmp_path / "products.csv", [["product_id", "price"], ["n1", "1"], ["n2", "[/]"]])
    events = write_rows(tmp_path / "events.csv", NEW_INTERACTIONS)
    assert_user_error(build("--products", products, "--interactions", events), "'[/]'")


def test_build_graph_summary_shows_an_unknown_product_id_with_markup_literally(graph_store: GraphStore, tmp_path: Path):
    products = write_rows(tmp_path / "products.csv", NEW_PRODUCTS)
    events = write_rows(tmp_path / "events.csv", [*NEW_INTERACTIONS, ["nu2", "[/]", "view", "2024-05-03T00:00:00Z"]])
    result = build("--products", products, "--interactions", events)
    assert_success(result)
    assert "'[/]'" in result.output


# ---------------------------------------------------------------- idempotent, incremental


def test_build_graph_twice_changes_nothing_the_second_time(graph_store: GraphStore, loaded_shop: dict[str, Path]):
    before = graph_state(graph_store)

    result = build(*shop_args(loaded_shop))

    assert_success(result)
    assert "Created 0 nodes and 0 relationships." in result.output
    assert graph_state(graph_store) == before


def test_build_graph_with_new_events_adds_exactly_those(
    graph_store: GraphStore, loaded_shop: dict[str, Path], tmp_path: Path
):
    before = count_graph(graph_store)
    old = pl.read_csv(loaded_shop["interactions"], infer_schema=False)
    (user_a, product_a), (user_b, product_b) = old.unique("user_id", maintain_order=True).select("user_id", "product_id").head(2).rows()
    new_events = [
        [user_a, product_b, "view", "2025-06-01T00:00:01Z"],
        [user_b, product_a, "purchase", "2025-06-01T00:00:02Z"],
        [user_a, product_a, "rating", "2025-06-01T00:00:03Z"],
        ["brand-new-user", product_b, "cart", "2025-06-01T00:00:04Z"],
    ]
    # Two events already in the graph ride along; they must not be added again.
    events = write_rows(tmp_path / "more_events.csv", [old.columns, *old.head(2).rows(), *new_events])

    result = build("--products", loaded_shop["products"], "--interactions", events)

    assert_success(result)
    assert "Created 1 nodes and 4 relationships." in result.output
    after = count_graph(graph_store)
    assert after == {**before, "User": before["User"] + 1, "INTERACTED": before["INTERACTED"] + 4}


def _stored_product(store: GraphStore, product_id: str) -> dict:
    props = store.read("MATCH (p:Product {id: $id}) RETURN properties(p) AS props", {"id": product_id})[0]["props"]
    props.pop("search_text", None)  # derived from the brand and categories, for search
    return props


def _one_event_of(shop: dict[str, Path], tmp_path: Path) -> tuple[str, Path]:
    """A product of the shop with every field filled, and an events file with one of its stored events."""
    complete = pl.read_csv(shop["products"], infer_schema=False).drop_nulls(["description", "price"])
    events = pl.read_csv(shop["interactions"], infer_schema=False).filter(pl.col("product_id").is_in(complete["product_id"].implode()))
    events = events.head(1)
    product_id = events["product_id"][0]
    return product_id, write_rows(tmp_path / "one_event.csv", [events.columns, *events.rows()])


def test_build_graph_partial_products_file_keeps_the_fields_it_lacks(
    graph_store: GraphStore, loaded_shop: dict[str, Path], tmp_path: Path
):
    product_id, events = _one_event_of(loaded_shop, tmp_path)
    before = _stored_product(graph_store, product_id)
    assert before["description"] and before["price"] is not None

    products = write_rows(tmp_path / "titles.csv", [["product_id", "title"], [product_id, "A New Title"]])
    assert_success(build("--products", products, "--interactions", events))

    assert _stored_product(graph_store, product_id) == {**before, "title": "A New Title"}


def test_build_graph_empty_cells_clear_the_product_fields_they_give(
    graph_store: GraphStore, loaded_shop: dict[str, Path], tmp_path: Path
):
    product_id, events = _one_event_of(loaded_shop, tmp_path)
    before = _stored_product(graph_store, product_id)

    products = write_rows(tmp_path / "cleared.csv", [["product_id", "description", "price"], [product_id, "", ""]])
    assert_success(build("--products", products, "--interactions", events))

    assert _stored_product(graph_store, product_id) == {"id": product_id, "title": before["title"]}


# ----------------------------------------------------------------------- no server


def test_build_graph_with_unreachable_neo4j_uri_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    uri = f"bolt://127.0.0.1:{free_port()}"
    monkeypatch.setenv("NEO4J_URI", uri)
    products = write_rows(tmp_path / "products.csv", NEW_PRODUCTS)
    events = write_rows(tmp_path / "events.csv", NEW_INTERACTIONS)

    result = build("--products", products, "--interactions", events)

    assert_user_error(result, "not reachable", uri, "NEO4J_URI")


def test_build_graph_without_a_local_server_says_kgrec_db_start(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("NEO4J_URI", raising=False)
    port = free_port()
    products = write_rows(tmp_path / "products.csv", NEW_PRODUCTS)
    events = write_rows(tmp_path / "events.csv", NEW_INTERACTIONS)

    result = build("--products", products, "--interactions", events, "--set", f"store.port={port}")

    assert_user_error(result, "not reachable", f"127.0.0.1:{port}", f"kgrec db start --set store.port={port}")


# ---------------------------------------------------------- the installed command, once


def test_installed_kgrec_writes_a_sample_shop_and_builds_its_graph(
    graph_store: GraphStore, neo4j_server, tmp_path: Path
):
    kgrec = Path(sys.executable).parent / "kgrec"
    assert kgrec.is_file(), f"the kgrec console script is not installed next to {sys.executable}"
    env = {**os.environ, "NEO4J_URI": neo4j_server.uri, "COLUMNS": "120"}
    out = tmp_path / "shop"

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(kgrec), *args], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done

    run("sample-data", "--out", str(out), "--products", "50", "--users", "10", "--events-per-user", "3")
    files = {name: out / f"{name}.csv" for name in ("products", "interactions", "relations", "users")}
    assert all(path.is_file() for path in files.values())

    done = run("build-graph", *(f"--{name}={path}" for name, path in files.items()))

    totals = count_graph(graph_store)
    assert totals["Product"] == 50 and totals["User"] == 10
    assert re.search(r"read\s+50 rows of products", done.stdout), done.stdout
    assert re.search(r"Created [\d,]+ nodes and [\d,]+ relationships\.", done.stdout), done.stdout
    for name, count in totals.items():
        assert re.search(rf"\b{name}\b\W+{count:,}\b", done.stdout), f"{name} {count} not in:\n{done.stdout}"


def test_build_graph_says_when_the_graph_holds_products_from_earlier_loads(loaded_shop, tmp_path: Path):
    other = write_sample_shop(tmp_path / "other", num_products=10, num_users=5, events_per_user=3)
    result = build("--products", other["products"], "--interactions", other["interactions"])
    assert_success(result)
    assert "products that are not in these files" in result.output
    again = build(*shop_args(loaded_shop))
    assert_success(again)
    assert "not in these files" not in again.output  # the bigger shop holds every product
