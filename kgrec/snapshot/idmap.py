"""The one conversion between external ids (``*_id``) and tensor rows (``*_index``).

An :class:`IdMap` holds an ordered, duplicate-free list of string ids; an id's index
is its position in that list. Snapshots build one map per node type from their
sorted tables (see :mod:`kgrec.snapshot.snapshot`), so an index means the same thing
in every tensor, model and table of one snapshot.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import polars as pl

from kgrec.errors import KgrecError, SchemaError, UnknownProductError, UnknownUserError

if TYPE_CHECKING:
    import torch

IdKind = Literal["user", "product", "brand", "category", "id"]
SMALL_LOOKUP = 1000
"""Id lists up to this long are looked up in a dict, longer ones by a polars join."""

_UNKNOWN_ERRORS: dict[str, type[KgrecError]] = {
    "user": UnknownUserError,
    "product": UnknownProductError,
}
_UNKNOWN_HINTS: dict[str, str] = {
    "user": "New users need at least one interaction: run kgrec build-graph with their events, then export again.",
    "product": "Add the product to the catalog, run kgrec build-graph, then export again.",
}


class IdMap:
    """Ordered external ids ↔ contiguous indices ``0 .. len(self) - 1``.

    Args:
        ids: the external ids in index order; must be unique and non-null.
        kind: what the ids name; picks the error raised for an unknown id
            (:class:`~kgrec.errors.UnknownUserError` for ``"user"``,
            :class:`~kgrec.errors.UnknownProductError` for ``"product"``).

    Example::

        products = IdMap(["p1", "p2", "p3"], kind="product")
        products.index("p2")            # 1
        products.indices(["p3", "p1"])  # array([2, 0])
        products.id(2)                  # "p3"
    """

    def __init__(self, ids: Sequence[str] | pl.Series, kind: IdKind = "id") -> None:
        series = ids.rename("id") if isinstance(ids, pl.Series) else pl.Series("id", list(ids), dtype=pl.Utf8)
        series = series.cast(pl.Utf8)
        if series.null_count():
            raise SchemaError(f"{kind} ids contain {series.null_count()} null(s); every {kind} needs an id.")
        if series.n_unique() != series.len():
            dupes = series.filter(series.is_duplicated()).unique(maintain_order=True).head(5).to_list()
            raise SchemaError(f"{kind} ids must be unique; found duplicates {dupes}. Deduplicate them at ingest.")
        self.kind: IdKind = kind
        self._ids = series
        self._lookup = pl.DataFrame(
            {"id": series, "index": pl.int_range(series.len(), dtype=pl.Int64, eager=True)}
        )

    def __len__(self) -> int:
        return self._ids.len()

    def __contains__(self, id: object) -> bool:
        return isinstance(id, str) and self.get(id) is not None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IdMap) and self._ids.equals(other._ids)

    def __repr__(self) -> str:
        return f"IdMap(kind={self.kind!r}, len={len(self)})"

    @property
    def ids(self) -> pl.Series:
        """The ids in index order (a polars Series of Utf8; ``ids[i]`` is the id of index ``i``)."""
        return self._ids

    def get(self, id: str) -> int | None:
        """The index of ``id``, or ``None`` when it is not in the map."""
        return self._dict.get(id) if isinstance(id, str) else None

    @cached_property
    def _dict(self) -> dict[str, int]:
        # Built on first use: a few ids at a time (one request's history) are looked up
        # faster in a dict than by a polars join over the whole map.
        return {id: index for index, id in enumerate(self._ids.to_list())}

    def index(self, id: str) -> int:
        """The index of ``id``; raises the map's "unknown id" error (a :class:`KgrecError`) if absent."""
        found = self.get(id)
        if found is None:
            raise self._unknown([id])
        return found

    def indices(self, ids: Sequence[str] | pl.Series, strict: bool = True) -> np.ndarray:
        """Indices of many ids at once (a polars join; a dict for a short list of ids).

        Args:
            ids: ``[n]`` external ids.
            strict: when True an unknown id raises; when False it maps to ``-1``.

        Returns:
            ``int64`` array ``[n]``, in the order of ``ids``.
        """
        if not isinstance(ids, pl.Series) and len(ids) <= SMALL_LOOKUP:
            found_small = [self._dict.get(id, -1) if isinstance(id, str) else -1 for id in ids]
            if strict and -1 in found_small:
                raise self._unknown(list(dict.fromkeys(id for id, i in zip(ids, found_small) if i < 0)))
            return np.asarray(found_small, dtype=np.int64)
        series = ids if isinstance(ids, pl.Series) else pl.Series(list(ids), dtype=pl.Utf8)
        found = series.cast(pl.Utf8).replace_strict(
            self._lookup.get_column("id"),
            self._lookup.get_column("index"),
            default=None,
            return_dtype=pl.Int64,
        )
        if found.null_count():
            if strict:
                raise self._unknown(series.filter(found.is_null()).unique(maintain_order=True).to_list())
            found = found.fill_null(-1)
        return found.to_numpy(writable=True).astype(np.int64, copy=False)

    def id(self, index: int) -> str:
        """The external id of ``index``; raises the map's "unknown id" error when out of range."""
        if not 0 <= index < len(self):
            raise self._unknown([f"index {index}"], detail=f"valid indices are 0..{len(self) - 1}")
        return str(self._ids[index])

    def ids_at(self, index: np.ndarray | torch.Tensor | Sequence[int]) -> list[str]:
        """External ids of ``[n]`` indices, in order (e.g. a top-k row of product indices)."""
        # A tensor exists only once torch is imported; not importing it here keeps half a GB
        # and seconds out of the processes that only read and write snapshots (export-graph).
        torch = sys.modules.get("torch")
        is_tensor = torch is not None and isinstance(index, torch.Tensor)
        array = index.cpu().numpy() if is_tensor else np.asarray(index, dtype=np.int64)
        if array.size and (array.min() < 0 or array.max() >= len(self)):
            bad = array[(array < 0) | (array >= len(self))][:5].tolist()
            raise self._unknown([f"index {i}" for i in bad], detail=f"valid indices are 0..{len(self) - 1}")
        return self._ids.gather(array.reshape(-1)).to_list()

    def _unknown(self, missing: list[str], detail: str | None = None) -> KgrecError:
        error = _UNKNOWN_ERRORS.get(self.kind, KgrecError)
        shown = ", ".join(repr(m) for m in missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        noun = f"{self.kind}s" if len(missing) > 1 else self.kind
        message = f"Unknown {noun} {shown}: not among the {len(self):,} {self.kind}s of this snapshot"
        message += f" ({detail})." if detail else "."
        hint = _UNKNOWN_HINTS.get(self.kind)
        return error(f"{message} {hint}" if hint else message)


ID_MAP_KINDS: tuple[IdKind, ...] = ("user", "product", "brand", "category")


def write_id_maps(maps: dict[str, IdMap], folder: Path) -> None:
    """One ``<kind>.parquet`` per map in ``folder``: a single column ``id``, row = index."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, id_map in maps.items():
        pl.DataFrame({"id": id_map.ids}).write_parquet(folder / f"{kind}.parquet")


def read_id_maps(folder: Path, kinds: Sequence[IdKind] = ID_MAP_KINDS) -> dict[str, IdMap]:
    """The maps :func:`write_id_maps` wrote."""
    return {kind: IdMap(pl.read_parquet(folder / f"{kind}.parquet").get_column("id"), kind=kind) for kind in kinds}
