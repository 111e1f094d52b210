"""DatagenSource (and the GeneratorSource loop it runs on): rows between barriers, the offset committed
with each barrier, an exact resume after a rebuild, the rate limit, and the source's watermark."""

from __future__ import annotations

import asyncio

import pyarrow as pa
from scripted import changes, drive, rows_before, table_rows

from tidegate.common.types import parse_type_name
from tidegate.connectors.datagen import DatagenOptions, generate_rows
from tidegate.connectors.datagen_options import parse_datagen_options
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Watermark
from tidegate.stream.operators.datagen_source import DatagenSource
from tidegate.stream.operators.table_source import OFFSET_SCHEMA
from tidegate.stream.watermark import WATERMARK_STATE_SCHEMA, WatermarkGenerator, WatermarkSpec

ACTOR = 9
OFFSETS_TABLE = (ACTOR << 16) | 1
WATERMARK_TABLE = (ACTOR << 16) | 2
ROWS = 1000
COLUMNS = [("id", parse_type_name("bigint")), ("name", parse_type_name("varchar")), ("t", parse_type_name("timestamp"))]


def options(**extra: str) -> DatagenOptions:
    given = {
        "connector": "datagen", "datagen.rows.per.second": "1000000", "datagen.rows.num": str(ROWS),
        "datagen.max.chunk.size": "64", "fields.id.kind": "sequence", "fields.id.start": "1",
        "fields.id.end": "1000000", "fields.t.basetime": "2026-01-01T00:00:00Z", "fields.t.max_past": "1s",
        "fields.t.max_past_mode": "relative",
    }  # fmt: skip
    return parse_datagen_options({**given, **extra}, COLUMNS)


def schema() -> pa.Schema:
    return pa.schema([*(pa.field(name, t.arrow) for name, t in COLUMNS), pa.field("_row_id", pa.int64())])


def new_source(
    store: MemoryStateStore, source_options: DatagenOptions, watermark_delay_us: int | None = None
) -> DatagenSource:
    offsets = StateTable(store, OFFSETS_TABLE, OFFSET_SCHEMA, [0])
    watermark = None
    if watermark_delay_us is not None:
        state = StateTable(store, WATERMARK_TABLE, WATERMARK_STATE_SCHEMA, [0])
        watermark = WatermarkGenerator(WatermarkSpec(2, watermark_delay_us), pa.timestamp("us"), state)
    return DatagenSource(source_options, offsets, schema(), ACTOR, watermark=watermark)


def expected_rows(source_options: DatagenOptions, count: int) -> list[tuple[object, ...]]:
    columns = [c.to_pylist() for c in generate_rows(source_options, 0, count)]
    return list(zip(*columns, range(count)))


def test_rows_come_between_barriers_with_their_row_number_and_stop_at_rows_num() -> None:
    store = MemoryStateStore()
    source_options = options()
    source = new_source(store, source_options)
    output = asyncio.run(drive(source, [(10, 0), (20, 10), (30, 20), (40, 30)], turns_between=30))
    assert isinstance(output[0], Barrier)
    assert [row for _, row in changes(output)] == expected_rows(source_options, ROWS)
    assert table_rows(store.snapshot(OFFSETS_TABLE, 30)) == [(0, ROWS)]
    assert (source.offset, source.end_offset) == (ROWS, ROWS)


def test_a_rebuilt_source_resumes_at_the_committed_offset_with_nothing_lost_or_doubled() -> None:
    store = MemoryStateStore()
    source_options = options()
    first = asyncio.run(drive(new_source(store, source_options), [(10, 0), (20, 10), (30, 20), (40, 30)], 2))
    before_crash = rows_before(first, 20)
    assert 0 < len(before_crash) < ROWS
    assert table_rows(store.snapshot(OFFSETS_TABLE, 20)) == [(0, len(before_crash))]
    second = asyncio.run(drive(new_source(store, source_options), [(50, 20), (60, 50), (70, 60)], 40))
    assert before_crash + [row for _, row in changes(second)] == expected_rows(source_options, ROWS)


def test_the_rate_limit_holds_back_rows() -> None:
    store = MemoryStateStore()
    output = asyncio.run(drive(new_source(store, options(**{"datagen.rows.per.second": "1"})), [(10, 0), (20, 10)], 50))
    assert len(changes(output)) <= 2
    assert table_rows(store.snapshot(OFFSETS_TABLE, 10))[0][1] <= 2


def test_a_watermark_follows_the_chunks_and_is_restored_after_the_first_barrier() -> None:
    store = MemoryStateStore()
    source_options = options(**{"fields.t.max_past": "0s"})  # times rise with the row number: none is late
    output = asyncio.run(
        drive(new_source(store, source_options, watermark_delay_us=5), [(10, 0), (20, 10), (30, 20)], 30)
    )
    marks = [m for m in output if isinstance(m, Watermark)]
    assert [row for _, row in changes(output)] == expected_rows(source_options, ROWS)
    last_time_us = generate_rows(source_options, ROWS - 1, 1)[2].cast(pa.int64())[0].as_py()
    assert marks[-1] == Watermark(2, last_time_us - 5)
    assert [m.value for m in marks] == sorted(m.value for m in marks)
    resumed = asyncio.run(drive(new_source(store, source_options, watermark_delay_us=5), [(40, 20), (50, 40)], 5))
    assert resumed[1] == marks[-1]  # right after the first barrier, before any row
