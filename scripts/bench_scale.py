#!/usr/bin/env python
"""Scale: time and peak memory of every stage of kgrec on one synthetic shop (issue 12).

Each stage runs as its own ``kgrec`` process, the way a user runs it, against a managed
Neo4j that lives in the work folder. Per stage it reports the wall time, the peak RSS of
the stage's process (``ru_maxrss`` of that child, exact), the peak RSS of the Neo4j JVM
while the stage ran (sampled every 0.2 s), and the size on disk of what the stage wrote.

Stages, in order (``--stages`` picks some; later ones need what earlier ones wrote):

    sample-data        kgrec sample-data (Parquet files)
    build-graph        kgrec build-graph
    export-graph       kgrec export-graph (the snapshot)
    train              kgrec train --graph SNAPSHOT, train.epochs=1, model.use_text=false; also the
                       deployed fit's seconds per epoch (from the model's history.json)
    text               the product text embedding alone (slow; only when named in --stages)
    recommend-all      kgrec recommend --all-users
    serve              kgrec serve, and --requests sequential GET /recommend from a separate
                       client process (scripts/bench_serving.py's); p50 / p99
    import-embeddings  kgrec import-embeddings

Targets of issue 12: S1 = 100k products / 100k users / 10 events per user, S2 = 300k / 300k / 10,
S3 = 1M / 1M / 10: every process under 16 GiB, each stage timed.

Usage:
    python scripts/bench_scale.py --products 100000 --users 100000 --events-per-user 10 --work /tmp/s1
    python scripts/bench_scale.py ... --work /tmp/s1 --stages train,serve   # reuse the built shop
    python scripts/bench_scale.py --products 1000000 --users 1000000 --events-per-user 10 \\
        --stages sample-data --work /tmp/s3
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS))
from bench_machine import describe_machine  # noqa: E402
from bench_serving import percentiles, wait_until_serving  # noqa: E402 - the serving benchmark's

STAGES = ("sample-data", "build-graph", "export-graph", "train", "text", "recommend-all", "serve", "import-embeddings")
DEFAULT_STAGES = tuple(s for s in STAGES if s != "text")
BASELINE_STAGES = ("export-graph", "import-embeddings")
GIB = 1024**3


class PeakSampler:
    """Samples the RSS of a process tree (the Neo4j JVM) in a thread; ``peak`` is the largest seen."""

    def __init__(self, pid: int | None, every_s: float = 0.2) -> None:
        self.pid, self.every_s, self.peak = pid, every_s, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        if self.pid is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self._stop.wait(self.every_s)


def tree_rss(pid: int) -> int:
    """RSS in bytes of ``pid`` and its descendants (0 once it is gone)."""
    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def wait_with_peak(process: subprocess.Popen) -> tuple[int, int]:
    """Wait for ``process``; ``(exit code, its peak RSS in bytes)`` from the kernel's ``ru_maxrss``."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, usage.ru_maxrss * 1024  # kilobytes on Linux


