"""The real engine, wired for the simulation: one event loop, no threads, seeded where it draws.

``SimDatabase`` is ``Database`` itself — its ``__init__`` (meta store, state store,
catalog, table logs, writers, ``_recover``), DDL, FLUSH and log truncation all run
as in production. Only the factories it calls are swapped for the length of one
simulation (``patched``), to hand it the incarnation's pieces:

- ``meta_store_from_url`` → the fenced view of the durable ``MemoryMetaStore``;
- ``Database._open_state_store`` → a ``DurableStateStore`` over the fenced, faulty,
  retrying object store, recovered by the simulation (which checks it right after);
- ``StreamingManager`` → ``LoopStreaming``: the same blocking API over a
  ``StreamingRuntime`` on the incarnation's loop, which runs only inside those calls;
- ``TableLog`` → ``SimTableLog``: small segments (truncation really deletes files),
  no fsync, and nothing a dead incarnation can change;
- ``DataDirLock`` → the same lock, released when the incarnation dies (as the kernel
  releases a killed process's ``flock``).

Also: logs are truncated every 2 commits instead of 10, ``StateTable.write`` may raise the injected
``actor.error`` (an operator failing inside an actor), and DuckDB connections are
cursors of one in-memory database per configuration: opening a DuckDB database costs
35-70 ms, and every recovery rebuilds every operator's evaluator, so without this a
seed would spend most of its time there. A cursor has the database's configuration
and its own registered tables, which is all the engine relies on.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol, TypeVar
from unittest import mock

import duckdb
import pyarrow as pa

from sim.world import EngineStuck, FaultSwitch, Incarnation, InjectedOperatorError
from tidegate.common import duck as duck_module
from tidegate.common.chunk import Chunk
from tidegate.connectors.table_log import TableLog
from tidegate.meta import database as database_module
from tidegate.meta import runtime as runtime_module
from tidegate.meta.database import Database
from tidegate.meta.meta_store import MetaStore
from tidegate.meta.runtime import StreamingRuntime
from tidegate.meta.streaming import DDL_TIMEOUT_S, StreamingManager
from tidegate.state import store as store_module
from tidegate.state.durable_store import DurableStateStore
from tidegate.state.state_table import StateTable

__all__ = ["LoopStreaming", "SimDatabase", "SimTableLog", "patched"]

T = TypeVar("T")

LOG_SEGMENT_BYTES_MAX = 2048
LOG_TRUNCATE_EVERY_COMMITS = 2
# A call that has not finished after this long (virtual time: no wall time passes) means the engine is stuck.
STUCK_AFTER_S = 600.0


class Opener(FaultSwitch, Protocol):
    """What the simulation provides to the engine's factories."""

    @property
    def live_incarnation(self) -> Incarnation: ...

    def open_meta_store(self) -> MetaStore: ...

    def open_state_store(self) -> DurableStateStore: ...

    def open_streaming(self, store: DurableStateStore, checked: bool) -> StreamingManager: ...

    def at_death(self, release: Callable[[], None]) -> None:
        """Release something the incarnation holds when it dies (as the kernel closes a dead process's files)."""


class LoopStreaming(StreamingManager):
    """``StreamingManager``'s blocking API over a loop the caller owns (and runs only inside these calls)."""

    def __init__(self, runtime: StreamingRuntime, loop: asyncio.AbstractEventLoop) -> None:
        self.store = runtime.store
        self.runtime = runtime
        self._loop = loop

    def _run_coroutine(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = DDL_TIMEOUT_S) -> T:
        try:
            return self._loop.run_until_complete(asyncio.wait_for(coroutine, STUCK_AFTER_S))
        except TimeoutError as error:
            raise EngineStuck(f"the engine is stuck: the call did not finish in {STUCK_AFTER_S} s") from error
        finally:
            if inspect.getcoroutinestate(coroutine) == inspect.CORO_CREATED:
                coroutine.close()  # the loop died before starting it: no "never awaited" warning

    def close(self) -> None:
        """The simulation tears the loop down itself (or crashes it)."""


