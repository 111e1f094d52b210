"""Compaction: L0 into the L1 run — what is rewritten, which versions survive, when old objects go."""

from __future__ import annotations

import bisect
import itertools
import json
import random
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from state_deltas import CountingObjectStore, change
from state_deltas import delta as schema_delta

from tidegate.common.chunk import Op
from tidegate.meta.meta_store import MemoryMetaStore
from tidegate.state.compaction import collapse_versions, compact_levels, cut_points
from tidegate.state.durable_store import SST_PREFIX, VERSION_KEY, DurableStateStore
from tidegate.state.object_store import MemoryObjectStore
from tidegate.state.sst import EPOCH_COLUMN, KEY_COLUMN, SstInfo, SstReader, block_schema, build_sst_from_deltas
from tidegate.state.store import OP_COLUMN
from tidegate.state.versions import Keys, Run, newest_visible

INS, DEL, UD, UI = Op.INSERT, Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
TABLE = 3
Row = tuple[Any, ...]


def delta(ops: list[Op], rows: list[Row]) -> pa.Table:
    return schema_delta(SCHEMA, ops, rows)


def rows_of(table: pa.Table) -> list[Row]:
    columns = [c.to_pylist() for c in table.columns]
    return sorted(tuple(col[i] for col in columns) for i in range(table.num_rows))


def new_store(objects: MemoryObjectStore, meta: Any = None, **options: Any) -> DurableStateStore:
    store = DurableStateStore(objects, meta if meta is not None else MemoryMetaStore(), **options)
    store.recover()
    store.register_table(TABLE, SCHEMA, [0])
    return store


def checkpoint(store: DurableStateStore, epoch: int) -> None:
    store.commit_version(epoch, store.sync(epoch))


def l1_readers(store: DurableStateStore) -> list[SstReader]:
    return [s.reader for s in store._state[TABLE].l1]


def decode_id(key: bytes) -> int:
    """The BIGINT of a one-column key: marker byte, then big-endian with the sign bit flipped."""
    return int.from_bytes(key[1:], "big") ^ (1 << 63)


def l1_ids(store: DurableStateStore) -> list[str]:
    return [s.object_id for s in store._state[TABLE].l1]


# ---- the pure parts ---------------------------------------------------------------------------------------------
def versions(rows: list[tuple[int, int, Op]]) -> Run:
    """A run of (id, epoch, op) in the given order (must be key asc, epoch desc)."""
    table = pa.table(
        {
            KEY_COLUMN: pa.array([i.to_bytes(2, "big") for i, _, _ in rows], pa.binary()),
            EPOCH_COLUMN: pa.array([e for _, e, _ in rows], pa.uint64()),
            OP_COLUMN: pa.array([int(o) for _, _, o in rows], pa.int8()),
            "id": pa.array([i for i, _, _ in rows], pa.int64()),
            "name": pa.array([f"{i}@{e}" for i, e, _ in rows]),
        }
    )
    return Run.of(table)


def kept(table: pa.Table) -> list[tuple[int, int]]:
    return list(zip(table.column("id").to_pylist(), table.column(EPOCH_COLUMN).to_pylist()))


def test_collapse_keeps_versions_above_the_horizon_and_the_newest_at_or_below_it() -> None:
    run = versions([(1, 9, UI), (1, 7, UI), (1, 5, INS), (1, 2, INS), (2, 4, DEL), (2, 1, INS), (3, 8, INS)])
    assert kept(collapse_versions(run, 6, bottom=False)) == [(1, 9), (1, 7), (1, 5), (2, 4), (3, 8)]
    # At the bottom a settled tombstone goes too: nothing older survives below it.
    assert kept(collapse_versions(run, 6, bottom=True)) == [(1, 9), (1, 7), (1, 5), (3, 8)]
    assert kept(collapse_versions(run, 100, bottom=True)) == [(1, 9), (3, 8)]
    assert kept(collapse_versions(run, 0, bottom=True)) == kept(run.table)  # nothing settled yet


def test_cut_points_fall_on_key_boundaries() -> None:
    keys = Keys.of(pa.array([bytes([k]) for k in [1, 1, 1, 2, 3, 3, 4, 5, 5, 5, 5]], pa.binary()))
    assert cut_points(keys, 2) == [(0, 3), (3, 6), (6, 11)]  # at least 2 rows, up to a key boundary
    assert cut_points(keys, 100) == [(0, 11)]
    assert cut_points(Keys.of(pa.array([], pa.binary())), 5) == []


