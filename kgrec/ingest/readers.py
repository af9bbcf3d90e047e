"""Read one input file (CSV, TSV, JSON lines or Parquet, optionally gzipped) into a frame.

Text formats are read with every column as a string, so that :mod:`kgrec.ingest.validate`
does all the typing and can say which row and value is wrong. Parquet keeps its own
column types (validation accepts both). Every failure is an
:class:`~kgrec.errors.InputFileError` that names the file and the fix.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from pathlib import Path
from typing import Literal

import polars as pl

from kgrec.errors import InputFileError

FileFormat = Literal["csv", "tsv", "jsonl", "parquet"]

SUPPORTED_SUFFIXES: dict[str, FileFormat] = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".ndjson.gz": "jsonl",
    ".parquet": "parquet",
}


def detect_format(path: Path) -> FileFormat:
    """The format named by ``path``'s extension (case-insensitive), e.g. ``x.tsv.gz`` → ``"tsv"``."""
    name = path.name.lower()
    # Longest suffixes first, so ".csv.gz" wins over a bare ".gz".
    for suffix in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suffix):
            return SUPPORTED_SUFFIXES[suffix]
    raise InputFileError(
        f"Cannot read {path}: unsupported file extension. "
        f"Supported: {', '.join(SUPPORTED_SUFFIXES)}. Convert the file or rename it to match its content."
    )


def read_table(path: str | Path, kind: str) -> pl.DataFrame:
    """Read the ``kind`` file (``"products"``, ``"interactions"``, ...) at ``path``.

    Returns a frame with at least one row. CSV/TSV/JSONL columns are ``Utf8`` (JSON lists
    of strings stay ``List(Utf8)``); Parquet columns keep their types. Column names are
    stripped of surrounding whitespace. Empty CSV cells are null.

    Raises :class:`InputFileError` for a missing file, a directory, an unsupported
    extension, a corrupt or non-UTF-8 file, or a file without data rows.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"The {kind} file {path} does not exist. Check the path (relative paths start at {Path.cwd()}).")
    if not path.is_file():
        raise InputFileError(f"The {kind} file {path} is a directory, not a file. Pass the path of the file inside it.")
    file_format = detect_format(path)
    if path.stat().st_size == 0:
        raise _empty_file_error(path, kind)

    try:
        frame = _read(path, file_format)
    except (pl.exceptions.PolarsError, OSError, EOFError, gzip.BadGzipFile) as e:
        raise _diagnose_read_failure(path, kind, file_format, e) from e

    if frame.height == 0:
        raise _empty_file_error(path, kind)
    frame = frame.rename({name: name.strip() for name in frame.columns if name != name.strip()})
    if file_format == "jsonl":
        frame = _flatten_json_columns(frame, path, kind)
    return frame


def _read(path: Path, file_format: FileFormat) -> pl.DataFrame:
    if file_format in ("csv", "tsv"):
        # scan_csv decompresses .gz itself; infer_schema=False reads every column as text.
        return pl.scan_csv(
            path,
            separator="," if file_format == "csv" else "\t",
            infer_schema=False,
            encoding="utf8",
        ).collect()
    if file_format == "jsonl":
        # Scan every line for the schema, so a column that is a number in one row and a
        # string in another becomes a string instead of failing late.
        return pl.read_ndjson(path, infer_schema_length=None)
    return pl.scan_parquet(path).collect()


def _flatten_json_columns(frame: pl.DataFrame, path: Path, kind: str) -> pl.DataFrame:
    """JSON scalars become text; lists of strings stay lists; objects are refused."""
    casts = []
    for name, dtype in frame.schema.items():
        if isinstance(dtype, pl.List) and dtype.inner in (pl.Utf8, pl.Null):
            casts.append(pl.col(name).cast(pl.List(pl.Utf8)))
        elif dtype.is_nested():
            raise InputFileError(
                f"The {kind} file {path}: column {name!r} holds nested JSON values ({dtype}). "
                "Expected strings, numbers or a list of strings; flatten that field before ingest."
            )
        else:
            casts.append(pl.col(name).cast(pl.Utf8))
    return frame.select(casts)


def _raw_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it is gzipped."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return data


def _diagnose_read_failure(path: Path, kind: str, file_format: FileFormat, error: Exception) -> InputFileError:
    """Turn a reader's exception into the most specific message we can give."""
    if file_format != "parquet":
        try:
            data = _raw_bytes(path)
        except (OSError, EOFError, gzip.BadGzipFile) as e:
            return InputFileError(
                f"Cannot read the {kind} file {path}: it ends in .gz but is not a valid gzip file ({e}). "
                "Re-compress it with gzip or remove the .gz extension."
            )
        if not data.strip():
            return _empty_file_error(path, kind)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            return _not_utf8_error(path, kind, data, e)
        if file_format == "jsonl":
            bad_line = _find_bad_json_line(text)
            if bad_line is not None:
                number, line, reason = bad_line
                return InputFileError(
                    f"Cannot read the {kind} file {path}: line {number} is not a JSON object ({reason}); "
                    f"found {_show_line(line)}. Each line must be one JSON object, e.g. "
                    '{"product_id": "p1", "title": "..."}: fix or delete that line.'
                )
        if file_format in ("csv", "tsv"):
            ragged = _find_ragged_row(text, "," if file_format == "csv" else "\t")
            if ragged is not None:
                row, found, expected = ragged
                return InputFileError(
                    f"Cannot read the {kind} file {path}: data row {row} has {found} fields, the header has {expected}. "
                    "Quote fields that contain the separator or a line break, or fix the row."
                )
    hint = {
        "csv": "Check that it is comma-separated with one header line and the same number of fields on every row.",
        "tsv": "Check that it is tab-separated with one header line and the same number of fields on every row.",
        "jsonl": "Each line must be one JSON object, e.g. {\"product_id\": \"p1\", \"title\": \"...\"}.",
        "parquet": "The file may be truncated or not Parquet at all; export it again.",
    }[file_format]
    reason = str(error).strip().splitlines()[0].rstrip(".")  # polars' first line; its hints name polars options
    return InputFileError(f"Cannot read the {kind} file {path} as {file_format}: {reason}. {hint}")


