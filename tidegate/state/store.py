"""The state store: where every state table's rows live, versioned by epoch.

Data flow (DESIGN §6): an operator writes into its StateTable's memtable; on a
barrier ``StateTable.commit(epoch)`` seals those writes into the store as that
epoch's *delta* (the shared buffer). Meta later calls ``commit_epoch(epoch)``
when every actor has passed the barrier: only then do batch reads at
``max_committed_epoch`` see the epoch.

This module holds the interface and the in-memory implementation. Rows are kept
columnar: a table's history is a *base* (its live rows at ``base_epoch``) plus
the sealed deltas after it. A read at epoch E merges the base with the deltas up
to E; the merge is a plain concatenation while the deltas only insert, and a
last-writer-wins dedupe by primary key once they delete. Compaction folds old
deltas into the base, never past an epoch that a reader has pinned.

Delta layout: the table's columns plus a leading ``__op`` column (``Op``).
Within one table, writers keep the stream invariant (per key, inserts and
deletes alternate), which is what makes the concatenation fast path correct.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import Op
from tidegate.common.keys import encode_columns, encode_keys
from tidegate.errors import InternalError

OP_COLUMN = "__op"
SEQ_COLUMN = "__seq"
# Fold deltas into the base once this many pile up behind the oldest pin.
COMPACT_AFTER_DELTAS = 16


class StateStore(Protocol):
    """Versioned, columnar rows of every state table."""

    @property
    def max_committed_epoch(self) -> int: ...

    def register_table(self, table_id: int, schema: pa.Schema, pk: list[int]) -> None: ...

    def seal(self, table_id: int, epoch: int, delta: pa.Table) -> None:
        """Add ``delta`` (``__op`` + rows) as table ``table_id``'s writes of ``epoch``."""

    def commit_epoch(self, epoch: int) -> None:
        """Every table's writes up to ``epoch`` are complete; batch reads may see them."""

    def sync(self, epoch: int) -> list[Any]:
        """Make every sealed write up to ``epoch`` durable; returns what to commit (runs off the loop)."""

    def commit_version(self, epoch: int, new_ssts: list[Any]) -> None:
        """Commit checkpoint ``epoch`` with the objects ``sync`` produced: the single commit point."""

    def maintain(self, epoch: int) -> None:
        """Background upkeep after a commit (compaction); runs off the stream loop."""

    def wait_committed(self, epoch: int, timeout_s: float | None = None) -> bool:
        """Block until ``epoch`` is committed; False on timeout."""

    def snapshot(self, table_id: int, epoch: int) -> pa.Table:
        """The table's live rows as of ``epoch`` (sealed writes, committed or not)."""

    def get_rows(self, table_id: int, keys: pa.Table, epoch: int) -> pa.Table:
        """The live rows as of ``epoch`` whose primary key equals a row of ``keys`` (pk columns, in pk order).

        Point lookups for operator caches that evicted entries: cost grows with the
        number of keys asked for, not with the table's size, in stores that index by key.
        """

    def get_prefix_rows(self, table_id: int, prefixes: pa.Table, epoch: int) -> pa.Table:
        """The live rows as of ``epoch`` whose leading pk columns equal a row of ``prefixes``, in any order.

        ``prefixes`` holds the first ``prefixes.num_columns`` (1 up to all) pk columns, in pk order,
        cast to the table's types; it may be empty or repeat rows. Values compare by their
        memcomparable encoding, so a NULL in a prefix matches a NULL in the key. All the rows of
        a group, for joins and top-N: stores that index by key read only the key ranges asked for.
        """

    def pin(self, epoch: int) -> contextlib.AbstractContextManager[None]:
        """Keep ``epoch`` readable (not compacted away) inside the ``with`` block."""

    def pin_committed(self) -> contextlib.AbstractContextManager[int]:
        """Pin the latest committed epoch, atomically with reading it; yields the epoch."""

    def drop_table(self, table_id: int) -> None: ...

    def recovered_table_ids(self) -> list[int]:
        """State tables the committed checkpoint holds that no operator has registered (yet)."""

    def reset_to_committed(self) -> int:
        """Forget every sealed write after ``max_committed_epoch`` (recovery at run time); returns that epoch."""


@dataclass
class _TableHistory:
    schema: pa.Schema
    pk_names: list[str]
    pk_indices: list[int]
    base: pa.Table
    base_epoch: int = 0
    deltas: list[tuple[int, pa.Table]] = field(default_factory=list)
    # The last epoch sealed, empty or not: epochs are sealed in strictly increasing order.
    last_sealed_epoch: int = 0


