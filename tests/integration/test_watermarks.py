"""Watermarks across a restart: the declaration survives in the catalog, the watermark is restored with the
source's offset, and an EMIT ON WINDOW CLOSE view emits every window exactly once.

An embedded database on a data directory (checkpoints to its ``objects``), closed and opened again.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from pathlib import Path

import tidegate

T0 = datetime(2026, 1, 1)
WINDOWS_SQL = (
    "SELECT window_start, count(*) AS n, sum(v) AS total FROM TUMBLE(t, ts, INTERVAL '10' SECOND) GROUP BY window_start"
)


def at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(sep=" ")


def test_a_table_watermark_and_its_closed_windows_survive_a_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "db"
    db = tidegate.connect(data_dir)
    try:
        db.execute("CREATE TABLE t (id INT, ts TIMESTAMP, v INT, WATERMARK FOR ts AS ts - INTERVAL '5' SECOND)")
        db.execute(f"CREATE MATERIALIZED VIEW closed AS {WINDOWS_SQL} EMIT ON WINDOW CLOSE")
        db.execute(f"INSERT INTO t VALUES (1, '{at(1)}', 1), (2, '{at(12)}', 2)")
        db.execute(f"INSERT INTO t VALUES (3, '{at(21)}', 3)")  # watermark 16 s: [0, 10) closes
        db.execute("FLUSH")
        assert db.execute("SELECT * FROM closed") == [(T0, 1, 1)]
    finally:
        db.close()

    db = tidegate.connect(data_dir)
    try:
        rows = db.execute("SELECT relation_name, column_name, delay, watermark, late_rows FROM tidegate_watermarks")
        [(relation, column, delay, watermark, late_rows)] = rows
        assert (relation, column, watermark, late_rows) == ("t", "ts", T0 + timedelta(seconds=16), 0)
        assert delay.nanoseconds == 5_000_000_000  # the declared delay, read back from the catalog
        # Judged by the restored watermark (16 s): 15 s is late, 17 s is not.
        db.execute(f"INSERT INTO t VALUES (4, '{at(15)}', 4)")
        db.execute(f"INSERT INTO t VALUES (5, '{at(17)}', 5), (6, '{at(40)}', 6)")  # watermark 35 s
        db.execute("FLUSH")
        assert db.execute("SELECT late_rows FROM tidegate_watermarks") == [(1,)]
        # Window [0, 10) was emitted before the restart and is not emitted again.
        assert sorted(db.execute("SELECT * FROM closed")) == [
            (T0, 1, 1),
            (T0 + timedelta(seconds=10), 2, 7),
            (T0 + timedelta(seconds=20), 1, 3),
        ]
        assert sorted(r[0] for r in db.execute("SELECT id FROM t")) == [1, 2, 3, 5, 6]
    finally:
        db.close()


def test_a_source_watermark_is_restored_with_the_generator_offset(tmp_path: Path) -> None:
    """The view over a nexmark source holds the same closed windows whether or not it was restarted."""
    source = (
        "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, "
        "date_time TIMESTAMP, extra VARCHAR, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) "
        "WITH (connector = 'nexmark', nexmark.table.type = 'bid', nexmark.event.num = '3000', "
        "nexmark.first.event.rate = '100', nexmark.max.chunk.size = '100', nexmark.events.per.second = '3000')"
    )
    view = (
        "CREATE MATERIALIZED VIEW w AS SELECT window_start, count(*) AS n FROM TUMBLE(bid, date_time, "
        "INTERVAL '2' SECOND) GROUP BY window_start EMIT ON WINDOW CLOSE"
    )

    def finish(db: tidegate.Connection) -> list[tuple[object, ...]]:
        while True:
            [(offset, end)] = db.execute("SELECT next_offset, end_offset FROM tidegate_source_progress")
            if offset >= end:
                break
            time.sleep(0.02)
        db.execute("FLUSH")
        return sorted(db.execute("SELECT * FROM w"))

    db = tidegate.connect(tmp_path / "straight")
    try:
        db.execute(source)
        db.execute(view)
        expected = finish(db)
    finally:
        db.close()

    db = tidegate.connect(tmp_path / "restarted")
    try:
        db.execute("SET barrier_interval_ms = 50")
        db.execute(source)
        db.execute(view)
        db.execute("FLUSH")  # part of the events (rate-limited to about a second's worth) and windows
        [(offset, end)] = db.execute("SELECT next_offset, end_offset FROM tidegate_source_progress")
        assert offset < end, "the restart should cut the stream"
    finally:
        db.close()
    db = tidegate.connect(tmp_path / "restarted")
    try:
        assert finish(db) == expected
    finally:
        db.close()
    assert len(expected) > 10 and len({row[0] for row in expected}) == len(expected)
