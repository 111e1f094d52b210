"""Merge: several input streams as one, with barrier alignment (DESIGN §4).

Place in the data flow: below UNION ALL (and any operator with several inputs),
above the inputs' receivers. Chunks pass through in the order they arrive.
When a barrier arrives on one input, that input is not read again until the
same barrier has arrived on every input: the records behind it belong to the
next epoch, while the other inputs may still deliver records of this one.
Once all inputs have delivered it, the barrier goes downstream once, and every
input is read again. So nothing of epoch e+1 is ever emitted before barrier e,
and nothing of epoch e after it.

Inputs are polled concurrently; when several have a message ready at once they
are taken in input order, so a run is deterministic on a deterministic loop.
Watermarks are not merged yet (no input produces them).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pyarrow as pa

from tidegate.errors import InternalError
from tidegate.stream.messages import Barrier, Message, Watermark
from tidegate.stream.operator import Operator


class Merge(Operator):
    name = "merge"

    def __init__(self, inputs: list[Operator], schema: pa.Schema, actor_id: int) -> None:
        assert inputs, "a merge needs at least one input"
        self.inputs = inputs
        self.schema = schema
        self.actor_id = actor_id

    async def execute(self) -> AsyncIterator[Message]:
        streams = [i.execute() for i in self.inputs]
        pending: dict[int, asyncio.Future[Message]] = {}
        held: dict[int, Barrier] = {}  # inputs blocked at a barrier, and that barrier

        def poll(index: int) -> None:
            pending[index] = asyncio.ensure_future(anext(streams[index]))

        try:
            for index in range(len(streams)):
                poll(index)
            while pending:
                await asyncio.wait(pending.values(), return_when=asyncio.FIRST_COMPLETED)
                for index in sorted(i for i, future in pending.items() if future.done()):
                    try:
                        message = pending.pop(index).result()
                    except StopAsyncIteration:
                        raise InternalError(f"merge input {index} ended before a barrier stopped it") from None
                    if isinstance(message, Barrier):
                        held[index] = message
                        continue
                    if isinstance(message, Watermark):
                        raise InternalError("watermarks cannot cross a merge yet")
                    yield message
                    poll(index)
                if len(held) == len(streams):
                    barrier = _aligned(held)
                    held.clear()
                    yield barrier
                    if barrier.stops(self.actor_id):
                        return  # every input ends after passing this barrier on
                    for index in range(len(streams)):
                        poll(index)
        finally:
            for future in pending.values():
                future.cancel()
            await asyncio.gather(*pending.values(), return_exceptions=True)
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]


def _aligned(held: dict[int, Barrier]) -> Barrier:
    """The one barrier every input delivered; different ones mean the inputs lost step."""
    barriers = list(held.values())
    first = barriers[0]
    if any(b.epoch != first.epoch for b in barriers[1:]):
        raise InternalError(f"merge inputs are at different barriers: {sorted(str(b.epoch) for b in barriers)}")
    return first
