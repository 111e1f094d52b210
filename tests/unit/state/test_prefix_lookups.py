"""get_prefix_rows: all rows of a group (leading pk columns) in both stores, at any readable epoch.

The property test in test_durable_store.py compares the stores over random histories; these
pin down the edge cases by name and what the durable store reads from object storage.
"""

from __future__ import annotations

import random
from typing import Any

import pyarrow as pa
import pytest
from state_deltas import CountingObjectStore, delta

from tidegate.common.chunk import Op
from tidegate.common.keys import encode_keys
from tidegate.errors import InternalError
from tidegate.meta.meta_store import MemoryMetaStore
from tidegate.state.durable_store import DurableStateStore
from tidegate.state.object_store import MemoryObjectStore, ObjectStore
from tidegate.state.store import MemoryStateStore, StateStore
from tidegate.state.versions import Keys, prefix_ends

INS, DEL, UD, UI = Op.INSERT, Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT
Row = tuple[Any, ...]
# Key (k, id): the groups are k.
SCHEMA = pa.schema([("k", pa.int64()), ("id", pa.int64()), ("name", pa.string())])
TABLE = 5


def rows_of(table: pa.Table) -> list[Row]:
    columns = [c.to_pylist() for c in table.columns]
    return sorted((tuple(col[i] for col in columns) for i in range(table.num_rows)), key=repr)


def durable(objects: ObjectStore | None = None, meta: MemoryMetaStore | None = None, **options: Any) -> StateStore:
    store = DurableStateStore(
        objects if objects is not None else MemoryObjectStore(),
        meta if meta is not None else MemoryMetaStore(),
        **options,
    )
    store.recover()
    return store


def memory() -> StateStore:
    return MemoryStateStore()


STORES = {"memory": memory, "durable": durable}


def checkpoint(store: StateStore, epoch: int) -> None:
    store.commit_version(epoch, store.sync(epoch))


def ks(*values: Any, type: pa.DataType | None = None) -> pa.Table:
    """Prefixes of one column, the group ``k``."""
    return pa.table({"k": pa.array(list(values), type or pa.int64())})


def fill(store: StateStore, schema: pa.Schema, pk: list[int], rows: list[Row]) -> None:
    store.register_table(TABLE, schema, pk)
    store.seal(TABLE, 1, delta(schema, [INS] * len(rows), rows))
    checkpoint(store, 1)


@pytest.fixture(params=sorted(STORES))
def store(request: pytest.FixtureRequest) -> StateStore:
    return STORES[request.param]()


# ---- edge cases, both stores ------------------------------------------------------------------------------
GROUPS = [(k, i, f"{k}/{i}") for k in (-1, 0, 1, 7) for i in range(3)]


def test_empty_prefixes_give_an_empty_table_of_the_table_schema(store: StateStore) -> None:
    fill(store, SCHEMA, [0, 1], GROUPS)
    empty = store.get_prefix_rows(TABLE, ks(), 1)
    assert empty.schema.equals(SCHEMA) and empty.num_rows == 0
    assert store.get_prefix_rows(TABLE, pa.table({"k": [0], "id": [0]}).slice(0, 0), 1).num_rows == 0


def test_each_matching_row_comes_once_whatever_the_duplicates(store: StateStore) -> None:
    fill(store, SCHEMA, [0, 1], GROUPS)
    found = store.get_prefix_rows(TABLE, ks(7, -1, 7, 7, 42, -1), 1)
    assert found.schema.equals(SCHEMA)
    assert rows_of(found) == sorted((r for r in GROUPS if r[0] in (-1, 7)), key=repr)


def test_every_prefix_length_up_to_the_whole_key(store: StateStore) -> None:
    fill(store, SCHEMA, [0, 1], GROUPS)
    assert rows_of(store.get_prefix_rows(TABLE, pa.table({"k": [0, 1, 7], "id": [2, 5, 0]}), 1)) == [
        (0, 2, "0/2"),
        (7, 0, "7/0"),
    ]
    # Prefix columns are cast to the key's types: an int32 prefix of a BIGINT column still matches.
    assert len(rows_of(store.get_prefix_rows(TABLE, ks(0, type=pa.int32()), 1))) == 3


@pytest.mark.parametrize("columns", [0, 3])
def test_a_prefix_of_no_column_or_longer_than_the_key_is_refused(store: StateStore, columns: int) -> None:
    fill(store, SCHEMA, [0, 1], GROUPS)
    prefixes = pa.table({n: pa.array([0], pa.int64()) for n in ["k", "id", "name"][:columns]})
    with pytest.raises(InternalError, match="prefix needs 1 to 2 columns"):
        store.get_prefix_rows(TABLE, prefixes, 1)


