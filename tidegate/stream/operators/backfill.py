"""Backfill: a new view's input — the upstream's committed snapshot, then its changes.

The new actor's first message is the barrier ``(e0 → e1)`` that added it. The
upstream sealed everything before that barrier at ``e0`` before forwarding it,
and everything after it arrives on the channel. So emitting the snapshot at
``e0`` right after the barrier, then following the channel, misses nothing and
doubles nothing (DESIGN §8).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from tidegate.common.chunk import Chunk
from tidegate.state.store import StateStore
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator

BACKFILL_CHUNK_ROWS = 65536


class Backfill(Operator):
    name = "backfill"

    def __init__(self, upstream: Operator, store: StateStore, upstream_table_id: int) -> None:
        self.upstream = upstream
        self.store = store
        self.upstream_table_id = upstream_table_id
        self.schema = upstream.schema
        self.rows_backfilled = 0

    async def execute(self) -> AsyncIterator[Message]:
        messages = self.upstream.execute()
        first = await anext(messages)
        assert isinstance(first, Barrier), first
        yield first
        snapshot = self.store.snapshot(self.upstream_table_id, first.epoch.prev)
        for batch in snapshot.cast(self.schema).to_batches(max_chunksize=BACKFILL_CHUNK_ROWS):
            if batch.num_rows:
                self.rows_backfilled += batch.num_rows
                yield Chunk.inserts(batch)
        async for message in messages:
            yield message
