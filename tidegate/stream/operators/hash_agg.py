"""HashAgg: GROUP BY with aggregate calls (``agg_calls.py``), under inserts, updates and deletes.

Each chunk is first reduced by DuckDB to one partial row per group (signed
sums: an insert adds, a delete subtracts), so Python touches each *group* of a
chunk once, never each row. Groups changed during an epoch are emitted on the
barrier that ends it, as an insert (new group), an update pair (changed group)
or a delete (group whose last row went away); then the changed groups' states
are written to the state table and committed, then the barrier goes on.

MIN, MAX, DISTINCT calls, string_agg and array_agg keep, per group, a count of
every value seen (a multiset), so a delete of the current minimum finds the next
one and a distinct value goes with the last row holding it; their values are
reduced per chunk by a query of their own (``agg_calls.value_queries``). Over an
append-only input (the planner says so: ``append_only``) nothing is ever retracted,
so a MIN or MAX keeps its extreme value alone and the partial query reduces each
group of a chunk to it: Python sees a group per chunk, not a (group, value) pair.
SELECT DISTINCT is a HashAgg with no calls. Without GROUP BY there is exactly one
group and it never vanishes: ``count(*)`` over nothing is 0, as in PostgreSQL.

Group keys are Python tuples; dates, times and timestamps in them are the integers
Arrow stores, not datetime objects, which Arrow makes about 40 times slower.

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

Watermarks (docs/design/20261127_watermarks.md). A watermark on an input column
that is a group key (``window_start``) means a group whose key is below it gets
no row ever again. On the next barrier such groups are *closed*: their state
is deleted from the state table and the cache, so the state of a windowed
aggregation over an endless source stays bounded; the view keeps their rows.
The watermark then goes on as one of the group's output column, after the
barrier's changes. With ``emit_on_window_close`` the operator emits nothing on
barriers but each group once, as an insert, on the barrier that closes it: the
output is append-only and holds only closed windows. Finding the groups to
close walks the groups in memory, or with a cache budget scans the state table
(once per advance of a key's watermark, once per window for a TUMBLE key).
"""

from __future__ import annotations

import pickle
from collections.abc import AsyncIterator
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Chunk, Op
from tidegate.common.keys import encode_columns, key_width
from tidegate.errors import InternalError
from tidegate.state.state_table import StateTable
from tidegate.stream.evaluator import Evaluator
from tidegate.stream.lru_cache import LruCache
from tidegate.stream.messages import Barrier, Message, Watermark
from tidegate.stream.operator import Operator
from tidegate.stream.operators import agg_calls
from tidegate.stream.operators.agg_calls import AGG_KINDS, AggCall, SortKey, ValueQuery
from tidegate.stream.operators.agg_calls import _IntervalKey as _IntervalKey  # pickled states name it here

__all__ = ["AGG_KINDS", "AggCall", "HashAgg", "SortKey", "agg_state_schema"]

# What a cached group is accounted beyond the length of its encoded key and state and its calls'
# (``agg_calls.call_bytes``): what CPython 3.11 allocates for the _Group, its accumulator list, the key
# and output tuples, the encoded state's bytes object and the cache's map entries, measured with
# tracemalloc (test_hash_agg.py measures again and compares).
GROUP_BYTES = 385

Key = tuple[Any, ...]


