"""HashAgg: per-epoch changes of groups under inserts, updates and deletes, emitted on barriers."""

from __future__ import annotations

import math
import pickle
import random
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from cache_budget import SpyStore, accounted_and_allocated_bytes
from scripted import (
    DEL,
    INS,
    UD,
    UI,
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
)

from tidegate.common.chunk import Chunk
from tidegate.errors import InternalError
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operators.hash_agg import AggCall, HashAgg, SortKey, agg_state_schema

SCHEMA = pa.schema([("k", pa.int32()), ("v", pa.int32()), ("price", pa.decimal128(38, 2)), ("x", pa.float64())])
NUMERIC = pa.decimal128(38, 10)


def agg(
    messages: list[Message],
    calls: list[tuple[str, int | None, pa.DataType]],
    group_keys: list[int] | None = None,
    state: StateTable | None = None,
) -> HashAgg:
    group_keys = [0] if group_keys is None else group_keys
    fields = [SCHEMA.field(k) for k in group_keys]
    fields += [pa.field(f"a{i}", t) for i, (_, _, t) in enumerate(calls)]
    return HashAgg(
        ScriptedSource(SCHEMA, messages),
        group_keys,
        [AggCall(kind, arg, t) for kind, arg, t in calls],
        pa.schema(fields),
        state,
    )


def agg_state(
    store: MemoryStateStore, table_id: int, group_keys: list[int] | None = None, cls: type[StateTable] = StateTable
) -> StateTable:
    """The state table the builder gives a HashAgg over SCHEMA grouped by ``group_keys`` (default [0])."""
    group_keys = [0] if group_keys is None else group_keys
    schema, pk = agg_state_schema(pa.schema([SCHEMA.field(k) for k in group_keys]), len(group_keys))
    return cls(store, table_id, schema, pk)


def state_groups(rows: pa.Table) -> dict:
    """A HashAgg state table's rows as {group key: (row count, accumulators)}."""
    keys = zip(*(c.to_pylist() for c in rows.columns[:-1])) if rows.num_columns > 1 else [()] * rows.num_rows
    return {key: pickle.loads(v) for key, v in zip(keys, rows.column("accumulators").to_pylist())}


def rows(*values: tuple) -> list[tuple]:
    """Input rows from (k, v) pairs; price and x are NULL."""
    return [(k, v, None, None) for k, v in values]


COUNT = [("count_star", None, pa.int64())]


# ---- group lifecycle --------------------------------------------------------
def test_group_appears_then_vanishes_when_its_last_row_is_deleted() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 10))),
        barrier(2),
        deletes(SCHEMA, rows((1, 10))),
        barrier(3),
    ]
    output = run(agg(messages, COUNT))
    assert per_barrier(output) == [[], [(INS, (1, 1))], [(DEL, (1, 1))]]


def test_group_inserted_and_deleted_within_one_epoch_emits_nothing() -> None:
    store = MemoryStateStore()
    state = agg_state(store, 1)
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 10), (2, 20))),
        deletes(SCHEMA, rows((1, 10))),
        barrier(2),
        inserts(SCHEMA, rows((3, 30))),
        deletes(SCHEMA, rows((3, 30))),
        barrier(3),
    ]
    output = run(agg(messages, COUNT, state=state))
    assert per_barrier(output) == [[], [(INS, (2, 1))], []]
    assert list(state_groups(store.snapshot(1, 3))) == [(2,)]


def test_update_pair_when_a_group_value_changes_and_nothing_when_it_does_not() -> None:
    calls = [("count_star", None, pa.int64()), ("sum", 1, pa.int64())]
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 10), (1, 20), (2, 1))),
        barrier(2),
        inserts(SCHEMA, rows((1, 5))),
        barrier(3),
        # Group 1 changes and changes back within the epoch; group 2 changes.
        inserts(SCHEMA, rows((1, 7), (2, 1))),
        deletes(SCHEMA, rows((1, 7))),
        barrier(4),
        chunk(SCHEMA, "U- U+", rows((2, 1), (2, 4))),
        barrier(5),
    ]
    groups = per_barrier(run(agg(messages, calls)))
    assert sorted(groups[1]) == [(INS, (1, 2, 30)), (INS, (2, 1, 1))]
    assert groups[2] == [(UD, (1, 2, 30)), (UI, (1, 3, 35))]
    assert groups[3] == [(UD, (2, 1, 1)), (UI, (2, 2, 2))]
    assert groups[4] == [(UD, (2, 2, 2)), (UI, (2, 2, 5))]


def test_update_pairs_of_many_groups_are_each_adjacent() -> None:
    calls = [("sum", 1, pa.int64())]
    first = inserts(SCHEMA, rows(*[(k, 1) for k in range(50)]))
    second = inserts(SCHEMA, rows(*[(k, k) for k in range(0, 50, 2)]))
    output = changes(run(agg([barrier(1), first, barrier(2), second, barrier(3)], calls)))
    assert_alternating(output, key=lambda row: row[0])
    assert apply_changes(output) == {(k, 1 + (k if k % 2 == 0 else 0)): 1 for k in range(50)}


# ---- the aggregate functions -----------------------------------------------
def test_count_star_and_count_of_a_column_with_nulls() -> None:
    calls = [("count_star", None, pa.int64()), ("count", 1, pa.int64())]
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1), (1, None), (1, 3), (1, None), (2, None))),
        barrier(2),
        deletes(SCHEMA, rows((1, None))),
        barrier(3),
    ]
    groups = per_barrier(run(agg(messages, calls)))
    assert sorted(groups[1]) == [(INS, (1, 4, 2)), (INS, (2, 1, 0))]
    assert groups[2] == [(UD, (1, 4, 2)), (UI, (1, 3, 2))]


def test_sum_of_decimal_keeps_its_scale_exactly() -> None:
    calls = [("sum", 2, pa.decimal128(38, 2))]
    messages = [
        barrier(1),
        chunk(SCHEMA, "+ +", [(1, 0, Decimal("100.10"), None), (1, 0, Decimal("848.39"), None)]),
        barrier(2),
        chunk(SCHEMA, "-", [(1, 0, Decimal("100.10"), None)]),
        barrier(3),
    ]
    output = run(agg(messages, calls))
    groups = per_barrier(output)
    assert groups[1] == [(INS, (1, Decimal("948.49")))]
    assert groups[2] == [(UD, (1, Decimal("948.49"))), (UI, (1, Decimal("848.39")))]
    first = next(m for m in output if isinstance(m, Chunk))
    assert first.data.schema.field(1).type == pa.decimal128(38, 2)
    assert str(first.data.column(1)[0]) == "948.49"
    assert first.data.column(1)[0].as_py().as_tuple().exponent == -2


