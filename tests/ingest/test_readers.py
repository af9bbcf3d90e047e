"""read_table: formats, compression, and the errors a user can act on."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest

from kgrec.errors import InputFileError
from kgrec.ingest.readers import read_table

CSV_TEXT = "product_id,title,price\n007,Red Pen,1.50\np2,Blue Pen,\n"
EXPECTED = pl.DataFrame(
    {"product_id": ["007", "p2"], "title": ["Red Pen", "Blue Pen"], "price": ["1.50", None]},
    schema={"product_id": pl.Utf8, "title": pl.Utf8, "price": pl.Utf8},
)


def write_bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("products.csv", CSV_TEXT),
        ("products.csv.gz", CSV_TEXT),
        ("products.tsv", CSV_TEXT.replace(",", "\t")),
        ("products.tsv.gz", CSV_TEXT.replace(",", "\t")),
        ("products.jsonl", '{"product_id": "007", "title": "Red Pen", "price": "1.50"}\n'
                           '{"product_id": "p2", "title": "Blue Pen", "price": null}\n'),
        ("products.ndjson.gz", '{"product_id": "007", "title": "Red Pen", "price": "1.50"}\n'
                               '{"product_id": "p2", "title": "Blue Pen"}\n'),
    ],
)
def test_read_table_reads_every_text_format_as_strings(tmp_path: Path, name: str, text: str) -> None:
    frame = read_table(write_bytes(tmp_path / name, text.encode()), "products")
    assert frame.equals(EXPECTED)


def test_read_table_reads_parquet_with_its_types(tmp_path: Path) -> None:
    path = tmp_path / "products.parquet"
    pl.DataFrame({"product_id": [7, 8], "price": [1.5, None]}).write_parquet(path)
    frame = read_table(path, "products")
    assert frame.schema == pl.Schema({"product_id": pl.Int64, "price": pl.Float64})


def test_read_table_jsonl_numbers_become_text_and_lists_stay_lists(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.jsonl", b'{"product_id": 7, "categories": ["A", "B > C"]}\n{"product_id": "x", "categories": []}\n')
    frame = read_table(path, "products")
    assert frame["product_id"].to_list() == ["7", "x"]
    assert frame["categories"].to_list() == [["A", "B > C"], []]


def test_read_table_jsonl_nested_object_is_refused(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.jsonl", b'{"product_id": "p1", "meta": {"a": 1}}\n')
    with pytest.raises(InputFileError, match=r"p\.jsonl.*'meta'.*nested"):
        read_table(path, "products")


def test_read_table_strips_header_whitespace_and_bom(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "p.csv", b"\xef\xbb\xbf product_id , title\np1,T\n")
    assert read_table(path, "products").columns == ["product_id", "title"]


def test_read_table_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match=r"products file .*nope\.csv does not exist"):
        read_table(tmp_path / "nope.csv", "products")


def test_read_table_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "data.csv"
    folder.mkdir()
    with pytest.raises(InputFileError, match=r"data\.csv is a directory"):
        read_table(folder, "products")


def test_read_table_unsupported_extension_lists_supported(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "products.xlsx", b"whatever")
    with pytest.raises(InputFileError, match=r"products\.xlsx: unsupported file extension.*\.csv.*\.parquet"):
        read_table(path, "products")


@pytest.mark.parametrize(("name", "data"), [("e.csv", b""), ("e.csv", b"product_id,title\n"), ("e.csv.gz", b""), ("e.jsonl", b"\n\n")])
def test_read_table_empty_file_is_refused(tmp_path: Path, name: str, data: bytes) -> None:
    path = write_bytes(tmp_path / name, data)
    with pytest.raises(InputFileError, match=rf"{name.replace('.', '[.]')} has no data rows"):
        read_table(path, "interactions")


@pytest.mark.parametrize("name", ["latin1.csv", "latin1.csv.gz", "latin1.jsonl"])
def test_read_table_non_utf8_names_line_and_offset(tmp_path: Path, name: str) -> None:
    if name.endswith("jsonl"):
        data = '{"product_id": "p1"}\n{"product_id": "café"}\n'.encode("latin-1")
    else:
        data = "product_id,title\np1,ok\np2,café\n".encode("latin-1")
    path = write_bytes(tmp_path / name, data)
    with pytest.raises(InputFileError) as error:
        read_table(path, "products")
    message = str(error.value)
    offset = data.index(b"\xe9")
    line = data[:offset].count(b"\n") + 1
    assert name in message and "UTF-8" in message
    assert f"byte offset {offset} (line {line})" in message


def test_read_table_ragged_csv_names_file_and_hint(tmp_path: Path) -> None:
    path = write_bytes(tmp_path / "r.csv", b'a,b\n1,"two\nlines"\n4,5,6\n')
    with pytest.raises(InputFileError, match=r"r\.csv: data row 2 has 3 fields, the header has 2"):
        read_table(path, "products")


def test_read_table_corrupt_parquet_and_gzip(tmp_path: Path) -> None:
    parquet = write_bytes(tmp_path / "p.parquet", b"not parquet at all")
    with pytest.raises(InputFileError, match=r"p\.parquet as parquet"):
        read_table(parquet, "products")
    fake_gzip = tmp_path / "p.csv.gz"
    fake_gzip.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(InputFileError, match=r"p\.csv\.gz"):
        read_table(fake_gzip, "products")


@pytest.mark.parametrize(
    ("name", "data", "line", "found"),
    [
        ("p.jsonl", b'{"product_id": "p1"}\n{"product_id": "p2"}\n{"product_id": "p3", "title": }\n', 3, "'{\"product_id\": \"p3\""),
        ("p.jsonl.gz", b'{"product_id": "p1"}\nnot json\n', 2, "'not json'"),
        ("p.jsonl", b'{"product_id": "p1"}\n\n{"product_id": "p2",}\n', 3, "'{\"product_id\": \"p2\",}'"),
        ("p.jsonl", b'{"product_id": "p1"}\n["p2", "Pen"]\n', 2, "'[\"p2\", \"Pen\"]'"),
    ],
)
def test_read_table_malformed_jsonl_names_file_and_line(tmp_path: Path, name: str, data: bytes, line: int, found: str) -> None:
    path = write_bytes(tmp_path / name, data)
    with pytest.raises(InputFileError) as error:
        read_table(path, "products")
    message = str(error.value)
    assert name in message and f"line {line}" in message and found in message
    assert "one JSON object" in message
