"""TableSource: reads its log up to where a barrier was injected, and commits the offset with it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pyarrow as pa
from scripted import FakeLog, barrier, changes, inserts, table_rows

from tidegate.common.chunk import Chunk
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message, StopMutation
from tidegate.stream.operators.table_source import OFFSET_SCHEMA, TableSource

SCHEMA = pa.schema([("id", pa.int64())])
ACTOR = 4
OFFSETS_TABLE = (ACTOR << 16) | 1


def record(i: int) -> Chunk:
    return inserts(SCHEMA, [(i,)])


async def collect_until_stop(source: TableSource, on_barrier: Callable[[Barrier], None]) -> list[Message]:
    out: list[Message] = []
    async for message in source.execute():
        out.append(message)
        if isinstance(message, Barrier):
            on_barrier(message)
            if message.stops(ACTOR):
                break
    return out


def test_records_before_a_barrier_are_read_before_it_and_the_offset_commits_with_it() -> None:
    store = MemoryStateStore()
    log = FakeLog()
    offsets = StateTable(store, OFFSETS_TABLE, OFFSET_SCHEMA, [0])
    source = TableSource(log, offsets, SCHEMA, ACTOR)
    emitted_at_barrier: dict[int, int] = {}
    committed_at_barrier: dict[int, list] = {}
    emitted: list[Message] = []

    def on_barrier(b: Barrier) -> None:
        if b.epoch.prev:
            emitted_at_barrier[b.epoch.prev] = len(changes(emitted))
            committed_at_barrier[b.epoch.prev] = table_rows(offsets.snapshot(b.epoch.prev))

    async def go() -> list[Message]:
        async def consume() -> None:
            async for message in source.execute():
                emitted.append(message)
                if isinstance(message, Barrier):
                    on_barrier(message)
                    if message.stops(ACTOR):
                        return

        task = asyncio.create_task(consume())
        source.inject(barrier(10, 0))
        for i in range(40):  # more than one read batch
            log.append(record(i))
        source.inject(barrier(20, 10))
        await asyncio.sleep(0.01)
        log.append(record(40))
        log.append(record(41))
        source.inject(barrier(30, 20, mutation=StopMutation(frozenset({ACTOR}))))
        await asyncio.wait_for(task, 2)
        return emitted

    output = asyncio.run(go())
    assert [m.epoch.curr for m in output if isinstance(m, Barrier)] == [10, 20, 30]
    assert [row for _, row in changes(output)] == [(i,) for i in range(42)]
    # Everything appended before a barrier's injection precedes it (the source may read
    # further ahead), and the offset committed with the epoch is exactly what was emitted.
    assert emitted_at_barrier[10] >= 40 and emitted_at_barrier[20] == 42
    assert committed_at_barrier == {e: [(0, n)] for e, n in emitted_at_barrier.items()}


def test_a_restarted_source_resumes_at_the_committed_offset() -> None:
    store = MemoryStateStore()
    offsets = StateTable(store, OFFSETS_TABLE, OFFSET_SCHEMA, [0])
    offsets.write(inserts(OFFSET_SCHEMA, [(0, 3)]))
    offsets.commit(20)
    log = FakeLog()
    for i in range(5):
        log.append(record(i))
    assert [row for _, row in changes(restart(store, log, at=20))] == [(3,), (4,)]


def restart(store: MemoryStateStore, log: FakeLog, at: int) -> list[Message]:
    """A fresh source after recovery at committed epoch ``at``; runs two epochs and stops."""
    source = TableSource(log, StateTable(store, OFFSETS_TABLE, OFFSET_SCHEMA, [0]), SCHEMA, ACTOR)

    async def go() -> list[Message]:
        task = asyncio.create_task(collect_until_stop(source, lambda _: None))
        source.inject(barrier(at + 10, at))
        source.inject(barrier(at + 20, at + 10, mutation=StopMutation(frozenset({ACTOR}))))
        return await asyncio.wait_for(task, 2)

    return asyncio.run(go())


def test_a_source_restarted_twice_does_not_replay_what_it_committed() -> None:
    """Regression: the restored offset row was never deleted, so a second restart read it again."""
    store = MemoryStateStore()
    offsets = StateTable(store, OFFSETS_TABLE, OFFSET_SCHEMA, [0])
    offsets.write(inserts(OFFSET_SCHEMA, [(0, 3)]))
    offsets.commit(20)
    log = FakeLog()
    for i in range(5):
        log.append(record(i))
    assert [row for _, row in changes(restart(store, log, at=20))] == [(3,), (4,)]  # commits offset 5 at 30
    assert table_rows(store.snapshot(OFFSETS_TABLE, 30)) == [(0, 5)]
    assert changes(restart(store, log, at=30)) == []
