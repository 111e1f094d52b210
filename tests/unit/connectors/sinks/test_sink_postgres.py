"""The PostgreSQL sink target against a real server: values, upserts, epochs, failures, checks."""

from __future__ import annotations

import datetime as dt
import decimal
import threading
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from sink_helpers import make_changes, make_spec

from tidegate.common.chunk import Op
from tidegate.common.types import (
    BIGINT,
    BOOLEAN,
    BYTEA,
    DATE,
    DOUBLE,
    INTEGER,
    INTERVAL,
    JSONB,
    NUMERIC,
    REAL,
    SMALLINT,
    TIME,
    TIMESTAMP,
    TIMESTAMPTZ,
    VARCHAR,
    SqlType,
    array_of,
)
from tidegate.connectors.sinks import check_sink_options, make_sink_target
from tidegate.connectors.sinks.postgres import PROGRESS_TABLE, PostgresSinkTarget
from tidegate.errors import (
    InvalidColumnReference,
    InvalidParameterValue,
    NotNullViolation,
    UndefinedColumn,
    UndefinedRelation,
)

PgSchema = tuple[psycopg.Connection, str]
KV = [("k", INTEGER), ("v", VARCHAR)]

# (SQL type, PostgreSQL column type, values), NULL included in each.
TYPED_VALUES: list[tuple[SqlType, str, list[Any]]] = [
    (BOOLEAN, "boolean", [True, False, None]),
    (SMALLINT, "smallint", [-32768, 32767, None]),
    (INTEGER, "integer", [-(2**31), 2**31 - 1, None]),
    (BIGINT, "bigint", [-(2**63), 2**63 - 1, None]),
    (REAL, "real", [0.1, -3.4e38, None]),
    (DOUBLE, "double precision", [0.1, 1e-300, float("inf")]),
    (NUMERIC, "numeric", [decimal.Decimal("12345678901234567890.0123456789"), decimal.Decimal("-0.5"), None]),
    (SqlType("numeric", 10, 2), "numeric(10,2)", [decimal.Decimal("1.50"), decimal.Decimal("-99999999.99"), None]),
    (VARCHAR, "text", ["plain", 'tab\tnew\nline "quote" \\ back', ""]),
    (BYTEA, "bytea", [b"\x00\xff\\", b"", None]),
    (DATE, "date", [dt.date(2026, 11, 28), dt.date(1, 1, 1), None]),
    (TIME, "time", [dt.time(10, 0, 0, 123456), dt.time(0, 0), None]),
    (TIMESTAMP, "timestamp", [dt.datetime(2026, 11, 28, 10, 0, 0, 123456), dt.datetime(2000, 1, 1), None]),
    (TIMESTAMPTZ, "timestamptz", [dt.datetime(2026, 11, 28, 10, 0, 0, 500, tzinfo=dt.UTC), None, None]),
    (INTERVAL, "interval", [pa.MonthDayNano([14, 3, 3_723_000_001_000]), pa.MonthDayNano([-1, -2, -5_000]), None]),
    (JSONB, "jsonb", ['{"b": [1, 2.5, null], "a": "x\\ny"}', '"text"', None]),
    (array_of(INTEGER), "integer[]", [[1, None, 3], [], None]),
    (array_of(VARCHAR), "text[]", [["a b", "NULL", None, "", 'q"\\'], ["x"], None]),
    (array_of(NUMERIC), "numeric[]", [[decimal.Decimal("1.25"), None], None, []]),
]


def _target(schema: str, url: str, columns: list[tuple[str, SqlType]], **kwargs: Any) -> PostgresSinkTarget:
    options = {"connector": "postgres", "url": url, "schema": schema, "table": "t", **kwargs.pop("options", {})}
    target = make_sink_target(make_spec(columns, options=options, **kwargs))
    assert isinstance(target, PostgresSinkTarget)
    return target


def _pg_cast_text(sql_type: SqlType, value: Any) -> str | None:
    """What ``value::text`` shows in PostgreSQL: its output function's text, but a boolean spelled out."""
    text = sql_type.to_text(value)
    return {"t": "true", "f": "false"}.get(text or "", text) if sql_type == BOOLEAN else text


