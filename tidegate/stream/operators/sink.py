"""Sink: the last operator of a sink's job; hands the job's output to the sink's delivery.

Place in the data flow (DESIGN §7): query operators → Sink → (after the checkpoint commits) the
sink's deliverer → the external system. Under ``exactly_once`` every chunk is appended to the
sink's **log store**, a state table keyed by (epoch, sequence) that commits with the checkpoint;
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
only: updates become their new row, deletes are dropped.
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
LOG_OP_FIELD = "sink_op"


def log_store_schema(output: pa.Schema) -> pa.Schema:
    """The log store's rows: (epoch, sequence) as the key, the op, then the delivered columns,
    named by position (``c0``, ``c1``, …: a user's column names never clash with the store's own)."""
    columns = [pa.field(f"c{i}", field.type) for i, field in enumerate(output)]
    return pa.schema(
        [
            pa.field(EPOCH_FIELD, pa.int64()),
            pa.field(SEQUENCE_FIELD, pa.int64()),
            pa.field(LOG_OP_FIELD, OP_TYPE),
            *columns,
        ]
    )


LOG_STORE_PK = [0, 1]


class SinkOutput(Protocol):
    """What the sink operator needs of its deliverer."""

    @property
    def delivered_epoch(self) -> int:
        """The last epoch the target records as delivered (exactly_once); log entries up to it can go."""

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
    ) -> None:
        """``delivered_columns``: indices of the input columns the target receives (the visible ones)."""
        self.input = input
        self.log = log
        self.output = output
        self.delivered_columns = delivered_columns
        self.guarantee = guarantee
        self.force_append_only = force_append_only
        self.schema = input.schema
        self.output_schema = pa.schema([input.schema.field(i) for i in delivered_columns])
        assert log.schema.equals(log_store_schema(self.output_schema)), (log.schema, self.output_schema)
        self._epoch = 0  # the epoch the records arriving now belong to
        self._sequence = 0  # the next log sequence number in that epoch
        self._logged: set[int] = set()  # epochs with entries in the log store
        self._read_epoch = 0  # the last epoch of the log store this run may read: restored or sealed

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
        return pa.Table.from_arrays(
            [ops, *columns], schema=pa.schema([pa.field(OP_FIELD, OP_TYPE), *self.output_schema])
        )

    def _hand_over(self, changes: pa.Table) -> None:
        if self.guarantee is not DeliveryGuarantee.EXACTLY_ONCE:
            self.output.submit(changes)
            return
        count = changes.num_rows
        epochs = pa.array(np.full(count, self._epoch, dtype=np.int64))
        sequence = pa.array(np.arange(self._sequence, self._sequence + count, dtype=np.int64))
        self._sequence += count
        rows = pa.Table.from_arrays([epochs, sequence, *changes.columns], schema=self.log.schema)
        for batch in rows.to_batches():
            self.log.write(Chunk.inserts(batch))
        self._logged.add(self._epoch)

    def _restore(self, committed_epoch: int) -> None:
        """After a (re)start: which epochs the committed log store still holds."""
        self._read_epoch = committed_epoch
        if self.guarantee is DeliveryGuarantee.EXACTLY_ONCE and committed_epoch:
            epochs = self.log.snapshot(committed_epoch).column(EPOCH_FIELD)
            self._logged = {int(e) for e in pc.unique(epochs).to_pylist()}

    async def _end_epoch(self, epoch: int) -> None:
        if self.guarantee is DeliveryGuarantee.AT_LEAST_ONCE:
            await self.output.drained()
        elif self.guarantee is DeliveryGuarantee.AT_MOST_ONCE:
            self.output.check()
        else:
            self._truncate(self.output.delivered_epoch)
        self.log.commit(epoch)
        self._read_epoch = epoch

    def _truncate(self, delivered_epoch: int) -> None:
        """Delete the log entries of delivered epochs (in this epoch's state: a crash keeps them,
        and the deliverer skips them, since the target knows it has them)."""
        done = sorted(e for e in self._logged if e <= delivered_epoch)
        if not done:
            return
        prefixes = pa.table({EPOCH_FIELD: pa.array(done, pa.int64())})
        # Read at the last sealed epoch: after a recovery this run has sealed nothing yet.
        rows = self.log.store.get_prefix_rows(self.log.table_id, prefixes, self._read_epoch)
        for batch in rows.to_batches():
            self.log.write(Chunk.deletes(batch))
        self._logged.difference_update(done)
