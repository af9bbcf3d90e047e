"""Shared fixtures: one real, throwaway Neo4j per test session.

The server runs on a free loopback port with its own data folder, and is stopped
and deleted at the end. There is no mock driver: if Java or Maven is missing, the
database tests fail (they are never skipped silently).
"""

from __future__ import annotations

import shutil

import pytest

from kgrec.store.connection import GraphStore
from kgrec.store.graph_io import clear_graph
from kgrec.store.server import free_port, start_server, stop_server


@pytest.fixture(scope="session")
def neo4j_server():
    port = free_port()
    state = start_server(port=port, heap_mb=768, pagecache_mb=128)
    yield state
    stop_server(port)
    shutil.rmtree(state.server_dir, ignore_errors=True)


@pytest.fixture
def graph_store(neo4j_server, monkeypatch):
    """A connection to the test server, with an empty graph; NEO4J_URI, NEO4J_USER and
    NEO4J_PASSWORD point at it too (the server asks for its password)."""
    user, password = neo4j_server.auth
    monkeypatch.setenv("NEO4J_URI", neo4j_server.uri)
    monkeypatch.setenv("NEO4J_USER", user)
    monkeypatch.setenv("NEO4J_PASSWORD", password)
    store = GraphStore(neo4j_server.uri, auth=(user, password))
    clear_graph(store)
    yield store
    store.close()
