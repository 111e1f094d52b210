"""SSTs: round trips of every key and value type, MVCC point reads, the bloom filter,
loud corruption (every byte flipped, every truncation), ranged reads and the merge."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import random
import struct
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from tidegate.common.chunk import Op
from tidegate.common.keys import encode_keys
from tidegate.errors import InternalError
from tidegate.state import store
from tidegate.state.sst import (
    EPOCH_COLUMN,
    FOOTER_SIZE,
    KEY_COLUMN,
    MAGIC,
    OP_COLUMN,
    SstCorrupted,
    SstInfo,
    SstReader,
    block_schema,
    build_sst,
    build_sst_from_deltas,
    checksum,
    encode_sst,
    key_hashes,
    merge_sst_rows,
    stable_key_order,
)

INS, DEL, UD, UI = Op.INSERT, Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])


def delta(ops: list[Op], rows: list[tuple[Any, ...]], schema: pa.Schema = SCHEMA) -> pa.Table:
    columns: list[Any] = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array([int(o) for o in ops], pa.int8())]
    arrays += [pa.array(list(c), f.type) for c, f in zip(columns, schema)]
    return pa.Table.from_arrays(arrays, schema=pa.schema([pa.field(OP_COLUMN, pa.int8()), *schema]))


def rows_of(table: pa.Table) -> list[tuple[Any, ...]]:
    return list(zip(*(c.to_pylist() for c in table.columns)))


def key(*values: Any, schema: pa.Schema = SCHEMA, pk: list[int] | None = None) -> bytes:
    pk = pk if pk is not None else [0]
    columns = {schema.names[i]: pa.array([v], schema.field(i).type) for i, v in zip(pk, values)}
    return bytes(encode_keys(pa.table(columns), list(range(len(pk)))).to_pylist()[0])


def test_op_column_matches_the_store() -> None:
    assert OP_COLUMN == store.OP_COLUMN


# ---- round trips ----------------------------------------------------------------------------------
ALL_TYPES = pa.schema(
    [
        ("k_text", pa.string()),
        ("k_decimal", pa.decimal128(38, 10)),
        ("k_interval", pa.month_day_nano_interval()),
        ("b", pa.bool_()),
        ("i16", pa.int16()),
        ("i32", pa.int32()),
        ("i64", pa.int64()),
        ("f32", pa.float32()),
        ("f64", pa.float64()),
        ("d", pa.decimal128(10, 2)),
        ("s", pa.string()),
        ("bytes", pa.binary()),
        ("day", pa.date32()),
        ("ts", pa.timestamp("us")),
        ("tstz", pa.timestamp("us", tz="UTC")),
        ("t", pa.time64("us")),
        ("iv", pa.month_day_nano_interval()),
    ]
)


def all_types_row(i: int) -> tuple[Any, ...]:
    none_if = (lambda v: None) if i % 5 == 0 else (lambda v: v)
    return (
        None if i % 7 == 0 else f"k{i % 3}\x00{i}",
        None if i % 11 == 0 else decimal.Decimal(f"{i - 20}.{i:010d}"),
        pa.MonthDayNano([i % 2, -i, i * 1000]),
        none_if(i % 2 == 0),
        none_if(i - 30),
        none_if(-(2**31) + i),
        none_if(2**63 - 1 - i),
        none_if(float(i) / 4),
        none_if(float("nan") if i == 3 else -float(i)),
        none_if(decimal.Decimal(f"{i}.25")),
        none_if("x" * i),
        none_if(bytes([0, i, 255])),
        none_if(dt.date(2024, 1, 1) + dt.timedelta(days=i)),
        none_if(dt.datetime(2024, 1, 1, 12) + dt.timedelta(microseconds=i)),
        none_if(dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=i)),
        none_if(dt.time(12, 0, i % 60)),
        none_if(pa.MonthDayNano([i, 0, -i])),
    )


def same_rows(a: list[tuple[Any, ...]], b: list[tuple[Any, ...]]) -> bool:
    """Equal rows, with NaN equal to NaN."""

    def normal(row: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row)

    return [normal(r) for r in a] == [normal(r) for r in b]


def test_every_type_round_trips_with_nulls_in_keys_and_values() -> None:
    pk = [0, 1, 2]
    rows = [all_types_row(i) for i in range(60)]
    data, info = build_sst("obj-1", 7, ALL_TYPES, pk, [(100, delta([INS] * 60, rows, ALL_TYPES))], block_rows_max=16)
    reader = SstReader(data, name="sst/obj-1")
    assert reader.info == info
    assert reader.schema.equals(ALL_TYPES) and reader.pk == pk and reader.block_count == 4
    scanned = reader.scan()
    assert scanned.schema.names == [KEY_COLUMN, EPOCH_COLUMN, OP_COLUMN, *ALL_TYPES.names]
    table_rows = rows_of(scanned.select(ALL_TYPES.names))
    # Key order: by the encoded key, which is SQL order of (k_text, k_decimal, k_interval), NULLs first.
    expected_order = sorted(range(60), key=lambda i: key(*rows[i][:3], schema=ALL_TYPES, pk=pk))
    assert same_rows(table_rows, [rows[i] for i in expected_order])
    assert scanned.column(KEY_COLUMN).to_pylist() == sorted(scanned.column(KEY_COLUMN).to_pylist())
    assert rows[0][0] is None and table_rows[0][0] is None  # NULL key columns sort first
    for i in (0, 3, 59):
        found = reader.get(key(*rows[i][:3], schema=ALL_TYPES, pk=pk), 100)
        assert found is not None and found[0] == INS and same_rows(rows_of(found[1]), [rows[i]])
        assert found[1].schema.equals(ALL_TYPES)


def test_info_describes_the_object() -> None:
    deltas = [(10, delta([INS, INS], [(2, "b"), (1, "a")])), (20, delta([DEL], [(2, "b")]))]
    data, info = build_sst("o", 3, SCHEMA, [0], deltas)
    assert info == SstInfo("o", 3, 10, 20, 3, len(data), key(1), key(2))
    reader = SstReader(data)
    assert (reader.object_id, reader.table_id, reader.min_epoch, reader.max_epoch) == ("o", 3, 10, 20)
    assert (reader.row_count, reader.first_key, reader.last_key, reader.size_bytes) == (3, key(1), key(2), len(data))


def test_an_empty_sst_round_trips() -> None:
    data, info = build_sst("empty", 1, SCHEMA, [0], [(5, delta([], []))])
    reader = SstReader(data, name="empty")
    assert info.row_count == 0 and reader.block_count == 0 and (info.min_epoch, info.max_epoch) == (5, 5)
    assert reader.scan().num_rows == 0 and reader.scan().schema.names[3:] == SCHEMA.names
    assert reader.get(key(1), 5) is None and not reader.may_contain(key(1))
    assert merge_sst_rows([reader.scan()], 5).num_rows == 0


def test_rows_sort_by_key_then_newest_epoch_and_keep_one_version_per_epoch() -> None:
    deltas = [
        (10, delta([INS, INS, INS], [(3, "c"), (1, "a"), (2, "b")])),
        (20, delta([UD, UI, DEL, INS], [(1, "a"), (1, "a2"), (2, "b"), (2, "b2")])),
        (30, delta([DEL], [(3, "c")])),
    ]
    reader = SstReader(build_sst("o", 1, SCHEMA, [0], deltas)[0])
    scanned = reader.scan()
    got = list(
        zip(
            scanned.column("id").to_pylist(),
            scanned.column(EPOCH_COLUMN).to_pylist(),
            scanned.column(OP_COLUMN).to_pylist(),
        )
    )
    assert got == [(1, 20, UI), (1, 10, INS), (2, 20, INS), (2, 10, INS), (3, 30, DEL), (3, 10, INS)]
    assert scanned.column("name").to_pylist() == ["a2", "a", "b2", "b", "c", "c"]
    at_15 = reader.scan(max_epoch=15)
    assert at_15.column(EPOCH_COLUMN).to_pylist() == [10, 10, 10]
    assert reader.scan(max_epoch=5).num_rows == 0


def test_deltas_must_carry_the_table_columns() -> None:
    bad = pa.table({OP_COLUMN: pa.array([0], pa.int8()), "other": [1], "name": ["a"]})
    with pytest.raises(InternalError, match="do not match"):
        build_sst("o", 1, SCHEMA, [0], [(1, bad)])


def test_a_table_without_key_columns_holds_one_row() -> None:
    # A global aggregate's state: pk == [], so every row has the empty key.
    schema = pa.schema([("count", pa.int64())])
    deltas = [(1, delta([INS], [(1,)], schema)), (2, delta([UD, UI], [(1,), (2,)], schema))]
    reader = SstReader(build_sst("g", 1, schema, [], deltas)[0])
    assert reader.scan().column(KEY_COLUMN).to_pylist() == [b"", b""]
    newest = reader.get(b"", 5)
    assert newest is not None and newest[0] == UI and rows_of(newest[1]) == [(2,)]
    assert rows_of(merge_sst_rows([reader.scan()], 1)) == [(1,)]


# ---- point reads ----------------------------------------------------------------------------------
def test_get_returns_the_newest_version_at_or_below_the_epoch_and_honours_deletes() -> None:
    deltas = [
        (10, delta([INS, INS], [(1, "v10"), (2, "other")])),
        (20, delta([UD, UI], [(1, "v10"), (1, "v20")])),
        (30, delta([DEL], [(1, "v20")])),
        (40, delta([INS], [(1, "v40")])),
    ]
    # Two rows per block: the versions of key 1 span three blocks.
    reader = SstReader(build_sst("o", 1, SCHEMA, [0], deltas, block_rows_max=2)[0])
    assert reader.block_count == 3

    def at(epoch: int) -> tuple[int, list[tuple[Any, ...]]] | None:
        found = reader.get(key(1), epoch)
        return None if found is None else (found[0], rows_of(found[1]))

    assert at(9) is None
    assert at(10) == (INS, [(1, "v10")]) and at(19) == (INS, [(1, "v10")])
    assert at(20) == (UI, [(1, "v20")])
    assert at(35) == (DEL, [(1, "v20")])  # the tombstone: the key is absent at 35
    assert at(40) == (INS, [(1, "v40")]) and at(2**64 - 1) == (INS, [(1, "v40")])
    other = reader.get(key(2), 15)
    assert other is not None and other[0] == INS and rows_of(other[1]) == [(2, "other")]
    assert reader.get(key(3), 40) is None and reader.get(key(0), 40) is None


# ---- bloom filter ----------------------------------------------------------------------------------
def test_bloom_filter_has_no_false_negatives_and_about_one_percent_false_positives() -> None:
    n = 20_000
    ids = np.arange(0, 2 * n, 2)  # even ids present, odd ids absent
    table = pa.table({OP_COLUMN: pa.array(np.zeros(n, np.int8)), "id": ids, "name": pa.array(["x"] * n)})
    reader = SstReader(build_sst("o", 1, SCHEMA, [0], [(1, table)])[0])
    present = encode_keys(pa.table({"id": ids}), [0])
    absent = encode_keys(pa.table({"id": ids + 1}), [0])
    assert reader.bloom.may_contain(present).all()
    rate = reader.bloom.may_contain(absent).mean()
    assert 0.002 < rate < 0.02, rate  # 10 bits and 7 hashes per key: 0.82% in theory
    string_keys = pa.table({"id": np.arange(n), "name": [f"name-{i}" for i in range(n)]})
    with_strings = SstReader(
        build_sst("s", 1, SCHEMA, [0, 1], [(1, string_keys.add_column(0, OP_COLUMN, pa.array(np.zeros(n, np.int8))))])[
            0
        ]
    )
    assert with_strings.bloom.may_contain(encode_keys(string_keys, [0, 1])).all()
    other = pa.table({"id": np.arange(n), "name": [f"name-{i}-" for i in range(n)]})
    assert with_strings.bloom.may_contain(encode_keys(other, [0, 1])).mean() < 0.02


def test_key_hashes_do_not_depend_on_the_batch_a_key_is_hashed_in() -> None:
    # Builds hash many keys of mixed widths at once; lookups hash one key at a time (the fixed-width path).
    rng = random.Random(3)
    values = [bytes(rng.randrange(256) for _ in range(rng.choice([0, 1, 9, 63, 64, 65, 300]))) for _ in range(200)]
    together = key_hashes(pa.array(values, pa.binary()))
    alone = [int(key_hashes(pa.array([v], pa.binary()))[0]) for v in values]
    assert together.tolist() == alone
    same_width = [v for v in values if len(v) == 9]
    assert key_hashes(pa.array(same_width, pa.binary())).tolist() == [
        h for v, h in zip(values, together.tolist()) if len(v) == 9
    ]
    assert len(set(together.tolist())) == len(set(values))


# ---- corruption -----------------------------------------------------------------------------------
def small_sst() -> tuple[bytes, list[tuple[int, bytes]]]:
    """A four-block SST of two versions over 12 keys, and (id, key) of every key."""
    first = delta([INS] * 12, [(i, f"n{i}") for i in range(12)])
    second = delta([UD, UI, DEL], [(3, "n3"), (3, "m3"), (7, "n7")])
    data, _ = build_sst("small", 1, SCHEMA, [0], [(1, first), (2, second)], block_rows_max=4)
    return data, [(i, key(i)) for i in range(12)]


def read_everything(data: bytes | bytearray, keys: list[bytes], name: str = "sst/small") -> list[Any]:
    reader = SstReader(bytes(data), name=name)
    results: list[Any] = [rows_of(reader.scan()), rows_of(reader.scan(max_epoch=1))]
    for k in keys:
        found = reader.get(k, 2)
        results.append(None if found is None else (found[0], rows_of(found[1])))
        results.append(reader.may_contain(k))
    return results


def test_flipping_any_byte_is_detected() -> None:
    data, pairs = small_sst()
    keys = [k for _, k in pairs]
    expected = read_everything(data, keys)
    undetected = []
    for position in range(len(data)):
        corrupt = bytearray(data)
        corrupt[position] ^= 0xFF
        try:
            got = read_everything(corrupt, keys)
        except SstCorrupted as e:
            assert "sst/small" in str(e)
            continue
        if got != expected:
            pytest.fail(f"flipping byte {position} changed what was read")
        undetected.append(position)
    # Every byte lies under a checksum, so every flip is caught, not just harmless.
    assert undetected == []


def test_checksum_errors_name_the_sst_the_block_and_both_checksums() -> None:
    data, pairs = small_sst()
    corrupt = bytearray(data)
    corrupt[10] ^= 0x01  # inside block 0
    reader = SstReader(bytes(corrupt), name="sst/1-2-abc.sst")
    with pytest.raises(SstCorrupted, match=r"SST sst/1-2-abc.sst .*block 0 .*expected 0x[0-9a-f]{8}, actual 0x"):
        reader.scan()
    with pytest.raises(SstCorrupted, match="block 0"):
        reader.get(pairs[0][1], 2)


def test_every_truncation_is_detected() -> None:
    data, pairs = small_sst()
    for length in range(len(data)):
        with pytest.raises(SstCorrupted, match="sst/t"):
            read_everything(data[:length], [k for _, k in pairs], name="sst/t")


def test_a_ranged_reader_returning_short_reads_is_detected() -> None:
    data, _ = small_sst()
    truncated = data[: len(data) // 2]
    with pytest.raises(SstCorrupted, match="truncated"):
        SstReader(lambda start, length: truncated[start : start + length], size=len(data), name="x")


def test_a_wrong_magic_or_version_is_refused() -> None:
    data, _ = small_sst()
    with pytest.raises(SstCorrupted, match="bad magic"):
        SstReader(data[: -len(MAGIC)] + b"NOTANSST", name="x")
    with pytest.raises(SstCorrupted, match="bad magic"):
        SstReader(b"\x00" * 100, name="x")
    # A footer that is intact but from a future format: version 2, with a valid checksum.
    footer = bytearray(data[-FOOTER_SIZE:])
    body_size = FOOTER_SIZE - 4 - len(MAGIC)
    struct.pack_into("<I", footer, body_size - 4, 2)
    struct.pack_into("<I", footer, body_size, checksum(bytes(footer[:body_size]) + MAGIC))
    with pytest.raises(SstCorrupted, match="format version 2"):
        SstReader(data[:-FOOTER_SIZE] + bytes(footer), name="x")


# ---- ranged reads ---------------------------------------------------------------------------------
class CountingReader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.calls: list[tuple[int, int]] = []

    def __call__(self, start: int, length: int) -> bytes:
        self.calls.append((start, length))
        return self.data[start : start + length]

    @property
    def bytes_read(self) -> int:
        return sum(length for _, length in self.calls)


def test_a_ranged_reader_fetches_only_what_it_needs() -> None:
    n = 40_000
    table = pa.table(
        {OP_COLUMN: pa.array(np.zeros(n, np.int8)), "id": np.arange(n), "name": [f"name-{i}" for i in range(n)]}
    )
    data, _ = build_sst("o", 1, SCHEMA, [0], [(1, table)], block_rows_max=1000)
    source = CountingReader(data)
    reader = SstReader(source, size=len(data), name="big")
    assert len(source.calls) == 2  # footer, index
    assert reader.block_count == 40

    found = reader.get(key(12_345), 1)
    assert found is not None and rows_of(found[1]) == [(12_345, "name-12345")]
    assert len(source.calls) == 4  # + bloom filter (1.25 bytes a key), + one block
    _, block_length = source.calls[-1]
    assert block_length < len(data) // 30 and source.bytes_read < len(data) // 4

    assert reader.get(key(30_000), 1) is not None
    assert len(source.calls) == 5  # the bloom filter is read once
    assert reader.get(key(n + 5), 1) is None
    assert len(source.calls) <= 6  # outside the key range: no block read at all

    calls_before = len(source.calls)
    assert reader.scan().num_rows == n
    assert len(source.calls) - calls_before == 40


def test_scan_skips_blocks_newer_than_the_epoch() -> None:
    deltas = [(e, delta([INS] * 4, [(e * 10 + i, "x") for i in range(4)])) for e in (1, 2, 3)]
    data, _ = build_sst("o", 1, SCHEMA, [0], deltas, block_rows_max=4)
    source = CountingReader(data)
    reader = SstReader(source, size=len(data))
    assert reader.scan(max_epoch=1).column("id").to_pylist() == [10, 11, 12, 13]
    assert len(source.calls) == 3  # footer, index, the one block of epoch 1


# ---- merging ----------------------------------------------------------------------------------------
def naive_merge(history: list[tuple[int, int, int, tuple[Any, ...]]], max_epoch: int) -> list[tuple[Any, ...]]:
    """history: (key id, epoch, op, row) in write order. Last writer at or below max_epoch wins."""
    latest: dict[int, tuple[int, tuple[Any, ...]]] = {}
    for key_id, epoch, op, row in history:
        if epoch <= max_epoch:
            latest[key_id] = (op, row)
    return sorted(row for op, row in latest.values() if op in (INS, UI))


@pytest.mark.parametrize("seed", range(25))
def test_merge_equals_a_naive_merge_on_random_histories(seed: int) -> None:
    rng = random.Random(seed)
    string_keys = seed % 2 == 1  # odd seeds: variable-width keys
    schema = pa.schema([("id", pa.string() if string_keys else pa.int64()), ("v", pa.int64())])
    live: dict[int, tuple[Any, ...]] = {}
    history: list[tuple[int, int, int, tuple[Any, ...]]] = []
    epochs_per_sst: list[list[tuple[int, pa.Table]]] = [[] for _ in range(rng.randint(1, 4))]
    epoch = 0
    for _ in range(rng.randint(1, 12)):
        epoch += rng.randint(1, 3)
        ops: list[Op] = []
        rows: list[tuple[Any, ...]] = []
        for _ in range(rng.randint(0, 15)):
            key_id = rng.randint(0, 20)
            key_value: Any = f"k{key_id}" if string_keys else key_id
            writes: list[tuple[Op, tuple[Any, ...]]]
            if key_id not in live:
                live[key_id] = (key_value, rng.randint(0, 999))
                writes = [(INS, live[key_id])]
            elif rng.random() < 0.5:
                writes = [(DEL, live.pop(key_id))]
            else:
                new = (key_value, rng.randint(0, 999))
                writes = [(UD, live[key_id]), (UI, new)]
                live[key_id] = new
            ops += [op for op, _ in writes]
            rows += [row for _, row in writes]
            history += [(key_id, epoch, int(op), row) for op, row in writes]
        rng.choice(epochs_per_sst).append((epoch, delta(ops, rows, schema)))
    scans = []
    for i, deltas in enumerate(epochs_per_sst):
        data, _ = build_sst(f"o{i}", 1, schema, [0], deltas, block_rows_max=rng.randint(1, 8))
        scans.append(SstReader(data).scan())
    rng.shuffle(scans)
    for max_epoch in {0, epoch // 2, epoch, rng.randint(0, epoch), 2**64 - 1}:
        merged = merge_sst_rows(scans, max_epoch)
        assert merged.schema.equals(schema)
        assert sorted(rows_of(merged)) == naive_merge(history, max_epoch)
        keys = encode_keys(merged, [0]).to_pylist()
        assert keys == sorted(keys)  # in key order


def test_stable_key_order_matches_python_for_fixed_and_variable_widths() -> None:
    rng = random.Random(7)
    fixed = [bytes(rng.choice([0, 1, 255]) for _ in range(11)) for _ in range(500)]
    variable = [bytes(rng.choice([0, 1, 255]) for _ in range(rng.randint(0, 4))) for _ in range(500)]
    for values in (fixed, variable):
        array = pa.array(values, pa.binary())
        assert stable_key_order(array).tolist() == sorted(range(len(values)), key=values.__getitem__)
        newest_first = sorted(range(len(values)), key=lambda i: (values[i], -i))
        assert stable_key_order(array, newest_first=True).tolist() == newest_first


# ---- what the durable store and compaction use -------------------------------------------------------------
def test_build_keeps_the_blocks_it_wrote_and_they_equal_what_is_read_back() -> None:
    first = delta([INS] * 12, [(i, f"n{i}") for i in range(12)])
    second = delta([UD, UI, DEL], [(3, "n3"), (3, "m3"), (7, "n7")])
    built = build_sst_from_deltas("o", 1, SCHEMA, [0], [(1, first), (2, second)], block_rows_max=4)
    reader = SstReader(built.data, name="o")
    assert built.info == reader.info and len(built.blocks) == reader.block_count == 4
    for i, block in enumerate(built.blocks):
        assert reader.read_block(i).equals(block)
    assert reader.block_min_epochs.tolist() == [int(b.column(EPOCH_COLUMN).to_numpy().min()) for b in built.blocks]
    assert reader.block_max_epochs.tolist() == [int(b.column(EPOCH_COLUMN).to_numpy().max()) for b in built.blocks]
    assert reader.block_first_keys.to_pylist() == [b.column(KEY_COLUMN)[0].as_py() for b in built.blocks]
    assert reader.block_last_keys.to_pylist() == [b.column(KEY_COLUMN)[-1].as_py() for b in built.blocks]
    assert reader.block_row_counts.tolist() == [4, 4, 4, 2]


def test_encode_sst_writes_sorted_rows_as_they_are() -> None:
    deltas = [(5, delta([INS] * 5, [(i, f"n{i}") for i in range(5)])), (9, delta([DEL], [(2, "n2")]))]
    rows = SstReader(build_sst("a", 1, SCHEMA, [0], deltas)[0]).scan()
    built = encode_sst("b", 1, SCHEMA, [0], rows, block_rows_max=2)
    reader = SstReader(built.data, name="b")
    assert reader.scan().equals(rows)
    assert (reader.min_epoch, reader.max_epoch, reader.row_count) == (5, 9, 6)
    assert reader.get(key(2), 9) is not None and reader.get(key(2), 9)[0] == DEL  # type: ignore[index]
    with pytest.raises(InternalError, match="columns"):
        encode_sst("c", 1, SCHEMA, [0], rows.drop_columns([EPOCH_COLUMN]))
    empty = encode_sst("d", 1, SCHEMA, [0], block_schema(SCHEMA).empty_table())
    assert SstReader(empty.data).row_count == 0 and empty.blocks == []


def test_a_reader_rebound_to_another_source_reads_its_blocks_there() -> None:
    data, pairs = small_sst()
    reader = SstReader(data, name="sst/small")
    _ = reader.bloom
    source = CountingReader(data)
    reader.rebind(source)
    assert len(source.calls) == 0  # footer, index and bloom filter stay from the first source
    assert reader.get(pairs[5][1], 2) is not None
    assert len(source.calls) == 1
    assert reader.metadata_nbytes > 0


def test_bloom_probes_of_prehashed_keys_equal_probes_of_the_keys() -> None:
    data, pairs = small_sst()
    reader = SstReader(data)
    probes = pa.array([k for _, k in pairs] + [key(i) for i in range(100, 200)], pa.binary())
    assert np.array_equal(reader.bloom.may_contain(probes), reader.bloom.may_contain_hashes(key_hashes(probes)))
    assert reader.bloom.may_contain_hashes(np.zeros(0, np.uint64)).shape == (0,)
