"""Helpers over sqlglot trees shared by the planner and the batch engine."""

from __future__ import annotations

from sqlglot import exp
from sqlglot.dialects.duckdb import DuckDB

from tidegate.common.types import NUMERIC_PRECISION_MAX, UNCONSTRAINED_NUMERIC_SCALE


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
        return node

    return expression.copy().transform(fix).sql(dialect=DuckDB)
