"""Sink: under exactly_once every change goes to the log store, keyed by (epoch, seq) and committed
with the checkpoint, and delivered epochs are truncated; under at_least_once changes are submitted
at once and a barrier waits until they are written; under at_most_once it does not wait."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pyarrow as pa
import pytest
from scripted import ScriptedSource, barrier, chunk, deletes, inserts, run

from tidegate.common.chunk import Op
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.connectors.sink_target import OP_FIELD
from tidegate.errors import InternalError
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator
from tidegate.stream.operators.sink import (
    CHANGES_FIELD,
    EPOCH_FIELD,
    LOG_STORE_PK,
    LOG_STORE_SCHEMA,
    SEQUENCE_FIELD,
    Sink,
    decode_changes,
    encode_changes,
)

pytestmark = pytest.mark.timeout(30)

# The input has a hidden stream key in the middle; the target gets id and name only.
INPUT = pa.schema([("id", pa.int64()), ("_row_id", pa.int64()), ("name", pa.string())])
DELIVERED = [0, 2]
OUTPUT = pa.schema([("id", pa.int64()), ("name", pa.string())])
LOG_TABLE = 7 << 16
TIMEOUT_S = 5
EXACTLY, AT_LEAST, AT_MOST = (
    DeliveryGuarantee.EXACTLY_ONCE,
    DeliveryGuarantee.AT_LEAST_ONCE,
    DeliveryGuarantee.AT_MOST_ONCE,
)
INS, DEL, UD, UI = (int(op) for op in (Op.INSERT, Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT))


class FakeOutput:
    """A ``SinkOutput``: records what is submitted; ``drained`` waits for ``gate`` (when set) and
    raises ``drain_error``; ``check`` raises ``check_error``."""

    def __init__(self) -> None:
        self.delivered_epoch = 0
        self.submitted: list[pa.Table] = []
        self.logged_epochs: list[tuple[int, pa.Table]] = []
        self.gate: asyncio.Event | None = None
        self.drain_error: BaseException | None = None
        self.check_error: BaseException | None = None
        self.drain_calls = 0
        self.check_calls = 0

    def submit(self, changes: pa.Table) -> None:
        self.submitted.append(changes)

    def logged(self, epoch: int, changes: pa.Table) -> None:
        self.logged_epochs.append((epoch, changes))

    async def drained(self) -> None:
        self.drain_calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.drain_error is not None:
            raise self.drain_error

    def check(self) -> None:
        self.check_calls += 1
        if self.check_error is not None:
            raise self.check_error

    def submitted_rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r.values()) for table in self.submitted for r in table.to_pylist()]


def make_sink(
    messages: list[Message] | Operator,
    guarantee: DeliveryGuarantee,
    *,
    store: MemoryStateStore | None = None,
    output: FakeOutput | None = None,
    force_append_only: bool = False,
) -> tuple[Sink, StateTable, FakeOutput, MemoryStateStore]:
    store = MemoryStateStore() if store is None else store
    output = FakeOutput() if output is None else output
    log = StateTable(store, LOG_TABLE, LOG_STORE_SCHEMA, LOG_STORE_PK)
    source = messages if isinstance(messages, Operator) else ScriptedSource(INPUT, messages)
    sink = Sink(source, log, output, DELIVERED, guarantee=guarantee, force_append_only=force_append_only)
    return sink, log, output, store


def collect(operator: Operator, on_message: Callable[[Message], None] | None = None) -> list[Message]:
    """The operator's whole output; a hang fails after ``TIMEOUT_S``."""
    return run(operator, on_message, timeout_s=TIMEOUT_S)


def log_rows(store: MemoryStateStore, epoch: int) -> list[tuple[Any, ...]]:
    """The changes the log store holds at ``epoch`` as (epoch, n, op, id, name), n numbering the
    changes of each epoch in order (the log keeps one entry per chunk, in sequence order)."""
    entries = store.snapshot(LOG_TABLE, epoch).sort_by([(EPOCH_FIELD, "ascending"), (SEQUENCE_FIELD, "ascending")])
    rows: list[tuple[Any, ...]] = []
    numbers: dict[int, int] = {}
    for entry in entries.to_pylist():
        for change in decode_changes([entry[CHANGES_FIELD]]).to_pylist():
            n = numbers.get(entry[EPOCH_FIELD], 0)
            numbers[entry[EPOCH_FIELD]] = n + 1
            rows.append((entry[EPOCH_FIELD], n, *change.values()))
    return rows


def epochs_of(messages: list[Message]) -> list[int]:
    return [m.epoch.curr for m in messages if isinstance(m, Barrier)]


