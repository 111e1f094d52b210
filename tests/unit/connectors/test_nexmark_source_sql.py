"""Nexmark sources through SQL: views over a source equal the same query over the generated events,
across a restart, and the DDL errors name the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from generated import OperatorFailures, flush_until_generated, oracle, view_rows

import tidegate
from tidegate.connectors.nexmark import NexmarkConfig, event_kinds, generate_events
from tidegate.errors import (
    DependentObjectsExist,
    DuplicateObject,
    FeatureNotSupported,
    InvalidParameterValue,
    InvalidTableDefinition,
    WrongObjectType,
)

EVENTS = 20_000
VIEWS = {
    "q0": "SELECT auction, bidder, price, date_time FROM bid",
    "q2": "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0",
    # An aggregate counts every row: a replayed event would show as a doubled count.
    "per_auction": "SELECT auction, count(*) AS bids, max(price) AS top, sum(price) AS total FROM bid GROUP BY auction",
}


def bids(count: int) -> pa.Table:
    """The bids of the first ``count`` events of the default stream, with their event numbers
    (date_time in microseconds, as the source's TIMESTAMP column holds it)."""
    config = NexmarkConfig()
    batch = generate_events(config, config.first_event_number, count)["bid"]
    numbers = np.arange(config.first_event_number, config.first_event_number + count)
    batch = batch.set_column(5, "date_time", batch.column("date_time").cast(pa.timestamp("us")))
    return pa.Table.from_batches([batch]).append_column("_row_id", pa.array(numbers[event_kinds(config, numbers) == 2]))


def create(db: Any, table_type: str = "bid") -> None:
    # Rate limited (8 s of events), so a restart or a failure cuts the stream in the middle even on a
    # loaded machine.
    db.execute(
        f"CREATE SOURCE bid WITH (connector = 'nexmark', nexmark.table.type = '{table_type}', "
        f"nexmark.event.num = '{EVENTS}', nexmark.max.chunk.size = '500', nexmark.events.per.second = '2500')"
    )
    for name, query in VIEWS.items():
        db.execute(f"CREATE MATERIALIZED VIEW {name} AS {query}")
    db.execute("FLUSH")


def test_views_over_a_source_equal_the_query_over_the_generated_events_across_a_restart(tmp_path: Path) -> None:
    reference = bids(EVENTS)
    with tidegate.connect(tmp_path) as db:
        create(db, table_type="Bid")  # the table type is case-insensitive
        assert db.execute("SHOW SOURCES") == [("bid",)]
        partial = db.execute("SELECT count(*) FROM q0")[0][0]
    assert partial < reference.num_rows  # the restart happens mid-stream
    with tidegate.connect(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM q0")[0][0] >= partial
        flush_until_generated(db, VIEWS)
        for name, query in VIEWS.items():
            assert view_rows(db, name) == oracle(query, bid=reference), name
        # nexmark.event.num is the end: more barriers bring nothing more.
        db.execute("FLUSH")
        assert db.execute("SELECT count(*) FROM q0") == [(reference.num_rows,)]
    with tidegate.connect(tmp_path) as db:  # a restart after the end changes nothing
        db.execute("FLUSH")
        assert view_rows(db, "per_auction") == oracle(VIEWS["per_auction"], bid=reference)


@pytest.mark.parametrize("state_store", ["none", "fs"], ids=["no-checkpoints", "checkpoints"])
def test_a_failure_mid_stream_recovers_without_losing_or_doubling_events(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_store: str
) -> None:
    failures = OperatorFailures(monkeypatch)
    reference = bids(EVENTS)
    with tidegate.connect(tmp_path, state_store_url=state_store) as db:
        create(db)
        assert db.execute("SELECT count(*) FROM q0")[0][0] < reference.num_rows
        failures.pending = 1
        flush_until_generated(db, VIEWS)
        assert failures.pending == 0 and db.database.streaming.runtime.recoveries == 1
        for name, query in VIEWS.items():
            assert view_rows(db, name) == oracle(query, bid=reference), name


def test_each_view_runs_its_own_generator_from_the_first_event(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path) as db:
        db.execute(
            "CREATE SOURCE p (id BIGINT, name VARCHAR, email_address VARCHAR, credit_card VARCHAR, city VARCHAR, "
            "state VARCHAR, date_time TIMESTAMP, extra VARCHAR) "
            "WITH (connector = 'nexmark', nexmark.table.type = 'person', nexmark.event.num = '5000')"
        )
        db.execute("CREATE MATERIALIZED VIEW first_view AS SELECT id, name FROM p")
        db.execute("FLUSH")
        db.execute("CREATE MATERIALIZED VIEW second_view AS SELECT id, name FROM p")
        db.execute("FLUSH")
        config = NexmarkConfig()
        persons = generate_events(config, config.first_event_number, 5000)["person"]
        expected = sorted(zip(persons.column("id").to_pylist(), persons.column("name").to_pylist()))
        assert view_rows(db, "first_view") == view_rows(db, "second_view") == expected
        db.execute("DROP MATERIALIZED VIEW first_view")
        with pytest.raises(DependentObjectsExist):
            db.execute("DROP SOURCE p")
        db.execute("DROP SOURCE p CASCADE")
        assert db.execute("SHOW SOURCES") == []
        assert db.execute("SHOW MATERIALIZED VIEWS") == []


def test_source_errors_name_the_problem(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path) as db:
        with pytest.raises(InvalidParameterValue, match=r"nexmark\.table\.typo"):
            db.execute("CREATE SOURCE s WITH (connector = 'nexmark', nexmark.table.typo = 'bid')")
        with pytest.raises(InvalidParameterValue, match="person, auction or bid"):
            db.execute("CREATE SOURCE s WITH (connector = 'nexmark', nexmark.table.type = 'bids')")
        with pytest.raises(FeatureNotSupported, match="pulsar"):
            db.execute("CREATE SOURCE s WITH (connector = 'pulsar', topic = 't')")
        with pytest.raises(InvalidTableDefinition, match="fixed"):
            db.execute("CREATE SOURCE s (a BIGINT) WITH (connector = 'nexmark', nexmark.table.type = 'bid')")
        db.execute(
            "CREATE SOURCE s WITH (connector = 'nexmark', nexmark.table.type = 'auction', nexmark.event.num = '10')"
        )
        with pytest.raises(DuplicateObject):
            db.execute("CREATE SOURCE s WITH (connector = 'nexmark', nexmark.table.type = 'auction')")
        db.execute("CREATE SOURCE IF NOT EXISTS s WITH (connector = 'nexmark', nexmark.table.type = 'auction')")
        with pytest.raises(FeatureNotSupported, match="materialized view"):
            db.execute("SELECT * FROM s")
        with pytest.raises(WrongObjectType):
            db.execute("INSERT INTO s (id) VALUES (1)")
        db.execute("CREATE MATERIALIZED VIEW v AS SELECT id, seller FROM s")
        with pytest.raises(WrongObjectType, match="not a table"):
            db.execute("DROP TABLE s")
        with pytest.raises(DependentObjectsExist) as refused:
            db.execute("DROP SOURCE s")
        assert "materialized view v depends on source s" in (refused.value.hint or "")
        db.execute("DROP MATERIALIZED VIEW v")
        db.execute("DROP SOURCE s")
        db.execute("DROP SOURCE IF EXISTS s")
