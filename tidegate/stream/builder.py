"""Builds operator chains from stream plans (the one place plan nodes become operators).

A stream plan is plain data (dicts), produced by ``tidegate.sql.planner`` and
stored in the catalog, so a restart rebuilds the same operators. Node kinds:

- ``{"op": "scan", "relation_id": R}``: the stream of relation R (its changes,
  preceded by its snapshot when the job is being created: backfill);
- ``{"op": "source", "relation_id": R, "connector": "nexmark"|"datagen"|"kafka"|"file", "options": {…},
  "schema": [[name, type], …], ["encode": "JSON"|"CSV",] ["watermark": {"column": i, "delay_us": d}]}``:
  source R read (or generated) inside this job, with its offsets in the job's state (the options
  are validated by the connector's own ``*_options`` module), with the source's WATERMARK if it has one;
- ``{"op": "union", "inputs": [plan, …], "schema": [[name, type], …]}``: UNION ALL, the
  inputs merged with barrier alignment (each already projected to ``schema``);
- ``{"op": "hash_join", "join_type": "inner"|"left"|"right"|"full"|"left_semi"|"left_anti",
  "left_keys": [i, …], "right_keys": [j, …], "left_pk": […], "right_pk": […],
  "condition": SQL | None, "schema": …, "inputs": [left plan, right plan]}``: the
  residual condition is over the pair row (left columns, then right columns);
- ``{"op": "hop_window", "time_column": i, "slide_us": n, "size_us": m, "schema": …,
  "input": …}``: each row once per window holding it (TUMBLE: slide = size), with
  ``window_start`` and ``window_end`` appended;
- ``{"op": "top_n", "group_keys": [i, …], "order_by": [[i, descending, nulls_first], …],
  "limit": n, "offset": m, "rank_kind": "row_number"|"rank"|"dense_rank", "emit_rank": bool,
  "input_pk": [i, …], "append_only": bool, "schema": …, "input": …}``: the first rows of
  each group (the rank appended as the last column when ``emit_rank``);
- ``{"op": "filter", "condition": SQL, "input": …}``;
- ``{"op": "temporal_filter", "time_column": i, "bounds": [{"lower": bool, "intervals":
  [[months, days, us], …], "inclusive": bool}, …], "input_pk": [i, …], "input": …}``: the rows
  whose time is within the bounds at the time of the epoch (``time > now() + intervals``);
- ``{"op": "project", "exprs": [SQL, …], "schema": [[name, type], …], "input": …}``;
- ``{"op": "hash_agg", "group_keys": [i, …], "calls": [{"kind", "arg", ["filter", "distinct",
  "delimiter", "order_by": [{"column", "descending", "nulls_first"}, …]]}, …],
  "schema": …, ["emit_on_window_close": true,] ["append_only": true,] "input": …}``: ``append_only``
  when the input only ever inserts rows.

Expressions are DuckDB SQL over the input's positional columns ``_0, _1, …``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import pyarrow as pa

from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.common.types import parse_type_name
from tidegate.connectors.datagen_options import parse_datagen_options
from tidegate.connectors.nexmark_options import parse_nexmark_options
from tidegate.connectors.read_positions import ReadPositions
from tidegate.connectors.source_errors import SOURCE_ERRORS_SCHEMA
from tidegate.connectors.table_writer import ROW_ID_COLUMN
from tidegate.state.state_table import StateTable
from tidegate.state.store import StateStore
from tidegate.stream.channel import Channel
from tidegate.stream.operator import CheckedOperator, Operator
from tidegate.stream.operators.backfill import Backfill
from tidegate.stream.operators.datagen_source import DatagenSource
from tidegate.stream.operators.filter import Filter
from tidegate.stream.operators.generator_source import GeneratingSource
from tidegate.stream.operators.hash_agg import AggCall, HashAgg, SortKey, agg_state_schema
from tidegate.stream.operators.hash_join import HashJoin, join_state_schema
from tidegate.stream.operators.hop_window import HopWindow
from tidegate.stream.operators.merge import Merge
from tidegate.stream.operators.nexmark_source import NexmarkSource
from tidegate.stream.operators.project import Project
from tidegate.stream.operators.receiver import Receiver
from tidegate.stream.operators.table_source import OFFSET_SCHEMA
from tidegate.stream.operators.temporal_filter import TemporalFilter, TimeBound, temporal_filter_state_schema
from tidegate.stream.operators.top_n import SortKey as RankKey
from tidegate.stream.operators.top_n import TopN, top_n_state_schema
from tidegate.stream.watermark import WATERMARK_STATE_SCHEMA, WatermarkGenerator, WatermarkSpec

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
    # Filled by the builder: per scan, the relation it reads and the channel that relation must feed
    # (a relation scanned twice feeds two channels).
    inputs: list[tuple[int, Channel]] = field(default_factory=list)
    # Filled by the builder: the sources this job runs itself, with the source relation each generates.
    sources: list[tuple[int, GeneratingSource]] = field(default_factory=list)
    # Filled by the builder: per Kafka or file source read, the source and its error table's id.
    error_tables: list[tuple[int, int]] = field(default_factory=list)
    # The job's delivery guarantee: barrier alignment, and whether sources rewind on recovery.
    guarantee: DeliveryGuarantee = DeliveryGuarantee.EXACTLY_ONCE
    # Where at_most_once sources keep their read positions across recoveries.
    positions: ReadPositions = field(default_factory=lambda: ReadPositions(None))
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
        channel = Channel(name=f"{relation_id}->{ctx.relation_id}#{len(ctx.inputs)}")
        ctx.inputs.append((relation_id, channel))
        receiver: Operator = Receiver(channel, schema, ctx.actor_id)
        if ctx.backfill:
            receiver = Backfill(receiver, ctx.store, materialized_table_id(relation_id))
        return _checked(receiver, ctx)
    if kind == "union":
        inputs = [build(branch, ctx) for branch in plan["inputs"]]
        return _checked(
            Merge(inputs, schema_from_plan(plan["schema"]), ctx.actor_id, aligned=ctx.guarantee.aligned), ctx
        )
    if kind == "source":
        return _checked(_build_source(plan, ctx), ctx)
    if kind == "hash_join":
        return _checked(_build_join(plan, ctx), ctx)
    child = build(plan["input"], ctx)
    operator: Operator
    if kind == "filter":
        operator = Filter(child, plan["condition"])
    elif kind == "temporal_filter":
        operator = _build_temporal_filter(plan, child, ctx)
    elif kind == "hop_window":
        operator = HopWindow(
            child, plan["time_column"], plan["slide_us"], plan["size_us"], schema_from_plan(plan["schema"])
        )
    elif kind == "top_n":
        operator = _build_top_n(plan, child, ctx)
    elif kind == "project":
        operator = Project(child, plan["exprs"], schema_from_plan(plan["schema"]))
    elif kind == "hash_agg":
        schema = schema_from_plan(plan["schema"])
        calls = [_agg_call(c, schema.field(len(plan["group_keys"]) + i).type) for i, c in enumerate(plan["calls"])]
        state_schema, state_pk = agg_state_schema(schema, len(plan["group_keys"]))
        state = StateTable(ctx.store, ctx.next_state_table_id(), state_schema, state_pk)
        operator = HashAgg(
            child,
            plan["group_keys"],
            calls,
            schema,
            state,
            cache_bytes=ctx.operator_cache_bytes,
            emit_on_window_close=plan.get("emit_on_window_close", False),
            append_only=plan.get("append_only", False),
        )
    else:
        raise ValueError(f"unknown stream plan node {kind!r}")
    return _checked(operator, ctx)


def _build_join(plan: dict[str, Any], ctx: BuildContext) -> HashJoin:
    left, right = (build(side, ctx) for side in plan["inputs"])
    join_type = plan["join_type"]
    states = []
    for side, keys, pk, outer in (
        (left, plan["left_keys"], plan["left_pk"], join_type in ("left", "full", "left_semi", "left_anti")),
        (right, plan["right_keys"], plan["right_pk"], join_type in ("right", "full")),
    ):
        state_schema, state_pk = join_state_schema(side.schema, keys, pk, with_degree=outer)
        states.append(StateTable(ctx.store, ctx.next_state_table_id(), state_schema, state_pk))
    return HashJoin(
        left,
        right,
        join_type=join_type,
        left_keys=plan["left_keys"],
        right_keys=plan["right_keys"],
        left_pk=plan["left_pk"],
        right_pk=plan["right_pk"],
        condition=plan["condition"],
        schema=schema_from_plan(plan["schema"]),
        left_state=states[0],
        right_state=states[1],
        actor_id=ctx.actor_id,
        cache_bytes=ctx.operator_cache_bytes,
        aligned=ctx.guarantee.aligned,
    )


def _agg_call(call: dict[str, Any], output_type: pa.DataType) -> AggCall:
    """An aggregate call of a hash_agg plan node (keys other than kind and arg may be absent)."""
    return AggCall(
        call["kind"],
        call["arg"],
        output_type,
        filter=call.get("filter"),
        distinct=call.get("distinct", False),
        delimiter=call.get("delimiter"),
        order_by=tuple(SortKey(**key) for key in call.get("order_by", ())),
    )


def _build_top_n(plan: dict[str, Any], child: Operator, ctx: BuildContext) -> TopN:
    order_by = [RankKey(column, descending, nulls_first) for column, descending, nulls_first in plan["order_by"]]
    state_schema, state_pk = top_n_state_schema(child.schema, plan["group_keys"], order_by, plan["input_pk"])
    return TopN(
        child,
        group_keys=plan["group_keys"],
        order_by=order_by,
        limit=plan["limit"],
        offset=plan["offset"],
        rank_kind=plan["rank_kind"],
        emit_rank=plan["emit_rank"],
        input_pk=plan["input_pk"],
        append_only=plan["append_only"],
        schema=schema_from_plan(plan["schema"]),
        state=StateTable(ctx.store, ctx.next_state_table_id(), state_schema, state_pk),
        actor_id=ctx.actor_id,
        cache_bytes=ctx.operator_cache_bytes,
    )


def _build_temporal_filter(plan: dict[str, Any], child: Operator, ctx: BuildContext) -> TemporalFilter:
    bounds = [
        TimeBound(b["lower"], tuple((m, d, us) for m, d, us in b["intervals"]), b["inclusive"]) for b in plan["bounds"]
    ]
    state_schema, state_pk = temporal_filter_state_schema(child.schema, plan["time_column"], plan["input_pk"])
    state = StateTable(ctx.store, ctx.next_state_table_id(), state_schema, state_pk)
    return TemporalFilter(child, plan["time_column"], bounds, plan["input_pk"], state)


def _build_source(plan: dict[str, Any], ctx: BuildContext) -> Operator:
    connector = plan["connector"]
    assert connector in ("nexmark", "datagen", "kafka", "file"), connector
    offsets_table_id = ctx.next_state_table_id()
    schema = schema_from_plan(plan["schema"])
    watermark = None
    if plan.get("watermark") is not None:
        spec = WatermarkSpec(plan["watermark"]["column"], plan["watermark"]["delay_us"])
        state = StateTable(ctx.store, ctx.next_state_table_id(), WATERMARK_STATE_SCHEMA, [0])
        watermark = WatermarkGenerator(spec, schema.field(spec.column).type, state)
    source: Operator
    if connector in ("kafka", "file"):
        errors = StateTable(ctx.store, ctx.next_state_table_id(), SOURCE_ERRORS_SCHEMA, [0])
        build_reader, offsets_schema = _reader(connector)
        source = build_reader(
            plan,
            StateTable(ctx.store, offsets_table_id, offsets_schema, [0]),
            errors,
            schema,
            ctx.actor_id,
            guarantee=ctx.guarantee,
            positions=ctx.positions,
            source_id=plan["relation_id"],
            watermark=watermark,
        )
        ctx.error_tables.append((plan["relation_id"], errors.table_id))
    elif connector == "datagen":
        offsets = StateTable(ctx.store, offsets_table_id, OFFSET_SCHEMA, [0])
        # The declared columns: the plan's schema without the hidden row number at its end.
        declared = [(name, parse_type_name(type_text)) for name, type_text in plan["schema"] if name != ROW_ID_COLUMN]
        options = parse_datagen_options(plan["options"], declared)
        source = DatagenSource(options, offsets, schema, ctx.actor_id, watermark=watermark)
    else:
        offsets = StateTable(ctx.store, offsets_table_id, OFFSET_SCHEMA, [0])
        source = NexmarkSource(
            parse_nexmark_options(plan["options"]), offsets, schema, ctx.actor_id, watermark=watermark
        )
    ctx.sources.append((plan["relation_id"], cast(GeneratingSource, source)))
    return source


def _reader(connector: str) -> tuple[Callable[..., Operator], pa.Schema]:
    """The builder and offsets schema of a Kafka or file source (imported here: a job without a
    Kafka source never loads the Kafka client)."""
    if connector == "kafka":
        from tidegate.stream.operators.kafka_source import KAFKA_OFFSETS_SCHEMA, build_kafka_source

        return build_kafka_source, KAFKA_OFFSETS_SCHEMA
    from tidegate.stream.operators.file_source import FILE_OFFSETS_SCHEMA, build_file_source

    return build_file_source, FILE_OFFSETS_SCHEMA


def _checked(operator: Operator, ctx: BuildContext) -> Operator:
    return CheckedOperator(operator) if ctx.checked else operator
