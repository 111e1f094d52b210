"""Factories for sink target tests: specs and changes tables."""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from tidegate.common.chunk import Op
from tidegate.common.types import SqlType
from tidegate.connectors.sink_target import OP_FIELD, SinkSpec


def make_spec(
    columns: list[tuple[str, SqlType]],
    *,
    key: list[int] | None = None,
    sink_type: str = "append-only",
    options: dict[str, str] | None = None,
    format: str | None = None,
    encode: str | None = None,
    name: str = "s",
    sink_id: int = 7,
) -> SinkSpec:
    return SinkSpec(
        sink_id=sink_id,
        name=name,
        column_names=[c for c, _ in columns],
        column_types=[t for _, t in columns],
        key=key or [],
        sink_type=sink_type,
        options=options or {},
        format=format,
        encode=encode,
    )


def make_changes(columns: list[tuple[str, SqlType]], changes: list[tuple[Op, tuple[Any, ...]]]) -> pa.Table:
    """A changes table: OP_FIELD then the columns, one row per (op, row)."""
    arrays = [pa.array([int(op) for op, _ in changes], pa.int8())]
    for index, (_, sql_type) in enumerate(columns):
        arrays.append(pa.array([row[index] for _, row in changes], sql_type.arrow))
    return pa.Table.from_arrays(arrays, names=[OP_FIELD, *(c for c, _ in columns)])
