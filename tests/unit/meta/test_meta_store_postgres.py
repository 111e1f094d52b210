"""The meta store contract against a real PostgreSQL server, and what only the PostgreSQL store does.

The server is the one of the shared ``postgres_url`` fixture (tests/conftest.py):
the one ``TIDEGATE_TEST_POSTGRES_URL`` names, or one the fixture starts; without
PostgreSQL the tests are skipped, or fail when ``TIDEGATE_REQUIRE_POSTGRES`` is
set. Each test works in a fresh schema, dropped after it.
"""

from __future__ import annotations

import inspect
import json
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
import test_meta_store
from test_meta_store import Boom, relation_json
from tidegate_process import free_port, start_server

import tidegate
from tidegate.errors import InternalError, InvalidParameterValue
from tidegate.meta.meta_store import (
    FIRST_RELATION_ID,
    META_STORE_URL_FILE_NAME,
    MetaStore,
    SqliteMetaStore,
    meta_store_from_url,
)
from tidegate.meta.meta_store_postgres import PostgresMetaStore

# The behaviour every meta store shares: the tests of test_meta_store.py that take only the
# ``make_store`` factory, run here against PostgreSQL.
CONTRACT = [
    function
    for name, function in vars(test_meta_store).items()
    if name.startswith("test_") and list(inspect.signature(function).parameters) == ["make_store"]
]


def with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("schema", schema)]
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection]:
    """A second connection to the database, to look at what the store wrote."""
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def schema(admin: psycopg.Connection) -> Iterator[str]:
    name = f"tidegate_test_{secrets.token_hex(6)}"
    yield name
    admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


@pytest.fixture
def store_url(postgres_url: str, schema: str) -> str:
    return with_schema(postgres_url, schema)


@pytest.fixture
def make_store(store_url: str) -> Iterator[Callable[[], MetaStore]]:
    """A factory: each call opens the test's schema again."""
    opened: list[MetaStore] = []

    def make() -> MetaStore:
        opened.append(PostgresMetaStore(store_url))
        return opened[-1]

    yield make
    for store in opened:
        store.close()


@pytest.mark.parametrize("contract_test", CONTRACT, ids=[function.__name__ for function in CONTRACT])
def test_meets_the_meta_store_contract(
    contract_test: Callable[[Callable[[], MetaStore]], None], make_store: Callable[[], MetaStore]
) -> None:
    contract_test(make_store)


def test_the_contract_is_found() -> None:
    assert len(CONTRACT) >= 8, [function.__name__ for function in CONTRACT]


