"""The meta store: the durable home of the catalog and of small global facts (DESIGN §5, §6).

Place in the data flow: DDL writes catalog relations here (``Relation.to_json``
dicts, one row per relation); settings and, later, the committed version and
``max_committed_epoch`` are small key/value facts. On restart meta reads it all
back to rebuild the catalog and every streaming job.

``MetaStore`` is the boundary. ``SqliteMetaStore`` is the embedded default
(``<data_dir>/meta.db``, WAL journal, ``synchronous=FULL`` so a commit is on
disk when it returns); ``PostgresMetaStore`` (``meta_store_postgres``) keeps the
same tables in a PostgreSQL schema; ``meta_store_from_url`` picks one for a data
dir. ``MemoryMetaStore`` is for tests.

Invariants:

- ``transaction()`` is all or nothing, across crashes too: a DDL statement
  interrupted by a crash is either fully there or absent. Transactions nest;
  an inner one is a savepoint that an exception rolls back alone.
- ``next_id`` never returns an id twice, across drops and restarts. It is not
  transactional, like a PostgreSQL sequence: files named after an id (a table
  log, SSTs) may exist before the DDL commits, so an id is never handed out
  again, even if the DDL that drew it rolled back. Calling it inside
  ``transaction()`` is therefore refused: draw ids first, then open the
  transaction.
- Every call is thread-safe. A transaction belongs to the thread that opened
  it; other threads' calls wait until it ends.
"""

from __future__ import annotations

import copy
import json
import os
import pathlib
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

from tidegate.errors import InternalError, InvalidParameterValue

META_DB_FILE_NAME = "meta.db"
# Holds the URL (without password) of a data dir's PostgreSQL meta store; absent for SQLite.
META_STORE_URL_FILE_NAME = "meta_store_url"
# The first id handed out; lower ids are left for built-in relations.
FIRST_RELATION_ID = 1001
_RELATION_ID_SEQUENCE = "relation_id"
_SCHEMA_VERSION = 1
# How long a call waits for another process holding the database's write lock.
_BUSY_TIMEOUT_S = 30.0


class MetaStore(Protocol):
    def load_relations(self) -> list[dict[str, Any]]:
        """Every relation's JSON dict, in id order."""
        ...

    def put_relation(self, relation: dict[str, Any]) -> None:
        """Insert or replace the relation with ``relation["id"]``."""
        ...

    def delete_relations(self, ids: list[int]) -> None:
        """Delete these relations, in one transaction; missing ids are ignored."""
        ...

    def next_id(self) -> int:
        """A fresh relation id, durably never handed out again. Refused inside a transaction."""
        ...

    def get(self, key: str) -> str | None:
        """A small fact, or None if it was never put (or was deleted)."""
        ...

    def put(self, key: str, value: str) -> None: ...

    def delete(self, key: str) -> None: ...

    def transaction(self) -> AbstractContextManager[None]:
        """Every put and delete inside commits together when the block ends, or none does."""
        ...

    def close(self) -> None: ...


def meta_store_from_url(url: str | None, data_dir: pathlib.Path) -> MetaStore:
    """The meta store of ``data_dir``: SQLite inside it (no URL) or PostgreSQL (a ``postgresql://`` URL).

    The choice is kept, since switching would lose the catalog and the committed
    checkpoint: a PostgreSQL URL, without its password, is written to
    ``DATA_DIR/meta_store_url`` once the store opens; a later start without a URL
    reuses it (the password then comes from ``PGPASSWORD`` or ``~/.pgpass``); a
    different URL, or any URL for a data dir whose catalog is in SQLite, is refused.
    """
    # Imported here: psycopg is loaded only by data dirs that use PostgreSQL.
    from tidegate.meta.meta_store_postgres import PostgresMetaStore, is_postgres_url, public_url, without_password

    if url is not None and not is_postgres_url(url):
        raise InvalidParameterValue(
            f"unsupported meta store URL {without_password(url)!r}: the accepted schemes are postgresql:// "
            "and postgres:// (a PostgreSQL database); without a URL the catalog is in SQLite in the data dir"
        )
    url_file = data_dir / META_STORE_URL_FILE_NAME
    saved = url_file.read_text().strip() if url_file.exists() else None
    if url is None:
        return SqliteMetaStore.in_data_dir(data_dir) if saved is None else PostgresMetaStore(saved)
    wanted = public_url(url)
    if saved is None and (data_dir / META_DB_FILE_NAME).exists():
        raise InvalidParameterValue(
            f"this data dir keeps its catalog in SQLite ({data_dir / META_DB_FILE_NAME}); "
            f"it cannot be switched to {wanted}"
        )
    if saved is not None and saved != wanted:
        raise InvalidParameterValue(f"this data dir keeps its catalog in {saved}; it cannot be switched to {wanted}")
    store = PostgresMetaStore(url)
    if saved is None:
        _write_durably(url_file, wanted + "\n")
    return store


