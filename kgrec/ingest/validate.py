"""Validate a shop's files into clean :class:`~kgrec.ingest.tables.GraphTables`.

:func:`load_tables` reads and checks every file before it returns anything, so a caller
that writes to Neo4j only after it succeeds never writes half a shop. A problem is one
:class:`~kgrec.errors.SchemaError` (or :class:`~kgrec.errors.InputFileError` from the
reader) whose message names the file, the column, the data row (1-based, header not
counted), the value found, what was expected and how to fix it.

Policies (see also :class:`~kgrec.ingest.config.IngestConfig`):

- Column names match case-insensitively (``Product_ID`` is ``product_id``); unknown
  columns are ignored and listed in the report's notes (users keep theirs as attributes).
- Ids are kept byte-for-byte (no trimming, no unescaping); an empty id is an error.
- A product or user listed twice with identical fields is one row; with different
  fields it is an error naming both rows and the first differing column.
- Category paths are normalised: ``"Beauty>Makeup >  Eyes"`` → ``"Beauty > Makeup > Eyes"``.
- Interactions without a ``timestamp`` column get their row order (0, 1, 2, ...) as epoch
  seconds, noted in the report. Interactions of unknown products are skipped and counted,
  or rejected (``unknown_products``). Repeated events (same user, product, event,
  timestamp) count once.
- Relations whose either end is not in the catalog, self-loops and repeats are skipped and counted.

Limits of the graph store, checked here so that a load that would fail half-way never starts
(constants in :mod:`kgrec.ingest.tables`, reasons in ``docs/RELIABILITY.md``):

- Every id, brand name and category path is at most ``MAX_KEY_BYTES`` of UTF-8 (an index key).
- A relation name, once normalised, is a letter then letters, digits or underscores, and not
  one of kgrec's own relationship types (``interacted``, ``made_by``, ...).
- A users-file attribute column has a name, and not one kgrec sets on users itself (``id``, ...).
- A timestamp lies between 1970 and the load time plus ``future_timestamp_margin_s``.
- A column that becomes text holds text or numbers (a Parquet struct or list is refused, except
  lists of text where a list is meant: ``categories``, user attributes).

Everything is vectorised polars; row numbers for messages come from ``with_row_index``.
"""

from __future__ import annotations

import difflib
import time
from datetime import datetime, timezone
from pathlib import Path

import polars as pl

from kgrec.errors import SchemaError
from kgrec.ingest.config import IngestConfig
from kgrec.ingest.readers import read_table
from kgrec.ingest.tables import (
    CATEGORY_SEPARATOR,
    EVENT_TYPES,
    INTERACTION_SCHEMA,
    KGREC_RELATIONSHIP_TYPES,
    MAX_KEY_BYTES,
    PRODUCT_FIELDS,
    PRODUCT_SCHEMA,
    RELATION_NAME_PATTERN,
    RELATION_SCHEMA,
    RESERVED_USER_PROPERTIES,
    GraphTables,
    IngestReport,
)

ROW = "__row__"
"""1-based data row number, carried through validation for error messages."""

MAX_EXAMPLES = 5
"""How many further offending rows or ids a message lists."""

# ISO-8601 layouts accepted after normalisation ("Z" → "+00:00", date-time space → "T").
_ISO_AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M%z")
_ISO_NAIVE_FORMATS = ("%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M")
_ISO_DATE_FORMAT = "%Y-%m-%d"
# Epoch seconds beyond this (year 5138) are almost surely milliseconds.
_MAX_EPOCH_SECONDS = 100_000_000_000