def size_of(*paths: Path) -> int:
    total = 0
    for path in paths:
        if path.is_file():
            total += path.stat().st_size
        elif path.is_dir():
            total += sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return total


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work: Path = args.work.resolve()
        self.home = self.work / "home"
        self.shop = self.work / "shop"
        self.snapshot = self.work / "snapshot"
        self.model = self.work / "model"
        self.recs = self.work / "recs.jsonl"
        self.env = {**os.environ, "KGREC_HOME": str(self.home), "OMP_WAIT_POLICY": "PASSIVE"}
        for name in ("NEO4J_URI", "NEO4J_USER", "NEO4J_USERNAME", "NEO4J_PASSWORD"):
            self.env.pop(name, None)  # the managed server in the work folder, never another one
        self.settings = [
            f"store.port={args.port}",
            f"store.heap_mb={args.heap_mb}",
            f"store.pagecache_mb={args.pagecache_mb}",
            "model.use_text=false",
            "train.epochs=1",
            *args.overrides,
        ]
        self.results: list[dict] = []

    def kgrec(self, *arguments: str, settings: bool = True) -> list[str]:
        command = [sys.executable, "-m", "kgrec.cli", *arguments]
        return command + [a for s in self.settings for a in ("--set", s)] if settings else command

    def jvm_pid(self) -> int | None:
        state_file = self.home / "servers" / str(self.args.port) / "server.json"
        if not state_file.is_file():
            return None
        pid = json.loads(state_file.read_text()).get("pid")
        return pid if pid and psutil.pid_exists(pid) else None

    def measure(self, stage: str, command: list[str], outputs: tuple[Path, ...] = (), extra=None, code: Path | None = None) -> dict:
        """Run ``command`` as the stage's process; record time, peaks and output sizes.

        ``code``: run it with the kgrec of this checkout instead (the baseline of a comparison)."""
        if code is not None:
            stage = f"{stage} (baseline)"
        print(f"[{time.strftime('%H:%M:%S')}] {stage}: {' '.join(command[2:])}", flush=True)
        log = (self.work / "logs" / f"{stage}.log").open("w")
        env = self.env if code is None else {**self.env, "PYTHONPATH": str(code)}
        started = time.perf_counter()
        with PeakSampler(self.jvm_pid()) as jvm:
            # cwd: the work folder, so that `python -m kgrec.cli` imports the kgrec that PYTHONPATH
            # (or the installed package) names, never one that happens to be in the current folder.
            process = subprocess.Popen(command, env=env, cwd=self.work, stdout=log, stderr=subprocess.STDOUT)
            figures = extra(process) if extra else {}
            if extra:
                process.send_signal(signal.SIGTERM)
            code, peak = wait_with_peak(process)
        seconds = time.perf_counter() - started
        log.close()
        if code != 0 and not extra:
            tail = (self.work / "logs" / f"{stage}.log").read_text()[-3000:]
            raise SystemExit(f"{stage} failed (exit {code}):\n{tail}")
        row = {
            "stage": stage,
            "seconds": round(seconds, 1),
            "peak_rss_gib": round(peak / GIB, 2),
            "neo4j_peak_rss_gib": round(jvm.peak / GIB, 2) if jvm.pid else None,
            "disk_gib": round(size_of(*outputs) / GIB, 3) if outputs else None,
            "load_average": [round(x, 2) for x in os.getloadavg()],
            **figures,
        }
        self.results.append(row)
        print(f"    {row}", flush=True)
        return row

    # --- stages ----------------------------------------------------------------------------

    def sample_data(self) -> None:
        a = self.args
        self.measure("sample-data", self.kgrec(
            "sample-data", "--out", str(self.shop), "--products", str(a.products), "--users", str(a.users),
            "--events-per-user", str(a.events_per_user), "--popularity-exponent", str(a.popularity_exponent),
            "--format", "parquet", settings=False,
        ), outputs=(self.shop,))

    def build_graph(self) -> None:
        files = [a for name in ("products", "interactions", "relations", "users")
                 for a in (f"--{name}", str(self.shop / f"{name}.parquet"))]
        self.measure("build-graph", self.kgrec("build-graph", *files), outputs=(self.home / "servers",))

    def export_graph(self, code: Path | None = None) -> None:
        out = self.snapshot if code is None else self.work / "snapshot-baseline"
        self.measure("export-graph", self.kgrec("export-graph", "--out", str(out)), outputs=(out,), code=code)

    def train(self) -> None:
        row = self.measure("train", self.kgrec(
            "train", "--graph", str(self.snapshot), "--out", str(self.model), "--no-write-embeddings", "--device", "cpu",
        ), outputs=(self.model,))
        # train fits three times (epoch selection, refit, deployed fit); the deployed fit's epoch
        # time is the figure to compare across shop sizes.
        history = json.loads((self.model / "history.json").read_text())
        row["epoch_s"] = round(history["epochs"][0]["seconds"], 1)
        print(f"    deployed fit: {row['epoch_s']} s per epoch", flush=True)

    def text(self) -> None:
        code = (
            "import polars as pl; from kgrec.config import load_config; from kgrec.features.text import encode_products; "
            f"encode_products(pl.read_parquet({str(self.snapshot / 'products.parquet')!r}), "
            "load_config(None, []).features, progress=False)"
        )
        self.measure("text", [sys.executable, "-c", code], outputs=(self.home,))

    def recommend_all(self) -> None:
        self.measure("recommend-all", self.kgrec(
            "recommend", "--all-users", "--out", str(self.recs), "--model", str(self.model),
        ), outputs=(self.recs,))

    def serve(self) -> None:
        import polars as pl

        http_port = self.args.port + 4
        url = f"http://127.0.0.1:{http_port}"
        users = pl.read_parquet(self.snapshot / "users.parquet", columns=["user_id"]).get_column("user_id").to_list()
        rng = random.Random(0)
        warmup = 20
        requests = [["/recommend", {"user": rng.choice(users), "k": 10}] for _ in range(self.args.requests + warmup)]
        requests_file = self.work / "requests.json"
        requests_file.write_text(json.dumps(requests))

        def load(server: subprocess.Popen) -> dict:
            if not wait_until_serving(url, server, timeout_s=600):
                raise SystemExit(f"kgrec serve did not come up; see {self.work / 'logs' / 'serve.log'}")
            ready = time.perf_counter()
            out = subprocess.run(  # the client runs in its own process, as in bench_serving.py
                [sys.executable, str(SCRIPTS / "bench_serving.py"), "--client", url, str(requests_file)],
                capture_output=True, text=True, check=True, env=self.env, cwd=self.work,
            )
            latencies = json.loads(out.stdout.strip().splitlines()[-1])[warmup:]
            figures = percentiles(latencies)
            return {"p50_ms": figures["p50_ms"], "p99_ms": figures["p99_ms"], "requests": figures["n"],
                    "requests_s": round(time.perf_counter() - ready, 1)}

        self.measure("serve", self.kgrec("serve", "--port", str(http_port), "--model", str(self.model)), extra=load)

    def import_embeddings(self, code: Path | None = None) -> None:
        self.measure("import-embeddings", self.kgrec("import-embeddings", "--model", str(self.model)),
                     outputs=(self.home / "servers",), code=code)

    # --- the database ------------------------------------------------------------------------

    def start_database(self) -> None:
        subprocess.run(self.kgrec("db", "start"), env=self.env, cwd=self.work, check=True, stdout=subprocess.DEVNULL)

    def stop_database(self) -> None:
        subprocess.run(self.kgrec("db", "stop"), env=self.env, cwd=self.work, check=False, stdout=subprocess.DEVNULL)


