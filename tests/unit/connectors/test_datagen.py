"""The datagen generator and its options: rows are a pure function of (options, row number), within
the ranges the options give, and bad options fail with a message that names them."""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
import pytest

from tidegate.common.types import SqlType, parse_type_name
from tidegate.connectors.datagen import DatagenOptions, generate_rows
from tidegate.connectors.datagen_options import parse_datagen_options, with_base_times
from tidegate.errors import FeatureNotSupported, InvalidParameterValue

BASE = "2026-01-01T00:00:00+00:00"
COLUMNS = [
    ("id", "bigint"), ("v", "integer"), ("s", "smallint"), ("name", "varchar"), ("t", "timestamp"),
    ("z", "timestamptz"), ("d", "date"), ("r", "real"), ("x", "double precision"), ("n", "numeric(10,2)"),
    ("u", "numeric"), ("b", "boolean"), ("label", "text"),
]  # fmt: skip


def columns(pairs: list[tuple[str, str]] = COLUMNS) -> list[tuple[str, SqlType]]:
    return [(name, parse_type_name(type_text)) for name, type_text in pairs]


def parse(extra: dict[str, str] | None = None, pairs: list[tuple[str, str]] = COLUMNS) -> DatagenOptions:
    """The options of a source of ``pairs`` with ``extra``; random times count back from BASE."""
    bases = {f"fields.{n}.basetime": BASE for n, t in pairs if t in ("timestamp", "timestamptz", "date")}
    options = {"connector": "datagen", "datagen.seed": "1", **bases, **(extra or {})}
    return parse_datagen_options(options, columns(pairs))


def table(options: DatagenOptions, first: int, count: int) -> pa.Table:
    return pa.Table.from_arrays(generate_rows(options, first, count), names=[f.name for f in options.fields])


def test_rows_are_a_pure_function_of_the_row_number_so_a_range_replays_in_any_split() -> None:
    options = parse({"fields.id.kind": "sequence", "fields.id.end": "100000"})
    whole = table(options, 0, 1000)
    assert whole.equals(table(parse({"fields.id.kind": "sequence", "fields.id.end": "100000"}), 0, 1000))
    for split in (1, 37, 999):
        assert pa.concat_tables([table(options, 0, split), table(options, split, 1000 - split)]).equals(whole)
    assert table(options, 500, 10).equals(whole.slice(500, 10))
    # Another seed gives other random values but the same sequence.
    other = table(parse({"datagen.seed": "2", "fields.id.kind": "sequence", "fields.id.end": "100000"}), 0, 1000)
    assert other.column("id").equals(whole.column("id"))
    assert not other.column("v").equals(whole.column("v"))


def test_a_column_depends_on_its_name_and_seed_only() -> None:
    full = table(parse(), 0, 200)
    alone = table(parse(pairs=[("v", "integer")]), 0, 200)
    assert alone.column("v").equals(full.column("v"))
    reseeded = table(parse({"fields.v.seed": "9"}), 0, 200)
    assert not reseeded.column("v").equals(full.column("v"))
    assert reseeded.column("s").equals(full.column("s"))


def test_random_values_stay_within_their_ranges_and_reach_both_ends() -> None:
    options = parse(
        {
            "fields.v.min": "-3", "fields.v.max": "3", "fields.r.min": "1.5", "fields.r.max": "2.5",
            "fields.n.min": "-0.05", "fields.n.max": "0.05", "fields.name.length": "7",
            "fields.t.max_past": "2h 30min", "fields.d.max_past": "3 days", "fields.z.max_past": "00:00:10",
        }
    )  # fmt: skip
    rows = table(options, 0, 5000).to_pydict()
    assert set(rows["v"]) == set(range(-3, 4))
    assert set(rows["s"]) <= set(range(0, 32768)) and len(set(rows["s"])) > 4000  # the default 0 … 32767
    assert all(1.5 <= r < 2.5 for r in rows["r"]) and all(0 <= x < 32767 for x in rows["x"])
    assert {n.as_tuple().exponent for n in rows["n"]} == {-2}
    assert set(rows["n"]) == {decimal.Decimal(k).scaleb(-2) for k in range(-5, 6)}
    assert {len(s) for s in rows["name"]} == {7} and all(s.isalnum() and s.isascii() for s in rows["name"])
    assert len(set(rows["name"])) == 5000
    base = dt.datetime(2026, 1, 1)
    assert all(base - dt.timedelta(hours=2, minutes=30) <= t <= base for t in rows["t"])
    assert max(rows["t"]) > base - dt.timedelta(minutes=5) and min(rows["t"]) < base - dt.timedelta(hours=2, minutes=25)
    assert all(base - dt.timedelta(seconds=10) <= z.replace(tzinfo=None) <= base for z in rows["z"])
    assert set(rows["d"]) == {dt.date(2026, 1, 1) - dt.timedelta(days=k) for k in range(4)}
    assert set(rows["b"]) == {True, False}
    assert 2000 < sum(rows["b"]) < 3000


