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
from typing import Any

import pyarrow as pa

from tidegate.common.chunk import Chunk
from tidegate.stream.messages import Barrier, Message, Watermark


class Operator(ABC):
    """A node of an actor's operator chain."""

    schema: pa.Schema
    name: str = "operator"

    @abstractmethod
    def execute(self) -> AsyncIterator[Message]:
        """The output stream; starts with a barrier."""


class CheckedOperator(Operator):
    """Asserts barrier-first, strictly increasing epochs, prev == last curr, schema, and that
    each column's watermarks never go back."""

    def __init__(self, inner: Operator) -> None:
        self.inner = inner
        self.schema = inner.schema
        self.name = f"checked({inner.name})"

    async def execute(self) -> AsyncIterator[Message]:
        last_curr: int | None = None
        watermarks: dict[int, Any] = {}  # per column, the last watermark
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
                elif isinstance(message, Watermark):
                    assert 0 <= message.column < len(self.schema), (self.inner.name, message)
                    last = watermarks.get(message.column)
                    assert last is None or message.value >= last, (self.inner.name, "watermark back", message, last)
                    watermarks[message.column] = message.value
            yield message
