"""A versioned on-disk copy of one shop's graph, so training runs from files alone.

Layout of a snapshot directory::

    products.parquet  interactions.parquet  relations.parquet  users.parquet  manifest.json
    ids/user.parquet  ids/product.parquet  ids/brand.parquet  ids/category.parquet

The four parquet files are exactly the :class:`~kgrec.ingest.tables.GraphTables` frames,
sorted into a canonical order:

- ``products`` by ``product_id``; ``users`` by ``user_id``;
- ``interactions`` by ``(user_id, timestamp, product_id, event)`` (then ``value``, ``weight``);
- ``relations`` by all columns.

That order *is* the id mapping: a product's index is its row in ``products``, a user's
its row in ``users``; brands are the sorted distinct brand names and categories the
sorted paths of :meth:`GraphTables.categories`. The maps are also written out, for
tools that read a snapshot without kgrec, as ``ids/{user,product,brand,category}.parquet``
(one column ``id``, row = index); ``load_snapshot(verify=True)`` checks they agree.

``manifest.json`` holds ``format``, ``version``, ``kgrec_version``, ``created_at``,
``counts`` and ``content_hash``: a sha256 over the canonical frames' content (column
names and values, written as JSON lines), so the same graph always gives the same hash,
whatever the export time or parquet writer.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from functools import cached_property
from itertools import chain
from pathlib import Path
from typing import Any

import polars as pl

import kgrec
from kgrec.atomic import replace_dir
from kgrec.errors import SchemaError, SnapshotError
from kgrec.frame_writer import FrameWriter
from kgrec.ingest.tables import INTERACTION_SCHEMA, PRODUCT_SCHEMA, RELATION_SCHEMA, GraphTables
from kgrec.snapshot.idmap import IdMap, read_id_maps, write_id_maps

FORMAT = "kgrec-snapshot"
VERSION = 1
MANIFEST_FILE = "manifest.json"
IDS_DIR = "ids"
TABLE_NAMES: tuple[str, ...] = ("products", "interactions", "relations", "users")
_SORT_KEYS: dict[str, list[str]] = {
    "products": ["product_id"],
    "users": ["user_id"],
    "interactions": ["user_id", "timestamp", "product_id", "event", "value", "weight"],
    "relations": ["product_id", "relation", "related_product_id"],
}
_REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "products": ("product_id",),
    "users": ("user_id",),
    "interactions": ("user_id", "product_id", "event", "timestamp", "weight"),
    "relations": ("product_id", "relation", "related_product_id"),
}
_OPTIONAL_COLUMNS: dict[str, dict[str, tuple[object, pl.DataType]]] = {
    "products": {
        "title": (None, pl.Utf8),
        "description": (None, pl.Utf8),
        "price": (None, pl.Float64),
        "brand": (None, pl.Utf8),
        "categories": ([], pl.List(pl.Utf8)),
    },
    "interactions": {"value": (None, pl.Float64)},
}
_EMPTY_SCHEMAS: dict[str, dict[str, pl.DataType]] = {
    "products": PRODUCT_SCHEMA,
    "interactions": INTERACTION_SCHEMA,
    "relations": RELATION_SCHEMA,
    "users": {"user_id": pl.Utf8},
}
_HASH_CHUNK_ROWS = 100_000


class Snapshot:
    """One graph in canonical order, with its manifest and the id maps it implies.

    Attributes:
        tables: the sorted frames (see the module docstring for the order); read from
            ``path`` on first use when the snapshot was just exported in batches.
        manifest: the content of ``manifest.json`` (built in memory for
            :func:`snapshot_from_tables`).
        path: the snapshot directory, or ``None`` for an in-memory snapshot.
    """

    def __init__(self, manifest: dict[str, Any], path: Path | None = None, tables: GraphTables | None = None) -> None:
        if tables is None and path is None:
            raise ValueError("A Snapshot needs its tables or the directory they are in.")
        self.manifest = manifest
        self.path = path
        self._tables = tables

    def __repr__(self) -> str:
        return f"Snapshot(path={self.path}, counts={self.manifest.get('counts')})"

    @property
    def tables(self) -> GraphTables:
        if self._tables is None:
            assert self.path is not None
            self._tables = _read_tables(self.path)
        return self._tables

    @cached_property
    def user_ids(self) -> IdMap:
        """Users in index order (= rows of ``tables.users``)."""
        return IdMap(self.tables.users.get_column("user_id"), kind="user")

    @cached_property
    def product_ids(self) -> IdMap:
        """Products in index order (= rows of ``tables.products``)."""
        return IdMap(self.tables.products.get_column("product_id"), kind="product")

    @cached_property
    def brand_ids(self) -> IdMap:
        """Distinct brand names, sorted."""
        return IdMap(self.tables.brands().get_column("name"), kind="brand")

    @cached_property
    def category_ids(self) -> IdMap:
        """Every category path and its ancestors, sorted (:meth:`GraphTables.categories`)."""
        return IdMap(self.tables.categories().get_column("path"), kind="category")

    def id_maps(self) -> dict[str, IdMap]:
        """``{"user": …, "product": …, "brand": …, "category": …}``."""
        return {"user": self.user_ids, "product": self.product_ids, "brand": self.brand_ids, "category": self.category_ids}

    @property
    def num_users(self) -> int:
        return self.tables.num_users

    @property
    def num_products(self) -> int:
        return self.tables.num_products

    @property
    def content_hash(self) -> str:
        """sha256 (hex) of the canonical tables; equal graphs have equal hashes."""
        return str(self.manifest["content_hash"])


def snapshot_from_tables(tables: GraphTables) -> Snapshot:
    """An in-memory :class:`Snapshot` of ``tables`` (sorted, checked, hashed; nothing written).

    Raises:
        SchemaError: a required column is missing, an id is duplicated, or an
            interaction names a user or product that has no row.
    """
    canonical = canonical_tables(tables)
    _check_tables(canonical)
    return Snapshot(manifest=_build_manifest(canonical), tables=canonical)


def write_snapshot(tables: GraphTables, out_dir: str | Path) -> Snapshot:
    """Write ``tables`` as a snapshot to ``out_dir`` and return it (with ``path`` set).

    The files are written to a temporary directory beside ``out_dir`` and renamed into
    place, so ``out_dir`` never holds a half-written snapshot. An existing snapshot (or
    empty directory) at ``out_dir`` is replaced.

    Raises:
        SchemaError: as :func:`snapshot_from_tables`.
        SnapshotError: ``out_dir`` exists and is neither empty nor a snapshot.
    """
    canonical = canonical_tables(tables)
    _check_out_dir(Path(out_dir))
    _check_tables(canonical)
    written = write_snapshot_batches({name: [getattr(canonical, name)] for name in TABLE_NAMES}, out_dir)
    return Snapshot(manifest=written.manifest, path=written.path, tables=canonical)


def write_snapshot_batches(batches: Mapping[str, Iterable[pl.DataFrame]], out_dir: str | Path) -> Snapshot:
    """Write a snapshot from tables that arrive in batches, holding one batch in memory.

    ``batches[name]`` gives the frames of each table of :data:`TABLE_NAMES`, read in that
    order (products, interactions, relations, users). The frames of one table share their
    columns and come in ascending, disjoint ranges of the table's first sort key
    (``product_id``, ``user_id``, ``product_id``, ``user_id``), as
    :func:`kgrec.store.graph_io.read_table_batches` gives them; inside a frame rows may come
    in any order. So each frame, sorted, continues the canonical order, and the file, the
    hash and the id maps are those of :func:`write_snapshot` on the whole tables. The caller
    vouches that ids are unique and that every interaction and relation names a user and
    products of the tables (a graph's edges do).

    Returns the snapshot; its tables are read from the files on first use. Written as
    :func:`write_snapshot` writes (a temporary directory renamed into place).

    Raises:
        SnapshotError: ``out_dir`` cannot be replaced, or a table's frames are out of order.
    """
    out = Path(out_dir)
    _check_out_dir(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        digest = hashlib.sha256()
        rows = {name: _write_table(staging / f"{name}.parquet", name, batches[name], digest) for name in TABLE_NAMES}
        maps = _id_maps_of_files(staging)
        write_id_maps(maps, staging / IDS_DIR)
        counts = {
            "users": rows["users"],
            "products": rows["products"],
            "brands": len(maps["brand"]),
            "categories": len(maps["category"]),
            "interactions": rows["interactions"],
            "relations": rows["relations"],
        }
        manifest = _manifest(counts, digest.hexdigest())
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Snapshot(manifest=manifest, path=out)


def _write_table(path: Path, name: str, frames: Iterable[pl.DataFrame], digest: Any) -> int:
    """Sort each frame, check it continues the order, write and hash it; returns the rows written."""
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        first = pl.DataFrame(schema=_EMPTY_SCHEMAS[name])
    first = canonical_frame(name, first)
    _hash_header(digest, name, first.columns)
    key, last = _SORT_KEYS[name][0], None
    with FrameWriter(path, "parquet", first.schema) as writer:
        for frame in chain([first], (canonical_frame(name, f) for f in frames)):
            if frame.is_empty():
                continue
            keys = frame.get_column(key)
            if last is not None and not keys[0] > last:
                raise SnapshotError(
                    f"Table {name}: a batch starts at {key} {keys[0]!r}, not after the previous batch's last "
                    f"{last!r}. Batches must come in ascending, disjoint ranges of {key} (as an export pages them)."
                )
            last = keys[-1]
            writer.write(frame)
            _hash_rows(digest, frame)
        return writer.rows


def _id_maps_of_files(root: Path) -> dict[str, IdMap]:
    """The id maps of a snapshot's table files, reading only the columns they need."""
    products = pl.read_parquet(root / "products.parquet", columns=["product_id", "brand", "categories"])
    users = pl.read_parquet(root / "users.parquet", columns=["user_id"])
    catalog = GraphTables(products=products, interactions=pl.DataFrame(schema=INTERACTION_SCHEMA))
    return {
        "user": IdMap(users.get_column("user_id"), kind="user"),
        "product": IdMap(products.get_column("product_id"), kind="product"),
        "brand": IdMap(catalog.brands().get_column("name"), kind="brand"),
        "category": IdMap(catalog.categories().get_column("path"), kind="category"),
    }


def load_snapshot(path: str | Path, verify: bool = False) -> Snapshot:
    """Read a snapshot directory written by :func:`write_snapshot`.

    Args:
        path: the snapshot directory.
        verify: also recompute the content hash and compare it with the manifest's
            (catches edited or swapped parquet files; costs one pass over the tables).

    Raises:
        SnapshotError: the directory or manifest is missing or unreadable, the format or
            version is not one this kgrec reads, a table file is missing or unreadable,
            or (with ``verify``) the content hash does not match.
    """
    root = Path(path)
    fix = f"re-export with `kgrec export-graph --out {root}`"
    if not root.is_dir():
        raise SnapshotError(
            f"Snapshot directory {root} does not exist. Create it with `kgrec export-graph --out {root}`."
        )
    manifest_path = root / MANIFEST_FILE
    if not manifest_path.is_file():
        raise SnapshotError(
            f"{root} has no {MANIFEST_FILE}, so it is not a kgrec snapshot (or its export was interrupted): {fix}."
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SnapshotError(f"{manifest_path} cannot be read as JSON ({e}): {fix}.") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise SnapshotError(f"{manifest_path} has format {found!r}, expected {FORMAT!r}: {fix}.")
    if manifest.get("version") != VERSION:
        raise SnapshotError(
            f"{root} is snapshot version {manifest.get('version')}, this kgrec reads version {VERSION}: "
            f"re-export with `kgrec export-graph --out {root}`."
        )
    tables = _read_tables(root)
    if verify:
        found = content_hash(tables)
        if found != manifest.get("content_hash"):
            raise SnapshotError(
                f"Snapshot {root} has content hash {found[:12]}…, but its manifest says "
                f"{str(manifest.get('content_hash'))[:12]}…: its files were changed after export; {fix}."
            )
        snapshot = Snapshot(manifest=manifest, path=root, tables=tables)
        try:
            written = read_id_maps(root / IDS_DIR)
        except Exception as e:  # missing or damaged parquet
            raise SnapshotError(f"Snapshot {root} has no readable id maps in {IDS_DIR}/ ({e}): {fix}.") from e
        if any(written[kind] != derived for kind, derived in snapshot.id_maps().items()):
            raise SnapshotError(f"Snapshot {root}: the id maps in {IDS_DIR}/ disagree with its tables: {fix}.")
        return snapshot
    return Snapshot(manifest=manifest, path=root, tables=tables)


def _read_tables(root: Path) -> GraphTables:
    fix = f"re-export with `kgrec export-graph --out {root}`"
    frames: dict[str, pl.DataFrame] = {}
    for name in TABLE_NAMES:
        file = root / f"{name}.parquet"
        if not file.is_file():
            raise SnapshotError(f"Snapshot {root} is missing {file.name}: {fix}.")
        try:
            frames[name] = pl.read_parquet(file)
        except Exception as e:  # polars raises several types for damaged files
            raise SnapshotError(f"Snapshot file {file} cannot be read ({e}): {fix}.") from e
    return canonical_tables(GraphTables(**frames))


def canonical_tables(tables: GraphTables) -> GraphTables:
    """``tables`` with every frame sorted into the snapshot's canonical order.

    Optional columns a frame lacks are added first (``title``, ``description``, ``price``,
    ``brand`` as nulls and ``categories`` as empty lists in products; ``value`` as nulls in
    interactions), so every snapshot has the full :mod:`kgrec.ingest.tables` schema.
    """
    return GraphTables(**{name: canonical_frame(name, getattr(tables, name)) for name in TABLE_NAMES})


def canonical_frame(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    """One table of :func:`canonical_tables`: optional columns added, rows sorted."""
    frame = _add_optional_columns(name, frame)
    keys = [c for c in _SORT_KEYS[name] if c in frame.columns]
    return frame.sort(keys, nulls_last=True, maintain_order=True) if keys else frame


def _add_optional_columns(name: str, frame: pl.DataFrame) -> pl.DataFrame:
    missing = [
        pl.lit(value, dtype=dtype).alias(column)
        for column, (value, dtype) in _OPTIONAL_COLUMNS.get(name, {}).items()
        if column not in frame.columns
    ]
    return frame.with_columns(missing) if missing else frame


def content_hash(tables: GraphTables) -> str:
    """sha256 (hex) over the content of canonically sorted ``tables``.

    Hashes, per table, its name, its column names and its rows as JSON lines; it
    depends on neither parquet bytes nor the export time. ``tables`` must already be
    in canonical order (see :func:`canonical_tables`).
    """
    digest = hashlib.sha256()
    for name in TABLE_NAMES:
        frame: pl.DataFrame = getattr(tables, name)
        _hash_header(digest, name, frame.columns)
        _hash_rows(digest, frame)
    return digest.hexdigest()


def _hash_header(digest: Any, name: str, columns: list[str]) -> None:
    digest.update(json.dumps({"table": name, "columns": columns}).encode())
    digest.update(b"\n")


def _hash_rows(digest: Any, frame: pl.DataFrame) -> None:
    """Rows as JSON lines: hashing a table's frames one after another equals hashing the whole."""
    for chunk in frame.iter_slices(_HASH_CHUNK_ROWS):
        digest.update(chunk.write_ndjson().encode())


def _build_manifest(tables: GraphTables) -> dict[str, Any]:
    counts = {
        "users": tables.num_users,
        "products": tables.num_products,
        "brands": tables.brands().height,
        "categories": tables.categories().height,
        "interactions": tables.num_interactions,
        "relations": tables.relations.height,
    }
    return _manifest(counts, content_hash(tables))


def _manifest(counts: dict[str, int], hash_hex: str) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "kgrec_version": kgrec.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "counts": counts,
        "content_hash": hash_hex,
    }


def _check_tables(tables: GraphTables) -> None:
    for name, columns in _REQUIRED_COLUMNS.items():
        frame: pl.DataFrame = getattr(tables, name)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise SchemaError(
                f"Table {name} lacks column(s) {missing} (found {frame.columns}). "
                "Build the tables with kgrec.ingest, which fills every column."
            )
    for name, column in (("users", "user_id"), ("products", "product_id")):
        ids = getattr(tables, name).get_column(column)
        if ids.null_count() or ids.n_unique() != ids.len():
            raise SchemaError(f"Table {name}: {column} must be unique and non-null; deduplicate it at ingest.")
    references = (
        ("interactions", "user_id", tables.users, "user_id"),
        ("interactions", "product_id", tables.products, "product_id"),
        ("relations", "product_id", tables.products, "product_id"),
        ("relations", "related_product_id", tables.products, "product_id"),
    )
    for name, column, target, key in references:
        values = getattr(tables, name).get_column(column).unique()
        unknown = values.filter(~values.is_in(target.get_column(key).implode()))
        if unknown.len():
            raise SchemaError(
                f"Table {name}: {unknown.len():,} {column} value(s) have no row in the "
                f"{'users' if key == 'user_id' else 'products'} table (e.g. {unknown.head(3).to_list()}). "
                "Every referenced id needs a row; run the tables through kgrec.ingest."
            )


def _check_out_dir(out: Path) -> None:
    if out.exists() and not _replaceable(out):
        raise SnapshotError(
            f"{out} exists and is not a kgrec snapshot (no {MANIFEST_FILE}); refusing to overwrite it. "
            "Pass an empty or new directory to --out."
        )


def _replaceable(path: Path) -> bool:
    """True when ``path`` may be replaced: an empty directory or an earlier snapshot."""
    return path.is_dir() and (not any(path.iterdir()) or (path / MANIFEST_FILE).is_file())

