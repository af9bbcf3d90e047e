"""``kgrec serve``: a long-lived HTTP API that keeps one model warm.

Endpoints (JSON). GET requests never write.

``GET /health``
    ``{"status": "ok", "model": ..., "users": n, "products": n}``; open without a key.
``GET /recommend?user=U&k=10&query=…&weights=relevance=0.7,popularity=0.1,diversity=0.2&include_seen=false&explain=false``
    The same JSON as ``kgrec recommend --format json``; ``explain=true`` adds the reasons.
``POST /recommend`` (same parameters)
    Explains the list and stores it in Neo4j as ``RECOMMENDED`` relationships, like
    ``kgrec recommend --explain``.
``GET /explain?user=U&product=P``
    The knowledge-graph reasons for one pair.
``GET /search?query=TEXT&user=U&k=10&weights=…&include_seen=false``
    The same JSON as ``kgrec search --format json``: what the query names (brands,
    categories, products), and the ranked products with every part of their score.
``GET /metrics``
    Prometheus text format: requests, errors and latency per endpoint, the model id, its
    age and the events recorded since it was trained.

With an API key (``kgrec serve --api-key-env VAR``) every endpoint but ``/health`` and ``/metrics``
needs the header ``X-API-Key``. A user error (unknown user or product, bad ``k``,
weights or query) is a 4xx with ``{"detail": message}``; the server stays up.
Interactive docs are at ``/docs``.

The process model (:func:`run_server`): ``--workers N`` processes share the port, each with
its own warm model and Neo4j driver, one torch thread and a few request threads (``--threads``;
ranking holds the GIL, so more threads only queue inside Python). ``GET /recommend`` requests
that arrive while a batch is being ranked are ranked together in the next batch
(:class:`RecommendBatcher`): one read of their events and one pass through the model, at a
fraction of the CPU time per user, and nothing waits when requests come one at a time. Each
worker answers 503 at once, with ``Retry-After``, when ``--max-in-flight`` requests are
already in progress in it, instead of queueing without bound. Idle keep-alive connections
are kept ``--keep-alive`` seconds, longer than HTTP clients keep theirs (httpx: 5 s), so it
is always the client that closes an idle connection: a server closing one while a request
is on its way is what clients see as a read error or "server disconnected".
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import os
from collections.abc import Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from kgrec import pipeline
from kgrec.config import KgrecConfig
from kgrec.errors import (
    ConfigError, GraphStoreUnavailable, KgrecError, ModelNotFoundError, UnknownProductError, UnknownUserError,
)
from kgrec.rank.params import Weights
from kgrec.service import LoadedModel
from kgrec.serve_metrics import add_metrics


def status_code(error: KgrecError) -> int:
    """404 for things that do not exist, 503 for a missing database, else 400."""
    if isinstance(error, (UnknownUserError, UnknownProductError, ModelNotFoundError)):
        return 404
    if isinstance(error, GraphStoreUnavailable):
        return 503
    return 400


def create_app(loaded: LoadedModel, api_key: str | None = None) -> FastAPI:
    """The FastAPI app around a loaded model; ``api_key`` guards every endpoint but ``/health`` and ``/metrics``."""
    app = FastAPI(
        title="kgrec",
        description="Knowledge-graph + GNN recommendations, scored and explained.",
        version=__import__("kgrec").__version__,
    )

    @app.exception_handler(KgrecError)
    async def _user_error(_request, error: KgrecError) -> JSONResponse:
        return JSONResponse(status_code=status_code(error), content={"detail": str(error)})

    # async: a check this small would cost more in a hop to the thread pool than it does itself.
    async def require_key(x_api_key: str | None = Header(None, description="The API key, when the server has one.")) -> None:
        if api_key is not None and not hmac.compare_digest(x_api_key or "", api_key):
            raise HTTPException(status_code=401, detail="Missing or wrong X-API-Key header.")

    guarded = [Depends(require_key)]
    metrics = add_metrics(app, loaded)

    # async: answered on the event loop, so a health check gets through while every thread ranks.
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": loaded.model_id,
            "users": len(loaded.recommender.user_ids or []),
            "products": loaded.num_products,
        }

    def ranked(user: str, k: int | None, query: str | None, weights: str | None, include_seen: bool) -> pipeline.Recommendations:
        return pipeline.recommend(
            loaded, user, k=k, query=query,
            weights=Weights.parse(weights) if weights is not None else None,
            include_seen=include_seen,
        )

    batcher = RecommendBatcher(
        lambda options, user_ids: pipeline.recommend_users(
            loaded, user_ids, *options, observe_stage=metrics.observe_stage
        ),
        MAX_BATCH_USERS,
    )

    # async: the request waits for its batch on the event loop; the batch is ranked on a thread.
    @app.get("/recommend", dependencies=guarded)
    async def recommend(
        user: str = Query(..., description="The user id."),
        k: int | None = Query(None, description="How many products (default: rank.k, 10)."),
        query: str | None = Query(None, description="Optional text: a personalised search."),
        weights: str | None = Query(None, description="e.g. relevance=0.7,popularity=0.1,diversity=0.2"),
        include_seen: bool = Query(False, description="Also rank products the user already interacted with."),
        explain: bool = Query(False, description="Add knowledge-graph reasons (read only)."),
    ) -> JSONResponse:
        options = (k, Weights.parse(weights) if weights is not None else None, query, include_seen)
        result = await batcher.rank(options, user)
        if explain:
            await run_in_threadpool(pipeline.add_reasons, loaded, result)
        # Plain JSON values already: a JSONResponse skips FastAPI's recursive encoder (~1 ms a request).
        return JSONResponse(result.to_dict())

    @app.post("/recommend", dependencies=guarded)
    def recommend_and_store(
        user: str = Query(...),
        k: int | None = Query(None),
        query: str | None = Query(None),
        weights: str | None = Query(None),
        include_seen: bool = Query(False),
    ) -> JSONResponse:
        result = pipeline.store_reasons(loaded, ranked(user, k, query, weights, include_seen))
        return JSONResponse(result.to_dict())

    @app.get("/explain", dependencies=guarded)
    def explain(user: str = Query(...), product: str = Query(...)) -> dict[str, Any]:
        reasons = pipeline.explain(loaded, user, [product])
        return {"user_id": user, "product_id": product, "reasons": [r.__dict__ for r in reasons.get(product, [])]}

    @app.get("/search", dependencies=guarded)
    def search(
        query: str = Query(..., description="The text to search for."),
        user: str | None = Query(None, description="Optional user id: a personalised search."),
        k: int | None = Query(None, description="How many products (default: rank.k, 10)."),
        weights: str | None = Query(None, description="e.g. relevance=0.9,popularity=0.1,diversity=0"),
        include_seen: bool | None = Query(None, description="With a user: also rank products they already interacted with."),
    ) -> JSONResponse:
        result = pipeline.search(
            loaded, query, user_id=user, k=k,
            weights=Weights.parse(weights) if weights is not None else None,
            include_seen=include_seen,
        )
        return JSONResponse(result.to_dict())

    @app.get("/metrics")  # open like /health: counts and timings, no user data
    def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(content=body, media_type=content_type)

    return app


# Users ranked in one batch at most. Per user, a batch of 32 costs about an eighth of the CPU
# time of one user alone (docs/BENCHMARKS.md); larger batches save little more and make
# every request in them wait for the slowest part.
MAX_BATCH_USERS = 32


class RecommendBatcher:
    """Ranks the requests that arrive together as one batch (``GET /recommend``).

    While a batch is ranked on a worker thread, the requests that arrive meanwhile queue
    here; the next batch takes the oldest queued requests with the same options (``k``,
    weights, query, ``include_seen``), up to ``max_batch`` users. Nothing waits for a batch
    to fill: a lone request is a batch of one, ranked at once. A batch of one is ranked on the
    event loop itself, without the hand-off to a thread and back (two wake-ups on the request's
    path; docs/BENCHMARKS.md); meanwhile the loop answers nothing else, /health included, and
    requests that arrive wait in their sockets and form the next batch.

    Every user in a batch gets the list it would get alone
    (:func:`kgrec.pipeline.recommend_users`). A batch that fails with a user error (an
    unknown user among them) is ranked again one user at a time, so each request gets its
    own answer or its own error.

    One batch is ranked at a time per worker: ranking holds Python's lock, so a second
    batch beside it would only slow both down.
    """

    def __init__(self, rank_users: Callable[[Hashable, list[str]], list], max_batch: int):
        self.rank_users = rank_users
        self.max_batch = max_batch
        self.queued: dict[Hashable, list[tuple[str, asyncio.Future]]] = {}
        self.draining: asyncio.Task | None = None  # one event loop per worker: no lock needed

    async def rank(self, options: Hashable, user_id: str) -> Any:
        """The result for ``user_id`` under ``options``, ranked in a batch with its neighbours."""
        future = asyncio.get_running_loop().create_future()
        self.queued.setdefault(options, []).append((user_id, future))
        if self.draining is None:
            self.draining = asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        import anyio.to_thread

        batch: list[tuple[str, asyncio.Future]] = []
        try:
            while self.queued:
                options, waiting = next(iter(self.queued.items()))  # the oldest options first
                batch = [(u, f) for u, f in waiting[: self.max_batch] if not f.done()]  # done: the client left
                if len(waiting) > self.max_batch:
                    self.queued[options] = waiting[self.max_batch:]
                else:
                    del self.queued[options]
                if not batch:
                    continue
                user_ids = [u for u, _ in batch]
                if len(batch) == 1:  # alone: ranked here, without a thread's hand-off and wake-ups
                    outcomes = self._rank_batch(options, user_ids)
                else:
                    outcomes = await anyio.to_thread.run_sync(self._rank_batch, options, user_ids)
                for (_, future), outcome in zip(batch, outcomes):
                    if not future.done():
                        if isinstance(outcome, Exception):
                            future.set_exception(outcome)
                        else:
                            future.set_result(outcome)
        except BaseException:  # the worker shuts down: no request may wait forever
            for _, future in [*batch, *(entry for waiting in self.queued.values() for entry in waiting)]:
                future.cancel()
            self.queued.clear()
            raise
        finally:
            self.draining = None

    def _rank_batch(self, options: Hashable, user_ids: list[str]) -> list[Any]:
        """One result or one exception per user."""
        try:
            return self.rank_users(options, user_ids)
        except KgrecError as error:
            if len(user_ids) == 1:
                return [error]
        except Exception as error:  # noqa: BLE001 - a bug: every request of the batch answers 500
            return [error] * len(user_ids)
        return [self._rank_batch(options, [user_id])[0] for user_id in user_ids]


# --- the server process ----------------------------------------------------------------

# How the parent hands its resolved config to the worker processes uvicorn starts (they are
# spawned, not forked, so they import kgrec afresh and read this; no secrets travel in it).
SETTINGS_ENV = "KGREC_SERVE_SETTINGS"
# The supervisor kills a worker that does not answer its ping within this time. uvicorn's
# default of 5 s can be missed by a busy worker on a loaded machine, and a killed worker
# drops every request it holds: a stall is better than that.
WORKER_HEALTHCHECK_TIMEOUT_S = 60


@dataclass(frozen=True)
class ServeSettings:
    """How ``kgrec serve`` runs (the options of the command)."""

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    threads: int = 4
    max_in_flight: int = 128
    keep_alive_s: int = 75
    api_key_env: str | None = None

    def __post_init__(self) -> None:
        for name in ("workers", "threads", "max_in_flight", "keep_alive_s"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1; found {getattr(self, name)}.")


def run_server(
    config: KgrecConfig, model_dir: str | Path, settings: ServeSettings, api_key: str | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> None:
    """Serve until interrupted: one process, or ``settings.workers`` behind one port.

    The model is loaded here first either way, so a missing model or database is a
    :class:`KgrecError` now rather than workers failing one after another; the workers then
    load the very directory found (not ``latest`` again, which may have moved meanwhile).
    """
    import uvicorn

    options: dict[str, Any] = dict(
        host=settings.host, port=settings.port, log_level="warning", access_log=False,
        timeout_keep_alive=settings.keep_alive_s, timeout_worker_healthcheck=WORKER_HEALTHCHECK_TIMEOUT_S,
    )
    app, loaded = load_worker_app(config, model_dir, settings, api_key)
    echo(
        f"Serving model {loaded.model_id} on http://{settings.host}:{settings.port} (docs at /docs) with "
        f"{settings.workers} worker process(es) of {settings.threads} request thread(s) each."
    )
    if settings.workers == 1:
        uvicorn.run(app, **options)  # the app's lifespan closes its store
        return
    assert loaded.recommender.path is not None
    resolved = str(loaded.recommender.path.resolve())
    app.close()
    del app, loaded
    # Only the keys the command set: a worker then fills the rest as the parent did, from the
    # model's own rank settings and the defaults (kgrec.config.with_model_rank).
    os.environ[SETTINGS_ENV] = json.dumps(
        {"config": config.model_dump(mode="json", exclude_unset=True), "model_dir": resolved, "settings": asdict(settings)}
    )
    uvicorn.run("kgrec.serve:worker_app", factory=True, workers=settings.workers, **options)


def worker_app() -> ServingApp:
    """The app of one worker process of ``kgrec serve --workers N`` (uvicorn calls this in each)."""
    raw = os.environ.get(SETTINGS_ENV)
    if not raw:
        raise ConfigError(f"{SETTINGS_ENV} is not set: kgrec.serve:worker_app is started by `kgrec serve --workers N`.")
    data = json.loads(raw)
    settings = ServeSettings(**data["settings"])
    api_key = None
    if settings.api_key_env is not None:
        api_key = os.environ.get(settings.api_key_env)
        if not api_key:  # never serve open when a key was asked for
            raise ConfigError(f"Environment variable {settings.api_key_env} (the API key) is empty or not set in the worker.")
    app, _ = load_worker_app(KgrecConfig.model_validate(data["config"]), data["model_dir"], settings, api_key)
    return app


def load_worker_app(config: KgrecConfig, model_dir: str | Path, settings: ServeSettings, api_key: str | None):
    """``(app, loaded)``: one worker's :class:`ServingApp` around a freshly loaded model."""
    import torch

    from kgrec.store.connection import GraphStore

    # One torch thread: a request is many small tensor steps, and N workers each with one
    # thread per core would oversubscribe the cores (and spin-wait in OpenMP).
    torch.set_num_threads(1)
    store = GraphStore.connect(config.store)
    try:
        loaded = pipeline.load_model(config, model_dir, store)
    except BaseException:
        store.close()
        raise
    app = ServingApp(create_app(loaded, api_key), close=store.close,
                     threads=settings.threads, max_in_flight=settings.max_in_flight)
    # The model, the catalog and the imported libraries live as long as the worker: out of
    # the collector's sight, a full collection no longer walks them in the middle of a request.
    gc.collect()
    gc.freeze()
    return app, loaded