def _rows(connection: psycopg.Connection, schema: str, order: str = "k") -> list[tuple[Any, ...]]:
    return connection.execute(f"SELECT * FROM {schema}.t ORDER BY {order}").fetchall()


def _progress(connection: psycopg.Connection, schema: str) -> list[tuple[Any, ...]]:
    return connection.execute(f"SELECT sink_name, epoch FROM {schema}.{PROGRESS_TABLE}").fetchall()


def test_every_type_round_trips_as_postgresql_prints_it(pg_schema: PgSchema, postgres_url: str) -> None:
    connection, schema = pg_schema
    columns = [(f"c{i}", sql_type) for i, (sql_type, _, _) in enumerate(TYPED_VALUES)]
    ddl = ", ".join(f"c{i} {pg_type}" for i, (_, pg_type, _) in enumerate(TYPED_VALUES))
    connection.execute(f"CREATE TABLE {schema}.t (n int, {ddl})")
    rows = [tuple(values[row] for _, _, values in TYPED_VALUES) for row in range(3)]
    target = _target(schema, postgres_url, columns)
    target.open()
    target.deliver(5, make_changes(columns, [(Op.INSERT, row) for row in rows]))
    target.close()
    texts = ", ".join(f"c{i}::text" for i in range(len(TYPED_VALUES)))
    stored = connection.execute(f"SELECT {texts} FROM {schema}.t").fetchall()
    expected = [
        tuple(_pg_cast_text(sql_type, value) for (sql_type, _, _), value in zip(TYPED_VALUES, row)) for row in rows
    ]
    assert sorted(stored, key=repr) == sorted(expected, key=repr)
    # Exactness, not only text: the decimal's every digit and the timestamptz's instant.
    assert connection.execute(f"SELECT c6, c13 FROM {schema}.t WHERE c6 < 0").fetchone() == (
        decimal.Decimal("-0.5"),
        None,
    )
    assert connection.execute(f"SELECT c13 FROM {schema}.t WHERE c13 IS NOT NULL").fetchone() == (
        dt.datetime(2026, 11, 28, 10, 0, 0, 500, tzinfo=dt.UTC),
    )


def test_append_only_delivers_and_records_the_epoch(pg_schema: PgSchema, postgres_url: str) -> None:
    connection, schema = pg_schema
    connection.execute(f"CREATE TABLE {schema}.t (k int, v text)")
    target = _target(schema, postgres_url, KV, name="orders_sink")
    target.open()
    assert target.last_delivered_epoch() == 0
    target.deliver(10, make_changes(KV, [(Op.INSERT, (1, "a")), (Op.INSERT, (2, "b"))]))
    assert target.last_delivered_epoch() == 10
    assert _progress(connection, schema) == [("orders_sink", 10)]
    # A replay of a delivered epoch changes nothing, whatever it carries.
    target.deliver(10, make_changes(KV, [(Op.INSERT, (3, "c"))]))
    target.deliver(9, make_changes(KV, [(Op.INSERT, (4, "d"))]))
    assert _rows(connection, schema) == [(1, "a"), (2, "b")]
    # An empty delivery moves only the record.
    target.deliver(11, make_changes(KV, []))
    assert target.last_delivered_epoch() == 11
    # write() applies without progress.
    target.write(make_changes(KV, [(Op.INSERT, (5, "e"))]))
    assert _rows(connection, schema) == [(1, "a"), (2, "b"), (5, "e")]
    assert _progress(connection, schema) == [("orders_sink", 11)]
    target.close()
    target.close()


