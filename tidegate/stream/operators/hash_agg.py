"""HashAgg: GROUP BY with COUNT/SUM/AVG/MIN/MAX, under inserts, updates and deletes.

Each chunk is first reduced by DuckDB to one partial row per group (signed
sums: an insert adds, a delete subtracts), so Python touches each *group* of a
chunk once, never each row. Groups changed during an epoch are emitted on the
barrier that ends it, as an insert (new group), an update pair (changed group)
or a delete (group whose last row went away); then the changed groups' states
are written to the state table and committed, then the barrier goes on.

MIN and MAX keep, per group, a count of every value seen, so a delete of the
current minimum finds the next one. Without GROUP BY there is exactly one group
and it never vanishes: ``count(*)`` over nothing is 0, as in PostgreSQL.
"""

from __future__ import annotations

import decimal
import pickle
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tidegate.common.chunk import Chunk, Op
from tidegate.state.state_table import StateTable
from tidegate.stream.evaluator import Evaluator
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator

AGG_KINDS = ("count_star", "count", "sum", "avg", "min", "max")
_AVG_CONTEXT = decimal.Context(prec=38)


@dataclass(frozen=True)
class AggCall:
    kind: str
    arg: int | None  # input column; None for count(*)
    output_type: pa.DataType

    def __post_init__(self) -> None:
        assert self.kind in AGG_KINDS, self.kind
        assert (self.arg is None) == (self.kind == "count_star"), self


class _Group:
    """One group's accumulators; ``emitted`` is the output row downstream currently holds."""

    __slots__ = ("accumulators", "emitted", "rows")

    def __init__(self, calls: list[AggCall]) -> None:
        self.rows = 0
        self.accumulators: list[Any] = [_new_accumulator(c.kind) for c in calls]
        self.emitted: tuple[Any, ...] | None = None


def _new_accumulator(kind: str) -> Any:
    if kind in ("count_star", "count"):
        return 0
    if kind in ("sum", "avg"):
        return [0, 0]  # signed sum, non-null count
    return [{}, 0]  # value -> count, non-null count