def test_sum_of_many_small_decimals_is_exact() -> None:
    calls = [("sum", 2, pa.decimal128(38, 2))]
    data = chunk(SCHEMA, [INS] * 1000, [(1, 0, Decimal("0.01"), None)] * 1000)
    (change,) = changes(run(agg([barrier(1), data, barrier(2)], calls)))
    assert change == (INS, (1, Decimal("10.00")))


def test_sum_of_int32_is_int64_and_does_not_overflow() -> None:
    calls = [("sum", 1, pa.int64())]
    big = 2**31 - 1
    output = run(agg([barrier(1), inserts(SCHEMA, rows((1, big), (1, big), (1, big))), barrier(2)], calls))
    (data,) = [m for m in output if isinstance(m, Chunk)]
    assert data.data.schema.field(1).type == pa.int64()
    assert data.rows() == [(INS, (1, 3 * big))]


def test_sum_of_only_nulls_is_null_and_float_sum() -> None:
    calls = [("sum", 1, pa.int64()), ("sum", 3, pa.float64())]
    data = chunk(SCHEMA, "+ +", [(1, None, None, 1.5), (1, None, None, 2.25)])
    assert changes(run(agg([barrier(1), data, barrier(2)], calls))) == [(INS, (1, None, 3.75))]


def test_avg_of_integers_as_numeric_and_as_double_under_deletes() -> None:
    calls = [("avg", 1, NUMERIC), ("avg", 1, pa.float64())]
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1), (1, 2), (1, None), (2, None))),
        barrier(2),
        deletes(SCHEMA, rows((1, 1))),
        inserts(SCHEMA, rows((1, 6))),
        barrier(3),
    ]
    groups = per_barrier(run(agg(messages, calls)))
    assert sorted(groups[1], key=repr) == sorted(
        [(INS, (1, Decimal("1.5000000000"), 1.5)), (INS, (2, None, None))], key=repr
    )
    assert groups[2] == [(UD, (1, Decimal("1.5000000000"), 1.5)), (UI, (1, Decimal("4.0000000000"), 4.0))]


def test_avg_of_decimal_rounds_to_the_output_scale() -> None:
    calls = [("avg", 2, NUMERIC)]
    data = chunk(SCHEMA, "+ + +", [(1, 0, Decimal(p), None) for p in ("1.00", "1.00", "2.00")])
    assert changes(run(agg([barrier(1), data, barrier(2)], calls))) == [(INS, (1, Decimal("1.3333333333")))]


def test_min_and_max_find_the_next_value_after_the_current_one_is_deleted() -> None:
    calls = [("min", 1, pa.int32()), ("max", 1, pa.int32())]
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 5), (1, 3), (1, 9), (1, 3))),
        barrier(2),
        deletes(SCHEMA, rows((1, 9))),  # max goes to 5
        barrier(3),
        deletes(SCHEMA, rows((1, 3))),  # a second 3 remains: no change
        barrier(4),
        deletes(SCHEMA, rows((1, 3))),  # min goes to 5
        barrier(5),
    ]
    groups = per_barrier(run(agg(messages, calls)))
    assert groups[1] == [(INS, (1, 3, 9))]
    assert groups[2] == [(UD, (1, 3, 9)), (UI, (1, 3, 5))]
    assert groups[3] == []
    assert groups[4] == [(UD, (1, 3, 5)), (UI, (1, 5, 5))]


def test_min_and_max_are_null_once_every_non_null_value_is_deleted() -> None:
    calls = [("count_star", None, pa.int64()), ("min", 1, pa.int32()), ("max", 1, pa.int32())]
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, None), (1, 4), (1, 8))),
        barrier(2),
        deletes(SCHEMA, rows((1, 4), (1, 8))),
        barrier(3),
    ]
    groups = per_barrier(run(agg(messages, calls)))
    assert groups[1] == [(INS, (1, 3, 4, 8))]
    assert groups[2] == [(UD, (1, 3, 4, 8)), (UI, (1, 1, None, None))]


def test_min_of_decimal_and_max_of_string_keys() -> None:
    calls = [("min", 2, pa.decimal128(38, 2)), ("max", 2, pa.decimal128(38, 2))]
    messages = [
        barrier(1),
        chunk(SCHEMA, "+ + +", [(1, 0, Decimal(p), None) for p in ("2.50", "0.10", "10.00")]),
        barrier(2),
        chunk(SCHEMA, "- -", [(1, 0, Decimal(p), None) for p in ("0.10", "10.00")]),
        barrier(3),
    ]
    groups = per_barrier(run(agg(messages, calls)))
    assert groups[1] == [(INS, (1, Decimal("0.10"), Decimal("10.00")))]
    assert groups[2] == [(UD, (1, Decimal("0.10"), Decimal("10.00"))), (UI, (1, Decimal("2.50"), Decimal("2.50")))]


def test_null_group_key_is_a_group_of_its_own() -> None:
    messages = [barrier(1), inserts(SCHEMA, rows((None, 1), (None, 2), (1, 3))), barrier(2)]
    assert sorted(changes(run(agg(messages, COUNT))), key=repr) == sorted([(INS, (None, 2)), (INS, (1, 1))], key=repr)


# ---- global aggregate -------------------------------------------------------
def test_global_aggregate_emits_its_initial_row_and_never_deletes_it() -> None:
    calls = [("count_star", None, pa.int64()), ("sum", 1, pa.int64())]
    messages = [
        barrier(1),
        barrier(2),
        inserts(SCHEMA, rows((1, 3), (2, 4))),
        barrier(3),
        deletes(SCHEMA, rows((1, 3), (2, 4))),
        barrier(4),
        barrier(5),
    ]
    output = run(agg(messages, calls, group_keys=[]))
    assert per_barrier(output) == [
        [],
        [(INS, (0, None))],
        [(UD, (0, None)), (UI, (2, 7))],
        [(UD, (2, 7)), (UI, (0, None))],
        [],
    ]
    assert DEL not in [op for op, _ in changes(output)]


