"""FrameWriter: a file written batch by batch holds the same content as one written whole."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from kgrec.frame_writer import FrameWriter

FRAME = pl.DataFrame(
    {"id": [f"u{i:02d}" for i in range(23)], "score": [i / 3 for i in range(23)], "tags": [["a"] * (i % 3) for i in range(23)]}
)


def write(path: Path, file_format: str, batch_rows: int, frame: pl.DataFrame = FRAME) -> Path:
    with FrameWriter(path, file_format, frame.schema) as writer:
        for batch in frame.iter_slices(batch_rows):
            writer.write(batch)
    return path


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
def test_frame_writer_text_formats_in_batches_give_the_bytes_of_one_write(tmp_path: Path, file_format: str) -> None:
    frame = FRAME.drop("tags") if file_format == "csv" else FRAME  # CSV has no lists
    batched = write(tmp_path / f"batched.{file_format}", file_format, 4, frame)
    whole = write(tmp_path / f"whole.{file_format}", file_format, 1000, frame)
    assert batched.read_bytes() == whole.read_bytes()
    expected = frame.write_csv() if file_format == "csv" else frame.write_ndjson()
    assert whole.read_text() == expected


def test_frame_writer_parquet_in_batches_holds_the_whole_frame_and_leaves_no_parts(tmp_path: Path) -> None:
    path = write(tmp_path / "t.parquet", "parquet", 4)
    assert pl.read_parquet(path).equals(FRAME)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.parquet"]


@pytest.mark.parametrize("file_format", ["csv", "parquet"])
def test_frame_writer_without_rows_writes_the_schema(tmp_path: Path, file_format: str) -> None:
    frame = FRAME.drop("tags")
    path = write(tmp_path / f"empty.{file_format}", file_format, 4, frame.head(0))
    read = pl.read_parquet(path) if file_format == "parquet" else pl.read_csv(path, schema=frame.schema)
    assert read.schema == frame.schema and read.is_empty()


def test_frame_writer_casts_batches_to_the_schema(tmp_path: Path) -> None:
    schema = {"id": pl.Utf8, "score": pl.Float64}
    with FrameWriter(tmp_path / "t.parquet", "parquet", schema) as writer:
        writer.write(pl.DataFrame({"score": [1, 2], "id": ["a", "b"]}))  # ints, other column order
        writer.write(pl.DataFrame({"id": ["c"], "score": [None]}))  # an all-null column
    assert pl.read_parquet(tmp_path / "t.parquet").equals(
        pl.DataFrame({"id": ["a", "b", "c"], "score": [1.0, 2.0, None]}, schema=schema)
    )


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_frame_writer_leaves_nothing_when_the_writing_code_fails(tmp_path: Path, file_format: str) -> None:
    with pytest.raises(RuntimeError, match="lost the database"):
        with FrameWriter(tmp_path / f"t.{file_format}", file_format, FRAME.schema) as writer:
            writer.write(FRAME.head(5))
            writer.write(FRAME.slice(5, 5))
            raise RuntimeError("lost the database")
    assert list(tmp_path.iterdir()) == []
