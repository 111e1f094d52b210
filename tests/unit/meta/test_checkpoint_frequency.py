"""checkpoint_frequency: every N-th timed barrier is a checkpoint; FLUSH always is. Also the system views
that report on checkpoints and sources (tidegate_state_store, tidegate_source_progress)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest

import tidegate
from tidegate.common.epoch import epoch_to_ms
from tidegate.connectors.nexmark import EventKind, NexmarkConfig, event_kinds
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


def test_the_source_progress_view_follows_each_generator_to_its_end_and_across_a_restart(tmp_path: Path) -> None:
    events = 5000
    config = NexmarkConfig()
    end = config.first_event_number + events
    bids = int((event_kinds(config, np.arange(config.first_event_number, end)) == EventKind.BID).sum())
    progress_sql = "SELECT view_name, source_name, next_offset, end_offset FROM tidegate_source_progress"
    with tidegate.connect(tmp_path, state_store_url="fs") as db:
        for kind in ("bid", "auction"):
            db.execute(
                f"CREATE SOURCE {kind} WITH (connector = 'nexmark', nexmark.table.type = '{kind}', "
                f"nexmark.event.num = '{events}', nexmark.max.chunk.size = '500')"
            )
        db.execute(
            "CREATE SOURCE people WITH (connector = 'nexmark', nexmark.table.type = 'person', "
            "nexmark.events.per.second = '2000', nexmark.max.chunk.size = '100')"
        )
        db.execute("CREATE MATERIALIZED VIEW bid_count AS SELECT count(*) AS n FROM bid")
        db.execute("CREATE MATERIALIZED VIEW joined AS SELECT B.price FROM bid B JOIN auction A ON B.auction = A.id")
        db.execute("CREATE MATERIALIZED VIEW endless AS SELECT id FROM people")
        deadline = time.monotonic() + 60
        while True:
            rows = db.execute(progress_sql)
            if all(offset == stop for _, _, offset, stop in rows if stop is not None):
                break
            assert time.monotonic() < deadline, rows
            db.execute("FLUSH")
        # One row per generator a view runs; only the unbounded source has no end.
        assert [(view, source, stop) for view, source, _, stop in rows] == [
            ("bid_count", "bid", end),
            ("endless", "people", None),
            ("joined", "auction", end),
            ("joined", "bid", end),
        ]
        db.execute("FLUSH")
        assert db.execute("SELECT n FROM bid_count") == [(bids,)]  # the offset and the view agree
        # A finished source stays at its end; an unbounded one keeps going.
        endless_before = rows[1][2]
        time.sleep(0.3)
        db.execute("FLUSH")
        later = {(view, source): offset for view, source, offset, _ in db.execute(progress_sql)}
        assert later[("bid_count", "bid")] == later[("joined", "auction")] == end
        assert later[("endless", "people")] > endless_before
        db.execute("DROP MATERIALIZED VIEW joined")
        assert [view for view, *_ in db.execute(progress_sql)] == ["bid_count", "endless"]
    # After a restart the rebuilt generator shows its restored offset, not the stream's first event.
    with tidegate.connect(tmp_path) as db:
        assert ("bid_count", "bid", end, end) in db.execute(progress_sql)
