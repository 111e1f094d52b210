"""Deterministic simulation: the real engine on one event loop, one seed driving every choice and fault.

One ``Simulation(seed)`` runs tidegate's real parts — ``StreamingRuntime`` (actors and
barrier coordinator, ``checked=True``), ``DurableStateStore``, ``TableLog`` and
``TableWriter``, and ``Database``'s own start-up, DDL, recovery and log truncation —
in a single thread. Each incarnation (process lifetime) gets a fresh event loop with
virtual time; nothing runs unless the harness runs the loop.

A seeded schedule interleaves writes, loop turns, pipelined barriers, FLUSHes,
crashes and faults armed at the steps of the checkpoint protocol (``faults.py``).
A crash kills the incarnation where it stands (``world.SimulatedCrash``); what
survives is the durable world (object store, meta store, table-log files, maybe
with a torn tail), and the next incarnation starts exactly as ``Database`` does,
perhaps with another fault armed to hit that recovery.

Checked along the way (``checks.py``): after every start-up and some FLUSHes,
tables equal the acknowledged writes and views equal DuckDB over them; committed
epochs strictly increase, within and across incarnations; the durable version
never goes back and every SST it lists exists; right after recovery no
unreferenced SST is left; no actor fails unless an injected fault explains it; no
job is given up. A violation raises ``SimulationFailure``, naming the seed and the
command that replays it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from sqlglot import exp

from sim import checks, engine
from sim.faults import FAULT_POINTS, RECOVERY_FAULTS, RETRY_ATTEMPTS_MAX, RUNNING_FAULTS, Faults
from sim.known_bugs import ALL_AVOIDED
from sim.scenario import Scenario
from sim.world import (
    SST_PREFIX,
    FaultSwitch,
    FencedMetaStore,
    FencedObjectStore,
    Incarnation,
    IncarnationClock,
    InjectedOperatorError,
    LoopExecutor,
    SimClock,
    SimulatedCrash,
    VirtualTimeLoop,
    committed_epoch_of,
)
from tidegate.connectors.table_log import encode_header
from tidegate.errors import TidegateError
from tidegate.meta.barrier import Command
from tidegate.meta.meta_store import MemoryMetaStore, MetaStore
from tidegate.meta.runtime import StreamingRuntime
from tidegate.meta.streaming import StreamingManager
from tidegate.sql import ddl
from tidegate.sql.dialect import parse_sql
from tidegate.state.durable_store import DurableStateStore
from tidegate.state.object_store import FaultyObjectStore, MemoryObjectStore, RetryingObjectStore
from tidegate.stream.messages import BarrierKind

__all__ = ["FAULT_POINTS", "REPLAY_COMMAND", "Simulation", "SimulationFailure"]

REPLAY_COMMAND = "TIDEGATE_SIM_SEED={seed} python -m pytest tests/sim -q -k test_seeds"
ACTIONS = {"write": 36, "pump": 14, "barrier": 12, "flush": 8, "arm": 14, "crash": 2, "clock": 2, "view": 2}
VIEWS_MAX = 4
STEPS_MIN, STEPS_MAX = 8, 16
START_MS = 1_790_000_000_000
# The runtime's own timer never fires: barriers come only from the schedule.
BARRIER_INTERVAL_MS = 10**12
BOOT_ATTEMPTS_MAX = 6
TEARDOWN_ROUNDS_MAX = 5
TEARDOWN_TURNS = 20


class SimulationFailure(AssertionError):
    """The engine broke a guarantee (or the harness found it stuck) for one seed."""


@dataclass
class _Live:
    """The in-memory parts of the running incarnation (all lost at its crash)."""

    incarnation: Incarnation
    loop: asyncio.AbstractEventLoop
    objects: RetryingObjectStore
    meta: FencedMetaStore | None = None
    store: DurableStateStore | None = None
    runtime: StreamingRuntime | None = None
    db: engine.SimDatabase | None = None
    at_death: list[Callable[[], None]] = field(default_factory=list)


class Simulation(FaultSwitch):
    def __init__(
        self,
        seed: int,
        directory: Path,
        *,
        steps: int | None = None,
        avoid: frozenset[str] = ALL_AVOIDED,
        recovery_backoff_s: float | None = None,
        fault_weights: dict[str, int] | None = None,
        trace_tail: int | None = 25,
    ) -> None:
        self.seed = seed
        self.directory = directory
        self.avoid = avoid  # known engine bugs whose triggers are not injected (known_bugs.py)
        self.recovery_backoff_s = recovery_backoff_s  # None: the engine's own
        self.running_faults = {**RUNNING_FAULTS, **(fault_weights or {})}
        self.trace_tail = trace_tail  # trace lines a failure shows (None: all)
        self.rng = random.Random(seed)  # the schedule
        self.scenario = Scenario(random.Random(self.rng.getrandbits(64)))
        self.engine_rng = random.Random(self.rng.getrandbits(64))  # retry jitter, upload delays
        self.steps = steps if steps is not None else self.rng.randint(STEPS_MIN, STEPS_MAX)
        self.cache_bytes = self.rng.choice([None, None, 4096])
        self.store_options = _store_options(self.rng)
        self.upload_delay_chance = self.rng.choice([0.0, 0.5])
        self.objects = MemoryObjectStore()  # S3: survives every crash
        self.meta = MemoryMetaStore()  # the meta database: survives every crash
        self.clock = SimClock(START_MS)
        self.trace: list[str] = []
        self.faults = Faults(self.rng, self.trace)
        self.recovery_fault: str | None = None  # armed when the next incarnation starts
        self.live: _Live | None = None
        self.incarnations = 0
        self.checks = 0
        self.last_commit_epoch = 0  # from the commit hooks, across incarnations
        self.durable_epoch = 0  # from the versions written to the meta store
        self.served_epoch = 0  # the state store's max_committed_epoch, across incarnations
        self.violations: list[str] = []
        self.abandoned_relations: set[int] = set()  # views whose CREATE a crash or an error cut short

    @property
    def fired(self) -> Counter[str]:
        return self.faults.fired

    @property
    def fired_in_recovery(self) -> Counter[str]:
        return self.faults.fired_in_recovery

    # ---- running -------------------------------------------------------------------------
    def run(self) -> None:
        with engine.patched(self, self.recovery_backoff_s), quiet_engine_logs():
            try:
                self._boot()
                self._create_relations()
                for index in range(self.steps):
                    self._step(index)
                self._finish()
            except SimulationFailure:
                raise
            except (Exception, SimulatedCrash) as error:
                self.fail(f"an error escaped that no fault explains: {error!r}", error)
            finally:
                if self.live is not None and self.live.incarnation.alive:
                    self.live.incarnation.alive = False
                    self._bury()

    def _create_relations(self) -> None:
        """Tables and views, some views after a few writes (they backfill); no fault is armed yet."""
        db = self._db()
        for table in self.scenario.make_tables():
            relation = ddl.bind_create_table(_create(table.create_sql()), db.catalog, db.next_relation_id(), "")
            db.create_table(relation)
            table.relation = relation
            self.trace.append(f"ddl {table.create_sql()}")
        for _ in range(self.rng.choice([1, 2])):
            for _ in range(self.rng.randint(0, 3)):
                self._step_write()
            self._create_view()
        self._clean_point()
        self._check_oracle("after the DDL")

    def _step(self, index: int) -> None:
        action = _weighted(self.rng, ACTIONS)
        try:
            getattr(self, f"_step_{action}")()
        except SimulationFailure:
            raise
        except (Exception, SimulatedCrash) as error:
            self.faults.reconcile()
            if not self._live().incarnation.alive:
                self._after_crash()
            elif self._acceptable(error):
                self.trace.append(f"step {action} failed as a fault allows: {type(error).__name__}")
                self._settle_views()
            else:
                self.fail(f"step {index} ({action}) raised with no fault to explain it: {error!r}", error)
        self.faults.reconcile()
        self._check_running(f"step {index} ({action})")

    # ---- the steps -----------------------------------------------------------------------
    def _step_write(self) -> None:
        db = self._db()
        table = self.rng.choice(self.scenario.tables)
        assert table.relation is not None
        writer = db.writers[table.relation.id]
        write = self.scenario.make_write(table, writer.allocate_row_ids)
        writer.apply(write.chunks)
        table.rows = write.rows_after  # acknowledged
        self.trace.append(f"write {table.name} {write.kind} -> {len(table.rows)} rows")

    def _step_view(self) -> None:
        """CREATE MATERIALIZED VIEW with faults armed: it backfills, and after a crash it is all there or absent."""
        if len(self.scenario.views) >= VIEWS_MAX:
            return
        self._create_view()

    def _create_view(self) -> None:
        db = self._db()
        view = self.scenario.make_view()
        statement = _create(view.create_sql())
        relation = ddl.bind_create_materialized_view(statement, db.catalog, db.next_relation_id(), "")
        view.relation_id = relation.id
        self.trace.append(f"ddl {view.create_sql()}")
        db.create_materialized_view(relation)
        view.relation = relation

    def _settle_views(self) -> None:
        """A CREATE MATERIALIZED VIEW that crashed or failed left the view in the catalog or not at all."""
        catalog = self._db().catalog
        for view in [v for v in self.scenario.views if v.relation is None]:
            view.relation = catalog.get(view.name)
            if view.relation is None:
                self.scenario.views.remove(view)
                self.abandoned_relations.add(view.relation_id)
            self.trace.append(f"view {view.name} {'is there' if view.relation else 'is absent'}")

    def _step_pump(self) -> None:
        turns = self.rng.randint(1, 40)
        self.trace.append(f"pump {turns}")
        self._live().loop.run_until_complete(_turns(turns))

    def _step_barrier(self) -> None:
        runtime = self._runtime()
        for _ in range(self.rng.choice([1, 1, 2, 3])):
            kind = BarrierKind.CHECKPOINT if self.rng.random() < 0.75 else BarrierKind.BARRIER
            task = self._live().loop.create_task(runtime.submit(Command(kind=kind)))
            task.add_done_callback(_ignore_result)  # nobody waits: pipelined barriers
            self.trace.append(f"barrier {kind.value} (not awaited)")

    def _step_flush(self) -> None:
        epoch = self._db().flush()
        self.trace.append(f"flush -> {epoch}")
        self._clean_point()
        if self.rng.random() < 0.4:
            self._check_oracle("after a FLUSH")

    def _step_arm(self) -> None:
        point = _weighted(self.rng, self.running_faults)
        if point == "actor.error" and self.faults.actor_errors_since_commit:
            return  # a job failing again and again before any checkpoint is given up, by design
        self.faults.arm(point)

    def _step_crash(self) -> None:
        self.faults.record("crash.now")
        self._live().incarnation.alive = False
        self._after_crash()

    def _step_clock(self) -> None:
        self.clock.advance(self.rng.randint(1, 5_000))

    # ---- where the engine meets the faults (called from engine code) ---------------------
    def reaches(self, point: str) -> bool:
        live = self.live
        return live is not None and live.incarnation.alive and self.faults.reaches(point)

    def crash(self, point: str) -> NoReturn:
        self.trace.append(f"crash at {point}")
        self._live().incarnation.alive = False
        raise SimulatedCrash(point)

    def on_clock_read(self) -> None:
        """A barrier injection starts by reading the clock: the injection crash points."""
        if self.reaches("crash.before_inject"):
            self.crash("crash.before_inject")
        live = self._live()
        if live.incarnation.alive and self.faults.reaches("crash.after_inject", count=False):
            live.loop.call_soon(self._crash_after_hops, live.incarnation, self.rng.randint(0, 12))

    def _crash_after_hops(self, incarnation: Incarnation, hops: int) -> None:
        if not incarnation.alive:
            return
        if hops:
            self._live().loop.call_soon(self._crash_after_hops, incarnation, hops - 1)
            return
        self.faults.record("crash.after_inject")
        self.crash("crash.after_inject")

    def before_commit_hooks(self, epoch: int) -> None:
        """The first commit hook: epochs commit strictly in order, across incarnations too."""
        if epoch <= self.last_commit_epoch:
            self.violations.append(f"epoch {epoch} committed after epoch {self.last_commit_epoch}")
        self.last_commit_epoch = epoch
        self.faults.actor_errors_since_commit = 0
        self.trace.append(f"committed {epoch}")
        if self.reaches("crash.after_version_commit"):
            self.crash("crash.after_version_commit")

    def after_commit_hooks(self, epoch: int) -> None:
        if self.reaches("crash.after_commit_hooks"):
            self.crash("crash.after_commit_hooks")

    def version_written(self, text: str) -> None:
        epoch = committed_epoch_of(text)
        if epoch is not None:
            if epoch < self.durable_epoch:
                self.violations.append(f"the durable version went back from epoch {self.durable_epoch} to {epoch}")
            self.durable_epoch = max(self.durable_epoch, epoch)

    def on_actor_failure(self, actor_id: int, error: BaseException) -> None:
        """Any actor failure that no injected fault explains is a bug (``checked=True`` asserts, too)."""
        if _caused_by(error, InjectedOperatorError):
            return
        self.faults.reconcile()  # a corrupt read that the failing actor made counts from now
        if self.faults.corrupt_read_since_clean and _caused_by(error, TidegateError) and _names_an_sst(error):
            return
        self.violations.append(f"actor {actor_id} failed: {error!r}")

    def upload_delay_hops(self) -> int:
        if self.engine_rng.random() < self.upload_delay_chance:
            return self.engine_rng.randint(1, 6)
        return 0

    def error_after_write(self, version_text: str) -> bool:
        """Whether an injected version-write failure comes after the write landed (an ambiguous commit)."""
        return self.engine_rng.random() < 0.5

    def _acceptable(self, error: BaseException) -> bool:
        """An error that a fault injected since the last clean point explains."""
        if not self.faults.since_clean or not isinstance(error, TidegateError):
            return False
        # A corrupt read must surface as an error naming the SST, never as anything vaguer.
        return not self.faults.corrupt_read_since_clean or _names_an_sst(error)

    # ---- crashes and start-up ------------------------------------------------------------
    def _after_crash(self) -> None:
        self._bury()
        self._tear_a_log()
        if self.rng.random() < 0.3:
            self._choose_recovery_fault()
        self._boot()

    def _choose_recovery_fault(self) -> None:
        self.recovery_fault = _weighted(self.rng, RECOVERY_FAULTS)
        self.trace.append(f"the next start-up meets {self.recovery_fault}")

    def _boot(self) -> None:
        """Start an incarnation as ``Database`` does; a start that dies or fails is tried again."""
        for attempt in range(BOOT_ATTEMPTS_MAX):
            if attempt >= 2:
                self.recovery_fault = None  # a third start must work: nothing armed
            try:
                self._start_incarnation()
                return
            except SimulationFailure:
                raise
            except (Exception, SimulatedCrash) as error:
                self.faults.reconcile()
                live = self._live()
                if live.incarnation.alive and not self._acceptable(error):
                    self.fail(f"start-up failed with no fault to explain it: {error!r}", error)
                self.trace.append(f"start-up failed: {type(error).__name__}")
                live.incarnation.alive = False
                self._bury()
                self._tear_a_log()
                if attempt == 0 and self.rng.random() < 0.3:
                    self._choose_recovery_fault()
        self.fail(f"tidegate did not start in {BOOT_ATTEMPTS_MAX} attempts")

    def _start_incarnation(self) -> None:
        self.incarnations += 1
        self.faults.recovering = True
        self.faults.clean_point()
        self.faults.actor_errors_since_commit = 0
        self.clock.advance(self.rng.randint(-50, 2_000))  # the host's clock may even step back
        incarnation = Incarnation(self.incarnations)
        faulty = FaultyObjectStore(FencedObjectStore(self.objects, incarnation, self), seed=self.seed)
        objects = RetryingObjectStore(
            faulty,
            attempts_max=RETRY_ATTEMPTS_MAX,
            clock=SimClock(0),
            sleep_ms=lambda _ms: None,
            rng=random.Random(self.engine_rng.getrandbits(64)),
        )
        loop = VirtualTimeLoop()
        loop.set_exception_handler(functools.partial(_report_unless_dead, incarnation))
        self.live = live = _Live(incarnation, loop, objects)
        self.faults.attach(faulty)
        self.trace.append(f"start incarnation {incarnation.number}")
        if self.recovery_fault is not None:
            self.faults.arm(self.recovery_fault)
            self.recovery_fault = None
        live.db = engine.SimDatabase(self.directory, self)  # Database.__init__: _recover and its FLUSH too
        self._runtime().coordinator.on_commit.append(self.after_commit_hooks)
        self.faults.disarm()  # faults meant for the recovery end with it
        self.faults.recovering = False
        self.trace.append(f"serving at {self._store().max_committed_epoch}")
        self._settle_views()
        self._clean_point()
        if self.scenario.tables:
            self._check_oracle(f"after start-up {incarnation.number}")

    # ---- the factories Database calls (see engine.patched) ------------------------------------
    def open_meta_store(self) -> MetaStore:
        live = self._live()
        live.meta = FencedMetaStore(self.meta, live.incarnation, self, self, self.error_after_write)
        return live.meta

    def open_state_store(self) -> DurableStateStore:
        live = self._live()
        assert live.meta is not None
        live.store = store = DurableStateStore(live.objects, live.meta, **self.store_options)
        epoch = store.recover()
        self.trace.append(f"recovered state at epoch {epoch}")
        if epoch != self.durable_epoch:
            self.fail(f"recovery loaded epoch {epoch}, but the meta store's version is at {self.durable_epoch}")
        garbage = checks.unreferenced_ssts(self.objects, self.meta)
        if garbage:
            self.fail(f"after recovery the object store still holds unreferenced SSTs {garbage[:5]}")
        return store

    def open_streaming(self, store: DurableStateStore, checked: bool) -> StreamingManager:
        assert checked, "the simulation runs the operators' invariant checks"
        live = self._live()
        runtime = StreamingRuntime(
            store,
            BARRIER_INTERVAL_MS,
            checked=checked,
            clock=IncarnationClock(self.clock, self.on_clock_read),
            executor=LoopExecutor(self.upload_delay_hops),
            operator_cache_bytes=self.cache_bytes,
        )
        live.runtime = runtime
        recover = runtime.coordinator.on_failure
        assert recover is not None

        def on_failure(actor_id: int, error: BaseException) -> None:
            self.on_actor_failure(actor_id, error)
            recover(actor_id, error)

        runtime.coordinator.on_failure = on_failure
        runtime.coordinator.on_commit.insert(0, self.before_commit_hooks)
        live.loop.run_until_complete(runtime.start())
        return engine.LoopStreaming(runtime, live.loop)

    def at_death(self, release: Callable[[], None]) -> None:
        self._live().at_death.append(release)

    @property
    def live_incarnation(self) -> Incarnation:
        return self._live().incarnation

    def _bury(self) -> None:
        """Tear the dead incarnation down: its tasks are cancelled, its loop closed, its files let go."""
        live = self._live()
        assert not live.incarnation.alive
        self.faults.disarm()
        loop = live.loop
        # Python 3.11's wait_for swallows a cancellation that races its result (the coordinator
        # waits for commands in one), so cancel in rounds until nothing is left.
        for _ in range(TEARDOWN_ROUNDS_MAX):
            tasks = asyncio.all_tasks(loop)
            if not tasks:
                break
            for task in tasks:
                task.cancel()
            with contextlib.suppress(SimulatedCrash, Exception):
                loop.run_until_complete(_turns(TEARDOWN_TURNS))
        with contextlib.suppress(SimulatedCrash, Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
        for release in live.at_death:
            release()

    def _tear_a_log(self) -> None:
        """Maybe a write was in flight at the crash: a partial record ends the last segment of a log."""
        tables = [t for t in self.scenario.tables if t.relation is not None]
        if not tables or self.rng.random() >= 0.3:
            return
        table = self.rng.choice(tables)
        assert table.relation is not None
        segments = sorted((self.directory / "tables" / str(table.relation.id)).glob("*.seg"))
        if not segments:
            return
        record = encode_header(0x5EED, 400, 0) + bytes(400)
        with segments[-1].open("ab") as file:
            file.write(record[: self.rng.randint(1, len(record) - 1)])
        self.faults.record("log.torn_tail")

    def _finish(self) -> None:
        """Disarm everything, kill the last incarnation, and check the one that recovers from it."""
        self.faults.disarm()
        self._live().incarnation.alive = False
        self.trace.append("final crash")
        self._bury()
        if self.rng.random() < 0.3:
            self._choose_recovery_fault()
        self._boot()  # which checks every table and view after its FLUSH

    # ---- checks --------------------------------------------------------------------------
    def _clean_point(self) -> None:
        self.faults.clean_point()
        missing = checks.referenced_ssts_missing(self.objects, self.meta)
        if missing:
            self.fail(f"SSTs that the committed version lists are missing from object storage: {missing[:5]}")
        orphans = checks.orphan_state_tables(self.meta, self._db().catalog)
        if orphans:
            self.fail(f"the committed version keeps state tables of no relation in the catalog: {orphans}")

    def _check_running(self, where: str) -> None:
        live = self._live()
        if self.violations:
            self.fail(f"{where}: " + "; ".join(self.violations))
        runtime = live.runtime
        if runtime is not None and runtime.failed:
            self.fail(f"{where}: jobs were given up: {[f.error for f in runtime.failed.values()]}")
        serving = self._store().max_committed_epoch
        if serving < self.served_epoch:
            self.fail(f"{where}: max_committed_epoch went back from {self.served_epoch} to {serving}")
        self.served_epoch = serving
        # The store may lag a version that an injected error hid from it, never otherwise.
        if serving < self.durable_epoch and live.incarnation.alive and not self.faults.since_clean:
            self.fail(f"{where}: the store serves epoch {serving}, the committed version is at {self.durable_epoch}")

    def _check_oracle(self, where: str) -> None:
        self.checks += 1
        epoch = self._store().max_committed_epoch
        try:
            problems = checks.oracle_problems(self._db(), self.scenario, epoch)
        except TidegateError as error:
            # An armed corrupt read may hit the check's own read: an error naming the SST; the next read is fine.
            self.faults.reconcile()
            if not (self.faults.corrupt_read_since_clean and _names_an_sst(error)):
                raise
            problems = checks.oracle_problems(self._db(), self.scenario, epoch)
        if problems:
            self.fail(f"{where}: " + "\n".join(problems))
        sizes = ",".join(str(len(t.rows)) for t in self.scenario.tables)
        self.trace.append(f"checked {where} at {epoch}: tables {sizes}")

    def fail(self, problem: str, cause: BaseException | None = None) -> NoReturn:
        shown = self.trace if self.trace_tail is None else self.trace[-self.trace_tail :]
        steps = "\n".join(f"    {line}" for line in shown)
        message = (
            f"simulation seed {self.seed}: {problem}\n"
            f"replay: {REPLAY_COMMAND.format(seed=self.seed)}\n"
            f"{'the trace' if shown is self.trace else 'the last steps of the trace'}:\n{steps}"
        )
        raise SimulationFailure(message) from cause

    # ---- small accessors -----------------------------------------------------------------
    def _live(self) -> _Live:
        assert self.live is not None
        return self.live

    def _runtime(self) -> StreamingRuntime:
        runtime = self._live().runtime
        assert runtime is not None
        return runtime

    def _store(self) -> DurableStateStore:
        store = self._live().store
        assert store is not None
        return store

    def _db(self) -> engine.SimDatabase:
        db = self._live().db
        assert db is not None
        return db


def _store_options(rng: random.Random) -> dict[str, Any]:
    """Small compaction and cache thresholds, where the store has them: compaction, its garbage and
    reads from object storage then all happen within a short run."""
    wanted = {"l0_ssts_max": rng.choice([1, 2, 4]), "block_cache_bytes": rng.choice([1, 64 * 1024, 2**28, 2**28])}
    accepted = inspect.signature(DurableStateStore).parameters
    return {name: value for name, value in wanted.items() if name in accepted}


def _create(sql: str) -> exp.Create:
    statement = parse_sql(sql)
    assert isinstance(statement, exp.Create), sql
    return statement


def _weighted(rng: random.Random, weights: dict[str, int]) -> str:
    names = list(weights)
    return rng.choices(names, [weights[n] for n in names])[0]


async def _turns(count: int) -> None:
    for _ in range(count):
        await asyncio.sleep(0)


def _report_unless_dead(incarnation: Incarnation, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """A dead incarnation's leftovers (a task that ended in the crash, one torn down) are not news."""
    if incarnation.alive and not isinstance(context.get("exception"), SimulatedCrash):
        loop.default_exception_handler(context)


def _ignore_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()


def _caused_by(error: BaseException, kinds: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, kinds):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _names_an_sst(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if SST_PREFIX in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextlib.contextmanager
def quiet_engine_logs() -> Iterator[None]:
    """Injected faults make the engine log errors on purpose; keep those lines only if TIDEGATE_SIM_LOG is set."""
    if os.environ.get("TIDEGATE_SIM_LOG"):
        yield
        return
    logger = logging.getLogger("tidegate")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
