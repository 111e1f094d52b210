"""Rows as text: JSON objects, CSV and PostgreSQL's COPY text, one column at a time.

Place in the data flow: sinks render the rows they deliver here — the Kafka sink turns each row
into a JSON message, the file sink writes JSON lines or CSV, the PostgreSQL sink streams COPY text.
Every renderer works on whole Arrow columns with pyarrow compute (casts, regex replacement,
element-wise joins); only interval and jsonb values, and rare values pyarrow spells differently
(a decimal it prints in E notation, a string with a control character), go through Python per value.

Value forms:

- ``pg_text_column``: PostgreSQL's text output (``t``/``f``, ``1.50``, ``2026-11-28 10:00:00.5``,
  ``2026-11-28 10:00:00+00``, ``1 year 2 mons``, ``\\x0aff``, ``{1,NULL,"a b"}``); NULL stays null.
  An unconstrained NUMERIC drops trailing zeros, as ``SqlType.to_text`` does.
- JSON: numbers (DECIMAL with its exact digits, never through a float), booleans, strings;
  timestamps as ``"2026-11-28 10:00:00.123456"``, timestamptz with ``+00:00``, dates, times and
  intervals as their PostgreSQL text, bytea as ``"\\\\x…"``, arrays as JSON arrays, jsonb embedded
  as JSON. A float NaN or infinity, which JSON cannot spell, is the string ``"NaN"``/``"Infinity"``.
- CSV: a header line, then PostgreSQL text values; NULL is an empty unquoted field and the empty
  string is ``""`` (PostgreSQL's COPY … CSV reads both back).

Column types come from the caller (``column_types``), since jsonb and text share an Arrow type;
without them they are read off the Arrow types (``from_arrow``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.types import SqlType, format_interval, from_arrow

__all__ = [
    "json_column",
    "pg_text_column",
    "rows_to_json_lines",
    "table_to_copy_text",
    "table_to_csv",
    "table_to_json_lines",
]

# Rows rendered at once: the joined text of a batch must stay under Arrow's 2 GiB string offsets.
BATCH_ROWS_MAX = 65_536

_TEXT_KINDS = {"character varying", "text"}
_INTEGER_KINDS = {"smallint", "integer", "bigint"}
_FLOAT_KINDS = {"real", "double precision"}
_CLOCK_KINDS = {"time without time zone", "timestamp without time zone", "timestamp with time zone"}
# array_out quotes an element that is empty, spells NULL, or holds a brace, comma, quote, backslash or space.
_ARRAY_ELEMENT_QUOTED = r'^$|^[Nn][Uu][Ll][Ll]$|[{},"\\\s\x0b]'
_CSV_QUOTED = r'^$|[,"\r\n]|^\\\.$'
_JSON_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
_JSON_ESCAPED = r'[\x00-\x1f"\\]'


# ---- one column ---------------------------------------------------------------------------------


def pg_text_column(array: pa.Array | pa.ChunkedArray, sql_type: SqlType) -> pa.Array:
    """PostgreSQL's text output of every value of ``array`` (a string array; NULL stays null)."""
    array = _combined(array)
    kind = sql_type.kind
    if sql_type.element is not None:
        return _array_text(array, sql_type.element)
    if kind in _TEXT_KINDS or kind == "jsonb":
        return array.cast(pa.string())
    if kind == "boolean":
        return pc.if_else(array, "t", "f")
    if kind in _INTEGER_KINDS:
        return array.cast(pa.string())
    if kind in _FLOAT_KINDS:
        return _float_text(array)
    if kind == "numeric":
        return _numeric_text(array, sql_type)
    if kind == "date":
        return array.cast(pa.string())
    if kind in _CLOCK_KINDS:
        return _clock_text(array, "+00" if kind == "timestamp with time zone" else "")
    if kind == "interval":
        return _per_value(array, _interval_text)
    if kind == "bytea":
        return _per_value(array, _bytea_text)
    return array.cast(pa.string())


