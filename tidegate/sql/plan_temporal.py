"""Planning temporal filters: WHERE conditions that compare a time column with ``now()``.

``ts > now() - INTERVAL '1 hour'`` (also ``>=``, ``<``, ``<=``, either side, and
``BETWEEN``) admits a different set of rows as time passes, so it cannot be an
ordinary filter: such a conjunct is split off the WHERE clause and becomes a
``temporal_filter`` plan node (``stream/operators/temporal_filter.py``) above the
filter of the other conjuncts, one node per time column. The side with ``now()``
must be ``now()`` (or ``current_timestamp``, ``localtimestamp``) plus or minus
constant intervals: the bound then only rises as time does, which is what lets the
operator forget the rows below a lower bound. ``now()`` anywhere else in a view is
refused by the expression compiler (``scope.is_current_time``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from tidegate.common.duck import connect
from tidegate.common.sqltext import position_of, to_duckdb
from tidegate.errors import DatatypeMismatch, FeatureNotSupported, InvalidParameterValue, UndefinedFunction
from tidegate.sql.scope import ExpressionCompiler, is_current_time

TIME_KINDS = ("timestamp without time zone", "timestamp with time zone", "date")
# The functions whose value a temporal filter takes from the barrier: the time of the epoch.
_NOW_NODES = (exp.CurrentTimestamp, exp.CurrentTimestampLTZ, exp.Localtimestamp)
_NOW_NAMES = ("now", "statement_timestamp", "transaction_timestamp")
_FLIPPED: dict[type[exp.Expression], type[exp.Expression]] = {exp.GT: exp.LT, exp.GTE: exp.LTE, exp.LT: exp.GT,
                                                              exp.LTE: exp.GTE}  # fmt: skip
_SYMBOLS: dict[type[exp.Expression], str] = {exp.GT: ">", exp.GTE: ">=", exp.LT: "<", exp.LTE: "<="}

Interval = tuple[int, int, int]  # months, days, microseconds


@dataclass(frozen=True)
class TemporalBound:
    """``column > now() + intervals`` (``lower``) or ``column < …``; ``inclusive`` for >= and <=."""

    column: int  # in the scope of the view's input
    lower: bool
    intervals: tuple[Interval, ...]
    inclusive: bool
    shown: str

    def plan(self) -> dict[str, Any]:
        return {"lower": self.lower, "intervals": [list(i) for i in self.intervals], "inclusive": self.inclusive}


def split_temporal_conjuncts(
    conjuncts: list[exp.Expression], compiler: ExpressionCompiler
) -> tuple[list[TemporalBound], list[exp.Expression]]:
    """The temporal bounds among WHERE's ``conjuncts``, and the conjuncts left for the ordinary filter."""
    bounds: list[TemporalBound] = []
    rest: list[exp.Expression] = []
    for conjunct in conjuncts:
        node = _unparen(conjunct)
        if not mentions_now(node):
            rest.append(conjunct)
            continue
        parts = [node]
        if isinstance(node, exp.Between):
            if node.args.get("symmetric"):
                raise FeatureNotSupported("BETWEEN SYMMETRIC with now() is not supported", position=position_of(node))
            low, high = node.args["low"], node.args["high"]
            parts = [exp.GTE(this=node.this, expression=low), exp.LTE(this=node.this.copy(), expression=high)]
        for part in parts:
            if mentions_now(part):
                bounds.append(_bound(part, compiler))
            else:
                rest.append(part)
    return bounds, rest


def plan_temporal_filters(bounds: list[TemporalBound], plan: dict[str, Any], input_pk: list[int]) -> dict[str, Any]:
    """One temporal_filter node per time column (in the order the WHERE clause names them) above ``plan``."""
    columns = list(dict.fromkeys(b.column for b in bounds))
    for column in columns:
        mine = [b for b in bounds if b.column == column]
        plan = {
            "op": "temporal_filter",
            "time_column": column,
            "bounds": [b.plan() for b in mine],
            "input_pk": list(input_pk),
            "input": plan,
            "display": f"StreamTemporalFilter {{ {' AND '.join(b.shown for b in mine)} }}",
        }
    return plan


def mentions_now(node: exp.Expression) -> bool:
    return any(isinstance(n, exp.Expression) and is_current_time(n) for n in node.walk())