class ServingApp:
    """The ASGI app of one worker: the FastAPI app with a bound on requests in progress.

    A request beyond ``max_in_flight`` in progress gets a 503 with ``Retry-After`` at once,
    so an overloaded server answers quickly and a load balancer or client can back off,
    instead of queueing without bound until clients time out. ``/health`` is never refused.
    ``threads`` bounds the thread pool that runs the (blocking) endpoints; ``close`` runs at
    shutdown (the worker's Neo4j driver).
    """

    def __init__(self, app: FastAPI, close: Callable[[], None], threads: int, max_in_flight: int):
        self.app = app
        self.close = close
        self.threads = threads
        self.max_in_flight = max_in_flight
        self.in_flight = 0  # one event loop per worker: no lock needed
        self._pool_sized = False

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._closing_on_shutdown(send))
            return
        if scope["type"] != "http" or scope["path"] == "/health":
            await self.app(scope, receive, send)
            return
        if not self._pool_sized:
            # Set inside the event loop (anyio keeps the limiter per loop); sync endpoints and
            # dependencies run on this pool.
            import anyio.to_thread

            anyio.to_thread.current_default_thread_limiter().total_tokens = self.threads
            self._pool_sized = True
        if self.in_flight >= self.max_in_flight:
            await self._busy(send)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _busy(self, send) -> None:
        body = json.dumps({
            "detail": f"The server is busy: {self.in_flight} requests are in progress in this worker, its limit "
                      "(kgrec serve --max-in-flight). Retry after a second, or add workers."
        }).encode()
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"retry-after", b"1"),
        ]})
        await send({"type": "http.response.body", "body": body})

    def _closing_on_shutdown(self, send):
        async def wrapped(message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                self.close()
            await send(message)

        return wrapped
