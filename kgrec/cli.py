"""The ``kgrec`` command line: parse, call :mod:`kgrec.pipeline`, print.

A :class:`~kgrec.errors.KgrecError` becomes its message on stderr and exit status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import math
import os
import sys
from contextlib import contextmanager

# Idle OpenMP threads spin-wait by default, which on a small or busy machine makes
# torch's batched ranking several times slower; must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# The text model loads from a local folder; its loader's progress bars and notices are noise here.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
import warnings  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kgrec import __version__
from kgrec.errors import KgrecError

console = Console()
err_console = Console(stderr=True)


class KgrecGroup(click.Group):
    """Turns user-fixable errors into one clear message and a non-zero exit."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except KgrecError as e:
            # The message carries user data (ids, file values): never read it as markup.
            err_console.print("[bold red]error:[/] " + escape(str(e)), highlight=False, soft_wrap=True)
            sys.exit(1)


def config_options(command):
    """``--config FILE`` and repeatable ``--set section.key=value`` for a command."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help=(
            "Run config (YAML), e.g. configs/default.yaml. Keys it leaves out take the built-in defaults; when "
            "ranking, a rank key takes the model's own setting (the config it was trained with) first."
        ),
    )
    @click.option(
        "--set",
        "overrides",
        multiple=True,
        metavar="SECTION.KEY=VALUE",
        help="Override one config value, e.g. --set store.port=7688. Repeatable.",
    )
    @functools.wraps(command)
    def wrapper(*args, config_path: Path | None, overrides: tuple[str, ...], **kwargs):
        from kgrec.config import load_config

        return command(*args, config=load_config(config_path, overrides), **kwargs)

    return wrapper


@click.group(cls=KgrecGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="kgrec")
def cli() -> None:
    """kgrec: knowledge-graph + GNN recommendations for e-commerce, on a real Neo4j.

    \b
    A typical run:
      kgrec db start                                  # a local Neo4j (or set NEO4J_URI)
      kgrec sample-data --out shop/                   # or bring your own files
      kgrec build-graph --products shop/products.csv --interactions shop/interactions.csv
      kgrec train                                     # GNN + text embeddings
      kgrec recommend --user u0001 --explain
    """


# --- db ------------------------------------------------------------------------------


@cli.group("db", cls=KgrecGroup)
def db() -> None:
    """Start, stop or inspect the local Neo4j.

    kgrec runs a real Neo4j 5.26 Community server on 127.0.0.1, with its jars
    fetched by Maven on first use and its data under $KGREC_HOME
    (default ~/.local/share/kgrec). With NEO4J_URI set, every command uses that
    server instead and these commands only report on it.

    \b
    Example:
      kgrec db start && kgrec db status
      kgrec db stop
    """


@db.command("start")
@config_options
def db_start(config) -> None:
    """Start the local Neo4j and wait until it answers.

    \b
    Example:
      kgrec db start
      kgrec db start --set store.port=7688 --set store.heap_mb=2048
    """
    from kgrec.pipeline import start_database

    state = start_database(config.store, echo=lambda msg: err_console.print(msg, highlight=False))
    console.print(f"Neo4j {state.neo4j_version} is running at [bold]{state.uri}[/] (pid {state.pid}, data in {state.server_dir}).")


@db.command("stop")
@config_options
def db_stop(config) -> None:
    """Stop the local Neo4j cleanly.

    \b
    Example:
      kgrec db stop
    """
    from kgrec.pipeline import stop_database

    state = stop_database(config.store)
    if state is None:
        console.print(f"No local Neo4j is running on port {config.store.port}.")
    else:
        console.print(f"Stopped the local Neo4j at {state.uri} (pid {state.pid}).")


@db.command("status")
@config_options
def db_status(config) -> None:
    """Show which Neo4j runs, its password file and its counts.

    \b
    Example:
      kgrec db status
    """
    from kgrec.pipeline import database_status

    status = database_status(config.store)
    source = "managed local server" if status.managed else "NEO4J_URI"
    if not status.running:
        console.print(f"Neo4j at {status.uri} ({source}) is [bold red]not running[/].")
        if status.managed:
            console.print("Start it with `kgrec db start`.")
        sys.exit(3)
    pid = f", pid {status.state.pid}" if status.state else ""
    console.print(f"Neo4j at [bold]{status.uri}[/] ({source}{pid}) is [bold green]running[/].")
    if status.state is not None:
        console.print(
            f"Auth is on: user neo4j, password in {escape(str(status.state.password_file))} (readable by you only).",
            highlight=False,
        )
    if status.counts:
        console.print(_counts_table("Graph contents", status.counts))


@cli.command("config")
@config_options
def config_cmd(config) -> None:
    """Print the resolved config as commented YAML.

    Defaults, the --config file and every --set are applied.

    \b
    Example:
      kgrec config --set train.epochs=10 > my-run.yaml
      kgrec train --config my-run.yaml
    """
    from kgrec.config import render_config_yaml

    click.echo(render_config_yaml(config, header=CONFIG_HEADER), nl=False)


CONFIG_HEADER = """kgrec run config. Every key, with its default and what it does.
Use with --config FILE; override one key with --set section.key=value.
Generated by `kgrec config`; unknown keys are rejected."""


# --- data ----------------------------------------------------------------------------------


@cli.command("sample-data")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder to write the files into.")
@click.option("--products", "num_products", default=500, show_default=True, type=click.IntRange(50, 1_000_000), help="Number of products.")
@click.option("--users", "num_users", default=300, show_default=True, type=click.IntRange(10, 1_000_000), help="Number of users.")
@click.option("--events-per-user", default=20, show_default=True, type=click.IntRange(3, 10_000), help="Average events per user.")
@click.option("--popularity-exponent", default=0.9, show_default=True, type=click.FloatRange(0, 3), help="Zipf exponent of product popularity (0: uniform; higher: a few products get most events).")
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed writes the same files.")
@click.option("--format", "file_format", type=click.Choice(["csv", "parquet", "jsonl"]), default="csv", show_default=True)
def sample_data(out_dir: Path, num_products: int, num_users: int, events_per_user: int, popularity_exponent: float, seed: int, file_format: str) -> None:
    """Write a synthetic shop to try kgrec on.

    Products with titles, brands and a category tree; users with planted brand and
    category preferences; Zipf (long-tail) popularity; timestamped
    view/click/cart/purchase events; also_bought relations. Up to 10^6 products and
    users and 10^7 events, written in chunks (a few GB of memory at that size).

    \b
    Example:
      kgrec sample-data --out shop/ --products 2000 --users 1000
    """
    from kgrec.ingest.synthetic import write_sample_shop

    paths = write_sample_shop(
        out_dir,
        num_products=num_products,
        num_users=num_users,
        seed=seed,
        events_per_user=events_per_user,
        file_format=file_format,
        popularity_exponent=popularity_exponent,
    )
    for name, path in paths.items():
        console.print(f"  {name:<13} {path}")


@cli.command("build-graph")
@click.option("--products", required=True, type=click.Path(path_type=Path), help="Catalog: product_id, title, description, brand, category, categories, price.")
@click.option("--interactions", required=True, type=click.Path(path_type=Path), help="Events: user_id, product_id, event, timestamp, value.")
@click.option("--relations", default=None, type=click.Path(path_type=Path), help="Optional: product_id, relation, related_product_id.")
@click.option("--users", default=None, type=click.Path(path_type=Path), help="Optional: user_id plus attribute columns.")
@config_options
def build_graph_cmd(products: Path, interactions: Path, relations: Path | None, users: Path | None, config) -> None:
    """Load a shop's catalog and events into Neo4j.

    Builds the knowledge graph: users, products, brands, categories, their events
    and relations. Files may be CSV, Parquet or JSONL (gzip allowed). Everything is validated
    before anything is written; the write is batched and idempotent, so loading the
    same files twice changes nothing and loading new events adds them.

    \b
    Example:
      kgrec build-graph --products shop/products.csv --interactions shop/interactions.csv \\
                        --relations shop/relations.csv --users shop/users.csv
    """
    from kgrec.pipeline import build_graph

    result = build_graph(config, products, interactions, relations, users, progress=True)
    report = result.report
    console.print(f"Loaded into {result.uri}.")
    for name, rows in report.rows_read.items():
        console.print(f"  read {rows:>10,} rows of {name}")
    for reason, count in report.skipped.items():
        if count:
            console.print(f"  [yellow]skipped {count:,} {escape(reason.replace('_', ' '))}[/]")
    for note in report.notes:
        console.print(f"  note: {escape(note)}", highlight=False)
    created = result.summary.created
    console.print(
        f"Created {created.get('nodes_created', 0):,} nodes and {created.get('relationships_created', 0):,} relationships."
    )
    earlier = result.summary.totals.get("Product", 0) - report.rows_read.get("products", 0)
    if earlier > 0:
        # build-graph adds to the database and never deletes: a second shop would mix with the first.
        console.print(
            f"  note: the graph also holds {earlier:,} products that are not in these files (earlier loads stay). "
            "To keep another shop apart, give it its own KGREC_HOME (or store.port).",
            highlight=False,
        )
    console.print(_counts_table("Graph contents", result.summary.totals))


@cli.command("export-graph")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Snapshot folder to write (replaced if it is a snapshot).")
@config_options
def export_graph_cmd(out_dir: Path, config) -> None:
    """Write the graph to a versioned snapshot folder.

    The snapshot holds Parquet tables and a manifest. It lets `kgrec train --graph DIR` run without a database, e.g. on a
    GPU machine without Java. The manifest holds the counts and a content hash:
    the same graph always gives the same hash. The graph is read and written one
    page of store.batch_size nodes at a time, so a large graph needs little memory.

    \b
    Example:
      kgrec export-graph --out snapshots/shop-2024-06-01
    """
    from kgrec.pipeline import export_graph

    snapshot = export_graph(config.store, out_dir)
    counts = snapshot.manifest["counts"]
    console.print(f"Wrote snapshot {snapshot.path} (content hash {snapshot.content_hash[:12]}).")
    console.print(_counts_table("Snapshot contents", counts))


# --- train / evaluate ---------------------------------------------------------------------

MODEL_OPTION_HELP = "Model directory, or a folder with a `latest` pointer. Default: runs/models (its latest)."


@cli.command("train")
@click.option("--graph", "graph_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Train from this snapshot (no database needed). Default: export Neo4j first.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None, help="Model directory to write. Default: runs/models/<timestamp>.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Where to train (overrides train.device). auto: a GPU when one is visible.")
@click.option("--nproc", type=click.IntRange(min=1), default=None, help="Processes training one model together with torch.distributed DDP (overrides train.nproc): gloo on CPU cores, NCCL with one GPU each.")
@click.option("--write-embeddings/--no-write-embeddings", default=None, help="Write embeddings back to Neo4j. Default: yes when the graph came from Neo4j.")
@click.option("--no-final-fit", is_flag=True, help="Deploy the train + valid model instead of fitting once more on every interaction (for experiments).")
@config_options
def train_cmd(graph_dir: Path | None, out_dir: Path | None, device: str | None, nproc: int | None, write_embeddings: bool | None, no_final_fit: bool, config) -> None:
    """Train, evaluate and fit the GNN + text model.

    Exports the graph (or reads --graph) and embeds product text with the offline
    sentence-transformer. Then: epochs chosen by early stopping on each user's
    second-to-last interaction; a refit on train + valid scored on each user's last
    interaction (the test figure); and a final fit on every interaction, which is
    the model written out and used by recommend and serve (--no-final-fit skips it).
    Writes embeddings, metrics (saying which fit each figure comes from), curves and
    the resolved config to the model directory, points runs/models/latest at it and
    writes the embeddings back into Neo4j with a vector index. --out must be new,
    empty or an earlier model directory.

    \b
    Example:
      kgrec train
      kgrec train --graph snapshots/shop --device cuda --set train.epochs=60
      kgrec train --nproc 2          # two processes, one model (docs/SCALING.md)
      # on each of two hosts, from one exported snapshot:
      torchrun --nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500 $(which kgrec) train --graph snap --out runs/models/m1
    """
    from kgrec.pipeline import train

    if device is not None:
        config.train.device = device
    if nproc is not None:
        config.train.nproc = nproc
    run = train(
        config, graph_dir, out_dir, progress=True, write_embeddings=write_embeddings,
        final_fit=not no_final_fit, echo=console.print,
    )
    if not run.written:
        return  # one of torchrun's other processes: rank 0 writes and reports
    console.print(f"Model written to [bold]{run.model_dir}[/] (best epoch {run.best_epoch}, {run.seconds:.0f} s).")
    console.print(_metrics_table("kgrec", {"test": run.metrics["test"], "valid": run.metrics["valid"]}))
    console.print(
        f"test: the fit on {run.metrics['test']['fit']}; valid: the fit on {run.metrics['valid']['fit']}; "
        f"deployed: the fit on {run.metrics['deployed']['fit']}."
    )
    for part in ("test", "valid"):
        if "sampled_from" in run.metrics[part]:
            console.print(
                f"{part}: scored on a fixed random sample of {run.metrics[part]['users']:,.0f} of its "
                f"{run.metrics[part]['sampled_from']:,.0f} users (train.eval_users), each ranked against every product."
            )
    if run.embeddings_written is not None:
        console.print(f"Wrote {run.embeddings_written:,} embeddings to Neo4j (vector index 'product_embedding').")
    else:
        console.print("Embeddings were not written to Neo4j; run `kgrec import-embeddings` where the database is.")


@cli.command("evaluate")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=Path("runs/models"), show_default=True, help=MODEL_OPTION_HELP)
@click.option("--baselines", default="pop,itemknn,bpr,lightgcn", show_default=True, help="Comma-separated: pop, itemknn, bpr, lightgcn, sasrec (empty for none; sasrec takes long on a CPU).")
@click.option("--split", "part", type=click.Choice(["valid", "test"]), default="test", show_default=True)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Where to write the table as JSON. Default: MODEL/evaluation-<split>.json.")
@config_options
def evaluate_cmd(model_dir: Path, baselines: str, part: str, json_path: Path | None, config) -> None:
    """Compare kgrec with baselines.

    Same split, same evaluator for every model.
    Full ranking over every product, the user's training items excluded, standard
    NDCG; plus coverage, average popularity and category diversity (ILD).

    \b
    Example:
      kgrec evaluate --baselines pop,itemknn --split test
    """
    from kgrec.pipeline import evaluate

    names = tuple(name.strip() for name in baselines.split(",") if name.strip())
    table = evaluate(config, model_dir, names, part, json_path)
    console.print(_metrics_table(f"{part} split ({table.model_dir.name})", table.rows))
    console.print(f"Written to {table.json_path}.")


@cli.command("import-embeddings")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=Path("runs/models"), show_default=True, help=MODEL_OPTION_HELP)
@config_options
def import_embeddings_cmd(model_dir: Path, config) -> None:
    """Write a model's embeddings into Neo4j.

    Sets `embedding` on every User and Product and creates the cosine vector
    index `product_embedding`, so analysts can run
    db.index.vector.queryNodes('product_embedding', 10, p.embedding).

    \b
    Example:
      kgrec import-embeddings --model runs/models/20240601-120000
    """
    from kgrec.pipeline import import_embeddings

    n = import_embeddings(config, model_dir, progress=True)
    console.print(f"Wrote {n:,} embeddings and the vector index 'product_embedding'.")


# --- recommend ---------------------------------------------------------------------------


@cli.command("recommend")
@click.option("--user", "user_id", default=None, help="The user to recommend to.")
@click.option("--all-users", is_flag=True, help="Rank every user with events, the same way as --user; needs --out.")
@click.option("-k", "k", type=int, default=None, help="How many products (default rank.k, 10).")
@click.option("--query", "query_text", default=None, help="Text to search for, ranked for the user (personalised search).")
@click.option("--weights", default=None, metavar="relevance=A,popularity=B,diversity=C", help="Weights of the score's parts, rescaled to sum to 1 (default from rank.*).")
@click.option("--include-seen", is_flag=True, help="Also rank products the user already interacted with.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--explain", is_flag=True, help="Add knowledge-graph reasons and store them in Neo4j (one user).")
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=Path("runs/models"), show_default=True, help=MODEL_OPTION_HELP)
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="With --all-users: the JSON-lines file to write.")
@click.option("--offline", is_flag=True, help="Use the events in the model's snapshot instead of Neo4j (no live events, no --explain).")
@config_options
def recommend_cmd(user_id, all_users, k, query_text, weights, include_seen, output_format, explain, model_dir, out_path, offline, config) -> None:
    """Recommend products, scores broken down.

    score = α·relevance + β·popularity + γ·diversity, each part normalised to
    [0, 1] over the user's candidates. Relevance comes from the user's current
    events in Neo4j through the trained embeddings (new events count at once);
    --query mixes in the text match. Diversity re-ranks MMR-style and rewards
    brands and categories next to the user's history. --all-users ranks every
    user exactly as --user would, in batches.

    \b
    Examples:
      kgrec recommend --user U031 --explain
      kgrec recommend --user U031 --query "waterproof mascara" -k 5 --format json
      kgrec recommend --user U031 --weights relevance=0.5,popularity=0.2,diversity=0.3
      kgrec recommend --all-users -k 10 --out recs.jsonl
    """
    from kgrec import pipeline
    from kgrec.rank.params import Weights

    parsed = Weights.parse(weights) if weights is not None else None
    if all_users:
        if user_id is not None:
            raise click.UsageError("Pass either --user or --all-users, not both.")
        if out_path is None:
            raise click.UsageError("--all-users needs --out FILE (JSON lines).")
        if explain:
            raise click.UsageError(
                "--explain stores reasons for one user at a time; run `kgrec recommend --user U --explain` "
                "or `kgrec explain --user U --product P` for the users you need."
            )
        if output_format != "table":
            raise click.UsageError("--all-users writes JSON lines to --out; --format applies to --user.")
        import time

        started = time.perf_counter()
        with _loaded(config, model_dir, offline) as loaded:
            n = pipeline.recommend_all(
                loaded, out_path, k=k, weights=parsed, query=query_text, include_seen=include_seen, progress=True
            )
        console.print(f"Wrote recommendations for {n:,} users to {out_path} in {time.perf_counter() - started:.1f} s.")
        return
    if user_id is None:
        raise click.UsageError("Pass --user USER_ID (or --all-users --out FILE).")
    if out_path is not None:
        raise click.UsageError("--out is for --all-users; with --user the list is printed (--format json for JSON).")
    with _loaded(config, model_dir, offline) as loaded:
        result = pipeline.recommend(loaded, user_id, k=k, weights=parsed, query=query_text, include_seen=include_seen)
        if explain:
            pipeline.store_reasons(loaded, result)
    if output_format == "json":
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    _print_recommendations(result)


@cli.command("explain")
@click.option("--user", "user_id", required=True)
@click.option("--product", "product_id", required=True)
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=Path("runs/models"), show_default=True, help=MODEL_OPTION_HELP)
@config_options
def explain_cmd(user_id: str, product_id: str, model_dir: Path, config) -> None:
    """Show the graph paths from a user to a product.

    Up to rank.reasons_per_product reasons, the same as recommend --explain.

    \b
    Example:
      kgrec explain --user U031 --product P0358
    """
    from kgrec import pipeline

    with _loaded(config, model_dir, offline=False) as loaded:
        loaded.histories([user_id])  # a clear error for an unknown user
        reasons = pipeline.explain(loaded, user_id, [product_id]).get(product_id, [])
    if not reasons:
        console.print(f"No knowledge-graph path links {escape(user_id)} to {escape(product_id)} within two hops of their history.")
        return
    for reason in reasons:
        console.print(f"- {escape('[' + reason.kind + ']')} {escape(reason.text)} (strength {reason.strength:.2f})", highlight=False)


@cli.command("add-event")
@click.option("--user", "user_id", required=True)
@click.option("--product", "product_id", required=True)
@click.option("--event", default=None, help="view, click, cart, purchase or rating (default ingest.default_event).")
@click.option("--timestamp", default=None, help="ISO-8601 or epoch seconds (default: now).")
@click.option("--value", type=float, default=None, help="e.g. the rating.")
@config_options
def add_event_cmd(user_id: str, product_id: str, event: str | None, timestamp: str | None, value: float | None, config) -> None:
    """Record one interaction in Neo4j.

    It counts in the user's next recommendations, without retraining.

    \b
    Example:
      kgrec add-event --user U031 --product P0358 --event cart
    """
    from kgrec.pipeline import add_event

    row = add_event(config, user_id, product_id, event, timestamp, value)
    console.print(f"Recorded {row['event']} of {escape(product_id)} by {escape(user_id)} at {row['timestamp']}.", highlight=False)


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind; loopback unless told otherwise.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=Path("runs/models"), show_default=True, help=MODEL_OPTION_HELP)
@click.option("--api-key-env", default=None, metavar="VAR", help="Require the key in environment variable VAR (header X-API-Key) on every endpoint but /health and /metrics.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes, each with its own warm model; about one per core left after Neo4j.")
@click.option("--threads", default=4, show_default=True, type=click.IntRange(1, 256), help="Request threads per worker (ranking holds Python's lock, so a few suffice).")
@click.option("--max-in-flight", default=128, show_default=True, type=click.IntRange(1, 100_000), help="Requests in progress per worker beyond which it answers 503 at once.")
@click.option("--keep-alive", "keep_alive_s", default=75, show_default=True, type=click.IntRange(1, 3600), help="Seconds an idle connection stays open; keep it above your clients' and load balancer's idle timeout.")
@config_options
def serve_cmd(host: str, port: int, model_dir: Path, api_key_env: str | None, workers: int, threads: int,
              max_in_flight: int, keep_alive_s: int, config) -> None:
    """Serve recommendations over HTTP.

    The model stays warm between requests. GET requests only read:
    GET /recommend?user=U&k=10&query=...&explain=true returns the same JSON as
    `kgrec recommend --format json`; POST /recommend with the same parameters
    also stores the explained list in Neo4j; GET /explain?user=U&product=P;
    GET /health. API docs at /docs.

    Under load, run one worker per core (`--workers 2` on 2 cores beside Neo4j);
    GET /recommend requests that arrive together are ranked in one batch, and a
    worker past --max-in-flight requests answers 503 with Retry-After.

    \b
    Example:
      kgrec serve --port 8000 --workers 2 &
      curl 'http://127.0.0.1:8000/recommend?user=U031&k=5'
    """
    from kgrec.serve import ServeSettings, run_server

    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise click.UsageError(f"--api-key-env {api_key_env}: that environment variable is empty or not set. Export it first.")
    settings = ServeSettings(host=host, port=port, workers=workers, threads=threads, max_in_flight=max_in_flight,
                             keep_alive_s=keep_alive_s, api_key_env=api_key_env)
    run_server(config, model_dir, settings, api_key, echo=console.print)


# --- search and analyst queries -------------------------------------------------------------


@cli.command("search")
@click.option("--query", "query_text", required=True, help="The text to search for, e.g. 'lumen eyeliner'.")
@click.option("--user", "user_id", default=None, help="Personalise for this user (their current events).")
@click.option("-k", "k", type=int, default=None, help="How many products (default rank.k, 10).")
@click.option("--weights", default=None, metavar="relevance=A,popularity=B,diversity=C", help="Weights of the score's parts (default from search.*).")
@click.option("--include-seen", is_flag=True, default=None, help="With --user: also rank products the user already interacted with.")
@click.option("--format", "output_format", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--model", "model_dir", type=click.Path(path_type=Path), default=Path("runs/models"), show_default=True, help=MODEL_OPTION_HELP)
@config_options
def search_cmd(query_text, user_id, k, weights, include_seen, output_format, model_dir, config) -> None:
    """Search the catalog, optionally personalised.

    The query's words are linked to brands, categories (with their subcategories)
    and product ids through Neo4j's full-text indexes, typos included; candidates
    are the full-text hits, the linked products and the products closest to the
    query's text embedding. relevance mixes the lexical, dense, entity and (with
    --user) personal parts, each normalised to [0, 1] (weights in search.*);
    score = α·relevance + β·popularity + γ·diversity.

    \b
    Examples:
      kgrec search --query "nevria action camera"
      kgrec search --query "halona notebok" --user U031 -k 5 --format json
      kgrec search --query "makeup eyes" --set search.entity_mode=filter
    """
    from kgrec import pipeline
    from kgrec.rank.params import Weights

    parsed = Weights.parse(weights) if weights is not None else None
    with _loaded(config, model_dir, offline=False) as loaded:
        result = pipeline.search(loaded, query_text, user_id=user_id, k=k, weights=parsed, include_seen=include_seen)
    if output_format == "json":
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False, indent=2))
        return
    _print_search(result)


@cli.command("query")
@click.argument("target", metavar="FILE | -- 'CYPHER'")
@click.option("--param", "params", multiple=True, metavar="NAME=VALUE", help="A query parameter; the value is read as JSON (5, null, true, \"text\", [1, 2]) or else as text. Repeatable.")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True)
@click.option("--write", is_flag=True, help="Allow the query to change the graph (default: a read-only session the server enforces).")
@config_options
def query_cmd(target: str, params: tuple[str, ...], output_format: str, write: bool, config) -> None:
    """Run a Cypher file or string and print its rows.

    A file's `// params: {...}` header line gives default parameters; --param
    overrides them. The query runs against the configured server (the managed
    one, or NEO4J_URI) in a read-only session unless --write. A bare name
    (top_brands) means cypher/top_brands.cypher.

    \b
    Examples:
      kgrec query cypher/top_brands.cypher --param top=5
      kgrec query why_recommended --param user_id=U031 --param product_id=P0358
      kgrec query --format csv -- 'MATCH (b:Brand) RETURN b.name AS brand LIMIT $n' --param n=3
    """
    from kgrec import pipeline

    parameters = dict(pipeline.parse_query_parameter(p) for p in params)
    path = _cypher_path(target)
    if path is not None:
        result = pipeline.run_query(config.store, source=path, parameters=parameters, write=write)
    else:
        result = pipeline.run_query(config.store, cypher=target, parameters=parameters, write=write)
    _print_query_rows(result, output_format)


def _cypher_path(target: str) -> Path | None:
    """The file ``target`` names (a path, or a bare name in cypher/); None for a query string."""
    path = Path(target)
    if path.is_file() or target.endswith(".cypher"):
        return path
    if "\n" not in target and " " not in target.strip():
        named = Path("cypher") / f"{target}.cypher"
        if named.is_file():
            return named
    return None


def _json_value(value):
    """Dates and times as ISO-8601, anything else JSON lacks as its text."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _plain_value(value):
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=_json_value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return "" if value is None else str(value)