@pytest.mark.parametrize("seed", range(20))
def test_compact_levels_preserves_every_read_at_or_above_the_horizon(seed: int) -> None:
    rng = random.Random(seed)
    epoch = 0
    live: dict[int, str] = {}
    ssts: list[tuple[pa.Table, SstInfo]] = []
    for _ in range(rng.randint(1, 6)):
        deltas = []
        for _ in range(rng.randint(1, 3)):
            epoch += 1
            ops: list[Op] = []
            rows: list[Row] = []
            for key in rng.sample(range(60), rng.randint(0, 12)):
                deleted = key in live and rng.random() < 0.4
                change(live, key, None if deleted else f"{key}@{epoch}", ops, rows)
            deltas.append((epoch, delta(ops, rows)))
        built = build_sst_from_deltas(f"l0-{len(ssts)}", TABLE, SCHEMA, [0], deltas, block_rows_max=4)
        if built.info.row_count:
            ssts.append((pa.concat_tables(built.blocks), built.info))
    # Split the oldest SSTs off as a non-overlapping "L1" made by a first compaction.
    split = rng.randint(0, len(ssts))
    target = block_schema(SCHEMA)

    def compacted(l0: list[tuple[pa.Table, SstInfo]], l1: list[tuple[pa.Table, SstInfo]], horizon: int) -> list[Any]:
        def write(rows: pa.Table) -> tuple[pa.Table, SstInfo]:
            keys = rows.column(KEY_COLUMN)
            info = SstInfo("out", TABLE, 0, 0, rows.num_rows, 0, keys[0].as_py(), keys[-1].as_py())
            return rows, info

        outcome = compact_levels(
            [(t, i) for t, i in l0],
            [(t, i) for t, i in l1],
            read=lambda t: t,
            write=write,
            horizon=horizon,
            sst_bytes_target=rng.choice([50, 300, 10_000]),
            block_schema=target,
        )
        replaced = {id(t) for t in outcome.replaced_l1}
        assert {id(t) for t in outcome.kept_l1} | replaced == {id(t) for t, _ in l1}
        return sorted([(t, i) for t, i in l1 if id(t) not in replaced] + outcome.outputs, key=lambda p: p[1].first_key)

    horizon_first = rng.randint(0, epoch)
    l1 = compacted(ssts[:split], [], horizon_first)
    horizon = rng.randint(horizon_first, epoch)
    result = compacted(ssts[split:], l1, horizon)
    for before, after in itertools.pairwise(result):
        assert before[1].last_key < after[1].first_key  # the run stays disjoint
    every = [Run.of(t) for t, _ in reversed(ssts)]
    merged_run = [Run.of(t) for t, _ in result]
    for read_epoch in range(horizon, epoch + 1):
        expected = newest_visible(every, read_epoch, target)
        got = newest_visible(merged_run, read_epoch, target, one_sorted_run=True)
        assert rows_of(got.select(SCHEMA.names)) == rows_of(expected.select(SCHEMA.names)), read_epoch


@pytest.mark.parametrize("shape", ["fixed", "padded", "arrow"])
def test_key_views_order_and_search_like_python_bytes(shape: str) -> None:
    """Keys compare through a numpy view (zero-copy or padded) or Arrow kernels; all agree with bytes."""
    rng = random.Random(len(shape))

    def random_key() -> bytes:
        # Prefix-free, as one table's keys are: a length byte first.
        length = {"fixed": 5, "padded": rng.randint(0, 6), "arrow": rng.choice([1, 2, 300])}[shape]
        return bytes([length % 256]) + bytes(rng.choice([0, 1, 127, 128, 255]) for _ in range(length))

    values = [random_key() for _ in range(400)]
    keys = Keys.of(pa.array(values, pa.binary()))
    assert (keys.view is None) == (shape == "arrow")
    assert keys.padded == (shape == "padded")
    order = keys.sort_order()
    assert [values[i] for i in order] == sorted(values)
    assert order.tolist() == sorted(range(len(values)), key=lambda i: (values[i], i))  # stable
    ordered = keys.take(order)
    starts = ordered.group_starts()
    assert starts.tolist() == [i == 0 or sorted(values)[i] != sorted(values)[i - 1] for i in range(len(values))]
    probes = [random_key() for _ in range(100)] + values[:50]
    probe_keys = Keys.of(pa.array(probes, pa.binary()))
    left = ordered.search(probe_keys, "left")
    right = ordered.search(probe_keys, "right")
    assert left.tolist() == [bisect.bisect_left(sorted(values), p) for p in probes]
    assert right.tolist() == [bisect.bisect_right(sorted(values), p) for p in probes]
    middle = sorted(values)[200]
    assert keys.less_equal(middle).tolist() == [v <= middle for v in values]
    assert keys.greater_equal(middle).tolist() == [v >= middle for v in values]
    unique, rows = keys.unique_sorted()
    assert unique.array.to_pylist() == sorted(set(values)) and [values[i] for i in rows] == sorted(set(values))