def json_column(array: pa.Array | pa.ChunkedArray, sql_type: SqlType) -> pa.Array:
    """The JSON text of every value of ``array`` (a string array; NULL is ``null``)."""
    array = _combined(array)
    kind = sql_type.kind
    if sql_type.element is not None:
        out = _json_array(array, sql_type.element)
    elif kind == "boolean":
        out = pc.if_else(array, "true", "false")
    elif kind in _INTEGER_KINDS:
        out = array.cast(pa.string())
    elif kind in _FLOAT_KINDS:
        # JSON has no NaN or infinity: those become strings.
        finite = pc.is_finite(array)
        text = _float_text(array)
        out = text if pc.all(finite).as_py() is not False else pc.if_else(finite, text, _json_quoted(text))
    elif kind == "numeric":
        out = _numeric_text(array, sql_type)
    elif kind == "jsonb":
        # Valid JSON holds a raw line break only between tokens, where a space means the same:
        # a JSON line must stay one line.
        out = pc.replace_substring_regex(array.cast(pa.string()), r"[\r\n]", " ")
    elif kind == "timestamp with time zone":
        out = _json_quoted(_clock_text(array, "+00:00"))
    elif kind in _CLOCK_KINDS or kind == "date":
        out = _json_quoted(pg_text_column(array, sql_type), plain=True)
    else:
        out = _json_quoted(pg_text_column(array, sql_type))
    return pc.fill_null(out, "null")


# ---- whole tables -------------------------------------------------------------------------------


def rows_to_json_lines(table: pa.Table, column_types: Sequence[SqlType] | None = None) -> list[bytes]:
    """One JSON object per row (keys are the column names, in order), as UTF-8 bytes."""
    out: list[bytes] = []
    for batch in _batches(table):
        out.extend(_json_objects(batch, _types(table, column_types)).cast(pa.binary()).to_pylist())
    return out


def table_to_json_lines(table: pa.Table, column_types: Sequence[SqlType] | None = None) -> bytes:
    """``rows_to_json_lines`` joined: each object followed by a newline."""
    types = _types(table, column_types)
    return b"".join(_terminated(_json_objects(batch, types)) for batch in _batches(table))


def table_to_csv(table: pa.Table, column_types: Sequence[SqlType] | None = None, *, header: bool = True) -> bytes:
    """CSV with a header line of the column names (unless ``header`` is False), one line per row."""
    types = _types(table, column_types)
    parts: list[bytes] = []
    if header:
        names = _csv_fields(pa.array(table.column_names, pa.string()))
        parts.append((",".join(names.to_pylist()) + "\n").encode())
    for batch in _batches(table):
        fields = [_csv_fields(pg_text_column(column, t)) for column, t in zip(batch.columns, types)]
        parts.append(_terminated(_joined(fields, ",", batch.num_rows)))
    return b"".join(parts)


def table_to_copy_text(table: pa.Table, column_types: Sequence[SqlType] | None = None) -> bytes:
    """The rows in the text format of PostgreSQL's ``COPY … FROM STDIN`` (tab-separated, ``\\N``)."""
    types = _types(table, column_types)
    parts: list[bytes] = []
    for batch in _batches(table):
        fields = [_copy_field(pg_text_column(column, t)) for column, t in zip(batch.columns, types)]
        parts.append(_terminated(_joined(fields, "\t", batch.num_rows)))
    return b"".join(parts)


# ---- helpers ------------------------------------------------------------------------------------


def _types(table: pa.Table, column_types: Sequence[SqlType] | None) -> list[SqlType]:
    if column_types is None:
        return [from_arrow(field.type) for field in table.schema]
    assert len(column_types) == table.num_columns, (len(column_types), table.column_names)
    return list(column_types)


def _batches(table: pa.Table) -> list[pa.RecordBatch]:
    return [batch for batch in table.to_batches(max_chunksize=BATCH_ROWS_MAX) if batch.num_rows]


