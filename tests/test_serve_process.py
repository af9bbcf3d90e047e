"""The serving process without a database: the in-flight bound, request batching, the worker settings."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from fastapi import FastAPI

from kgrec.config import load_config
from kgrec.errors import ConfigError, UnknownUserError
from kgrec.serve import SETTINGS_ENV, RecommendBatcher, ServeSettings, ServingApp, worker_app


def blocking_app(release: asyncio.Event, entered: list[str]) -> FastAPI:
    """An app whose /slow requests wait for ``release``, so requests stay in progress."""
    app = FastAPI()

    @app.get("/slow")
    async def slow() -> dict[str, str]:
        entered.append("slow")
        await release.wait()
        return {"ok": "yes"}

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def call(app, path: str) -> tuple[int, dict[bytes, bytes], dict]:
    """One GET through the ASGI interface: ``(status, headers, json body)``."""
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "headers": [],
        "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), json.loads(body)


def test_serving_app_answers_503_at_once_past_max_in_flight_and_never_for_health():
    async def scenario() -> None:
        release, entered, closed = asyncio.Event(), [], []
        app = ServingApp(blocking_app(release, entered), close=lambda: closed.append(True), threads=2, max_in_flight=2)
        held = [asyncio.create_task(call(app, "/slow")) for _ in range(2)]
        while len(entered) < 2:  # both requests are inside the app
            await asyncio.sleep(0.001)
        status, headers, body = await asyncio.wait_for(call(app, "/slow"), timeout=1.0)
        assert status == 503 and headers[b"retry-after"] == b"1"
        assert "2 requests are in progress" in body["detail"] and "--max-in-flight" in body["detail"]
        assert (await asyncio.wait_for(call(app, "/health"), timeout=1.0))[0] == 200
        release.set()
        assert [(await t)[0] for t in held] == [200, 200]
        assert app.in_flight == 0
        assert (await call(app, "/slow"))[0] == 200  # room again
        assert not closed

    asyncio.run(scenario())


def test_serving_app_closes_its_store_when_the_server_shuts_down():
    closed: list[bool] = []
    app = ServingApp(FastAPI(), close=lambda: closed.append(True), threads=1, max_in_flight=1)
    messages = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict:
        return next(messages)

    async def send(message: dict) -> None:
        sent.append(message["type"])
        if message["type"] == "lifespan.shutdown.complete":
            assert closed == [True]  # closed before the server is told shutdown is over

    asyncio.run(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send))
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"] and closed == [True]


def recording_ranker(batches: list[tuple[object, list[str]]]):
    """A ranking function that records each batch and answers ``options:user`` per user;
    a batch holding ``nobody`` fails as a whole, like the real one."""

    def rank_users(options: object, user_ids: list[str]) -> list[str]:
        batches.append((options, list(user_ids)))
        if "nobody" in user_ids:
            raise UnknownUserError("User 'nobody' is not in the graph.")
        return [f"{options}:{user_id}" for user_id in user_ids]

    return rank_users


def test_batcher_ranks_requests_that_arrive_together_in_batches_of_the_same_options():
    async def scenario() -> list:
        batcher = RecommendBatcher(recording_ranker(batches), max_batch=4)
        lone = await batcher.rank("k=10", "u0")  # nothing waits for company
        together = await asyncio.gather(
            *[batcher.rank("k=10", f"u{i}") for i in range(1, 7)], batcher.rank("k=5", "u7"), batcher.rank("k=10", "u8")
        )
        return [lone, *together]

    batches: list[tuple[object, list[str]]] = []
    answers = asyncio.run(scenario())
    assert answers == ["k=10:u0", *[f"k=10:u{i}" for i in range(1, 7)], "k=5:u7", "k=10:u8"]
    assert batches == [
        ("k=10", ["u0"]),
        ("k=10", ["u1", "u2", "u3", "u4"]),  # at most max_batch users
        ("k=10", ["u5", "u6", "u8"]),  # the oldest options go first
        ("k=5", ["u7"]),
    ]


def test_batcher_gives_each_request_its_own_answer_when_one_user_in_the_batch_is_unknown():
    async def scenario() -> list:
        batcher = RecommendBatcher(recording_ranker(batches), max_batch=8)
        return await asyncio.gather(*[batcher.rank("k", user) for user in ("a", "nobody", "b")], return_exceptions=True)

    batches: list[tuple[object, list[str]]] = []
    a, nobody, b = asyncio.run(scenario())
    assert (a, b) == ("k:a", "k:b") and isinstance(nobody, UnknownUserError)
    assert batches == [("k", ["a", "nobody", "b"]), ("k", ["a"]), ("k", ["nobody"]), ("k", ["b"])]


def test_batcher_skips_a_request_whose_client_left_and_keeps_serving():
    async def scenario() -> str:
        batcher = RecommendBatcher(recording_ranker(batches), max_batch=8)
        first = asyncio.create_task(batcher.rank("k", "a"))
        gone = asyncio.create_task(batcher.rank("k", "gone"))
        await asyncio.sleep(0)  # both are queued
        gone.cancel()
        await first
        return await batcher.rank("k", "b")

    batches: list[tuple[object, list[str]]] = []
    assert asyncio.run(scenario()) == "k:b"
    assert batches == [("k", ["a"]), ("k", ["b"])]  # "gone" was never ranked


@pytest.mark.parametrize("field", ["workers", "threads", "max_in_flight", "keep_alive_s"])
def test_serve_settings_refuse_zero(field: str):
    with pytest.raises(ConfigError, match=f"{field} must be at least 1; found 0"):
        ServeSettings(**{field: 0})


def test_worker_app_refuses_to_serve_without_the_api_key_it_was_told_to_require(monkeypatch):
    settings = {"config": load_config().model_dump(mode="json"), "model_dir": "/nowhere",
                "settings": {"workers": 2, "api_key_env": "KGREC_TEST_KEY"}}
    monkeypatch.setenv(SETTINGS_ENV, json.dumps(settings))
    monkeypatch.delenv("KGREC_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="KGREC_TEST_KEY .* is empty or not set"):
        worker_app()


def test_worker_app_outside_kgrec_serve_says_how_it_is_started(monkeypatch):
    monkeypatch.delenv(SETTINGS_ENV, raising=False)
    with pytest.raises(ConfigError, match="started by `kgrec serve --workers N`"):
        worker_app()


def test_batcher_ranks_a_lone_request_on_the_event_loop_and_a_batch_on_a_thread():
    ranked_on: dict[str, int] = {}

    def rank_users(options: object, user_ids: list[str]) -> list[str]:
        for user_id in user_ids:
            ranked_on[user_id] = threading.get_ident()
        if "nobody" in user_ids:
            raise UnknownUserError("User 'nobody' is not in the graph.")
        return list(user_ids)

    async def scenario() -> tuple[int, object]:
        batcher = RecommendBatcher(rank_users, max_batch=8)
        assert await batcher.rank("k", "alone") == "alone"
        assert await asyncio.gather(batcher.rank("k", "a"), batcher.rank("k", "b")) == ["a", "b"]
        unknown = await asyncio.gather(batcher.rank("k", "nobody"), return_exceptions=True)
        return threading.get_ident(), unknown[0]

    loop_thread, unknown = asyncio.run(scenario())
    assert ranked_on["alone"] == loop_thread == ranked_on["nobody"]
    assert ranked_on["a"] == ranked_on["b"] != loop_thread
    assert isinstance(unknown, UnknownUserError)  # an error ranked on the loop still reaches its request
