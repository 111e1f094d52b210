"""The stream planner: a view's SELECT becomes a stream plan.

Binding resolves names against the catalog (errors carry the position of the
offending name); every scalar expression is compiled to DuckDB SQL over its
input's positional columns (what ``stream.evaluator`` runs) and typed by asking
DuckDB for the type over an empty input, so plan types and runtime types agree.

Shapes planned in this release::

    scan|source → [filter WHERE] → [temporal_filter now()] → project     (no aggregation)
    scan → [filter WHERE] → [temporal_filter now()] → project(keys, args) → hash_agg
         → [filter HAVING] → project(select list)                       (GROUP BY / aggregates)

Every view has a stream key that identifies its rows in storage: the upstream's
key for a projection (kept as hidden columns when the select list drops it),
the group keys for an aggregation. The plan is plain data (see ``stream.builder``).

Last, ``prune.py`` narrows the inputs of joins and of TUMBLE/HOP to the columns
read above them, so that join state and window copies hold nothing unread.

The planner also follows which columns carry a watermark at run time (as the
operators propagate them: plain column copies, TUMBLE/HOP windows, group keys,
UNION ALL of columns that carry one in every branch; not joins nor top-N), so
that ``EMIT ON WINDOW CLOSE`` can require a group key with one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from tidegate.common.duck import connect, translate_error
from tidegate.common.sqltext import AGGREGATES, output_name, position_of
from tidegate.common.types import BIGINT, DOUBLE, NUMERIC, SqlType, array_of, from_arrow
from tidegate.errors import (
    DatatypeMismatch,
    DuplicateColumn,
    FeatureNotSupported,
    GroupingError,
    InvalidColumnReference,
    SqlSyntaxError,
    UndefinedFunction,
    UndefinedRelation,
)
from tidegate.meta.catalog import Catalog, ColumnDef
from tidegate.sql.plan_from import FromPlanner, PlannedInput, conjoin
from tidegate.sql.plan_temporal import plan_temporal_filters, split_temporal_conjuncts
from tidegate.sql.plan_top_n import RANK_COLUMN, plan_order_limit, plan_ranking, ranking_item
from tidegate.sql.prune import prune_unread_columns
from tidegate.sql.scope import ARRAY_KEY_REASON, ExpressionCompiler, ScopeColumn, refuse_array_keys
from tidegate.sql.scope import type_text as _type_text


@dataclass
class PlannedView:
    columns: list[ColumnDef]
    pk: list[int]
    plan: dict[str, Any]
    dependencies: list[int]
    explain: list[str] = field(default_factory=list)
    # The rows only ever arrive (no update or delete): see ``PlannedInput.append_only``.
    append_only: bool = False
    # The output columns that carry a watermark: see ``PlannedInput.watermark_columns``.
    watermark_columns: list[int] = field(default_factory=list)


def plan_materialized_view(
    select: exp.Expression, catalog: Catalog, *, emit_on_window_close: bool = False
) -> PlannedView:
    """Plan a view's query, then narrow the inputs of its joins and windows to the columns read
    (``prune.py``); ``emit_on_window_close``: the view emits each group once, when a watermark
    closes it."""
    view = _plan_query(select, catalog, emit_on_window_close=emit_on_window_close)
    view.plan["stream"] = prune_unread_columns(view.plan["stream"])
    return view


def _plan_query(
    select: exp.Expression,
    catalog: Catalog,
    ctes: dict[str, exp.Expression] | None = None,
    rank_limit: int | None = None,
    *,
    emit_on_window_close: bool = False,
) -> PlannedView:
    """Plan a query (a view's, or one nested in it); ``ctes`` are the WITH queries of enclosing
    queries, by name; ``rank_limit`` the bound an enclosing WHERE puts on this query's ranking
    function; ``emit_on_window_close``: the view emits each group once, when a watermark closes it."""
    ctes = dict(ctes or {})
    with_key = "with_" if "with_" in select.args else "with"
    with_ = select.args.get(with_key)
    if with_ is not None:
        if with_.args.get("recursive"):
            raise FeatureNotSupported("WITH RECURSIVE in a materialized view is not supported")
        for cte in with_.expressions:
            ctes[cte.alias] = cte.this
        select = select.copy()
        select.set(with_key, None)
    if emit_on_window_close and not isinstance(select, exp.Select):
        raise FeatureNotSupported(_EOWC_SHAPE)
    if isinstance(select, exp.Union) and not select.args.get("distinct"):
        return _plan_union_all(select, catalog, ctes)
    if isinstance(select, exp.Union | exp.Intersect | exp.Except):
        raise FeatureNotSupported(
            "UNION without ALL, INTERSECT and EXCEPT in a materialized view are not supported yet"
        )
    if not isinstance(select, exp.Select):
        raise FeatureNotSupported("a materialized view must be defined by a SELECT")
    if select.args.get("windows"):
        raise FeatureNotSupported("WINDOW clauses in a materialized view are not supported")
    ranked = ranking_item(select)
    if ranked is not None and rank_limit is None:
        raise FeatureNotSupported(
            f"{ranked.kind}() in a materialized view needs a bound: select it in a subquery and filter "
            f"the outer query with {ranked.alias} <= N",
            position=position_of(ranked.window),
        )
    source, conjuncts = FromPlanner(catalog, _plan_query, ctes).plan_from(select)
    scope = source.scope
    plan = source.plan
    compiler = ExpressionCompiler(scope)
    # Conditions on now() become temporal filters above the ordinary one (plan_temporal.py).
    temporal, conjuncts = split_temporal_conjuncts(conjuncts, compiler)

    if conjuncts:
        condition = conjoin(conjuncts)
        if any(condition.find_all(*AGGREGATES)):
            raise GroupingError("aggregate functions are not allowed in WHERE", position=position_of(condition))
        [compiled], [condition_type] = compiler.compile([condition])
        _require_boolean(condition_type, "WHERE", condition)
        plan = {
            "op": "filter",
            "condition": compiled,
            "input": plan,
            "display": f"StreamFilter {{ {condition.sql('postgres')} }}",
        }
    if temporal:
        plan = plan_temporal_filters(temporal, plan, source.pk)
        # Rows leave through a lower bound: the output is no longer append-only. The operator drops
        # watermarks (a row entering late may lie below one), so no column carries one any more.
        append_only = source.append_only and not any(b.lower for b in temporal)
        source = PlannedInput(scope, plan, source.pk, source.dependencies, append_only, watermark_columns=[])

    if ranked is not None and rank_limit is not None:
        scope, plan = plan_ranking(scope, plan, source.pk, ranked, rank_limit, source.append_only)
        source = PlannedInput(scope, plan, source.pk, source.dependencies)
        compiler = ExpressionCompiler(scope)
    items = _expand_star(select.expressions, [c for c in scope if c.name != RANK_COLUMN])
    if ranked is not None:
        items = [_rank_item(i, ranked.window) for i in items]
    has_aggregates = any(item.find(*AGGREGATES) for item in items) or select.args.get("having")
    limited = select.args.get("limit") is not None or select.args.get("offset") is not None
    if emit_on_window_close and (limited or ranked is not None or not (select.args.get("group") or has_aggregates)):
        raise FeatureNotSupported(_EOWC_SHAPE, position=position_of(select))
    if select.args.get("group") or has_aggregates or select.args.get("distinct"):
        view = _plan_aggregation(select, items, compiler, plan, source, emit_on_window_close)
    else:
        view = _plan_projection(items, compiler, plan, source)
        view.append_only = source.append_only
    if limited:
        view.plan["stream"] = plan_order_limit(select, view.columns, view.pk, view.plan["stream"], view.append_only)
        view.append_only = False
    return view


_EOWC_SHAPE = (
    "EMIT ON WINDOW CLOSE is supported on a view that aggregates with GROUP BY (no UNION, LIMIT or ranking around it)"
)


def _rank_item(item: exp.Expression, window: exp.Window) -> exp.Expression:
    """The select item of the ranking function reads the rank the TopN appended."""
    if isinstance(item, exp.Alias) and item.this is window:
        return exp.Alias(this=exp.column(RANK_COLUMN), alias=exp.to_identifier(item.alias))
    return item


def _plan_union_all(union: exp.Union, catalog: Catalog, ctes: dict[str, exp.Expression]) -> PlannedView:
    """UNION ALL: each branch planned on its own and projected to one schema, then merged.

    The stream key is a hidden branch number plus every branch's own key, each in hidden
    columns of its own (NULL in the other branches' rows).
    """
    for clause in ("order", "limit", "offset"):
        if union.args.get(clause):
            raise FeatureNotSupported(f"{clause.upper()} on a UNION ALL in a materialized view is not supported yet")
    branches: list[exp.Expression] = []
    pending: list[Any] = [union]
    while pending:
        node = pending.pop()
        if isinstance(node, exp.Union) and not node.args.get("distinct") and not node.args.get("order"):
            pending += [node.right, node.left]  # left first
        else:
            branches.append(node.this if isinstance(node, exp.Subquery) else node)
    views = [_plan_query(branch, catalog, ctes) for branch in branches]
    visible = [[c for c in v.columns if not c.hidden] for v in views]
    if any(len(v) != len(visible[0]) for v in visible):
        raise SqlSyntaxError("each UNION query must have the same number of columns", position=position_of(union))
    types = _union_types(visible)
    columns = [ColumnDef(c.name, t) for c, t in zip(visible[0], types)]
    taken = [c.name for c in columns]
    branch_column = ColumnDef(_fresh_name("_union_branch", taken), from_arrow(pa.int32()), hidden=True)
    columns.append(branch_column)
    key_columns: list[list[int]] = []  # per branch: the union columns holding its key
    for b, view in enumerate(views):
        key_columns.append([])
        for i in view.pk:
            key = view.columns[i]
            name = _fresh_name(f"_u{b}{key.name}" if key.name.startswith("_") else f"_u{b}_{key.name}", taken)
            taken.append(name)
            columns.append(ColumnDef(name, key.type, hidden=True))
            key_columns[b].append(len(columns) - 1)
    schema = [[c.name, _type_text(c.type)] for c in columns]
    inputs = []
    for b, view in enumerate(views):
        exprs = [
            f"_{view.columns.index(c)}"
            if c.type.arrow.equals(t.arrow)
            else f"CAST(_{view.columns.index(c)} AS {t.duckdb_name})"
            for c, t in zip(visible[b], types)
        ]
        exprs.append(f"CAST({b} AS INTEGER)")
        for other, view_other in enumerate(views):
            for i, position in zip(view_other.pk, key_columns[other]):
                column = columns[position]
                exprs.append(f"_{i}" if other == b else f"CAST(NULL AS {column.type.duckdb_name})")
        inputs.append(
            {
                "op": "project",
                "exprs": exprs,
                "schema": schema,
                "input": view.plan["stream"],
                "display": f"StreamProject {{ branch {b} }}",
            }
        )
    dependencies = list(dict.fromkeys(d for v in views for d in v.dependencies))
    plan = {"op": "union", "inputs": inputs, "schema": schema, "display": "StreamUnion { all: true }"}
    pk = [len(visible[0])] + [p for positions in key_columns for p in positions]
    # The merge emits a column's watermark once every branch has one (uncast) for it.
    watermarks = [
        j
        for j, union_type in enumerate(types)
        if all(
            view.columns.index(visible[b][j]) in view.watermark_columns
            and visible[b][j].type.arrow.equals(union_type.arrow)
            for b, view in enumerate(views)
        )
    ]
    append_only = all(view.append_only for view in views)
    return PlannedView(
        columns, pk, {"stream": plan}, dependencies, append_only=append_only, watermark_columns=watermarks
    )


def _union_types(branches: list[list[ColumnDef]]) -> list[SqlType]:
    """Each column's type across the branches: the first branch's where all agree, else DuckDB's union type."""
    if all(all(c.type.arrow.equals(f.type.arrow) for c, f in zip(b, branches[0])) for b in branches):
        return [c.type for c in branches[0]]
    con = connect(streaming=True)
    try:
        selects = []
        for n, branch in enumerate(branches):
            con.register(
                f"__b{n}", pa.schema([pa.field(f"c{i}", c.type.arrow) for i, c in enumerate(branch)]).empty_table()
            )
            selects.append(f"SELECT * FROM __b{n}")
        result = con.sql(" UNION ALL ".join(selects)).to_arrow_table()
    except duckdb.Error as error:
        raise translate_error(error) from error
    finally:
        con.close()
    return [from_arrow(f.type) for f in result.schema]


def _expand_star(items: list[exp.Expression], scope: list[ScopeColumn]) -> list[exp.Expression]:
    """``*`` and ``t.*`` as the visible columns they stand for, each qualified (a join may have
    two columns of one name)."""
    out: list[exp.Expression] = []
    for item in items:
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
            qualifier = item.table if isinstance(item, exp.Column) and item.table else None
            columns = [c for c in scope if not c.hidden and (qualifier is None or c.qualifier == qualifier)]
            if qualifier is not None and not columns:
                raise UndefinedRelation(
                    f'missing FROM-clause entry for table "{qualifier}"', position=position_of(item)
                )
            out += [exp.column(c.name, table=c.qualifier) if c.qualifier else exp.column(c.name) for c in columns]
        else:
            out.append(item)
    return out


def _require_boolean(sql_type: SqlType, clause: str, node: exp.Expression) -> None:
    if sql_type.kind != "boolean":
        raise DatatypeMismatch(
            f"argument of {clause} must be type boolean, not type {sql_type}", position=position_of(node)
        )


def _unique_names(names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DuplicateColumn(f'column "{name}" specified more than once')
        seen.add(name)


def _plan_projection(
    items: list[exp.Expression], compiler: ExpressionCompiler, plan: dict[str, Any], source: PlannedInput
) -> PlannedView:
    values = [i.this if isinstance(i, exp.Alias) else i for i in items]
    names = [output_name(i) for i in items]
    _unique_names(names)
    compiled, types = compiler.compile(values)
    columns = [ColumnDef(n, t) for n, t in zip(names, types)]
    # Keep the upstream stream key; reuse a select item that is exactly a key column.
    pk: list[int] = []
    for key_index in source.pk:
        ref = f"_{key_index}"
        if ref in compiled and not source.scope[key_index].hidden:
            pk.append(compiled.index(ref))
            continue
        key = source.scope[key_index]
        hidden_name = _fresh_name(f"_{key.name}" if not key.name.startswith("_") else key.name, names)
        names.append(hidden_name)
        compiled.append(ref)
        columns.append(ColumnDef(hidden_name, key.type, hidden=True))
        pk.append(len(columns) - 1)
    schema = [[c.name, _type_text(c.type)] for c in columns]
    watermarks = _copied_columns(compiled, source.watermark_columns)
    displays = [v.sql("postgres") for v in values] + [c.name for c in columns[len(values) :]]
    plan = {
        "op": "project",
        "exprs": compiled,
        "schema": schema,
        "input": plan,
        "display": f"StreamProject {{ {', '.join(displays)} }}",
    }
    return PlannedView(columns, pk, {"stream": plan}, list(source.dependencies), watermark_columns=watermarks)


def _copied_columns(compiled: list[str], watermark_columns: list[int]) -> list[int]:
    """The output positions that copy an input column carrying a watermark (``Project`` forwards it)."""
    return [
        j
        for j, expr in enumerate(compiled)
        if expr[:1] == "_" and expr[1:].isdigit() and int(expr[1:]) in watermark_columns
    ]


def _fresh_name(base: str, taken: list[str]) -> str:
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}{n}"
    return name


def _plan_aggregation(
    select: exp.Select,
    items: list[exp.Expression],
    compiler: ExpressionCompiler,
    plan: dict[str, Any],
    source: PlannedInput,
    emit_on_window_close: bool = False,
) -> PlannedView:
    names = [output_name(i) for i in items]
    _unique_names(names)
    values = [i.this if isinstance(i, exp.Alias) else i for i in items]
    group = select.args.get("group")
    key_exprs: list[exp.Expression] = []
    for key in group.expressions if group else []:
        key_exprs.append(_resolve_group_item(key, items, names, compiler.scope))

    # Collect aggregate calls (each with its FILTER) from the select list and HAVING.
    having = select.args.get("having")
    calls = _collect_calls([*values, *([having.this] if having else [])])
    distinct = select.args.get("distinct")
    if distinct is not None and distinct.args.get("on") is not None:
        raise FeatureNotSupported("DISTINCT ON in a materialized view is not supported yet")
    # SELECT DISTINCT without aggregation: a hash aggregation grouped by every select item, with no calls.
    # Over an aggregation, it is a second one over the first one's rows (_distinct_rows).
    distinct_items = distinct is not None and not (group or calls or having)
    if distinct_items:
        key_exprs = list(values)

    # Pre-projection: group keys first, then each aggregate's argument, sort keys and FILTER condition
    # (equal expressions share one column).
    pre_exprs: list[exp.Expression] = list(key_exprs)
    call_specs = [_plan_call(call, pre_exprs) for call in calls]
    pre_compiled, pre_types = compiler.compile(pre_exprs)
    for spec, call in zip(call_specs, calls):
        if spec.get("filter") is not None:
            _require_boolean(pre_types[spec["filter"]], "FILTER", call.expression.this)
        _refuse_array_multiset(spec, pre_types, call)
    refuse_array_keys(pre_types[: len(key_exprs)], key_exprs, "SELECT DISTINCT of" if distinct_items else "GROUP BY")
    if not pre_compiled:
        pre_compiled, pre_types = ["NULL::BOOLEAN"], [SqlType("boolean")]
    pre_schema = [[f"p{i}", _type_text(t)] for i, t in enumerate(pre_types)]
    plan = {
        "op": "project",
        "exprs": pre_compiled,
        "schema": pre_schema,
        "input": plan,
        "display": f"StreamProject {{ {', '.join(e.sql('postgres') for e in pre_exprs)} }}",
    }

    nkeys = len(key_exprs)
    watermark_keys = _copied_columns(pre_compiled[:nkeys], source.watermark_columns)
    agg_types = [
        _aggregate_type(spec["kind"], pre_types[spec["arg"]] if spec["arg"] is not None else None, call)
        for spec, call in zip(call_specs, calls)
    ]
    agg_scope = [ScopeColumn(f"__k{i}", pre_types[i], None) for i in range(nkeys)]
    agg_scope += [ScopeColumn(f"__a{j}", t, None) for j, t in enumerate(agg_types)]
    agg_schema = [[c.name.lstrip("_"), _type_text(c.type)] for c in agg_scope]
    plan = {
        "op": "hash_agg",
        "group_keys": list(range(nkeys)),
        "calls": call_specs,
        "schema": agg_schema,
        "input": plan,
        "display": "StreamHashAgg {{ group_key: [{}], aggs: [{}] }}".format(
            ", ".join(e.sql("postgres") for e in key_exprs), ", ".join(c.sql("postgres") for c in calls)
        ),
    }
    if source.append_only:
        # Only inserts reach the aggregation: a MIN or MAX needs to keep its extreme value alone.
        plan["append_only"] = True
        plan["display"] = plan["display"][:-2] + ", append only }"
    if emit_on_window_close:
        if not watermark_keys:
            raise FeatureNotSupported(
                "EMIT ON WINDOW CLOSE needs a GROUP BY key that carries a watermark: window_start or window_end "
                "of TUMBLE/HOP over a source or table with a WATERMARK, or its watermark column itself",
                position=position_of(group) if group is not None else None,
            )
        plan["emit_on_window_close"] = True
        plan["display"] = plan["display"][:-2] + ", emit: on window close }"

    def over_agg(expression: exp.Expression) -> exp.Expression:
        """Rewrite an expression over the aggregation's output columns."""

        def replace(node: exp.Expression) -> exp.Expression:
            for j, call in enumerate(calls):
                if node == call:
                    return exp.column(f"__a{j}")
            for i, key in enumerate(key_exprs):
                if node == key:
                    return exp.column(f"__k{i}")
            return node

        rewritten = expression.copy().transform(replace)
        for column in rewritten.find_all(exp.Column):
            if not (column.name[:3] in ("__k", "__a") and column.name[3:].isdigit() and not column.table):
                raise GroupingError(
                    f'column "{column.name}" must appear in the GROUP BY clause or be used in an aggregate function',
                    position=_position_in(expression, column.name),
                )
        return rewritten

    agg_compiler = ExpressionCompiler(agg_scope)
    if having is not None:
        [condition], [condition_type] = agg_compiler.compile([over_agg(having.this)])
        _require_boolean(condition_type, "HAVING", having.this)
        plan = {
            "op": "filter",
            "condition": condition,
            "input": plan,
            "display": f"StreamFilter {{ {having.this.sql('postgres')} }}",
        }

    out_compiled, out_types = agg_compiler.compile([over_agg(v) for v in values])
    columns = [ColumnDef(n, t) for n, t in zip(names, out_types)]
    pk: list[int] = []
    for i in range(nkeys):
        ref = f"_{i}"
        if ref in out_compiled:
            pk.append(out_compiled.index(ref))
            continue
        hidden_name = _fresh_name(f"_group_key{i}", names)
        names.append(hidden_name)
        out_compiled.append(ref)
        columns.append(ColumnDef(hidden_name, pre_types[i], hidden=True))
        pk.append(len(columns) - 1)
    schema = [[c.name, _type_text(c.type)] for c in columns]
    plan = {
        "op": "project",
        "exprs": out_compiled,
        "schema": schema,
        "input": plan,
        "display": f"StreamProject {{ {', '.join(v.sql('postgres') for v in values)} }}",
    }
    view = PlannedView(
        columns,
        pk,
        {"stream": plan},
        list(source.dependencies),
        append_only=emit_on_window_close,
        watermark_columns=_copied_columns(out_compiled, watermark_keys),
    )
    if distinct is not None and not distinct_items:
        if emit_on_window_close:
            raise FeatureNotSupported(_EOWC_SHAPE, position=position_of(distinct))
        return _distinct_rows(view)
    return view


def _collect_calls(nodes: list[exp.Expression]) -> list[exp.Expression]:
    """The aggregate calls in ``nodes``, each once: the call itself, or its FILTER node when it has one."""
    calls: list[exp.Expression] = []
    for node in nodes:
        for agg in node.find_all(*AGGREGATES):
            if agg.find_ancestor(*AGGREGATES) is not None:
                raise GroupingError("aggregate function calls cannot be nested", position=position_of(agg))
            ancestor = agg.parent
            while ancestor is not None:
                if isinstance(ancestor, exp.Where) and isinstance(ancestor.parent, exp.Filter):
                    raise GroupingError("aggregate functions are not allowed in FILTER", position=position_of(agg))
                ancestor = ancestor.parent
            call = agg.parent if isinstance(agg.parent, exp.Filter) and agg.parent.this is agg else agg
            if not any(call == c for c in calls):
                calls.append(call)
    return calls


def _plan_call(call: exp.Expression, pre_exprs: list[exp.Expression]) -> dict[str, Any]:
    """A hash_agg plan call (see ``stream.builder``); the expressions it reads (argument, ORDER BY
    keys, FILTER condition) become pre-projected columns, appended to ``pre_exprs`` unless already there."""
    agg, condition = (call.this, call.expression.this) if isinstance(call, exp.Filter) else (call, None)
    kind = AGGREGATES[type(agg)]
    arg, order, distinct = agg.this, None, False
    while isinstance(arg, exp.Order | exp.Distinct):  # sqlglot nests string_agg(DISTINCT x, ',' ORDER BY x)
        if isinstance(arg, exp.Order):
            order, arg = arg, arg.this
        elif len(arg.expressions) != 1:
            raise FeatureNotSupported(
                f"{kind}(DISTINCT …) of several arguments is not supported", position=position_of(agg)
            )
        else:
            distinct, arg = True, arg.expressions[0]
    spec: dict[str, Any] = {"kind": kind, "arg": None}
    if kind == "count" and (arg is None or isinstance(arg, exp.Star)):
        if distinct:
            raise SqlSyntaxError("count(DISTINCT *) is not valid", position=position_of(agg))
        spec["kind"] = "count_star"
    else:
        if any(arg.find_all(*AGGREGATES)):
            raise GroupingError("aggregate function calls cannot be nested", position=position_of(agg))
        spec["arg"] = _pre_column(pre_exprs, arg)
    if condition is not None:
        spec["filter"] = _pre_column(pre_exprs, condition)
    if distinct and kind not in ("min", "max"):  # the extremes of the distinct values are the extremes
        spec["distinct"] = True
    if kind == "string_agg":
        spec["delimiter"] = _string_agg_delimiter(agg)
    if kind in ("string_agg", "array_agg") and order is not None:
        # Only here does the order matter; min(x ORDER BY y) and the like ignore it, as in PostgreSQL.
        spec["order_by"] = [_plan_sort_key(o, arg if distinct else None, pre_exprs) for o in order.expressions]
    return spec


def _plan_sort_key(
    ordered: exp.Ordered, distinct_arg: exp.Expression | None, pre_exprs: list[exp.Expression]
) -> dict[str, Any]:
    if distinct_arg is not None and ordered.this != distinct_arg:
        raise InvalidColumnReference(
            "in an aggregate with DISTINCT, ORDER BY expressions must appear in argument list",
            position=position_of(ordered),
        )
    return {
        "column": _pre_column(pre_exprs, ordered.this),
        "descending": bool(ordered.args.get("desc")),
        # sqlglot spells out PostgreSQL's default: NULLS FIRST with DESC, NULLS LAST otherwise.
        "nulls_first": bool(ordered.args.get("nulls_first")),
    }


def _pre_column(pre_exprs: list[exp.Expression], expression: exp.Expression) -> int:
    """The pre-projected column of ``expression``: q15's twelve calls read two columns and three conditions."""
    for i, existing in enumerate(pre_exprs):
        if existing == expression:
            return i
    pre_exprs.append(expression)
    return len(pre_exprs) - 1


def _string_agg_delimiter(agg: exp.Expression) -> str:
    separator = agg.args.get("separator")
    if separator is None:
        raise UndefinedFunction(
            "function string_agg needs a delimiter: string_agg(value, delimiter)", position=position_of(agg)
        )
    constant = separator
    while isinstance(constant, exp.Cast | exp.Paren):
        constant = constant.this
    if isinstance(constant, exp.Null):
        return ""  # PostgreSQL joins with nothing
    if (isinstance(constant, exp.Literal) and constant.is_string) or isinstance(constant, exp.RawString):
        return str(constant.this)
    # E'…' strings too: their backslash escapes are not decoded here yet.
    raise FeatureNotSupported(
        "string_agg in a materialized view needs a constant delimiter ('…' or $$…$$)", position=position_of(separator)
    )


def _refuse_array_multiset(spec: dict[str, Any], pre_types: list[SqlType], call: exp.Expression) -> None:
    """min/max, DISTINCT, string_agg and array_agg keep their argument's values (with their ORDER BY values)
    in a multiset, whose keys cannot hold arrays."""
    for sort_key in spec.get("order_by", []):
        if pre_types[sort_key["column"]].is_array:
            raise FeatureNotSupported(
                f"ORDER BY an array ({pre_types[sort_key['column']]}) inside {spec['kind']} is not supported",
                position=position_of(call),
            )
    arg = spec.get("arg")
    if arg is None or not pre_types[arg].is_array:
        return
    if spec["kind"] == "array_agg":
        raise FeatureNotSupported(
            f"array_agg of an array ({pre_types[arg]}) is not supported: it would be a two-dimensional array, "
            "and tidegate's arrays have one dimension",
            position=position_of(call),
        )
    if spec["kind"] in ("min", "max") or spec.get("distinct"):
        shown = f"{spec['kind']}(DISTINCT …)" if spec.get("distinct") else spec["kind"]
        raise FeatureNotSupported(
            f"{shown} of an array ({pre_types[arg]}) in a materialized view is not supported",
            position=position_of(call),
        )


def _distinct_rows(view: PlannedView) -> PlannedView:
    """SELECT DISTINCT over an aggregation: a hash_agg with no calls, grouped by every visible column
    (they come first; hidden group keys follow)."""
    visible = [c for c in view.columns if not c.hidden]
    if any(c.type.is_array for c in visible):
        raise FeatureNotSupported(
            f"SELECT DISTINCT of an array in a materialized view is not supported: {ARRAY_KEY_REASON}"
        )
    keys = list(range(len(visible)))
    plan = {
        "op": "hash_agg",
        "group_keys": keys,
        "calls": [],
        "schema": [[c.name, _type_text(c.type)] for c in visible],
        "input": view.plan["stream"],
        "display": f"StreamHashAgg {{ group_key: [{', '.join(c.name for c in visible)}], aggs: [] }}",
    }
    watermarks = [i for i in view.watermark_columns if i < len(visible)]
    return PlannedView(visible, keys, {"stream": plan}, view.dependencies, watermark_columns=watermarks)


def _position_in(expression: exp.Expression, name: str) -> int | None:
    for column in expression.find_all(exp.Column):
        if column.name == name:
            return position_of(column)
    return None


def _resolve_group_item(
    key: exp.Expression, items: list[exp.Expression], names: list[str], scope: list[ScopeColumn]
) -> exp.Expression:
    """GROUP BY 1 and GROUP BY alias refer to select items, as in PostgreSQL.

    An input column wins over an output alias of the same name, as in PostgreSQL.
    """
    position = _group_position(key)
    if position is not None:
        if not 1 <= position <= len(items):
            raise InvalidColumnReference(
                f"GROUP BY position {position} is not in select list", position=position_of(key)
            )
        item = items[position - 1]
        chosen = item.this if isinstance(item, exp.Alias) else item
        if any(chosen.find_all(*AGGREGATES)):
            raise GroupingError("aggregate functions are not allowed in GROUP BY", position=position_of(key))
        return chosen
    if isinstance(key, exp.Column) and not key.table and not any(c.name == key.name for c in scope):
        for item, name in zip(items, names):
            if isinstance(item, exp.Alias) and name == key.name:
                return item.this
    if any(key.find_all(*AGGREGATES)):
        raise GroupingError("aggregate functions are not allowed in GROUP BY", position=position_of(key))
    return key


def _group_position(key: exp.Expression) -> int | None:
    """The select-list position a GROUP BY item names (``GROUP BY 2``, ``GROUP BY -1``), if any."""
    if isinstance(key, exp.Literal) and key.is_int:
        return int(key.this)
    if isinstance(key, exp.Neg) and isinstance(key.this, exp.Literal) and key.this.is_int:
        return -int(key.this.this)
    return None


def _aggregate_type(kind: str, arg_type: SqlType | None, call: exp.Expression) -> SqlType:
    if kind in ("count", "count_star"):
        return BIGINT
    assert arg_type is not None
    if kind in ("min", "max"):
        return arg_type
    if kind == "array_agg":
        return array_of(arg_type)
    if kind == "string_agg":
        if arg_type.kind in ("text", "character varying"):
            return SqlType("text")
        if arg_type.kind == "bytea":
            raise FeatureNotSupported("string_agg(bytea, bytea) is not supported yet", position=position_of(call))
        raise UndefinedFunction(f"function string_agg({arg_type}, unknown) does not exist", position=position_of(call))
    integer = arg_type.kind in ("smallint", "integer", "bigint")
    if kind == "sum":
        if arg_type.kind in ("smallint", "integer"):
            return BIGINT
        if arg_type.kind == "bigint":
            return SqlType("numeric", 38, 0)
        if arg_type.kind == "numeric":
            return NUMERIC if arg_type.precision is None else SqlType("numeric", 38, arg_type.scale)
        if arg_type.kind in ("real", "double precision"):
            return arg_type
    if kind == "avg":
        if integer or arg_type.kind == "numeric":
            return NUMERIC
        if arg_type.kind in ("real", "double precision"):
            return DOUBLE
    raise UndefinedFunction(f"function {kind}({arg_type}) does not exist", position=position_of(call))


def explain_lines(relation_name: str, view: PlannedView) -> list[str]:
    """EXPLAIN output: the operator tree from Materialize down to the scans."""
    visible = [c.name for c in view.columns if not c.hidden]
    lines = [
        f"StreamMaterialize {{ columns: [{', '.join(visible)}], pk: "
        f"[{', '.join(view.columns[i].name for i in view.pk)}] }}"
    ]

    def render(node: dict[str, Any], depth: int) -> None:
        lines.append("  " * (depth - 1) + "└─" + node.get("display", node["op"]))
        for child in [node["input"]] if "input" in node else node.get("inputs", []):
            render(child, depth + 1)

    render(view.plan["stream"], 1)
    return lines
