"""TemporalFilter: rows enter and leave as the barriers' epochs move now, input changes keep their
meaning, and a rebuilt operator resumes from its state table."""

from __future__ import annotations

import datetime as dt
import random

import pyarrow as pa
import pytest
from scripted import (
    DEL,
    INS,
    UD,
    UI,
    Row,
    ScriptedSource,
    apply_changes,
    assert_alternating,
    barrier,
    chunk,
    per_barrier,
    run,
    table_rows,
)

from tidegate.common.epoch import EPOCH_PHYSICAL_SHIFT
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Message, Watermark
from tidegate.stream.operator import CheckedOperator, Operator
from tidegate.stream.operators.temporal_filter import (
    TemporalFilter,
    TimeBound,
    add_intervals,
    temporal_filter_state_schema,
)

SCHEMA = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us")), ("v", pa.string())])
STATE_TABLE = (5 << 16) | 1
T0 = dt.datetime(2026, 11, 27, 12, 0, 0)
SECOND_US = 1_000_000


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def epoch(seconds: float) -> int:
    """The epoch that begins ``seconds`` after T0."""
    ms = (at(seconds) - dt.datetime(1970, 1, 1)) // dt.timedelta(milliseconds=1)
    return ms << EPOCH_PHYSICAL_SHIFT


def lower(seconds: float, inclusive: bool = False) -> TimeBound:
    """``ts > now() + seconds`` (``>=`` when inclusive)."""
    return TimeBound(True, ((0, 0, int(seconds * SECOND_US)),), inclusive)


def upper(seconds: float, inclusive: bool = False) -> TimeBound:
    """``ts < now() + seconds`` (``<=`` when inclusive)."""
    return TimeBound(False, ((0, 0, int(seconds * SECOND_US)),), inclusive)


def operator(store: MemoryStateStore, messages: list[Message], bounds: list[TimeBound]) -> Operator:
    """A temporal filter on ``ts`` over ``messages``, checked for barrier order and output schema."""
    state_schema, pk = temporal_filter_state_schema(SCHEMA, 1, [0])
    state = StateTable(store, STATE_TABLE, state_schema, pk)
    return CheckedOperator(TemporalFilter(ScriptedSource(SCHEMA, messages), 1, bounds, [0], state))


def timeline(bounds: list[TimeBound], script: list[Message]) -> list[list[tuple[object, Row]]]:
    return per_barrier(run(operator(MemoryStateStore(), script, bounds)))


def state_rows(store: MemoryStateStore, at_epoch: int) -> list[Row]:
    return table_rows(store.snapshot(STATE_TABLE, at_epoch))


def test_a_row_leaves_exactly_when_the_epochs_time_passes_the_lower_bound() -> None:
    row = (1, at(-5), "a")  # ts > now() - 10 s holds while now < T0 + 5 s
    script: list[Message] = [
        barrier(epoch(0), 0),
        chunk(SCHEMA, "+", [row]),
        barrier(epoch(4.999), epoch(0)),  # now := T0
        barrier(epoch(5), epoch(4.999)),  # now := T0 + 4.999 s
        barrier(epoch(5.001), epoch(5)),  # now := T0 + 5 s
        barrier(epoch(6), epoch(5.001)),  # now := T0 + 5.001 s
    ]
    assert timeline([lower(-10)], script) == [[], [(INS, row)], [], [(DEL, row)], []]
    # ts >= now() - 10 s still holds at T0 + 5 s.
    assert timeline([lower(-10, inclusive=True)], script) == [[], [(INS, row)], [], [], [(DEL, row)]]


def test_rows_enter_from_the_future_side_when_now_reaches_them_and_then_leave_the_state() -> None:
    store = MemoryStateStore()
    early, late = (1, at(10), "early"), (2, at(20), "late")
    script: list[Message] = [
        barrier(epoch(0), 0),
        chunk(SCHEMA, "+ +", [early, late]),
        barrier(epoch(8), epoch(0)),
        barrier(epoch(9), epoch(8)),  # now := T0 + 8 s: ts <= now + 2 s admits the early row
        barrier(epoch(30), epoch(9)),
        barrier(epoch(31), epoch(30)),  # now := T0 + 30 s
    ]
    output = per_barrier(run(operator(store, script, [upper(2, inclusive=True)])))
    assert output == [[], [], [(INS, early)], [], [(INS, late)]]
    # Without a lower bound a row that is in stays in: the state keeps only rows still to come.
    assert state_rows(store, epoch(0)) == [early, late]
    assert state_rows(store, epoch(8)) == [late]
    assert state_rows(store, epoch(30)) == []


