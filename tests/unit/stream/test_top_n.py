"""TopN: ORDER BY … LIMIT / OFFSET and ranked windows, kept up to date under inserts, updates and deletes."""

from __future__ import annotations

import functools
import itertools
import random
import zlib
from dataclasses import dataclass, field

import duckdb
import pyarrow as pa
import pytest
from cache_budget import SpyStore, accounted_and_allocated_bytes
from scripted import (
    DEL,
    INS,
    UD,
    UI,
    Change,
    Row,
    ScriptedSource,
    SpyStateTable,
    apply_changes,
    assert_alternating,
    barrier,
    changes,
    chunk,
    deletes,
    inserts,
    per_barrier,
    run,
    stream,
    table_rows,
)

from tidegate.common.chunk import Chunk
from tidegate.errors import FeatureNotSupported
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message, StopMutation
from tidegate.stream.operator import CheckedOperator
from tidegate.stream.operators import top_n as top_n_module
from tidegate.stream.operators.top_n import SortKey, TopN, _RowStore, _SortedKeys, top_n_state_schema

SCHEMA = pa.schema([("id", pa.int64()), ("g", pa.int32()), ("v", pa.int32()), ("s", pa.string())])
PK = [0]
BY_V = [SortKey(2)]
TABLE_ID = 1


def top_n(
    messages: list[Message],
    *,
    group_keys: list[int] | None = None,
    order_by: list[SortKey] | None = None,
    limit: int = 3,
    offset: int = 0,
    rank_kind: str = "row_number",
    emit_rank: bool = False,
    append_only: bool = False,
    store: MemoryStateStore | None = None,
    actor_id: int | None = None,
    cache_bytes: int | None = None,
) -> TopN:
    group_keys = [] if group_keys is None else group_keys
    order_by = BY_V if order_by is None else order_by
    state_schema, state_pk = top_n_state_schema(SCHEMA, group_keys, order_by, PK)
    state = SpyStateTable(store or MemoryStateStore(), TABLE_ID, state_schema, state_pk)
    output = pa.schema([*SCHEMA, pa.field("r", pa.int64())]) if emit_rank else SCHEMA
    return TopN(
        ScriptedSource(SCHEMA, messages),
        group_keys=group_keys,
        order_by=order_by,
        limit=limit,
        offset=offset,
        rank_kind=rank_kind,
        emit_rank=emit_rank,
        input_pk=PK,
        append_only=append_only,
        schema=output,
        state=state,
        actor_id=actor_id,
        cache_bytes=cache_bytes,
    )


def rows(*values: tuple) -> list[Row]:
    """Input rows from (id, v) pairs, all in group 0 with s NULL."""
    return [(i, 0, v, None) for i, v in values]


def view(output: list[Message]) -> dict[Row, int]:
    """What downstream holds after applying every emitted change (asserting the stream invariants)."""
    emitted = changes(output)
    assert_alternating(emitted, key=lambda row: row[0])
    return apply_changes(emitted)


def ids(live: dict[Row, int]) -> list[int]:
    return sorted(row[0] for row in live)


# ---- ORDER BY … LIMIT … OFFSET over one group --------------------------------
def test_delete_of_a_top_row_brings_in_the_next_and_an_insert_pushes_the_last_out() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 5), (2, 3), (3, 9), (4, 1), (5, 7))),
        barrier(2),
        deletes(SCHEMA, rows((2, 3))),
        barrier(3),
        inserts(SCHEMA, rows((6, 0))),
        barrier(4),
    ]
    epochs = per_barrier(run(top_n(messages)))
    assert sorted(epochs[1]) == [(INS, (1, 0, 5, None)), (INS, (2, 0, 3, None)), (INS, (4, 0, 1, None))]
    assert epochs[2] == [(DEL, (2, 0, 3, None)), (INS, (5, 0, 7, None))]
    assert epochs[3] == [(DEL, (5, 0, 7, None)), (INS, (6, 0, 0, None))]


def test_changes_below_the_top_emit_nothing_and_a_change_undone_within_an_epoch_emits_nothing() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1), (2, 2), (3, 3))),
        barrier(2),
        inserts(SCHEMA, rows((4, 10))),
        deletes(SCHEMA, rows((4, 10))),
        barrier(3),
        inserts(SCHEMA, rows((5, 0))),
        deletes(SCHEMA, rows((5, 0))),
        barrier(4),
    ]
    epochs = per_barrier(run(top_n(messages)))
    assert len(epochs[1]) == 3
    assert epochs[2] == [] and epochs[3] == []


