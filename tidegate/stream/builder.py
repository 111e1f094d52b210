"""Builds operator chains from stream plans (the one place plan nodes become operators).

A stream plan is plain data (dicts), produced by ``tidegate.sql.planner`` and
stored in the catalog, so a restart rebuilds the same operators. Node kinds:

- ``{"op": "scan", "relation_id": R}``: the stream of relation R (its changes,
  preceded by its snapshot when the job is being created: backfill);
- ``{"op": "source", "relation_id": R, "connector": "nexmark", "options": {…},
  "schema": [[name, type], …]}``: a generator of source R's events, run inside
  this job (the options are validated by ``connectors.nexmark_options``);
- ``{"op": "union", "inputs": [plan, …], "schema": [[name, type], …]}``: UNION ALL, the
  inputs merged with barrier alignment (each already projected to ``schema``);
- ``{"op": "filter", "condition": SQL, "input": …}``;
- ``{"op": "project", "exprs": [SQL, …], "schema": [[name, type], …], "input": …}``;
- ``{"op": "hash_agg", "group_keys": [i, …], "calls": [{"kind", "arg", "type"}, …],
  "schema": …, "input": …}``.

Expressions are DuckDB SQL over the input's positional columns ``_0, _1, …``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from tidegate.common.types import parse_type_name
from tidegate.connectors.nexmark_options import parse_nexmark_options
from tidegate.state.state_table import StateTable
from tidegate.state.store import StateStore
from tidegate.stream.channel import Channel
from tidegate.stream.operator import CheckedOperator, Operator
from tidegate.stream.operators.backfill import Backfill
from tidegate.stream.operators.filter import Filter
from tidegate.stream.operators.hash_agg import AggCall, HashAgg, agg_state_schema
from tidegate.stream.operators.merge import Merge
from tidegate.stream.operators.nexmark_source import NexmarkSource
from tidegate.stream.operators.project import Project
from tidegate.stream.operators.receiver import Receiver
from tidegate.stream.operators.table_source import OFFSET_SCHEMA

# State table ids: relation R's materialized rows live in table R << 16; its
# internal operator states in (R << 16) | n, n >= 1.
STATE_TABLE_SHIFT = 16


def materialized_table_id(relation_id: int) -> int:
    return relation_id << STATE_TABLE_SHIFT


def schema_from_plan(columns: list[list[str]]) -> pa.Schema:
    return pa.schema([pa.field(name, parse_type_name(type_text).arrow) for name, type_text in columns])


@dataclass
class BuildContext:
    store: StateStore
    relation_id: int
    actor_id: int
    # The schema each upstream relation stores (what a scan of it yields).
    relation_schemas: dict[int, pa.Schema]
    backfill: bool
    checked: bool = False
    # Memory each stateful operator may keep for its cache (None: unbounded, everything stays in memory).
    operator_cache_bytes: int | None = None
    # Filled by the builder: the channel each scanned relation must feed.
    inputs: dict[int, Channel] = field(default_factory=dict)
    # Filled by the builder: the sources this job runs itself, with the source relation each generates.
    sources: list[tuple[int, NexmarkSource]] = field(default_factory=list)
    _next_state_table: int = 1

    def next_state_table_id(self) -> int:
        table_id = (self.relation_id << STATE_TABLE_SHIFT) | self._next_state_table
        self._next_state_table += 1
        return table_id


def build(plan: dict[str, Any], ctx: BuildContext) -> Operator:
    kind = plan["op"]
    if kind == "scan":
        relation_id = plan["relation_id"]
        schema = ctx.relation_schemas[relation_id]
        channel = Channel(name=f"{relation_id}->{ctx.relation_id}")
        assert relation_id not in ctx.inputs, "a relation scanned twice needs two channels"
        ctx.inputs[relation_id] = channel
        receiver: Operator = Receiver(channel, schema, ctx.actor_id)
        if ctx.backfill:
            receiver = Backfill(receiver, ctx.store, materialized_table_id(relation_id))
        return _checked(receiver, ctx)
    if kind == "union":
        inputs = [build(branch, ctx) for branch in plan["inputs"]]
        return _checked(Merge(inputs, schema_from_plan(plan["schema"]), ctx.actor_id), ctx)
    if kind == "source":
        return _checked(_build_source(plan, ctx), ctx)
    child = build(plan["input"], ctx)
    operator: Operator
    if kind == "filter":
        operator = Filter(child, plan["condition"])
    elif kind == "project":
        operator = Project(child, plan["exprs"], schema_from_plan(plan["schema"]))
    elif kind == "hash_agg":
        schema = schema_from_plan(plan["schema"])
        calls = [
            AggCall(c["kind"], c["arg"], schema.field(len(plan["group_keys"]) + i).type)
            for i, c in enumerate(plan["calls"])
        ]
        state_schema, state_pk = agg_state_schema(schema, len(plan["group_keys"]))
        state = StateTable(ctx.store, ctx.next_state_table_id(), state_schema, state_pk)
        operator = HashAgg(child, plan["group_keys"], calls, schema, state, cache_bytes=ctx.operator_cache_bytes)
    else:
        raise ValueError(f"unknown stream plan node {kind!r}")
    return _checked(operator, ctx)


def _build_source(plan: dict[str, Any], ctx: BuildContext) -> NexmarkSource:
    assert plan["connector"] == "nexmark", plan["connector"]
    offsets = StateTable(ctx.store, ctx.next_state_table_id(), OFFSET_SCHEMA, [0])
    source = NexmarkSource(
        parse_nexmark_options(plan["options"]), offsets, schema_from_plan(plan["schema"]), ctx.actor_id
    )
    ctx.sources.append((plan["relation_id"], source))
    return source


def _checked(operator: Operator, ctx: BuildContext) -> Operator:
    return CheckedOperator(operator) if ctx.checked else operator
