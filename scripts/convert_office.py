"""Convert the Amazon Office Products 2014 5-core folder into kgrec input files.

    python scripts/convert_office.py /work/shared/data/amazon_office_2014 OUT_DIR [--format parquet]

Reads (see SRC_DIR/PROVENANCE.md for where they come from):

- ``items.tsv.gz``: ``asin, title, brand, description`` (tabs/newlines already spaces),
- ``interactions.tsv.gz``: ``user_id, asin, position, loo_split``.

Writes into OUT_DIR (never into the repository):

- ``products``: ``product_id`` (the ASIN), ``title``, ``brand``, ``description``; the
  source has no categories, prices or relations, so there is no relations file. The source
  writes ``Unknown`` where the brand is not known (498 of 2,420 products); that becomes an
  empty brand, not one Brand node "made by" all of them;
- ``interactions``: ``user_id, product_id, event, timestamp`` with every event a
  ``purchase`` (a 5-core review) and ``timestamp`` = the 0-based position in the user's
  sequence, as epoch seconds. **Only the order is known** (and for Office it is assumed
  chronological, see PROVENANCE.md): values are 0, 1, 2, ... per user and mean nothing
  across users. The usual leave-one-out split (last item per user = test) is the latest
  timestamp.

After ``load_tables`` this gives 4,905 users, 2,420 products and 53,258 interactions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

UNKNOWN_BRAND = "Unknown"  # the source's placeholder for a missing brand


def read_tsv(path: Path) -> pl.DataFrame:
    """A source TSV (gzipped, no quoting) with every column as text."""
    return pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)


def convert_office(source_dir: Path, out_dir: Path, file_format: str = "csv") -> dict[str, Path]:
    """Write products and interactions files; return their paths."""
    items = read_tsv(source_dir / "items.tsv.gz")
    interactions = read_tsv(source_dir / "interactions.tsv.gz")
    tables = {
        "products": items.select(
            pl.col("asin").alias("product_id"),
            pl.col("title"),
            pl.when(pl.col("brand") != UNKNOWN_BRAND).then(pl.col("brand")).alias("brand"),
            pl.col("description"),
        ),
        "interactions": interactions.select(
            pl.col("user_id"),
            pl.col("asin").alias("product_id"),
            pl.lit("purchase").alias("event"),
            pl.col("position").alias("timestamp"),
        ),
    }
    return write_tables(tables, out_dir, file_format)


def write_tables(tables: dict[str, pl.DataFrame], out_dir: Path, file_format: str) -> dict[str, Path]:
    """Write each frame as ``OUT_DIR/<name>.<format>``; return the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, frame in tables.items():
        path = out_dir / f"{name}.{file_format}"
        if file_format == "parquet":
            frame.write_parquet(path)
        else:
            frame.write_csv(path)
        paths[name] = path
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source_dir", type=Path, help="folder holding items.tsv.gz and interactions.tsv.gz")
    parser.add_argument("out_dir", type=Path, help="where to write the kgrec input files (created if missing)")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv", help="output file format (default: csv)")
    args = parser.parse_args()
    missing = [n for n in ("items.tsv.gz", "interactions.tsv.gz") if not (args.source_dir / n).is_file()]
    if missing:
        parser.error(f"{args.source_dir} lacks {', '.join(missing)}; pass the amazon_office_2014 folder.")
    for name, path in convert_office(args.source_dir, args.out_dir, args.format).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
