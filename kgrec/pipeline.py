"""kgrec's jobs as plain Python functions: what the CLI calls, and what code can call.

Each function takes the resolved :class:`~kgrec.config.KgrecConfig` (or its own
section) and returns a result object; printing is the caller's business. Progress
bars are drawn when ``progress=True``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kgrec.config import KgrecConfig
from kgrec.ingest.tables import GraphTables, IngestReport
from kgrec.ingest.validate import load_tables
from kgrec.store import server
from kgrec.store.config import StoreConfig
from kgrec.store.connection import GraphStore, resolve_uri
from kgrec.store.graph_io import WriteSummary, count_graph, read_graph, write_graph, write_steps

if TYPE_CHECKING:
    from kgrec.snapshot.snapshot import Snapshot

# Stages past the graph store (snapshot, features, models, train) pull in torch, which
# takes seconds to import; they are imported inside the functions that need them so
# that `kgrec build-graph` and `kgrec db …` start fast.


# --- the managed local server ---------------------------------------------------


@dataclass
class DatabaseStatus:
    uri: str
    managed: bool
    running: bool
    state: server.ServerState | None = None
    counts: dict[str, int] | None = None


def start_database(config: StoreConfig, echo=print) -> server.ServerState:
    """Fetch (first use), start and wait for the managed local Neo4j."""
    return server.start_server(config.port, config.heap_mb, config.pagecache_mb, echo=echo)


def stop_database(config: StoreConfig) -> server.ServerState | None:
    """Stop the managed local Neo4j cleanly; None when none was running."""
    return server.stop_server(config.port)


def database_status(config: StoreConfig) -> DatabaseStatus:
    """What runs where: the managed server's state, or whether ``NEO4J_URI`` answers."""
    uri, _, managed = resolve_uri(config)
    state = server.read_state(config.port) if managed else None
    status = DatabaseStatus(uri=uri, managed=managed, running=state is not None, state=state)
    if managed and state is None:
        return status
    try:
        with GraphStore.connect(config) as store:
            status.running = True
            status.counts = count_graph(store)
    except Exception:  # noqa: BLE001 - status reports, it does not fail
        status.running = False
    return status


# --- build-graph -------------------------------------------------------------------


@dataclass
class BuildResult:
    report: IngestReport
    summary: WriteSummary
    uri: str


def build_graph(
    config: KgrecConfig,
    products: str | Path,
    interactions: str | Path,
    relations: str | Path | None = None,
    users: str | Path | None = None,
    progress: bool = False,
) -> BuildResult:
    """Validate the shop's files, then write them into Neo4j in batched transactions.

    Nothing is written unless every file validates, so a rejected input leaves the
    database as it was. Loading the same files again changes no counts.
    """
    tables, report = load_tables(products, interactions, relations, users, config=config.ingest)
    with GraphStore.connect(config.store) as store:
        with _progress_bar("Writing graph", sum(write_steps(tables).values()), progress) as advance:
            summary = write_graph(store, tables, config.store.batch_size, progress=advance)
        return BuildResult(report=report, summary=summary, uri=store.uri)


def read_graph_tables(config: StoreConfig) -> GraphTables:
    """The whole graph in Neo4j, read back as tables."""
    with GraphStore.connect(config) as store:
        return read_graph(store)


def export_graph(config: StoreConfig, out_dir: str | Path) -> Snapshot:
    """Write the graph in Neo4j to a versioned snapshot directory (Parquet + manifest)."""
    from kgrec.snapshot.snapshot import write_snapshot

    tables = read_graph_tables(config)
    return write_snapshot(tables, out_dir)


@contextmanager
def _progress_bar(description: str, total: int, enabled: bool) -> Iterator:
    """Yields ``advance(step_name, n)``; draws a rich progress bar when enabled."""
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[step]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(description, total=total, step="")

        def advance(step: str, n: int) -> None:
            bar.update(task, advance=n, step=step)

        yield advance