def test_offset_skips_the_first_rows_and_shifts_when_one_of_them_goes() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1), (2, 2), (3, 3), (4, 4), (5, 5))),
        barrier(2),
        deletes(SCHEMA, rows((1, 1))),
        barrier(3),
    ]
    output = run(top_n(messages, limit=2, offset=1))
    epochs = per_barrier(output)
    assert sorted(epochs[1]) == [(INS, (2, 0, 2, None)), (INS, (3, 0, 3, None))]
    assert epochs[2] == [(DEL, (2, 0, 2, None)), (INS, (4, 0, 4, None))]
    assert ids(view(output)) == [3, 4]


def test_top_n_per_group() -> None:
    data = [(1, 1, 5, None), (2, 1, 3, None), (3, 2, 8, None), (4, 1, 1, None), (5, 2, 2, None), (6, 2, 9, None)]
    messages = [barrier(1), inserts(SCHEMA, data), barrier(2), deletes(SCHEMA, [data[3]]), barrier(3)]
    output = run(top_n(messages, group_keys=[1], limit=2))
    epochs = per_barrier(output)
    assert ids(apply_changes(epochs[1])) == [2, 3, 4, 5]
    assert epochs[2] == [(DEL, data[3]), (INS, data[0])]
    assert ids(view(output)) == [1, 2, 3, 5]


def test_null_group_keys_form_one_group() -> None:
    data = [(1, None, 5, None), (2, None, 3, None), (3, None, 8, None), (4, 7, 9, None)]
    output = run(top_n([barrier(1), inserts(SCHEMA, data), barrier(2)], group_keys=[1], limit=2))
    assert ids(view(output)) == [1, 2, 4]


@pytest.mark.parametrize(
    ("key", "expected_order"),
    [
        (SortKey(2), [3, 4, 1, 2]),  # ASC: NULLS LAST
        (SortKey(2, descending=True), [2, 1, 4, 3]),  # DESC: NULLS FIRST
        (SortKey(2, nulls_first=True), [2, 3, 4, 1]),
        (SortKey(2, descending=True, nulls_first=False), [1, 4, 3, 2]),
    ],
)
def test_descending_and_null_placement(key: SortKey, expected_order: list[int]) -> None:
    data = rows((1, 3), (2, None), (3, 1), (4, 2))
    output = run(top_n([barrier(1), inserts(SCHEMA, data), barrier(2)], order_by=[key], limit=4, emit_rank=True))
    ranks = {row[0]: row[-1] for row in view(output)}
    assert sorted(ranks, key=ranks.__getitem__) == expected_order


def test_second_order_key_and_string_order() -> None:
    """ORDER BY s DESC, v: variable-width order keys, ties on s broken by v, then by id."""
    data = [(1, 0, 5, "b"), (2, 0, 1, "b"), (3, 0, 9, "ab"), (4, 0, 0, "a"), (5, 0, 1, "b"), (6, 0, 2, None)]
    order_by = [SortKey(3, descending=True), SortKey(2)]
    output = run(top_n([barrier(1), inserts(SCHEMA, data), barrier(2)], order_by=order_by, limit=5, emit_rank=True))
    ranks = {row[0]: row[-1] for row in view(output)}
    assert ranks == {6: 1, 2: 2, 5: 3, 1: 4, 3: 5}


def test_row_number_breaks_ties_by_the_stream_key() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((5, 1), (3, 1), (9, 1), (1, 1))),
        barrier(2),
        deletes(SCHEMA, rows((1, 1))),
        barrier(3),
    ]
    output = run(top_n(messages, limit=2, emit_rank=True))
    epochs = per_barrier(output)
    assert sorted(epochs[1]) == [(INS, (1, 0, 1, None, 1)), (INS, (3, 0, 1, None, 2))]
    assert sorted(epochs[2]) == sorted(
        [(DEL, (1, 0, 1, None, 1)), (UD, (3, 0, 1, None, 2)), (UI, (3, 0, 1, None, 1)), (INS, (5, 0, 1, None, 2))]
    )


