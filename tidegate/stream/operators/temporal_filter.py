"""TemporalFilter: ``WHERE ts > now() - INTERVAL '1 hour'`` — rows enter and leave a view as time passes.

Place in the data flow: above a view's ordinary filter, one per time column that the
WHERE clause bounds by ``now()`` (``sql/plan_temporal.py``). A row qualifies while
``lower < t <= upper``, both bounds functions of now (either may be absent); a row
whose time is NULL never qualifies.

Where now comes from (DESIGN §11): the barrier. On barrier ``(p → c)`` the operator
advances now to the time of epoch ``p`` (``epoch_to_ms``), emits the rows whose status
changed, writes its state and commits ``p``, then emits the barrier. So the view
committed at epoch ``p`` holds exactly the rows that qualify at the time of ``p``,
every actor agrees on it, and a recovery from ``p`` knows the now its state was
computed for (the first barrier's ``prev``) without storing it. Between barriers now
stays put: a row arriving during an epoch is judged by the now of the last barrier,
and corrected on the next one like the rows that were already there.

State: the rows whose status may still change — rows above the lower bound (they will
leave), or, without a lower bound, rows above the upper bound (they will enter; once
in, nothing takes them out). Rows below a lower bound can never qualify again, since
now only rises, and leave the state. The state table is keyed by (time, input key),
and an in-memory copy sorted by time (rebuilt from the state table on recovery) finds
the rows crossing a bound by one binary search per bound: on each barrier they are a
prefix or a slice of that order. Whether a row is in the state is a pure function of
the row and now, which is what lets an input delete find its row without a lookup.

Watermarks are dropped: a row entering from the future side may lie below any
watermark on another column. See docs/design/20261127_temporal_filter.md.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Chunk, Op
from tidegate.common.epoch import epoch_to_ms
from tidegate.common.keys import encode_columns
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import Barrier, Message, Watermark
from tidegate.stream.operator import Operator
from tidegate.stream.operators.filter import fix_split_updates

_NO_LOWER = np.iinfo(np.int64).min
_NO_UPPER = np.iinfo(np.int64).max
_UNIX_EPOCH = dt.datetime(1970, 1, 1)
_MICROSECOND = dt.timedelta(microseconds=1)

# One constant interval: (months, days, microseconds), added in that order as PostgreSQL does.
Interval = tuple[int, int, int]


@dataclass(frozen=True)
class TimeBound:
    """``t > now() + intervals`` (``lower``) or ``t < now() + intervals`` (upper); ``inclusive``: >= / <=."""

    lower: bool
    intervals: tuple[Interval, ...]
    inclusive: bool

    def at(self, now_us: int) -> int:
        """The bound as an exclusive lower or an inclusive upper limit in microseconds (times are whole
        microseconds, so ``t >= b`` is ``t > b - 1`` and ``t < b`` is ``t <= b - 1``)."""
        value = add_intervals(now_us, self.intervals)
        if self.lower:
            return value - 1 if self.inclusive and value > _NO_LOWER else value
        return value if self.inclusive or value == _NO_UPPER else value - 1


def add_intervals(now_us: int, intervals: tuple[Interval, ...]) -> int:
    """``now + i1 + i2 …`` in microseconds since 1970 (UTC); months keep the day, clamped to the
    month's last day, as in PostgreSQL. Saturates at the int64 limits instead of overflowing."""
    if all(months == 0 and days == 0 for months, days, _ in intervals):
        total = now_us + sum(micros for _, _, micros in intervals)
        return int(min(max(total, _NO_LOWER), _NO_UPPER))
    try:
        moment = _UNIX_EPOCH + dt.timedelta(microseconds=now_us)
        for months, days, micros in intervals:
            if months:
                moment = _add_months(moment, months)
            moment += dt.timedelta(days=days, microseconds=micros)
    except (OverflowError, ValueError):
        # Past year 1 or 9999: every time is above (below) such a bound.
        negative = sum(m * 31 + d + u / 86_400_000_000 for m, d, u in intervals) < 0
        return int(_NO_LOWER if negative else _NO_UPPER)
    return (moment - _UNIX_EPOCH) // _MICROSECOND


