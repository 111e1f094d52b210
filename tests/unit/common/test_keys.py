"""Memcomparable keys: byte order equals the SQL order of the typed tuples, and decoding inverts encoding.

The property tests compare against Python sorting of the same values with a
comparator that spells out SQL order per type (NULLs first, -0.0 == 0.0, NaN
after +Infinity, intervals by span with 30-day months, then by fields).
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tidegate.common.keys import decode_keys, encode_columns, encode_keys, key_width
from tidegate.errors import InternalError

NS_PER_DAY = 86_400 * 10**9


# ---- SQL order in Python ---------------------------------------------------------------------------
def _interval_key(v: Any) -> tuple[int, int, int, int]:
    return (v.months * 30 * NS_PER_DAY + v.days * NS_PER_DAY + v.nanoseconds, v.months, v.days, v.nanoseconds)


def _value_key(t: pa.DataType, v: Any) -> Any:
    if pa.types.is_floating(t):
        return (1, 0.0) if math.isnan(v) else (0, v)
    if t == pa.month_day_nano_interval():
        return _interval_key(v)
    return v


def _compare(types: list[pa.DataType], descending: list[bool], a: tuple, b: tuple) -> int:
    for t, desc, x, y in zip(types, descending, a, b):
        if x is None or y is None:
            c = (x is not None) - (y is not None)  # NULL first
        else:
            kx, ky = _value_key(t, x), _value_key(t, y)
            c = (kx > ky) - (kx < ky)
        if c:
            return -c if desc else c
    return 0


def _same(types: list[pa.DataType], a: tuple, b: tuple) -> bool:
    return _compare(types, [False] * len(types), a, b) == 0


def assert_order_equivalent(table: pa.Table, descending: list[bool]) -> None:
    types = [f.type for f in table.schema]
    rows = list(zip(*(c.to_pylist() for c in table.columns))) if table.num_columns else []
    keys = encode_keys(table, list(range(table.num_columns)), descending).to_pylist()
    assert len(keys) == table.num_rows
    by_bytes = sorted(range(len(keys)), key=lambda i: keys[i])
    by_sql = sorted(rows, key=functools.cmp_to_key(functools.partial(_compare, types, descending)))
    for i, j, expected in zip(by_bytes, by_bytes[1:], by_sql[1:]):
        # The row at each position of the byte order ranks like the SQL order's row there ...
        assert _compare(types, descending, rows[j], expected) == 0, (rows[j], expected)
        # ... and two keys are equal exactly when the tuples are equal in SQL.
        assert (keys[i] == keys[j]) == _same(types, rows[i], rows[j]), (rows[i], rows[j])


# ---- strategies per type ---------------------------------------------------------------------------
def _decimals(precision: int, scale: int) -> st.SearchStrategy[decimal.Decimal]:
    bound = 10**precision - 1
    # From text: exact, where arithmetic would round to the context's 28 digits.
    return st.integers(-bound, bound).map(lambda u: decimal.Decimal(f"{u}E{-scale}"))


def _few(values: list[Any]) -> st.SearchStrategy[Any]:
    return st.sampled_from(values)


TEXT_ALPHABET = ["\x00", "\x01", "a", "b", "\x7f", "é", "\uffff", "\U0001f600"]
COLUMN_TYPES: list[tuple[pa.DataType, st.SearchStrategy[Any]]] = [
    (pa.bool_(), st.booleans()),
    (pa.int8(), st.integers(-(2**7), 2**7 - 1)),
    (pa.int16(), st.integers(-(2**15), 2**15 - 1)),
    (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    (pa.int64(), st.integers(-(2**63), 2**63 - 1) | _few([-1, 0, 1, -(2**63), 2**63 - 1])),
    (pa.uint8(), st.integers(0, 2**8 - 1)),
    (pa.uint64(), st.integers(0, 2**64 - 1)),
    (pa.float32(), st.floats(width=32) | _few([0.0, -0.0, math.inf, -math.inf, math.nan])),
    (pa.float64(), st.floats() | _few([0.0, -0.0, math.inf, -math.inf, math.nan, 5e-324, -5e-324])),
    (pa.decimal128(38, 10), _decimals(38, 10)),
    (pa.decimal128(10, 2), _decimals(10, 2)),
    (pa.decimal128(38, 0), _decimals(38, 0)),
    (pa.decimal128(5, -2), _decimals(5, -2)),
    (pa.string(), st.text(alphabet=st.sampled_from(TEXT_ALPHABET), max_size=5)),
    (pa.large_string(), st.text(max_size=8)),
    (pa.binary(), st.binary(max_size=6) | st.lists(_few([0, 1, 255]), max_size=5).map(bytes)),
    (pa.date32(), st.dates()),
    (pa.timestamp("us"), st.datetimes()),
    (pa.timestamp("us", tz="UTC"), st.datetimes(timezones=st.just(dt.UTC))),
    (pa.time64("us"), st.times()),
    (
        pa.month_day_nano_interval(),
        st.tuples(
            st.integers(-(2**31), 2**31 - 1) | _few([-1, 0, 1]),
            st.integers(-(2**31), 2**31 - 1) | _few([-30, 0, 30]),
            st.integers(-(2**63), 2**63 - 1) | _few([0, NS_PER_DAY, -NS_PER_DAY]),
        ).map(lambda f: pa.MonthDayNano(list(f))),
    ),
]
TYPE_IDS = [str(t) for t, _ in COLUMN_TYPES]


@st.composite
def key_tables(draw: st.DrawFn, column_types: list[int] | None = None) -> tuple[pa.Table, list[bool]]:
    """A table of 0..25 rows over 1..3 key columns, drawn from a small pool so ties and prefixes occur."""
    if column_types is None:
        column_types = draw(st.lists(st.integers(0, len(COLUMN_TYPES) - 1), min_size=1, max_size=3))
    columns = []
    for index in column_types:
        arrow_type, values = COLUMN_TYPES[index]
        pool = draw(st.lists(st.none() | values, min_size=1, max_size=6))
        columns.append((arrow_type, pool))
    row_count = draw(st.integers(0, 25))
    rows = [[draw(st.sampled_from(pool)) for _, pool in columns] for _ in range(row_count)]
    arrays = [pa.array([r[c] for r in rows], t) for c, (t, _) in enumerate(columns)]
    table = pa.Table.from_arrays(arrays, names=[f"c{i}" for i in range(len(columns))])
    descending = draw(st.lists(st.booleans(), min_size=len(columns), max_size=len(columns)))
    return table, descending


# ---- properties -----------------------------------------------------------------------------------
@pytest.mark.parametrize("type_index", range(len(COLUMN_TYPES)), ids=TYPE_IDS)
@settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_type_orders_like_sql_both_directions(type_index: int, data: st.DataObject) -> None:
    table, descending = data.draw(key_tables([type_index]))
    assert_order_equivalent(table, descending)
    assert_decodes(table, descending)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(key_tables())
def test_multi_column_keys_order_like_sql(case: tuple[pa.Table, list[bool]]) -> None:
    table, descending = case
    assert_order_equivalent(table, descending)
    assert_decodes(table, descending)


def assert_decodes(table: pa.Table, descending: list[bool]) -> None:
    keys = encode_keys(table, list(range(table.num_columns)), descending)
    decoded = decode_keys(keys, table.schema, descending)
    assert decoded.schema.equals(table.schema)
    types = [f.type for f in table.schema]
    original = list(zip(*(c.to_pylist() for c in table.columns)))
    back = list(zip(*(c.to_pylist() for c in decoded.columns)))
    for a, b in zip(original, back):
        assert _same(types, a, b), (a, b)
    # Re-encoding what came back gives the same bytes: the encoding is canonical.
    assert encode_keys(decoded, list(range(table.num_columns)), descending).equals(keys)


# ---- exact layouts and edge cases -----------------------------------------------------------------------
def keys_of(values: list[Any], arrow_type: pa.DataType, descending: bool = False) -> list[bytes]:
    return encode_columns([pa.array(values, arrow_type)], [descending]).to_pylist()


def test_documented_layouts() -> None:
    assert keys_of([-1, 0, 1, None], pa.int32()) == [
        b"\x01\x7f\xff\xff\xff",
        b"\x01\x80\x00\x00\x00",
        b"\x01\x80\x00\x00\x01",
        b"\x00\x00\x00\x00\x00",
    ]
    assert keys_of(["a", "a\x00", "", None], pa.string()) == [
        b"\x01a\x00\x00",
        b"\x01a\x00\xff\x00\x00",
        b"\x01\x00\x00",
        b"\x00",
    ]
    assert keys_of([True, False], pa.bool_()) == [b"\x01\x01", b"\x01\x00"]
    assert keys_of([1, None], pa.int8(), descending=True) == [b"\xfe\x7e", b"\xff\xff"]


def test_string_prefixes_and_zero_bytes_sort_first() -> None:
    values = ["ab", "a", "a\x00", "a\x00\x00", "a\x01", "", "b", "\x00"]
    keys = keys_of(values, pa.string())
    assert [v for _, v in sorted(zip(keys, values))] == sorted(values)
    descending = keys_of(values, pa.string(), descending=True)
    assert [v for _, v in sorted(zip(descending, values))] == sorted(values, reverse=True)


def test_floats_follow_postgresql_order() -> None:
    values = [math.nan, math.inf, 1.5, 0.0, -0.0, -1.5, -math.inf, float.fromhex("0x1p-1074")]
    keys = keys_of(values, pa.float64())
    ordered = [v for _, v in sorted(zip(keys, values), key=lambda p: p[0])]
    assert ordered[0] == -math.inf and ordered[-2] == math.inf and math.isnan(ordered[-1])
    assert keys[3] == keys[4]  # -0.0 == 0.0
    nan_payload = np.array([np.nan], np.float64).view(np.uint64) | np.uint64(1)
    other_nan = float(nan_payload.view(np.float64)[0])
    assert keys_of([other_nan], pa.float64()) == keys_of([math.nan], pa.float64())
    assert keys_of([-math.nan], pa.float32()) == keys_of([math.nan], pa.float32())


def test_intervals_order_by_span_with_thirty_day_months_then_fields() -> None:
    values = [
        pa.MonthDayNano([1, 0, 0]),
        pa.MonthDayNano([0, 30, 0]),
        pa.MonthDayNano([0, 29, NS_PER_DAY]),
        pa.MonthDayNano([0, 31, -1]),
        pa.MonthDayNano([-1, 0, 0]),
        pa.MonthDayNano([0, 0, 1]),
    ]
    keys = keys_of(values, pa.month_day_nano_interval())
    ordered = [_interval_key(v) for _, v in sorted(zip(keys, values), key=lambda p: p[0])]
    assert ordered == sorted(_interval_key(v) for v in values)
    assert len(set(keys)) == len(keys)  # equal spans, different fields: distinct keys


def test_fixed_width_keys_stay_fixed_width_with_nulls() -> None:
    types = [pa.int64(), pa.decimal128(38, 10), pa.timestamp("us"), pa.month_day_nano_interval(), pa.bool_()]
    width = key_width(types)
    assert width == 9 + 17 + 9 + 33 + 2
    table = pa.table(
        [
            pa.array([1, None], pa.int64()),
            pa.array([None, decimal.Decimal("1.5")], pa.decimal128(38, 10)),
            pa.array([None, dt.datetime(2024, 1, 1)], pa.timestamp("us")),
            pa.array([None, pa.MonthDayNano([1, 2, 3])], pa.month_day_nano_interval()),
            pa.array([True, None]),
        ],
        names=list("abcde"),
    )
    assert {len(k) for k in encode_keys(table, [0, 1, 2, 3, 4]).to_pylist()} == {width}
    assert key_width([pa.int64(), pa.string()]) is None


def test_sliced_chunked_and_dictionary_inputs_encode_like_plain_arrays() -> None:
    names = ["x\x00", None, "y", "", "x"]
    table = pa.table({"id": [5, 4, 3, 2, 1], "name": names})
    plain = encode_keys(table, [1, 0]).to_pylist()
    assert encode_keys(table.slice(1, 3), [1, 0]).to_pylist() == plain[1:4]
    chunked = pa.table({"id": pa.chunked_array([[5, 4], [3, 2, 1]]), "name": pa.chunked_array([names[:3], names[3:]])})
    assert encode_keys(chunked, [1, 0]).to_pylist() == plain
    dictionary = pa.table({"id": table.column(0), "name": pa.array(names).dictionary_encode()})
    assert encode_keys(dictionary, [1, 0]).to_pylist() == plain
    large = pa.table({"id": table.column(0), "name": pa.array(names, pa.large_string())})
    assert encode_keys(large, [1, 0]).to_pylist() == plain


def test_no_key_columns_give_empty_keys_and_empty_tables_give_no_keys() -> None:
    table = pa.table({"a": [1, 2]})
    assert encode_keys(table, []).to_pylist() == [b"", b""]
    assert encode_keys(table.slice(0, 0), [0]).to_pylist() == []
    assert encode_keys(pa.table({"s": pa.array([], pa.string())}), [0]).to_pylist() == []


def test_unsupported_types_are_refused() -> None:
    with pytest.raises(InternalError, match="no memcomparable encoding"):
        encode_keys(pa.table({"l": [[1, 2]]}), [0])


def test_decode_rejects_bytes_that_are_not_keys() -> None:
    schema = pa.schema([("a", pa.int32()), ("s", pa.string())])
    good = encode_keys(pa.table({"a": [1], "s": ["x"]}, schema=schema), [0, 1]).to_pylist()[0]
    bad_inputs: list[bytes] = [good[:3], good + b"\x01", b"\x07" + good[1:], good[:-1]]
    for bad in bad_inputs:
        with pytest.raises(ValueError):
            decode_keys(pa.array([bad], pa.binary()), schema)


@pytest.mark.parametrize(
    "make",
    [
        lambda n: pa.table({"id": np.arange(n), "name": [f"user-{i % 997}" for i in range(n)]}),
        lambda n: pa.table({"id": np.arange(n)}),
    ],
    ids=["int-string", "int"],
)
def test_large_batches_round_trip(make: Callable[[int], pa.Table]) -> None:
    table = make(50_000)
    keys = encode_keys(table, list(range(table.num_columns)))
    assert decode_keys(keys, table.schema).equals(table)
    order = sorted(range(len(keys)), key=keys.to_pylist().__getitem__)
    assert order == list(range(len(keys)))  # ids are increasing and come first
