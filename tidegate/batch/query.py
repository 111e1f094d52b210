"""Batch queries: a SELECT over tables and views at one committed epoch, run by DuckDB.

Every relation the query names is read at the same committed epoch (pinned for
the duration of the read), so a query over several views sees one consistent
cut of the streams (DESIGN §5.7). The snapshots are handed to DuckDB as Arrow
tables under the relations' names, and the query — transpiled from tidegate's
PostgreSQL dialect — runs over them.

PostgreSQL's scalar functions are translated on the way (``common.functions``); a
one-dimensional array result (an ``int[]`` column, ``regexp_match``) is an array column
(``_int4``, ``_text``); an array of arrays, which tidegate has no type for, is sent as text in
PostgreSQL's array form, ``{{a,"b c"},{NULL,d}}``. A call with no matching signature is
reported in PostgreSQL's words.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from tidegate.batch.connector_views import sinks_table, source_errors_table
from tidegate.common.duck import connect, translate_error
from tidegate.common.functions import postgres_function_message
from tidegate.common.result import Column, QueryResult
from tidegate.common.sqltext import name_select_items, position_of, to_duckdb
from tidegate.common.types import TEXT, SqlType, from_arrow
from tidegate.errors import (
    FeatureNotSupported,
    JobFailed,
    TidegateError,
    UndefinedFunction,
    UndefinedRelation,
    WrongObjectType,
)
from tidegate.meta.catalog import Relation, RelationKind
from tidegate.meta.database import Database
from tidegate.meta.runtime import MAX_FAILURES


def bind_parameters(statement: exp.Expression, params: Sequence[Any] | None) -> exp.Expression:
    """Replace ``$n`` placeholders with literals of the given Python values."""
    if not params:
        return statement

    def replace(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Placeholder | exp.Parameter):
            name = str(node.this.this if isinstance(node.this, exp.Expression) else node.this)
            if name.isdigit() and 1 <= int(name) <= len(params):
                return literal(params[int(name) - 1])
        return node

    return statement.transform(replace)


def literal(value: Any) -> exp.Expression:
    if value is None:
        return exp.null()
    if isinstance(value, bool):
        return exp.true() if value else exp.false()
    if isinstance(value, int | float | decimal.Decimal):
        return exp.Literal.number(str(value))
    if isinstance(value, dt.datetime):
        kind = "TIMESTAMPTZ" if value.tzinfo else "TIMESTAMP"
        return exp.cast(exp.Literal.string(value.isoformat(sep=" ")), kind)
    if isinstance(value, dt.date):
        return exp.cast(exp.Literal.string(value.isoformat()), "DATE")
    if isinstance(value, bytes | bytearray | memoryview):
        return exp.cast(exp.Literal.string("\\x" + bytes(value).hex()), "BYTEA")
    if isinstance(value, list):  # an array parameter, decoded by the pgwire layer
        return exp.Array(expressions=[literal(v) for v in value])
    return exp.Literal.string(str(value))


def referenced_relations(
    statement: exp.Expression, database: Database, provided: set[str] | None = None
) -> dict[str, Relation]:
    """Relations a statement reads, by the name the statement uses (CTE and ``provided`` names excluded)."""
    ctes = {cte.alias for cte in statement.find_all(exp.CTE)} | (provided or set())
    found: dict[str, Relation] = {}
    for table in statement.find_all(exp.Table):
        name = table.name
        if not name or name in ctes or isinstance(table.this, exp.Func):
            continue
        relation = database.catalog.get(name)
        if relation is None:
            raise UndefinedRelation(f'relation "{name}" does not exist', position=position_of(table))
        if relation.kind is RelationKind.SINK:
            raise WrongObjectType(
                f'"{name}" is a sink: query the relation it reads, or its target', position=position_of(table)
            )
        if relation.kind is RelationKind.SOURCE:
            # A source stores nothing: only a view over it runs its generator.
            raise FeatureNotSupported(
                f'source "{name}" cannot be queried directly: create a materialized view over it and query that',
                position=position_of(table),
                hint=f"CREATE MATERIALIZED VIEW v AS SELECT ... FROM {name}; then SELECT ... FROM v.",
            )
        found[name] = relation
    return found


def visible(table: pa.Table, relation: Relation) -> pa.Table:
    names = [c.name for c in relation.columns if not c.hidden]
    return table.select(names)


def run_select(
    database: Database,
    statement: exp.Expression,
    sql: str,
    params: Sequence[Any] | None = None,
    extra_tables: dict[str, pa.Table] | None = None,
) -> QueryResult:
    """Execute a query at the latest committed epoch and return its rows."""
    table = select_arrow(database, statement, sql, params, extra_tables)
    declared = _declared_types(statement, database)
    columns = []
    for field in table.schema:
        if field.metadata and _ARRAY_TEXT in field.metadata:
            columns.append(Column(field.name, TEXT))
            continue
        sql_type = declared.get(field.name)
        if sql_type is None or not sql_type.arrow.equals(field.type):
            sql_type = from_arrow(field.type)
        columns.append(Column(field.name, sql_type))
    rows = list(zip(*(c.to_pylist() for c in table.columns))) if table.num_rows else []
    return QueryResult(f"SELECT {len(rows)}", columns, rows)


_ARRAY_TEXT = b"tidegate.array_text"


def _arrays_as_text(table: pa.Table) -> pa.Table:
    """List columns tidegate has no array type for (arrays of arrays) as PostgreSQL's array text."""
    for index, field in enumerate(table.schema):
        if (pa.types.is_list(field.type) or pa.types.is_large_list(field.type)) and not _typed(field.type):
            texts = [
                None if value is None else _array_text(value, field.type.value_type)
                for value in table.column(index).to_pylist()
            ]
            text_field = pa.field(field.name, pa.string(), metadata={_ARRAY_TEXT: b"1"})
            table = table.set_column(index, text_field, pa.array(texts, pa.string()))
    return table


