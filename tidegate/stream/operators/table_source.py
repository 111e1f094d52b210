"""TableSource: streams a table's durable change log, offset by offset.

DML appends a table's changes to its log (``connectors.table_log``) and is
acknowledged once they are on disk; this source reads the log like a Kafka
partition. Barriers come from the coordinator through ``barriers``; whatever the
source read before a barrier belongs to the epoch that barrier ends. The offset
reached is written to the source's own state table on every barrier, so it
commits atomically with every operator's state (DESIGN §5.5) and recovery
resumes from it.

A table with a ``WATERMARK`` (an append-only table) runs a
``WatermarkGenerator`` over what it reads: late rows are dropped before they
are stored, a grown watermark follows the chunk, and the watermark commits with
the offset. It is emitted again after the first barrier and after every barrier
that adds downstream actors, so a new view learns it without waiting for it to grow.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa

from tidegate.common.chunk import Chunk, Op
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import AddMutation, Barrier, Message
from tidegate.stream.operator import Operator
from tidegate.stream.watermark import WatermarkGenerator

READ_BATCH_RECORDS = 16
OFFSET_SCHEMA = pa.schema([("partition", pa.int32()), ("offset", pa.int64())])


class TableSource(Operator):
    name = "table_source"

    def __init__(
        self,
        log: Any,  # connectors.table_log.TableLog
        offsets: StateTable,
        schema: pa.Schema,
        actor_id: int,
        watermark: WatermarkGenerator | None = None,
    ) -> None:
        self.log = log
        self.watermark = watermark
        # (barrier, log end offset when it was injected): everything acknowledged
        # before the barrier was injected is read before the barrier is emitted.
        self.barriers: asyncio.Queue[tuple[Barrier, int]] = asyncio.Queue()
        self.offsets = SourceOffset(offsets)
        self.schema = schema
        self.actor_id = actor_id
        self.offset = 0
        self._wakeup = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def inject(self, barrier: Barrier) -> None:
        """Called by the barrier coordinator, on the stream loop."""
        self.barriers.put_nowait((barrier, self.log.end_offset()))

    def _on_append(self) -> None:
        # Called in the appending thread.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._wakeup.set)

    async def execute(self) -> AsyncIterator[Message]:
        self._loop = asyncio.get_running_loop()
        first, _ = await self.barriers.get()
        self.offset = self.offsets.restore(first.epoch.prev, 0)
        restored = self.watermark.restore(first.epoch.prev) if self.watermark is not None else None
        self.log.add_listener(self._on_append)
        try:
            yield first
            if restored is not None and not first.stops(self.actor_id):
                yield restored
            async for message in self._run():
                yield message
        finally:
            # A stopped or cancelled source (DROP, recovery) must not keep waking a dead loop.
            self.log.remove_listener(self._on_append)

    async def _run(self) -> AsyncIterator[Message]:
        while True:
            if not self.barriers.empty():
                barrier, target = self.barriers.get_nowait()
                async for message in self._read_until(target):
                    yield message
                for message in self._end_epoch(barrier):
                    yield message
                if barrier.stops(self.actor_id):
                    return
                continue
            records = self.log.read(self.offset, READ_BATCH_RECORDS)
            if records:
                for record in records:
                    if not self.barriers.empty():
                        # A barrier waits for nothing read after its injection: the rest of
                        # this batch is read again after it.
                        break
                    for message in self._advance([record]):
                        yield message
                # Hand the loop back: with a backlog nothing else here would suspend, and the
                # barrier coordinator could not inject until the whole backlog was read.
                await asyncio.sleep(0)
                continue
            self._wakeup.clear()
            if self.log.end_offset() > self.offset:
                continue
            barrier_wait = asyncio.ensure_future(self.barriers.get())
            data_wait = asyncio.ensure_future(self._wakeup.wait())
            try:
                done, _ = await asyncio.wait({barrier_wait, data_wait}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:
                # Stopped (recovery, shutdown): the waits must not outlive the source.
                barrier_wait.cancel()
                data_wait.cancel()
                raise
            data_wait.cancel()
            if barrier_wait in done:
                barrier, target = barrier_wait.result()
                async for message in self._read_until(target):
                    yield message
                for message in self._end_epoch(barrier):
                    yield message
                if barrier.stops(self.actor_id):
                    return
            else:
                barrier_wait.cancel()

    def _advance(self, records: list[tuple[int, Chunk]]) -> list[Message]:
        for offset, _ in records:
            assert offset == self.offset, (offset, self.offset)
            self.offset = offset + 1
        if self.watermark is None:
            return [chunk for _, chunk in records]
        messages: list[Message] = []
        for _, chunk in records:
            kept, watermark = self.watermark.apply(chunk)
            messages += [m for m in (kept, watermark) if m is not None]
        return messages

    async def _read_until(self, target: int) -> AsyncIterator[Message]:
        while self.offset < target:
            records = self.log.read(self.offset, READ_BATCH_RECORDS)
            assert records, (self.offset, target)
            for message in self._advance(records):
                yield message

    def _end_epoch(self, barrier: Barrier) -> list[Message]:
        """Commit the offset (and watermark) at the barrier's epoch; the barrier, then the watermark
        again when the barrier adds downstream actors (they start after it)."""
        self._persist_offset()
        self.offsets.commit(barrier.epoch.prev)
        if self.watermark is None:
            return [barrier]
        self.watermark.commit(barrier.epoch.prev)
        current = self.watermark.current()
        if current is not None and isinstance(barrier.mutation, AddMutation) and not barrier.stops(self.actor_id):
            return [barrier, current]
        return [barrier]

    def _persist_offset(self) -> None:
        self.offsets.persist(self.offset)


class SourceOffset:
    """A source's offset in its own state table: one row, replaced on each barrier that moved it."""

    def __init__(self, state: StateTable) -> None:
        self.state = state
        self._written: int | None = None  # the row the next update replaces

    @property
    def table_id(self) -> int:
        return self.state.table_id

    def restore(self, epoch: int, start: int) -> int:
        """The offset committed at ``epoch``, or ``start`` when there is none."""
        if epoch == 0:
            return start
        rows = self.state.snapshot(epoch)
        if rows.num_rows == 0:
            return start
        self._written = int(rows.column("offset")[0].as_py())
        return self._written

    def persist(self, offset: int) -> None:
        if self._written == offset:
            return
        rows: list[dict[str, int]] = []
        ops: list[Op] = []
        if self._written is not None:
            rows.append({"partition": 0, "offset": self._written})
            ops.append(Op.UPDATE_DELETE)
        rows.append({"partition": 0, "offset": offset})
        ops.append(Op.UPDATE_INSERT if self._written is not None else Op.INSERT)
        self.state.write(Chunk.of(ops, pa.RecordBatch.from_pylist(rows, schema=OFFSET_SCHEMA)))
        self._written = offset

    def commit(self, epoch: int) -> None:
        self.state.commit(epoch)
