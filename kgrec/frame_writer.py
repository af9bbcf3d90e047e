"""One file written from frames that arrive one batch at a time.

Exports and generators at a million products cannot hold a whole table as one frame.
:class:`FrameWriter` takes the table in batches and holds only the batch in memory:
CSV and JSON lines are appended to; Parquet, which cannot be appended to, is written
as one part file per batch in a temporary folder beside the target and joined into the
one file on close (a streaming copy), then the parts are deleted.

The result is the same file content, whatever the batch size.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Literal

import polars as pl

FrameFormat = Literal["csv", "jsonl", "parquet"]


class FrameWriter:
    """Write ``path`` from the frames given to :meth:`write`, in order; use as a context manager.

    Args:
        path: the file to write (replaced if it exists).
        file_format: ``csv``, ``jsonl`` or ``parquet``.
        schema: the columns and dtypes of every batch; each batch is cast to it, and a
            table without rows is written with it.
        float_precision: decimals of floats in CSV (None: as polars writes them).

    On an exception inside the ``with`` block nothing is left behind: no target file, no parts.
    """

    def __init__(
        self,
        path: str | Path,
        file_format: FrameFormat,
        schema: dict[str, pl.DataType] | pl.Schema,
        float_precision: int | None = None,
    ) -> None:
        if file_format not in ("csv", "jsonl", "parquet"):
            raise ValueError(f"file_format must be one of csv, jsonl, parquet; found {file_format!r}")
        self.path = Path(path)
        self.file_format = file_format
        self.schema = pl.Schema(schema)
        self.float_precision = float_precision
        self.rows = 0
        self._parts: list[Path] = []
        self._parts_dir: Path | None = None
        self._file: IO[bytes] | None = None

    def __enter__(self) -> FrameWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.file_format == "parquet":
            self._parts_dir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.parts-", dir=self.path.parent))
        else:
            self._file = open(self.path, "wb")  # noqa: SIM115 - closed in __exit__
        return self

    def write(self, frame: pl.DataFrame) -> None:
        """Append ``frame`` (cast to the schema; its columns in the schema's order)."""
        if frame.is_empty():
            return
        frame = frame.select(pl.col(name).cast(dtype) for name, dtype in self.schema.items())
        if self._parts_dir is not None:
            part = self._parts_dir / f"{len(self._parts):06d}.parquet"
            frame.write_parquet(part)
            self._parts.append(part)
        elif self.file_format == "csv":
            assert self._file is not None
            frame.write_csv(self._file, include_header=self.rows == 0, float_precision=self.float_precision)
        else:
            assert self._file is not None
            frame.write_ndjson(self._file)
        self.rows += frame.height

    def __exit__(self, exc_type, exc, tb) -> None:
        written = False
        try:
            if exc_type is None:
                self._finish()
                written = True
        finally:
            if self._file is not None:
                self._file.close()
            if self._parts_dir is not None:
                shutil.rmtree(self._parts_dir, ignore_errors=True)
            if not written:
                self.path.unlink(missing_ok=True)

    def _finish(self) -> None:
        empty = pl.DataFrame(schema=self.schema)
        if self._file is not None:
            if self.rows == 0 and self.file_format == "csv":
                empty.write_csv(self._file)  # the header alone
        elif not self._parts:
            empty.write_parquet(self.path)
        elif len(self._parts) == 1:
            os.replace(self._parts[0], self.path)
        else:
            pl.scan_parquet(self._parts).sink_parquet(self.path, engine="streaming")