# ---- the log store ------------------------------------------------------------------------------
def test_the_log_store_keys_one_entry_per_chunk_by_epoch_and_sequence() -> None:
    assert LOG_STORE_SCHEMA.names == [EPOCH_FIELD, SEQUENCE_FIELD, CHANGES_FIELD]
    assert [LOG_STORE_SCHEMA.names[i] for i in LOG_STORE_PK] == [EPOCH_FIELD, SEQUENCE_FIELD]
    changes = pa.table({"__op": pa.array([0, 1], pa.int8()), "id": [1, 2], "name": ["a", None]})
    assert decode_changes([encode_changes(changes), encode_changes(changes)]).to_pylist() == 2 * changes.to_pylist()


def test_each_chunk_is_one_log_entry() -> None:
    messages = [barrier(10, 0), inserts(INPUT, [(1, 100, "a")]), inserts(INPUT, [(2, 200, "b")]), barrier(20, 10)]
    sink, _, _, store = make_sink(messages, EXACTLY)
    collect(sink)
    entries = store.snapshot(LOG_TABLE, 10)
    assert list(zip(entries.column(EPOCH_FIELD).to_pylist(), entries.column(SEQUENCE_FIELD).to_pylist())) == [
        (10, 0),
        (10, 1),
    ]


def test_exactly_once_logs_changes_keyed_by_epoch_and_sequence_committed_at_the_barrier() -> None:
    messages = [
        barrier(10, 0),
        inserts(INPUT, [(1, 100, "a"), (2, 200, "b")]),
        chunk(INPUT, "- U- U+", [(1, 100, "a"), (2, 200, "b"), (2, 200, "B")]),
        barrier(20, 10),
        inserts(INPUT, [(3, 300, "c")]),
        barrier(30, 20),
    ]
    sink, _, output, store = make_sink(messages, EXACTLY)
    seen: list[tuple[str, list[tuple[Any, ...]]]] = []

    def on_message(message: Message) -> None:
        assert isinstance(message, Barrier)  # the sink passes barriers on, nothing else
        seen.append((f"b{message.epoch.curr}", log_rows(store, message.epoch.prev)))

    assert epochs_of(collect(sink, on_message)) == [10, 20, 30]
    epoch_10 = [
        (10, 0, INS, 1, "a"),
        (10, 1, INS, 2, "b"),
        (10, 2, DEL, 1, "a"),
        (10, 3, UD, 2, "b"),
        (10, 4, UI, 2, "B"),
    ]
    assert seen == [
        ("b10", []),
        ("b20", epoch_10),  # sealed at 10 by the time the barrier goes downstream
        ("b30", [*epoch_10, (20, 0, INS, 3, "c")]),  # the sequence restarts in each epoch
    ]
    assert log_rows(store, 19) == epoch_10  # not before: epoch 20's entries are not visible at 19
    assert output.submitted == []  # nothing leaves before the checkpoint commits
    assert output.check_calls == output.drain_calls == 0
    # Each sealed epoch is handed to the deliverer, in sequence order, for after its checkpoint.
    handed = [(epoch, [tuple(r.values()) for r in t.to_pylist()]) for epoch, t in output.logged_epochs]
    assert handed == [(10, [row[2:] for row in epoch_10]), (20, [(INS, 3, "c")])]


def test_exactly_once_does_not_seal_an_epoch_before_its_barrier() -> None:
    sink, log, _, store = make_sink([barrier(10, 0), inserts(INPUT, [(1, 100, "a")]), barrier(20, 10)], EXACTLY)
    pending: list[bool] = []
    scripted = sink.input

    class Probe(Operator):
        name = "probe"
        schema = INPUT

        async def execute(self) -> AsyncIterator[Message]:
            async for message in scripted.execute():
                if isinstance(message, Barrier) and message.epoch.curr == 20:
                    # The chunk before this barrier was written, not sealed.
                    pending.append(log.has_pending_writes)
                    pending.append(bool(store.snapshot(LOG_TABLE, 10).num_rows))
                yield message

    sink.input = Probe()
    collect(sink)
    assert pending == [True, False]
    assert log_rows(store, 10) == [(10, 0, INS, 1, "a")]


