"""Array values on the wire: text output as PostgreSQL's array_out, array parameters, COPY of arrays."""

from __future__ import annotations

import datetime as dt
import decimal
from typing import Any

import psycopg
import pytest

from tidegate.common.copy_text import decode_copy
from tidegate.common.result import Column
from tidegate.common.types import BOOLEAN, DATE, INTEGER, TIMESTAMP, VARCHAR, SqlType, array_of
from tidegate.errors import FeatureNotSupported, InvalidTextRepresentation, StringDataRightTruncation
from tidegate.server.pg_catalog_tables import TYPES
from tidegate.server.pgwire_values import decode_parameter, encoder_for

OID_INT4_ARRAY = 1007


@pytest.mark.parametrize(
    ("sql_type", "value", "wire"),
    [
        (array_of(INTEGER), [1, 2, None], b"{1,2,NULL}"),
        (array_of(INTEGER), [], b"{}"),
        (array_of(INTEGER), None, None),
        (array_of(VARCHAR), ["a b", 'x"y', "plain", "", None, "NULL"], b'{"a b","x\\"y",plain,"",NULL,"NULL"}'),
        (array_of(VARCHAR), ["ünï", "c,d"], '{ünï,"c,d"}'.encode()),
        (array_of(BOOLEAN), [True, None], b"{t,NULL}"),
        (array_of(SqlType("numeric", 10, 2)), [decimal.Decimal("0.1")], b"{0.10}"),
        (array_of(TIMESTAMP), [dt.datetime(2024, 3, 1, 12, 30)], b'{"2024-03-01 12:30:00"}'),
    ],
)
def test_array_value_text_encoding(sql_type: SqlType, value: Any, wire: bytes | None) -> None:
    assert encoder_for(sql_type, 0)(value) == wire


def test_array_type_oids_are_in_pg_type() -> None:
    """Every array type a column can have is a row of pg_type, named _element, whose typelem is the element."""
    for element in (INTEGER, VARCHAR, BOOLEAN, DATE, TIMESTAMP, SqlType("numeric"), SqlType("bigint")):
        info = TYPES[array_of(element).pg_oid]
        assert info.typname == "_" + TYPES[element.pg_oid].typname
        assert TYPES[element.pg_oid].array_oid == array_of(element).pg_oid


def test_array_binary_output_is_refused_with_0a000() -> None:
    with pytest.raises(FeatureNotSupported, match="request text format"):
        encoder_for(array_of(INTEGER), 1)


@pytest.mark.parametrize(
    ("raw", "oid", "value"),
    [
        (b"{1,2,NULL}", OID_INT4_ARRAY, [1, 2, None]),
        (b"{}", OID_INT4_ARRAY, []),
        (b"{1,2}", 1005, [1, 2]),  # psycopg sends a list of small ints as int2[]
        (b'{a,"b c",NULL}', 1009, ["a", "b c", None]),
        (b"{1.5,-2}", 1231, [decimal.Decimal("1.5"), decimal.Decimal(-2)]),
        (b"{t,f}", 1000, [True, False]),
        (b"{2024-01-01}", 1182, [dt.date(2024, 1, 1)]),
    ],
)
def test_array_parameters_in_text(raw: bytes, oid: int, value: list[Any]) -> None:
    assert decode_parameter(raw, oid, 0) == value


@pytest.mark.parametrize(("raw", "message"), [(b"{1,x}", "integer"), (b"{1", "malformed array literal")])
def test_bad_array_parameter_is_22p02(raw: bytes, message: str) -> None:
    with pytest.raises(InvalidTextRepresentation, match=message):
        decode_parameter(raw, OID_INT4_ARRAY, 0)


def test_psycopg_reads_array_columns_as_lists(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cursor = conn.execute("SELECT [1, 2, NULL]::INTEGER[] AS a, ['a b', NULL]::VARCHAR[] AS s, []::INTEGER[] AS e")
        assert [d.type_code for d in cursor.description or []] == [1007, 1015, 1007]
        assert cursor.fetchall() == [([1, 2, None], ["a b", None], [])]


ARRAYS = [
    Column("id", INTEGER),
    Column("nums", array_of(INTEGER)),
    Column("tags", array_of(SqlType("character varying", length=3))),
]


def _copy(data: bytes, format: str = "text") -> list[dict[str, Any]]:
    delimiter, null = ("\t", "\\N") if format == "text" else (",", "")
    table = decode_copy(
        data, ARRAYS, format=format, delimiter=delimiter, null=null, header=False, quote='"', escape='"'
    )
    return table.to_pylist()


def test_copy_array_fields_in_text_and_csv() -> None:
    assert _copy(b'1\t{1,2,NULL}\t{a,"b c"}\n2\t\\N\t{}\n3\t{}\t\\N\n') == [
        {"id": 1, "nums": [1, 2, None], "tags": ["a", "b c"]},
        {"id": 2, "nums": None, "tags": []},
        {"id": 3, "nums": [], "tags": None},
    ]
    assert _copy(b'1,"{1, 2}","{x,""y z""}"\n', "csv") == [{"id": 1, "nums": [1, 2], "tags": ["x", "y z"]}]


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"1\t{1}\t{}\n2\t{1,x}\t{}\n", InvalidTextRepresentation, r'integer: "x" \(COPY line 2, column nums'),
        (b"1\t{1,2\t{}\n", InvalidTextRepresentation, r"malformed array literal.*COPY line 1, column nums"),
        (b"1\t{}\t{}\n2\t{}\t{ab,abcd}\n", StringDataRightTruncation, r"COPY line 2, column tags"),
    ],
)
def test_copy_array_errors_name_the_line(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _copy(data)