def test_upsert_applies_the_last_change_per_key(pg_schema: PgSchema, postgres_url: str) -> None:
    connection, schema = pg_schema
    connection.execute(f"CREATE TABLE {schema}.t (k int PRIMARY KEY, v text NOT NULL, extra int DEFAULT 42)")
    connection.execute(f"INSERT INTO {schema}.t VALUES (1, 'old', 0), (2, 'old', 0), (3, 'old', 0)")
    target = _target(schema, postgres_url, KV, key=[0], sink_type="upsert")
    target.open()
    changes = [
        (Op.UPDATE_DELETE, (1, "old")),
        (Op.UPDATE_INSERT, (1, "new")),  # update: upserted
        (Op.DELETE, (2, "old")),  # delete of an existing key
        (Op.INSERT, (4, "x")),
        (Op.DELETE, (4, "x")),  # inserted then deleted in the same epoch: never there
        (Op.DELETE, (3, "old")),
        (Op.INSERT, (3, "again")),  # deleted then inserted: there
        (Op.INSERT, (5, "first")),
        (Op.UPDATE_DELETE, (5, "first")),
        (Op.UPDATE_INSERT, (5, "second")),
    ]
    target.deliver(3, make_changes(KV, changes))
    assert _rows(connection, schema) == [(1, "new", 0), (3, "again", 0), (5, "second", 42)]
    target.write(make_changes(KV, [(Op.DELETE, (1, "new")), (Op.INSERT, (6, "w"))]))
    assert _rows(connection, schema) == [(3, "again", 0), (5, "second", 42), (6, "w", 42)]
    target.close()


def test_upsert_with_a_composite_key_and_only_key_columns(pg_schema: PgSchema, postgres_url: str) -> None:
    connection, schema = pg_schema
    columns = [("a", INTEGER), ("b", VARCHAR)]
    connection.execute(f"CREATE TABLE {schema}.t (a int, b text, UNIQUE (b, a))")
    target = _target(schema, postgres_url, columns, key=[0, 1], sink_type="upsert")
    target.open()
    target.deliver(1, make_changes(columns, [(Op.INSERT, (1, "x")), (Op.INSERT, (1, "y")), (Op.INSERT, (1, "x"))]))
    target.deliver(2, make_changes(columns, [(Op.DELETE, (1, "y")), (Op.INSERT, (2, "x"))]))
    assert _rows(connection, schema, "a, b") == [(1, "x"), (2, "x")]
    target.close()


def test_a_failing_delivery_leaves_neither_rows_nor_progress(pg_schema: PgSchema, postgres_url: str) -> None:
    connection, schema = pg_schema
    connection.execute(f"CREATE TABLE {schema}.t (k int PRIMARY KEY, v text NOT NULL)")
    target = _target(schema, postgres_url, KV, key=[0], sink_type="upsert")
    target.open()
    target.deliver(1, make_changes(KV, [(Op.INSERT, (1, "a"))]))
    bad = make_changes(KV, [(Op.INSERT, (2, "b")), (Op.UPDATE_DELETE, (1, "a")), (Op.UPDATE_INSERT, (1, None))])
    with pytest.raises(NotNullViolation, match='"v"'):
        target.deliver(2, bad)
    assert _rows(connection, schema) == [(1, "a")]
    assert target.last_delivered_epoch() == 1
    # The same connection goes on: the next delivery works.
    target.deliver(2, make_changes(KV, [(Op.INSERT, (2, "b"))]))
    assert _rows(connection, schema) == [(1, "a"), (2, "b")]
    target.close()


def test_a_connection_killed_mid_delivery_applies_nothing_and_the_next_call_reconnects(
    pg_schema: PgSchema, postgres_url: str
) -> None:
    connection, schema = pg_schema
    connection.execute(f"CREATE TABLE {schema}.t (k int, v text)")
    # A trigger that parks the delivering transaction after its first rows, so it can be killed there.
    connection.execute(
        f"CREATE FUNCTION {schema}.park() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN IF NEW.v = 'park' THEN PERFORM pg_sleep(30); END IF; RETURN NEW; END $$"
    )
    connection.execute(f"CREATE TRIGGER park BEFORE INSERT ON {schema}.t FOR EACH ROW EXECUTE FUNCTION {schema}.park()")
    target = _target(schema, postgres_url, KV)
    target.open()
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            target.deliver(7, make_changes(KV, [(Op.INSERT, (1, "a")), (Op.INSERT, (2, "park"))]))
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=deliver)
    thread.start()
    killed = False
    for _ in range(200):
        row = connection.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE query LIKE 'COPY%%' AND pid <> pg_backend_pid()"
        ).fetchone()
        if row is not None:
            killed = True
            break
        threading.Event().wait(0.05)
    thread.join(timeout=30)
    assert killed and len(errors) == 1, errors
    assert _rows(connection, schema) == []
    assert target.last_delivered_epoch() == 0  # reconnected
    connection.execute(f"DROP TRIGGER park ON {schema}.t")
    target.deliver(7, make_changes(KV, [(Op.INSERT, (1, "a"))]))
    assert _rows(connection, schema) == [(1, "a")]
    target.close()


