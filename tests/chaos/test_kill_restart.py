"""Chaos: a real server killed with SIGKILL at random moments while clients write.

After every restart and FLUSH, the table holds exactly the acknowledged writes (the one
statement in flight at the kill may or may not have happened — both are allowed, nothing
else is), and every view equals the same query computed from that table: nothing lost,
nothing doubled. Kills land during writes, during checkpoint uploads and during recovery.

``TIDEGATE_CHAOS_SEED=N`` replays one run's choices; ``TIDEGATE_CHAOS_KILLS=K`` sets the number of
kills (``scripts/chaos-soak.sh K`` runs a long soak).
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg
import pytest
from tidegate_process import free_port, start_server

BATCH_ROWS = 500
KILLS = int(os.environ.get("TIDEGATE_CHAOS_KILLS", "6"))
SEED = int(os.environ.get("TIDEGATE_CHAOS_SEED", str(random.SystemRandom().randrange(1 << 30))))


def start(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    return start_server(data_dir, port, "--state-store", "fs")


def connect(port: int, process: subprocess.Popen[bytes], timeout_s: float = 60) -> psycopg.Connection:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return psycopg.connect(f"host=127.0.0.1 port={port} user=root dbname=dev", autocommit=True)
        except psycopg.OperationalError as error:
            if process.poll() is not None:
                output = process.stderr.read().decode() if process.stderr else ""
                raise RuntimeError(f"server exited: {output}") from error
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Truth:
    """The acknowledged contents of table ``t`` (k -> v), and the statement in flight."""

    def __init__(self) -> None:
        self.rows: dict[int, int] = {}
        self.in_flight: tuple[str, int, int | None] | None = None
        self.acknowledged = 0
        self.errors: list[str] = []  # writes refused for another reason than the kill

    def apply(self, rows: dict[int, int], change: tuple[str, int, int | None]) -> dict[int, int]:
        kind, key, value = change
        out = dict(rows)
        if kind == "insert":
            out[key] = value  # type: ignore[assignment]
        elif kind == "insert_many":
            # Keys key .. key + BATCH_ROWS - 1, values derived from the key (one statement, all or nothing).
            out.update((k, batch_value(k)) for k in range(key, key + BATCH_ROWS))
        elif kind == "delete":
            out.pop(key, None)
        else:
            out[key] = value  # type: ignore[assignment]
        return out


def batch_value(key: int) -> int:
    return key % 97 - 40


def writer(port: int, truth: Truth, rng: random.Random, stop: threading.Event) -> None:
    """Writes until the server dies; records only what was acknowledged."""
    try:
        conn = psycopg.connect(f"host=127.0.0.1 port={port} user=root dbname=dev", autocommit=True)
    except psycopg.OperationalError:
        return
    next_key = max(truth.rows, default=0) + 1
    try:
        while not stop.is_set():
            choice = rng.random()
            if choice < 0.1:
                change = ("insert_many", next_key, None)
                statement = "INSERT INTO t SELECT i, i %% 97 - 40 FROM generate_series(%s::INT, %s::INT) AS g(i)"
                params = (next_key, next_key + BATCH_ROWS - 1)  # type: ignore[assignment]
                next_key += BATCH_ROWS
            elif choice < 0.6 or len(truth.rows) < 5:
                change: tuple[str, int, int | None] = ("insert", next_key, rng.randrange(-50, 100))
                statement, params = "INSERT INTO t VALUES (%s, %s)", (next_key, change[2])
                next_key += 1
            elif choice < 0.8:
                key = rng.choice(sorted(truth.rows))
                change = ("delete", key, None)
                statement, params = "DELETE FROM t WHERE k = %s", (key,)  # type: ignore[assignment]
            else:
                key = rng.choice(sorted(truth.rows))
                change = ("update", key, rng.randrange(-50, 100))
                statement, params = "UPDATE t SET v = %s WHERE k = %s", (change[2], key)  # type: ignore[assignment]
            truth.in_flight = change
            conn.execute(statement, params)
            truth.rows = truth.apply(truth.rows, change)
            truth.in_flight = None
            truth.acknowledged += 1
    except psycopg.OperationalError:
        return  # the server was killed mid-statement: in_flight stays set
    except psycopg.Error as error:  # a statement the server (or psycopg) refused: a bug, not a kill
        truth.errors.append(f"{type(error).__name__}: {error}")


def check(conn: psycopg.Connection, truth: Truth, seed: int) -> None:
    conn.execute("FLUSH")
    table = dict(conn.execute("SELECT k, v FROM t").fetchall())
    candidates = [truth.rows]
    if truth.in_flight is not None:
        candidates.append(truth.apply(truth.rows, truth.in_flight))
    assert table in candidates, f"seed {seed}: table lost or doubled acknowledged writes"
    truth.rows, truth.in_flight = table, None
    values = list(table.values())
    expected_totals = (len(values), sum(values) if values else None, min(values, default=None))
    assert conn.execute("SELECT n, total, lo FROM totals").fetchone() == expected_totals, f"seed {seed}"
    groups: dict[int, list[int]] = {}
    for v in values:
        groups.setdefault(int(math.fmod(v, 3)), []).append(v)  # SQL % keeps the sign
    expected_groups = sorted((g, len(vs), sum(vs), max(vs)) for g, vs in groups.items())
    assert conn.execute("SELECT g, n, s, hi FROM by_group ORDER BY g").fetchall() == expected_groups, f"seed {seed}"
    positive = sorted((k, v * 2) for k, v in table.items() if v > 0)
    assert conn.execute("SELECT k, doubled FROM positive ORDER BY k").fetchall() == positive, f"seed {seed}"
    big = sorted((g, n) for g, n, _, _ in expected_groups if n > 2)
    assert conn.execute("SELECT g, n FROM big_groups ORDER BY g").fetchall() == big, f"seed {seed}"


@pytest.mark.timeout(max(600, KILLS * 30))
def test_sigkill_at_random_moments_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"chaos seed {SEED} (TIDEGATE_CHAOS_SEED={SEED} replays the choices)")
    port = free_port()
    process = start(tmp_path, port)
    truth = Truth()
    try:
        with connect(port, process) as conn:
            conn.execute("SET barrier_interval_ms = 50")
            conn.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT)")
            conn.execute(
                "CREATE MATERIALIZED VIEW totals AS SELECT count(*) AS n, sum(v) AS total, min(v) AS lo FROM t"
            )
            conn.execute(
                "CREATE MATERIALIZED VIEW by_group AS SELECT v % 3 AS g, count(*) AS n, sum(v) AS s, max(v) AS hi "
                "FROM t GROUP BY v % 3"
            )
            conn.execute("CREATE MATERIALIZED VIEW positive AS SELECT k, v * 2 AS doubled FROM t WHERE v > 0")
            conn.execute("CREATE MATERIALIZED VIEW big_groups AS SELECT g, n FROM by_group WHERE n > 2")
        for kill in range(KILLS):
            stop = threading.Event()
            writers = [
                threading.Thread(target=writer, args=(port, truth, random.Random(rng.random()), stop)) for _ in range(1)
            ]
            before = truth.acknowledged
            for thread in writers:
                thread.start()
            time.sleep(rng.uniform(0.2, 1.5))
            # On a slow or loaded machine a round can pass before any write lands: let a few land,
            # so that every kill cuts into a stream of acknowledged writes.
            deadline = time.monotonic() + 30
            while truth.acknowledged < before + 4 and time.monotonic() < deadline:
                time.sleep(0.01)
            process.send_signal(signal.SIGKILL)
            process.wait()
            stop.set()
            for thread in writers:
                thread.join()
            process = start(tmp_path, port)
            if kill % 3 == 2:
                # Kill again while it recovers.
                time.sleep(rng.uniform(0.05, 0.6))
                process.send_signal(signal.SIGKILL)
                process.wait()
                process = start(tmp_path, port)
            with connect(port, process) as conn:
                check(conn, truth, SEED)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
    assert not truth.errors, f"seed {SEED}: writes were refused: {truth.errors}"
    assert truth.acknowledged > 20, "too few writes were acknowledged for the test to mean anything"
