"""TopN: ``ORDER BY … LIMIT n [OFFSET m]`` and ranked windows filtered by their rank.

Place in the data flow (DESIGN §4): a unary operator before a Materialize (or
another operator), for a view's ``ORDER BY … LIMIT`` (one group) and for
``row_number()`` / ``rank()`` / ``dense_rank()`` ``OVER (PARTITION BY … ORDER
BY …)`` filtered by ``<= n``. Per group, rows are ranked by the order keys, ties
broken by the input's stream key (so ``row_number`` is deterministic); the
output holds the rows whose rank r has ``offset < r <= offset + limit`` (with
``rank``, every tie at the boundary), optionally with r as a last column, and
keeps the input's stream key.

Why this design:

- **Bytes as sort keys**: the order columns memcomparable-encoded, each after a
  flag that puts NULLs where PostgreSQL does, then the stream key. Ranking is
  ``bytes`` comparison, and a chunk is encoded with numpy at once.
- **Sorted keys per group** (``_SortedKeys``): O(log n) per insert or delete.
- **Rows stay in Arrow** (``_RowStore``): a group maps each sort key to a row
  reference; output rows are taken back with Arrow, exactly as they came.
- **Append-only rows are filtered with Arrow first**: one comparison per chunk
  against each full group's entry limit, so Python sees only rows that may enter.
- **Changes are emitted per barrier**: each touched group's new top against the
  top it last emitted; deletes, then update pairs, then inserts, so a row that
  moves between groups keeps "per key, inserts and deletes alternate" (§11).

State (DESIGN §6): the state table (``top_n_state_schema``) holds every live
input row, keyed by (group keys, order key, stream key), so a deleted top row
can be replaced by the next. With ``append_only`` a row pushed below offset +
limit can never come back: it leaves memory and state, which stay bounded by
the tops. Recovery reads the state at the first barrier's ``prev`` epoch; the
tops computed from it are what downstream holds. With ``cache_bytes`` the groups
live in a byte-bounded LRU cache (``stream/lru_cache.py``): a chunk's groups are
pinned until the barrier that emits and writes them, the rest may be evicted
with their rows, and missing groups are read back by one prefix read per chunk
(their emitted top recomputed: a group is evicted only after a barrier emitted
it). Recovery with a budget reads nothing up front.

Limits: a global TopN keeps its one group, every live row of it, in memory
whatever the budget; watermarks are dropped (a delete can bring an old row back).
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Chunk, Op
from tidegate.common.keys import decode_keys, encode_columns, key_width
from tidegate.errors import FeatureNotSupported
from tidegate.state.state_table import StateTable
from tidegate.stream.lru_cache import LruCache
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator

__all__ = ["RANK_KINDS", "SortKey", "TopN", "encode_order_keys", "top_n_state_schema"]

RANK_KINDS = ("row_number", "rank", "dense_rank")
ORDER_KEY_COLUMN = "_order_key"
RANK_TYPE = pa.int64()
# The row store is compacted on a barrier once it holds this many dead rows and more dead rows than live ones:
# the copy then costs O(1) amortized per row that died.
COMPACT_MIN_DEAD_ROWS = 65_536
# What ``_Group.emitted`` holds per output row: (row reference << RANK_BITS) | rank. One int, not a tuple:
# ints are not tracked by the garbage collector, and the emitted rows of every group live long. References
# stay below 2**39 (compaction renumbers from 0 once dead rows outnumber live ones), so the packed values
# fit an int64 and are unpacked with numpy.
RANK_BITS = 24
_RANK_MASK = (1 << RANK_BITS) - 1
# What a cached group is accounted, as CPython 3.11 allocates it (tracemalloc; test_top_n.py measures again):
# per group its objects and the cache's map entries; per row held, its sort key's bytes object beyond the
# key's length, its slots in the group's dict and sorted list, and its row reference; per emitted row, its
# slot in ``emitted`` and the packed int. A row's Arrow bytes are added as measured on the input.
GROUP_BYTES = 900
ROW_BYTES = 110
EMITTED_ROW_BYTES = 50
# Where the order key is variable-width, each sort key ends with the order key's length in this many bytes,
# so that rank ties can be found. A fixed-width suffix after the (prefix-free) key never changes the order.
ORDER_LENGTH_BYTES = 4


@dataclass(frozen=True)
class SortKey:
    column: int
    descending: bool = False
    nulls_first: bool | None = None  # None: PostgreSQL's default (NULLS LAST for ASC, FIRST for DESC)

    @property
    def puts_nulls_first(self) -> bool:
        return self.descending if self.nulls_first is None else self.nulls_first


def encode_order_keys(data: pa.RecordBatch | pa.Table, order_by: list[SortKey]) -> pa.Array:
    """One memcomparable key per row whose byte order is the SQL order of ``order_by``.

    The key encoding alone sorts NULLs first ascending and last descending, the opposite of
    PostgreSQL's defaults; so each column is preceded by a boolean that sorts NULLs where asked.
    """
    columns: list[pa.Array | pa.ChunkedArray] = []
    descending: list[bool] = []
    for key in order_by:
        column = data.column(key.column)
        columns.append(pc.is_valid(column) if key.puts_nulls_first else pc.is_null(column))
        columns.append(column)
        descending += [False, key.descending]
    return encode_columns(columns, descending, row_count=data.num_rows)


def top_n_state_schema(
    input_schema: pa.Schema, group_keys: list[int], order_by: list[SortKey], input_pk: list[int]
) -> tuple[pa.Schema, list[int]]:
    """A TopN's state table: the input columns (named by position, so no input name can clash) and the
    encoded order key; keyed by (group keys, order key, the stream key columns that are not group keys)."""
    assert all(0 <= k.column < len(input_schema) for k in order_by), order_by
    fields = [pa.field(f"_{i}", field.type) for i, field in enumerate(input_schema)]
    fields.append(pa.field(ORDER_KEY_COLUMN, pa.binary()))
    # Within a group its key columns are equal, so repeating them would not order or identify anything.
    pk = [*group_keys, len(input_schema), *(i for i in input_pk if i not in group_keys)]
    return pa.schema(fields), pk


class _SortedKeys:
    """Distinct byte strings in sorted order: sorted sublists of at most 2 * LOAD keys, and each one's
    largest key. An add or remove bisects the maxima, then one sublist; walking from the smallest is cheap."""

    __slots__ = ("_lists", "_maxes", "size")
    LOAD = 256

    def __init__(self) -> None:
        self._lists: list[list[bytes]] = []
        self._maxes: list[bytes] = []
        self.size = 0  # read directly in hot loops: cheaper than len()

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[bytes]:
        return itertools.chain.from_iterable(self._lists)

    def __getitem__(self, index: int) -> bytes:
        assert 0 <= index < self.size, (index, self.size)
        for sublist in self._lists:
            if index < len(sublist):
                return sublist[index]
            index -= len(sublist)
        raise AssertionError("unreachable")

    def last(self) -> bytes:
        return self._lists[-1][-1]

    def head(self, count: int) -> list[bytes]:
        """The ``count`` smallest keys (fewer if there are not as many)."""
        lists = self._lists
        if lists and len(lists[0]) >= count:
            return lists[0][:count]  # the common case: a top lies within the first sublist
        return list(itertools.islice(self, count))

    def add(self, key: bytes) -> None:
        lists, maxes = self._lists, self._maxes
        self.size += 1
        if not maxes:
            lists.append([key])
            maxes.append(key)
            return
        i = bisect.bisect_left(maxes, key)
        if i == len(maxes):  # a new largest key: the common case of a growing top
            i -= 1
            lists[i].append(key)
            maxes[i] = key
        else:
            bisect.insort(lists[i], key)
        if len(lists[i]) > 2 * self.LOAD:
            upper = lists[i][self.LOAD :]
            del lists[i][self.LOAD :]
            maxes[i] = lists[i][-1]
            lists.insert(i + 1, upper)
            maxes.insert(i + 1, upper[-1])

    def remove(self, key: bytes) -> None:
        lists, maxes = self._lists, self._maxes
        i = bisect.bisect_left(maxes, key)
        assert i < len(maxes), "remove of a key that is not there"
        sublist = lists[i]
        j = bisect.bisect_left(sublist, key)
        assert sublist[j] == key, "remove of a key that is not there"
        del sublist[j]
        self.size -= 1
        if not sublist:
            del lists[i]
            del maxes[i]
            return
        maxes[i] = sublist[-1]
        if len(sublist) < self.LOAD // 2 and len(lists) > 1:
            # Merge a small sublist into a neighbour, so deletes cannot leave many tiny sublists behind.
            left = i - 1 if i + 1 == len(lists) else i
            lists[left].extend(lists.pop(left + 1))
            del maxes[left + 1]
            maxes[left] = lists[left][-1]
            if len(lists[left]) > 2 * self.LOAD:
                upper = lists[left][self.LOAD :]
                del lists[left][self.LOAD :]
                maxes[left] = lists[left][-1]
                lists.insert(left + 1, upper)
                maxes.insert(left + 1, upper[-1])

    def pop_last(self) -> bytes:
        key = self._lists[-1].pop()
        self.size -= 1
        if self._lists[-1]:
            self._maxes[-1] = self._lists[-1][-1]
        else:
            self._lists.pop()
            self._maxes.pop()
        return key


class _RowStore:
    """Input rows held by reference, in Arrow segments of the batches they arrived in.

    A row's reference is its sequence number: rows are numbered in the order they are stored, and a
    segment holds a run of consecutive numbers. So adjacent segments can be concatenated without
    touching any reference, and they are, like a binary counter (a segment is merged into its elder
    while that one is at most twice its size): O(log n) segments, so gathering rows costs a few takes
    however many batches they came in. ``held_rows`` counts every stored row, live or not; the owner
    decides when enough are dead to ``compact``, which renumbers the live rows.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._segments: list[pa.RecordBatch] = []
        self._starts: list[int] = []  # each segment's first reference
        self._next = 0  # the reference of the next row stored
        self.held_rows = 0

    def reserve(self) -> int:
        """The reference the first row of the next ``put`` will have (rows are referenced before they are stored)."""
        return self._next

    def put(self, base: int, batch: pa.RecordBatch) -> None:
        assert base == self._next, (base, self._next)
        if not batch.num_rows:
            return
        self._segments.append(batch)
        self._starts.append(base)
        self._next += batch.num_rows
        self.held_rows += batch.num_rows
        segments = self._segments
        while len(segments) > 1 and segments[-2].num_rows <= 2 * segments[-1].num_rows:
            merged = _one_batch(segments[-2:], self.schema)
            del segments[-1], self._starts[-1]
            segments[-1] = merged

    def take(self, refs: list[int] | np.ndarray) -> pa.RecordBatch:
        """The referenced rows, in the order of ``refs``: one Arrow take per segment they come from."""
        if not len(refs):
            return _empty_batch(self.schema)
        wanted = np.asarray(refs, np.int64)
        starts = np.asarray(self._starts, np.int64)
        segment_of = np.searchsorted(starts, wanted, "right") - 1
        by_segment = np.argsort(segment_of, kind="stable")
        sorted_segments = segment_of[by_segment]
        bounds = np.flatnonzero(np.r_[True, sorted_segments[1:] != sorted_segments[:-1], True])
        parts = []
        for begin, end in itertools.pairwise(bounds.tolist()):
            segment = int(sorted_segments[begin])
            rows = wanted[by_segment[begin:end]] - starts[segment]
            parts.append(self._segments[segment].take(pa.array(rows)))
        gathered = _one_batch(parts, self.schema)
        if len(parts) == 1:
            return gathered  # one segment: the stable sort left the rows in their order
        inverse = np.empty(len(refs), np.int64)
        inverse[by_segment] = np.arange(len(refs))
        return gathered.take(pa.array(inverse))

    def compact(self, refs: list[int]) -> None:
        """Keep only the rows of ``refs``, renumbered 0, 1, … in that order."""
        kept = self.take(refs)
        self._segments, self._starts, self.held_rows, self._next = [], [], 0, 0
        self.put(0, kept)


