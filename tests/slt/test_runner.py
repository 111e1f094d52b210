"""The sqllogictest runner's own rules: parsing, rendering, comparing, --complete (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .runner import Completion, SltParseError, apply_completions, comparable, parse_file, result_lines

SAMPLE = """\
# a comment
statement ok
CREATE TABLE t (x INT)

statement error 42P01|does not exist
SELECT * FROM missing

skipif tidegate
statement ok
SELECT this is skipped

query IT rowsort
SELECT x,
       name FROM t
----
1 one
2 NULL

query I
SELECT 1
----

halt

statement ok
never run
"""


def write(tmp_path: Path, text: str, name: str = "sample.slt") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_records_and_their_lines(tmp_path: Path) -> None:
    records = parse_file(write(tmp_path, SAMPLE))
    kinds = [(r.kind, r.line, r.end_line) for r in records]
    assert kinds == [
        ("statement", 2, 3),
        ("statement", 5, 6),
        ("statement", 9, 10),
        ("query", 12, 17),
        ("query", 19, 21),
        ("halt", 23, 23),
        ("statement", 25, 26),
    ]
    assert records[1].expect_error and records[1].error_pattern == "42P01|does not exist"
    assert records[2].skip
    query = records[3]
    assert query.types == "IT" and query.sort_mode == "rowsort"
    assert query.sql == "SELECT x,\n       name FROM t"
    assert query.expected == ["1 one", "2 NULL"]
    assert records[4].expected == []
    assert query.covers(14) and not query.covers(18)


def test_include_and_parse_errors(tmp_path: Path) -> None:
    write(tmp_path, "statement ok\nSELECT 1\n", "part.slt")
    records = parse_file(write(tmp_path, "include part.slt\n\nquery I\nSELECT 2\n----\n2\n"))
    assert [r.sql for r in records] == ["SELECT 1", "SELECT 2"]
    with pytest.raises(SltParseError, match=r"bad\.slt:1: unknown record type"):
        parse_file(write(tmp_path, "select 1\n", "bad.slt"))
    with pytest.raises(SltParseError, match=r"bad2\.slt:1: statement record without SQL"):
        parse_file(write(tmp_path, "statement ok\n\n", "bad2.slt"))


def test_rendering_and_sorting() -> None:
    rows = [("b", None), ("", "x y"), ("a", "1")]
    assert result_lines(rows, "nosort") == ["b NULL", "(empty) x y", "a 1"]
    assert result_lines(rows, "rowsort") == ["(empty) x y", "a 1", "b NULL"]
    assert result_lines([(2, 1), (3, None)], "valuesort") == ["1", "2", "3", "NULL"]
    assert comparable(["b   1", " a 2 "], "rowsort") == ["a 2", "b 1"]


def test_complete_rewrites_only_the_result_block(tmp_path: Path) -> None:
    path = write(tmp_path, SAMPLE)
    records = parse_file(path)
    apply_completions([Completion(records[3], "IT", ["1 uno", "3 tres"]), Completion(records[4], "I", ["1"])])
    text = path.read_text(encoding="utf-8")
    assert "----\n1 uno\n3 tres\n\nquery I\nSELECT 1\n----\n1\n\nhalt" in text
    assert text.startswith("# a comment\nstatement ok\n")
    reparsed = parse_file(path)
    assert [(r.kind, r.line) for r in reparsed][:5] == [(r.kind, r.line) for r in records][:5]