def test_open_reports_what_to_fix(pg_schema: PgSchema, postgres_url: str) -> None:
    connection, schema = pg_schema
    with pytest.raises(UndefinedRelation, match=rf'"{schema}\.t" does not exist'):
        _target(schema, postgres_url, KV).open()
    connection.execute(f"CREATE TABLE {schema}.t (k int, other text)")
    with pytest.raises(UndefinedColumn, match='no column "v"'):
        _target(schema, postgres_url, KV).open()
    connection.execute(f"ALTER TABLE {schema}.t ADD COLUMN v text")
    upsert = _target(schema, postgres_url, KV, key=[0], sink_type="upsert")
    with pytest.raises(InvalidColumnReference, match=r"no primary key or unique constraint on \(k\)") as raised:
        upsert.open()
    assert raised.value.hint is not None and "ADD PRIMARY KEY (k)" in raised.value.hint
    # A unique index on other columns, or a partial one, does not do.
    connection.execute(f"CREATE UNIQUE INDEX ON {schema}.t (k, v)")
    connection.execute(f"CREATE UNIQUE INDEX ON {schema}.t (k) WHERE v IS NOT NULL")
    with pytest.raises(InvalidColumnReference):
        upsert.open()
    connection.execute(f"ALTER TABLE {schema}.t ADD PRIMARY KEY (k)")
    upsert.open()
    upsert.close()


def test_concurrent_opens_create_the_progress_table_once(pg_schema: PgSchema, postgres_url: str) -> None:
    connection, schema = pg_schema
    connection.execute(f"CREATE TABLE {schema}.t (k int, v text)")
    targets = [_target(schema, postgres_url, KV, name=f"s{i}") for i in range(4)]
    errors: list[BaseException] = []

    def open_one(target: PostgresSinkTarget) -> None:
        try:
            target.open()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=open_one, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for epoch, target in enumerate(targets, start=1):
        target.deliver(epoch, make_changes(KV, []))
        target.close()
    assert sorted(_progress(connection, schema)) == [("s0", 1), ("s1", 2), ("s2", 3), ("s3", 4)]


def test_options_are_checked_without_connecting() -> None:
    def check(options: dict[str, str], **kwargs: Any) -> None:
        check_sink_options(make_spec(KV, options={"connector": "postgres", **options}, **kwargs))

    check({"url": "postgresql://u@127.0.0.1:1/db", "table": "t"})
    check({"host": "h", "user": "u", "database": "d", "table": "t", "port": "5433", "type": "append-only"})
    with pytest.raises(InvalidParameterValue, match='needs the option "table"'):
        check({"url": "postgresql://u@h/db"})
    with pytest.raises(InvalidParameterValue, match='unknown option "tabel"'):
        check({"url": "postgresql://u@h/db", "table": "t", "tabel": "t"})
    with pytest.raises(InvalidParameterValue, match="either the option url or host"):
        check({"url": "postgresql://u@h/db", "host": "h", "table": "t"})
    with pytest.raises(InvalidParameterValue, match="port"):
        check({"host": "h", "user": "u", "database": "d", "table": "t", "port": "x"})
    with pytest.raises(InvalidParameterValue, match="needs the option url"):
        check({"table": "t"})
    with pytest.raises(InvalidParameterValue, match="no primary key"):
        check({"url": "postgresql://u@h/db", "table": "t"}, sink_type="upsert")
    with pytest.raises(InvalidParameterValue, match="no FORMAT"):
        check({"url": "postgresql://u@h/db", "table": "t"}, format="PLAIN", encode="JSON")
    with pytest.raises(InvalidParameterValue, match="unknown sink connector 'postgress'"):
        check_sink_options(make_spec(KV, options={"connector": "postgress"}))