class _GroupCache(LruCache[bytes, "_Group"]):
    """An LruCache of groups that hands back the groups it evicts, so that their rows leave memory too."""

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self.evicted: list[tuple[bytes, _Group]] = []

    def evict(self) -> int:
        # LruCache.evict drops the oldest clean entries until the accounted bytes fit: the same walk names them.
        excess = self.used_bytes - self.capacity_bytes
        victims: list[tuple[bytes, _Group]] = []
        if excess > 0:
            freed = 0
            for key, group in self._clean.items():
                victims.append((key, group))
                freed += self._sizes[key]
                if freed >= excess:
                    break
        evicted = super().evict()
        assert evicted == len(victims), (evicted, len(victims))
        self.evicted += victims
        return evicted

    def groups(self) -> list[_Group]:
        """Every cached group, pinned or not."""
        return [*self._clean.values(), *self.dirty.values()]


class _Group:
    """One group: the sort keys of its rows in rank order, each one's row reference, and what was emitted.

    ``emitted`` maps the sort key of each output row downstream holds to its row reference and rank (0
    unless the rank is emitted), packed as ``ref << RANK_BITS | rank``: the exact row to delete when it
    leaves. ``full`` (append-only) says a row ranked after every held row with a different order value
    cannot enter.
    """

    __slots__ = ("emitted", "full", "keys", "rows")

    def __init__(self) -> None:
        self.keys = _SortedKeys()
        self.rows: dict[bytes, int] = {}
        self.emitted: dict[bytes, int] = {}
        self.full = False


