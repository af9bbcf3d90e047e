"""The managed server is private to its user: a password, no local files through
LOAD CSV, owner-only files, and a clear error for a URI that is not one."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from kgrec.cli import cli
from kgrec.errors import ConfigError
from kgrec.store.config import StoreConfig
from kgrec.store.connection import GraphStore


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
