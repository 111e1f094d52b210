"""GeneratorSource: the loop of a source that generates its rows inside the job of a view.

A generator source (datagen: docs/design/20261127_datagen_source.md; RisingWave's non-shared
sources, docs/design/20261127_nexmark_source.md) computes row ``n`` as a pure function of its
options and ``n``, so its only state is the offset: the number of the next row to generate.
Subclasses say how to generate rows ``[first, first + count)`` (``generate``); this class does
the rest:

- barriers come from the coordinator through ``inject``; whatever was generated before a
  barrier belongs to the epoch that barrier ends. On a barrier the offset is written to the
  source's state table and committed with the view's state, so recovery resumes exactly
  where the checkpoint left off: nothing lost, nothing doubled;
- between barriers it generates chunks of at most ``chunk_rows_max`` rows, handing the loop
  back after each (the coordinator must be able to inject a barrier), up to ``end_offset``;
- ``rows_per_second`` limits the rate, counted from this run's start (a recovery restarts the
  count): only the rows due by now are generated, otherwise it waits for the next one or a barrier;
- a ``WatermarkGenerator``, when the source declares a ``WATERMARK``, drops late rows, follows a
  chunk with the grown watermark, and is committed with the offset on every barrier (and emitted
  again right after the first one, so a recovered job knows it before any new row).
"""

from __future__ import annotations

import asyncio
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable
from typing import Protocol

import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator
from tidegate.stream.operators.source_inbox import SourceInbox, with_watermark
from tidegate.stream.operators.table_source import SourceOffset
from tidegate.stream.watermark import WatermarkGenerator


class GeneratingSource(Protocol):
    """What the runtime needs of a source a job runs itself: its barrier entry point and its progress."""

    offset: int  # the number of the next row (event) to generate
    watermark: WatermarkGenerator | None  # the source's WATERMARK, if it declares one

    @property
    def end_offset(self) -> int | None:
        """The number after the last row to generate; None for an unbounded source."""

    def inject(self, barrier: Barrier) -> None: ...


class GeneratorSource(Operator):
    name = "generator_source"

    def __init__(
        self,
        offsets: StateTable,
        schema: pa.Schema,
        actor_id: int,
        *,
        first_offset: int,
        end_offset: int | None,
        chunk_rows_max: int,
        rows_per_second: int | None,
        clock: Callable[[], float] | None = None,
        watermark: WatermarkGenerator | None = None,
    ) -> None:
        """``clock``: seconds, for the rate limit; the event loop's clock by default."""
        assert chunk_rows_max >= 1, chunk_rows_max
        self.offsets = SourceOffset(offsets)
        self.schema = schema
        self.actor_id = actor_id
        self.first_offset = first_offset
        self._end_offset = end_offset
        self.chunk_rows_max = chunk_rows_max
        self.rows_per_second = rows_per_second
        self.clock = clock
        self.watermark = watermark
        self.inbox = SourceInbox()
        self.offset = first_offset
        self._started_at = 0.0
        self._started_offset = first_offset

    @property
    def end_offset(self) -> int | None:
        """The number after the last row to generate; None for an unbounded source."""
        return self._end_offset

    @abstractmethod
    def generate(self, first: int, count: int) -> Chunk | None:
        """The rows ``[first, first + count)`` (None when none of them is a row of this source)."""

    def inject(self, barrier: Barrier) -> None:
        """Called by the barrier coordinator, on the stream loop."""
        self.inbox.put(barrier)

    async def execute(self) -> AsyncIterator[Message]:
        first = await self.inbox.first()
        self.offset = self.offsets.restore(first.epoch.prev, self.first_offset)
        restored = self.watermark.restore(first.epoch.prev) if self.watermark is not None else None
        self._started_at = self._now()
        self._started_offset = self.offset
        yield first
        if first.stops(self.actor_id):
            return
        if restored is not None:
            yield restored
        while True:
            barrier = self.inbox.take()
            if barrier is not None:
                self.offsets.persist(self.offset)
                self.offsets.commit(barrier.epoch.prev)
                if self.watermark is not None:
                    self.watermark.commit(barrier.epoch.prev)
                yield barrier
                if barrier.stops(self.actor_id):
                    return
                continue
            count = self._rows_allowed()
            if count > 0:
                first_row = self.offset
                self.offset += count
                async for message in with_watermark(self.generate(first_row, count), self.watermark):
                    yield message
                # Hand the loop back so the coordinator can inject a barrier between chunks.
                await asyncio.sleep(0)
                continue
            await self.inbox.wait(self._seconds_until_next_row())

    def _now(self) -> float:
        return self.clock() if self.clock is not None else asyncio.get_running_loop().time()

    def _rows_allowed(self) -> int:
        count = self.chunk_rows_max
        if self._end_offset is not None:
            count = min(count, self._end_offset - self.offset)
        rate = self.rows_per_second
        if rate is not None:
            due = self._started_offset + int((self._now() - self._started_at) * rate)
            count = min(count, due - self.offset)
        return max(count, 0)

    def _seconds_until_next_row(self) -> float | None:
        rate = self.rows_per_second
        if rate is None or (self._end_offset is not None and self.offset >= self._end_offset):
            return None  # finished: only barriers come now
        due_at = self._started_at + (self.offset + 1 - self._started_offset) / rate
        return max(due_at - self._now(), 0.001)