# ---- barriers and state -----------------------------------------------------
def test_output_is_emitted_only_on_barriers_just_before_them() -> None:
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1))),
        inserts(SCHEMA, rows((2, 1))),
        barrier(2),
        inserts(SCHEMA, rows((1, 1))),
        barrier(3),
        barrier(4),
    ]
    operator = agg(messages, COUNT)
    source = operator.input
    assert isinstance(source, ScriptedSource)
    pulled: list[tuple[Message, int]] = []
    output = run(operator, on_message=lambda m: pulled.append((m, source.yielded)))

    for index, (message, yielded) in enumerate(pulled):
        if isinstance(message, Chunk):
            # The source has just yielded the barrier that ends the epoch, nothing after it ...
            assert isinstance(messages[yielded - 1], Barrier), (index, yielded)
            # ... and that barrier is the next thing this operator emits.
            assert pulled[index + 1][0] is messages[yielded - 1]
    assert [m for m in output if isinstance(m, Barrier)] == [m for m in messages if isinstance(m, Barrier)]
    assert len([m for m in output if isinstance(m, Chunk)]) == 2


def test_state_is_committed_before_the_barrier_goes_downstream() -> None:
    store = MemoryStateStore()
    state = agg_state(store, 7, cls=SpyStateTable)
    calls = [("count_star", None, pa.int64()), ("sum", 1, pa.int64())]
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, 1), (2, 2))),
        barrier(2),
        deletes(SCHEMA, rows((1, 1))),
        inserts(SCHEMA, rows((2, 5))),
        barrier(3),
        barrier(4),
    ]
    seen: list[tuple[int, dict]] = []

    def on_message(message: Message) -> None:
        if isinstance(message, Barrier) and message.epoch.prev:
            prev = message.epoch.prev
            assert state.commits and state.commits[-1] == prev, (state.commits, message.epoch)
            assert not state.has_pending_writes
            groups = store.snapshot(7, prev)
            decoded = {key: state[0] for key, state in state_groups(groups).items()}  # group key -> row count
            seen.append((prev, decoded))

    run(agg(messages, calls, state=state), on_message=on_message)
    assert state.commits == [1, 2, 3]
    assert seen == [(1, {(1,): 1, (2,): 1}), (2, {(2,): 2}), (3, {(2,): 2})]


# ---- regressions -----------------------------------------------------------
def test_sum_retracts_the_smallest_int32() -> None:
    """Regression: the retraction negated the argument in its own type and overflowed."""
    calls = [("sum", 1, pa.int64())]
    smallest = -(2**31)
    messages = [
        barrier(1),
        inserts(SCHEMA, rows((1, smallest), (1, 1))),
        barrier(2),
        deletes(SCHEMA, rows((1, smallest))),
        barrier(3),
    ]
    groups = per_barrier(run(agg(messages, calls)))
    assert groups[2] == [(UD, (1, smallest + 1)), (UI, (1, 1))]


# ---- differential -----------------------------------------------------------
def test_random_changes_agree_with_recomputing_from_scratch() -> None:
    """Applying the emitted changes gives GROUP BY over the final rows, every epoch."""
    rng = random.Random(2024)
    calls = [
        ("count_star", None, pa.int64()),
        ("count", 1, pa.int64()),
        ("sum", 1, pa.int64()),
        ("min", 1, pa.int32()),
        ("max", 1, pa.int32()),
        ("sum", 2, pa.decimal128(38, 2)),
    ]
    live: list[tuple] = []
    messages: list[Message] = [barrier(1)]
    expected_by_epoch = []
    for epoch in range(2, 12):
        for _ in range(rng.randrange(1, 4)):
            ops, batch = [], []
            for _ in range(rng.randrange(1, 40)):
                if live and rng.random() < 0.4:
                    row = live.pop(rng.randrange(len(live)))
                    ops.append(DEL)
                else:
                    v = rng.choice([None, *range(-5, 6)])
                    price = None if v is None else Decimal(v) / 4
                    row = (rng.randrange(6), v, price, None)
                    live.append(row)
                    ops.append(INS)
                batch.append(row)
            messages.append(chunk(SCHEMA, ops, batch))
        messages.append(barrier(epoch))
        expected_by_epoch.append(_group_by(live))

    output = run(agg(messages, calls))
    view: dict = {}
    assert_alternating(changes(output), key=lambda row: row[0])
    assert len(per_barrier(output)) == len(expected_by_epoch) + 1
    for epoch_changes, expected in zip(per_barrier(output)[1:], expected_by_epoch):
        view = apply_changes(epoch_changes, view)
        assert view == {row: 1 for row in expected}


def _group_by(rows: list[tuple]) -> list[tuple]:
    groups: dict[int, list[tuple]] = {}
    for row in rows:
        groups.setdefault(row[0], []).append(row)
    out = []
    for k, members in groups.items():
        values = [r[1] for r in members if r[1] is not None]
        prices = [r[2] for r in members if r[2] is not None]
        out.append(
            (
                k,
                len(members),
                len(values),
                sum(values) if values else None,
                min(values) if values else None,
                max(values) if values else None,
                sum(prices, Decimal("0.00")).quantize(Decimal("0.01")) if prices else None,
            )
        )
    return out


# ---- bounded cache (DESIGN §6) ------------------------------------------------
# Every aggregate over int, decimal and float arguments: a group is ~2.7 KB, so this budget holds one or two.
ALL_CALLS = [
    ("count_star", None, pa.int64()),
    ("count", 1, pa.int64()),
    ("sum", 1, pa.int64()),
    ("avg", 1, NUMERIC),
    ("min", 1, pa.int32()),
    ("max", 1, pa.int32()),
    ("sum", 2, pa.decimal128(38, 2)),
    ("min", 2, pa.decimal128(38, 2)),
    ("max", 3, pa.float64()),
]
TINY_BUDGET_BYTES = 5_000


def random_epochs(seed: int, epochs: int, groups: int) -> list[list[Chunk]]:
    """Inserts, deletes (often of a group's current MIN/MAX, sometimes of its last row) and updates."""
    rng = random.Random(seed)
    live: list[tuple] = []
    out = []
    for _ in range(epochs):
        chunks = []
        for _ in range(rng.randrange(1, 4)):
            ops: list = []
            batch: list[tuple] = []
            for _ in range(rng.randrange(1, 30)):
                roll = rng.random()
                if live and roll < 0.15:  # delete the largest v of a group: its MAX goes to the next value
                    k = rng.choice(live)[0]
                    row = max((r for r in live if r[0] == k and r[1] is not None), key=lambda r: r[1], default=None)
                    if row is None:
                        continue
                    live.remove(row)
                    ops.append(DEL)
                    batch.append(row)
                elif live and roll < 0.4:
                    row = live.pop(rng.randrange(len(live)))
                    ops.append(DEL)
                    batch.append(row)
                elif live and roll < 0.5:
                    old = live.pop(rng.randrange(len(live)))
                    new = (old[0], rng.randrange(-50, 50), old[2], old[3])
                    live.append(new)
                    ops += [UD, UI]
                    batch += [old, new]
                else:
                    v = rng.choice([None, *range(-50, 50)])
                    price = None if v is None else Decimal(v) / 4
                    x = None if v is None else v / 3
                    row = (rng.randrange(groups), v, price, x)
                    live.append(row)
                    ops.append(INS)
                    batch.append(row)
            if batch:
                chunks.append(chunk(SCHEMA, ops, batch))
        out.append(chunks)
    return out


