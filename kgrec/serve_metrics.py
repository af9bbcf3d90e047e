"""Prometheus metrics for ``kgrec serve`` (``GET /metrics``), on a registry of the app's own.

- ``kgrec_http_requests_total{endpoint, method, status}`` and
  ``kgrec_http_request_duration_seconds{endpoint, method}`` (a histogram) for every request;
  ``endpoint`` is the route's path template (``/recommend``), ``other`` for unknown paths;
- ``kgrec_http_errors_total{endpoint, method, kind}``: ``client`` (4xx), ``server`` (5xx)
  and ``exception`` (a bug that escaped the handlers);
- ``kgrec_rank_stage_seconds{stage}`` (a histogram): each ranked batch's time per stage,
  ``events`` (the users' events read from Neo4j), ``model`` (user vectors and relevance) and
  ``ranking`` (:func:`kgrec.pipeline.rank_users`), so a slow request shows where it was slow;
- ``kgrec_model_info{model}``, ``kgrec_model_age_seconds`` (since the model was written),
  ``kgrec_events_since_training`` (events in Neo4j now minus those the model was trained on;
  read from the count store at each scrape).

Each app gets its own :class:`~prometheus_client.CollectorRegistry`, so several apps in one
process (tests, several models) never share or clash over series.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from starlette.routing import Match

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class ServeMetrics:
    registry: CollectorRegistry
    requests: Counter
    latency: Histogram
    errors: Counter
    stages: Histogram

    def observe_stage(self, stage: str, seconds: float) -> None:
        """One ranking stage's time (``observe_stage`` of :func:`kgrec.pipeline.rank_users`)."""
        self.stages.labels(stage).observe(seconds)

    def render(self) -> tuple[bytes, str]:
        """The registry in the Prometheus text format, and its content type."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _MetricsMiddleware:
    """Pure ASGI middleware (no per-request task, unlike ``BaseHTTPMiddleware``)."""

    def __init__(self, app: Any, routes: list, metrics: ServeMetrics) -> None:
        self.app = app
        self.routes = routes
        self.metrics = metrics

    def endpoint(self, scope: dict) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "other"

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        endpoint, method = self.endpoint(scope), scope.get("method", "")
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        except Exception:
            self.metrics.errors.labels(endpoint, method, "exception").inc()
            raise
        finally:
            self.metrics.latency.labels(endpoint, method).observe(time.perf_counter() - started)
            self.metrics.requests.labels(endpoint, method, str(status[0])).inc()
            if 400 <= status[0] < 500:
                self.metrics.errors.labels(endpoint, method, "client").inc()
            elif status[0] >= 500:
                self.metrics.errors.labels(endpoint, method, "server").inc()


def add_metrics(app: Any, loaded: Any) -> ServeMetrics:
    """Instrument ``app`` (a FastAPI app serving ``loaded``) and return its metrics."""
    from kgrec.store.connection import query

    registry = CollectorRegistry(auto_describe=True)
    metrics = ServeMetrics(
        registry=registry,
        requests=Counter("kgrec_http_requests", "HTTP requests answered.", ["endpoint", "method", "status"], registry=registry),
        latency=Histogram(
            "kgrec_http_request_duration_seconds", "Time to answer a request.", ["endpoint", "method"],
            buckets=LATENCY_BUCKETS, registry=registry,
        ),
        errors=Counter("kgrec_http_errors", "Requests that ended in an error.", ["endpoint", "method", "kind"], registry=registry),
        stages=Histogram(
            "kgrec_rank_stage_seconds", "Time per stage of ranking a batch of users: events, model, ranking.", ["stage"],
            buckets=LATENCY_BUCKETS, registry=registry,
        ),
    )
    Info("kgrec_model", "The model being served.", registry=registry).info({"model": loaded.model_id})
    trained_at = _written_at(loaded)
    Gauge("kgrec_model_age_seconds", "Seconds since the served model was written.", registry=registry).set_function(
        lambda: time.time() - trained_at if trained_at is not None else math.nan
    )
    trained_events = loaded.snapshot.tables.interactions.height

    def events_since_training() -> float:
        if loaded.store is None:
            return math.nan
        try:
            return float(loaded.store.read_now(query("count_interactions"))[0]["events"] - trained_events)
        except Exception as e:  # noqa: BLE001 - a scrape reports, it does not fail
            log.warning("kgrec_events_since_training: could not count the events in Neo4j: %s", e)
            return math.nan

    Gauge(
        "kgrec_events_since_training", "Interaction events in Neo4j that the served model was not trained on.",
        registry=registry,
    ).set_function(events_since_training)
    app.add_middleware(_MetricsMiddleware, routes=app.router.routes, metrics=metrics)
    return metrics


def _written_at(loaded: Any) -> float | None:
    path = loaded.recommender.path
    for name in ("metrics.json", "embeddings.safetensors"):
        if path is not None and (path / name).exists():
            return (path / name).stat().st_mtime
    return None
