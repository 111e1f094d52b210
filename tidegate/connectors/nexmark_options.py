"""The options of a nexmark source (``CREATE SOURCE … WITH (connector = 'nexmark', …)``).

Place in the data flow: DDL binding validates a source's options here (so a
bad option fails CREATE SOURCE, not a running job), and the stream builder
turns the stored options into the ``NexmarkSource`` operator's settings.

Option names follow RisingWave: ``nexmark.table.type``, ``nexmark.event.num``,
``nexmark.max.chunk.size``, ``nexmark.events.per.second``; every
``NexmarkConfig`` field is ``nexmark.`` plus its name with dots for
underscores (``nexmark.seed``, ``nexmark.bid.proportion``, …). See
docs/design/20261127_nexmark_source.md.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from tidegate.common.types import SqlType, from_arrow
from tidegate.connectors.nexmark import AUCTION_SCHEMA, BID_SCHEMA, PERSON_SCHEMA, EventKind, NexmarkConfig
from tidegate.errors import FeatureNotSupported, InvalidParameterValue

CONNECTOR = "nexmark"
TABLE_TYPES: dict[str, tuple[EventKind, pa.Schema]] = {
    "person": (EventKind.PERSON, PERSON_SCHEMA),
    "auction": (EventKind.AUCTION, AUCTION_SCHEMA),
    "bid": (EventKind.BID, BID_SCHEMA),
}
MAX_CHUNK_SIZE_DEFAULT = 65536
MAX_CHUNK_SIZE_MAX = 1 << 20
_CONFIG_OPTIONS = {
    "nexmark." + f.name.replace("_", "."): f.name
    for f in dataclasses.fields(NexmarkConfig)
    # The stream's first event number and the out-of-order group are fixed by the source.
    if f.name not in ("out_of_order_group_size",)
}
_SOURCE_OPTIONS = ("connector", "nexmark.table.type", "nexmark.event.num", "nexmark.max.chunk.size",
                   "nexmark.events.per.second")  # fmt: skip


@dataclasses.dataclass(frozen=True)
class NexmarkSourceOptions:
    kind: EventKind
    config: NexmarkConfig
    # Events of the combined stream to generate in all; None: unbounded.
    event_count: int | None
    # Events generated per chunk (a chunk holds only the rows of ``kind`` among them).
    chunk_events_max: int
    # None: as fast as the source can generate.
    events_per_second: int | None


def parse_nexmark_options(options: dict[str, str]) -> NexmarkSourceOptions:
    """Validate a source's options; raises InvalidParameterValue / FeatureNotSupported for bad ones."""
    connector = options.get("connector")
    if connector is None:
        raise InvalidParameterValue("a source needs the option connector (e.g. connector = 'nexmark')")
    if connector.lower() != CONNECTOR:
        raise FeatureNotSupported(
            f'connector "{connector}" is not supported; the source connectors are nexmark and datagen'
        )
    for key in options:
        if key not in _SOURCE_OPTIONS and key not in _CONFIG_OPTIONS:
            raise InvalidParameterValue(
                f'unknown option "{key}" for a nexmark source',
                hint="Options are nexmark.table.type, nexmark.event.num, nexmark.max.chunk.size, "
                "nexmark.events.per.second and the generator settings (e.g. nexmark.seed).",
            )
    table_type = options.get("nexmark.table.type")
    if table_type is None or table_type.lower() not in TABLE_TYPES:
        raise InvalidParameterValue(
            f"nexmark.table.type must be one of person, auction or bid, got {table_type!r}"
            if table_type is not None
            else "a nexmark source needs the option nexmark.table.type (person, auction or bid)"
        )
    kind = TABLE_TYPES[table_type.lower()][0]
    settings: dict[str, int | bool] = {}
    for key, field_name in _CONFIG_OPTIONS.items():
        if key in options:
            settings[field_name] = (
                _boolean(key, options[key]) if field_name == "flink_bidder_quirk" else _integer(key, options[key], 0)
            )
    try:
        config = NexmarkConfig(**settings)  # type: ignore[arg-type]
    except ValueError as error:
        raise InvalidParameterValue(f"invalid nexmark option: {error}") from error
    event_count = (
        _integer("nexmark.event.num", options["nexmark.event.num"], 0) if "nexmark.event.num" in options else None
    )
    chunk = options.get("nexmark.max.chunk.size")
    chunk_events_max = (
        _integer("nexmark.max.chunk.size", chunk, 1, MAX_CHUNK_SIZE_MAX)
        if chunk is not None
        else MAX_CHUNK_SIZE_DEFAULT
    )
    rate = options.get("nexmark.events.per.second")
    events_per_second = _integer("nexmark.events.per.second", rate, 1) if rate is not None else None
    return NexmarkSourceOptions(kind, config, event_count, chunk_events_max, events_per_second)


def source_schema(options: NexmarkSourceOptions) -> pa.Schema:
    """The columns a source of this table type has (tidegate's types: timestamps in microseconds)."""
    return pa.schema([pa.field(f.name, from_arrow(f.type).arrow) for f in _kind_schema(options.kind)])


def source_columns(options: NexmarkSourceOptions) -> list[tuple[str, SqlType]]:
    return [(f.name, from_arrow(f.type)) for f in _kind_schema(options.kind)]


def _kind_schema(kind: EventKind) -> pa.Schema:
    return next(schema for k, schema in TABLE_TYPES.values() if k is kind)


def _integer(key: str, value: str, low: int, high: int = 1 << 62) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise InvalidParameterValue(f'invalid value for option "{key}": "{value}" (an integer from {low} to {high})')
    return number


def _boolean(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise InvalidParameterValue(f'invalid value for option "{key}": "{value}" (true or false)')
    return lowered == "true"
