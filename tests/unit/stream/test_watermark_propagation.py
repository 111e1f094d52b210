"""Watermarks through the stateless operators: Project, Filter, HopWindow, Merge (and HashJoin drops them).

The rule each must keep: after ``Watermark(c, v)`` on its output, no row has column ``c`` below ``v``.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta

import pyarrow as pa
from scripted import ScriptedSource, barrier, chunk, inserts, run

from tidegate.common.chunk import Chunk
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message, StopMutation, Watermark
from tidegate.stream.operator import CheckedOperator, Operator
from tidegate.stream.operators.filter import Filter
from tidegate.stream.operators.hash_join import HashJoin, join_state_schema
from tidegate.stream.operators.hop_window import HopWindow
from tidegate.stream.operators.merge import Merge
from tidegate.stream.operators.project import Project

TS = pa.timestamp("us")
IN = pa.schema([("id", pa.int64()), ("t", TS)])
WINDOWED = pa.schema([("id", pa.int64()), ("t", TS), ("window_start", TS), ("window_end", TS)])
T0 = datetime(2026, 1, 1)
ACTOR = 3


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def us(seconds: float) -> int:
    return (at(seconds) - datetime(1970, 1, 1)) // timedelta(microseconds=1)


def watermarks(messages: list[Message]) -> list[Watermark]:
    return [m for m in messages if isinstance(m, Watermark)]


def assert_no_row_below_an_earlier_watermark(messages: list[Message]) -> None:
    """The watermark contract, checked on an operator's output."""
    seen: dict[int, int] = {}
    for message in messages:
        if isinstance(message, Watermark):
            seen[message.column] = max(seen.get(message.column, message.value), message.value)
        elif isinstance(message, Chunk):
            for column, bound in seen.items():
                values = message.data.column(column).cast(pa.int64()).to_pylist()
                assert all(v is None or v >= bound for v in values), (column, bound, values)


# ---- Project and Filter -----------------------------------------------------------------------------
def test_project_forwards_a_watermark_to_every_plain_copy_of_its_column_only() -> None:
    out = pa.schema([("t", TS), ("later", TS), ("again", TS), ("id", pa.int64())])
    source = ScriptedSource(IN, [barrier(1), Watermark(1, us(5)), Watermark(0, 7), barrier(2)])
    output = run(CheckedOperator(Project(source, ["_1", "_1 + INTERVAL 1 SECOND", "_1", "_0"], out)))
    # The computed column gets none; input column 0's watermark goes to output column 3.
    assert watermarks(output) == [Watermark(0, us(5)), Watermark(2, us(5)), Watermark(3, 7)]


def test_project_drops_the_watermark_of_a_column_it_does_not_keep() -> None:
    source = ScriptedSource(IN, [barrier(1), Watermark(1, us(5)), barrier(2)])
    output = run(Project(source, ["_0"], pa.schema([("id", pa.int64())])))
    assert watermarks(output) == []


def test_filter_forwards_watermarks_in_stream_order() -> None:
    rows = chunk(IN, "+ +", [(1, at(1)), (2, at(9))])
    source = ScriptedSource(IN, [barrier(1), rows, Watermark(1, us(4)), barrier(2)])
    output = run(Filter(source, "_0 > 1"))
    assert [type(m).__name__ for m in output] == ["Barrier", "Chunk", "Watermark", "Barrier"]
    assert watermarks(output) == [Watermark(1, us(4))]


# ---- HopWindow ----------------------------------------------------------------------------------
def test_tumble_derives_window_start_and_end_watermarks_once_per_window() -> None:
    messages: list[Message] = [barrier(1), Watermark(1, us(13)), Watermark(1, us(15)), Watermark(1, us(21))]
    source = ScriptedSource(IN, [*messages, barrier(2)])
    output = run(CheckedOperator(HopWindow(source, 1, 10_000_000, 10_000_000, WINDOWED)))
    assert watermarks(output) == [
        Watermark(1, us(13)),
        Watermark(2, us(10)),
        Watermark(3, us(20)),
        Watermark(1, us(15)),  # still in window [10, 20): nothing new for the window columns
        Watermark(1, us(21)),
        Watermark(2, us(20)),
        Watermark(3, us(30)),
    ]


