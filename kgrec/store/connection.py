"""The one boundary between kgrec and Neo4j.

Every query goes through :class:`GraphStore`: parameters always travel apart from
the query text, driver errors become :class:`~kgrec.errors.KgrecError` subclasses
with a next step, and the Cypher text lives in ``.cypher`` files beside this module.

Which server: ``NEO4J_URI`` (with ``NEO4J_USER`` / ``NEO4J_PASSWORD``) when set, for
a user's own Neo4j, a cluster or Aura; otherwise the managed local server on
``bolt://127.0.0.1:<store.port>`` (``kgrec db start``), with the password it keeps in
``$KGREC_HOME/servers/<port>/password``.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import neo4j
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError, ConfigurationError, Neo4jError, ServiceUnavailable, SessionExpired

from kgrec.errors import ConfigError, GraphStoreError, GraphStoreUnavailable
from kgrec.store.config import StoreConfig
from kgrec.store.server import AUTH_USER, LOCAL_HOST, password_path, read_password

# The URI schemes the Neo4j Python driver accepts (+s: TLS, +ssc: TLS with any certificate).
URI_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


@cache
def query(name: str) -> str:
    """The text of ``queries/<name>.cypher`` (comments are kept; Cypher ignores them)."""
    return resources.files("kgrec.store").joinpath("queries", f"{name}.cypher").read_text(encoding="utf-8")


def resolve_uri(config: StoreConfig) -> tuple[str, tuple[str, str] | None, bool]:
    """``(uri, auth, managed)``: the server to use and whether it is the managed local one.

    The managed server's password is read from its password file; ``NEO4J_URI`` (and
    ``NEO4J_USER`` / ``NEO4J_PASSWORD``) win over it, for a user's own server.
    """
    uri = os.environ.get("NEO4J_URI")
    if uri:
        check_uri(uri, source="NEO4J_URI")
        user = os.environ.get("NEO4J_USER", os.environ.get("NEO4J_USERNAME", "neo4j"))
        password = os.environ.get("NEO4J_PASSWORD")
        return uri, ((user, password) if password is not None else None), False
    password = read_password(config.port)
    auth = (AUTH_USER, password) if password is not None else None
    return f"bolt://{LOCAL_HOST}:{config.port}", auth, True


def check_uri(uri: str, source: str = "NEO4J_URI") -> None:
    """Raise :class:`ConfigError` unless ``uri`` is a URI the Neo4j driver can connect to."""
    try:
        parts = urlsplit(uri)
        scheme, host = parts.scheme.lower(), parts.hostname
        parts.port  # noqa: B018 - parsing the port raises ValueError for one like ':abc'
    except ValueError:
        scheme, host = "", None
    if scheme not in URI_SCHEMES or not host:
        raise ConfigError(_bad_uri_message(uri, source))


def _bad_uri_message(uri: str, source: str) -> str:
    fix = (
        f"Fix {source}, or unset it to use the managed local server (`kgrec db start`)."
        if source.isupper()  # an environment variable
        else "Pass a URI of that form."
    )
    return (
        f"{source} is {_redacted(uri)!r}, which is not a Neo4j Bolt URI. Expected scheme://host:port with "
        f"a scheme of {', '.join(s + '://' for s in URI_SCHEMES)}, e.g. bolt://localhost:7687 or "
        f"neo4j+s://xxxx.databases.neo4j.io (kgrec speaks Bolt, not HTTP). {fix}"
    )


def _redacted(uri: str) -> str:
    """``uri`` without a password written into it (bolt://user:secret@host)."""
    head, at, tail = uri.rpartition("@")
    if at and "://" in head:
        scheme, _, userinfo = head.partition("://")
        return f"{scheme}://{userinfo.partition(':')[0]}:***@{tail}"
    return uri


class GraphStore:
    """A connection to one Neo4j database. Use as a context manager, or call :meth:`close`."""

    def __init__(self, uri: str, auth: tuple[str, str] | None = None, database: str | None = None, managed: bool = False):
        self.uri = uri
        self.database = database
        self.managed = managed
        try:
            self._driver = GraphDatabase.driver(
                uri, auth=auth, connection_timeout=5.0, notifications_min_severity="OFF"
            )
        except (ConfigurationError, ValueError) as e:
            raise ConfigError(_bad_uri_message(uri, "The Neo4j URI")) from e
        try:
            self._driver.verify_connectivity()
        except (ServiceUnavailable, OSError) as e:
            self._driver.close()
            raise GraphStoreUnavailable(_unreachable_message(uri, managed)) from e
        except AuthError as e:
            self._driver.close()
            raise GraphStoreUnavailable(_rejected_credentials_message(uri, managed, auth, e.message)) from e
        except Neo4jError as e:
            self._driver.close()
            raise GraphStoreUnavailable(f"Neo4j at {uri} refused the connection: {e.message}") from e

    @classmethod
    def connect(cls, config: StoreConfig | None = None) -> GraphStore:
        """Connect to the server ``NEO4J_URI`` names, or to the managed local one."""
        config = config or StoreConfig()
        uri, auth, managed = resolve_uri(config)
        return cls(uri, auth=auth, database=config.database, managed=managed)

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> GraphStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- running queries ---------------------------------------------------------

    def run(self, cypher: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one query in an auto-retried write transaction and return its rows as dicts."""

        def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(cypher, parameters or {})]

        return self._execute(work, write=True)

    def read(self, cypher: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one read-only query and return its rows as dicts."""

        def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(cypher, parameters or {})]

        return self._execute(work, write=False)

    def read_now(self, cypher: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Run one short read-only query as an auto-commit transaction; rows as dicts of the
        values as the driver decodes them (nested values are not converted, unlike :meth:`read`).

        One round trip to the server instead of the three of a managed transaction (begin,
        run, commit): for reads on the serving path, where each costs about a millisecond.
        A dropped connection is retried once; a managed transaction's retries are not needed
        for one read.
        """
        dropped: Exception | None = None
        for _attempt in range(2):
            try:
                with self._driver.session(database=self.database, default_access_mode=neo4j.READ_ACCESS) as session:
                    result = session.run(cypher, parameters or {})
                    keys = result.keys()
                    return [dict(zip(keys, values)) for values in result.values()]
            except (ServiceUnavailable, SessionExpired) as e:
                dropped = e
            except Neo4jError as e:
                raise self._rejected(e) from e
        raise GraphStoreUnavailable(_unreachable_message(self.uri, self.managed)) from dropped

    def run_query(
        self, cypher: str, parameters: dict[str, Any] | None = None, write: bool = False
    ) -> tuple[list[str], list[dict[str, Any]]]:
        """Run an analyst's query as one auto-commit transaction: ``(columns, rows)``.

        ``write=False`` opens a READ access-mode session, so the server itself refuses
        any write (``GraphStoreError`` naming ``--write``). Nodes and relationships come
        back as dicts of their properties, as :meth:`read` gives them; dates and times as
        Python ``datetime`` values.
        """
        mode = neo4j.WRITE_ACCESS if write else neo4j.READ_ACCESS
        try:
            with self._driver.session(database=self.database, default_access_mode=mode) as session:
                result = session.run(cypher, parameters or {})
                keys = list(result.keys())
                return keys, [_native(record.data()) for record in result]
        except ServiceUnavailable as e:
            raise GraphStoreUnavailable(_unreachable_message(self.uri, self.managed)) from e
        except Neo4jError as e:
            if not write and (e.code or "").endswith("AccessMode"):
                raise GraphStoreError(
                    f"Neo4j at {self.uri} refused to write: the query ran read-only ({e.message}). "
                    "Pass --write to let it change the graph."
                ) from e
            raise self._rejected(e) from e

    def read_columns(self, cypher: str, parameters: dict[str, Any] | None = None) -> dict[str, list[Any]]:
        """Run a read query and return its result column-wise: ``{column: [values…]}``.

        Column-wise results turn into polars frames without a per-row dict.
        """

        def work(tx: neo4j.ManagedTransaction) -> dict[str, list[Any]]:
            result = tx.run(cypher, parameters or {})
            keys = result.keys()
            rows = result.values()
            return {key: [row[i] for row in rows] for i, key in enumerate(keys)}

        return self._execute(work, write=False)

    def write_batches(
        self,
        cypher: str,
        rows: Sequence[Any],
        batch_size: int,
        extra: dict[str, Any] | None = None,
        on_batch=None,
    ) -> dict[str, int]:
        """Run ``cypher`` once per batch of ``rows`` (bound to ``$rows``), each batch its own transaction.

        Returns the summed update counters (``nodes_created``, ``relationships_created``, …),
        plus the sum of each integer column the query returns: a procedure reports its own
        writes that way (``... YIELD created RETURN created AS relationships_created``),
        because the server's counters leave out what procedures write.
        ``on_batch(n)`` is called after each batch with its row count (for progress bars).
        """
        totals: Counter[str] = Counter()

        def counts(pairs: Iterable[tuple[str, Any]]) -> Counter[str]:
            return Counter({key: value for key, value in pairs if isinstance(value, int) and not isinstance(value, bool)})

        def work(tx: neo4j.ManagedTransaction, batch: Sequence[Any]) -> Counter[str]:
            result = tx.run(cypher, {"rows": batch, **(extra or {})})
            found: Counter[str] = Counter()
            for record in result:
                found += counts(record.items())
            return found + counts(vars(result.consume().counters).items())

        for start in range(0, len(rows), batch_size):
            batch = list(rows[start : start + batch_size])
            totals += self._execute(lambda tx: work(tx, batch), write=True)
            if on_batch is not None:
                on_batch(len(batch))
        return dict(totals)  # Counter addition drops zero counts

    def has_procedure(self, name: str) -> bool:
        """Whether the server offers the procedure ``name`` (the managed one has kgrec's own).

        A server that does not let this user list procedures counts as not having it.
        """
        try:
            rows = self.read("SHOW PROCEDURES YIELD name WHERE name = $name RETURN count(*) AS n", {"name": name})
        except GraphStoreError:
            return False
        return bool(rows and rows[0]["n"])

    def run_script(self, text: str) -> None:
        """Run each ``;``-terminated statement of a Cypher script (used for the schema)."""
        for statement in split_statements(text):
            self.run(statement)

    def _execute(self, work, write: bool):
        try:
            with self._driver.session(database=self.database) as session:
                if write:
                    return session.execute_write(work)
                return session.execute_read(work)
        except ServiceUnavailable as e:
            raise GraphStoreUnavailable(_unreachable_message(self.uri, self.managed)) from e
        except Neo4jError as e:
            raise self._rejected(e) from e

    def _rejected(self, error: Neo4jError) -> GraphStoreError:
        return GraphStoreError(f"Neo4j at {self.uri} rejected a query: {error.code}: {error.message}")


def _native(value: Any) -> Any:
    """``value`` with the driver's temporal types turned into Python's (``datetime`` …)."""
    if isinstance(value, dict):
        return {k: _native(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_native(v) for v in value]
    to_native = getattr(value, "to_native", None)
    return to_native() if callable(to_native) else value


def split_statements(text: str) -> Iterator[str]:
    """The statements of a Cypher script: ``//`` comment lines dropped, split on ``;``."""
    lines = [line for line in text.splitlines() if not line.strip().startswith("//")]
    for statement in "\n".join(lines).split(";"):
        if statement.strip():
            yield statement.strip()


def _unreachable_message(uri: str, managed: bool) -> str:
    if managed:
        # The local server starts on the port the failing command was given, so name it.
        port = urlsplit(uri).port
        start = "kgrec db start" if port in (None, StoreConfig().port) else f"kgrec db start --set store.port={port}"
        return f"Neo4j is not reachable at {uri}. Start the local one with `{start}`, or set NEO4J_URI."
    return (
        f"Neo4j is not reachable at {uri} (from NEO4J_URI). Check that the server is up and the URI is right, "
        "or unset NEO4J_URI to use the local one (`kgrec db start`)."
    )


def _rejected_credentials_message(uri: str, managed: bool, auth: tuple[str, str] | None, reason: str) -> str:
    if not managed:
        return f"Neo4j at {uri} rejected the credentials ({reason}). Check NEO4J_USER and NEO4J_PASSWORD."
    port = urlsplit(uri).port or 7687
    password_file = password_path(port)
    if auth is None and not password_file.exists():
        return (
            f"The local Neo4j at {uri} asks for a password, and kgrec has none: {password_file} does not "
            "exist. That server was not started by this kgrec home ($KGREC_HOME): stop it and run "
            "`kgrec db start`, or set NEO4J_URI, NEO4J_USER and NEO4J_PASSWORD for it."
        )
    return (
        f"The local Neo4j at {uri} rejected the password in {password_file} ({reason}). The file no longer "
        "matches the password the store was created with (was it replaced?). Put the original file back, "
        "or set NEO4J_URI, NEO4J_USER and NEO4J_PASSWORD to credentials that work."
    )


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