def test_between_emits_a_row_while_it_is_in_the_window_and_never_one_the_window_jumped_over() -> None:
    store = MemoryStateStore()
    passing, skipped = (1, at(10), "in"), (2, at(100), "jumped")
    bounds = [lower(-5, inclusive=True), upper(0, inclusive=True)]  # BETWEEN now() - 5 s AND now()
    script: list[Message] = [
        barrier(epoch(0), 0),
        chunk(SCHEMA, "+ +", [passing, skipped]),
        barrier(epoch(10), epoch(0)),
        barrier(epoch(15), epoch(10)),  # now := T0 + 10 s: in
        barrier(epoch(16), epoch(15)),  # now := T0 + 15 s: still in (>=)
        barrier(epoch(200), epoch(16)),  # now := T0 + 16 s: out
        barrier(epoch(201), epoch(200)),  # now := T0 + 200 s: the second row's window came and went
    ]
    output = per_barrier(run(operator(store, script, bounds)))
    assert output == [[], [], [(INS, passing)], [], [(DEL, passing)], []]
    assert state_rows(store, epoch(200)) == []


def test_input_changes_pass_as_now_judges_them_and_keep_the_state_right() -> None:
    store = MemoryStateStore()
    bounds = [lower(-10), upper(0, inclusive=True)]  # ts > now() - 10 s AND ts <= now()
    now_row, future_row, old_row = (1, at(-1), "now"), (2, at(5), "future"), (3, at(-60), "old")
    script: list[Message] = [
        barrier(epoch(0), 0),
        chunk(SCHEMA, "+ + + +", [now_row, future_row, old_row, (4, None, "no time")]),
        barrier(epoch(1), epoch(0)),
        # The future row is deleted before its time comes; the row in the view moves to the future
        # (a lone delete) and then changes a value while it waits; the old row moves into the window.
        chunk(SCHEMA, "- U- U+ U- U+", [future_row, now_row, (1, at(7), "now"), old_row, (3, at(-1), "old")]),
        chunk(SCHEMA, "U- U+", [(1, at(7), "now"), (1, at(7), "changed")]),
        barrier(epoch(8), epoch(1)),
        barrier(epoch(20), epoch(8)),  # now := T0 + 8 s: row 1 enters with its new value
        barrier(epoch(21), epoch(20)),  # now := T0 + 20 s: both leave
    ]
    output = run(operator(store, script, bounds))
    steps = per_barrier(output)
    assert steps[1] == [(INS, now_row)]
    assert steps[2] == [(DEL, now_row), (INS, (3, at(-1), "old"))]
    assert steps[3] == [(INS, (1, at(7), "changed"))]
    assert sorted(steps[4]) == [(DEL, (1, at(7), "changed")), (DEL, (3, at(-1), "old"))]
    assert_alternating([c for step in steps for c in step], key=lambda row: row[0])
    assert state_rows(store, epoch(1)) == [(1, at(7), "changed"), (3, at(-1), "old")]
    assert state_rows(store, epoch(20)) == []


def test_watermarks_are_dropped() -> None:
    script: list[Message] = [barrier(epoch(0), 0), Watermark(1, at(0)), barrier(epoch(1), epoch(0))]
    output = run(operator(MemoryStateStore(), script, [lower(-10)]))
    assert not any(isinstance(m, Watermark) for m in output)


def view_at(live: dict[int, Row], now: dt.datetime, low_s: float | None, high_s: float | None) -> dict[Row, int]:
    """The oracle: the live input rows that qualify at ``now``."""
    out = {}
    for row in live.values():
        t = row[1]
        if t is None or (low_s is not None and not t > now + dt.timedelta(seconds=low_s)):
            continue
        if high_s is not None and not t <= now + dt.timedelta(seconds=high_s):
            continue
        out[row] = 1
    return out


