"""The write side of a user table: DML changes go to its durable log.

A DML statement is turned into exact row changes here (an UPDATE or DELETE
needs the rows it touches, a primary-key INSERT must see existing keys), then
appended to the table's log, and acknowledged once the log has it on disk
(DESIGN §7). The writer keeps the table's *latest* rows — every acknowledged
write, committed by a checkpoint or not — so statements of any session see the
writes acknowledged before them. Readers of committed data (SELECT, views) never
look here: they read the state store at a committed epoch.

One statement at a time per table: ``lock`` is held from reading the latest
rows to appending the change, so concurrent DML serializes per table.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pyarrow as pa

from tidegate.common.chunk import Chunk, Op
from tidegate.state.store import OP_COLUMN, merge_deltas

ROW_ID_COLUMN = "_row_id"


class TableWriter:
    def __init__(
        self, schema: pa.Schema, pk: list[int], log: Any, base: pa.Table | None = None, start_offset: int = 0
    ) -> None:
        """``base``: the table's rows at the last checkpoint, which consumed the log up to ``start_offset``."""
        self.schema = schema
        self.pk = pk
        self.pk_names = [schema.names[i] for i in pk]
        self.log = log
        self.lock = threading.RLock()
        self.has_row_id = ROW_ID_COLUMN in schema.names and self.pk_names == [ROW_ID_COLUMN]
        self._parts: list[pa.Table] = []
        self._next_row_id = 0
        self._replay(base if base is not None else schema.empty_table(), start_offset)

    def _replay(self, base: pa.Table, offset: int) -> None:
        """Rebuild the latest rows: the checkpointed rows plus the log after them (start-up)."""
        deltas: list[pa.Table] = []
        while True:
            records = self.log.read(offset, 256)
            if not records:
                break
            for record_offset, chunk in records:
                deltas.append(_delta(chunk, self.schema))
                offset = record_offset + 1
        base = base.cast(self.schema)
        self._parts = [merge_deltas(base, deltas, self.pk_names)] if (deltas or base.num_rows) else []
        if self.has_row_id:
            ids = [base.column(ROW_ID_COLUMN)] + [d.column(ROW_ID_COLUMN) for d in deltas]
            largest = [pa.compute.max(i).as_py() for i in ids if len(i)]
            if largest:
                self._next_row_id = int(max(largest)) + 1

    def latest(self) -> pa.Table:
        """Every acknowledged row, with hidden columns."""
        with self.lock:
            if not self._parts:
                return self.schema.empty_table()
            if len(self._parts) > 1:
                self._parts = [pa.concat_tables(self._parts)]
            return self._parts[0]

    def allocate_row_ids(self, count: int) -> pa.Array:
        with self.lock:
            start = self._next_row_id
            self._next_row_id += count
        return pa.array(np.arange(start, start + count, dtype=np.int64))

    def apply(self, chunks: list[Chunk]) -> int:
        """Append the changes durably, then make them the latest rows. Returns the log offset."""
        chunks = [c for c in chunks if len(c)]
        if not chunks:
            return self.log.end_offset()
        with self.lock:
            offset = int(self.log.append_many(chunks))
            deltas = [_delta(c, self.schema) for c in chunks]
            if all(c.is_insert_only() for c in chunks):
                self._parts += [d.drop_columns([OP_COLUMN]) for d in deltas]
            else:
                self._parts = [merge_deltas(self.latest(), deltas, self.pk_names)]
            return offset


def _delta(chunk: Chunk, schema: pa.Schema) -> pa.Table:
    data = chunk.data
    columns = [data.column(i).cast(field.type) for i, field in enumerate(schema)]
    return pa.Table.from_arrays([chunk.ops, *columns], names=[OP_COLUMN, *schema.names])


def update_chunk(old: pa.Table, new: pa.Table) -> Chunk:
    """Interleave old and new rows as update pairs: U-, U+, U-, U+, …"""
    count = old.num_rows
    assert new.num_rows == count
    order = np.empty(2 * count, dtype=np.int64)
    order[0::2] = np.arange(count)
    order[1::2] = np.arange(count) + count
    stacked = pa.concat_tables([old, new.cast(old.schema)]).take(pa.array(order))
    ops = np.empty(2 * count, dtype=np.int8)
    ops[0::2] = Op.UPDATE_DELETE
    ops[1::2] = Op.UPDATE_INSERT
    return Chunk.of(ops, stacked)
