"""Decode PostgreSQL text into Arrow: the data of ``COPY … FROM STDIN``, and source records.

Shared by COPY (the pgwire server) and the Kafka and file sources' decoder
(``tidegate.connectors.record_decode``, which uses ``cast_text`` column by column), so both
read values as PostgreSQL's input functions do.

The pgwire server (``tidegate.server.pgwire``) cuts the client's CopyData
stream into batches that end at a line boundary and calls :func:`decode_copy`
once per batch; the result goes to ``CopyIn.write``.

Decoding is vectorized: pyarrow's CSV reader splits the batch into string
columns (tab-separated lines for ``text``, RFC 4180 quoting for ``csv``), and
each column is cast with ``pyarrow.compute``. Python loops run only on the
values that need them: text-format fields containing a backslash escape,
numbers with more decimals than the column keeps, rare types (time, bytea,
interval, arrays) and the single bad value an error message names. An array
field is PostgreSQL's array text (``{1,2,NULL}``); its elements are cast as a
column of the element type.

Semantics are PostgreSQL's: in ``text`` format ``\\N`` is NULL and backslash
escapes are decoded; in ``csv`` an unquoted empty field is NULL and a quoted
empty field is the empty string; ``HEADER`` skips the first line; a line
holding only ``\\.`` ends the data.
"""

from __future__ import annotations

import datetime as dt
import decimal
import re
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from tidegate.common.array_text import parse_array
from tidegate.common.result import Column
from tidegate.common.types import SqlType
from tidegate.errors import (
    DataError,
    FeatureNotSupported,
    InvalidDatetimeFormat,
    InvalidTextRepresentation,
    NumericValueOutOfRange,
    StringDataRightTruncation,
)

__all__ = ["decode_copy"]

_TRUE_WORDS = ["t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"]
_FALSE_WORDS = ["f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"]
_INTEGER_TEXT = r"^\s*[+-]?[0-9]+\s*$"
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_END_MARKERS = (b"\\.\n", b"\\.\r\n", b"\\.")


def decode_copy(
    data: bytes,
    columns: list[Column],
    *,
    format: str,
    delimiter: str,
    null: str,
    header: bool,
    quote: str,
    escape: str,
    first_line: int = 1,
) -> pa.Table:
    """Decode one batch of COPY data (whole lines) into a table typed as ``columns``.

    ``first_line`` is the 1-based line number of the batch's first line in the
    whole COPY stream; error messages count lines from it. Raises a
    :class:`~tidegate.errors.DataError` subclass naming the line, the column and
    the bad value.
    """
    if format not in ("text", "csv"):
        raise FeatureNotSupported(f'COPY format "{format}" is not supported')
    data = _strip_end_marker(data)
    if not data or not columns:
        return pa.Table.from_arrays([pa.array([], type=c.type.arrow) for c in columns], schema=_schema(columns))
    raw = _read_strings(data, len(columns), format, delimiter, null, header, quote, escape, first_line)
    header_lines = 1 if header else 0
    arrays: list[pa.Array] = []
    for index, column in enumerate(columns):
        values = raw.column(index).combine_chunks()
        if format == "text":
            values = _unescape_column(values)
        context = TextContext(column, first_line + header_lines)
        arrays.append(cast_text(values, column.type, context))
    return pa.Table.from_arrays(arrays, schema=_schema(columns))


def _schema(columns: list[Column]) -> pa.Schema:
    return pa.schema([pa.field(c.name, c.type.arrow) for c in columns])


def _strip_end_marker(data: bytes) -> bytes:
    for marker in _END_MARKERS:
        if data.endswith(marker) and (len(data) == len(marker) or data[-len(marker) - 1 : -len(marker)] == b"\n"):
            return data[: -len(marker)]
    return data


