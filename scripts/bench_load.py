#!/usr/bin/env python
"""Serving under load: many concurrent clients against ``kgrec serve``, with and without writers.

Everything runs on loopback against a throwaway Neo4j (free port, temporary folder) and a
synthetic shop (the ``kgrec sample-data`` default: 500 products, 300 users), and stops by
itself: every phase has a time limit.

1. write the shop, build the graph, train a small model (text off, few epochs);
2. for each server setup (``--setup``), each load (``--rate``) and each writer count (0 and
   ``--writers``): start ``kgrec serve`` in its own process, then from a *separate* client
   process send ``GET /recommend?user=U&k=10`` (random users) over ``--clients`` concurrent
   keep-alive connections for ``--warmup`` + ``--duration`` seconds; the first ``--warmup``
   seconds are not counted. The load is closed loop (``--rate 0``, the default: each
   connection sends its next request as soon as the last is answered, so the server sets
   the pace and this measures its maximum throughput) or open loop (``--rate R``: requests
   are due at R a second in all, evenly spread, whatever the server does, and each latency
   counts from when its request was due, as wrk2 and k6's constant-arrival-rate do). Writers
   are separate processes calling :func:`kgrec.pipeline.add_event` (what ``kgrec add-event``
   runs) ``--write-rate`` times a second each, each through one open connection;
3. report throughput, latency percentiles, errors by type and the CPU seconds each process
   used per request (server, Neo4j, client), per run and as ratios to the first setup.

A setup is ``NAME=ARGS`` (the extra ``kgrec serve`` arguments) or ``NAME@REV=ARGS`` to run
the server from another git revision of this repository (exported to a temporary folder),
so the old and new process models are measured in the same run on the same machine:

    python scripts/bench_load.py --setup 'before@c59b28e=' --setup 'after=--workers 2'
    python scripts/bench_load.py --setup 'serve=--workers 2' --rate 0 --rate 300   # both load models
    python scripts/bench_load.py --clients 20 --duration 10 --writers 0   # quick look

The client speaks HTTP/1.1 on raw asyncio streams (uvloop when installed) rather than
through httpx: at a few hundred requests a second on 2 cores, httpx's own CPU time would
be a large part of what is measured. Errors are counted by what the client saw: an HTTP
status other than 200, a connection refused or reset, a connection the server closed
before answering, or a timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench_machine import describe_machine

REPO = Path(__file__).resolve().parent.parent
REQUEST_TIMEOUT_S = 30.0


# --------------------------------------------------------------------------- client process


async def _one_client(
    host: str, port: int, users: list[str], rng: random.Random, t_measure: float, t_end: float,
    latencies: list[float], errors: Counter, samples: dict[str, str], schedule: tuple[float, float] | None = None,
) -> None:
    """One keep-alive connection, one request at a time until ``t_end``; a broken connection
    is counted and reopened.

    ``schedule`` None: closed loop, the next request as soon as the last is answered, its
    latency from when it was sent. ``(first, interval)``: open loop, requests due at
    ``first + n * interval``; one still unanswered when the next is due delays that one,
    and every latency counts from when the request was due, not sent, so a slow answer
    is charged for the requests it held up (no coordinated omission, as in wrk2).
    """
    reader = writer = None
    due = None if schedule is None else schedule[0]
    while time.monotonic() < t_end:
        user = rng.choice(users)
        request = f"GET /recommend?user={user}&k=10 HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
        if due is not None:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if due >= t_end:
                break
        start = time.monotonic() if due is None else due
        if due is not None:
            due += schedule[1]
        kind = detail = None
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                if writer is None:
                    reader, writer = await asyncio.open_connection(host, port)
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length, close = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                body = await reader.readexactly(length)
            if status != 200:
                kind, detail = f"http_{status}", body[:300].decode(errors="replace")
            if close:  # the server asked to end this connection: open a new one next time
                writer.close()
                writer = None
        except TimeoutError:
            kind = "timeout"
        except ConnectionRefusedError as e:
            kind, detail = "connect_refused", repr(e)
        except ConnectionResetError as e:
            kind, detail = "read_error_reset", repr(e)
        except asyncio.IncompleteReadError as e:
            # What httpx reports as RemoteProtocolError "Server disconnected without sending a response".
            kind = "server_closed_before_response" if not e.partial else "incomplete_response"
            detail = repr(e)[:300]
        except OSError as e:
            kind, detail = f"os_error_{type(e).__name__}", repr(e)
        end = time.monotonic()
        if kind is not None and writer is not None and not kind.startswith("http_"):
            writer.close()
            writer = None
        if end < t_measure or end > t_end:
            continue
        if kind is None:
            latencies.append((end - start) * 1000)
        else:
            errors[kind] += 1
            if detail is not None:
                samples.setdefault(kind, detail)
            if kind == "connect_refused":
                await asyncio.sleep(0.05)  # do not spin on a dead server
    if writer is not None:
        writer.close()


async def _drive(url: str, users: list[str], clients: int, warmup_s: float, duration_s: float, seed: int, rate: float) -> dict:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    latencies: list[float] = []
    errors: Counter = Counter()
    samples: dict[str, str] = {}
    now = time.monotonic()
    t_measure, t_end = now + warmup_s, now + warmup_s + duration_s

    cpu_at_measure = 0.0

    async def mark() -> None:
        # The parent reads this line to start its CPU accounting with the measured window.
        nonlocal cpu_at_measure
        await asyncio.sleep(max(0.0, t_measure - time.monotonic()))
        cpu_at_measure = time.process_time()
        print("measuring", flush=True)

    marker = asyncio.create_task(mark())
    # Open loop: connection i's requests are due every clients/rate s, offset by i/rate, so
    # that together they arrive evenly at ``rate`` a second.
    schedules = [None if rate <= 0 else (now + i / rate, clients / rate) for i in range(clients)]
    await asyncio.gather(*[
        _one_client(host, int(port), users, random.Random(seed * 10_000 + i), t_measure, t_end, latencies, errors, samples,
                    schedules[i])
        for i in range(clients)
    ])
    await marker
    elapsed = min(time.monotonic(), t_end) - t_measure
    return {"latencies_ms": latencies, "errors": dict(errors), "error_samples": samples, "elapsed_s": elapsed,
            "cpu_s": time.process_time() - cpu_at_measure}


def run_client(
    url: str, users_file: str, clients: int, warmup_s: float, duration_s: float, seed: int, rate: float, out_file: str,
) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    users = json.loads(Path(users_file).read_text())
    out = asyncio.run(_drive(url, users, clients, warmup_s, duration_s, seed, rate))
    # A file, not stdout: the parent reads the "measuring" line from stdout while this runs.
    Path(out_file).write_text(json.dumps(out))


# --------------------------------------------------------------------------- writer process


def run_writer(shop_dir: str, rate: float, seconds: float, seed: int, overrides: list[str]) -> None:
    """Call ``pipeline.add_event`` (what ``kgrec add-event`` runs) ``rate`` times a second,
    through one open connection, as a service that records a shop's events would."""
    from kgrec.config import load_config
    from kgrec.pipeline import add_event
    from kgrec.store.connection import GraphStore

    config = load_config(None, overrides)
    store = GraphStore.connect(config.store)
    shop = Path(shop_dir)
    users = [line.split(",")[0] for line in (shop / "users.csv").read_text().splitlines()[1:]]
    products = [line.split(",")[0] for line in (shop / "products.csv").read_text().splitlines()[1:]]
    rng = random.Random(seed)
    done, errors, latencies = 0, Counter(), []
    t_end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < t_end:
        start = time.monotonic()
        try:
            add_event(config, rng.choice(users), rng.choice(products), rng.choice(["view", "click", "cart", "purchase"]),
                      store=store)
            done += 1
            latencies.append((time.monotonic() - start) * 1000)
        except Exception as e:  # noqa: BLE001 - every failure is counted by its type
            errors[type(e).__name__] += 1
        if rate > 0:
            next_at += 1.0 / rate
            time.sleep(max(0.0, next_at - time.monotonic()))
    store.close()
    print(json.dumps({"writes": done, "errors": dict(errors), **summary(latencies)}), flush=True)


