"""The streaming runtime: the actors of every job and the barrier coordinator, on one event loop.

Everything here is a coroutine on the caller's event loop. ``StreamingManager``
runs it on a loop thread of its own and offers blocking calls to sessions; the
deterministic simulation (tests/sim) drives it directly on a single loop with
an inline checkpoint executor and a fake clock.

This release runs one actor per relation: a table's actor is its log source
followed by Materialize; a view's actor is its operator tree (fed by the
actors of the relations it reads, one channel per scan, and by a reader or
generator of its own for each source it reads) followed by Materialize; a
table fed by a connector is built like a view over it; a sink's actor is its
operator tree followed by Sink, with a ``SinkDelivery`` (its own thread) that
the runtime keeps across recoveries and tells about every checkpoint commit.
A source relation has no actor. Each job runs with the delivery guarantee it
was created with (``Relation.guarantee``).

Recovery at run time (DESIGN §5 step 6): when an actor fails, every actor is
stopped, epochs that were collected everywhere are still committed, the state
store forgets everything sealed after the last committed epoch, and all jobs
are rebuilt: operators read their state at the committed epoch and sources
seek to their committed offsets. A job that fails again and again is not
retried forever: after ``MAX_FAILURES`` failures without a checkpoint in
between it is stopped with its dependents and reported with its error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tidegate.common.epoch import Clock, EpochGenerator, WallClock
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.connectors.read_positions import ReadPositions
from tidegate.connectors.sink_target import SinkSpec, SinkTarget
from tidegate.meta.barrier import BarrierCoordinator, Command, StreamingFailure
from tidegate.meta.catalog import Relation, RelationKind
from tidegate.meta.sink_delivery import SinkDelivery, SinkStatus, sink_spec
from tidegate.state.state_table import StateTable
from tidegate.state.store import StateStore
from tidegate.stream.actor import Actor, Dispatcher
from tidegate.stream.builder import BuildContext, build, materialized_table_id
from tidegate.stream.channel import Channel
from tidegate.stream.messages import AddMutation, Barrier, BarrierKind, StopMutation
from tidegate.stream.operators.generator_source import GeneratingSource
from tidegate.stream.operators.materialize import Materialize
from tidegate.stream.operators.sink import LOG_STORE_PK, LOG_STORE_SCHEMA, Sink
from tidegate.stream.operators.table_source import OFFSET_SCHEMA, TableSource
from tidegate.stream.watermark import WATERMARK_STATE_SCHEMA, WatermarkGenerator, WatermarkSpec, value_to_micros

log = logging.getLogger(__name__)

NOT_AN_ACTOR = -1  # a failure no actor caused (a checkpoint of a CREATE): nothing to count
# A job that fails this many times with no checkpoint committed in between is stopped.
MAX_FAILURES = 3
RECOVERY_BACKOFF_S = 0.1


def _inject_all(injects: list[Callable[[Barrier], None]]) -> Callable[[Barrier], None]:
    if len(injects) == 1:
        return injects[0]

    def inject(barrier: Barrier) -> None:
        for one in injects:
            one(barrier)

    return inject


def storage_schema(relation: Relation) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in relation.columns])


@dataclass
class _Job:
    relation: Relation
    actor: Actor
    task: asyncio.Task[None] | None = None
    table_ids: list[int] = field(default_factory=list)
    # Per scan: the upstream relation and the channel it feeds this job's actor through.
    inputs: list[tuple[int, Channel]] = field(default_factory=list)
    log: Any = None  # a table's log
    # Set once the barrier that added the job committed; recovery rebuilds only created jobs.
    created: bool = False
    # A view's backfill is committed by the first checkpoint after the epoch that added it; until
    # then (this is that epoch) recovery must backfill it again.
    backfill_until: int | None = None
    # The generators the job runs itself, with the source relation each one generates.
    sources: list[tuple[int, GeneratingSource]] = field(default_factory=list)
    # The watermark generators the job runs (its table's, its sources'), with the relation of each.
    watermarks: list[tuple[int, WatermarkGenerator]] = field(default_factory=list)
    # Per Kafka or file source the job reads: the source and its error table's id.
    error_tables: list[tuple[int, int]] = field(default_factory=list)


@dataclass(frozen=True)
class JobFailure:
    """Why a relation's job stopped for good (until restart or DROP)."""

    relation_id: int
    error: str
    at: float


