"""Receiver: the input of an actor fed by one upstream actor's channel."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pyarrow as pa

from tidegate.stream.channel import Channel
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator


class Receiver(Operator):
    name = "receiver"

    def __init__(self, channel: Channel, schema: pa.Schema, actor_id: int) -> None:
        self.channel = channel
        self.schema = schema
        self.actor_id = actor_id

    async def execute(self) -> AsyncIterator[Message]:
        while True:
            message = await self.channel.recv()
            yield message
            # A full channel never suspends recv(): yield so the other actors and the
            # barrier coordinator get their turn.
            await asyncio.sleep(0)
            if isinstance(message, Barrier) and message.stops(self.actor_id):
                return