def _typed(arrow_type: pa.DataType) -> bool:
    try:
        from_arrow(arrow_type)
    except FeatureNotSupported:
        return False
    return True


def _array_text(values: list[Any], element_type: pa.DataType) -> str:
    """PostgreSQL's array_out; the inner arrays of a multidimensional array are not quoted."""
    if pa.types.is_list(element_type) or pa.types.is_large_list(element_type):
        inner = element_type.value_type
        return "{" + ",".join("NULL" if v is None else _array_text(v, inner) for v in values) + "}"
    return from_arrow(pa.list_(element_type)).to_text(values) or ""


def _postgres_wording(error: TidegateError) -> TidegateError:
    """A function call DuckDB could not bind, in PostgreSQL's words (with the user's function name)."""
    if not isinstance(error, UndefinedFunction):
        return error
    message = postgres_function_message(error.message)
    if message is None:
        return error
    hint = "No function matches the given name and argument types. You might need to add explicit type casts."
    return UndefinedFunction(message, position=error.position, hint=hint)


def _declared_types(statement: exp.Expression, database: Database) -> dict[str, SqlType]:
    """Declared types of the columns a query selects as they are (jsonb stays jsonb, not text)."""
    if not isinstance(statement, exp.Select):
        return {}
    try:
        relations = referenced_relations(statement, database)
    except UndefinedRelation:
        return {}
    by_name: dict[str, list[SqlType]] = {}
    for relation in relations.values():
        for column in relation.columns:
            by_name.setdefault(column.name, []).append(column.type)
    declared: dict[str, SqlType] = {}
    for item in statement.expressions:
        if isinstance(item, exp.Column) and not isinstance(item.this, exp.Star):
            types = by_name.get(item.name, [])
        elif isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
            for name, types in by_name.items():
                if len(set(types)) == 1:
                    declared[name] = types[0]
            continue
        else:
            continue
        if len(set(types)) == 1:
            declared[item.name] = types[0]
    return declared


