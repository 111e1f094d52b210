"""RecordDecoder: source payloads (JSON objects, CSV lines) → rows of the declared columns, bad ones
reported per record with a reason, never raised."""

from __future__ import annotations

import datetime as dt
import decimal
import json

import pytest

from tidegate.common.types import parse_type_name
from tidegate.connectors.record_decode import DecodedRecords, RecordDecoder
from tidegate.errors import FeatureNotSupported, InvalidParameterValue

UTC = dt.UTC
COLUMNS = [
    ("id", "bigint"),
    ("name", "varchar"),
    ("price", "numeric(12,2)"),
    ("at", "timestamp"),
    ("at_tz", "timestamptz"),
    ("ok", "boolean"),
    ("day", "date"),
    ("ratio", "double"),
]


def decoder(encode: str = "JSON", columns: list[tuple[str, str]] = COLUMNS, **options: str) -> RecordDecoder:
    return RecordDecoder(encode, [n for n, _ in columns], [parse_type_name(t) for _, t in columns], options)


def rows(decoded: DecodedRecords) -> list[dict[str, object]]:
    return decoded.batch.to_pylist()


def errors_at(decoded: DecodedRecords) -> list[int]:
    return [index for index, _ in decoded.errors]


def test_json_values_follow_postgresql_input_text() -> None:
    record = {
        "id": 7,
        "name": "ada",
        "price": 12.5,
        "at": "2026-11-28 10:00:00.123456",
        "at_tz": "2026-11-28T10:00:00+02:00",
        "ok": True,
        "day": "2026-11-28",
        "ratio": 0.25,
        "extra": {"ignored": [1, 2]},
    }
    decoded = decoder().decode([json.dumps(record).encode()])
    assert decoded.errors == []
    assert decoded.kept.tolist() == [0]
    assert rows(decoded) == [
        {
            "id": 7,
            "name": "ada",
            "price": decimal.Decimal("12.50"),
            "at": dt.datetime(2026, 11, 28, 10, 0, 0, 123456),
            "at_tz": dt.datetime(2026, 11, 28, 8, 0, tzinfo=UTC),
            "ok": True,
            "day": dt.date(2026, 11, 28),
            "ratio": 0.25,
        }
    ]
    assert decoded.batch.schema.types == [parse_type_name(t).arrow for _, t in COLUMNS]


def test_json_missing_and_null_fields_are_null_and_strings_are_read_as_input_text() -> None:
    payloads = [
        b'{"id": 1}',
        b'{"id": null, "name": null}',
        b'{"id": "42", "ok": "t", "price": "0.125", "ratio": "1e3", "at": "2026-11-28T10:00:00"}',
        b'{"ok": "f", "at_tz": "2026-11-28 10:00:00"}',
    ]
    decoded = decoder().decode(payloads)
    assert decoded.errors == []
    got = rows(decoded)
    assert got[0] == {name: (1 if name == "id" else None) for name, _ in COLUMNS}
    assert all(value is None for value in got[1].values())
    # PostgreSQL rounds half away from zero to the column's scale.
    assert (got[2]["id"], got[2]["ok"], got[2]["price"], got[2]["ratio"]) == (42, True, decimal.Decimal("0.13"), 1000.0)
    assert got[2]["at"] == dt.datetime(2026, 11, 28, 10, 0)
    assert (got[3]["ok"], got[3]["at_tz"]) == (False, dt.datetime(2026, 11, 28, 10, 0, tzinfo=UTC))


def test_json_numerics_are_exact() -> None:
    columns = [("amount", "numeric(38,10)"), ("plain", "numeric")]
    decoded = decoder(columns=columns).decode(
        [b'{"amount": 1234567890123456789012345678.0123456789, "plain": 0.1}', b'{"amount": 0.3000000000000000001}']
    )
    assert decoded.errors == []
    assert rows(decoded)[0] == {
        "amount": decimal.Decimal("1234567890123456789012345678.0123456789"),
        "plain": decimal.Decimal("0.1000000000"),
    }
    assert rows(decoded)[1]["amount"] == decimal.Decimal("0.3000000000")


def test_json_field_names_match_the_declared_spelling_or_its_lower_case() -> None:
    columns = [("UserId", "int"), ("city", "varchar")]
    decoded = decoder(columns=columns).decode(
        [b'{"UserId": 1, "city": "x"}', b'{"userid": 2, "City": "ignored"}', b'{"UserId": 3, "userid": 4}']
    )
    assert rows(decoded) == [
        {"UserId": 1, "city": "x"},
        {"UserId": 2, "city": None},
        {"UserId": 3, "city": None},  # the exact spelling wins
    ]