# ---- in the store ---------------------------------------------------------------------------------------------
def test_only_the_l1_ssts_that_receive_l0_keys_are_rewritten() -> None:
    objects = CountingObjectStore()
    store = new_store(objects, l0_ssts_max=1, sst_bytes_target=2_000, block_rows_max=16)
    store.seal(TABLE, 1, delta([INS] * 1000, [(i, f"n{i}") for i in range(1000)]))
    checkpoint(store, 1)
    assert store.compact(TABLE)
    first_run = l1_ids(store)
    ranges = [(decode_id(r.first_key), decode_id(r.last_key)) for r in l1_readers(store)]
    assert len(first_run) >= 8
    # Update keys of the third L1 SST only.
    low, high = ranges[2]
    touched = list(range(low, high + 1, 3))
    store.seal(TABLE, 2, delta([UD, UI] * len(touched), [r for k in touched for r in ((k, f"n{k}"), (k, f"u{k}"))]))
    checkpoint(store, 2)
    store.seal(TABLE, 3, delta([DEL], [(low, f"u{low}")]))
    checkpoint(store, 3)
    objects.puts.clear()
    assert store.compact(TABLE)
    second_run = l1_ids(store)
    written = {p[len(SST_PREFIX) :] for p in objects.puts}
    assert set(second_run) - set(first_run) == written  # the new SSTs, and nothing else was uploaded
    assert set(first_run) - set(second_run) == {first_run[2]}  # only the overlapping SST was replaced
    assert objects.deletes == []  # replaced, committed, deleted later by maintain
    expected = [(i, f"u{i}" if i in touched else f"n{i}") for i in range(1000) if i != low]
    assert rows_of(store.snapshot(TABLE, 3)) == expected
    l0_paths = [p for p in objects.list(SST_PREFIX) if not p.rsplit("-", 1)[1].startswith("c")]
    store.maintain(3)
    # The replaced L1 SST and every L0 SST compacted so far (the first compaction's too: compact()
    # retires, maintain() deletes).
    assert sorted(objects.deletes) == sorted([SST_PREFIX + first_run[2], *l0_paths])
    assert len(l0_paths) == 3


def test_versions_are_dropped_only_below_the_oldest_pin_and_tombstones_at_the_bottom() -> None:
    store = new_store(MemoryObjectStore(), l0_ssts_max=100)
    store.seal(TABLE, 1, delta([INS, INS], [(1, "a1"), (2, "b1")]))
    checkpoint(store, 1)
    with store.pin_committed() as pinned:
        for epoch in range(2, 6):
            store.seal(TABLE, epoch, delta([UD, UI], [(1, f"a{epoch - 1}"), (1, f"a{epoch}")]))
            checkpoint(store, epoch)
        store.seal(TABLE, 6, delta([DEL], [(2, "b1")]))
        checkpoint(store, 6)
        assert store.compact(TABLE)
        scanned = pa.concat_tables([r.scan() for r in l1_readers(store)])
        # Pinned at 1: every version from epoch 1 on must stay readable.
        assert sorted(kept(scanned)) == [(1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 1), (2, 6)]
        assert rows_of(store.snapshot(TABLE, pinned)) == [(1, "a1"), (2, "b1")]
        assert rows_of(store.snapshot(TABLE, 3)) == [(1, "a3"), (2, "b1")]
    with store.pin_committed():
        store.seal(TABLE, 7, delta([UD, UI], [(1, "a5"), (1, "a7")]))
        checkpoint(store, 7)
        assert store.compact(TABLE)
    scanned = pa.concat_tables([r.scan() for r in l1_readers(store)])
    # Horizon 6 (the pin): key 1 keeps 7 and its newest version at or below 6; key 2's tombstone
    # at 6 is gone with everything below it.
    assert kept(scanned) == [(1, 7), (1, 5)]
    assert rows_of(store.snapshot(TABLE, 6)) == [(1, "a5")]
    store.seal(TABLE, 8, delta([], []))
    checkpoint(store, 8)
    store.seal(TABLE, 9, delta([INS], [(3, "c")]))
    checkpoint(store, 9)
    assert store.compact(TABLE)  # no pin: the horizon is the committed epoch
    assert kept(pa.concat_tables([r.scan() for r in l1_readers(store)])) == [(1, 7), (3, 9)]
    assert rows_of(store.snapshot(TABLE, 9)) == [(1, "a7"), (3, "c")]