def bounded(messages: list[Message], store: MemoryStateStore, group_keys: list[int] | None = None) -> HashAgg:
    state = agg_state(store, 5, group_keys)
    operator = agg(messages, ALL_CALLS, group_keys, state)
    return HashAgg(operator.input, operator.group_keys, operator.calls, operator.schema, state, TINY_BUDGET_BYTES)


def decoded_state(store: MemoryStateStore, epoch: int) -> dict:
    return state_groups(store.snapshot(5, epoch))


def test_bounded_cache_emits_exactly_what_the_unbounded_operator_emits() -> None:
    epochs = random_epochs(seed=11, epochs=40, groups=30)
    reference_store = MemoryStateStore()
    reference = agg(stream(epochs), ALL_CALLS, state=agg_state(reference_store, 5))
    expected = per_barrier(run(reference))
    store = SpyStore()
    operator = bounded(stream(epochs), store)
    cache = operator.cache
    assert cache is not None
    bytes_after_barriers: list[int] = []
    output = run(operator, lambda m: bytes_after_barriers.append(cache.used_bytes) if isinstance(m, Barrier) else None)

    assert per_barrier(output) == expected
    assert_alternating(changes(output), key=lambda row: row[0])
    assert DEL in [op for op, _ in changes(output)]  # groups did vanish
    assert cache.evictions > 100 and cache.misses > 100
    assert 0 < store.lookups <= sum(len(chunks) for chunks in epochs)  # at most one point lookup per chunk
    assert store.snapshots == 0
    assert decoded_state(store, len(epochs)) == decoded_state(reference_store, len(epochs))
    # On every barrier the epoch's groups are written, so the cache is back within its budget.
    assert max(bytes_after_barriers) <= TINY_BUDGET_BYTES


def test_bounded_cache_with_string_group_keys_matches_the_unbounded_one() -> None:
    """Variable-width group keys: evicted groups are found again by their encoded key."""
    string_schema = pa.schema([pa.field("k", pa.string()), *list(SCHEMA)[1:]])

    def as_strings(chunk: Chunk) -> Chunk:
        keys = pc.binary_join_element_wise("g", chunk.data.column(0).cast(pa.string()), "")
        return Chunk.of(chunk.ops, pa.RecordBatch.from_arrays([keys, *chunk.data.columns[1:]], schema=string_schema))

    epochs = [[as_strings(c) for c in chunks] for chunks in random_epochs(seed=17, epochs=30, groups=40)]
    aggregates = [pa.field(f"a{i}", t) for i, (_, _, t) in enumerate(ALL_CALLS)]
    output_schema = pa.schema([string_schema.field(0), *aggregates])
    calls = [AggCall(kind, arg, t) for kind, arg, t in ALL_CALLS]

    def operator(store: MemoryStateStore, cache_bytes: int | None) -> HashAgg:
        state_schema, pk = agg_state_schema(output_schema, 1)
        state = StateTable(store, 5, state_schema, pk)
        source = ScriptedSource(string_schema, stream(epochs))
        return HashAgg(source, [0], calls, output_schema, state, cache_bytes)

    expected = per_barrier(run(operator(MemoryStateStore(), None)))
    store = SpyStore()
    bounded_operator = operator(store, TINY_BUDGET_BYTES)
    assert per_barrier(run(bounded_operator)) == expected
    assert bounded_operator.cache is not None and bounded_operator.cache.evictions > 0 and store.lookups > 0


def test_bounded_global_aggregate_matches_the_unbounded_one() -> None:
    epochs = random_epochs(seed=5, epochs=15, groups=4)
    expected = per_barrier(run(agg(stream(epochs), ALL_CALLS, group_keys=[])))
    operator = bounded(stream(epochs), SpyStore(), group_keys=[])
    assert per_barrier(run(operator)) == expected


def test_recovery_with_a_budget_reads_groups_on_demand_and_continues_exactly() -> None:
    epochs = random_epochs(seed=23, epochs=30, groups=300)
    reference_store = MemoryStateStore()
    expected = per_barrier(run(agg(stream(epochs), ALL_CALLS, state=agg_state(reference_store, 5))))

    store = SpyStore()
    split = 20  # the first operator stops after committing epoch `split` (its last barrier is split + 1)
    run(bounded(stream(epochs[:split]), store))
    groups_at_checkpoint = len(decoded_state(store, split))
    store.reset()
    # Recovery: a new operator over the same store; its first barrier resumes from the committed epoch.
    recovered = bounded(stream(epochs[split:], first_epoch=100, prev=split), store)
    reads: list[tuple[int, int]] = []  # (snapshots, keys looked up) as each barrier goes out
    output = per_barrier(
        run(
            recovered,
            lambda m: reads.append((store.snapshots, store.keys_looked_up)) if isinstance(m, Barrier) else None,
        )
    )
    assert output[0] == [] and output[1:] == expected[split + 1 :]
    # Recovery itself reads nothing; the first epoch reads only groups its chunks touch.
    touched = {row[0] for c in epochs[split] for _, row in c.rows()}
    assert reads[0] == (0, 0)
    assert 0 < reads[1][1] <= len(touched) < groups_at_checkpoint
    assert store.snapshots == 0
    last_committed = 100 + len(epochs) - split - 1
    assert decoded_state(store, last_committed) == decoded_state(reference_store, len(epochs))


def test_recovery_of_a_global_aggregate_with_a_budget_reads_its_group_back() -> None:
    epochs = random_epochs(seed=3, epochs=8, groups=3)
    expected = per_barrier(run(agg(stream(epochs), ALL_CALLS, group_keys=[])))
    store = SpyStore()
    run(bounded(stream(epochs[:5]), store, group_keys=[]))
    output = per_barrier(run(bounded(stream(epochs[5:], first_epoch=50, prev=5), store, group_keys=[])))
    assert output[0] == [] and output[1:] == expected[6:]


def test_no_lookup_while_every_group_fits() -> None:
    store = SpyStore()
    state = agg_state(store, 5)
    operator = agg(stream(random_epochs(seed=2, epochs=10, groups=20)), ALL_CALLS, state=state)
    roomy = HashAgg(operator.input, [0], operator.calls, operator.schema, state, cache_bytes=10_000_000)
    run(roomy)
    assert roomy.cache is not None and roomy.cache.evictions == 0
    assert store.lookups == 0 and store.snapshots == 0


