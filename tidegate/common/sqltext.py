"""Helpers over sqlglot trees shared by the planner and the batch engine."""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB

from tidegate.common.array_text import parse_array
from tidegate.common.functions import translate_functions
from tidegate.common.types import NUMERIC_PRECISION_MAX, UNCONSTRAINED_NUMERIC_SCALE

AGGREGATES: dict[type[exp.Expression], str] = {
    exp.Count: "count",
    exp.Sum: "sum",
    exp.Avg: "avg",
    exp.Min: "min",
    exp.Max: "max",
    exp.GroupConcat: "string_agg",  # what sqlglot reads PostgreSQL's string_agg as
    exp.ArrayAgg: "array_agg",
}


def position_of(node: exp.Expression) -> int | None:
    """1-based offset of a node in the statement text, when the parser recorded it."""
    for candidate in (node, *node.find_all(exp.Identifier)):
        meta = candidate.meta
        if meta and "start" in meta:
            return int(meta["start"]) + 1
    return None


def to_duckdb(expression: exp.Expression) -> str:
    """DuckDB SQL for a tidegate expression (unconstrained DECIMAL keeps tidegate's layout)."""

    def fix(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.DECIMAL and not node.expressions:
            return exp.DataType.build(f"DECIMAL({NUMERIC_PRECISION_MAX}, {UNCONSTRAINED_NUMERIC_SCALE})")
        if (
            isinstance(node, exp.Cast)
            and node.to.this in (exp.DataType.Type.VARBINARY, exp.DataType.Type.BINARY)
            and isinstance(node.this, exp.Literal)
            and node.this.is_string
            and node.this.this.startswith("\\x")
        ):
            # PostgreSQL's bytea hex format: '\\x0102' is two bytes.
            unhex: exp.Expression = exp.func("unhex", exp.Literal.string(node.this.this[2:]))  # type: ignore[assignment]
            return unhex
        if (
            isinstance(node, exp.Cast)
            and node.to.this == exp.DataType.Type.ARRAY
            and isinstance(node.this, exp.Literal)
            and node.this.is_string
        ):
            # PostgreSQL's array text ('{1,2,NULL}'), which DuckDB does not read: its elements, cast.
            items = [exp.null() if item is None else exp.Literal.string(item) for item in parse_array(node.this.this)]
            node.set("this", exp.Array(expressions=items))
        if isinstance(node, exp.Binary) and not isinstance(node, exp.Connector | exp.DPipe):
            # An untyped string literal beside a number is read as that number, as in PostgreSQL.
            left, right = node.left, node.right
            for string, other in ((left, right), (right, left)):
                if (
                    isinstance(string, exp.Literal)
                    and string.is_string
                    and isinstance(other, exp.Literal)
                    and not other.is_string
                ):
                    target = "INTEGER" if other.is_int else "DECIMAL(38, 10)"
                    string.replace(exp.cast(string.copy(), exp.DataType.build(target)))
        if isinstance(node, exp.GroupConcat) and isinstance(node.args.get("separator"), exp.Null):
            # PostgreSQL's string_agg(x, NULL) joins with nothing; DuckDB's would be NULL.
            node.set("separator", exp.Literal.string(""))
        if isinstance(node, exp.Interval) and isinstance(node.this, exp.Literal) and node.this.is_string:
            # PostgreSQL's interval text ('1 mon', '2 days 03:00') as one string DuckDB parses whole.
            unit = node.args.get("unit")
            text = f"{node.this.this} {unit.name}" if unit is not None else node.this.this
            return exp.cast(exp.Literal.string(text), exp.DataType.build("INTERVAL"))
        return node

    # PostgreSQL's function calls first (common.functions), then the literal fixes above.
    return translate_functions(expression.copy()).transform(fix).sql(dialect=DuckDB)


def output_name(expression: exp.Expression) -> str:
    """The column name PostgreSQL gives a select item."""
    if isinstance(expression, exp.Alias):
        return expression.alias
    if isinstance(expression, exp.Column):
        return expression.name
    inner = expression
    # count(*) FILTER (…) is named count, (regexp_match(…))[2] regexp_match
    while isinstance(inner, exp.Paren | exp.Cast | exp.Filter | exp.Bracket):
        if isinstance(inner, exp.Cast) and not isinstance(inner.this, exp.Column):
            return inner.to.sql(dialect="postgres").lower().split("(")[0]
        inner = inner.this
    if isinstance(inner, exp.Column):
        return inner.name
    for agg, name in AGGREGATES.items():
        if isinstance(inner, agg):
            return name
    if isinstance(inner, exp.Anonymous):
        return str(inner.this).lower()
    if isinstance(inner, exp.ArraySize):
        return "array_length"  # sqlglot's name for it is array_size
    if isinstance(inner, exp.Func):
        return inner.sql_name().lower()
    return "?column?"


def name_select_items(select: exp.Expression) -> None:
    """Alias every unnamed top-level select item with the name PostgreSQL would give it."""
    if not isinstance(select, exp.Select):
        return
    items: list[exp.Expression] = []
    for item in select.expressions:
        if isinstance(item, exp.Alias | exp.Star | exp.Column):
            items.append(item)
        else:
            items.append(exp.alias_(item, output_name(item), quoted=True))  # type: ignore[arg-type]
    select.set("expressions", items)
