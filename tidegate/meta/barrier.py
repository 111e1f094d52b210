"""The barrier coordinator: injects barriers, collects them, commits epochs in order.

Runs on the stream loop (DESIGN §5). Every ``barrier_interval_ms`` — or at
once, for a FLUSH or a DDL command — it takes a new epoch and injects barrier
``(prev → curr)`` into every source actor. Each actor reports the barrier once
its dispatcher forwarded it. When every actor that existed at injection has
reported, epoch ``prev`` is complete: the coordinator commits it in the state
store (batch reads may now see it) and wakes whoever waited for it. Barriers
are pipelined, but commits happen strictly in epoch order.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tidegate.common.epoch import EpochGenerator, EpochPair
from tidegate.errors import InternalError
from tidegate.state.store import StateStore
from tidegate.stream.messages import Barrier, BarrierKind, Mutation, StopMutation

log = logging.getLogger(__name__)


class StreamingFailure(InternalError):
    """A barrier could not complete because an actor failed (the runtime recovers)."""


@dataclass
class Command:
    """A change injected with the next barrier; ``done`` resolves with the epoch it completed."""

    mutation: Mutation | None = None
    new_sources: dict[int, Callable[[Barrier], None]] = field(default_factory=dict)
    new_actors: set[int] = field(default_factory=set)
    kind: BarrierKind = BarrierKind.CHECKPOINT
    done: asyncio.Future[int] | None = None
    generation: int = -1  # the coordinator's generation when submitted (see ``reset``)


@dataclass
class _InFlight:
    barrier: Barrier
    remaining: set[int]
    waiters: list[asyncio.Future[int]]
    injected_at: float = 0.0
    collected_at: float = 0.0


@dataclass(frozen=True)
class CheckpointRecord:
    """One committed checkpoint, as ``tidegate_checkpoints`` shows it."""

    epoch: int
    duration_ms: float  # injection of the barrier to the version commit
    sync_ms: float  # building and uploading SSTs, and committing the version
    bytes_uploaded: int
    sst_count: int
    align_ms: float  # injection until every actor had passed the barrier


CHECKPOINT_HISTORY_MAX = 100


class BarrierCoordinator:
    def __init__(
        self,
        store: StateStore,
        epochs: EpochGenerator,
        barrier_interval_ms: int,
        executor: concurrent.futures.Executor | None = None,
    ) -> None:
        self.store = store
        self.epochs = epochs
        self.barrier_interval_ms = barrier_interval_ms
        # Every how many timed barriers one is a checkpoint; the others only seal their epoch.
        self.checkpoint_frequency = 1
        self._barriers_since_checkpoint = 0
        self.sources: dict[int, Callable[[Barrier], None]] = {}
        self.actors: set[int] = set()
        self.failure: BaseException | None = None
        self._last_curr = store.max_committed_epoch
        self._inflight: collections.deque[_InFlight] = collections.deque()
        self._commands: asyncio.Queue[Command] = asyncio.Queue()
        self._stopped = False
        self._generation = 0  # bumped by every reset
        self._failed_actor: int | None = None
        self._collected: asyncio.Queue[_InFlight] = asyncio.Queue()
        self._committer: asyncio.Task[None] | None = None
        # One thread: uploads and version commits happen one checkpoint at a time, in order.
        self._executor = executor or concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="tidegate-checkpoint")
        self.checkpoints: collections.deque[CheckpointRecord] = collections.deque(maxlen=CHECKPOINT_HISTORY_MAX)
        # Called with each committed epoch (log truncation, sink delivery).
        self.on_commit: list[Callable[[int], None]] = []
        # Called on the stream loop when an actor fails (the runtime recovers).
        self.on_failure: Callable[[int, BaseException], None] | None = None

    async def run(self) -> None:
        while not self._stopped:
            timeout = self.barrier_interval_ms / 1000
            try:
                command = await asyncio.wait_for(self._commands.get(), timeout)
            except TimeoutError:
                self._barriers_since_checkpoint += 1
                if self._barriers_since_checkpoint >= self.checkpoint_frequency:
                    command = Command()
                else:
                    command = Command(kind=BarrierKind.BARRIER)
            if self._stopped:
                if command.done is not None and not command.done.done():
                    command.done.set_exception(InternalError("tidegate is shutting down"))
                break
            if 0 <= command.generation != self._generation:
                # Submitted before a recovery reset the engine it was meant for.
                if command.done is not None and not command.done.done():
                    command.done.set_exception(StreamingFailure("tidegate recovered from a failure; retry"))
                continue
            if self.failure is not None:
                if command.done is not None and not command.done.done():
                    command.done.set_exception(self._failure_error())
                continue
            if not self.actors and not command.new_actors:
                if command.done is not None:
                    command.done.set_result(self.store.max_committed_epoch)
                continue
            self._inject(command)

    def submit(self, command: Command) -> asyncio.Future[int]:
        """Queue a command for the next barrier (call on the stream loop)."""
        if command.done is None:
            command.done = asyncio.get_running_loop().create_future()
        command.generation = self._generation
        if self.failure is not None:
            command.done.set_exception(self._failure_error())
            return command.done
        self._commands.put_nowait(command)
        return command.done

    def shutdown_executor(self) -> None:
        """Wait for an upload or version commit in progress to finish (never abandon one halfway)."""
        self._executor.shutdown(wait=True)

    def stop(self) -> None:
        self._stopped = True
        self._commands.put_nowait(Command())

    async def wait_committer(self) -> None:
        """Wait until every collected epoch has been committed (or has failed to)."""
        while self._committer is not None and not self._committer.done():
            await asyncio.gather(self._committer, return_exceptions=True)

    def reset(self, committed_epoch: int) -> None:
        """Forget every actor, source and barrier in flight: the runtime rebuilds the jobs (recovery)."""
        self._generation += 1
        for inflight in self._inflight:
            for waiter in inflight.waiters:
                if not waiter.done():
                    waiter.set_exception(StreamingFailure("tidegate recovered from a failure; retry"))
        self._inflight.clear()
        # Commands queued before the recovery would be answered by an engine that no longer runs.
        while not self._commands.empty():
            command = self._commands.get_nowait()
            if command.done is not None and not command.done.done():
                command.done.set_exception(StreamingFailure("tidegate recovered from a failure; retry"))
        self.sources.clear()
        self.actors.clear()
        self.failure = None
        self._failed_actor = None
        self._last_curr = committed_epoch

    def _inject(self, command: Command) -> None:
        if command.kind is not BarrierKind.BARRIER:
            self._barriers_since_checkpoint = 0
        curr = self.epochs.next()
        barrier = Barrier(EpochPair(curr, self._last_curr), command.kind, command.mutation)
        self._last_curr = curr
        self.sources.update(command.new_sources)
        expected = self.actors | command.new_actors
        waiters = [command.done] if command.done is not None else []
        self._inflight.append(_InFlight(barrier, set(expected), waiters, injected_at=time.monotonic()))
        self.actors = set(expected)
        if isinstance(command.mutation, StopMutation):
            self.actors -= command.mutation.actors
        for actor_id, inject in list(self.sources.items()):
            inject(barrier)
            if barrier.stops(actor_id):
                del self.sources[actor_id]

    # ---- called by actors -----------------------------------------------
    def collect(self, actor_id: int, barrier: Barrier) -> None:
        for inflight in self._inflight:
            if inflight.barrier.epoch.curr == barrier.epoch.curr:
                inflight.remaining.discard(actor_id)
                break
        else:
            raise InternalError(f"actor {actor_id} collected unknown barrier {barrier.epoch}")
        self._complete_ready()

    def actor_failed(self, actor_id: int, error: BaseException) -> None:
        if self.failure is not None:
            return  # the first failure already stopped this round; recovery restarts every actor
        self.failure = error
        self._failed_actor = actor_id
        failure = self._failure_error()
        while self._inflight:
            for waiter in self._inflight.popleft().waiters:
                if not waiter.done():
                    waiter.set_exception(failure)
        if self.on_failure is not None:
            self.on_failure(actor_id, error)

    def _failure_error(self) -> StreamingFailure:
        return StreamingFailure(
            f"streaming actor {self._failed_actor} failed: {self.failure!r}; tidegate recovers from the last checkpoint"
        )

    def _complete_ready(self) -> None:
        while self._inflight and not self._inflight[0].remaining:
            done = self._inflight.popleft()
            done.collected_at = time.monotonic()
            self._collected.put_nowait(done)
            if self._committer is None or self._committer.done():
                self._committer = asyncio.get_running_loop().create_task(self._commit_collected())

    async def _commit_collected(self) -> None:
        """Sync and commit collected epochs strictly in order, off the stream loop's thread."""
        loop = asyncio.get_running_loop()
        while not self._collected.empty():
            done = self._collected.get_nowait()
            completed = done.barrier.epoch.prev
            try:
                if completed > self.store.max_committed_epoch and done.barrier.is_checkpoint:
                    started = time.monotonic()
                    ssts = await loop.run_in_executor(self._executor, self.store.sync, completed)
                    await loop.run_in_executor(self._executor, self.store.commit_version, completed, ssts)
                    self.checkpoints.append(
                        CheckpointRecord(
                            epoch=completed,
                            duration_ms=(time.monotonic() - done.injected_at) * 1000,
                            sync_ms=(time.monotonic() - started) * 1000,
                            bytes_uploaded=sum(getattr(s, "size_bytes", 0) for s in ssts),
                            sst_count=len(ssts),
                            align_ms=(done.collected_at - done.injected_at) * 1000,
                        )
                    )
                    for hook in self.on_commit:
                        hook(completed)
                    await loop.run_in_executor(self._executor, self.store.maintain, completed)
            except Exception as error:  # a checkpoint that cannot complete commits nothing
                log.exception("checkpoint of epoch %d failed", completed)
                failure = InternalError(f"checkpoint of epoch {completed} failed: {error}")
                for waiter in done.waiters:
                    if not waiter.done():
                        waiter.set_exception(failure)
                continue
            for waiter in done.waiters:
                if not waiter.done():
                    waiter.set_result(completed)

    @property
    def last_injected(self) -> int:
        return self._last_curr
