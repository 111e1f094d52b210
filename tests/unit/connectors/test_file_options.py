"""File source options: defaults, bounds, unknown keys, and the directory check of CREATE SOURCE."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tidegate.connectors.file_options import FileSourceOptions, check_file_source, parse_file_source_options
from tidegate.connectors.source_errors import ErrorPolicy
from tidegate.errors import InvalidParameterValue


def given(**extra: str) -> dict[str, str]:
    options = {"connector": "file", "format": "plain", "encode": "csv", "path": "/data/in"}
    options.update({key.replace("_", "."): value for key, value in extra.items()})
    return options


def test_defaults() -> None:
    assert parse_file_source_options(given()) == FileSourceOptions(
        path="/data/in",
        match_pattern="*",
        poll_interval_ms=1000,
        on_error=ErrorPolicy.RECORD,
        csv_header=False,
        records_per_chunk_max=10_000,
    )


def test_every_option() -> None:
    options = parse_file_source_options(
        given(match_pattern="*.csv", poll_interval_ms="10", on_error="FAIL", csv_header="True", csv_delimiter=";")
        | {"max.records.per.chunk": "5"}
    )
    assert (options.match_pattern, options.poll_interval_ms, options.on_error) == ("*.csv", 10, ErrorPolicy.FAIL)
    assert (options.csv_header, options.records_per_chunk_max) == (True, 5)


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("poll.interval.ms", "9", "poll.interval.ms = 9 is out of range [10,"),
        ("poll.interval.ms", "soon", "poll.interval.ms = 'soon' is not an integer"),
        ("max.records.per.chunk", "0", "max.records.per.chunk = 0 is out of range"),
        ("csv.header", "yes", "csv.header = 'yes' is not 'true' or 'false'"),
        ("on.error", "ignore", "on.error = 'ignore' is not one of"),
        ("match.pattern", "sub/*.csv", "match.pattern = 'sub/*.csv'"),
        ("path", " ", "a file source needs the option path"),
    ],
)
def test_bad_values_name_the_option(key: str, value: str, message: str) -> None:
    with pytest.raises(InvalidParameterValue, match=re.escape(message)):
        parse_file_source_options({**given(), key: value})


def test_path_is_required() -> None:
    options = given()
    del options["path"]
    with pytest.raises(InvalidParameterValue, match="needs the option path"):
        parse_file_source_options(options)


def test_an_unknown_option_is_refused_and_the_accepted_ones_are_listed() -> None:
    with pytest.raises(InvalidParameterValue, match=re.escape('unknown option "csv.quote"')) as raised:
        parse_file_source_options({**given(), "csv.quote": "'"})
    assert raised.value.hint is not None
    assert "path" in raised.value.hint and "max.records.per.chunk" in raised.value.hint


def test_check_wants_an_existing_readable_directory(tmp_path: Path) -> None:
    check_file_source(given(path=str(tmp_path)))
    check_file_source(parse_file_source_options(given(path=str(tmp_path))))
    with pytest.raises(InvalidParameterValue, match="is not an existing directory"):
        check_file_source(given(path=str(tmp_path / "missing")))
    (tmp_path / "a.csv").write_text("1\n")
    with pytest.raises(InvalidParameterValue, match="is not an existing directory"):
        check_file_source(given(path=str(tmp_path / "a.csv")))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every directory")
def test_check_refuses_an_unreadable_directory(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.raises(InvalidParameterValue, match="may not read"):
            check_file_source(given(path=str(locked)))
    finally:
        locked.chmod(0o700)