def _read_strings(
    data: bytes,
    column_count: int,
    format: str,
    delimiter: str,
    null: str,
    header: bool,
    quote: str,
    escape: str,
    first_line: int,
) -> pa.Table:
    """Split lines into fields: every column as a nullable string."""
    names = [f"c{i}" for i in range(column_count)]
    if format == "csv":
        parse = pa_csv.ParseOptions(
            delimiter=delimiter,
            quote_char=quote,
            double_quote=escape == quote,
            escape_char=escape if escape != quote else False,
            newlines_in_values=True,
            ignore_empty_lines=False,
        )
    else:
        parse = pa_csv.ParseOptions(
            delimiter=delimiter,
            quote_char=False,
            double_quote=False,
            escape_char=False,
            newlines_in_values=False,
            ignore_empty_lines=False,
        )
    convert = pa_csv.ConvertOptions(
        column_types={name: pa.string() for name in names},
        null_values=[null],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )
    read = pa_csv.ReadOptions(
        column_names=names,
        skip_rows=1 if header else 0,
        block_size=max(1 << 20, min(len(data) + 1, 64 << 20)),
    )
    try:
        return pa_csv.read_csv(pa.py_buffer(data), read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as e:
        raise _shape_error(str(e), data, column_count, delimiter, header, first_line) from e


def _shape_error(
    message: str, data: bytes, column_count: int, delimiter: str, header: bool, first_line: int
) -> DataError:
    """PostgreSQL's message for a line with too few or too many fields."""
    match = re.search(r"Expected (\d+) columns, got (\d+): ?(.*)", message, re.DOTALL)
    if match is None:
        return DataError(f"invalid COPY data: {message}")
    got = int(match.group(2))
    bad_line = match.group(3).split("\n")[0]
    line_number = _find_line(data, bad_line, header, first_line)
    where = f" (line {line_number})" if line_number is not None else ""
    if got < column_count:
        return DataError(f"missing data for column number {got + 1}{where}")
    return DataError(f"extra data after last expected column{where}")


def _find_line(data: bytes, line_text: str, header: bool, first_line: int) -> int | None:
    needle = line_text.encode("utf-8", "replace")
    for number, line in enumerate(data.split(b"\n")):
        if number == 0 and header:
            continue
        if line.rstrip(b"\r") == needle.rstrip(b"\r"):
            return first_line + number
    return None


class TextContext:
    """Where a column's values came from, for error messages."""

    def __init__(self, column: Column, first_row_line: int) -> None:
        self.column = column
        self.first_row_line = first_row_line

    def error(self, cls: type[DataError], message: str, row: int, value: str | None) -> DataError:
        shown = f': "{value}"' if value is not None else ""
        return cls(f"{message} (COPY line {self.first_row_line + row}, column {self.column.name}{shown})")


class _ElementContext(TextContext):
    """The elements of an array column, flattened: an error names the row of the element's array."""

    def __init__(self, outer: TextContext, rows: np.ndarray) -> None:
        super().__init__(outer.column, outer.first_row_line)
        self.rows = rows

    def error(self, cls: type[DataError], message: str, row: int, value: str | None) -> DataError:
        return super().error(cls, message, int(self.rows[row]), value)


def _unescape(text: str) -> str:
    def replace(match: re.Match[str]) -> str:
        token = match.group(1)
        if token[0] == "x" and len(token) > 1:
            return chr(int(token[1:], 16))
        if token[0] in "01234567":
            return chr(int(token, 8) & 0xFF)
        return _SIMPLE_ESCAPES.get(token, token)

    return _ESCAPE.sub(replace, text)


def _unescape_column(values: pa.Array) -> pa.Array:
    """Decode text-format backslash escapes, touching only the values that have one."""
    mask = pc.fill_null(pc.match_substring(values, "\\"), False)
    if not pc.any(mask).as_py():
        return values
    indices = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
    replaced = [_unescape(values[int(i)].as_py()) for i in indices]
    return pc.replace_with_mask(values, mask, pa.array(replaced, type=pa.string()))


def _first_bad(values: pa.Array, good: pa.Array) -> tuple[int, str]:
    """The row and text of the first non-null value whose ``good`` flag is false."""
    bad = pc.and_(pc.is_valid(values), pc.invert(pc.fill_null(good, False)))
    index = int(np.flatnonzero(bad.to_numpy(zero_copy_only=False))[0])
    return index, values[index].as_py()


def cast_text(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    caster = _CASTERS.get(sql_type.kind, _cast_string)
    return caster(values, sql_type, context)


def _cast_string(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    if sql_type.length is not None:
        too_long = pc.greater(pc.utf8_length(values), sql_type.length)
        if pc.any(too_long).as_py():
            row, _ = _first_bad(values, pc.invert(too_long))
            raise context.error(
                StringDataRightTruncation,
                f"value too long for type character varying({sql_type.length})",
                row,
                None,
            )
    return values


def _cast_integer(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    try:
        return pc.cast(values, sql_type.arrow)
    except pa.ArrowInvalid:
        pass
    trimmed = pc.utf8_trim_whitespace(values)
    try:
        return pc.cast(pc.utf8_ltrim(trimmed, "+"), sql_type.arrow)
    except pa.ArrowInvalid:
        pass
    well_formed = pc.match_substring_regex(values, _INTEGER_TEXT)
    if not pc.all(pc.fill_null(well_formed, True)).as_py():
        row, text = _first_bad(values, well_formed)
        raise context.error(
            InvalidTextRepresentation, f'invalid input syntax for type {sql_type.kind}: "{text}"', row, None
        )
    wide = pc.cast(pc.utf8_ltrim(trimmed, "+"), pa.decimal128(38, 0))
    info = np.iinfo(sql_type.arrow.to_pandas_dtype())
    fits = pc.and_(pc.greater_equal(wide, pa.scalar(info.min)), pc.less_equal(wide, pa.scalar(info.max)))
    row, text = _first_bad(values, fits)
    raise context.error(
        NumericValueOutOfRange, f'value "{text.strip()}" is out of range for type {sql_type.kind}', row, None
    )


def _cast_float(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    try:
        return pc.cast(pc.utf8_trim_whitespace(values), sql_type.arrow)
    except pa.ArrowInvalid:
        pass
    result: list[float | None] = []
    for row, text in enumerate(values.to_pylist()):
        if text is None:
            result.append(None)
            continue
        try:
            result.append(float(text.strip()))
        except ValueError:
            raise context.error(
                InvalidTextRepresentation, f'invalid input syntax for type {sql_type.kind}: "{text}"', row, None
            ) from None
    return pa.array(result, type=sql_type.arrow)


def _cast_numeric(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    target = sql_type.arrow
    try:
        return pc.cast(values, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # The slow path rounds to the column's scale the way PostgreSQL does
    # (half away from zero) and parses with Decimal, never through a float.
    quantum = decimal.Decimal(1).scaleb(-target.scale)
    limit = decimal.Decimal(10) ** (target.precision - target.scale)
    result: list[decimal.Decimal | None] = []
    for row, text in enumerate(values.to_pylist()):
        if text is None:
            result.append(None)
            continue
        try:
            number = decimal.Decimal(text.strip())
        except decimal.InvalidOperation:
            number = decimal.Decimal("NaN")
            if text.strip().lower() != "nan":
                raise context.error(
                    InvalidTextRepresentation, f'invalid input syntax for type numeric: "{text}"', row, None
                ) from None
        if not number.is_finite():
            raise context.error(DataError, "NaN and Infinity cannot be stored in a NUMERIC column", row, text)
        rounded = number.quantize(quantum, rounding=decimal.ROUND_HALF_UP, context=decimal.Context(prec=80))
        if abs(rounded) >= limit:
            raise context.error(NumericValueOutOfRange, "numeric field overflow", row, text)
        result.append(rounded)
    return pa.array(result, type=target)


def _cast_boolean(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    words = pc.utf8_lower(pc.utf8_trim_whitespace(values))
    is_true = pc.is_in(words, value_set=pa.array(_TRUE_WORDS))
    is_false = pc.is_in(words, value_set=pa.array(_FALSE_WORDS))
    known = pc.or_(is_true, is_false)
    if not pc.all(pc.fill_null(pc.or_(known, pc.is_null(values)), True)).as_py():
        row, text = _first_bad(values, known)
        raise context.error(InvalidTextRepresentation, f'invalid input syntax for type boolean: "{text}"', row, None)
    return pc.if_else(pc.is_null(values), pa.scalar(None, pa.bool_()), is_true)


def _cast_temporal(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    try:
        return pc.cast(pc.utf8_trim_whitespace(values), sql_type.arrow)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    return _per_value(values, sql_type, context, _TEMPORAL_PARSERS[sql_type.kind])


def _per_value(values: pa.Array, sql_type: SqlType, context: TextContext, parse: Callable[[str], Any]) -> pa.Array:
    result: list[Any] = []
    for row, text in enumerate(values.to_pylist()):
        if text is None:
            result.append(None)
            continue
        try:
            result.append(parse(text.strip()))
        except (ValueError, OverflowError):
            cls = InvalidDatetimeFormat if sql_type.kind in _TEMPORAL_PARSERS else InvalidTextRepresentation
            name = _SHORT_NAMES.get(sql_type.kind, str(sql_type))
            raise context.error(cls, f'invalid input syntax for type {name}: "{text}"', row, None) from None
    return pa.array(result, type=sql_type.arrow)


def _parse_timestamp(text: str) -> dt.datetime:
    value = parse_timestamp_text(text)
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def _parse_timestamptz(text: str) -> dt.datetime:
    value = parse_timestamp_text(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def parse_timestamp_text(text: str) -> dt.datetime:
    """Parse PostgreSQL's ISO timestamp text (``2024-01-02 03:04:05.6+02``); naive when no offset."""
    text = text.strip()
    if text.endswith((" UTC", " utc")):
        text = text[:-4] + "+00:00"
    match = re.search(r"([+-])(\d{1,2})(?::?(\d{2}))?(?::?(\d{2}))?$", text)
    offset: dt.timezone | None = None
    if match is not None and ("T" in text[: match.start()] or " " in text[: match.start()] or ":" in text):
        head = text[: match.start()]
        if re.search(r"\d{1,2}:\d{2}", head):
            sign = -1 if match.group(1) == "-" else 1
            delta = dt.timedelta(
                hours=int(match.group(2)), minutes=int(match.group(3) or 0), seconds=int(match.group(4) or 0)
            )
            offset = dt.timezone(sign * delta)
            text = head
    if text.endswith(("Z", "z")):
        offset, text = dt.UTC, text[:-1]
    fraction_match = re.search(r"\.(\d+)$", text)
    if fraction_match is not None and len(fraction_match.group(1)) > 6:
        digits = fraction_match.group(1)
        micros = round(int(digits) / 10 ** (len(digits) - 6))
        text = text[: fraction_match.start()] + f".{min(micros, 999999):06d}"
    value = dt.datetime.fromisoformat(text)
    return value.replace(tzinfo=offset) if offset is not None else value


def _parse_time(text: str) -> dt.time:
    return dt.time.fromisoformat(text)


def _parse_bytea(text: str) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out.extend(char.encode("utf-8"))
            i += 1
        elif text[i + 1 : i + 2] == "\\":
            out.append(0x5C)
            i += 2
        elif re.match(r"[0-3][0-7]{2}", text[i + 1 : i + 4]):
            out.append(int(text[i + 1 : i + 4], 8))
            i += 4
        else:
            raise ValueError(text)
    return bytes(out)


_INTERVAL_UNITS = {
    "year": (12, 0, 0), "years": (12, 0, 0), "y": (12, 0, 0),
    "mon": (1, 0, 0), "mons": (1, 0, 0), "month": (1, 0, 0), "months": (1, 0, 0),
    "week": (0, 7, 0), "weeks": (0, 7, 0), "w": (0, 7, 0),
    "day": (0, 1, 0), "days": (0, 1, 0), "d": (0, 1, 0),
    "hour": (0, 0, 3_600_000_000_000), "hours": (0, 0, 3_600_000_000_000), "h": (0, 0, 3_600_000_000_000),
    "minute": (0, 0, 60_000_000_000), "minutes": (0, 0, 60_000_000_000), "min": (0, 0, 60_000_000_000),
    "mins": (0, 0, 60_000_000_000), "m": (0, 0, 60_000_000_000),
    "second": (0, 0, 1_000_000_000), "seconds": (0, 0, 1_000_000_000), "sec": (0, 0, 1_000_000_000),
    "secs": (0, 0, 1_000_000_000), "s": (0, 0, 1_000_000_000),
}  # fmt: skip


def parse_interval_text(text: str) -> tuple[int, int, int]:
    """Parse PostgreSQL's interval text (``1 year 2 mons 3 days 04:05:06``) into (months, days, ns)."""
    months = days = nanos = 0
    tokens = text.lower().replace("@", " ").split()
    i = 0
    while i < len(tokens):
        token = tokens[i]
        clock = re.fullmatch(r"([+-])?(\d+):(\d{1,2})(?::(\d{1,2}(?:\.\d+)?))?", token)
        if clock is not None:
            sign = -1 if clock.group(1) == "-" else 1
            seconds = decimal.Decimal(clock.group(4) or 0)
            total = (int(clock.group(2)) * 3600 + int(clock.group(3)) * 60) * 10**9 + int(seconds * 10**9)
            nanos += sign * total
            i += 1
            continue
        number = decimal.Decimal(token)
        unit = tokens[i + 1] if i + 1 < len(tokens) else "seconds"
        if unit not in _INTERVAL_UNITS:
            raise ValueError(text)
        unit_months, unit_days, unit_nanos = _INTERVAL_UNITS[unit]
        months += int(number * unit_months)
        days += int(number * unit_days)
        nanos += int(number * unit_nanos)
        i += 2
    if tokens and tokens[-1] == "ago":
        months, days, nanos = -months, -days, -nanos
    return months, days, nanos


def _cast_array(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    assert sql_type.element is not None
    lists: list[list[str | None] | None] = []
    for row, text in enumerate(values.to_pylist()):
        try:
            lists.append(None if text is None else parse_array(text))
        except InvalidTextRepresentation as e:
            raise context.error(InvalidTextRepresentation, e.message, row, None) from None
    parsed = pa.array(lists, pa.list_(pa.string()))
    rows = pc.list_parent_indices(parsed).to_numpy(zero_copy_only=False)
    elements = cast_text(parsed.flatten(), sql_type.element, _ElementContext(context, rows))
    return pa.ListArray.from_arrays(parsed.offsets, elements, type=sql_type.arrow, mask=parsed.is_null())


def _cast_interval(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    return _per_value(values, sql_type, context, parse_interval_text)


def _cast_bytea(values: pa.Array, sql_type: SqlType, context: TextContext) -> pa.Array:
    return _per_value(values, sql_type, context, _parse_bytea)


_TEMPORAL_PARSERS: dict[str, Callable[[str], Any]] = {
    "date": dt.date.fromisoformat,
    "time without time zone": _parse_time,
    "timestamp without time zone": _parse_timestamp,
    "timestamp with time zone": _parse_timestamptz,
}

# PostgreSQL names these types by their short names in input errors.
_SHORT_NAMES = {"timestamp without time zone": "timestamp", "time without time zone": "time"}

_CASTERS: dict[str, Callable[[pa.Array, SqlType, TextContext], pa.Array]] = {
    "smallint": _cast_integer,
    "integer": _cast_integer,
    "bigint": _cast_integer,
    "real": _cast_float,
    "double precision": _cast_float,
    "numeric": _cast_numeric,
    "boolean": _cast_boolean,
    "date": _cast_temporal,
    "time without time zone": _cast_temporal,
    "timestamp without time zone": _cast_temporal,
    "timestamp with time zone": _cast_temporal,
    "interval": _cast_interval,
    "bytea": _cast_bytea,
    "array": _cast_array,
}