def test_accounted_bytes_follow_what_the_groups_really_allocate() -> None:
    """GROUP_BYTES and friends are tracemalloc measurements: check they still describe this CPython."""
    for calls, values_per_group in [(ALL_CALLS[:3], 1), (ALL_CALLS, 1), (ALL_CALLS, 20)]:
        rows = [(v % 2000, v, Decimal(v) / 4, v / 3) for v in range(2000 * values_per_group)]
        state = agg_state(MemoryStateStore(), 5)
        operator = agg([barrier(1), inserts(SCHEMA, rows), barrier(2)], calls, state=state)
        operator = HashAgg(operator.input, [0], operator.calls, operator.schema, state, cache_bytes=10**12)
        accounted, allocated = accounted_and_allocated_bytes(operator)
        assert 0.75 <= accounted / allocated <= 1.5, (calls, values_per_group, accounted, allocated)


# ---- FILTER, DISTINCT, string_agg, array_agg, SELECT DISTINCT ---------------------
# k: group, v: value, s: text, o: a sort key, cheap: a pre-projected FILTER condition.
WIDE = pa.schema([("k", pa.int32()), ("v", pa.int32()), ("s", pa.string()), ("o", pa.int32()), ("cheap", pa.bool_())])
K, V, S, ORD, CHEAP = range(5)
TEXT = pa.string()


def wide_agg(
    messages: list[Message],
    calls: list[AggCall],
    group_keys: list[int] | None = None,
    state: StateTable | None = None,
    cache_bytes: int | None = None,
) -> HashAgg:
    group_keys = [K] if group_keys is None else group_keys
    fields = [WIDE.field(k) for k in group_keys] + [pa.field(f"a{i}", c.output_type) for i, c in enumerate(calls)]
    return HashAgg(ScriptedSource(WIDE, messages), group_keys, calls, pa.schema(fields), state, cache_bytes)


def wide_state(store: MemoryStateStore, group_keys: list[int] | None = None) -> StateTable:
    group_keys = [K] if group_keys is None else group_keys
    schema, pk = agg_state_schema(pa.schema([WIDE.field(k) for k in group_keys]), len(group_keys))
    return StateTable(store, 9, schema, pk)


def wide(*values: tuple) -> list[tuple]:
    """Rows from (k, v, s, o, cheap) tuples, trailing columns NULL when left out."""
    return [(*row, *[None] * (5 - len(row))) for row in values]


def test_filter_counts_only_rows_whose_condition_is_true() -> None:
    calls = [
        AggCall("count_star", None, pa.int64()),
        AggCall("count_star", None, pa.int64(), filter=CHEAP),
        AggCall("count", V, pa.int64(), filter=CHEAP),
        AggCall("sum", V, pa.int64(), filter=CHEAP),
        AggCall("avg", V, pa.float64(), filter=CHEAP),
        AggCall("max", V, pa.int32(), filter=CHEAP),
    ]
    cheap_rows = wide((1, 10, None, None, True), (1, None, None, None, True), (1, 30, None, None, True))
    other_rows = wide((1, 1000, None, None, False), (1, 2000, None, None, None))  # NULL is not TRUE either
    messages = [
        barrier(1),
        inserts(WIDE, cheap_rows + other_rows),
        barrier(2),
        deletes(WIDE, [cheap_rows[2]]),
        barrier(3),
        deletes(WIDE, cheap_rows[:2]),
        barrier(4),
    ]
    groups = per_barrier(run(wide_agg(messages, calls)))
    assert groups[1] == [(INS, (1, 5, 3, 2, 40, 20.0, 30))]
    assert groups[2] == [(UD, (1, 5, 3, 2, 40, 20.0, 30)), (UI, (1, 4, 2, 1, 10, 10.0, 10))]
    # The group lives on with rows the filter excludes; its filtered aggregates are those of no rows.
    assert groups[3] == [(UD, (1, 4, 2, 1, 10, 10.0, 10)), (UI, (1, 2, 0, 0, None, None, None))]


def test_global_count_star_with_filter_is_zero_over_nothing() -> None:
    calls = [AggCall("count_star", None, pa.int64(), filter=CHEAP), AggCall("count", V, pa.int64(), distinct=True)]
    messages = [barrier(1), barrier(2), inserts(WIDE, wide((1, 5, None, None, False))), barrier(3)]
    assert per_barrier(run(wide_agg(messages, calls, group_keys=[]))) == [
        [],
        [(INS, (0, 0))],
        [(UD, (0, 0)), (UI, (0, 1))],
    ]


def test_count_distinct_ignores_nulls_and_drops_a_value_with_its_last_row() -> None:
    calls = [AggCall("count_star", None, pa.int64()), AggCall("count", V, pa.int64(), distinct=True)]
    messages = [
        barrier(1),
        inserts(WIDE, wide((1, 7), (1, 7), (1, 8), (1, None), (1, None))),
        barrier(2),
        deletes(WIDE, wide((1, 7))),  # another 7 remains
        barrier(3),
        deletes(WIDE, wide((1, 7), (1, None))),
        barrier(4),
        chunk(WIDE, "U- U+", wide((1, 8), (1, 9))),
        barrier(5),
        deletes(WIDE, wide((1, 9), (1, None))),
        barrier(6),
    ]
    groups = per_barrier(run(wide_agg(messages, calls)))
    assert groups[1] == [(INS, (1, 5, 2))]
    assert groups[2] == [(UD, (1, 5, 2)), (UI, (1, 4, 2))]
    assert groups[3] == [(UD, (1, 4, 2)), (UI, (1, 2, 1))]
    assert groups[4] == []  # 8 became 9: still one distinct value
    assert groups[5] == [(DEL, (1, 2, 1))]


