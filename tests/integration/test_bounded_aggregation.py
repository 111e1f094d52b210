"""A view with 2,000,000 groups under a 64 MiB cache budget stays exact.

The aggregation's groups do not fit its cache (the database gives each stateful
operator half the budget), so most of them are evicted to the state store and
read back by point lookups when their rows change. The view must still equal
DuckDB's GROUP BY over the final table, and the cache must have stayed within
its budget.

Rows go in through the table writer, as ``bench/revenue.py`` path (b) does, with
a FLUSH after each batch: the groups an epoch changes are pinned in the cache
until its barrier writes them, so one epoch's groups must fit the budget. A
batch of 16Ki rows touches at most 16Ki groups, ~23 MB of cache.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from tidegate.common.chunk import Chunk
from tidegate.connectors.table_writer import update_chunk
from tidegate.meta.database import Database
from tidegate.meta.streaming import storage_schema
from tidegate.server.embedded import Connection
from tidegate.stream.operator import Operator
from tidegate.stream.operators.hash_agg import HashAgg

GROUPS = 2_000_000
EXTRA_ROWS = 200_000  # rows added to random groups, so that groups hold several values
CHANGED_FRACTION = 0.05
BATCH_ROWS = 16_384
CACHE_BUDGET_BYTES = 64 * 2**20
VIEW_SQL = "SELECT g, count(*) AS n, sum(v) AS s, min(v) AS lo, max(v) AS hi FROM t GROUP BY g"


def batches(table: pa.Table, rows: int) -> Iterator[pa.Table]:
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows)


def hash_aggs(operator: Operator) -> Iterator[HashAgg]:
    """The HashAgg operators of a chain (through wrappers and inputs)."""
    if isinstance(operator, HashAgg):
        yield operator
    for name in ("inner", "input"):
        child = getattr(operator, name, None)
        if isinstance(child, Operator):
            yield from hash_aggs(child)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_two_million_groups_under_a_64_mib_cache_budget_stay_exact(tmp_path: Path) -> None:
    started = time.monotonic()
    rng = np.random.default_rng(2026)
    g = rng.permutation(GROUPS).astype(np.int64)
    g = np.concatenate([g, rng.integers(0, GROUPS, EXTRA_ROWS)])
    v = rng.integers(-1_000_000, 1_000_000, g.size)

    database = Database(tmp_path / "db", state_store_url="fs", cache_budget_bytes=CACHE_BUDGET_BYTES)
    db = Connection(database)
    try:
        db.execute("CREATE TABLE t (g BIGINT, v BIGINT)")
        db.execute(f"CREATE MATERIALIZED VIEW by_g AS {VIEW_SQL}")
        table, view = database.catalog.get("t"), database.catalog.get("by_g")
        assert table is not None and view is not None
        writer, schema = database.writer(table), storage_schema(table)
        (agg,) = hash_aggs(database.streaming.runtime._jobs[view.id].actor.root)
        assert agg.cache is not None and agg.cache.capacity_bytes <= CACHE_BUDGET_BYTES

        # Round 1: every group appears; some get more rows.
        row_ids = writer.allocate_row_ids(g.size)
        rows = pa.table({"g": g, "v": v, "_row_id": row_ids}).select(schema.names).cast(schema)
        for batch in batches(rows, BATCH_ROWS):
            writer.apply([Chunk.inserts(batch)])
            database.flush()
        loaded = time.monotonic()

        # Round 2: in ~5 % of the groups a row changes its value or goes (a group's last row: it vanishes).
        chosen = rng.choice(rows.num_rows, int(GROUPS * CHANGED_FRACTION), replace=False)
        updated, deleted = np.sort(chosen[: chosen.size // 2]), np.sort(chosen[chosen.size // 2 :])
        old = rows.take(updated)
        values = pa.array(rng.integers(-1_000_000, 1_000_000, old.num_rows))
        new = old.set_column(schema.get_field_index("v"), schema.field("v"), values)
        for before, after in zip(batches(old, BATCH_ROWS // 2), batches(new, BATCH_ROWS // 2)):
            writer.apply([update_chunk(before, after)])
            database.flush()
        for gone in batches(rows.take(deleted), BATCH_ROWS):
            writer.apply([Chunk.deletes(gone)])
            database.flush()
        keep = np.ones(rows.num_rows, dtype=bool)
        keep[chosen] = False
        final = pa.concat_tables([rows.filter(pa.array(keep)), new])

        # The view equals DuckDB's answer: totals, then every row by a symmetric difference.
        con = duckdb.connect()
        con.register("view_rows", database.snapshot(view, database.flush()))
        con.register("final_rows", final)
        # Same types on both sides (tidegate's SUM of a BIGINT is a NUMERIC, DuckDB's a HUGEINT).
        typed = "g::BIGINT AS g, n::BIGINT AS n, s::HUGEINT AS s, lo::BIGINT AS lo, hi::BIGINT AS hi"
        con.execute(f"CREATE TABLE got AS SELECT {typed} FROM view_rows")
        con.execute(f"CREATE TABLE expected AS SELECT {typed} FROM ({VIEW_SQL.replace('FROM t', 'FROM final_rows')})")
        totals = "SELECT count(*), sum(n), sum(s), sum(lo), sum(hi), sum(hash(g, n, s, lo, hi)) FROM {}"
        assert con.execute(totals.format("got")).fetchall() == con.execute(totals.format("expected")).fetchall()
        difference = con.execute(
            "SELECT count(*) FROM ((SELECT * FROM got EXCEPT ALL SELECT * FROM expected) "
            "UNION ALL (SELECT * FROM expected EXCEPT ALL SELECT * FROM got))"
        ).fetchall()
        assert difference == [(0,)]
        (groups_left,) = con.execute("SELECT count(*) FROM got").fetchall()
        assert groups_left < (GROUPS,)  # groups did lose their last row

        # A sample of groups read through SQL, changed ones included, row for row.
        sample = [int(x) for x in rng.choice(g[chosen], 100, replace=False)] + list(range(100))
        in_list = ", ".join(map(str, sample))
        expected_rows = con.execute(f"SELECT * FROM expected WHERE g IN ({in_list}) ORDER BY g").fetchall()
        assert db.execute(f"SELECT g, n, s, lo, hi FROM by_g WHERE g IN ({in_list}) ORDER BY g") == expected_rows

        # The groups did not fit: the cache evicted and read back, and stayed within its budget.
        cache = agg.cache
        assert cache.evictions > GROUPS // 2 and cache.misses > GROUPS
        assert cache.peak_bytes <= cache.capacity_bytes
        print(
            f"\nbounded aggregation: {GROUPS:,} groups, operator cache {cache.capacity_bytes / 2**20:.0f} MiB, "
            f"peak {cache.peak_bytes / 2**20:.1f} MiB, {cache.evictions:,} evictions, {cache.misses:,} misses; "
            f"load {loaded - started:.0f} s, total {time.monotonic() - started:.0f} s"
        )
    finally:
        db.close()