def _add_months(moment: dt.datetime, months: int) -> dt.datetime:
    total = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(total, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def time_micros(column: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A timestamp or date column as int64 microseconds since 1970, and where it is not NULL."""
    if pa.types.is_date(column.type) or column.type.unit != "us" or column.type.tz is not None:
        column = column.cast(pa.timestamp("us"))
    valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
    values = column.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    return values.astype(np.int64, copy=False), valid


class TemporalFilter(Operator):
    name = "temporal_filter"

    def __init__(
        self,
        input: Operator,
        time_column: int,
        bounds: list[TimeBound],
        input_pk: list[int],
        state: StateTable,
    ) -> None:
        """``state``: a table of ``temporal_filter_state_schema(input.schema, time_column, input_pk)``."""
        assert bounds, "a temporal filter needs a bound"
        self.input = input
        self.schema = input.schema
        self.time_column = time_column
        self.lower_bounds = [b for b in bounds if b.lower]
        self.upper_bounds = [b for b in bounds if not b.lower]
        self.state = state
        self._key_columns = [time_column, *(i for i in input_pk if i != time_column)]
        self.now_us = 0
        self._lower, self._upper = _NO_LOWER, _NO_UPPER
        # The state's rows sorted by time, their times and their encoded (time, key): the in-memory index.
        self._rows = self.schema.empty_table()
        self._times = np.empty(0, dtype=np.int64)
        self._keys: pa.Array = pa.array([], pa.binary())
        # This epoch's changes to the state (ops made plain), applied to the index on the barrier.
        self._pending: list[Chunk] = []

    # ---- the stream -------------------------------------------------------
    async def execute(self) -> AsyncIterator[Message]:
        first = True
        async for message in self.input.execute():
            if isinstance(message, Chunk):
                if len(message):
                    out = self.apply(message)
                    if out is not None:
                        yield out
            elif isinstance(message, Barrier):
                if first:
                    self._start(message)
                    first = False
                else:
                    out = self.advance(epoch_to_ms(message.epoch.prev) * 1000)
                    if out is not None:
                        yield out
                    self.state.commit(message.epoch.prev)
                yield message
            elif not isinstance(message, Watermark):
                yield message

    def _start(self, barrier: Barrier) -> None:
        """Resume from the state committed at the first barrier's ``prev``, computed for its time."""
        committed = barrier.epoch.prev
        if committed:
            self._set_now(epoch_to_ms(committed) * 1000)
            restored = self.state.snapshot(committed)
            rows = pa.Table.from_arrays(restored.columns, schema=self.schema)
            self._rows, self._times, self._keys = self._index_of(rows)
        else:
            # Nothing was ever committed: any now is consistent; take the first epoch's.
            self._set_now(epoch_to_ms(barrier.epoch.curr) * 1000)

    def _set_now(self, now_us: int) -> None:
        self.now_us = now_us
        self._lower = max((b.at(now_us) for b in self.lower_bounds), default=_NO_LOWER)
        self._upper = min((b.at(now_us) for b in self.upper_bounds), default=_NO_UPPER)

    def _kept_above(self) -> int:
        """Rows with a time above this stay in the state (see the module docstring)."""
        return self._lower if self.lower_bounds else self._upper

    # ---- input changes ------------------------------------------------------
    def apply(self, chunk: Chunk) -> Chunk | None:
        """Pass the rows that qualify now; remember the changes to rows whose status may still change."""
        times, valid = time_micros(chunk.data.column(self.time_column))
        qualifies = valid & (times > self._lower) & (times <= self._upper)
        kept = valid & (times > self._kept_above())
        if kept.any():
            ops = chunk.ops.to_numpy(zero_copy_only=False)
            # The state sees whole-row inserts and deletes: an update's halves may have different keys.
            plain = np.where((ops == Op.INSERT) | (ops == Op.UPDATE_INSERT), Op.INSERT, Op.DELETE).astype(np.int8)
            mask = pa.array(kept)
            change = Chunk(pa.array(plain[kept], pa.int8()), chunk.data.filter(mask))
            self._pending.append(change)
            self.state.write(change)
        if qualifies.all():
            return chunk
        if not qualifies.any():
            return None
        ops = chunk.ops.to_numpy(zero_copy_only=False).copy()
        fix_split_updates(ops, qualifies)
        return Chunk(pa.array(ops[qualifies], pa.int8()), chunk.data.filter(pa.array(qualifies)))

    # ---- the barrier ------------------------------------------------------
    def advance(self, now_us: int) -> Chunk | None:
        """Apply the epoch's changes to the index, move now to ``now_us`` and return the rows that
        left (deletes) or entered (inserts); the rows that can no longer change leave the state."""
        self._apply_pending()
        assert now_us >= self.now_us, (now_us, self.now_us)
        emitted_before = int(np.searchsorted(self._times, self._upper, side="right"))
        self._set_now(now_us)
        expired = int(np.searchsorted(self._times, self._lower, side="right"))
        emitted_after = int(np.searchsorted(self._times, self._upper, side="right"))
        # Before, rows [0, emitted_before) qualified; now rows [expired, emitted_after) do.
        deleted = min(expired, emitted_before)
        entered_from = max(expired, emitted_before)
        leaving = expired if self.lower_bounds else emitted_after
        parts: list[pa.Table] = []
        ops: list[np.ndarray] = []
        if deleted:
            parts.append(self._rows.slice(0, deleted))
            ops.append(np.full(deleted, Op.DELETE, dtype=np.int8))
        if emitted_after > entered_from:
            parts.append(self._rows.slice(entered_from, emitted_after - entered_from))
            ops.append(np.full(emitted_after - entered_from, Op.INSERT, dtype=np.int8))
        if leaving:
            self.state.write(Chunk.deletes(self._rows.slice(0, leaving)))
            self._rows = self._rows.slice(leaving)
            self._times = self._times[leaving:]
            self._keys = self._keys.slice(leaving)
        if not parts:
            return None
        return Chunk.of(np.concatenate(ops), pa.concat_tables(parts))

    def _apply_pending(self) -> None:
        """Fold the epoch's state changes into the sorted index: per (time, key) the last change decides."""
        if not self._pending:
            return
        changes = pa.Table.from_batches([c.data for c in self._pending], schema=self.schema)
        ops = np.concatenate([c.ops.to_numpy(zero_copy_only=False) for c in self._pending])
        self._pending = []
        keys = self._encode(changes)
        rows, times, index_keys = self._rows, self._times, self._keys
        if (ops == Op.DELETE).any():
            # A key's last change wins; every key touched this epoch leaves the index, and the ones whose
            # last change is an insert come back with their new row.
            last = (
                pa.table({"key": keys, "seq": np.arange(len(ops))})
                .group_by("key")
                .aggregate([("seq", "max")])
                .column("seq_max")
                .to_numpy()
            )
            last = np.sort(last[ops[last] == Op.INSERT])
            touched = pc.is_in(index_keys, value_set=pc.unique(keys))
            if pc.any(touched).as_py():
                keep = pc.invert(touched)
                rows, times, index_keys = (
                    rows.filter(keep),
                    times[keep.to_numpy(zero_copy_only=False)],
                    index_keys.filter(keep),
                )
            changes, keys = changes.take(last), keys.take(pa.array(last))
        # Inserts of keys not live in the index (the stream's per-key alternation guarantees it).
        new_times, _ = time_micros(changes.column(self.time_column))
        all_times = np.concatenate([times, new_times])
        order = np.argsort(all_times, kind="stable")  # two sorted runs after the first: linear
        self._rows = pa.concat_tables([rows, changes]).take(order)
        self._times = all_times[order]
        self._keys = pa.concat_arrays([_single(index_keys), _single(keys)]).take(pa.array(order))

    def _index_of(self, rows: pa.Table) -> tuple[pa.Table, np.ndarray, pa.Array]:
        times, _ = time_micros(rows.column(self.time_column))
        order = np.argsort(times, kind="stable")
        return rows.take(order), times[order], self._encode(rows).take(pa.array(order))

    def _encode(self, rows: pa.Table) -> pa.Array:
        return encode_columns([rows.column(i) for i in self._key_columns], row_count=rows.num_rows)


def _single(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array


def temporal_filter_state_schema(
    input_schema: pa.Schema, time_column: int, input_pk: list[int]
) -> tuple[pa.Schema, list[int]]:
    """The state table of a TemporalFilter: the input's columns under positional names (an input may
    name two columns alike), keyed by the time column and then the input's stream key."""
    schema = pa.schema([pa.field(f"_{i}", f.type) for i, f in enumerate(input_schema)])
    return schema, [time_column, *(i for i in input_pk if i != time_column)]