def _print_query_rows(result, output_format: str) -> None:
    import csv

    if output_format == "json":
        click.echo(json.dumps(result.rows, ensure_ascii=False, indent=2, default=_json_value))
        return
    if output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        for row in result.rows:
            writer.writerow([_plain_value(row.get(c)) for c in result.columns])
        return
    # The heading is its own line: as a table title it would wrap at the table's width, which
    # a long query path exceeds when the columns are narrow.
    wide = Console(width=max(console.width, 120))
    wide.print(f"{escape(result.source)}: {len(result.rows)} row(s)", soft_wrap=True)
    table = Table()
    for column in result.columns:
        table.add_column(escape(column), overflow="fold")
    for row in result.rows:
        table.add_row(*(escape(_plain_value(row.get(c))) for c in result.columns))
    wide.print(table)


def _print_search(result) -> None:
    weights, mix = result.weights, result.mix
    who = f" for {escape(result.user_id)} ({result.history_size} products in history)" if result.user_id else ""
    title = (
        f"Search {escape(repr(result.query))}{who}, model {result.model}: {result.candidates} candidates"
        + f"\nrecognised: {escape(result.recognised) if result.recognised else 'nothing'}"
        + "\nrelevance = " + " + ".join(f"{w:.2f}·{name}" for name, w in mix.items())
        + f"\nscore = {weights['relevance']:.2f}·relevance + {weights['popularity']:.2f}·popularity + {weights['diversity']:.2f}·diversity"
    )
    short = {"lexical": "lexic.", "dense": "dense", "entity": "entity", "personal": "person."}
    _print_ranked_items(title, result.items, [(name, short[name]) for name in mix])


