"""Planning a view's inputs: FROM items, joins, window table functions and subqueries in WHERE.

Everything a SELECT reads becomes one ``PlannedInput``: the scope its
expressions resolve against (in the positional order of the rows the plan
yields), the stream plan producing those rows, and their stream key. A FROM
item is a relation (table, view or source), a subquery or CTE, or
``TUMBLE``/``HOP`` over one of those; joins combine two inputs into one whose
rows are the left columns followed by the right ones. ``EXISTS``/``IN``
subqueries among WHERE's conjuncts become semi joins (``NOT EXISTS``: anti
joins) on the input.

Joins are equi-joins: the equalities between an expression of one side and an
expression of the other become the hash keys (computed into extra hidden
columns when they are not plain columns, cast to one type on both sides); every
other conjunct of the condition is a residual predicate evaluated on matching
pairs. A join with no such equality is refused: its state would hold every row
of both sides under one key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
from sqlglot import exp

from tidegate.common.duck import connect
from tidegate.common.sqltext import AGGREGATES, position_of, to_duckdb
from tidegate.common.types import BOOLEAN, SqlType, from_arrow
from tidegate.errors import (
    AmbiguousColumn,
    DatatypeMismatch,
    FeatureNotSupported,
    GroupingError,
    InvalidParameterValue,
    UndefinedColumn,
    UndefinedRelation,
    WrongObjectType,
)
from tidegate.meta.catalog import Catalog, ColumnDef, Relation, RelationKind
from tidegate.sql.plan_top_n import ranking_item, take_rank_bound
from tidegate.sql.scope import ExpressionCompiler, ScopeColumn, refuse_array_keys, type_text

WINDOW_FUNCTIONS = ("tumble", "hop")


class PlannedQuery(Protocol):
    """What planning a nested SELECT yields (``planner.PlannedView``)."""

    columns: list[ColumnDef]
    pk: list[int]
    plan: dict[str, Any]
    dependencies: list[int]
    append_only: bool
    watermark_columns: list[int]


PlanQuery = Callable[[exp.Expression, Catalog, dict[str, exp.Expression], int | None], PlannedQuery]


@dataclass
class PlannedInput:
    scope: list[ScopeColumn]
    plan: dict[str, Any]
    pk: list[int]
    dependencies: list[int] = field(default_factory=list)
    # The rows only ever arrive (no update or delete): top-N may forget rows that fall out.
    append_only: bool = False
    # The positions in ``scope`` whose column carries a watermark at run time
    # (docs/design/20261127_watermarks.md): what EMIT ON WINDOW CLOSE needs among the group keys.
    watermark_columns: list[int] = field(default_factory=list)

    def schema(self) -> list[list[str]]:
        return [[c.name, type_text(c.type)] for c in self.scope]


@dataclass
class FromPlanner:
    catalog: Catalog
    plan_query: PlanQuery
    ctes: dict[str, exp.Expression] = field(default_factory=dict)

    # ---- FROM -------------------------------------------------------------
    def plan_from(self, select: exp.Select) -> tuple[PlannedInput, list[exp.Expression]]:
        """The input of ``select`` and the WHERE conjuncts left for a filter above it."""
        from_ = select.args.get("from") or select.args.get("from_")
        if from_ is None:
            raise FeatureNotSupported("a materialized view needs a FROM clause")
        where = select.args.get("where")
        conjuncts = _conjuncts(where.this) if where is not None else []
        current = self.plan_item(from_.this, conjuncts)
        for join in select.args.get("joins") or []:
            right = self.plan_item(join.this, conjuncts)
            current, conjuncts = self.plan_join(current, right, join, conjuncts)
        remaining: list[exp.Expression] = []
        for conjunct in conjuncts:
            semi = self.plan_subquery_conjunct(current, conjunct)
            if semi is None:
                remaining.append(conjunct)
            else:
                current = semi
        return current, remaining

    def plan_item(self, item: exp.Expression, conjuncts: list[exp.Expression] | None = None) -> PlannedInput:
        """A FROM item. A subquery ranking its rows takes the bounds on its rank out of the outer
        WHERE's ``conjuncts`` (they become its top-N limit)."""
        if isinstance(item, exp.Table) and isinstance(item.this, exp.Anonymous | exp.Func):
            return self.plan_window(item)
        if isinstance(item, exp.Table):
            name = item.name
            alias = item.alias or None
            if not item.args.get("db") and name in self.ctes:
                return self.plan_subquery(self.ctes[name], alias or name)
            relation = self.catalog.get(name)
            if relation is None:
                raise UndefinedRelation(f'relation "{name}" does not exist', position=position_of(item))
            if relation.kind is RelationKind.SINK:
                raise WrongObjectType(
                    f'"{name}" is a sink: its rows go to its target, nothing reads them here',
                    position=position_of(item),
                )
            return relation_input(relation, alias)
        if isinstance(item, exp.Subquery):
            alias = item.alias or None
            limit = None
            query = item.this
            ranked = ranking_item(query) if isinstance(query, exp.Select) else None
            if ranked is not None and conjuncts is not None:
                limit = take_rank_bound(conjuncts, ranked.alias, alias)
            return self.plan_subquery(query, alias, limit)
        raise FeatureNotSupported(f"{item.key} in FROM is not supported in a materialized view")

    def plan_subquery(self, query: exp.Expression, alias: str | None, rank_limit: int | None = None) -> PlannedInput:
        view = self.plan_query(query, self.catalog, self.ctes, rank_limit)
        scope = [ScopeColumn(c.name, c.type, alias, c.hidden) for c in view.columns]
        return PlannedInput(
            scope,
            view.plan["stream"],
            list(view.pk),
            list(view.dependencies),
            view.append_only,
            list(view.watermark_columns),
        )

    # ---- TUMBLE / HOP ---------------------------------------------------------
    def plan_window(self, item: exp.Table) -> PlannedInput:
        call = item.this
        function = (call.name if isinstance(call, exp.Anonymous) else call.sql_name()).lower()
        args = list(call.expressions) if isinstance(call, exp.Anonymous) else list(call.args.values())
        if function not in WINDOW_FUNCTIONS:
            raise FeatureNotSupported(f"table function {function}() is not supported", position=position_of(item))
        wanted = 3 if function == "tumble" else 4
        if len(args) != wanted:
            shape = "(relation, time_column, size)" if function == "tumble" else "(relation, time_column, slide, size)"
            raise FeatureNotSupported(f"{function.upper()} takes {shape}", position=position_of(item))
        target = args[0]
        if isinstance(target, exp.Column) and not target.table:
            inner = self.plan_item(exp.Table(this=exp.to_identifier(target.name)))
            qualifier = item.alias or target.name
        else:
            raise FeatureNotSupported(
                f"the first argument of {function.upper()} must name a relation", position=position_of(target)
            )
        time_arg = args[1]
        if not isinstance(time_arg, exp.Column):
            raise FeatureNotSupported(
                f"the second argument of {function.upper()} must be a column", position=position_of(time_arg)
            )
        time_index = ExpressionCompiler([ScopeColumn(c.name, c.type, None, c.hidden) for c in inner.scope]).resolve(
            exp.column(time_arg.name)
        )
        time_type = inner.scope[time_index].type
        if time_type.kind not in ("timestamp without time zone", "timestamp with time zone"):
            raise DatatypeMismatch(
                f"the time column of {function.upper()} must be a timestamp, not {time_type}",
                position=position_of(time_arg),
            )
        size_us = interval_micros(args[-1])
        slide_us = size_us if function == "tumble" else interval_micros(args[2])
        unit_us = {"s": 1_000_000, "ms": 1000}.get(getattr(time_type.arrow, "unit", "us"), 1)
        if size_us % unit_us or slide_us % unit_us:
            raise InvalidParameterValue(
                f"a window over a {time_type} column must be a whole number of its units ({unit_us} us)",
                position=position_of(args[-1]),
            )
        if size_us % slide_us:
            raise InvalidParameterValue(
                "the size of a HOP window must be a multiple of its slide", position=position_of(args[-1])
            )
        scope = [ScopeColumn(c.name, c.type, qualifier, c.hidden) for c in inner.scope]
        scope += [ScopeColumn("window_start", time_type, qualifier), ScopeColumn("window_end", time_type, qualifier)]
        start = len(inner.scope)
        # A row belongs to size/slide windows of a hop: its key must tell them apart.
        pk = list(inner.pk) if size_us == slide_us else [*inner.pk, start]
        # The hop window derives watermarks of window_start and window_end from the time column's.
        watermarks = list(inner.watermark_columns)
        if time_index in watermarks:
            watermarks += [start, start + 1]
        shown = f"{function.upper()}({qualifier}, {time_arg.name}, slide: {slide_us} us, size: {size_us} us)"
        plan = {
            "op": "hop_window",
            "time_column": time_index,
            "slide_us": slide_us,
            "size_us": size_us,
            "schema": [[c.name, type_text(c.type)] for c in scope],
            "input": inner.plan,
            "display": f"StreamHopWindow {{ {shown} }}",
        }
        return PlannedInput(scope, plan, pk, inner.dependencies, inner.append_only, watermarks)

    # ---- joins ----------------------------------------------------------------
    def plan_join(
        self, left: PlannedInput, right: PlannedInput, join: exp.Join, where: list[exp.Expression]
    ) -> tuple[PlannedInput, list[exp.Expression]]:
        side = (join.side or "").lower()
        kind = (join.kind or "").lower()
        if join.args.get("method"):
            raise FeatureNotSupported(f"{join.args['method']} joins are not supported", position=position_of(join))
        if kind in ("semi", "anti"):
            raise FeatureNotSupported(f"{kind.upper()} JOIN is not supported; use EXISTS", position=position_of(join))
        join_type = side if side in ("left", "right", "full") else "inner"
        on = join.args.get("on")
        using = join.args.get("using")
        conditions = _conjuncts(on) if on is not None else []
        if using:
            if join_type in ("right", "full"):
                raise FeatureNotSupported(f"{join_type.upper()} JOIN … USING is not supported; use ON")
            right = _using_right(left, right, [u.name for u in using])
            conditions = [
                exp.EQ(this=_positional(left, name), expression=exp.column(f"__using_{name}", table="__using"))
                for name in (u.name for u in using)
            ]
        remaining = where
        if join_type == "inner" and on is None and not using:
            # FROM a, b WHERE a.x = b.y: the WHERE conjuncts over both sides join them.
            pulled = [c for c in where if _references_both(c, left, right)]
            conditions += pulled
            remaining = [c for c in where if not any(c is p for p in pulled)]
        return self.combine(left, right, join_type, conditions, join), remaining

    def combine(
        self,
        left: PlannedInput,
        right: PlannedInput,
        join_type: str,
        conditions: list[exp.Expression],
        node: exp.Expression,
        *,
        prefer_right: bool = False,
    ) -> PlannedInput:
        """Join two inputs on ``conditions``; ``prefer_right`` resolves unqualified names in the
        right scope first (a correlated subquery's own columns hide the outer query's)."""
        compiler = JoinCompiler(left.scope, right.scope, prefer_right)
        left_keys_sql: list[exp.Expression] = []
        right_keys_sql: list[exp.Expression] = []
        residual: list[exp.Expression] = []
        for condition in conditions:
            if any(condition.find_all(*AGGREGATES)):
                raise GroupingError(
                    "aggregate functions are not allowed in JOIN conditions", position=position_of(condition)
                )
            pair = _equi_pair(condition, compiler)
            if pair is None:
                residual.append(condition)
            else:
                left_keys_sql.append(pair[0])
                right_keys_sql.append(pair[1])
        if not left_keys_sql:
            raise FeatureNotSupported(
                "a join needs an equality between a column of each side (cross joins and joins on "
                "non-equalities only are not supported)",
                position=position_of(node),
            )
        nl = len(left.scope)
        left_exprs, left_types = compiler.compile(left_keys_sql)
        right_exprs, right_types = compiler.compile(right_keys_sql)
        right_exprs = [_shift(e, -nl) for e in right_exprs]
        key_types = [_common_type(a, b, node) for a, b in zip(left_types, right_types)]
        refuse_array_keys(key_types, left_keys_sql, "a join on")
        if join_type == "full":
            # A row NULL-extended on the left and one NULL-extended on the right may show the same
            # key values (a key can be NULL: a group key, say): a column present only on real rows of
            # each side tells them apart in the output's stream key.
            left, right = _with_presence(left, "_left_present"), _with_presence(right, "_right_present")
        left, left_keys = _with_keys(left, left_exprs, left_types, key_types, "_lk")
        right, right_keys = _with_keys(right, right_exprs, right_types, key_types, "_rk")
        nl = len(left.scope)
        compiler = JoinCompiler(left.scope, right.scope, prefer_right)
        condition_sql: str | None = None
        if residual:
            conjunction = conjoin(residual)
            [condition_sql], [condition_type] = compiler.compile([conjunction])
            if condition_type.kind != "boolean":
                raise DatatypeMismatch(
                    f"argument of JOIN/ON must be type boolean, not type {condition_type}",
                    position=position_of(conjunction),
                )
        semi = join_type in ("left_semi", "left_anti")
        scope = list(left.scope) if semi else [*left.scope, *right.scope]
        pk = list(left.pk) if semi else [*left.pk, *(nl + i for i in right.pk)]
        shown = " AND ".join(c.sql("postgres") for c in conditions)
        plan = {
            "op": "hash_join",
            "join_type": join_type,
            "left_keys": left_keys,
            "right_keys": right_keys,
            "left_pk": list(left.pk),
            "right_pk": list(right.pk),
            "condition": condition_sql,
            "schema": [[c.name, type_text(c.type)] for c in scope],
            "inputs": [left.plan, right.plan],
            "display": f"StreamHashJoin {{ type: {join_type}, on: {shown} }}",
        }
        dependencies = list(dict.fromkeys([*left.dependencies, *right.dependencies]))
        append_only = join_type == "inner" and left.append_only and right.append_only
        return PlannedInput(scope, plan, pk, dependencies, append_only)

    # ---- EXISTS / IN subqueries ----------------------------------------------
    def plan_subquery_conjunct(self, current: PlannedInput, conjunct: exp.Expression) -> PlannedInput | None:
        """A semi (anti) join for ``EXISTS``/``IN`` (``NOT EXISTS``) conjuncts; None for any other."""
        negated = isinstance(conjunct, exp.Not)
        inner = conjunct.this if negated else conjunct
        if isinstance(inner, exp.Paren):
            inner = inner.this
        if isinstance(inner, exp.Exists):
            return self._plan_exists(current, inner, "left_anti" if negated else "left_semi")
        if isinstance(inner, exp.In) and inner.args.get("query") is not None:
            if negated:
                raise FeatureNotSupported(
                    "NOT IN (subquery) is not supported (its NULL semantics differ from NOT EXISTS); "
                    "write NOT EXISTS (… WHERE inner = outer)",
                    position=position_of(conjunct),
                )
            query = inner.args["query"]
            query = query.this if isinstance(query, exp.Subquery) else query
            right = self.plan_subquery(query, "__in")
            visible = [i for i, c in enumerate(right.scope) if not c.hidden]
            if len(visible) != 1:
                raise FeatureNotSupported("subquery has too many columns", position=position_of(query))
            # The subquery's column gets a name of its own, so the left operand resolves outside.
            column = right.scope[visible[0]]
            right.scope[visible[0]] = ScopeColumn("__in_value", column.type, "__in", column.hidden)
            condition = exp.EQ(this=inner.this, expression=exp.column("__in_value", table="__in"))
            return self.combine(current, right, "left_semi", [condition], conjunct)
        return None

    def _plan_exists(self, current: PlannedInput, exists: exp.Exists, join_type: str) -> PlannedInput:
        query = exists.this
        if not isinstance(query, exp.Select):
            raise FeatureNotSupported("EXISTS needs a SELECT", position=position_of(exists))
        for clause in ("group", "having", "limit", "distinct", "with", "with_"):
            if query.args.get(clause) is not None:
                raise FeatureNotSupported(
                    f"{clause.rstrip('_').upper()} inside EXISTS is not supported", position=position_of(exists)
                )
        inner_select = query.copy()
        inner_select.set("where", None)
        right, local = FromPlanner(self.catalog, self.plan_query, self.ctes).plan_from(inner_select)
        where = query.args.get("where")
        conjuncts = _conjuncts(where.this) if where is not None else []
        inner_only = ExpressionCompiler(right.scope)
        correlated: list[exp.Expression] = []
        filters: list[exp.Expression] = list(local)
        for conjunct in conjuncts:
            try:
                inner_only.compile([conjunct])
                filters.append(conjunct)
            except (UndefinedColumn, AmbiguousColumn):
                correlated.append(conjunct)
        if filters:
            conjunction = conjoin(filters)
            [compiled], [kind] = inner_only.compile([conjunction])
            if kind.kind != "boolean":
                raise DatatypeMismatch(f"argument of WHERE must be type boolean, not type {kind}")
            right = PlannedInput(
                right.scope,
                {
                    "op": "filter",
                    "condition": compiled,
                    "input": right.plan,
                    "display": f"StreamFilter {{ {conjunction.sql('postgres')} }}",
                },
                right.pk,
                right.dependencies,
                right.append_only,
                right.watermark_columns,
            )
        return self.combine(current, right, join_type, correlated, exists, prefer_right=True)


