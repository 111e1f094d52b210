"""The meta store in PostgreSQL, for deployments that keep the catalog outside the data dir (DESIGN §5, §6).

``PostgresMetaStore`` keeps the promises of the ``MetaStore`` Protocol (see
``tidegate.meta.meta_store``) with the same three tables as SQLite —
``relations``, ``facts``, ``sequences`` — plus ``schema_version``, all in one
PostgreSQL schema. The schema is named by the URL's ``schema`` query parameter
(default ``tidegate``), so one PostgreSQL database can hold several tidegate
instances::

    postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME&<libpq parameters>]

A password left out of the URL comes from ``PGPASSWORD`` or ``~/.pgpass`` (libpq
reads both). Messages and ``public_url`` never show a password.

Invariants:

- One connection, autocommit off. A call outside ``transaction()`` is one
  PostgreSQL transaction, committed before the call returns; the session runs
  with ``synchronous_commit = on``, so a returned ``put`` (the checkpoint's
  commit point) is on the server's disk whatever the server's default is.
- A call outside ``transaction()`` that finds the connection broken (server
  restart, network failure) reconnects once and runs again. Running again is
  safe: every write is an upsert or a delete, and a repeated ``next_id`` can
  only skip an id, never hand one out twice. Inside ``transaction()`` the work
  done so far went with the connection, so the error reaches the caller.
- Thread-safe like ``SqliteMetaStore``: one re-entrant lock serializes calls and
  pins an open transaction to its thread.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tidegate.errors import InternalError, InvalidParameterValue
from tidegate.meta.meta_store import (
    _RELATION_ID_SEQUENCE,
    FIRST_RELATION_ID,
    MetaStore,
    _encode_relation,
    _refuse_next_id_in_transaction,
    _relation_id,
)

log = logging.getLogger(__name__)

POSTGRES_URL_SCHEMES = ("postgresql", "postgres")
DEFAULT_SCHEMA = "tidegate"
_SCHEMA_PARAMETER = "schema"
_SCHEMA_VERSION = 1
# libpq parameters the store sets unless the URL does: a dead host fails start-up in bounded
# time instead of hanging it, and the sessions are recognisable in pg_stat_activity.
_CONNECTION_DEFAULTS = {"connect_timeout": "10", "application_name": "tidegate"}

_T = TypeVar("_T")
_Connection = psycopg.Connection[Any]


def is_postgres_url(url: str) -> bool:
    return urlsplit(url).scheme in POSTGRES_URL_SCHEMES


def without_password(url: str) -> str:
    """``url`` with no password, neither in its user part nor as a ``password`` query parameter."""
    parts = urlsplit(url)
    user_info, at, hosts = parts.netloc.rpartition("@")
    netloc = f"{user_info.partition(':')[0]}@{hosts}" if at else hosts
    query = [(name, value) for name, value in parse_qsl(parts.query, keep_blank_values=True) if name != "password"]
    return urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))


def public_url(url: str) -> str:
    """A PostgreSQL URL as it may be shown, logged and stored: no password, spelled ``postgresql://``."""
    return urlunsplit(urlsplit(without_password(url))._replace(scheme="postgresql"))


def _passwords(url: str) -> list[str]:
    """Every spelling of the passwords in ``url``, to scrub from messages that might echo them."""
    parts = urlsplit(url)
    user_info, at, _ = parts.netloc.rpartition("@")
    found = [user_info.partition(":")[2]] if at else []
    found += [value for name, value in parse_qsl(parts.query, keep_blank_values=True) if name == "password"]
    spellings = {spelling for password in found for spelling in (password, unquote(password))}
    # Longest first, so that a password containing another is scrubbed whole.
    return sorted((s for s in spellings if s), key=len, reverse=True)


