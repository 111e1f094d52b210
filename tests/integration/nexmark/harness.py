"""Nexmark queries as materialized views, checked against DuckDB's batch answer over the same events.

For one query the harness

1. opens a tidegate ``Database`` in-process (embedded API, no checkpoints, short barriers) and
   creates the ``person``, ``auction`` and ``bid`` sources with the columns of ``schema.sql``
   and the query's generator settings (``nexmark.event.num`` = ``query.events``);
2. runs the query file's statements: all but the last as they are (setup, e.g. a plain
   view), the last as ``CREATE MATERIALIZED VIEW nexmark_<name> AS …``;
3. waits until every source the view runs has generated its last event
   (``tidegate_source_progress``), then FLUSHes, so the view holds the whole stream;
4. computes the reference: DuckDB over the tables ``tidegate.connectors.nexmark.generate_events``
   makes for the same settings, running the same statements translated by tidegate's
   ``to_duckdb`` path, or the query's hand-written DuckDB form where the dialects differ;
5. compares column names, column type kinds and the rows as multisets (numerics exactly).

The query files are copies of the shared Nexmark query set, in ``queries/`` (see README.md).
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

import tidegate
from tidegate.common.duck import connect
from tidegate.common.sqltext import name_select_items, to_duckdb
from tidegate.common.types import from_arrow
from tidegate.connectors.nexmark import NexmarkConfig, event_kinds, generate_events
from tidegate.server.embedded import Connection
from tidegate.sql.dialect import parse_sql, split_statements

QUERIES_DIR = Path(__file__).resolve().parent / "queries"
EVENTS = 20_000
# The watermark of queries/schema.sql's commented lines, which ``NexmarkQuery(watermarks=True)`` declares.
WATERMARK_DELAY = "INTERVAL '4' SECOND"
SOURCE_KINDS = ("person", "auction", "bid")
BARRIER_INTERVAL_MS = 100
GENERATION_TIMEOUT_S = 120.0

# One event every 4 s of event time (rate 1/s, spread as over 4 generators): 20,000 events span
# 22 hours from 12:00, so TO_CHAR and EXTRACT see every hour of the day and two dates.
WIDE_TIME_CONFIG = NexmarkConfig(first_event_rate=1, num_event_generators=4, base_time_ms=1_436_961_600_000)


@dataclasses.dataclass(frozen=True)
class NexmarkQuery:
    """One query of ``queries/<name>.sql`` and how to check it."""

    name: str
    # A DuckDB script whose last statement is the reference answer, where the dialects differ;
    # None: the query file's statements, translated by tidegate's to_duckdb.
    duckdb: str | None = None
    config: NexmarkConfig = WIDE_TIME_CONFIG
    events: int = EVENTS
    # Statements both engines run before the query file (e.g. a side table for q13).
    setup: tuple[str, ...] = ()
    # Give the reference's tables tidegate's hidden ``_row_id`` (the event number), so a
    # hand-written reference can break ties as tidegate's top-N does: by the input's key.
    row_ids: bool = False
    # Turns DuckDB's answer into the reference, where DuckDB cannot compute it exactly
    # (e.g. an average as PostgreSQL's numeric: DuckDB averages in double precision).
    finish: Callable[[Answer], Answer] | None = None
    # Declare the sources with ``WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND``.
    watermarks: bool = False
    # The query's statements, instead of ``queries/<name>.sql`` (variants such as EMIT ON WINDOW CLOSE).
    text: str | None = None

    @property
    def view_name(self) -> str:
        return f"nexmark_{self.name}"

    def statements(self) -> list[str]:
        return split_statements(self.text if self.text is not None else (QUERIES_DIR / f"{self.name}.sql").read_text())


@dataclasses.dataclass(frozen=True)
class Answer:
    """A query result: column names, the SQL type kind of each column, and the rows."""

    names: list[str]
    kinds: list[str]
    rows: list[tuple[Any, ...]]


# ---- the sources ---------------------------------------------------------------------------------


def schema_columns() -> dict[str, list[tuple[str, str]]]:
    """(name, type text) of each Nexmark table's columns, as ``queries/schema.sql`` declares them."""
    columns: dict[str, list[tuple[str, str]]] = {}
    for statement in split_statements((QUERIES_DIR / "schema.sql").read_text()):
        create = parse_sql(statement)
        name = create.this.this.name
        if name in SOURCE_KINDS:
            columns[name] = [(c.name, c.args["kind"].sql("postgres")) for c in create.this.expressions]
    assert set(columns) == set(SOURCE_KINDS), f"schema.sql declares {sorted(columns)}"
    return columns