class _Group:
    """One group's accumulators.

    ``emitted`` is the output row downstream currently holds; ``written`` the encoded state the
    state table holds (None: the table has no row for it), the exact row to delete when it vanishes.
    """

    __slots__ = ("accumulators", "emitted", "rows", "written")

    def __init__(self, accumulators: list[Any]) -> None:
        self.rows = 0
        self.accumulators = accumulators
        self.emitted: tuple[Any, ...] | None = None
        self.written: bytes | None = None


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
        emit_on_window_close: bool = False,
        append_only: bool = False,
    ) -> None:
        """``append_only``: the input only ever inserts rows (the planner knows), so a MIN or MAX call
        keeps only its extreme value (see ``_extreme_calls``)."""
        assert cache_bytes is None or state is not None, "evicted groups are read back from the state table"
        assert group_keys or not emit_on_window_close, "a window to close needs a group key"
        self.input = input
        self.emit_on_window_close = emit_on_window_close
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
        # Watermarks, per group key position: the input's latest, and the one groups were closed below
        # (which is also the output's last watermark of that column).
        self._key_positions = {column: i for i, column in enumerate(group_keys)}
        self._watermarks: dict[int, Any] = {}
        self._closed_below: dict[int, Any] = {}
        self.groups_closed = 0
        input_schema = input.schema
        self.append_only = append_only
        self._extremes = _extreme_calls(calls, input_schema) if append_only else []
        self._partial_sql, self._partial_merges, self._extreme_merges = self._compile_partial(input_schema)
        self._value_queries: list[ValueQuery] = agg_calls.value_queries(
            calls, group_keys, input_schema, reduced=self._extremes
        )
        self._key_fields = [schema.field(i) for i in range(len(group_keys))]
        # Per group column, the integer type its values are held as in Python (see _key_storage).
        self._key_storage = [_key_storage(f.type) for f in self._key_fields]
        # Every encoded group key's length, when the group columns are all fixed-width.
        self._key_width = key_width([f.type for f in self._key_fields])
        # Accounting: a group's fixed bytes; per multiset call, an entry's bytes and whether it holds text.
        self._group_fixed_bytes = GROUP_BYTES + sum(agg_calls.call_bytes(c, input_schema) for c in calls)
        self._multiset_entry_bytes = {
            j: agg_calls.entry_bytes(c, input_schema) for j, c in enumerate(calls) if c.multiset
        }
        self._sized_outputs = [j for j, c in enumerate(calls) if c.kind in ("string_agg", "array_agg")]
        # A new group's accumulators, and whether every call's value is the group's row count (count(*)).
        self._new_accumulators = agg_calls.accumulators_factory(calls)
        self._counts_rows_only = all(c.kind == "count_star" and c.filter is None for c in calls)
        # A new group's size until the barrier measures it: an empty state and a key (entries are added as they come).
        empty = (0, [agg_calls.new_accumulator(c) for c in calls])
        self._new_group_bytes = (
            self._group_fixed_bytes + len(pickle.dumps(empty)) + (self._key_width or 8 * len(group_keys))
        )

    # ---- compile the per-chunk reduction ----------------------------------
    def _compile_partial(
        self, input_schema: pa.Schema
    ) -> tuple[str, list[tuple[int, bool, int]], list[tuple[int, bool, int]]]:
        """The partial query; per counter or sum call it feeds: (call index, whether a counter, its first
        column); per extreme call (``_extremes``): (call index, whether MAX, its first column)."""
        sign = f"_{len(input_schema)}"
        items = [f"_{k}" for k in self.group_keys]
        items.append(f"sum({sign})::BIGINT")
        merges: list[tuple[int, bool, int]] = []
        extreme_merges: list[tuple[int, bool, int]] = []
        position = 1  # after the group's row count
        for j, call in enumerate(self.calls):
            if j in self._extremes:
                call_items = agg_calls.extreme_items(call)
                extreme_merges.append((j, call.kind == "max", position))
            else:
                call_items = agg_calls.partial_items(call, sign, input_schema)
                if call_items:
                    merges.append((j, len(call_items) == 1, position))
            position += len(call_items)
            items += call_items
        group_by = f" GROUP BY {', '.join(f'_{k}' for k in self.group_keys)}" if self.group_keys else ""
        return f"SELECT {', '.join(items)} FROM __input{group_by}", merges, extreme_merges

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
                    first = False
                    yield message
                    continue
                output = None if self.emit_on_window_close else self.flush()
                closed, watermarks = self._close_passed_groups()
                self._write_state(message.epoch.prev)
                for chunk in (output, closed):
                    if chunk is not None:
                        yield chunk
                for watermark in watermarks:
                    yield watermark
                yield message
            elif isinstance(message, Watermark):
                position = self._key_positions.get(message.column)
                if position is not None:  # a watermark on any other column says nothing about the output
                    self._watermarks[position] = message.value

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
                self._groups.setdefault((), _Group(self._new_accumulators()))
            else:
                self._bring_in([()])
            self._dirty.add(())

    def apply(self, chunk: Chunk) -> None:
        if self._extremes and not chunk.is_insert_only():
            raise InternalError(f"{self.name}: a delete or update in an input planned as append-only")
        signs = pa.array(chunk.signs())
        batch = pa.RecordBatch.from_arrays([*chunk.data.columns, signs], names=[*chunk.data.schema.names, "__sign"])
        partial = self._evaluator.query(batch, self._partial_sql)
        nkeys = len(self.group_keys)
        keys = self._python_keys(partial.columns[:nkeys], partial.num_rows)
        columns = [_python_values(c) for c in partial.columns[nkeys:]]
        cache = self.cache
        if cache is not None:
            self._bring_in(keys)
        self._merge_partial(keys, columns)
        growth: dict[Key, int] | None = {} if cache is not None else None
        if self._extreme_merges:
            self._merge_extremes(keys, columns, growth)
        for query in self._value_queries:
            self._merge_values(query, self._evaluator.query(batch, query.sql), growth)
        if cache is not None and growth:
            # A multiset grows and shrinks one entry at a time: account each pinned group's change.
            size_of = cache.size_of
            cache.resize_many([(key, size_of(key) + delta) for key, delta in growth.items() if delta])

    def _merge_partial(self, keys: list[Key], rest: list[list[Any]]) -> None:
        groups, merges, new_accumulators = self._groups, self._partial_merges, self._new_accumulators
        self._dirty.update(keys)
        for i, (key, row_count) in enumerate(zip(keys, rest[0])):
            group = groups.get(key)
            if group is None:
                group = groups[key] = _Group(new_accumulators())
            group.rows += row_count
            if not merges:
                continue
            accumulators = group.accumulators
            for j, counter, position in merges:
                if counter:
                    accumulators[j] += rest[position][i]
                else:  # sum, avg: [signed sum, non-null count]
                    accumulator = accumulators[j]
                    accumulator[1] += rest[position][i]
                    total = rest[position + 1][i]
                    if total is not None:
                        accumulator[0] = accumulator[0] + total

    def _merge_extremes(self, keys: list[Key], rest: list[list[Any]], growth: dict[Key, int] | None) -> None:
        """Merge each extreme call's value per group of the chunk (``_extremes``): the multiset keeps the
        extreme value alone, counted with every row of the call (no row ever leaves, so no other value
        could become the extreme again)."""
        groups = self._groups
        for j, is_max, position in self._extreme_merges:
            entry_bytes, holds_text = self._multiset_entry_bytes[j]
            for key, value, count in zip(keys, rest[position], rest[position + 1]):
                if not count:
                    continue  # no row of the chunk has a value for the call (NULLs, FILTER)
                accumulator = groups[key].accumulators[j]
                accumulator[1] += count
                multiset = accumulator[0]
                if not multiset:
                    multiset[value] = count
                    if growth is not None:
                        size = entry_bytes + (agg_calls.text_bytes(value) if holds_text else 0)
                        growth[key] = growth.get(key, 0) + size
                    continue
                ((current, held),) = multiset.items()
                if value == current or (value < current if is_max else value > current):
                    multiset[current] = held + count
                    continue
                multiset.clear()
                multiset[value] = held + count
                if growth is not None and holds_text:
                    growth[key] = growth.get(key, 0) + agg_calls.text_bytes(value) - agg_calls.text_bytes(current)

    def _merge_values(self, query: ValueQuery, values: pa.Table, growth: dict[Key, int] | None) -> None:
        """Add a value query's signed counts to the multisets of the calls it serves.

        ``growth`` (bounded cache): each group's change of accounted bytes, from entries that came or went.
        """
        nkeys, width = len(self.group_keys), query.width
        keys = self._python_keys(values.columns[:nkeys], values.num_rows)
        columns = [_python_values(c) for c in values.columns[nkeys:]]
        parts = columns[:width]
        for position, convert in query.converters:
            parts[position] = [convert(v) for v in parts[position]]
        entries = parts[0] if width == 1 else list(zip(*parts))
        groups = self._groups
        for j, count_column in query.uses:
            entry_bytes, holds_text = self._multiset_entry_bytes[j]
            for key, entry, count in zip(keys, entries, columns[width + count_column]):
                if not count:
                    continue  # the chunk inserted and deleted it, or the FILTER excluded its rows
                accumulator = groups[key].accumulators[j]
                multiset = accumulator[0]
                accumulator[1] += count
                before = multiset.get(entry, 0)
                after = before + count
                if after:
                    multiset[entry] = after
                else:
                    del multiset[entry]
                if growth is not None and not (before and after):
                    size = entry_bytes + (agg_calls.text_bytes(entry) if holds_text else 0)
                    growth[key] = growth.get(key, 0) + (size if after else -size)

    def _restore(self, epoch: int) -> None:
        """Reload every group's state as committed at ``epoch`` (recovery without a cache budget)."""
        assert self.state is not None
        rows = self.state.snapshot(epoch)
        for key, encoded in zip(self._row_keys(rows), rows.column(len(self.group_keys)).to_pylist()):
            self._groups[key] = self._decode(key, encoded)

    def _row_keys(self, rows: pa.Table) -> list[Key]:
        """The group key of each state table row."""
        return self._python_keys(rows.columns[: len(self.group_keys)], rows.num_rows)

    def _python_keys(self, columns: list[pa.ChunkedArray], count: int) -> list[Key]:
        """The ``count`` group keys that the group columns ``columns`` hold, as the tuples groups are found by."""
        if not columns:
            return [()] * count
        fields, storage = self._key_fields, self._key_storage
        # Cast to the group column's type first: its integers must count the output type's unit.
        typed = [c if storage[i] is None else c.cast(fields[i].type) for i, c in enumerate(columns)]
        return list(zip(*(_python_values(c, storage[i]) for i, c in enumerate(typed))))  # few columns: zip is fast

    def _key_columns(self, keys: list[Key]) -> list[pa.Array]:
        """``keys`` as the state table's typed key columns."""
        return [pa.array(_column(keys, i), type=f.type) for i, f in enumerate(self._key_fields)]

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
        new_accumulators, new_bytes = self._new_accumulators, self._new_group_bytes
        entries = []
        for key in missing:
            found = loaded.get(key)
            entries.append((key, _Group(new_accumulators()), new_bytes) if found is None else (key, *found))
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
        """A cached group's accounted size (see GROUP_BYTES and ``agg_calls``).

        Linear in the group's multiset entries when they hold text, as is the encoding of its state.
        """
        size = self._group_fixed_bytes + encoded_key_bytes + encoded_state_bytes
        for j, (entry_bytes, holds_text) in self._multiset_entry_bytes.items():
            multiset = group.accumulators[j][0]
            size += entry_bytes * len(multiset)
            if holds_text:
                size += sum(map(agg_calls.text_bytes, multiset))
        if self._sized_outputs and group.emitted is not None:
            nkeys = len(self.group_keys)
            for j in self._sized_outputs:
                size += agg_calls.output_bytes(self.calls[j], group.emitted[nkeys + j])
        return size

    # ---- watermarks --------------------------------------------------------
    def _close_passed_groups(self) -> tuple[Chunk | None, list[Watermark]]:
        """Close every group below a key's new watermark: forget it (state row deleted), and with
        ``emit_on_window_close`` emit it. Returns those inserts and the output's new watermarks."""
        bounds = {
            i: value
            for i, value in self._watermarks.items()
            if i not in self._closed_below or value > self._closed_below[i]
        }
        if not bounds:
            return None, []
        closed = self._passed_groups(bounds)
        rows: list[tuple[Any, ...]] = []
        deleted: list[tuple[Key, bytes]] = []
        for key, group in closed.items():
            if self.emit_on_window_close and group.rows:
                rows.append((*key, *self._values(group)))
            if group.written is not None:
                deleted.append((key, group.written))
            self._dirty.discard(key)
            if self.cache is None:
                del self._groups[key]
        if deleted and self.state is not None:
            keys = [key for key, _ in deleted]
            batch = pa.RecordBatch.from_arrays(
                [*self._key_columns(keys), pa.array([state for _, state in deleted], pa.binary())],
                schema=self.state.schema,
            )
            self.state.write(Chunk.of(np.full(len(keys), Op.DELETE, dtype=np.int8), batch))
        self.groups_closed += len(closed)
        self._closed_below.update(bounds)
        output = self._chunk([Op.INSERT] * len(rows), rows) if rows else None
        return output, [Watermark(i, value) for i, value in sorted(bounds.items())]

    def _passed_groups(self, bounds: dict[int, Any]) -> dict[Key, _Group]:
        """The groups with a key column below its bound (``bounds``: key position -> watermark).

        With a cache they leave it here; the ones it lacks are decoded from the state table.
        """
        as_python = {i: self._python_bound(i, value) for i, value in bounds.items()}

        def passed(key: Key) -> bool:
            return any(key[i] is not None and key[i] < bound for i, bound in as_python.items())

        cache = self.cache
        if cache is None:
            return {key: group for key, group in self._groups.items() if passed(key)}
        # Every group is in the state table (committed at _state_epoch) or pinned in the cache (changed
        # this epoch): scan the one for the keys below their bounds, walk the other.
        found = {key: group for key, group in cache.dirty.items() if passed(key)}
        if self.state is not None and self._state_epoch:
            rows = self.state.snapshot(self._state_epoch)
            mask = None
            for i, value in bounds.items():
                below = pc.fill_null(pc.less(rows.column(i), pa.scalar(value, self._key_fields[i].type)), False)
                mask = below if mask is None else pc.or_(mask, below)
            rows = rows.filter(mask)
            for key, encoded in zip(self._row_keys(rows), rows.column(len(self.group_keys)).to_pylist()):
                if key not in found:
                    cached = cache.get(key)
                    found[key] = cached if cached is not None else self._decode(key, encoded)
        for key in found:
            cache.pop(key)
        return found

    def _python_bound(self, position: int, value: Any) -> Any:
        """A watermark of group column ``position`` as a Python value comparable with its keys."""
        bound = pa.scalar(value, self._key_fields[position].type)
        storage = self._key_storage[position]
        return (bound if storage is None else bound.cast(storage)).as_py()

    # ---- the barrier ------------------------------------------------------
    def flush(self) -> Chunk | None:
        """The changes of every group touched this epoch, as one chunk."""
        ops: list[int] = []
        rows: list[tuple[Any, ...]] = []
        groups, values, has_keys = self._groups, self._values, bool(self.group_keys)
        for key in self._dirty:
            group = groups[key]
            vanished = group.rows == 0 and has_keys
            new_row = None if vanished else (*key, *values(group))
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
        return self._chunk(ops, rows) if rows else None

    def _chunk(self, ops: list[int], rows: list[tuple[Any, ...]]) -> Chunk:
        """Output rows (group key, then aggregates) as a chunk."""
        arrays = [agg_calls.arrow_array(_column(rows, i), field.type) for i, field in enumerate(self.schema)]
        return Chunk.of(np.array(ops, dtype=np.int8), pa.RecordBatch.from_arrays(arrays, schema=self.schema))

    def _values(self, group: _Group) -> list[Any]:
        rows = group.rows
        if self._counts_rows_only:
            return [rows] * len(self.calls)
        return [agg_calls.output_value(c, a, rows) for c, a in zip(self.calls, group.accumulators)]

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


