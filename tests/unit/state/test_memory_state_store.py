"""MemoryStateStore and merge_deltas: MVCC reads by epoch, deletes by key, compaction under pins."""

from __future__ import annotations

import pyarrow as pa
import pytest
from state_deltas import change

from tidegate.common.chunk import Op
from tidegate.errors import InternalError
from tidegate.state import store as store_module
from tidegate.state.store import COMPACT_AFTER_DELTAS, OP_COLUMN, MemoryStateStore, merge_deltas

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
TABLE = 1

INS, DEL, UD, UI = Op.INSERT, Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT


def delta(ops: list[Op], rows: list[tuple], schema: pa.Schema = SCHEMA) -> pa.Table:
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array([int(o) for o in ops], pa.int8())]
    arrays += [pa.array(list(c), f.type) for c, f in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=pa.schema([pa.field(OP_COLUMN, pa.int8()), *schema]))


def rows_of(table: pa.Table) -> list[tuple]:
    columns = [c.to_pylist() for c in table.columns]
    return sorted(tuple(col[i] for col in columns) for i in range(table.num_rows))


def new_store() -> MemoryStateStore:
    store = MemoryStateStore()
    store.register_table(TABLE, SCHEMA, [0])
    return store


# ---- MVCC reads ------------------------------------------------------------
def test_a_snapshot_at_epoch_e_sees_only_deltas_up_to_e() -> None:
    store = new_store()
    store.seal(TABLE, 10, delta([INS], [(1, "a")]))
    store.seal(TABLE, 20, delta([INS], [(2, "b")]))
    store.seal(TABLE, 30, delta([DEL, UD, UI], [(1, "a"), (2, "b"), (2, "B")]))

    assert rows_of(store.snapshot(TABLE, 0)) == []
    assert rows_of(store.snapshot(TABLE, 9)) == []
    assert rows_of(store.snapshot(TABLE, 10)) == [(1, "a")]
    assert rows_of(store.snapshot(TABLE, 19)) == [(1, "a")]
    assert rows_of(store.snapshot(TABLE, 20)) == [(1, "a"), (2, "b")]
    assert rows_of(store.snapshot(TABLE, 30)) == [(2, "B")]
    assert rows_of(store.snapshot(TABLE, 10**9)) == [(2, "B")]


def test_snapshot_schema_is_the_table_schema() -> None:
    store = new_store()
    store.seal(TABLE, 10, delta([INS, INS], [(1, "a"), (2, "b")]))
    store.seal(TABLE, 20, delta([DEL], [(1, "a")]))
    for epoch in (0, 10, 20):
        assert store.snapshot(TABLE, epoch).schema.equals(SCHEMA)


def test_unregistered_tables_are_an_internal_error_and_dropping_forgets() -> None:
    store = new_store()
    with pytest.raises(InternalError, match="not registered"):
        store.snapshot(99, 1)
    store.register_table(TABLE, SCHEMA, [0])  # registering again with the same schema is fine
    store.drop_table(TABLE)
    assert store.table_ids() == []
    with pytest.raises(InternalError):
        store.seal(TABLE, 10, delta([INS], [(1, "a")]))


# ---- merge_deltas ----------------------------------------------------------
def test_merge_deletes_by_key_and_the_last_write_of_a_key_wins() -> None:
    base = pa.Table.from_pylist([{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}], SCHEMA)
    deltas = [
        delta([DEL, UD, UI, INS], [(1, "a"), (2, "b"), (2, "b2"), (4, "d")]),
        delta([DEL, INS, UD, UI], [(4, "d"), (4, "d2"), (2, "b2"), (2, "b3")]),
    ]
    merged = merge_deltas(base, deltas, ["id"])
    assert rows_of(merged) == [(2, "b3"), (3, "c"), (4, "d2")]
    assert merged.schema.equals(SCHEMA)


def test_merge_with_a_composite_key() -> None:
    schema = pa.schema([("a", pa.int32()), ("b", pa.string()), ("v", pa.float64())])
    base = pa.Table.from_pylist([{"a": 1, "b": "x", "v": 1.0}, {"a": 1, "b": "y", "v": 2.0}], schema)
    merged = merge_deltas(base, [delta([DEL, INS], [(1, "x", 1.0), (2, "x", 3.0)], schema)], ["a", "b"])
    assert rows_of(merged) == [(1, "y", 2.0), (2, "x", 3.0)]


def test_insert_only_deltas_take_the_concatenation_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_duckdb(*args: object, **kwargs: object) -> None:
        raise AssertionError("the insert-only merge must not run a query")

    monkeypatch.setattr(store_module.duckdb, "connect", no_duckdb)
    base = pa.Table.from_pylist([{"id": 1, "name": "a"}], SCHEMA)
    merged = merge_deltas(base, [delta([INS, INS], [(2, "b"), (3, "c")]), delta([INS], [(4, "d")])], ["id"])
    # Base first, then each delta in order.
    assert merged.column("id").to_pylist() == [1, 2, 3, 4]
    assert merged.schema.equals(SCHEMA)
    assert merge_deltas(base, [], ["id"]) is base


# ---- sealing ----------------------------------------------------------------
def test_sealing_an_epoch_not_greater_than_the_previous_one_raises() -> None:
    store = new_store()
    store.seal(TABLE, 10, delta([INS], [(1, "a")]))
    with pytest.raises(InternalError, match="epoch 10 sealed after epoch 10"):
        store.seal(TABLE, 10, delta([INS], [(2, "b")]))
    with pytest.raises(InternalError, match="epoch 9 sealed after epoch 10"):
        store.seal(TABLE, 9, delta([INS], [(2, "b")]))
    assert rows_of(store.snapshot(TABLE, 10)) == [(1, "a")]


