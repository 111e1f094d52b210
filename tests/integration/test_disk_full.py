"""A full disk refuses writes with SQLSTATE 53100 and loses nothing acknowledged."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import tidegate
from tidegate.connectors import table_log as table_log_module
from tidegate.errors import DiskFull
from tidegate.server.pgwire import sqlstate_for


@pytest.mark.parametrize("state_store", ["none", "fs"], ids=["no-checkpoints", "checkpoints"])
def test_a_full_disk_refuses_the_write_and_keeps_everything_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_store: str
) -> None:
    with tidegate.connect(tmp_path, state_store_url=state_store) as db:
        db.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT)")
        db.execute("CREATE MATERIALIZED VIEW total AS SELECT count(*) AS n, sum(v) AS s FROM t")
        db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 100) AS g(i)")

        def full_disk(fd: int, buffers: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(table_log_module.os, "writev", full_disk)
        with pytest.raises(DiskFull, match=r"No space left on device.*Free disk space") as refused:
            db.execute("INSERT INTO t VALUES (101, 101)")
        assert sqlstate_for(refused.value) == "53100"
        with pytest.raises(DiskFull):
            db.execute("DELETE FROM t WHERE k <= 50")
        assert db.execute("SELECT n, s FROM total") == [(100, 5050)]

        monkeypatch.undo()  # space was freed
        db.execute("INSERT INTO t VALUES (101, 101)")  # the refused key was never written
        assert db.execute("SELECT n, s FROM total") == [(101, 5151)]

    with tidegate.connect(tmp_path) as db:
        assert db.execute("SELECT n, s FROM total") == [(101, 5151)]
        assert db.execute("SELECT count(*) FROM t") == [(101,)]