# ---- rank and dense_rank -----------------------------------------------------
def test_rank_includes_every_tie_at_the_boundary() -> None:
    data = rows((1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4))
    messages = [barrier(1), inserts(SCHEMA, data), barrier(2), deletes(SCHEMA, rows((1, 1))), barrier(3)]
    output = run(top_n(messages, limit=2, rank_kind="rank", emit_rank=True))
    epochs = per_barrier(output)
    # rank() <= 2 over 1, 2, 2, 3, …: three rows.
    assert {(row[0], row[-1]) for _, row in epochs[1]} == {(1, 1), (2, 2), (3, 2)}
    # Without v = 1 the ranks are 1, 1, 3, 3, 5: only the two tied rows remain.
    assert {(row[0], row[-1]) for row in view(output)} == {(2, 1), (3, 1)}


def test_rank_with_an_offset() -> None:
    data = rows((1, 1), (2, 2), (3, 2), (4, 3), (5, 4))
    output = run(top_n([barrier(1), inserts(SCHEMA, data), barrier(2)], limit=2, offset=1, rank_kind="rank"))
    assert ids(view(output)) == [2, 3]  # ranks 2 and 2; rank 4 > offset + limit


def test_dense_rank_counts_distinct_order_values() -> None:
    data = rows((1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4))
    messages = [barrier(1), inserts(SCHEMA, data), barrier(2), deletes(SCHEMA, rows((2, 2), (3, 2))), barrier(3)]
    output = run(top_n(messages, limit=3, rank_kind="dense_rank", emit_rank=True))
    epochs = per_barrier(output)
    assert {(row[0], row[-1]) for _, row in epochs[1]} == {(1, 1), (2, 2), (3, 2), (4, 3), (5, 3)}
    assert {(row[0], row[-1]) for row in view(output)} == {(1, 1), (4, 2), (5, 2), (6, 3)}


# ---- rank output and updates ---------------------------------------------------
def test_emit_rank_re_emits_every_row_whose_rank_changes() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 10), (2, 20), (3, 30))),
        barrier(2),
        inserts(SCHEMA, rows((4, 5))),
        barrier(3),
    ]
    output = run(top_n(messages, limit=3, emit_rank=True))
    epochs = per_barrier(output)
    assert epochs[2][0] == (DEL, (3, 0, 30, None, 3))  # deletes come first
    assert sorted(epochs[2]) == sorted(
        [
            (DEL, (3, 0, 30, None, 3)),
            (UD, (1, 0, 10, None, 1)),
            (UI, (1, 0, 10, None, 2)),
            (UD, (2, 0, 20, None, 2)),
            (UI, (2, 0, 20, None, 3)),
            (INS, (4, 0, 5, None, 1)),
        ]
    )
    assert view(output) == {(4, 0, 5, None, 1): 1, (1, 0, 10, None, 2): 1, (2, 0, 20, None, 3): 1}


def test_without_emit_rank_a_rank_shift_emits_nothing() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 10), (2, 20))),
        barrier(2),
        inserts(SCHEMA, rows((3, 5))),
        barrier(3),
    ]
    assert per_barrier(run(top_n(messages, limit=3)))[2] == [(INS, (3, 0, 5, None))]


def test_updates_move_rows_into_and_out_of_the_top() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1), (2, 2), (3, 3), (4, 4))),
        barrier(2),
        chunk(SCHEMA, "U- U+", rows((4, 4), (4, 0))),  # id 4 enters, id 2 drops out
        barrier(3),
        chunk(SCHEMA, "U- U+", rows((4, 0), (4, 9))),  # id 4 leaves, id 2 comes back
        barrier(4),
        chunk(SCHEMA, "U- U+", [(1, 0, 1, None), (1, 0, 1, "x")]),  # same rank, another column changes
        barrier(5),
    ]
    output = run(top_n(messages, limit=2))
    epochs = per_barrier(output)
    assert epochs[2] == [(DEL, (2, 0, 2, None)), (INS, (4, 0, 0, None))]
    assert epochs[3] == [(DEL, (4, 0, 0, None)), (INS, (2, 0, 2, None))]
    assert epochs[4] == [(UD, (1, 0, 1, None)), (UI, (1, 0, 1, "x"))]
    assert ids(view(output)) == [1, 2]


def test_an_update_within_the_top_is_an_adjacent_update_pair() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1), (2, 2), (3, 3))),
        barrier(2),
        chunk(SCHEMA, "U- U+", rows((1, 1), (1, 4))),
        barrier(3),
    ]
    output = run(top_n(messages, limit=2))
    assert per_barrier(output)[2] == [(DEL, (1, 0, 1, None)), (INS, (3, 0, 3, None))]
    output = run(top_n(messages, limit=3))
    assert per_barrier(output)[2] == [(UD, (1, 0, 1, None)), (UI, (1, 0, 4, None))]


