"""The system views of connectors: ``tidegate_sinks`` and ``tidegate_source_errors``.

Built at query time from the running jobs, like the other ``tidegate_*`` views (``query.py``):

- ``tidegate_sinks``: per sink, its connector, type and delivery guarantee, the last epoch its
  target records as delivered (exactly_once), the last committed checkpoint the deliverer was
  told about, the rows handed to the target since start, and the error of a failing delivery;
- ``tidegate_source_errors``: the malformed records each job's Kafka and file sources kept
  (``on.error = 'record'``), as committed at the last checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa

from tidegate.meta.catalog import RelationKind

if TYPE_CHECKING:
    from tidegate.meta.database import Database

SINKS_SCHEMA = pa.schema(
    [
        ("sink_name", pa.string()),
        ("connector", pa.string()),
        ("sink_type", pa.string()),
        ("delivery_guarantee", pa.string()),
        ("delivered_epoch", pa.int64()),
        ("committed_epoch", pa.int64()),
        ("delivered_rows", pa.int64()),
        ("last_error", pa.string()),
    ]
)
SOURCE_ERRORS_SCHEMA = pa.schema(
    [
        ("job_name", pa.string()),
        ("source_name", pa.string()),
        ("location", pa.string()),
        ("payload", pa.string()),
        ("error", pa.string()),
    ]
)


def sinks_table(database: Database) -> pa.Table:
    statuses = {s.sink_id: s for s in database.streaming.runtime.sink_status()}
    rows = []
    for relation in database.catalog.relations():
        if relation.kind is not RelationKind.SINK:
            continue
        status = statuses.get(relation.id)
        rows.append(
            {
                "sink_name": relation.name,
                "connector": relation.options.get("connector"),
                "sink_type": relation.options.get("type"),
                "delivery_guarantee": relation.guarantee,
                "delivered_epoch": None if status is None else status.delivered_epoch,
                "committed_epoch": None if status is None else status.committed_epoch,
                "delivered_rows": None if status is None else status.delivered_rows,
                "last_error": None if status is None else status.last_error,
            }
        )
    return pa.Table.from_pylist(rows, schema=SINKS_SCHEMA)


def source_errors_table(database: Database) -> pa.Table:
    epoch = database.committed_epoch()
    parts = []
    for job_id, source_id, table_id in database.streaming.runtime.error_tables():
        job = database.catalog.get_by_id(job_id)
        source = database.catalog.get_by_id(source_id)
        if job is None or not epoch:
            continue
        kept = database.store.snapshot(table_id, epoch)
        if kept.num_rows == 0:
            continue
        count = kept.num_rows
        parts.append(
            pa.table(
                {
                    "job_name": pa.array([job.name] * count, pa.string()),
                    # A table fed by a connector reads it as its own source.
                    "source_name": pa.array([(source or job).name] * count, pa.string()),
                    "location": kept.column("location"),
                    "payload": kept.column("payload"),
                    "error": kept.column("error"),
                }
            )
        )
    if not parts:
        return SOURCE_ERRORS_SCHEMA.empty_table()
    return pa.concat_tables(parts).cast(SOURCE_ERRORS_SCHEMA)