def test_a_null_prefix_value_matches_null_key_values_only(store: StateStore) -> None:
    schema = pa.schema([("s", pa.string()), ("g", pa.int32()), ("v", pa.int64())])
    rows = [(s, g, i) for i, (s, g) in enumerate((s, g) for s in (None, "", "a") for g in (None, 0, -1))]
    fill(store, schema, [0, 1], rows)
    assert rows_of(store.get_prefix_rows(TABLE, pa.table({"s": pa.array([None], pa.string())}), 1)) == [
        (None, -1, 2),
        (None, 0, 1),
        (None, None, 0),
    ]
    both = pa.table({"s": pa.array(["", None], pa.string()), "g": pa.array([None, -1], pa.int32())})
    assert rows_of(store.get_prefix_rows(TABLE, both, 1)) == [("", None, 3), (None, -1, 2)]


def test_a_string_prefix_does_not_match_the_strings_it_begins(store: StateStore) -> None:
    """The encoding ends a string with 0x00 0x00 and escapes 0x00 as 0x00 0xFF: 'ab' is not a byte-prefix of
    the encoding of 'abc', 'ab\\x00' or 'ab\\xff'-like values."""
    schema = pa.schema([("s", pa.string()), ("t", pa.string()), ("v", pa.int64())])
    values = ["a", "ab", "abc", "ab\x00", "ab\x00\x00", "ab\x01", "aba", "b", ""]
    rows = [(s, t, i) for i, (s, t) in enumerate((s, t) for s in values for t in ("", "b", "c"))]
    fill(store, schema, [0, 1], rows)
    for value in values:
        found = store.get_prefix_rows(TABLE, pa.table({"s": [value]}), 1)
        assert {r[0] for r in rows_of(found)} == {value}, value
        assert found.num_rows == 3
    # Two columns: ('a', 'b') must not match ('ab', …) although the strings concatenate alike.
    pair = pa.table({"s": ["a", "ab"], "t": ["b", ""]})
    assert [r[:2] for r in rows_of(store.get_prefix_rows(TABLE, pair, 1))] == [("a", "b"), ("ab", "")]


def test_a_row_deleted_in_a_later_epoch_is_gone_from_then_on_and_older_epochs_still_see_it(store: StateStore) -> None:
    fill(store, SCHEMA, [0, 1], GROUPS)
    store.seal(TABLE, 2, delta(SCHEMA, [DEL, UD, UI, INS], [(1, 0, "1/0"), (1, 1, "1/1"), (1, 1, "new"), (1, 9, "9")]))
    checkpoint(store, 2)
    store.seal(TABLE, 3, delta(SCHEMA, [DEL], [(1, 9, "9")]))  # sealed, not checkpointed: in the shared buffer
    assert rows_of(store.get_prefix_rows(TABLE, ks(1), 1)) == [(1, 0, "1/0"), (1, 1, "1/1"), (1, 2, "1/2")]
    assert rows_of(store.get_prefix_rows(TABLE, ks(1), 2)) == [(1, 1, "new"), (1, 2, "1/2"), (1, 9, "9")]
    assert rows_of(store.get_prefix_rows(TABLE, ks(1), 3)) == [(1, 1, "new"), (1, 2, "1/2")]


# ---- the durable store: sources, blocks and reads ---------------------------------------------------------
def group_rows(k: int, ids: range, tag: str) -> list[Row]:
    return [(k, i, f"{tag}{i}") for i in ids]


def test_a_group_spread_over_blocks_ssts_levels_and_the_shared_buffer_reads_exactly() -> None:
    objects, meta = CountingObjectStore(), MemoryMetaStore()
    oracle = MemoryStateStore()
    store = durable(objects, meta, block_rows_max=8, sst_bytes_target=1_500, l0_ssts_max=2)
    for s in (store, oracle):
        s.register_table(TABLE, SCHEMA, [0, 1])
    rng = random.Random(3)
    live: dict[tuple[int, int], str] = {}
    for epoch in range(1, 13):
        ops: list[Op] = []
        rows: list[Row] = []
        for k, i in {(rng.choice([3, 4, 4, 4, 5]), rng.randrange(60)) for _ in range(30)}:
            if (k, i) in live and rng.random() < 0.3:
                ops.append(DEL)
                rows.append((k, i, live.pop((k, i))))
            elif (k, i) in live:
                ops += [UD, UI]
                rows += [(k, i, live[(k, i)]), (k, i, f"e{epoch}")]
                live[(k, i)] = f"e{epoch}"
            else:
                ops.append(INS)
                live[(k, i)] = f"e{epoch}"
                rows.append((k, i, live[(k, i)]))
        for s in (store, oracle):
            s.seal(TABLE, epoch, delta(SCHEMA, ops, rows))
        if epoch < 11:  # epochs 11 and 12 stay in the shared buffer
            checkpoint(store, epoch)
            oracle.commit_epoch(epoch)
            if epoch < 10:  # the last checkpoint's SST stays in L0
                store.maintain(epoch)
    assert isinstance(store, DurableStateStore)
    state = store._state[TABLE]
    assert len(state.l1) > 1 and state.l0 and len(state.deltas) == 2
    for prefixes in (ks(4), ks(3, 5), ks(4, 99, 3, 4), ks(99)):
        for epoch in (10, 11, 12):
            got = store.get_prefix_rows(TABLE, prefixes, epoch)
            assert rows_of(got) == rows_of(oracle.get_prefix_rows(TABLE, prefixes, epoch)), (prefixes, epoch)
    expected = [(4, i, v) for (k, i), v in live.items() if k == 4]
    assert rows_of(store.get_prefix_rows(TABLE, ks(4), 12)) == sorted(expected, key=repr)
    assert len(expected) > 3 * 8  # more rows than three blocks hold


