"""HashAgg: per-epoch changes of groups under inserts, updates and deletes, emitted on barriers."""

from __future__ import annotations

import pickle
import random
from decimal import Decimal

import pyarrow as pa
from scripted import (
    DEL,
    INS,
    UD,
    UI,
    ScriptedSource,
    apply_changes,
    assert_alternating,
    barrier,
    changes,
    chunk,
    deletes,
    inserts,
    per_barrier,
    run,
)

from tidegate.common.chunk import Chunk
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operators.hash_agg import AGG_STATE_SCHEMA, AggCall, HashAgg

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
    state = StateTable(store, 1, AGG_STATE_SCHEMA, [0])
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
    assert [pickle.loads(k) for k in store.snapshot(1, 3).column("group_key").to_pylist()] == [(2,)]


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


class SpyStateTable(StateTable):
    """Records every commit so a test can compare it with what went downstream."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.commits: list[int] = []

    def commit(self, epoch: int) -> None:
        super().commit(epoch)
        self.commits.append(epoch)


def test_state_is_committed_before_the_barrier_goes_downstream() -> None:
    store = MemoryStateStore()
    state = SpyStateTable(store, 7, AGG_STATE_SCHEMA, [0])
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
            decoded = {
                pickle.loads(k): pickle.loads(v)[0]  # group key -> row count
                for k, v in zip(groups.column("group_key").to_pylist(), groups.column("accumulators").to_pylist())
            }
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