# --------------------------------------------------------------------------- accounting


def summary(latencies: list[float]) -> dict[str, float | None]:
    if not latencies:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(latencies)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 1)  # noqa: E731
    return {"p50_ms": pick(0.50), "p90_ms": pick(0.90), "p99_ms": pick(0.99), "max_ms": round(ordered[-1], 1)}


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (Linux /proc), for the CPU time of uvicorn's workers."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, []))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the processes (0 for one that is gone)."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick
    return total


class CpuMeter:
    """CPU seconds used by named process trees between :meth:`start` and :meth:`stop`."""

    def __init__(self, roots: dict[str, int]):
        self.roots = roots
        self.available = Path("/proc/self/stat").exists()

    def _read(self) -> dict[str, float]:
        return {name: cpu_seconds(process_tree(pid)) for name, pid in self.roots.items()}

    def per_process(self, name: str) -> dict[int, float]:
        return {pid: cpu_seconds([pid]) for pid in process_tree(self.roots[name])}

    def start(self) -> None:
        if self.available:
            self.before, self.t0 = self._read(), time.monotonic()

    def stop(self) -> dict[str, float] | None:
        if not self.available:
            return None
        after = self._read()
        return {name: round(after[name] - self.before[name], 2) for name in self.roots}


# --------------------------------------------------------------------------- orchestration


