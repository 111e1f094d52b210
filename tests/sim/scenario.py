"""What one seed runs: random tables and views, random row changes, and the ground truth.

Tables have 2-3 nullable columns (INT, VARCHAR over a small alphabet, DECIMAL(10,2)),
half of them an ``id INT PRIMARY KEY`` (the others get tidegate's hidden row id).
Views come from a small grammar: projections with arithmetic, CASE, COALESCE and
string functions; WHERE with comparisons, IS NULL, IN, AND/OR; GROUP BY 0-2 keys
with COUNT/SUM/MIN/MAX and sometimes HAVING; a view may read an earlier view.

Writes are statements of exact row changes (inserts, updates as U-/U+ pairs, deletes
carrying the whole row, key changes as delete + insert), handed to the table's real
``TableWriter``; the truth takes them once the writer returns (acknowledged).

The oracle: every table equals the acknowledged rows, and every view equals DuckDB
running the view's query over those rows. Rows compare as multisets of Python values;
numbers compare by value (``Decimal('1.50') == Decimal('1.5')``, ``Decimal(3) == 3``)
and none is a float, so the comparison is exact.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.connectors.table_writer import ROW_ID_COLUMN, update_chunk
from tidegate.meta.catalog import Relation
from tidegate.meta.runtime import storage_schema

ALPHABET = ["a", "b", "c", "ab", "ba", ""]
NULL_CHANCE = 0.15
SQL_TYPES = {"int": "INT", "str": "VARCHAR", "dec": "DECIMAL(10,2)"}

Row = dict[str, Any]


@dataclass
class Column:
    name: str
    kind: str  # "int", "str" or "dec"


@dataclass
class Table:
    name: str
    columns: list[Column]  # visible columns in declared order
    keyed: bool
    relation: Relation | None = None
    rows: dict[int, Row] = field(default_factory=dict)  # key (id or row id) -> full storage row
    next_id: int = 1

    @property
    def key(self) -> str:
        return "id" if self.keyed else ROW_ID_COLUMN

    def create_sql(self) -> str:
        body = ", ".join(
            f"{c.name} {SQL_TYPES[c.kind]}{' PRIMARY KEY' if c.name == 'id' else ''}" for c in self.columns
        )
        return f"CREATE TABLE {self.name} ({body})"


@dataclass
class View:
    name: str
    columns: list[Column]
    query: str
    relation: Relation | None = None  # once its CREATE returned (or a restart found it)
    relation_id: int = 0  # drawn for its CREATE

    def create_sql(self) -> str:
        return f"CREATE MATERIALIZED VIEW {self.name} AS {self.query}"


@dataclass
class Write:
    """One statement: the chunks for the writer, and the table's rows once it is acknowledged."""

    table: Table
    kind: str
    chunks: list[Chunk]
    rows_after: dict[int, Row]


