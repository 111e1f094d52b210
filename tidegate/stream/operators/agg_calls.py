"""Aggregate calls of a HashAgg: what each call keeps per group, how a chunk is pre-reduced for it,
and the value it outputs. ``hash_agg.py`` owns the groups, their cache, the state table and the barrier.

A group's accumulators are plain ints, lists and dicts, so its state pickles small and fast:

    count(*), count(x)               int: rows (passing the FILTER) [whose x is not NULL]
    sum(x), avg(x)                   [signed sum, non-null count]
    min, max, count/sum/avg(DISTINCT), string_agg, array_agg
                                     [multiset, rows in it]

A multiset maps each value to the number of rows holding it (rows passing the FILTER; NULLs only for
``array_agg``, as in PostgreSQL). A delete decrements its value's count and a value whose count reaches 0
goes, so MIN finds the next minimum and ``count(DISTINCT x)`` drops a value without reading any other
row. With ``ORDER BY`` inside the call, the multiset's keys are ``(*sort values, value)``.

Per chunk, DuckDB reduces the rows before Python sees them: one *partial* query computes every
counter and sum per group (signed: an insert adds, a delete subtracts), and one *value* query per
argument computes, per (group, value), one signed count per FILTER among the multiset calls over that
argument (``count(DISTINCT bidder)`` with four filters costs one query, not four).

Orders, as PostgreSQL's: NULL sorts above every value, NaN above every other number, an interval is
compared as months of 30 days, text by code point (the C collation). ``string_agg``/``array_agg``
without ``ORDER BY`` list their values in ascending order (PostgreSQL leaves the order undefined);
ties of an ``ORDER BY`` are broken by value.
"""

from __future__ import annotations

import decimal
import itertools
import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import reduce
from typing import Any

import pyarrow as pa

AGG_KINDS = ("count_star", "count", "sum", "avg", "min", "max", "string_agg", "array_agg")
# Kinds whose accumulator is a multiset even without DISTINCT.
MULTISET_KINDS = ("min", "max", "string_agg", "array_agg")
_CONTEXT = decimal.Context(prec=38)

# What a cached group's call is accounted, measured with tracemalloc on CPython 3.11 (test_hash_agg.py
# measures again): its accumulator's objects and its output value; a multiset's empty dict; per multiset
# entry, a dict slot plus the objects of its key (a string also its length, see ``text_bytes``).
COUNTER_CALL_BYTES = 16
SUM_CALL_BYTES = 190
MULTISET_CALL_BYTES = 290
DECIMAL_CALL_BYTES = 60
ENTRY_BYTES = 30
OBJECT_BYTES = 32  # an int, date, time, bool …
FLOAT_OBJECT_BYTES = 24
DECIMAL_OBJECT_BYTES = 104
DATETIME_OBJECT_BYTES = 48
INTERVAL_OBJECT_BYTES = 200  # an _IntervalKey, its __dict__ and ints
TEXT_OBJECT_BYTES = 56  # plus the length
TUPLE_BYTES = 40  # plus 8 per item
LIST_BYTES = 56  # plus 8 per item: an array_agg output


@dataclass(frozen=True)
class SortKey:
    """One ``ORDER BY`` item inside an aggregate call: an input column and its direction."""

    column: int
    descending: bool = False
    nulls_first: bool = False  # the planner spells out PostgreSQL's default: NULLS FIRST only with DESC


@dataclass(frozen=True)
class AggCall:
    kind: str
    arg: int | None  # input column; None for count(*)
    output_type: pa.DataType
    filter: int | None = None  # boolean input column: rows where it is not TRUE do not count
    distinct: bool = False
    delimiter: str | None = None  # string_agg's (a NULL delimiter is "")
    order_by: tuple[SortKey, ...] = ()

    def __post_init__(self) -> None:
        assert self.kind in AGG_KINDS, self.kind
        assert (self.arg is None) == (self.kind == "count_star"), self
        assert not (self.distinct and self.kind == "count_star"), self
        assert (self.delimiter is not None) == (self.kind == "string_agg"), self
        assert not self.order_by or self.kind in ("string_agg", "array_agg"), self

    @property
    def multiset(self) -> bool:
        return self.distinct or self.kind in MULTISET_KINDS

    @property
    def keeps_nulls(self) -> bool:
        """Whether NULL values enter the multiset (PostgreSQL's array_agg keeps them)."""
        return self.kind == "array_agg"


def new_accumulator(call: AggCall) -> Any:
    if call.multiset:
        return [{}, 0]
    if call.kind in ("count_star", "count"):
        return 0
    return [0, 0]  # signed sum, non-null count


