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
"""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import Depends, FastAPI, Header, HTTPException, Query
from fastapi.responses import JSONResponse, Response

from kgrec import pipeline
from kgrec.config import KgrecConfig
from kgrec.errors import GraphStoreUnavailable, KgrecError, ModelNotFoundError, UnknownProductError, UnknownUserError
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

    def require_key(x_api_key: str | None = Header(None, description="The API key, when the server has one.")) -> None:
        if api_key is not None and not hmac.compare_digest(x_api_key or "", api_key):
            raise HTTPException(status_code=401, detail="Missing or wrong X-API-Key header.")

    guarded = [Depends(require_key)]
    metrics = add_metrics(app, loaded)

    @app.get("/health")
    def health() -> dict[str, Any]:
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
