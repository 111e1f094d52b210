"""Materialize: writes a stream into the state table that a table or view is read from.

The rows it commits at epoch E are what a SELECT at committed epoch E sees, and
what a new downstream view backfills from. Chunks pass through unchanged for
views that read this one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from tidegate.common.chunk import Chunk
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator


class Materialize(Operator):
    name = "materialize"

    def __init__(self, input: Operator, state: StateTable) -> None:
        self.input = input
        self.state = state
        self.schema = input.schema
        assert state.schema.equals(self.schema), (state.schema, self.schema)

    async def execute(self) -> AsyncIterator[Message]:
        first = True
        async for message in self.input.execute():
            if isinstance(message, Chunk):
                self.state.write(message)
            elif isinstance(message, Barrier):
                if not first:
                    self.state.commit(message.epoch.prev)
                first = False
            yield message
