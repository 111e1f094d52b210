"""SinkDelivery: after checkpoint N commits, the log store's entries of the epochs the target lacks
go to the target in one ``deliver(N, …)``; a restart asks the target where it is; failures are
retried; under at_least_once ``submit``/``drained`` write at once. ``sink_spec`` binds a sink."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pytest

from tidegate.common.chunk import OP_TYPE, Chunk, Op
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.common.types import BIGINT, INTEGER, VARCHAR
from tidegate.connectors.sink_target import OP_FIELD, SinkSpec, SinkTarget
from tidegate.errors import InternalError
from tidegate.meta import sink_delivery
from tidegate.meta.catalog import ColumnDef, Relation, RelationKind
from tidegate.meta.sink_delivery import SinkDelivery, sink_spec
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.operators.sink import LOG_STORE_PK, LOG_STORE_SCHEMA, encode_changes

pytestmark = pytest.mark.timeout(30)

OUTPUT = pa.schema([("id", pa.int64()), ("name", pa.string())])
SPEC = SinkSpec(
    sink_id=42,
    name="orders_out",
    column_names=["id", "name"],
    column_types=[BIGINT, VARCHAR],
    key=[0],
    sink_type="upsert",
)
LOG_TABLE = 42 << 16
TIMEOUT_S = 5
INS, DEL, UD, UI = (int(op) for op in (Op.INSERT, Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT))


@dataclass
class World:
    """The external system: survives a SinkDelivery's restart, as a database would."""

    last_delivered: int = 0
    deliveries: list[tuple[int, list[str], list[tuple[Any, ...]]]] = field(default_factory=list)
    writes: list[list[tuple[Any, ...]]] = field(default_factory=list)
    fail_deliver: bool = False
    fail_write: bool = False
    write_gate: threading.Event | None = None  # set: writes proceed; clear: they block
    writing: threading.Event = field(default_factory=threading.Event)  # a write has started
    opens: int = 0
    closes: int = 0


class RecordingTarget(SinkTarget):
    def __init__(self, spec: SinkSpec, world: World) -> None:
        super().__init__(spec)
        self.world = world

    def open(self) -> None:
        self.world.opens += 1

    def last_delivered_epoch(self) -> int:
        return self.world.last_delivered

    def deliver(self, epoch: int, changes: pa.Table) -> None:
        if self.world.fail_deliver:
            raise ConnectionError("target unreachable")
        rows = [tuple(r.values()) for r in changes.to_pylist()]
        self.world.deliveries.append((epoch, changes.column_names, rows))
        self.world.last_delivered = epoch

    def write(self, changes: pa.Table) -> None:
        self.world.writing.set()
        if self.world.write_gate is not None:
            assert self.world.write_gate.wait(TIMEOUT_S), "the test never released the write"
        if self.world.fail_write:
            raise ConnectionError("write refused")
        self.world.writes.append([tuple(r.values()) for r in changes.to_pylist()])

    def close(self) -> None:
        self.world.closes += 1


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.002)


def settle() -> None:
    """Give the delivery thread time to do anything it (wrongly) would."""
    time.sleep(0.05)


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink_delivery, "RETRY_BACKOFF_S", (0.005, 0.01, 0.02))


@pytest.fixture
def make_delivery() -> Iterator[Callable[..., SinkDelivery]]:
    """``make_delivery(store, world, guarantee=…)``; every delivery made is closed at the end."""
    made: list[SinkDelivery] = []

    def make(
        store: MemoryStateStore, world: World, guarantee: DeliveryGuarantee = DeliveryGuarantee.EXACTLY_ONCE
    ) -> SinkDelivery:
        delivery = SinkDelivery(SPEC, guarantee, store, LOG_TABLE, lambda spec: RecordingTarget(spec, world))
        made.append(delivery)
        LIVE_DELIVERIES.setdefault(id(store), []).append(delivery)
        return delivery

    yield make
    for delivery in made:
        delivery.close()
    LIVE_DELIVERIES.clear()


# Per store, the deliveries made on it: a checkpoint hands each its sealed changes, as the Sink
# operator does (``SinkDelivery.logged``) before the checkpoint commits.
LIVE_DELIVERIES: dict[int, list[SinkDelivery]] = {}


