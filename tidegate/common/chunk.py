"""Chunks: the unit of data on every stream.

A chunk is an Arrow RecordBatch of rows plus an ``ops`` array (int8), one op per
row. Operators work on whole chunks with pyarrow/numpy; per-row Python is kept
to the places that must touch state row by row.

Invariants (DESIGN §11): per stream key, inserts and deletes alternate; a delete
carries the exact row it removes; an update is an adjacent UPDATE_DELETE,
UPDATE_INSERT pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
import pyarrow as pa


class Op(IntEnum):
    INSERT = 0
    DELETE = 1
    UPDATE_DELETE = 2
    UPDATE_INSERT = 3


OP_TYPE = pa.int8()


@dataclass(frozen=True)
class Chunk:
    ops: pa.Array  # int8, values of Op
    data: pa.RecordBatch

    def __post_init__(self) -> None:
        assert len(self.ops) == self.data.num_rows, (len(self.ops), self.data.num_rows)

    def __len__(self) -> int:
        return self.data.num_rows

    @property
    def schema(self) -> pa.Schema:
        return self.data.schema

    @staticmethod
    def inserts(data: pa.RecordBatch | pa.Table) -> Chunk:
        batch = _as_batch(data)
        return Chunk(pa.array(np.zeros(batch.num_rows, dtype=np.int8), OP_TYPE), batch)

    @staticmethod
    def deletes(data: pa.RecordBatch | pa.Table) -> Chunk:
        batch = _as_batch(data)
        return Chunk(pa.array(np.full(batch.num_rows, Op.DELETE, dtype=np.int8), OP_TYPE), batch)

    @staticmethod
    def of(ops: list[Op] | np.ndarray | pa.Array, data: pa.RecordBatch | pa.Table) -> Chunk:
        batch = _as_batch(data)
        if isinstance(ops, pa.Array):
            return Chunk(ops.cast(OP_TYPE), batch)
        return Chunk(pa.array(np.asarray(ops, dtype=np.int8), OP_TYPE), batch)

    def signs(self) -> np.ndarray:
        """+1 for inserting ops, -1 for deleting ops, as int64."""
        ops = self.ops.to_numpy(zero_copy_only=False)
        return np.where((ops == Op.INSERT) | (ops == Op.UPDATE_INSERT), 1, -1).astype(np.int64)

    def is_insert_only(self) -> bool:
        ops = self.ops.to_numpy(zero_copy_only=False)
        return bool(np.all(ops == Op.INSERT))

    def with_ops_column(self, name: str = "__op") -> pa.RecordBatch:
        """The rows with the ops prepended as a column (for DuckDB evaluation)."""
        return pa.RecordBatch.from_arrays([self.ops, *self.data.columns], names=[name, *self.data.schema.names])

    def rows(self) -> list[tuple[Op, tuple[object, ...]]]:
        """Rows as Python tuples: for tests and debugging only."""
        ops = self.ops.to_pylist()
        cols = [c.to_pylist() for c in self.data.columns]
        return [(Op(op), tuple(col[i] for col in cols)) for i, op in enumerate(ops)]


def _as_batch(data: pa.RecordBatch | pa.Table) -> pa.RecordBatch:
    if isinstance(data, pa.RecordBatch):
        return data
    combined = data.combine_chunks()
    batches = combined.to_batches()
    if not batches:
        return pa.RecordBatch.from_pylist([], schema=data.schema)
    assert len(batches) == 1
    return batches[0]


def split_ops_column(batch: pa.RecordBatch, name: str = "__op") -> Chunk:
    """Inverse of ``Chunk.with_ops_column``."""
    index = batch.schema.get_field_index(name)
    ops = batch.column(index)
    rest = (
        batch.drop_columns([name])
        if hasattr(batch, "drop_columns")
        else batch.select([i for i in range(batch.num_columns) if i != index])
    )
    return Chunk(ops.cast(OP_TYPE), rest)
