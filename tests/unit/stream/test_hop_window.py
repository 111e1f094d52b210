"""HopWindow: each row once per epoch-aligned window that holds it, updates split into delete + insert."""

from __future__ import annotations

from datetime import datetime, timedelta

import pyarrow as pa
import pytest
from scripted import DEL, INS, ScriptedSource, barrier, changes, chunk, run

from tidegate.stream.messages import Barrier
from tidegate.stream.operators.hop_window import HopWindow

TS = pa.timestamp("ms")
IN = pa.schema([("id", pa.int64()), ("t", TS)])
OUT = pa.schema([("id", pa.int64()), ("t", TS), ("window_start", TS), ("window_end", TS)])
T0 = datetime(2026, 1, 1, 0, 0, 0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def windows(operator: HopWindow) -> list[tuple[object, ...]]:
    return sorted(row for _, row in changes(run(operator)))


def test_tumble_puts_each_row_in_the_one_window_holding_it_bounds_half_open() -> None:
    source = ScriptedSource(IN, [barrier(1), chunk(IN, "+ + +", [(1, at(0)), (2, at(9.999)), (3, at(10))]), barrier(2)])
    rows = windows(HopWindow(source, 1, 10_000_000, 10_000_000, OUT))
    assert rows == [
        (1, at(0), at(0), at(10)),
        (2, at(9.999), at(0), at(10)),
        (3, at(10), at(10), at(20)),  # the end bound is exclusive
    ]


def test_hop_puts_each_row_in_size_over_slide_windows() -> None:
    source = ScriptedSource(IN, [barrier(1), chunk(IN, "+", [(1, at(13))]), barrier(2)])
    rows = windows(HopWindow(source, 1, 2_000_000, 10_000_000, OUT))
    starts = [row[2] for row in rows]
    assert starts == [at(4), at(6), at(8), at(10), at(12)]
    assert all(start <= at(13) < end for _, _, start, end in rows)  # type: ignore[operator]


def test_times_before_the_epoch_round_down_not_toward_zero() -> None:
    source = ScriptedSource(IN, [barrier(1), chunk(IN, "+", [(1, datetime(1969, 12, 31, 23, 59, 55))]), barrier(2)])
    [(_, _, start, end)] = windows(HopWindow(source, 1, 10_000_000, 10_000_000, OUT))
    assert (start, end) == (datetime(1969, 12, 31, 23, 59, 50), datetime(1970, 1, 1))


def test_rows_without_a_time_are_dropped_and_updates_become_delete_insert() -> None:
    source = ScriptedSource(
        IN,
        [barrier(1), chunk(IN, "+ U- U+", [(1, None), (2, at(1)), (2, at(11))]), barrier(2)],
    )
    output = run(HopWindow(source, 1, 10_000_000, 10_000_000, OUT))
    assert changes(output) == [(DEL, (2, at(1), at(0), at(10))), (INS, (2, at(11), at(10), at(20)))]
    assert [m.epoch.curr for m in output if isinstance(m, Barrier)] == [1, 2]


@pytest.mark.parametrize("slide_s", [1, 5, 10])
def test_every_window_holding_a_row_appears_exactly_once(slide_s: int) -> None:
    times = [T0 + timedelta(milliseconds=143 * s) for s in range(0, 200, 3)]
    source = ScriptedSource(
        IN, [barrier(1), chunk(IN, " ".join(["+"] * len(times)), list(enumerate(times))), barrier(2)]
    )
    rows = windows(HopWindow(source, 1, slide_s * 1_000_000, 10_000_000, OUT))
    expected = []
    for i, t in enumerate(times):
        for start_s in range(-20, 40, slide_s):
            start = at(start_s)
            if start <= t < start + timedelta(seconds=10):
                expected.append((i, t, start, start + timedelta(seconds=10)))
    assert rows == sorted(expected)