def _find_bad_json_line(text: str) -> tuple[int, str, str] | None:
    """The first non-blank line that is not a JSON object: ``(line number, line, reason)``.

    Polars names only a character position; a Python loop on the error path finds the line.
    """
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            return number, line, f"{e.msg} at character {e.colno}"
        if not isinstance(value, dict):
            kind = {list: "an array", str: "a string", bool: "true or false"}.get(type(value), "a number or null")
            return number, line, f"it is {kind}"
    return None


def _show_line(line: str, limit: int = 80) -> str:
    text = repr(line)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _find_ragged_row(text: str, separator: str) -> tuple[int, int, int] | None:
    """The first data row whose field count differs from the header's: ``(row, found, expected)``.

    A Python loop, but only on the error path, to point at the broken row.
    """
    rows = csv.reader(io.StringIO(text, newline=""), delimiter=separator)
    header = next(rows, None)
    if header is None:
        return None
    for number, row in enumerate(rows, start=1):
        if row and len(row) != len(header):
            return number, len(row), len(header)
    return None


def _not_utf8_error(path: Path, kind: str, data: bytes, error: UnicodeDecodeError) -> InputFileError:
    offset = error.start
    line = data.count(b"\n", 0, offset) + 1
    bad = data[offset : offset + 4].hex(" ")
    return InputFileError(
        f"The {kind} file {path} is not valid UTF-8: byte offset {offset} (line {line}) holds bytes {bad}. "
        "Re-save the file as UTF-8 (e.g. in a spreadsheet: 'CSV UTF-8'; or iconv -f latin1 -t utf-8)."
    )


def _empty_file_error(path: Path, kind: str) -> InputFileError:
    return InputFileError(
        f"The {kind} file {path} has no data rows. Expected a header line and at least one row; "
        "check that the export finished and that you passed the right file."
    )
