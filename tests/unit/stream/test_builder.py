"""The builder: plan dicts become checked operator chains fed by one channel per scanned relation."""

from __future__ import annotations

import asyncio
from typing import Any

import pyarrow as pa
import pytest
from scripted import DEL, INS, UD, UI, barrier, chunk, inserts, per_barrier

from tidegate.connectors.nexmark_options import parse_nexmark_options, source_columns
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.builder import BuildContext, build, materialized_table_id
from tidegate.stream.messages import Message, StopMutation
from tidegate.stream.operator import CheckedOperator, Operator
from tidegate.stream.operators.backfill import Backfill
from tidegate.stream.operators.datagen_source import DatagenSource
from tidegate.stream.operators.hash_agg import HashAgg
from tidegate.stream.operators.nexmark_source import NexmarkSource
from tidegate.stream.operators.temporal_filter import TemporalFilter, TimeBound

UPSTREAM = 3
VIEW = 8
UPSTREAM_SCHEMA = pa.schema([("k", pa.int32()), ("v", pa.int32()), ("_row_id", pa.int64())])

PLAN: dict[str, Any] = {
    "op": "hash_agg",
    "group_keys": [0],
    "calls": [{"kind": "count_star", "arg": None}, {"kind": "sum", "arg": 1}],
    "schema": [["k", "integer"], ["n", "bigint"], ["total", "bigint"]],
    "input": {
        "op": "project",
        "exprs": ["_0 % 2", "_1 * 10"],
        "schema": [["k", "integer"], ["v10", "integer"]],
        "input": {"op": "filter", "condition": "_1 > 0", "input": {"op": "scan", "relation_id": UPSTREAM}},
    },
}


def context(store: MemoryStateStore, backfill: bool = False) -> BuildContext:
    return BuildContext(
        store=store,
        relation_id=VIEW,
        actor_id=VIEW,
        relation_schemas={UPSTREAM: UPSTREAM_SCHEMA},
        backfill=backfill,
        checked=True,
    )


def drive(root: Operator, ctx: BuildContext, messages: list[Message]) -> list[Message]:
    async def go() -> list[Message]:
        async def feed() -> None:
            # Channels are bounded: feed while the chain consumes.
            for message in messages:
                await dict(ctx.inputs)[UPSTREAM].send(message)

        feeding = asyncio.create_task(feed())
        output = [m async for m in root.execute()]
        await feeding
        return output

    return asyncio.run(go())


def test_a_plan_builds_a_checked_chain_that_computes_the_view() -> None:
    store = MemoryStateStore()
    ctx = context(store)
    root = build(PLAN, ctx)
    assert isinstance(root, CheckedOperator) and isinstance(root.inner, HashAgg)
    assert [upstream for upstream, _ in ctx.inputs] == [UPSTREAM]
    assert store.table_ids() == [(VIEW << 16) | 1]  # the aggregate's state table

    stop = barrier(3, mutation=StopMutation(frozenset({VIEW})))
    output = drive(
        root,
        ctx,
        [
            barrier(1),
            inserts(UPSTREAM_SCHEMA, [(1, 1, 100), (2, 2, 101), (3, 0, 102), (5, 3, 103)]),
            barrier(2),
            chunk(UPSTREAM_SCHEMA, "- U- U+", [(2, 2, 101), (1, 1, 100), (1, -1, 100)]),
            stop,
        ],
    )
    groups = per_barrier(output)
    assert sorted(groups[1]) == [(INS, (0, 1, 20)), (INS, (1, 2, 40))]
    assert sorted(groups[2], key=lambda c: c[0]) == [(DEL, (0, 1, 20)), (UD, (1, 2, 40)), (UI, (1, 1, 30))]
    assert output[-1] is stop


def test_backfill_wraps_the_scan_and_reads_the_upstream_materialized_table() -> None:
    store = MemoryStateStore()
    upstream = StateTable(store, materialized_table_id(UPSTREAM), UPSTREAM_SCHEMA, [2])
    upstream.write(inserts(UPSTREAM_SCHEMA, [(1, 4, 100)]))
    upstream.commit(1)
    ctx = context(store, backfill=True)
    root = build(PLAN["input"], ctx)
    scan = root.inner.input.inner.input  # type: ignore[attr-defined]
    assert isinstance(scan, CheckedOperator) and isinstance(scan.inner, Backfill)

    output = drive(root, ctx, [barrier(2, 1), barrier(3, 2, mutation=StopMutation(frozenset({VIEW})))])
    assert per_barrier(output) == [[], [(INS, (1, 40))]]


def test_an_unknown_node_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown stream plan node"):
        build({"op": "teleport", "input": {"op": "scan", "relation_id": UPSTREAM}}, context(MemoryStateStore()))


def test_a_source_node_builds_a_generator_the_job_registers_with_an_offsets_table_of_the_view() -> None:
    options = {"connector": "nexmark", "nexmark.table.type": "person", "nexmark.event.num": "100"}
    columns = [[name, sql_type.kind] for name, sql_type in source_columns(parse_nexmark_options(options))]
    plan = {
        "op": "project",
        "exprs": ["_0", f"_{len(columns)}"],
        "schema": [["id", "bigint"], ["_row_id", "bigint"]],
        "input": {
            "op": "source",
            "relation_id": UPSTREAM,
            "connector": "nexmark",
            "options": options,
            "schema": [*columns, ["_row_id", "bigint"]],
        },
    }
    ctx = context(MemoryStateStore())
    build(plan, ctx)
    assert ctx.inputs == []  # nothing feeds it: the coordinator injects barriers into the source
    [(relation_id, source)] = ctx.sources
    assert relation_id == UPSTREAM and isinstance(source, NexmarkSource)
    assert source.offsets.table_id == (VIEW << 16) | 1 and ctx._next_state_table == 2


def test_a_datagen_source_node_builds_a_datagen_generator_for_the_declared_columns() -> None:
    options = {"connector": "datagen", "datagen.rows.num": "7", "fields.id.kind": "sequence"}
    plan = {
        "op": "source",
        "relation_id": UPSTREAM,
        "connector": "datagen",
        "options": options,
        "schema": [["id", "bigint"], ["name", "varchar(4)"], ["_row_id", "bigint"]],
    }
    ctx = context(MemoryStateStore())
    build(plan, ctx)
    [(relation_id, source)] = ctx.sources
    assert relation_id == UPSTREAM and isinstance(source, DatagenSource)
    assert [f.name for f in source.options.fields] == ["id", "name"]
    assert source.options.fields[1].length == 4  # a varchar(4) gets strings of 4, not the default 10
    assert (source.offset, source.end_offset) == (0, 7)


def test_a_temporal_filter_node_gets_a_state_table_of_the_view() -> None:
    plan = {
        "op": "temporal_filter",
        "time_column": 1,
        "bounds": [{"lower": True, "intervals": [[0, 0, -3_600_000_000]], "inclusive": False}],
        "input_pk": [0],
        "input": {"op": "scan", "relation_id": UPSTREAM},
    }
    upstream = pa.schema([("id", pa.int64()), ("ts", pa.timestamp("us"))])
    ctx = BuildContext(MemoryStateStore(), VIEW, VIEW, relation_schemas={UPSTREAM: upstream}, backfill=False)
    operator = build(plan, ctx)  # unchecked: the operator itself
    assert isinstance(operator, TemporalFilter)
    assert operator.state.table_id == (VIEW << 16) | 1 and operator.state.pk == [1, 0]
    assert operator.lower_bounds == [TimeBound(True, ((0, 0, -3_600_000_000),), False)]
