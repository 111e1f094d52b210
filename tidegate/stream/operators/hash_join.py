"""HashJoin: the streaming equi-join (inner, left, right, full outer, left semi, left anti).

Place in the data flow: an operator of two inputs, fed by receivers or other
operators, feeding projections, aggregations or a materialize. Both inputs are
read with barrier alignment (``merge.aligned_messages``), so a record is applied
in its own epoch. A chunk is applied as it arrives, against the other side's
rows as they are at that moment: each pair of rows is joined exactly once, by
whichever of the two came second. A pair matches when every key pair is equal
and not NULL and the residual ``condition`` (DuckDB SQL over the pair row
``_0, _1, …``, left columns first) is TRUE; the condition runs once per chunk
over all of its candidate pairs.

Each side keeps its rows in a state table (``join_state_schema``: keyed by the
join key, then the side's stream key) and in memory in ``_Rows``: Arrow
segments in arrival order, found through runs of numpy arrays sorted by a
64-bit hash of the memcomparable join key. A chunk is looked up with a
``searchsorted`` per run, hash collisions are weeded out by comparing the
encoded keys of the candidate pairs, and outputs are built with ``take`` and
concatenation: without a cache budget, no Python object is made per row nor
per key. Runs and segments are merged like a binary counter (O(log n) of
each; a side of up to ``SMALL_ROWS`` rows keeps one of each), and deleted rows
are dropped once they outnumber the live ones.

Outer, semi and anti joins keep each row's *degree* (its number of matches) on
the side whose unmatched rows matter, in memory and in the state table's
``_degree`` column (a change rewrites the row with an update-insert, which the
state table applies as an upsert). A degree crossing 0 emits or retracts the
row's unmatched form: NULL-extended (outer) or the left row itself (anti); semi
emits the left row while its degree is positive. A row with a NULL join key
never matches and is not stored: its insert and delete pass straight through
in their unmatched form.

Output order keeps the chunk invariants: every output stream key (left pk +
right pk, NULL where a side is absent) belongs to one of three kinds of rows,
each emitted in an order that alternates per key: the other side's rows whose
degree crossed 0 over the chunk (at most one change each), the pairs, and this
side's rows in their unmatched form (both in the order of the input rows).

Memory (DESIGN §6): with ``cache_bytes``, each side's join keys live in a
bytes-bounded LRU cache (``stream/lru_cache.py``). The keys a chunk touches are
pinned in both sides' caches until the barrier; an evicted key's rows leave
memory. The keys a chunk needs that are not cached are read back with one
prefix lookup per side, skipped while a side has never evicted nor resumed.
Recovery then reads nothing up front; without a budget it reads both tables.

Watermarks are dropped (for now): the join's state is not cleaned by them, and
an outer join may retract a NULL-extended row of any age.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Chunk, Op
from tidegate.common.keys import decode_keys, encode_columns, encode_keys, key_width
from tidegate.errors import InternalError
from tidegate.state.state_table import StateTable
from tidegate.stream.evaluator import Evaluator
from tidegate.stream.lru_cache import LruCache
from tidegate.stream.messages import Barrier, Message, Watermark
from tidegate.stream.operator import Operator
from tidegate.stream.operators.merge import aligned_messages

__all__ = ["JOIN_TYPES", "HashJoin", "join_state_schema"]

JOIN_TYPES = ("inner", "left", "right", "full", "left_semi", "left_anti")
DEGREE_COLUMN = "_degree"
LEFT, RIGHT = 0, 1

# A cached join key is accounted this much beyond the length of its encoding: the bytes object and its
# slots in the cache's maps (tracemalloc on CPython 3.11 measures ~200 bytes for an 8-byte integer key).
# A row is accounted its share of the Arrow bytes of the batch it came in, plus what the index keeps per
# row (hash and position in a run, liveness, degree).
KEY_BYTES = 190
INDEX_ROW_BYTES = 25

# Up to this many rows a side keeps one segment and one run: each lookup then costs one search and
# one take, and copying the rows on each insert stays cheap.
SMALL_ROWS = 65_536

_EMPTY = np.zeros(0, np.int64)


def join_state_schema(
    input_schema: pa.Schema, join_keys: list[int], pk: list[int], *, with_degree: bool
) -> tuple[pa.Schema, list[int]]:
    """One side's state table: the side's columns (plus an int64 `_degree` column when with_degree) and its
    pk positions: the join key columns, then the side's stream key columns not already among them."""
    taken = {DEGREE_COLUMN} if with_degree else set()
    fields = []
    for i, field in enumerate(input_schema):
        # The store addresses columns by name: a name seen twice (a join of joins) gets its position.
        name = field.name if field.name not in taken else f"{field.name}_{i}"
        taken.add(name)
        fields.append(field.with_name(name))
    if with_degree:
        fields.append(pa.field(DEGREE_COLUMN, pa.int64(), nullable=False))
    return pa.schema(fields), _distinct([*join_keys, *pk])