def accumulators_factory(calls: list[AggCall]) -> Callable[[], list[Any]]:
    """What makes a new group's accumulators: a copy of one list when they are all counters (ints,
    which are never changed in place), else one ``new_accumulator`` per call."""
    template = [new_accumulator(c) for c in calls]
    if all(isinstance(a, int) for a in template):
        return template.copy
    return lambda: [new_accumulator(c) for c in calls]


# ---- the per-chunk reductions ------------------------------------------------
def partial_items(call: AggCall, sign: str, input_schema: pa.Schema) -> list[str]:
    """The columns the partial query computes for ``call`` per group: none for a multiset call and for
    an unfiltered count(*) (the group's row count); a signed count; for sum/avg also a signed sum."""
    if call.multiset:
        return []
    condition = None if call.filter is None else f"_{call.filter}"
    if call.kind == "count_star":
        return [] if condition is None else [f"sum(CASE WHEN {condition} THEN {sign} ELSE 0 END)::BIGINT"]
    arg = f"_{call.arg}"
    counted = f"{arg} IS NOT NULL" if condition is None else f"{condition} AND {arg} IS NOT NULL"
    items = [f"sum(CASE WHEN {counted} THEN {sign} ELSE 0 END)::BIGINT"]
    if call.kind in ("sum", "avg"):
        # Widen before negating: retracting the smallest value of a type must not overflow.
        wide = f"CAST({arg} AS {_wide_type(input_schema.field(call.arg).type)})"
        signed = f"CASE WHEN {sign} > 0 THEN {wide} ELSE -{wide} END"
        items.append(f"sum({signed})" if condition is None else f"sum(CASE WHEN {condition} THEN {signed} END)")
    return items


def extreme_items(call: AggCall) -> list[str]:
    """The partial query's columns for a MIN or MAX call over an append-only input: the extreme value
    and the number of rows holding a value (passing the FILTER, not NULL)."""
    assert call.kind in ("min", "max") and call.arg is not None, call
    value = f"_{call.arg}" if call.filter is None else f"CASE WHEN _{call.filter} THEN _{call.arg} END"
    return [f"{call.kind}({value})", f"count({value})::BIGINT"]


@dataclass
class ValueQuery:
    """One value query: per (group, sort values, value), a signed count per FILTER of the calls it serves."""

    sql: str
    width: int  # key columns after the group keys: the sort values, then the value
    converters: list[tuple[int, Callable[[Any], Any]]]  # (key column, how its values become dict keys)
    uses: list[tuple[int, int]] = field(default_factory=list)  # (call index, its count column)


def value_queries(
    calls: list[AggCall], group_keys: list[int], input_schema: pa.Schema, reduced: Collection[int] = ()
) -> list[ValueQuery]:
    """The value queries of the multiset calls: one per argument, sort columns and NULL handling.
    The calls of ``reduced`` (their index) are left out: the partial query serves them."""
    sign = f"_{len(input_schema)}"
    keys = [f"_{k}" for k in group_keys]
    by_source: dict[tuple[int, tuple[int, ...], bool], tuple[list[int | None], list[int]]] = {}
    for j, call in enumerate(calls):
        if not call.multiset or j in reduced:
            continue
        assert call.arg is not None
        source = (call.arg, tuple(k.column for k in call.order_by), call.keeps_nulls)
        filters, users = by_source.setdefault(source, ([], []))
        if call.filter not in filters:
            filters.append(call.filter)
        users.append(j)
    queries = []
    for (arg, sort_columns, keeps_nulls), (filters, users) in by_source.items():
        columns = [*sort_columns, arg]
        key_items = [*keys, *(f"_{c}" for c in columns)]
        signed = [sign if f is None else f"CASE WHEN _{f} THEN {sign} ELSE 0 END" for f in filters]
        counts = [f"sum({s})::BIGINT" for s in signed]
        where = "" if keeps_nulls else f" WHERE _{arg} IS NOT NULL"
        sql = f"SELECT {', '.join([*key_items, *counts])} FROM __input{where} GROUP BY {', '.join(key_items)}"
        converters = [
            (position, convert)
            for position, column in enumerate(columns)
            if (convert := _key_converter(input_schema.field(column).type)) is not None
        ]
        query = ValueQuery(sql, len(columns), converters)
        query.uses = [(j, filters.index(calls[j].filter)) for j in users]
        queries.append(query)
    return queries


def _key_converter(arrow_type: pa.DataType) -> Callable[[Any], Any] | None:
    """How a value of ``arrow_type`` becomes a multiset key, when it is not its own key."""
    if pa.types.is_interval(arrow_type):
        return lambda v: None if v is None else _IntervalKey.of(v)
    if pa.types.is_floating(arrow_type):
        return lambda v: NOT_A_NUMBER if v is not None and v != v else v
    return None