def test_json_bad_records_are_reported_with_their_index_and_reason() -> None:
    payloads: list[bytes | None] = [
        b'{"id": 1, "name": "fine"}',
        b'{"id": "abc"}',
        None,
        b"[1, 2]",
        b'{"name": {"nested": true}}',
        b"",
        b"null",
        b"not json",
        b'{"at": "yesterday"}',
        b'{"id": 1.5}',
        b'{"ok": 3}',
        b'{"id": 2, "name": "also fine"}',
    ]
    decoded = decoder().decode(payloads)
    assert decoded.kept.tolist() == [0, 11]
    assert [row["name"] for row in rows(decoded)] == ["fine", "also fine"]
    reasons = dict(decoded.errors)
    assert sorted(reasons) == list(range(1, 11))
    assert reasons[1] == 'column "id": invalid input syntax for type bigint: "abc"'
    assert reasons[2] == "empty record"
    assert reasons[3] == "not a JSON object (found an array)"
    assert reasons[4] == 'column "name": expected a string, found an object'
    assert reasons[5].startswith("not valid JSON")
    assert reasons[6] == "not a JSON object (found null)"
    assert reasons[7].startswith("not valid JSON")
    assert reasons[8] == 'column "at": invalid input syntax for type timestamp: "yesterday"'
    assert reasons[9] == 'column "id": invalid input syntax for type bigint: "1.5"'
    assert 'column "ok"' in reasons[10]


def test_json_a_few_bad_records_among_many_are_found_and_the_rest_kept() -> None:
    bad = {3, 517, 518, 1999}
    payloads = [
        (b'{"id": "x%d"}' % i) if i in bad else json.dumps({"id": i, "at": "2026-11-28 10:00:00"}).encode()
        for i in range(2000)
    ]
    decoded = decoder().decode(payloads)
    assert errors_at(decoded) == sorted(bad)
    assert decoded.kept.tolist() == [i for i in range(2000) if i not in bad]
    assert [row["id"] for row in rows(decoded)] == decoded.kept.tolist()


def test_json_bad_values_of_string_columns_are_isolated_too() -> None:
    payloads = [
        json.dumps({"id": i, "at": "bad" if i % 100 == 7 else "2026-11-28 10:00:00"}).encode() for i in range(500)
    ]
    decoded = decoder().decode(payloads)
    assert errors_at(decoded) == [i for i in range(500) if i % 100 == 7]
    assert decoded.batch.num_rows == 495


def test_json_payloads_over_several_lines_and_jsonb_columns() -> None:
    pretty = json.dumps({"id": 1, "name": "x"}, indent=2).encode()
    assert b"\n" in pretty
    decoded = decoder().decode([pretty, b'{"id": 2}'])
    assert [row["id"] for row in rows(decoded)] == [1, 2]
    columns = [("id", "int"), ("doc", "jsonb")]
    decoded = decoder(columns=columns).decode([b'{"id": 1, "doc": {"a": [1, 2.5]}}', b'{"id": 2}', b"{]"])
    assert [(row["id"], row["doc"] and json.loads(row["doc"])) for row in rows(decoded)] == [
        (1, {"a": [1, 2.5]}),
        (2, None),
    ]
    assert errors_at(decoded) == [2]


def test_a_batch_decodes_as_its_records_do_one_by_one() -> None:
    payloads: list[bytes | None] = [
        b'{"id": 1, "price": 1.005, "ok": true}',
        b'{"id": "2", "ok": "yes"}',
        b'{"id": 3, "at_tz": "2026-01-01 00:00:00-05"}',
        b'{"id": 4, "name": 5}',
        b'{"id": 5} {"id": 6}',
        b" ",
        b'{"id": 7, "ratio": "-1.5e2"}',
        None,
        b'{"id": 99999999999999999999}',
    ]
    whole = decoder().decode(payloads)
    one_by_one_rows = []
    one_by_one_errors = []
    for index, payload in enumerate(payloads):
        alone = decoder().decode([payload])
        one_by_one_rows += rows(alone)
        one_by_one_errors += [(index, reason) for _, reason in alone.errors]
    assert rows(whole) == one_by_one_rows
    assert whole.errors == one_by_one_errors


