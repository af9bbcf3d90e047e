"""load_tables: clean tables out, or one error naming file, column, row, value and fix."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl
import pytest

from kgrec.errors import SchemaError
from kgrec.ingest.config import IngestConfig
from kgrec.ingest.tables import INTERACTION_SCHEMA, PRODUCT_SCHEMA, RELATION_SCHEMA, IngestReport
from kgrec.ingest.validate import load_tables, validate_interactions

PRODUCTS = "product_id,title,brand,category,price\np1,Red Pen,Inko,Office > Writing,1.50\np2,Blue Pen,Inko,Office > Writing,2\np3,Notebook,Papyr,Office > Paper,\n"
INTERACTIONS = "user_id,product_id,event,timestamp\nu1,p1,view,2024-01-01T00:00:00Z\nu1,p1,purchase,2024-01-01T00:05:00Z\nu2,p3,cart,2024-01-02T10:00:00Z\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, products: str = PRODUCTS, interactions: str = INTERACTIONS, relations: str | None = None,
         users: str | None = None, config: IngestConfig | None = None):
    """Write the given CSV texts and load them."""
    return load_tables(
        write(tmp_path, "products.csv", products),
        write(tmp_path, "interactions.csv", interactions),
        write(tmp_path, "relations.csv", relations) if relations is not None else None,
        write(tmp_path, "users.csv", users) if users is not None else None,
        config=config,
    )


def error_of(tmp_path: Path, **files: str) -> str:
    with pytest.raises(SchemaError) as error:
        load(tmp_path, **files)
    return str(error.value)


# ------------------------------------------------------------------------- contract


def test_load_tables_returns_the_contract_schemas(tmp_path: Path) -> None:
    tables, report = load(tmp_path, relations="product_id,relation,related_product_id\np1,also_bought,p2\n", users="user_id,country\nu1,DE\n")
    assert tables.products.schema == pl.Schema(PRODUCT_SCHEMA)
    assert tables.interactions.schema == pl.Schema(INTERACTION_SCHEMA)
    assert tables.relations.schema == pl.Schema(RELATION_SCHEMA)
    assert tables.users.schema == pl.Schema({"user_id": pl.Utf8, "country": pl.Utf8})
    assert tables.products["price"].to_list() == [1.5, 2.0, None]
    assert tables.interactions["timestamp"].to_list() == [1704067200, 1704067500, 1704189600]
    assert tables.interactions["weight"].to_list() == [1.0, 5.0, 3.0]
    assert report.rows_read == {"products": 3, "interactions": 3, "relations": 1, "users": 1}


def test_load_tables_without_optional_files_has_empty_relations_and_interaction_users(tmp_path: Path) -> None:
    tables, _ = load(tmp_path)
    assert tables.relations.height == 0 and tables.relations.schema == pl.Schema(RELATION_SCHEMA)
    assert tables.users["user_id"].to_list() == ["u1", "u2"]


def test_load_tables_matches_column_names_case_insensitively(tmp_path: Path) -> None:
    tables, _ = load(tmp_path, products="Product_ID,TITLE\np1,Pen\np3,Book\n")
    assert tables.products["title"].to_list() == ["Pen", "Book"]


def test_load_tables_reads_typed_parquet(tmp_path: Path) -> None:
    products = tmp_path / "products.parquet"
    pl.DataFrame({"product_id": [1, 2], "price": [1.5, None], "category": [["A>B"], None], "categories": [["A > B"], []]}).write_parquet(products)
    interactions = tmp_path / "interactions.parquet"
    pl.DataFrame(
        {"user_id": [10, 11], "product_id": [1, 2], "timestamp": [datetime(2024, 1, 1), datetime(2024, 1, 1, tzinfo=timezone.utc)]}
    ).write_parquet(interactions)
    tables, _ = load_tables(products, interactions)
    assert tables.products["product_id"].to_list() == ["1", "2"]
    assert tables.products["categories"].to_list() == [["A > B"], []]
    assert tables.interactions["user_id"].to_list() == ["10", "11"]
    assert tables.interactions["timestamp"].to_list() == [1704067200, 1704067200]


# ------------------------------------------------------------------------- columns


def test_load_tables_missing_required_column_lists_found_columns(tmp_path: Path) -> None:
    message = error_of(tmp_path, products="sku,title\np1,Pen\n")
    assert "products.csv" in message and "'product_id'" in message and "Found columns: 'sku', 'title'" in message


def test_load_tables_missing_column_suggests_close_name(tmp_path: Path) -> None:
    message = error_of(tmp_path, interactions="userid,product_id\nu1,p1\n")
    assert "interactions.csv" in message and "no 'user_id' column" in message and "Did you mean 'userid'?" in message


def test_load_tables_wrong_separator_is_hinted(tmp_path: Path) -> None:
    message = error_of(tmp_path, products="product;title\np1;Pen\n")
    assert "check the separator" in message


def test_load_tables_two_columns_with_one_meaning_are_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, products="product_id,Title,title\np1,a,b\n")
    assert "'Title' and 'title' both mean 'title'" in message


def test_validate_products_extra_columns_are_ignored_and_noted(tmp_path: Path) -> None:
    tables, report = load(tmp_path, products="product_id,colour,stock\np1,red,3\np3,blue,1\n")
    assert tables.products.columns == list(PRODUCT_SCHEMA)
    assert any("colour, stock" in note for note in report.notes)


# ------------------------------------------------------------------------- ids


def test_validate_products_empty_id_names_row(tmp_path: Path) -> None:
    message = error_of(tmp_path, products="product_id,title\np1,Pen\n,Ghost\n  ,Blank\n")
    assert "products.csv" in message and "'product_id'" in message and "data row 2" in message
    assert "1 more row(s) like this: 3" in message


def test_validate_interactions_empty_user_id_names_row(tmp_path: Path) -> None:
    message = error_of(tmp_path, interactions="user_id,product_id\nu1,p1\nu2,p1\n,p2\n")
    assert "interactions.csv" in message and "'user_id'" in message and "data row 3" in message and "an empty cell" in message


# ------------------------------------------------------------------------- products


def test_validate_products_identical_duplicates_collapse(tmp_path: Path) -> None:
    tables, report = load(tmp_path, products="product_id,title,category\np1,Pen,A>B\np3,Book,\np1,Pen,A > B\n")
    assert tables.products["product_id"].to_list() == ["p1", "p3"]
    assert report.skipped["products_duplicate"] == 1


def test_validate_products_conflicting_duplicates_name_rows_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, products="product_id,title,price\np1,Pen,1\np3,Book,2\np1,Pen,1.5\n")
    assert "products.csv" in message and "'p1'" in message and "data rows 1 and 3" in message
    assert "'price'" in message and "1.0 vs 1.5" in message


def test_validate_products_non_numeric_price_names_row_and_value(tmp_path: Path) -> None:
    message = error_of(tmp_path, products="product_id,price\np1,1.5\np3,$2.99\n")
    assert "products.csv" in message and "'price'" in message and "data row 2" in message and "'$2.99'" in message


def test_validate_products_negative_price_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, products="product_id,price\np1,-1\np3,2\n")
    assert "data row 1" in message and "'-1'" in message and "at least 0" in message


def test_validate_products_categories_are_normalised_and_merged(tmp_path: Path) -> None:
    products = (
        "product_id,category,categories\n"
        'p1,"  Beauty>Makeup >>  Eyes ",Beauty > Makeup > Eyes|Gifts| > Sale > \n'
        "p3,,\n"
    )
    tables, _ = load(tmp_path, products=products)
    assert tables.products["categories"].to_list() == [["Beauty > Makeup > Eyes", "Gifts", "Sale"], []]
    assert tables.categories()["path"].to_list() == ["Beauty", "Beauty > Makeup", "Beauty > Makeup > Eyes", "Gifts", "Sale"]


def test_validate_products_blank_text_is_null(tmp_path: Path) -> None:
    products = tmp_path / "products.jsonl"
    products.write_text('{"product_id": "p1", "title": "", "description": "  "}\n{"product_id": "p3", "title": " Pen "}\n', encoding="utf-8")
    tables, _ = load_tables(products, write(tmp_path, "interactions.csv", INTERACTIONS))
    assert tables.products.select("title", "description").rows() == [(None, None), (" Pen ", None)]


def test_validate_products_brand_whitespace_is_stripped(tmp_path: Path) -> None:
    tables, _ = load(tmp_path, products="product_id,brand\np1, Inko \np3,   \n")
    assert tables.products["brand"].to_list() == ["Inko", None]


# ------------------------------------------------------------------------- interactions


def test_validate_interactions_unknown_event_lists_allowed(tmp_path: Path) -> None:
    message = error_of(tmp_path, interactions="user_id,product_id,event\nu1,p1,view\nu1,p1,wishlist\n")
    assert "interactions.csv" in message and "'event'" in message and "data row 2" in message and "'wishlist'" in message
    assert "view, click, cart, purchase, rating" in message


def test_validate_interactions_event_is_case_insensitive_and_defaults(tmp_path: Path) -> None:
    tables, _ = load(tmp_path, interactions="user_id,product_id,event\nu1,p1, VIEW \nu1,p1,\n", config=IngestConfig(default_event="cart"))
    assert tables.interactions["event"].to_list() == ["view", "cart"]


def test_validate_interactions_without_event_column_use_default_and_note(tmp_path: Path) -> None:
    tables, report = load(tmp_path, interactions="user_id,product_id\nu1,p1\n")
    assert tables.interactions["event"].to_list() == ["purchase"]
    assert any("no 'event' column" in note for note in report.notes)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T00:00:00Z", 1704067200),
        ("2024-01-01T02:00:00+02:00", 1704067200),
        ("2024-01-01T00:00:00.750", 1704067200),
        ("2024-01-01 00:00:00", 1704067200),
        ("2024-01-01T00:00", 1704067200),
        ("2024-01-01", 1704067200),
        ("1704067200", 1704067200),
        ("1704067200.9", 1704067200),
    ],
)
def test_validate_interactions_timestamp_formats(tmp_path: Path, text: str, expected: int) -> None:
    tables, _ = load(tmp_path, interactions=f"user_id,product_id,timestamp\nu1,p1,{text}\n")
    assert tables.interactions["timestamp"].to_list() == [expected]


def test_validate_interactions_mixed_timestamp_formats_in_one_file(tmp_path: Path) -> None:
    tables, _ = load(tmp_path, interactions="user_id,product_id,timestamp\nu1,p1,1704067200\nu1,p1,2024-01-01T00:00:01Z\nu1,p1,2024-01-01 00:00:02\n")
    assert tables.interactions["timestamp"].to_list() == [1704067200, 1704067201, 1704067202]


def test_validate_interactions_unparseable_timestamp_names_row_and_value(tmp_path: Path) -> None:
    message = error_of(tmp_path, interactions="user_id,product_id,timestamp\nu1,p1,2024-01-01\nu1,p1,01/02/2024\n")
    assert "interactions.csv" in message and "'timestamp'" in message and "data row 2" in message and "'01/02/2024'" in message
    assert "ISO-8601" in message


def test_validate_interactions_empty_timestamp_is_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, interactions="user_id,product_id,timestamp\nu1,p1,\n")
    assert "data row 1" in message and "remove the timestamp column" in message


def test_validate_interactions_millisecond_timestamps_are_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, interactions="user_id,product_id,timestamp\nu1,p1,1704067200000\n")
    assert "data row 1" in message and "milliseconds" in message


def test_validate_interactions_without_timestamp_use_row_order_and_note(tmp_path: Path) -> None:
    tables, report = load(tmp_path, interactions="user_id,product_id\nu1,p1\nu2,p1\nu1,p3\n")
    assert tables.interactions["timestamp"].to_list() == [0, 1, 2]
    assert any("no 'timestamp' column" in note for note in report.notes)


def test_validate_interactions_non_numeric_value_names_row(tmp_path: Path) -> None:
    message = error_of(tmp_path, interactions="user_id,product_id,event,value\nu1,p1,rating,4.5\nu1,p3,rating,five\n")
    assert "'value'" in message and "data row 2" in message and "'five'" in message


def test_validate_interactions_weight_follows_config(tmp_path: Path) -> None:
    config = IngestConfig(event_weights={"view": 0.5, "purchase": 10.0})
    tables, _ = load(tmp_path, interactions="user_id,product_id,event\nu1,p1,view\nu1,p1,purchase\nu1,p1,click\n", config=config)
    assert tables.interactions["weight"].to_list() == [0.5, 10.0, 1.0]


def test_validate_interactions_unknown_products_are_skipped_and_counted(tmp_path: Path) -> None:
    tables, report = load(tmp_path, interactions="user_id,product_id\nu1,p1\nu1,gone\nu2,gone\nu3,p9\n")
    assert tables.interactions["product_id"].to_list() == ["p1"]
    assert report.skipped["interactions_unknown_product"] == 3
    assert tables.users["user_id"].to_list() == ["u1"]  # only users with a kept interaction
    assert any("'gone' (row 2)" in note for note in report.notes)


def test_validate_interactions_unknown_products_rejected_with_examples(tmp_path: Path) -> None:
    with pytest.raises(SchemaError) as error:
        load(tmp_path, interactions="user_id,product_id\nu1,p1\nu1,gone\nu2,gone\nu3,p9\n", config=IngestConfig(unknown_products="reject"))
    message = str(error.value)
    assert "interactions.csv" in message and "data row 2" in message and "3 interaction(s)" in message
    assert "'gone' (row 2), 'p9' (row 4)" in message and "unknown_products: skip" in message


def test_validate_interactions_none_in_catalog_is_an_error(tmp_path: Path) -> None:
    message = error_of(tmp_path, interactions="user_id,product_id\nu1,P1\n")
    assert "none of the 1 interactions" in message and "'P1'" in message


def test_validate_interactions_duplicate_events_collapse(tmp_path: Path) -> None:
    interactions = "user_id,product_id,event,timestamp\nu1,p1,view,10\nu1,p1,view,10\nu1,p1,VIEW,10\nu1,p1,view,11\nu1,p1,click,10\n"
    tables, report = load(tmp_path, interactions=interactions)
    assert tables.interactions.select("event", "timestamp").rows() == [("view", 10), ("view", 11), ("click", 10)]
    assert report.skipped["interactions_duplicate"] == 2


# ------------------------------------------------------------------------- relations


def test_validate_relations_skip_outside_catalog_loops_and_repeats(tmp_path: Path) -> None:
    relations = (
        "product_id,relation,related_product_id\n"
        "p1,Also Bought,p2\n"
        "p1,alsoBought,p2\n"  # the same once normalised
        "p1,also_bought,elsewhere\n"
        "nowhere,also_viewed,p1\n"
        "p2,bought-together,p2\n"
        "p2,bought-together,p3\n"
    )
    tables, report = load(tmp_path, relations=relations)
    assert tables.relations.rows() == [("p1", "also_bought", "p2"), ("p2", "bought_together", "p3")]
    assert report.skipped["relations_outside_catalog"] == 2
    assert report.skipped["relations_self_loop"] == 1
    assert report.skipped["relations_duplicate"] == 1


def test_validate_relations_unnamed_relation_names_row(tmp_path: Path) -> None:
    message = error_of(tmp_path, relations="product_id,relation,related_product_id\np1,also,p2\np1,---,p2\n")
    assert "relations.csv" in message and "'relation'" in message and "data row 2" in message and "'---'" in message


def test_validate_relations_empty_end_names_row(tmp_path: Path) -> None:
    message = error_of(tmp_path, relations="product_id,relation,related_product_id\np1,also,\n")
    assert "'related_product_id'" in message and "data row 1" in message


# ------------------------------------------------------------------------- users


def test_validate_users_are_the_union_with_interaction_users(tmp_path: Path) -> None:
    tables, report = load(tmp_path, users="user_id,country\nu9,FR\nu1,DE\nu1,DE\n")
    assert tables.users.rows() == [("u9", "FR"), ("u1", "DE"), ("u2", None)]
    assert report.skipped["users_duplicate"] == 1
    assert any("1 user(s) appear only in the interactions file" in note for note in report.notes)


def test_validate_users_conflicting_duplicates_name_rows(tmp_path: Path) -> None:
    message = error_of(tmp_path, users="user_id,country\nu1,DE\nu2,FR\nu1,ES\n")
    assert "users.csv" in message and "'u1'" in message and "data rows 1 and 3" in message and "'country'" in message


# ------------------------------------------------------------------------- literal strings

TRICKY = [
    'quote " inside',
    "back\\slash \\n not a newline",
    "real\nnewline",
    '"); MATCH (n) DETACH DELETE n //',
    "' OR 1=1 --",
    "  padded  ",
    "ünïcødé ✓ 商品",
]


def test_load_tables_keeps_tricky_strings_literally_in_csv(tmp_path: Path) -> None:
    products = pl.DataFrame({"product_id": TRICKY, "title": TRICKY})
    interactions = pl.DataFrame({"user_id": TRICKY, "product_id": TRICKY})
    products.write_csv(tmp_path / "products.csv")
    interactions.write_csv(tmp_path / "interactions.csv")
    tables, _ = load_tables(tmp_path / "products.csv", tmp_path / "interactions.csv")
    assert tables.products["product_id"].to_list() == TRICKY
    assert tables.products["title"].to_list() == TRICKY
    assert tables.interactions["user_id"].to_list() == TRICKY
    assert tables.users["user_id"].to_list() == TRICKY


def test_load_tables_keeps_tricky_strings_literally_in_jsonl(tmp_path: Path) -> None:
    products = tmp_path / "products.jsonl"
    products.write_text("".join(json.dumps({"product_id": s, "title": s}) + "\n" for s in TRICKY), encoding="utf-8")
    interactions = tmp_path / "interactions.jsonl"
    interactions.write_text("".join(json.dumps({"user_id": s, "product_id": s}) + "\n" for s in TRICKY), encoding="utf-8")
    tables, _ = load_tables(products, interactions)
    assert tables.products["title"].to_list() == TRICKY
    assert tables.interactions["product_id"].to_list() == TRICKY


# ------------------------------------------------------------- limits of the graph store

LONG = "x" * 40_000


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("2nd_choice", "data row 2"),  # a type must start with a letter
        ("interacted", "data row 2"),  # kgrec's own type: the events would mix with the relation
        ("Made By", "data row 2"),  # also kgrec's own, once normalised to made_by
        ("ähnlich", "data row 2"),  # not ASCII
    ],
)
def test_validate_relations_refuses_names_that_cannot_be_relationship_types(tmp_path: Path, name: str, where: str) -> None:
    message = error_of(tmp_path, relations=f"product_id,relation,related_product_id\np1,also_bought,p2\np1,{name},p3\n")
    assert "relations.csv" in message and "'relation'" in message and where in message and repr(name) in message
    assert "a letter" in message and "interacted" in message


def test_validate_relations_accepts_letters_digits_and_underscores(tmp_path: Path) -> None:
    tables, _ = load(tmp_path, relations="product_id,relation,related_product_id\np1,Top 10 Pick,p2\np1,b2b,p3\n")
    assert tables.relations["relation"].to_list() == ["top_10_pick", "b2b"]


@pytest.mark.parametrize(
    ("files", "file", "column", "row"),
    [
        ({"products": PRODUCTS + f"{LONG},Long,Inko,Office,1\n"}, "products.csv", "'product_id'", "data row 4"),
        ({"products": PRODUCTS + f"p4,Long,{LONG},Office,1\n"}, "products.csv", "'brand'", "data row 4"),
        ({"products": PRODUCTS + f"p4,Long,Inko,{LONG[:20_000]} > {LONG[:19_997]},1\n"}, "products.csv", "'category'", "data row 4"),
        ({"interactions": INTERACTIONS + f"{LONG},p1,view,2024-01-03T00:00:00Z\n"}, "interactions.csv", "'user_id'", "data row 4"),
        # An unknown product would be skipped, but its id is still no id the graph could hold.
        ({"interactions": INTERACTIONS + f"u1,{LONG},view,2024-01-03T00:00:00Z\n"}, "interactions.csv", "'product_id'", "data row 4"),
        ({"relations": f"product_id,relation,related_product_id\np1,also_bought,{LONG}\n"}, "relations.csv", "'related_product_id'", "data row 1"),
        ({"users": f"user_id,country\nu1,DE\n{LONG},FR\n"}, "users.csv", "'user_id'", "data row 2"),
    ],
)
def test_load_tables_refuses_ids_the_index_cannot_hold(
    tmp_path: Path, files: dict[str, str], file: str, column: str, row: str
) -> None:
    message = error_of(tmp_path, **files)
    assert file in message and column in message and row in message
    assert "40,000 bytes" in message and "4,000 bytes" in message and "'xxxxxxxx" in message


def test_load_tables_accepts_ids_up_to_the_limit_in_utf8_bytes(tmp_path: Path) -> None:
    at_limit = "é" * 2_000  # 2,000 characters, 4,000 bytes
    tables, _ = load(tmp_path, interactions=INTERACTIONS + f"{at_limit},p1,view,2024-01-03T00:00:00Z\n")
    assert at_limit in tables.users["user_id"].to_list()
    message = error_of(tmp_path, interactions=INTERACTIONS + f"{at_limit}é,p1,view,2024-01-03T00:00:00Z\n")
    assert "4,002 bytes" in message


# ------------------------------------------------------------------ user attribute names


@pytest.mark.parametrize("column", ["id", "ID", "embedding", "embedding_model"])
def test_validate_users_refuses_attribute_columns_kgrec_sets_itself(tmp_path: Path, column: str) -> None:
    message = error_of(tmp_path, users=f"user_id,{column}\nu1,RENAMED\n")
    assert "users.csv" in message and repr(column) in message and "reserved" in message
    assert "rename" in message.lower()


def test_validate_users_refuses_an_unnamed_attribute_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, users="user_id,,country\nu1,x,DE\n")
    assert "users.csv" in message and "no name" in message


# --------------------------------------------------------------- partial products files


def test_load_tables_records_which_product_fields_the_file_gives(tmp_path: Path) -> None:
    tables, _ = load(tmp_path, products="product_id,title\np1,Red Pen\np2,\np3,Notebook\n")
    assert tables.product_columns == frozenset({"title"})
    assert tables.products["title"].to_list() == ["Red Pen", None, "Notebook"]  # the empty cell: an explicit null
    full, _ = load(tmp_path)
    assert full.product_columns == frozenset({"title", "brand", "categories", "price"})


# ------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize("text", ["1969-12-31T23:59:59Z", "-1", "1900-01-01"])
def test_validate_interactions_refuses_timestamps_before_1970(tmp_path: Path, text: str) -> None:
    message = error_of(tmp_path, interactions=INTERACTIONS + f"u2,p2,view,{text}\n")
    assert "interactions.csv" in message and "'timestamp'" in message and "data row 4" in message
    assert repr(text) in message and "1970" in message


def test_validate_interactions_refuses_timestamps_after_the_margin(tmp_path: Path) -> None:
    soon = datetime.fromtimestamp(time.time() + 2 * 86_400, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = error_of(tmp_path, interactions=INTERACTIONS + f"u2,p2,view,{soon}\n")
    assert "data row 4" in message and repr(soon) in message and "ingest.future_timestamp_margin_s" in message
    wider = IngestConfig(future_timestamp_margin_s=3 * 86_400)
    tables, _ = load(tmp_path, interactions=INTERACTIONS + f"u2,p2,view,{soon}\n", config=wider)
    assert tables.num_interactions == 4


def add_event_row(timestamp: str) -> pl.DataFrame:
    """The one-row frame ``kgrec add-event`` validates (see ``kgrec.pipeline.add_event``)."""
    return pl.DataFrame(
        {"user_id": ["u1"], "product_id": ["p1"], "event": ["cart"], "timestamp": [timestamp], "value": [None]},
        schema={name: pl.Utf8 for name in ("user_id", "product_id", "event", "timestamp", "value")},
    )


@pytest.mark.parametrize(("timestamp", "fragment"), [("1960-05-01", "1970"), ("2999-01-01T00:00:00Z", "future")])
def test_validate_interactions_single_event_refuses_impossible_timestamps(timestamp: str, fragment: str) -> None:
    with pytest.raises(SchemaError) as error:
        validate_interactions(add_event_row(timestamp), "add-event", pl.Series(["p1"]), IngestConfig(), IngestReport())
    message = str(error.value)
    assert "add-event" in message and "'timestamp'" in message and "data row 1" in message
    assert repr(timestamp) in message and fragment in message


def test_validate_interactions_single_event_now_is_accepted() -> None:
    now = str(int(time.time()))
    rows = validate_interactions(add_event_row(now), "add-event", pl.Series(["p1"]), IngestConfig(), IngestReport())
    assert rows["timestamp"].to_list() == [int(now)]


# ------------------------------------------------------------------ nested Parquet values


@pytest.mark.parametrize(
    ("kind", "frame", "column", "dtype"),
    [
        ("products", pl.DataFrame({"product_id": ["p1"], "title": [{"en": "Pen"}]}), "'title'", "Struct"),
        ("products", pl.DataFrame({"product_id": [["p1"]], "title": ["Pen"]}), "'product_id'", "List"),
        ("products", pl.DataFrame({"product_id": ["p1"], "categories": [[{"a": 1}]]}), "'categories'", "List(Struct"),
        ("interactions", pl.DataFrame({"user_id": [{"id": 1}], "product_id": ["p1"]}), "'user_id'", "Struct"),
        ("relations", pl.DataFrame({"product_id": ["p1"], "relation": [["also"]], "related_product_id": ["p2"]}), "'relation'", "List"),
        ("users", pl.DataFrame({"user_id": ["u1"], "address": [{"city": "Paris"}]}), "'address'", "Struct"),
    ],
)
def test_load_tables_refuses_nested_parquet_columns_where_text_is_expected(
    tmp_path: Path, kind: str, frame: pl.DataFrame, column: str, dtype: str
) -> None:
    paths = {
        "products": write(tmp_path, "products.csv", PRODUCTS),
        "interactions": write(tmp_path, "interactions.csv", INTERACTIONS),
    }
    paths[kind] = tmp_path / f"{kind}.parquet"
    frame.write_parquet(paths[kind])
    with pytest.raises(SchemaError) as error:
        load_tables(**paths)
    message = str(error.value)
    assert f"{kind}.parquet" in message and column in message and dtype in message
    assert "text" in message


def test_load_tables_keeps_parquet_lists_of_text_for_categories_and_attributes(tmp_path: Path) -> None:
    products = tmp_path / "products.parquet"
    pl.DataFrame({"product_id": ["p1", "p2", "p3"], "categories": [["A > B"], [], None]}).write_parquet(products)
    users = tmp_path / "users.parquet"
    pl.DataFrame({"user_id": ["u1"], "tags": [["new", "vip"]]}).write_parquet(users)
    tables, _ = load_tables(products, write(tmp_path, "interactions.csv", INTERACTIONS), users=users)
    assert tables.products["categories"].to_list() == [["A > B"], [], []]
    assert tables.users.filter(pl.col("user_id") == "u1")["tags"].to_list() == ["new|vip"]
