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
ranking holds the GIL, so more threads only queue inside Python). Each worker answers 503 at
once, with ``Retry-After``, when ``--max-in-flight`` requests are already in progress in it,
instead of queueing without bound. Idle keep-alive connections are kept ``--keep-alive``
seconds, longer than HTTP clients keep theirs (httpx: 5 s), so it is always the client that
closes an idle connection: a server closing one while a request is on its way is what clients
see as a read error or "server disconnected".
"""

from __future__ import annotations

import hmac
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response

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


def create_app(config: KgrecConfig, loaded: LoadedModel, api_key: str | None = None) -> FastAPI:
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

    def ranked(user: str, k: int, query: str | None, weights: str | None, include_seen: bool) -> pipeline.Recommendations:
        return pipeline.recommend(
            config, loaded, user, k=k, query=query,
            weights=Weights.parse(weights) if weights is not None else None,
            include_seen=include_seen,
        )

    @app.get("/recommend", dependencies=guarded)
    def recommend(
        user: str = Query(..., description="The user id."),
        k: int = Query(10, description="How many products."),
        query: str | None = Query(None, description="Optional text: a personalised search."),
        weights: str | None = Query(None, description="e.g. relevance=0.7,popularity=0.1,diversity=0.2"),
        include_seen: bool = Query(False, description="Also rank products the user already interacted with."),
        explain: bool = Query(False, description="Add knowledge-graph reasons (read only)."),
    ) -> JSONResponse:
        result = ranked(user, k, query, weights, include_seen)
        if explain:
            pipeline.add_reasons(config, loaded, result)
        # Plain JSON values already: a JSONResponse skips FastAPI's recursive encoder (~1 ms a request).
        return JSONResponse(result.to_dict())

    @app.post("/recommend", dependencies=guarded)
    def recommend_and_store(
        user: str = Query(...),
        k: int = Query(10),
        query: str | None = Query(None),
        weights: str | None = Query(None),
        include_seen: bool = Query(False),
    ) -> JSONResponse:
        result = pipeline.store_reasons(config, loaded, ranked(user, k, query, weights, include_seen))
        return JSONResponse(result.to_dict())

    @app.get("/explain", dependencies=guarded)
    def explain(user: str = Query(...), product: str = Query(...)) -> dict[str, Any]:
        reasons = pipeline.explain(config, loaded, user, [product])
        return {"user_id": user, "product_id": product, "reasons": [r.__dict__ for r in reasons.get(product, [])]}

    @app.get("/search", dependencies=guarded)
    def search(
        query: str = Query(..., description="The text to search for."),
        user: str | None = Query(None, description="Optional user id: a personalised search."),
        k: int = Query(10, description="How many products."),
        weights: str | None = Query(None, description="e.g. relevance=0.9,popularity=0.1,diversity=0"),
        include_seen: bool | None = Query(None, description="With a user: also rank products they already interacted with."),
    ) -> JSONResponse:
        result = pipeline.search(
            config, loaded, query, user_id=user, k=k,
            weights=Weights.parse(weights) if weights is not None else None,
            include_seen=include_seen,
        )
        return JSONResponse(result.to_dict())

    @app.get("/metrics")  # open like /health: counts and timings, no user data
    def prometheus_metrics() -> Response:
        body, content_type = metrics.render()
        return Response(content=body, media_type=content_type)

    return app


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
    os.environ[SETTINGS_ENV] = json.dumps(
        {"config": config.model_dump(mode="json"), "model_dir": resolved, "settings": asdict(settings)}
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
    app = ServingApp(create_app(config, loaded, api_key), close=store.close,
                     threads=settings.threads, max_in_flight=settings.max_in_flight)
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
