"""The streaming manager: runs the streaming runtime on a loop thread of its own.

Sessions call it from their own threads. Each call is a coroutine of
``StreamingRuntime`` run on the stream loop; each DDL becomes a barrier
mutation and returns once the barrier carrying it is committed, so a job is
fully there or not at all from any reader's view.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from tidegate.connectors.read_positions import ReadPositions
from tidegate.connectors.sink_target import SinkSpec, SinkTarget
from tidegate.meta.barrier import BarrierCoordinator
from tidegate.meta.catalog import Relation
from tidegate.meta.runtime import JobFailure, StreamingRuntime, storage_schema
from tidegate.state.store import StateStore

__all__ = ["StreamingManager", "storage_schema"]

T = TypeVar("T")
DDL_TIMEOUT_S = 600.0


class StreamingManager:
    def __init__(
        self,
        store: StateStore,
        barrier_interval_ms: int = 1000,
        checked: bool = False,
        operator_cache_bytes: int | None = None,
        positions: ReadPositions | None = None,
        make_sink_target: Callable[[SinkSpec], SinkTarget] | None = None,
    ) -> None:
        self.store = store
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tidegate-stream", daemon=True)
        self._thread.start()
        self.runtime = StreamingRuntime(
            store,
            barrier_interval_ms,
            checked=checked,
            operator_cache_bytes=operator_cache_bytes,
            positions=positions,
            make_sink_target=make_sink_target,
        )
        self._run_coroutine(self.runtime.start())

    @property
    def coordinator(self) -> BarrierCoordinator:
        return self.runtime.coordinator

    def _run_coroutine(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = DDL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout_s)

    # ---- settings ---------------------------------------------------------
    @property
    def barrier_interval_ms(self) -> int:
        return self.coordinator.barrier_interval_ms

    def set_barrier_interval_ms(self, value: int) -> None:
        self.coordinator.barrier_interval_ms = value

    # ---- blocking API for sessions ----------------------------------------
    def flush(self) -> int:
        """Force a checkpoint and wait for its commit; returns the committed epoch."""
        return self._run_coroutine(self.runtime.flush())

    def create_jobs(self, relations: list[Relation], logs: dict[int, Any], *, backfill: bool) -> int:
        """Start the actors of ``relations`` (in dependency order) at one barrier."""
        return self._run_coroutine(self.runtime.create(relations, logs, backfill))

    def drop_jobs(self, relation_ids: list[int]) -> list[int]:
        """Stop the jobs; returns their state table ids (see ``StreamingRuntime.drop``)."""
        return self._run_coroutine(self.runtime.drop(relation_ids))

    def failure_of(self, relation_id: int) -> JobFailure | None:
        """Why the relation's job stopped for good, or None while it runs."""
        return self.runtime.relation_failure(relation_id)

    def close(self) -> None:
        async def stop() -> None:
            await self.runtime.stop()
            # Whatever else waits on this loop (a source's pending barrier wait) ends with it.
            current = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks() if t is not current]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        if self._loop.is_running():
            try:
                self._run_coroutine(stop(), 10)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(10)
                self.coordinator.shutdown_executor()