# ---- output values -----------------------------------------------------------
def output_value(call: AggCall, accumulator: Any, rows: int) -> Any:
    """The call's current value from its accumulator (``rows``: the group's row count)."""
    kind = call.kind
    if call.multiset:
        return _multiset_value(call, accumulator[0])
    if kind == "count_star":
        return rows if call.filter is None else accumulator
    if kind == "count":
        return accumulator
    if kind == "sum":
        return accumulator[0] if accumulator[1] else None
    return average(accumulator[0], accumulator[1], call.output_type)


def _multiset_value(call: AggCall, counts: dict[Any, int]) -> Any:
    kind = call.kind
    if kind == "count":
        return len(counts)
    if not counts:
        return None
    if kind in ("min", "max"):
        return _plain(min(counts) if kind == "min" else max(counts))
    if kind in ("sum", "avg"):
        # Summed when read, not kept as a running total: a float total would drift (and stay NaN) under
        # retractions; the state written at the barrier already costs time linear in the values.
        total = _sum([_plain(v) for v in counts], call.output_type)
        result = total if kind == "sum" else average(total, len(counts), call.output_type)
        return math.nan if result != result else result  # one NaN object: an unchanged row compares equal
    values = _in_order(call, counts)
    if kind == "string_agg":
        assert call.delimiter is not None
        return call.delimiter.join(values)
    return [_plain(v) for v in values]


def _in_order(call: AggCall, counts: dict[Any, int]) -> list[Any]:
    """The multiset's values in the call's order, each as many times as rows hold it (once if DISTINCT)."""
    if not call.order_by:
        keys = sorted(counts, key=_nulls_last) if call.keeps_nulls else sorted(counts)
    else:
        keys = sorted(counts, key=lambda k: _nulls_last(k[-1]))  # ties of the ORDER BY: by value
        # Stable sorts, least significant first; reverse=True keeps equal keys in their order.
        for position in reversed(range(len(call.order_by))):
            sort_key = call.order_by[position]
            keyed = _sort_key(position, nulls_high=sort_key.nulls_first == sort_key.descending)
            keys.sort(key=keyed, reverse=sort_key.descending)
    values = [k[-1] for k in keys] if call.order_by else keys
    if call.distinct:
        return values
    return list(itertools.chain.from_iterable(itertools.repeat(v, counts[k]) for k, v in zip(keys, values)))


def _nulls_last(value: Any) -> tuple[Any, ...]:
    return (1,) if value is None else (0, value)


def _sort_key(position: int, nulls_high: bool) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    null, present = ((1,), 0) if nulls_high else ((0,), 1)
    return lambda key: null if key[position] is None else (present, key[position])


def _sum(values: list[Any], output_type: pa.DataType) -> Any:
    if pa.types.is_floating(output_type):
        return math.fsum(values)
    if pa.types.is_decimal(output_type) or any(isinstance(v, decimal.Decimal) for v in values):
        return reduce(_CONTEXT.add, values, decimal.Decimal(0))
    return sum(values)


def average(total: Any, count: int, output_type: pa.DataType) -> Any:
    if not count:
        return None
    if pa.types.is_floating(output_type):
        return float(total) / count
    quotient = _CONTEXT.divide(decimal.Decimal(total), decimal.Decimal(count))
    return quotient.quantize(decimal.Decimal(1).scaleb(-output_type.scale), context=_CONTEXT)


def _plain(key: Any) -> Any:
    """A multiset key as the output value it stands for."""
    if isinstance(key, _IntervalKey):
        return key.value()
    if isinstance(key, _NotANumber):
        return math.nan
    return key


