"""The stream planner: a view's SELECT becomes a stream plan.

Binding resolves names against the catalog (errors carry the position of the
offending name); every scalar expression is compiled to DuckDB SQL over its
input's positional columns (what ``stream.evaluator`` runs) and typed by asking
DuckDB for the type over an empty input, so plan types and runtime types agree.

Shapes planned in this release::

    scan|source → [filter WHERE] → project                    (no aggregation)
    scan → [filter WHERE] → project(keys, args) → hash_agg
         → [filter HAVING] → project(select list)             (GROUP BY / aggregates)

Every view has a stream key that identifies its rows in storage: the upstream's
key for a projection (kept as hidden columns when the select list drops it),
the group keys for an aggregation. The plan is plain data (see ``stream.builder``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import duckdb
import pyarrow as pa
from sqlglot import exp

from tidegate.common.duck import connect, translate_error
from tidegate.common.sqltext import AGGREGATES, output_name, position_of, to_duckdb
from tidegate.common.types import BIGINT, DOUBLE, NUMERIC, SqlType, from_arrow
from tidegate.errors import (
    AmbiguousColumn,
    DatatypeMismatch,
    DuplicateColumn,
    FeatureNotSupported,
    GroupingError,
    InvalidColumnReference,
    SqlSyntaxError,
    TidegateError,
    UndefinedColumn,
    UndefinedFunction,
    UndefinedRelation,
)
from tidegate.meta.catalog import Catalog, ColumnDef, Relation, RelationKind


@dataclass
class ScopeColumn:
    name: str
    type: SqlType
    qualifier: str | None
    hidden: bool = False


@dataclass
class PlannedView:
    columns: list[ColumnDef]
    pk: list[int]
    plan: dict[str, Any]
    dependencies: list[int]
    explain: list[str] = field(default_factory=list)


class ExpressionCompiler:
    """Compiles expressions over one input scope to DuckDB SQL on ``_0, _1, …``."""

    def __init__(self, scope: list[ScopeColumn]) -> None:
        self.scope = scope

    def resolve(self, column: exp.Column) -> int:
        name = column.name
        qualifier = column.table or None
        matches = [
            i for i, c in enumerate(self.scope) if c.name == name and (qualifier is None or c.qualifier == qualifier)
        ]
        if not matches:
            shown = f"{qualifier}.{name}" if qualifier else name
            raise UndefinedColumn(f'column "{shown}" does not exist', position=position_of(column))
        if len(matches) > 1:
            raise AmbiguousColumn(f'column reference "{name}" is ambiguous', position=position_of(column))
        return matches[0]

    def rewrite(self, expression: exp.Expression) -> exp.Expression:
        def replace(node: exp.Expression) -> exp.Expression:
            if isinstance(node, exp.Column) and not isinstance(node.this, exp.Star):
                return exp.column(f"_{self.resolve(node)}")
            if isinstance(node, exp.Placeholder | exp.Parameter):
                raise FeatureNotSupported("parameters are not allowed in a materialized view")
            if isinstance(node, exp.Subquery | exp.Exists) or (
                isinstance(node, exp.In) and node.args.get("query") is not None
            ):
                raise FeatureNotSupported("subqueries in expressions are not supported yet")
            return node

        return expression.copy().transform(replace)

    def compile(self, expressions: list[exp.Expression]) -> tuple[list[str], list[SqlType]]:
        compiled = [to_duckdb(self.rewrite(e)) for e in expressions]
        types = self.infer_types(compiled, expressions)
        # A bare column keeps its declared type (jsonb, varchar(n)), which Arrow alone cannot tell.
        for i, text in enumerate(compiled):
            if (
                text.startswith("_")
                and text[1:].isdigit()
                and self.scope[int(text[1:])].type.arrow.equals(types[i].arrow)
            ):
                types[i] = self.scope[int(text[1:])].type
        return compiled, types

    def infer_types(self, compiled: list[str], originals: list[exp.Expression]) -> list[SqlType]:
        if not compiled:
            return []
        schema = pa.schema([pa.field(f"_{i}", c.type.arrow) for i, c in enumerate(self.scope)])
        con = connect(streaming=True)
        try:
            con.register("__input", schema.empty_table())
            select = ", ".join(f"{c} AS r{i}" for i, c in enumerate(compiled))
            result = con.sql(f"SELECT {select} FROM __input").to_arrow_table()
        except Exception as error:  # DuckDB's binder speaks for type errors
            translated = translate_error(error) if isinstance(error, duckdb.Error) else error
            if isinstance(translated, TidegateError) and translated.position is None and originals:
                translated.position = position_of(originals[0])
            raise translated from error
        finally:
            con.close()
        return [from_arrow(f.type) for f in result.schema]


def _scan_scope(relation: Relation, alias: str | None) -> list[ScopeColumn]:
    qualifier = alias or relation.name
    return [ScopeColumn(c.name, c.type, qualifier, c.hidden) for c in relation.columns]


def plan_materialized_view(select: exp.Expression, catalog: Catalog) -> PlannedView:
    if isinstance(select, exp.Union) and not select.args.get("distinct"):
        return _plan_union_all(select, catalog)
    if isinstance(select, exp.Union | exp.Intersect | exp.Except):
        raise FeatureNotSupported(
            "UNION without ALL, INTERSECT and EXCEPT in a materialized view are not supported yet"
        )
    if not isinstance(select, exp.Select):
        raise FeatureNotSupported("a materialized view must be defined by a SELECT")
    for unsupported, what in (
        ("joins", "joins"),
        ("with", "WITH"),
        ("limit", "LIMIT"),
        ("distinct", "DISTINCT"),
    ):
        if select.args.get(unsupported):
            raise FeatureNotSupported(f"{what} in a materialized view is not supported yet")
    if select.args.get("windows") or any(select.find_all(exp.Window)):
        raise FeatureNotSupported("window functions in a materialized view are not supported yet")
    relation, alias, _table_node = _single_relation(select, catalog)
    scope = _scan_scope(relation, alias)
    plan = _scan_plan(relation)
    compiler = ExpressionCompiler(scope)

    where = select.args.get("where")
    if where is not None:
        condition = where.this
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

    items = _expand_star(select.expressions, scope)
    has_aggregates = any(item.find(*AGGREGATES) for item in items) or select.args.get("having")
    if select.args.get("group") or has_aggregates:
        return _plan_aggregation(select, items, compiler, plan, relation)
    return _plan_projection(items, compiler, plan, relation)


def _plan_union_all(union: exp.Union, catalog: Catalog) -> PlannedView:
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
    views = [plan_materialized_view(branch, catalog) for branch in branches]
    visible = [[c for c in v.columns if not c.hidden] for v in views]
    if any(len(v) != len(visible[0]) for v in visible):
        raise SqlSyntaxError("each UNION query must have the same number of columns", position=position_of(union))
    scans = [node for v in views for node in _plan_nodes(v.plan["stream"]) if node["op"] in ("scan", "source")]
    if any(node["op"] == "source" for node in scans):
        raise FeatureNotSupported("a UNION ALL over a source is not supported yet")
    scanned = [node["relation_id"] for node in scans]
    if len(set(scanned)) != len(scanned):
        raise FeatureNotSupported("a materialized view that reads one relation twice is not supported yet")
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
    return PlannedView(columns, pk, {"stream": plan}, dependencies)


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


def _plan_nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of a stream plan, depth first."""
    nodes = [plan]
    for child in [plan["input"]] if "input" in plan else plan.get("inputs", []):
        nodes += _plan_nodes(child)
    return nodes


