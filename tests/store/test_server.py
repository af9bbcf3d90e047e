from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from kgrec.errors import GraphStoreUnavailable
from kgrec.store.server import _port_in_use, free_port, read_state, start_server, stop_server


def test_start_server_returns_the_running_server_instead_of_a_second_one(neo4j_server):
    again = start_server(port=neo4j_server.port)
    assert again.pid == neo4j_server.pid
    assert read_state(neo4j_server.port).pid == neo4j_server.pid


def test_stop_server_shuts_the_store_down_cleanly():
    port = free_port()
    state = start_server(port=port, heap_mb=512, pagecache_mb=64)
    try:
        assert _port_in_use("127.0.0.1", port)
        stopped = stop_server(port)
        assert stopped is not None and stopped.pid == state.pid
        assert not _port_in_use("127.0.0.1", port)
        assert read_state(port) is None
        # The launcher's shutdown hook ran (a SIGKILL would not print this).
        assert "kgrec-neo4j stopped" in (Path(state.server_dir) / "server.log").read_text()
    finally:
        stop_server(port)
        shutil.rmtree(state.server_dir, ignore_errors=True)


def test_stop_server_without_a_server_returns_none():
    assert stop_server(free_port()) is None


def test_start_server_on_a_taken_port_names_the_real_option():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(GraphStoreUnavailable) as error:
            start_server(port=port)
    message = str(error.value)
    assert f"Port {port}" in message
    assert f"--set store.port={port + 1}" in message
    assert "--port" not in message  # kgrec db start has no such option
