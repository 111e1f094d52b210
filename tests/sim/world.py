"""What survives a simulated crash, and the per-incarnation handles the engine gets to it.

A simulated tidegate process ("incarnation") talks to three durable things: the
object store (S3), the meta store (SQLite/PostgreSQL) and the table logs (files
in a per-seed directory). The first two are one ``MemoryObjectStore`` and one
``MemoryMetaStore`` that outlive every incarnation; each incarnation reaches them
only through the fenced wrappers below. A crash marks the incarnation dead
first, so whatever of its code still runs while it is torn down (a ``finally``,
an ``except BaseException``) cannot change durable state: a killed process
writes nothing either.

The wrappers are also where crash points of the checkpoint protocol live (an
SST upload, the version commit, a garbage-collecting delete, a restoring read):
they ask the simulation whether an armed point fires here. Errors (as opposed
to crashes) are injected by the real ``FaultyObjectStore`` stacked above.

Also here: the event loop with virtual time, the seeded clock that epochs come
from, and the executor that runs checkpoint uploads on the loop's own thread.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import selectors
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, NoReturn, Protocol, TypeVar

from tidegate.errors import InternalError
from tidegate.meta.meta_store import MemoryMetaStore, MetaStore
from tidegate.state import durable_store
from tidegate.state.object_store import MemoryObjectStore, ObjectStore

T = TypeVar("T")

# The meta store key of the committed version, and its SSTs' prefix in the object store.
VERSION_KEY: str = getattr(durable_store, "VERSION_KEY", "state.version")
SST_PREFIX: str = getattr(durable_store, "SST_PREFIX", "sst/")


class SimulatedCrash(SystemExit):
    """The simulated process dies where this is raised.

    A ``SystemExit`` because asyncio re-raises it out of ``run_until_complete`` at
    once, from whichever task or callback raised it, without letting another
    callback of the loop run: the rest of the incarnation simply stops.
    """


class FencedOff(SimulatedCrash):
    """Code of a dead incarnation touched durable state (refused).

    A crash too, not an error: engine code that cleans up on the way out (``except
    BaseException: delete what I wrote; raise``) must not turn the crash into an error
    that something else catches and carries on from.
    """


class InjectedOperatorError(RuntimeError):
    """An operator failure the simulation made up (the runtime must recover from it)."""


class FaultSwitch(Protocol):
    """The simulation's side of a crash point: does an armed point fire here, and dying."""

    def reaches(self, point: str) -> bool: ...

    def crash(self, point: str) -> NoReturn: ...


class Incarnation:
    """One simulated process lifetime; ``alive`` turns False at its crash and never back."""

    def __init__(self, number: int) -> None:
        self.number = number
        self.alive = True

    def check_alive(self, what: str) -> None:
        if not self.alive:
            raise FencedOff(f"incarnation {self.number} is dead: {what} refused")


# ---- time and the checkpoint executor ------------------------------------------------------


