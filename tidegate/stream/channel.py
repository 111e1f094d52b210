"""Bounded channels between actors.

A channel is the only way actors share anything (DESIGN §4). It is bounded so a
slow consumer back-pressures its producers instead of buffering without limit.
This is the local (in-process, asyncio) channel; a remote one would carry the
same messages as Arrow IPC over a socket behind the same two methods.
"""

from __future__ import annotations

import asyncio

from tidegate.stream.messages import Message

CHANNEL_CAPACITY_MESSAGES = 32


class Channel:
    def __init__(self, capacity: int = CHANNEL_CAPACITY_MESSAGES, name: str = "") -> None:
        self._queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=capacity)
        self.name = name

    async def send(self, message: Message) -> None:
        await self._queue.put(message)

    async def recv(self) -> Message:
        return await self._queue.get()

    def __repr__(self) -> str:
        return f"Channel({self.name!r}, {self._queue.qsize()} queued)"
