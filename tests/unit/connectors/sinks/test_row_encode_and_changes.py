"""row_encode's text forms against SqlType.to_text and json, and last-change-per-key compaction."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import random
from typing import Any

import pyarrow as pa
import pytest
from sink_helpers import make_changes

from tidegate.common.chunk import Op
from tidegate.common.types import (
    BIGINT,
    BOOLEAN,
    BYTEA,
    DATE,
    DOUBLE,
    INTEGER,
    INTERVAL,
    JSONB,
    NUMERIC,
    REAL,
    TIME,
    TIMESTAMP,
    TIMESTAMPTZ,
    VARCHAR,
    SqlType,
    array_of,
)
from tidegate.connectors.row_encode import (
    BATCH_ROWS_MAX,
    pg_text_column,
    rows_to_json_lines,
    table_to_copy_text,
    table_to_csv,
)
from tidegate.connectors.sink_target import OP_FIELD
from tidegate.connectors.sinks.changes import last_change_per_key

SAMPLES: list[tuple[SqlType, list[Any]]] = [
    (BOOLEAN, [True, False, None]),
    (BIGINT, [0, -(2**63), None]),
    (DOUBLE, [1.5, 0.1, -2.0, None]),
    (NUMERIC, [decimal.Decimal("1.5"), decimal.Decimal("-0.0000000001"), decimal.Decimal("100"), decimal.Decimal(0)]),
    (SqlType("numeric", 12, 3), [decimal.Decimal("1.500"), decimal.Decimal("-1.000"), None]),
    (VARCHAR, ["x", "", "tab\t", None]),
    (BYTEA, [b"\x00\x01\xff", b"", None]),
    (DATE, [dt.date(2026, 11, 28), None]),
    (TIME, [dt.time(10, 0), dt.time(23, 59, 59, 123456), None]),
    (TIMESTAMP, [dt.datetime(2026, 11, 28, 10, 0, 0, 123400), dt.datetime(2026, 1, 1), None]),
    (TIMESTAMPTZ, [dt.datetime(2026, 11, 28, 10, 0, 0, 5, tzinfo=dt.UTC), None]),
    (INTERVAL, [pa.MonthDayNano([25, -3, 3_600_000_000_000]), pa.MonthDayNano([0, 0, 0]), None]),
    (array_of(INTEGER), [[1, None, 3], [], None]),
    (array_of(VARCHAR), [["a b", "NULL", "null", None, "", '{"x"}', "\\"], None]),
    (array_of(BYTEA), [[b"\x01", None], None]),
]


@pytest.mark.parametrize(("sql_type", "values"), SAMPLES, ids=[str(t) for t, _ in SAMPLES])
def test_pg_text_is_what_to_text_prints(sql_type: SqlType, values: list[Any]) -> None:
    rendered = pg_text_column(pa.array(values, sql_type.arrow), sql_type).to_pylist()
    assert rendered == [sql_type.to_text(v) for v in values]


def test_times_drop_trailing_fraction_zeros_as_postgresql_does() -> None:
    # SqlType.to_text prints a time with str() (23:59:59.120000); PostgreSQL, and so COPY and CSV, do not.
    rendered = pg_text_column(pa.array([dt.time(23, 59, 59, 120000)], TIME.arrow), TIME)
    assert rendered.to_pylist() == ["23:59:59.12"]


def test_json_values() -> None:
    columns = [
        ("b", BOOLEAN),
        ("f", REAL),
        ("d", DOUBLE),
        ("n", NUMERIC),
        ("s", VARCHAR),
        ("ts", TIMESTAMP),
        ("tz", TIMESTAMPTZ),
        ("day", DATE),
        ("iv", INTERVAL),
        ("raw", BYTEA),
        ("doc", JSONB),
        ("nums", array_of(NUMERIC)),
        ("texts", array_of(VARCHAR)),
    ]
    row = (
        True,
        0.1,
        float("nan"),
        decimal.Decimal("12345678901234567890.0123456789"),
        'q"\\\n\x01é',
        dt.datetime(2026, 11, 28, 10, 0, 0, 123456),
        dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC),
        dt.date(2026, 11, 28),
        pa.MonthDayNano([0, 1, 1_000]),
        b"\xab",
        '{"a":\n [1, {"b": null}]}',
        [decimal.Decimal("0.5"), None],
        ["x", None],
    )
    table = make_changes(columns, [(Op.INSERT, row), (Op.INSERT, (None,) * len(columns))]).drop_columns([OP_FIELD])
    first, second = rows_to_json_lines(table, [t for _, t in columns])
    assert b"\n" not in first
    assert json.loads(first, parse_float=decimal.Decimal) == {
        "b": True,
        "f": decimal.Decimal("0.1"),
        "d": "NaN",
        "n": decimal.Decimal("12345678901234567890.0123456789"),
        "s": 'q"\\\n\x01é',
        "ts": "2026-11-28 10:00:00.123456",
        "tz": "2026-11-28 10:00:00+00:00",
        "day": "2026-11-28",
        "iv": "1 day 00:00:00.000001",
        "raw": "\\xab",
        "doc": {"a": [1, {"b": None}]},
        "nums": [decimal.Decimal("0.5"), None],
        "texts": ["x", None],
    }
    assert json.loads(second) == {name: None for name, _ in columns}


def test_csv_and_copy_text_spell_nulls_and_specials() -> None:
    table = pa.table({"a": pa.array(["x,y", None, "", "\\.", 'say "hi"']), "b": pa.array([1, 2, None, 4, 5])})
    text = table_to_csv(table).decode()
    assert text == 'a,b\n"x,y",1\n,2\n"",\n"\\.",4\n"say ""hi""",5\n'
    assert list(csv.reader(io.StringIO(text)))[1:] == [
        ["x,y", "1"],
        ["", "2"],
        ["", ""],
        ["\\.", "4"],
        ['say "hi"', "5"],
    ]
    copy = pa.table({"a": pa.array(["t\tn\nb\\", None, ""])})
    assert table_to_copy_text(copy) == b"t\\tn\\nb\\\\\n\\N\n\n"


def test_large_tables_render_in_batches() -> None:
    rows = BATCH_ROWS_MAX * 2 + 3
    table = pa.table({"k": pa.array(range(rows), pa.int64())})
    lines = rows_to_json_lines(table)
    assert len(lines) == rows and lines[-1] == f'{{"k":{rows - 1}}}'.encode()
    assert table_to_csv(table).count(b"\n") == rows + 1


def _reference_last_change(changes: list[tuple[Op, tuple[Any, ...]]]) -> list[tuple[Op, tuple[Any, ...]]]:
    last: dict[Any, int] = {}
    for index, (_, row) in enumerate(changes):
        last[row[0]] = index
    return [changes[i] for i in sorted(last.values())]


def test_last_change_per_key_matches_a_row_by_row_reference() -> None:
    rng = random.Random(11)
    columns = [("k", INTEGER), ("v", VARCHAR)]
    changes = [(rng.choice(list(Op)), (rng.randrange(50), str(i))) for i in range(2000)]
    table = make_changes(columns, changes)
    compacted = last_change_per_key(table, ["k"])
    expected = make_changes(columns, _reference_last_change(changes))
    assert compacted.equals(expected)
    assert last_change_per_key(table.slice(0, 0), ["k"]).num_rows == 0
