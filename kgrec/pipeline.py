"""kgrec's jobs as plain Python functions: what the CLI calls, and what code can call.

Each function takes the resolved :class:`~kgrec.config.KgrecConfig` (or its own
section) and returns a result object; printing is the caller's business. The ranking
jobs (recommend, explain, search) take the model from :func:`load_model` instead, which
carries the config it ranks with: the command's, over the model's own rank settings.
Progress bars are drawn when ``progress=True``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from kgrec.config import KgrecConfig
from kgrec.errors import ConfigError
from kgrec.ingest.tables import IngestReport
from kgrec.ingest.validate import load_tables
from kgrec.store import server
from kgrec.store.config import StoreConfig
from kgrec.store.connection import GraphStore, resolve_uri
from kgrec.store.graph_io import WriteSummary, count_graph, read_table_batches, write_graph, write_steps

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


def export_graph(config: StoreConfig, out_dir: str | Path) -> Snapshot:
    """Write the graph in Neo4j to a versioned snapshot directory (Parquet + manifest).

    The graph is read ``config.batch_size`` nodes at a time and each page is written as it
    comes, so memory holds one page and the id maps, however large the graph. The returned
    snapshot reads its tables from the files when they are first used.
    """
    from kgrec.snapshot.snapshot import TABLE_NAMES, write_snapshot_batches

    with GraphStore.connect(config) as store:
        batches = {name: read_table_batches(store, name, config.batch_size) for name in TABLE_NAMES}
        return write_snapshot_batches(batches, out_dir)


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
DEPLOYED_ALL = "all interactions (train + valid + test)"
DEPLOYED_TRAIN_VALID = "train + valid (--no-final-fit)"


@dataclass
class TrainRun:
    model_dir: Path
    metrics: dict
    best_epoch: int
    seconds: float
    embeddings_written: int | None  # nodes that got embeddings in Neo4j; None when skipped
    note: str = ""
    written: bool = True  # False on torchrun's other ranks: rank 0 writes the model directory


def train(
    config: KgrecConfig,
    graph_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    runs_dir: str | Path = DEFAULT_RUNS_DIR,
    progress: bool = False,
    write_embeddings: bool | None = None,
    final_fit: bool = True,
    echo=print,
) -> TrainRun:
    """Train kgrec on a snapshot (``graph_dir``) or on a fresh export of Neo4j.

    The protocol, the same as every baseline's (:func:`kgrec.train.baselines.fit_and_evaluate`):

    1. epochs are chosen by early stopping on valid (each user's second-to-last pair);
    2. the model is refit on train + valid for that many epochs and scored on test (each
       user's last pair): ``metrics.json``'s ``test``;
    3. then it is fitted once more on everything (train + valid + test), the same epoch
       count, and that model is the one written to the model directory, the one
       ``recommend`` and ``serve`` use. ``final_fit=False`` (``--no-final-fit``) deploys
       step 2's model instead.

    ``metrics.json`` says which fit each figure comes from. ``<runs_dir>/models/latest``
    points at the model directory. Embeddings go back into Neo4j (plus the
    ``product_embedding`` vector index) when ``write_embeddings`` is True, or by default
    when the graph came from Neo4j.
    """

    from kgrec.snapshot.snapshot import load_snapshot
    from kgrec.train.artifacts import KgrecRecommender, check_model_out, save_model_dir
    from kgrec.train.baselines import fit_and_evaluate
    from kgrec.train.evaluate import primary_category_index
    from kgrec.train.loop import leave_torchrun_group, torchrun_process
    from kgrec.train.split import leave_last_out

    started = time.perf_counter()
    launched = torchrun_process()
    if launched is not None and (graph_dir is None or out_dir is None):
        raise ConfigError(
            f"kgrec train was started by torchrun (process {launched[0]} of {launched[1]}): every process must "
            "train from the same snapshot and agree on the model directory. Export once with `kgrec export-graph "
            "--out snapshots/shop`, make that folder readable on every host, and pass `--graph snapshots/shop "
            "--out runs/models/NAME` (docs/SCALING.md)."
        )
    lead = launched is None or launched[0] == 0  # only rank 0 reports and writes
    if not lead:
        echo, progress, write_embeddings = (lambda *args, **kwargs: None), False, False
    runs = Path(runs_dir)
    model_dir = Path(out_dir) if out_dir is not None else runs / "models" / time.strftime("%Y%m%d-%H%M%S")
    check_model_out(model_dir)  # before hours of training, not after
    if graph_dir is None:
        snapshot = export_graph(config.store, runs / "snapshots" / time.strftime("%Y%m%d-%H%M%S"))
        echo(f"Exported the graph to {snapshot.path} (hash {snapshot.content_hash[:12]}).")
        write_embeddings = True if write_embeddings is None else write_embeddings
    else:
        snapshot = load_snapshot(graph_dir)
    split = leave_last_out(snapshot)
    categories = primary_category_index(snapshot)

    def make(epochs: int | None) -> KgrecRecommender:
        return KgrecRecommender(config, seed=config.seed, epochs=epochs, progress=progress)

    reported = fit_and_evaluate(make, split, snapshot, product_category=categories, max_users=config.train.eval_users)
    refit = reported.model
    assert isinstance(refit, KgrecRecommender)
    best_epoch = reported.epochs or refit.best_epoch
    merged = split.merge_valid_into_train()
    if final_fit:
        echo(f"Fitting the deployed model on all {len(split.train) + len(split.valid) + len(split.test):,} pairs "
             f"({best_epoch} epochs).")
        deployed = make(best_epoch).fit(merged.merge_test_into_train(), snapshot)
    else:
        deployed = refit
    deployed.history = {**deployed.history, "selection_valid_ndcg": reported.valid_ndcg}
    metrics = {
        "protocol": "temporal leave-one-out; epochs chosen on valid NDCG@10, refit on train+valid, scored on test",
        "best_epoch": best_epoch,
        "valid": {"fit": "train (epoch selection)", **reported.valid_metrics},
        "test": {"fit": "train + valid", **reported.test},
        "deployed": {"fit": DEPLOYED_ALL if final_fit else DEPLOYED_TRAIN_VALID, "epochs": best_epoch},
        "split": {"train": len(split.train), "valid": len(split.valid), "test": len(split.test)},
    }
    if not lead:
        leave_torchrun_group()  # returns once rank 0 has written the model
        return TrainRun(model_dir, metrics, best_epoch, time.perf_counter() - started, None, written=False)
    model_dir = save_model_dir(deployed, model_dir, metrics, snapshot=snapshot)
    written = None
    if write_embeddings:
        written = import_embeddings(config, model_dir, progress=progress)
    if launched is not None:
        leave_torchrun_group()
    return TrainRun(
        model_dir=model_dir,
        metrics=metrics,
        best_epoch=best_epoch,
        seconds=time.perf_counter() - started,
        embeddings_written=written,
    )


def import_embeddings(config: KgrecConfig, model_dir: str | Path = DEFAULT_RUNS_DIR / "models", progress: bool = False) -> int:
    """Write a model's user and product embeddings into Neo4j and (re)create the vector index.

    The model directory is read and checked whole before the first write, so a missing or
    damaged model writes nothing. The writes go in batches of ``store.batch_size`` nodes; an
    import stopped part way (a lost connection) leaves some nodes with the new vectors and is
    completed by running it again.
    """
    from kgrec.store.graph_io import ensure_vector_index, write_embeddings
    from kgrec.train.artifacts import load_model_dir

    model = load_model_dir(model_dir)
    assert model.path is not None and model.user_ids is not None and model.product_ids is not None
    model_id = model.path.name
    total = len(model.user_ids) + len(model.product_ids)
    with GraphStore.connect(config.store) as store:
        with _progress_bar("Writing embeddings", total, progress) as advance:
            batch_size = config.store.batch_size
            n = write_embeddings(store, "Product", model.product_ids.ids, model.product_embedding, model_id, batch_size, advance)
            n += write_embeddings(store, "User", model.user_ids.ids, model.user_embedding, model_id, batch_size, advance)
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

    ``part="test"``: every model is fitted on train + valid (trainable ones for the
    epoch count chosen on valid) and scored on each user's last interaction. kgrec is
    refitted that way with the model's settings and epoch count, because the deployed
    model has seen the test pairs (``metrics.json``'s ``deployed.fit``); a model deployed
    with ``--no-final-fit`` is scored as it is. ``part="valid"``: every model fitted on
    train, scored on the second-to-last.
    """
    from kgrec.snapshot.snapshot import load_snapshot
    from kgrec.train.artifacts import KgrecRecommender, load_model_dir
    from kgrec.train.baselines import fit_and_evaluate, make_baseline
    from kgrec.train.evaluate import evaluate as evaluate_model
    from kgrec.train.evaluate import primary_category_index
    from kgrec.train.loop import resolve_device
    from kgrec.train.split import leave_last_out

    if part not in ("valid", "test"):
        raise ConfigError(f"--split must be 'valid' or 'test', not {part!r}.")
    model = load_model_dir(model_dir)
    assert model.path is not None
    model.rank_with(config)  # the command's rank settings over the model's own, as when it ranks
    snapshot = load_snapshot(model.path / MODEL_SNAPSHOT_DIR)
    split = leave_last_out(snapshot)
    categories = primary_category_index(snapshot)
    device = str(resolve_device(config.train.device))
    epochs = int(model.metrics.get("best_epoch", 0)) or None
    rows: dict[str, dict[str, float]] = {}
    deployed_on_all = model.metrics.get("deployed", {}).get("fit", DEPLOYED_ALL) == DEPLOYED_ALL
    if part == "test":
        if deployed_on_all:
            kgrec = KgrecRecommender(model.config, seed=model.seed, epochs=epochs).fit(split.merge_valid_into_train(), snapshot, device)
        else:
            kgrec = model
        rows["kgrec"] = evaluate_model(kgrec, split.merge_valid_into_train(), "test", product_category=categories)
    else:
        kgrec = KgrecRecommender(model.config, seed=model.seed).fit(split, snapshot, device)
        rows["kgrec"] = evaluate_model(kgrec, split, "valid", product_category=categories)
    for name in baselines:
        if part == "test":
            rows[name] = fit_and_evaluate(name, split, snapshot, device, product_category=categories).test
        else:
            baseline = make_baseline(name).fit(split, snapshot, device)
            rows[name] = evaluate_model(baseline, split, "valid", product_category=categories)
    out = Path(json_path) if json_path is not None else model.path / f"evaluation-{part}.json"
    out.write_text(json.dumps({"part": part, "model_dir": str(model.path), "rows": rows}, indent=2), encoding="utf-8")
    return EvaluationTable(part=part, rows=rows, model_dir=model.path, json_path=out)


# --- recommend -------------------------------------------------------------------------------


@dataclass
class Recommendations:
    """One user's ranked products with their score parts (and reasons once explained)."""

    user_id: str
    model: str
    weights: dict[str, float]
    query: str | None
    history_size: int
    explained: bool = False
    stored: bool = False
    items: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _fields(self)


def load_model(config: KgrecConfig, model_dir: str | Path = DEFAULT_RUNS_DIR / "models", store: GraphStore | None = None):
    """A model directory loaded and kept warm (:class:`~kgrec.service.LoadedModel`); ``store``
    None ranks from the model's snapshot (no live events, no explanations)."""
    from kgrec.service import LoadedModel

    return LoadedModel(config, model_dir, store)


def rank_users(
    loaded, user_ids: list[str] | None, params, query: str | None = None, progress: bool = False, observe_stage=None
):
    """The one ranking path: ``(user_ids, RankedList [b, k], histories)`` for the users' current events.

    ``user_ids`` None ranks every user with events. Users are scored and ranked
    ``rank.batch_size`` at a time; one user is a batch of one, so a user gets the same
    list whichever way they are asked for. On a catalog above ``rank.exact_max_products``
    only each user's retrieved candidates are ranked (``loaded.retriever``; not with a
    query or ``rank`` normalisation, which need every product's score).

    ``observe_stage(stage, seconds)``, when given, is called once per stage at the end: ``events``
    (reading the users' events), ``model`` (the query's text, the user vectors and every
    product's or candidate's relevance) and ``ranking`` (normalisation, MMR, exploration).
    """
    import torch

    from kgrec.rank.engine import RankedList
    from kgrec.rank.ranking import rank
    from kgrec.threads import scan_threads, torch_threads

    started = time.perf_counter()
    user_ids, histories = loaded.histories(user_ids)
    seconds = {"events": time.perf_counter() - started, "model": 0.0, "ranking": 0.0}
    started = time.perf_counter()
    query_scores = loaded.query_scores(query) if query is not None else None
    seconds["model"] += time.perf_counter() - started
    rank_cfg = loaded.config.rank
    # One thread for one request: many small steps, where a second thread's start-up costs
    # more than it saves, except in the memory-bound catalog scan; a batch uses rank.num_threads.
    single = len(user_ids) == 1
    threads = rank_cfg.request_threads if single else rank_cfg.num_threads
    retriever = loaded.retriever if query is None and params.normalisation == "minmax" else None
    parts = []
    with (
        torch_threads(threads),
        scan_threads(rank_cfg.scan_threads if single else None),
        _progress_bar("Ranking users", len(user_ids), progress) as advance,
    ):
        for start in range(0, len(user_ids), rank_cfg.batch_size):
            rows = torch.arange(start, min(start + rank_cfg.batch_size, len(user_ids)))
            batch = histories.select(rows) if len(user_ids) > rank_cfg.batch_size else histories
            started = time.perf_counter()
            if retriever is not None:
                vectors = loaded.recommender.user_vectors(batch)
                relevance = loaded.recommender.add_co_interactions(
                    retriever.candidates(vectors, batch, params.weights), batch, vectors, rank_cfg.retrieval_candidates
                )
            else:
                relevance = loaded.recommender.score(batch)
            scored = time.perf_counter()
            parts.append(rank(relevance, loaded.catalog, params, batch, query_scores))
            seconds["model"] += scored - started
            seconds["ranking"] += time.perf_counter() - scored
            if advance is not None:
                advance("", len(rows))
    if observe_stage is not None:
        for stage, spent in seconds.items():
            observe_stage(stage, spent)
    if not parts:
        empty = torch.zeros(0, params.k)
        return user_ids, RankedList(empty.long(), empty, empty, empty, empty), histories
    ranked = RankedList(*(torch.cat([getattr(p, name) for p in parts]) for name in RankedList.__dataclass_fields__))
    return user_ids, ranked, histories


def recommend(
    loaded,
    user_id: str,
    k: int | None = None,
    weights=None,
    query: str | None = None,
    include_seen: bool = False,
    explain: bool = False,
) -> Recommendations:
    """Top-``k`` products for ``user_id`` from their current events, each score broken into its parts.

    ``explain=True`` adds the knowledge-graph reasons (read from Neo4j, nothing written);
    :func:`store_reasons` stores them.
    """
    result = recommend_users(loaded, [user_id], k, weights, query, include_seen)[0]
    if explain:
        add_reasons(loaded, result)
    return result


def recommend_users(
    loaded,
    user_ids: list[str],
    k: int | None = None,
    weights=None,
    query: str | None = None,
    include_seen: bool = False,
    observe_stage=None,
) -> list[Recommendations]:
    """:func:`recommend` for several users at once (one read of their events, one pass through
    the model): the same lists as one by one, at a fraction of the CPU time per user.
    ``observe_stage``: as :func:`rank_users` (the server's per-stage metrics)."""
    from kgrec.service import items

    params = _rank_params(loaded, k, weights, include_seen)
    _, ranked, histories = rank_users(loaded, user_ids, params, query, observe_stage=observe_stage)
    return [
        Recommendations(
            user_id=user_id,
            model=loaded.model_id,
            weights=params.weights.to_dict(),
            query=query,
            history_size=int(histories.lengths[row]),
            items=items(loaded, ranked.user(row)),
        )
        for row, user_id in enumerate(user_ids)
    ]


def _rank_params(loaded, k, weights, include_seen):
    from kgrec.rank.params import MAX_K, RankParams

    params = RankParams.from_config(loaded.config.rank, weights, k, include_seen)
    if params.k > loaded.num_products:
        raise ConfigError(f"k must be between 1 and {min(MAX_K, loaded.num_products)} (the catalog size caps it), found {params.k}.")
    return params


def recommend_all(
    loaded,
    out_path: str | Path,
    k: int | None = None,
    weights=None,
    query: str | None = None,
    include_seen: bool = False,
    progress: bool = False,
) -> int:
    """Top-``k`` for every user with events, as JSON lines ``{user_id, items, scores}``;
    returns the number of users. The same ranking as :func:`recommend`, user for user.

    The file is written under a temporary name and renamed, so it is never half-written.
    ``progress=True`` draws a bar over the users ranked (a million users take an hour on 2 cores).
    """
    import polars as pl
    import torch

    params = _rank_params(loaded, k, weights, include_seen)
    user_ids, ranked, _ = rank_users(loaded, None, params, query, progress)
    num_users, width = ranked.product_index.shape if ranked.product_index.dim() == 2 else (0, params.k)
    # One long frame of (user row, product index, score), grouped back into lists: no
    # per-user Python work. Padding (-1: fewer than k products left) is dropped.
    frame = pl.DataFrame(
        {
            "row": torch.arange(num_users).repeat_interleave(width).numpy(),
            "index": ranked.product_index.flatten().numpy(),
            "score": ranked.score.flatten().numpy(),
        }
    ).filter(pl.col("index") >= 0)
    frame = frame.with_columns(
        loaded.product_ids.ids.gather(frame.get_column("index")).alias("item"), pl.col("score").round(6)
    )
    lists = frame.group_by("row").agg(pl.col("item").alias("items"), pl.col("score").alias("scores"))
    out_frame = (
        pl.DataFrame({"user_id": user_ids}, schema={"user_id": pl.Utf8})
        .with_row_index("row")
        .join(lists, on="row", how="left")
        .select(
            "user_id",
            pl.col("items").fill_null(pl.lit([], dtype=pl.List(pl.Utf8))),
            pl.col("scores").fill_null(pl.lit([], dtype=pl.List(pl.Float32))),
        )
    )
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    out_frame.write_ndjson(tmp)
    tmp.replace(out)
    return out_frame.height


def explain(loaded, user_id: str, product_ids: list[str]) -> dict[str, list]:
    """The knowledge-graph reasons linking ``user_id`` to each product (read only), with the
    configured limits (``rank.reasons_per_product``, ``explain_history_limit``, ...)."""
    from kgrec.errors import GraphStoreUnavailable
    from kgrec.explain.paths import explain_paths

    if loaded.store is None:
        raise GraphStoreUnavailable("Explanations are read from Neo4j, but no database is connected (drop --offline).")
    for product_id in product_ids:
        loaded.product_index(product_id)  # a clear error for an unknown product
    rank_cfg = loaded.config.rank
    return explain_paths(
        loaded.store,
        user_id,
        product_ids,
        per_product=rank_cfg.reasons_per_product,
        history_limit=rank_cfg.explain_history_limit,
        co_interaction_limit=rank_cfg.co_interaction_limit,
        half_life_days=rank_cfg.popularity_half_life_days,
    )


def add_reasons(loaded, result: Recommendations) -> Recommendations:
    """Attach each item's knowledge-graph reasons (read only)."""
    reasons = explain(loaded, result.user_id, [item["product_id"] for item in result.items])
    for item in result.items:
        item["reasons"] = [
            {"kind": r.kind, "text": r.text, "via_product_id": r.via_product_id, "via": r.via, "strength": round(r.strength, 4)}
            for r in reasons.get(item["product_id"], [])
        ]
    result.explained = True
    return result


def store_reasons(loaded, result: Recommendations) -> Recommendations:
    """Explain ``result`` (if not yet) and store it as ``RECOMMENDED`` relationships for analysts."""
    from kgrec.explain.paths import write_recommendations

    if not result.explained:
        add_reasons(loaded, result)
    write_recommendations(loaded.store, result.user_id, result.model, result.items)
    result.stored = True
    return result


# --- real-time events ----------------------------------------------------------------------


def add_event(
    config: KgrecConfig,
    user_id: str,
    product_id: str,
    event: str | None = None,
    timestamp: str | None = None,
    value: float | None = None,
    store: GraphStore | None = None,
) -> dict:
    """Record one interaction in Neo4j now; the user's next recommendations use it.

    The row goes through the same validation as a file row (event type, timestamp,
    ids); the product must already be in the graph, the user is created if new.
    ``store``: an open store to write through (a process that records many events keeps
    one); None opens one for this event and closes it.
    """
    if store is None:
        with GraphStore.connect(config.store) as own:
            return add_event(config, user_id, product_id, event, timestamp, value, store=own)

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
    if not store.read("MATCH (p:Product {id: $id}) RETURN p.id AS id", {"id": product_id}):
        raise UnknownProductError(
            f"Product {product_id!r} is not in the graph at {store.uri}. Add it with `kgrec build-graph --products …` first."
        )
    rows = validate_interactions(raw, "add-event", pl.Series([product_id]), config.ingest, IngestReport())
    write_interaction_rows(store, GraphTables(products=pl.DataFrame(), interactions=rows), config.store.batch_size)
    return rows.to_dicts()[0]


# --- search ----------------------------------------------------------------------------------


@dataclass
class QueryMatch:
    """What a query finds through the graph's indexes, before any user is considered.

    Depends on the query alone, so a batch of users with the same query can share it.

    Attributes:
        query: the text as given.
        entities: the brands, categories and products the query names.
        candidates: ``[n]`` long, the sorted indices of the products found by the indexes.
        parts: ``[n]`` raw ``lexical``, ``dense`` and (when anything was named) ``entity``
            scores of the candidates.
    """

    query: str
    entities: list
    candidates: object  # Tensor [n] long
    parts: dict


@dataclass
class SearchResults:
    """A query's ranked products, each score broken into its parts."""

    query: str
    user_id: str | None
    model: str
    recognised: str
    entities: list[dict]
    mix: dict[str, float]
    weights: dict[str, float]
    candidates: int
    history_size: int | None
    items: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _fields(self)


def _fields(result) -> dict:
    """A result dataclass's fields as a dict, in order. Field by field, not dataclasses.asdict:
    the values are plain JSON already, and asdict's deep copy of every item costs about 0.1 ms
    of CPU in a served request."""
    return {name: getattr(result, name) for name in result.__dataclass_fields__}


def match_query(loaded, query: str, search_config=None) -> QueryMatch:
    """Find a query's candidates through the indexes: full-text hits on the products' text,
    the products of the brands and categories (with subcategories) it names, the products
    it names by id, and the products closest to its text embedding.

    Two round trips to the graph: what the query names, then the candidates. Words spelt
    like a brand or category name are searched as spelt, the others with typos (``search.fuzzy``).

    Raises:
        ConfigError: an empty query.
        GraphStoreUnavailable: no database connected (search reads the full-text indexes).
        SearchIndexMissing: a graph built before search existed.
    """
    import torch

    from kgrec.errors import GraphStoreUnavailable
    from kgrec.rank.search import (
        EntityHit, candidate_scores, content_words, entity_match, link_entities, lucene_query, name_words, tokenise,
    )
    from kgrec.store import search as store_search

    cfg = search_config if search_config is not None else loaded.config.search
    if query is None or not query.strip():
        raise ConfigError("The query is empty. Pass some text, e.g. --query 'waterproof mascara'.")
    if loaded.store is None:
        raise GraphStoreUnavailable(
            "Search reads Neo4j's full-text indexes, but no database is connected. Start it with `kgrec db start` "
            "(or set NEO4J_URI)."
        )
    store = loaded.store
    words = content_words(tokenise(query))
    # Product ids as typed (ids are case-sensitive; many shops use upper case).
    raw = [w for w in (part.strip(".,;:!?()[]{}\"'") for part in query.split()) if w]
    id_candidates = list(dict.fromkeys([*raw, *(w.upper() for w in raw)]))
    named = store_search.find_named(
        store, lucene_query(words, fuzzy=cfg.fuzzy), id_candidates, cfg.entity_hits, words=content_words(words) if cfg.fuzzy else ()
    )
    hits = [EntityHit(kind, key, name, score) for kind, key, name, score in named.entities]
    hits += [EntityHit("product", product_id, title or "", 1.0) for product_id, title in named.products]
    entities = link_entities(words, hits, fuzzy=cfg.fuzzy, catalog_words=named.catalog_words)

    brands = [e.key for e in entities if e.kind == "brand"]
    categories = [e.key for e in entities if e.kind == "category"]
    lucene = lucene_query(words, fuzzy=cfg.fuzzy, exact=name_words(hits))
    found = store_search.find_candidates(store, lucene, cfg.lexical_candidates, brands, categories, cfg.entity_candidates)

    index_of = loaded.product_ids.get  # a dict kept warm: a few thousand ids cost well under a millisecond

    def indices(ids: list[str]):
        return torch.tensor([i for i in map(index_of, ids) if i is not None], dtype=torch.long)

    lexical = [(i, score) for i, score in ((index_of(product_id), score) for product_id, score in found.hits) if i is not None]
    lexical_index = torch.tensor([i for i, _ in lexical], dtype=torch.long)
    lexical_scores = torch.tensor([score for _, score in lexical], dtype=torch.float32)
    memberships = []
    if brands:
        memberships.append(indices(found.brand_products))
    if categories:
        memberships.append(indices(found.category_products))
    named_products = [e.key for e in entities if e.kind == "product"]
    if named_products:
        memberships.append(indices(named_products))
    dense = None
    if loaded.recommender.product_text is not None:
        dense = loaded.query_scores(query).float()
    if memberships and cfg.entity_mode == "filter":
        found_by = memberships
    else:
        found_by = [lexical_index, *memberships]
        if dense is not None and cfg.dense_candidates > 0:
            found_by.append(torch.topk(dense, min(cfg.dense_candidates, loaded.num_products)).indices)
    candidates = torch.unique(torch.cat(found_by))  # sorted

    parts = {"lexical": candidate_scores(candidates, lexical_index, lexical_scores)}
    if memberships:
        parts["entity"] = entity_match(memberships, candidates)
    # A model trained without text (model.use_text=false) has no dense part: search is
    # lexical and entity matching alone.
    if dense is not None:
        parts["dense"] = dense[candidates]
    return QueryMatch(query=query, entities=entities, candidates=candidates, parts=parts)


def search(
    loaded,
    query: str,
    user_id: str | None = None,
    k: int | None = None,
    weights=None,
    include_seen: bool | None = None,
    match: QueryMatch | None = None,
    personal: bool = True,
    search_config=None,
) -> SearchResults:
    """Search the catalog for ``query``, personalised for ``user_id`` when given.

    Candidates come from the indexes (:func:`match_query`); only they are scored and ranked.
    relevance mixes the lexical, dense, entity and personal parts (``search`` weights,
    each part normalised to [0, 1] over the candidates); the score is
    ``α·relevance + β·popularity + γ·diversity`` with the ``search`` section's weights
    (or ``weights``), ranked by the same :func:`~kgrec.rank.ranking.rank` as a
    recommendation, over the candidates alone. Without a user it is a plain search;
    ``personal=False`` uses the user's events only to leave out their products (unless
    ``include_seen``). ``match`` reuses a :func:`match_query` result (the same query for many users).
    ``search_config``: the ``search`` settings (default: those of ``loaded.config``).
    """
    import torch

    from kgrec.rank.params import RankParams, Weights
    from kgrec.rank.search import active_mix, describe_entities, hybrid_relevance, normalise_parts, rank_candidates
    from kgrec.service import items as ranked_items
    from kgrec.threads import scan_threads, torch_threads

    cfg = search_config if search_config is not None else loaded.config.search
    match = match if match is not None else match_query(loaded, query, cfg)
    candidates = match.candidates
    histories = None
    raw = dict(match.parts)
    with torch_threads(loaded.config.rank.request_threads), scan_threads(loaded.config.rank.scan_threads):
        if user_id is not None:
            _, histories = loaded.histories([user_id])
            if personal:
                raw["personal"] = loaded.recommender.score(histories)[0][candidates]
        mix = active_mix(cfg.mix, raw)
        parts = normalise_parts(raw)
        relevance = hybrid_relevance(parts, mix)
        seen = cfg.include_seen if include_seen is None else include_seen
        params = RankParams.from_config(loaded.config.rank, weights if weights is not None else Weights.of(cfg.weights), k, seen)
        if params.k > loaded.num_products:
            raise ConfigError(f"k must be between 1 and {loaded.num_products} (the catalog size caps it), found {params.k}.")
        ranked = rank_candidates(relevance, candidates, loaded.catalog, params, histories).user(0)
    rows = ranked_items(loaded, ranked)
    for row, position in zip(rows, torch.searchsorted(candidates, ranked.product_index).tolist()):
        for name in mix:
            row[name] = round(float(parts[name][position]), 6)
    return SearchResults(
        query=match.query,
        user_id=user_id,
        model=loaded.model_id,
        recognised=describe_entities(match.entities),
        entities=[e.to_dict() for e in match.entities],
        mix={name: round(value, 6) for name, value in mix.items()},
        weights=params.weights.to_dict(),
        candidates=int(candidates.numel()),
        history_size=None if histories is None else int(histories.lengths[0]),
        items=rows,
    )


def prepare_search(config: StoreConfig) -> int:
    """Create the full-text indexes and every product's search text in a graph built before
    kgrec had search (``build-graph`` does both for what it loads); returns the products updated."""
    from kgrec.store.graph_io import ensure_schema
    from kgrec.store.connection import query

    with GraphStore.connect(config) as store:
        ensure_schema(store)
        ids = [row["id"] for row in store.read("MATCH (p:Product) RETURN p.id AS id")]
        store.write_batches(query("write_search_text"), ids, config.batch_size)
        store.run("CALL db.awaitIndexes(600)")
    return len(ids)


# --- analyst queries -------------------------------------------------------------------------


@dataclass
class QueryRows:
    """The rows an analyst's query returned."""

    source: str
    parameters: dict
    columns: list[str]
    rows: list[dict]
    write: bool


def query_file_parameters(text: str) -> dict:
    """The defaults of a cypher/ file's ``// params: {...}`` header line ({} when it has none)."""
    import re

    found = re.search(r"^//\s*params:\s*(\{.*\})\s*$", text, re.MULTILINE)
    if not found:
        return {}
    try:
        return json.loads(found.group(1))
    except json.JSONDecodeError:
        return {}


def parse_query_parameter(text: str) -> tuple[str, object]:
    """``"top=5"`` → ``("top", 5)``: the value is read as JSON (numbers, ``null``, ``true``,
    ``"text"``, lists), else taken as text (``user_id=u1``)."""
    name, sep, raw = text.partition("=")
    name = name.strip()
    if not sep or not name.isidentifier():
        raise ConfigError(f"--param {text!r} is not of the form name=value, e.g. --param user_id=u1 or --param top=5.")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def run_query(
    config: StoreConfig,
    source: str | Path | None = None,
    cypher: str | None = None,
    parameters: dict | None = None,
    write: bool = False,
) -> QueryRows:
    """Run a Cypher file (e.g. ``cypher/top_brands.cypher``) or a query string against the
    configured server and return its rows.

    A file's ``// params: {...}`` header gives default parameters; ``parameters`` override
    them. Read-only unless ``write``: the session's access mode is READ, so the server
    refuses writes. A parameter the query uses and nobody gave is an error naming it.
    """
    import re

    from kgrec.errors import InputFileError

    if (source is None) == (cypher is None):
        raise ConfigError("Give either a Cypher file or a query string (kgrec query FILE, or kgrec query -- 'MATCH …').")
    defaults: dict = {}
    if source is not None:
        path = Path(source)
        if not path.is_file():
            raise InputFileError(f"Cypher file {path} does not exist. The analyst queries are in cypher/ (see cypher/README.md).")
        cypher = path.read_text(encoding="utf-8")
        defaults = query_file_parameters(cypher)
        label = str(path)
    else:
        label = "the query string"
    assert cypher is not None
    if not cypher.strip():
        raise ConfigError(f"{label} holds no query.")
    given = {**defaults, **(parameters or {})}
    body = "\n".join(line for line in cypher.splitlines() if not line.lstrip().startswith("//"))
    missing = sorted(set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", body)) - set(given))
    if missing:
        raise ConfigError(
            f"{label} uses the parameter(s) {', '.join('$' + m for m in missing)}, which were not given. "
            f"Pass them with --param, e.g. --param {missing[0]}=value."
        )
    with GraphStore.connect(config) as store:
        columns, rows = store.run_query(cypher.strip().rstrip(";"), given, write=write)
    return QueryRows(source=label, parameters=given, columns=columns, rows=rows, write=write)
