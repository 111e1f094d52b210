"""Deltas as the state store takes them (``__op`` then the table's columns), for the state tests."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tidegate.common.chunk import Op
from tidegate.state.store import OP_COLUMN

Row = tuple[Any, ...]


def delta(schema: pa.Schema, ops: list[Op], rows: list[Row]) -> pa.Table:
    columns: list[Any] = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array([int(o) for o in ops], pa.int8())]
    arrays += [pa.array(list(c), f.type) for c, f in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=pa.schema([pa.field(OP_COLUMN, pa.int8()), *schema]))
