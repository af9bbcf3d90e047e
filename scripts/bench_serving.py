#!/usr/bin/env python
"""Serving speed: warm single-user latency over HTTP, and batch ranking against a per-user loop.

Everything runs against a throwaway Neo4j (free port, temporary folder) on a synthetic
shop, so no user data is touched:

1. write a sample shop, build the graph, train a model (text off by default: latency
   does not depend on it, and encoding 100k titles on a 2-core CPU takes long);
2. start ``kgrec serve`` in its own process and send ``--requests`` GET /recommend
   requests for random users from *another* process over loopback, one at a time;
   then ``--explain-requests`` more with ``explain=true`` (reasons read, nothing stored: GET
   never writes), then ``--search-requests`` personalised ``GET /search`` requests (a
   product's brand and category word as the query); report p50/p95/p99 of each. With
   ``--before REV`` a second ``kgrec serve`` runs git revision ``REV`` of this repository on
   the same graph and model, and the /recommend and /search requests go to both servers in
   alternating slices: a before/after comparison under the same load, and the lists of 200
   users compared (a change to serving alone must keep them: ``lists@REV`` 1.0). With
   ``--serve-variant NAME=SETTINGS`` the same model is also served with other serving
   settings (e.g. ``rank.request_threads=2``), and the /recommend requests go to every
   server in alternating slices: the settings' effect as a ratio measured in one run; then
   200 users' lists from each variant are compared with the first server's (``lists@NAME``:
   top-10 recall and the share of identical lists), for settings that change what is
   ranked, such as an approximate index. Each server's mean time per ranking stage (events,
   model, ranking; its ``GET /metrics``) is reported as ``stages_ms@NAME``. With
   ``--model-variant NAME=SETTINGS`` another model is trained on the same graph with other
   training settings (e.g. ``configs/accurate.yaml``'s ``model.dim=128;model.ensemble_size=2``)
   and served beside the first in the same way: two models' latency as a ratio from one run,
   on the same machine at the same time. ``cpu_steal`` gives, per kind of request, the share of
   CPU time the hypervisor took while it was measured (a contended host slows every step);
3. rank every user with ``--all-users`` (batched matrix scoring) and time a naive loop
   of single-user calls over ``--naive-users`` users; report the ratio per user.

Usage:
    python scripts/bench_serving.py --products 100000 --users 50000 --events-per-user 20
    python scripts/bench_serving.py --products 20000 --users 10000   # quicker
    python scripts/bench_serving.py --products 100000 --users 50000 --set train.epochs=1 \
        --requests 200 --explain-requests 0 --naive-users 20 --before c18aecc   # against revision c18aecc
    python scripts/bench_serving.py --products 100000 --users 50000 --set train.epochs=1 \
        --serve-variant threads2=rank.request_threads=2   # one request on two torch threads against one
    python scripts/bench_serving.py --products 100000 --users 50000 --set train.epochs=1 --explain-requests 0 \
        --search-requests 0 --naive-users 0 --model-variant "accurate=model.dim=128;model.ensemble_size=2"
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench_machine import StealMeter, describe_machine

REPO = Path(__file__).resolve().parent.parent


def client(url: str, requests: list[list]) -> list[float]:
    """Sequential ``[path, params]`` GET requests from this (separate) process; milliseconds each."""
    import httpx

    latencies = []
    with httpx.Client(timeout=30.0) as http:
        for path, params in requests:
            start = time.perf_counter()
            response = http.get(f"{url}{path}", params=params)
            latencies.append((time.perf_counter() - start) * 1000)
            response.raise_for_status()
    return latencies


def wait_until_serving(url: str, server: subprocess.Popen, timeout_s: float) -> bool:
    """Poll ``GET /health`` until it answers 200 (True), the server exits or ``timeout_s`` passes (False)."""
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50_ms": round(pick(0.50), 2), "p95_ms": round(pick(0.95), 2), "p99_ms": round(pick(0.99), 2), "n": len(values)}


def serve(
    model_dir: Path, overrides: list[str], env: dict[str, str], source: Path | None = None
) -> tuple[subprocess.Popen, str]:
    """``kgrec serve`` on a free port in its own process, once healthy: the code of ``source`` (a
    tree of this repository; default this one). ``python -m`` puts the working directory first
    on the import path, so the process starts in ``source``: a PYTHONPATH alone would not win."""
    from kgrec.store.server import free_port

    http_port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "kgrec.cli", "serve", "--port", str(http_port), "--model", str(model_dir),
         *[a for o in overrides for a in ("--set", o)]],
        env={**env, "PYTHONPATH": str(source or REPO)}, cwd=source or REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{http_port}"
    if not wait_until_serving(url, server, timeout_s=300):
        raise SystemExit(f"kgrec serve did not come up: {server.stderr.read().decode()[-2000:]}")
    return server, url


def compare_servers(
    urls: dict[str, str], requests: list[list], work: Path, env: dict[str, str], warmup: int, rounds: int = 10
) -> dict[str, dict]:
    """The same requests against each server, in ``rounds`` alternating slices (so a host that
    gets busier or quieter during the run slows every server alike; the server that goes first
    turns with each round), each server warmed up with the first ``warmup``; percentiles per server name."""
    warm, measured = requests[:warmup], requests[warmup:]
    size = -(-len(measured) // rounds)
    slices = [measured[start:start + size] for start in range(0, len(measured), size)]
    latencies: dict[str, list[float]] = {name: [] for name in urls}
    names = list(urls)
    for round_index, part in enumerate(slices):
        turn = round_index % len(names)
        for name in names[turn:] + names[:turn]:
            requests_file = work / f"{name}-{round_index}.json"
            requests_file.write_text(json.dumps((warm if round_index == 0 else []) + part))
            out = subprocess.run(
                [sys.executable, __file__, "--client", urls[name], str(requests_file)],
                capture_output=True, text=True, check=True, env=env,
            )
            latencies[name] += json.loads(out.stdout.strip().splitlines()[-1])[len(warm) if round_index == 0 else 0:]
    return {name: percentiles(values) for name, values in latencies.items()}


def compare_lists(urls: dict[str, str], user_ids: list[str], k: int = 10) -> dict[str, dict]:
    """Each variant's /recommend lists against the first server's for the same users: the
    share of the first server's top ``k`` it also lists (top-k recall), and the share of
    users given the very same list. Settings that change what is ranked (an approximate
    index) show here; serving settings alone (threads) must give 1.0."""
    import httpx
    from bench_retrieval import recall, same_list_share

    with httpx.Client(timeout=30.0) as http:
        lists = {name: [top_products(http, url, user, k) for user in user_ids] for name, url in urls.items()}
    reference, *variants = urls
    return {
        f"lists@{name.split('@', 1)[-1]}": {
            "users": len(user_ids),
            "top_k_recall": round(recall(lists[name], lists[reference]), 4),
            "same_list": round(same_list_share(lists[name], lists[reference]), 4),
        }
        for name in variants
    }


def stage_means(url: str) -> dict[str, float]:
    """The server's mean time per ranking stage so far (``kgrec_rank_stage_seconds`` of
    ``GET /metrics``), in ms: where its requests spent their time, without the client's view."""
    import re

    import httpx

    totals: dict[str, dict[str, float]] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30.0).text.splitlines():
        found = re.fullmatch(r'kgrec_rank_stage_seconds_(sum|count)\{stage="(\w+)"\} (\S+)', line)
        if found:
            totals.setdefault(found.group(2), {})[found.group(1)] = float(found.group(3))
    return {stage: round(t["sum"] / t["count"] * 1000, 2) for stage, t in totals.items() if t.get("count")}