class JoinCompiler(ExpressionCompiler):
    """Compiles over ``left ++ right``; with ``prefer_right`` an unqualified name found on the
    right side is taken from there even when the left has it too (SQL's subquery scoping)."""

    def __init__(self, left: list[ScopeColumn], right: list[ScopeColumn], prefer_right: bool) -> None:
        super().__init__([*left, *right])
        self.nl = len(left)
        self.left = ExpressionCompiler(left)
        self.right = ExpressionCompiler(right)
        self.prefer_right = prefer_right

    def resolve(self, column: exp.Column) -> int:
        if not self.prefer_right:
            return super().resolve(column)
        try:
            return self.nl + self.right.resolve(column)
        except UndefinedColumn:
            return self.left.resolve(column)

    def side(self, expression: exp.Expression) -> set[str]:
        sides: set[str] = set()
        for column in expression.find_all(exp.Column):
            if isinstance(column.this, exp.Star):
                continue
            sides.add("left" if self.resolve(column) < self.nl else "right")
        return sides


def relation_input(relation: Relation, alias: str | None) -> PlannedInput:
    qualifier = alias or relation.name
    scope = [ScopeColumn(c.name, c.type, qualifier, c.hidden) for c in relation.columns]
    append_only = relation.kind is RelationKind.SOURCE or relation.append_only
    watermarks = [] if relation.watermark is None else [_watermark_index(relation)]
    return PlannedInput(scope, scan_plan(relation), list(relation.pk), [relation.id], append_only, watermarks)


