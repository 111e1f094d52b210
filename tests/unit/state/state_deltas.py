"""Helpers of the state tests: deltas as the state store takes them (``__op`` then the table's columns),
the change that moves a key to a new value, and an object store that counts what it is asked."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tidegate.common.chunk import Op
from tidegate.state.object_store import MemoryObjectStore
from tidegate.state.store import OP_COLUMN

Row = tuple[Any, ...]


def delta(schema: pa.Schema, ops: list[Op], rows: list[Row]) -> pa.Table:
    columns: list[Any] = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array([int(o) for o in ops], pa.int8())]
    arrays += [pa.array(list(c), f.type) for c, f in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=pa.schema([pa.field(OP_COLUMN, pa.int8()), *schema]))


def change(live: dict[Any, Any], key: Any, value: Any | None, ops: list[Op], rows: list[Row]) -> None:
    """Append the change taking ``key`` to ``value`` (None: deleted) as rows ``(key, value)``; apply it to ``live``."""
    if value is None:
        ops.append(Op.DELETE)
        rows.append((key, live.pop(key)))
    elif key in live:
        ops += [Op.UPDATE_DELETE, Op.UPDATE_INSERT]
        rows += [(key, live[key]), (key, value)]
        live[key] = value
    else:
        ops.append(Op.INSERT)
        rows.append((key, value))
        live[key] = value


class CountingObjectStore(MemoryObjectStore):
    """A memory object store that counts reads and remembers every path written or deleted."""

    def __init__(self) -> None:
        super().__init__()
        self.gets = 0
        self.puts: list[str] = []
        self.deletes: list[str] = []

    def get(self, path: str) -> bytes:
        self.gets += 1
        return super().get(path)

    def get_range(self, path: str, start: int, length: int) -> bytes:
        self.gets += 1
        return super().get_range(path, start, length)

    def put(self, path: str, data: bytes) -> None:
        self.puts.append(path)
        super().put(path, data)

    def delete(self, path: str) -> None:
        self.deletes.append(path)
        super().delete(path)