class MemoryStateStore:
    """All state in memory. Used by tests and as the embedded store of this release."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._tables: dict[int, _TableHistory] = {}
        self._max_committed_epoch = 0
        self._pins: dict[int, int] = {}
        self._committed = threading.Condition(self._lock)

    @property
    def max_committed_epoch(self) -> int:
        return self._max_committed_epoch

    def register_table(self, table_id: int, schema: pa.Schema, pk: list[int]) -> None:
        with self._lock:
            if table_id in self._tables:
                existing = self._tables[table_id]
                assert existing.schema.equals(schema), (table_id, existing.schema, schema)
                return
            self._tables[table_id] = _TableHistory(
                schema=schema,
                pk_names=[schema.names[i] for i in pk],
                pk_indices=list(pk),
                base=schema.empty_table(),
            )

    def seal(self, table_id: int, epoch: int, delta: pa.Table) -> None:
        with self._lock:
            history = self._history(table_id)
            last = max(history.last_sealed_epoch, history.base_epoch)
            if last >= epoch:
                raise InternalError(f"state table {table_id}: epoch {epoch} sealed after epoch {last}")
            history.last_sealed_epoch = epoch
            if delta.num_rows:
                history.deltas.append((epoch, delta))

    def commit_epoch(self, epoch: int) -> None:
        with self._lock:
            assert epoch >= self._max_committed_epoch, (epoch, self._max_committed_epoch)
            self._max_committed_epoch = epoch
            self._committed.notify_all()

    def sync(self, epoch: int) -> list[Any]:
        """Nothing to upload: this store keeps everything in memory."""
        return []

    def commit_version(self, epoch: int, new_ssts: list[Any]) -> None:
        self.commit_epoch(epoch)

    def maintain(self, epoch: int) -> None:
        """Nothing to compact on object storage."""

    def wait_committed(self, epoch: int, timeout_s: float | None = None) -> bool:
        with self._lock:
            return self._committed.wait_for(lambda: self._max_committed_epoch >= epoch, timeout_s)

    @contextlib.contextmanager
    def pin(self, epoch: int) -> Iterator[None]:
        with self._lock:
            self._pins[epoch] = self._pins.get(epoch, 0) + 1
        try:
            yield
        finally:
            self._unpin(epoch)

    @contextlib.contextmanager
    def pin_committed(self) -> Iterator[int]:
        with self._lock:
            epoch = self._max_committed_epoch
            self._pins[epoch] = self._pins.get(epoch, 0) + 1
        try:
            yield epoch
        finally:
            self._unpin(epoch)

    def _unpin(self, epoch: int) -> None:
        with self._lock:
            self._pins[epoch] -= 1
            if not self._pins[epoch]:
                del self._pins[epoch]

    def _readable(self, table_id: int, epoch: int) -> tuple[_TableHistory, pa.Table, list[pa.Table]]:
        """The table's base and the deltas a read at ``epoch`` applies to it."""
        with self._lock:
            history = self._history(table_id)
            if epoch < history.base_epoch:
                raise InternalError(
                    f"state table {table_id}: epoch {epoch} was compacted away (base {history.base_epoch})"
                )
            return history, history.base, [d for e, d in history.deltas if e <= epoch]

    def snapshot(self, table_id: int, epoch: int) -> pa.Table:
        history, base, deltas = self._readable(table_id, epoch)
        merged = merge_deltas(base, deltas, history.pk_names)
        self._maybe_compact(table_id, epoch, merged, len(deltas))
        return merged

    def get_rows(self, table_id: int, keys: pa.Table, epoch: int) -> pa.Table:
        history, base, deltas = self._readable(table_id, epoch)
        pk = history.pk_indices
        wanted = encode_keys(keys, list(range(keys.num_columns)))
        base = base.filter(pc.is_in(encode_keys(base, pk), wanted))
        shifted = [i + 1 for i in pk]  # deltas lead with the __op column
        deltas = [d.filter(pc.is_in(encode_keys(d, shifted), wanted)) for d in deltas]
        return merge_deltas(base, [d for d in deltas if d.num_rows], history.pk_names)

    def get_prefix_rows(self, table_id: int, prefixes: pa.Table, epoch: int) -> pa.Table:
        history, base, deltas = self._readable(table_id, epoch)
        wanted = encode_prefixes(table_id, history.schema, history.pk_indices, prefixes)
        # Every version of a key shares its prefix, so filtering before the merge keeps it exact.
        leading = history.pk_indices[: prefixes.num_columns]
        base = base.filter(pc.is_in(encode_keys(base, leading), wanted))
        shifted = [i + 1 for i in leading]  # deltas lead with the __op column
        deltas = [d.filter(pc.is_in(encode_keys(d, shifted), wanted)) for d in deltas]
        return merge_deltas(base, [d for d in deltas if d.num_rows], history.pk_names)

    def drop_table(self, table_id: int) -> None:
        with self._lock:
            self._tables.pop(table_id, None)

    def recovered_table_ids(self) -> list[int]:
        return []  # nothing survives a restart in memory

    def reset_to_committed(self) -> int:
        with self._lock:
            committed = self._max_committed_epoch
            for history in self._tables.values():
                history.deltas = [(e, d) for e, d in history.deltas if e <= committed]
                history.last_sealed_epoch = min(history.last_sealed_epoch, committed)
            return committed

    def table_ids(self) -> list[int]:
        with self._lock:
            return sorted(self._tables)

    def _history(self, table_id: int) -> _TableHistory:
        history = self._tables.get(table_id)
        if history is None:
            raise InternalError(f"state table {table_id} is not registered")
        return history

    def _maybe_compact(self, table_id: int, epoch: int, merged: pa.Table, folded: int) -> None:
        """Fold the deltas a read just merged into the base, when no reader needs older epochs."""
        if folded < COMPACT_AFTER_DELTAS and not (folded and merged.num_rows < 1024):
            return
        with self._lock:
            history = self._tables.get(table_id)
            if history is None:
                return
            oldest_pin = min(self._pins, default=epoch)
            horizon = min(epoch, oldest_pin, self._max_committed_epoch)
            if horizon != epoch or epoch <= history.base_epoch:
                return
            history.base = merged
            history.base_epoch = epoch
            history.deltas = [(e, d) for e, d in history.deltas if e > epoch]


