"""The managed server is private to its user: a password, no local files through
LOAD CSV, owner-only files, and a clear error for a URI that is not one."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from click.testing import CliRunner

from kgrec.cli import cli
from kgrec.errors import ConfigError, GraphStoreError, GraphStoreUnavailable
from kgrec.store.config import StoreConfig
from kgrec.store.connection import GraphStore, resolve_uri
from kgrec.store.server import kgrec_home, password_path


def test_managed_server_refuses_a_connection_without_credentials(neo4j_server):
    with pytest.raises(GraphStoreUnavailable, match="rejected the credentials.*authentication token"):
        GraphStore(neo4j_server.uri)


def test_managed_server_refuses_the_default_password(neo4j_server):
    # One wrong try only: Neo4j locks the user for 5 s after 3 failed logins.
    with pytest.raises(GraphStoreUnavailable, match="rejected the password in .*password .*authentication failure"):
        GraphStore(neo4j_server.uri, auth=("neo4j", "neo4j"), managed=True)


def test_connecting_from_another_kgrec_home_says_there_is_no_password(neo4j_server, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("KGREC_HOME", str(tmp_path))
    monkeypatch.delenv("NEO4J_URI", raising=False)
    with pytest.raises(GraphStoreUnavailable, match="kgrec has none.*does not exist.*kgrec db start"):
        GraphStore.connect(StoreConfig(port=neo4j_server.port))


def test_password_file_is_random_and_readable_by_its_owner_only(neo4j_server):
    path = neo4j_server.password_file
    assert path == password_path(neo4j_server.port)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    user, password = neo4j_server.auth
    assert user == "neo4j"
    assert len(password) >= 32 and password != "neo4j"


def test_kgrec_connects_to_the_managed_server_with_its_password_file(neo4j_server, monkeypatch):
    for name in ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    config = StoreConfig(port=neo4j_server.port)
    assert resolve_uri(config) == (neo4j_server.uri, neo4j_server.auth, True)
    with GraphStore.connect(config) as store:
        assert store.managed
        assert store.read("RETURN $x AS x", {"x": 7}) == [{"x": 7}]


def test_neo4j_uri_and_credentials_win_over_the_managed_password(neo4j_server, monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "neo4j+s://db.example.com:7687")
    monkeypatch.setenv("NEO4J_USER", "alice")
    monkeypatch.setenv("NEO4J_PASSWORD", "her-own")
    resolved = resolve_uri(StoreConfig(port=neo4j_server.port))
    assert resolved == ("neo4j+s://db.example.com:7687", ("alice", "her-own"), False)


def test_load_csv_cannot_read_a_local_file(graph_store: GraphStore, tmp_path: Path):
    local = tmp_path / "private.csv"
    local.write_text("secret\nvalue-only-on-this-machine\n")
    with pytest.raises(GraphStoreError, match="allow_csv_import_from_file_urls"):
        graph_store.read("LOAD CSV FROM $url AS row RETURN row", {"url": local.as_uri()})


def test_nothing_under_the_server_folder_is_readable_by_others(graph_store: GraphStore, neo4j_server):
    graph_store.run("CREATE (:Product {id: $id})", {"id": "p1"})  # the store has written data and logs
    sdir = Path(neo4j_server.server_dir)
    paths = [kgrec_home(), sdir.parent, sdir, *sdir.rglob("*")]
    assert len(paths) > 20  # Neo4j's data and logs are among them
    loose = [f"{oct(stat.S_IMODE(p.lstat().st_mode))} {p}" for p in paths if not p.is_symlink() and p.lstat().st_mode & 0o077]
    assert loose == []


@pytest.mark.parametrize("uri", ["notaurl", "localhost:7687", "http://localhost:7474", "bolt://", "bolt://host:port"])
def test_a_neo4j_uri_that_is_not_one_is_a_config_error(monkeypatch, uri: str):
    monkeypatch.setenv("NEO4J_URI", uri)
    with pytest.raises(ConfigError) as error:
        GraphStore.connect(StoreConfig())
    message = str(error.value)
    assert repr(uri) in message
    assert all(scheme in message for scheme in ("bolt://", "neo4j://", "neo4j+s://"))
    assert "Fix NEO4J_URI" in message


def test_a_bad_neo4j_uri_hides_a_password_written_into_it(monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "ftp://alice:hunter2@db.example.com")
    with pytest.raises(ConfigError) as error:
        GraphStore.connect(StoreConfig())
    assert "hunter2" not in str(error.value)
    assert "ftp://alice:***@db.example.com" in str(error.value)


def test_cli_reports_a_bad_neo4j_uri_without_a_traceback(monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "notaurl")
    result = CliRunner().invoke(cli, ["db", "status"])
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)  # a message, not an exception
    assert "notaurl" in result.output and "bolt://" in result.output


def test_db_status_says_where_the_password_is(neo4j_server, monkeypatch):
    monkeypatch.delenv("NEO4J_URI", raising=False)
    result = CliRunner().invoke(cli, ["db", "status", "--set", f"store.port={neo4j_server.port}"], terminal_width=400)
    assert result.exit_code == 0, result.output
    assert "Auth is on" in result.output and str(neo4j_server.password_file) in result.output.replace("\n", "")
