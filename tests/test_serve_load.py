"""``kgrec serve`` under concurrency: the real command, its worker processes and the real Neo4j.

Every test talks to a ``kgrec serve --workers 2`` subprocess over loopback, with a bounded
number of requests and a bounded time. The model is trained once for the module on a
small synthetic shop.
"""

from __future__ import annotations

import asyncio
import os
import random
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import torch
import pytest

import kgrec
from kgrec.config import load_config
from kgrec.ingest.synthetic import write_sample_shop
from kgrec.pipeline import add_event, build_graph, load_model, recommend, train
from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import clear_graph
from kgrec.store.server import free_port

OVERRIDES = ["model.use_text=false", "train.epochs=2", "train.patience=1"]
API_KEY = "test-key-not-secret"
SOURCE_ROOT = str(Path(kgrec.__file__).resolve().parent.parent)


@pytest.fixture(scope="module")
def shop_model(neo4j_server, tmp_path_factory):
    """``(config, model_dir, users, products, env)``: a trained model on a fresh graph."""
    tmp = tmp_path_factory.mktemp("serve-load")
    user, password = neo4j_server.auth
    env = {"NEO4J_URI": neo4j_server.uri, "NEO4J_USER": user, "NEO4J_PASSWORD": password}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with GraphStore(neo4j_server.uri, auth=neo4j_server.auth) as store:
            clear_graph(store)
        shop = write_sample_shop(tmp / "shop", num_products=120, num_users=80, seed=5)
        config = load_config(None, OVERRIDES)
        build_graph(config, shop["products"], shop["interactions"], shop["relations"], shop["users"])
        run = train(config, runs_dir=tmp / "runs", write_embeddings=False, echo=lambda *_: None)
        users = [line.split(",")[0] for line in shop["users"].read_text().splitlines()[1:]]
        products = [line.split(",")[0] for line in shop["products"].read_text().splitlines()[1:]]
        yield config, run.model_dir, users, products, env


@contextmanager
def kgrec_serve(model_dir: Path, env: dict[str, str], *args: str):
    """``kgrec serve`` in its own process on a free loopback port; yields its URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "kgrec.cli", "serve", "--port", str(port), "--model", str(model_dir),
         *[a for o in OVERRIDES for a in ("--set", o)], *args],
        env={**os.environ, **env, "KGREC_TEST_API_KEY": API_KEY, "PYTHONPATH": SOURCE_ROOT, "OMP_WAIT_POLICY": "PASSIVE"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"kgrec serve did not come up: {process.communicate()[1].decode()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


@pytest.fixture(scope="module")
def server(shop_model):
    _, model_dir, _, _, env = shop_model
    with kgrec_serve(model_dir, env, "--workers", "2", "--api-key-env", "KGREC_TEST_API_KEY") as url:
        yield url


def get_raw(sock: socket.socket, path: str) -> bytes:
    """One HTTP/1.1 request on an open connection; returns the status line."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("the server closed the connection without answering")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    while len(body) < length:
        body += sock.recv(65536)
    return head.split(b"\r\n")[0]


def test_serve_keeps_an_idle_connection_open_longer_than_client_pools_do(server):
    # httpx drops a pooled connection after 5 s idle; uvicorn's default closed it at 5 s
    # too, so a request sent at that moment met a closing connection: the read and protocol
    # errors seen under load. The server must still be there after 6 s.
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        assert get_raw(sock, "/health").endswith(b"200 OK")
        time.sleep(6.0)
        assert get_raw(sock, "/health").endswith(b"200 OK")


def test_serve_pooled_clients_reusing_connections_after_5_s_see_no_errors(server, shop_model):
    # The field failure, reproduced: many httpx clients, each reusing its connection after
    # an idle pause around its 5 s expiry. Against a 5 s server keep-alive this gives read
    # errors and "Server disconnected without sending a response" (about 1 in 100 requests).
    users = shop_model[2]
    failures: list[str] = []
    statuses: list[int] = []

    async def client(index: int) -> None:
        rng = random.Random(index)
        async with httpx.AsyncClient(base_url=server, timeout=30.0, headers={"X-API-Key": API_KEY}) as http:
            for _ in range(3):
                try:
                    statuses.append((await http.get("/recommend", params={"user": rng.choice(users), "k": 5})).status_code)
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                await asyncio.sleep(rng.uniform(4.9, 5.1))

    async def everyone() -> None:
        await asyncio.gather(*[client(i) for i in range(100)])

    asyncio.run(everyone())
    assert failures == []
    assert statuses == [200] * 300


