"""The table writer sees every acknowledged write: the committed checkpoint plus the log tail after it."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

import tidegate
from tidegate.common.chunk import Chunk
from tidegate.connectors import table_writer as table_writer_module
from tidegate.connectors.table_log import TableLog
from tidegate.errors import InvalidParameterValue, JobFailed, UniqueViolation, WriteTimeout
from tidegate.state.store import MemoryStateStore


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


# ---- backpressure: the log never runs far past the last checkpoint ------------------------------------
def _insert_statement(first: int, rows: int) -> str:
    return f"INSERT INTO t SELECT i, repeat('x', 100) FROM generate_series({first}, {first + rows - 1}) AS g(i)"


def test_writes_wait_for_a_checkpoint_once_the_log_runs_max_replay_bytes_ahead(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path) as db:
        db.execute("SET barrier_interval_ms = 3600000")  # only FLUSH checkpoints
        db.execute("SET max_replay_bytes = '1MiB'")
        db.execute("CREATE TABLE t (k INT, s VARCHAR)")
        writer = db.database.writers[db.database.catalog.get("t").id]
        acknowledged: list[int] = []
        errors: list[BaseException] = []

        def load() -> None:
            try:
                for n in range(12):  # ~12 x 230 KiB of log
                    db.execute(_insert_statement(n * 2000, 2000))
                    acknowledged.append(writer.replay_bytes())
            except BaseException as error:  # reported by the test thread
                errors.append(error)

        loader = threading.Thread(target=load)
        loader.start()
        deadline = time.monotonic() + 20
        while len(acknowledged) < 12 and time.monotonic() < deadline:
            count = len(acknowledged)
            time.sleep(0.5)
            if len(acknowledged) == count:
                break  # the loader is held back
        held_at = len(acknowledged)
        assert 0 < held_at < 12, f"no backpressure: {held_at} statements went through without a checkpoint"
        assert acknowledged[-1] > 2**20 - 300 * 1024  # it waited only once past the bound
        while loader.is_alive() and time.monotonic() < deadline:
            db.execute("FLUSH")  # each checkpoint makes room for more
            loader.join(0.2)
        assert not errors and not loader.is_alive()
        assert max(acknowledged) <= 2**20 + 300 * 1024  # the bound plus the statement that reached it
        db.execute("FLUSH")
        assert db.execute("SELECT count(*) FROM t") == [(24000,)]


def _writer_over(tmp_path: Path, **options: object) -> table_writer_module.TableWriter:
    schema = pa.schema([("k", pa.int64())])
    log = TableLog(tmp_path / "log", schema, fsync=False)
    writer = table_writer_module.TableWriter(
        schema, [0], log, MemoryStateStore(), 1, lambda epoch: 0, max_replay_bytes=1024, name="t", **options
    )
    writer.apply([Chunk.inserts(pa.record_batch([pa.array(range(1000), pa.int64())], schema=schema))])
    return writer


def test_a_write_held_back_for_a_stopped_job_is_refused_with_its_error(tmp_path: Path) -> None:
    writer = _writer_over(tmp_path, job_failure=lambda: "division by zero")
    with pytest.raises(JobFailed, match=r"table t cannot take writes.*division by zero"):
        writer.wait_for_room()
    writer.log.close()


def test_a_write_held_back_too_long_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_writer_module, "REPLAY_WAIT_LIMIT_S", 0.3)
    writer = _writer_over(tmp_path)
    with pytest.raises(WriteTimeout, match=r"canceling statement: table t has .* no checkpoint has consumed"):
        writer.wait_for_room()
    writer.max_replay_bytes = None  # no bound: never waits
    writer.wait_for_room()
    writer.log.close()


def test_max_replay_bytes_takes_sizes_and_refuses_nonsense(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path) as db:
        db.execute("SET max_replay_bytes = '16MiB'")
        assert db.execute("SHOW max_replay_bytes") == [("16777216",)]
        for bad in ("'lots'", "'1KiB'", "0"):
            with pytest.raises(InvalidParameterValue, match="max_replay_bytes"):
                db.execute(f"SET max_replay_bytes = {bad}")
