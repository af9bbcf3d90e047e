"""``kgrec serve``: a long-lived HTTP API that keeps one model warm.

Endpoints (all GET, JSON):

``/health``
    ``{"status": "ok", "model": ..., "users": n, "products": n, "database": uri | null}``
``/recommend?user=U&k=10&query=…&weights=relevance=0.7,popularity=0.1,diversity=0.2&include_seen=false&explain=false``
    The same JSON as ``kgrec recommend --format json``.
``/explain?user=U&product=P``
    The knowledge-graph reasons for one pair.

A user error (unknown user or product, bad ``k``, weights or query) is a 4xx with
``{"detail": message}``; the server stays up. Interactive docs are at ``/docs``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import JSONResponse

from kgrec.errors import KgrecError, ModelNotFoundError, UnknownProductError, UnknownUserError
from kgrec.explain.paths import explain_paths
from kgrec.rank.scoring import parse_weights
from kgrec.service import RecommendationService


def status_code(error: KgrecError) -> int:
    """404 for things that do not exist, 503 for a missing database, else 400."""
    if isinstance(error, (UnknownUserError, UnknownProductError, ModelNotFoundError)):
        return 404
    from kgrec.errors import GraphStoreUnavailable

    if isinstance(error, GraphStoreUnavailable):
        return 503
    return 400


def create_app(service: RecommendationService) -> FastAPI:
    """The FastAPI app around a loaded :class:`RecommendationService`."""
    app = FastAPI(
        title="kgrec",
        description="Knowledge-graph + GNN recommendations, scored and explained.",
        version=__import__("kgrec").__version__,
    )

    @app.exception_handler(KgrecError)
    async def _user_error(_request, error: KgrecError) -> JSONResponse:
        return JSONResponse(status_code=status_code(error), content={"detail": str(error)})

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": service.model_id,
            "users": len(service.model.user_ids),
            "products": len(service.model.product_ids),
            "database": service.store.uri if service.store is not None else None,
        }

    @app.get("/recommend")
    def recommend(
        user: str = Query(..., description="The user id."),
        k: int = Query(10, description="How many products."),
        query: str | None = Query(None, description="Optional text: a personalised search."),
        weights: str | None = Query(None, description="e.g. relevance=0.7,popularity=0.1,diversity=0.2"),
        include_seen: bool = Query(False, description="Also rank products the user already interacted with."),
        explain: bool = Query(False, description="Add knowledge-graph reasons and store them in Neo4j."),
    ) -> JSONResponse:
        result = service.recommend(
            user,
            k=k,
            query_text=query,
            weights=parse_weights(weights) if weights is not None else None,
            include_seen=include_seen,
            explain=explain,
        )
        # Plain JSON values already: a JSONResponse skips FastAPI's recursive encoder (~1 ms a request).
        return JSONResponse(result.to_dict())

    @app.get("/explain")
    def explain(user: str = Query(...), product: str = Query(...)) -> dict[str, Any]:
        service.product_index(product)  # a clear 404 for an unknown product
        if service.store is None:
            from kgrec.errors import GraphStoreUnavailable

            raise GraphStoreUnavailable("Explanations are read from Neo4j, but no database is connected.")
        reasons = explain_paths(service.store, user, [product], per_product=service.config.rank.reasons_per_product)
        return {"user_id": user, "product_id": product, "reasons": [r.__dict__ for r in reasons.get(product, [])]}

    return app