def generator_options(config: NexmarkConfig) -> dict[str, str]:
    """The WITH options that give a source ``config``: each setting that differs from the default."""
    default = NexmarkConfig()
    return {
        "nexmark." + field.name.replace("_", "."): str(getattr(config, field.name)).lower()
        for field in dataclasses.fields(NexmarkConfig)
        if getattr(config, field.name) != getattr(default, field.name)
    }


def source_statements(config: NexmarkConfig, events: int, watermarks: bool = False) -> list[str]:
    options = {**generator_options(config), "nexmark.event.num": str(events)}
    statements = []
    for kind, columns in schema_columns().items():
        column_list = ", ".join(f"{name} {type_text}" for name, type_text in columns)
        if watermarks:
            column_list += f", WATERMARK FOR date_time AS date_time - {WATERMARK_DELAY}"
        settings = "".join(f", {key} = '{value}'" for key, value in options.items())
        with_options = f"connector = 'nexmark', nexmark.table.type = '{kind}'{settings}"
        statements.append(f"CREATE SOURCE {kind} ({column_list}) WITH ({with_options})")
    return statements


# ---- the view ------------------------------------------------------------------------------------


@contextlib.contextmanager
def nexmark_database(data_dir: Path, query: NexmarkQuery) -> Iterator[Connection]:
    """A database with the three Nexmark sources of ``query``'s settings."""
    db = tidegate.connect(data_dir, state_store_url="none")
    try:
        db.execute(f"SET barrier_interval_ms = {BARRIER_INTERVAL_MS}")
        for statement in source_statements(query.config, query.events, query.watermarks):
            db.execute(statement)
        yield db
    finally:
        db.close()


def materialize(db: Connection, query: NexmarkQuery) -> Answer:
    """Create the query's view, let its sources run to their end, and read it."""
    *setup, last = [*query.setup, *query.statements()]
    for statement in setup:
        db.execute(statement)
    db.execute(f"CREATE MATERIALIZED VIEW {query.view_name} AS {last}")
    wait_until_generated(db, query.view_name)
    view = db.database.catalog.get(query.view_name)
    assert view is not None
    columns = [c for c in view.columns if not c.hidden]
    rows = db.execute(f"SELECT * FROM {query.view_name}")
    return Answer([c.name for c in columns], [c.type.kind for c in columns], rows)


def wait_until_generated(db: Connection, view_name: str, timeout_s: float = GENERATION_TIMEOUT_S) -> None:
    """Wait until every source of the view generated its last event, then FLUSH it into the view."""
    deadline = time.monotonic() + timeout_s
    while True:
        failed = db.execute(f"SELECT error FROM tidegate_jobs WHERE name = '{view_name}' AND status = 'failed'")
        assert not failed, f"the job of {view_name} failed: {failed[0][0]}"
        progress = db.execute(
            f"SELECT source_name, next_offset, end_offset FROM tidegate_source_progress WHERE view_name = '{view_name}'"
        )
        if progress and all(end is not None and offset >= end for _, offset, end in progress):
            break
        assert time.monotonic() < deadline, f"{view_name}: sources still generating after {timeout_s} s: {progress}"
        time.sleep(0.05)
    # Every generated row is ahead of this FLUSH's barrier, so the view now holds them all.
    db.execute("FLUSH")


# ---- the reference -------------------------------------------------------------------------------