def test_everything_survives_reopen(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    relation_id = store.next_id()
    with store.transaction():
        store.put_relation(relation_json(relation_id))
        store.put("k", "v")
    store.close()
    store = make_store()
    assert store.load_relations() == [relation_json(relation_id)]
    assert store.get("k") == "v"
    assert store.next_id() == relation_id + 1


def test_tables_live_in_the_named_schema_only(
    make_store: Callable[[], MetaStore], postgres_url: str, admin: psycopg.Connection, schema: str
) -> None:
    store = make_store()
    store.put("k", "mine")
    tables = admin.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", (schema,)).fetchall()
    assert tables == [("facts",), ("relations",), ("schema_version",), ("sequences",)]
    other_schema = f"{schema}_other"
    other = PostgresMetaStore(with_schema(postgres_url, other_schema))
    try:
        assert other.get("k") is None
        assert other.next_id() == FIRST_RELATION_ID
        other.put("k", "theirs")
        assert store.get("k") == "mine"
    finally:
        other.close()
        admin.execute(f'DROP SCHEMA "{other_schema}" CASCADE')


def test_a_call_is_committed_when_it_returns(make_store: Callable[[], MetaStore], admin: psycopg.Connection) -> None:
    store = make_store()
    assert isinstance(store, PostgresMetaStore)
    store.put("state.version", "1")
    assert store.get("state.version") == "1"
    facts = admin.execute(f'SELECT key, value FROM "{store.schema}".facts').fetchall()
    assert facts == [("state.version", "1")]
    # Reads too end their transaction: an idle store holds no snapshot and no lock.
    backend = store._connection.info.backend_pid
    (state,) = admin.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", (backend,)).fetchone() or (None,)
    assert state == "idle"
    (synchronous_commit,) = store._connection.execute("SHOW synchronous_commit").fetchone() or (None,)
    assert synchronous_commit == "on"


def test_a_transaction_is_invisible_until_it_ends(
    make_store: Callable[[], MetaStore], admin: psycopg.Connection
) -> None:
    store = make_store()
    assert isinstance(store, PostgresMetaStore)
    facts = f'SELECT key FROM "{store.schema}".facts ORDER BY 1'
    with store.transaction():
        store.put("a", "1")
        with store.transaction():
            store.put("b", "2")
        assert admin.execute(facts).fetchall() == []
    assert admin.execute(facts).fetchall() == [("a",), ("b",)]


def terminate_connection(store: PostgresMetaStore, admin: psycopg.Connection) -> None:
    """End the store's server session, as a server restart or a network failure would."""
    backend = store._connection.info.backend_pid
    admin.execute("SELECT pg_terminate_backend(%s, 10000)", (backend,))


def test_a_broken_connection_is_replaced_once(make_store: Callable[[], MetaStore], admin: psycopg.Connection) -> None:
    store = make_store()
    assert isinstance(store, PostgresMetaStore)
    store.put("k", "1")
    terminate_connection(store, admin)
    assert store.get("k") == "1"
    terminate_connection(store, admin)
    store.put("k", "2")
    terminate_connection(store, admin)
    assert store.next_id() == FIRST_RELATION_ID
    # A transaction that opens on a broken connection starts over on a new one.
    terminate_connection(store, admin)
    with store.transaction():
        store.put("k", "3")
    assert store.get("k") == "3"


def test_a_connection_broken_inside_a_transaction_fails_it(
    make_store: Callable[[], MetaStore], admin: psycopg.Connection
) -> None:
    store = make_store()
    assert isinstance(store, PostgresMetaStore)
    store.put("k", "before")
    with pytest.raises(InternalError, match="terminating connection"), store.transaction():
        store.put("k", "lost")
        terminate_connection(store, admin)
        store.put("other", "lost")
    assert (store.get("k"), store.get("other")) == ("before", None)


def test_another_schema_version_is_refused(
    make_store: Callable[[], MetaStore], admin: psycopg.Connection, schema: str
) -> None:
    make_store().close()
    admin.execute(f'UPDATE "{schema}".schema_version SET version = 99')
    with pytest.raises(InternalError, match=f"schema {schema} has schema version 99"):
        make_store()


def test_a_connection_error_names_host_and_port_but_not_the_password() -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://tidegate:pa55-w0rd-s3cret@127.0.0.1:{port}/tidegate_test?password=other-s3cret"
    with pytest.raises(InternalError) as raised:
        PostgresMetaStore(url)
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert "database tidegate_test" in message
    assert "s3cret" not in message


def test_urls_of_other_kinds_are_refused(tmp_path: Path) -> None:
    for url in ("sqlite:///meta.db", "mysql://root:pw@db/tidegate", "", "fs"):
        with pytest.raises(InvalidParameterValue, match=r"postgresql:// and postgres://") as raised:
            meta_store_from_url(url, tmp_path)
        assert "pw" not in str(raised.value)
    store = meta_store_from_url(None, tmp_path / "data")
    assert isinstance(store, SqliteMetaStore)
    store.close()
    assert not (tmp_path / "data" / META_STORE_URL_FILE_NAME).exists()


def test_a_data_dir_keeps_its_meta_store(tmp_path: Path, store_url: str, schema: str, postgres_url: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # A password in the URL is used (trust authentication ignores it here) but never written down.
    with_password = store_url.replace("@", ":not-written-down@", 1)
    meta_store_from_url(with_password, data_dir).close()
    saved = (data_dir / META_STORE_URL_FILE_NAME).read_text()
    assert "not-written-down" not in saved
    assert f"schema={schema}" in saved
    reopened = meta_store_from_url(None, data_dir)
    assert isinstance(reopened, PostgresMetaStore) and reopened.schema == schema
    reopened.close()
    meta_store_from_url(store_url.replace("postgresql://", "postgres://", 1), data_dir).close()
    with pytest.raises(InvalidParameterValue, match="cannot be switched"):
        meta_store_from_url(with_schema(postgres_url, f"{schema}_other"), data_dir)
    assert not (data_dir / "meta.db").exists()


def test_a_sqlite_data_dir_is_not_switched_to_postgres(tmp_path: Path, store_url: str) -> None:
    meta_store_from_url(None, tmp_path).close()
    with pytest.raises(InvalidParameterValue, match=r"SQLite .*cannot be switched"):
        meta_store_from_url(store_url, tmp_path)
    assert not (tmp_path / META_STORE_URL_FILE_NAME).exists()


def test_a_database_restarts_from_its_postgres_meta_store(
    tmp_path: Path, store_url: str, postgres_url: str, admin: psycopg.Connection, schema: str
) -> None:
    data_dir = tmp_path / "data"
    with tidegate.connect(data_dir, state_store_url="fs", meta_store_url=store_url) as db:
        db.execute("CREATE TABLE orders (id INT PRIMARY KEY, category VARCHAR, amount INT)")
        db.execute(
            "CREATE MATERIALIZED VIEW revenue AS SELECT category, COUNT(*) AS n, SUM(amount) AS total "
            "FROM orders GROUP BY category"
        )
        db.execute("INSERT INTO orders VALUES (1, 'books', 10), (2, 'books', 5), (3, 'games', 7)")
        db.execute("FLUSH")
        before = sorted(db.execute("SELECT category, n, total FROM revenue"))
    assert before == [("books", 2, 15), ("games", 1, 7)]
    assert not (data_dir / "meta.db").exists()
    row = admin.execute(f"SELECT value FROM \"{schema}\".facts WHERE key = 'state.version'").fetchone()
    assert row is not None and json.loads(row[0])["max_committed_epoch"] > 0

    with tidegate.connect(data_dir) as db:
        assert sorted(db.execute("SELECT category, n, total FROM revenue")) == before
        db.execute("INSERT INTO orders VALUES (4, 'games', 1)")
        db.execute("FLUSH")
        assert sorted(db.execute("SELECT category, n, total FROM revenue")) == [("books", 2, 15), ("games", 2, 8)]

    with pytest.raises(InvalidParameterValue, match="cannot be switched"):
        tidegate.connect(data_dir, meta_store_url=with_schema(postgres_url, f"{schema}_other"))


def test_a_thread_waits_for_another_threads_transaction(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    inside, seen = threading.Event(), []

    def read() -> None:
        inside.wait()
        seen.append(store.get("k"))

    reader = threading.Thread(target=read)
    reader.start()
    with pytest.raises(Boom), store.transaction():
        store.put("k", "uncommitted")
        inside.set()
        reader.join(0.2)
        assert reader.is_alive()
        raise Boom
    reader.join()
    assert seen == [None]


def test_tidegate_start_takes_a_meta_store_url(
    tmp_path: Path, store_url: str, postgres_url: str, admin: psycopg.Connection, schema: str
) -> None:
    port = free_port()
    process = start_server(tmp_path, port, "--meta-store", store_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=root dbname=dev", autocommit=True) as conn:
                    conn.execute("CREATE TABLE t (x INT)")
                break
            except psycopg.OperationalError:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    (count,) = admin.execute(f'SELECT count(*) FROM "{schema}".relations').fetchone() or (None,)
    assert count == 1
    refused = start_server(tmp_path, free_port(), "--meta-store", with_schema(postgres_url, f"{schema}_other"))
    _, stderr = refused.communicate(timeout=60)
    assert refused.returncode == 1
    assert b"cannot be switched" in stderr