def load_tables(
    products: str | Path,
    interactions: str | Path,
    relations: str | Path | None = None,
    users: str | Path | None = None,
    config: IngestConfig | None = None,
) -> tuple[GraphTables, IngestReport]:
    """Read and validate a shop's files; return clean tables and what was skipped.

    ``products`` and ``interactions`` are required; ``relations`` and ``users`` are
    optional. Supported formats: see :data:`kgrec.ingest.readers.SUPPORTED_SUFFIXES`.

    Raises :class:`~kgrec.errors.InputFileError` or :class:`~kgrec.errors.SchemaError`;
    nothing is returned unless every file is valid.
    """
    config = config or IngestConfig()
    report = IngestReport()
    now = time.time()  # one load time for every file

    product_frame = read_table(products, "products")
    product_table = validate_products(product_frame, products, report)
    catalog = product_table.get_column("product_id")
    interaction_table = validate_interactions(
        read_table(interactions, "interactions"), interactions, catalog, config, report, products_source=products, now=now
    )
    relation_table = (
        validate_relations(read_table(relations, "relations"), relations, catalog, report)
        if relations is not None
        else pl.DataFrame(schema=RELATION_SCHEMA)
    )
    user_table = (
        validate_users(read_table(users, "users"), users, report)
        if users is not None
        else pl.DataFrame(schema={"user_id": pl.Utf8})
    )
    user_table = _add_interaction_users(user_table, interaction_table, report, has_users_file=users is not None)

    tables = GraphTables(
        products=product_table,
        interactions=interaction_table,
        relations=relation_table,
        users=user_table,
        product_columns=given_product_fields(product_frame.columns),
    )
    return tables, report


# --------------------------------------------------------------------------- products


def validate_products(frame: pl.DataFrame, source: str | Path, report: IngestReport) -> pl.DataFrame:
    """Check a raw products frame and return it in :data:`PRODUCT_SCHEMA`.

    ``category`` (one name or path) and ``categories`` ('|'-separated, or a list) are
    merged into the normalised, de-duplicated ``categories`` list.
    """
    frame, extra = _resolve_columns(
        frame,
        source,
        "products",
        required=("product_id",),
        optional=("title", "description", "brand", "category", "categories", "price"),
    )
    report.rows_read["products"] = frame.height
    if extra:
        report.notes.append(f"{source}: ignored column(s) {', '.join(extra)} (not used for products).")
    _require_flat(frame, source, lists_allowed=("category", "categories"), ignored=extra)
    frame = frame.with_row_index(ROW, offset=1)
    _require_ids(frame, source, "product_id", "product")
    _require_short_keys(frame, source, "product_id", "product id")

    price: pl.Series | pl.Expr = (
        _parse_numbers(frame, source, "price", expected="a price such as 9.99 (no currency sign)", minimum=0.0)
        if "price" in frame.columns
        else pl.lit(None, dtype=pl.Float64)
    )
    clean = frame.select(
        ROW,
        _text(frame, "product_id"),
        _optional_text(frame, "title"),
        _optional_text(frame, "description"),
        price.alias("price"),
        _stripped_text(frame, "brand"),
        _categories(frame).alias("categories"),
    )
    _require_short_keys(clean, source, "brand", "brand name")
    _require_short_category_paths(clean, source, [c for c in ("category", "categories") if c in frame.columns])
    clean, collapsed = _collapse_duplicates(clean, source, "product_id", "product")
    report.skipped["products_duplicate"] = collapsed
    return _conform(clean, PRODUCT_SCHEMA)


def given_product_fields(columns: list[str]) -> frozenset[str]:
    """The product fields (:data:`PRODUCT_FIELDS`) a products file with these columns gives.

    A field the file lacks is left as the graph stores it; ``category`` gives ``categories``.
    """
    names = {name.lower() for name in columns}
    if "category" in names:
        names.add("categories")
    return PRODUCT_FIELDS & names


def normalise_category_path(path: pl.Expr) -> pl.Expr:
    """``"  Beauty>Makeup >>  Eyes "`` → ``"Beauty > Makeup > Eyes"``; empty → null."""
    normalised = (
        path.str.replace_all(r"\s+", " ")
        .str.replace_all(r"\s*>[\s>]*", CATEGORY_SEPARATOR)
        .str.strip_chars()
        .str.strip_chars(" >")
    )
    return pl.when(normalised == "").then(None).otherwise(normalised)


def _categories(frame: pl.DataFrame) -> pl.Expr:
    """``category`` and ``categories`` as one list of normalised paths (a JSON/Parquet list is taken as is)."""
    parts: list[pl.Expr] = []
    for column in ("category", "categories"):
        if column not in frame.columns:
            continue
        if isinstance(frame.schema[column], pl.List):
            listed = pl.col(column).cast(pl.List(pl.Utf8))
        elif column == "category":
            listed = pl.concat_list(pl.col(column).cast(pl.Utf8))
        else:
            listed = pl.col(column).cast(pl.Utf8).str.split("|")
        parts.append(listed.fill_null(pl.lit([], dtype=pl.List(pl.Utf8))))
    if not parts:
        return pl.lit([], dtype=pl.List(pl.Utf8))
    merged = pl.concat_list(parts) if len(parts) > 1 else parts[0]
    return merged.list.eval(normalise_category_path(pl.element()).drop_nulls()).list.unique(maintain_order=True)


