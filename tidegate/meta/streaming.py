"""The streaming manager: builds, starts and stops the actors of every relation.

It owns the stream loop (one asyncio loop in its own thread, where every actor
and the barrier coordinator run) and offers blocking calls to the sessions:
each DDL becomes a barrier mutation and returns once the barrier carrying it is
committed, so a job is fully there or not at all from any reader's view.

This release runs one actor per relation: a table's actor is its log source
followed by Materialize; a view's actor is its operator chain (fed by the
actors of the relations it reads) followed by Materialize.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pyarrow as pa

from tidegate.common.epoch import EpochGenerator, WallClock
from tidegate.meta.barrier import BarrierCoordinator, Command
from tidegate.meta.catalog import Relation, RelationKind
from tidegate.state.state_table import StateTable
from tidegate.state.store import StateStore
from tidegate.stream.actor import Actor, Dispatcher
from tidegate.stream.builder import BuildContext, build, materialized_table_id
from tidegate.stream.channel import Channel
from tidegate.stream.messages import AddMutation, BarrierKind, StopMutation
from tidegate.stream.operators.materialize import Materialize
from tidegate.stream.operators.table_source import OFFSET_SCHEMA, TableSource

T = TypeVar("T")
DDL_TIMEOUT_S = 600.0


def storage_schema(relation: Relation) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in relation.columns])


@dataclass
class _Job:
    relation: Relation
    actor: Actor
    task: asyncio.Task[None] | None = None
    table_ids: list[int] = field(default_factory=list)
    # The channel each upstream relation feeds this job's actor through.
    inputs: dict[int, Channel] = field(default_factory=dict)


class StreamingManager:
    def __init__(self, store: StateStore, barrier_interval_ms: int = 1000, checked: bool = False) -> None:
        self.store = store
        self.checked = checked
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tidegate-stream", daemon=True)
        self._thread.start()
        self.coordinator = BarrierCoordinator(
            store, EpochGenerator(WallClock(), store.max_committed_epoch), barrier_interval_ms
        )
        self._jobs: dict[int, _Job] = {}
        self._run_coroutine(self._start_coordinator())

    async def _start_coordinator(self) -> None:
        self._coordinator_task = asyncio.get_running_loop().create_task(self.coordinator.run())

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
        return self._run_coroutine(self._submit(Command()))

    def create_jobs(self, relations: list[Relation], logs: dict[int, Any], *, backfill: bool) -> int:
        """Start the actors of ``relations`` (in dependency order) at one barrier."""
        return self._run_coroutine(self._create(relations, logs, backfill))

    def drop_jobs(self, relation_ids: list[int]) -> None:
        self._run_coroutine(self._drop(relation_ids))

    def close(self) -> None:
        async def stop() -> None:
            self.coordinator.stop()
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

    # ---- on the stream loop -----------------------------------------------
    async def _submit(self, command: Command) -> int:
        return await self.coordinator.submit(command)

    async def _create(self, relations: list[Relation], logs: dict[int, Any], backfill: bool) -> int:
        new_sources: dict[int, Any] = {}
        outputs: dict[int, list[Any]] = {}
        jobs: list[_Job] = []
        schemas = {r.id: storage_schema(r) for r in relations}
        for job in self._jobs.values():
            schemas[job.relation.id] = storage_schema(job.relation)
        pending: dict[int, _Job] = {}
        for relation in relations:
            job = self._build_job(relation, logs.get(relation.id), schemas, backfill, new_sources)
            jobs.append(job)
            pending[relation.id] = job
            for upstream_id, channel in job.inputs.items():
                if upstream_id in pending:
                    # Built in this same command: wire directly, no mutation needed.
                    pending[upstream_id].actor.dispatcher.outputs.append((relation.id, channel))
                else:
                    outputs.setdefault(upstream_id, []).append((relation.id, channel))
        for job in jobs:
            self._jobs[job.relation.id] = job
            job.task = asyncio.get_running_loop().create_task(job.actor.run(), name=job.actor.name)
        mutation = AddMutation(outputs=outputs, added_actors=frozenset(j.relation.id for j in jobs))
        kind = BarrierKind.CHECKPOINT if backfill else BarrierKind.INITIAL
        command = Command(
            mutation=mutation, new_sources=new_sources, new_actors={j.relation.id for j in jobs}, kind=kind
        )
        return await self._submit(command)

    def _build_job(
        self,
        relation: Relation,
        log: Any,
        schemas: dict[int, pa.Schema],
        backfill: bool,
        new_sources: dict[int, Any],
    ) -> _Job:
        schema = schemas[relation.id]
        materialized = StateTable(self.store, materialized_table_id(relation.id), schema, relation.pk)
        table_ids = [materialized.table_id]
        inputs: dict[int, Channel] = {}
        if relation.kind is RelationKind.TABLE:
            assert log is not None, relation.name
            offsets = StateTable(self.store, materialized.table_id | 1, OFFSET_SCHEMA, [0])
            table_ids.append(offsets.table_id)
            source = TableSource(log, offsets, schema, relation.id)
            new_sources[relation.id] = source.inject
            root = Materialize(source, materialized)
        else:
            ctx = BuildContext(
                store=self.store,
                relation_id=relation.id,
                actor_id=relation.id,
                relation_schemas=schemas,
                backfill=backfill,
                checked=self.checked,
            )
            chain = build(relation.plan["stream"], ctx)
            root = Materialize(chain, materialized)
            inputs = ctx.inputs
            table_ids += [(relation.id << 16) | n for n in range(1, ctx._next_state_table)]
        actor = Actor(relation.id, root, Dispatcher(relation.id), self.coordinator, name=relation.name)
        return _Job(relation, actor, table_ids=table_ids, inputs=inputs)

    async def _drop(self, relation_ids: list[int]) -> None:
        stopping = frozenset(i for i in relation_ids if i in self._jobs)
        if not stopping:
            return
        await self._submit(Command(mutation=StopMutation(stopping)))
        for relation_id in stopping:
            job = self._jobs.pop(relation_id)
            if job.task is not None:
                await asyncio.wait({job.task}, timeout=10)
            for table_id in job.table_ids:
                self.store.drop_table(table_id)
