"""SQL types, their Arrow layout, their PostgreSQL identity and their text form.

Every column in tidegate has a :class:`SqlType`. Chunks and snapshots carry the
matching Arrow type (``SqlType.arrow``); the pgwire layer sends ``pg_oid`` and
``to_text(value)``; DuckDB sees ``duckdb_name``.

An array (``int[]``, ``varchar(10)[]``) is a SqlType of kind ``array`` whose ``element`` is
the type of its elements: one dimension, 1-based subscripts, NULL elements allowed. It is an
Arrow ``list<element>`` (a Python list per value), DuckDB's ``ELEMENT[]`` and PostgreSQL's
``_element`` type (``_int4`` is oid 1007); its text is PostgreSQL's ``{1,2,NULL}``
(docs/design/20261127_array_types.md).

DECIMAL without precision is PostgreSQL's unconstrained ``numeric``. It is stored
as ``decimal128(38, 10)`` and printed with trailing zeros dropped, so a sum of
values with two decimals prints with two decimals (``948.49``). DECIMAL(p, s) is
stored and printed with exactly ``s`` decimals, as in PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tidegate.common.array_text import format_array
from tidegate.errors import FeatureNotSupported, UndefinedType

UNCONSTRAINED_NUMERIC_SCALE = 10
NUMERIC_PRECISION_MAX = 38


@dataclass(frozen=True)
class SqlType:
    """A SQL column type. ``kind`` is the canonical PostgreSQL name."""

    kind: str
    precision: int | None = None  # numeric precision
    scale: int | None = None  # numeric scale
    length: int | None = None  # varchar(n)
    element: SqlType | None = None  # an array's element type (kind "array"); see ``array_of``

    # ---- identity -------------------------------------------------------
    @property
    def pg_oid(self) -> int:
        if self.element is not None:
            return _PG_ARRAY_OID[self.element.kind]
        return _PG_OID[self.kind]

    @property
    def pg_typlen(self) -> int:
        return _PG_TYPLEN.get(self.kind, -1)

    @property
    def pg_typmod(self) -> int:
        if self.element is not None:
            return self.element.pg_typmod  # as PostgreSQL reports numeric(10,2)[]: the element's
        if self.kind == "numeric" and self.precision is not None:
            return ((self.precision << 16) | (self.scale or 0)) + 4
        if self.kind == "character varying" and self.length is not None:
            return self.length + 4
        return -1

    def __str__(self) -> str:
        """The type as ``format_type`` prints it (what psql's ``\\d`` shows)."""
        if self.element is not None:
            return f"{self.element}[]"
        if self.kind == "numeric" and self.precision is not None:
            return f"numeric({self.precision},{self.scale or 0})"
        if self.kind == "character varying" and self.length is not None:
            return f"character varying({self.length})"
        return self.kind

    @property
    def is_numeric(self) -> bool:
        return self.kind in _NUMERIC_KINDS

    @property
    def is_array(self) -> bool:
        return self.element is not None

    # ---- physical layout -----------------------------------------------
    @property
    def arrow(self) -> pa.DataType:
        if self.element is not None:
            return pa.list_(self.element.arrow)
        if self.kind == "numeric":
            if self.precision is None:
                return pa.decimal128(NUMERIC_PRECISION_MAX, UNCONSTRAINED_NUMERIC_SCALE)
            return pa.decimal128(self.precision, self.scale or 0)
        return _ARROW[self.kind]

    @property
    def duckdb_name(self) -> str:
        if self.element is not None:
            return f"{self.element.duckdb_name}[]"
        if self.kind == "numeric":
            if self.precision is None:
                return f"DECIMAL({NUMERIC_PRECISION_MAX},{UNCONSTRAINED_NUMERIC_SCALE})"
            return f"DECIMAL({self.precision},{self.scale or 0})"
        return _DUCKDB[self.kind]

    # ---- text form (pgwire text format) ----------------------------------
    def to_text(self, value: Any) -> str | None:
        """PostgreSQL's text output for one Python value of this type."""
        if value is None:
            return None
        formatter = _FORMATTERS.get(self.kind)
        if formatter is not None:
            return formatter(self, value)
        return str(value)


def array_of(element: SqlType) -> SqlType:
    """The one-dimensional array type of ``element`` (``int[]`` of ``integer``)."""
    if element.element is not None:
        raise FeatureNotSupported(
            f"multidimensional arrays are not supported: {element}[]", hint="tidegate's arrays have one dimension."
        )
    if element.kind not in _PG_ARRAY_OID:
        raise FeatureNotSupported(f"arrays of {element} are not supported")
    return SqlType("array", element=element)


def type_text(sql_type: SqlType) -> str:
    """The type as the catalog and stream plans store it; ``parse_type_name`` reads it back."""
    if sql_type.element is not None:
        return f"{type_text(sql_type.element)}[]"
    if sql_type.kind == "numeric" and sql_type.precision is not None:
        return f"numeric({sql_type.precision},{sql_type.scale or 0})"
    if sql_type.kind == "character varying" and sql_type.length is not None:
        return f"varchar({sql_type.length})"
    return sql_type.kind


def _fmt_array(t: SqlType, v: Any) -> str:
    element = t.element
    assert element is not None
    return format_array([element.to_text(item) for item in v])


def _fmt_bool(_: SqlType, v: Any) -> str:
    return "t" if v else "f"


def _fmt_float(t: SqlType, v: Any) -> str:
    f = float(v)
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "Infinity" if f > 0 else "-Infinity"
    text = str(np.float32(f)) if t.kind == "real" else repr(f)
    if text.endswith(".0"):
        text = text[:-2]
    return text


def _fmt_numeric(t: SqlType, v: Any) -> str:
    d = v if isinstance(v, decimal.Decimal) else decimal.Decimal(str(v))
    if not d.is_finite():
        return "NaN" if d.is_nan() else ("Infinity" if d > 0 else "-Infinity")
    if t.precision is not None:
        return f"{d.quantize(decimal.Decimal(1).scaleb(-(t.scale or 0))):f}"
    text = f"{d:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _fmt_timestamp(t: SqlType, v: Any) -> str:
    if not isinstance(v, dt.datetime):
        return str(v)
    text = v.strftime("%Y-%m-%d %H:%M:%S")
    if v.microsecond:
        text += f".{v.microsecond:06d}".rstrip("0")
    if t.kind == "timestamp with time zone":
        offset = v.utcoffset() or dt.timedelta(0)
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        hh, mm = divmod(abs(minutes), 60)
        text += f"{sign}{hh:02d}" + (f":{mm:02d}" if mm else "")
    return text


def _fmt_date(_: SqlType, v: Any) -> str:
    return v.isoformat() if isinstance(v, dt.date) else str(v)


def format_interval(months: int, days: int, nanoseconds: int) -> str:
    """PostgreSQL's default (``postgres``) interval style: ``1 year 2 mons 3 days 04:05:06``."""
    parts: list[str] = []
    years, mons = divmod(abs(months), 12)
    if months < 0:
        years, mons = -years, -mons
    # PostgreSQL says "1 day" but "-1 days": only exactly one is singular.
    if years:
        parts.append(f"{years} year{'s' if years != 1 else ''}")
    if mons:
        parts.append(f"{mons} mon{'s' if mons != 1 else ''}")
    if days:
        parts.append(f"{days} day{'s' if days != 1 else ''}")
    if nanoseconds or not parts:
        micros = abs(nanoseconds) // 1000
        secs, us = divmod(micros, 1_000_000)
        hh, rem = divmod(secs, 3600)
        mm, ss = divmod(rem, 60)
        clock = f"{'-' if nanoseconds < 0 else ''}{hh:02d}:{mm:02d}:{ss:02d}"
        if us:
            clock += f".{us:06d}".rstrip("0")
        parts.append(clock)
    return " ".join(parts)


def _fmt_interval(_: SqlType, v: Any) -> str:
    if isinstance(v, pa.MonthDayNano) or hasattr(v, "months"):
        return format_interval(v.months, v.days, v.nanoseconds)
    if isinstance(v, dt.timedelta):
        return format_interval(0, v.days, (v.seconds * 1_000_000 + v.microseconds) * 1000)
    return str(v)


def _fmt_bytea(_: SqlType, v: Any) -> str:
    return "\\x" + bytes(v).hex()


def _jsonb_normal(value: Any) -> Any:
    """jsonb's own order: object keys by length, then bytewise; the last duplicate key wins."""
    if isinstance(value, dict):
        keys = sorted(value, key=lambda k: (len(k.encode()), k.encode()))
        return {k: _jsonb_normal(value[k]) for k in keys}
    if isinstance(value, list):
        return [_jsonb_normal(v) for v in value]
    return value


def _fmt_jsonb(_: SqlType, v: Any) -> str:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except ValueError:
            return v
    return json.dumps(_jsonb_normal(v), separators=(", ", ": "), ensure_ascii=False)


_FORMATTERS = {
    "boolean": _fmt_bool,
    "real": _fmt_float,
    "double precision": _fmt_float,
    "numeric": _fmt_numeric,
    "timestamp without time zone": _fmt_timestamp,
    "timestamp with time zone": _fmt_timestamp,
    "date": _fmt_date,
    "interval": _fmt_interval,
    "bytea": _fmt_bytea,
    "jsonb": _fmt_jsonb,
    "array": _fmt_array,
}

_PG_OID = {
    "boolean": 16,
    "bytea": 17,
    "bigint": 20,
    "smallint": 21,
    "integer": 23,
    "text": 25,
    "real": 700,
    "double precision": 701,
    "character varying": 1043,
    "date": 1082,
    "time without time zone": 1083,
    "timestamp without time zone": 1114,
    "timestamp with time zone": 1184,
    "interval": 1186,
    "numeric": 1700,
    "jsonb": 3802,
}

# An array type's oid, by its element's kind (pg_type.typarray).
_PG_ARRAY_OID = {
    "boolean": 1000,
    "bytea": 1001,
    "smallint": 1005,
    "integer": 1007,
    "text": 1009,
    "bigint": 1016,
    "real": 1021,
    "double precision": 1022,
    "character varying": 1015,
    "date": 1182,
    "time without time zone": 1183,
    "timestamp without time zone": 1115,
    "timestamp with time zone": 1185,
    "interval": 1187,
    "numeric": 1231,
    "jsonb": 3807,
}

_PG_TYPLEN = {
    "boolean": 1,
    "bigint": 8,
    "smallint": 2,
    "integer": 4,
    "real": 4,
    "double precision": 8,
    "date": 4,
    "time without time zone": 8,
    "timestamp without time zone": 8,
    "timestamp with time zone": 8,
    "interval": 16,
}

_ARROW: dict[str, pa.DataType] = {
    "boolean": pa.bool_(),
    "smallint": pa.int16(),
    "integer": pa.int32(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "double precision": pa.float64(),
    "character varying": pa.string(),
    "text": pa.string(),
    "bytea": pa.binary(),
    "date": pa.date32(),
    "time without time zone": pa.time64("us"),
    "timestamp without time zone": pa.timestamp("us"),
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "interval": pa.month_day_nano_interval(),
    "jsonb": pa.string(),
}

_DUCKDB = {
    "boolean": "BOOLEAN",
    "smallint": "SMALLINT",
    "integer": "INTEGER",
    "bigint": "BIGINT",
    "real": "REAL",
    "double precision": "DOUBLE",
    "character varying": "VARCHAR",
    "text": "VARCHAR",
    "bytea": "BLOB",
    "date": "DATE",
    "time without time zone": "TIME",
    "timestamp without time zone": "TIMESTAMP",
    "timestamp with time zone": "TIMESTAMPTZ",
    "interval": "INTERVAL",
    "jsonb": "JSON",
}

_NUMERIC_KINDS = {"smallint", "integer", "bigint", "real", "double precision", "numeric"}

BOOLEAN = SqlType("boolean")
SMALLINT = SqlType("smallint")
INTEGER = SqlType("integer")
BIGINT = SqlType("bigint")
REAL = SqlType("real")
DOUBLE = SqlType("double precision")
NUMERIC = SqlType("numeric")
VARCHAR = SqlType("character varying")
TEXT = SqlType("text")
BYTEA = SqlType("bytea")
DATE = SqlType("date")
TIME = SqlType("time without time zone")
TIMESTAMP = SqlType("timestamp without time zone")
TIMESTAMPTZ = SqlType("timestamp with time zone")
INTERVAL = SqlType("interval")
JSONB = SqlType("jsonb")

# Names a user may write in DDL, after lower-casing and collapsing spaces.
_TYPE_NAMES: dict[str, SqlType] = {
    "boolean": BOOLEAN,
    "bool": BOOLEAN,
    "smallint": SMALLINT,
    "int2": SMALLINT,
    "integer": INTEGER,
    "int": INTEGER,
    "int4": INTEGER,
    "bigint": BIGINT,
    "int8": BIGINT,
    "real": REAL,
    "float4": REAL,
    "float": DOUBLE,
    "double": DOUBLE,
    "double precision": DOUBLE,
    "float8": DOUBLE,
    "decimal": NUMERIC,
    "numeric": NUMERIC,
    "varchar": VARCHAR,
    "character varying": VARCHAR,
    "string": VARCHAR,
    "text": VARCHAR,
    "char": VARCHAR,
    "character": VARCHAR,
    "bytea": BYTEA,
    "blob": BYTEA,
    "date": DATE,
    "time": TIME,
    "time without time zone": TIME,
    "timestamp": TIMESTAMP,
    "timestamp without time zone": TIMESTAMP,
    "datetime": TIMESTAMP,
    "timestamptz": TIMESTAMPTZ,
    "timestamp with time zone": TIMESTAMPTZ,
    "interval": INTERVAL,
    "jsonb": JSONB,
    "json": JSONB,
}

_PARAMS = re.compile(r"^(?P<name>[a-z][a-z0-9 ]*?)\s*(\(\s*(?P<a>\d+)\s*(,\s*(?P<b>\d+)\s*)?\))?$")
# ``int[]``, ``int[3]`` (PostgreSQL ignores the size), ``int ARRAY``, ``int ARRAY[3]``.
_ARRAY_SUFFIX = re.compile(r"(\s*\[\s*\d*\s*\])+$|\s+array(\s*\[\s*\d*\s*\])?$")


def parse_type_name(text: str) -> SqlType:
    """Parse a type as written in SQL (``DECIMAL(10, 2)``, ``varchar(20)``, ``int8``, ``int[]``, ``_int4``)."""
    normalized = " ".join(text.strip().lower().split())
    suffix = _ARRAY_SUFFIX.search(normalized)
    if suffix is not None and suffix.start() > 0:
        if suffix.group(0).count("[") > 1:
            raise FeatureNotSupported(
                f"multidimensional arrays are not supported: {normalized}", hint="tidegate's arrays have one dimension."
            )
        try:
            return array_of(parse_type_name(normalized[: suffix.start()]))
        except UndefinedType as e:
            raise UndefinedType(f'type "{normalized}" does not exist') from e
    if normalized.startswith("_") and normalized[1:] in _TYPE_NAMES:
        return array_of(_TYPE_NAMES[normalized[1:]])  # pg_type's name of the array type: _int4
    match = _PARAMS.match(normalized)
    if match is None or match.group("name").strip() not in _TYPE_NAMES:
        raise UndefinedType(f'type "{text.strip().lower()}" does not exist')
    base = _TYPE_NAMES[match.group("name").strip()]
    a, b = match.group("a"), match.group("b")
    if base.kind == "numeric" and a is not None:
        precision, scale = int(a), int(b or 0)
        if not 1 <= precision <= NUMERIC_PRECISION_MAX or scale > precision:
            raise FeatureNotSupported(
                f"NUMERIC precision must be between 1 and {NUMERIC_PRECISION_MAX} and scale at most "
                f"the precision, got ({precision},{scale})"
            )
        return SqlType("numeric", precision, scale)
    if base.kind == "character varying" and a is not None:
        return SqlType("character varying", length=int(a))
    return base


def from_arrow(t: pa.DataType) -> SqlType:
    """The SQL type a result column of Arrow type ``t`` is reported as."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return array_of(from_arrow(t.value_type))
    if pa.types.is_boolean(t):
        return BOOLEAN
    if pa.types.is_int8(t) or pa.types.is_int16(t) or pa.types.is_uint8(t):
        return SMALLINT
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return INTEGER
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return BIGINT
    if pa.types.is_uint64(t):
        return NUMERIC
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return REAL
    if pa.types.is_float64(t):
        return DOUBLE
    if pa.types.is_decimal(t):
        if t.precision == NUMERIC_PRECISION_MAX and t.scale in (UNCONSTRAINED_NUMERIC_SCALE, 0):
            return NUMERIC
        return SqlType("numeric", t.precision, t.scale)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return VARCHAR
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_fixed_size_binary(t):
        return BYTEA
    if pa.types.is_date(t):
        return DATE
    if pa.types.is_time(t):
        return TIME
    if pa.types.is_timestamp(t):
        return TIMESTAMPTZ if t.tz else TIMESTAMP
    if pa.types.is_interval(t) or pa.types.is_duration(t):
        return INTERVAL
    if pa.types.is_null(t):
        return VARCHAR
    if pa.types.is_dictionary(t):
        return from_arrow(t.value_type)
    raise FeatureNotSupported(f"values of Arrow type {t} cannot be returned to a client")