def test_a_row_moving_between_groups_is_deleted_before_it_is_inserted() -> None:
    data = [(1, 1, 1, None), (2, 2, 5, None)]
    messages = [
        barrier(1),
        inserts(SCHEMA, data),
        barrier(2),
        chunk(SCHEMA, "U- U+", [(1, 1, 1, None), (1, 2, 1, None)]),
        barrier(3),
    ]
    output = run(top_n(messages, group_keys=[1], limit=1))
    assert per_barrier(output)[2] == [(DEL, (2, 2, 5, None)), (UD, (1, 1, 1, None)), (UI, (1, 2, 1, None))]
    assert_alternating(changes(output), key=lambda row: row[0])


# ---- state, recovery, stopping ------------------------------------------------
def state_rows(store: MemoryStateStore, epoch: int) -> list[Row]:
    """The input rows the state table holds at ``epoch`` (without the order key)."""
    return table_rows(store.snapshot(TABLE_ID, epoch).drop_columns(["_order_key"]))


def test_state_holds_every_live_row_and_is_committed_before_the_barrier_goes_on() -> None:
    store = MemoryStateStore()
    data = rows((1, 5), (2, 3), (3, 9), (4, 1))
    messages = [barrier(1), inserts(SCHEMA, data), barrier(2), deletes(SCHEMA, rows((3, 9))), barrier(3), barrier(4)]
    operator = top_n(messages, limit=1, store=store)
    state = operator.state
    assert isinstance(state, SpyStateTable)
    seen: list[tuple[int, list[Row]]] = []

    def on_message(message: Message) -> None:
        if isinstance(message, Barrier) and message.epoch.prev:
            assert state.commits[-1] == message.epoch.prev and not state.has_pending_writes
            seen.append((message.epoch.prev, state_rows(store, message.epoch.prev)))

    run(operator, on_message)
    assert state.commits == [1, 2, 3]
    assert seen == [
        (1, sorted(data)),
        (2, sorted(rows((1, 5), (2, 3), (4, 1)))),
        (3, sorted(rows((1, 5), (2, 3), (4, 1)))),
    ]


def test_append_only_keeps_only_the_top_rows_in_state() -> None:
    store = MemoryStateStore()
    rng = random.Random(7)
    data = [(i, i % 3, rng.randrange(1000), None) for i in range(600)]
    epochs = [[inserts(SCHEMA, data[start : start + 100])] for start in range(0, 600, 100)]
    operator = top_n(stream(epochs), group_keys=[1], limit=4, offset=1, append_only=True, store=store)
    output = run(operator)
    last = len(epochs)  # the epoch the last barrier committed
    by_group = {g: sorted((r for r in data if r[1] == g), key=lambda r: (r[2], r[0])) for g in range(3)}
    assert state_rows(store, last) == sorted(r for g in range(3) for r in by_group[g][:5])
    assert view(output) == {r: 1 for g in range(3) for r in by_group[g][1:5]}
    assert operator.live_rows == 15


def test_append_only_rank_keeps_the_ties_at_the_boundary_in_state() -> None:
    store = MemoryStateStore()
    data = rows((1, 5), (2, 1), (3, 5), (4, 7), (5, 5), (6, 9))
    messages = [barrier(1), inserts(SCHEMA, data[:3]), barrier(2), inserts(SCHEMA, data[3:]), barrier(3)]
    output = run(top_n(messages, limit=2, rank_kind="rank", append_only=True, store=store))
    # rank() <= 2 over 1, 5, 5, then over 1, 5, 5, 5, 7, 9: the row at 1 and every row at 5.
    assert [r[0] for r in state_rows(store, 1)] == [1, 2, 3]
    assert [r[0] for r in state_rows(store, 2)] == [1, 2, 3, 5]
    assert ids(view(output)) == [1, 2, 3, 5]


def test_append_only_rows_that_cannot_enter_are_filtered_out_before_any_per_row_work() -> None:
    high = [(i, i % 3, 100 + i, None) for i in range(6)]  # fills each group's top 2
    low = [(i, i % 3, i, None) for i in range(6, 12)]  # replaces them: every entry limit drops
    messages = [barrier(1), inserts(SCHEMA, high), inserts(SCHEMA, low), barrier(2)]
    operator = top_n(messages, group_keys=[1], limit=2, append_only=True)
    run(operator)
    later = inserts(SCHEMA, [(20, 0, 50, None), (21, 0, 1, None), (22, 7, 50, None)])
    candidates = operator._candidates(operator._encode(later.data))
    # Only the row that beats group 0's top and the row of a new group get past the vectorized test.
    assert candidates.tolist() == [1, 2]