class Scenario:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.tables: list[Table] = []
        self.views: list[View] = []

    # ---- schema --------------------------------------------------------------------------
    def make_tables(self) -> list[Table]:
        for index in range(self.rng.choice([1, 1, 2])):
            keyed = self.rng.random() < 0.5
            columns = [Column("id", "int")] if keyed else []
            kinds = [self.rng.choice(["int", "int", "str", "dec"]) for _ in range(self.rng.randint(2, 3))]
            if "int" not in kinds and "dec" not in kinds:
                kinds[0] = "int"
            columns += [Column(f"c{i}", kind) for i, kind in enumerate(kinds)]
            self.tables.append(Table(f"t{index}", columns, keyed))
        return self.tables

    def make_view(self) -> View:
        sources: list[tuple[str, list[Column]]] = [(t.name, t.columns) for t in self.tables]
        sources += [(v.name, v.columns) for v in self.views]
        name, columns = self.rng.choice(sources)
        if self.rng.random() < 0.5:
            query, out = self._aggregation(name, columns)
        else:
            query, out = self._projection(name, columns)
        view = View(f"v{len(self.views)}", out, query)
        self.views.append(view)
        return view

    def _projection(self, source: str, columns: list[Column]) -> tuple[str, list[Column]]:
        items = [self._expression(columns) for _ in range(self.rng.randint(1, 3))]
        out = [Column(f"p{i}", kind) for i, (_, kind) in enumerate(items)]
        select = ", ".join(f"{sql} AS {c.name}" for (sql, _), c in zip(items, out))
        query = f"SELECT {select} FROM {source}"
        if self.rng.random() < 0.6:
            query += f" WHERE {self._condition(columns)}"
        return query, out

    def _aggregation(self, source: str, columns: list[Column]) -> tuple[str, list[Column]]:
        r = self.rng
        keys: list[tuple[str, str]] = []
        for _ in range(r.choice([0, 1, 1, 2])):
            column = r.choice(columns)
            if column.kind == "int" and r.random() < 0.4:
                keys.append((f"{column.name} % 3", "int"))
            elif (column.name, column.kind) not in keys:
                keys.append((column.name, column.kind))
        calls = [self._aggregate(columns) for _ in range(r.randint(1, 3))]
        out = [Column(f"k{i}", kind) for i, (_, kind) in enumerate(keys)]
        out += [Column(f"a{i}", kind) for i, (_, kind) in enumerate(calls)]
        select = ", ".join(f"{sql} AS {c.name}" for (sql, _), c in zip(keys + calls, out))
        query = f"SELECT {select} FROM {source}"
        if r.random() < 0.3:
            query += f" WHERE {self._condition(columns)}"
        if keys:
            query += " GROUP BY " + ", ".join(sql for sql, _ in keys)
            if r.random() < 0.25:
                query += f" HAVING COUNT(*) {r.choice(['>', '>=', '<'])} {r.randint(1, 3)}"
        return query, out

    def _aggregate(self, columns: list[Column]) -> tuple[str, str]:
        r = self.rng
        numbers = [c for c in columns if c.kind != "str"]
        form = r.randrange(5)
        if form == 0 or (form == 2 and not numbers):
            return "COUNT(*)", "int"
        if form == 1:
            return f"COUNT({r.choice(columns).name})", "int"
        if form == 2:
            column = r.choice(numbers)
            return f"SUM({column.name})", column.kind
        column = r.choice(columns)
        return f"{'MIN' if form == 3 else 'MAX'}({column.name})", column.kind

    def _expression(self, columns: list[Column]) -> tuple[str, str]:
        r = self.rng
        column = r.choice(columns)
        name = column.name
        if column.kind == "str":
            return r.choice([name, f"COALESCE({name}, 'z')", f"{name} || 'x'", f"UPPER({name})"]), "str"
        n = r.randint(-3, 3)
        forms = [name, f"{name} + {n}", f"{name} * {n}", f"-{name}", f"COALESCE({name}, {n})"]
        forms.append(f"CASE WHEN {name} > {n} THEN {name} ELSE {n} END")
        return r.choice(forms), column.kind

    def _condition(self, columns: list[Column], depth: int = 0) -> str:
        r = self.rng
        if depth == 0 and r.random() < 0.25:
            left, right = self._condition(columns, 1), self._condition(columns, 1)
            return f"({left} {r.choice(['AND', 'OR'])} {right})"
        column = r.choice(columns)
        if r.random() < 0.2:
            return f"{column.name} IS {r.choice(['', 'NOT '])}NULL"
        if column.kind == "str":
            if r.random() < 0.5:
                return f"{column.name} IN ('{r.choice(ALPHABET)}', '{r.choice(ALPHABET)}')"
            return f"{column.name} {r.choice(['=', '<>', '<'])} '{r.choice(ALPHABET)}'"
        return f"{column.name} {r.choice(['=', '<>', '<', '<=', '>', '>='])} {r.randint(-10, 10)}"

    # ---- writes --------------------------------------------------------------------------
    def make_write(self, table: Table, allocate_row_ids: Any) -> Write:
        """A random statement on ``table``; ``allocate_row_ids(n)`` is its writer's row-id allocator."""
        r = self.rng
        rows = dict(table.rows)
        form = r.random()
        if form < 0.5 or len(rows) < 2:
            return self._insert(table, rows, allocate_row_ids)
        victims = r.sample(sorted(rows), min(len(rows), r.randint(1, 4)))
        old = [rows[k] for k in victims]
        if form < 0.8:
            new = [self._changed(table, row) for row in old]
            for row in new:
                rows[row[table.key]] = row
            chunks = [update_chunk(self._arrow(table, old), self._arrow(table, new))]
            kind = "update"
            if table.keyed and r.random() < 0.3:
                chunks, kind = self._rekey(table, rows, old, new), "update-key"
        else:
            for key in victims:
                del rows[key]
            chunks, kind = [Chunk.deletes(self._arrow(table, old))], "delete"
        return Write(table, kind, chunks, rows)

    def _insert(self, table: Table, rows: dict[int, Row], allocate_row_ids: Any) -> Write:
        count = self.rng.randint(1, 6)
        if table.keyed:
            keys = list(range(table.next_id, table.next_id + count))
            table.next_id += count
        else:
            keys = [int(k) for k in allocate_row_ids(count).to_pylist()]
        new = [self._row(table, key) for key in keys]
        for row in new:
            rows[row[table.key]] = row
        return Write(table, "insert", [Chunk.inserts(self._arrow(table, new))], rows)

    def _rekey(self, table: Table, rows: dict[int, Row], old: list[Row], new: list[Row]) -> list[Chunk]:
        """An UPDATE of the primary key: the old rows go, the same values come back under fresh keys."""
        moved = []
        for row in new:
            del rows[row["id"]]
            row = {**row, "id": table.next_id}
            table.next_id += 1
            rows[row["id"]] = row
            moved.append(row)
        return [Chunk.deletes(self._arrow(table, old)), Chunk.inserts(self._arrow(table, moved))]

    def _row(self, table: Table, key: int) -> Row:
        row = {c.name: self._value(c.kind) for c in table.columns if c.name != "id"}
        row[table.key] = key
        return row

    def _changed(self, table: Table, row: Row) -> Row:
        column = self.rng.choice([c for c in table.columns if c.name != "id"])
        return {**row, column.name: self._value(column.kind)}

    def _value(self, kind: str) -> Any:
        r = self.rng
        if r.random() < NULL_CHANCE:
            return None
        if kind == "int":
            return r.randint(-20, 20)
        if kind == "dec":
            return Decimal(r.randint(-2000, 2000)) / 100
        return r.choice(ALPHABET)

    @staticmethod
    def _arrow(table: Table, rows: list[Row]) -> pa.Table:
        schema = storage_schema_of(table)
        return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def storage_schema_of(table: Table) -> pa.Schema:
    assert table.relation is not None, table.name
    return storage_schema(table.relation)