def wait_healthy(url: str, server: subprocess.Popen, timeout_s: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"kgrec serve did not come up: {server.stderr.read().decode()[-3000:]}")
        time.sleep(0.5)


def parse_setup(text: str) -> tuple[str, str | None, list[str]]:
    """``NAME=ARGS`` or ``NAME@REV=ARGS`` → ``(name, rev, args)``."""
    head, sep, args = text.partition("=")
    if not sep:
        raise SystemExit(f"--setup {text!r}: expected NAME=ARGS or NAME@REV=ARGS, e.g. 'after=--workers 2'.")
    name, _, rev = head.partition("@")
    return name, rev or None, args.split()


def export_revision(rev: str, into: Path) -> Path:
    """The tree of git revision ``rev`` of this repository, written under ``into``."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], capture_output=True, check=False)
    if archive.returncode != 0:
        raise SystemExit(f"git archive {rev} failed: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def run_phase(
    args, name: str, source: Path, serve_args: list[str], writers: int, rate: float, model_dir: Path, shop_dir: Path,
    users_file: Path, env: dict[str, str], neo4j_pid: int, port_of,
) -> dict:
    """One server, one load: returns the figures of the measured window."""
    http_port = port_of()
    url = f"http://127.0.0.1:{http_port}"
    server_env = {**env, "PYTHONPATH": str(source)}
    server = subprocess.Popen(
        [sys.executable, "-m", "kgrec.cli", "serve", "--port", str(http_port), "--model", str(model_dir),
         *[a for o in args.overrides for a in ("--set", o)], *serve_args],
        env=server_env, cwd=source, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    writer_procs: list[subprocess.Popen] = []
    client = None
    try:
        wait_healthy(url, server)
        phase_s = args.warmup + args.duration
        client_out = users_file.parent / f"client-{http_port}.json"
        client = subprocess.Popen(
            [sys.executable, __file__, "--client", url, str(users_file), str(args.clients), str(args.warmup),
             str(args.duration), str(args.seed), str(rate), str(client_out)],
            env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for w in range(writers):
            writer_procs.append(subprocess.Popen(
                [sys.executable, __file__, "--writer", str(shop_dir), str(args.write_rate), str(phase_s),
                 str(args.seed + 100 + w), *args.overrides],
                env={**env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            ))
        # The client reports its own CPU time: it has exited when the meter stops.
        meter = CpuMeter({"server": server.pid, "neo4j": neo4j_pid,
                          **{f"writer{w}": p.pid for w, p in enumerate(writer_procs)}})
        assert client.stdout is not None
        line = client.stdout.readline()  # "measuring", after the warm-up
        if line.strip() == "measuring":
            meter.start()
            workers_before = meter.per_process("server")
        out, err = client.communicate(timeout=phase_s + REQUEST_TIMEOUT_S + 60)
        cpu = meter.stop() if line.strip() == "measuring" else None
        if cpu is not None:
            workers_after = meter.per_process("server")
            worker_cpu = sorted((round(workers_after[p] - workers_before.get(p, 0.0), 2) for p in workers_after), reverse=True)
        if client.returncode != 0:
            raise SystemExit(f"the client failed: {err[-3000:]}")
        result = json.loads(client_out.read_text())
        writer_results = []
        for p in writer_procs:
            w_out, w_err = p.communicate(timeout=REQUEST_TIMEOUT_S + 60)
            if p.returncode != 0:
                raise SystemExit(f"a writer failed: {w_err[-3000:]}")
            writer_results.append(json.loads(w_out.strip().splitlines()[-1]))
    finally:
        for p in [client, *writer_procs]:
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
            server.wait()
    latencies = result["latencies_ms"]
    ok = len(latencies)
    failed = sum(result["errors"].values())
    figures = {
        "setup": name,
        "serve_args": " ".join(serve_args),
        "writers": writers,
        "load": "closed loop" if rate <= 0 else f"open loop, {rate:g} req/s offered",
        "offered_rps": rate if rate > 0 else None,
        "requests_ok": ok,
        "requests_failed": failed,
        "errors": result["errors"],
        "error_samples": result["error_samples"],
        "throughput_rps": round(ok / result["elapsed_s"], 1),
        **summary(latencies),
    }
    if cpu is not None and ok:
        cpu["client"] = round(result["cpu_s"], 2)
        figures["cpu_s"] = cpu
        figures["cpu_ms_per_request"] = {k: round(v / ok * 1000, 2) for k, v in cpu.items() if not k.startswith("writer")}
        figures["cpu_busy_of_window"] = round(sum(cpu.values()) / result["elapsed_s"], 2)
        figures["server_cpu_s_by_process"] = worker_cpu  # uvicorn's parent and its workers
    if writer_results:
        figures["writes"] = {
            "done": sum(w["writes"] for w in writer_results),
            "errors": dict(sum((Counter(w["errors"]) for w in writer_results), Counter())),
            "p50_ms": max(w["p50_ms"] or 0 for w in writer_results),
            "p99_ms": max(w["p99_ms"] or 0 for w in writer_results),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=500)
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--events-per-user", type=int, default=20)
    parser.add_argument("--clients", type=int, default=100, help="Concurrent connections, each one request at a time.")
    parser.add_argument("--duration", type=float, default=60.0, help="Measured seconds per run.")
    parser.add_argument("--warmup", type=float, default=5.0, help="Seconds of load before measuring.")
    parser.add_argument("--writers", type=int, default=2, help="Writer processes in the runs with writers (0: none).")
    parser.add_argument("--write-rate", type=float, default=10.0, help="add_event calls a second per writer (0: flat out).")
    parser.add_argument("--rate", type=float, action="append", default=None, metavar="REQ_PER_S",
                        help="Offered requests a second over all connections (open loop; latency from each request's "
                             "due time), or 0: closed loop (each connection sends as soon as it is answered). "
                             "Repeatable; default 0.")
    parser.add_argument("--setup", action="append", default=None, metavar="NAME[@REV]=ARGS",
                        help="A server to measure (repeatable); default 'one-worker=--workers 1' and 'two-workers=--workers 2'.")
    parser.add_argument("--rounds", type=int, default=1,
                        help="Measure every setup this many times, alternating, and report the median run of each.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=["model.use_text=false", "train.epochs=2"])
    parser.add_argument("--json", type=Path, help="Also write the figures to this file.")
    parser.add_argument("--client", nargs=8, help=argparse.SUPPRESS)
    parser.add_argument("--writer", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:  # the separate client process
        url, users_file, clients, warmup, duration, seed, rate, out_file = args.client
        run_client(url, users_file, int(clients), float(warmup), float(duration), int(seed), float(rate), out_file)
        return
    if args.writer:  # a separate writer process
        shop_dir, rate, seconds, seed, *overrides = args.writer
        run_writer(shop_dir, float(rate), float(seconds), int(seed), overrides)
        return

    setups = [parse_setup(s) for s in (args.setup or ["one-worker=--workers 1", "two-workers=--workers 2"])]
    writer_counts = [0] + ([args.writers] if args.writers > 0 else [])
    rates = args.rate or [0.0]

    from kgrec.config import load_config
    from kgrec.ingest.synthetic import write_sample_shop
    from kgrec.pipeline import build_graph, train
    from kgrec.store.server import free_port, start_server, stop_server

    work = Path(tempfile.mkdtemp(prefix="kgrec-bench-load-"))
    port = free_port()
    state = start_server(port=port, heap_mb=1024, pagecache_mb=256)
    user, password = state.auth
    # The managed server asks for its password; every process here gets it from the environment.
    env = {**os.environ, "NEO4J_URI": state.uri, "NEO4J_USER": user, "NEO4J_PASSWORD": password, "OMP_WAIT_POLICY": "PASSIVE"}
    os.environ.update({k: env[k] for k in ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD")})
    figures: dict = {
        "machine": describe_machine(),
        "load_average_at_start": os.getloadavg(),
        "clients": args.clients, "duration_s": args.duration, "warmup_s": args.warmup,
        "write_rate_per_writer": args.write_rate, "runs": [],
    }
    try:
        config = load_config(None, args.overrides)
        shop = write_sample_shop(work / "shop", args.products, args.users, seed=args.seed, events_per_user=args.events_per_user)
        build_graph(config, shop["products"], shop["interactions"], shop["relations"], shop["users"])
        run = train(config, runs_dir=work / "runs", write_embeddings=False, echo=lambda *_: None)
        users = [line.split(",")[0] for line in shop["users"].read_text().splitlines()[1:]]
        users_file = work / "users.json"
        users_file.write_text(json.dumps(users))
        sources = {}
        for name, rev, _ in setups:
            sources[name] = export_revision(rev, work / f"src-{name}") if rev else REPO
        measured: dict[tuple[str, int, float], list[dict]] = {}
        loads = [(writers, rate) for rate in rates for writers in writer_counts]
        for round_index in range(args.rounds):
            for writers, rate in loads:
                for name, rev, serve_args in setups:
                    label = f"{name}{'@' + rev if rev else ''}, {writers} writer(s), round {round_index + 1}"
                    load = "closed loop" if rate <= 0 else f"open loop at {rate:g} req/s"
                    print(f"[bench_load] {label}: {args.clients} clients, {load}, {args.warmup:g}+{args.duration:g} s",
                          file=sys.stderr, flush=True)
                    result = run_phase(args, name, sources[name], serve_args, writers, rate, run.model_dir,
                                       shop["products"].parent, users_file, env, state.pid, free_port)
                    result["revision"] = rev or "working tree"
                    result["load_average_after"] = os.getloadavg()
                    measured.setdefault((name, writers, rate), []).append(result)
                    print(f"[bench_load]   {result['throughput_rps']} req/s, p50 {result['p50_ms']} ms, "
                          f"p99 {result['p99_ms']} ms, errors {result['errors']}, load average {os.getloadavg()[0]:.1f}",
                          file=sys.stderr, flush=True)
        for writers, rate in loads:
            for name, _, _ in setups:
                runs = sorted(measured[(name, writers, rate)], key=lambda r: r["throughput_rps"])
                median = dict(runs[len(runs) // 2])
                # Errors count in every round, not only in the median one.
                median["rounds"] = [{k: r[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "requests_failed")} for r in runs]
                median["requests_failed_all_rounds"] = sum(r["requests_failed"] for r in runs)
                figures["runs"].append(median)
        first = {(r["writers"], r["load"]): r for r in figures["runs"] if r["setup"] == setups[0][0]}
        for r in figures["runs"]:
            base = first[(r["writers"], r["load"])]
            if base["throughput_rps"] and r["p99_ms"] and base["p99_ms"]:
                r["vs_" + setups[0][0]] = {
                    "throughput_x": round(r["throughput_rps"] / base["throughput_rps"], 2),
                    "p99_x": round(r["p99_ms"] / base["p99_ms"], 3),
                }
    finally:
        stop_server(port)
        shutil.rmtree(state.server_dir, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