def arrow_array(values: Sequence[Any], arrow_type: pa.DataType) -> pa.Array:
    """Output values as an array of ``arrow_type``, converted as ``to_arrow_values`` says.

    Integers and floats are first handed to Arrow as they are: its conversions of ints, floats,
    bools and decimals agree with ``int()`` and ``float()``, and it refuses the values they would
    convert differently (which then take the per-value path).
    """
    if pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type):
        try:
            return pa.array(values, type=arrow_type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return pa.array(to_arrow_values(list(values), arrow_type), type=arrow_type)


def to_arrow_values(values: list[Any], arrow_type: pa.DataType) -> list[Any]:
    if pa.types.is_decimal(arrow_type):
        quantum = decimal.Decimal(1).scaleb(-arrow_type.scale)
        return [None if v is None else decimal.Decimal(v).quantize(quantum, context=_CONTEXT) for v in values]
    if pa.types.is_integer(arrow_type):
        return [None if v is None else int(v) for v in values]
    if pa.types.is_floating(arrow_type):
        return [None if v is None else float(v) for v in values]
    return values


def _wide_type(arrow_type: pa.DataType) -> str:
    """The DuckDB type a SUM/AVG argument is widened to before it is signed."""
    if pa.types.is_integer(arrow_type):
        return "HUGEINT"
    if pa.types.is_decimal(arrow_type):
        return f"DECIMAL(38,{arrow_type.scale})"
    return "DOUBLE"


# ---- accounting ----------------------------------------------------------------
def call_bytes(call: AggCall, input_schema: pa.Schema) -> int:
    """A call's fixed accounted bytes in a cached group (its multiset's entries come on top)."""
    if call.multiset:
        size = MULTISET_CALL_BYTES
    elif call.kind in ("sum", "avg"):
        size = SUM_CALL_BYTES
    else:
        size = COUNTER_CALL_BYTES
    decimal_arg = call.arg is not None and pa.types.is_decimal(input_schema.field(call.arg).type)
    if decimal_arg and call.kind in ("sum", "avg", "min", "max"):
        size += DECIMAL_CALL_BYTES
    return size


def entry_bytes(call: AggCall, input_schema: pa.Schema) -> tuple[int, bool]:
    """A multiset entry's accounted bytes beyond its text, and whether its key holds text (``text_bytes``)."""
    assert call.arg is not None
    types = [input_schema.field(k.column).type for k in call.order_by] + [input_schema.field(call.arg).type]
    size = ENTRY_BYTES + sum(_object_bytes(t) for t in types)
    if call.order_by:
        size += TUPLE_BYTES + 8 * len(types)
    return size, any(_is_text(t) for t in types)


def text_bytes(key: Any) -> int:
    """The length of the strings (and byte strings) a multiset key holds."""
    if isinstance(key, str | bytes):
        return len(key)
    if isinstance(key, tuple):
        return sum(len(v) for v in key if isinstance(v, str | bytes))
    return 0


def output_bytes(call: AggCall, value: Any) -> int:
    """What an emitted value of a string_agg or array_agg holds beyond the fixed call bytes."""
    if value is None:
        return 0
    if call.kind == "string_agg":
        return TEXT_OBJECT_BYTES + len(value)
    return LIST_BYTES + 8 * len(value)


def _is_text(arrow_type: pa.DataType) -> bool:
    return pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_binary(arrow_type)


def _object_bytes(arrow_type: pa.DataType) -> int:
    if _is_text(arrow_type):
        return TEXT_OBJECT_BYTES
    if pa.types.is_decimal(arrow_type):
        return DECIMAL_OBJECT_BYTES
    if pa.types.is_floating(arrow_type):
        return FLOAT_OBJECT_BYTES
    if pa.types.is_timestamp(arrow_type):
        return DATETIME_OBJECT_BYTES
    if pa.types.is_interval(arrow_type):
        return INTERVAL_OBJECT_BYTES
    return OBJECT_BYTES


# ---- keys that order as PostgreSQL orders values ----------------------------------
@dataclass(frozen=True, order=True)
class _IntervalKey:
    """An interval ordered and compared as PostgreSQL does (a month is 30 days: '1 mon' = '30 days',
    which DuckDB also groups as one value), picklable. The first one seen stands for its equals."""

    total_us: int
    months: int = field(compare=False)
    days: int = field(compare=False)
    nanoseconds: int = field(compare=False)

    @staticmethod
    def of(value: Any) -> _IntervalKey:
        months, days, nanoseconds = value.months, value.days, value.nanoseconds
        return _IntervalKey((months * 30 + days) * 86_400_000_000 + nanoseconds // 1000, months, days, nanoseconds)

    def value(self) -> tuple[int, int, int]:
        return (self.months, self.days, self.nanoseconds)


class _NotANumber:
    """Float NaN as a multiset key: equal to itself (also after unpickling, unlike ``float('nan')``,
    so a retraction finds it) and above every number, as PostgreSQL orders NaN."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NotANumber)

    def __hash__(self) -> int:
        return 0x7FF8

    def __lt__(self, other: object) -> bool:
        return False

    def __le__(self, other: object) -> bool:
        return isinstance(other, _NotANumber)

    def __gt__(self, other: object) -> bool:
        return not isinstance(other, _NotANumber)

    def __ge__(self, other: object) -> bool:
        return True

    def __repr__(self) -> str:
        return "NaN"


NOT_A_NUMBER = _NotANumber()