def test_delivered_epochs_are_deleted_at_the_next_barrier_and_later_ones_kept() -> None:
    messages = [
        barrier(10, 0),
        inserts(INPUT, [(1, 100, "a")]),
        barrier(20, 10),
        inserts(INPUT, [(2, 200, "b")]),
        barrier(30, 20),
        inserts(INPUT, [(3, 300, "c")]),
        barrier(40, 30),
        barrier(50, 40),
        barrier(60, 50),
    ]
    sink, _, output, store = make_sink(messages, EXACTLY)
    # What the deliverer reports as delivered once barrier b went downstream: the sink reads it at the
    # next barrier, and deletes in the epoch that barrier commits.
    delivered_after = {30: 20, 50: 30}

    def on_message(message: Message) -> None:
        output.delivered_epoch = delivered_after.get(message.epoch.curr, output.delivered_epoch)  # type: ignore[union-attr]

    collect(sink, on_message)
    e10, e20, e30 = (10, 0, INS, 1, "a"), (20, 0, INS, 2, "b"), (30, 0, INS, 3, "c")
    assert log_rows(store, 20) == [e10, e20]  # nothing delivered yet at barrier 30
    assert log_rows(store, 30) == [e30]  # delivered up to 20 at barrier 40: epochs 10 and 20 go, 30 stays
    assert log_rows(store, 40) == [e30]
    assert log_rows(store, 50) == []  # delivered up to 30 at barrier 60


def test_a_rebuilt_sink_keeps_undelivered_restored_epochs() -> None:
    store = MemoryStateStore()
    first_run = [barrier(10, 0), inserts(INPUT, [(1, 100, "a")]), barrier(20, 10), inserts(INPUT, [(2, 200, "b")])]
    first_run.append(barrier(30, 20))
    collect(make_sink(first_run, EXACTLY, store=store)[0])
    store.commit_version(20, store.sync(20))
    store.reset_to_committed()

    output = FakeOutput()  # the target has nothing yet: the restored log must stay
    second_run = [barrier(40, 20), barrier(50, 40), barrier(60, 50)]
    collect(make_sink(second_run, EXACTLY, store=store, output=output)[0])
    assert log_rows(store, 50) == [(10, 0, INS, 1, "a"), (20, 0, INS, 2, "b")]


def test_a_rebuilt_sink_truncates_the_restored_epochs_once_delivered() -> None:
    store = MemoryStateStore()
    first_run = [barrier(10, 0), inserts(INPUT, [(1, 100, "a")]), barrier(20, 10), inserts(INPUT, [(2, 200, "b")])]
    first_run.append(barrier(30, 20))
    collect(make_sink(first_run, EXACTLY, store=store)[0])
    store.commit_version(20, store.sync(20))  # checkpoint 20 committed; epoch 30 is lost in the crash
    store.reset_to_committed()
    store.snapshot(LOG_TABLE, 20)  # a committed read may fold the deltas: epochs before 20 are gone

    # Rebuilt: a new Sink on the same store; its first barrier continues from the committed epoch.
    output = FakeOutput()
    output.delivered_epoch = 10
    second_run = [barrier(40, 20), inserts(INPUT, [(3, 300, "c")]), barrier(50, 40), barrier(60, 50)]

    def on_message(message: Message) -> None:
        if message.epoch.curr == 50:  # type: ignore[union-attr]
            output.delivered_epoch = 20

    collect(make_sink(second_run, EXACTLY, store=store, output=output)[0], on_message)
    assert log_rows(store, 40) == [(20, 0, INS, 2, "b"), (40, 0, INS, 3, "c")]
    assert log_rows(store, 50) == [(40, 0, INS, 3, "c")]


def test_force_append_only_keeps_inserts_and_new_rows_of_updates_as_inserts() -> None:
    messages = [
        barrier(10, 0),
        chunk(INPUT, "+ - U- U+ +", [(1, 1, "a"), (2, 2, "b"), (3, 3, "c"), (3, 3, "C"), (4, 4, "d")]),
        deletes(INPUT, [(1, 1, "a")]),  # nothing left of it: no entry, no sequence number
        inserts(INPUT, [(5, 5, "e")]),
        barrier(20, 10),
    ]
    sink, _, _, store = make_sink(messages, EXACTLY, force_append_only=True)
    collect(sink)
    assert log_rows(store, 10) == [
        (10, 0, INS, 1, "a"),
        (10, 1, INS, 3, "C"),
        (10, 2, INS, 4, "d"),
        (10, 3, INS, 5, "e"),
    ]

    sink, _, output, _ = make_sink(messages, AT_LEAST, force_append_only=True)
    collect(sink)
    assert output.submitted_rows() == [(INS, 1, "a"), (INS, 3, "C"), (INS, 4, "d"), (INS, 5, "e")]


# ---- at_least_once and at_most_once -------------------------------------------------------------
class GatedSource(Operator):
    """Plays messages; before each one runs ``before(index)`` (it may await)."""

    name = "gated"

    def __init__(self, messages: list[Message], before: Callable[[int], Awaitable[None]]) -> None:
        self.schema = INPUT
        self.messages = messages
        self.before = before

    async def execute(self) -> AsyncIterator[Message]:
        for index, message in enumerate(self.messages):
            await self.before(index)
            yield message