def encode_prefixes(table_id: int, schema: pa.Schema, pk: list[int], prefixes: pa.Table) -> pa.Array:
    """The memcomparable encoding of each row of ``prefixes``, the leading pk columns of table ``table_id``.

    The columns are cast to the table's types first: encodings (and so lookups) differ between types.
    """
    fields = [schema.field(i) for i in pk[: prefixes.num_columns]]
    if not 0 < prefixes.num_columns <= len(pk):
        raise InternalError(
            f"state table {table_id}: a key prefix needs 1 to {len(pk)} columns, {prefixes.num_columns} given"
        )
    columns = [c if c.type == f.type else c.cast(f.type) for c, f in zip(prefixes.columns, fields)]
    return encode_columns(columns, row_count=prefixes.num_rows)


def merge_deltas(base: pa.Table, deltas: list[pa.Table], pk_names: list[str]) -> pa.Table:
    """Live rows after applying ``deltas`` (oldest first) to ``base``."""
    if not deltas:
        return base
    schema = base.schema
    inserting = [Op.INSERT, Op.UPDATE_INSERT]
    if all(_only_inserts(d) for d in deltas):
        parts = [base, *(d.drop_columns([OP_COLUMN]).cast(schema) for d in deltas)]
        return pa.concat_tables(parts)
    rows = [base.add_column(0, OP_COLUMN, pa.array([0] * base.num_rows, pa.int8()))]
    rows += [d.cast(rows[0].schema) for d in deltas]
    stacked = pa.concat_tables(rows)
    stacked = stacked.append_column(SEQ_COLUMN, pa.array(range(stacked.num_rows), pa.int64()))
    keys = ", ".join(_quote(n) for n in pk_names) or "NULL"
    con = duckdb.connect()
    try:
        con.register("stacked", stacked)
        live = con.sql(
            f"SELECT * EXCLUDE ({OP_COLUMN}, {SEQ_COLUMN}) FROM stacked "
            f"QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {SEQ_COLUMN} DESC) = 1 "
            f"AND {OP_COLUMN} IN ({inserting[0].value}, {inserting[1].value})"
        ).to_arrow_table()
    finally:
        con.close()
    return live.cast(schema)


def _only_inserts(delta: pa.Table) -> bool:
    ops = delta.column(OP_COLUMN)
    return bool(pc.all(pc.equal(ops, Op.INSERT.value)).as_py())


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