def test_hop_window_watermarks_bound_every_later_rows_windows() -> None:
    """For random watermarks and later rows (t >= watermark), no window of a later row starts below the
    derived window_start watermark, and the derived one is the tightest such bound."""
    rng = random.Random(4)
    for _ in range(50):
        slide_s = rng.choice([1, 2, 5])
        size_s = slide_s * rng.randint(1, 5)
        mark_s = rng.uniform(-100, 100)
        later = [mark_s + rng.uniform(0, 30) for _ in range(20)] + [mark_s]
        rows = inserts(IN, [(i, at(t)) for i, t in enumerate(later)])
        source = ScriptedSource(IN, [barrier(1), Watermark(1, us(mark_s)), rows, barrier(2)])
        output = run(HopWindow(source, 1, slide_s * 1_000_000, size_s * 1_000_000, WINDOWED))
        assert_no_row_below_an_earlier_watermark(output)
        start = next(w for w in watermarks(output) if w.column == 2)
        end = next(w for w in watermarks(output) if w.column == 3)
        starts = [v for c in output if isinstance(c, Chunk) for v in c.data.column(2).cast(pa.int64()).to_pylist()]
        # The row exactly at the watermark has a window starting at the bound: it is the tightest.
        assert min(starts) == start.value and end.value == start.value + size_s * 1_000_000


# ---- Merge ----------------------------------------------------------------------------------------
def stop(curr: int) -> Barrier:
    return barrier(curr, mutation=StopMutation(frozenset({ACTOR})))


def test_merge_emits_the_minimum_once_every_input_has_a_watermark_and_only_when_it_grows() -> None:
    first = ScriptedSource(IN, [barrier(1), Watermark(1, us(10)), Watermark(1, us(30)), barrier(2), stop(3)])
    second = ScriptedSource(IN, [barrier(1), barrier(2), Watermark(1, us(20)), Watermark(1, us(25)), stop(3)])
    output = run(CheckedOperator(Merge([first, second], IN, ACTOR)))
    # Nothing while the second input is silent; then min(30, 20) = 20, min(30, 25) = 25.
    assert watermarks(output) == [Watermark(1, us(20)), Watermark(1, us(25))]


def test_merge_holds_a_column_back_while_an_input_has_none_for_it() -> None:
    first = ScriptedSource(IN, [barrier(1), Watermark(0, 5), Watermark(1, us(10)), stop(2)])
    second = ScriptedSource(IN, [barrier(1), Watermark(1, us(3)), stop(2)])
    output = run(Merge([first, second], IN, ACTOR))
    assert watermarks(output) == [Watermark(1, us(3))]


def test_merge_output_keeps_the_watermark_contract_over_racing_inputs() -> None:
    rng = random.Random(8)
    inputs: list[Operator] = []
    for _ in range(3):
        messages: list[Message] = [barrier(1)]
        mark = 0.0
        for _ in range(20):
            mark += rng.uniform(0, 3)
            rows = [(rng.randint(0, 9), at(mark + rng.uniform(0, 5))) for _ in range(3)]
            messages += [inserts(IN, rows), Watermark(1, us(mark))]
        inputs.append(ScriptedSource(IN, [*messages, stop(2)]))
    output = run(CheckedOperator(Merge(inputs, IN, ACTOR)))
    assert watermarks(output)
    assert_no_row_below_an_earlier_watermark(output)


def test_hash_join_drops_watermarks() -> None:
    store = MemoryStateStore()
    states = [StateTable(store, 10 + i, *join_state_schema(IN, [0], [0], with_degree=False)) for i in range(2)]
    left = ScriptedSource(IN, [barrier(1), inserts(IN, [(1, at(1))]), Watermark(1, us(5)), stop(2)])
    right = ScriptedSource(IN, [barrier(1), Watermark(1, us(6)), inserts(IN, [(1, at(2))]), stop(2)])
    schema = pa.schema([*IN, *(pa.field(f"r_{f.name}", f.type) for f in IN)])
    join = HashJoin(
        left,
        right,
        join_type="inner",
        left_keys=[0],
        right_keys=[0],
        left_pk=[0, 1],
        right_pk=[0, 1],
        condition=None,
        schema=schema,
        left_state=states[0],
        right_state=states[1],
        actor_id=ACTOR,
    )
    output = run(join)
    assert watermarks(output) == []
    assert sum(len(m) for m in output if isinstance(m, Chunk)) == 1
