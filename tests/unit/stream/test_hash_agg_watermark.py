"""HashAgg under watermarks: groups below a key's watermark are closed (state deleted) on the next barrier;
with ``emit_on_window_close`` each group is emitted once, as an insert, when it closes."""

from __future__ import annotations

import pickle
import random
from datetime import datetime, timedelta

import pyarrow as pa
from scripted import (
    INS,
    UD,
    UI,
    ScriptedSource,
    apply_changes,
    barrier,
    changes,
    deletes,
    inserts,
    per_barrier,
    run,
)

from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Message, Watermark
from tidegate.stream.operator import CheckedOperator
from tidegate.stream.operators.hash_agg import AggCall, HashAgg, agg_state_schema

TS = pa.timestamp("us")
# (k, window_start, v), grouped by (window_start, k): the output is (window_start, k, count, sum).
IN = pa.schema([("k", pa.int32()), ("ws", TS), ("v", pa.int64())])
OUT = pa.schema([("ws", TS), ("k", pa.int32()), ("n", pa.int64()), ("total", pa.decimal128(38, 0))])
GROUP_KEYS = [1, 0]
STATE_TABLE = 7
T0 = datetime(2026, 1, 1)
TINY_BUDGET_BYTES = 2000


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def us(seconds: float) -> int:
    return (at(seconds) - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def mark(seconds: float) -> Watermark:
    """A watermark of the input's window_start column."""
    return Watermark(1, us(seconds))


def rows(*triples: tuple[int, float, int]) -> list[tuple[int, datetime, int]]:
    return [(k, at(ws), v) for k, ws, v in triples]


def agg(
    messages: list[Message],
    store: MemoryStateStore | None = None,
    *,
    eowc: bool = False,
    cache_bytes: int | None = None,
) -> HashAgg:
    state = None
    if store is not None:
        schema, pk = agg_state_schema(OUT, len(GROUP_KEYS))
        state = StateTable(store, STATE_TABLE, schema, pk)
    calls = [AggCall("count_star", None, pa.int64()), AggCall("sum", 2, OUT.field(3).type)]
    source = ScriptedSource(IN, messages)
    return HashAgg(source, GROUP_KEYS, calls, OUT, state, cache_bytes=cache_bytes, emit_on_window_close=eowc)


def epochs(output: list[Message]) -> list[list[tuple[object, ...]]]:
    """The changes of each epoch, sorted (a barrier's changes come in no particular order)."""
    return [sorted(changes_of_epoch) for changes_of_epoch in per_barrier(output)]


def state_keys(store: MemoryStateStore, epoch: int) -> list[tuple[object, ...]]:
    table = store.snapshot(STATE_TABLE, epoch)
    return sorted(zip(table.column(0).to_pylist(), table.column(1).to_pylist()))


def state_counts(store: MemoryStateStore, epoch: int) -> dict[tuple[object, ...], int]:
    table = store.snapshot(STATE_TABLE, epoch)
    keys = zip(table.column(0).to_pylist(), table.column(1).to_pylist())
    return {key: pickle.loads(v)[0] for key, v in zip(keys, table.column(2).to_pylist())}


SCRIPT: list[Message] = [
    barrier(1),
    inserts(IN, rows((1, 0, 5), (2, 0, 6), (1, 10, 7))),
    barrier(2),
    mark(10),  # window 0 can get no more rows
    inserts(IN, rows((1, 10, 1))),
    barrier(3),
    mark(20),
    barrier(4),
]


def test_groups_below_the_watermark_leave_the_state_and_the_view_keeps_their_rows() -> None:
    store = MemoryStateStore()
    operator = agg(SCRIPT, store)
    output = run(CheckedOperator(operator))
    assert epochs(output) == [
        [],
        [(INS, (at(0), 1, 1, 5)), (INS, (at(0), 2, 1, 6)), (INS, (at(10), 1, 1, 7))],
        [(UD, (at(10), 1, 1, 7)), (UI, (at(10), 1, 2, 8))],  # closing retracts nothing
        [],
    ]
    # Barrier (e -> e + 1) commits epoch e.
    assert state_keys(store, 1) == [(at(0), 1), (at(0), 2), (at(10), 1)]
    assert state_keys(store, 2) == [(at(10), 1)]
    assert state_keys(store, 3) == []
    assert operator.groups_closed == 3 and not operator._groups
    # The group key's watermark goes on as the output's, after the barrier's changes.
    kinds = [type(m).__name__ for m in output]
    assert kinds == ["Barrier", "Chunk", "Barrier", "Chunk", "Watermark", "Barrier", "Watermark", "Barrier"]
    assert [m for m in output if isinstance(m, Watermark)] == [Watermark(0, us(10)), Watermark(0, us(20))]


def test_emit_on_window_close_emits_each_group_once_as_an_insert_when_the_watermark_passes_it() -> None:
    store = MemoryStateStore()
    output = run(CheckedOperator(agg(SCRIPT, store, eowc=True)))
    assert epochs(output) == [
        [],
        [],  # nothing is closed yet
        [(INS, (at(0), 1, 1, 5)), (INS, (at(0), 2, 1, 6))],  # window 10 got a row this epoch: still open
        [(INS, (at(10), 1, 2, 8))],
    ]
    assert state_keys(store, 2) == [(at(10), 1)] and state_keys(store, 3) == []


def test_emit_on_window_close_waits_for_the_barrier_after_the_watermark() -> None:
    messages: list[Message] = [barrier(1), inserts(IN, rows((1, 0, 5))), mark(10), inserts(IN, rows((1, 10, 1)))]
    output = run(agg([*messages, barrier(2)], eowc=True))
    assert [type(m).__name__ for m in output] == ["Barrier", "Chunk", "Watermark", "Barrier"]
    assert changes(output) == [(INS, (at(0), 1, 1, 5))]


def test_a_group_whose_rows_were_all_retracted_before_it_closes_is_not_emitted() -> None:
    # An input with retractions (an upstream aggregation's output) can empty a group before it closes.
    messages: list[Message] = [
        barrier(1),
        inserts(IN, rows((1, 0, 5), (2, 0, 1))),
        barrier(2),
        deletes(IN, rows((2, 0, 1))),
        barrier(3),
        mark(10),
        barrier(4),
    ]
    output = run(agg(messages, MemoryStateStore(), eowc=True))
    assert changes(output) == [(INS, (at(0), 1, 1, 5))]


def test_a_watermark_on_a_column_that_is_not_a_group_key_closes_nothing_and_goes_nowhere() -> None:
    messages: list[Message] = [barrier(1), inserts(IN, rows((1, 0, 5))), barrier(2), Watermark(2, 100), barrier(3)]
    store = MemoryStateStore()
    output = run(agg(messages, store, eowc=True))
    assert changes(output) == [] and not [m for m in output if isinstance(m, Watermark)]
    assert state_keys(store, 2) == [(at(0), 1)]


def test_emit_on_window_close_recovers_mid_window_and_emits_each_window_exactly_once() -> None:
    """A run cut after epoch 3 and resumed from its state equals a run that never stopped."""
    epochs: list[list[Message]] = [
        [inserts(IN, rows((1, 0, 1), (1, 10, 2)))],
        [inserts(IN, rows((2, 10, 3))), mark(10)],
        [inserts(IN, rows((1, 10, 4), (1, 20, 5)))],
        [mark(20), inserts(IN, rows((2, 20, 6)))],
        [mark(30)],
    ]

    def stream(first: int, prev: int | None, parts: list[list[Message]], restore: Watermark | None) -> list[Message]:
        messages: list[Message] = [barrier(first, prev)]
        if restore is not None:
            messages.append(restore)  # what the source emits again after the first barrier
        for offset, part in enumerate(parts, start=1):
            messages += [*part, barrier(first + offset)]
        return messages

    for cache_bytes in (None, TINY_BUDGET_BYTES):
        expected = changes(run(agg(stream(1, None, epochs, None), MemoryStateStore(), eowc=True)))
        store = MemoryStateStore()
        before = changes(run(agg(stream(1, None, epochs[:3], None), store, eowc=True, cache_bytes=cache_bytes)))
        assert before == [(INS, (at(0), 1, 1, 1))]
        # The crash loses epoch 4 onwards; the rebuilt operator resumes from epoch 3's state (window 10's
        # groups, open) with the source's restored watermark.
        after = run(agg(stream(10, 3, epochs[3:], mark(10)), store, eowc=True, cache_bytes=cache_bytes))
        assert sorted(before + changes(after)) == sorted(expected)
        assert sorted(row for _, row in expected) == [
            (at(0), 1, 1, 1),
            (at(10), 1, 2, 6),
            (at(10), 2, 1, 3),
            (at(20), 1, 1, 5),
            (at(20), 2, 1, 6),
        ]
        assert state_keys(store, 11) == []


def random_windows(seed: int, epochs: int) -> list[Message]:
    """Rows over 5 keys in 10 s windows that move forward, with a watermark per epoch that trails them."""
    rng = random.Random(seed)
    messages: list[Message] = [barrier(1)]
    now = 0.0
    for epoch in range(2, epochs + 2):
        for _ in range(rng.randint(1, 3)):
            batch = [(rng.randint(0, 4), (now + rng.uniform(0, 25)) // 10 * 10, rng.randint(1, 9)) for _ in range(8)]
            messages.append(inserts(IN, rows(*batch)))
        now += rng.uniform(0, 8)
        messages += [mark(now // 10 * 10), barrier(epoch)]
    return messages


def test_with_a_cache_budget_closing_reads_evicted_groups_back_and_matches_the_unbounded_operator() -> None:
    messages = random_windows(seed=3, epochs=12)
    for eowc in (False, True):
        reference_store = MemoryStateStore()
        expected = epochs(run(agg(messages, reference_store, eowc=eowc)))
        store = MemoryStateStore()
        operator = agg(messages, store, eowc=eowc, cache_bytes=TINY_BUDGET_BYTES)
        assert epochs(run(CheckedOperator(operator))) == expected
        assert operator.cache is not None and operator.cache.evictions > 0
        assert state_counts(store, 12) == state_counts(reference_store, 12)


def test_closing_bounds_the_state_and_the_view_equals_a_batch_answer() -> None:
    """Over a long stream the state holds only windows at or above the watermark, and the output
    (applied as a view would) equals the counts computed over every row at once."""
    messages = random_windows(seed=9, epochs=60)
    store = MemoryStateStore()
    output = run(agg(messages, store))
    view = apply_changes(changes(output))
    everything: dict[tuple[object, ...], list[int]] = {}
    for _, (k, ws, v) in changes(messages):
        everything.setdefault((ws, k), []).append(v)
    assert sorted(view) == sorted((ws, k, len(vs), sum(vs)) for (ws, k), vs in everything.items())
    last_mark = [m for m in messages if isinstance(m, Watermark)][-1]
    open_windows = {ws for ws, _ in state_keys(store, 60)}
    assert open_windows and min(open_windows) >= at(0) + timedelta(microseconds=last_mark.value - us(0))
    assert len(state_keys(store, 60)) < len(everything) // 4  # closed windows left the state
