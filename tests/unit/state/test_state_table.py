"""StateTable: per-epoch memtable, sealed on commit; own writes visible at once, others' at their epoch."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pyarrow as pa
import pytest

from tidegate.common.chunk import Chunk, Op
from tidegate.meta.meta_store import MemoryMetaStore
from tidegate.state.durable_store import DurableStateStore
from tidegate.state.object_store import MemoryObjectStore
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore, StateStore

SCHEMA = pa.schema([("id", pa.int64()), ("amount", pa.decimal128(38, 2))])
TABLE = 42


def chunk(ops: list[Op], rows: list[tuple], schema: pa.Schema = SCHEMA) -> Chunk:
    columns = list(zip(*rows))
    batch = pa.RecordBatch.from_arrays([pa.array(list(c), f.type) for c, f in zip(columns, schema)], schema=schema)
    return Chunk.of(np.array(ops, dtype=np.int8), batch)


def rows_of(table: pa.Table) -> list[tuple]:
    return sorted(tuple(r.values()) for r in table.to_pylist())


def test_writes_are_visible_to_the_writer_at_once_and_to_readers_at_their_epoch() -> None:
    store = MemoryStateStore()
    table = StateTable(store, TABLE, SCHEMA, [0])
    table.write(chunk([Op.INSERT, Op.INSERT], [(1, 100), (2, 200)]))
    assert table.has_pending_writes
    assert rows_of(table.latest()) == [(1, 100), (2, 200)]
    assert rows_of(table.snapshot(10)) == []  # not sealed yet

    table.commit(10)
    assert not table.has_pending_writes
    assert rows_of(table.snapshot(10)) == [(1, 100), (2, 200)]
    assert rows_of(table.snapshot(9)) == []

    table.write(chunk([Op.UPDATE_DELETE, Op.UPDATE_INSERT, Op.DELETE], [(1, 100), (1, 150), (2, 200)]))
    assert rows_of(table.latest()) == [(1, 150)]
    assert rows_of(table.snapshot(10)) == [(1, 100), (2, 200)]
    table.commit(20)
    assert rows_of(store.snapshot(TABLE, 20)) == [(1, 150)]


def test_commit_without_writes_seals_an_empty_epoch() -> None:
    store = MemoryStateStore()
    table = StateTable(store, TABLE, SCHEMA, [0])
    table.write(chunk([Op.INSERT], [(1, 100)]))
    table.commit(10)
    table.commit(20)
    assert rows_of(table.snapshot(20)) == [(1, 100)]


def test_commit_epochs_must_increase() -> None:
    table = StateTable(MemoryStateStore(), TABLE, SCHEMA, [0])
    table.commit(10)
    with pytest.raises(AssertionError):
        table.commit(10)
    with pytest.raises(AssertionError):
        table.commit(5)


def test_a_chunk_of_another_but_castable_schema_is_stored_in_the_table_schema() -> None:
    store = MemoryStateStore()
    table = StateTable(store, TABLE, SCHEMA, [0])
    narrow = pa.schema([("x", pa.int32()), ("y", pa.decimal128(10, 2))])
    table.write(chunk([Op.INSERT], [(7, 1)], narrow))
    table.commit(10)
    snapshot = table.snapshot(10)
    assert snapshot.schema.equals(SCHEMA)
    assert rows_of(snapshot) == [(7, 1)]


def test_an_empty_chunk_is_not_a_pending_write() -> None:
    table = StateTable(MemoryStateStore(), TABLE, SCHEMA, [0])
    table.write(Chunk.inserts(SCHEMA.empty_table()))
    assert not table.has_pending_writes


def test_get_rows_finds_live_rows_by_key_including_own_pending_writes() -> None:
    store = MemoryStateStore()
    table = StateTable(store, TABLE, SCHEMA, [0])
    table.write(chunk([Op.INSERT] * 3, [(1, Decimal(1)), (2, Decimal(2)), (3, Decimal(3))]))
    table.commit(5)
    table.write(chunk([Op.DELETE, Op.INSERT], [(2, Decimal(2)), (4, Decimal(4))]))

    keys = pa.table({"id": [1, 2, 4, 9]})
    assert rows_of(table.get_rows(keys)) == [(1, Decimal(1)), (4, Decimal(4))]
    # The store answers for sealed epochs only: the pending delete and insert are not there.
    assert [r["id"] for r in store.get_rows(TABLE, keys, 5).to_pylist()] == [1, 2]


@pytest.mark.parametrize("durable", [False, True])
def test_get_prefix_rows_finds_a_groups_live_rows_including_own_pending_writes(durable: bool) -> None:
    schema = pa.schema([("g", pa.string()), ("id", pa.int64()), ("amount", pa.decimal128(38, 2))])
    store: StateStore = MemoryStateStore()
    if durable:
        store = DurableStateStore(MemoryObjectStore(), MemoryMetaStore())
        store.recover()
    table = StateTable(store, TABLE, schema, [0, 1])
    rows = [(g, i, Decimal(i)) for g in ("a", "ab", None) for i in range(3)]
    table.write(chunk([Op.INSERT] * len(rows), rows, schema))
    table.commit(5)
    store.commit_version(5, store.sync(5))
    pending: list[tuple[str | None, int, Decimal]] = [
        ("a", 0, Decimal(0)),
        ("a", 1, Decimal(1)),
        ("a", 1, Decimal(10)),
        ("a", 7, Decimal(7)),
    ]
    pending += [("ab", 9, Decimal(9)), (None, 2, Decimal(2))]
    ops = [Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT, Op.INSERT, Op.INSERT, Op.DELETE]
    table.write(chunk(ops, pending, schema))

    groups = pa.table({"g": pa.array(["a", None, "a"], pa.string())})
    expected: list[tuple[str | None, int, Decimal]] = [
        ("a", 1, Decimal(10)),
        ("a", 2, Decimal(2)),
        ("a", 7, Decimal(7)),
    ]
    expected += [(None, 0, Decimal(0)), (None, 1, Decimal(1))]
    assert rows_of_any(table.get_prefix_rows(groups)) == rows_of_any(expected)
    # The store answers for sealed epochs only: none of the pending writes is there.
    sealed = store.get_prefix_rows(TABLE, groups, 5)
    assert rows_of_any(sealed) == rows_of_any([r for r in rows if r[0] in ("a", None)])
    assert rows_of_any(table.get_prefix_rows(pa.table({"g": ["zz"]}))) == []
    table.commit(6)
    assert rows_of_any(table.get_prefix_rows(groups)) == rows_of_any(expected)  # the same, once sealed


def rows_of_any(rows: pa.Table | list[tuple]) -> list[tuple]:
    """Rows sorted by (g, id) with NULL groups last (``rows_of`` cannot compare a NULL with a string)."""
    listed = [tuple(r.values()) for r in rows.to_pylist()] if isinstance(rows, pa.Table) else rows
    return sorted(listed, key=lambda r: (r[0] is None, r[0] or "", r[1]))