def changes_of(entries: list[tuple[int, int, int, int, str]]) -> pa.Table:
    """The changes of entries (epoch, seq, op, id, name) as the sink operator logs them."""
    return pa.table(
        {
            OP_FIELD: pa.array([e[2] for e in entries], OP_TYPE),
            "c0": pa.array([e[3] for e in entries], pa.int64()),
            "c1": pa.array([e[4] for e in entries], pa.string()),
        }
    )


class LogStore:
    """The sink's log store, written as the Sink operator writes it, and checkpoints committed."""

    def __init__(self, store: MemoryStateStore) -> None:
        self.store = store
        self.table = StateTable(store, LOG_TABLE, LOG_STORE_SCHEMA, LOG_STORE_PK)

    def write(self, entries: list[tuple[int, int, int, int, str]]) -> None:
        """Entries (epoch, seq, op, id, name), in the given order: each a log entry of one change."""
        payloads = [encode_changes(changes_of([entry])) for entry in entries]
        arrays = [
            pa.array([e[0] for e in entries], pa.int64()),
            pa.array([e[1] for e in entries], pa.int64()),
            pa.array(payloads, pa.binary()),
        ]
        self.table.write(Chunk.inserts(pa.RecordBatch.from_arrays(arrays, schema=self.table.schema)))

    def checkpoint(self, epoch: int, entries: list[tuple[int, int, int, int, str]] | None = None) -> None:
        """Seal ``entries`` at ``epoch`` and commit the checkpoint (sync, then commit the version)."""
        if entries:
            self.write(entries)
        self.table.commit(epoch)
        if entries:
            # The operator hands the epoch's changes over in sequence order.
            changes = changes_of(sorted(entries, key=lambda e: e[1]))
            for delivery in LIVE_DELIVERIES.get(id(self.store), []):
                delivery.logged(epoch, changes)
        self.store.commit_version(epoch, self.store.sync(epoch))
        assert self.store.max_committed_epoch == epoch


# ---- exactly_once -------------------------------------------------------------------------------
def test_committed_delivers_the_log_up_to_the_epoch_in_one_call(make_delivery: Callable[..., SinkDelivery]) -> None:
    store, world = MemoryStateStore(), World()
    log = LogStore(store)
    delivery = make_delivery(store, world)
    # Entries out of (epoch, seq) order within their writes: the delivery sorts them.
    log.checkpoint(10, [(10, 1, UD, 1, "a"), (10, 2, UI, 1, "A"), (10, 0, INS, 1, "a")])
    log.checkpoint(20, [(20, 1, INS, 3, "c"), (20, 0, DEL, 1, "A")])
    settle()
    assert world.deliveries == []  # nothing before the runtime says the checkpoint committed

    delivery.committed(20)
    wait_until(lambda: delivery.delivered_epoch == 20, "epoch 20 is delivered")
    assert world.deliveries == [
        (
            20,
            [OP_FIELD, "id", "name"],
            [(INS, 1, "a"), (UD, 1, "a"), (UI, 1, "A"), (DEL, 1, "A"), (INS, 3, "c")],
        )
    ]
    status = delivery.status()
    assert (status.sink_id, status.guarantee, status.delivered_epoch, status.committed_epoch) == (
        42,
        "exactly_once",
        20,
        20,
    )
    assert status.delivered_rows == 5 and status.last_error is None

    delivery.committed(20)  # again: nothing new
    settle()
    assert len(world.deliveries) == 1

    log.checkpoint(30, [(30, 0, INS, 4, "d")])
    delivery.committed(30)
    wait_until(lambda: delivery.delivered_epoch == 30, "epoch 30 is delivered")
    assert world.deliveries[1:] == [(30, [OP_FIELD, "id", "name"], [(INS, 4, "d")])]


def test_a_restarted_delivery_skips_what_the_target_recorded(make_delivery: Callable[..., SinkDelivery]) -> None:
    store, world = MemoryStateStore(), World()
    log = LogStore(store)
    log.checkpoint(10, [(10, 0, INS, 1, "a")])
    log.checkpoint(20, [(20, 0, INS, 2, "b")])
    first = make_delivery(store, world)
    first.committed(20)
    wait_until(lambda: first.delivered_epoch == 20, "epoch 20 is delivered")
    first.close()
    assert world.last_delivered == 20

    # Crash before the sink truncated the log: epochs 10 and 20 are still in it.
    log.checkpoint(30, [(30, 0, INS, 3, "c")])
    second = make_delivery(store, world)  # starts at the store's committed epoch, 30
    wait_until(lambda: second.delivered_epoch == 30, "epoch 30 is delivered after the restart")
    assert [(epoch, rows) for epoch, _, rows in world.deliveries] == [
        (20, [(INS, 1, "a"), (INS, 2, "b")]),
        (30, [(INS, 3, "c")]),
    ]


