"""The table writer sees every acknowledged write: the committed checkpoint plus the log tail after it."""

from __future__ import annotations

from pathlib import Path

import pytest

import tidegate
from tidegate.connectors import table_writer as table_writer_module
from tidegate.errors import UniqueViolation


@pytest.mark.parametrize("state_store", ["none", "fs"], ids=["no-checkpoints", "checkpoints"])
def test_primary_key_checks_see_committed_rows_and_the_uncommitted_log_tail(tmp_path: Path, state_store: str) -> None:
    with tidegate.connect(tmp_path, state_store_url=state_store) as db:
        db.execute("SET barrier_interval_ms = 3600000")  # only FLUSH checkpoints
        db.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT)")
        db.execute("INSERT INTO t VALUES (1, 10), (2, 20)")
        db.execute("FLUSH")  # 1 and 2 are in the checkpoint
        db.execute("INSERT INTO t VALUES (3, 30)")  # 3 only in the log tail
        writer = db.database.writers[db.database.catalog.get("t").id]
        assert writer._image is None  # no image was needed for these inserts
        for key in (1, 3):
            with pytest.raises(UniqueViolation):
                db.execute(f"INSERT INTO t VALUES ({key}, 0)")
        db.execute("INSERT INTO t VALUES (1, 11), (3, 31), (4, 40) ON CONFLICT (k) DO UPDATE SET v = excluded.v")
        db.execute("UPDATE t SET v = v + 1 WHERE k >= 3")
        assert db.execute("SELECT k, v FROM t ORDER BY k") == [(1, 11), (2, 20), (3, 32), (4, 41)]
    with tidegate.connect(tmp_path) as db:
        with pytest.raises(UniqueViolation):
            db.execute("INSERT INTO t VALUES (4, 0)")
        db.execute("DELETE FROM t WHERE k = 4")
        db.execute("INSERT INTO t VALUES (4, 42)")
        assert db.execute("SELECT k, v FROM t ORDER BY k") == [(1, 11), (2, 20), (3, 32), (4, 42)]


def test_row_ids_stay_unique_across_restarts(tmp_path: Path) -> None:
    for _ in range(3):
        with tidegate.connect(tmp_path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS t (x INT)")
            db.execute("INSERT INTO t VALUES (1), (1)")
    with tidegate.connect(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM t") == [(6,)]
        db.execute("DELETE FROM t WHERE x = 1")
        assert db.execute("SELECT count(*) FROM t") == [(0,)]


def test_a_large_image_is_not_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_writer_module, "IMAGE_CACHE_BYTES", 1000)
    with tidegate.connect(tmp_path) as db:
        db.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT)")
        db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 1000) AS g(i)")
        db.execute("UPDATE t SET v = 0 WHERE k <= 10")
        writer = db.database.writers[db.database.catalog.get("t").id]
        assert writer._image is None
        db.execute("UPDATE t SET v = 1 WHERE k <= 5")
        assert db.execute("SELECT sum(v) FROM t WHERE k <= 10") == [(5,)]