def test_count_distinct_with_filters_over_one_argument_is_one_value_query() -> None:
    """q15's shape: count(DISTINCT bidder) overall and per price band reduce a chunk in one query."""
    calls = [
        AggCall("count", V, pa.int64(), distinct=True),
        AggCall("count", V, pa.int64(), distinct=True, filter=CHEAP),
        AggCall("count", V, pa.int64(), distinct=True, filter=ORD),  # o stands in for a second condition
        AggCall("sum", V, pa.int64(), distinct=True, filter=CHEAP),
    ]
    schema = pa.schema([*list(WIDE)[:3], pa.field("o", pa.bool_()), WIDE.field(CHEAP)])
    rows = [(1, 5, None, True, True), (1, 5, None, False, True), (1, 6, None, None, False), (1, 7, None, True, None)]
    messages = [barrier(1), inserts(schema, rows), barrier(2), deletes(schema, rows[:1]), barrier(3)]
    fields = [schema.field(0)] + [pa.field(f"a{i}", c.output_type) for i, c in enumerate(calls)]
    operator = HashAgg(ScriptedSource(schema, messages), [0], calls, pa.schema(fields), None)
    assert len(operator._value_queries) == 1
    groups = per_barrier(run(operator))
    assert groups[1] == [(INS, (1, 3, 1, 2, 5))]
    # The other 5 holds no row passing the first band's condition: 5 leaves it, not the overall count.
    assert groups[2] == [(UD, (1, 3, 1, 2, 5)), (UI, (1, 3, 1, 1, 5))]


def test_sum_and_avg_distinct_count_each_value_once_under_deletes() -> None:
    calls = [
        AggCall("sum", V, pa.int64(), distinct=True),
        AggCall("avg", V, NUMERIC, distinct=True),
        AggCall("sum", V, pa.int64()),
    ]
    messages = [
        barrier(1),
        inserts(WIDE, wide((1, 2), (1, 2), (1, 4), (1, None))),
        barrier(2),
        deletes(WIDE, wide((1, 2))),
        barrier(3),
        deletes(WIDE, wide((1, 2))),
        barrier(4),
        deletes(WIDE, wide((1, 4))),
        barrier(5),
    ]
    groups = per_barrier(run(wide_agg(messages, calls)))
    assert groups[1] == [(INS, (1, 6, Decimal("3.0000000000"), 8))]
    assert groups[2] == [(UD, (1, 6, Decimal("3.0000000000"), 8)), (UI, (1, 6, Decimal("3.0000000000"), 6))]
    assert groups[3] == [(UD, (1, 6, Decimal("3.0000000000"), 6)), (UI, (1, 4, Decimal("4.0000000000"), 4))]
    assert groups[4] == [(UD, (1, 4, Decimal("4.0000000000"), 4)), (UI, (1, None, None, None))]


def test_min_max_and_distinct_over_floats_and_intervals_retract_nan_and_equal_intervals() -> None:
    """NaN is one value (above every number), and '1 mon' equals '30 days', as in PostgreSQL and DuckDB."""
    schema = pa.schema([("k", pa.int32()), ("x", pa.float64()), ("i", pa.month_day_nano_interval())])
    month, thirty_days = pa.MonthDayNano([1, 0, 0]), pa.MonthDayNano([0, 30, 0])
    calls = [
        AggCall("count", 1, pa.int64(), distinct=True),
        AggCall("max", 1, pa.float64()),
        AggCall("sum", 1, pa.float64(), distinct=True),
        AggCall("count", 2, pa.int64(), distinct=True),
    ]
    nan = float("nan")
    messages = [
        barrier(1),
        inserts(schema, [(1, nan, month), (1, 1.5, None)]),
        barrier(2),
        inserts(schema, [(1, nan, thirty_days)]),  # the same NaN, an equal interval: nothing changes
        barrier(3),
        deletes(schema, [(1, nan, month)]),
        barrier(4),
        deletes(schema, [(1, nan, thirty_days)]),  # the last NaN and the last interval go
        barrier(5),
    ]
    fields = [schema.field(0)] + [pa.field(f"a{i}", c.output_type) for i, c in enumerate(calls)]
    groups = per_barrier(run(HashAgg(ScriptedSource(schema, messages), [0], calls, pa.schema(fields))))
    ((op, row),) = groups[1]
    assert op == INS and row[0] == 1 and row[1] == 2 and math.isnan(row[2]) and math.isnan(row[3]) and row[4] == 1
    assert groups[2] == []
    assert groups[3] == []
    ((_, _), (op, new)) = groups[4]
    assert op == UI and new == (1, 1, 1.5, 1.5, 0)


def test_string_agg_lists_values_in_value_order_skips_nulls_and_repeats_duplicates() -> None:
    calls = [
        AggCall("string_agg", S, TEXT, delimiter=", "),
        AggCall("string_agg", S, TEXT, delimiter="", distinct=True),
    ]
    messages = [
        barrier(1),
        inserts(WIDE, wide((1, 0, "pear"), (1, 0, "apple"), (1, 0, None), (1, 0, "pear"), (2, 0, None))),
        barrier(2),
        deletes(WIDE, wide((1, 0, "pear"))),
        barrier(3),
        deletes(WIDE, wide((1, 0, "pear"), (1, 0, "apple"))),
        barrier(4),
    ]
    groups = per_barrier(run(wide_agg(messages, calls)))
    assert sorted(groups[1], key=repr) == [(INS, (1, "apple, pear, pear", "applepear")), (INS, (2, None, None))]
    assert groups[2] == [(UD, (1, "apple, pear, pear", "applepear")), (UI, (1, "apple, pear", "applepear"))]
    assert groups[3] == [(UD, (1, "apple, pear", "applepear")), (UI, (1, None, None))]  # the NULL row remains


def test_string_agg_order_by_puts_nulls_where_postgresql_does_and_breaks_ties_by_value() -> None:
    descending = AggCall(
        "string_agg", S, TEXT, delimiter=",", order_by=(SortKey(ORD, descending=True, nulls_first=True),)
    )
    ascending = AggCall("string_agg", S, TEXT, delimiter=",", order_by=(SortKey(ORD),))
    two_keys = AggCall(
        "string_agg", S, TEXT, delimiter=",", order_by=(SortKey(V, nulls_first=True), SortKey(ORD, descending=True))
    )
    rows = wide((1, 1, "a", 3), (1, 1, "b", None), (1, 2, "c", 1), (1, None, "d", 3), (1, 1, "e", 3), (1, 1, None, 9))
    messages = [barrier(1), inserts(WIDE, rows), barrier(2), deletes(WIDE, rows[:1]), barrier(3)]
    groups = per_barrier(run(wide_agg(messages, [descending, ascending, two_keys])))
    assert groups[1] == [(INS, (1, "b,a,d,e,c", "c,a,d,e,b", "d,a,e,b,c"))]
    assert groups[2] == [(UD, (1, "b,a,d,e,c", "c,a,d,e,b", "d,a,e,b,c")), (UI, (1, "b,d,e,c", "c,d,e,b", "d,e,b,c"))]


