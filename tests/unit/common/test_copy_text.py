"""COPY FROM STDIN decoding: PostgreSQL's text and CSV semantics, exact decimals, errors, batching."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from tidegate.common.copy_text import decode_copy
from tidegate.common.result import Column
from tidegate.common.types import (
    BIGINT,
    BOOLEAN,
    BYTEA,
    DATE,
    DOUBLE,
    INTEGER,
    INTERVAL,
    NUMERIC,
    SMALLINT,
    TEXT,
    TIME,
    TIMESTAMP,
    TIMESTAMPTZ,
    VARCHAR,
    SqlType,
)
from tidegate.errors import (
    DataError,
    InvalidDatetimeFormat,
    InvalidTextRepresentation,
    NumericValueOutOfRange,
    StringDataRightTruncation,
)
from tidegate.server.pgwire_copy import CopyBatcher, last_line_end

ORDERS = [
    Column("order_id", INTEGER),
    Column("product_category", VARCHAR),
    Column("amount", SqlType("numeric", 10, 2)),
    Column("order_time", TIMESTAMP),
]


def text(data: bytes, columns: list[Column], **options: object) -> pa.Table:
    settings: dict[str, object] = {"delimiter": "\t", "null": "\\N", "header": False, "quote": '"', "escape": '"'}
    settings.update(options)
    return decode_copy(data, columns, format="text", **settings)  # type: ignore[arg-type]


def csv(data: bytes, columns: list[Column], **options: object) -> pa.Table:
    settings: dict[str, object] = {"delimiter": ",", "null": "", "header": False, "quote": '"', "escape": '"'}
    settings.update(options)
    return decode_copy(data, columns, format="csv", **settings)  # type: ignore[arg-type]


def test_text_format_decodes_typed_columns_with_nulls() -> None:
    table = text(b"1\tbooks\t12.50\t2024-01-01 10:00:00\n2\t\\N\t\\N\t\\N\n", ORDERS)
    assert table.schema.types == [pa.int32(), pa.string(), pa.decimal128(10, 2), pa.timestamp("us")]
    assert table.to_pylist() == [
        {
            "order_id": 1,
            "product_category": "books",
            "amount": decimal.Decimal("12.50"),
            "order_time": dt.datetime(2024, 1, 1, 10),
        },
        {"order_id": 2, "product_category": None, "amount": None, "order_time": None},
    ]


def test_text_format_backslash_escapes() -> None:
    data = b"a\\tb\\nc\\\\d\\x41\\101\\N\n\\\\N\n"
    table = text(data, [Column("s", TEXT)])
    # "\\N" inside a longer field is not NULL (it decodes to "N", as in PostgreSQL);
    # an escaped backslash before N is the text "\N".
    assert table.column("s").to_pylist() == ["a\tb\nc\\dAAN", "\\N"]


def test_text_format_end_marker_and_missing_final_newline() -> None:
    assert text(b"1\n2\n\\.\n", [Column("x", BIGINT)]).column("x").to_pylist() == [1, 2]
    assert text(b"1\n2", [Column("x", BIGINT)]).column("x").to_pylist() == [1, 2]
    assert text(b"", [Column("x", BIGINT)]).num_rows == 0


def test_text_format_custom_delimiter_null_and_header() -> None:
    table = text(b"id|name\n1|NULL\n2|x\n", [Column("id", SMALLINT), Column("name", VARCHAR)],
                 delimiter="|", null="NULL", header=True)  # fmt: skip
    assert table.to_pylist() == [{"id": 1, "name": None}, {"id": 2, "name": "x"}]


def test_csv_empty_unquoted_is_null_and_quoted_empty_is_empty_string() -> None:
    table = csv(b'1,,""\n2,"a,b","say ""hi"""\n', [Column("i", INTEGER), Column("a", TEXT), Column("b", TEXT)])
    assert table.to_pylist() == [
        {"i": 1, "a": None, "b": ""},
        {"i": 2, "a": "a,b", "b": 'say "hi"'},
    ]


def test_csv_header_quoted_newlines_and_custom_null() -> None:
    data = b'name,note\n"x","line one\nline two"\nNA,"NA"\n'
    table = csv(data, [Column("name", TEXT), Column("note", TEXT)], header=True, null="NA")
    assert table.to_pylist() == [{"name": "x", "note": "line one\nline two"}, {"name": None, "note": "NA"}]


def test_booleans_accept_postgres_spellings() -> None:
    data = b"t\ntrue\nYES\non\n1\nf\nfalse\nno\nOFF\n0\n\\N\n"
    assert text(data, [Column("b", BOOLEAN)]).column("b").to_pylist() == [True] * 5 + [False] * 5 + [None]
    with pytest.raises(InvalidTextRepresentation, match='invalid input syntax for type boolean: "maybe"'):
        text(b"t\nmaybe\n", [Column("b", BOOLEAN)])


def test_decimals_are_exact_and_round_half_away_from_zero() -> None:
    table = text(b"0.1\n12345678.12\n1.005\n-1.005\n7\n", [Column("d", SqlType("numeric", 10, 2))])
    assert table.column("d").to_pylist() == [
        decimal.Decimal("0.10"),
        decimal.Decimal("12345678.12"),
        decimal.Decimal("1.01"),
        decimal.Decimal("-1.01"),
        decimal.Decimal("7.00"),
    ]
    unconstrained = text(b"948.49\n0.000000000123\n", [Column("d", NUMERIC)]).column("d").to_pylist()
    assert unconstrained == [decimal.Decimal("948.49"), decimal.Decimal("1E-10")]