# ---- the oracle ------------------------------------------------------------------------------

# One database for every check (opening one costs tens of milliseconds); each check has its own cursor.
# Integer division as PostgreSQL does it, like tidegate's own DuckDB connections.
_ORACLE = duckdb.connect(config={"integer_division": True})


def table_rows(table: Table) -> Counter[tuple[Any, ...]]:
    """The acknowledged rows, every stored column (the hidden row id too), as a multiset."""
    names = storage_schema_of(table).names
    return Counter(tuple(row.get(n) for n in names) for row in table.rows.values())


def arrow_rows(rows: pa.Table, names: list[str] | None = None) -> Counter[tuple[Any, ...]]:
    selected = rows.select(names) if names is not None else rows
    columns = [c.to_pylist() for c in selected.columns]
    return Counter(zip(*columns)) if columns else Counter()


def expected_views(tables: list[Table], views: list[View]) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every view's rows as DuckDB computes its query over the acknowledged table rows."""
    con = _ORACLE.cursor()
    try:
        for table in tables:
            schema = storage_schema_of(table)
            visible = pa.schema([schema.field(c.name) for c in table.columns])
            data = pa.Table.from_pylist(list(table.rows.values()), schema=visible)
            con.register(f"{table.name}_rows", data)
            con.execute(f"CREATE TEMP VIEW {table.name} AS SELECT * FROM {table.name}_rows")
        for view in views:
            con.execute(f"CREATE TEMP VIEW {view.name} AS {view.query}")
        return {view.name: Counter(con.execute(f"SELECT * FROM {view.name}").fetchall()) for view in views}
    finally:
        con.close()


def describe_difference(expected: Counter[tuple[Any, ...]], actual: Counter[tuple[Any, ...]]) -> str:
    missing = list((expected - actual).elements())[:8]
    extra = list((actual - expected).elements())[:8]
    return (
        f"{sum(expected.values())} rows expected, {sum(actual.values())} found; "
        f"missing {missing}; unexpected (or doubled) {extra}"
    )
