"""The embedded API: tidegate in your own Python process.

    >>> import tidegate
    >>> db = tidegate.connect("/tmp/tidegate-doc")               # doctest: +SKIP
    >>> db.execute("CREATE TABLE t (x INT)")                      # doctest: +SKIP
    >>> db.execute("INSERT INTO t VALUES ($1)", [41])             # doctest: +SKIP
    >>> db.execute("SELECT x + 1 FROM t")                         # doctest: +SKIP
    [(42,)]

``execute`` runs one or more statements and returns the rows of the last one
(an empty list for statements without rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tidegate.common.result import QueryResult
from tidegate.meta.database import Database
from tidegate.server.session import Session


class Connection:
    def __init__(self, database: Database, *, owns_database: bool = True) -> None:
        self.database = database
        self.session = Session(database)
        self._owns = owns_database

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.execute_result(sql, params).rows

    def execute_result(self, sql: str, params: Sequence[Any] | None = None) -> QueryResult:
        statements = self.session.split_statements(sql)
        if params is not None and len(statements) != 1:
            raise ValueError("parameters need exactly one statement")
        result = QueryResult("EMPTY")
        for statement in statements:
            result = self.session.execute(statement, params)
            if result.copy_in is not None:
                result.copy_in.abort()
                raise ValueError("COPY FROM STDIN needs a client; use db.copy_rows or pgwire")
        return result

    def close(self) -> None:
        self.session.close()
        if self._owns:
            self.database.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def connect(data_dir: str | Path, **options: Any) -> Connection:
    """Open (or create) the database in ``data_dir``."""
    return Connection(Database(data_dir, **options))