def test_a_failed_version_write_keeps_the_old_ssts_and_the_next_start_removes_the_new_ones() -> None:
    class FailingVersions(MemoryMetaStore):
        fail = False

        def put(self, key: str, value: str) -> None:
            if self.fail:
                raise OSError("meta store unavailable")
            super().put(key, value)

    objects = CountingObjectStore()
    meta = FailingVersions()
    store = new_store(objects, meta, l0_ssts_max=1)
    for epoch in (1, 2):
        store.seal(TABLE, epoch, delta([INS], [(epoch, f"n{epoch}")]))
        checkpoint(store, epoch)
    before = objects.list(SST_PREFIX)
    version = meta.get(VERSION_KEY)
    meta.fail = True
    store.maintain(2)  # logged, counted, not raised: the checkpoint itself committed
    assert store.stats().compaction_failures == 1
    # The listed SSTs stay; the outputs may stay too (a failed write may still have landed).
    assert set(before) <= set(objects.list(SST_PREFIX)) and meta.get(VERSION_KEY) == version
    assert rows_of(store.snapshot(TABLE, 2)) == [(1, "n1"), (2, "n2")]
    meta.fail = False
    store.maintain(2)
    assert store.stats().sst_count_by_level == {0: 0, 1: 1}
    listed = json.loads(meta.get(VERSION_KEY) or "{}")["ssts"]
    assert [e["level"] for e in listed] == [1]
    reopened = new_store(objects, meta)  # start-up deletes every object no version lists
    assert objects.list(SST_PREFIX) == [SST_PREFIX + listed[0]["object_id"]]
    assert rows_of(reopened.snapshot(TABLE, 2)) == [(1, "n1"), (2, "n2")]


def test_compaction_bytes_are_counted_apart_from_checkpoint_bytes() -> None:
    store = new_store(MemoryObjectStore(), l0_ssts_max=2)
    for epoch in range(1, 4):
        store.seal(TABLE, epoch, delta([INS] * 10, [(epoch * 10 + i, "x") for i in range(10)]))
        checkpoint(store, epoch)
    stats = store.stats()
    assert stats.bytes_uploaded_checkpoint > 0 and stats.bytes_uploaded_compaction == 0
    store.maintain(3)
    stats = store.stats()
    assert stats.bytes_uploaded_compaction == stats.sst_bytes_by_level[1] > 0
    assert stats.compactions == 1 and stats.sst_count_by_level == {0: 0, 1: 1}


def test_large_rewrites_stay_sorted_and_disjoint() -> None:
    store = new_store(MemoryObjectStore(), l0_ssts_max=3, sst_bytes_target=20_000, block_rows_max=256)
    rng = np.random.default_rng(4)
    live = np.zeros(5_000, bool)
    for epoch in range(1, 15):
        ids = np.unique(rng.integers(0, 5_000, 400))
        fresh = ids[~live[ids]]
        old = ids[live[ids]]
        ops = [INS] * len(fresh) + [DEL] * len(old)
        rows = [(int(i), "x") for i in fresh] + [(int(i), "x") for i in old]
        live[fresh] = True
        live[old] = False
        store.seal(TABLE, epoch, delta(ops, rows))
        checkpoint(store, epoch)
        store.maintain(epoch)
        run = store._state[TABLE].l1
        for before, after in itertools.pairwise(run):
            assert before.info.last_key < after.info.first_key
        assert sorted(store.snapshot(TABLE, epoch).column("id").to_pylist()) == np.flatnonzero(live).tolist()
    assert store.stats().sst_count_by_level[1] > 2