def _column(rows: list[tuple[Any, ...]], position: int) -> list[Any]:
    """Item ``position`` of every row. (``zip(*rows)`` over many rows costs several times more.)"""
    return list(map(itemgetter(position), rows))


def _extreme_calls(calls: list[AggCall], input_schema: pa.Schema) -> list[int]:
    """The calls that, over an append-only input, keep only their extreme value: MIN and MAX (not
    DISTINCT) of a type whose Python order is DuckDB's (not floats, whose NaN and -0.0 the multiset
    keys stand in for, nor intervals). The partial query then reduces each group of a chunk to its
    extreme, and Python handles a group per chunk instead of a (group, value) pair."""
    extremes = []
    for j, call in enumerate(calls):
        if call.kind not in ("min", "max") or call.distinct or call.arg is None:
            continue
        arrow_type = input_schema.field(call.arg).type
        ordered = (
            pa.types.is_integer(arrow_type)
            or pa.types.is_decimal(arrow_type)
            or pa.types.is_string(arrow_type)
            or pa.types.is_large_string(arrow_type)
            or pa.types.is_boolean(arrow_type)
            or (pa.types.is_temporal(arrow_type) and not pa.types.is_interval(arrow_type))
        )
        if ordered:
            extremes.append(j)
    return extremes


