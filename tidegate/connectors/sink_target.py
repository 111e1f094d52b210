"""SinkTarget: the external system a sink delivers to (PostgreSQL, Kafka, files, nowhere).

Place in the data flow (DESIGN §7): a sink job writes its output into a log store committed with
each checkpoint; after checkpoint N commits, the sink's deliverer reads the committed changes of
the epochs not yet delivered and hands them to ``deliver`` in one call, which applies them **and**
records "delivered up to N" in the target in one transaction. On start and after a recovery the
deliverer asks ``last_delivered_epoch`` and delivers only what follows, so every change reaches
the target exactly once. Under at_least_once and at_most_once the sink calls ``write`` instead, as
chunks arrive, with no record of progress.

Every method runs on the sink's own delivery thread, never on the stream loop, one call at a time.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import pyarrow as pa

from tidegate.common.types import SqlType

OP_FIELD = "__op"  # the first column of every changes table: tidegate.common.chunk.Op values (int8)


@dataclass(frozen=True)
class SinkSpec:
    """What CREATE SINK declared, bound: the output columns, the key, the type and the options."""

    sink_id: int
    name: str
    column_names: list[str]  # the visible output columns, in order (hidden key columns are not delivered)
    column_types: list[SqlType]
    # Indices into column_names of the primary key: required for 'upsert', may be empty for 'append-only'.
    key: list[int]
    sink_type: str  # 'append-only' | 'upsert'
    options: dict[str, str] = field(default_factory=dict)  # WITH (…), keys lower-cased
    format: str | None = None  # FORMAT PLAIN|UPSERT|DEBEZIUM, upper-cased; None when not given
    encode: str | None = None  # ENCODE JSON|CSV|PARQUET, upper-cased; None when not given


class SinkTarget(ABC):
    """One sink's connection to its external system."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec

    @abstractmethod
    def open(self) -> None:
        """Connect and check the target (its table exists with matching columns, its directory is
        writable, …); raise a ``tidegate.errors`` error that says what to fix. Called at CREATE SINK
        (so a mistake fails the statement) and whenever the sink job starts."""

    @abstractmethod
    def last_delivered_epoch(self) -> int:
        """The epoch the target records as delivered last by this sink (0 when none)."""

    @abstractmethod
    def deliver(self, epoch: int, changes: pa.Table) -> None:
        """Apply ``changes`` (``OP_FIELD`` then the output columns, in change order) and record
        ``epoch`` as delivered, atomically: after a crash at any instant the target holds either
        all of it with the record, or none of it without. ``changes`` may be empty (then only the
        record moves). Upsert targets apply the last change per key; append-only targets receive
        inserts only."""

    @abstractmethod
    def write(self, changes: pa.Table) -> None:
        """Apply ``changes`` now, without recording progress (at_least_once and at_most_once)."""

    def close(self) -> None:  # noqa: B027 - most targets hold a connection; the blackhole holds nothing
        """Release connections; safe to call more than once."""