SYSTEM_TABLES = (
    "tidegate_checkpoints",
    "tidegate_jobs",
    "tidegate_sinks",
    "tidegate_source_errors",
    "tidegate_state_store",
    "tidegate_source_progress",
    "tidegate_watermarks",
)


def system_tables(statement: exp.Expression, database: Database) -> dict[str, pa.Table]:
    """The system views a query names, built at query time."""
    names = {t.name for t in statement.find_all(exp.Table)}
    tables: dict[str, pa.Table] = {}
    if "tidegate_checkpoints" in names:
        records = list(database.streaming.coordinator.checkpoints)
        tables["tidegate_checkpoints"] = pa.table(
            {
                "epoch": pa.array([r.epoch for r in records], pa.int64()),
                "duration_ms": pa.array([r.duration_ms for r in records], pa.float64()),
                "sync_ms": pa.array([r.sync_ms for r in records], pa.float64()),
                "align_ms": pa.array([r.align_ms for r in records], pa.float64()),
                "bytes_uploaded": pa.array([r.bytes_uploaded for r in records], pa.int64()),
                "sst_count": pa.array([r.sst_count for r in records], pa.int64()),
            }
        )
    if "tidegate_jobs" in names:
        tables["tidegate_jobs"] = _jobs_table(database)
    if "tidegate_state_store" in names:
        tables["tidegate_state_store"] = _state_store_table(database)
    if "tidegate_source_progress" in names:
        tables["tidegate_source_progress"] = _source_progress_table(database)
    if "tidegate_watermarks" in names:
        tables["tidegate_watermarks"] = _watermarks_table(database)
    if "tidegate_sinks" in names:
        tables["tidegate_sinks"] = sinks_table(database)
    if "tidegate_source_errors" in names:
        tables["tidegate_source_errors"] = source_errors_table(database)
    return tables


