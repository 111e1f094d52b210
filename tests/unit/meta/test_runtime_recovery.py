"""Recovery at run time: an actor that raises does not leave tidegate half-running."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

import tidegate
from tidegate.errors import JobFailed
from tidegate.meta import runtime as runtime_module
from tidegate.stream.evaluator import Evaluator


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_module, "RECOVERY_BACKOFF_S", 0.01)


@pytest.mark.parametrize("state_store", ["none", "fs"], ids=["no-checkpoints", "checkpoints"])
def test_a_transient_operator_failure_recovers_from_the_checkpoint_without_loss_or_duplicates(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_store: str
) -> None:
    failures = itertools.count()
    armed = {"fail": 0}
    original = Evaluator.query

    def flaky_query(self: Evaluator, batch: Any, sql: str) -> Any:
        if armed["fail"]:
            armed["fail"] -= 1
            next(failures)
            raise RuntimeError("injected operator failure")
        return original(self, batch, sql)

    monkeypatch.setattr(Evaluator, "query", flaky_query)
    with tidegate.connect(tmp_path, state_store_url=state_store) as db:
        db.execute("CREATE TABLE t (k INT, v INT)")
        db.execute("CREATE MATERIALIZED VIEW totals AS SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k")
        db.execute("INSERT INTO t SELECT i % 7, i FROM generate_series(1, 700) AS g(i)")
        db.execute("FLUSH")
        armed["fail"] = 1
        db.execute("INSERT INTO t SELECT i % 7, i FROM generate_series(701, 1400) AS g(i)")
        db.execute("FLUSH")  # waits out the recovery, then checkpoints
        assert next(failures) == 1  # the failure really happened once
        assert db.database.streaming.runtime.recoveries == 1
        rows = db.execute("SELECT k, n, s FROM totals ORDER BY k")
        expected = db.execute("SELECT k, count(*), sum(v) FROM t GROUP BY k ORDER BY k")
        assert rows == expected
        assert sum(n for _, n, _ in rows) == 1400
        # Still streaming after the recovery.
        db.execute("INSERT INTO t VALUES (100, 1)")
        assert db.execute("SELECT n, s FROM totals WHERE k = 100") == [(1, 1)]


def test_a_job_that_keeps_failing_is_stopped_and_reported_while_the_others_run(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path) as db:
        db.execute("CREATE TABLE t (s VARCHAR)")
        db.execute("CREATE MATERIALIZED VIEW numbers AS SELECT s::INT AS n FROM t")
        db.execute("CREATE MATERIALIZED VIEW on_numbers AS SELECT count(*) AS c FROM numbers")
        db.execute("CREATE MATERIALIZED VIEW lengths AS SELECT length(s) AS l FROM t")
        db.execute("INSERT INTO t VALUES ('12'), ('not a number')")
        db.execute("FLUSH")

        with pytest.raises(JobFailed, match=r"numbers.*stopped updating.*not a number"):
            db.execute("SELECT * FROM numbers")
        with pytest.raises(JobFailed, match=r"on_numbers.*reads a relation whose job failed"):
            db.execute("SELECT * FROM on_numbers")
        jobs = db.execute("SELECT name, status, error FROM tidegate_jobs ORDER BY name")
        by_name = {name: (status, error) for name, status, error in jobs}
        assert by_name["numbers"][0] == "failed" and "not a number" in by_name["numbers"][1]
        assert by_name["on_numbers"][0] == "failed"
        assert by_name["lengths"] == ("running", None) and by_name["t"] == ("running", None)
        # The other views keep streaming.
        db.execute("INSERT INTO t VALUES ('abc')")
        assert sorted(db.execute("SELECT l FROM lengths")) == [(2,), (3,), (12,)]
        # Dropping the broken view clears the failure.
        db.execute("DROP MATERIALIZED VIEW numbers CASCADE")
        assert db.execute("SELECT name FROM tidegate_jobs ORDER BY name") == [("lengths",), ("t",)]