def test_at_least_once_submits_changes_at_once_with_the_op_and_the_delivered_columns() -> None:
    messages = [
        barrier(10, 0),
        chunk(INPUT, "+ U- U+", [(1, 100, "a"), (1, 100, "a"), (1, 100, "A")]),
        inserts(INPUT, [(2, 200, "b")]),
        barrier(20, 10),
    ]
    submitted_before: list[int] = []
    output = FakeOutput()

    async def before(index: int) -> None:
        submitted_before.append(len(output.submitted))

    sink, _, _, store = make_sink(GatedSource(messages, before), AT_LEAST, output=output)
    collect(sink)
    assert submitted_before == [0, 0, 1, 2]  # each chunk submitted as soon as it arrived
    assert [t.column_names for t in output.submitted] == [[OP_FIELD, "id", "name"]] * 2
    assert output.submitted_rows() == [(INS, 1, "a"), (UD, 1, "a"), (UI, 1, "A"), (INS, 2, "b")]
    assert log_rows(store, 10) == []  # no log store


def test_at_least_once_holds_the_barrier_until_the_output_is_drained() -> None:
    messages = [barrier(10, 0), inserts(INPUT, [(1, 100, "a")]), barrier(20, 10), barrier(30, 20)]

    async def scenario() -> None:
        output = FakeOutput()
        output.gate = asyncio.Event()
        sink, _, _, _ = make_sink(messages, AT_LEAST, output=output)
        out: list[Message] = []

        async def consume() -> None:
            async for message in sink.execute():
                out.append(message)

        task = asyncio.create_task(consume())
        for _ in range(50):
            await asyncio.sleep(0)
        assert epochs_of(out) == [10]  # the first barrier does not wait; barrier 20 does
        assert output.drain_calls == 1
        assert len(output.submitted) == 1
        output.gate.set()
        await asyncio.wait_for(task, TIMEOUT_S)
        assert epochs_of(out) == [10, 20, 30]
        assert output.drain_calls == 2

    asyncio.run(scenario())


def test_at_least_once_fails_when_draining_fails() -> None:
    output = FakeOutput()
    output.drain_error = InternalError("sink s could not write: refused")
    messages = [barrier(10, 0), inserts(INPUT, [(1, 100, "a")]), barrier(20, 10)]
    sink, _, _, _ = make_sink(messages, AT_LEAST, output=output)
    with pytest.raises(InternalError, match="could not write"):
        collect(sink)


def test_at_most_once_does_not_wait_for_the_output() -> None:
    output = FakeOutput()
    output.gate = asyncio.Event()  # never set: waiting for it would hang
    messages = [barrier(10, 0), inserts(INPUT, [(1, 100, "a")]), barrier(20, 10), barrier(30, 20)]
    sink, _, _, store = make_sink(messages, AT_MOST, output=output)
    assert epochs_of(collect(sink)) == [10, 20, 30]
    assert output.drain_calls == 0
    assert output.check_calls == 2  # at every barrier but the first
    assert output.submitted_rows() == [(INS, 1, "a")]
    assert log_rows(store, 20) == []


def test_at_most_once_fails_when_a_write_failed() -> None:
    output = FakeOutput()
    output.check_error = InternalError("sink s could not write: refused")
    messages = [barrier(10, 0), inserts(INPUT, [(1, 100, "a")]), barrier(20, 10), barrier(30, 20)]
    sink, _, _, _ = make_sink(messages, AT_MOST, output=output)
    out: list[Message] = []
    with pytest.raises(InternalError, match="could not write"):
        collect(sink, out.append)
    assert epochs_of(out) == [10]  # barrier 20 never went downstream


def test_a_discarding_sink_logs_nothing_and_hands_over_its_ops() -> None:
    messages = [barrier(10, 0), chunk(INPUT, "+ - +", [(1, 100, "a"), (1, 100, "a"), (2, 200, "b")]), barrier(20, 10)]
    store = MemoryStateStore()
    output = FakeOutput()
    log = StateTable(store, LOG_TABLE, LOG_STORE_SCHEMA, LOG_STORE_PK)
    sink = Sink(
        ScriptedSource(INPUT, messages),
        log,
        output,
        DELIVERED,
        guarantee=EXACTLY,
        force_append_only=False,
        discards=True,
    )
    collect(sink)
    assert store.snapshot(LOG_TABLE, 10).num_rows == 0
    assert [(epoch, t.column_names, t.column(0).to_pylist()) for epoch, t in output.logged_epochs] == [
        (10, ["__op"], [INS, DEL, INS])
    ]
