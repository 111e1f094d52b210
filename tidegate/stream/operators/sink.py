"""Sink: the last operator of a sink's job; hands the job's output to the sink's delivery.

Place in the data flow (DESIGN §7): query operators → Sink → (after the checkpoint commits) the
sink's deliverer → the external system. Under ``exactly_once`` every chunk is appended to the
sink's **log store**, a state table keyed by (epoch, sequence) that commits with the checkpoint
(one row per chunk, holding its changes);
nothing leaves tidegate before that. After checkpoint N commits, the deliverer
(``tidegate.meta.sink_delivery``) delivers the log's epochs up to N in one transaction that also
records N in the target, and this operator deletes the delivered entries on a later barrier. A
crash anywhere loses nothing (the log is committed state) and doubles nothing (the target knows
what it has).

Under ``at_least_once`` and ``at_most_once`` chunks go to the deliverer at once, without a log.
At a barrier, at_least_once waits until they are written, so a checkpoint never covers a change
the target has not received (a recovery replays, and what was written after the checkpoint is
written again). at_most_once does not wait: what is in flight at a crash is lost.

``force_append_only`` (an append-only sink over a query that can update or delete) keeps inserts
only: updates become their new row, deletes are dropped. A target that discards everything (the
blackhole) has no effect to make exactly-once, so its changes skip the log store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import OP_TYPE, Chunk, Op
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.connectors.sink_target import OP_FIELD
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator

EPOCH_FIELD = "sink_epoch"
SEQUENCE_FIELD = "sink_seq"
CHANGES_FIELD = "sink_changes"
# The log store's rows: one per chunk the sink received, keyed by (epoch, sequence in the epoch), the
# chunk's changes (the op, then the delivered columns) as an Arrow IPC stream. A row per chunk, not
# per change, keeps the log's state writes and its truncation's tombstones to a few per epoch.
LOG_STORE_SCHEMA = pa.schema(
    [pa.field(EPOCH_FIELD, pa.int64()), pa.field(SEQUENCE_FIELD, pa.int64()), pa.field(CHANGES_FIELD, pa.binary())]
)


def encode_changes(changes: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, changes.schema) as writer:
        writer.write_table(changes)
    return sink.getvalue().to_pybytes()


def decode_changes(payloads: list[bytes]) -> pa.Table:
    """The changes of log entries, in the given order (all of one sink: one schema)."""
    return pa.concat_tables(pa.ipc.open_stream(payload).read_all() for payload in payloads)


LOG_STORE_PK = [0, 1]


class SinkOutput(Protocol):
    """What the sink operator needs of its deliverer."""

    @property
    def delivered_epoch(self) -> int:
        """The last epoch the target records as delivered (exactly_once); log entries up to it can go."""

    def logged(self, epoch: int, changes: pa.Table) -> None:
        """exactly_once: ``epoch``'s changes are sealed in the log store; deliver them once its
        checkpoint commits (from memory; the log store is what a restart delivers from)."""

    def submit(self, changes: pa.Table) -> None:
        """Write ``changes`` as soon as possible (at_least_once, at_most_once)."""

    async def drained(self) -> None:
        """Wait until everything submitted is written; raises the error of a failed write."""

    def check(self) -> None:
        """Raise the error of a failed write, if one failed since the last check."""


class Sink(Operator):
    name = "sink"

    def __init__(
        self,
        input: Operator,
        log: StateTable,
        output: SinkOutput,
        delivered_columns: list[int],
        *,
        guarantee: DeliveryGuarantee,
        force_append_only: bool,
        discards: bool = False,
    ) -> None:
        """``delivered_columns``: indices of the input columns the target receives (the visible ones);
        ``discards``: the target throws everything away (blackhole), so nothing needs logging."""
        self.input = input
        self.log = log
        self.output = output
        self.delivered_columns = delivered_columns
        self.guarantee = guarantee
        self.force_append_only = force_append_only
        self.discards = discards
        self.schema = input.schema
        self.output_schema = pa.schema([input.schema.field(i) for i in delivered_columns])
        self.changes_schema = pa.schema([pa.field(OP_FIELD, OP_TYPE), *self.output_schema])
        assert log.schema.equals(LOG_STORE_SCHEMA), log.schema
        self._epoch = 0  # the epoch the records arriving now belong to
        self._sequence = 0  # the next log sequence number in that epoch
        self._logged: dict[int, int] = {}  # epoch -> entries in the log store (sequence 0 … n - 1)
        self._epoch_changes: list[pa.Table] = []  # this epoch's changes, handed to the deliverer when sealed

    async def execute(self) -> AsyncIterator[Message]:
        first = True
        async for message in self.input.execute():
            if isinstance(message, Chunk):
                changes = self._changes(message)
                if changes is not None and changes.num_rows:
                    self._hand_over(changes)
            elif isinstance(message, Barrier):
                if first:
                    self._restore(message.epoch.prev)
                    first = False
                else:
                    await self._end_epoch(message.epoch.prev)
                self._epoch, self._sequence = message.epoch.curr, 0
                yield message

    def _changes(self, chunk: Chunk) -> pa.Table | None:
        """The chunk as the target gets it: the op, then the delivered columns."""
        ops = chunk.ops
        data = chunk.data
        if self.force_append_only:
            keep = pc.is_in(ops, pa.array([Op.INSERT, Op.UPDATE_INSERT], OP_TYPE))
            data = data.filter(keep)
            ops = pa.array(np.zeros(data.num_rows, dtype=np.int8), OP_TYPE)
        if data.num_rows == 0:
            return None
        columns = [data.column(i) for i in self.delivered_columns]
        return pa.Table.from_arrays([ops, *columns], schema=self.changes_schema)

    def _hand_over(self, changes: pa.Table) -> None:
        if self.guarantee is not DeliveryGuarantee.EXACTLY_ONCE:
            self.output.submit(changes)
            return
        if self.discards:
            # Never stored: the deliverer only counts them (the ops alone, not to hold the rows).
            self._epoch_changes.append(changes.select([OP_FIELD]))
            return
        epoch = pa.array([self._epoch], pa.int64())
        sequence = pa.array([self._sequence], pa.int64())
        payload = pa.array([encode_changes(changes)], pa.binary())
        entry = pa.record_batch([epoch, sequence, payload], schema=LOG_STORE_SCHEMA)
        self.log.write(Chunk.inserts(entry))
        self._sequence += 1
        self._logged[self._epoch] = self._sequence
        self._epoch_changes.append(changes)

    def _restore(self, committed_epoch: int) -> None:
        """After a (re)start: how many entries (chunks) of each epoch the committed log store still holds."""
        if self.guarantee is DeliveryGuarantee.EXACTLY_ONCE and committed_epoch:
            epochs = self.log.snapshot(committed_epoch).column(EPOCH_FIELD)
            counts = pc.value_counts(epochs)
            self._logged = {
                int(e): int(n) for e, n in zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist())
            }

    async def _end_epoch(self, epoch: int) -> None:
        if self.guarantee is DeliveryGuarantee.AT_LEAST_ONCE:
            await self.output.drained()
        elif self.guarantee is DeliveryGuarantee.AT_MOST_ONCE:
            self.output.check()
        else:
            self._truncate(self.output.delivered_epoch)
        self.log.commit(epoch)
        if self._epoch_changes:
            # Sealed: the deliverer may send it from memory once its checkpoint commits.
            self.output.logged(epoch, pa.concat_tables(self._epoch_changes))
            self._epoch_changes = []

    def _truncate(self, delivered_epoch: int) -> None:
        """Delete the log entries of delivered epochs (in this epoch's state: a crash keeps them,
        and the deliverer skips them, since the target knows it has them). The keys are known
        (sequence 0 … count - 1 per epoch), so nothing is read back: tombstones need no values."""
        done = sorted(e for e in self._logged if e <= delivered_epoch)
        if not done:
            return
        counts = [self._logged.pop(e) for e in done]
        epochs = np.repeat(np.array(done, dtype=np.int64), counts)
        sequence = np.concatenate([np.arange(n, dtype=np.int64) for n in counts])
        nulls = pa.nulls(len(epochs), pa.binary())
        keys = pa.RecordBatch.from_arrays([pa.array(epochs), pa.array(sequence), nulls], schema=LOG_STORE_SCHEMA)
        self.log.write(Chunk.deletes(keys))