def overlapping_blocks(store: DurableStateStore, k: int) -> int:
    """The blocks whose key range meets group ``k`` (keys from enc(k) up to, excluding, enc(k + 1))."""
    low, high = (encode_keys(ks(v), [0])[0].as_py() for v in (k, k + 1))
    state = store._state[TABLE]
    count = 0
    for sst in state.l0 + state.l1:
        firsts = sst.reader.block_first_keys.to_pylist()
        lasts = sst.reader.block_last_keys.to_pylist()
        count += sum(first < high and last >= low for first, last in zip(firsts, lasts))
    return count


def test_a_cold_store_reads_only_the_blocks_that_can_hold_the_prefixes_then_serves_them_from_the_cache() -> None:
    objects, meta = CountingObjectStore(), MemoryMetaStore()
    writer = durable(objects, meta, block_rows_max=50, l0_ssts_max=1)
    writer.register_table(TABLE, SCHEMA, [0, 1])
    # 100 groups of 20 rows: 40 blocks; group 42 straddles a block boundary (rows 840..859).
    writer.seal(TABLE, 1, delta(SCHEMA, [INS] * 2000, [r for k in range(100) for r in group_rows(k, range(20), "a")]))
    checkpoint(writer, 1)
    assert isinstance(writer, DurableStateStore) and writer.compact(TABLE)  # into the L1 run
    writer.seal(TABLE, 2, delta(SCHEMA, [INS] * 10, group_rows(42, range(100, 110), "b")))
    checkpoint(writer, 2)  # an L0 SST over the L1 run
    cold = durable(objects, meta, block_rows_max=50)
    cold.register_table(TABLE, SCHEMA, [0, 1])
    assert isinstance(cold, DurableStateStore)
    blocks = overlapping_blocks(cold, 42)
    assert blocks == 3  # two in L1, one in L0
    before = objects.gets
    found = cold.get_prefix_rows(TABLE, ks(42), 2)
    assert rows_of(found) == sorted(group_rows(42, range(20), "a") + group_rows(42, range(100, 110), "b"), key=repr)
    assert objects.gets - before == blocks
    # Many prefixes in one call: one read per distinct block they overlap, each block read once.
    before = objects.gets
    wanted = [10, 11, 12, 42, 43, 97]
    found = cold.get_prefix_rows(TABLE, ks(*wanted, 11, 10), 2)
    assert sorted({r[0] for r in rows_of(found)}) == wanted and found.num_rows == 6 * 20 + 10
    new_blocks = {b for k in (10, 11, 12, 43, 97) for b in range(k * 20 // 50, (k * 20 + 19) // 50 + 1)} - {16, 17}
    assert objects.gets - before == len(new_blocks)
    before = objects.gets
    assert cold.get_prefix_rows(TABLE, ks(*wanted), 2).num_rows == found.num_rows
    assert objects.gets == before  # warm: every block from the cache


def test_a_pinned_epoch_keeps_its_group_rows_across_compaction() -> None:
    store = durable(l0_ssts_max=1, block_rows_max=4)
    store.register_table(TABLE, SCHEMA, [0, 1])
    store.seal(TABLE, 1, delta(SCHEMA, [INS] * 10, group_rows(1, range(10), "a")))
    checkpoint(store, 1)
    with store.pin_committed() as pinned:
        store.seal(TABLE, 2, delta(SCHEMA, [DEL] * 5, group_rows(1, range(0, 10, 2), "a")))
        checkpoint(store, 2)
        store.maintain(2)
        assert store.stats().compactions == 1
        assert rows_of(store.get_prefix_rows(TABLE, ks(1), pinned)) == group_rows(1, range(10), "a")
        assert rows_of(store.get_prefix_rows(TABLE, ks(1), 2)) == group_rows(1, range(1, 10, 2), "a")


# ---- prefix ends ------------------------------------------------------------------------------------------------
def test_prefix_ends_bound_exactly_the_keys_that_start_with_the_prefix() -> None:
    rng = random.Random(11)

    def random_bytes(most: int) -> bytes:
        return bytes(rng.choice([0, 1, 0x7F, 0xFE, 0xFF]) for _ in range(rng.randint(0, most)))

    prefixes = [bytes([rng.choice([0, 1])]) + random_bytes(4) for _ in range(300)] + [b"\x01\xff\xff", b"\x00\xfe"]
    ends = prefix_ends(Keys.of(pa.array(prefixes, pa.binary()))).array.to_pylist()
    assert ends[-2:] == [b"\x02", b"\x00\xff"]
    for prefix, end in zip(prefixes, ends):
        assert prefix < end and not end.endswith(b"\x00")
        for _ in range(20):
            key = prefix[: rng.randint(0, len(prefix))] + random_bytes(6)
            assert (prefix <= key < end) == key.startswith(prefix), (prefix, end, key)
        assert prefix + random_bytes(3) < end