@contextmanager
def _loaded(config, model_dir: Path, offline: bool):
    from kgrec.pipeline import load_model
    from kgrec.store.connection import GraphStore

    if offline:
        yield load_model(config, model_dir, None)
        return
    with GraphStore.connect(config.store) as store:
        yield load_model(config, model_dir, store)


def _print_ranked_items(title: str, items: list[dict], extra_parts: list[tuple[str, str]] = ()) -> None:
    """One ranked list as a table: the product, its score and each part of it
    (``extra_parts``: ``(key, header)`` of parts shown before the three of every score)."""
    table = Table(title=title, title_justify="left")
    table.add_column("#", justify="right", min_width=2)
    table.add_column("product", no_wrap=True, min_width=8)
    table.add_column("title", overflow="ellipsis", no_wrap=True, max_width=24)
    table.add_column("brand", overflow="ellipsis", no_wrap=True, max_width=10)
    table.add_column("category", overflow="ellipsis", no_wrap=True, max_width=12)
    for column in ("score", *(header for _, header in extra_parts), "relev.", "popul.", "divers."):
        table.add_column(column, justify="right", no_wrap=True, min_width=5)
    for item in items:
        table.add_row(
            str(item["rank"]),
            escape(item["product_id"]),
            escape(item.get("title") or ""),
            escape(item.get("brand") or ""),
            escape((item.get("category") or "").split(" > ")[-1]),
            f"{item['score']:.3f}",
            *(f"{item[key]:.3f}" for key, _ in extra_parts),
            f"{item['relevance']:.3f}",
            f"{item['popularity']:.3f}",
            f"{item['diversity']:.3f}",
        )
    # Ten or more columns need more than a pipe's default 80 characters to stay readable.
    Console(width=max(console.width, 120 + 10 * len(extra_parts))).print(table)


