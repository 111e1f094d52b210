"""Batch queries: a SELECT over tables and views at one committed epoch, run by DuckDB.

Every relation the query names is read at the same committed epoch (pinned for
the duration of the read), so a query over several views sees one consistent
cut of the streams (DESIGN §5.7). The snapshots are handed to DuckDB as Arrow
tables under the relations' names, and the query — transpiled from tidegate's
PostgreSQL dialect — runs over them.
"""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Sequence
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from tidegate.common.duck import connect, translate_error
from tidegate.common.result import Column, QueryResult
from tidegate.common.sqltext import position_of, to_duckdb
from tidegate.common.types import from_arrow
from tidegate.errors import UndefinedRelation
from tidegate.meta.catalog import Relation
from tidegate.meta.database import Database


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
    return exp.Literal.string(str(value))


def referenced_relations(statement: exp.Expression, database: Database) -> dict[str, Relation]:
    """Relations a statement reads, by the name the statement uses (CTE names excluded)."""
    ctes = {cte.alias for cte in statement.find_all(exp.CTE)}
    found: dict[str, Relation] = {}
    for table in statement.find_all(exp.Table):
        name = table.name
        if not name or name in ctes or isinstance(table.this, exp.Func):
            continue
        relation = database.catalog.get(name)
        if relation is None:
            raise UndefinedRelation(f'relation "{name}" does not exist', position=position_of(table))
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
    columns = [Column(f.name, from_arrow(f.type)) for f in table.schema]
    rows = list(zip(*(c.to_pylist() for c in table.columns))) if table.num_rows else []
    return QueryResult(f"SELECT {len(rows)}", columns, rows)


def select_arrow(
    database: Database,
    statement: exp.Expression,
    sql: str,
    params: Sequence[Any] | None = None,
    extra_tables: dict[str, pa.Table] | None = None,
) -> pa.Table:
    statement = bind_parameters(statement.copy(), params)
    relations = referenced_relations(statement, database)
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
                con.register(name, visible(database.snapshot(relation, epoch), relation))
        for name, table in (extra_tables or {}).items():
            con.register(name, table)
        try:
            return con.sql(to_duckdb(statement)).to_arrow_table()
        except duckdb.Error as error:
            raise translate_error(error, sql) from error
    finally:
        con.close()