def event_tables(config: NexmarkConfig, events: int, row_ids: bool = False) -> dict[str, pa.Table]:
    """The events a source with these settings generates, as tables, timestamps in tidegate's µs;
    with ``row_ids``, each row's event number as ``_row_id``."""
    batches = generate_events(config, config.first_event_number, events)
    numbers = np.arange(config.first_event_number, config.first_event_number + events, dtype=np.int64)
    kinds = event_kinds(config, numbers)
    tables = {}
    for kind_number, kind in enumerate(SOURCE_KINDS):
        table = pa.Table.from_batches([batches[kind]])
        if row_ids:
            table = table.append_column("_row_id", pa.array(numbers[kinds == kind_number]))
        for index, field in enumerate(table.schema):
            if pa.types.is_timestamp(field.type):
                table = table.set_column(index, field.name, table.column(index).cast(pa.timestamp("us")))
        tables[kind] = table
    return tables


def reference_answer(query: NexmarkQuery) -> Answer:
    """DuckDB's batch answer over the events the query's sources generate."""
    if query.duckdb is not None:
        script = [*(_translated(s) for s in query.setup), *split_statements(query.duckdb)]
    else:
        script = [_translated(s) for s in [*query.setup, *query.statements()]]
    con = connect()  # PostgreSQL's integer division, as tidegate's own DuckDB connections
    try:
        for kind, table in event_tables(query.config, query.events, query.row_ids).items():
            con.register(kind, table)
        *setup, last = script
        for statement in setup:
            con.execute(statement)
        result = con.sql(last).to_arrow_table()
    finally:
        con.close()
    rows = list(zip(*(column.to_pylist() for column in result.columns))) if result.num_rows else []
    answer = Answer(result.schema.names, [from_arrow(f.type).kind for f in result.schema], rows)
    return query.finish(answer) if query.finish is not None else answer


def _translated(statement: str) -> str:
    parsed = parse_sql(statement)
    name_select_items(parsed)  # PostgreSQL's output column names, as the batch engine gives them
    return to_duckdb(parsed)


# ---- the comparison ------------------------------------------------------------------------------


def assert_same_answer(query: NexmarkQuery, expected: Answer, actual: Answer, shown_rows_max: int = 5) -> None:
    """Same column names and type kinds, and the same rows as multisets (values compared exactly)."""
    assert actual.names == expected.names, f"{query.name}: columns {actual.names}, DuckDB {expected.names}"
    assert actual.kinds == expected.kinds, f"{query.name}: column types {actual.kinds}, DuckDB {expected.kinds}"
    assert expected.rows, f"{query.name}: DuckDB's answer is empty, so the comparison would prove nothing"
    want, got = Counter(expected.rows), Counter(actual.rows)
    if want == got:
        return
    missing, extra = want - got, got - want
    report = [
        f"{query.name}: the view has {len(actual.rows)} rows, DuckDB {len(expected.rows)}; "
        f"{sum(missing.values())} rows missing from the view, {sum(extra.values())} rows it should not have"
    ]
    report += [f"  missing {row!r}" for row in sorted(missing, key=repr)[:shown_rows_max]]
    report += [f"  extra   {row!r}" for row in sorted(extra, key=repr)[:shown_rows_max]]
    raise AssertionError("\n".join(report))


def check_query(query: NexmarkQuery, data_dir: Path) -> Answer:
    """The whole check for one query; returns the view's answer."""
    expected = reference_answer(query)
    with nexmark_database(data_dir, query) as db:
        actual = materialize(db, query)
    assert_same_answer(query, expected, actual)
    return actual


__all__ = [
    "EVENTS",
    "QUERIES_DIR",
    "WATERMARK_DELAY",
    "WIDE_TIME_CONFIG",
    "Answer",
    "NexmarkQuery",
    "assert_same_answer",
    "check_query",
    "event_tables",
    "materialize",
    "nexmark_database",
    "reference_answer",
    "source_statements",
    "wait_until_generated",
]