def test_csv_fields_in_column_order_empty_unquoted_is_null() -> None:
    columns = [("id", "int"), ("name", "varchar"), ("at", "timestamptz"), ("span", "interval")]
    decoded = decoder("CSV", columns, **{"csv.delimiter": ";"}).decode(
        [
            b"1;ada;2026-11-28 10:00:00+01;1 day 02:00:00",
            b'2;"";;',
            b'3;"semi;colon";2026-11-28T10:00:00.5;',
            b'4;"two\nlines";;',
        ]
    )
    assert decoded.errors == []
    got = rows(decoded)
    assert got[0]["at"] == dt.datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    assert got[0]["span"] is not None
    assert (got[1]["name"], got[1]["at"], got[1]["span"]) == ("", None, None)
    assert got[2]["name"] == "semi;colon"
    assert got[2]["at"] == dt.datetime(2026, 11, 28, 10, 0, 0, 500000, tzinfo=UTC)
    assert got[3]["name"] == "two\nlines"


def test_csv_bad_lines_are_reported() -> None:
    columns = [("id", "int"), ("flag", "boolean"), ("price", "numeric(6,2)")]
    payloads: list[bytes | None] = [
        b"1,t,1.50",
        b"2,f",
        b"3,maybe,1",
        b"4,1,2,3",
        b"",
        None,
        b"x,0,1",
        b'5,"unterminated,1',
        b"6,0,99999",
        b"7,false,",
    ]
    decoded = decoder("CSV", columns).decode(payloads)
    assert decoded.kept.tolist() == [0, 9]
    assert rows(decoded) == [
        {"id": 1, "flag": True, "price": decimal.Decimal("1.50")},
        {"id": 7, "flag": False, "price": None},
    ]
    reasons = dict(decoded.errors)
    assert reasons[1] == "expected 3 fields, found 2"
    assert reasons[2] == 'column "flag": invalid input syntax for type boolean: "maybe"'
    assert reasons[3] == "expected 3 fields, found 4"
    assert reasons[4] == "expected 3 fields, found 1"
    assert reasons[5] == "empty record"
    assert reasons[6] == 'column "id": invalid input syntax for type integer: "x"'
    assert 7 in reasons
    assert reasons[8].startswith('column "price": numeric field overflow')


def test_csv_of_one_column_reads_an_empty_line_as_null() -> None:
    decoded = decoder("CSV", [("v", "int")]).decode([b"1", b"", b"3"])
    assert [row["v"] for row in rows(decoded)] == [1, None, 3]


def test_bad_options_and_types_fail_at_construction() -> None:
    with pytest.raises(FeatureNotSupported, match="ENCODE AVRO"):
        decoder("AVRO")
    with pytest.raises(FeatureNotSupported, match="array"):
        decoder(columns=[("tags", "int[]")])
    with pytest.raises(InvalidParameterValue, match=r"csv\.delimiter"):
        decoder("CSV", **{"csv.delimiter": ";;"})
    with pytest.raises(InvalidParameterValue, match=r"csv\.header"):
        decoder("CSV", **{"csv.header": "yes"})
    with pytest.raises(InvalidParameterValue, match="ENCODE CSV only"):
        decoder("JSON", **{"csv.delimiter": ";"})
    with pytest.raises(InvalidParameterValue, match=r"csv\.quote"):
        decoder("CSV", **{"csv.quote": "'"})
    assert decoder("csv", **{"csv.header": "TRUE"}).header is True
    assert decoder("CSV", **{"csv.delimiter": "\\t"}).delimiter == "\t"


def test_an_empty_batch_decodes_to_no_rows() -> None:
    decoded = decoder().decode([])
    assert decoded.batch.num_rows == 0 and decoded.kept.tolist() == [] and decoded.errors == []
    assert decoded.batch.schema.names == [name for name, _ in COLUMNS]


def test_bytes_that_are_not_utf8_read_alike_in_a_block_and_alone() -> None:
    payload = b'{"id": 1, "name": "caf\xe9"}'
    whole = decoder().decode([payload, b'{"id": 2}'])
    alone = decoder().decode([payload, b'{"id": "x"}'])  # the block fails: decoded one by one
    assert rows(whole)[0]["name"] == rows(alone)[0]["name"] == "caf\ufffd"
    csv = decoder("CSV", [("id", "int"), ("name", "varchar")]).decode([b"1,caf\xe9", b"2,ok"])
    assert rows(csv) == [{"id": 1, "name": "caf\ufffd"}, {"id": 2, "name": "ok"}]