class EngineStuck(AssertionError):
    """The loop has nothing to run and nothing scheduled, yet what it was asked to finish is not done."""


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock moves only when nothing is ready to run, and then straight to the next timer.

    Timers (the runtime's recovery backoff, a ``wait_for`` timeout) keep their real
    lengths and their order relative to other work, cost no wall time, and fire the
    same way on every run of a seed.
    """

    def __init__(self) -> None:
        self.virtual_s = 0.0
        super().__init__(selector=_AdvancingSelector(self))

    def time(self) -> float:
        return self.virtual_s


class _AdvancingSelector(selectors.BaseSelector):
    """Polls the real selector (the loop's self-pipe) without blocking; a wait advances virtual time instead."""

    def __init__(self, loop: VirtualTimeLoop) -> None:
        self._inner = selectors.DefaultSelector()
        self._loop = loop

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._inner.unregister(fileobj)

    def modify(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        return self._inner.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise EngineStuck("the event loop would wait forever: nothing is ready and no timer is set")
        if timeout > 0:
            self._loop.virtual_s += timeout
        return self._inner.select(0)

    def get_map(self) -> Any:
        return self._inner.get_map()

    def close(self) -> None:
        self._inner.close()


class SimClock:
    """Wall time that only the simulation moves; shared by every incarnation, like a host's clock."""

    def __init__(self, start_ms: int) -> None:
        self.ms = start_ms

    def now_ms(self) -> int:
        return self.ms

    def advance(self, ms: int) -> None:
        # May be negative: a restart on a host whose clock stepped back.
        self.ms += ms


class IncarnationClock:
    """The clock one runtime reads; a read is the first thing a barrier injection does."""

    def __init__(self, clock: SimClock, on_read: Callable[[], None]) -> None:
        self.clock = clock
        self.on_read = on_read

    def now_ms(self) -> int:
        self.on_read()
        return self.clock.ms


class LoopExecutor(concurrent.futures.Executor):
    """Runs each submitted call on the submitting (event loop) thread, now or a few callbacks later.

    ``delay_hops`` draws how many loop callbacks to wait first: 0 runs the call inside
    ``submit`` (inline); more lets actors run the next epoch while the upload is
    "in flight", as the production thread would. A ``SimulatedCrash`` raised by the
    call escapes at once (the process dies in the upload); any other error goes to
    the future, as a thread pool would report it.
    """

    def __init__(self, delay_hops: Callable[[], int]) -> None:
        self.delay_hops = delay_hops

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        hops = self.delay_hops()
        if hops == 0:
            _run_into(future, fn, args, kwargs)
        else:
            loop = asyncio.get_running_loop()
            loop.call_soon(_after_hops, loop, hops - 1, future, fn, args, kwargs)
        return future


def _after_hops(
    loop: asyncio.AbstractEventLoop,
    hops: int,
    future: concurrent.futures.Future[Any],
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    if hops:
        loop.call_soon(_after_hops, loop, hops - 1, future, fn, args, kwargs)
    else:
        _run_into(future, fn, args, kwargs)


def _run_into(
    future: concurrent.futures.Future[Any], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        result = fn(*args, **kwargs)
    except Exception as error:
        future.set_exception(error)
    else:
        future.set_result(result)


# ---- durable storage, fenced per incarnation -------------------------------------------------


class FencedObjectStore(ObjectStore):
    """The durable object store as one incarnation sees it, with the object-store crash points.

    Crash points: ``crash.mid_upload`` right after a put landed (the object exists,
    nothing references it yet), ``crash.mid_delete`` right before a delete (garbage
    collection or compaction half done), ``crash.recovery_read`` right before a read
    (restoring state from SSTs).
    """

    def __init__(self, inner: MemoryObjectStore, incarnation: Incarnation, switch: FaultSwitch) -> None:
        self.inner = inner
        self.incarnation = incarnation
        self.switch = switch

    def put(self, path: str, data: bytes) -> None:
        self.incarnation.check_alive(f"put {path}")
        self.inner.put(path, data)
        if self.switch.reaches("crash.mid_upload"):
            self.switch.crash("crash.mid_upload")

    def get(self, path: str) -> bytes:
        self._before_read(path)
        return self.inner.get(path)

    def get_range(self, path: str, start: int, length: int) -> bytes:
        self._before_read(path)
        return self.inner.get_range(path, start, length)

    def size(self, path: str) -> int:
        self.incarnation.check_alive(f"size {path}")
        return self.inner.size(path)

    def delete(self, path: str) -> None:
        self.incarnation.check_alive(f"delete {path}")
        if self.switch.reaches("crash.mid_delete"):
            self.switch.crash("crash.mid_delete")
        self.inner.delete(path)

    def list(self, prefix: str) -> list[str]:
        self.incarnation.check_alive(f"list {prefix}")
        return self.inner.list(prefix)

    def _before_read(self, path: str) -> None:
        self.incarnation.check_alive(f"get {path}")
        if self.switch.reaches("crash.recovery_read"):
            self.switch.crash("crash.recovery_read")


class VersionLog(Protocol):
    """Told of every version the meta store durably holds (for the invariants)."""

    def version_written(self, text: str) -> None: ...


class FencedMetaStore(MetaStore):
    """The durable meta store as one incarnation sees it, with the version-commit faults.

    At a put of the committed version: ``crash.before_version_commit`` dies before
    it is written; ``version_commit.error`` fails it like a dropped database
    connection, either before the write or after it (the caller cannot tell
    whether it committed).
    """

    def __init__(
        self,
        inner: MemoryMetaStore,
        incarnation: Incarnation,
        switch: FaultSwitch,
        versions: VersionLog,
        error_after_write: Callable[[str], bool],
    ) -> None:
        self.inner = inner
        self.incarnation = incarnation
        self.switch = switch
        self.versions = versions
        self.error_after_write = error_after_write

    def load_relations(self) -> list[dict[str, Any]]:
        self.incarnation.check_alive("load_relations")
        return self.inner.load_relations()

    def put_relation(self, relation: dict[str, Any]) -> None:
        self.incarnation.check_alive("put_relation")
        self.inner.put_relation(relation)

    def delete_relations(self, ids: list[int]) -> None:
        self.incarnation.check_alive("delete_relations")
        self.inner.delete_relations(ids)

    def next_id(self) -> int:
        self.incarnation.check_alive("next_id")
        return self.inner.next_id()

    def get(self, key: str) -> str | None:
        self.incarnation.check_alive(f"get {key}")
        return self.inner.get(key)

    def put(self, key: str, value: str) -> None:
        self.incarnation.check_alive(f"put {key}")
        if key != VERSION_KEY:
            self.inner.put(key, value)
            return
        if self.switch.reaches("crash.before_version_commit"):
            self.switch.crash("crash.before_version_commit")
        failing = self.switch.reaches("version_commit.error")
        if failing and not self.error_after_write(value):
            raise InternalError("meta store: injected failure of the version commit (nothing written)")
        self.inner.put(key, value)
        self.versions.version_written(value)
        if failing:
            raise InternalError("meta store: injected failure of the version commit (it was written)")

    def delete(self, key: str) -> None:
        self.incarnation.check_alive(f"delete {key}")
        self.inner.delete(key)

    def transaction(self) -> AbstractContextManager[None]:
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self.incarnation.check_alive("transaction")
        with self.inner.transaction():
            yield

    def close(self) -> None:
        """The durable store outlives the incarnation; closing its handle closes nothing."""


def referenced_objects(version_text: str | None) -> set[str] | None:
    """Object paths the committed version lists, or None if its format is not one this reads."""
    if version_text is None:
        return set()
    try:
        version = json.loads(version_text)
        return {SST_PREFIX + str(sst["object_id"]) for sst in version["ssts"]}
    except (ValueError, KeyError, TypeError):
        return None


def committed_epoch_of(version_text: str) -> int | None:
    try:
        return int(json.loads(version_text)["max_committed_epoch"])
    except (ValueError, KeyError, TypeError):
        return None
