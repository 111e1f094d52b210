"""SqlType: array types (names, PostgreSQL identity, Arrow and DuckDB layout, text form) and array text."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from tidegate.common.array_text import format_array, parse_array
from tidegate.common.types import (
    BIGINT,
    BOOLEAN,
    DATE,
    DOUBLE,
    INTEGER,
    NUMERIC,
    TEXT,
    TIMESTAMP,
    TIMESTAMPTZ,
    VARCHAR,
    SqlType,
    array_of,
    from_arrow,
    parse_type_name,
    type_text,
)
from tidegate.errors import FeatureNotSupported, InvalidTextRepresentation, UndefinedType
from tidegate.meta.catalog import ColumnDef, Relation, RelationKind

# (as written in SQL, element, format_type, pg_typname's oid, typmod, Arrow, DuckDB)
ARRAY_TYPES = [
    ("int[]", INTEGER, "integer[]", 1007, -1, pa.list_(pa.int32()), "INTEGER[]"),
    ("INTEGER ARRAY", INTEGER, "integer[]", 1007, -1, pa.list_(pa.int32()), "INTEGER[]"),
    ("int4 array[3]", INTEGER, "integer[]", 1007, -1, pa.list_(pa.int32()), "INTEGER[]"),
    ("INT[3]", INTEGER, "integer[]", 1007, -1, pa.list_(pa.int32()), "INTEGER[]"),
    ("_int4", INTEGER, "integer[]", 1007, -1, pa.list_(pa.int32()), "INTEGER[]"),
    ("bigint[]", BIGINT, "bigint[]", 1016, -1, pa.list_(pa.int64()), "BIGINT[]"),
    ("smallint[]", SqlType("smallint"), "smallint[]", 1005, -1, pa.list_(pa.int16()), "SMALLINT[]"),
    ("varchar[]", VARCHAR, "character varying[]", 1015, -1, pa.list_(pa.string()), "VARCHAR[]"),
    ("VARCHAR(10)[]", SqlType("character varying", length=10), "character varying(10)[]", 1015, 14,
     pa.list_(pa.string()), "VARCHAR[]"),
    ("numeric[]", NUMERIC, "numeric[]", 1231, -1, pa.list_(pa.decimal128(38, 10)), "DECIMAL(38,10)[]"),
    ("DECIMAL(10, 2)[]", SqlType("numeric", 10, 2), "numeric(10,2)[]", 1231, (10 << 16 | 2) + 4,
     pa.list_(pa.decimal128(10, 2)), "DECIMAL(10,2)[]"),
    ("bool[]", BOOLEAN, "boolean[]", 1000, -1, pa.list_(pa.bool_()), "BOOLEAN[]"),
    ("double precision[]", DOUBLE, "double precision[]", 1022, -1, pa.list_(pa.float64()), "DOUBLE[]"),
    ("real[]", SqlType("real"), "real[]", 1021, -1, pa.list_(pa.float32()), "REAL[]"),
    ("timestamp[]", TIMESTAMP, "timestamp without time zone[]", 1115, -1, pa.list_(pa.timestamp("us")),
     "TIMESTAMP[]"),
    ("timestamp with time zone[]", TIMESTAMPTZ, "timestamp with time zone[]", 1185, -1,
     pa.list_(pa.timestamp("us", tz="UTC")), "TIMESTAMPTZ[]"),
    ("date[]", DATE, "date[]", 1182, -1, pa.list_(pa.date32()), "DATE[]"),
    ("interval[]", SqlType("interval"), "interval[]", 1187, -1, pa.list_(pa.month_day_nano_interval()),
     "INTERVAL[]"),
    ("bytea[]", SqlType("bytea"), "bytea[]", 1001, -1, pa.list_(pa.binary()), "BLOB[]"),
    ("jsonb[]", SqlType("jsonb"), "jsonb[]", 3807, -1, pa.list_(pa.string()), "JSON[]"),
]  # fmt: skip


@pytest.mark.parametrize(("written", "element", "shown", "oid", "typmod", "arrow", "duckdb"), ARRAY_TYPES)
def test_array_type_names_and_layout(
    written: str, element: SqlType, shown: str, oid: int, typmod: int, arrow: pa.DataType, duckdb: str
) -> None:
    parsed = parse_type_name(written)
    assert parsed == array_of(element)
    assert parsed.is_array and parsed.element == element
    assert str(parsed) == shown
    assert parsed.pg_oid == oid
    assert parsed.pg_typmod == typmod
    assert parsed.pg_typlen == -1
    assert parsed.arrow.equals(arrow)
    assert parsed.duckdb_name == duckdb
    assert not parsed.is_numeric


@pytest.mark.parametrize("written", [row[0] for row in ARRAY_TYPES])
def test_array_type_text_round_trip(written: str) -> None:
    """What the catalog and stream plans store reads back as the same type."""
    parsed = parse_type_name(written)
    assert parse_type_name(type_text(parsed)) == parsed
    assert type_text(parsed).endswith("[]")


def test_text_array_of_the_text_type_is_underscore_text() -> None:
    assert array_of(TEXT).pg_oid == 1009
    assert str(array_of(TEXT)) == "text[]"


def test_catalog_stores_and_reloads_array_columns() -> None:
    columns = [
        ColumnDef("id", INTEGER),
        ColumnDef("tags", parse_type_name("varchar(5)[]")),
        ColumnDef("prices", parse_type_name("numeric(10,2)[]")),
    ]
    relation = Relation(1001, "t", RelationKind.TABLE, columns, pk=[0])
    stored = relation.to_json()
    assert [c["type"] for c in stored["columns"]] == ["integer", "varchar(5)[]", "numeric(10,2)[]"]
    assert Relation.from_json(stored).columns == columns


@pytest.mark.parametrize(
    ("written", "error"),
    [("int[][]", FeatureNotSupported), ("INT[2][3]", FeatureNotSupported), ("foo[]", UndefinedType)],
)
def test_array_types_refused(written: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_type_name(written)


def test_unknown_element_names_the_whole_type() -> None:
    with pytest.raises(UndefinedType, match=r'type "foo\[\]" does not exist'):
        parse_type_name("foo[]")


def test_array_of_an_array_is_refused() -> None:
    with pytest.raises(FeatureNotSupported, match="multidimensional"):
        array_of(array_of(INTEGER))


def test_from_arrow_lists() -> None:
    assert from_arrow(pa.list_(pa.int32())) == array_of(INTEGER)
    assert from_arrow(pa.large_list(pa.string())) == array_of(VARCHAR)
    assert from_arrow(pa.list_(pa.field("l", pa.decimal128(10, 2)))) == array_of(SqlType("numeric", 10, 2))
    with pytest.raises(FeatureNotSupported):
        from_arrow(pa.list_(pa.list_(pa.int32())))


# ---- text form --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql_type", "value", "text"),
    [
        (array_of(INTEGER), [1, 2, None], "{1,2,NULL}"),
        (array_of(INTEGER), [], "{}"),
        (array_of(INTEGER), None, None),
        (array_of(VARCHAR), ["a b", 'x"y', "plain"], '{"a b","x\\"y",plain}'),
        (array_of(VARCHAR), ["", None, "NULL", "null"], '{"",NULL,"NULL","null"}'),
        (array_of(VARCHAR), ["c,d", "{", "}", "a\\b", "tab\there"], '{"c,d","{","}","a\\\\b","tab\there"}'),
        (array_of(VARCHAR), ["ünï"], "{ünï}"),
        (array_of(BOOLEAN), [True, False, None], "{t,f,NULL}"),
        (array_of(SqlType("numeric", 10, 2)), [decimal.Decimal("1.5"), decimal.Decimal(2)], "{1.50,2.00}"),
        (array_of(NUMERIC), [decimal.Decimal("1.5000000000")], "{1.5}"),
        (array_of(DOUBLE), [0.1, 1e20, float("nan"), float("inf")], "{0.1,1e+20,NaN,Infinity}"),
        (array_of(TIMESTAMP), [dt.datetime(2024, 1, 1, 10, 0, 0, 500000)], '{"2024-01-01 10:00:00.5"}'),
        (array_of(DATE), [dt.date(2024, 2, 29)], "{2024-02-29}"),
        (array_of(SqlType("bytea")), [b"\x01\x02"], '{"\\\\x0102"}'),
    ],
)
def test_array_text_output(sql_type: SqlType, value: object, text: str | None) -> None:
    assert sql_type.to_text(value) == text


def test_format_array_quotes_as_array_out() -> None:
    assert format_array([]) == "{}"
    assert format_array([None]) == "{NULL}"
    assert format_array(["a\nb", "a\x0bb", "é"]) == '{"a\nb","a\x0bb",é}'


@pytest.mark.parametrize(
    ("text", "items"),
    [
        ("{}", []),
        (" { } ", []),
        ("{1,2,NULL}", ["1", "2", None]),
        ("{ 1 , 2 }", ["1", "2"]),
        ('{"a b","x\\"y",plain}', ["a b", 'x"y', "plain"]),
        ('{"NULL",null,""}', ["NULL", None, ""]),
        ("{a b  ,c}", ["a b", "c"]),
        ("{a\\,b,\\NULL}", ["a,b", "NULL"]),
        ('{"back\\\\slash"}', ["back\\slash"]),
        ("[1:2]={1,2}", ["1", "2"]),
    ],
)
def test_parse_array(text: str, items: list[str | None]) -> None:
    assert parse_array(text) == items


@pytest.mark.parametrize("items", [[], [None], ["1", None, "x y", "", "NULL", 'q"', "b\\s", "{", ","]])
def test_array_text_round_trip(items: list[str | None]) -> None:
    assert parse_array(format_array(items)) == items


@pytest.mark.parametrize("text", ["", "1,2", "{1,2", "{1,,2}", "{1}x", '{"a" b}', "{a{}", "[0:1]={1,2}", "{,}"])
def test_parse_array_refuses_malformed_literals(text: str) -> None:
    with pytest.raises(InvalidTextRepresentation, match="malformed array literal"):
        parse_array(text)


def test_parse_array_refuses_several_dimensions() -> None:
    with pytest.raises(FeatureNotSupported, match="multidimensional"):
        parse_array("{{1,2},{3,4}}")