def test_array_agg_keeps_nulls_and_lists_values_in_order() -> None:
    calls = [
        AggCall("array_agg", V, pa.list_(pa.int32())),
        AggCall("array_agg", V, pa.list_(pa.int32()), order_by=(SortKey(ORD, descending=True, nulls_first=True),)),
        AggCall("array_agg", V, pa.list_(pa.int32()), distinct=True, filter=CHEAP),
    ]
    rows = wide((1, 3, None, 1, True), (1, None, None, 2, True), (1, 1, None, None, True), (1, 3, None, 0, False))
    messages = [barrier(1), inserts(WIDE, rows), barrier(2), deletes(WIDE, rows[1:3]), barrier(3)]
    output = run(wide_agg(messages, calls))
    groups = per_barrier(output)
    assert groups[1] == [(INS, (1, [1, 3, 3, None], [1, None, 3, 3], [1, 3, None]))]
    assert groups[2] == [(UD, (1, [1, 3, 3, None], [1, None, 3, 3], [1, 3, None])), (UI, (1, [3, 3], [3, 3], [3]))]
    first = next(m for m in output if isinstance(m, Chunk))
    assert first.data.schema.field(1).type == pa.list_(pa.int32())


def test_select_distinct_is_a_hash_agg_without_calls() -> None:
    """A row of the view lives while any input row holds it."""
    messages = [
        barrier(1),
        inserts(WIDE, wide((1, 5), (1, 5), (2, 5), (1, None))),
        barrier(2),
        deletes(WIDE, wide((1, 5))),
        barrier(3),
        deletes(WIDE, wide((1, 5), (1, None))),
        barrier(4),
    ]
    groups = per_barrier(run(wide_agg(messages, [], group_keys=[K, V])))
    assert sorted(groups[1], key=repr) == sorted([(INS, (1, 5)), (INS, (2, 5)), (INS, (1, None))], key=repr)
    assert groups[2] == []
    assert sorted(groups[3], key=repr) == sorted([(DEL, (1, 5)), (DEL, (1, None))], key=repr)


# A call of every new kind, for the differential, recovery, cache and accounting tests.
NEW_CALLS = [
    AggCall("count_star", None, pa.int64(), filter=CHEAP),
    AggCall("count", V, pa.int64(), distinct=True),
    AggCall("count", V, pa.int64(), distinct=True, filter=CHEAP),
    AggCall("sum", V, pa.int64(), distinct=True),
    AggCall("avg", V, NUMERIC, distinct=True, filter=CHEAP),
    AggCall("string_agg", S, TEXT, delimiter=",", order_by=(SortKey(ORD, descending=True, nulls_first=True),)),
    AggCall("string_agg", S, TEXT, delimiter="|", distinct=True),
    AggCall("array_agg", V, pa.list_(pa.int32())),
]


def _recompute(live: list[tuple]) -> set[tuple]:
    """NEW_CALLS per group, computed from the live rows as PostgreSQL would."""
    groups: dict[int, list[tuple]] = {}
    for row in live:
        groups.setdefault(row[K], []).append(row)
    out = set()
    for k, members in groups.items():
        values = {r[V] for r in members if r[V] is not None}
        cheap = {r[V] for r in members if r[V] is not None and r[CHEAP] is True}
        average = (Decimal(sum(cheap)) / len(cheap)).quantize(Decimal("1e-10")) if cheap else None
        texts = sorted((r for r in members if r[S] is not None), key=lambda r: r[S])
        by_o = sorted(texts, key=lambda r: (r[ORD] is not None, -(r[ORD] or 0)))  # DESC NULLS FIRST, ties by value
        array = sorted((r[V] for r in members), key=lambda v: (v is None, v or 0))
        out.add(
            (
                k,
                sum(1 for r in members if r[CHEAP] is True),
                len(values),
                len(cheap),
                sum(values) if values else None,
                average,
                ",".join(r[S] for r in by_o) if texts else None,
                "|".join(sorted({r[S] for r in texts})) if texts else None,
                tuple(array),
            )
        )
    return out


def wide_random_epochs(seed: int, epochs: int, groups: int) -> list[list[Chunk]]:
    """Inserts, deletes and updates of rows with few distinct values, so values come and go."""
    rng = random.Random(seed)
    live: list[tuple] = []
    out = []

    def new_row(k: int) -> tuple:
        s = rng.choice([None, "ant", "bee", "cat", "dog", "éclair", "emu" * 20])
        return (k, rng.choice([None, *range(-4, 5)]), s, rng.choice([None, *range(3)]), rng.choice([None, True, False]))

    for _ in range(epochs):
        chunks = []
        for _ in range(rng.randrange(1, 4)):
            ops: list = []
            batch: list[tuple] = []
            for _ in range(rng.randrange(1, 25)):
                roll = rng.random()
                if live and roll < 0.35:
                    ops.append(DEL)
                    batch.append(live.pop(rng.randrange(len(live))))
                elif live and roll < 0.5:
                    old = live.pop(rng.randrange(len(live)))
                    new = new_row(old[K])
                    live.append(new)
                    ops += [UD, UI]
                    batch += [old, new]
                else:
                    row = new_row(rng.randrange(groups))
                    live.append(row)
                    ops.append(INS)
                    batch.append(row)
            chunks.append(chunk(WIDE, ops, batch))
        out.append(chunks)
    return out


def _hashable(changes: list) -> list:
    """Changes whose array values are tuples, so rows can be counted."""
    return [(op, tuple(tuple(v) if isinstance(v, list) else v for v in row)) for op, row in changes]


def test_new_aggregates_under_random_changes_agree_with_recomputing_from_scratch() -> None:
    epochs = wide_random_epochs(seed=99, epochs=25, groups=5)
    output = run(wide_agg(stream(epochs), NEW_CALLS))
    assert_alternating(changes(output), key=lambda row: row[0])
    live: list[tuple] = []
    view: dict = {}
    for chunks, epoch_changes in zip(epochs, per_barrier(output)[1:], strict=True):
        for c in chunks:
            for op, row in c.rows():
                if op in (INS, UI):
                    live.append(row)
                else:
                    live.remove(row)
        view = apply_changes(_hashable(epoch_changes), view)
        assert set(view) == _recompute(live) and set(view.values()) == {1}