def _write_durably(path: pathlib.Path, text: str) -> None:
    """Replace ``path`` with ``text`` all at once, on disk when this returns."""
    staging = path.with_name(path.name + ".tmp")
    with open(staging, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(staging, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _relation_id(relation: dict[str, Any]) -> int:
    relation_id = relation.get("id")
    assert isinstance(relation_id, int) and not isinstance(relation_id, bool), relation_id
    return relation_id


def _encode_relation(relation: dict[str, Any]) -> str:
    try:
        return json.dumps(relation, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise InternalError(f"relation {relation.get('id')} cannot be stored as JSON: {error}") from error


def _refuse_next_id_in_transaction() -> InternalError:
    return InternalError(
        "next_id() inside transaction(): ids are never reused, so they cannot roll back; "
        "draw ids before opening the transaction"
    )


class SqliteMetaStore(MetaStore):
    """The meta store in one SQLite file. Thread-safe."""

    def __init__(self, path: pathlib.Path) -> None:
        self._path = pathlib.Path(path)
        # Serializes every call and pins a transaction to its thread (re-entrant for nesting).
        self._lock = threading.RLock()
        self._depth = 0  # open transaction levels, all in the thread holding the lock
        self._closed = False
        with self._errors():
            # isolation_level=None: no implicit transactions; every BEGIN is ours.
            self._connection = sqlite3.connect(
                self._path, timeout=_BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
            )
            try:
                self._prepare()
            except BaseException:
                self._connection.close()
                raise

    @classmethod
    def in_data_dir(cls, data_dir: pathlib.Path) -> SqliteMetaStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(data_dir / META_DB_FILE_NAME)

    def _prepare(self) -> None:
        (journal_mode,) = self._connection.execute("PRAGMA journal_mode=WAL").fetchone()
        if journal_mode != "wal":
            raise InternalError(f"meta store {self._path}: cannot use WAL journal mode (got {journal_mode})")
        self._connection.execute("PRAGMA synchronous=FULL")
        with self._write():
            (version,) = self._connection.execute("PRAGMA user_version").fetchone()
            if version == 0:
                for statement in (
                    "CREATE TABLE relations (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
                    "CREATE TABLE facts (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
                    "CREATE TABLE sequences (name TEXT PRIMARY KEY, next_value INTEGER NOT NULL)",
                    f"PRAGMA user_version = {_SCHEMA_VERSION}",
                ):
                    self._connection.execute(statement)
            elif version != _SCHEMA_VERSION:
                raise InternalError(
                    f"meta store {self._path} has schema version {version}; "
                    f"this tidegate reads version {_SCHEMA_VERSION}"
                )

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as error:
            raise InternalError(f"meta store {self._path}: {error}") from error

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write: its own transaction, or part of the one the caller has open."""
        with self._lock, self._errors():
            self._check_open()
            if self._depth > 0:
                yield
                return
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield
                self._connection.execute("COMMIT")
            except BaseException:
                self._roll_back()
                raise

    def _query(self, sql: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._errors():
            self._check_open()
            return self._connection.execute(sql, parameters).fetchall()

    def load_relations(self) -> list[dict[str, Any]]:
        return [json.loads(body) for (body,) in self._query("SELECT body FROM relations ORDER BY id")]

    def put_relation(self, relation: dict[str, Any]) -> None:
        relation_id = _relation_id(relation)
        body = _encode_relation(relation)
        with self._write():
            self._connection.execute(
                "INSERT INTO relations (id, body) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET body = excluded.body",
                (relation_id, body),
            )
            # An id stored from elsewhere (a restore, a test) must not be handed out later.
            self._raise_sequence(relation_id + 1)

    def _raise_sequence(self, floor: int) -> None:
        self._connection.execute(
            "INSERT INTO sequences (name, next_value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET next_value = max(next_value, excluded.next_value)",
            (_RELATION_ID_SEQUENCE, floor),
        )

    def delete_relations(self, ids: list[int]) -> None:
        with self._write():
            self._connection.executemany("DELETE FROM relations WHERE id = ?", [(i,) for i in ids])

    def next_id(self) -> int:
        with self._lock:
            if self._depth > 0:
                raise _refuse_next_id_in_transaction()
            with self._write():
                self._raise_sequence(FIRST_RELATION_ID)
                (value,) = self._connection.execute(
                    "SELECT next_value FROM sequences WHERE name = ?", (_RELATION_ID_SEQUENCE,)
                ).fetchone()
                self._connection.execute(
                    "UPDATE sequences SET next_value = ? WHERE name = ?", (value + 1, _RELATION_ID_SEQUENCE)
                )
        assert isinstance(value, int)
        return value

    def get(self, key: str) -> str | None:
        rows = self._query("SELECT value FROM facts WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def put(self, key: str, value: str) -> None:
        with self._write():
            self._connection.execute(
                "INSERT INTO facts (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def delete(self, key: str) -> None:
        with self._write():
            self._connection.execute("DELETE FROM facts WHERE key = ?", (key,))

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock, self._errors():
            self._check_open()
            savepoint = f"level_{self._depth}"
            begin, commit, rollback = (
                ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
                if self._depth == 0
                else (f"SAVEPOINT {savepoint}", f"RELEASE {savepoint}", f"ROLLBACK TO {savepoint}")
            )
            self._connection.execute(begin)
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if self._depth == 0:
                    self._roll_back()
                else:
                    self._connection.execute(rollback)
                    self._connection.execute(f"RELEASE {savepoint}")
                raise
            self._depth -= 1
            if self._depth == 0:
                try:
                    self._connection.execute(commit)
                except BaseException:
                    self._roll_back()
                    raise
            else:
                self._connection.execute(commit)

    def _roll_back(self) -> None:
        # SQLite rolls some failures back by itself (SQLITE_FULL, SQLITE_IOERR).
        if self._connection.in_transaction:
            self._connection.execute("ROLLBACK")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            with self._errors():
                if self._depth > 0:
                    self._connection.execute("ROLLBACK")
                self._connection.close()

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError(f"meta store {self._path} is closed")


class MemoryMetaStore(MetaStore):
    """The meta store in memory, for tests. Same semantics as SQLite, including JSON round trips."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._relations: dict[int, str] = {}
        self._facts: dict[str, str] = {}
        self._next_id = FIRST_RELATION_ID
        self._depth = 0
        self._closed = False

    def load_relations(self) -> list[dict[str, Any]]:
        with self._lock:
            self._check_open()
            return [json.loads(self._relations[i]) for i in sorted(self._relations)]

    def put_relation(self, relation: dict[str, Any]) -> None:
        relation_id = _relation_id(relation)
        body = _encode_relation(relation)
        with self._lock:
            self._check_open()
            self._relations[relation_id] = body
            self._next_id = max(self._next_id, relation_id + 1)

    def delete_relations(self, ids: list[int]) -> None:
        with self._lock:
            self._check_open()
            for relation_id in ids:
                self._relations.pop(relation_id, None)

    def next_id(self) -> int:
        with self._lock:
            self._check_open()
            if self._depth > 0:
                raise _refuse_next_id_in_transaction()
            value = self._next_id
            self._next_id += 1
            return value

    def get(self, key: str) -> str | None:
        with self._lock:
            self._check_open()
            return self._facts.get(key)

    def put(self, key: str, value: str) -> None:
        with self._lock:
            self._check_open()
            self._facts[key] = value

    def delete(self, key: str) -> None:
        with self._lock:
            self._check_open()
            self._facts.pop(key, None)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self._check_open()
            snapshot = (copy.copy(self._relations), copy.copy(self._facts), self._next_id)
            self._depth += 1
            try:
                yield
            except BaseException:
                self._relations, self._facts, self._next_id = snapshot
                raise
            finally:
                self._depth -= 1

    def close(self) -> None:
        with self._lock:
            self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError("meta store is closed")