def _distinct(columns: list[int]) -> list[int]:
    return list(dict.fromkeys(columns))


class HashJoin(Operator):
    name = "hash_join"

    def __init__(
        self,
        left: Operator,
        right: Operator,
        *,
        join_type: str,
        left_keys: list[int],
        right_keys: list[int],
        left_pk: list[int],
        right_pk: list[int],
        condition: str | None,
        schema: pa.Schema,
        left_state: StateTable,
        right_state: StateTable,
        actor_id: int,
        cache_bytes: int | None = None,
        aligned: bool = True,
    ) -> None:
        """``aligned=False``: at_least_once barriers (``merge.aligned_messages``)."""
        assert join_type in JOIN_TYPES, join_type
        assert left_keys and len(left_keys) == len(right_keys), (left_keys, right_keys)
        self.left, self.right = left, right
        self.join_type = join_type
        self.schema = schema
        self.actor_id = actor_id
        self.condition = condition
        self.aligned = aligned
        left_mode = {"left": "outer", "full": "outer", "left_semi": "semi", "left_anti": "anti"}.get(join_type)
        right_mode = "outer" if join_type in ("right", "full") else None
        self.sides = (
            _Side(LEFT, left.schema, left_keys, left_pk, left_state, left_mode, cache_bytes),
            _Side(RIGHT, right.schema, right_keys, right_pk, right_state, right_mode, cache_bytes),
        )
        self._emits_pairs = join_type in ("inner", "left", "right", "full")
        self._evaluator = Evaluator() if condition is not None else None
        expected = len(left.schema) + (len(right.schema) if self._emits_pairs else 0)
        assert len(schema) == expected, (join_type, schema)

    @property
    def stream_key(self) -> list[int]:
        """The output columns that identify an output row: left pk, then right pk (semi/anti: left pk)."""
        left, right = self.sides
        if not self._emits_pairs:
            return list(left.pk)
        return [*left.pk, *(len(left.schema) + i for i in right.pk)]

    # ---- the stream -------------------------------------------------------
    async def execute(self) -> AsyncIterator[Message]:
        started = False
        inputs = [self.left, self.right]
        async with contextlib.aclosing(
            aligned_messages(inputs, self.actor_id, self.name, aligned=self.aligned)
        ) as messages:
            async for index, message in messages:
                if isinstance(message, Barrier):
                    for side in self.sides:
                        if started:
                            side.end_epoch(message.epoch.prev)
                        else:
                            side.start(message.epoch.prev)
                    started = True
                    yield message
                elif isinstance(message, Watermark):
                    continue
                else:
                    assert started, f"{self.name}: a chunk before the first barrier"
                    output = self.apply(index, message) if len(message) else None
                    if output is not None:
                        yield output

    def apply(self, index: int, chunk: Chunk) -> Chunk | None:
        """Apply a chunk of input ``index`` (LEFT or RIGHT); the output changes it causes."""
        this, other = self.sides[index], self.sides[1 - index]
        data = chunk.data
        if not data.schema.equals(this.schema):
            data = pa.RecordBatch.from_arrays(data.columns, schema=this.schema)
        signs = chunk.signs()
        keys = this.encode(data)
        if this.cache is not None:
            this.bring_in(keys)
            other.bring_in(keys)
        pair_rows, pair_positions, pairs = self._match(index, data, keys, other)
        blocks: list[tuple[np.ndarray, pa.RecordBatch]] = []
        if other.mode is not None:
            blocks.append(self._other_transitions(other, signs[pair_rows], pair_positions))
        if pairs is not None and self._emits_pairs:
            blocks.append((_ops_of(signs[pair_rows]), pairs))
        matches = np.bincount(pair_rows, minlength=len(data))
        if this.mode is not None:
            blocks.append(self._own_rows(this, data, signs, matches))
        this.store(data, signs, keys, matches)
        this.finish_chunk()
        other.finish_chunk()
        return self._assemble(blocks)

    def _match(
        self, index: int, data: pa.RecordBatch, keys: _Keys, other: _Side
    ) -> tuple[np.ndarray, np.ndarray, pa.RecordBatch | None]:
        """The matching pairs: (chunk row, other side position) in chunk row order, and their pair rows
        (left columns, then right columns) when the output or the condition needs them."""
        queries, positions = other.rows.lookup(keys.hashes[keys.rows])
        pair_rows = keys.rows[queries]
        needs_rows = self._emits_pairs or self.condition is not None
        other_rows = other.rows.take(positions, None if needs_rows else other.keys)
        key_columns = other.keys if needs_rows else range(len(other.keys))
        # Equal hashes are candidates; equal encoded keys are matches.
        found = encode_columns([other_rows.column(c) for c in key_columns], row_count=len(positions))
        same = _true(pc.equal(keys.encoded.take(pa.array(pair_rows)), found))
        if not same.all():
            pair_rows, positions, other_rows = pair_rows[same], positions[same], other_rows.filter(pa.array(same))
        if not needs_rows:
            return pair_rows, positions, None
        mine = data.take(pa.array(pair_rows)).columns
        left, right = (mine, other_rows.columns) if index == LEFT else (other_rows.columns, mine)
        pairs = pa.RecordBatch.from_arrays([*left, *right], names=[f"_{i}" for i in range(len(left) + len(right))])
        if self._evaluator is not None and self.condition is not None and len(pair_rows):
            holds = _true(self._evaluator.select(pairs, self.condition).column(0))
            pair_rows, positions, pairs = pair_rows[holds], positions[holds], pairs.filter(pa.array(holds))
        return pair_rows, positions, pairs

    def _other_transitions(
        self, other: _Side, pair_signs: np.ndarray, pair_positions: np.ndarray
    ) -> tuple[np.ndarray, pa.RecordBatch]:
        """Apply the pairs to the other side's degrees; the rows whose degree crossed 0 emit or retract.

        Only the chunk's net change counts: a row matched and unmatched again within one chunk (an
        update of its partner) emits nothing, and none emits more than once, so its key alternates.
        """
        touched, inverse = np.unique(pair_positions, return_inverse=True)
        delta = np.bincount(inverse, weights=pair_signs, minlength=len(touched)).astype(np.int64)
        changed = np.flatnonzero(delta)
        touched, delta = touched[changed], delta[changed]
        before = other.rows.degrees(touched)
        after = before + delta
        if np.any(after < 0):
            raise InternalError(f"hash_join: the match count of a row of {other.name} went negative")
        gained, lost = (before == 0) & (after > 0), (before > 0) & (after == 0)
        events = gained | lost
        # Outer and anti rows are emitted while unmatched, semi rows while matched.
        ops = np.where(gained[events] == (other.mode == "semi"), Op.INSERT, Op.DELETE).astype(np.int8)
        rows = self._shape(other, other.rows.take(touched[events]))
        other.set_degrees(touched, after)
        return ops, rows

    def _own_rows(
        self, this: _Side, data: pa.RecordBatch, signs: np.ndarray, matches: np.ndarray
    ) -> tuple[np.ndarray, pa.RecordBatch]:
        """This chunk's rows in their unmatched form (outer, anti) or matched form (semi)."""
        emitted = np.flatnonzero(matches > 0 if this.mode == "semi" else matches == 0)
        return _ops_of(signs[emitted]), self._shape(this, data.take(pa.array(emitted)))

    def _shape(self, side: _Side, rows: pa.RecordBatch) -> pa.RecordBatch:
        """A side's rows as output rows: as they are (semi, anti) or NULL-extended (outer)."""
        if not self._emits_pairs:
            return pa.RecordBatch.from_arrays(rows.columns, schema=self.schema)
        padding = [pa.nulls(rows.num_rows, f.type) for f in self.sides[1 - side.index].schema]
        columns = [*rows.columns, *padding] if side.index == LEFT else [*padding, *rows.columns]
        return pa.RecordBatch.from_arrays(columns, schema=self.schema)

    def _assemble(self, blocks: list[tuple[np.ndarray, pa.RecordBatch]]) -> Chunk | None:
        blocks = [(ops, rows) for ops, rows in blocks if len(ops)]
        if not blocks:
            return None
        ops = np.concatenate([o for o, _ in blocks])
        batches = [pa.RecordBatch.from_arrays(rows.columns, schema=self.schema) for _, rows in blocks]
        return Chunk.of(ops, _concat_batches(batches, self.schema))