def test_sealing_an_older_epoch_after_an_empty_delta_raises() -> None:
    """Regression: only non-empty deltas used to count as sealed."""
    store = new_store()
    store.seal(TABLE, 10, delta([INS], [(1, "a")]))
    store.seal(TABLE, 20, delta([], []))
    with pytest.raises(InternalError):
        store.seal(TABLE, 15, delta([INS], [(2, "b")]))


def test_sealing_at_or_below_the_compacted_epoch_raises() -> None:
    """Regression: compaction empties the delta list, which used to disable the check."""
    store = new_store()
    store.seal(TABLE, 10, delta([INS], [(1, "a")]))
    store.commit_epoch(10)
    before = rows_of(store.snapshot(TABLE, 10))  # a small table: this read compacts up to 10
    assert store._tables[TABLE].base_epoch == 10
    with pytest.raises(InternalError):
        store.seal(TABLE, 5, delta([INS], [(2, "b")]))
    assert rows_of(store.snapshot(TABLE, 10)) == before


# ---- compaction -------------------------------------------------------------
def history_of_many_epochs(store: MemoryStateStore, epochs: int) -> dict[int, list[tuple]]:
    """Seals ``epochs`` epochs of inserts, updates and deletes; returns the expected rows per epoch."""
    live: dict[int, str] = {}
    expected: dict[int, list[tuple]] = {}
    for n in range(1, epochs + 1):
        epoch = n * 10
        ops: list[Op] = []
        rows: list[tuple] = []
        for key in range(n % 7, 40, 3):
            change(live, key, None if key in live and (key + n) % 4 == 0 else f"{key}@{n}", ops, rows)
        store.seal(TABLE, epoch, delta(ops, rows))
        expected[epoch] = sorted(live.items())
    return expected


def test_compaction_does_not_lose_rows() -> None:
    store = new_store()
    expected = history_of_many_epochs(store, COMPACT_AFTER_DELTAS + 4)
    last = max(expected)
    store.commit_epoch(last)
    assert rows_of(store.snapshot(TABLE, last)) == expected[last]
    assert store._tables[TABLE].base_epoch == last  # the read compacted
    assert store._tables[TABLE].deltas == []
    # Reads after compaction, and writes on top of the compacted base.
    assert rows_of(store.snapshot(TABLE, last)) == expected[last]
    store.seal(TABLE, last + 10, delta([DEL], [expected[last][0]]))
    assert rows_of(store.snapshot(TABLE, last + 10)) == expected[last][1:]
    assert rows_of(store.snapshot(TABLE, last)) == expected[last]


def test_compaction_stops_at_the_committed_epoch() -> None:
    store = new_store()
    expected = history_of_many_epochs(store, 5)
    store.commit_epoch(30)
    assert rows_of(store.snapshot(TABLE, 50)) == expected[50]  # beyond committed: no compaction
    assert store._tables[TABLE].base_epoch == 0
    for epoch, rows in expected.items():
        assert rows_of(store.snapshot(TABLE, epoch)) == rows, epoch


def test_compaction_keeps_a_pinned_older_epoch_readable() -> None:
    store = new_store()
    expected = history_of_many_epochs(store, COMPACT_AFTER_DELTAS + 4)
    last = max(expected)
    store.commit_epoch(last)
    with store.pin(50):
        for _ in range(3):
            assert rows_of(store.snapshot(TABLE, last)) == expected[last]
        assert store._tables[TABLE].base_epoch <= 50
        assert rows_of(store.snapshot(TABLE, 50)) == expected[50]
        assert rows_of(store.snapshot(TABLE, last)) == expected[last]
        assert rows_of(store.snapshot(TABLE, 50)) == expected[50]
    # Unpinned, a later read may compact past 50; then 50 is gone, loudly.
    assert rows_of(store.snapshot(TABLE, last)) == expected[last]
    assert store._tables[TABLE].base_epoch == last
    with pytest.raises(InternalError, match="compacted away"):
        store.snapshot(TABLE, 50)


# ---- commit -----------------------------------------------------------------
def test_commit_epoch_advances_max_committed_epoch_and_wakes_waiters() -> None:
    store = new_store()
    assert store.max_committed_epoch == 0
    assert not store.wait_committed(10, timeout_s=0)
    store.commit_epoch(10)
    assert store.max_committed_epoch == 10
    assert store.wait_committed(10, timeout_s=0)


def test_reset_to_committed_forgets_sealed_but_uncommitted_epochs() -> None:
    store = MemoryStateStore()
    schema = pa.schema([("k", pa.int64())])
    store.register_table(1, schema, [0])
    insert = pa.table({"__op": pa.array([0], pa.int8()), "k": [1]})
    store.seal(1, 10, insert)
    store.commit_epoch(10)
    store.seal(1, 20, pa.table({"__op": pa.array([0], pa.int8()), "k": [2]}))

    assert store.reset_to_committed() == 10
    assert store.snapshot(1, 20).column("k").to_pylist() == [1]
    # The forgotten epoch can be sealed again, as replay after recovery does.
    store.seal(1, 20, pa.table({"__op": pa.array([0], pa.int8()), "k": [3]}))
    assert sorted(store.snapshot(1, 20).column("k").to_pylist()) == [1, 3]
