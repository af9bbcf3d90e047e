from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kgrec.errors import GraphStoreUnavailable
from kgrec.store.server import (
    READY_LINE,
    _pid_alive,
    _port_in_use,
    free_port,
    read_state,
    server_dir,
    start_server,
    stop_server,
)


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


def write_server_json(sdir: Path, pid: int, port: int) -> Path:
    sdir.mkdir(parents=True, exist_ok=True)
    state_file = sdir / "server.json"
    state = {"pid": pid, "host": "127.0.0.1", "port": port, "server_dir": str(sdir), "neo4j_version": "5.26.30", "started_at": 0.0}
    state_file.write_text(json.dumps(state))
    return state_file


@pytest.fixture
def unrelated():
    """A live process that is not kgrec's server (``sleep 60``), running its own program already."""
    process = subprocess.Popen(["sleep", "60"])
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    deadline = time.monotonic() + 10
    while b"sleep" not in cmdline.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.01)  # a loaded machine may not have exec'd it yet
    yield process
    process.kill()
    process.wait()


def test_stop_server_does_not_signal_an_unrelated_process_a_stale_server_json_names(tmp_path: Path, unrelated):
    port = free_port()
    state_file = write_server_json(server_dir(port, tmp_path), unrelated.pid, port)
    with pytest.raises(GraphStoreUnavailable, match=rf"Did not stop pid {unrelated.pid}.*sleep 60.*stale.*removed it"):
        stop_server(port, home=tmp_path, grace_s=2)
    time.sleep(0.5)
    assert unrelated.poll() is None  # still running: no SIGTERM, no SIGKILL
    assert not state_file.exists()
    assert stop_server(port, home=tmp_path) is None


def test_read_state_treats_a_reused_pid_as_no_server(tmp_path: Path, unrelated):
    port = free_port()
    state_file = write_server_json(server_dir(port, tmp_path), unrelated.pid, port)
    assert read_state(port, home=tmp_path) is None  # so start_server starts a real one
    assert not state_file.exists()
    assert unrelated.poll() is None


def test_start_server_records_the_server_before_it_is_ready_so_a_killed_start_can_be_stopped():
    port = free_port()
    sdir = server_dir(port)
    state_file = sdir / "server.json"
    # `kgrec db start` in its own process, killed while Neo4j is still starting.
    starter = subprocess.Popen(
        [sys.executable, "-c", f"from kgrec.store.server import start_server; start_server(port={port}, heap_mb=512, pagecache_mb=64)"]
    )
    try:
        deadline = time.monotonic() + 180  # the first start may compile the launcher
        while not state_file.exists() and starter.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert state_file.exists(), "server.json was not written"
        assert READY_LINE not in (sdir / "server.log").read_text()  # written before ready, not after
        starter.kill()
        starter.wait()

        stopped = stop_server(port)

        assert stopped is not None and stopped.port == port
        assert not _pid_alive(stopped.pid)
        assert not _port_in_use("127.0.0.1", port)
        assert not state_file.exists()
    finally:
        starter.kill()
        starter.wait()
        stop_server(port)
        shutil.rmtree(sdir, ignore_errors=True)


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
