"""The options of a datagen source (``CREATE SOURCE s (columns) WITH (connector = 'datagen', …)``).

Place in the data flow: DDL binding validates a source's options here against its
declared columns (so a bad option fails CREATE SOURCE, not a running job) and fixes
the base time of random times at creation; the stream builder turns the stored
options into the generator's ``DatagenOptions``.

Option names follow RisingWave's datagen connector: ``datagen.rows.per.second``
(default 10), ``fields.<column>.kind`` (``random`` or ``sequence``), ``start``/``end``
(default 0 and 32767), ``min``/``max`` (default 0 and 32767), ``length`` (default 10),
``seed``, ``max_past`` (default 1 day), ``max_past_mode`` (``absolute`` or ``relative``)
and ``basetime``; plus ``datagen.rows.num`` (a bound, Flink's ``number-of-rows``),
``datagen.seed`` (every column's default seed) and ``datagen.max.chunk.size``. See
docs/design/20261127_datagen_source.md.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re

from tidegate.common.types import SqlType
from tidegate.connectors.datagen import (
    DAY_US,
    FLOAT_KINDS,
    INTEGER_KINDS,
    TEXT_KINDS,
    TIME_KINDS,
    DatagenOptions,
    FieldSpec,
)
from tidegate.errors import FeatureNotSupported, InvalidParameterValue

CONNECTOR = "datagen"
ROWS_PER_SECOND_DEFAULT = 10
CHUNK_ROWS_DEFAULT = 8192
CHUNK_ROWS_MAX = 1 << 20
TEXT_LENGTH_DEFAULT = 10
TEXT_LENGTH_MAX = 10_000
NUMBER_DEFAULTS = (0, 32767)  # RisingWave's: min/start and max/end
MAX_PAST_DEFAULT_US = DAY_US
_SOURCE_OPTIONS = ("connector", "datagen.rows.per.second", "datagen.rows.num", "datagen.seed",
                   "datagen.max.chunk.size")  # fmt: skip
_PARAMETERS: dict[str, dict[str, tuple[str, ...]]] = {
    "random": {
        "number": ("kind", "min", "max", "seed"),
        "boolean": ("kind", "seed"),
        "text": ("kind", "length", "seed"),
        "time": ("kind", "max_past", "max_past_mode", "basetime", "seed"),
    },
    "sequence": {"number": ("kind", "start", "end"), "text": ("kind", "start", "end")},
}
_INTEGER_RANGES = {"smallint": (-(1 << 15), (1 << 15) - 1), "integer": (-(1 << 31), (1 << 31) - 1),
                   "bigint": (-(1 << 63), (1 << 63) - 1)}  # fmt: skip
_INT64_MAX = (1 << 63) - 1
_DURATION_UNITS_US = {
    "us": 1, "usec": 1, "usecs": 1, "microsecond": 1, "microseconds": 1,
    "ms": 1000, "msec": 1000, "msecs": 1000, "millisecond": 1000, "milliseconds": 1000,
    "s": 1_000_000, "sec": 1_000_000, "secs": 1_000_000, "second": 1_000_000, "seconds": 1_000_000,
    "m": 60_000_000, "min": 60_000_000, "mins": 60_000_000, "minute": 60_000_000, "minutes": 60_000_000,
    "h": 3_600_000_000, "hr": 3_600_000_000, "hrs": 3_600_000_000, "hour": 3_600_000_000, "hours": 3_600_000_000,
    "d": DAY_US, "day": DAY_US, "days": DAY_US, "w": 7 * DAY_US, "week": 7 * DAY_US, "weeks": 7 * DAY_US,
}  # fmt: skip
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_UNIX_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def parse_datagen_options(options: dict[str, str], columns: list[tuple[str, SqlType]]) -> DatagenOptions:
    """Validate a datagen source's options for its declared ``columns``; raises InvalidParameterValue
    (22023) for a bad option and FeatureNotSupported (0A000) for a column type it cannot generate.
    Random times need their base time: ``with_base_times`` fixes it at creation."""
    assert options.get("connector", "").strip().lower() == CONNECTOR, options.get("connector")
    by_column: dict[str, dict[str, str]] = {}
    names = {name.lower(): name for name, _ in columns}
    for key, value in options.items():
        if key in _SOURCE_OPTIONS:
            continue
        column, _, parameter = key.removeprefix("fields.").rpartition(".")
        if not key.startswith("fields.") or not column:
            raise InvalidParameterValue(
                f'unknown option "{key}" for a datagen source',
                hint="Options are datagen.rows.per.second, datagen.rows.num, datagen.seed, datagen.max.chunk.size "
                "and fields.<column>.<parameter>.",
            )
        if column not in names:
            raise InvalidParameterValue(f'option "{key}" names no column of the source')
        by_column.setdefault(names[column], {})[parameter] = value
    seed = _integer("datagen.seed", options.get("datagen.seed", "0"), 0, (1 << 64) - 1)
    rate_text = options.get("datagen.rows.per.second", str(ROWS_PER_SECOND_DEFAULT))
    rate = _integer("datagen.rows.per.second", rate_text, 1, 1 << 40)
    fields = tuple(_field(name, sql_type, by_column.get(name, {}), seed) for name, sql_type in columns)
    bounds = [_integer("datagen.rows.num", options["datagen.rows.num"], 0)] if "datagen.rows.num" in options else []
    bounds += [_sequence_rows(f) for f in fields if f.kind == "sequence"]
    chunk = options.get("datagen.max.chunk.size")
    chunk_rows = CHUNK_ROWS_DEFAULT if chunk is None else _integer("datagen.max.chunk.size", chunk, 1, CHUNK_ROWS_MAX)
    return DatagenOptions(fields, rate, min(bounds) if bounds else None, chunk_rows)


def with_base_times(options: dict[str, str], columns: list[tuple[str, SqlType]], now_ms: int) -> dict[str, str]:
    """``options`` with ``fields.<column>.basetime`` set to ``now_ms`` for every random time column that
    has none: its rows must not depend on when they are generated, or a replay would differ."""
    out = dict(options)
    at = (_UNIX_EPOCH + dt.timedelta(milliseconds=now_ms)).isoformat()
    for name, sql_type in columns:
        prefix = f"fields.{name.lower()}."
        if sql_type.kind in TIME_KINDS and options.get(prefix + "kind", "random").lower() == "random":
            out.setdefault(prefix + "basetime", at)
    return out


def _field(name: str, sql_type: SqlType, given: dict[str, str], seed: int) -> FieldSpec:
    group = _type_group(name, sql_type)
    kind = given.get("kind", "random").strip().lower()
    allowed = _PARAMETERS.get(kind, {}).get(group)
    if allowed is None:
        kinds = [k for k, groups in _PARAMETERS.items() if group in groups]
        raise InvalidParameterValue(
            f'invalid value for option "fields.{name}.kind": "{given.get("kind")}" '
            f"(a {sql_type} column is generated by {' or '.join(kinds)})"
        )
    for parameter in given:
        if parameter not in allowed:
            raise InvalidParameterValue(
                f'option "fields.{name}.{parameter}" does not apply to a {kind} {sql_type} column',
                hint=f"Its parameters are {', '.join(allowed)}.",
            )
    field_seed = _integer(f"fields.{name}.seed", given["seed"], 0, (1 << 64) - 1) if "seed" in given else seed
    spec = FieldSpec(name, sql_type, kind, field_seed)
    if group == "number" or (group == "text" and kind == "sequence"):
        low_key, high_key = ("start", "end") if kind == "sequence" else ("min", "max")
        low = _number(name, low_key, given.get(low_key), sql_type, kind)
        high = _number(name, high_key, given.get(high_key), sql_type, kind)
        if low > high:
            raise InvalidParameterValue(
                f'option "fields.{name}.{low_key}" ({given.get(low_key, NUMBER_DEFAULTS[0])}) is above '
                f'"fields.{name}.{high_key}" ({given.get(high_key, NUMBER_DEFAULTS[1])})'
            )
        return FieldSpec(name, sql_type, kind, field_seed, low, high)
    if group == "text":
        # A varchar(n) shorter than the default gets strings of its length.
        default = min(TEXT_LENGTH_DEFAULT, sql_type.length or TEXT_LENGTH_DEFAULT)
        length = _integer(f"fields.{name}.length", given.get("length", str(default)), 1, TEXT_LENGTH_MAX)
        if sql_type.length is not None and length > sql_type.length:
            raise InvalidParameterValue(f'option "fields.{name}.length" ({length}) is longer than {sql_type}')
        return FieldSpec(name, sql_type, kind, field_seed, length=length)
    if group == "time":
        return _time_field(spec, given)
    return spec


def _sequence_rows(spec: FieldSpec) -> int:
    """How many values a sequence has: ``start, start + 1, …`` up to ``end``."""
    if spec.sql_type.kind in FLOAT_KINDS:
        return int((float(spec.high) - float(spec.low)) // 1) + 1
    step = 10**spec.sql_type.arrow.scale if spec.sql_type.kind == "numeric" else 1
    return (int(spec.high) - int(spec.low)) // step + 1


def _type_group(name: str, sql_type: SqlType) -> str:
    kind = sql_type.kind
    if kind in INTEGER_KINDS or kind in FLOAT_KINDS or kind == "numeric":
        return "number"
    if kind in TEXT_KINDS:
        return "text"
    if kind in TIME_KINDS:
        return "time"
    if kind == "boolean":
        return "boolean"
    raise FeatureNotSupported(
        f'datagen cannot generate column "{name}" of type {sql_type}',
        hint="It generates smallint, integer, bigint, real, double precision, numeric, boolean, varchar, "
        "text, date, timestamp and timestamptz columns.",
    )


def _number(name: str, key: str, text: str | None, sql_type: SqlType, kind: str) -> int | float:
    """A bound in the generator's units (see FieldSpec), checked against the column's type."""
    default = NUMBER_DEFAULTS[0] if key in ("min", "start") else NUMBER_DEFAULTS[1]
    option = f"fields.{name}.{key}"
    value = str(default) if text is None else text.strip()
    if sql_type.kind in FLOAT_KINDS:
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number != number or number in (float("inf"), float("-inf")):
            raise InvalidParameterValue(f'invalid value for option "{option}": "{text}" (a finite number)')
        return number
    if sql_type.kind == "numeric":
        return _unscaled(option, value, sql_type, kind)
    low, high = _INTEGER_RANGES.get(sql_type.kind, _INTEGER_RANGES["bigint"])
    return _integer(option, value, low, high, f"an integer that fits {sql_type}")


def _unscaled(option: str, text: str, sql_type: SqlType, kind: str) -> int:
    """A numeric bound as an integer count of the column's smallest step (10**-scale)."""
    arrow = sql_type.arrow
    try:
        value = decimal.Decimal(text)
    except decimal.InvalidOperation:
        value = decimal.Decimal("NaN")
    if not value.is_finite():
        raise InvalidParameterValue(f'invalid value for option "{option}": "{text}" (a number)')
    unscaled = int(value.scaleb(arrow.scale).to_integral_value(decimal.ROUND_HALF_UP))
    # A sequence takes whole steps of 1 from its start: its values are start + n.
    limit = min(10**arrow.precision - 1, _INT64_MAX // (10 if kind == "sequence" else 1))
    if abs(unscaled) > limit:
        raise InvalidParameterValue(
            f'invalid value for option "{option}": "{text}" does not fit {sql_type} '
            f"(datagen generates numerics up to {limit / 10**arrow.scale:.0f})"
        )
    return unscaled


def _time_field(spec: FieldSpec, given: dict[str, str]) -> FieldSpec:
    name = spec.name
    max_past_us = MAX_PAST_DEFAULT_US
    if "max_past" in given:
        max_past_us = _duration_us(f"fields.{name}.max_past", given["max_past"])
    mode = given.get("max_past_mode", "absolute").strip().lower()
    if mode not in ("absolute", "relative"):
        raise InvalidParameterValue(
            f'invalid value for option "fields.{name}.max_past_mode": "{given["max_past_mode"]}" (absolute or relative)'
        )
    text = given.get("basetime")
    if text is None:
        raise InvalidParameterValue(f'a datagen time column needs "fields.{name}.basetime"')
    try:
        base = dt.datetime.fromisoformat(text.strip())
    except ValueError as error:
        raise InvalidParameterValue(
            f'invalid value for option "fields.{name}.basetime": "{text}" (a time like 2026-11-27T16:39:57+01:00)'
        ) from error
    if base.tzinfo is None:
        base = base.replace(tzinfo=dt.UTC)  # sessions run in UTC
    base_us = (base - _UNIX_EPOCH) // dt.timedelta(microseconds=1)
    return FieldSpec(name, spec.sql_type, spec.kind, spec.seed, base_us=base_us, max_past_us=max_past_us,
                     relative=mode == "relative")  # fmt: skip


def _duration_us(option: str, text: str) -> int:
    """``'2h 37min'``, ``'1 day'``, ``'90 seconds'``, ``'00:05:00'``: a fixed length of time in microseconds."""
    cleaned = text.strip().lower()
    clock = re.fullmatch(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)", cleaned)
    if clock is not None:
        hours, minutes, seconds = clock.groups()
        return int(hours) * 3_600_000_000 + int(minutes) * 60_000_000 + round(float(seconds) * 1_000_000)
    parts = _DURATION_PART.findall(cleaned)
    if not parts or _DURATION_PART.sub("", cleaned).strip() or any(u not in _DURATION_UNITS_US for _, u in parts):
        raise InvalidParameterValue(
            f"invalid value for option \"{option}\": \"{text}\" (a duration like '2h 37min' or '1 day'; "
            "no months or years, whose length varies)"
        )
    return sum(round(float(amount) * _DURATION_UNITS_US[unit]) for amount, unit in parts)


def _integer(key: str, value: str, low: int, high: int = 1 << 62, what: str | None = None) -> int:
    try:
        number = int(value.strip())
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        shown = what or f"an integer from {low} to {high}"
        raise InvalidParameterValue(f'invalid value for option "{key}": "{value}" ({shown})')
    return number
