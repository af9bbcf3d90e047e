"""The ``kgrec`` command line: parse, call :mod:`kgrec.pipeline`, print.

A :class:`~kgrec.errors.KgrecError` becomes its message on stderr and exit status 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import os
import sys

# Idle OpenMP threads spin-wait by default, which on a small or busy machine makes
# torch's batched ranking several times slower; must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
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
        help="Run config (YAML), e.g. configs/default.yaml. Default: the built-in defaults.",
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
    """Start, stop or inspect the managed local Neo4j server.

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
    """Show which Neo4j is used, whether it runs, and its counts.

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
@click.option("--products", "num_products", default=500, show_default=True, type=click.IntRange(50, 100_000), help="Number of products.")
@click.option("--users", "num_users", default=300, show_default=True, type=click.IntRange(10, 1_000_000), help="Number of users.")
@click.option("--events-per-user", default=20, show_default=True, type=click.IntRange(3, 10_000), help="Average events per user.")
@click.option("--seed", default=0, show_default=True, help="Random seed; the same seed writes the same files.")
@click.option("--format", "file_format", type=click.Choice(["csv", "parquet", "jsonl"]), default="csv", show_default=True)
def sample_data(out_dir: Path, num_products: int, num_users: int, events_per_user: int, seed: int, file_format: str) -> None:
    """Write a deterministic synthetic shop to try kgrec on.

    Products with titles, brands and a category tree; users with planted brand and
    category preferences; long-tail popularity; timestamped view/click/cart/purchase
    events; also_bought relations.

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
    console.print(_counts_table("Graph contents", result.summary.totals))


@cli.command("export-graph")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path), help="Snapshot folder to write (replaced if it is a snapshot).")
@config_options
def export_graph_cmd(out_dir: Path, config) -> None:
    """Write the graph to a versioned snapshot folder.

    The snapshot holds Parquet tables and a manifest. It lets `kgrec train --graph DIR` run without a database, e.g. on a
    GPU machine without Java. The manifest holds the counts and a content hash:
    the same graph always gives the same hash.

    \b
    Example:
      kgrec export-graph --out snapshots/shop-2024-06-01
    """
    from kgrec.pipeline import export_graph

    snapshot = export_graph(config.store, out_dir)
    counts = snapshot.manifest["counts"]
    console.print(f"Wrote snapshot {snapshot.path} (content hash {snapshot.content_hash[:12]}).")
    console.print(_counts_table("Snapshot contents", counts))


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
