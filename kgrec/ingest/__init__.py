"""Ingest: read a shop's files and validate them into clean :class:`GraphTables`.

``load_tables(products, interactions, relations=None, users=None, config=None)`` is the
entry point; ``write_sample_shop`` writes a synthetic shop in the same input format.
"""

from kgrec.ingest.config import IngestConfig
from kgrec.ingest.readers import SUPPORTED_SUFFIXES, read_table
from kgrec.ingest.synthetic import write_sample_shop
from kgrec.ingest.tables import EVENT_TYPES, GraphTables, IngestReport
from kgrec.ingest.validate import load_tables

__all__ = [
    "EVENT_TYPES",
    "GraphTables",
    "IngestConfig",
    "IngestReport",
    "SUPPORTED_SUFFIXES",
    "load_tables",
    "read_table",
    "write_sample_shop",
]