def test_full_width_integer_ranges_do_not_overflow() -> None:
    low, high = -(1 << 63), (1 << 63) - 1
    options = parse({"fields.id.min": str(low), "fields.id.max": str(high)}, [("id", "bigint")])
    values = table(options, 0, 2000).column("id").to_pylist()
    assert min(values) < -(1 << 60) and max(values) > 1 << 60
    narrow = parse({"fields.id.min": str(high - 1), "fields.id.max": str(high)}, [("id", "bigint")])
    assert set(table(narrow, 0, 100).column("id").to_pylist()) == {high - 1, high}


def test_sequences_count_from_start_and_their_end_bounds_the_source() -> None:
    options = parse(
        {"fields.id.kind": "sequence", "fields.id.start": "10", "fields.id.end": "19",
         "fields.n.kind": "sequence", "fields.n.start": "1.25", "fields.n.end": "100",
         "fields.label.kind": "sequence", "fields.label.start": "7", "fields.label.end": "1000",
         "fields.x.kind": "sequence", "fields.x.start": "0.5", "fields.x.end": "50"}
    )  # fmt: skip
    assert options.row_count == 10  # the smallest sequence: 10 … 19
    rows = table(options, 3, 2).to_pydict()
    assert rows["id"] == [13, 14]
    assert rows["n"] == [decimal.Decimal("4.25"), decimal.Decimal("5.25")]
    assert rows["label"] == ["10", "11"]
    assert rows["x"] == [3.5, 4.5]
    assert parse({"datagen.rows.num": "4", "fields.id.kind": "sequence"}).row_count == 4
    assert parse({"fields.id.kind": "sequence"}).row_count == 32768  # RisingWave's default end, 32767
    assert parse().row_count is None


def test_relative_times_move_with_the_rows_due_time() -> None:
    options = parse(
        {"datagen.rows.per.second": "4", "fields.t.max_past": "0s", "fields.t.max_past_mode": "relative"},
        [("t", "timestamp")],
    )
    times = table(options, 0, 9).column("t").to_pylist()
    assert times == [dt.datetime(2026, 1, 1) + dt.timedelta(seconds=n / 4) for n in range(9)]


def test_the_base_time_is_fixed_when_the_source_is_created() -> None:
    declared = columns([("t", "timestamptz"), ("v", "int")])
    fixed = with_base_times({"connector": "datagen"}, declared, 1_764_000_000_123)
    assert fixed["fields.t.basetime"] == "2025-11-24T16:00:00.123000+00:00"
    assert "fields.v.basetime" not in fixed
    kept = with_base_times({"connector": "datagen", "fields.t.basetime": BASE}, declared, 0)
    assert kept["fields.t.basetime"] == BASE


@pytest.mark.parametrize(
    ("extra", "pairs", "message"),
    [
        ({"datagen.rows.per.second": "0"}, None, r"datagen\.rows\.per\.second"),
        ({"datagen.nosuch": "1"}, None, r'unknown option "datagen\.nosuch"'),
        ({"fields.nosuch.kind": "random"}, None, "names no column"),
        ({"fields.v.kind": "normal"}, None, r"fields\.v\.kind.*random or sequence"),
        ({"fields.t.kind": "sequence"}, None, r"fields\.t\.kind.*generated by random"),
        ({"fields.v.min": "5", "fields.v.max": "4"}, None, r"fields\.v\.min.*above"),
        ({"fields.s.max": "40000"}, None, r"fields\.s\.max.*smallint"),
        ({"fields.v.max": "ten"}, None, r"fields\.v\.max"),
        ({"fields.v.length": "3"}, None, r"fields\.v\.length.*does not apply"),
        ({"fields.id.kind": "sequence", "fields.id.min": "3"}, None, r"fields\.id\.min.*does not apply"),
        ({"fields.name.length": "11"}, [("name", "varchar(10)")], "longer than character varying"),
        ({"fields.t.max_past": "1 month"}, None, r"fields\.t\.max_past.*no months"),
        ({"fields.t.max_past_mode": "sometimes"}, None, "absolute or relative"),
        ({"fields.t.basetime": "yesterday"}, None, r"fields\.t\.basetime"),
        ({"fields.n.max": "1e9"}, None, r"does not fit numeric\(10,2\)"),
        ({"fields.r.max": "inf"}, None, "finite"),
        ({"datagen.max.chunk.size": "0"}, None, r"datagen\.max\.chunk\.size"),
    ],
)
def test_bad_options_fail_with_22023_naming_the_option(
    extra: dict[str, str], pairs: list[tuple[str, str]] | None, message: str
) -> None:
    with pytest.raises(InvalidParameterValue, match=message):
        parse(extra, pairs or COLUMNS)


def test_a_column_of_a_type_datagen_cannot_generate_is_not_supported() -> None:
    with pytest.raises(FeatureNotSupported, match='"payload" of type bytea'):
        parse(pairs=[("id", "bigint"), ("payload", "bytea")])
