"""Actors and dispatchers: forward, then report; graph changes take effect at their barrier."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pyarrow as pa
from scripted import ScriptedSource, barrier, inserts

from tidegate.stream.actor import Actor, Dispatcher
from tidegate.stream.channel import Channel
from tidegate.stream.messages import AddMutation, Barrier, Message, StopMutation
from tidegate.stream.operator import Operator

SCHEMA = pa.schema([("id", pa.int64())])


def drain(channel: Channel) -> list[Message]:
    out = []
    while not channel._queue.empty():
        out.append(channel._queue.get_nowait())
    return out


class Collector:
    def __init__(self, watched: list[Channel]) -> None:
        self.watched = watched
        self.collected: list[tuple[int, Barrier, list[int]]] = []
        self.failures: list[tuple[int, BaseException]] = []

    def collect(self, actor_id: int, barrier: Barrier) -> None:
        # How many messages each downstream channel holds when the barrier is reported.
        self.collected.append((actor_id, barrier, [c._queue.qsize() for c in self.watched]))

    def actor_failed(self, actor_id: int, error: BaseException) -> None:
        self.failures.append((actor_id, error))


def test_dispatcher_adds_and_removes_outputs_exactly_at_their_barriers() -> None:
    old, new = Channel(), Channel()
    add = barrier(2, mutation=AddMutation(outputs={1: [(2, new)]}, added_actors=frozenset({2})))
    stop = barrier(4, mutation=StopMutation(frozenset({2})))
    before, between, after = (inserts(SCHEMA, [(i,)]) for i in range(3))
    dispatcher = Dispatcher(1, [(3, old)])

    async def go() -> None:
        for message in [barrier(1), before, add, between, barrier(3), stop, after, barrier(5)]:
            await dispatcher.dispatch(message)

    asyncio.run(go())
    assert drain(new) == [add, between, barrier(3), stop]
    assert drain(old) == [barrier(1), before, add, between, barrier(3), stop, after, barrier(5)]


def test_actor_reports_a_barrier_after_forwarding_it_and_stops_on_its_stop_barrier() -> None:
    channel = Channel()
    stop = barrier(3, mutation=StopMutation(frozenset({1})))
    messages = [barrier(1), inserts(SCHEMA, [(1,)]), barrier(2), stop, barrier(4)]
    collector = Collector([channel])
    actor = Actor(1, ScriptedSource(SCHEMA, messages), Dispatcher(1, [(2, channel)]), collector)
    asyncio.run(actor.run())

    assert [(a, b.epoch.curr, sizes) for a, b, sizes in collector.collected] == [
        (1, 1, [1]),
        (1, 2, [3]),
        (1, 3, [4]),
    ]
    assert drain(channel) == messages[:4]
    assert collector.failures == []


class Failing(Operator):
    name = "failing"
    schema = SCHEMA

    async def execute(self) -> AsyncIterator[Message]:
        yield barrier(1)
        raise ValueError("boom")


def test_an_operator_failure_is_reported_not_swallowed() -> None:
    collector = Collector([])
    asyncio.run(Actor(7, Failing(), Dispatcher(7), collector).run())
    assert [(a, b.epoch.curr) for a, b, _ in collector.collected] == [(7, 1)]
    ((actor_id, error),) = collector.failures
    assert actor_id == 7 and isinstance(error, ValueError)