def print_table(rows: list[dict]) -> None:
    header = f"{'stage':<28} {'seconds':>8} {'peak RSS GiB':>12} {'Neo4j RSS GiB':>13} {'disk GiB':>9}  other"
    print(header)
    print("-" * len(header))
    known = {"stage", "seconds", "peak_rss_gib", "neo4j_peak_rss_gib", "disk_gib", "load_average"}
    for row in rows:
        other = ", ".join(f"{k}={v}" for k, v in row.items() if k not in known)
        neo4j = "" if row["neo4j_peak_rss_gib"] is None else f"{row['neo4j_peak_rss_gib']:.2f}"
        disk = "" if row["disk_gib"] is None else f"{row['disk_gib']:.3f}"
        print(f"{row['stage']:<28} {row['seconds']:>8.1f} {row['peak_rss_gib']:>12.2f} {neo4j:>13} {disk:>9}  {other}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events-per-user", type=int, default=10)
    parser.add_argument("--popularity-exponent", type=float, default=0.9, help="Zipf exponent of sample-data.")
    parser.add_argument("--stages", default=",".join(DEFAULT_STAGES), help=f"Comma-separated, of {', '.join(STAGES)}.")
    parser.add_argument("--work", type=Path, required=True, help="Work folder: shop, Neo4j, snapshot, model. Reused if it exists.")
    parser.add_argument("--port", type=int, default=7741, help="Bolt port of the work folder's Neo4j; serve uses port + 4.")
    parser.add_argument("--heap-mb", type=int, default=2048)
    parser.add_argument("--pagecache-mb", type=int, default=1024)
    parser.add_argument("--requests", type=int, default=1000, help="Sequential GET /recommend requests.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="More config overrides.")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT",
                        help="A kgrec checkout (e.g. one of the main branch): export-graph and import-embeddings "
                             "also run with its code (PYTHONPATH), right before this checkout's, for a ratio. "
                             "Run the script with PYTHONPATH naming the checkout under test.")
    parser.add_argument("--json", type=Path, help="Write the figures here too (default: WORK/bench_scale.json).")
    args = parser.parse_args()
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        parser.error(f"unknown stage(s) {unknown}; choose from {', '.join(STAGES)}")

    bench = Bench(args)
    (bench.work / "logs").mkdir(parents=True, exist_ok=True)
    # A server already running in the work folder (another run's) is used and left running.
    start_database = bool({"build-graph", "export-graph", "serve", "import-embeddings", "recommend-all"} & set(stages))
    start_database = start_database and bench.jvm_pid() is None
    if start_database:
        bench.start_database()
    try:
        for stage in STAGES:
            if stage in stages:
                run = getattr(bench, stage.replace("-", "_"))
                if args.baseline and stage in BASELINE_STAGES:
                    run(code=args.baseline.resolve())
                run()
    finally:
        if start_database:
            bench.stop_database()
    figures = {
        "shop": {"products": args.products, "users": args.users, "events_per_user": args.events_per_user,
                 "popularity_exponent": args.popularity_exponent},
        "machine": describe_machine(),
        "settings": bench.settings,
        "stages": bench.results,
        "baseline": str(args.baseline) if args.baseline else None,
    }
    print()
    print_table(bench.results)
    (args.json or bench.work / "bench_scale.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