def _bound(comparison: exp.Expression, compiler: ExpressionCompiler) -> TemporalBound:
    kind = type(comparison)
    if kind not in _FLIPPED:
        raise FeatureNotSupported(
            "now() in a materialized view may only appear in a condition of its own in WHERE (joined to the "
            "others by AND) that bounds a time column with >, >=, <, <= or BETWEEN (a temporal filter)",
            position=position_of(comparison),
        )
    column_side, now_side = comparison.this, comparison.expression
    if mentions_now(column_side):
        if mentions_now(now_side):
            raise FeatureNotSupported(
                "a temporal filter compares a column with now(), not now() with itself",
                position=position_of(comparison),
            )
        column_side, now_side, kind = now_side, column_side, _FLIPPED[kind]
    column_side = _unparen(column_side)
    if not isinstance(column_side, exp.Column):
        raise FeatureNotSupported(
            "a temporal filter compares a column with now(): write the column alone on its side "
            f"(ts > now() - INTERVAL '1 hour'), not {column_side.sql('postgres')}",
            position=position_of(column_side),
        )
    index = compiler.resolve(column_side)
    column_type = compiler.scope[index].type
    if column_type.kind not in TIME_KINDS:
        raise UndefinedFunction(
            f"operator does not exist: {column_type} {_SYMBOLS[kind]} timestamp with time zone",
            position=position_of(comparison),
        )
    intervals = _now_offset(now_side)
    if intervals is None:
        raise FeatureNotSupported(
            "a temporal filter compares a column with now() plus or minus constant intervals, not with "
            f"{now_side.sql('postgres')}",
            position=position_of(now_side),
        )
    lower = kind in (exp.GT, exp.GTE)
    now_shown = now_side.transform(
        lambda n: exp.Anonymous(this="now") if isinstance(n, exp.CurrentTimestamp) else n
    ).sql("postgres")
    shown = f"{column_side.sql('postgres')} {_SYMBOLS[kind]} {now_shown}"
    return TemporalBound(index, lower, tuple(intervals), kind in (exp.GTE, exp.LTE), shown)


def _now_offset(node: exp.Expression) -> list[Interval] | None:
    """The intervals ``node`` adds to now, in order, when it is ``now() ± constant intervals``; else None."""
    node = _unparen(node)
    if isinstance(node, _NOW_NODES) and not node.args.get("this"):
        return []
    if isinstance(node, exp.Anonymous) and str(node.name).lower() in _NOW_NAMES and not node.expressions:
        return []
    if isinstance(node, exp.Cast) and node.to.this in (exp.DataType.Type.TIMESTAMP, exp.DataType.Type.TIMESTAMPTZ):
        # now()::timestamp is the same instant: sessions run in UTC.
        return _now_offset(node.this)
    if isinstance(node, exp.Add | exp.Sub):
        left, right = node.this, node.expression
        if isinstance(node, exp.Add) and mentions_now(right) and not mentions_now(left):
            left, right = right, left
        if mentions_now(right):
            return None
        offset = _now_offset(left)
        if offset is None:
            return None
        months, days, micros = interval_value(right)
        sign = -1 if isinstance(node, exp.Sub) else 1
        return [*offset, (sign * months, sign * days, sign * micros)]
    return None


def interval_value(node: exp.Expression) -> Interval:
    """A constant interval as (months, days, microseconds)."""
    if node.find(exp.Column) is not None:
        raise FeatureNotSupported("a temporal filter adds only constant intervals to now()", position=position_of(node))
    con = connect(streaming=True)
    try:
        value = con.sql(f"SELECT CAST({to_duckdb(node)} AS INTERVAL) AS v").to_arrow_table().column(0)[0].as_py()
    except Exception as error:
        raise DatatypeMismatch(
            f"a temporal filter adds intervals to now(), not {node.sql('postgres')}: {error}",
            position=position_of(node),
        ) from error
    finally:
        con.close()
    if value is None:
        raise InvalidParameterValue("a temporal filter cannot add a NULL interval", position=position_of(node))
    if value.nanoseconds % 1000:
        raise InvalidParameterValue(
            "a temporal filter's interval must be a whole number of microseconds", position=position_of(node)
        )
    return int(value.months), int(value.days), int(value.nanoseconds // 1000)


def _unparen(node: exp.Expression) -> exp.Expression:
    while isinstance(node, exp.Paren):
        node = node.this
    return node
