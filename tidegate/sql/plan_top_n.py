"""Planning top-N: ranking window functions bounded by an outer filter, and ORDER BY … LIMIT.

Two shapes become a ``top_n`` plan node:

- ``SELECT … FROM (SELECT …, row_number() OVER (PARTITION BY p ORDER BY o) AS rn FROM x) t
  WHERE rn <= N`` (also ``rank()``/``dense_rank()``, ``rn < N``, ``rn = 1``): the
  subquery is planned with a TopN over its input that keeps the first N rows of
  each partition and appends their rank, which the subquery's ``rn`` reads.
  A ranking window without such a bound would rank every row of an unbounded
  stream, and is refused.
- ``ORDER BY … LIMIT n [OFFSET m]`` on a view: a TopN with one group over the
  view's output, ordering by output columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from tidegate.common.sqltext import position_of
from tidegate.common.types import BIGINT
from tidegate.errors import FeatureNotSupported, InvalidColumnReference
from tidegate.meta.catalog import ColumnDef
from tidegate.sql.scope import ExpressionCompiler, ScopeColumn, refuse_array_keys, type_text

RANKING = {exp.RowNumber: "row_number", exp.Rank: "rank", exp.DenseRank: "dense_rank"}
RANK_COLUMN = "__rank"


@dataclass(frozen=True)
class RankedItem:
    """The ranking window of a subquery's select list and the name it is selected as."""

    window: exp.Window
    alias: str
    kind: str


def ranking_item(select: exp.Select) -> RankedItem | None:
    """The one ranking window function of ``select``'s list; other window functions are refused."""
    found: RankedItem | None = None
    for item in select.expressions:
        for window in item.find_all(exp.Window):
            kind = RANKING.get(type(window.this))
            if kind is None or not isinstance(item, exp.Alias) or item.this is not window or found is not None:
                raise FeatureNotSupported(
                    "window functions in a materialized view are supported only as one row_number(), rank() or "
                    "dense_rank() selected in a subquery that an outer WHERE bounds (rn <= N)",
                    position=position_of(window),
                )
            if window.args.get("spec") is not None:
                raise FeatureNotSupported(
                    "a frame clause on a ranking function is meaningless", position=position_of(window)
                )
            found = RankedItem(window, item.alias, kind)
    return found


def take_rank_bound(conjuncts: list[exp.Expression], alias: str, qualifier: str | None) -> int | None:
    """Remove from ``conjuncts`` the bounds on the rank column ``alias``; the resulting limit."""
    limit: int | None = None
    for conjunct in list(conjuncts):
        bound = _bound(conjunct, alias, qualifier)
        if bound is not None:
            conjuncts.remove(conjunct)
            limit = bound if limit is None else min(limit, bound)
    return limit


def _bound(conjunct: exp.Expression, alias: str, qualifier: str | None) -> int | None:
    flipped: dict[type[exp.Expression], type[exp.Expression]] = {exp.GTE: exp.LTE, exp.GT: exp.LT, exp.EQ: exp.EQ}
    comparison: type[exp.Expression] = type(conjunct)
    column, value = conjunct.args.get("this"), conjunct.args.get("expression")
    if isinstance(value, exp.Column) and comparison in flipped:
        column, value, comparison = value, column, flipped[comparison]
    if not (
        isinstance(column, exp.Column)
        and column.name == alias
        and (not column.table or column.table == qualifier)
        and isinstance(value, exp.Literal)
        and value.is_int
    ):
        return None
    n = int(value.this)
    if comparison is exp.LTE:
        return n
    if comparison is exp.LT:
        return n - 1
    if comparison is exp.EQ and n == 1:
        return 1
    return None


