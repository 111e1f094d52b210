"""Project: computes each output column from the input row.

Keeps row order and ops, so update pairs stay adjacent. The planner keeps the
stream key among the outputs, so a projection never changes a row's key.

A watermark of input column ``i`` goes on as a watermark of every output column
that is exactly ``_i`` (same type); a computed column gets none, since nothing
bounds what an expression makes of later rows.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.stream.evaluator import Evaluator, conform
from tidegate.stream.messages import Message, Watermark
from tidegate.stream.operator import Operator


class Project(Operator):
    name = "project"

    def __init__(self, input: Operator, expressions: list[str], schema: pa.Schema) -> None:
        assert len(expressions) == len(schema)
        self.input = input
        self.expressions = expressions
        self.schema = schema
        self._select_list = ", ".join(
            f"CAST({expr} AS {_duck_type(field.type)})" if _duck_type(field.type) else expr
            for expr, field in zip(expressions, schema)
        )
        self._passthrough = _passthrough_indices(expressions)
        self._evaluator = Evaluator()
        # Input column -> the output columns that copy it.
        self._copies: dict[int, list[int]] = {}
        for j, (expr, field) in enumerate(zip(expressions, schema)):
            source = _column_reference(expr)
            if source is not None and input.schema.field(source).type.equals(field.type):
                self._copies.setdefault(source, []).append(j)

    async def execute(self) -> AsyncIterator[Message]:
        async for message in self.input.execute():
            if isinstance(message, Chunk):
                if len(message) == 0:
                    continue
                yield Chunk(message.ops, self.apply(message.data))
            elif isinstance(message, Watermark):
                for column in self._copies.get(message.column, ()):
                    yield Watermark(column, message.value)
            else:
                yield message

    def apply(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        if self._passthrough is not None:
            return pa.RecordBatch.from_arrays([batch.column(i) for i in self._passthrough], schema=self.schema)
        return conform(self._evaluator.select(batch, self._select_list), self.schema)


def _passthrough_indices(expressions: list[str]) -> list[int] | None:
    """Input positions when every expression is a bare column reference (no DuckDB needed)."""
    indices = [_column_reference(expr) for expr in expressions]
    return None if None in indices else indices  # type: ignore[return-value]


def _column_reference(expression: str) -> int | None:
    """The input position ``expression`` is a bare reference to (``_3``), else None."""
    if expression.startswith("_") and expression[1:].isdigit():
        return int(expression[1:])
    return None


def _duck_type(arrow_type: pa.DataType) -> str | None:
    """The DuckDB cast that makes DuckDB produce ``arrow_type`` where it could differ."""
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL({arrow_type.precision},{arrow_type.scale})"
    return None