def _watermarks_table(database: Database) -> pa.Table:
    """Per table or source with a WATERMARK: its column and delay, and per job generating it (the table's
    own, or each view reading the source) the current watermark and the late rows dropped since the job
    (re)started; a source no view reads has one row with NULL job."""
    running: dict[int, list[tuple[str, int | None, int]]] = {}
    for progress in database.streaming.runtime.watermark_progress():
        job = database.catalog.get_by_id(progress.job_id)
        if job is not None:
            running.setdefault(progress.relation_id, []).append((job.name, progress.value_us, progress.late_rows))
    rows = []
    for relation in database.catalog.relations():
        if relation.watermark is None:
            continue
        declared = {
            "relation_name": relation.name,
            "column_name": relation.watermark.column,
            "delay": pa.MonthDayNano([0, 0, relation.watermark.delay_us * 1000]),
        }
        for job_name, value_us, late_rows in sorted(running.get(relation.id, []), key=lambda r: r[0]):
            rows.append({**declared, "job_name": job_name, "watermark": value_us, "late_rows": late_rows})
        if relation.id not in running:
            rows.append({**declared, "job_name": None, "watermark": None, "late_rows": None})
    schema = pa.schema(
        [
            ("relation_name", pa.string()),
            ("column_name", pa.string()),
            ("delay", pa.month_day_nano_interval()),
            ("job_name", pa.string()),
            ("watermark", pa.timestamp("us")),
            ("late_rows", pa.int64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _source_progress_table(database: Database) -> pa.Table:
    """One row per running view and source it generates: the next event number and the configured end.

    Read from the session's thread while the sources run; see ``StreamingRuntime.source_progress``.
    """
    rows = []
    for progress in database.streaming.runtime.source_progress():
        view = database.catalog.get_by_id(progress.view_id)
        source = database.catalog.get_by_id(progress.source_id)
        if view is None or source is None:
            continue  # dropped while we read
        rows.append(
            {
                "view_name": view.name,
                "source_name": source.name,
                "next_offset": progress.next_offset,
                "end_offset": progress.end_offset,
            }
        )
    rows.sort(key=lambda r: (str(r["view_name"]), str(r["source_name"])))
    schema = pa.schema(
        [
            ("view_name", pa.string()),
            ("source_name", pa.string()),
            ("next_offset", pa.int64()),
            ("end_offset", pa.int64()),
        ]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _state_store_table(database: Database) -> pa.Table:
    """The state store's counters as (name, value) rows; empty when state lives in memory only."""
    stats = getattr(database.store, "stats", None)
    rows: list[tuple[str, int]] = []
    if stats is not None:
        s = stats()
        rows = [
            ("bytes_uploaded_checkpoint", s.bytes_uploaded_checkpoint),
            ("bytes_uploaded_compaction", s.bytes_uploaded_compaction),
            ("compactions", s.compactions),
            ("compaction_failures", s.compaction_failures),
            *((f"sst_count_l{level}", n) for level, n in sorted(s.sst_count_by_level.items())),
            *((f"sst_bytes_l{level}", n) for level, n in sorted(s.sst_bytes_by_level.items())),
            ("shared_buffer_bytes", s.shared_buffer_bytes),
            ("sst_metadata_bytes", s.metadata_bytes),
            ("block_cache_capacity_bytes", s.block_cache.capacity_bytes),
            ("block_cache_used_bytes", s.block_cache.used_bytes),
            ("block_cache_hits", s.block_cache.hits),
            ("block_cache_misses", s.block_cache.misses),
            ("block_cache_evictions", s.block_cache.evictions),
        ]
    return pa.table(
        {"name": pa.array([r[0] for r in rows], pa.string()), "value": pa.array([r[1] for r in rows], pa.int64())}
    )


def _jobs_table(database: Database) -> pa.Table:
    """One row per table and view: whether its streaming job runs, and the error that stopped it."""
    runtime = database.streaming.runtime
    rows = []
    for relation in database.catalog.relations():
        failure = runtime.relation_failure(relation.id)
        rows.append(
            {
                "name": relation.name,
                "kind": relation.kind.value,
                "status": "failed" if failure else "running",
                "error": failure.error if failure else None,
            }
        )
    rows.sort(key=lambda r: str(r["name"]))
    schema = pa.schema([("name", pa.string()), ("kind", pa.string()), ("status", pa.string()), ("error", pa.string())])
    return pa.Table.from_pylist(rows, schema=schema)


def select_arrow(
    database: Database,
    statement: exp.Expression,
    sql: str,
    params: Sequence[Any] | None = None,
    extra_tables: dict[str, pa.Table] | None = None,
    *,
    latest_tables: bool = False,
) -> pa.Table:
    """Run a query; ``latest_tables`` reads tables at their latest acknowledged rows (for DML)."""
    statement = bind_parameters(statement.copy(), params)
    extra_tables = {**system_tables(statement, database), **(extra_tables or {})}
    relations = referenced_relations(statement, database, set(extra_tables))
    for table in statement.find_all(exp.Table):
        # Everything lives in one schema: drop "public." / "dev.public." qualifiers.
        table.set("db", None)
        table.set("catalog", None)
    con = connect()
    try:
        with database.store.pin_committed() as epoch:
            for name, relation in relations.items():
                if extra_tables and name in extra_tables:
                    continue
                failure = database.streaming.failure_of(relation.id)
                if failure is not None:
                    raise JobFailed(
                        f'{relation.kind.value} "{relation.name}" stopped updating: its streaming job failed '
                        f"{MAX_FAILURES} times in a row: {failure.error}",
                        hint="Fix the input that makes it fail, then DROP and CREATE it again, or restart tidegate.",
                    )
                if latest_tables and relation.kind is RelationKind.TABLE:
                    rows = database.writer(relation).latest()
                else:
                    rows = database.snapshot(relation, epoch)
                con.register(name, visible(rows, relation))
        for name, table in (extra_tables or {}).items():
            con.register(name, table)
        name_select_items(statement)
        try:
            return _arrays_as_text(con.sql(to_duckdb(statement)).to_arrow_table())
        except duckdb.Error as error:
            raise _postgres_wording(translate_error(error, sql)) from error
    finally:
        con.close()
