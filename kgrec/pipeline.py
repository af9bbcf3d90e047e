"""kgrec's jobs as plain Python functions: what the CLI calls, and what code can call.

Each function takes the resolved :class:`~kgrec.config.KgrecConfig` (or its own
section) and returns a result object; printing is the caller's business. Progress
bars are drawn when ``progress=True``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kgrec.config import KgrecConfig
from kgrec.errors import ConfigError
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


# --- train / evaluate -----------------------------------------------------------------------

DEFAULT_RUNS_DIR = Path("runs")
MODEL_SNAPSHOT_DIR = "snapshot"


@dataclass
class TrainRun:
    model_dir: Path
    metrics: dict
    best_epoch: int
    seconds: float
    embeddings_written: int | None  # nodes that got embeddings in Neo4j; None when skipped
    note: str = ""


def train(
    config: KgrecConfig,
    graph_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
    progress: bool = False,
    write_embeddings: bool | None = None,
    echo=print,
) -> TrainRun:
    """Train kgrec on a snapshot (``graph_dir``) or on a fresh export of Neo4j.

    The protocol is the evaluator's: epochs are chosen by early stopping on the valid
    part (each user's second-to-last interaction), then the model is refit on train +
    valid for that many epochs and scored on test (each user's last interaction). The
    model directory holds the refit model, its metrics, curves and the snapshot it was
    trained on; ``<runs_dir>/models/latest`` points at it.

    Embeddings go back into Neo4j (plus the ``product_embedding`` vector index) when
    ``write_embeddings`` is True, or by default when the graph came from Neo4j.
    """
    import time

    from kgrec.snapshot.snapshot import load_snapshot
    from kgrec.train.artifacts import save_model_dir
    from kgrec.train.evaluate import evaluate as evaluate_scores
    from kgrec.train.evaluate import primary_category_index
    from kgrec.train.loop import train_and_refit
    from kgrec.train.split import leave_last_out

    started = time.perf_counter()
    runs = Path(runs_dir)
    if graph_dir is None:
        snapshot = export_graph(config.store, runs / "snapshots" / time.strftime("%Y%m%d-%H%M%S"))
        echo(f"Exported the graph to {snapshot.path} (hash {snapshot.content_hash[:12]}).")
        write_embeddings = True if write_embeddings is None else write_embeddings
    else:
        snapshot = load_snapshot(graph_dir)
    split = leave_last_out(snapshot)
    selection, final = train_and_refit(
        snapshot, split, config.model, config.train, config.features, seed=config.seed, progress=progress
    )
    merged = split.merge_valid_into_train()
    categories = primary_category_index(snapshot)
    metrics = {
        "protocol": "temporal leave-one-out; epochs chosen on valid NDCG@10, refit on train+valid, scored on test",
        "best_epoch": selection.best_epoch,
        "valid": selection.valid_metrics,
        "test": evaluate_scores(final.score, merged, "test", product_category=categories),
        "split": {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)},
    }
    model_dir = Path(out_dir) if out_dir is not None else runs / "models" / time.strftime("%Y%m%d-%H%M%S")
    model_dir = save_model_dir(
        final, model_dir, config, config.seed, snapshot.content_hash, metrics, snapshot=snapshot
    )
    written = None
    if write_embeddings:
        written = import_embeddings(config, model_dir, progress=progress)
    return TrainRun(
        model_dir=model_dir,
        metrics=metrics,
        best_epoch=selection.best_epoch,
        seconds=time.perf_counter() - started,
        embeddings_written=written,
    )


def import_embeddings(config: KgrecConfig, model_dir: str | Path = DEFAULT_RUNS_DIR / "models", progress: bool = False) -> int:
    """Write a model's user and product embeddings into Neo4j and (re)create the vector index."""
    from kgrec.store.graph_io import ensure_vector_index, write_embeddings
    from kgrec.train.artifacts import load_model_dir

    model = load_model_dir(model_dir)
    model_id = model.path.name
    total = len(model.user_ids) + len(model.product_ids)
    with GraphStore.connect(config.store) as store:
        with _progress_bar("Writing embeddings", total, progress) as advance:
            n = write_embeddings(store, "Product", model.product_ids.ids, model.product_embedding, model_id, progress=advance)
            n += write_embeddings(store, "User", model.user_ids.ids, model.user_embedding, model_id, progress=advance)
        ensure_vector_index(store, int(model.product_embedding.shape[1]))
    return n


@dataclass
class EvaluationTable:
    part: str
    rows: dict[str, dict[str, float]]  # model name -> metrics
    model_dir: Path
    json_path: Path | None = None


def evaluate(
    config: KgrecConfig,
    model_dir: str | Path = DEFAULT_RUNS_DIR / "models",
    baselines: tuple[str, ...] = ("pop", "itemknn", "bpr", "lightgcn"),
    part: str = "test",
    json_path: str | Path | None = None,
) -> EvaluationTable:
    """kgrec and the baselines on the same split with the same evaluator, as one table.

    ``part="test"``: every model is fit on train + valid (trainable baselines with the
    epoch count chosen on valid, as kgrec was) and scored on each user's last
    interaction. ``part="valid"``: fit on train, scored on the second-to-last (kgrec's
    valid figure is the one from its epoch selection run).
    """
    from kgrec.snapshot.snapshot import load_snapshot
    from kgrec.train.artifacts import load_model_dir
    from kgrec.train.baselines import fit_and_evaluate, make_baseline
    from kgrec.train.evaluate import evaluate as evaluate_scores
    from kgrec.train.evaluate import primary_category_index
    from kgrec.train.loop import resolve_device
    from kgrec.train.split import leave_last_out

    if part not in ("valid", "test"):
        raise ConfigError(f"--split must be 'valid' or 'test', not {part!r}.")
    model = load_model_dir(model_dir)
    snapshot = load_snapshot(model.path / MODEL_SNAPSHOT_DIR)
    split = leave_last_out(snapshot)
    categories = primary_category_index(snapshot)
    device = str(resolve_device(config.train.device))
    rows: dict[str, dict[str, float]] = {}
    if part == "test":
        rows["kgrec"] = evaluate_scores(model.score, split.merge_valid_into_train(), "test", product_category=categories)
    else:
        rows["kgrec"] = dict(model.metrics.get("valid", {}))
    for name in baselines:
        if part == "test":
            rows[name] = fit_and_evaluate(name, split, snapshot, device, product_category=categories).test
        else:
            baseline = make_baseline(name).fit(split, snapshot, device)
            rows[name] = evaluate_scores(baseline.score, split, "valid", product_category=categories)
    out = Path(json_path) if json_path is not None else model.path / f"evaluation-{part}.json"
    out.write_text(json.dumps({"part": part, "model_dir": str(model.path), "rows": rows}, indent=2), encoding="utf-8")
    return EvaluationTable(part=part, rows=rows, model_dir=model.path, json_path=out)


# --- real-time events ----------------------------------------------------------------------


def add_event(
    config: KgrecConfig,
    user_id: str,
    product_id: str,
    event: str | None = None,
    timestamp: str | None = None,
    value: float | None = None,
) -> dict:
    """Record one interaction in Neo4j now; the user's next recommendations use it.

    The row goes through the same validation as a file row (event type, timestamp,
    ids); the product must already be in the graph, the user is created if new.
    """
    import time

    import polars as pl

    from kgrec.errors import UnknownProductError
    from kgrec.ingest.tables import GraphTables
    from kgrec.ingest.validate import validate_interactions
    from kgrec.store.graph_io import write_interaction_rows

    raw = pl.DataFrame(
        {
            "user_id": [user_id],
            "product_id": [product_id],
            "event": [event or config.ingest.default_event],
            "timestamp": [timestamp if timestamp is not None else str(int(time.time()))],
            "value": [None if value is None else str(value)],
        },
        schema={name: pl.Utf8 for name in ("user_id", "product_id", "event", "timestamp", "value")},
    )
    with GraphStore.connect(config.store) as store:
        if not store.read("MATCH (p:Product {id: $id}) RETURN p.id AS id", {"id": product_id}):
            raise UnknownProductError(
                f"Product {product_id!r} is not in the graph at {store.uri}. Add it with `kgrec build-graph --products …` first."
            )
        rows = validate_interactions(raw, "add-event", pl.Series([product_id]), config.ingest, IngestReport())
        write_interaction_rows(store, GraphTables(products=pl.DataFrame(), interactions=rows), config.store.batch_size)
    return rows.to_dicts()[0]