def test_append_only_dense_rank_prunes_by_distinct_values() -> None:
    store = MemoryStateStore()
    data = rows((1, 5), (2, 1), (3, 5), (4, 7), (5, 3), (6, 9))
    messages = [barrier(1), inserts(SCHEMA, data), barrier(2)]
    output = run(top_n(messages, limit=2, rank_kind="dense_rank", append_only=True, store=store))
    assert ids(view(output)) == [2, 5]
    assert [r[0] for r in state_rows(store, 1)] == [2, 5]


@pytest.mark.parametrize("append_only", [False, True])
def test_recovery_continues_from_the_committed_state(append_only: bool) -> None:
    rng = random.Random(99)
    script = Script(rng, groups=3, append_only=append_only)
    epochs = [script.epoch() for _ in range(12)]
    config = dict(group_keys=[1], limit=2, offset=1, emit_rank=True, append_only=append_only)
    store = MemoryStateStore()
    split = 6
    first = run(top_n(stream(epochs[:split]), store=store, **config))  # commits epochs 1 … split
    # A new operator over the same store: the first barrier after recovery has prev = the committed epoch.
    second = run(top_n(stream(epochs[split:], first_epoch=100, prev=split), store=store, **config))
    assert per_barrier(second)[0] == []  # recovery emits nothing: downstream already holds the top
    held = view(first + second)
    expected = oracle(script.live, group_keys=[1], limit=2, offset=1, emit_rank=True)
    assert held == expected


def test_returns_after_the_barrier_that_stops_it() -> None:
    source_messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1))),
        barrier(2, mutation=StopMutation(frozenset({7}))),
        inserts(SCHEMA, rows((2, 0))),
        barrier(3),
    ]
    operator = top_n(source_messages, actor_id=7)
    output = run(operator)
    assert isinstance(output[-1], Barrier) and output[-1].epoch.curr == 2
    assert changes(output) == [(INS, (1, 0, 1, None))]
    assert isinstance(operator.input, ScriptedSource) and operator.input.yielded == 3


def test_a_limit_beyond_what_ranks_can_hold_is_refused() -> None:
    with pytest.raises(FeatureNotSupported):
        top_n([], limit=2**24)
    assert top_n([], limit=2**24 - 2, offset=1).limit == 2**24 - 2


# ---- the sorted keys -------------------------------------------------------------
def test_sorted_keys_stay_sorted_through_splits_and_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_SortedKeys, "LOAD", 4)
    rng = random.Random(1)
    keys = _SortedKeys()
    reference: set[bytes] = set()
    for _ in range(3000):
        if reference and rng.random() < 0.45:
            key = rng.choice(sorted(reference))
            reference.remove(key)
            keys.remove(key)
        elif reference and rng.random() < 0.05:
            assert keys.pop_last() == max(reference)
            reference.remove(max(reference))
        else:
            key = rng.randrange(500).to_bytes(2, "big")
            if key not in reference:
                reference.add(key)
                keys.add(key)
        assert list(keys) == sorted(reference)
        assert len(keys) == len(reference)
        if reference:
            assert keys.last() == max(reference)
            index = rng.randrange(len(reference))
            assert keys[index] == sorted(reference)[index]
        assert keys.head(3) == sorted(reference)[:3]


def test_row_store_takes_rows_by_reference_across_merged_segments_and_after_compaction() -> None:
    rng = random.Random(4)
    schema = pa.schema([("x", pa.int64()), ("s", pa.string())])
    store = _RowStore(schema)
    stored: list[tuple] = []
    for _ in range(60):
        count = rng.randrange(0, 50)
        base = store.reserve()
        assert base == len(stored)  # references are sequence numbers
        batch_rows = [(base + i, f"r{base + i}") for i in range(count)]
        store.put(base, pa.RecordBatch.from_pylist([dict(zip(schema.names, r)) for r in batch_rows], schema=schema))
        stored += batch_rows
    assert len(store._segments) <= 2 * len(stored).bit_length()  # merged like a binary counter
    refs = [rng.randrange(len(stored)) for _ in range(200)]
    assert table_rows(pa.Table.from_batches([store.take(refs)])) == sorted(stored[r] for r in refs)
    assert store.take(refs).column(0).to_pylist() == refs
    kept = sorted(set(refs), reverse=True)
    store.compact(kept)
    assert store.held_rows == len(kept) and store.take(list(range(len(kept)))).column(0).to_pylist() == kept