def top_products(http, url: str, user: str, k: int) -> list[str]:
    """The product ids of ``GET /recommend`` for ``user``, best first."""
    response = http.get(f"{url}/recommend", params={"user": user, "k": k})
    response.raise_for_status()
    return [item["product_id"] for item in response.json()["items"]]


@contextmanager
def throwaway_neo4j(work: Path, heap_mb: int = 2048, pagecache_mb: int = 1024) -> Iterator[None]:
    """A managed Neo4j on a free port in a temporary folder, for one benchmark: its address and
    password in ``NEO4J_URI``/``NEO4J_USER``/``NEO4J_PASSWORD`` (kgrec and child processes use
    it); afterwards the server is stopped and its folder and ``work`` deleted."""
    from kgrec.store.server import free_port, start_server, stop_server

    port = free_port()
    state = start_server(port=port, heap_mb=heap_mb, pagecache_mb=pagecache_mb)
    user, password = state.auth
    os.environ.update(NEO4J_URI=state.uri, NEO4J_USER=user, NEO4J_PASSWORD=password)
    try:
        yield
    finally:
        stop_server(port)
        shutil.rmtree(state.server_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


def report(figures: dict, json_path: Path | None) -> None:
    """Print the figures as JSON, and write them to ``json_path`` when given."""
    print(json.dumps(figures, indent=2))
    if json_path:
        json_path.write_text(json.dumps(figures, indent=2))


def parse_variants(parser: argparse.ArgumentParser, option: str, specs: list[str]) -> dict[str, list[str]]:
    """``NAME=KEY=VALUE[;KEY=VALUE...]`` options as ``{NAME: ["KEY=VALUE", ...]}``."""
    variants = {}
    for spec in specs:
        name, _, settings = spec.partition("=")
        if not name or "=" not in settings:
            parser.error(f"{option} {spec!r}: expected NAME=KEY=VALUE[;KEY=VALUE...], e.g. threads2=rank.request_threads=2")
        variants[name] = settings.split(";")
    return variants


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=10_000)
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=200, help=(
        "requests each server answers before the measured ones, per kind of request: the JVM compiles "
        "Neo4j's read path while it serves, and a fresh server's first reads are slower"))
    parser.add_argument("--explain-requests", type=int, default=200)
    parser.add_argument("--naive-users", type=int, default=300)
    parser.add_argument("--set", dest="overrides", action="append", default=["model.use_text=false", "train.epochs=3"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--search-requests", type=int, default=300)
    parser.add_argument("--before", "--search-before", dest="before", metavar="REV", help=(
        "also serve git revision REV of this repository (a second kgrec serve on the same graph and model): "
        "the /recommend and /search requests go to both in alternating slices, reported as recommend_before@REV "
        "and search_before@REV, and 200 users' lists are compared (lists@REV)"))
    parser.add_argument("--serve-variant", action="append", default=[], metavar="NAME=SETTINGS", help=(
        "also serve the same model with these ';'-separated serving settings (e.g. "
        "threads2=rank.request_threads=2) in a second kgrec serve; the /recommend requests go to every "
        "server in alternating slices, reported as recommend@NAME"))
    parser.add_argument("--model-variant", action="append", default=[], metavar="NAME=SETTINGS", help=(
        "train another model on the same graph with these training settings (KEY=VALUE[;KEY=VALUE...]) and "
        "send the /recommend requests to it too, in alternating slices"))
    parser.add_argument("--client", nargs=2, metavar=("URL", "REQUESTS_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:  # the separate client process
        url, requests_file = args.client
        print(json.dumps(client(url, json.loads(Path(requests_file).read_text()))))
        return
    variants, model_variants = (parse_variants(parser, option, specs) for option, specs in (
        ("--serve-variant", args.serve_variant), ("--model-variant", args.model_variant)))

    from kgrec.config import load_config
    from kgrec.ingest.synthetic import write_sample_shop
    from kgrec.pipeline import build_graph, train
    from kgrec import pipeline

    work = Path(tempfile.mkdtemp(prefix="kgrec-bench-serving-"))
    figures: dict = {"machine": describe_machine()}
    server = None
    other_servers: list[subprocess.Popen] = []  # variants and --before, idle when not compared
    with throwaway_neo4j(work):
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}  # with the NEO4J_* of the throwaway server
        try:
            config = load_config(None, args.overrides)
            shop = write_sample_shop(work / "shop", args.products, args.users, seed=0, events_per_user=args.events_per_user)
            t0 = time.perf_counter()
            built = build_graph(config, shop["products"], shop["interactions"], shop["relations"], shop["users"])
            figures["build_graph_s"] = round(time.perf_counter() - t0, 1)
            figures["interactions"] = built.summary.totals.get("INTERACTED")
            t0 = time.perf_counter()
            run = train(config, runs_dir=work / "runs", write_embeddings=False, echo=lambda *_: None)
            figures["train_s"] = round(time.perf_counter() - t0, 1)

            server, url = serve(run.model_dir, args.overrides, env)
            variant_urls = {}
            for name, settings in variants.items():
                variant, variant_urls[f"recommend@{name}"] = serve(run.model_dir, args.overrides + settings, env)
                other_servers.append(variant)
            model_urls = {}
            for name, settings in model_variants.items():
                t0 = time.perf_counter()
                other_run = train(load_config(None, args.overrides + settings), runs_dir=work / f"runs-{name}",
                                  write_embeddings=False, echo=lambda *_: None)
                figures[f"train_s@{name}"] = round(time.perf_counter() - t0, 1)
                variant, model_urls[f"recommend@{name}"] = serve(other_run.model_dir, args.overrides + settings, env)
                other_servers.append(variant)
            before_urls = {}
            if args.before:
                from bench_load import export_revision

                source = export_revision(args.before, work / "before-src")
                before, before_urls[f"recommend_before@{args.before}"] = serve(run.model_dir, args.overrides, env, source)
                other_servers.append(before)
            rng = random.Random(0)
            user_ids = [line.split(",")[0] for line in shop["users"].read_text().splitlines()[1:]]
            # Search queries as shoppers type them: a product's brand and the last word of its category.
            import polars as pl

            catalog = pl.read_csv(shop["products"], infer_schema_length=0).select("brand", "category").drop_nulls()
            queries = [f"{brand} {category.split('>')[-1].strip()}" for brand, category in catalog.sample(
                min(catalog.height, args.search_requests + args.warmup), seed=0, with_replacement=True).rows()]
            runs = {
                "recommend": [["/recommend", {"user": rng.choice(user_ids), "k": 10}] for _ in range(args.requests + args.warmup)],
                "recommend_explain": [["/recommend", {"user": rng.choice(user_ids), "k": 10, "explain": "true"}]
                                      for _ in range(args.explain_requests + args.warmup)],
                "search": [["/search", {"query": q, "user": rng.choice(user_ids), "k": 10}] for q in queries],
            }
            figures["cpu_steal"] = {}  # per kind of request: the host's share of the cores while it was measured
            for name, requests in runs.items():
                if len(requests) <= args.warmup:
                    continue
                steal = StealMeter()
                servers = {name: url}
                if name == "recommend":
                    servers.update({**variant_urls, **before_urls, **model_urls})
                elif name == "search" and before_urls:
                    servers = {f"search_before@{args.before}": next(iter(before_urls.values())), **servers}
                figures.update(compare_servers(servers, requests, work, env, args.warmup))
                figures["cpu_steal"][name] = steal.share()
                if name == "recommend" and len(servers) > 1:
                    for server_name, server_url in servers.items():
                        figures[f"stages_ms@{server_name.split('@', 1)[-1]}"] = stage_means(server_url)
                    if variant_urls or before_urls:  # other models rank differently by design: only serving code and settings are compared
                        same_model = {"recommend": url, **variant_urls, **before_urls}
                        figures.update(compare_lists(same_model, rng.sample(user_ids, min(len(user_ids), 200))))

            loaded = pipeline.load_model(config, run.model_dir, None)
            t0 = time.perf_counter()
            n_all = pipeline.recommend_all(loaded, work / "recs.jsonl", k=10)
            batch_s = time.perf_counter() - t0
            naive_users = user_ids[: args.naive_users]
            t0 = time.perf_counter()
            for user in naive_users:
                pipeline.recommend(loaded, user, k=10)
            naive_s = time.perf_counter() - t0
            figures["all_users"] = {
                "users": n_all,
                "batched_s": round(batch_s, 2),
                "batched_ms_per_user": round(batch_s / n_all * 1000, 3),
            }
            if naive_users:  # --naive-users 0 skips the per-user loop
                figures["all_users"]["naive_ms_per_user"] = round(naive_s / len(naive_users) * 1000, 2)
                figures["all_users"]["speedup"] = round((naive_s / len(naive_users)) / (batch_s / n_all), 1)
        finally:
            for process in [server, *other_servers]:
                if process is not None:
                    process.terminate()
                    process.wait(timeout=30)
    report(figures, args.json)


if __name__ == "__main__":
    main()
