"""A fake ``Session`` for the pgwire tests: DuckDB runs the SELECTs, the catalog is real.

The fake honours the session contract the server codes against
(``tidegate.server.pgwire.SessionLike``) and raises real ``tidegate.errors``
classes, so the tests exercise the real SQLSTATE mapping. Extra statements
for tests:

* ``FAIL <ErrorClass> [<position>]`` raises that error (message "fail <class>").
* ``NOTICE <text>`` returns command tag NOTICE with that notice.
* ``SELECT block()`` blocks until the test releases ``factory.release`` or the
  statement is cancelled (then it raises InternalError).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator

import duckdb
import pyarrow as pa
import pytest

from tidegate import errors
from tidegate.common.result import Column, QueryResult
from tidegate.common.types import BIGINT, INTEGER, NUMERIC, TIMESTAMP, VARCHAR, SqlType, from_arrow
from tidegate.meta.catalog import Catalog, ColumnDef, Relation, RelationKind
from tidegate.server.pgwire import ServerHandle, run_server_in_thread

ORDERS_ID = 1001
MV_ID = 1002


def make_catalog() -> Catalog:
    orders = Relation(
        id=ORDERS_ID,
        name="orders",
        kind=RelationKind.TABLE,
        columns=[
            ColumnDef("order_id", INTEGER, nullable=False),
            ColumnDef("product_category", VARCHAR),
            ColumnDef("amount", SqlType("numeric", 10, 2)),
            ColumnDef("order_time", TIMESTAMP),
        ],
        pk=[0],
        user_pk=True,
        definition="CREATE TABLE orders (order_id INT PRIMARY KEY, product_category VARCHAR, "
        "amount DECIMAL(10,2), order_time TIMESTAMP)",
    )
    view = Relation(
        id=MV_ID,
        name="category_totals",
        kind=RelationKind.MATERIALIZED_VIEW,
        columns=[
            ColumnDef("product_category", VARCHAR),
            ColumnDef("total", NUMERIC),
            ColumnDef("_row_id", BIGINT, nullable=False, hidden=True),
        ],
        pk=[2],
        definition="CREATE MATERIALIZED VIEW category_totals AS SELECT product_category, sum(amount) AS total "
        "FROM orders GROUP BY product_category",
        dependencies=[ORDERS_ID],
    )
    return Catalog([orders, view])


_DEFAULT_SETTINGS = {
    "server_version": "15.0",
    "client_encoding": "UTF8",
    "datestyle": "ISO, MDY",
    "timezone": "UTC",
    "standard_conforming_strings": "on",
    "integer_datetimes": "on",
    "application_name": "",
}
_CONTROL_TAGS = {"BEGIN": "BEGIN", "START": "BEGIN", "COMMIT": "COMMIT", "END": "COMMIT", "ROLLBACK": "ROLLBACK",
                 "ABORT": "ROLLBACK"}  # fmt: skip
_COPY = re.compile(r"COPY\s+(\w+)\s*(?:\(([^)]*)\))?\s+FROM\s+STDIN(.*)$", re.IGNORECASE | re.DOTALL)


class FakeCopyIn:
    def __init__(self, session: FakeSession, table: str, columns: list[Column], options: str) -> None:
        self.session = session
        self.table = table
        self.columns = columns
        lowered = options.lower()
        self.format = "csv" if "csv" in lowered else "text"
        self.delimiter = "," if self.format == "csv" else "\t"
        self.null = "" if self.format == "csv" else "\\N"
        self.header = "header" in lowered
        self.quote = '"'
        self.escape = '"'
        self.batches: list[pa.Table] = []
        self.aborted = False
        self.finished = False

    def write(self, rows: pa.Table) -> None:
        assert rows.schema.names == [c.name for c in self.columns]
        self.batches.append(rows)

    def finish(self) -> QueryResult:
        total = 0
        for batch in self.batches:
            self.session.db.register("copy_batch", batch)
            names = ", ".join(c.name for c in self.columns)
            self.session.db.execute(f"INSERT INTO {self.table} ({names}) SELECT {names} FROM copy_batch")
            self.session.db.unregister("copy_batch")
            total += batch.num_rows
        self.finished = True
        return QueryResult(command_tag=f"COPY {total}")

    def abort(self) -> None:
        self.aborted = True


class FakeSession:
    def __init__(self, factory: FakeSessionFactory, user: str, database: str) -> None:
        self.factory = factory
        self.user = user
        self.database = database
        self.catalog = factory.catalog
        self.db = factory.database.cursor()
        self.settings = dict(_DEFAULT_SETTINGS)
        self.executed: list[tuple[str, list[object] | None]] = []
        self.closed = False
        self._cancel = threading.Event()
        self.copies: list[FakeCopyIn] = []

    def split_statements(self, sql: str) -> list[str]:
        statements, start, quoted = [], 0, False
        for index, char in enumerate(sql):
            if char == "'":
                quoted = not quoted
            elif char == ";" and not quoted:
                statements.append(sql[start:index])
                start = index + 1
        statements.append(sql[start:])
        return [s.strip() for s in statements if s.strip()]

    def execute(self, sql: str, params: list[object] | None = None) -> QueryResult:
        self.executed.append((sql, params))
        words = sql.split()
        first = words[0].upper()
        if first in _CONTROL_TAGS:
            return QueryResult(command_tag=_CONTROL_TAGS[first])
        if first == "FAIL":
            cls = getattr(errors, words[1])
            position = int(words[2]) if len(words) > 2 else None
            raise cls(f"fail {words[1]}", position=position, hint="a hint" if position else None)
        if first == "NOTICE":
            return QueryResult(command_tag="NOTICE", notices=[sql.split(None, 1)[1]])
        if first == "SET":
            match = re.match(r"SET\s+(\w+)\s*(?:=|TO)\s*'?([^']*)'?", sql, re.IGNORECASE)
            assert match is not None
            self.set_setting(match.group(1), match.group(2))
            return QueryResult(command_tag="SET")
        if first == "SHOW":
            name = words[1]
            return QueryResult(command_tag="SHOW", columns=[Column(name, VARCHAR)], rows=[(self.get_setting(name),)])
        if first == "COPY":
            return self._copy(sql)
        if sql.lower().startswith("select block()"):
            return self._block()
        return self._duckdb(sql, params)

    def _copy(self, sql: str) -> QueryResult:
        match = _COPY.match(sql)
        if match is None:
            raise errors.SqlSyntaxError("bad COPY", position=1)
        relation = self.catalog.get(match.group(1))
        if relation is None:
            raise errors.UndefinedRelation(f'relation "{match.group(1)}" does not exist')
        by_name = {c.name: c for c in relation.visible_columns}
        names = [n.strip() for n in match.group(2).split(",")] if match.group(2) else list(by_name)
        copy_in = FakeCopyIn(self, relation.name, [Column(n, by_name[n].type) for n in names], match.group(3))
        self.copies.append(copy_in)
        return QueryResult(command_tag="COPY", copy_in=copy_in)

    def _block(self) -> QueryResult:
        self.factory.blocked.set()
        while not self.factory.release.wait(0.01):
            if self._cancel.is_set():
                raise errors.InternalError("statement cancelled")
        return QueryResult(command_tag="SELECT 1", columns=[Column("block", INTEGER)], rows=[(1,)])

    def _duckdb(self, sql: str, params: list[object] | None) -> QueryResult:
        try:
            if not sql.lstrip().lower().startswith(("select", "with", "values")):
                self.db.execute(sql, params or [])
                return QueryResult(command_tag=sql.split()[0].upper())
            table = self.db.sql(sql, params=params or None).to_arrow_table()
        except duckdb.CatalogException as e:
            name = re.search(r"with name (\w+)", str(e))
            position = sql.find(name.group(1)) + 1 if name else None
            raise errors.UndefinedRelation(
                f'relation "{name.group(1) if name else "?"}" does not exist', position=position
            ) from e
        except duckdb.BinderException as e:
            name = re.search(r'column with name "?(\w+)"? not found', str(e)) or re.search(r'"(\w+)"', str(e))
            position = sql.find(name.group(1)) + 1 if name else None
            raise errors.UndefinedColumn(
                f'column "{name.group(1) if name else "?"}" does not exist', position=position
            ) from e
        except duckdb.ParserException as e:
            raise errors.SqlSyntaxError(f"syntax error: {e}", position=1) from e
        except duckdb.ConversionException as e:
            raise errors.InvalidTextRepresentation(str(e)) from e
        columns = [Column(f.name, from_arrow(f.type)) for f in table.schema]
        rows = list(zip(*[c.to_pylist() for c in table.columns])) if table.num_columns else []
        return QueryResult(command_tag=f"SELECT {len(rows)}", columns=columns, rows=rows)

    def describe(self, sql: str, param_oids: list[int]) -> tuple[list[int], list[Column] | None]:
        count = max((int(n) for n in re.findall(r"\$(\d+)", sql)), default=0)
        oids = list(param_oids) + [0] * (count - len(param_oids))
        oids = [oid or 25 for oid in oids]
        if not sql.lstrip().upper().startswith("SELECT") or sql.lower().startswith("select block()"):
            return oids, None
        table = self.db.sql(f"SELECT * FROM ({sql}) AS d LIMIT 0", params=[None] * count or None).to_arrow_table()
        return oids, [Column(f.name, from_arrow(f.type)) for f in table.schema]

    def get_setting(self, name: str) -> str:
        key = name.lower()
        if key not in self.settings:
            raise errors.InvalidParameterValue(f'unrecognized configuration parameter "{name}"')
        return self.settings[key]

    def set_setting(self, name: str, value: str) -> None:
        key = name.lower()
        if key not in self.settings:
            raise errors.InvalidParameterValue(f'unrecognized configuration parameter "{name}"')
        self.settings[key] = value

    def cancel(self) -> None:
        self._cancel.set()
        self.factory.cancelled.set()

    def close(self) -> None:
        self.closed = True
        self.db.close()
        self.factory.closed.append(self)


class FakeSessionFactory:
    def __init__(self) -> None:
        self.catalog = make_catalog()
        self.database = duckdb.connect(":memory:")
        self.database.execute(
            "CREATE TABLE orders (order_id INTEGER PRIMARY KEY, product_category VARCHAR, "
            "amount DECIMAL(10,2), order_time TIMESTAMP)"
        )
        self.database.execute(
            "INSERT INTO orders VALUES (1, 'books', 12.50, '2024-01-01 10:00:00'), "
            "(2, 'games', 30.00, '2024-01-02 11:30:00'), (3, 'books', 7.25, '2024-01-03 09:15:00')"
        )
        self.database.execute("CREATE TABLE category_totals (product_category VARCHAR, total DECIMAL(38,10))")
        self.sessions: list[FakeSession] = []
        self.closed: list[FakeSession] = []
        self.blocked = threading.Event()
        self.release = threading.Event()
        self.cancelled = threading.Event()

    def __call__(self, user: str, database: str) -> FakeSession:
        if database == "nosuchdb":
            raise errors.UndefinedRelation(f'database "{database}" does not exist')
        session = FakeSession(self, user, database)
        self.sessions.append(session)
        return session


@pytest.fixture
def factory() -> FakeSessionFactory:
    return FakeSessionFactory()


@pytest.fixture
def server(factory: FakeSessionFactory) -> Iterator[ServerHandle]:
    handle = run_server_in_thread(factory)
    try:
        yield handle
    finally:
        factory.release.set()
        handle.stop()


@pytest.fixture
def dsn(server: ServerHandle) -> str:
    return f"host=127.0.0.1 port={server.port} user=root dbname=dev sslmode=disable"