def _key_storage(arrow_type: pa.DataType) -> pa.DataType | None:
    """The integer type a group column of ``arrow_type`` is held as in Python, or None (as itself).

    Dates, times, timestamps and durations are held as the integers Arrow stores: they order and
    compare alike, ``pa.array`` takes them back as the type, and Arrow makes a Python int about 40
    times faster than a datetime (a window's bounds are group columns). Keys never enter the pickled
    accumulators, so this is no part of the state's format.
    """
    if pa.types.is_interval(arrow_type) or not pa.types.is_temporal(arrow_type):
        return None
    return pa.int32() if arrow_type.bit_width == 32 else pa.int64()


def _python_values(column: pa.Array | pa.ChunkedArray, storage: pa.DataType | None = None) -> list[Any]:
    """A column as Python values (cast to ``storage`` first, when given); integers without NULLs via
    numpy, which makes them about twice as fast as Arrow."""
    if storage is not None:
        column = column.cast(storage)
    if column.null_count == 0 and pa.types.is_integer(column.type):
        values: list[Any] = column.to_numpy().tolist()
        return values
    return column.to_pylist()


def agg_state_schema(output: pa.Schema, key_count: int) -> tuple[pa.Schema, list[int]]:
    """A HashAgg's state table: the ``key_count`` group columns of its ``output`` (the primary key),
    then the group's pickled accumulators."""
    keys = [pa.field(f"_group_key{i}", output.field(i).type) for i in range(key_count)]
    return pa.schema([*keys, pa.field("accumulators", pa.binary())]), list(range(key_count))
