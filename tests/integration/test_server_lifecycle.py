"""The real server process: restart keeps everything, SIGTERM is clean, reads see one epoch."""

from __future__ import annotations

import signal
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from tidegate_process import free_port, start_server

import tidegate


@contextmanager
def server(data_dir: Path, *options: str) -> Iterator[int]:
    port = free_port()
    process = start_server(data_dir, port, *options)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=root dbname=dev", connect_timeout=1):
                    break
            except psycopg.OperationalError as error:
                if process.poll() is not None or time.monotonic() > deadline:
                    output = process.stderr.read().decode() if process.stderr else ""
                    raise RuntimeError(f"server did not start: {output}") from error
                time.sleep(0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
        assert code == 0, f"server exited with {code} on SIGTERM"


def connect(port: int) -> psycopg.Connection:
    return psycopg.connect(f"host=127.0.0.1 port={port} user=root dbname=dev", autocommit=True)


@pytest.mark.parametrize("options", [("--state-store", "none"), ()], ids=["no-checkpoints", "checkpoints"])
def test_restart_keeps_tables_views_and_rows(tmp_path: Path, options: tuple[str, ...]) -> None:
    with server(tmp_path, *options) as port, connect(port) as conn:
        conn.execute("CREATE TABLE orders (order_id INT PRIMARY KEY, category VARCHAR, amount DECIMAL(10,2))")
        conn.execute(
            "CREATE MATERIALIZED VIEW revenue AS SELECT category, COUNT(*) AS n, SUM(amount) AS total "
            "FROM orders GROUP BY category"
        )
        conn.execute("CREATE MATERIALIZED VIEW busy AS SELECT category, n FROM revenue WHERE n > 1")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO orders VALUES (%s, %s, %s)",
                [(i, "abc"[i % 3], f"{i}.25") for i in range(30)],
            )
        conn.execute("DELETE FROM orders WHERE order_id < 3")
        conn.execute("UPDATE orders SET amount = amount + 1 WHERE category = 'a'")
        conn.execute("FLUSH")
        before = conn.execute("SELECT * FROM revenue ORDER BY category").fetchall()
        busy_before = conn.execute("SELECT * FROM busy ORDER BY category").fetchall()
    # Started again without the option: the data dir keeps the state store it was created with.
    with server(tmp_path) as port, connect(port) as conn:
        assert conn.execute("SELECT * FROM revenue ORDER BY category").fetchall() == before
        assert conn.execute("SELECT * FROM busy ORDER BY category").fetchall() == busy_before
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (27,)
        # The primary key is still enforced after the restart.
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO orders VALUES (10, 'z', 1)")
        conn.execute("INSERT INTO orders VALUES (100, 'z', 1)")
        conn.execute("FLUSH")
        assert conn.execute("SELECT n, total FROM revenue WHERE category = 'z'").fetchone() is not None
    # Checkpoints, unless the data dir was created without them, go to DATA_DIR/objects.
    assert bool(list((tmp_path / "objects").rglob("*.sst"))) == (options == ())


def test_two_views_are_read_at_one_epoch_while_writes_go_on(tmp_path: Path) -> None:
    db = tidegate.connect(tmp_path)
    try:
        db.execute("SET barrier_interval_ms = 20")
        db.execute("CREATE TABLE t (k INT, v INT)")
        db.execute("CREATE MATERIALIZED VIEW counts AS SELECT count(*) AS n FROM t")
        db.execute("CREATE MATERIALIZED VIEW sums AS SELECT sum(v) AS s, count(v) AS n FROM t")
        stop = threading.Event()

        def write() -> None:
            writer = tidegate.Connection(db.database, owns_database=False)
            i = 0
            while not stop.is_set():
                writer.execute(f"INSERT INTO t VALUES ({i}, 1), ({i + 1}, 1)")
                if i % 10 == 0:
                    writer.execute(f"DELETE FROM t WHERE k = {i}")
                i += 2

        thread = threading.Thread(target=write)
        thread.start()
        try:
            reader = tidegate.Connection(db.database, owns_database=False)
            seen = set()
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                ((n, s, m),) = reader.execute("SELECT counts.n, sums.s, sums.n FROM counts, sums")
                assert n == m == (s or 0), (n, s, m)
                seen.add(n)
        finally:
            stop.set()
            thread.join()
        assert len(seen) > 3, "the views did not advance while being read"
    finally:
        db.close()


def _raw_startup(port: int) -> socket.socket:
    """A bare PostgreSQL v3 client: startup as root/dev, then wait for ReadyForQuery."""
    sock = socket.create_connection(("127.0.0.1", port))
    body = struct.pack("!I", 196608) + b"user\0root\0database\0dev\0\0"
    sock.sendall(struct.pack("!I", len(body) + 4) + body)
    buffer = b""
    while b"Z\x00\x00\x00\x05" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "server closed the connection during startup"
        buffer += chunk
    return sock


def _message(kind: bytes, payload: bytes) -> bytes:
    return kind + struct.pack("!I", len(payload) + 4) + payload


def test_a_client_killed_mid_statement_harms_no_one_else(tmp_path: Path) -> None:
    with server(tmp_path) as port, connect(port) as conn:
        conn.execute("CREATE TABLE t (x INT)")
        victim = _raw_startup(port)
        victim.sendall(_message(b"Q", b"COPY t FROM STDIN\0"))
        assert victim.recv(65536)[:1] == b"G"  # CopyInResponse
        victim.sendall(_message(b"d", b"1\n2\n"))
        # Gone mid-COPY: no CopyDone, no Terminate, the socket just closes.
        victim.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        victim.close()
        conn.execute("INSERT INTO t VALUES (42)")
        assert conn.execute("SELECT x FROM t").fetchall() == [(42,)]
        # And a new client is served as usual.
        with connect(port) as other:
            assert other.execute("SELECT count(*) FROM t").fetchone() == (1,)
