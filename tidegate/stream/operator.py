"""The operator contract.

An operator consumes its input message streams and yields messages. On a
barrier it must (1) have applied every record before the barrier on each input,
(2) commit each of its state tables at ``barrier.epoch.prev``, (3) emit the
barrier, in that order (DESIGN §4). ``CheckedOperator`` wraps any operator and
asserts the stream invariants of DESIGN §11; tests and the simulation switch it
on, benchmarks leave it off.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator

import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.stream.messages import Barrier, Message


class Operator(ABC):
    """A node of an actor's operator chain."""

    schema: pa.Schema
    name: str = "operator"

    @abstractmethod
    def execute(self) -> AsyncIterator[Message]:
        """The output stream; starts with a barrier."""


class CheckedOperator(Operator):
    """Asserts barrier-first, strictly increasing epochs, prev == last curr, and schema."""

    def __init__(self, inner: Operator) -> None:
        self.inner = inner
        self.schema = inner.schema
        self.name = f"checked({inner.name})"

    async def execute(self) -> AsyncIterator[Message]:
        last_curr: int | None = None
        async for message in self.inner.execute():
            if isinstance(message, Barrier):
                if last_curr is not None:
                    assert message.epoch.prev == last_curr, (self.inner.name, message.epoch, last_curr)
                    assert message.epoch.curr > last_curr, (self.inner.name, message.epoch, last_curr)
                last_curr = message.epoch.curr
            else:
                assert last_curr is not None, f"{self.inner.name}: first message is not a barrier"
                if isinstance(message, Chunk):
                    assert message.data.schema.equals(self.schema), (
                        self.inner.name,
                        message.data.schema,
                        self.schema,
                    )
            yield message