# ---- differential against DuckDB -----------------------------------------------
@dataclass
class Script:
    """Random changes to a table of (id, g, v, s); ``live`` is the table after them."""

    rng: random.Random
    groups: int
    append_only: bool = False
    live: dict[int, Row] = field(default_factory=dict)
    next_id: int = 0

    def row(self, row_id: int) -> Row:
        rng = self.rng
        group = rng.choice([None, *range(self.groups)]) if rng.random() < 0.1 else rng.randrange(self.groups)
        v = None if rng.random() < 0.1 else rng.randrange(12)
        s = None if rng.random() < 0.1 else rng.choice(["", "a", "a\x00", "ab", "b", "ba"])
        return (row_id, group, v, s)

    def chunk(self) -> Chunk:
        ops: list = []
        batch: list[Row] = []
        for _ in range(self.rng.randrange(1, 25)):
            roll = self.rng.random()
            if self.live and not self.append_only and roll < 0.3:
                row = self.live.pop(self.rng.choice(list(self.live)))
                ops.append(DEL)
                batch.append(row)
            elif self.live and not self.append_only and roll < 0.45:
                old = self.live[self.rng.choice(list(self.live))]
                new = self.row(old[0])
                self.live[old[0]] = new
                ops += [UD, UI]
                batch += [old, new]
            else:
                row = self.row(self.next_id)
                self.next_id += 1
                self.live[row[0]] = row
                ops.append(INS)
                batch.append(row)
        return chunk(SCHEMA, ops, batch)

    def epoch(self) -> list[Chunk]:
        return [self.chunk() for _ in range(self.rng.randrange(0, 4))]


@functools.cache
def _duckdb() -> duckdb.DuckDBPyConnection:
    """One connection for every oracle query: connecting costs more than a query."""
    return duckdb.connect()


def oracle(
    live: dict[int, Row],
    *,
    group_keys: list[int],
    order_by: list[SortKey] | None = None,
    limit: int,
    offset: int = 0,
    rank_kind: str = "row_number",
    emit_rank: bool = False,
    **_: object,
) -> dict[Row, int]:
    """The same query computed by DuckDB over the live input rows."""
    table = pa.Table.from_pylist([dict(zip(SCHEMA.names, row)) for row in live.values()], schema=SCHEMA)
    order = [
        f"{SCHEMA.names[k.column]} {'DESC' if k.descending else 'ASC'} "
        f"NULLS {'FIRST' if k.puts_nulls_first else 'LAST'}"
        for k in (BY_V if order_by is None else order_by)
    ]
    if rank_kind == "row_number":
        order.append("id")
    partition = f"PARTITION BY {', '.join(SCHEMA.names[k] for k in group_keys)}" if group_keys else ""
    sql = (
        f"SELECT * FROM (SELECT *, {rank_kind}() OVER ({partition} ORDER BY {', '.join(order)}) AS r FROM input) "
        f"WHERE r > {offset} AND r <= {offset + limit}"
    )
    con = _duckdb()
    con.register("input", table)
    try:
        result = con.sql(sql).fetchall()
    finally:
        con.unregister("input")
    out: dict[Row, int] = {}
    for row in result:
        key = tuple(row) if emit_rank else tuple(row[:-1])
        out[key] = out.get(key, 0) + 1
    return out


CONFIGS = [
    dict(group_keys=[], limit=3),
    dict(group_keys=[], limit=2, offset=2, emit_rank=True),
    dict(group_keys=[1], limit=2, emit_rank=True),
    dict(group_keys=[1], order_by=[SortKey(2, descending=True)], limit=3, offset=1),
    dict(group_keys=[1], order_by=[SortKey(3), SortKey(2, nulls_first=True)], limit=3, emit_rank=True),
    dict(group_keys=[], limit=3, rank_kind="rank", emit_rank=True),
    dict(group_keys=[1], limit=2, offset=1, rank_kind="rank"),
    dict(group_keys=[1], order_by=[SortKey(3, descending=True)], limit=2, rank_kind="rank", emit_rank=True),
    dict(group_keys=[], limit=3, rank_kind="dense_rank", emit_rank=True),
    dict(group_keys=[1], order_by=[SortKey(3)], limit=2, offset=1, rank_kind="dense_rank", emit_rank=True),
]


