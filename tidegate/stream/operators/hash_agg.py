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

Memory (DESIGN §6). Without a cache budget every group stays in memory and a
recovery reads them all back at once. With ``cache_bytes`` the groups live in a
byte-bounded LRU cache (``stream/lru_cache.py``). The groups of the current
epoch are pinned until the barrier writes them; the others are evicted least
recently used first whenever the cache is over budget. A chunk's groups that
are not cached are read back from the state table by one point lookup per
chunk, which is skipped while the cache is known to hold every group (nothing
was evicted and the operator did not resume from a checkpoint). A cached group
keeps the encoded state the table holds: it is the row to delete when the
group vanishes (a changed group's new state is written as an update-insert
that replaces the old row). Recovery reads nothing up front.

The state table (``agg_state_schema``) is keyed by the group columns themselves,
typed as in the output, so the state store sorts, hashes and looks up their
memcomparable encoding with numpy; each group's accumulators are one pickled value.
"""

from __future__ import annotations

import decimal
import pickle
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Chunk, Op
from tidegate.common.keys import encode_columns, key_width
from tidegate.state.state_table import StateTable
from tidegate.stream.evaluator import Evaluator
from tidegate.stream.lru_cache import LruCache
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator

AGG_KINDS = ("count_star", "count", "sum", "avg", "min", "max")
_AVG_CONTEXT = decimal.Context(prec=38)

# What a cached group is accounted beyond the length of its encoded key and state: what CPython 3.11
# allocates for it, measured with tracemalloc (test_hash_agg.py measures again and compares). Per group:
# the _Group, its accumulator list, the key and output tuples, the encoded state's bytes object and the
# cache's map entries. Per call: the accumulator's objects and the output value; a MIN/MAX also holds a
# dict, and per distinct value it keeps, a dict slot and the value (a Decimal is a large object).
GROUP_BYTES = 385
CALL_BYTES = {"count_star": 16, "count": 16, "sum": 190, "avg": 190, "min": 290, "max": 290}
DECIMAL_CALL_BYTES = 60
EXTREME_VALUE_BYTES = 70
DECIMAL_EXTREME_VALUE_BYTES = 130

Key = tuple[Any, ...]


@dataclass(frozen=True)
class AggCall:
    kind: str
    arg: int | None  # input column; None for count(*)
    output_type: pa.DataType

    def __post_init__(self) -> None:
        assert self.kind in AGG_KINDS, self.kind
        assert (self.arg is None) == (self.kind == "count_star"), self


class _Group:
    """One group's accumulators.

    ``emitted`` is the output row downstream currently holds; ``written`` the encoded state the
    state table holds (None: the table has no row for it), the exact row to delete when it vanishes.
    """

    __slots__ = ("accumulators", "emitted", "rows", "written")

    def __init__(self, calls: list[AggCall]) -> None:
        self.rows = 0
        self.accumulators: list[Any] = [_new_accumulator(c.kind) for c in calls]
        self.emitted: tuple[Any, ...] | None = None
        self.written: bytes | None = None


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
        cache_bytes: int | None = None,
    ) -> None:
        assert cache_bytes is None or state is not None, "evicted groups are read back from the state table"
        self.input = input
        self.group_keys = group_keys
        self.calls = calls
        self.schema = schema
        self.state = state
        # Where a chunk's groups are found: every group without a cache budget; with one, the cache's
        # pinned entries, since a chunk's groups are brought in and pinned before it is merged.
        self.cache: LruCache[Key, _Group] | None = None if cache_bytes is None else LruCache(cache_bytes)
        self._groups: dict[Key, _Group] = {} if self.cache is None else self.cache.dirty
        self._dirty: set[Key] = set()
        # Whether the operator resumed from a checkpoint: then the cache may lack groups the state table has.
        self._resumed = False
        # The epoch this operator's state table was last committed at (or recovered from).
        self._state_epoch = 0
        self._evaluator = Evaluator()
        self._partial_sql = self._compile_partial_sql()
        self._extreme_sql = {
            j: self._compile_extreme_sql(call) for j, call in enumerate(calls) if call.kind in ("min", "max")
        }
        self._key_fields = [schema.field(i) for i in range(len(group_keys))]
        # Every encoded group key's length, when the group columns are all fixed-width.
        self._key_width = key_width([f.type for f in self._key_fields])
        self._entry_bytes, self._extreme_value_bytes = self._accounting(calls)
        # A new group's size until the barrier measures it: an empty state, a key, one value per extreme.
        empty = (0, [_new_accumulator(c.kind) for c in calls])
        encoded = len(pickle.dumps(empty)) + (self._key_width or 8 * len(group_keys))
        self._new_group_bytes = self._entry_bytes + encoded + sum(self._extreme_value_bytes.values())

    def _accounting(self, calls: list[AggCall]) -> tuple[int, dict[int, int]]:
        """A group's fixed accounted bytes, and the bytes per distinct value of each MIN/MAX call."""
        entry_bytes = GROUP_BYTES
        value_bytes: dict[int, int] = {}
        for j, call in enumerate(calls):
            decimal_arg = call.arg is not None and pa.types.is_decimal(self.input.schema.field(call.arg).type)
            entry_bytes += CALL_BYTES[call.kind] + (DECIMAL_CALL_BYTES if decimal_arg else 0)
            if call.kind in ("min", "max"):
                value_bytes[j] = DECIMAL_EXTREME_VALUE_BYTES if decimal_arg else EXTREME_VALUE_BYTES
        return entry_bytes, value_bytes

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
                if first:
                    self._start(message.epoch.prev)
                else:
                    output = self.flush()
                    if output is not None:
                        yield output
                    self._write_state(message.epoch.prev)
                first = False
                yield message
            else:
                yield message

    def _start(self, epoch: int) -> None:
        """On the first barrier: resume from the state committed at ``epoch`` (0: there is none)."""
        if self.state is not None and epoch:
            self._state_epoch = epoch
            if self.cache is None:
                self._restore(epoch)
            else:
                self._resumed = True  # groups are read back on demand
        if not self.group_keys:
            # The single group of a global aggregate exists from the start.
            if self.cache is None:
                self._groups.setdefault((), _Group(self.calls))
            else:
                self._bring_in([()])
            self._dirty.add(())

    def apply(self, chunk: Chunk) -> None:
        signs = pa.array(chunk.signs())
        batch = pa.RecordBatch.from_arrays([*chunk.data.columns, signs], names=[*chunk.data.schema.names, "__sign"])
        partial = self._evaluator.query(batch, self._partial_sql)
        columns = [c.to_pylist() for c in partial.columns]
        nkeys = len(self.group_keys)
        keys = list(zip(*columns[:nkeys])) if nkeys else [()] * partial.num_rows
        cache = self.cache
        if cache is not None:
            self._bring_in(keys)
        extremes_before = self._extremes_bytes(keys) if cache is not None and self._extreme_sql else None
        self._merge_partial(keys, columns[nkeys:])
        for j, sql in self._extreme_sql.items():
            self._merge_extremes(j, self._evaluator.query(batch, sql))
        if cache is not None and extremes_before is not None:
            # A MIN/MAX accumulator grows by one value at a time: account each pinned group's growth.
            size_of = cache.size_of
            cache.resize_many(
                [
                    (key, size_of(key) + after - before)
                    for key, before, after in zip(keys, extremes_before, self._extremes_bytes(keys))
                    if after != before
                ]
            )

    def _merge_partial(self, keys: list[Key], rest: list[list[Any]]) -> None:
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
        """Reload every group's state as committed at ``epoch`` (recovery without a cache budget)."""
        assert self.state is not None
        rows = self.state.snapshot(epoch)
        for key, encoded in zip(self._row_keys(rows), rows.column(len(self.group_keys)).to_pylist()):
            self._groups[key] = self._decode(key, encoded)

    def _row_keys(self, rows: pa.Table) -> list[Key]:
        """The group key of each state table row."""
        nkeys = len(self.group_keys)
        if not nkeys:
            return [()] * rows.num_rows
        return list(zip(*(rows.column(i).to_pylist() for i in range(nkeys))))

    def _key_columns(self, keys: list[Key]) -> list[pa.Array]:
        """``keys`` as the state table's typed key columns."""
        return [pa.array([key[i] for key in keys], type=f.type) for i, f in enumerate(self._key_fields)]

    def _key_lengths(self, columns: list[pa.Array], count: int) -> list[int]:
        """The encoded length of each of ``count`` keys: what a group's key is accounted in the cache."""
        if self._key_width is not None:
            return [self._key_width] * count
        return pc.binary_length(encode_columns(columns, row_count=count)).to_pylist()

    def _decode(self, key: Key, encoded: bytes) -> _Group:
        group = _Group.__new__(_Group)  # skips building accumulators that the decoded ones replace
        group.rows, group.accumulators = pickle.loads(encoded)
        group.emitted = (*key, *self._values(group))
        group.written = encoded
        return group

    # ---- the bounded cache ------------------------------------------------
    def _bring_in(self, keys: list[Key]) -> None:
        """Pin the groups of ``keys`` in the cache, reading those it lacks from the state table."""
        cache = self.cache
        assert cache is not None
        missing = cache.mark_dirty(keys)
        if not missing:
            return
        # The cache holds every group unless some were evicted or the operator resumed from a checkpoint.
        loaded = self._load(missing) if self._resumed or cache.evictions else {}
        calls, new_bytes = self.calls, self._new_group_bytes
        entries = []
        for key in missing:
            found = loaded.get(key)
            entries.append((key, _Group(calls), new_bytes) if found is None else (key, *found))
        cache.put_many(entries, dirty=True)

    def _load(self, keys: list[Key]) -> dict[Key, tuple[_Group, int]]:
        """The committed groups among ``keys`` with their accounted sizes: one point lookup for all of them."""
        assert self.state is not None
        nkeys = len(self.group_keys)
        columns = self._key_columns(keys)
        if nkeys:
            wanted = pa.Table.from_arrays(columns, names=self.state.schema.names[:nkeys])
        else:  # the global aggregate's one group: a key of no columns
            wanted = pa.table({"_": [None] * len(keys)}).select([])
        rows = self._read_state(wanted)
        # Found rows are matched to the wanted keys by their encoding: equal keys, equal bytes.
        by_encoded = dict(zip(encode_columns(columns, row_count=len(keys)).to_pylist(), keys))
        found_encoded = encode_columns(rows.columns[:nkeys], row_count=rows.num_rows).to_pylist()
        lengths = self._key_lengths(rows.columns[:nkeys], rows.num_rows)
        loaded: dict[Key, tuple[_Group, int]] = {}
        for encoded_key, encoded, length in zip(found_encoded, rows.column(nkeys).to_pylist(), lengths):
            key = by_encoded[encoded_key]
            group = self._decode(key, encoded)
            loaded[key] = (group, self._group_bytes(length, len(encoded), group))
        return loaded

    def _read_state(self, keys: pa.Table) -> pa.Table:
        """The state table's rows for ``keys``, as committed at ``_state_epoch``.

        Read from the store at an explicit epoch: ``StateTable.get_rows`` reads at the table's own
        last commit, which a table rebuilt for recovery does not know before its first commit. This
        operator writes its table only on barriers, right before committing, so no pending write is missed.
        """
        assert self.state is not None
        return self.state.store.get_rows(self.state.table_id, keys, self._state_epoch)

    def _group_bytes(self, encoded_key_bytes: int, encoded_state_bytes: int, group: _Group) -> int:
        """A cached group's accounted size (see GROUP_BYTES)."""
        size = self._entry_bytes + encoded_key_bytes + encoded_state_bytes
        for j, value_bytes in self._extreme_value_bytes.items():
            size += value_bytes * len(group.accumulators[j][0])
        return size

    def _extremes_bytes(self, keys: list[Key]) -> list[int]:
        """Per pinned group of ``keys``, the accounted bytes of the values its MIN/MAX accumulators hold."""
        groups = self._groups
        accumulators = [groups[key].accumulators for key in keys]
        totals = [0] * len(keys)
        for j, value_bytes in self._extreme_value_bytes.items():
            totals = [t + value_bytes * len(a[j][0]) for t, a in zip(totals, accumulators)]
        return totals

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
                if old_row is not None:
                    ops.append(Op.DELETE)
                    rows.append(old_row)
            elif old_row is None:
                ops.append(Op.INSERT)
                rows.append(new_row)  # type: ignore[arg-type]
            elif old_row != new_row:
                ops += [Op.UPDATE_DELETE, Op.UPDATE_INSERT]
                rows += [old_row, new_row]  # type: ignore[list-item]
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
        """Persist the state of the groups changed this epoch and forget the vanished ones."""
        groups, cache, has_keys = self._groups, self.cache, bool(self.group_keys)
        vanished: list[Key] = []
        sizes: list[tuple[Key, int]] = []  # bounded cache: the measured size of each written group
        if self.state is not None:
            ops: list[int] = []
            keys: list[Key] = []
            values: list[bytes | None] = []
            written: list[tuple[Key, int]] = []  # bounded cache: each written group and its state's length
            for key in self._dirty:
                group = groups[key]
                if group.rows or not has_keys:
                    # A changed group's new state alone (U+) replaces its old row: half the rows of a
                    # delete-and-insert pair for the store to sort and the checkpoint to upload.
                    ops.append(Op.INSERT if group.written is None else Op.UPDATE_INSERT)
                    new = group.written = pickle.dumps((group.rows, group.accumulators))
                    keys.append(key)
                    values.append(new)
                    if cache is not None:
                        written.append((key, len(new)))
                else:
                    if group.written is not None:
                        ops.append(Op.DELETE)
                        keys.append(key)
                        values.append(group.written)
                    vanished.append(key)
            if ops:
                key_columns = self._key_columns(keys)
                batch = pa.RecordBatch.from_arrays(
                    [*key_columns, pa.array(values, pa.binary())], schema=self.state.schema
                )
                self.state.write(Chunk.of(np.array(ops, dtype=np.int8), batch))
            if written:
                columns = [] if self._key_width is not None else self._key_columns([key for key, _ in written])
                lengths = self._key_lengths(columns, len(written))
                sizes = [
                    (key, self._group_bytes(length, state_bytes, groups[key]))
                    for (key, state_bytes), length in zip(written, lengths)
                ]
            self.state.commit(epoch)
            self._state_epoch = epoch
        elif has_keys:
            vanished = [key for key in self._dirty if not groups[key].rows]
        for key in vanished:
            if cache is None:
                del groups[key]
            else:
                cache.pop(key)
        self._dirty.clear()
        if cache is not None:
            cache.resize_many(sizes)  # estimates become measurements
            cache.mark_all_clean()  # and the epoch's groups may now be evicted


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


def agg_state_schema(output: pa.Schema, key_count: int) -> tuple[pa.Schema, list[int]]:
    """A HashAgg's state table: the ``key_count`` group columns of its ``output`` (the primary key),
    then the group's pickled accumulators."""
    keys = [pa.field(f"_group_key{i}", output.field(i).type) for i in range(key_count)]
    return pa.schema([*keys, pa.field("accumulators", pa.binary())]), list(range(key_count))


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