class HashAgg(Operator):
    name = "hash_agg"

    def __init__(
        self,
        input: Operator,
        group_keys: list[int],
        calls: list[AggCall],
        schema: pa.Schema,
        state: StateTable | None = None,
    ) -> None:
        self.input = input
        self.group_keys = group_keys
        self.calls = calls
        self.schema = schema
        self.state = state
        self._groups: dict[tuple[Any, ...], _Group] = {}
        self._dirty: set[tuple[Any, ...]] = set()
        self._written: dict[tuple[Any, ...], bytes] = {}
        self._evaluator = Evaluator()
        self._partial_sql = self._compile_partial_sql()
        self._extreme_sql = {
            j: self._compile_extreme_sql(call) for j, call in enumerate(calls) if call.kind in ("min", "max")
        }

    # ---- compile the per-chunk reductions --------------------------------
    def _keys_sql(self) -> str:
        return ", ".join(f"_{k}" for k in self.group_keys)

    def _compile_partial_sql(self) -> str:
        sign = f"_{len(self.input.schema)}"
        items = [f"_{k}" for k in self.group_keys]
        items.append(f"sum({sign})::BIGINT")
        for call in self.calls:
            if call.kind == "count_star":
                continue
            arg = f"_{call.arg}"
            items.append(f"sum(CASE WHEN {arg} IS NULL THEN 0 ELSE {sign} END)::BIGINT")
            if call.kind in ("sum", "avg"):
                # Widen before negating: retracting the smallest value of a type must not overflow.
                wide = f"CAST({arg} AS {_wide_type(self.input.schema.field(call.arg).type)})"
                items.append(f"sum(CASE WHEN {sign} > 0 THEN {wide} ELSE -{wide} END)")
        group_by = f" GROUP BY {self._keys_sql()}" if self.group_keys else ""
        return f"SELECT {', '.join(items)} FROM __input{group_by}"

    def _compile_extreme_sql(self, call: AggCall) -> str:
        sign = f"_{len(self.input.schema)}"
        keys = [f"_{k}" for k in self.group_keys]
        select = ", ".join([*keys, f"_{call.arg}", f"sum({sign})::BIGINT"])
        group_by = ", ".join([*keys, f"_{call.arg}"])
        return f"SELECT {select} FROM __input WHERE _{call.arg} IS NOT NULL GROUP BY {group_by}"

    # ---- the stream -------------------------------------------------------
    async def execute(self) -> AsyncIterator[Message]:
        first = True
        async for message in self.input.execute():
            if isinstance(message, Chunk):
                if len(message):
                    self.apply(message)
            elif isinstance(message, Barrier):
                if first and self.state is not None and message.epoch.prev:
                    self._restore(message.epoch.prev)
                if first and not self.group_keys:
                    # The single group of a global aggregate exists from the start.
                    self._groups.setdefault((), _Group(self.calls))
                    self._dirty.add(())
                if not first:
                    output = self.flush()
                    if output is not None:
                        yield output
                    self._write_state(message.epoch.prev)
                first = False
                yield message
            else:
                yield message

    def apply(self, chunk: Chunk) -> None:
        signs = pa.array(chunk.signs())
        batch = pa.RecordBatch.from_arrays([*chunk.data.columns, signs], names=[*chunk.data.schema.names, "__sign"])
        partial = self._evaluator.query(batch, self._partial_sql)
        self._merge_partial(partial)
        for j, sql in self._extreme_sql.items():
            self._merge_extremes(j, self._evaluator.query(batch, sql))

    def _merge_partial(self, partial: pa.Table) -> None:
        columns = [c.to_pylist() for c in partial.columns]
        nkeys = len(self.group_keys)
        key_columns, rest = columns[:nkeys], columns[nkeys:]
        keys = list(zip(*key_columns)) if nkeys else [()] * partial.num_rows
        groups, dirty, calls = self._groups, self._dirty, self.calls
        for i, key in enumerate(keys):
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(calls)
            dirty.add(key)
            group.rows += rest[0][i]
            position = 1
            for j, call in enumerate(calls):
                kind = call.kind
                if kind == "count_star":
                    continue
                nonnull = rest[position][i]
                position += 1
                accumulator = group.accumulators[j]
                if kind == "count":
                    group.accumulators[j] = accumulator + nonnull
                elif kind in ("sum", "avg"):
                    total = rest[position][i]
                    position += 1
                    accumulator[1] += nonnull
                    if total is not None:
                        accumulator[0] = accumulator[0] + total
                else:
                    accumulator[1] += nonnull

    def _merge_extremes(self, j: int, values: pa.Table) -> None:
        columns = [c.to_pylist() for c in values.columns]
        nkeys = len(self.group_keys)
        keys = list(zip(*columns[:nkeys])) if nkeys else [()] * values.num_rows
        values_column = columns[nkeys]
        if pa.types.is_interval(values.schema.field(nkeys).type):
            values_column = [_IntervalKey.of(v) for v in values_column]
        for key, value, count in zip(keys, values_column, columns[nkeys + 1]):
            counts = self._groups[key].accumulators[j][0]
            remaining = counts.get(value, 0) + count
            if remaining:
                counts[value] = remaining
            else:
                counts.pop(value, None)

    def _restore(self, epoch: int) -> None:
        """Reload every group's state as committed at ``epoch`` (recovery)."""
        assert self.state is not None
        rows = self.state.snapshot(epoch)
        for encoded_key, encoded in zip(rows.column(0).to_pylist(), rows.column(1).to_pylist()):
            key = pickle.loads(encoded_key)
            group = _Group(self.calls)
            group.rows, group.accumulators = pickle.loads(encoded)
            group.emitted = (*key, *self._values(group))
            self._groups[key] = group
            self._written[key] = encoded

    # ---- the barrier ------------------------------------------------------
    def flush(self) -> Chunk | None:
        """The changes of every group touched this epoch, as one chunk."""
        ops: list[int] = []
        rows: list[tuple[Any, ...]] = []
        for key in self._dirty:
            group = self._groups[key]
            vanished = group.rows == 0 and bool(self.group_keys)
            new_row = None if vanished else (*key, *self._values(group))
            old_row = group.emitted
            if vanished:
                del self._groups[key]
                if old_row is not None:
                    ops.append(Op.DELETE)
                    rows.append(old_row)
            elif old_row is None:
                ops.append(Op.INSERT)
                rows.append(new_row)  # type: ignore[arg-type]
            elif old_row != new_row:
                ops += [Op.UPDATE_DELETE, Op.UPDATE_INSERT]
                rows += [old_row, new_row]  # type: ignore[list-item]
            if not vanished:
                group.emitted = new_row
        if not rows:
            return None
        columns = list(zip(*rows))
        arrays = [
            pa.array(_to_arrow_values(list(col), field.type), type=field.type)
            for col, field in zip(columns, self.schema)
        ]
        return Chunk.of(np.array(ops, dtype=np.int8), pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def _values(self, group: _Group) -> list[Any]:
        out: list[Any] = []
        for call, accumulator in zip(self.calls, group.accumulators):
            kind = call.kind
            if kind == "count_star":
                out.append(group.rows)
            elif kind == "count":
                out.append(accumulator)
            elif kind == "sum":
                out.append(accumulator[0] if accumulator[1] else None)
            elif kind == "avg":
                out.append(_average(accumulator[0], accumulator[1], call.output_type))
            else:
                counts = accumulator[0]
                if not counts:
                    out.append(None)
                else:
                    extreme = min(counts) if kind == "min" else max(counts)
                    out.append(extreme.value() if isinstance(extreme, _IntervalKey) else extreme)
        return out

    def _write_state(self, epoch: int) -> None:
        """Persist the intermediate state of the groups changed this epoch."""
        if self.state is not None:
            ops: list[int] = []
            keys: list[bytes] = []
            values: list[bytes | None] = []
            for key in self._dirty:
                encoded_key = pickle.dumps(key)
                group = self._groups.get(key)
                old = self._written.pop(key, None)
                if old is not None:
                    ops.append(Op.DELETE)
                    keys.append(encoded_key)
                    values.append(old)
                if group is not None:
                    new = pickle.dumps((group.rows, group.accumulators))
                    ops.append(Op.INSERT)
                    keys.append(encoded_key)
                    values.append(new)
                    self._written[key] = new
            if ops:
                batch = pa.RecordBatch.from_arrays(
                    [pa.array(keys, pa.binary()), pa.array(values, pa.binary())], schema=self.state.schema
                )
                self.state.write(Chunk.of(np.array(ops, dtype=np.int8), batch))
            self.state.commit(epoch)
        self._dirty.clear()


@dataclass(frozen=True, order=True)
class _IntervalKey:
    """An interval ordered as PostgreSQL orders them (a month is 30 days), picklable."""

    total_us: int
    months: int
    days: int
    nanoseconds: int

    @staticmethod
    def of(value: Any) -> _IntervalKey:
        months, days, nanoseconds = value.months, value.days, value.nanoseconds
        return _IntervalKey((months * 30 + days) * 86_400_000_000 + nanoseconds // 1000, months, days, nanoseconds)

    def value(self) -> tuple[int, int, int]:
        return (self.months, self.days, self.nanoseconds)


def _wide_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type a SUM/AVG argument is widened to before it is signed."""
    if pa.types.is_integer(arrow_type):
        return "HUGEINT"
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL(38,{arrow_type.scale})"
    return "DOUBLE"


AGG_STATE_SCHEMA = pa.schema([("group_key", pa.binary()), ("accumulators", pa.binary())])


def _average(total: Any, count: int, output_type: pa.DataType) -> Any:
    if not count:
        return None
    if pa.types.is_floating(output_type):
        return float(total) / count
    quotient = _AVG_CONTEXT.divide(decimal.Decimal(total), decimal.Decimal(count))
    return quotient.quantize(decimal.Decimal(1).scaleb(-output_type.scale), context=_AVG_CONTEXT)


def _to_arrow_values(values: list[Any], arrow_type: pa.DataType) -> list[Any]:
    if pa.types.is_decimal(arrow_type):
        quantum = decimal.Decimal(1).scaleb(-arrow_type.scale)
        return [None if v is None else decimal.Decimal(v).quantize(quantum, context=_AVG_CONTEXT) for v in values]
    if pa.types.is_integer(arrow_type):
        return [None if v is None else int(v) for v in values]
    if pa.types.is_floating(arrow_type):
        return [None if v is None else float(v) for v in values]
    return values
