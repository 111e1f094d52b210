"""Merge: several input streams as one, with barrier alignment (DESIGN §4).

Place in the data flow: below UNION ALL (and any operator with several inputs),
above the inputs' receivers. Chunks pass through in the order they arrive.
When a barrier arrives on one input, that input is not read again until the
same barrier has arrived on every input: the records behind it belong to the
next epoch, while the other inputs may still deliver records of this one.
Once all inputs have delivered it, the barrier goes downstream once, and every
input is read again. So nothing of epoch e+1 is ever emitted before barrier e,
and nothing of epoch e after it.

The alignment loop itself is ``aligned_messages``, shared with every other
operator of several inputs (the hash join): it tags each record with the input
it came from, so such an operator can tell its inputs apart.

Under ``at_least_once`` (``aligned=False``, DESIGN §5.8) an input that delivered barrier e is
read on instead of blocked (Flink's at-least-once checkpoints): its records behind the barrier
are applied before the barrier goes downstream, so they are part of epoch e's state while its
source's offset for e excludes them, and a recovery from e replays them: duplicates, never
loss. An input that reaches a second barrier before the others delivered the first waits, and
so does one at the first barrier (operators restore their state on it) or at a barrier that adds
or stops actors.

Inputs are polled concurrently; when several have a message ready at once they
are taken in input order, so a run is deterministic on a deterministic loop.

Watermarks: ``aligned_messages`` passes each input's on, tagged like chunks. A
merge emits a column's watermark only once every input has reported one for
it, and then the minimum over the inputs, whenever that grows
(``WatermarkMerger``): a later row may come from the input that lags most. An
operator whose inputs have different columns (the hash join) drops them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.errors import InternalError
from tidegate.stream.messages import Barrier, Message, Watermark
from tidegate.stream.operator import Operator

# The input index ``aligned_messages`` gives an aligned barrier: it belongs to every input.
ALL_INPUTS = -1


class Merge(Operator):
    name = "merge"

    def __init__(self, inputs: list[Operator], schema: pa.Schema, actor_id: int, *, aligned: bool = True) -> None:
        assert inputs, "a merge needs at least one input"
        self.inputs = inputs
        self.schema = schema
        self.actor_id = actor_id
        self.aligned = aligned

    async def execute(self) -> AsyncIterator[Message]:
        watermarks = WatermarkMerger(len(self.inputs))
        async with contextlib.aclosing(
            aligned_messages(self.inputs, self.actor_id, self.name, aligned=self.aligned)
        ) as messages:
            async for index, message in messages:
                if isinstance(message, Watermark):
                    merged = watermarks.merge(index, message)
                    if merged is not None:
                        yield merged
                else:
                    yield message


class WatermarkMerger:
    """Per column, the minimum of the inputs' latest watermarks, once every input has one."""

    def __init__(self, input_count: int) -> None:
        self.input_count = input_count
        self._latest: dict[int, dict[int, Any]] = {}  # column -> input -> its latest watermark
        self._emitted: dict[int, Any] = {}  # column -> the last merged watermark

    def merge(self, index: int, watermark: Watermark) -> Watermark | None:
        """Record input ``index``'s watermark; the column's merged watermark if it grew."""
        latest = self._latest.setdefault(watermark.column, {})
        latest[index] = watermark.value
        if len(latest) < self.input_count:
            return None
        low = min(latest.values())
        last = self._emitted.get(watermark.column)
        if last is not None and low <= last:
            return None
        self._emitted[watermark.column] = low
        return Watermark(watermark.column, low)


async def aligned_messages(
    inputs: list[Operator], actor_id: int, owner: str, *, aligned: bool = True
) -> AsyncGenerator[tuple[int, Chunk | Barrier | Watermark], None]:
    """Every input's chunks and watermarks tagged with their input's index, and each barrier once all
    inputs delivered it.

    A barrier comes as ``(ALL_INPUTS, barrier)``; the stream ends after a barrier that stops
    ``actor_id``. ``owner`` names the operator in errors. ``aligned=False``: an input that delivered
    the barrier is read on until it reaches the next one (at_least_once; see the module docstring).
    """
    streams = [i.execute() for i in inputs]
    pending: dict[int, asyncio.Future[Message]] = {}
    held: dict[int, Barrier] = {}  # inputs that delivered the barrier being aligned, and that barrier
    ahead: dict[int, Barrier] = {}  # unaligned: inputs blocked at the barrier after it

    def poll(index: int) -> None:
        pending[index] = asyncio.ensure_future(anext(streams[index]))

    started = False  # an input is read on only after the first barrier: operators restore state on it

    def reads_on(barrier: Barrier) -> bool:
        # A barrier that changes the graph (adds or stops actors) is always aligned.
        return not aligned and started and barrier.mutation is None

    try:
        for index in range(len(streams)):
            poll(index)
        while pending or len(held) == len(streams):
            if len(held) < len(streams):
                await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
            for index in sorted(i for i, future in pending.items() if future.done()):
                try:
                    message = pending.pop(index).result()
                except StopAsyncIteration:
                    raise InternalError(f"{owner} input {index} ended before a barrier stopped it") from None
                if isinstance(message, Barrier):
                    if index in held:
                        ahead[index] = message
                    else:
                        held[index] = message
                        if reads_on(message):
                            poll(index)
                    continue
                yield index, message
                poll(index)
            if len(held) == len(streams):
                barrier = _aligned(held, owner)
                held.clear()
                yield ALL_INPUTS, barrier
                started = True
                if barrier.stops(actor_id):
                    return  # every input ends after passing this barrier on
                for index in range(len(streams)):
                    if index in ahead:
                        held[index] = ahead.pop(index)
                        if reads_on(held[index]):
                            poll(index)
                    elif index not in pending:
                        poll(index)
    finally:
        for future in pending.values():
            future.cancel()
        await asyncio.gather(*pending.values(), return_exceptions=True)
        for stream in streams:
            await stream.aclose()  # type: ignore[attr-defined]


def _aligned(held: dict[int, Barrier], owner: str) -> Barrier:
    """The one barrier every input delivered; different ones mean the inputs lost step."""
    barriers = list(held.values())
    first = barriers[0]
    if any(b.epoch != first.epoch for b in barriers[1:]):
        raise InternalError(f"{owner} inputs are at different barriers: {sorted(str(b.epoch) for b in barriers)}")
    return first