def _watermark_index(relation: Relation) -> int:
    assert relation.watermark is not None
    index = relation.column_index(relation.watermark.column)
    assert index is not None, (relation.name, relation.watermark)
    return index


def scan_plan(relation: Relation) -> dict[str, Any]:
    if relation.kind is RelationKind.SOURCE:
        return source_plan(relation)
    return {"op": "scan", "relation_id": relation.id, "display": f"StreamScan {{ {relation.name} }}"}


def source_plan(relation: Relation) -> dict[str, Any]:
    """The plan node that reads a source (or the connector of a table fed by one) inside a job.

    Each job reading a source runs it itself (docs/design/20261127_nexmark_source.md), with the
    source's offsets in the job's own state."""
    plan: dict[str, Any] = {
        "op": "source",
        "relation_id": relation.id,
        "connector": relation.options["connector"].lower(),
        "options": dict(relation.options),
        "schema": [[c.name, type_text(c.type)] for c in relation.columns],
        "display": f"StreamSource {{ {relation.name} }}",
    }
    if "encode" in relation.options:
        plan["encode"] = relation.options["encode"]
    if relation.watermark is not None:
        delay_us = relation.watermark.delay_us
        plan["watermark"] = {"column": _watermark_index(relation), "delay_us": delay_us}
        plan["display"] = f"StreamSource {{ {relation.name}, watermark: {relation.watermark.column} - {delay_us} us }}"
    return plan


