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
