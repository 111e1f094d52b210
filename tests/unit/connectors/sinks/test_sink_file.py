"""The file and blackhole sink targets, and make_sink_target's dispatch."""

from __future__ import annotations

import csv
import datetime as dt
import decimal
import io
import json
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sink_helpers import make_changes, make_spec

from tidegate.common.chunk import Op
from tidegate.common.types import INTEGER, INTERVAL, NUMERIC, TIMESTAMPTZ, VARCHAR, SqlType, array_of
from tidegate.connectors.sinks import (
    BlackholeSinkTarget,
    FileSinkTarget,
    check_sink_options,
    make_sink_target,
)
from tidegate.errors import FeatureNotSupported, InvalidParameterValue

KV = [("k", INTEGER), ("v", VARCHAR)]
WIDE = [
    ("k", INTEGER),
    ("v", VARCHAR),
    ("amount", NUMERIC),
    ("at", TIMESTAMPTZ),
    ("wait", INTERVAL),
    ("tags", array_of(VARCHAR)),
]
WIDE_ROWS = [
    (
        1,
        'a, "b"',
        decimal.Decimal("1.25"),
        dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC),
        pa.MonthDayNano([1, 2, 0]),
        ["x", None],
    ),
    (2, None, None, None, None, None),
    (3, "", decimal.Decimal("-0.0000000001"), None, None, []),
]


def _target(directory: Path, encode: str, columns: list[tuple[str, SqlType]] = KV) -> FileSinkTarget:
    options = {"connector": "file", "path": str(directory)}
    target = make_sink_target(make_spec(columns, options=options, format="PLAIN", encode=encode))
    assert isinstance(target, FileSinkTarget)
    return target


def _inserts(rows: list[tuple[Any, ...]], columns: list[tuple[str, SqlType]] = KV) -> pa.Table:
    return make_changes(columns, [(Op.INSERT, row) for row in rows])


def test_deliver_publishes_one_file_per_epoch_and_the_names_record_progress(tmp_path: Path) -> None:
    directory = tmp_path / "out" / "nested"
    target = _target(directory, "JSON")
    target.open()  # creates the directory
    assert target.last_delivered_epoch() == 0
    target.deliver(2**40 + 5, _inserts([(1, "a")]))
    target.deliver(2**40 + 5, _inserts([(9, "replayed")]))  # skipped
    target.deliver(2**40 + 6, _inserts([]))  # no file, the epoch is remembered
    assert target.last_delivered_epoch() == 2**40 + 6
    target.deliver(2**40 + 7, _inserts([(2, "b")]))
    assert sorted(p.name for p in directory.iterdir()) == [
        f"part-{2**40 + 5:020d}.jsonl",
        f"part-{2**40 + 7:020d}.jsonl",
    ]
    # A restart: a stale temporary file from an interrupted delivery is removed, the epoch read from the names.
    (directory / ".part-99999999999999.jsonl.tmp").write_bytes(b'{"k": 3}')
    again = _target(directory, "JSON")
    again.open()
    assert again.last_delivered_epoch() == 2**40 + 7
    assert not any(p.name.endswith(".tmp") for p in directory.iterdir())
    lines = [json.loads(line) for p in sorted(directory.glob("part-*.jsonl")) for line in p.read_text().splitlines()]
    assert lines == [{"k": 1, "v": "a"}, {"k": 2, "v": "b"}]


def test_write_appends_unchecked_files_numbered_across_restarts(tmp_path: Path) -> None:
    target = _target(tmp_path, "CSV")
    target.open()
    target.write(_inserts([(1, "a")]))
    target.write(_inserts([(2, "b")]))
    again = _target(tmp_path, "CSV")
    again.open()
    again.write(_inserts([(3, "c")]))
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"part-unchecked-{n}.csv" for n in range(3)]
    assert again.last_delivered_epoch() == 0