def test_a_target_ahead_of_the_log_gets_nothing_twice(make_delivery: Callable[..., SinkDelivery]) -> None:
    # The target committed 30 but the crash came before the runtime told anyone: on restart the log
    # still holds 10..30 and the store's committed epoch is 30.
    store, world = MemoryStateStore(), World(last_delivered=30)
    log = LogStore(store)
    for epoch in (10, 20, 30):
        log.checkpoint(epoch, [(epoch, 0, INS, epoch, "x")])
    delivery = make_delivery(store, world)
    wait_until(lambda: delivery.delivered_epoch == 30, "the delivery catches up")
    settle()
    assert world.deliveries == []
    log.checkpoint(40, [(40, 0, INS, 40, "y")])
    delivery.committed(40)
    wait_until(lambda: delivery.delivered_epoch == 40, "epoch 40 is delivered")
    assert [(epoch, rows) for epoch, _, rows in world.deliveries] == [(40, [(INS, 40, "y")])]


def test_epochs_not_kept_in_memory_are_read_from_the_log_store(
    make_delivery: Callable[..., SinkDelivery], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, world = MemoryStateStore(), World()
    log = LogStore(store)
    delivery = make_delivery(store, world)
    log.checkpoint(10, [(10, 0, INS, 1, "a")])
    delivery.committed(10)
    wait_until(lambda: delivery.delivered_epoch == 10, "epoch 10 (read from the log store: first delivery)")
    # No room in memory: epochs 20 and 30 are only in the log store, 40 in memory again.
    monkeypatch.setattr(sink_delivery, "PENDING_BYTES_MAX", 0)
    log.checkpoint(20, [(20, 0, INS, 2, "b")])
    log.checkpoint(30, [(30, 0, INS, 3, "c")])
    monkeypatch.setattr(sink_delivery, "PENDING_BYTES_MAX", 2**30)
    delivery.committed(20)
    wait_until(lambda: delivery.delivered_epoch == 20, "epoch 20")
    log.checkpoint(40, [(40, 0, INS, 4, "d")])
    delivery.committed(40)
    wait_until(lambda: delivery.delivered_epoch == 40, "epochs 30 and 40")
    assert [(epoch, rows) for epoch, _, rows in world.deliveries] == [
        (10, [(INS, 1, "a")]),
        (20, [(INS, 2, "b")]),
        (40, [(INS, 3, "c"), (INS, 4, "d")]),
    ]


def test_after_a_recovery_changes_handed_over_before_it_are_not_delivered(
    make_delivery: Callable[..., SinkDelivery],
) -> None:
    store, world = MemoryStateStore(), World()
    log = LogStore(store)
    delivery = make_delivery(store, world)
    log.checkpoint(10, [(10, 0, INS, 1, "a")])
    delivery.committed(10)
    wait_until(lambda: delivery.delivered_epoch == 10, "epoch 10")
    # Epoch 20 is sealed and handed over, then its checkpoint fails: recovery rolls it back.
    delivery.logged(20, pa.table({OP_FIELD: pa.array([INS], OP_TYPE), "id": [2], "name": ["rolled back"]}))
    delivery.restarted()
    log.checkpoint(30, [(30, 0, INS, 3, "c")])
    delivery.committed(30)
    wait_until(lambda: delivery.delivered_epoch == 30, "epoch 30")
    assert [(epoch, rows) for epoch, _, rows in world.deliveries] == [(10, [(INS, 1, "a")]), (30, [(INS, 3, "c")])]


def test_an_empty_log_moves_the_delivered_epoch_without_a_delivery(
    make_delivery: Callable[..., SinkDelivery],
) -> None:
    store, world = MemoryStateStore(), World()
    log = LogStore(store)
    delivery = make_delivery(store, world)
    log.checkpoint(10)
    delivery.committed(10)
    wait_until(lambda: delivery.delivered_epoch == 10, "epoch 10 is marked delivered")
    settle()
    assert world.deliveries == []
    assert delivery.status().delivered_rows == 0


def test_a_failing_delivery_is_retried_and_reported_until_it_succeeds(
    make_delivery: Callable[..., SinkDelivery],
) -> None:
    store, world = MemoryStateStore(), World(fail_deliver=True)
    log = LogStore(store)
    delivery = make_delivery(store, world)
    log.checkpoint(10, [(10, 0, INS, 1, "a")])
    delivery.committed(10)
    wait_until(lambda: delivery.status().last_error is not None, "the failure is reported")
    wait_until(lambda: world.opens >= 3, "the delivery is retried (the target is reopened)")
    status = delivery.status()
    assert status.last_error == "ConnectionError: target unreachable"
    assert status.error_at is not None
    assert status.delivered_epoch == 0 and status.committed_epoch == 10
    assert world.closes >= 1  # a failed target is closed before it is reopened

    world.fail_deliver = False
    wait_until(lambda: delivery.delivered_epoch == 10, "the retry delivers")
    assert [(epoch, rows) for epoch, _, rows in world.deliveries] == [(10, [(INS, 1, "a")])]
    # Cleared just after the delivery (on the delivery thread).
    wait_until(lambda: delivery.status().last_error is None, "the error is cleared")
    assert delivery.status().error_at is None


def test_close_stops_the_thread_and_closes_the_target(make_delivery: Callable[..., SinkDelivery]) -> None:
    store, world = MemoryStateStore(), World()
    log = LogStore(store)
    delivery = make_delivery(store, world)
    log.checkpoint(10, [(10, 0, INS, 1, "a")])
    delivery.committed(10)
    wait_until(lambda: delivery.delivered_epoch == 10, "epoch 10 is delivered")
    thread_name = f"tidegate-sink-{SPEC.name}"
    assert thread_name in [t.name for t in threading.enumerate()]
    started = time.monotonic()
    delivery.close()
    assert time.monotonic() - started < 1
    assert thread_name not in [t.name for t in threading.enumerate()]
    assert world.closes == 1
    delivery.close()  # a second close is harmless
    assert world.closes == 1


# ---- at_least_once ------------------------------------------------------------------------------
def changes(*rows: tuple[int, int, str]) -> pa.Table:
    ops, ids, names = zip(*rows)
    return pa.table(
        [pa.array(ops, OP_TYPE), pa.array(ids, pa.int64()), pa.array(names, pa.string())],
        names=[OP_FIELD, "id", "name"],
    )


def drained(delivery: SinkDelivery) -> None:
    async def wait() -> None:
        await asyncio.wait_for(delivery.drained(), TIMEOUT_S)

    asyncio.run(wait())


def test_submitted_changes_are_written_by_the_time_drained_returns(
    make_delivery: Callable[..., SinkDelivery],
) -> None:
    world = World()
    delivery = make_delivery(MemoryStateStore(), world, DeliveryGuarantee.AT_LEAST_ONCE)
    delivery.submit(changes((INS, 1, "a"), (INS, 2, "b")))
    delivery.submit(changes((DEL, 1, "a")))
    drained(delivery)
    assert [row for batch in world.writes for row in batch] == [(INS, 1, "a"), (INS, 2, "b"), (DEL, 1, "a")]
    assert delivery.status().delivered_rows == 3
    assert world.deliveries == []
    delivery.check()  # no error
    drained(delivery)  # nothing queued: returns at once


def test_a_failed_write_fails_drained(make_delivery: Callable[..., SinkDelivery]) -> None:
    world = World(fail_write=True)
    delivery = make_delivery(MemoryStateStore(), world, DeliveryGuarantee.AT_LEAST_ONCE)
    delivery.submit(changes((INS, 1, "a")))
    with pytest.raises(InternalError, match="orders_out could not write: write refused"):
        drained(delivery)
    assert world.writes == []

    world.fail_write = False
    delivery.submit(changes((INS, 2, "b")))
    drained(delivery)  # the error was reported once; later writes go on
    assert world.writes == [[(INS, 2, "b")]]


def test_a_failed_write_fails_check(make_delivery: Callable[..., SinkDelivery]) -> None:
    world = World(fail_write=True)
    delivery = make_delivery(MemoryStateStore(), world, DeliveryGuarantee.AT_MOST_ONCE)
    delivery.submit(changes((INS, 1, "a")))
    raised: list[InternalError] = []

    def check_raises() -> bool:
        try:
            delivery.check()
        except InternalError as error:
            raised.append(error)
            return True
        return False

    wait_until(check_raises, "check() reports the failed write")
    assert "could not write: write refused" in str(raised[0])
    assert isinstance(raised[0].__cause__, ConnectionError)
    delivery.check()  # reported once


def test_restarted_drops_queued_writes(make_delivery: Callable[..., SinkDelivery]) -> None:
    world = World(write_gate=threading.Event())
    delivery = make_delivery(MemoryStateStore(), world, DeliveryGuarantee.AT_LEAST_ONCE)
    delivery.submit(changes((INS, 1, "a")))
    assert world.writing.wait(TIMEOUT_S)  # the thread is writing the first batch, blocked
    delivery.submit(changes((INS, 2, "b")))  # queued behind it
    delivery.submit(changes((INS, 3, "c")))
    delivery.restarted()  # the job recovered: what the failed run queued is not written
    world.write_gate.set()  # type: ignore[union-attr]
    drained(delivery)
    assert world.writes == [[(INS, 1, "a")]]

    delivery.submit(changes((INS, 4, "d")))
    drained(delivery)
    assert world.writes == [[(INS, 1, "a")], [(INS, 4, "d")]]


def test_close_releases_a_waiting_drained(make_delivery: Callable[..., SinkDelivery]) -> None:
    world = World(write_gate=threading.Event())
    delivery = make_delivery(MemoryStateStore(), world, DeliveryGuarantee.AT_LEAST_ONCE)
    delivery.submit(changes((INS, 1, "a")))
    assert world.writing.wait(TIMEOUT_S)
    delivery.submit(changes((INS, 2, "b")))

    async def scenario() -> None:
        waiting = asyncio.ensure_future(delivery.drained())
        await asyncio.sleep(0.02)
        assert not waiting.done()  # the writes are not done
        closing = asyncio.get_running_loop().run_in_executor(None, delivery.close)
        await asyncio.sleep(0.02)
        world.write_gate.set()  # type: ignore[union-attr]  # the write in progress finishes
        await asyncio.wait_for(closing, TIMEOUT_S)
        await asyncio.wait_for(waiting, TIMEOUT_S)

    asyncio.run(scenario())
    assert world.writes == [[(INS, 1, "a")]]


# ---- sink_spec ----------------------------------------------------------------------------------
def sink_relation(options: dict[str, str]) -> Relation:
    return Relation(
        id=42,
        name="orders_out",
        kind=RelationKind.SINK,
        columns=[
            ColumnDef("id", BIGINT),
            ColumnDef("_row_id", BIGINT, hidden=True),
            ColumnDef("name", VARCHAR),
            ColumnDef("amount", INTEGER),
        ],
        pk=[1],
        options=options,
    )


def test_sink_spec_keeps_visible_columns_and_the_connectors_options() -> None:
    options = {
        "connector": "postgres",
        "table": "orders",
        "type": "upsert",
        "primary_key": "amount,id",
        "format": "PLAIN",
        "encode": "JSON",
        "force_append_only": "false",
    }
    spec = sink_spec(sink_relation(options))
    assert spec.sink_id == 42 and spec.name == "orders_out"
    assert spec.column_names == ["id", "name", "amount"]  # the hidden column is not delivered
    assert spec.column_types == [BIGINT, VARCHAR, INTEGER]
    assert spec.key == [2, 0]  # indices into the visible columns, in the option's order
    assert spec.sink_type == "upsert"
    assert spec.options == {"connector": "postgres", "table": "orders"}
    assert (spec.format, spec.encode) == ("PLAIN", "JSON")


@pytest.mark.parametrize("primary_key", [None, ""])
def test_sink_spec_without_a_key(primary_key: str | None) -> None:
    options = {"connector": "blackhole", "type": "append-only"}
    if primary_key is not None:
        options["primary_key"] = primary_key
    spec = sink_spec(sink_relation(options))
    assert spec.key == []
    assert spec.sink_type == "append-only"
    assert spec.options == {"connector": "blackhole"}
    assert spec.format is None and spec.encode is None