def _combined(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array


def _per_value(array: pa.Array, render: Callable[[object], str]) -> pa.Array:
    return pa.array([None if value is None else render(value) for value in array.to_pylist()], pa.string())


def _interval_text(value: object) -> str:
    assert isinstance(value, pa.MonthDayNano), value
    return format_interval(value.months, value.days, value.nanoseconds)


def _bytea_text(value: object) -> str:
    assert isinstance(value, bytes), value
    return "\\x" + value.hex()


def _float_text(array: pa.Array) -> pa.Array:
    text = array.cast(pa.string())
    if pc.all(pc.is_finite(array)).as_py() is not False:
        return text
    text = pc.replace_substring(text, "nan", "NaN")
    return pc.replace_substring(text, "inf", "Infinity")


def _numeric_text(array: pa.Array, sql_type: SqlType) -> pa.Array:
    text = array.cast(pa.string())
    # Arrow prints a value below 1e-6 in E notation (-1E-10); PostgreSQL never does.
    scientific = pc.match_substring(text, "E")
    if pc.any(scientific).as_py():
        fixed = [None if v is None else f"{v:f}" for v in array.to_pylist()]
        text = pc.if_else(scientific, pa.array(fixed, pa.string()), text)
    if sql_type.precision is None:
        text = _trimmed_fraction(text)
        text = pc.if_else(pc.equal(text, "-0"), "0", text)
    return text


def _trimmed_fraction(text: pa.Array) -> pa.Array:
    """Trailing zeros of a fraction dropped, and the point with them: 1.50 → 1.5, 2.000 → 2."""
    # Trimming stops at the point, so it never reaches the integer part; a text without a point
    # (100) keeps its zeros.
    trimmed = pc.utf8_rtrim(pc.utf8_rtrim(text, "0"), ".")
    return pc.if_else(pc.match_substring(text, "."), trimmed, text)


def _clock_text(array: pa.Array, zone_suffix: str) -> pa.Array:
    if pa.types.is_timestamp(array.type) and array.type.tz is not None:
        # The same UTC instants without the zone: casting those to text is ten times faster.
        array = array.cast(pa.timestamp(array.type.unit))
    text = _trimmed_fraction(array.cast(pa.string()))
    if zone_suffix:
        text = pc.binary_join_element_wise(text, zone_suffix, "")
    return text


def _relisted(array: pa.Array, rendered_values: pa.Array) -> pa.Array:
    """``array``'s lists with their elements replaced by ``rendered_values`` (same child order)."""
    return pa.ListArray.from_arrays(array.offsets, rendered_values, mask=array.is_null())


def _array_text(array: pa.Array, element: SqlType) -> pa.Array:
    items = pg_text_column(array.values, element)
    quoted = pc.binary_join_element_wise(
        '"', pc.replace_substring(pc.replace_substring(items, "\\", "\\\\"), '"', '\\"'), '"', ""
    )
    items = pc.fill_null(pc.if_else(pc.match_substring_regex(items, _ARRAY_ELEMENT_QUOTED), quoted, items), "NULL")
    return pc.binary_join_element_wise("{", pc.binary_join(_relisted(array, items), ","), "}", "")


def _json_array(array: pa.Array, element: SqlType) -> pa.Array:
    items = json_column(array.values, element)
    return pc.binary_join_element_wise("[", pc.binary_join(_relisted(array, items), ","), "]", "")


def _json_quoted(text: pa.Array, *, plain: bool = False) -> pa.Array:
    """JSON string literals of ``text`` (null stays null); ``plain`` when no value needs escapes."""
    if plain or not pc.any(pc.match_substring_regex(text, _JSON_ESCAPED)).as_py():
        return pc.binary_join_element_wise('"', text, '"', "")
    if pc.any(pc.match_substring_regex(text, _JSON_CONTROL)).as_py():
        return pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in text.to_pylist()])
    escaped = pc.replace_substring(text, "\\", "\\\\")
    for raw, escape in (('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t")):
        escaped = pc.replace_substring(escaped, raw, escape)
    return pc.binary_join_element_wise('"', escaped, '"', "")


def _json_objects(batch: pa.RecordBatch, types: list[SqlType]) -> pa.Array:
    if batch.num_columns == 0:
        return pa.array(["{}"] * batch.num_rows, pa.string())
    fields = []
    for name, column, sql_type in zip(batch.schema.names, batch.columns, types):
        key = json.dumps(name, ensure_ascii=False) + ":"
        fields.append(pc.binary_join_element_wise(key, json_column(column, sql_type), ""))
    return pc.binary_join_element_wise("{", _joined(fields, ",", batch.num_rows), "}", "")


def _csv_fields(text: pa.Array) -> pa.Array:
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.fill_null(pc.if_else(pc.match_substring_regex(text, _CSV_QUOTED), quoted, text), "")


def _copy_field(text: pa.Array) -> pa.Array:
    for raw, escape in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
        text = pc.replace_substring(text, raw, escape)
    return pc.fill_null(text, "\\N")


def _joined(fields: list[pa.Array], separator: str, rows: int) -> pa.Array:
    if not fields:
        return pa.array([""] * rows, pa.string())
    return pc.binary_join_element_wise(*fields, separator)


def _terminated(lines: pa.Array) -> bytes:
    """The lines, each followed by a newline, as one bytes object."""
    text = pc.binary_join_element_wise(lines, "\n", "").cast(pa.string())
    assert text.null_count == 0
    _, offsets, data = text.buffers()
    positions = np.frombuffer(offsets, np.int32, count=len(text) + 1, offset=text.offset * 4)
    start, end = int(positions[0]), int(positions[-1])
    return b"" if data is None else data[start:end].to_pybytes()
