"""Backfill: the adding barrier, then the upstream snapshot at its ``prev``, then the channel.

The upstream Materialize sealed epoch ``e0`` before forwarding barrier
``(e0 → e1)``; later epochs may be sealed by the time the new actor reads, so
only a read at exactly ``e0`` makes snapshot + channel add up to the upstream
rows with nothing missed or doubled.
"""

from __future__ import annotations

import asyncio

import pyarrow as pa
import pytest
from scripted import INS, apply_changes, barrier, changes, chunk, inserts, table_rows

from tidegate.common.chunk import Chunk
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.channel import Channel
from tidegate.stream.messages import AddMutation, Barrier, Message, StopMutation
from tidegate.stream.operators import backfill as backfill_module
from tidegate.stream.operators.backfill import Backfill
from tidegate.stream.operators.receiver import Receiver

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])
UPSTREAM_TABLE = 3 << 16
ACTOR = 9


def upstream_with_history() -> tuple[MemoryStateStore, StateTable]:
    """Upstream committed epochs 10 and 20, and already sealed 30 (after the add barrier)."""
    store = MemoryStateStore()
    upstream = StateTable(store, UPSTREAM_TABLE, SCHEMA, [0])
    upstream.write(inserts(SCHEMA, [(1, "a"), (2, "b"), (3, "c")]))
    upstream.commit(10)
    upstream.write(chunk(SCHEMA, "- U- U+", [(1, "a"), (2, "b"), (2, "B")]))
    upstream.commit(20)
    # Epoch 30's changes: they also travel on the channel after barrier (20 → 30).
    upstream.write(chunk(SCHEMA, "+ -", [(4, "d"), (3, "c")]))
    upstream.commit(30)
    return store, upstream


def run_backfill(backfill: Backfill, channel: Channel, messages: list[Message]) -> list[Message]:
    async def go() -> list[Message]:
        for message in messages:
            await channel.send(message)
        return [m async for m in backfill.execute()]

    return asyncio.run(go())


def test_barrier_then_snapshot_at_prev_then_channel_without_gaps_or_doubles() -> None:
    store, upstream = upstream_with_history()
    channel = Channel()
    backfill = Backfill(Receiver(channel, SCHEMA, ACTOR), store, UPSTREAM_TABLE)
    add = barrier(30, 20, mutation=AddMutation(added_actors=frozenset({ACTOR})))
    later = [
        add,
        chunk(SCHEMA, "+ -", [(4, "d"), (3, "c")]),
        barrier(40, 30),
        chunk(SCHEMA, "U- U+", [(4, "d"), (4, "D")]),
        barrier(50, 40, mutation=StopMutation(frozenset({ACTOR}))),
    ]
    output = run_backfill(backfill, channel, later)

    assert output[0] is add
    snapshot_rows = output[1 : output.index(later[1])]
    assert all(isinstance(m, Chunk) for m in snapshot_rows)
    assert sorted(changes(snapshot_rows)) == [(INS, (2, "B")), (INS, (3, "c"))]
    assert output[len(snapshot_rows) + 1 :] == later[1:]
    assert backfill.rows_backfilled == 2

    # Snapshot + changes == what upstream holds, row for row.
    view = apply_changes(changes(output))
    assert sorted(view) == [(2, "B"), (4, "D")]
    assert all(count == 1 for count in view.values())
    assert table_rows(upstream.snapshot(30)) == [(2, "B"), (4, "d")]


def test_snapshot_is_split_into_chunks_of_the_configured_size(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill_module, "BACKFILL_CHUNK_ROWS", 2)
    store = MemoryStateStore()
    upstream = StateTable(store, UPSTREAM_TABLE, SCHEMA, [0])
    upstream.write(inserts(SCHEMA, [(i, str(i)) for i in range(5)]))
    upstream.commit(10)
    channel = Channel()
    backfill = Backfill(Receiver(channel, SCHEMA, ACTOR), store, UPSTREAM_TABLE)
    stop = barrier(30, 20, mutation=StopMutation(frozenset({ACTOR})))
    output = run_backfill(backfill, channel, [barrier(20, 10), stop])

    sizes = [len(m) for m in output if isinstance(m, Chunk)]
    assert sizes == [2, 2, 1]
    assert sorted(row for _, row in changes(output)) == [(i, str(i)) for i in range(5)]
    assert [type(m) for m in output] == [Barrier, Chunk, Chunk, Chunk, Barrier]


def test_empty_upstream_emits_no_snapshot_chunk() -> None:
    store = MemoryStateStore()
    StateTable(store, UPSTREAM_TABLE, SCHEMA, [0])
    channel = Channel()
    backfill = Backfill(Receiver(channel, SCHEMA, ACTOR), store, UPSTREAM_TABLE)
    stop = barrier(30, 20, mutation=StopMutation(frozenset({ACTOR})))
    output = run_backfill(backfill, channel, [barrier(20, 10), inserts(SCHEMA, [(1, "x")]), stop])
    assert [type(m) for m in output] == [Barrier, Chunk, Barrier]
    assert changes(output) == [(INS, (1, "x"))]
    assert backfill.rows_backfilled == 0


def test_receiver_stops_after_the_barrier_that_stops_its_actor() -> None:
    channel = Channel()
    other_actor_stop = barrier(2, 1, mutation=StopMutation(frozenset({ACTOR + 1})))
    own_stop = barrier(3, 2, mutation=StopMutation(frozenset({ACTOR})))

    async def go() -> list[Message]:
        for message in [barrier(1, 0), other_actor_stop, own_stop, barrier(4, 3)]:
            await channel.send(message)
        return [m async for m in Receiver(channel, SCHEMA, ACTOR).execute()]

    assert asyncio.run(go())[-1] is own_stop