@dataclass
class _Keys:
    """A chunk's join keys: encoded, hashed, the rows without a NULL key, and (for caches) distinct."""

    encoded: pa.Array
    hashes: np.ndarray
    rows: np.ndarray
    distinct: list[bytes] | None = None

    def distinct_keys(self) -> list[bytes]:
        if self.distinct is None:
            self.distinct = self.encoded.take(pa.array(self.rows)).unique().to_pylist()
        return self.distinct


class _Side:
    """One input of the join: its key columns, its rows in memory, its state table and its key cache.

    ``mode`` says what its rows' degrees are for: None (not kept), "outer" (emit NULL-extended while
    unmatched), "semi" (emit while matched) or "anti" (emit while unmatched).
    """

    def __init__(
        self,
        index: int,
        schema: pa.Schema,
        keys: list[int],
        pk: list[int],
        state: StateTable,
        mode: str | None,
        cache_bytes: int | None,
    ) -> None:
        assert len(state.schema) == len(schema) + (mode is not None), (state.schema, schema, mode)
        self.index = index
        self.schema = schema
        self.keys = keys
        self.pk = pk
        self.state = state
        self.mode = mode
        self.name = ("the left side", "the right side")[index]
        self.rows = _Rows(schema, mode is not None)
        self._key_fields = [schema.field(k) for k in keys]
        self._key_width = key_width([f.type for f in self._key_fields])
        self.cache = None if cache_bytes is None else _EvictingCache(cache_bytes)
        # Whether memory holds every key's rows: false once the cache evicted, or after resuming with one.
        self._complete = True
        self._state_epoch = 0  # the epoch the state table was last committed at or resumed from
        self._epoch_changes: list[tuple[np.ndarray, np.ndarray]] = []  # key hashes of rows added (+1) or removed (-1)

    # ---- keys -------------------------------------------------------------
    def encode(self, data: pa.RecordBatch) -> _Keys:
        n = data.num_rows
        columns = [data.column(k) for k in self.keys]
        encoded = encode_columns(columns, row_count=n)
        nulls = [np.asarray(c.is_null().to_numpy(zero_copy_only=False), bool) for c in columns if c.null_count]
        rows = np.flatnonzero(~np.logical_or.reduce(nulls)) if nulls else np.arange(n)
        return _Keys(encoded, _hash_keys(encoded, self._key_width), rows)

    # ---- rows -------------------------------------------------------------
    def store(self, data: pa.RecordBatch, signs: np.ndarray, keys: _Keys, matches: np.ndarray) -> None:
        """Apply a chunk's net effect to this side's rows, in memory and in the state table.

        Per stream key the chunk's ops alternate: only a leading delete removes a stored row and only a
        trailing insert stores one; the rows in between come and go within the chunk.
        """
        n = data.num_rows
        if np.all(signs > 0):
            deletes, inserts = _EMPTY, keys.rows
        else:
            stream_keys = encode_keys(data, self.pk).dictionary_encode().indices.to_numpy(zero_copy_only=False)
            _, first = np.unique(stream_keys, return_index=True)
            _, last_reversed = np.unique(stream_keys[::-1], return_index=True)
            valid = np.zeros(n, bool)
            valid[keys.rows] = True
            is_first, is_last = np.zeros(n, bool), np.zeros(n, bool)
            is_first[first] = True
            is_last[n - 1 - last_reversed] = True
            deletes = np.flatnonzero(is_first & (signs < 0) & valid)
            inserts = np.flatnonzero(is_last & (signs > 0) & valid)
        if self.cache is not None:
            self._epoch_changes += [
                (keys.hashes[inserts], np.ones(len(inserts))),
                (keys.hashes[deletes], -np.ones(len(deletes))),
            ]
        if len(deletes):
            found = self._find(data, deletes, keys.hashes[deletes])
            degree = self.rows.degrees(found) if self.mode is not None else None
            self.state.write(self._state_chunk(Op.DELETE, self.rows.take(found), degree))
            self.rows.kill(found)
        if len(inserts):
            rows = data if len(inserts) == n else data.take(pa.array(inserts))
            degree = matches[inserts] if self.mode is not None else None
            self.state.write(self._state_chunk(Op.INSERT, rows, degree))
            self.rows.add(rows, keys.hashes[inserts], degree)

    def _find(self, data: pa.RecordBatch, deletes: np.ndarray, hashes: np.ndarray) -> np.ndarray:
        """The position of the stored row each deleted row removes: same join key, same stream key."""
        queries, candidates = self.rows.lookup(hashes)
        identity = [*self.keys, *self.pk]
        stored = encode_keys(self.rows.take(candidates, identity), list(range(len(identity))))
        wanted = encode_keys(data.take(pa.array(deletes[queries])), identity)
        same = _true(pc.equal(stored, wanted))
        found_for = queries[same]
        if len(found_for) != len(deletes) or np.any(np.bincount(found_for, minlength=len(deletes)) != 1):
            raise InternalError(f"hash_join: a delete of a row that {self.name} does not hold")
        return candidates[same]

    def set_degrees(self, positions: np.ndarray, degrees: np.ndarray) -> None:
        """Rewrite the degrees of stored rows (an update-insert upserts each row's state)."""
        if not len(positions):
            return
        self.rows.set_degrees(positions, degrees)
        self.state.write(self._state_chunk(Op.UPDATE_INSERT, self.rows.take(positions), degrees))

    def _state_chunk(self, op: Op, rows: pa.RecordBatch, degree: np.ndarray | None) -> Chunk:
        columns = list(rows.columns)
        if self.mode is not None:
            assert degree is not None
            columns.append(pa.array(degree, pa.int64()))
        batch = pa.RecordBatch.from_arrays(columns, schema=self.state.schema)
        return Chunk.of(np.full(batch.num_rows, op, np.int8), batch)

    def _restore(self, rows: pa.Table) -> pa.RecordBatch:
        """Add rows read from the state table to memory; they come back in this side's schema."""
        batch = _concat_batches(rows.to_batches(), rows.schema)
        data = pa.RecordBatch.from_arrays(batch.columns[: len(self.schema)], schema=self.schema)
        if data.num_rows:
            degree = batch.column(len(self.schema)).to_numpy().astype(np.int64) if self.mode is not None else None
            encoded = encode_keys(data, self.keys)
            self.rows.add(data, _hash_keys(encoded, self._key_width), degree)
        return data

    # ---- epochs -----------------------------------------------------------
    def start(self, epoch: int) -> None:
        """On the first barrier: resume from the state committed at ``epoch`` (0: there is none)."""
        self._state_epoch = epoch
        if epoch and self.cache is None:
            self._restore(self.state.snapshot(epoch))
        elif epoch:
            self._complete = False  # keys are read back on demand

    def end_epoch(self, epoch: int) -> None:
        self.state.commit(epoch)
        self._state_epoch = epoch
        if self.cache is not None:
            self._account_epoch()
            self.cache.mark_all_clean()  # the epoch's keys are written: they may now be evicted
            self._forget_evicted()
        self.rows.compact()

    def finish_chunk(self) -> None:
        self._forget_evicted()
        self.rows.compact()

    # ---- the bounded cache ------------------------------------------------
    def bring_in(self, keys: _Keys) -> None:
        """Pin the chunk's keys in this side's cache, reading the rows of those it lacks from the state table."""
        assert self.cache is not None
        distinct = keys.distinct_keys()
        missing = self.cache.mark_dirty(distinct)
        if not missing:
            return
        sizes = dict.fromkeys(missing, 0)
        if not self._complete:
            for key, size in self._load(missing).items():
                sizes[key] = size
        self.cache.put_many([(key, True, KEY_BYTES + len(key) + size) for key, size in sizes.items()], dirty=True)
        self._forget_evicted()

    def _load(self, missing: list[bytes]) -> dict[bytes, int]:
        """Bring the stored rows of ``missing`` keys into memory: one prefix lookup; their bytes per key.

        Read from the store at ``_state_epoch``: a state table rebuilt for recovery reads at its own
        last commit, which it does not know before its first one. A key that is not cached was not
        touched this epoch (touched keys stay pinned), so it has no uncommitted write to miss.
        """
        decoded = decode_keys(pa.array(missing, pa.binary()), pa.schema(self._key_fields))
        prefix = [self.keys.index(c) for c in _distinct(self.keys)]
        names = [self.state.schema.names[c] for c in _distinct(self.keys)]
        prefixes = pa.Table.from_arrays([decoded.column(i) for i in prefix], names=names)
        table = self.state.store.get_prefix_rows(self.state.table_id, prefixes, self._state_epoch)
        data = self._restore(table)
        if not data.num_rows:
            return {}
        dictionary = encode_keys(data, self.keys).dictionary_encode()
        counts = np.bincount(dictionary.indices.to_numpy(zero_copy_only=False), minlength=len(dictionary.dictionary))
        row_bytes = self.rows.row_bytes()
        return {key: int(count * row_bytes) for key, count in zip(dictionary.dictionary.to_pylist(), counts)}

    def _account_epoch(self) -> None:
        """Resize the keys whose rows this epoch added or removed: once per epoch, not per chunk.

        The epoch's changes are kept as key hashes, so the sizes of two keys that share a hash would be
        mixed up: a cost estimate, never a result.
        """
        assert self.cache is not None
        changes, self._epoch_changes = self._epoch_changes, []
        pinned = list(self.cache.dirty)
        if not changes or not pinned:
            return
        hashes, inverse = np.unique(np.concatenate([h for h, _ in changes]), return_inverse=True)
        if not len(hashes):
            return
        net_rows = np.bincount(inverse, weights=np.concatenate([s for _, s in changes]), minlength=len(hashes))
        pinned_hashes = _hash_keys(pa.array(pinned, pa.binary()), self._key_width)
        at = np.minimum(np.searchsorted(hashes, pinned_hashes), len(hashes) - 1)
        delta_bytes = np.where(hashes[at] == pinned_hashes, net_rows[at], 0) * self.rows.row_bytes()
        changed = np.flatnonzero(delta_bytes)
        size_of = self.cache.size_of
        resized = [pinned[i] for i in changed.tolist()]
        self.cache.resize_many(
            [
                (key, max(KEY_BYTES + len(key), size_of(key) + delta))
                for key, delta in zip(resized, delta_bytes[changed].astype(np.int64).tolist())
            ]
        )

    def _forget_evicted(self) -> None:
        """Drop from memory the rows of the keys the cache evicted (all of them are in the state table)."""
        if self.cache is None or not self.cache.evicted:
            return
        self._complete = False
        evicted = pa.array(self.cache.evicted, pa.binary())
        self.cache.evicted = []
        queries, candidates = self.rows.lookup(_hash_keys(evicted, self._key_width))
        stored = encode_keys(self.rows.take(candidates, self.keys), list(range(len(self.keys))))
        self.rows.kill(candidates[_true(pc.equal(stored, evicted.take(pa.array(queries))))])


