"""Vectorized evaluation of SQL expressions over chunks, by DuckDB.

The planner compiles every scalar expression of a stream plan to DuckDB SQL over
the input's positional column names ``_0, _1, …``. Evaluating it on a chunk is
one DuckDB query over the chunk's Arrow batch: the same semantics (NULLs,
three-valued logic, casts) as the batch engine that answers SELECTs, and no
per-row Python.
"""

from __future__ import annotations

import pyarrow as pa

from tidegate.common.duck import connect

INPUT_NAME = "__input"


def positional(batch: pa.RecordBatch) -> pa.RecordBatch:
    """The batch with columns renamed ``_0, _1, …`` (what compiled expressions refer to)."""
    return pa.RecordBatch.from_arrays(batch.columns, names=[f"_{i}" for i in range(batch.num_columns)])


class Evaluator:
    """Runs compiled expressions on batches. One per operator: DuckDB connections are not shared."""

    def __init__(self) -> None:
        self._con = connect(streaming=True)

    def select(self, batch: pa.RecordBatch, select_list: str, where: str | None = None) -> pa.Table:
        self._con.register(INPUT_NAME, positional(batch))
        try:
            sql = f"SELECT {select_list} FROM {INPUT_NAME}"
            if where:
                sql += f" WHERE {where}"
            return self._con.sql(sql).to_arrow_table()
        finally:
            self._con.unregister(INPUT_NAME)

    def query(self, batch: pa.RecordBatch, sql: str) -> pa.Table:
        """Run ``sql``, which reads the batch as ``__input``."""
        self._con.register(INPUT_NAME, positional(batch))
        try:
            return self._con.sql(sql).to_arrow_table()
        finally:
            self._con.unregister(INPUT_NAME)

    def close(self) -> None:
        self._con.close()


def conform(table: pa.Table, schema: pa.Schema) -> pa.RecordBatch:
    """One batch with exactly ``schema`` (names and types) from a DuckDB result."""
    columns = [table.column(i).combine_chunks().cast(field.type) for i, field in enumerate(schema)]
    if table.num_rows == 0:
        columns = [pa.array([], type=field.type) for field in schema]
    return pa.RecordBatch.from_arrays(columns, schema=schema)
