"""Actors: an operator chain plus the dispatcher that feeds its downstream channels.

An actor runs as one asyncio task. After its dispatcher has forwarded a barrier
it reports the barrier to the collector (the barrier coordinator): the actor's
state for ``barrier.epoch.prev`` is sealed by then, because every operator
commits before it emits a barrier (DESIGN §4).
"""

from __future__ import annotations

import logging
from typing import Protocol

from tidegate.stream.channel import Channel
from tidegate.stream.messages import AddMutation, Barrier, Message, StopMutation
from tidegate.stream.operator import Operator

log = logging.getLogger(__name__)


class BarrierCollector(Protocol):
    def collect(self, actor_id: int, barrier: Barrier) -> None: ...

    def actor_failed(self, actor_id: int, error: BaseException) -> None: ...


class Dispatcher:
    """Broadcasts an actor's output to its downstream actors' channels."""

    def __init__(self, actor_id: int, outputs: list[tuple[int, Channel]] | None = None) -> None:
        self.actor_id = actor_id
        self.outputs: list[tuple[int, Channel]] = list(outputs or [])

    async def dispatch(self, message: Message) -> None:
        if isinstance(message, Barrier) and isinstance(message.mutation, AddMutation):
            # New downstream actors start with this very barrier.
            self.outputs += message.mutation.outputs.get(self.actor_id, [])
        for _, channel in self.outputs:
            await channel.send(message)
        if isinstance(message, Barrier) and isinstance(message.mutation, StopMutation):
            stopped = message.mutation.actors
            self.outputs = [(a, c) for a, c in self.outputs if a not in stopped]


class Actor:
    def __init__(
        self,
        actor_id: int,
        root: Operator,
        dispatcher: Dispatcher,
        collector: BarrierCollector,
        name: str = "",
    ) -> None:
        self.actor_id = actor_id
        self.root = root
        self.dispatcher = dispatcher
        self.collector = collector
        self.name = name or f"actor-{actor_id}"

    async def run(self) -> None:
        try:
            async for message in self.root.execute():
                await self.dispatcher.dispatch(message)
                if isinstance(message, Barrier):
                    self.collector.collect(self.actor_id, message)
                    if message.stops(self.actor_id):
                        return
        except Exception as error:  # an operator failure must reach meta, never vanish with the task
            log.exception("%s failed", self.name)
            self.collector.actor_failed(self.actor_id, error)