def test_numeric_overflow_names_line_and_column() -> None:
    with pytest.raises(NumericValueOutOfRange, match=r"numeric field overflow \(COPY line 2, column d"):
        text(b"1\n123456789.5\n", [Column("d", SqlType("numeric", 10, 2))])


def test_invalid_integer_names_value_line_and_column() -> None:
    with pytest.raises(InvalidTextRepresentation) as error:
        text(b"1\tx\t1\t2024-01-01\n2\ty\t2\t2024-01-01\nabc\tz\t3\t2024-01-01\n", ORDERS)
    assert str(error.value) == 'invalid input syntax for type integer: "abc" (COPY line 3, column order_id)'


def test_line_numbers_count_header_and_batch_offset() -> None:
    with pytest.raises(InvalidTextRepresentation, match=r"COPY line 12, column x"):
        csv(b"x\n1\nnope\n", [Column("x", INTEGER)], header=True, first_line=10)


def test_integer_out_of_range_and_whitespace() -> None:
    assert text(b" 7 \n+8\n", [Column("x", INTEGER)]).column("x").to_pylist() == [7, 8]
    with pytest.raises(NumericValueOutOfRange, match='value "99999" is out of range for type smallint'):
        text(b"1\n99999\n", [Column("x", SMALLINT)])


def test_bad_timestamp_and_date() -> None:
    with pytest.raises(InvalidDatetimeFormat, match='invalid input syntax for type timestamp: "2024-13-01"'):
        text(b"2024-13-01\n", [Column("t", TIMESTAMP)])
    with pytest.raises(InvalidDatetimeFormat, match='type date: "yesterday"'):
        text(b"yesterday\n", [Column("d", DATE)])


def test_timestamptz_offsets_and_naive_values_are_utc() -> None:
    table = text(b"2024-01-01 10:00:00+02\n2024-01-01 10:00:00\n2024-01-01T10:00:00.5-01:30\n",
                 [Column("t", TIMESTAMPTZ)])  # fmt: skip
    utc = dt.UTC
    assert [v.astimezone(utc) for v in table.column("t").to_pylist()] == [
        dt.datetime(2024, 1, 1, 8, tzinfo=utc),
        dt.datetime(2024, 1, 1, 10, tzinfo=utc),
        dt.datetime(2024, 1, 1, 11, 30, 0, 500000, tzinfo=utc),
    ]


def test_rare_types_bytea_interval_time_float() -> None:
    columns = [Column("b", BYTEA), Column("i", INTERVAL), Column("t", TIME), Column("f", DOUBLE)]
    table = text(b"\\\\x00ff\t1 day 02:00:00\t10:11:12\tInfinity\n", columns)
    row = table.to_pylist()[0]
    assert row["b"] == b"\x00\xff"
    assert (row["i"].months, row["i"].days, row["i"].nanoseconds) == (0, 1, 7_200_000_000_000)
    assert row["t"] == dt.time(10, 11, 12)
    assert row["f"] == float("inf")


def test_wrong_number_of_fields() -> None:
    with pytest.raises(DataError, match=r"missing data for column number 4 \(line 2\)"):
        text(b"1\ta\t1\t2024-01-01\n2\tb\t2\n", ORDERS)
    with pytest.raises(DataError, match=r"extra data after last expected column \(line 1\)"):
        text(b"1\ta\t1\t2024-01-01\t9\n", ORDERS)


def test_varchar_length_is_enforced() -> None:
    with pytest.raises(StringDataRightTruncation, match=r"value too long for type character varying\(3\)"):
        text(b"abc\nabcd\n", [Column("s", SqlType("character varying", length=3))])


def test_last_line_end_respects_csv_quotes() -> None:
    assert last_line_end(b"a\nb\nc", csv=False, quote='"', escape='"') == 4
    assert last_line_end(b'1,"x\ny"\n2,"open\n', csv=True, quote='"', escape='"') == 8
    assert last_line_end(b'1,"a""\nb"\n', csv=True, quote='"', escape='"') == 10
    assert last_line_end(b'1,"a\\"\nb"\n', csv=True, quote='"', escape="\\") == 10
    assert last_line_end(b'"no newline', csv=True, quote='"', escape='"') == 0


def test_batcher_cuts_at_line_ends_and_counts_lines() -> None:
    batcher = CopyBatcher(format="csv", quote='"', escape='"', header=True, batch_bytes_max=10)
    batches = [batcher.add(b'h\n1,"a\nb"\n2,'), batcher.add(b"c\n3,d\n"), batcher.finish()]
    # The second add stays under the batch size, so its lines wait for CopyDone.
    assert [b.data if b else None for b in batches] == [b'h\n1,"a\nb"\n', None, b"2,c\n3,d\n"]
    assert [(b.first_line, b.header) for b in batches if b] == [(1, True), (4, False)]
    tail = CopyBatcher(format="text", quote='"', escape='"', header=False, batch_bytes_max=1 << 20)
    assert tail.add(b"1\n2") is None
    final = tail.finish()
    assert final is not None and final.data == b"1\n2"


def test_decoding_is_vectorized_for_a_large_batch() -> None:
    # Not a timing assertion (see bench/): a 200k-row batch decodes in one call and stays exact.
    rows = 200_000
    data = b"".join(b"%d\tname%d\t%d.25\t2024-01-02 10:00:%02d\n" % (i, i % 7, i % 1000, i % 60) for i in range(rows))
    table = text(data, ORDERS)
    assert table.num_rows == rows
    assert table.column("amount")[rows - 1].as_py() == decimal.Decimal("999.25")
