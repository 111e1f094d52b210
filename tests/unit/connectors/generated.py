"""Generator sources through SQL in tests: waiting for every view's generators to reach their end,
reading a view, checking it against DuckDB, and failing operators on purpose."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from tidegate.meta import runtime as runtime_module
from tidegate.stream.evaluator import Evaluator


def flush_until_generated(db: Any, views: Iterable[str], timeout_s: float = 60) -> None:
    """FLUSH once every generator of every view in ``views`` has generated its last row.

    A view's row count says nothing about an aggregate being complete, and each view runs its
    own generator: only the sources' progress tells that every row is ahead of the FLUSH.
    During a recovery the progress view is empty, so every view must be listed to count.
    """
    wanted = set(views)
    deadline = time.monotonic() + timeout_s
    while True:
        progress = db.execute("SELECT view_name, next_offset, end_offset FROM tidegate_source_progress")
        listed = {name for name, _, _ in progress}
        if wanted <= listed and all(offset >= end for name, offset, end in progress if name in wanted):
            break
        assert time.monotonic() < deadline, f"sources still generating after {timeout_s} s: {progress}"
        time.sleep(0.05)
    db.execute("FLUSH")


def view_rows(db: Any, name: str) -> list[tuple[Any, ...]]:
    return sorted(db.execute(f"SELECT * FROM {name}"))


def oracle(query: str, **tables: pa.Table) -> list[tuple[Any, ...]]:
    """``query`` computed in batch by DuckDB over ``tables`` (each registered under its keyword)."""
    con = duckdb.connect()
    for name, table in tables.items():
        con.register(name, table)
    return sorted(con.sql(query).fetchall())


class OperatorFailures:
    """Makes the next ``pending`` expression evaluations of any operator raise, and recovery retry at
    once: ``failures.pending = 1`` injects one failure mid-stream."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pending = 0
        monkeypatch.setattr(runtime_module, "RECOVERY_BACKOFF_S", 0.01)
        original = Evaluator.query

        def flaky_query(evaluator: Evaluator, batch: Any, sql: str) -> Any:
            if self.pending:
                self.pending -= 1
                raise RuntimeError("injected operator failure")
            return original(evaluator, batch, sql)

        monkeypatch.setattr(Evaluator, "query", flaky_query)