def interval_micros(node: exp.Expression, what: str = "a window size", *, zero_allowed: bool = False) -> int:
    """A window size or slide (``what`` names it in errors), or a watermark's delay: a constant
    interval of fixed length, in microseconds."""
    if any(node.find_all(exp.Column)):
        raise FeatureNotSupported(f"{what} must be a constant interval", position=position_of(node))
    con = connect(streaming=True)
    try:
        value = con.sql(f"SELECT CAST({to_duckdb(node)} AS INTERVAL) AS v").to_arrow_table().column(0)[0].as_py()
    except Exception as error:
        raise DatatypeMismatch(f"{what} must be an interval: {error}", position=position_of(node)) from error
    finally:
        con.close()
    months, days, nanos = value.months, value.days, value.nanoseconds
    if months or days:
        raise InvalidParameterValue(
            f"{what} must be a fixed length (no months or days); write hours instead", position=position_of(node)
        )
    if nanos < 0 or (nanos == 0 and not zero_allowed) or nanos % 1000:
        raise InvalidParameterValue(
            f"{what} must be a {'non-negative' if zero_allowed else 'positive'} whole number of microseconds",
            position=position_of(node),
        )
    return int(nanos // 1000)


def conjoin(conditions: list[exp.Expression]) -> exp.Expression:
    """``a AND b AND …`` of one or more conditions."""
    result = conditions[0]
    for condition in conditions[1:]:
        result = exp.And(this=result, expression=condition)
    return result


def _conjuncts(condition: exp.Expression) -> list[exp.Expression]:
    if isinstance(condition, exp.And):
        return [*_conjuncts(condition.this), *_conjuncts(condition.expression)]
    if isinstance(condition, exp.Paren) and isinstance(condition.this, exp.And):
        return _conjuncts(condition.this)
    return [condition]


def _equi_pair(condition: exp.Expression, compiler: JoinCompiler) -> tuple[exp.Expression, exp.Expression] | None:
    """(left expression, right expression) when ``condition`` equates one side with the other."""
    if not isinstance(condition, exp.EQ):
        return None
    a, b = condition.this, condition.expression
    sides_a, sides_b = compiler.side(a), compiler.side(b)
    if sides_a == {"left"} and sides_b == {"right"}:
        return a, b
    if sides_a == {"right"} and sides_b == {"left"}:
        return b, a
    return None


def _references_both(condition: exp.Expression, left: PlannedInput, right: PlannedInput) -> bool:
    compiler = JoinCompiler(left.scope, right.scope, False)
    try:
        return compiler.side(condition) == {"left", "right"}
    except (UndefinedColumn, AmbiguousColumn):
        return False


def _shift(compiled: str, delta: int) -> str:
    """Renumber the positional references of a compiled expression (right side: from the pair row)."""
    parsed: exp.Expression = exp.maybe_parse(compiled, dialect="duckdb")

    def renumber(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Column) and not node.table and node.name[1:].isdigit() and node.name[0] == "_":
            return exp.column(f"_{int(node.name[1:]) + delta}")
        return node

    return parsed.transform(renumber).sql(dialect="duckdb")


def _common_type(a: SqlType, b: SqlType, node: exp.Expression) -> SqlType:
    if a.arrow.equals(b.arrow):
        return a
    con = connect(streaming=True)
    try:
        con.register("__l", pa.schema([pa.field("a", a.arrow)]).empty_table())
        con.register("__r", pa.schema([pa.field("b", b.arrow)]).empty_table())
        result = con.sql("SELECT a FROM __l UNION ALL SELECT b FROM __r").to_arrow_table()
    except Exception as error:
        raise DatatypeMismatch(f"JOIN types {a} and {b} cannot be matched", position=position_of(node)) from error
    finally:
        con.close()
    return from_arrow(result.schema.field(0).type)


def _with_keys(
    side: PlannedInput, exprs: list[str], types: list[SqlType], key_types: list[SqlType], prefix: str
) -> tuple[PlannedInput, list[int]]:
    """The side with its key expressions as columns: plain columns of the key type are used as
    they are; others are computed into hidden columns by a projection."""
    keys: list[int] = []
    extra: list[tuple[str, SqlType]] = []
    for expr, sql_type, key_type in zip(exprs, types, key_types):
        if expr.startswith("_") and expr[1:].isdigit() and sql_type.arrow.equals(key_type.arrow):
            keys.append(int(expr[1:]))
            continue
        cast = expr if sql_type.arrow.equals(key_type.arrow) else f"CAST({expr} AS {key_type.duckdb_name})"
        extra.append((cast, key_type))
        keys.append(len(side.scope) + len(extra) - 1)
    if not extra:
        return side, keys
    taken = [c.name for c in side.scope]
    scope = list(side.scope)
    for n, (_, sql_type) in enumerate(extra):
        name = f"{prefix}{n}"
        while name in taken:
            name += "_"
        scope.append(ScopeColumn(name, sql_type, None, hidden=True))
    plan = {
        "op": "project",
        "exprs": [f"_{i}" for i in range(len(side.scope))] + [e for e, _ in extra],
        "schema": [[c.name, type_text(c.type)] for c in scope],
        "input": side.plan,
        "display": f"StreamProject {{ join keys: {', '.join(e for e, _ in extra)} }}",
    }
    return PlannedInput(scope, plan, side.pk, side.dependencies, side.append_only, side.watermark_columns), keys


def _with_presence(side: PlannedInput, name: str) -> PlannedInput:
    """The side with a hidden TRUE column in its stream key: NULL in the rows a full join
    NULL-extends, so those rows' keys differ from every real row's."""
    scope = [*side.scope, ScopeColumn(name, BOOLEAN, None, hidden=True)]
    plan = {
        "op": "project",
        "exprs": [f"_{i}" for i in range(len(side.scope))] + ["TRUE"],
        "schema": [[c.name, type_text(c.type)] for c in scope],
        "input": side.plan,
        "display": f"StreamProject {{ {name}: true }}",
    }
    return PlannedInput(scope, plan, [*side.pk, len(side.scope)], side.dependencies, side.append_only)


def _using_right(left: PlannedInput, right: PlannedInput, names: list[str]) -> PlannedInput:
    """USING (col): the right side's copy of each column is hidden, so ``col`` names the left one."""
    for name in names:
        for scope, what in ((left.scope, "left"), (right.scope, "right")):
            if not any(c.name == name and not c.hidden for c in scope):
                raise UndefinedColumn(f'column "{name}" specified in USING clause does not exist in {what} table')
    scope = [
        ScopeColumn(f"__using_{c.name}", c.type, "__using", True) if c.name in names and not c.hidden else c
        for c in right.scope
    ]
    return PlannedInput(scope, right.plan, right.pk, right.dependencies, right.append_only, right.watermark_columns)


def _positional(side: PlannedInput, name: str) -> exp.Expression:
    column = next(c for c in side.scope if c.name == name and not c.hidden)
    return exp.column(name, table=column.qualifier) if column.qualifier else exp.column(name)