# ----------------------------------------------------------------------- interactions


def validate_interactions(
    frame: pl.DataFrame,
    source: str | Path,
    catalog: pl.Series,
    config: IngestConfig,
    report: IngestReport,
    products_source: str | Path = "the products file",
    now: float | None = None,
) -> pl.DataFrame:
    """Check a raw interactions frame against ``catalog`` (product ids); return :data:`INTERACTION_SCHEMA`.

    ``now`` is the load time in epoch seconds (default: the current time): timestamps after it
    by more than ``config.future_timestamp_margin_s`` are refused, as are those before 1970.
    """
    frame, extra = _resolve_columns(
        frame,
        source,
        "interactions",
        required=("user_id", "product_id"),
        optional=("event", "timestamp", "value"),
    )
    report.rows_read["interactions"] = frame.height
    if extra:
        report.notes.append(f"{source}: ignored column(s) {', '.join(extra)} (not used for interactions).")
    _require_flat(frame, source, lists_allowed=(), ignored=extra)
    frame = frame.with_row_index(ROW, offset=1)
    _require_ids(frame, source, "user_id", "interaction")
    _require_ids(frame, source, "product_id", "interaction")
    _require_short_keys(frame, source, "user_id", "user id")
    _require_short_keys(frame, source, "product_id", "product id")

    if "event" in frame.columns:
        event: pl.Series | pl.Expr = _parse_events(frame, source, config)
    else:
        event = pl.lit(config.default_event)
        report.notes.append(f"{source}: no 'event' column; every interaction is a {config.default_event!r} (ingest.default_event).")
    if "timestamp" in frame.columns:
        timestamp: pl.Series | pl.Expr = _parse_timestamps(frame, source)
        _require_possible_times(frame, source, timestamp, config, time.time() if now is None else now)
    else:
        timestamp = (pl.col(ROW) - 1).cast(pl.Int64)
        report.notes.append(
            f"{source}: no 'timestamp' column; using the row order (0, 1, 2, ... as epoch seconds), "
            "so only the order of events is meaningful."
        )
    value: pl.Series | pl.Expr = (
        _parse_numbers(frame, source, "value", expected="a number such as 4.5")
        if "value" in frame.columns
        else pl.lit(None, dtype=pl.Float64)
    )
    weights = {event_type: config.weight_of(event_type) for event_type in EVENT_TYPES}
    clean = frame.select(
        ROW,
        _text(frame, "user_id"),
        _text(frame, "product_id"),
        event.alias("event"),
        timestamp.alias("timestamp"),
        value.alias("value"),
    ).with_columns(pl.col("event").replace_strict(weights, return_dtype=pl.Float64).alias("weight"))

    clean = _drop_unknown_products(clean, source, catalog, config, report, products_source)
    deduplicated = clean.filter(pl.struct("user_id", "product_id", "event", "timestamp").is_first_distinct())
    report.skipped["interactions_duplicate"] = clean.height - deduplicated.height
    return _conform(deduplicated, INTERACTION_SCHEMA)


def _parse_events(frame: pl.DataFrame, source: str | Path, config: IngestConfig) -> pl.Series:
    """Lower-cased event names; empty cells take ``config.default_event``."""
    event = frame.get_column("event").cast(pl.Utf8).str.strip_chars().str.to_lowercase()
    event = pl.select(pl.when(event != "").then(event)).to_series()
    bad = frame.filter(event.is_not_null() & ~event.is_in(EVENT_TYPES))
    if bad.height:
        raise _value_error(
            source,
            "event",
            bad,
            expected=f"one of {', '.join(EVENT_TYPES)} (any case)",
            fix=f"Rename the event, or leave the cell empty for the default {config.default_event!r}.",
        )
    return event.fill_null(config.default_event).alias("event")


