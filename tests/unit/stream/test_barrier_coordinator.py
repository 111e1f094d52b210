"""BarrierCoordinator (meta/barrier.py), driven directly on an asyncio loop.

Fake sources record the barriers injected into them; the test plays the actors by
calling ``collect`` in whatever order it likes. The interval is long, so barriers
are injected only for submitted commands.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tidegate.common.epoch import EpochGenerator
from tidegate.errors import InternalError
from tidegate.meta.barrier import BarrierCoordinator, Command
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, StopMutation

NEVER_MS = 3_600_000


class SteppingClock:
    def __init__(self) -> None:
        self.ms = 1_000

    def now_ms(self) -> int:
        self.ms += 1
        return self.ms


class RecordingStore(MemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.commits: list[int] = []

    def commit_epoch(self, epoch: int) -> None:
        self.commits.append(epoch)
        super().commit_epoch(epoch)


class Harness:
    def __init__(self) -> None:
        self.store = RecordingStore()
        self.coordinator = BarrierCoordinator(self.store, EpochGenerator(SteppingClock()), NEVER_MS)
        self.injected: dict[int, list[Barrier]] = {}

    def source(self, actor_id: int) -> Callable[[Barrier], None]:
        self.injected[actor_id] = []
        return self.injected[actor_id].append

    async def inject(self, command: Command) -> tuple[asyncio.Future[int], Barrier]:
        """Submit ``command`` and wait until its barrier reached the sources."""
        before = self.coordinator.last_injected
        done = self.coordinator.submit(command)
        await until(lambda: self.coordinator.last_injected != before or done.done())
        return done, self._last_barrier()

    def _last_barrier(self) -> Barrier:
        return next(b[-1] for b in self.injected.values() if b)

    def collect_all(self, barrier: Barrier, actors: list[int]) -> None:
        for actor_id in actors:
            self.coordinator.collect(actor_id, barrier)


async def until(condition: Callable[[], bool], timeout_s: float = 2.0) -> None:
    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0)

    await asyncio.wait_for(poll(), timeout_s)


def with_coordinator(test: Callable[[Harness], Coroutine[Any, Any, None]]) -> None:
    async def go() -> None:
        harness = Harness()
        task = asyncio.create_task(harness.coordinator.run())
        try:
            await test(harness)
        finally:
            harness.coordinator.stop()
            await asyncio.wait_for(task, 2)

    asyncio.run(go())


async def start_two_actors(h: Harness) -> Barrier:
    """Actors 1 (a source) and 2 join with a first barrier that both collect."""
    done, first = await h.inject(Command(new_sources={1: h.source(1)}, new_actors={1, 2}))
    h.collect_all(first, [1, 2])
    await asyncio.wait_for(done, 1)
    return first


def test_epochs_commit_strictly_in_order_when_actors_collect_out_of_order() -> None:
    async def test(h: Harness) -> None:
        first = await start_two_actors(h)
        assert h.store.commits == []  # the first barrier completes nothing new (prev = 0)
        pending = [await h.inject(Command()) for _ in range(3)]
        (done1, b1), (done2, b2), (done3, b3) = pending
        assert b1.epoch.prev == first.epoch.curr
        assert b2.epoch.prev == b1.epoch.curr and b3.epoch.prev == b2.epoch.curr

        h.collect_all(b3, [2, 1])
        h.collect_all(b2, [1, 2])
        h.coordinator.collect(1, b1)
        await asyncio.sleep(0)
        assert h.store.commits == [] and h.store.max_committed_epoch == 0
        assert not (done1.done() or done2.done() or done3.done())

        h.coordinator.collect(2, b1)
        # Commits run off the loop (sync, then the version commit), one epoch at a time, in order.
        assert [await asyncio.wait_for(d, 2) for d in (done1, done2, done3)] == h.store.commits
        assert h.store.commits == [b1.epoch.prev, b2.epoch.prev, b3.epoch.prev]
        assert h.store.max_committed_epoch == b3.epoch.prev

    with_coordinator(test)


def test_a_barrier_waits_for_every_actor_that_existed_at_injection() -> None:
    async def test(h: Harness) -> None:
        await start_two_actors(h)
        done, b1 = await h.inject(Command(new_actors={3}))
        h.collect_all(b1, [1, 2])
        await asyncio.sleep(0)
        assert not done.done()
        h.coordinator.collect(3, b1)
        assert await asyncio.wait_for(done, 1) == b1.epoch.prev

    with_coordinator(test)


def test_stopped_actors_are_not_waited_for_after_their_stop_barrier() -> None:
    async def test(h: Harness) -> None:
        await start_two_actors(h)
        done, stop = await h.inject(Command(mutation=StopMutation(frozenset({2}))))
        h.collect_all(stop, [1, 2])  # the stop barrier itself still needs actor 2
        await asyncio.wait_for(done, 1)
        done, after = await h.inject(Command())
        h.coordinator.collect(1, after)
        assert await asyncio.wait_for(done, 1) == after.epoch.prev

    with_coordinator(test)


def test_without_actors_a_command_completes_at_once_with_the_committed_epoch() -> None:
    async def test(h: Harness) -> None:
        assert await asyncio.wait_for(h.coordinator.submit(Command()), 1) == 0
        assert h.injected == {}

    with_coordinator(test)


def test_collecting_an_unknown_barrier_raises() -> None:
    async def test(h: Harness) -> None:
        first = await start_two_actors(h)
        with pytest.raises(InternalError):
            h.coordinator.collect(1, first)  # already completed

    with_coordinator(test)


def test_an_actor_failure_fails_every_waiter_and_later_submissions() -> None:
    async def test(h: Harness) -> None:
        await start_two_actors(h)
        done1, b1 = await h.inject(Command())
        done2, _ = await h.inject(Command())
        h.collect_all(b1, [1])  # actor 2 fails before collecting
        h.coordinator.actor_failed(2, ValueError("boom"))
        for done in (done1, done2):
            with pytest.raises(InternalError, match="actor 2 failed"):
                await asyncio.wait_for(done, 1)
        with pytest.raises(InternalError, match="actor 2 failed"):
            await asyncio.wait_for(h.coordinator.submit(Command()), 1)
        assert h.store.commits == []

    with_coordinator(test)


def test_a_command_queued_before_an_actor_failure_fails_too() -> None:
    """Regression: run() used to inject such a command after the failure and never resolve it."""

    async def test(h: Harness) -> None:
        await start_two_actors(h)
        done = h.coordinator.submit(Command())  # queued; run() has not taken it yet
        h.coordinator.actor_failed(2, ValueError("boom"))
        with pytest.raises(InternalError, match="actor 2 failed"):
            await asyncio.wait_for(done, 0.5)

    with_coordinator(test)
