"""On-disk graph snapshots and the id maps they imply."""

from kgrec.snapshot.idmap import IdMap
from kgrec.snapshot.snapshot import (
    FORMAT,
    VERSION,
    Snapshot,
    canonical_tables,
    content_hash,
    load_snapshot,
    snapshot_from_tables,
    write_snapshot,
    write_snapshot_batches,
)

__all__ = [
    "FORMAT",
    "VERSION",
    "IdMap",
    "Snapshot",
    "canonical_tables",
    "content_hash",
    "load_snapshot",
    "snapshot_from_tables",
    "write_snapshot",
    "write_snapshot_batches",
]
