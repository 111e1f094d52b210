"""Watermark generation: max(time) - delay over what a source emitted, late rows dropped, restored on recovery.

Covers ``stream/watermark.py`` and the two source operators that run it (TableSource, NexmarkSource).
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import numpy as np
import pyarrow as pa
from scripted import FakeLog, barrier, changes, drive, inserts, table_rows

from tidegate.common.chunk import Chunk
from tidegate.connectors.nexmark_options import NexmarkSourceOptions, parse_nexmark_options, source_schema
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import AddMutation, Barrier, Message, StopMutation, Watermark
from tidegate.stream.operator import CheckedOperator
from tidegate.stream.operators.nexmark_source import NexmarkSource
from tidegate.stream.operators.table_source import OFFSET_SCHEMA, TableSource
from tidegate.stream.watermark import WATERMARK_STATE_SCHEMA, WatermarkGenerator, WatermarkSpec

ACTOR = 6
OFFSETS_TABLE = (ACTOR << 16) | 1
WATERMARK_TABLE = (ACTOR << 16) | 2
TS = pa.timestamp("us")
SCHEMA = pa.schema([("id", pa.int64()), ("t", TS)])
T0 = datetime(2026, 1, 1)
EPOCH = datetime(1970, 1, 1)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def us(seconds: float) -> int:
    """``at(seconds)`` as the int64 a watermark of a ``timestamp(us)`` column carries."""
    return (at(seconds) - EPOCH) // timedelta(microseconds=1)


def rows_at(*pairs: tuple[int, float | None]) -> Chunk:
    return inserts(SCHEMA, [(i, None if s is None else at(s)) for i, s in pairs])


def generator(store: MemoryStateStore, delay_s: float = 5) -> WatermarkGenerator:
    state = StateTable(store, WATERMARK_TABLE, WATERMARK_STATE_SCHEMA, [0])
    return WatermarkGenerator(WatermarkSpec(1, int(delay_s * 1_000_000)), TS, state)


def ids(chunk: Chunk | None) -> list[int]:
    return [] if chunk is None else chunk.data.column(0).to_pylist()


# ---- the generator ------------------------------------------------------------------------------
def test_the_watermark_is_the_max_minus_the_delay_and_never_goes_back() -> None:
    wm = generator(MemoryStateStore())
    kept, first = wm.apply(rows_at((1, 10), (2, 3)))
    assert ids(kept) == [1, 2]  # within a chunk nothing is late: the watermark was not there yet
    assert first == Watermark(1, us(5))
    kept, second = wm.apply(rows_at((3, 8)))  # a smaller max: the watermark stays
    assert ids(kept) == [3] and second is None and wm.value == us(5)
    _, third = wm.apply(rows_at((4, 20)))
    assert third == Watermark(1, us(15))


def test_rows_below_the_watermark_are_dropped_and_counted_rows_at_it_are_not() -> None:
    wm = generator(MemoryStateStore())
    wm.apply(rows_at((1, 10)))  # watermark 5 s
    kept, grown = wm.apply(rows_at((2, 4.999), (3, 5), (4, None), (5, 1)))
    assert ids(kept) == [3, 4]  # time == watermark is on time; a NULL time is never late
    assert grown is None and wm.late_rows == 2
    kept, grown = wm.apply(rows_at((6, 0)))
    assert kept is None and grown is None and wm.late_rows == 3


def test_a_chunk_of_null_times_moves_nothing() -> None:
    wm = generator(MemoryStateStore())
    kept, grown = wm.apply(rows_at((1, None)))
    assert ids(kept) == [1] and grown is None and wm.value is None


def test_the_watermark_is_written_when_it_moved_and_restored_at_a_committed_epoch() -> None:
    store = MemoryStateStore()
    wm = generator(store)
    wm.commit(1)  # nothing yet: nothing written
    wm.apply(rows_at((1, 10)))
    wm.commit(2)
    wm.apply(rows_at((2, 30)))
    wm.commit(3)
    wm.commit(4)  # unmoved: the row stays
    assert table_rows(store.snapshot(WATERMARK_TABLE, 1)) == []
    assert table_rows(store.snapshot(WATERMARK_TABLE, 2)) == [(1, us(5))]
    assert table_rows(store.snapshot(WATERMARK_TABLE, 4)) == [(1, us(25))]
    restored = generator(store)
    assert restored.restore(2) == Watermark(1, us(5))
    assert generator(store).restore(0) is None
    # A restored generator drops what is late for the watermark it restored.
    kept, _ = restored.apply(rows_at((3, 4), (4, 6)))
    assert ids(kept) == [4]
    restored.apply(rows_at((5, 40)))
    restored.commit(5)  # replaces the restored row
    assert table_rows(store.snapshot(WATERMARK_TABLE, 5)) == [(1, us(35))]


# ---- TableSource ----------------------------------------------------------------------------------
def table_source(store: MemoryStateStore, log: FakeLog) -> TableSource:
    offsets = StateTable(store, OFFSETS_TABLE, OFFSET_SCHEMA, [0])
    return TableSource(log, offsets, SCHEMA, ACTOR, watermark=generator(store))


def run_table_source(source: TableSource, barriers: list[Barrier]) -> list[Message]:
    """Inject ``barriers`` (the log already holds every record, so each reads up to the log's end);
    the last one should stop the source."""

    async def go() -> list[Message]:
        out: list[Message] = []

        async def consume() -> None:
            async for message in CheckedOperator(source).execute():
                out.append(message)
                if isinstance(message, Barrier) and message.stops(ACTOR):
                    return

        task = asyncio.create_task(consume())
        for b in barriers:
            source.inject(b)
            await asyncio.sleep(0.001)
        await asyncio.wait_for(task, 2)
        return out

    return asyncio.run(go())


def shape(messages: list[Message]) -> list[object]:
    """Each message as ids (chunk), ("wm", seconds after T0) or ("barrier", curr)."""
    out: list[object] = []
    for m in messages:
        if isinstance(m, Chunk):
            out.append(ids(m))
        elif isinstance(m, Watermark):
            out.append(("wm", (m.value - us(0)) / 1_000_000))
        else:
            out.append(("barrier", m.epoch.curr))
    return out


def stop(curr: int, prev: int) -> Barrier:
    return barrier(curr, prev, mutation=StopMutation(frozenset({ACTOR})))


def test_a_table_source_drops_late_rows_emits_grown_watermarks_and_commits_them() -> None:
    store = MemoryStateStore()
    log = FakeLog([rows_at((1, 0), (2, 12)), rows_at((3, 3)), rows_at((4, 7)), rows_at((5, 30))])
    source = table_source(store, log)
    output = run_table_source(source, [barrier(10, 0), barrier(20, 10), stop(30, 20)])
    assert shape(output) == [
        ("barrier", 10),
        [1, 2],
        ("wm", 7.0),
        # row 3 (at 3 s) is late for watermark 7 s and is gone; row 4 (at 7 s) is on time
        [4],
        [5],
        ("wm", 25.0),
        ("barrier", 20),
        ("barrier", 30),
    ]
    assert source.watermark is not None and source.watermark.late_rows == 1
    assert table_rows(store.snapshot(WATERMARK_TABLE, 10)) == [(1, us(25))]
    assert table_rows(store.snapshot(OFFSETS_TABLE, 10)) == [(0, 4)]


def test_a_recovered_table_source_emits_its_committed_watermark_first_and_judges_late_rows_by_it() -> None:
    store = MemoryStateStore()
    log = FakeLog([rows_at((1, 20))])
    run_table_source(table_source(store, log), [barrier(10, 0), stop(20, 10)])  # commits watermark 15 s at 10
    log.append(rows_at((2, 14), (3, 16)))
    output = run_table_source(table_source(store, log), [barrier(30, 10), stop(40, 30)])
    assert shape(output) == [("barrier", 30), ("wm", 15.0), [3], ("barrier", 40)]


def test_a_barrier_that_adds_downstream_actors_is_followed_by_the_current_watermark() -> None:
    """A view created over the table learns the watermark without waiting for it to grow."""
    store = MemoryStateStore()
    log = FakeLog([rows_at((1, 20))])
    adds = barrier(20, 10, mutation=AddMutation(outputs={ACTOR: []}, added_actors=frozenset({99})))
    output = run_table_source(table_source(store, log), [barrier(10, 0), adds, barrier(30, 20), stop(40, 30)])
    assert shape(output) == [
        ("barrier", 10),
        [1],
        ("wm", 15.0),
        ("barrier", 20),
        ("wm", 15.0),  # again, for the new actor
        ("barrier", 30),
        ("barrier", 40),
    ]


# ---- NexmarkSource --------------------------------------------------------------------------------
EVENTS = 1000
DELAY_S = 4


def nexmark_options() -> NexmarkSourceOptions:
    given = {"connector": "nexmark", "nexmark.table.type": "bid", "nexmark.event.num": str(EVENTS)}
    # One event every 10 ms of event time, and small chunks: the watermark grows many times.
    return parse_nexmark_options({**given, "nexmark.max.chunk.size": "64", "nexmark.first.event.rate": "100"})


def nexmark_source(store: MemoryStateStore, source_options: NexmarkSourceOptions) -> NexmarkSource:
    schema = source_schema(source_options).append(pa.field("_row_id", pa.int64()))
    column = schema.get_field_index("date_time")
    offsets = StateTable(store, OFFSETS_TABLE, OFFSET_SCHEMA, [0])
    state = StateTable(store, WATERMARK_TABLE, WATERMARK_STATE_SCHEMA, [0])
    watermark = WatermarkGenerator(WatermarkSpec(column, DELAY_S * 1_000_000), schema.field(column).type, state)
    return NexmarkSource(source_options, offsets, schema, ACTOR, watermark=watermark)


def check_watermarks_follow_the_rows(messages: list[Message], column: int, start: int | None = None) -> None:
    """Every watermark is max(date_time) - delay over the rows emitted before it (and after a restore at
    ``start``), and one follows every chunk that raised that maximum."""
    high = start
    for i, message in enumerate(messages):
        if isinstance(message, Chunk):
            times = message.data.column(column).cast(pa.int64()).to_numpy()
            chunk_high = int(np.max(times)) - DELAY_S * 1_000_000
            if high is None or chunk_high > high:
                assert messages[i + 1] == Watermark(column, chunk_high), i
                high = chunk_high


def test_a_nexmark_source_emits_its_watermark_after_each_chunk_that_raised_it() -> None:
    store = MemoryStateStore()
    source_options = nexmark_options()
    source = nexmark_source(store, source_options)
    output = asyncio.run(drive(source, [(10, 0), (20, 10), (30, 20)], turns_between=40))
    column = source.schema.get_field_index("date_time")
    marks = [m for m in output if isinstance(m, Watermark)]
    assert len(marks) > 5 and all(m.column == column for m in marks)
    check_watermarks_follow_the_rows(output, column)
    all_times = [row[column] for _, row in changes(output)]
    assert marks[-1].value == us_of(max(all_times)) - DELAY_S * 1_000_000
    assert table_rows(store.snapshot(WATERMARK_TABLE, 20)) == [(column, marks[-1].value)]


def us_of(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def test_a_recovered_nexmark_source_restores_the_watermark_of_its_committed_offset() -> None:
    store = MemoryStateStore()
    source_options = nexmark_options()
    uninterrupted = asyncio.run(drive(nexmark_source(MemoryStateStore(), source_options), [(1, 0), (2, 1)], 60))
    first = asyncio.run(drive(nexmark_source(store, source_options), [(10, 0), (20, 10), (30, 20), (40, 30)], 2))
    cut = next(i for i, m in enumerate(first) if isinstance(m, Barrier) and m.epoch.prev == 20)
    committed = [m for m in first[:cut] if isinstance(m, Watermark)][-1]
    assert table_rows(store.snapshot(WATERMARK_TABLE, 20)) == [(committed.column, committed.value)]
    second = asyncio.run(drive(nexmark_source(store, source_options), [(50, 20), (60, 50), (70, 60)], 60))
    assert isinstance(second[0], Barrier) and second[1] == committed  # known at once after recovery
    check_watermarks_follow_the_rows(second[2:], committed.column, start=committed.value)
    final = [m for m in uninterrupted if isinstance(m, Watermark)][-1]
    assert [m for m in second if isinstance(m, Watermark)][-1] == final
    assert changes(first[:cut]) + changes(second) == changes(uninterrupted)