def plan_ranking(
    source_scope: list[ScopeColumn],
    plan: dict[str, Any],
    pk: list[int],
    ranked: RankedItem,
    limit: int,
    append_only: bool,
) -> tuple[list[ScopeColumn], dict[str, Any]]:
    """A TopN keeping the first ``limit`` rows of each partition, the rank appended as ``__rank``."""
    window = ranked.window
    compiler = ExpressionCompiler(source_scope)
    partition = list(window.args.get("partition_by") or [])
    order = window.args.get("order")
    ordered = list(order.expressions) if order is not None else []
    exprs = partition + [o.this for o in ordered]
    compiled, types = compiler.compile(exprs) if exprs else ([], [])
    refuse_array_keys(types, exprs, "PARTITION BY or ORDER BY")
    scope = list(source_scope)
    extra: list[str] = []
    positions: list[int] = []
    for text, sql_type in zip(compiled, types):
        if text.startswith("_") and text[1:].isdigit():
            positions.append(int(text[1:]))
            continue
        extra.append(text)
        scope.append(ScopeColumn(f"__topn_key{len(extra)}", sql_type, None, hidden=True))
        positions.append(len(scope) - 1)
    if extra:
        plan = {
            "op": "project",
            "exprs": [f"_{i}" for i in range(len(source_scope))] + extra,
            "schema": [[c.name, type_text(c.type)] for c in scope],
            "input": plan,
            "display": f"StreamProject {{ ranking keys: {', '.join(extra)} }}",
        }
    group_keys = positions[: len(partition)]
    order_by = [
        [position, bool(o.args.get("desc")), bool(o.args.get("nulls_first"))]
        for position, o in zip(positions[len(partition) :], ordered)
    ]
    scope.append(ScopeColumn(RANK_COLUMN, BIGINT, None, hidden=True))
    shown = window.sql("postgres")
    plan = {
        "op": "top_n",
        "group_keys": group_keys,
        "order_by": order_by,
        "limit": limit,
        "offset": 0,
        "rank_kind": ranked.kind,
        "emit_rank": True,
        "input_pk": list(pk),
        "append_only": append_only,
        "schema": [[c.name, type_text(c.type)] for c in scope],
        "input": plan,
        "display": f"StreamTopN {{ {shown} <= {limit}{', append only' if append_only else ''} }}",
    }
    return scope, plan


def plan_order_limit(
    select: exp.Select, columns: list[ColumnDef], pk: list[int], plan: dict[str, Any], append_only: bool
) -> dict[str, Any]:
    """``ORDER BY … LIMIT n [OFFSET m]`` over a view's output: a TopN with one group."""
    limit_node = select.args.get("limit")
    offset_node = select.args.get("offset")
    limit = _constant(limit_node.expression if limit_node is not None else None, "LIMIT")
    offset = _constant(offset_node.expression if offset_node is not None else None, "OFFSET") or 0
    if limit is None:
        raise FeatureNotSupported("ORDER BY in a materialized view needs a LIMIT (rows of a view have no order)")
    order = select.args.get("order")
    visible = [i for i, c in enumerate(columns) if not c.hidden]
    order_by: list[list[Any]] = []
    for ordered in order.expressions if order is not None else []:
        key = ordered.this
        if isinstance(key, exp.Literal) and key.is_int:
            n = int(key.this)
            if not 1 <= n <= len(visible):
                raise InvalidColumnReference(f"ORDER BY position {n} is not in select list", position=position_of(key))
            position = visible[n - 1]
        elif isinstance(key, exp.Column) and not key.table and any(columns[i].name == key.name for i in visible):
            position = next(i for i in visible if columns[i].name == key.name)
        else:
            raise FeatureNotSupported(
                "ORDER BY in a materialized view must name an output column (by name or position)",
                position=position_of(key),
            )
        refuse_array_keys([columns[position].type], [key], "ORDER BY")
        order_by.append([position, bool(ordered.args.get("desc")), bool(ordered.args.get("nulls_first"))])
    shown = ", ".join(o.sql("postgres") for o in order.expressions) if order is not None else ""
    return {
        "op": "top_n",
        "group_keys": [],
        "order_by": order_by,
        "limit": limit,
        "offset": offset,
        "rank_kind": "row_number",
        "emit_rank": False,
        "input_pk": list(pk),
        "append_only": append_only,
        "schema": [[c.name, type_text(c.type)] for c in columns],
        "input": plan,
        "display": f"StreamTopN {{ order: [{shown}], limit: {limit}, offset: {offset} }}",
    }


def _constant(node: exp.Expression | None, clause: str) -> int | None:
    if node is None:
        return None
    if isinstance(node, exp.Literal) and node.is_int and int(node.this) >= 0:
        return int(node.this)
    raise FeatureNotSupported(f"{clause} in a materialized view must be a non-negative integer constant")