@dataclass(frozen=True)
class SourceProgress:
    """How far one source of a running view has generated, as ``tidegate_source_progress`` shows it."""

    view_id: int
    source_id: int
    next_offset: int  # the event (datagen: row) number the source generates next
    # The first event number + nexmark.event.num (datagen: the row count); None for an unbounded source.
    end_offset: int | None


@dataclass(frozen=True)
class WatermarkProgress:
    """One running watermark generator, as ``tidegate_watermarks`` shows it."""

    job_id: int  # the table, or the view whose job runs the source
    relation_id: int  # the table or source that declares the watermark
    value_us: int | None  # the current watermark in microseconds since 1970; None before any row
    late_rows: int  # rows dropped as late since the job (re)started


class StreamingRuntime:
    def __init__(
        self,
        store: StateStore,
        barrier_interval_ms: int = 1000,
        *,
        checked: bool = False,
        clock: Clock | None = None,
        executor: concurrent.futures.Executor | None = None,
        operator_cache_bytes: int | None = None,
        positions: ReadPositions | None = None,
        make_sink_target: Callable[[SinkSpec], SinkTarget] | None = None,
    ) -> None:
        """``positions``: where at_most_once sources keep their read positions (memory if None);
        ``make_sink_target``: the sinks' targets (``tidegate.connectors.sinks.make_sink_target``)."""
        self.store = store
        self.checked = checked
        self.operator_cache_bytes = operator_cache_bytes
        self.positions = positions or ReadPositions(None)
        self._make_sink_target = make_sink_target
        self._sinks: dict[int, SinkDelivery] = {}  # kept across recoveries; closed by drop and stop
        self.coordinator = BarrierCoordinator(
            store, EpochGenerator(clock or WallClock(), store.max_committed_epoch), barrier_interval_ms, executor
        )
        self.coordinator.on_failure = self._on_actor_failure
        self.coordinator.on_commit.append(self._on_commit)
        self.failed: dict[int, JobFailure] = {}
        self.recoveries = 0
        self._jobs: dict[int, _Job] = {}
        self._failures: dict[int, int] = {}  # relation id -> failures since the last checkpoint
        self._coordinator_task: asyncio.Task[None] | None = None
        self._recovering: asyncio.Task[None] | None = None
        self._pending_failure: tuple[int, BaseException] | None = None

    async def start(self) -> None:
        self._coordinator_task = asyncio.get_running_loop().create_task(self.coordinator.run())

    async def stop(self) -> None:
        """Stop the coordinator and every actor (a commit in progress finishes first)."""
        self.coordinator.stop()
        tasks = [j.task for j in self._jobs.values() if j.task is not None]
        if self._recovering is not None:
            tasks.append(self._recovering)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._coordinator_task is not None:
            await asyncio.gather(self._coordinator_task, return_exceptions=True)
        await self.coordinator.wait_committer()
        sinks, self._sinks = list(self._sinks.values()), {}
        for delivery in sinks:
            await asyncio.get_running_loop().run_in_executor(None, delivery.close)

    # ---- commands -----------------------------------------------------------
    async def submit(self, command: Command) -> int:
        if self._recovering is not None:
            await asyncio.shield(self._recovering)
        return await self.coordinator.submit(command)

    async def flush(self) -> int:
        """Force a checkpoint and wait for its commit; returns the committed epoch.

        A failure that recovery repairs is not the caller's problem: the flush is retried after it.
        """
        for _ in range(MAX_FAILURES):
            try:
                return await self.submit(Command())
            except StreamingFailure:
                if self._recovering is None:
                    raise
        return await self.submit(Command())

    async def create(self, relations: list[Relation], logs: dict[int, Any], backfill: bool) -> int:
        """Start the actors of ``relations`` (in dependency order) at one barrier."""
        if self._recovering is not None:
            await asyncio.shield(self._recovering)
        kind = BarrierKind.CHECKPOINT if backfill else BarrierKind.INITIAL
        command = self._create_command(relations, logs, {r.id for r in relations} if backfill else set(), kind)
        try:
            epoch = await self.coordinator.submit(command)
        except BaseException as error:
            # Not created: recovery must not rebuild these jobs. The coordinator and the upstream
            # dispatchers already expect them, so the others are rebuilt without them.
            for relation in relations:
                job = self._jobs.pop(relation.id, None)
                if job is not None and job.task is not None:
                    job.task.cancel()
            if self._recovering is None and not isinstance(error, asyncio.CancelledError):
                self._pending_failure = (NOT_AN_ACTOR, error)
                self._recovering = asyncio.get_running_loop().create_task(self._recover_loop())
            raise
        for relation in relations:
            if relation.id in self._jobs:
                self._jobs[relation.id].created = True
                if backfill:
                    self._jobs[relation.id].backfill_until = epoch
        return epoch

    def _create_command(
        self, relations: list[Relation], logs: dict[int, Any], backfill: set[int], kind: BarrierKind
    ) -> Command:
        new_sources: dict[int, Any] = {}
        outputs: dict[int, list[Any]] = {}
        jobs: list[_Job] = []
        schemas = {r.id: storage_schema(r) for r in relations}
        for job in self._jobs.values():
            schemas[job.relation.id] = storage_schema(job.relation)
        pending: dict[int, _Job] = {}
        for relation in relations:
            job = self._build_job(relation, logs.get(relation.id), schemas, relation.id in backfill, new_sources)
            jobs.append(job)
            pending[relation.id] = job
            for upstream_id, channel in job.inputs:
                if upstream_id in pending:
                    # Built in this same command: wire directly, no mutation needed.
                    pending[upstream_id].actor.dispatcher.outputs.append((relation.id, channel))
                else:
                    outputs.setdefault(upstream_id, []).append((relation.id, channel))
        for job in jobs:
            self._jobs[job.relation.id] = job
            job.task = asyncio.get_running_loop().create_task(job.actor.run(), name=job.actor.name)
        mutation = AddMutation(outputs=outputs, added_actors=frozenset(j.relation.id for j in jobs))
        return Command(mutation=mutation, new_sources=new_sources, new_actors={j.relation.id for j in jobs}, kind=kind)

    def _build_job(
        self,
        relation: Relation,
        log: Any,
        schemas: dict[int, pa.Schema],
        backfill: bool,
        new_sources: dict[int, Any],
    ) -> _Job:
        schema = schemas[relation.id]
        storage = materialized_table_id(relation.id)
        inputs: list[tuple[int, Channel]] = []
        sources: list[tuple[int, GeneratingSource]] = []
        watermarks: list[tuple[int, WatermarkGenerator]] = []
        error_tables: list[tuple[int, int]] = []
        root: Any
        if relation.kind is RelationKind.TABLE and not relation.plan:
            materialized = StateTable(self.store, storage, schema, relation.pk)
            table_ids = [materialized.table_id]
            assert log is not None, relation.name
            offsets = StateTable(self.store, materialized.table_id | 1, OFFSET_SCHEMA, [0])
            table_ids.append(offsets.table_id)
            generator = None
            if relation.watermark is not None:
                column = relation.column_index(relation.watermark.column)
                assert column is not None, relation.watermark
                state = StateTable(self.store, materialized.table_id | 2, WATERMARK_STATE_SCHEMA, [0])
                table_ids.append(state.table_id)
                spec = WatermarkSpec(column, relation.watermark.delay_us)
                generator = WatermarkGenerator(spec, schema.field(column).type, state)
                watermarks.append((relation.id, generator))
            table_source = TableSource(log, offsets, schema, relation.id, watermark=generator)
            new_sources[relation.id] = table_source.inject
            root = Materialize(table_source, materialized)
        else:
            guarantee = DeliveryGuarantee(relation.guarantee)
            ctx = BuildContext(
                store=self.store,
                relation_id=relation.id,
                actor_id=relation.id,
                relation_schemas=schemas,
                backfill=backfill,
                checked=self.checked,
                operator_cache_bytes=self.operator_cache_bytes,
                guarantee=guarantee,
                positions=self.positions,
            )
            chain = build(relation.plan["stream"], ctx)
            if relation.kind is RelationKind.SINK:
                root = self._sink_root(relation, chain, guarantee)
            else:
                root = Materialize(chain, StateTable(self.store, storage, schema, relation.pk))
            table_ids = [storage]
            inputs = ctx.inputs
            sources = ctx.sources
            watermarks = [(r, s.watermark) for r, s in sources if s.watermark is not None]
            error_tables = list(ctx.error_tables)
            # The coordinator injects each barrier once per actor: into every source the job runs.
            if ctx.sources:
                new_sources[relation.id] = _inject_all([source.inject for _, source in ctx.sources])
            table_ids += [(relation.id << 16) | n for n in range(1, ctx._next_state_table)]
        actor = Actor(relation.id, root, Dispatcher(relation.id), self.coordinator, name=relation.name)
        return _Job(
            relation,
            actor,
            table_ids=table_ids,
            inputs=inputs,
            log=log,
            sources=sources,
            watermarks=watermarks,
            error_tables=error_tables,
        )

    def _sink_root(self, relation: Relation, chain: Any, guarantee: DeliveryGuarantee) -> Sink:
        """The Sink operator over ``chain``, with the sink's delivery (created once, kept across recoveries)."""
        delivered = [i for i, column in enumerate(relation.columns) if not column.hidden]
        log_store = StateTable(self.store, materialized_table_id(relation.id), LOG_STORE_SCHEMA, LOG_STORE_PK)
        discards = relation.options.get("connector") == "blackhole"
        delivery = self._sinks.get(relation.id)
        if delivery is None:
            assert self._make_sink_target is not None, "a runtime without sink targets cannot run a sink"
            delivery = SinkDelivery(
                sink_spec(relation),
                guarantee,
                self.store,
                log_store.table_id,
                self._make_sink_target,
                discards=discards,
            )
            self._sinks[relation.id] = delivery
        else:
            delivery.restarted()
        force = relation.options.get("force_append_only", "false").strip().lower() == "true"
        return Sink(
            chain, log_store, delivery, delivered, guarantee=guarantee, force_append_only=force, discards=discards
        )

    async def drop(self, relation_ids: list[int]) -> list[int]:
        """Stop the jobs of ``relation_ids``; returns their state table ids, which the caller drops
        once the catalog no longer lists the relations (so a crash in between never finds a listed
        relation without its state)."""
        if self._recovering is not None:
            await asyncio.shield(self._recovering)
        for relation_id in relation_ids:
            self.failed.pop(relation_id, None)
            self._failures.pop(relation_id, None)
        stopping = frozenset(i for i in relation_ids if i in self._jobs)
        if not stopping:
            return []
        await self.submit(Command(mutation=StopMutation(stopping)))
        table_ids: list[int] = []
        for relation_id in stopping:
            job = self._jobs.pop(relation_id)
            if job.task is not None:
                await asyncio.wait({job.task}, timeout=10)
            table_ids += job.table_ids
            delivery = self._sinks.pop(relation_id, None)
            if delivery is not None:
                await asyncio.get_running_loop().run_in_executor(None, delivery.close)
            self.positions.forget(relation_id)
        return table_ids

    # ---- recovery -------------------------------------------------------------
    def _on_commit(self, epoch: int) -> None:
        self._failures.clear()
        for delivery in self._sinks.values():
            delivery.committed(epoch)
        for job in self._jobs.values():
            if job.backfill_until is not None and epoch > job.backfill_until:
                job.backfill_until = None

    def _on_actor_failure(self, actor_id: int, error: BaseException) -> None:
        self._failures[actor_id] = self._failures.get(actor_id, 0) + 1
        self._pending_failure = (actor_id, error)
        if self._recovering is None:
            self._recovering = asyncio.get_running_loop().create_task(self._recover_loop())

    async def _recover_loop(self) -> None:
        """Recover until the jobs run again; a failure during recovery starts another round."""
        try:
            while self._pending_failure is not None:
                actor_id, error = self._pending_failure
                self._pending_failure = None
                attempts = self._failures.get(actor_id, 1)
                if attempts >= MAX_FAILURES:
                    self._give_up(actor_id, error)
                await asyncio.sleep(RECOVERY_BACKOFF_S * 2 ** (attempts - 1))
                try:
                    await self.recover()
                except Exception:
                    if self._pending_failure is None:
                        log.exception("recovery failed; views stop updating until tidegate restarts")
                        raise
        finally:
            self._recovering = None

    def _give_up(self, actor_id: int, error: BaseException) -> None:
        """Stop ``actor_id``'s job and every job that reads it, for good."""
        message = f"{type(error).__name__}: {error}"
        stopped = {actor_id}
        for job in self._jobs.values():  # dependency order: inputs come first
            if stopped & {upstream for upstream, _ in job.inputs}:
                stopped.add(job.relation.id)
        now = time.time()
        for relation_id in stopped:
            stopped_job = self._jobs.get(relation_id)
            name = stopped_job.relation.name if stopped_job is not None else str(relation_id)
            reason = message if relation_id == actor_id else f"it reads a relation whose job failed: {message}"
            self.failed[relation_id] = JobFailure(relation_id, reason, now)
            log.error("the job of %s failed %d times and is stopped: %s", name, MAX_FAILURES, reason)

    async def recover(self) -> int:
        """Stop every actor, roll state back to the last checkpoint and rebuild every job from it."""
        self.recoveries += 1
        jobs = list(self._jobs.values())
        for job in jobs:
            if job.task is not None:
                job.task.cancel()
        await asyncio.gather(*(j.task for j in jobs if j.task is not None), return_exceptions=True)
        # Epochs every actor had passed are consistent: let their commit finish, then forget the rest.
        await self.coordinator.wait_committer()
        committed = self.store.reset_to_committed()
        self.coordinator.reset(committed)
        self._jobs = {}
        # A stopped job keeps its state tables: a restart retries it from its checkpoint.
        running = [j for j in jobs if j.created and j.relation.id not in self.failed]
        if not running:
            return committed
        logs = {j.relation.id: j.log for j in running if j.log is not None}
        unfinished = {j.relation.id for j in running if j.backfill_until is not None}
        command = self._create_command([j.relation for j in running], logs, unfinished, BarrierKind.INITIAL)
        for job in self._jobs.values():
            job.created = True
        epoch = await self.coordinator.submit(command)
        for job in self._jobs.values():
            if job.relation.id in unfinished:
                job.backfill_until = epoch
        log.info("recovered %d jobs from checkpoint %d", len(running), committed)
        return epoch

    def relation_failure(self, relation_id: int) -> JobFailure | None:
        return self.failed.get(relation_id)

    def jobs(self) -> list[tuple[Relation, int]]:
        """Running jobs with their failure counts since the last checkpoint."""
        return [(j.relation, self._failures.get(j.relation.id, 0)) for j in self._jobs.values()]

    def source_progress(self) -> list[SourceProgress]:
        """Per created, running view and per source its job generates: the next event number and the end.

        The offset counts events generated (the chunk being generated included), not yet
        necessarily processed by the view: a FLUSH after the end is what makes the view complete.

        Sessions call this from their own threads while the stream loop runs the sources. That is
        safe without a lock: ``list()`` copies the job table and a job's source list in one step
        under the GIL, and ``offset`` is a single int attribute that only the stream loop
        rebinds, so a reader gets a value the source really had, never a torn one. Nothing is
        shown during a recovery, when the rebuilt sources have not yet restored their committed
        offsets; a view appears once the barrier that created it committed (its sources restored
        their offsets on that barrier).
        """
        progress = []
        for job in self._reported_jobs():
            for source_id, source in list(job.sources):
                progress.append(SourceProgress(job.relation.id, source_id, source.offset, source.end_offset))
        return progress

    def watermark_progress(self) -> list[WatermarkProgress]:
        """Per created, running job and watermark generator it runs: the watermark and the late rows.

        Read from sessions' threads like ``source_progress`` (single attribute reads under the GIL).
        """
        progress = []
        for job in self._reported_jobs():
            for relation_id, generator in list(job.watermarks):
                value = generator.value
                micros = None if value is None else value_to_micros(value, generator.time_type)
                progress.append(WatermarkProgress(job.relation.id, relation_id, micros, generator.late_rows))
        return progress

    def sink_status(self) -> list[SinkStatus]:
        """Every sink's delivery, as ``tidegate_sinks`` shows it (read from sessions' threads)."""
        return [delivery.status() for delivery in list(self._sinks.values())]

    def error_tables(self) -> list[tuple[int, int, int]]:
        """Per created, running job and Kafka or file source it reads: (job, source, error table id)."""
        return [(job.relation.id, source, table) for job in self._reported_jobs() for source, table in job.error_tables]

    def _reported_jobs(self) -> list[_Job]:
        """The created, running jobs the progress views show; none during a recovery."""
        if self._recovering is not None:
            return []
        return [job for job in list(self._jobs.values()) if job.created and job.relation.id not in self.failed]