def _parse_timestamps(frame: pl.DataFrame, source: str | Path) -> pl.Series:
    """Epoch seconds (Int64, UTC) from ISO-8601 text, epoch numbers or a datetime column."""
    dtype = frame.schema["timestamp"]
    if isinstance(dtype, pl.Datetime):
        parsed = frame.get_column("timestamp").dt.epoch("s")  # naive datetimes count as UTC
    elif dtype == pl.Date:
        parsed = frame.get_column("timestamp").cast(pl.Datetime("us")).dt.epoch("s")
    else:
        text = frame.get_column("timestamp").cast(pl.Utf8).str.strip_chars()
        _check_timestamp_text(frame, source, text)
        parsed = _epoch_seconds_from_text(text)

    bad = frame.filter(parsed.is_null())
    if bad.height:
        raise _value_error(
            source,
            "timestamp",
            bad,
            expected=(
                "ISO-8601 (2024-05-01T13:45:00Z, 2024-05-01 13:45:00+02:00, 2024-05-01; no zone means UTC) "
                "or epoch seconds (1714571100)"
            ),
            fix="Fix the value, or write all timestamps in one of these forms.",
        )
    return parsed.cast(pl.Int64).alias("timestamp")


def _epoch_seconds_from_text(text: pl.Series) -> pl.Series:
    """Epoch numbers first, then each ISO-8601 layout on the rows still unparsed (null where none fits).

    Trying a layout only on the remaining rows keeps a file in one layout at one parse.
    """
    number = text.cast(pl.Float64, strict=False)
    parsed = pl.select(pl.when(number.is_finite()).then(number.floor()).cast(pl.Int64)).to_series()
    iso = text.str.replace(r"[Zz]$", "+00:00").str.replace(r"^(\d{4}-\d{2}-\d{2}) ", "${1}T")
    layouts: list[tuple[str, bool]] = [(f, False) for f in _ISO_AWARE_FORMATS + _ISO_NAIVE_FORMATS]
    layouts.append((_ISO_DATE_FORMAT, True))
    for layout, is_date in layouts:
        missing = parsed.is_null().arg_true()
        if missing.len() == 0:
            break
        candidates = iso.gather(missing)
        if is_date:
            as_datetime = candidates.str.to_date(layout, strict=False).cast(pl.Datetime("us"))
        else:
            as_datetime = candidates.str.to_datetime(layout, strict=False, time_unit="us")
        parsed = parsed.scatter(missing, as_datetime.dt.epoch("s"))
    return parsed


def _check_timestamp_text(frame: pl.DataFrame, source: str | Path, text: pl.Series) -> None:
    """Refuse empty timestamps and epoch numbers that can only be milliseconds."""
    empty = frame.filter(text.is_null() | (text == ""))
    if empty.height:
        raise _value_error(
            source,
            "timestamp",
            empty,
            expected="a timestamp",
            fix="Fill in every timestamp, or remove the timestamp column to use the row order instead.",
        )
    number = text.cast(pl.Float64, strict=False)
    too_large = frame.filter(number.is_finite() & (number.abs() >= _MAX_EPOCH_SECONDS))
    if too_large.height:
        raise _value_error(
            source,
            "timestamp",
            too_large,
            expected="epoch seconds (about 1.7e9 for 2024)",
            fix="These look like milliseconds: divide the column by 1000.",
        )


def _require_possible_times(
    frame: pl.DataFrame, source: str | Path, timestamp: pl.Series, config: IngestConfig, now: float
) -> None:
    """Refuse times before 1970 (placeholders such as 1900-01-01) and times in the future.

    A future event would rank first in every recency-weighted history until that date comes.
    """
    latest = int(now) + config.future_timestamp_margin_s
    for bad_rows, expected, fix in (
        (
            timestamp < 0,
            "a time from 1970-01-01T00:00:00Z on (epoch seconds >= 0)",
            "Fill in the real time or delete the row; a date before 1970 is usually a placeholder.",
        ),
        (
            timestamp > latest,
            f"a time no later than {_iso(latest)}, the load time plus ingest.future_timestamp_margin_s "
            f"({config.future_timestamp_margin_s:,} s)",
            "A time in the future is usually a wrong clock or unit: fix the value, or raise "
            "ingest.future_timestamp_margin_s if the source's clock runs ahead.",
        ),
    ):
        bad = frame.with_columns(timestamp.alias("__parsed")).filter(bad_rows)
        if bad.height:
            first = bad.row(0, named=True)
            found = f"{_show(first['timestamp'])} ({_iso(first['__parsed'])})"
            raise _value_error(source, "timestamp", bad, expected=expected, fix=fix, found=found)