@pytest.mark.parametrize("append_only", [False, True])
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_random_changes_agree_with_duckdb_after_every_barrier(config: dict, append_only: bool) -> None:
    rng = random.Random(zlib.crc32(repr((config, append_only)).encode()))
    script = Script(rng, groups=4, append_only=append_only)
    epochs = []
    expected = []
    for _ in range(25):
        epochs.append(script.epoch())
        expected.append(oracle(script.live, **config))
    # CheckedOperator asserts barrier-first, epoch order and the output schema of every chunk (DESIGN §11).
    output = run(CheckedOperator(top_n(stream(epochs), append_only=append_only, **config)))  # type: ignore[arg-type]
    emitted = changes(output)
    assert_alternating(emitted, key=lambda row: row[0])
    held: dict[Row, int] = {}
    for epoch, (epoch_changes, want) in enumerate(zip(per_barrier(output)[1:], expected, strict=True)):
        held = apply_changes(epoch_changes, held)
        assert held == want, f"epoch {epoch}"


def test_compaction_of_the_row_store_changes_nothing_but_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(top_n_module, "COMPACT_MIN_DEAD_ROWS", 8)
    config = dict(group_keys=[1], limit=2, rank_kind="rank", emit_rank=True)
    script = Script(random.Random(5), groups=3)
    epochs = [script.epoch() for _ in range(40)]
    held_after_barriers: list[tuple[int, int]] = []
    operator = top_n(stream(epochs), **config)  # type: ignore[arg-type]
    rows_store = operator._rows

    def on_message(message: Message) -> None:
        if isinstance(message, Barrier):
            held_after_barriers.append((rows_store.held_rows, operator.live_rows))

    output = run(operator, on_message)
    assert view(output) == oracle(script.live, **config)  # type: ignore[arg-type]
    assert operator.live_rows == len(script.live)
    # Compacted whenever dead rows outnumber both 8 and the live ones.
    assert all(held - live <= max(live, 8) for held, live in held_after_barriers)
    compactions = sum(after[0] < before[0] for before, after in itertools.pairwise(held_after_barriers))
    assert compactions >= 3


def test_changes_of_many_groups_keep_the_stream_invariants() -> None:
    """Rows hop between groups and ranks within one epoch: per stream key deletes and inserts alternate."""
    script = Script(random.Random(3), groups=2)
    epochs = [[script.chunk() for _ in range(6)] for _ in range(10)]
    output = run(top_n(stream(epochs), group_keys=[1], limit=3, emit_rank=True))
    emitted: list[Change] = changes(output)
    assert_alternating(emitted, key=lambda row: row[0])
    assert UD in [op for op, _ in emitted]
    assert view(output) == oracle(script.live, group_keys=[1], limit=3, emit_rank=True)


# ---- bounded cache (DESIGN §6) ------------------------------------------------------
# A group of a few rows is accounted ~1.5 KB: this budget holds a handful of the 40 groups.
TINY_BUDGET_BYTES = 8_000
CACHED_CONFIGS = [
    dict(group_keys=[1], limit=2, emit_rank=True),
    dict(group_keys=[1], limit=2, offset=1, rank_kind="rank", emit_rank=True),
    dict(group_keys=[1, 3], order_by=[SortKey(2, descending=True)], limit=2, rank_kind="dense_rank"),
]


