"""The write side of a user table: DML changes go to its durable log.

A DML statement is turned into exact row changes here (an UPDATE or DELETE
needs the rows it touches, a primary-key INSERT must see existing keys), then
appended to the table's log, and acknowledged once the log has it on disk
(DESIGN §7). Statements of any session see every write acknowledged before
them: the table's *latest* rows are its rows at the last committed checkpoint
(in the state store) plus the log records after the offset that checkpoint
consumed. Readers of committed data (SELECT, views) never look here: they read
the state store at a committed epoch.

Nothing is kept per row by default: an INSERT into a table without a primary
key touches neither the store nor the log tail. A primary-key INSERT looks its
keys up (``rows_with_keys``); UPDATE, DELETE and INSERT … SELECT build the
latest image, which stays cached (and follows later writes) while it is
smaller than ``IMAGE_CACHE_BYTES``.

Row ids (the hidden key of tables without a primary key) are
``generation << ROW_ID_GENERATION_SHIFT | n``: the generation is a number the
database takes anew at every start, so ids are unique across restarts without
scanning the table for its largest id.

One statement at a time per table: ``lock`` is held from reading the latest
rows to appending the change, so concurrent DML serializes per table.

Backpressure: a recovery replays the log from the offset of the last
checkpoint, so with ``max_replay_bytes`` a statement calls ``wait_for_room``
before it takes ``lock`` (holding it would stall log truncation too), and
waits while the log holds more than that many bytes past the checkpoint.
Writes then go at the speed the table's pipeline processes and checkpoints
them, and the replay after a crash stays bounded however fast data comes.
A write that cannot make room (the table's job was stopped, or no checkpoint
moves the offset for ``REPLAY_WAIT_LIMIT_S``) is refused, never half-applied.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Chunk, Op
from tidegate.common.keys import encode_keys
from tidegate.errors import JobFailed, WriteTimeout
from tidegate.state.store import OP_COLUMN, StateStore, merge_deltas

ROW_ID_COLUMN = "_row_id"
ROW_ID_GENERATION_SHIFT = 40
IMAGE_CACHE_BYTES = 64 * 2**20
# A write held back by backpressure looks again this often, and gives up after the limit.
REPLAY_WAIT_POLL_S = 0.5
REPLAY_WAIT_LIMIT_S = 300.0


class TableWriter:
    def __init__(
        self,
        schema: pa.Schema,
        pk: list[int],
        log: Any,
        store: StateStore,
        table_id: int,
        committed_offset: Callable[[int], int],
        row_id_generation: int = 0,
        *,
        max_replay_bytes: int | None = None,
        job_failure: Callable[[], str | None] = lambda: None,
        name: str = "",
    ) -> None:
        """``table_id``: the state table the table's rows are materialized in; ``committed_offset(epoch)``:
        how far the table's source had read the log at that committed epoch; ``max_replay_bytes``: the
        backpressure bound (None: none); ``job_failure()``: why the table's job was stopped, if it was."""
        self.schema = schema
        self.pk = pk
        self.pk_names = [schema.names[i] for i in pk]
        self.log = log
        self.store = store
        self.table_id = table_id
        self.committed_offset = committed_offset
        self.lock = threading.RLock()
        self.has_row_id = ROW_ID_COLUMN in schema.names and self.pk_names == [ROW_ID_COLUMN]
        self._next_row_id = row_id_generation << ROW_ID_GENERATION_SHIFT
        self._row_id_limit = (row_id_generation + 1) << ROW_ID_GENERATION_SHIFT
        # The latest rows as of log end offset ``_image_end``, while small enough to keep.
        self._image: list[pa.Table] | None = None
        self._image_end = -1
        self.max_replay_bytes = max_replay_bytes
        self.job_failure = job_failure
        self.name = name
        # (committed epoch, the log offset its checkpoint had consumed), refreshed as epochs commit.
        self._checkpointed = (-1, 0)

    # ---- reads -----------------------------------------------------------
    def latest(self) -> pa.Table:
        """Every acknowledged row, with hidden columns."""
        with self.lock:
            end = self.log.end_offset()
            if self._image is None or self._image_end != end:
                with self.store.pin_committed() as epoch:
                    base = self.store.snapshot(self.table_id, epoch) if epoch else self.schema.empty_table()
                    tail, end = self._tail(epoch)
                self._image = [merge_deltas(base.cast(self.schema), tail, self.pk_names)]
                self._image_end = end
            if len(self._image) > 1:
                self._image = [pa.concat_tables(self._image)]
            image = self._image[0]
            if image.nbytes > IMAGE_CACHE_BYTES:
                self._image = None
            return image

    def rows_with_keys(self, keys: pa.Table) -> pa.Table:
        """The latest rows whose primary key equals a row of ``keys`` (the pk columns, in pk order)."""
        wanted = encode_keys(keys, list(range(keys.num_columns)))
        with self.lock:
            if self._image is not None and self._image_end == self.log.end_offset():
                image = self.latest()
                return image.filter(pc.is_in(encode_keys(image, self.pk), wanted))
            with self.store.pin_committed() as epoch:
                found = self.store.get_rows(self.table_id, keys, epoch) if epoch else self.schema.empty_table()
                tail, _ = self._tail(epoch)
        shifted = [i + 1 for i in self.pk]  # deltas lead with the __op column
        tail = [d.filter(pc.is_in(encode_keys(d, shifted), wanted)) for d in tail]
        return merge_deltas(found.cast(self.schema), [d for d in tail if d.num_rows], self.pk_names)

    def _tail(self, epoch: int) -> tuple[list[pa.Table], int]:
        """The log records after what checkpoint ``epoch`` consumed, as deltas; and the end offset."""
        offset = self.committed_offset(epoch) if epoch else 0
        deltas: list[pa.Table] = []
        while True:
            records = self.log.read(offset, 256)
            if not records:
                return deltas, offset
            for record_offset, chunk in records:
                deltas.append(_delta(chunk, self.schema))
                offset = record_offset + 1

    # ---- writes ----------------------------------------------------------
    def allocate_row_ids(self, count: int) -> pa.Array:
        with self.lock:
            start = self._next_row_id
            if start + count > self._row_id_limit:
                raise OverflowError("row ids of this start are exhausted; restart tidegate")
            self._next_row_id += count
        return pa.array(np.arange(start, start + count, dtype=np.int64))

    def apply(self, chunks: list[Chunk]) -> int:
        """Append the changes durably, then let the cached image follow them. Returns the log offset."""
        chunks = [c for c in chunks if len(c)]
        if not chunks:
            return int(self.log.end_offset())
        with self.lock:
            cached = self._image is not None and self._image_end == self.log.end_offset()
            offset = int(self.log.append_many(chunks))
            if not cached or self._image is None:
                self._image = None
                return offset
            deltas = [_delta(c, self.schema) for c in chunks]
            if all(c.is_insert_only() for c in chunks):
                self._image += [d.drop_columns([OP_COLUMN]) for d in deltas]
            else:
                self._image = [merge_deltas(pa.concat_tables(self._image), deltas, self.pk_names)]
            self._image_end = offset
            return offset

    def replay_bytes(self) -> int:
        """Bytes of log past the offset the last committed checkpoint consumed."""
        with self.store.pin_committed() as epoch:
            if epoch != self._checkpointed[0]:
                self._checkpointed = (epoch, self.committed_offset(epoch) if epoch else 0)
        return int(self.log.bytes_from(self._checkpointed[1]))

    def wait_for_room(self) -> None:
        """Backpressure: return once the log runs at most ``max_replay_bytes`` past the last checkpoint."""
        bound = self.max_replay_bytes
        if bound is None or self.log.bytes_from(self._checkpointed[1]) <= bound:
            return
        deadline = time.monotonic() + REPLAY_WAIT_LIMIT_S
        while not self.log.closed:  # a closing database refuses the append itself
            epoch = self.store.max_committed_epoch
            if self.replay_bytes() <= bound:
                return
            failure = self.job_failure()
            if failure is not None:
                raise JobFailed(f"table {self.name} cannot take writes: its streaming job was stopped: {failure}")
            if time.monotonic() > deadline:
                raise WriteTimeout(
                    f"canceling statement: table {self.name} has {self.replay_bytes() / 2**20:.0f} MiB of writes "
                    f"that no checkpoint has consumed for {REPLAY_WAIT_LIMIT_S:.0f} s (limit "
                    f"max_replay_bytes = {bound / 2**20:.0f} MiB); nothing of this statement was applied",
                    hint="see tidegate_checkpoints and tidegate_jobs for why checkpoints do not complete",
                )
            self.store.wait_committed(epoch + 1, REPLAY_WAIT_POLL_S)


def _delta(chunk: Chunk, schema: pa.Schema) -> pa.Table:
    data = chunk.data
    columns = [data.column(i).cast(field.type) for i, field in enumerate(schema)]
    return pa.Table.from_arrays([chunk.ops, *columns], names=[OP_COLUMN, *schema.names])


def update_chunk(old: pa.Table, new: pa.Table) -> Chunk:
    """Interleave old and new rows as update pairs: U-, U+, U-, U+, …"""
    count = old.num_rows
    assert new.num_rows == count
    order = np.empty(2 * count, dtype=np.int64)
    order[0::2] = np.arange(count)
    order[1::2] = np.arange(count) + count
    stacked = pa.concat_tables([old, new.cast(old.schema)]).take(pa.array(order))
    ops = np.empty(2 * count, dtype=np.int8)
    ops[0::2] = Op.UPDATE_DELETE
    ops[1::2] = Op.UPDATE_INSERT
    return Chunk.of(ops, stacked)