def _scan_plan(relation: Relation) -> dict[str, Any]:
    if relation.kind is RelationKind.SOURCE:
        # The view's job runs the source's generator itself (docs/design/20261127_nexmark_source.md).
        return {
            "op": "source",
            "relation_id": relation.id,
            "connector": relation.options["connector"].lower(),
            "options": dict(relation.options),
            "schema": [[c.name, _type_text(c.type)] for c in relation.columns],
            "display": f"StreamSource {{ {relation.name} }}",
        }
    return {"op": "scan", "relation_id": relation.id, "display": f"StreamScan {{ {relation.name} }}"}


def _single_relation(select: exp.Select, catalog: Catalog) -> tuple[Relation, str | None, exp.Table]:
    from_ = select.args.get("from") or select.args.get("from_")
    if from_ is None:
        raise FeatureNotSupported("a materialized view needs a FROM clause")
    source = from_.this
    if not isinstance(source, exp.Table):
        raise FeatureNotSupported("subqueries in FROM are not supported yet in a materialized view")
    relation = catalog.get(source.name)
    if relation is None:
        raise UndefinedRelation(f'relation "{source.name}" does not exist', position=position_of(source))
    return relation, source.alias or None, source


def _expand_star(items: list[exp.Expression], scope: list[ScopeColumn]) -> list[exp.Expression]:
    out: list[exp.Expression] = []
    for item in items:
        if isinstance(item, exp.Star) or (isinstance(item, exp.Column) and isinstance(item.this, exp.Star)):
            out += [exp.column(c.name) for c in scope if not c.hidden]
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
    items: list[exp.Expression], compiler: ExpressionCompiler, plan: dict[str, Any], relation: Relation
) -> PlannedView:
    values = [i.this if isinstance(i, exp.Alias) else i for i in items]
    names = [output_name(i) for i in items]
    _unique_names(names)
    compiled, types = compiler.compile(values)
    columns = [ColumnDef(n, t) for n, t in zip(names, types)]
    # Keep the upstream stream key; reuse a select item that is exactly a key column.
    pk: list[int] = []
    for key_index in relation.pk:
        ref = f"_{key_index}"
        if ref in compiled and not relation.columns[key_index].hidden:
            pk.append(compiled.index(ref))
            continue
        key = relation.columns[key_index]
        hidden_name = _fresh_name(f"_{key.name}" if not key.name.startswith("_") else key.name, names)
        names.append(hidden_name)
        compiled.append(ref)
        columns.append(ColumnDef(hidden_name, key.type, hidden=True))
        pk.append(len(columns) - 1)
    schema = [[c.name, _type_text(c.type)] for c in columns]
    displays = [v.sql("postgres") for v in values] + [c.name for c in columns[len(values) :]]
    plan = {
        "op": "project",
        "exprs": compiled,
        "schema": schema,
        "input": plan,
        "display": f"StreamProject {{ {', '.join(displays)} }}",
    }
    return PlannedView(columns, pk, {"stream": plan}, [relation.id])


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
    relation: Relation,
) -> PlannedView:
    names = [output_name(i) for i in items]
    _unique_names(names)
    values = [i.this if isinstance(i, exp.Alias) else i for i in items]
    group = select.args.get("group")
    key_exprs: list[exp.Expression] = []
    for key in group.expressions if group else []:
        key_exprs.append(_resolve_group_item(key, items, names, compiler.scope))

    # Collect aggregate calls from the select list and HAVING.
    having = select.args.get("having")
    calls: list[exp.Expression] = []
    for node in [*values, *([having.this] if having else [])]:
        for agg in node.find_all(*AGGREGATES):
            if agg.find_ancestor(*AGGREGATES) is not None and agg.find_ancestor(*AGGREGATES) is not agg:
                raise GroupingError("aggregate function calls cannot be nested", position=position_of(agg))
            if not any(agg == c for c in calls):
                calls.append(agg)

    # Pre-projection: group keys first, then each aggregate's argument.
    pre_exprs: list[exp.Expression] = list(key_exprs)
    call_specs: list[tuple[str, int | None]] = []
    for call in calls:
        kind = AGGREGATES[type(call)]
        arg = call.this
        if isinstance(arg, exp.Distinct):
            raise FeatureNotSupported(f"{kind}(DISTINCT …) is not supported yet", position=position_of(call))
        if kind == "count" and (arg is None or isinstance(arg, exp.Star)):
            call_specs.append(("count_star", None))
            continue
        if any(arg.find_all(*AGGREGATES)):
            raise GroupingError("aggregate function calls cannot be nested", position=position_of(call))
        pre_exprs.append(arg)
        call_specs.append((kind, len(pre_exprs) - 1))
    pre_compiled, pre_types = compiler.compile(pre_exprs)
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
    agg_types = [
        _aggregate_type(kind, pre_types[arg] if arg is not None else None, call)
        for (kind, arg), call in zip(call_specs, calls)
    ]
    agg_scope = [ScopeColumn(f"__k{i}", pre_types[i], None) for i in range(nkeys)]
    agg_scope += [ScopeColumn(f"__a{j}", t, None) for j, t in enumerate(agg_types)]
    agg_schema = [[c.name.lstrip("_"), _type_text(c.type)] for c in agg_scope]
    plan = {
        "op": "hash_agg",
        "group_keys": list(range(nkeys)),
        "calls": [{"kind": k, "arg": a} for k, a in call_specs],
        "schema": agg_schema,
        "input": plan,
        "display": "StreamHashAgg {{ group_key: [{}], aggs: [{}] }}".format(
            ", ".join(e.sql("postgres") for e in key_exprs), ", ".join(c.sql("postgres") for c in calls)
        ),
    }

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
    return PlannedView(columns, pk, {"stream": plan}, [relation.id])


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


def _type_text(sql_type: SqlType) -> str:
    if sql_type.kind == "numeric" and sql_type.precision is not None:
        return f"numeric({sql_type.precision},{sql_type.scale or 0})"
    if sql_type.kind == "character varying" and sql_type.length is not None:
        return f"varchar({sql_type.length})"
    return sql_type.kind


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