def test_csv_reads_back_with_header_nulls_and_quoting(tmp_path: Path) -> None:
    target = _target(tmp_path, "CSV", WIDE)
    target.open()
    target.deliver(1, _inserts(WIDE_ROWS, WIDE))
    text = (tmp_path / f"part-{1:020d}.csv").read_text()
    assert text.splitlines()[0] == "k,v,amount,at,wait,tags"
    assert text.splitlines()[2] == "2,,,,,"  # NULL: an empty unquoted field
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[1] == ["1", 'a, "b"', "1.25", "2026-11-28 10:00:00+00", "1 mon 2 days", "{x,NULL}"]
    assert rows[3] == ["3", "", "-0.0000000001", "", "", "{}"]
    assert '3,"",' in text  # the empty string is quoted, unlike NULL


def test_json_lines_read_back(tmp_path: Path) -> None:
    target = _target(tmp_path, "JSON", WIDE)
    target.open()
    target.deliver(1, _inserts(WIDE_ROWS, WIDE))
    lines = (tmp_path / f"part-{1:020d}.jsonl").read_text().splitlines()
    first = json.loads(lines[0], parse_float=decimal.Decimal)
    assert first == {
        "k": 1,
        "v": 'a, "b"',
        "amount": decimal.Decimal("1.25"),
        "at": "2026-11-28 10:00:00+00:00",
        "wait": "1 mon 2 days",
        "tags": ["x", None],
    }
    assert json.loads(lines[1]) == dict.fromkeys(("k", "v", "amount", "at", "wait", "tags")) | {"k": 2}
    assert json.loads(lines[2], parse_float=decimal.Decimal)["amount"] == decimal.Decimal("-0.0000000001")


def test_parquet_reads_back(tmp_path: Path) -> None:
    target = _target(tmp_path, "PARQUET", WIDE)
    target.open()
    target.deliver(1, _inserts(WIDE_ROWS, WIDE))
    table = pq.read_table(tmp_path / f"part-{1:020d}.parquet")
    assert table.column_names == [name for name, _ in WIDE]
    assert table.column("amount").to_pylist() == [row[2] for row in WIDE_ROWS]
    assert table.column("at").to_pylist()[0] == dt.datetime(2026, 11, 28, 10, tzinfo=dt.UTC)
    assert table.column("wait").to_pylist() == ["1 mon 2 days", None, None]  # intervals as text
    assert table.column("tags").to_pylist() == [["x", None], None, []]


def test_file_options_are_checked(tmp_path: Path) -> None:
    def check(**kwargs: Any) -> None:
        kwargs.setdefault("format", "PLAIN")
        kwargs.setdefault("encode", "CSV")
        options = {"connector": "file", "path": str(tmp_path), **kwargs.pop("options", {})}
        check_sink_options(make_spec(KV, options=options, **kwargs))

    check()
    with pytest.raises(FeatureNotSupported, match="a file sink is append-only"):
        check(sink_type="upsert", key=[0])
    with pytest.raises(FeatureNotSupported, match="ENCODE AVRO"):
        check(encode="AVRO")
    with pytest.raises(InvalidParameterValue, match=re.escape("needs FORMAT PLAIN ENCODE CSV|JSON|PARQUET")):
        check(format=None, encode=None)
    with pytest.raises(InvalidParameterValue, match='needs the option "path"'):
        check(options={"path": " "})
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"")
    with pytest.raises(InvalidParameterValue, match="cannot use the directory"):
        _target(blocker / "below", "CSV").open()


def test_blackhole_discards_and_remembers_the_epoch_in_memory() -> None:
    spec = make_spec(KV, options={"connector": "blackhole"})
    check_sink_options(spec)
    target = make_sink_target(spec)
    assert isinstance(target, BlackholeSinkTarget)
    target.open()
    assert target.last_delivered_epoch() == 0
    target.deliver(4, _inserts([(1, "a"), (2, "b")]))
    target.deliver(4, _inserts([(1, "a")]))
    target.write(_inserts([(3, "c")]))
    assert (target.last_delivered_epoch(), target.delivered_rows) == (4, 3)
    target.close()
    with pytest.raises(InvalidParameterValue, match='unknown option "path"'):
        check_sink_options(make_spec(KV, options={"connector": "blackhole", "path": "x"}))
    with pytest.raises(InvalidParameterValue, match="needs the option connector"):
        check_sink_options(make_spec(KV))
