"""Name scopes and the expression compiler shared by every part of the stream planner.

A scope lists the columns an expression may name, in the positional order of
the operator input it will run on. Compiling an expression rewrites its column
references to ``_0, _1, …`` and yields DuckDB SQL (what ``stream.evaluator``
runs); its type is DuckDB's over an empty input, so plan types and runtime
types agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
from sqlglot import exp

from tidegate.common import types
from tidegate.common.duck import connect, translate_error
from tidegate.common.sqltext import position_of, to_duckdb
from tidegate.common.types import SqlType, from_arrow
from tidegate.errors import AmbiguousColumn, FeatureNotSupported, TidegateError, UndefinedColumn

# Functions of the current time. A view may use now() only in a temporal filter (``plan_temporal``),
# which takes it from the barrier; anywhere else it would differ between a run and its replay.
CURRENT_TIME_FUNCTIONS: tuple[type[exp.Expression], ...] = (
    exp.CurrentTimestamp, exp.CurrentTimestampLTZ, exp.CurrentDate, exp.CurrentTime, exp.CurrentDatetime,
    exp.Localtime, exp.Localtimestamp,
)  # fmt: skip
_CURRENT_TIME_NAMES = {"now", "clock_timestamp", "statement_timestamp", "transaction_timestamp", "timeofday"}


def is_current_time(node: exp.Expression) -> bool:
    """Whether ``node`` is a call of a function of the current time (``now()``, ``current_date``, …)."""
    if isinstance(node, CURRENT_TIME_FUNCTIONS):
        return True
    return isinstance(node, exp.Anonymous) and str(node.name).lower() in _CURRENT_TIME_NAMES


@dataclass
class ScopeColumn:
    name: str
    type: SqlType
    qualifier: str | None
    hidden: bool = False


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
            if is_current_time(node):
                shown = "now()" if isinstance(node, exp.CurrentTimestamp) else node.sql("postgres")
                raise FeatureNotSupported(
                    f"{shown} in a materialized view is supported only in a temporal filter: a condition of "
                    "its own in WHERE (joined to the others by AND) that compares a time column with now() plus "
                    "or minus a constant interval (ts > now() - INTERVAL '1 hour')",
                    position=position_of(node),
                )
            if isinstance(node, exp.Explode | exp.Unnest | exp.ExplodingGenerateSeries):
                # One input row would become several: a projection keeps rows one for one.
                raise FeatureNotSupported(
                    "set-returning functions (unnest, generate_series) in a materialized view are not supported",
                    position=position_of(node),
                )
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


# The memcomparable key encoding (``common.keys``) has no encoding for lists.
ARRAY_KEY_REASON = "an array cannot be part of the key of a view or of an operator's state"


def refuse_array_keys(types: list[SqlType], nodes: list[exp.Expression], what: str) -> None:
    """0A000 for an array among the expressions an operator keys its state by (``what``: "GROUP BY")."""
    for sql_type, node in zip(types, nodes):
        if sql_type.is_array:
            raise FeatureNotSupported(
                f"{what} an array ({sql_type}) in a materialized view is not supported: {ARRAY_KEY_REASON}",
                position=position_of(node),
            )


def type_text(sql_type: SqlType) -> str:
    """A plan schema's type text (``integer[]``, ``numeric(10,2)``), read back by ``parse_type_name``."""
    return types.type_text(sql_type)