def _split_schema(url: str) -> tuple[str, str]:
    """The URL that libpq accepts (it refuses unknown query parameters) and the schema it named."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for name, value in query if name == _SCHEMA_PARAMETER]
    schema = schemas[-1] if schemas else DEFAULT_SCHEMA
    if not schema:
        raise InvalidParameterValue(f"meta store URL {public_url(url)}: the schema parameter is empty")
    rest = [(name, value) for name, value in query if name != _SCHEMA_PARAMETER]
    return urlunsplit(parts._replace(query=urlencode(rest))), schema


class PostgresMetaStore(MetaStore):
    """The meta store in a schema of a PostgreSQL database. Thread-safe."""

    def __init__(self, url: str) -> None:
        if not is_postgres_url(url):
            raise InvalidParameterValue(f"not a PostgreSQL URL: {without_password(url)}")
        self._passwords = _passwords(url)
        self._conninfo, self.schema = _split_schema(url)
        try:
            self._parameters = conninfo_to_dict(self._conninfo)
        except psycopg.Error as error:
            raise InvalidParameterValue(
                f"invalid meta store URL {public_url(url)}: {self._scrub(str(error))}"
            ) from error
        host = self._parameters.get("host") or os.environ.get("PGHOST") or "localhost"
        port = self._parameters.get("port") or os.environ.get("PGPORT") or "5432"
        database = self._parameters.get("dbname") or os.environ.get("PGDATABASE") or "(default)"
        # How every message names this store: where it is, never how to log in.
        self.where = f"PostgreSQL meta store at {host}:{port}, database {database}, schema {self.schema}"
        # Serializes every call and pins a transaction to its thread (re-entrant for nesting).
        self._lock = threading.RLock()
        self._depth = 0  # open transaction levels, all in the thread holding the lock
        self._closed = False
        self._connection = self._connect()
        try:
            self._call(self._prepare)
        except BaseException:
            self._connection.close()
            raise

    # ---- connection -------------------------------------------------------------
    def _connect(self) -> _Connection:
        defaults = {name: value for name, value in _CONNECTION_DEFAULTS.items() if name not in self._parameters}
        try:
            connection = psycopg.connect(make_conninfo(self._conninfo, **defaults), autocommit=False)
        except psycopg.Error as error:
            raise InternalError(f"cannot connect to the {self.where}: {self._scrub(str(error))}") from error
        try:
            connection.execute("SET synchronous_commit TO on")
            connection.commit()
        except psycopg.Error as error:
            connection.close()
            raise self._error(error) from error
        return connection

    def _reconnect(self) -> None:
        self._connection.close()
        self._connection = self._connect()

    def _scrub(self, message: str) -> str:
        """``message`` on one line, with any password in it masked."""
        for password in self._passwords:
            message = message.replace(password, "********")
        return " ".join(message.split())

    def _error(self, error: psycopg.Error) -> InternalError:
        return InternalError(f"{self.where}: {self._scrub(str(error))}")

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as error:
            raise self._error(error) from error

    def _sql(self, text: str) -> sql.Composed:
        """``text`` with ``{schema}`` replaced by the quoted schema name."""
        return sql.SQL(text).format(schema=sql.Identifier(self.schema))

    # ---- running statements -------------------------------------------------------
    def _call(self, work: Callable[[_Connection], _T], *, commit: bool = True) -> _T:
        """Run ``work`` inside the open transaction, or else as a transaction of its own.

        On its own, ``work`` is committed before returning (unless ``commit`` is
        false: then it opens the outermost transaction), and a broken connection is
        replaced once and ``work`` run again (see the module docstring for why that
        is safe).
        """
        with self._lock:
            self._check_open()
            if self._depth > 0:
                with self._errors():
                    return work(self._connection)
            if self._connection.closed:  # a reconnection failed before: try again, once
                self._reconnect()
            try:
                return self._once(work, commit)
            except psycopg.Error as error:
                if not self._connection.broken:
                    raise self._error(error) from error
                log.warning("%s: the connection broke (%s); reconnecting once", self.where, self._scrub(str(error)))
            self._reconnect()
            try:
                return self._once(work, commit)
            except psycopg.Error as error:
                raise self._error(error) from error

    def _once(self, work: Callable[[_Connection], _T], commit: bool) -> _T:
        try:
            result = work(self._connection)
            if commit:
                self._connection.commit()
            return result
        except BaseException:
            self._roll_back()
            raise

    def _roll_back(self) -> None:
        if self._connection.closed:
            return
        # Only a broken connection fails to roll back, and the server rolls back a transaction
        # whose connection went; the next call replaces the connection.
        with contextlib.suppress(psycopg.Error):
            self._connection.rollback()

    def _prepare(self, connection: _Connection) -> None:
        # Several tidegate processes starting on one new schema create it one after the other.
        lock_key = zlib.crc32(f"tidegate meta store {self.schema}".encode())
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
        exists = connection.execute(
            "SELECT 1 FROM pg_tables WHERE schemaname = %s AND tablename = 'schema_version'", (self.schema,)
        ).fetchone()
        if exists:
            version_row = connection.execute(self._sql("SELECT version FROM {schema}.schema_version")).fetchone()
            version = version_row[0] if version_row else None
            if version != _SCHEMA_VERSION:
                raise InternalError(
                    f"{self.where} has schema version {version}; this tidegate reads version {_SCHEMA_VERSION}"
                )
            return
        # Checked first rather than CREATE SCHEMA IF NOT EXISTS, which needs the CREATE privilege on
        # the database even when the schema exists: an administrator may create it for us.
        if not connection.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone():
            connection.execute(self._sql("CREATE SCHEMA {schema}"))
        for statement in (
            "CREATE TABLE {schema}.relations (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
            "CREATE TABLE {schema}.facts (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            "CREATE TABLE {schema}.sequences (name TEXT PRIMARY KEY, next_value BIGINT NOT NULL)",
            "CREATE TABLE {schema}.schema_version (version INTEGER NOT NULL)",
        ):
            connection.execute(self._sql(statement))
        connection.execute(self._sql("INSERT INTO {schema}.schema_version (version) VALUES (%s)"), (_SCHEMA_VERSION,))

    # ---- the MetaStore interface ----------------------------------------------------
    def load_relations(self) -> list[dict[str, Any]]:
        query = self._sql("SELECT body FROM {schema}.relations ORDER BY id")
        rows = self._call(lambda connection: connection.execute(query).fetchall())
        return [json.loads(body) for (body,) in rows]

    def put_relation(self, relation: dict[str, Any]) -> None:
        relation_id = _relation_id(relation)
        body = _encode_relation(relation)

        def put(connection: _Connection) -> None:
            connection.execute(
                self._sql(
                    "INSERT INTO {schema}.relations (id, body) VALUES (%s, %s) "
                    "ON CONFLICT (id) DO UPDATE SET body = excluded.body"
                ),
                (relation_id, body),
            )
            # An id stored from elsewhere (a restore, a test) must not be handed out later.
            self._raise_sequence(connection, relation_id + 1)

        self._call(put)

    def _raise_sequence(self, connection: _Connection, floor: int) -> None:
        connection.execute(
            self._sql(
                "INSERT INTO {schema}.sequences AS s (name, next_value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET next_value = GREATEST(s.next_value, excluded.next_value)"
            ),
            (_RELATION_ID_SEQUENCE, floor),
        )

    def delete_relations(self, ids: list[int]) -> None:
        statement = self._sql("DELETE FROM {schema}.relations WHERE id = ANY(%s::bigint[])")
        self._call(lambda connection: connection.execute(statement, (list(ids),)))

    def next_id(self) -> int:
        # One statement: the row lock of the update serializes tidegate processes sharing the schema.
        statement = self._sql(
            "INSERT INTO {schema}.sequences AS s (name, next_value) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET next_value = GREATEST(s.next_value, %s) + 1 "
            "RETURNING next_value - 1"
        )
        parameters = (_RELATION_ID_SEQUENCE, FIRST_RELATION_ID + 1, FIRST_RELATION_ID)
        with self._lock:
            if self._depth > 0:
                raise _refuse_next_id_in_transaction()
            row = self._call(lambda connection: connection.execute(statement, parameters).fetchone())
        assert row is not None and isinstance(row[0], int), row
        return row[0]

    def get(self, key: str) -> str | None:
        query = self._sql("SELECT value FROM {schema}.facts WHERE key = %s")
        row = self._call(lambda connection: connection.execute(query, (key,)).fetchone())
        return row[0] if row else None

    def put(self, key: str, value: str) -> None:
        statement = self._sql(
            "INSERT INTO {schema}.facts (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        self._call(lambda connection: connection.execute(statement, (key, value)))

    def delete(self, key: str) -> None:
        statement = self._sql("DELETE FROM {schema}.facts WHERE key = %s")
        self._call(lambda connection: connection.execute(statement, (key,)))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._check_open()
            savepoint = sql.Identifier(f"level_{self._depth}")
            if self._depth == 0:
                # A first statement opens the transaction now, so that a connection that broke
                # while idle is replaced before the caller's work rather than failing it.
                self._call(lambda connection: connection.execute("SELECT 1"), commit=False)
            else:
                with self._errors():
                    self._connection.execute(sql.SQL("SAVEPOINT {}").format(savepoint))
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._roll_back()
                else:
                    with self._errors():
                        self._connection.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(savepoint))
                        self._connection.execute(sql.SQL("RELEASE SAVEPOINT {}").format(savepoint))
                raise
            self._depth -= 1
            with self._errors():
                if self._depth > 0:
                    self._connection.execute(sql.SQL("RELEASE SAVEPOINT {}").format(savepoint))
                    return
                try:
                    self._connection.commit()
                except BaseException:
                    self._roll_back()
                    raise

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # Closing a connection inside a transaction rolls it back on the server.
            self._connection.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError(f"{self.where} is closed")
