"""StateTable: one operator's primary-keyed rows in the state store.

An operator writes chunks (inserts and deletes of whole rows) during an epoch,
and calls ``commit(epoch)`` on the barrier that ends it; the writes are then
sealed into the store as that epoch's delta (DESIGN §4, §6). Reads see the
operator's own uncommitted writes (``latest``) or a sealed epoch (``snapshot``).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import OP_TYPE, Chunk
from tidegate.common.keys import encode_keys
from tidegate.state.store import OP_COLUMN, StateStore, encode_prefixes, merge_deltas


class StateTable:
    def __init__(self, store: StateStore, table_id: int, schema: pa.Schema, pk: list[int]) -> None:
        self.store = store
        self.table_id = table_id
        self.schema = schema
        self.pk = pk
        self.pk_names = [schema.names[i] for i in pk]
        self._delta_schema = pa.schema([pa.field(OP_COLUMN, OP_TYPE), *schema])
        self._memtable: list[pa.RecordBatch] = []
        self._last_committed_epoch = 0
        store.register_table(table_id, schema, pk)

    def write(self, chunk: Chunk) -> None:
        """Apply a chunk of row changes (deletes carry the full row).

        The last change of a key in an epoch decides: an insert or update-insert makes the row live
        (an update-insert without its update-delete replaces the row of that key: an upsert), a
        delete or update-delete removes it.
        """
        if len(chunk) == 0:
            return
        data = chunk.data
        if not data.schema.equals(self.schema):
            data = pa.RecordBatch.from_arrays(
                [c.cast(f.type) for c, f in zip(data.columns, self.schema)], schema=self.schema
            )
        self._memtable.append(pa.RecordBatch.from_arrays([chunk.ops, *data.columns], schema=self._delta_schema))

    def commit(self, epoch: int) -> None:
        """Seal this epoch's writes into the store (called on the barrier that ends ``epoch``)."""
        assert epoch > self._last_committed_epoch, (self.table_id, epoch, self._last_committed_epoch)
        delta = pa.Table.from_batches(self._memtable, schema=self._delta_schema)
        self._memtable = []
        self.store.seal(self.table_id, epoch, delta)
        self._last_committed_epoch = epoch

    def snapshot(self, epoch: int) -> pa.Table:
        """Live rows as of the sealed ``epoch``."""
        return self.store.snapshot(self.table_id, epoch)

    def latest(self) -> pa.Table:
        """Live rows including this epoch's uncommitted writes."""
        committed = self.store.snapshot(self.table_id, self._last_committed_epoch)
        if not self._memtable:
            return committed
        pending = pa.Table.from_batches(self._memtable, schema=self._delta_schema)
        return merge_deltas(committed, [pending], self.pk_names)

    def get_rows(self, keys: pa.Table) -> pa.Table:
        """Live rows (own uncommitted writes included) whose primary key is a row of ``keys``."""
        found = self.store.get_rows(self.table_id, keys, self._last_committed_epoch)
        if not self._memtable:
            return found
        pending = pa.Table.from_batches(self._memtable, schema=self._delta_schema)
        wanted = encode_keys(keys, list(range(keys.num_columns)))
        pending = pending.filter(pc.is_in(encode_keys(pending, [i + 1 for i in self.pk]), wanted))
        return merge_deltas(found, [pending], self.pk_names) if pending.num_rows else found

    def get_prefix_rows(self, prefixes: pa.Table) -> pa.Table:
        """Live rows (own uncommitted writes included) whose leading pk columns equal a row of ``prefixes``.

        See ``StateStore.get_prefix_rows``: any row order; a NULL prefix value matches a NULL key value.
        """
        found = self.store.get_prefix_rows(self.table_id, prefixes, self._last_committed_epoch)
        if not self._memtable:
            return found
        pending = pa.Table.from_batches(self._memtable, schema=self._delta_schema)
        wanted = encode_prefixes(self.table_id, self.schema, self.pk, prefixes)
        leading = [i + 1 for i in self.pk[: prefixes.num_columns]]  # after the __op column
        pending = pending.filter(pc.is_in(encode_keys(pending, leading), wanted))
        return merge_deltas(found, [pending], self.pk_names) if pending.num_rows else found

    @property
    def has_pending_writes(self) -> bool:
        return bool(self._memtable)