def test_new_accumulators_survive_recovery_with_and_without_a_cache_budget() -> None:
    epochs = wide_random_epochs(seed=7, epochs=20, groups=40)
    expected = per_barrier(run(wide_agg(stream(epochs), NEW_CALLS, state=wide_state(MemoryStateStore()))))
    split = 12
    for cache_bytes in (None, 4_000):
        store = SpyStore()
        first = wide_agg(stream(epochs[:split]), NEW_CALLS, state=wide_state(store), cache_bytes=cache_bytes)
        assert per_barrier(run(first)) == expected[: split + 1]
        if cache_bytes is not None:
            assert first.cache is not None and first.cache.evictions > 0  # groups really were read back
        # A new operator over the same store resumes from the state committed at `split`.
        recovered = wide_agg(
            stream(epochs[split:], first_epoch=100, prev=split),
            NEW_CALLS,
            state=wide_state(store),
            cache_bytes=cache_bytes,
        )
        output = per_barrier(run(recovered))
        assert output[0] == [] and output[1:] == expected[split + 1 :], cache_bytes
        assert (store.snapshots > 0) == (cache_bytes is None)


def test_bounded_cache_with_new_accumulators_matches_the_unbounded_operator() -> None:
    epochs = wide_random_epochs(seed=31, epochs=20, groups=60)
    reference_store = MemoryStateStore()
    expected = per_barrier(run(wide_agg(stream(epochs), NEW_CALLS, state=wide_state(reference_store))))
    store = SpyStore()
    operator = wide_agg(stream(epochs), NEW_CALLS, state=wide_state(store), cache_bytes=6_000)
    cache = operator.cache
    assert cache is not None
    sizes: list[int] = []
    assert per_barrier(run(operator, lambda m: sizes.append(cache.used_bytes) if isinstance(m, Barrier) else None)) == (
        expected
    )
    assert cache.evictions > 30 and store.lookups > 0
    assert max(sizes) <= 6_000
    assert state_groups(store.snapshot(9, len(epochs))) == state_groups(reference_store.snapshot(9, len(epochs)))


def test_accounted_bytes_of_the_new_accumulators_follow_what_they_allocate() -> None:
    """Multisets of ints and of texts (short and long), ordered string_agg keys and their output strings."""
    for values_per_group, text_length in [(1, 3), (20, 3), (20, 60)]:
        rows = [(v % 1000, v, f"{v:0{text_length}d}", v % 7, v % 3 == 0) for v in range(1000 * values_per_group)]
        state = wide_state(MemoryStateStore())
        operator = wide_agg([barrier(1), inserts(WIDE, rows), barrier(2)], NEW_CALLS, state=state, cache_bytes=10**12)
        accounted, allocated = accounted_and_allocated_bytes(operator)
        assert 0.75 <= accounted / allocated <= 1.5, (values_per_group, text_length, accounted, allocated)


# ---- append-only input: MIN and MAX keep their extreme alone ------------------------------------
EXTREMES = pa.schema(
    [("k", pa.int32()), ("v", pa.int64()), ("s", pa.string()), ("t", pa.timestamp("us")), ("f", pa.bool_()),
     ("x", pa.float64())]
)  # fmt: skip
EXTREME_CALLS = [
    AggCall("max", 1, pa.int64()),
    AggCall("min", 1, pa.int64(), filter=4),
    AggCall("max", 2, pa.string()),
    AggCall("min", 3, pa.timestamp("us")),
    AggCall("max", 5, pa.float64()),  # floats keep their multiset: NaN and -0.0
    AggCall("count_star", None, pa.int64()),
]


def extremes_agg(
    messages: list[Message], append_only: bool, state: StateTable | None = None, cache_bytes: int | None = None
) -> HashAgg:
    fields = [EXTREMES.field(0), *(pa.field(f"a{j}", c.output_type) for j, c in enumerate(EXTREME_CALLS))]
    return HashAgg(
        ScriptedSource(EXTREMES, messages),
        [0],
        EXTREME_CALLS,
        pa.schema(fields),
        state,
        cache_bytes=cache_bytes,
        append_only=append_only,
    )


def extremes_state(store: MemoryStateStore) -> StateTable:
    schema, pk = agg_state_schema(pa.schema([EXTREMES.field(0)]), 1)
    return StateTable(store, 1, schema, pk)


def random_inserts(seed: int, epochs: int) -> list[list[Chunk]]:
    rng = random.Random(seed)
    base = 1_600_000_000_000_000

    def value(make: object) -> object:
        return None if rng.random() < 0.1 else make

    def row() -> tuple:
        text = rng.choice(["", "a", "ab", "b", "é", "z" * 30])
        time = pa.scalar(base + rng.randrange(10**6), pa.timestamp("us")).as_py()
        number = rng.choice([0.0, -0.0, 1.5, math.nan, -2.0])
        return (rng.randrange(6), value(rng.randrange(-50, 50)), value(text), value(time), value(rng.random() < 0.5),
                value(number))  # fmt: skip

    return [
        [inserts(EXTREMES, [row() for _ in range(rng.randrange(1, 30))]) for _ in range(rng.randrange(1, 4))]
        for _ in range(epochs)
    ]


def comparable(output: list[Message]) -> list[list[tuple]]:
    """Per barrier, the changes with NaN spelled out (NaN objects never compare equal)."""
    return [
        [(op, tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)) for op, row in changes]
        for changes in per_barrier(output)
    ]


def test_append_only_min_and_max_give_the_answers_of_the_multisets() -> None:
    for seed in range(5):
        epochs = random_inserts(seed, epochs=8)
        expected = comparable(run(extremes_agg(stream(epochs), append_only=False)))
        assert comparable(run(extremes_agg(stream(epochs), append_only=True))) == expected, seed


def test_append_only_min_and_max_keep_one_value_in_state_and_recover_from_it() -> None:
    epochs = random_inserts(7, epochs=10)
    expected = comparable(run(extremes_agg(stream(epochs), append_only=False)))
    split = 5
    for cache_bytes in (None, 2_000):
        store = MemoryStateStore()
        first = extremes_agg(stream(epochs[:split]), append_only=True, state=extremes_state(store))
        assert comparable(run(first)) == expected[: split + 1]
        for _, accumulators in state_groups(store.snapshot(1, split)).values():
            assert all(len(accumulators[j][0]) <= 1 for j in range(4)), accumulators
        recovered = extremes_agg(
            stream(epochs[split:], first_epoch=100, prev=split),
            append_only=True,
            state=extremes_state(store),
            cache_bytes=cache_bytes,
        )
        output = comparable(run(recovered))
        assert output[0] == [] and output[1:] == expected[split + 1 :], cache_bytes


def test_append_only_aggregation_refuses_a_delete() -> None:
    row = (1, 5, "a", None, True, 1.0)
    messages = [barrier(1), inserts(EXTREMES, [row]), deletes(EXTREMES, [row]), barrier(2)]
    with pytest.raises(InternalError, match="append-only"):
        run(extremes_agg(messages, append_only=True))
