"""The pgwire server over real sockets: psql, psycopg 3, SQLAlchemy and a raw protocol client."""

from __future__ import annotations

import datetime as dt
import decimal
import os
import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from tidegate import errors
from tidegate.server import pgwire_copy
from tidegate.server.pgwire import SQLSTATE_BY_ERROR, PgServer, ServerHandle, run_server_in_thread, sqlstate_for
from tidegate.server.pgwire_values import decode_numeric_binary, encode_numeric_binary

PSQL = "/usr/bin/psql"


# ---- a raw protocol client ------------------------------------------------------------


class RawClient:
    """Speaks the wire protocol byte by byte, to check what libpq-based clients hide."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self._buffer = b""

    def send(self, kind: bytes, payload: bytes = b"") -> None:
        self.sock.sendall(kind + struct.pack("!i", len(payload) + 4) + payload)

    def send_startup(self, code: int = 196608, params: bytes = b"user\0root\0database\0dev\0\0") -> None:
        body = struct.pack("!i", code) + params
        self.sock.sendall(struct.pack("!i", len(body) + 4) + body)

    def _read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("server closed the connection")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def receive(self) -> tuple[bytes, bytes]:
        kind = self._read(1)
        (length,) = struct.unpack("!i", self._read(4))
        return kind, self._read(length - 4)

    def until_ready(self) -> list[tuple[bytes, bytes]]:
        messages = []
        while True:
            kind, payload = self.receive()
            messages.append((kind, payload))
            if kind == b"Z":
                return messages

    def connect(self) -> list[tuple[bytes, bytes]]:
        self.send_startup()
        return self.until_ready()

    def query(self, sql: str) -> list[tuple[bytes, bytes]]:
        self.send(b"Q", sql.encode() + b"\0")
        return self.until_ready()

    def close(self) -> None:
        self.sock.close()


def wait_for(predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def kinds(messages: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(kind for kind, _ in messages)


def error_fields(payload: bytes) -> dict[str, str]:
    fields = {}
    for part in payload.split(b"\0"):
        if part:
            fields[part[:1].decode()] = part[1:].decode()
    return fields


def parse(name: str, sql: str, oids: tuple[int, ...] = ()) -> bytes:
    return name.encode() + b"\0" + sql.encode() + b"\0" + struct.pack(f"!h{len(oids)}i", len(oids), *oids)


def bind(portal: str, statement: str, values: list[bytes | None], result_formats: tuple[int, ...] = ()) -> bytes:
    payload = portal.encode() + b"\0" + statement.encode() + b"\0" + struct.pack("!hh", 0, len(values))
    for value in values:
        payload += struct.pack("!i", -1) if value is None else struct.pack("!i", len(value)) + value
    return payload + struct.pack(f"!h{len(result_formats)}h", len(result_formats), *result_formats)


def execute(portal: str, limit: int = 0) -> bytes:
    return portal.encode() + b"\0" + struct.pack("!i", limit)


@pytest.fixture
def raw(server: ServerHandle) -> Iterator[RawClient]:
    client = RawClient(server.port)
    client.connect()
    yield client
    client.close()


def connect(dsn: str, **kwargs: object) -> psycopg.Connection:
    return psycopg.connect(dsn, connect_timeout=5, **kwargs)  # type: ignore[arg-type]


def psql(port: int, *args: str, password: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PGCONNECT_TIMEOUT": "5", "PGSSLMODE": "prefer", "PGOPTIONS": ""}
    env.pop("PGPASSWORD", None)
    if password is not None:
        env["PGPASSWORD"] = password
    command = [PSQL, "-X", "-h", "127.0.0.1", "-p", str(port), "-U", "root", "-d", "dev", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=20, env=env)


# ---- SQLSTATE mapping -------------------------------------------------------------------


def test_sqlstate_table_follows_the_class_tree() -> None:
    assert sqlstate_for(errors.UndefinedColumn("x")) == "42703"
    assert sqlstate_for(errors.DivisionByZero("x")) == "22012"

    class CustomDataError(errors.DataError):
        pass

    assert sqlstate_for(CustomDataError("x")) == "22000"
    assert sqlstate_for(KeyError("x")) == "XX000"
    assert len(SQLSTATE_BY_ERROR) >= 22


# ---- psql ---------------------------------------------------------------------------------


def test_psql_select_and_unaligned_output(server: ServerHandle) -> None:
    aligned = psql(server.port, "-c", "select order_id, amount from orders order by order_id")
    assert aligned.returncode == 0, aligned.stderr
    assert aligned.stdout.splitlines()[2:5] == ["        1 |  12.50", "        2 |  30.00", "        3 |   7.25"]
    plain = psql(server.port, "-A", "-t", "-c", "select product_category from orders where order_id = 2")
    assert plain.stdout == "games\n"


def test_psql_describe_table_looks_like_postgres(server: ServerHandle) -> None:
    result = psql(server.port, "-c", "\\d orders")
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        '                              Table "public.orders"\n'
        "      Column      |            Type             | Collation | Nullable | Default \n"
        "------------------+-----------------------------+-----------+----------+---------\n"
        " order_id         | integer                     |           | not null | \n"
        " product_category | character varying           |           |          | \n"
        " amount           | numeric(10,2)               |           |          | \n"
        " order_time       | timestamp without time zone |           |          | \n"
        "Indexes:\n"
        '    "orders_pkey" PRIMARY KEY, btree (order_id)\n'
        "\n"
    )


def test_psql_list_commands(server: ServerHandle) -> None:
    assert psql(server.port, "-A", "-t", "-c", "\\dt").stdout == "public|orders|table|root\n"
    assert psql(server.port, "-A", "-t", "-c", "\\dm").stdout == "public|category_totals|materialized view|root\n"
    assert psql(server.port, "-A", "-t", "-c", "\\d").stdout.splitlines() == [
        "public|category_totals|materialized view|root",
        "public|orders|table|root",
    ]
    for command in ("\\l", "\\dn", "\\du", "\\d+ orders"):
        result = psql(server.port, "-c", command)
        assert result.returncode == 0 and result.stderr == "", (command, result.stderr)
    missing = psql(server.port, "-c", "\\d nosuch")
    assert missing.stderr == 'Did not find any relation named "nosuch".\n'
    assert "dev" in psql(server.port, "-A", "-t", "-c", "\\l").stdout


def test_psql_materialized_view_definition(server: ServerHandle) -> None:
    result = psql(server.port, "-c", "\\d+ category_totals")
    assert result.returncode == 0, result.stderr
    assert 'Materialized view "public.category_totals"' in result.stdout
    assert "_row_id" not in result.stdout
    assert "View definition:\n SELECT product_category, sum(amount) AS total FROM orders" in result.stdout


def test_psql_error_shows_sqlstate_position_and_skips_the_rest(server: ServerHandle) -> None:
    result = psql(server.port, "-v", "VERBOSITY=verbose", "-c", "select 1 as a; select nosuch from orders; select 3")
    assert 'ERROR:  42703: column "nosuch" does not exist' in result.stderr
    assert "LINE 1: select 1 as a; select nosuch from orders; select 3\n" in result.stderr
    # The caret sits under "nosuch": the position counts from the start of the whole query string.
    caret_line = result.stderr.splitlines()[2]
    assert caret_line.index("^") == len("LINE 1: select 1 as a; select ")
    assert result.returncode == 1


# ---- psycopg: autocommit ----------------------------------------------------------------


def test_psycopg_parameters_of_several_types(dsn: str, factory: Any) -> None:
    values = [7, "héllo", decimal.Decimal("12.345"), dt.date(2024, 1, 2), dt.datetime(2024, 1, 2, 3, 4, 5), 2.5, True,
              None, b"\x00\xff"]  # fmt: skip
    with connect(dsn, autocommit=True) as conn:
        row = conn.execute("select " + ", ".join(["%s"] * len(values)), values).fetchone()
    assert row is not None
    session_sql, session_params = factory.sessions[-1].executed[-1]
    assert session_sql.startswith("select $1, $2")
    assert session_params == values
    assert [type(p) for p in session_params] == [type(v) for v in values]


def test_psycopg_binary_parameters(dsn: str, factory: Any) -> None:
    values = [7, 2**40, "héllo", decimal.Decimal("-12345.0067"), dt.date(2024, 1, 2),
              dt.datetime(2024, 1, 2, 3, 4, 5, 600), dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), 2.5, False,
              b"\x00\xff"]  # fmt: skip
    with connect(dsn, autocommit=True) as conn:
        conn.execute("select " + ", ".join(["%b"] * len(values)), values)
    _, session_params = factory.sessions[-1].executed[-1]
    assert session_params == values
    assert [type(p) for p in session_params] == [type(v) for v in values]


def test_numeric_binary_codec_round_trips() -> None:
    assert encode_numeric_binary(decimal.Decimal("12.50")) == struct.pack("!hhHh2H", 2, 0, 0, 2, 12, 5000)
    for text in ["0", "1", "-1", "0.0001", "12345.6789", "1E+20", "123456789012345678.123456", "-0.50", "10000"]:
        number = decimal.Decimal(text)
        decoded = decode_numeric_binary(encode_numeric_binary(number))
        assert decoded == number and str(decoded) == str(number.quantize(decoded)), text


def test_psycopg_select_types_text_and_binary(dsn: str) -> None:
    expected = [
        (1, "books", decimal.Decimal("12.50"), dt.datetime(2024, 1, 1, 10, 0)),
        (2, "games", decimal.Decimal("30.00"), dt.datetime(2024, 1, 2, 11, 30)),
        (3, "books", decimal.Decimal("7.25"), dt.datetime(2024, 1, 3, 9, 15)),
    ]
    with connect(dsn, autocommit=True) as conn:
        assert conn.execute("select * from orders order by order_id").fetchall() == expected
        binary = conn.cursor(binary=True)
        assert binary.execute("select * from orders where order_id > %s order by 1", [0]).fetchall() == expected
        row = binary.execute(
            "select 1::smallint, 2::bigint, 1.5::real, 2.5::double, true, 'x', '\\x00\\xFF'::blob, "
            "date '2024-02-03', -12.5::decimal(6,2)"
        ).fetchone()
    assert row == (1, 2, 1.5, 2.5, True, "x", b"\x00\xff", dt.date(2024, 2, 3), decimal.Decimal("-12.50"))


def test_psycopg_prepared_statements_and_executemany(dsn: str, factory: Any) -> None:
    with connect(dsn, autocommit=True) as conn:
        for i in range(3):
            assert conn.execute("select %s::int * 2", [i], prepare=True).fetchone() == (i * 2,)
        with conn.cursor() as cursor:
            cursor.executemany(
                "insert into orders values (%s, %s, %s, %s)",
                [(10, "toys", decimal.Decimal("1.50"), dt.datetime(2024, 5, 1)), (11, None, None, None)],
            )
        rows = conn.execute("select order_id, product_category from orders where order_id >= 10 order by 1").fetchall()
    assert rows == [(10, "toys"), (11, None)]


def test_psycopg_error_codes_positions_and_hints(dsn: str) -> None:
    with connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.UndefinedColumn) as undefined:
            conn.execute("select nosuch from orders")
        assert undefined.value.diag.statement_position == "8"
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("select * from nowhere")
        for name, code in [("UniqueViolation", "23505"), ("DivisionByZero", "22012"), ("FeatureNotSupported", "0A000"),
                           ("DependentObjectsExist", "2BP01"), ("InternalError", "XX000")]:  # fmt: skip
            with pytest.raises(psycopg.Error) as failure:
                conn.execute(f"FAIL {name} 2")
            assert failure.value.sqlstate == code
            assert failure.value.diag.message_hint == "a hint"
            assert failure.value.diag.statement_position == "2"
        assert conn.execute("select 1").fetchone() == (1,)


def test_parameter_status_and_set(dsn: str) -> None:
    with connect(dsn, autocommit=True) as conn:
        info = conn.info
        assert info.parameter_status("server_version") == "15.0"
        assert info.parameter_status("client_encoding") == "UTF8"
        assert info.parameter_status("integer_datetimes") == "on"
        assert info.parameter_status("standard_conforming_strings") == "on"
        assert info.server_version == 150000
        conn.execute("SET application_name = 'reporting'")
        assert info.parameter_status("application_name") == "reporting"
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            conn.execute("SET no_such_setting = 1")


def test_notices_reach_the_client(dsn: str) -> None:
    received: list[str] = []
    with connect(dsn, autocommit=True) as conn:
        conn.add_notice_handler(lambda diagnostic: received.append(diagnostic.message_primary or ""))
        conn.execute("NOTICE relation exists, skipping")
    assert received == ["relation exists, skipping"]


# ---- psycopg: transactions ------------------------------------------------------------------


def test_transaction_status_follows_postgres(dsn: str, factory: Any) -> None:
    idle, in_transaction, failed = (psycopg.pq.TransactionStatus.IDLE, psycopg.pq.TransactionStatus.INTRANS,
                                    psycopg.pq.TransactionStatus.INERROR)  # fmt: skip
    with connect(dsn) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.info.transaction_status == in_transaction
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("FAIL UniqueViolation")
        assert conn.info.transaction_status == failed
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("select 2")
        conn.rollback()
        assert conn.info.transaction_status == idle
        assert conn.execute("select 3").fetchone() == (3,)
        conn.commit()
    statements = [sql for sql, _ in factory.sessions[-1].executed]
    assert "select 2" not in statements
    assert statements.count("BEGIN") == 2


def test_savepoints_recover_a_failed_block(dsn: str) -> None:
    with connect(dsn) as conn:
        conn.execute("select %s::int", [1], prepare=True)
        conn.commit()
        with conn.transaction():
            with pytest.raises(psycopg.errors.DivisionByZero), conn.transaction():
                conn.execute("FAIL DivisionByZero")
            assert conn.execute("select 2").fetchone() == (2,)
        assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_raw_transaction_states_and_warnings(raw: RawClient) -> None:
    assert raw.query("BEGIN")[-1] == (b"Z", b"T")
    warning = raw.query("BEGIN")
    assert kinds(warning) == b"NCZ" and error_fields(warning[0][1])["C"] == "25001"
    failed = raw.query("FAIL UniqueViolation")
    assert kinds(failed) == b"EZ" and failed[-1] == (b"Z", b"E")
    refused = raw.query("select 1")
    assert error_fields(refused[0][1])["C"] == "25P02" and refused[-1] == (b"Z", b"E")
    committed = raw.query("COMMIT")
    assert committed[0] == (b"C", b"ROLLBACK\0") and committed[-1] == (b"Z", b"I")
    no_transaction = raw.query("COMMIT")
    assert kinds(no_transaction) == b"NCZ" and error_fields(no_transaction[0][1])["C"] == "25P01"
    assert error_fields(raw.query("SAVEPOINT a")[0][1])["C"] == "25P01"


def test_sqlalchemy_connect_and_reflect(server: ServerHandle) -> None:
    engine = sa.create_engine(f"postgresql+psycopg://root@127.0.0.1:{server.port}/dev")
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("select order_id from orders where amount > :x order by 1"), {"x": 10}).all()
            assert rows == [(1,), (2,)]
        inspector = sa.inspect(engine)
        assert inspector.get_table_names() == ["orders"]
        assert inspector.get_materialized_view_names() == ["category_totals"]
        assert inspector.has_table("orders") and not inspector.has_table("nope")
        columns = {c["name"]: c for c in inspector.get_columns("orders")}
        assert list(columns) == ["order_id", "product_category", "amount", "order_time"]
        assert isinstance(columns["order_id"]["type"], sa.INTEGER) and columns["order_id"]["nullable"] is False
        assert isinstance(columns["amount"]["type"], sa.NUMERIC) and columns["amount"]["type"].scale == 2
        assert isinstance(columns["order_time"]["type"], sa.TIMESTAMP)
        assert inspector.get_pk_constraint("orders")["constrained_columns"] == ["order_id"]
        table = sa.Table("orders", sa.MetaData(), autoload_with=engine)
        assert [c.name for c in table.primary_key] == ["order_id"]
    finally:
        engine.dispose()


# ---- COPY FROM STDIN ------------------------------------------------------------------------


def test_copy_text_and_csv(dsn: str, factory: Any) -> None:
    with connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        with cursor.copy("COPY orders FROM STDIN") as copy:
            copy.write_row((20, "tab\there", decimal.Decimal("3.50"), dt.datetime(2024, 6, 1)))
            copy.write_row((21, None, None, None))
        assert cursor.statusmessage == "COPY 2"
        with cursor.copy("COPY orders (order_id, product_category) FROM STDIN WITH (FORMAT csv, HEADER true)") as copy:
            copy.write('order_id,product_category\n30,"a,b"\n31,\n32,""\n')
        assert cursor.statusmessage == "COPY 3"
        rows = cursor.execute("select order_id, product_category, amount from orders where order_id >= 20 order by 1")
        assert rows.fetchall() == [
            (20, "tab\there", decimal.Decimal("3.50")),
            (21, None, None),
            (30, "a,b", None),
            (31, None, None),
            (32, "", None),
        ]
    assert all(copy_in.finished for copy_in in factory.sessions[-1].copies)


def test_copy_is_decoded_in_bounded_batches(dsn: str, factory: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgwire_copy, "COPY_BATCH_BYTES", 4096)
    lines = [f"{1000 + i},category {i % 5},{i}.25,2024-01-01 00:00:00\n" for i in range(2000)]
    with connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        with cursor.copy("COPY orders FROM STDIN WITH (FORMAT csv)") as copy:
            for start in range(0, len(lines), 37):  # CopyData boundaries fall mid-line
                copy.write("".join(lines[start : start + 37]))
        assert cursor.statusmessage == "COPY 2000"
        total = cursor.execute("select count(*), sum(amount) from orders where order_id >= 1000").fetchone()
    assert total == (2000, decimal.Decimal(sum(i for i in range(2000))) + decimal.Decimal("500.00"))
    (copy_in,) = factory.sessions[-1].copies
    assert len(copy_in.batches) > 10
    assert max(batch.num_rows for batch in copy_in.batches) < 200


def test_copy_bad_value_aborts_with_line_number(dsn: str, factory: Any) -> None:
    with connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        statement = "COPY orders (order_id, product_category) FROM STDIN"
        with pytest.raises(psycopg.errors.InvalidTextRepresentation) as failure, cursor.copy(statement) as copy:
            copy.write("40\ta\n41\tb\nforty-two\tc\n")
        message = str(failure.value)
        assert 'invalid input syntax for type integer: "forty-two" (COPY line 3, column order_id)' in message
        assert cursor.execute("select count(*) from orders where order_id >= 40").fetchone() == (0,)
    copy_in = factory.sessions[-1].copies[-1]
    assert copy_in.aborted and not copy_in.finished


def test_copy_fail_from_client_is_query_canceled(dsn: str, factory: Any) -> None:
    with connect(dsn, autocommit=True) as conn, conn.cursor() as cursor:
        with pytest.raises(ZeroDivisionError), cursor.copy("COPY orders FROM STDIN") as copy:
            copy.write("50\tx\t1\t2024-01-01\n")
            raise ZeroDivisionError
        assert conn.execute("select 1").fetchone() == (1,)
    assert factory.sessions[-1].copies[-1].aborted


def test_raw_copy_fail_reports_57014(raw: RawClient) -> None:
    raw.send(b"Q", b"COPY orders FROM STDIN\0")
    kind, payload = raw.receive()
    assert kind == b"G" and payload == struct.pack("!bh", 0, 4) + b"\0\0" * 4
    raw.send(b"d", b"1\tx\t1\t2024-01-01\n")
    raw.send(b"f", b"client gave up\0")
    messages = raw.until_ready()
    fields = error_fields(messages[0][1])
    assert fields["C"] == "57014" and fields["M"] == "COPY from stdin failed: client gave up"


# ---- extended protocol details ----------------------------------------------------------------


def test_extended_describe_execute_with_row_limit(raw: RawClient) -> None:
    raw.send(b"P", parse("s1", "select order_id from orders where order_id >= $1 order by 1", (23,)))
    raw.send(b"D", b"Ss1\0")
    raw.send(b"B", bind("p1", "s1", [b"1"]))
    raw.send(b"E", execute("p1", 2))
    raw.send(b"E", execute("p1", 2))
    raw.send(b"S")
    messages = raw.until_ready()
    assert kinds(messages) == b"1tT2DDsDCZ"
    assert messages[1][1] == struct.pack("!hI", 1, 23)
    assert [m[1][-1:] for m in messages if m[0] == b"D"] == [b"1", b"2", b"3"]
    assert messages[-2] == (b"C", b"SELECT 1\0")


def test_close_statement_and_portal(raw: RawClient) -> None:
    raw.send(b"P", parse("named", "select 1"))
    raw.send(b"B", bind("portal", "named", []))
    raw.send(b"C", b"Snamed\0")
    raw.send(b"C", b"Pportal\0")
    raw.send(b"S")
    assert kinds(raw.until_ready()) == b"1233Z"
    raw.send(b"E", execute("portal"))
    raw.send(b"S")
    assert error_fields(raw.until_ready()[0][1])["C"] == "34000"
    raw.send(b"B", bind("", "named", []))
    raw.send(b"S")
    assert error_fields(raw.until_ready()[0][1])["C"] == "26000"


def test_extended_error_skips_until_sync(raw: RawClient) -> None:
    raw.send(b"P", parse("", "FAIL DataError"))
    raw.send(b"B", bind("", "", []))
    raw.send(b"E", execute(""))
    raw.send(b"P", parse("", "select 1"))  # discarded: it follows the error
    raw.send(b"S")
    messages = raw.until_ready()
    assert kinds(messages) == b"12EZ"
    assert error_fields(messages[2][1])["C"] == "22000"
    raw.send(b"B", bind("", "nosuch", []))
    raw.send(b"S")
    assert error_fields(raw.until_ready()[0][1])["C"] == "26000"


def test_binary_results(raw: RawClient) -> None:
    raw.send(b"P", parse("", "select interval 1 day + interval 1 hour as i, 5::bigint as n"))
    raw.send(b"B", bind("", "", [], result_formats=(1,)))
    raw.send(b"D", b"P\0")
    raw.send(b"E", execute(""))
    raw.send(b"S")
    messages = raw.until_ready()
    assert kinds(messages) == b"12TDCZ"
    row = messages[3][1]
    assert row == struct.pack("!hi", 2, 16) + struct.pack("!qii", 3_600_000_000, 1, 0) + struct.pack("!iq", 8, 5)
    # Arrays (here from a catalog query) have no binary encoder: 0A000, not a broken row.
    raw.send(b"P", parse("", "select array_agg(relname) from pg_catalog.pg_class"))
    raw.send(b"B", bind("", "", [], result_formats=(1,)))
    raw.send(b"D", b"P\0")
    raw.send(b"E", execute(""))
    raw.send(b"S")
    failed = raw.until_ready()
    assert kinds(failed) == b"12EZ"
    assert error_fields(failed[2][1])["C"] == "0A000"


def test_copy_through_the_extended_protocol(raw: RawClient) -> None:
    raw.send(b"P", parse("", "COPY orders (order_id, product_category) FROM STDIN"))
    raw.send(b"B", bind("", "", []))
    raw.send(b"D", b"P\0")
    raw.send(b"E", execute(""))
    raw.send(b"H")
    assert [raw.receive()[0] for _ in range(4)] == [b"1", b"2", b"n", b"G"]
    raw.send(b"d", b"60\tsix")
    raw.send(b"d", b"ty\n61\tsixty-one\n")
    raw.send(b"c")
    raw.send(b"S")
    assert raw.until_ready() == [(b"C", b"COPY 2\0"), (b"Z", b"I")]
    rows = raw.query("select product_category from orders where order_id >= 60 order by order_id")
    assert [payload[6:] for kind, payload in rows if kind == b"D"] == [b"sixty", b"sixty-one"]


def test_large_results_stream_in_chunks(dsn: str) -> None:
    with connect(dsn, autocommit=True) as conn:
        rows = conn.execute("select range as n, 'row ' || range as label from range(20000)").fetchall()
        assert len(rows) == 20000 and rows[12345] == (12345, "row 12345")
        binary = conn.cursor(binary=True)
        assert binary.execute("select sum(range) as s from range(20000)").fetchone() == (decimal.Decimal(199990000),)


def test_protocol_violation_is_fatal_and_closes(raw: RawClient) -> None:
    raw.send(b"Y", b"junk")
    kind, payload = raw.receive()
    fields = error_fields(payload)
    assert kind == b"E" and fields["S"] == "FATAL" and fields["C"] == "08P01"
    with pytest.raises(ConnectionError):
        raw.receive()


def test_newer_protocol_minor_is_negotiated_down(server: ServerHandle) -> None:
    client = RawClient(server.port)
    client.send_startup(code=(3 << 16) | 2, params=b"user\0root\0database\0dev\0_pq_.fancy\0on\0\0")
    messages = client.until_ready()
    assert messages[0] == (b"v", struct.pack("!ii", 0, 1) + b"_pq_.fancy\0")
    assert messages[1] == (b"R", struct.pack("!i", 0))
    statuses = dict(p.split(b"\0")[:2] for k, p in messages if k == b"S")
    assert statuses[b"server_version"] == b"15.0" and statuses[b"is_superuser"] == b"on"
    assert kinds(messages)[-2:] == b"KZ"
    client.close()


def test_transaction_options_reach_the_session_as_plain_keywords(raw: RawClient, factory: Any) -> None:
    assert raw.query("START TRANSACTION ISOLATION LEVEL SERIALIZABLE")[-1] == (b"Z", b"T")
    assert raw.query("END")[0] == (b"C", b"COMMIT\0")
    assert [sql for sql, _ in factory.sessions[-1].executed] == ["BEGIN", "COMMIT"]


def test_encryption_refused_empty_query_and_terminate(server: ServerHandle) -> None:
    client = RawClient(server.port)
    client.sock.sendall(struct.pack("!ii", 8, 80877104))  # GSSENCRequest
    assert client._read(1) == b"N"
    client.sock.sendall(struct.pack("!ii", 8, 80877103))  # SSLRequest
    assert client._read(1) == b"N"
    client.connect()
    assert kinds(client.query("")) == b"IZ"
    assert kinds(client.query(" ; ")) == b"IZ"
    client.send(b"X")
    client.sock.settimeout(2)
    assert client.sock.recv(1) == b""
    client.close()


def test_unknown_database_is_a_fatal_startup_error(server: ServerHandle) -> None:
    with pytest.raises(psycopg.OperationalError, match='database "nosuchdb" does not exist'):
        psycopg.connect(f"host=127.0.0.1 port={server.port} user=root dbname=nosuchdb sslmode=disable")


# ---- concurrency, cancel, disconnect -----------------------------------------------------------


def test_slow_statement_does_not_block_other_clients(dsn: str, factory: Any) -> None:
    results: list[object] = []
    with connect(dsn, autocommit=True) as slow:
        worker = threading.Thread(target=lambda: results.append(slow.execute("select block()").fetchone()))
        worker.start()
        assert factory.blocked.wait(5)
        with connect(dsn, autocommit=True) as other:
            assert other.execute("select count(*) from orders").fetchone() == (3,)
        assert results == []
        factory.release.set()
        worker.join(5)
    assert results == [(1,)]


def test_cancel_request_cancels_the_running_statement(dsn: str, factory: Any) -> None:
    with connect(dsn, autocommit=True) as conn:
        # cancel_safe, not cancel: libpq's blocking PQcancel holds the GIL, and this
        # server runs in the same process.
        timer = threading.Timer(0.3, conn.cancel_safe)
        timer.start()
        with pytest.raises(psycopg.errors.QueryCanceled, match="canceling statement due to user request"):
            conn.execute("select block()")
        timer.join()
        assert factory.cancelled.is_set()
        assert conn.execute("select 1").fetchone() == (1,)


def test_psql_ctrl_c_cancels(server: ServerHandle, factory: Any) -> None:
    command = [PSQL, "-X", "-h", "127.0.0.1", "-p", str(server.port), "-U", "root", "-d", "dev", "-c", "select block()"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert factory.blocked.wait(5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=10)
    assert "ERROR:  canceling statement due to user request" in stderr


def test_client_disconnect_mid_statement(server: ServerHandle, dsn: str, factory: Any) -> None:
    client = RawClient(server.port)
    client.connect()
    client.send(b"Q", b"select block()\0")
    assert factory.blocked.wait(5)
    blocked_session = factory.sessions[-1]
    client.sock.shutdown(socket.SHUT_RDWR)
    client.close()
    with connect(dsn, autocommit=True) as other:
        assert other.execute("select 42").fetchone() == (42,)
    factory.release.set()
    assert wait_for(lambda: blocked_session.closed)
    with connect(dsn, autocommit=True) as again:
        assert again.execute("select 43").fetchone() == (43,)


def test_sessions_are_closed_when_clients_leave(dsn: str, factory: Any) -> None:
    with connect(dsn, autocommit=True) as conn:
        conn.execute("select 1")
    assert wait_for(lambda: len(factory.closed) == 1)


# ---- authentication and server lifecycle ------------------------------------------------------


@pytest.fixture
def password_server(factory: Any) -> Iterator[ServerHandle]:
    handle = run_server_in_thread(factory, password="s3cret")
    yield handle
    handle.stop()


def test_scram_sha_256(password_server: ServerHandle) -> None:
    dsn = f"host=127.0.0.1 port={password_server.port} user=root dbname=dev sslmode=disable"
    with connect(dsn + " password=s3cret", autocommit=True) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(dsn + " password=wrong")
    assert psql(password_server.port, "-A", "-t", "-c", "select 5", password="s3cret").stdout == "5\n"
    refused = psql(password_server.port, "-c", "select 5", password="nope")
    assert refused.returncode != 0 and "password authentication failed" in refused.stderr


def test_pg_server_start_close_on_port_zero(factory: Any) -> None:
    import asyncio

    async def scenario() -> tuple[int, tuple[int] | None]:
        server = PgServer(factory, port=0)
        await server.start()
        serving = asyncio.create_task(server.serve_forever())

        def query() -> tuple[int] | None:
            with connect(f"host=127.0.0.1 port={server.port} user=root dbname=dev sslmode=disable") as conn:
                return conn.execute("select 9").fetchone()  # type: ignore[return-value]

        row = await asyncio.to_thread(query)
        await server.close()
        serving.cancel()
        return server.port, row

    port, row = asyncio.run(scenario())
    assert port > 0 and row == (9,)
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1)


def test_many_clients_at_once(dsn: str) -> None:
    def client(i: int) -> object:
        with connect(dsn, autocommit=True) as conn:
            return conn.execute("select %s::int + 1", [i]).fetchone()

    started = time.monotonic()
    results: list[object] = [None] * 20
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, client(i))) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [(i + 1,) for i in range(20)]
    assert time.monotonic() - started < 10