class _EvictingCache(LruCache[bytes, bool]):
    """An LruCache of join keys that notes which keys it evicts, so that their rows leave memory too."""

    def __init__(self, capacity_bytes: int) -> None:
        super().__init__(capacity_bytes)
        self.evicted: list[bytes] = []

    def evict(self) -> int:
        # LruCache.evict drops the oldest clean entries until the accounted bytes fit: the same walk
        # here names them first.
        excess = self.used_bytes - self.capacity_bytes
        victims: list[bytes] = []
        if excess > 0:
            freed = 0
            for key in self._clean:
                victims.append(key)
                freed += self._sizes[key]
                if freed >= excess:
                    break
        evicted = super().evict()
        assert evicted == len(victims) and not any(key in self for key in victims), (evicted, len(victims))
        self.evicted += victims
        return evicted


class _Rows:
    """One side's rows in memory, each at a position that stays put until ``compact`` drops deleted rows.

    The rows are Arrow segments in arrival order, liveness and degrees numpy arrays by position. The
    index is a list of runs, each a pair of numpy arrays (key hashes sorted, positions). Segments and
    runs are merged while the newer is as large as the older (a binary counter): O(log n) of each, so a
    lookup is a ``searchsorted`` per run and a row is copied O(log n) times over its life.
    """

    def __init__(self, schema: pa.Schema, with_degree: bool) -> None:
        self.schema = schema
        self.with_degree = with_degree
        self._segments: list[pa.RecordBatch] = []
        self._starts = np.zeros(1, np.int64)  # each segment's first position, then the total
        self._runs: list[tuple[np.ndarray, np.ndarray]] = []
        self._alive = np.zeros(0, bool)
        self._degree = np.zeros(0, np.int64)
        self.size = 0  # positions handed out
        self.live = 0

    def add(self, rows: pa.RecordBatch, hashes: np.ndarray, degree: np.ndarray | None) -> None:
        start, end = self.size, self.size + len(hashes)
        if end > len(self._alive):  # grow by doubling: O(1) amortized per row
            capacity = max(2 * len(self._alive), end, 1024)
            self._alive = np.concatenate([self._alive[:start], np.zeros(capacity - start, bool)])
            if self.with_degree:
                self._degree = np.concatenate([self._degree[:start], np.zeros(capacity - start, np.int64)])
        self._alive[start:end] = True
        if degree is not None:
            self._degree[start:end] = degree
        self.size, self.live = end, self.live + len(hashes)
        segments = self._segments
        segments.append(rows)
        while len(segments) > 1 and _should_merge(segments[-2].num_rows, segments[-1].num_rows, end):
            newer = segments.pop()
            segments.append(_concat_batches([segments.pop(), newer], self.schema))
        self._starts = np.concatenate([[0], np.cumsum([s.num_rows for s in segments])]).astype(np.int64)
        order = np.argsort(hashes, kind="stable")
        runs = self._runs
        runs.append((hashes[order], np.arange(start, end, dtype=np.int64)[order]))
        while len(runs) > 1 and _should_merge(len(runs[-2][0]), len(runs[-1][0]), end):
            newer_run = runs.pop()
            runs.append(_merge_runs([runs.pop(), newer_run]))

    def compact(self) -> None:
        """Drop deleted rows once they outnumber the live ones (every position changes)."""
        dead = self.size - self.live
        if dead <= max(self.live, 1024):
            return
        kept = np.flatnonzero(self._alive[: self.size])
        renumbered = np.full(self.size, -1, np.int64)
        renumbered[kept] = np.arange(len(kept))
        hashes, positions = _merge_runs(self._runs)
        alive = self._alive[positions]
        self._runs = [(hashes[alive], renumbered[positions[alive]])] if len(kept) else []
        self._segments = [self.take(kept)] if len(kept) else []
        self._starts = np.array([0, len(kept)] if len(kept) else [0], np.int64)
        self._degree = self._degree[kept] if self.with_degree else self._degree
        self._alive = np.ones(len(kept), bool)
        self.size = self.live = len(kept)

    def lookup(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The live rows with each hash: (index into ``hashes``, position), in the order of ``hashes``."""
        if not self._runs or not len(hashes):
            return _EMPTY, _EMPTY
        # Sorted needles make each binary search start where the last one ended: several times faster.
        by_hash = np.argsort(hashes)
        needles = hashes[by_hash]
        queries: list[np.ndarray] = []
        positions: list[np.ndarray] = []
        for run_hashes, run_positions in self._runs:
            low = np.searchsorted(run_hashes, needles, "left")
            counts = np.searchsorted(run_hashes, needles, "right") - low
            total = int(counts.sum())
            if not total:
                continue
            found = run_positions[_ragged_arange(low, counts, total)]
            alive = self._alive[found]
            queries.append(np.repeat(by_hash, counts)[alive])
            positions.append(found[alive])
        if not queries:
            return _EMPTY, _EMPTY
        query, position = np.concatenate(queries), np.concatenate(positions)
        order = np.argsort(query, kind="stable")
        return query[order], position[order]

    def take(self, positions: np.ndarray, columns: list[int] | None = None) -> pa.RecordBatch:
        """The rows at ``positions`` (only ``columns`` of them, if given), in that order."""
        schema = self.schema if columns is None else pa.schema([self.schema.field(c) for c in columns])
        if not len(positions):
            return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
        segments = self._segments if columns is None else [s.select(columns) for s in self._segments]
        if len(segments) == 1:
            return segments[0].take(pa.array(positions))
        segment = np.searchsorted(self._starts, positions, "right") - 1
        order = np.argsort(segment, kind="stable")
        bounds = np.searchsorted(segment[order], np.arange(len(segments) + 1))
        offsets = (positions - self._starts[segment])[order]
        pieces = [
            s.take(pa.array(offsets[bounds[i] : bounds[i + 1]]))
            for i, s in enumerate(segments)
            if bounds[i] < bounds[i + 1]
        ]
        inverse = np.empty(len(order), np.int64)
        inverse[order] = np.arange(len(order))
        return _concat_batches(pieces, schema).take(pa.array(inverse))

    def row_bytes(self) -> float:
        """What a row is accounted: the average Arrow bytes of a stored row, and its index entries."""
        return sum(s.nbytes for s in self._segments) / max(self.size, 1) + INDEX_ROW_BYTES

    def degrees(self, positions: np.ndarray) -> np.ndarray:
        return self._degree[positions]

    def set_degrees(self, positions: np.ndarray, degrees: np.ndarray) -> None:
        self._degree[positions] = degrees

    def kill(self, positions: np.ndarray) -> None:
        self._alive[positions] = False
        self.live -= len(positions)


def _should_merge(older: int, newer: int, total: int) -> bool:
    """Whether to merge two adjacent segments (or runs): a small table is kept whole, a large one in
    pieces of geometrically falling sizes."""
    return total <= SMALL_ROWS or older <= newer


def _merge_runs(runs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Index runs as one run sorted by hash: a linear merge, each run's entries placed by a binary search."""
    hashes, positions = runs[0]
    for newer_hashes, newer_positions in runs[1:]:
        total = len(hashes) + len(newer_hashes)
        slots = np.searchsorted(hashes, newer_hashes, "right") + np.arange(len(newer_hashes))
        older = np.ones(total, bool)
        older[slots] = False
        merged_hashes, merged_positions = np.empty(total, np.uint64), np.empty(total, np.int64)
        merged_hashes[slots], merged_hashes[older] = newer_hashes, hashes
        merged_positions[slots], merged_positions[older] = newer_positions, positions
        hashes, positions = merged_hashes, merged_positions
    return hashes, positions


# ---- vectorized helpers ------------------------------------------------------------------------
_MULTIPLIERS = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_POLY = 0x100000001B3  # odd, so it has an inverse modulo 2**64
_POLY_INVERSE = pow(_POLY, -1, 2**64)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: every input bit flips about half the output bits."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MULTIPLIERS[0]
    x = x ^ (x >> np.uint64(27))
    x = x * _MULTIPLIERS[1]
    return x ^ (x >> np.uint64(31))


def _hash_keys(encoded: pa.Array, width: int | None) -> np.ndarray:
    """A 64-bit hash of each encoded key: equal keys hash equal.

    ``width`` is the keys' fixed length (None: variable). Both sides hash keys of the same types the
    same way, so the method follows the types, never the lengths a chunk happens to have.
    """
    n = len(encoded)
    offset_type = np.int64 if pa.types.is_large_binary(encoded.type) else np.int32
    offsets = np.frombuffer(encoded.buffers()[1], offset_type)[encoded.offset : encoded.offset + n + 1]
    data_buffer = encoded.buffers()[2]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    data = data[int(offsets[0]) : int(offsets[-1])] if n else data[:0]
    with np.errstate(over="ignore"):
        if width is not None:
            words = -(-width // 8)
            padded = np.zeros((n, words * 8), np.uint8)
            padded[:, :width] = data.reshape(n, width)
            hashes = np.full(n, width, np.uint64)
            for word in padded.view(np.uint64).T:
                hashes = _mix(hashes ^ word)
            return hashes
        # A polynomial over the bytes (each + 1, so zeros count), made position-free with inverse powers.
        relative = (offsets - offsets[0]).astype(np.int64)
        powers = np.cumprod(np.full(len(data) + 1, _POLY, np.uint64)) * np.uint64(_POLY_INVERSE)
        inverse_powers = np.cumprod(np.full(len(data) + 1, _POLY_INVERSE, np.uint64)) * np.uint64(_POLY)
        sums = np.zeros(len(data) + 1, np.uint64)
        np.cumsum((data.astype(np.uint64) + np.uint64(1)) * powers[:-1], out=sums[1:])
        spans = (sums[relative[1:]] - sums[relative[:-1]]) * inverse_powers[relative[:-1]]
        return _mix(spans ^ _mix(np.diff(relative).astype(np.uint64)))


def _ragged_arange(starts: np.ndarray, counts: np.ndarray, total: int) -> np.ndarray:
    """``concatenate([arange(s, s + c) for s, c in zip(starts, counts)])`` without a Python loop."""
    before = np.cumsum(counts) - counts
    return np.repeat(starts - before, counts) + np.arange(total)


def _true(mask: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A boolean Arrow array as numpy, NULL as false."""
    return np.asarray(pc.fill_null(mask, False).to_numpy(zero_copy_only=False), bool)


def _ops_of(signs: np.ndarray) -> np.ndarray:
    return np.where(signs > 0, Op.INSERT, Op.DELETE).astype(np.int8)


def _concat_batches(batches: list[pa.RecordBatch], schema: pa.Schema) -> pa.RecordBatch:
    if len(batches) == 1:
        return batches[0]
    combined = pa.Table.from_batches(batches, schema).combine_chunks().to_batches()
    if not combined:
        return pa.RecordBatch.from_arrays([pa.array([], f.type) for f in schema], schema=schema)
    return combined[0]