def _print_recommendations(result) -> None:
    weights = result.weights
    title = (
        f"Top {len(result.items)} for {escape(result.user_id)} (model {result.model}, {result.history_size} products in history)"
        + (f", query {escape(repr(result.query))}" if result.query else "")
        + f"\nscore = {weights['relevance']:.2f}·relevance + {weights['popularity']:.2f}·popularity + {weights['diversity']:.2f}·diversity"
    )
    _print_ranked_items(title, result.items)
    if result.explained:
        for item in result.items:
            reasons = item.get("reasons") or []
            console.print(f"[bold]{item['rank']}. {escape(item['product_id'])}[/]", highlight=False)
            for reason in reasons:
                console.print(f"   - {escape(reason['text'])}", highlight=False)
            if not reasons:
                console.print("   - no graph path within two hops (ranked by embedding similarity)")
        if result.stored:
            console.print("Reasons stored in Neo4j as (:User)-[:RECOMMENDED]->(:Product); see cypher/why_recommended.cypher.")


def _metrics_table(title: str, rows: dict[str, dict[str, float]]) -> Table:
    columns = ["ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20", "coverage@10", "ild@10"]
    table = Table(title=title, title_justify="left", padding=(0, 1))
    table.add_column("model", no_wrap=True)
    for column in columns:
        table.add_column(column.replace("coverage", "cov"), justify="right", no_wrap=True)
    for name, metrics in rows.items():
        # "-" where a metric does not apply (ild@10 of a catalog without categories is NaN).
        table.add_row(escape(name), *("-" if math.isnan(metrics.get(c, math.nan)) else f"{metrics[c]:.4f}" for c in columns))
    return table


def _counts_table(title: str, counts: dict[str, int]) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("node label / relationship type")
    table.add_column("count", justify="right")
    for name, n in counts.items():
        table.add_row(name, f"{n:,}")
    return table


def main() -> None:
    cli(prog_name="kgrec")


if __name__ == "__main__":
    main()
