"""The options of a file source (``CREATE SOURCE s (…) WITH (connector = 'file', path = '/dir', …)``).

Place in the data flow: DDL binding validates a source's options here (``parse_file_source_options``,
and ``check_file_source`` for the directory itself, so a bad option or a missing directory fails
CREATE SOURCE, not a running job); the stream builder turns the stored options into the
``FileSource`` operator's settings (``stream/operators/file_source.py``).

Options: ``path`` (required: the directory), ``match.pattern`` (a glob on file names, default
``*``), ``poll.interval.ms`` (default 1000), ``on.error`` (``record`` | ``skip`` | ``fail``, see
``source_errors``), ``csv.header`` and ``csv.delimiter`` (for ``ENCODE CSV``; the record decoder,
``connectors/record_decode.py``, reads and checks them from the WITH options itself), and
``max.records.per.chunk`` (default 10000). See docs/design/20261128_file_source.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tidegate.connectors.source_errors import ErrorPolicy, parse_error_policy
from tidegate.errors import InvalidParameterValue

CONNECTOR = "file"
MATCH_PATTERN_DEFAULT = "*"
POLL_INTERVAL_MS_DEFAULT = 1000
POLL_INTERVAL_MS_MIN = 10
POLL_INTERVAL_MS_MAX = 3_600_000
RECORDS_PER_CHUNK_DEFAULT = 10_000
RECORDS_PER_CHUNK_MAX = 1 << 20
# Consumed by DDL binding (the connector) and by FORMAT … ENCODE …, not by the file source.
_CONSUMED_ELSEWHERE = ("connector", "format", "encode")
_ACCEPTED = ("path", "match.pattern", "poll.interval.ms", "on.error", "csv.header", "csv.delimiter",
             "max.records.per.chunk")  # fmt: skip
_BOOLEANS = {"true": True, "false": False}


@dataclass(frozen=True)
class FileSourceOptions:
    path: str  # the directory whose files are read (files directly in it, not in subdirectories)
    match_pattern: str  # a glob on file names; hidden files and ``*.tmp`` never match
    poll_interval_ms: int  # how long to wait before looking again when nothing was new
    on_error: ErrorPolicy
    csv_header: bool  # whether each CSV file's first line names the columns (and is skipped)
    records_per_chunk_max: int


def parse_file_source_options(options: dict[str, str]) -> FileSourceOptions:
    """Validate a file source's options; raises InvalidParameterValue naming the bad one."""
    for key in options:
        if key not in _ACCEPTED and key not in _CONSUMED_ELSEWHERE:
            raise InvalidParameterValue(
                f'unknown option "{key}" for a file source',
                hint=f"The options of a file source are {', '.join(_ACCEPTED)}.",
            )
    path = options.get("path", "").strip()
    if not path:
        raise InvalidParameterValue("a file source needs the option path (the directory to read)")
    pattern = options.get("match.pattern", MATCH_PATTERN_DEFAULT).strip()
    if not pattern or "/" in pattern:
        raise InvalidParameterValue(f"match.pattern = '{pattern}' must be a non-empty glob on file names (no '/')")
    return FileSourceOptions(
        path=path,
        match_pattern=pattern,
        poll_interval_ms=_integer(
            options, "poll.interval.ms", POLL_INTERVAL_MS_DEFAULT, POLL_INTERVAL_MS_MIN, POLL_INTERVAL_MS_MAX
        ),
        on_error=parse_error_policy(options),
        csv_header=_boolean(options, "csv.header", False),
        records_per_chunk_max=_integer(
            options, "max.records.per.chunk", RECORDS_PER_CHUNK_DEFAULT, 1, RECORDS_PER_CHUNK_MAX
        ),
    )


def check_file_source(options: dict[str, str] | FileSourceOptions) -> None:
    """CREATE SOURCE: the options are valid and ``path`` is a directory this process can list and read
    (given the WITH options, or the ones ``parse_file_source_options`` made of them)."""
    parsed = options if isinstance(options, FileSourceOptions) else parse_file_source_options(options)
    path = parsed.path
    if not os.path.isdir(path):
        raise InvalidParameterValue(f"path = '{path}' is not an existing directory")
    if not os.access(path, os.R_OK | os.X_OK):
        raise InvalidParameterValue(f"path = '{path}' is a directory tidegate may not read (permission denied)")


def _integer(options: dict[str, str], key: str, default: int, low: int, high: int) -> int:
    text = options.get(key)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        raise InvalidParameterValue(f"{key} = '{text}' is not an integer") from None
    if not low <= value <= high:
        raise InvalidParameterValue(f"{key} = {value} is out of range [{low}, {high}]")
    return value


def _boolean(options: dict[str, str], key: str, default: bool) -> bool:
    text = options.get(key)
    if text is None:
        return default
    value = _BOOLEANS.get(text.strip().lower())
    if value is None:
        raise InvalidParameterValue(f"{key} = '{text}' is not 'true' or 'false'")
    return value
