"""NexmarkSource: generates events between barriers and commits its offset with each barrier."""

from __future__ import annotations

import asyncio

import numpy as np
import pyarrow as pa
import pytest
from scripted import changes, drive, rows_before, table_rows

from tidegate.connectors.nexmark import event_kinds, generate_events
from tidegate.connectors.nexmark_options import NexmarkSourceOptions, parse_nexmark_options, source_schema
from tidegate.errors import FeatureNotSupported, InvalidParameterValue
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier
from tidegate.stream.operators.nexmark_source import NexmarkSource
from tidegate.stream.operators.table_source import OFFSET_SCHEMA

ACTOR = 7
OFFSETS_TABLE = (ACTOR << 16) | 1
EVENTS = 1000


def options(**extra: str) -> NexmarkSourceOptions:
    given = {"connector": "nexmark", "nexmark.table.type": "bid", "nexmark.event.num": str(EVENTS)}
    given["nexmark.max.chunk.size"] = "64"
    return parse_nexmark_options({**given, **extra})


def new_source(store: MemoryStateStore, source_options: NexmarkSourceOptions) -> NexmarkSource:
    schema = source_schema(source_options).append(pa.field("_row_id", pa.int64()))
    offsets = StateTable(store, OFFSETS_TABLE, OFFSET_SCHEMA, [0])
    return NexmarkSource(source_options, offsets, schema, ACTOR)


def expected_rows(source_options: NexmarkSourceOptions, count: int) -> list[tuple[object, ...]]:
    """The whole stream computed in one go: the bids of events [1, 1 + count) with their event numbers."""
    config = source_options.config
    batch = generate_events(config, config.first_event_number, count)["bid"]
    numbers = np.arange(config.first_event_number, config.first_event_number + count)
    row_ids = numbers[event_kinds(config, numbers) == source_options.kind]
    schema = source_schema(source_options)
    columns = [batch.column(i).cast(schema.field(i).type).to_pylist() for i in range(batch.num_columns)]
    return list(zip(*columns, row_ids.tolist()))


def test_events_come_between_barriers_and_stop_at_event_num() -> None:
    store = MemoryStateStore()
    source_options = options()
    source = new_source(store, source_options)
    epochs = [(10, 0), (20, 10), (30, 20), (40, 30)]
    output = asyncio.run(drive(source, epochs, turns_between=30))
    assert isinstance(output[0], Barrier)
    assert [m.epoch.curr for m in output if isinstance(m, Barrier)] == [10, 20, 30, 40]
    assert [row for _, row in changes(output)] == expected_rows(source_options, EVENTS)
    # Generation stopped at nexmark.event.num; the offset is the next event number.
    assert table_rows(store.snapshot(OFFSETS_TABLE, 30)) == [(0, 1 + EVENTS)]


def test_a_rebuilt_source_resumes_at_the_committed_offset_with_nothing_lost_or_doubled() -> None:
    store = MemoryStateStore()
    source_options = options()
    # A first run that is cut off: only epoch 20 is taken as committed.
    first = asyncio.run(drive(new_source(store, source_options), [(10, 0), (20, 10), (30, 20), (40, 30)], 2))
    before_crash = rows_before(first, 20)
    committed_offset = table_rows(store.snapshot(OFFSETS_TABLE, 20))
    assert 0 < len(before_crash) < len(expected_rows(source_options, EVENTS))
    assert committed_offset[0][1] > 1
    # Recovery: a new source at committed epoch 20; it runs until every event is out.
    second = asyncio.run(drive(new_source(store, source_options), [(50, 20), (60, 50), (70, 60)], 40))
    assert before_crash + [row for _, row in changes(second)] == expected_rows(source_options, EVENTS)
    assert table_rows(store.snapshot(OFFSETS_TABLE, 60)) == [(0, 1 + EVENTS)]


def test_the_rate_limit_holds_back_events() -> None:
    store = MemoryStateStore()
    source_options = options(**{"nexmark.events.per.second": "1"})
    source = new_source(store, source_options)
    output = asyncio.run(drive(source, [(10, 0), (20, 10)], turns_between=50))
    # One event per second: in a few loop turns at most a couple of events (and so no bids yet).
    assert table_rows(store.snapshot(OFFSETS_TABLE, 10))[0][1] <= 3
    assert len(changes(output)) <= 2


def test_option_errors_name_the_problem() -> None:
    with pytest.raises(FeatureNotSupported, match="kafka"):
        parse_nexmark_options({"connector": "kafka"})
    with pytest.raises(InvalidParameterValue, match=r"nexmark\.table\.type"):
        parse_nexmark_options({"connector": "nexmark", "nexmark.table.type": "bids"})
    with pytest.raises(InvalidParameterValue, match=r"nexmark\.bogus"):
        parse_nexmark_options({"connector": "nexmark", "nexmark.table.type": "bid", "nexmark.bogus": "1"})
    with pytest.raises(InvalidParameterValue, match=r"nexmark\.event\.num"):
        parse_nexmark_options({"connector": "nexmark", "nexmark.table.type": "bid", "nexmark.event.num": "-1"})
    parsed = parse_nexmark_options({"connector": "NEXMARK", "nexmark.table.type": "Person", "nexmark.seed": "7"})
    assert parsed.config.seed == 7 and parsed.event_count is None