@dataclass
class _Encoded:
    """A chunk's rows encoded: group keys (None without group keys), sort keys and order keys."""

    group_keys: pa.Array | None
    sort_keys: pa.Array
    order_keys: pa.Array


class TopN(Operator):
    name = "top_n"

    def __init__(
        self,
        input: Operator,
        *,
        group_keys: list[int],
        order_by: list[SortKey],
        limit: int,
        offset: int = 0,
        rank_kind: str = "row_number",
        emit_rank: bool = False,
        input_pk: list[int],
        append_only: bool = False,
        schema: pa.Schema,
        state: StateTable,
        cache_bytes: int | None = None,
        actor_id: int | None = None,
    ) -> None:
        assert rank_kind in RANK_KINDS, rank_kind
        assert limit > 0 and offset >= 0, (limit, offset)
        if offset + limit > _RANK_MASK:
            raise FeatureNotSupported(f"a streaming top-N keeps at most {_RANK_MASK:,} rows per group (offset + limit)")
        # Ties are broken by the stream key; an input without one (a global aggregate) holds at most
        # one row, so it has no ties to break.
        assert len(set(group_keys)) == len(group_keys), group_keys
        expected = [f.type for f in input.schema] + ([RANK_TYPE] if emit_rank else [])
        assert [f.type for f in schema] == expected, (schema, expected)
        self.input = input
        self.group_keys = group_keys
        self.order_by = order_by
        self.limit = limit
        self.offset = offset
        self.rank_kind = rank_kind
        self.emit_rank = emit_rank
        self.input_pk = input_pk
        self.append_only = append_only
        self.schema = schema
        self.state = state
        self.actor_id = actor_id
        # The largest rank of an output row: rows ranked after it are outside the output.
        self._end = offset + limit
        # Groups by encoded group key: a global TopN's one group is b"". With a budget, the cache holds them
        # and ``_groups`` is its map of pinned groups, where a chunk's groups are once it brought them in.
        self.cache = _GroupCache(cache_bytes) if cache_bytes is not None and group_keys else None
        self._groups: dict[bytes, _Group] = {} if self.cache is None else self.cache.dirty
        # Whether the operator resumed from a checkpoint: then the cache may lack groups the state table has.
        self._resumed = False
        # The epoch the state table was last committed at (or resumed from).
        self._state_epoch = 0
        # A held row's accounted bytes (see ROW_BYTES): updated from each chunk's sort keys and Arrow bytes.
        self._row_bytes = ROW_BYTES
        # The groups touched since the last barrier (a dict: its order, unlike a set's, is reproducible).
        self._dirty: dict[bytes, None] = {}
        self._rows = _RowStore(input.schema)
        self.live_rows = 0
        order_types: list[pa.DataType] = []
        for key in order_by:
            order_types += [pa.bool_(), input.schema.field(key.column).type]
        # Every order key's byte length, when all order columns are fixed-width (then no length suffix).
        self._order_width = key_width(order_types)
        # Append-only: per full group, the largest sort key (row_number) or order key (rank, dense_rank) a
        # row may have and still enter; and the same as Arrow arrays, rebuilt when it changed.
        self._entry_limits: dict[bytes, bytes] = {}
        self._entry_limit_arrays: tuple[pa.Array, pa.Array] | None = None
        # Limits changed since the arrays were built. Limits only ever drop, so stale arrays filter less
        # but never wrongly: they are rebuilt once an eighth of the limits changed, O(1) per change.
        self._entry_limits_changed = 0

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
                else:
                    output = self.flush()
                    if output is not None:
                        yield output
                    self._end_epoch(message.epoch.prev)
                yield message
                if self.actor_id is not None and message.stops(self.actor_id):
                    return
            # Watermarks are dropped: a delete may bring a row below any watermark back into the output.

    # ---- encoding ---------------------------------------------------------
    def _encode(self, data: pa.RecordBatch) -> _Encoded:
        count = data.num_rows
        group_keys = encode_columns([data.column(i) for i in self.group_keys]) if self.group_keys else None
        order = encode_order_keys(data, self.order_by)
        pk = encode_columns([data.column(i) for i in self.input_pk], row_count=count)
        parts = [order, pk]
        if self._order_width is None:
            lengths = pc.binary_length(order).to_numpy().astype(f">u{ORDER_LENGTH_BYTES}")
            offsets = pa.py_buffer(np.arange(count + 1, dtype=np.int32) * ORDER_LENGTH_BYTES)
            parts.append(pa.Array.from_buffers(pa.binary(), count, [None, offsets, pa.py_buffer(lengths.tobytes())]))
        return _Encoded(group_keys, pc.binary_join_element_wise(*parts, b""), order)

    def _order_of(self, sort_key: bytes) -> bytes:
        """The order-key part of a sort key: what rank ties compare."""
        width = self._order_width
        if width is None:
            width = int.from_bytes(sort_key[-ORDER_LENGTH_BYTES:], "big")
        return sort_key[:width]

    def _conform(self, data: pa.RecordBatch) -> pa.RecordBatch:
        """``data`` with exactly the input schema, so the stored batches can be concatenated."""
        if data.schema.equals(self.input.schema):
            return data
        return pa.RecordBatch.from_arrays(list(data.columns), schema=self.input.schema)

    # ---- applying a chunk -------------------------------------------------
    def apply(self, chunk: Chunk) -> None:
        data = self._conform(chunk.data)
        encoded = self._encode(data)
        if self.cache is not None:
            key_bytes = pc.mean(pc.binary_length(encoded.sort_keys)).as_py() or 0
            self._row_bytes = ROW_BYTES + round(key_bytes + data.nbytes / data.num_rows)
        if self.append_only:
            assert chunk.is_insert_only(), "an append-only TopN received a retraction"
            candidates = self._candidates(encoded)
            if len(candidates):
                self._apply_append_only(data, encoded, candidates)
        else:
            if self.cache is not None:
                assert encoded.group_keys is not None
                self._bring_in(encoded.group_keys)
            self._apply_changes(data, chunk.signs() > 0, encoded)

    def _apply_changes(self, data: pa.RecordBatch, inserting: np.ndarray, encoded: _Encoded) -> None:
        """Every live row is held: an insert adds its key, a delete removes it."""
        base = self._rows.reserve()
        position = base  # only inserted rows are stored, in chunk order
        groups, dirty = self._groups, self._dirty
        group_keys = [b""] * data.num_rows if encoded.group_keys is None else encoded.group_keys.to_pylist()
        for group_key, sort_key, inserts in zip(group_keys, encoded.sort_keys.to_pylist(), inserting.tolist()):
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = _Group()
            dirty[group_key] = None
            if inserts:
                group.keys.add(sort_key)
                group.rows[sort_key] = position
                position += 1
            else:
                del group.rows[sort_key]
                group.keys.remove(sort_key)
        inserted = position - base
        self._rows.put(base, data if inserted == data.num_rows else data.filter(pa.array(inserting)))
        self.live_rows += 2 * inserted - data.num_rows
        ops = np.where(inserting, np.int8(Op.INSERT), np.int8(Op.DELETE))
        self._write_state(ops, data, encoded.order_keys)

    def _apply_append_only(self, data: pa.RecordBatch, encoded: _Encoded, candidates: np.ndarray) -> None:
        """Only rows that rank within offset + limit are held; a row pushed out is forgotten for good."""
        chosen = pa.array(candidates)
        if encoded.group_keys is None:
            group_keys = [b""] * len(candidates)
        else:
            chosen_keys = encoded.group_keys.take(chosen)
            if self.cache is not None:
                self._bring_in(chosen_keys)
            group_keys = chosen_keys.to_pylist()
        base = self._rows.reserve()
        admitted: list[int] = []  # chunk positions of the rows held from this chunk
        dropped: list[int] = []  # positions in ``admitted`` of those that were pushed out again
        pushed_out: list[int] = []  # references of rows from earlier chunks that were pushed out
        row_number, end = self.rank_kind == "row_number", self._end
        order_of = self._order_of
        groups, dirty, limits = self._groups, self._dirty, self._entry_limits
        for i, group_key, sort_key in zip(candidates.tolist(), group_keys, encoded.sort_keys.take(chosen).to_pylist()):
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = _Group()
            keys = group.keys
            if group.full:
                # Entry limits are as of the chunk's start: rows admitted since may have lowered them.
                last = keys.last()
                if (sort_key > last) if row_number else (order_of(sort_key) > order_of(last)):
                    continue
            ref = base + len(admitted)
            admitted.append(i)
            keys.add(sort_key)
            group.rows[sort_key] = ref
            dirty[group_key] = None
            if row_number:  # the common case, inlined: at most one row pushed out
                outs = [keys.pop_last()] if keys.size > end else []
                group.full = keys.size >= end
            else:
                outs = self._prune(group)
            for out in outs:
                out_ref = group.rows.pop(out)
                if out_ref >= base:
                    dropped.append(out_ref - base)
                else:
                    pushed_out.append(out_ref)
            if group.full:
                last = keys.last()
                limits[group_key] = last if row_number else order_of(last)
                self._entry_limits_changed += 1
        if not admitted:
            return
        self.live_rows += len(admitted) - len(dropped) - len(pushed_out)
        self._rows.put(base, data.take(pa.array(admitted, pa.int64())))
        # The state gains the rows still held from this chunk and loses the earlier ones pushed out.
        kept = np.ones(len(admitted), bool)
        kept[dropped] = False
        indices = pa.array(np.asarray(admitted, np.int64)[kept])
        self._write_state(
            np.full(len(indices), Op.INSERT, np.int8), data.take(indices), encoded.order_keys.take(indices)
        )
        if pushed_out:
            gone = self._rows.take(pushed_out)
            ops = np.full(len(pushed_out), Op.DELETE, np.int8)
            self._write_state(ops, gone, encode_order_keys(gone, self.order_by))

    def _candidates(self, encoded: _Encoded) -> np.ndarray:
        """Positions of the rows that may enter their group's top (append-only), found with Arrow: a row
        of a full group whose key is beyond the group's entry limit is out, and stays out."""
        count = len(encoded.sort_keys)
        limits = self._entry_limits
        if not limits:
            return np.arange(count)
        compared = encoded.sort_keys if self.rank_kind == "row_number" else encoded.order_keys
        if encoded.group_keys is None:
            beyond = pc.greater(compared, pa.scalar(limits[b""], pa.binary()))
        else:
            if self._entry_limit_arrays is None or 8 * self._entry_limits_changed > len(limits):
                self._entry_limit_arrays = (pa.array(list(limits), pa.binary()), pa.array(list(limits.values())))
                self._entry_limits_changed = 0
            groups, entry_limits = self._entry_limit_arrays
            # A row of a group that is not full meets a NULL limit: NULL, and then kept.
            beyond = pc.greater(compared, entry_limits.take(pc.index_in(encoded.group_keys, value_set=groups)))
        out = pc.fill_null(beyond, False).to_numpy(zero_copy_only=False)
        return np.flatnonzero(~out)

    def _prune(self, group: _Group) -> list[bytes]:
        """Remove the keys of ``group`` ranked after offset + limit (append-only); returns them."""
        keys, end = group.keys, self._end
        out: list[bytes] = []
        if self.rank_kind == "row_number":
            while len(keys) > end:
                out.append(keys.pop_last())
            group.full = len(keys) >= end
        elif self.rank_kind == "rank":
            # A row after position ``end`` keeps rank <= end only if it ties with the row at ``end``.
            if len(keys) > end:
                boundary = self._order_of(keys[end - 1])
                while len(keys) > end and self._order_of(keys.last()) != boundary:
                    out.append(keys.pop_last())
            group.full = len(keys) >= end
        else:
            distinct, previous, cut = 0, None, len(keys)
            for position, key in enumerate(keys):
                order = self._order_of(key)
                if order != previous:
                    distinct, previous = distinct + 1, order
                    if distinct > end:
                        cut = position
                        distinct = end
                        break
            out = [keys.pop_last() for _ in range(len(keys) - cut)]
            group.full = distinct >= end
        return out

    def _write_state(self, ops: np.ndarray, rows: pa.RecordBatch, order: pa.Array) -> None:
        if not len(ops):
            return
        batch = pa.RecordBatch.from_arrays([*rows.columns, order], schema=self.state.schema)
        self.state.write(Chunk(pa.array(ops, pa.int8()), batch))

    # ---- the barrier ------------------------------------------------------
    def _top(self, group: _Group) -> dict[bytes, int]:
        """Sort key -> ``ref << RANK_BITS | rank`` (rank 0 unless emitted) of each output row of ``group``."""
        rows, end, offset = group.rows, self._end, self.offset
        if self.rank_kind == "row_number":
            keys = group.keys.head(end)[offset:]
            if not self.emit_rank:
                return {key: rows[key] << RANK_BITS for key in keys}
            return {key: rows[key] << RANK_BITS | rank for rank, key in enumerate(keys, start=offset + 1)}
        dense = self.rank_kind == "dense_rank"
        out: dict[bytes, int] = {}
        rank, previous = 0, None
        for position, key in enumerate(group.keys, start=1):
            order = self._order_of(key)
            if order != previous:
                rank, previous = (rank + 1 if dense else position), order
                if rank > end:
                    break
            if rank > offset:
                out[key] = rows[key] << RANK_BITS | (rank if self.emit_rank else 0)
        return out

    def flush(self) -> Chunk | None:
        """The output changes of every group touched since the last barrier, as one chunk."""
        deleted: list[int] = []  # ref << RANK_BITS | rank
        inserted: list[int] = []
        groups = self._groups
        for group_key in self._dirty:
            group = groups[group_key]
            before = group.emitted
            after = self._top(group)
            if after != before:
                # An entry that differs in reference (a row replaced under the same sort key, e.g. an
                # update of another column) or in emitted rank is deleted and inserted again.
                now, then = after.items(), before.items()
                deleted += [item[1] for item in then if item not in now]
                inserted += [item[1] for item in now if item not in then]
                group.emitted = after
            if not group.rows:
                if self.cache is None:
                    del groups[group_key]
                else:
                    self.cache.pop(group_key)
        self._dirty.clear()
        if not deleted and not inserted:
            return None
        return self._changes(deleted, inserted)

    def _changes(self, deleted: list[int], inserted: list[int]) -> Chunk:
        """Deletes, then update pairs (a stream key both deleted and inserted), then inserts."""
        changed = np.array(deleted + inserted, np.int64)
        rows = self._rows.take(changed >> RANK_BITS)
        count = len(deleted)
        keys = encode_columns([rows.column(i) for i in self.input_pk], row_count=rows.num_rows)
        # For each inserted row, the deleted row with the same stream key, if any (at most one: the
        # output holds at most one row per stream key).
        match = pc.index_in(keys.slice(count), value_set=keys.slice(0, count))
        paired = np.asarray(match.is_valid().to_numpy(zero_copy_only=False), bool)
        paired_inserts = np.flatnonzero(paired)
        paired_deletes = np.asarray(match.drop_null().to_numpy(), np.int64)
        lone_deletes = np.setdiff1d(np.arange(count), paired_deletes, assume_unique=True)
        lone_inserts = np.flatnonzero(~paired)
        pairs = np.empty(2 * len(paired_inserts), np.int64)
        pairs[0::2] = paired_deletes
        pairs[1::2] = count + paired_inserts
        positions = np.concatenate([lone_deletes, pairs, count + lone_inserts]).astype(np.int64)
        ops = np.concatenate(
            [
                np.full(len(lone_deletes), Op.DELETE, np.int8),
                np.tile(np.array([Op.UPDATE_DELETE, Op.UPDATE_INSERT], np.int8), len(paired_inserts)),
                np.full(len(lone_inserts), Op.INSERT, np.int8),
            ]
        )
        columns = list(rows.take(pa.array(positions)).columns)
        if self.emit_rank:
            columns.append(pa.array((changed & _RANK_MASK)[positions], RANK_TYPE))
        return Chunk.of(ops, pa.RecordBatch.from_arrays(columns, schema=self.schema))

    def _maybe_compact(self) -> None:
        """Copy the live rows out of batches that hold mostly dead ones (after a flush: every emitted
        row is then live, so emitted references can be rebuilt from the groups)."""
        dead = self._rows.held_rows - self.live_rows
        if dead <= max(self.live_rows, COMPACT_MIN_DEAD_ROWS):
            return
        groups = list(self._groups.values()) if self.cache is None else self.cache.groups()
        self._rows.compact([ref for group in groups for ref in group.rows.values()])
        ref = 0
        for group in groups:
            rows = group.rows
            for key in rows:
                rows[key] = ref
                ref += 1
            group.emitted = {key: rows[key] << RANK_BITS | value & _RANK_MASK for key, value in group.emitted.items()}

    # ---- epochs, recovery and the bounded cache ----------------------------
    def _start(self, epoch: int) -> None:
        """On the first barrier: resume from the state committed at ``epoch`` (0: there is none)."""
        self._state_epoch = epoch
        if not epoch:
            return
        if self.cache is None:
            self._groups.update(self._hold(self.state.snapshot(epoch)))
        else:
            self._resumed = True  # groups are read back on demand

    def _end_epoch(self, epoch: int) -> None:
        """After the epoch's changes went out: commit the state, let the cache evict, compact the rows."""
        self.state.commit(epoch)
        self._state_epoch = epoch
        cache = self.cache
        if cache is not None:
            cache.resize_many([(key, self._group_bytes(group)) for key, group in cache.dirty.items()])
            cache.mark_all_clean()  # the epoch's groups are written and emitted: they may now be evicted
            self._forget_evicted()
        self._maybe_compact()

    def _hold(self, table: pa.Table) -> dict[bytes, _Group]:
        """Groups rebuilt from state table rows, each with the top downstream holds for it."""
        if not table.num_rows:
            return {}
        columns = [column.combine_chunks() for column in table.columns[: len(self.input.schema)]]
        data = pa.RecordBatch.from_arrays(columns, schema=self.input.schema)
        encoded = self._encode(data)
        base = self._rows.reserve()
        self._rows.put(base, data)
        self.live_rows += data.num_rows
        groups: dict[bytes, _Group] = {}
        group_keys = [b""] * data.num_rows if encoded.group_keys is None else encoded.group_keys.to_pylist()
        for ref, group_key, sort_key in zip(itertools.count(base), group_keys, encoded.sort_keys.to_pylist()):
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = _Group()
            group.keys.add(sort_key)
            group.rows[sort_key] = ref
        for group_key, group in groups.items():
            if self.append_only:
                pruned = self._prune(group)  # sets ``full``; the state held only rows within the limit
                assert not pruned, "the state holds rows beyond the limit"
                if group.full:
                    last = group.keys.last()
                    self._entry_limits[group_key] = last if self.rank_kind == "row_number" else self._order_of(last)
                    self._entry_limits_changed += 1
            group.emitted = self._top(group)
        return groups

    def _bring_in(self, group_keys: pa.Array) -> None:
        """Pin the groups of ``group_keys`` in the cache, reading those it lacks from the state table."""
        cache = self.cache
        assert cache is not None
        missing = cache.mark_dirty(pc.unique(group_keys).to_pylist())
        if not missing:
            return
        # The cache holds every group unless some were evicted or the operator resumed from a checkpoint.
        loaded = self._load(missing) if self._resumed or cache.evictions else {}
        entries = []
        for key in missing:
            group = loaded.get(key) or _Group()
            entries.append((key, group, self._group_bytes(group)))
        cache.put_many(entries, dirty=True)
        self._forget_evicted()

    def _load(self, missing: list[bytes]) -> dict[bytes, _Group]:
        """The committed groups among ``missing``: one prefix read of the state table for all of them.

        Read from the store at ``_state_epoch``: a state table rebuilt for recovery reads at its own last
        commit, which it does not know before its first one. A group that is not cached was not touched
        this epoch (touched groups stay pinned), so it has no uncommitted write to miss.
        """
        fields = pa.schema([self.state.schema.field(i) for i in self.group_keys])
        prefixes = decode_keys(pa.array(missing, pa.binary()), fields)
        return self._hold(self.state.store.get_prefix_rows(self.state.table_id, prefixes, self._state_epoch))

    def _group_bytes(self, group: _Group) -> int:
        """A cached group's accounted size (see GROUP_BYTES)."""
        return GROUP_BYTES + len(group.rows) * self._row_bytes + len(group.emitted) * EMITTED_ROW_BYTES

    def _forget_evicted(self) -> None:
        """The rows of evicted groups leave memory (the state table holds them all)."""
        cache = self.cache
        if cache is None or not cache.evicted:
            return
        for key, group in cache.evicted:
            self.live_rows -= len(group.rows)
            # An evicted group's limit stays true (limits only drop), but its memory goes with the group;
            # the arrays may keep it until they are rebuilt.
            self._entry_limits.pop(key, None)
        cache.evicted = []


def _empty_batch(schema: pa.Schema) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)


def _one_batch(parts: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    batches = pa.Table.from_batches(parts, schema=schema).combine_chunks().to_batches()
    return batches[0] if batches else _empty_batch(schema)
