"""checkpoint_frequency: every N-th timed barrier is a checkpoint; FLUSH always is."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest

import tidegate
from tidegate.common.epoch import epoch_to_ms
from tidegate.errors import InvalidParameterValue


def test_only_every_nth_barrier_commits_and_the_setting_survives_a_restart(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path, state_store_url="fs") as db:
        db.execute("CREATE TABLE t (x INT)")
        db.execute("SET barrier_interval_ms = 50")
        db.execute("SET checkpoint_frequency = 4")
        db.execute("INSERT INTO t VALUES (1)")
        first = db.execute("SELECT max(epoch) FROM tidegate_checkpoints")[0][0]
        time.sleep(2.0)
        epochs = [e for (e,) in db.execute("SELECT epoch FROM tidegate_checkpoints ORDER BY epoch") if e > first]
        assert len(epochs) >= 3
        gaps = [epoch_to_ms(b) - epoch_to_ms(a) for a, b in itertools.pairwise(epochs)]
        # Four barriers 50 ms apart per checkpoint (a loaded machine only stretches the gap).
        assert min(gaps) >= 150, gaps
    with tidegate.connect(tmp_path) as db:
        assert db.execute("SHOW checkpoint_frequency") == [("4",)]
        with pytest.raises(InvalidParameterValue, match="checkpoint_frequency"):
            db.execute("SET checkpoint_frequency = 0")


def test_the_state_store_view_shows_uploads_levels_and_the_block_cache(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path, state_store_url="fs", cache_budget_bytes=8 * 2**20) as db:
        db.execute("CREATE TABLE t (k INT PRIMARY KEY, v INT)")
        db.execute("INSERT INTO t SELECT i, i FROM generate_series(1, 1000) AS g(i)")
        db.execute("FLUSH")
        stats = dict(db.execute("SELECT name, value FROM tidegate_state_store"))
        assert stats["bytes_uploaded_checkpoint"] > 0
        assert stats["sst_count_l0"] + stats["sst_count_l1"] >= 1
        assert stats["block_cache_capacity_bytes"] == 4 * 2**20  # half the budget
    with tidegate.connect(tmp_path / "no-checkpoints", state_store_url="none") as db:
        assert db.execute("SELECT count(*) FROM tidegate_state_store") == [(0,)]