def _iso(epoch_seconds: int) -> str:
    """Epoch seconds as ISO-8601 UTC, for messages (also for years before 1970)."""
    try:
        return datetime.fromtimestamp(epoch_seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return f"epoch second {epoch_seconds}"


def _drop_unknown_products(
    frame: pl.DataFrame,
    source: str | Path,
    catalog: pl.Series,
    config: IngestConfig,
    report: IngestReport,
    products_source: str | Path,
) -> pl.DataFrame:
    """Apply ``config.unknown_products`` to interactions whose product is not in ``catalog``."""
    known = pl.col("product_id").is_in(catalog.implode())
    unknown = frame.filter(~known)
    report.skipped["interactions_unknown_product"] = unknown.height
    if not unknown.height:
        return frame
    examples = _examples(unknown, "product_id")
    if config.unknown_products == "reject":
        raise SchemaError(
            f"{source}: column 'product_id', data row {unknown[ROW][0]}: {unknown.height:,} interaction(s) name "
            f"products that are not in {products_source}, e.g. {examples}. Add those products to the products "
            "file, or set ingest.unknown_products: skip to drop such interactions."
        )
    if unknown.height == frame.height:
        raise SchemaError(
            f"{source}: none of the {frame.height:,} interactions names a product of {products_source} "
            f"(e.g. {examples}). Check that both files use the same product ids (spelling, case, spaces)."
        )
    report.notes.append(
        f"{source}: skipped {unknown.height:,} interaction(s) of {unknown['product_id'].n_unique():,} product(s) "
        f"not in {products_source}, e.g. {examples}."
    )
    return frame.filter(known)


# -------------------------------------------------------------------------- relations


def validate_relations(
    frame: pl.DataFrame, source: str | Path, catalog: pl.Series, report: IngestReport
) -> pl.DataFrame:
    """Check a raw relations frame; relation names become lower snake case; return :data:`RELATION_SCHEMA`."""
    frame, extra = _resolve_columns(
        frame, source, "relations", required=("product_id", "relation", "related_product_id"), optional=()
    )
    report.rows_read["relations"] = frame.height
    if extra:
        report.notes.append(f"{source}: ignored column(s) {', '.join(extra)} (not used for relations).")
    _require_flat(frame, source, lists_allowed=(), ignored=extra)
    frame = frame.with_row_index(ROW, offset=1)
    _require_ids(frame, source, "product_id", "relation")
    _require_ids(frame, source, "related_product_id", "relation")
    _require_ids(frame, source, "relation", "relation")
    _require_short_keys(frame, source, "product_id", "product id")
    _require_short_keys(frame, source, "related_product_id", "product id")

    # Few distinct names, many rows: normalise each name once.
    names = frame.get_column("relation").cast(pl.Utf8).unique()
    normalised = pl.select(normalise_relation_name(pl.lit(names))).to_series()
    relation = pl.col("relation").cast(pl.Utf8).replace_strict(names, normalised, return_dtype=pl.Utf8)
    frame = frame.with_columns(relation.alias("__relation"))
    unnamed = frame.filter(pl.col("__relation") == "")
    if unnamed.height:
        raise _value_error(
            source,
            "relation",
            unnamed,
            expected="a name with letters or digits, such as also_bought",
            fix="Name the relation.",
        )
    # The name becomes a relationship type: it must be one that reads back unambiguously.
    own_types = ", ".join(t.lower() for t in KGREC_RELATIONSHIP_TYPES)
    unusable = frame.filter(
        ~pl.col("__relation").str.contains(RELATION_NAME_PATTERN)
        | pl.col("__relation").str.to_uppercase().is_in(KGREC_RELATIONSHIP_TYPES)
    )
    if unusable.height:
        normalised_name = unusable["__relation"][0]
        raise _value_error(
            source,
            "relation",
            unusable,
            expected=(
                "a name that, once lower snake-cased, starts with a letter a-z and has only letters a-z, digits "
                f"and underscores (e.g. also_bought), and is none of kgrec's own relationship types ({own_types})"
            ),
            fix=f"Rename the relation (it reads as {normalised_name!r}), e.g. 2nd_choice → second_choice, "
            "ähnlich → similar, interacted → co_interacted.",
        )
    clean = frame.select(
        ROW,
        _text(frame, "product_id"),
        pl.col("__relation").alias("relation"),
        _text(frame, "related_product_id"),
    )
    inside = pl.col("product_id").is_in(catalog.implode()) & pl.col("related_product_id").is_in(catalog.implode())
    in_catalog = clean.filter(inside)
    report.skipped["relations_outside_catalog"] = clean.height - in_catalog.height
    # A product related to itself says nothing and would only add a self-loop to the graph.
    without_loops = in_catalog.filter(pl.col("product_id") != pl.col("related_product_id"))
    report.skipped["relations_self_loop"] = in_catalog.height - without_loops.height
    deduplicated = without_loops.filter(pl.struct(*RELATION_SCHEMA).is_first_distinct())
    report.skipped["relations_duplicate"] = without_loops.height - deduplicated.height
    return _conform(deduplicated, RELATION_SCHEMA)


def normalise_relation_name(name: pl.Expr) -> pl.Expr:
    """``"Also Bought"``, ``"alsoBought"``, ``"also-bought"`` → ``"also_bought"`` (empty when no letters/digits)."""
    return (
        name.str.replace_all(r"(\p{Ll}|\p{N})(\p{Lu})", "${1}_${2}")
        .str.to_lowercase()
        .str.replace_all(r"[\W_]+", "_")
        .str.strip_chars("_")
    )


# ------------------------------------------------------------------------------ users


def validate_users(frame: pl.DataFrame, source: str | Path, report: IngestReport) -> pl.DataFrame:
    """Check a raw users frame: ``user_id`` plus attribute columns, all ``Utf8``."""
    frame, attributes = _resolve_columns(frame, source, "users", required=("user_id",), optional=())
    report.rows_read["users"] = frame.height
    _require_attribute_names(source, attributes)
    _require_flat(frame, source, lists_allowed=tuple(attributes), ignored=[])
    frame = frame.with_row_index(ROW, offset=1)
    _require_ids(frame, source, "user_id", "user")
    _require_short_keys(frame, source, "user_id", "user id")
    columns = [ROW, _text(frame, "user_id")]
    for name in attributes:
        if isinstance(frame.schema[name], pl.List):
            columns.append(pl.col(name).cast(pl.List(pl.Utf8)).list.join("|"))
        else:
            columns.append(pl.col(name).cast(pl.Utf8))
    clean, collapsed = _collapse_duplicates(frame.select(columns), source, "user_id", "user")
    report.skipped["users_duplicate"] = collapsed
    return clean.drop(ROW)


def _require_attribute_names(source: str | Path, attributes: list[str]) -> None:
    """Attribute columns become User properties: a name must be a valid property key that kgrec does not set itself."""
    for name in attributes:
        if name == "" or "\x00" in name:
            position = "has no name" if name == "" else f"name {name!r} contains a NUL character, which Neo4j refuses,"
            raise SchemaError(
                f"{source}: an attribute column {position}; every users-file column becomes a property of the "
                "User nodes and needs a name. Name the column in the header, or delete it."
            )
        if name.lower() in RESERVED_USER_PROPERTIES:
            raise SchemaError(
                f"{source}: column {name!r} is reserved: kgrec sets the {name.lower()!r} property of User nodes "
                f"itself ({', '.join(RESERVED_USER_PROPERTIES)}), and an attribute of that name would overwrite it "
                "(for 'id': move the user and its events to another id). The user id is the 'user_id' column. "
                f"Rename the column (e.g. to 'external_{name.lower()}') or drop it."
            )


def _add_interaction_users(
    users: pl.DataFrame, interactions: pl.DataFrame, report: IngestReport, *, has_users_file: bool
) -> pl.DataFrame:
    """Users file rows first, then every other user of ``interactions`` (attributes null)."""
    seen = interactions.select("user_id").unique(maintain_order=True)
    missing = seen.join(users.select("user_id"), on="user_id", how="anti")
    if has_users_file and missing.height:
        report.notes.append(f"{missing.height:,} user(s) appear only in the interactions file; their attributes are empty.")
    return pl.concat([users, missing], how="diagonal")


# ---------------------------------------------------------------------------- helpers


def _resolve_columns(
    frame: pl.DataFrame,
    source: str | Path,
    kind: str,
    required: tuple[str, ...],
    optional: tuple[str, ...],
) -> tuple[pl.DataFrame, list[str]]:
    """Rename known columns to their canonical (lower-case) names; return the frame and the other columns."""
    known = required + optional
    renames: dict[str, str] = {}
    for name in frame.columns:
        canonical = name.lower()
        if canonical not in known:
            continue
        if canonical in renames.values():
            other = next(k for k, v in renames.items() if v == canonical)
            raise SchemaError(
                f"{source}: columns {other!r} and {name!r} both mean {canonical!r}. Keep one of them."
            )
        renames[name] = canonical
    frame = frame.rename(renames)
    missing = [column for column in required if column not in frame.columns]
    if missing:
        found = ", ".join(repr(c) for c in frame.columns)
        message = f"{source}: the {kind} file has no {missing[0]!r} column (required: {', '.join(required)}). Found columns: {found}."
        close = difflib.get_close_matches(missing[0], frame.columns, n=1, cutoff=0.6)
        if len(frame.columns) == 1 and any(sep in frame.columns[0] for sep in ";\t|,"):
            message += " The header looks like one column: check the separator (CSV uses ',', TSV a tab)."
        elif close:
            message += f" Did you mean {close[0]!r}? Rename it to {missing[0]!r}."
        else:
            message += f" Add a {missing[0]!r} column."
        raise SchemaError(message)
    extra = [c for c in frame.columns if c not in known]
    return frame, extra


def _require_ids(frame: pl.DataFrame, source: str | Path, column: str, noun: str) -> None:
    """An id (or other required cell) must be present and not blank."""
    value = pl.col(column).cast(pl.Utf8)
    bad = frame.filter(value.is_null() | (value.str.strip_chars() == ""))
    if bad.height:
        raise _value_error(
            source,
            column,
            bad,
            expected=f"a non-empty {column}",
            fix=f"Every {noun} needs one: fill it in or delete the row.",
        )


def _require_flat(frame: pl.DataFrame, source: str | Path, lists_allowed: tuple[str, ...], ignored: list[str]) -> None:
    """Refuse nested columns (Parquet structs, lists of lists) where kgrec stores text or numbers.

    Cast to text, a struct would be stored as "{1}", silently. Lists of scalars are fine
    in ``lists_allowed`` (category lists, user attributes joined with '|').
    """
    for name, dtype in frame.schema.items():
        if name in ignored:
            continue
        if isinstance(dtype, pl.List) and name in lists_allowed and not dtype.inner.is_nested():
            continue
        if dtype.is_nested() or dtype in (pl.Binary, pl.Object):
            expected = "text or numbers" + (", or a list of text" if name in lists_allowed else "")
            raise SchemaError(
                f"{source}: column {name!r} has type {dtype}; expected {expected}. Convert the column to text "
                "before ingest (e.g. one field of the struct, or the value as a JSON string), or drop it."
            )


def _require_short_keys(frame: pl.DataFrame, source: str | Path, column: str, noun: str) -> None:
    """A key of a unique constraint must fit Neo4j's index: at most :data:`MAX_KEY_BYTES` of UTF-8."""
    size = pl.col(column).cast(pl.Utf8).str.len_bytes()
    bad = frame.filter(size > MAX_KEY_BYTES)
    if bad.height:
        value = bad[column][0]
        raise _value_error(
            source,
            column,
            bad,
            expected=f"a {noun} of at most {MAX_KEY_BYTES:,} bytes in UTF-8 (Neo4j's index cannot hold longer keys)",
            fix=f"Shorten the {noun}, e.g. replace long values by a hash of them.",
            found=f"a value of {len(value.encode('utf-8')):,} bytes, {_show(value)}",
        )


def _require_short_category_paths(frame: pl.DataFrame, source: str | Path, columns: list[str]) -> None:
    """Every (normalised) category path is a key too; the longest one per row decides."""
    if not columns:
        return
    too_long = pl.element().filter(pl.element().str.len_bytes() > MAX_KEY_BYTES)
    bad = frame.with_columns(pl.col("categories").list.eval(too_long).list.first().alias("__path")).filter(
        pl.col("__path").is_not_null()
    )
    if bad.height:
        path = bad["__path"][0]
        raise _value_error(
            source,
            "/".join(columns),
            bad.with_columns(pl.col("__path").alias("/".join(columns))),
            expected=f"a category path of at most {MAX_KEY_BYTES:,} bytes in UTF-8 (Neo4j's index cannot hold longer keys)",
            fix="Shorten the category names or use fewer levels.",
            found=f"a path of {len(path.encode('utf-8')):,} bytes, {_show(path)}",
        )


def _parse_numbers(
    frame: pl.DataFrame, source: str | Path, column: str, expected: str, minimum: float | None = None
) -> pl.Series:
    """``column`` as Float64; empty cells are null, anything else must be a finite number."""
    raw = frame.get_column(column)
    if raw.dtype.is_numeric():
        number = raw.cast(pl.Float64)
        present = raw.is_not_null()
    else:
        text = raw.cast(pl.Utf8).str.strip_chars()
        present = text.is_not_null() & (text != "")
        number = pl.select(pl.when(present).then(text.cast(pl.Float64, strict=False))).to_series()
    invalid = present & (number.is_null() | ~number.is_finite())
    if minimum is not None:
        invalid = invalid | (number < minimum).fill_null(False)
    bad = frame.filter(invalid)
    if bad.height:
        at_least = f" (at least {minimum:g})" if minimum is not None else ""
        raise _value_error(
            source,
            column,
            bad,
            expected=expected + at_least,
            fix="Fix the value or leave the cell empty.",
        )
    return number.alias(column)


def _text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` as Utf8, kept literally; a null column when the file has none."""
    if column not in frame.columns:
        return pl.lit(None, dtype=pl.Utf8).alias(column)
    return pl.col(column).cast(pl.Utf8)


def _optional_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` kept literally, except that a blank cell is null (as an empty CSV cell is)."""
    text = _text(frame, column)
    return pl.when(text.str.strip_chars() != "").then(text).alias(column)


def _stripped_text(frame: pl.DataFrame, column: str) -> pl.Expr:
    """``column`` without surrounding whitespace; blank → null (for names that become graph nodes)."""
    text = _text(frame, column).str.strip_chars()
    return pl.when(text != "").then(text).alias(column)


def _collapse_duplicates(frame: pl.DataFrame, source: str | Path, key: str, noun: str) -> tuple[pl.DataFrame, int]:
    """Drop identical repeats of a ``key``; a repeat with different fields is an error."""
    fields = [c for c in frame.columns if c != ROW]
    unique = frame.unique(subset=fields, keep="first", maintain_order=True)
    conflicting = unique.filter(pl.col(key).is_duplicated())
    if conflicting.height:
        first_id = conflicting[key][0]
        first, second = conflicting.filter(pl.col(key) == first_id).head(2).iter_rows(named=True)
        column = next(c for c in fields if first[c] != second[c])
        others = conflicting[key].n_unique() - 1
        raise SchemaError(
            f"{source}: {key} {_show(first_id)} appears in data rows {first[ROW]} and {second[ROW]} with different "
            f"{column!r}: {_show(first[column])} vs {_show(second[column])}. Keep one row per {noun} "
            "(identical repeats are fine) or give them different ids."
            + (f" {others:,} other {key}(s) conflict the same way." if others else "")
        )
    return unique, frame.height - unique.height


def _conform(frame: pl.DataFrame, schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """Exactly ``schema``'s columns, in order, with its dtypes."""
    return frame.select([pl.col(name).cast(dtype) for name, dtype in schema.items()])


def _value_error(
    source: str | Path, column: str, bad: pl.DataFrame, expected: str, fix: str, found: str | None = None
) -> SchemaError:
    """One message for all offending rows of ``column``: the first in full, then a few row numbers.

    ``found`` describes the first value when its plain display would not say enough.
    """
    first = bad.row(0, named=True)
    message = (
        f"{source}: column {column!r}, data row {first[ROW]}: found {found or _show(first[column])}; "
        f"expected {expected}. {fix}"
    )
    if bad.height > 1:
        more = ", ".join(str(r) for r in bad[ROW].slice(1, MAX_EXAMPLES).to_list())
        message += f" ({bad.height - 1:,} more row(s) like this: {more}{', ...' if bad.height - 1 > MAX_EXAMPLES else ''})"
    return SchemaError(message)


def _examples(frame: pl.DataFrame, column: str) -> str:
    """A few distinct values of ``column`` with their first row, for messages."""
    firsts = frame.group_by(column, maintain_order=True).agg(pl.col(ROW).first()).head(MAX_EXAMPLES)
    return ", ".join(f"{_show(value)} (row {row})" for value, row in firsts.iter_rows())


def _show(value: object, limit: int = 80) -> str:
    """A value as a message shows it: quoted, shortened, 'an empty cell' for null."""
    if value is None:
        return "an empty cell"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