@pytest.mark.parametrize(
    ("low_s", "high_s"),
    [(-3.0, None), (None, 2.0), (-3.0, 2.0), (-1.0, -0.5)],
    ids=["lower", "upper", "both", "narrow"],
)
def test_random_changes_and_barriers_give_the_view_the_query_computes_at_each_epoch(
    low_s: float | None, high_s: float | None
) -> None:
    bounds = [lower(low_s)] if low_s is not None else []
    bounds += [upper(high_s, inclusive=True)] if high_s is not None else []
    rng = random.Random(7)
    live: dict[int, Row] = {}
    script: list[Message] = [barrier(epoch(0), 0)]
    expected: list[dict[Row, int]] = []
    clock, prev = 0.0, epoch(0)
    for step_number in range(1, 61):
        ops, rows = [], []
        for _ in range(rng.randint(0, 6)):
            key = rng.randint(0, 15)
            new = (key, at(clock + rng.uniform(-6, 6)) if rng.random() > 0.1 else None, str(rng.randint(0, 3)))
            if key not in live:
                ops.append(INS)
                rows.append(new)
                live[key] = new
            elif rng.random() < 0.5:
                ops.append(DEL)
                rows.append(live.pop(key))
            else:
                ops += [UD, UI]
                rows += [live[key], new]
                live[key] = new
        if rows:
            script.append(chunk(SCHEMA, ops, rows))
        clock += rng.choice([0.0, 0.001, 0.3, 1.0, 2.5, 9.0])
        # The sequence bits keep epochs of one millisecond apart.
        script.append(barrier(epoch(clock) + step_number, prev))
        # The barrier (prev → clock) shows the view at the time of prev: the rows of this epoch included.
        expected.append(view_at(live, dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=prev >> 16), low_s, high_s))
        prev = epoch(clock) + step_number
    steps = per_barrier(run(operator(MemoryStateStore(), script, bounds)))
    assert len(steps) == len(expected) + 1
    view: dict[Row, int] = {}
    for step, wanted in zip(steps[1:], expected):
        view = apply_changes(step, view)
        assert view == wanted
    assert_alternating([c for step in steps for c in step], key=lambda row: row[0])


def test_a_rebuilt_operator_resumes_from_the_state_committed_for_the_epochs_time() -> None:
    store = MemoryStateStore()
    bounds = [lower(-10), upper(0, inclusive=True)]
    rows = [(1, at(-8), "a"), (2, at(3), "b"), (3, at(-30), "c"), (4, at(12), "d")]
    first: list[Message] = [
        barrier(epoch(0), 0),
        chunk(SCHEMA, "+ + + +", rows),
        barrier(epoch(1), epoch(0)),
        barrier(epoch(4), epoch(1)),  # commits epoch 1, computed for T0 + 1 s
    ]
    before = per_barrier(run(operator(store, first, bounds)))
    assert apply_changes([c for step in before for c in step]) == {rows[0]: 1}
    assert state_rows(store, epoch(1)) == [rows[0], rows[1], rows[3]]  # row 3 was never in reach

    def recover(script: list[Message]) -> list[list[tuple[object, Row]]]:
        """A crash, then recovery at epoch 1: the rebuilt operator reads its state and goes on from there."""
        return per_barrier(run(operator(store, [barrier(script_epoch, epoch(1)), *script], bounds)))

    # now := T0 + 5 s: row 1 leaves through the lower bound, row 2 enters through the upper one.
    script_epoch = epoch(5)
    assert recover([barrier(epoch(6), epoch(5))]) == [[], [(DEL, rows[0]), (INS, rows[1])]]
    # now := T0 + 50 s after an input change: rows 2, 4 and 5 entered and left in one jump, never seen.
    script_epoch = epoch(50)
    changes = chunk(SCHEMA, "- +", [rows[0], (5, at(14), "e")])
    assert recover([changes, barrier(epoch(51), epoch(50))]) == [[], [(DEL, rows[0])]]
    assert state_rows(store, epoch(50)) == []


def test_date_columns_compare_at_midnight_utc() -> None:
    schema = pa.schema([("id", pa.int64()), ("d", pa.date32())])
    state_schema, pk = temporal_filter_state_schema(schema, 1, [0])
    store = MemoryStateStore()
    day = dt.timedelta(days=1)
    rows = [(1, T0.date()), (2, T0.date() - day), (3, T0.date() - 2 * day)]
    source = ScriptedSource(schema, [barrier(epoch(0), 0), chunk(schema, "+ + +", rows), barrier(epoch(1), epoch(0))])
    # d >= now() - 1 day at noon: yesterday's midnight is before the bound, today's is not.
    bound = TimeBound(True, ((0, -1, 0),), True)
    state = StateTable(store, STATE_TABLE, state_schema, pk)
    output = per_barrier(run(CheckedOperator(TemporalFilter(source, 1, [bound], [0], state))))
    assert output == [[], [(INS, rows[0])]]


def test_intervals_add_months_as_postgresql_does() -> None:
    def micros(moment: dt.datetime) -> int:
        return (moment - dt.datetime(1970, 1, 1)) // dt.timedelta(microseconds=1)

    jan31 = micros(dt.datetime(2024, 1, 31, 6))
    assert add_intervals(jan31, ((1, 0, 0),)) == micros(dt.datetime(2024, 2, 29, 6))
    assert add_intervals(jan31, ((-2, 1, 3_600_000_000),)) == micros(dt.datetime(2023, 12, 1, 7))
    assert add_intervals(jan31, ((0, 0, -5),)) == jan31 - 5
    assert add_intervals(jan31, ((120_000, 0, 0),)) == (1 << 63) - 1  # past year 9999: every time is below
