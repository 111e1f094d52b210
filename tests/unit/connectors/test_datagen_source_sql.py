"""Datagen sources through SQL: views over a source equal the same query over the generated rows,
across a restart and a failure, every view sees the same rows, and the DDL errors name the problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from generated import OperatorFailures, flush_until_generated, oracle, view_rows

import tidegate
from tidegate.connectors.datagen import generate_rows
from tidegate.connectors.datagen_options import parse_datagen_options
from tidegate.errors import (
    DuplicateColumn,
    FeatureNotSupported,
    InvalidParameterValue,
    InvalidTableDefinition,
)

ROWS = 20_000
COLUMNS = "id BIGINT, v INT, name VARCHAR, price NUMERIC(10,2), t TIMESTAMP"
# Rate limited (8 s of rows), so a restart cuts the stream in the middle even on a loaded machine.
WITH = (
    f"connector = 'datagen', datagen.rows.per.second = '2500', datagen.rows.num = '{ROWS}', "
    "datagen.max.chunk.size = '500', datagen.seed = '3', fields.id.kind = 'sequence', fields.id.start = '1', "
    "fields.id.end = '1000000', fields.v.min = '0', fields.v.max = '100', fields.name.length = '4', "
    "fields.price.min = '1', fields.price.max = '99.99', fields.t.max_past = '1h'"
)
VIEWS = {
    "everything": "SELECT id, v, name, price, t FROM s",
    "small": "SELECT id, name FROM s WHERE v < 10",
    # An aggregate counts every row: a replayed row would show as a doubled count.
    "per_v": "SELECT v, count(*) AS n, sum(price) AS total, max(t) AS last FROM s GROUP BY v",
}


def generated(db: Any) -> pa.Table:
    """The source's rows as the generator makes them, from the options the catalog stored."""
    relation = db.database.catalog.get("s")
    declared = [(c.name, c.type) for c in relation.columns if not c.hidden]
    options = parse_datagen_options(relation.options, declared)
    return pa.Table.from_arrays(generate_rows(options, 0, ROWS), names=[name for name, _ in declared])


def create(db: Any) -> None:
    db.execute(f"CREATE SOURCE s ({COLUMNS}) WITH ({WITH})")
    for name, query in VIEWS.items():
        db.execute(f"CREATE MATERIALIZED VIEW {name} AS {query}")
    db.execute("FLUSH")


def test_views_over_a_source_equal_the_query_over_the_generated_rows_across_a_restart(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path) as db:
        create(db)
        reference = generated(db)
        partial = db.execute("SELECT count(*) FROM everything")[0][0]
        progress = db.execute("SELECT view_name, source_name, end_offset FROM tidegate_source_progress")
        assert sorted(progress) == [(name, "s", ROWS) for name in sorted(VIEWS)]
    assert partial < ROWS  # the restart happens mid-stream
    with tidegate.connect(tmp_path) as db:
        assert db.execute("SELECT count(*) FROM everything")[0][0] >= partial
        flush_until_generated(db, VIEWS)
        for name, query in VIEWS.items():
            assert view_rows(db, name) == oracle(query, s=reference), name
        assert db.execute("SELECT DISTINCT next_offset FROM tidegate_source_progress") == [(ROWS,)]
        # The times were fixed when the source was created: the restart generated the same ones.
        assert generated(db).equals(reference)


@pytest.mark.parametrize("state_store", ["none", "fs"], ids=["no-checkpoints", "checkpoints"])
def test_a_failure_mid_stream_recovers_without_losing_or_doubling_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_store: str
) -> None:
    failures = OperatorFailures(monkeypatch)
    with tidegate.connect(tmp_path, state_store_url=state_store) as db:
        create(db)
        reference = generated(db)
        assert db.execute("SELECT count(*) FROM everything")[0][0] < ROWS
        failures.pending = 1
        flush_until_generated(db, VIEWS)
        assert failures.pending == 0 and db.database.streaming.runtime.recoveries == 1
        for name, query in VIEWS.items():
            assert view_rows(db, name) == oracle(query, s=reference), name


def test_source_errors_name_the_problem(tmp_path: Path) -> None:
    with tidegate.connect(tmp_path) as db:
        with pytest.raises(InvalidTableDefinition, match="column list"):
            db.execute("CREATE SOURCE s WITH (connector = 'datagen')")
        with pytest.raises(InvalidParameterValue, match=r"fields\.v\.max"):
            db.execute("CREATE SOURCE s (v SMALLINT) WITH (connector = 'datagen', fields.v.max = '100000')")
        with pytest.raises(InvalidParameterValue, match=r"fields\.w\.kind.*names no column"):
            db.execute("CREATE SOURCE s (v INT) WITH (connector = 'datagen', fields.w.kind = 'random')")
        with pytest.raises(FeatureNotSupported, match="jsonb"):
            db.execute("CREATE SOURCE s (v JSONB) WITH (connector = 'datagen')")
        with pytest.raises(DuplicateColumn, match="_row_id"):
            db.execute("CREATE SOURCE s (_row_id BIGINT) WITH (connector = 'datagen')")
        with pytest.raises(FeatureNotSupported, match="nexmark, datagen, kafka, file"):
            db.execute("CREATE SOURCE s (v INT) WITH (connector = 'pulsar')")
        with pytest.raises(InvalidParameterValue, match="FORMAT PLAIN ENCODE JSON"):
            db.execute("CREATE SOURCE s (v INT) WITH (connector = 'kafka')")
        db.execute(
            "CREATE SOURCE s (v INT, t TIMESTAMPTZ) WITH (connector = 'datagen', datagen.rows.num = '5', "
            "datagen.rows.per.second = '1000')"
        )
        with pytest.raises(FeatureNotSupported, match="materialized view"):
            db.execute("SELECT * FROM s")
        # The base time of random times is stored with the source, so every view sees the same rows.
        assert "fields.t.basetime" in db.database.catalog.get("s").options
        db.execute("CREATE MATERIALIZED VIEW a AS SELECT v, t FROM s")
        db.execute("CREATE MATERIALIZED VIEW b AS SELECT v, t FROM s")
        db.execute("FLUSH")
        assert len(view_rows(db, "a")) == 5 and view_rows(db, "a") == view_rows(db, "b")
        db.execute("DROP SOURCE s CASCADE")