@pytest.mark.parametrize("append_only", [False, True])
@pytest.mark.parametrize("config", CACHED_CONFIGS, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_bounded_cache_emits_exactly_what_the_unbounded_operator_emits(config: dict, append_only: bool) -> None:
    script = Script(random.Random(zlib.crc32(repr((config, append_only)).encode())), groups=40, append_only=append_only)
    # Each prefix read of the in-memory store costs a DuckDB connection: a few epochs are enough.
    epochs = [script.epoch() for _ in range(20)]
    reference_store = MemoryStateStore()
    expected = per_barrier(run(top_n(stream(epochs), append_only=append_only, store=reference_store, **config)))
    store = SpyStore()
    operator = top_n(stream(epochs), append_only=append_only, store=store, cache_bytes=TINY_BUDGET_BYTES, **config)
    cache = operator.cache
    assert cache is not None
    bytes_after_barriers: list[int] = []
    output = run(
        CheckedOperator(operator),
        lambda m: bytes_after_barriers.append(cache.used_bytes) if isinstance(m, Barrier) else None,
    )

    assert per_barrier(output) == expected
    assert cache.evictions > 20 and cache.misses > 20
    assert 0 < store.prefix_reads <= sum(len(chunks) for chunks in epochs)  # at most one read per chunk
    assert store.snapshots == 0
    last = len(epochs)
    assert state_rows(store, last) == state_rows(reference_store, last)
    # On every barrier the epoch's groups are written, so the cache is back within its budget …
    assert max(bytes_after_barriers) <= TINY_BUDGET_BYTES
    # … and the rows (and entry limits) of evicted groups have left memory.
    assert operator.live_rows == sum(len(group.rows) for group in cache.groups()) < len(state_rows(store, last))
    assert len(operator._entry_limits) <= len(cache)


def test_recovery_with_a_budget_reads_groups_on_demand_and_continues_exactly() -> None:
    config = dict(group_keys=[1], limit=2, emit_rank=True)
    script = Script(random.Random(23), groups=60)
    epochs = [script.epoch() for _ in range(16)]
    expected = per_barrier(run(top_n(stream(epochs), **config)))  # type: ignore[arg-type]
    store = SpyStore()
    split = 10
    run(top_n(stream(epochs[:split]), store=store, cache_bytes=TINY_BUDGET_BYTES, **config))  # type: ignore[arg-type]
    store.reset()
    reads: list[tuple[int, int]] = []  # (snapshots, prefixes read) as each barrier goes out
    recovered = top_n(
        stream(epochs[split:], first_epoch=100, prev=split),
        store=store,
        cache_bytes=TINY_BUDGET_BYTES,
        **config,  # type: ignore[arg-type]
    )
    output = per_barrier(
        run(
            recovered,
            lambda m: reads.append((store.snapshots, store.prefixes_read)) if isinstance(m, Barrier) else None,
        )
    )
    assert output[0] == [] and output[1:] == expected[split + 1 :]
    # Recovery itself reads nothing; the first epoch reads only the groups its chunks touch.
    touched = {row[1] for c in epochs[split] for _, row in c.rows()}
    assert reads[0] == (0, 0)
    assert 0 < reads[1][1] <= len(touched)
    assert store.snapshots == 0


def test_no_state_read_while_every_group_fits() -> None:
    store = SpyStore()
    script = Script(random.Random(2), groups=20)
    operator = top_n(stream([script.epoch() for _ in range(10)]), group_keys=[1], store=store, cache_bytes=10**9)
    output = run(operator)
    assert operator.cache is not None and operator.cache.evictions == 0
    assert store.prefix_reads == 0 and store.snapshots == 0
    assert view(output) == oracle(script.live, group_keys=[1], limit=3)


def test_accounted_bytes_follow_what_the_groups_really_allocate() -> None:
    """GROUP_BYTES and friends are tracemalloc measurements: check they still describe this CPython."""
    for groups, per_group, limit in [(1000, 1, 1), (1000, 20, 10), (100, 200, 5)]:
        data = [(i, i % groups, (i * 7919) % 1000, None) for i in range(groups * per_group)]
        operator = top_n(
            [barrier(1), inserts(SCHEMA, data), barrier(2)], group_keys=[1], limit=limit, cache_bytes=10**12
        )
        arrow_row_bytes = inserts(SCHEMA, data).data.nbytes / len(data)
        accounted, allocated = accounted_and_allocated_bytes(operator)
        accounted -= operator.live_rows * arrow_row_bytes  # tracemalloc does not see Arrow's buffers
        assert 0.75 <= accounted / allocated <= 1.5, (groups, per_group, accounted, allocated)


def test_an_input_without_a_stream_key_holds_one_row_and_is_ranked() -> None:
    """A global aggregate has no stream key: its one row is ranked, and replaced by an update."""
    schema = pa.schema([("total", pa.int64())])
    state_schema, state_pk = top_n_state_schema(schema, [], [SortKey(0)], [])
    operator = TopN(
        ScriptedSource(
            schema,
            [
                barrier(1),
                inserts(schema, [(5,)]),
                barrier(2),
                chunk(schema, "U- U+", [(5,), (8,)]),
                barrier(3),
            ],
        ),
        group_keys=[],
        order_by=[SortKey(0)],
        limit=1,
        emit_rank=True,
        input_pk=[],
        schema=pa.schema([*schema, pa.field("r", pa.int64())]),
        state=StateTable(MemoryStateStore(), TABLE_ID, state_schema, state_pk),
    )
    epochs = per_barrier(run(operator))
    assert epochs[1] == [(INS, (5, 1))]
    assert apply_changes(epochs[1] + epochs[2]) == {(8, 1): 1}