class SimDatabase(Database):
    """``Database`` (checked operators, no fsync) whose state store the simulation opens."""

    def __init__(self, data_dir: Path, opener: Opener) -> None:
        self._opener = opener
        super().__init__(data_dir, checked=True, fsync=False)

    def _open_state_store(self, url: str | None, cache_budget_bytes: int | None = None) -> Any:
        return self._opener.open_state_store()


class SimTableLog(TableLog):
    """A table log with small segments that a dead incarnation can no longer change."""

    def __init__(self, path: Path, schema: pa.Schema, incarnation: Incarnation) -> None:
        super().__init__(path, schema, fsync=False, segment_bytes_max=LOG_SEGMENT_BYTES_MAX)
        self.incarnation = incarnation

    def append_many(self, chunks: list[Chunk]) -> int:
        self.incarnation.check_alive("table log append")
        return super().append_many(chunks)

    def truncate_before(self, offset: int) -> None:
        self.incarnation.check_alive("table log truncation")
        super().truncate_before(offset)


class _SharedDuckDB(ModuleType):
    """The ``duckdb`` module, except that ``connect`` hands out cursors of one database per configuration."""

    def __init__(self) -> None:
        super().__init__("duckdb")
        self._databases: dict[tuple[tuple[str, Any], ...], duckdb.DuckDBPyConnection] = {}

    def connect(self, database: str = ":memory:", *, config: dict[str, Any] | None = None) -> Any:
        assert database == ":memory:", database
        key = tuple(sorted((config or {}).items()))
        if key not in self._databases:
            self._databases[key] = duckdb.connect(config=dict(key))
        return self._databases[key].cursor()

    def __getattr__(self, name: str) -> Any:
        return getattr(duckdb, name)


_SHARED_DUCKDB = _SharedDuckDB()


@contextlib.contextmanager
def patched(opener: Opener, recovery_backoff_s: float | None = None) -> Iterator[None]:
    original_write = StateTable.write

    def write(table: StateTable, chunk: Chunk) -> None:
        if opener.reaches("actor.error"):
            raise InjectedOperatorError(f"injected failure writing state table {table.table_id}")
        original_write(table, chunk)

    def open_log(path: Path, schema: pa.Schema, *args: Any, **kwargs: Any) -> TableLog:
        table_log = SimTableLog(path, schema, opener.live_incarnation)
        opener.at_death(table_log.close)
        return table_log

    data_dir_lock = getattr(database_module, "DataDirLock", None)

    def lock_data_dir(data_dir: Path) -> Any:
        assert data_dir_lock is not None
        lock = data_dir_lock(data_dir)
        opener.at_death(lock.release)
        return lock

    def open_meta_store(*args: Any, **kwargs: Any) -> MetaStore:
        return opener.open_meta_store()

    def open_streaming(store: DurableStateStore, *args: Any, checked: bool = False, **kwargs: Any) -> StreamingManager:
        return opener.open_streaming(store, checked)

    with contextlib.ExitStack() as stack:
        for target, name, value in (
            (StateTable, "write", write),
            (database_module, "TableLog", open_log),
            (database_module, "meta_store_from_url", open_meta_store),
            (database_module, "StreamingManager", open_streaming),
            (database_module, "LOG_TRUNCATE_EVERY_COMMITS", LOG_TRUNCATE_EVERY_COMMITS),
            (duck_module, "duckdb", _SHARED_DUCKDB),
            (store_module, "duckdb", _SHARED_DUCKDB),
        ):
            stack.enter_context(mock.patch.object(target, name, value))
        if data_dir_lock is not None:
            stack.enter_context(mock.patch.object(database_module, "DataDirLock", lock_data_dir))
        if recovery_backoff_s is not None:
            stack.enter_context(mock.patch.object(runtime_module, "RECOVERY_BACKOFF_S", recovery_backoff_s))
        yield
