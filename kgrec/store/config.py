"""Settings of the graph store: which Neo4j, and how the managed local one runs."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class StoreConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    port: int = Field(7687, ge=1, le=65535, description="Bolt port of the managed local server.")
    heap_mb: int = Field(1024, ge=256, description="JVM heap of the managed local server.")
    pagecache_mb: int = Field(512, ge=64, description="Page cache of the managed local server.")
    batch_size: int = Field(10_000, ge=1, description="Rows per UNWIND transaction; nodes per page read by export-graph.")
    database: str | None = Field(None, description="Database name on a remote server (None: its default).")
