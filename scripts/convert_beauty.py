"""Convert the Amazon Beauty 2014 5-core folder into kgrec input files.

    python scripts/convert_beauty.py /work/shared/data/amazon_beauty_2014 OUT_DIR [--format parquet]

Reads (see SRC_DIR/PROVENANCE.md for where they come from):

- ``items.tsv.gz``: ``asin, brand, categories`` ('|'-joined category names),
- ``interactions.tsv.gz``: ``user_id, asin, position, loo_split``,
- ``item_relations.tsv.gz``: ``asin, relation, related_asin``.

Writes into OUT_DIR (never into the repository):

- ``products``: ``product_id`` (the ASIN), ``title`` (empty: the source has no titles),
  ``brand``, ``categories`` (the '|'-joined names; the source gives an unordered set of
  names, not a path, so each name becomes a top-level category);
- ``interactions``: ``user_id, product_id, event, timestamp`` with every event a
  ``purchase`` (a 5-core review) and ``timestamp`` = the 0-based position in the user's
  chronological sequence, as epoch seconds. **Only the order is known**: the source has
  no timestamps, so the values are 0, 1, 2, ... per user and mean nothing across users.
  The usual leave-one-out split (last item per user = test) is the latest timestamp;
- ``relations``: all three relation types (also_bought, also_viewed, bought_together),
  including rows whose related product is outside the 12,101-item catalog; ingest
  skips and counts those.

After ``load_tables`` this gives 22,363 users, 12,101 products and 198,502 interactions.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl


def read_tsv(path: Path) -> pl.DataFrame:
    """A source TSV (gzipped, no quoting) with every column as text."""
    return pl.read_csv(path, separator="\t", quote_char=None, infer_schema=False)


def convert_beauty(source_dir: Path, out_dir: Path, file_format: str = "csv") -> dict[str, Path]:
    """Write products, interactions and relations files; return their paths."""
    items = read_tsv(source_dir / "items.tsv.gz")
    interactions = read_tsv(source_dir / "interactions.tsv.gz")
    relations = read_tsv(source_dir / "item_relations.tsv.gz")

    tables = {
        "products": items.select(
            pl.col("asin").alias("product_id"),
            pl.lit(None, dtype=pl.Utf8).alias("title"),
            pl.col("brand"),
            pl.col("categories"),
        ),
        "interactions": interactions.select(
            pl.col("user_id"),
            pl.col("asin").alias("product_id"),
            pl.lit("purchase").alias("event"),
            pl.col("position").alias("timestamp"),
        ),
        "relations": relations.select(
            pl.col("asin").alias("product_id"),
            pl.col("relation"),
            pl.col("related_asin").alias("related_product_id"),
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
    parser.add_argument("source_dir", type=Path, help="folder holding items.tsv.gz, interactions.tsv.gz, item_relations.tsv.gz")
    parser.add_argument("out_dir", type=Path, help="where to write the kgrec input files (created if missing)")
    parser.add_argument("--format", choices=["csv", "parquet"], default="csv", help="output file format (default: csv)")
    args = parser.parse_args()
    missing = [n for n in ("items.tsv.gz", "interactions.tsv.gz", "item_relations.tsv.gz") if not (args.source_dir / n).is_file()]
    if missing:
        parser.error(f"{args.source_dir} lacks {', '.join(missing)}; pass the amazon_beauty_2014 folder.")
    for name, path in convert_beauty(args.source_dir, args.out_dir, args.format).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