def test_serve_answers_every_request_under_concurrent_clients_and_writers(server, shop_model):
    config, _, users, products, env = shop_model
    stop = threading.Event()
    writes: list[int] = []
    write_errors: list[str] = []

    def writer(seed: int) -> None:
        # What `kgrec add-event` runs, in a loop, while the readers hammer the server: one
        # writer opens a connection per event (the command), the other keeps one open.
        rng = random.Random(seed)
        store = GraphStore(env["NEO4J_URI"], auth=(env["NEO4J_USER"], env["NEO4J_PASSWORD"])) if seed else None
        while not stop.is_set():
            try:
                add_event(config, rng.choice(users), rng.choice(products), "click", store=store)
                writes.append(seed)
            except Exception as e:  # noqa: BLE001 - every failure is reported
                write_errors.append(repr(e))
        if store is not None:
            store.close()

    statuses: list[int] = []
    failures: list[str] = []
    wrong: list[str] = []

    async def reader(index: int, deadline: float) -> None:
        rng = random.Random(1000 + index)
        async with httpx.AsyncClient(base_url=server, timeout=30.0, headers={"X-API-Key": API_KEY}) as http:
            # At least one request each, however slow the machine: the test asserts answers, not speed.
            first = True
            while first or time.monotonic() < deadline:
                first = False
                user = rng.choice(users)
                try:
                    response = await http.get("/recommend", params={"user": user, "k": 5})
                except httpx.HTTPError as e:
                    failures.append(repr(e))
                    continue
                statuses.append(response.status_code)
                body = response.json()
                if response.status_code == 200 and (body["user_id"] != user or len(body["items"]) != 5):
                    wrong.append(str(body)[:200])

    async def everyone() -> None:
        deadline = time.monotonic() + 8.0
        await asyncio.gather(*[reader(i, deadline) for i in range(64)])

    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        threads = [threading.Thread(target=writer, args=(seed,)) for seed in range(2)]
        for thread in threads:
            thread.start()
        try:
            asyncio.run(everyone())
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
    assert failures == [] and write_errors == [] and wrong == []
    assert set(statuses) == {200} and len(statuses) >= 64  # every reader was answered
    assert set(writes) == {0, 1}  # both writers recorded events


def test_serve_workers_require_the_key_and_see_new_events_at_once(server, shop_model):
    config, _, users, products, env = shop_model
    user = users[0]
    assert httpx.get(f"{server}/recommend", params={"user": user}).status_code == 401
    key = {"X-API-Key": API_KEY}
    # Several requests, so both workers answer some: each must read the user's events live.
    before = {httpx.get(f"{server}/recommend", params={"user": user}, headers=key).json()["history_size"] for _ in range(6)}
    assert len(before) == 1
    with GraphStore(env["NEO4J_URI"], auth=(env["NEO4J_USER"], env["NEO4J_PASSWORD"])) as store:
        seen = {r["id"] for r in store.read("MATCH (:User {id: $u})-[:INTERACTED]->(p) RETURN p.id AS id", {"u": user})}
    new_product = next(p for p in products if p not in seen)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        add_event(config, user, new_product, "purchase")
    after = {httpx.get(f"{server}/recommend", params={"user": user}, headers=key).json()["history_size"] for _ in range(6)}
    assert after == {before.pop() + 1}


def test_one_users_history_equals_the_batch_read(shop_model):
    """The served path (one user, plain lists), a served batch (a list of users, repeats
    included) and the batch path (a frame of every user's events) build the same history."""
    config, model_dir, users, _, env = shop_model
    with GraphStore(env["NEO4J_URI"], auth=(env["NEO4J_USER"], env["NEO4J_PASSWORD"])) as store:
        loaded = load_model(config, model_dir, store)
        batch_ids, batch = loaded.histories(None)
        served_ids = [*users[:20], users[3]]
        _, served = loaded.histories(served_ids)
        for position, user in enumerate(served_ids):
            _, one = loaded.histories([user])
            row = batch.select(torch.tensor([batch_ids.index(user)]))
            in_served = served.select(torch.tensor([position]))
            for name in ("indptr", "product_index", "weight", "user_index"):
                assert getattr(one, name).tolist() == getattr(row, name).tolist() == getattr(in_served, name).tolist(), (
                    user, name,
                )
    # Missing timestamps and weights, and a product the model does not rank.
    product = loaded.product_ids.ids[0]
    history = loaded.histories_from_events(
        [users[0]], [0, 0, 0], [product, "no-such-product", product], [None, 5, 7], [None, 2.0, 0.5]
    )
    assert history.product_index.tolist() == [0] and history.indptr.tolist() == [0, 1]
    assert history.weight.tolist() == [1.0]  # a missing weight counts as 1, the heaviest of the two


def test_serve_batched_answers_equal_one_by_one_and_an_unknown_user_gets_its_own_404(server, shop_model):
    """Concurrent requests are ranked in batches: each user still gets the list that
    ``pipeline.recommend`` gives them alone, and an unknown user among them changes nothing
    for the others."""
    config, model_dir, users, _, env = shop_model
    sample = random.Random(7).sample(users, 40)
    asked = [*sample, "nobody", *sample[:10]]  # repeats: the same user twice in a batch

    async def everyone() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=len(asked))
        async with httpx.AsyncClient(base_url=server, timeout=30.0, headers={"X-API-Key": API_KEY}, limits=limits) as http:
            return await asyncio.gather(*[http.get("/recommend", params={"user": u, "k": 10}) for u in asked])

    responses = asyncio.run(everyone())
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        with GraphStore(env["NEO4J_URI"], auth=(env["NEO4J_USER"], env["NEO4J_PASSWORD"])) as store:
            loaded = load_model(config, model_dir, store)
            alone = {u: [item["product_id"] for item in recommend(loaded, u, k=10).items] for u in sample}
    for user, response in zip(asked, responses):
        if user == "nobody":
            assert response.status_code == 404 and "nobody" in response.json()["detail"]
            continue
        assert response.status_code == 200, response.text
        assert [item["product_id"] for item in response.json()["items"]] == alone[user], user
