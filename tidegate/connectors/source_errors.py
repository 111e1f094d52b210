"""Malformed source records: counted, and kept where a user can look at them.

A record that cannot be decoded into the source's columns (bad JSON, a CSV line with too few
fields, a value that does not fit its type) never stops a pipeline silently and never kills it.
What happens to it is the source's ``on.error`` option:

- ``record`` (the default): skipped, counted, and kept in the job's error table, which the system
  view ``tidegate_source_errors`` shows (location, the payload's first bytes, the reason);
- ``skip``: skipped and counted only;
- ``fail``: the job fails with the record's error (and is stopped after repeated failures).

The error table is a state table of the reading job: rows are written in the epoch that read the
record and committed with its offsets, so a replay after a crash neither loses nor doubles them.
"""

from __future__ import annotations

from enum import StrEnum

import pyarrow as pa

from tidegate.errors import InvalidParameterValue

# Primary key: the location ("partition 3 offset 1041", "orders/2026-11-28.csv byte 5120"),
# unique per record and the same on every replay.
SOURCE_ERRORS_SCHEMA = pa.schema(
    [
        pa.field("location", pa.string()),
        pa.field("payload", pa.string()),  # the record's first PAYLOAD_SHOWN_BYTES, decoded leniently
        pa.field("error", pa.string()),
    ]
)
PAYLOAD_SHOWN_BYTES = 1024


class ErrorPolicy(StrEnum):
    RECORD = "record"
    SKIP = "skip"
    FAIL = "fail"


def parse_error_policy(options: dict[str, str]) -> ErrorPolicy:
    value = options.get("on.error", ErrorPolicy.RECORD.value).strip().lower()
    for policy in ErrorPolicy:
        if value == policy.value:
            return policy
    raise InvalidParameterValue(f"on.error = '{value}' is not one of 'record', 'skip', 'fail'")


def error_rows(errors: list[tuple[str, bytes | None, str]]) -> pa.RecordBatch:
    """The error table's rows for malformed records given as (location, payload, reason)."""
    rows = [
        {"location": location, "payload": shown_payload(payload), "error": reason}
        for location, payload, reason in errors
    ]
    return pa.RecordBatch.from_pylist(rows, schema=SOURCE_ERRORS_SCHEMA)


def shown_payload(payload: bytes | None) -> str:
    """What the error table keeps of a record's payload."""
    if payload is None:
        return ""
    return payload[:PAYLOAD_SHOWN_BYTES].decode("utf-8", errors="replace")
