"""NexmarkSource: generates one kind of Nexmark event inside the job of a view that reads a source.

Every view reading a nexmark source runs its own generator (RisingWave's
non-shared sources, docs/design/20261127_nexmark_source.md). The generator is
a pure function of (config, event number), so the only state is the offset:
the number of the next event to generate. It is written to the source's state
table on every barrier and committed with the view's state, so recovery
resumes exactly where the checkpoint left off: nothing lost, nothing doubled.

Barriers come from the coordinator through ``inject``; whatever the source
generated before a barrier belongs to the epoch that barrier ends. Rows carry
their event number as the hidden ``_row_id`` column, a key that is unique and
the same on every replay.

A source with a ``WATERMARK`` runs a ``WatermarkGenerator`` over each chunk:
late rows are dropped, a grown watermark follows the chunk, and the watermark
is committed with the offset on every barrier (and emitted again right after
the first one, so a recovered job knows it before any new event).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import numpy as np
import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.connectors.nexmark import event_kinds, generate_events
from tidegate.connectors.nexmark_options import NexmarkSourceOptions
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator
from tidegate.stream.operators.table_source import SourceOffset
from tidegate.stream.watermark import WatermarkGenerator

_KIND_NAMES = ("person", "auction", "bid")


class NexmarkSource(Operator):
    name = "nexmark_source"

    def __init__(
        self,
        options: NexmarkSourceOptions,
        offsets: StateTable,
        schema: pa.Schema,
        actor_id: int,
        clock: Callable[[], float] | None = None,
        watermark: WatermarkGenerator | None = None,
    ) -> None:
        """``schema``: the event columns (tidegate types) followed by the ``_row_id`` key column.
        ``clock``: seconds, for the rate limit; the event loop's clock by default.
        ``watermark``: the generator of the source's ``WATERMARK``, if it declares one."""
        self.options = options
        self.watermark = watermark
        self.offsets = SourceOffset(offsets)
        self.schema = schema
        self.actor_id = actor_id
        self.clock = clock
        self.barriers: asyncio.Queue[Barrier] = asyncio.Queue()
        self._barrier_ready = asyncio.Event()
        config = options.config
        self.offset = config.first_event_number
        self._end = None if options.event_count is None else config.first_event_number + options.event_count
        # The rate limit counts from where this run started (a recovery restarts the count).
        self._started_at = 0.0
        self._started_offset = self.offset

    @property
    def end_offset(self) -> int | None:
        """The event number after the last one to generate; None for an unbounded source."""
        return self._end

    def inject(self, barrier: Barrier) -> None:
        """Called by the barrier coordinator, on the stream loop."""
        self.barriers.put_nowait(barrier)
        self._barrier_ready.set()

    async def execute(self) -> AsyncIterator[Message]:
        first = await self._next_barrier()
        self.offset = self.offsets.restore(first.epoch.prev, self.options.config.first_event_number)
        restored = self.watermark.restore(first.epoch.prev) if self.watermark is not None else None
        self._started_at = self._now()
        self._started_offset = self.offset
        yield first
        if first.stops(self.actor_id):
            return
        if restored is not None:
            yield restored
        while True:
            if not self.barriers.empty():
                barrier = self.barriers.get_nowait()
                self.offsets.persist(self.offset)
                self.offsets.commit(barrier.epoch.prev)
                if self.watermark is not None:
                    self.watermark.commit(barrier.epoch.prev)
                yield barrier
                if barrier.stops(self.actor_id):
                    return
                continue
            count = self._events_allowed()
            if count > 0:
                chunk = self._generate(count)
                watermark = None
                if chunk is not None and self.watermark is not None:
                    chunk, watermark = self.watermark.apply(chunk)
                if chunk is not None:
                    yield chunk
                if watermark is not None:
                    yield watermark
                # Hand the loop back so the coordinator can inject a barrier between chunks.
                await asyncio.sleep(0)
                continue
            await self._wait(self._seconds_until_next_event())

    async def _next_barrier(self) -> Barrier:
        while self.barriers.empty():
            self._barrier_ready.clear()
            await self._barrier_ready.wait()
        return self.barriers.get_nowait()

    async def _wait(self, timeout_s: float | None) -> None:
        """Wait for a barrier, or ``timeout_s`` (the next event the rate limit allows)."""
        self._barrier_ready.clear()
        if not self.barriers.empty():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._barrier_ready.wait(), timeout_s)

    def _now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    def _events_allowed(self) -> int:
        count = self.options.chunk_events_max
        if self._end is not None:
            count = min(count, self._end - self.offset)
        rate = self.options.events_per_second
        if rate is not None:
            due = self._started_offset + int((self._now() - self._started_at) * rate)
            count = min(count, due - self.offset)
        return max(count, 0)

    def _seconds_until_next_event(self) -> float | None:
        rate = self.options.events_per_second
        if rate is None or (self._end is not None and self.offset >= self._end):
            return None  # finished: only barriers come now
        due_at = self._started_at + (self.offset + 1 - self._started_offset) / rate
        return max(due_at - self._now(), 0.001)

    def _generate(self, count: int) -> Chunk | None:
        """The rows of this source's kind among events ``[offset, offset + count)``."""
        first = self.offset
        self.offset += count
        batch = generate_events(self.options.config, first, count)[_KIND_NAMES[self.options.kind]]
        if batch.num_rows == 0:
            return None
        numbers = np.arange(first, first + count, dtype=np.int64)
        row_ids = numbers[event_kinds(self.options.config, numbers) == self.options.kind]
        assert len(row_ids) == batch.num_rows, (len(row_ids), batch.num_rows)
        columns = [batch.column(i).cast(self.schema.field(i).type) for i in range(batch.num_columns)]
        return Chunk.inserts(pa.RecordBatch.from_arrays([*columns, pa.array(row_ids)], schema=self.schema))
