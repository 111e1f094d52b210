"""SourceInbox: the barriers the coordinator injects into a source a job runs itself.

Shared by every source a view's job runs (generators, Kafka, files). The coordinator calls the
source's ``inject``, which ``put``s the barrier, on the stream loop; the source takes a pending
barrier between two chunks (``take``), waits for its first one (``first``), or sleeps until a
barrier comes or a timeout passes (``wait``). ``ready`` is the event that wakes it: a reader
thread of the source's own may set it too.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator

from tidegate.common.chunk import Chunk
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.watermark import WatermarkGenerator


class SourceInbox:
    def __init__(self) -> None:
        self._barriers: collections.deque[Barrier] = collections.deque()
        self.ready = asyncio.Event()

    def put(self, barrier: Barrier) -> None:
        self._barriers.append(barrier)
        self.ready.set()

    @property
    def pending(self) -> bool:
        return bool(self._barriers)

    def take(self) -> Barrier | None:
        """The oldest barrier not yet taken, if any."""
        return self._barriers.popleft() if self._barriers else None

    async def first(self) -> Barrier:
        """The next barrier, waiting for it (a source's first message)."""
        while not self._barriers:
            self.ready.clear()
            await self.ready.wait()
        return self._barriers.popleft()

    async def wait(self, timeout_s: float | None) -> None:
        """Until a barrier is pending, ``ready`` is set, or ``timeout_s`` passed (None: no timeout)."""
        self.ready.clear()
        if self._barriers:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.ready.wait(), timeout_s)


async def with_watermark(chunk: Chunk | None, watermark: WatermarkGenerator | None) -> AsyncIterator[Message]:
    """A source's chunk without its late rows, followed by the watermark if it grew."""
    grown = None
    if chunk is not None and watermark is not None:
        chunk, grown = watermark.apply(chunk)
    if chunk is not None:
        yield chunk
    if grown is not None:
        yield grown
