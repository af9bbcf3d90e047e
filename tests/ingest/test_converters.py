"""The Amazon converter scripts, on tiny source folders shaped like the real ones."""

from __future__ import annotations

import gzip
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import polars as pl
import pytest

from kgrec.ingest.validate import load_tables

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tsv_gz(path: Path, rows: list[list[str]]) -> None:
    path.write_bytes(gzip.compress("".join("\t".join(row) + "\n" for row in rows).encode(), mtime=0))


@pytest.fixture
def beauty_source(tmp_path: Path) -> Path:
    source = tmp_path / "beauty"
    source.mkdir()
    write_tsv_gz(source / "items.tsv.gz", [["asin", "brand", "categories"], ["A1", "Conair", "Beauty|Hair Care"], ["A2", "", "Beauty|Nails"]])
    write_tsv_gz(
        source / "interactions.tsv.gz",
        [["user_id", "asin", "position", "loo_split"], ["U1", "A1", "0", "train"], ["U1", "A2", "1", "test"], ["U2", "A2", "0", "test"]],
    )
    write_tsv_gz(
        source / "item_relations.tsv.gz",
        [["asin", "relation", "related_asin"], ["A1", "also_bought", "A2"], ["A1", "also_viewed", "OUTSIDE"], ["A2", "bought_together", "A1"]],
    )
    return source


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_convert_beauty_gives_loadable_files(beauty_source: Path, tmp_path: Path, file_format: str) -> None:
    paths = load_script("convert_beauty").convert_beauty(beauty_source, tmp_path / "out", file_format)
    tables, report = load_tables(paths["products"], paths["interactions"], paths["relations"])
    assert (tables.num_users, tables.num_products, tables.num_interactions) == (2, 2, 3)
    assert tables.products["categories"].to_list() == [["Beauty", "Hair Care"], ["Beauty", "Nails"]]
    assert tables.products["brand"].to_list() == ["Conair", None]
    assert tables.interactions["timestamp"].to_list() == [0, 1, 0]
    assert set(tables.interactions["event"]) == {"purchase"}
    assert tables.relations.height == 2 and report.skipped["relations_outside_catalog"] == 1


def test_convert_office_gives_loadable_files(tmp_path: Path) -> None:
    source = tmp_path / "office"
    source.mkdir()
    write_tsv_gz(source / "items.tsv.gz", [["asin", "title", "brand", "description"], ["B1", 'HP 12C "Financial" Calculator', "HP", "RPN, since 1981"],
                                           ["B2", "Push pins", "Unknown", "Ten"]])
    write_tsv_gz(source / "interactions.tsv.gz", [["user_id", "asin", "position", "loo_split"], ["U1", "B1", "0", "test"]])
    paths = load_script("convert_office").convert_office(source, tmp_path / "out")
    tables, _ = load_tables(paths["products"], paths["interactions"])
    assert tables.products.select("title", "brand", "description").row(0) == ('HP 12C "Financial" Calculator', "HP", "RPN, since 1981")
    assert tables.products.filter(pl.col("product_id") == "B2")["brand"].to_list() == [None]  # the source's placeholder
    assert tables.num_interactions == 1


def test_convert_beauty_cli_refuses_a_wrong_folder(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPTS / "convert_beauty.py"), str(tmp_path), str(tmp_path / "out")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "items.tsv.gz" in result.stderr
