"""Values on the wire: decode Bind parameters, encode result columns.

Parameters arrive as text or binary bytes tagged with a type oid (0 when the
client left the type open); they leave here as the Python values
``Session.execute`` takes (None, str, int, float, Decimal, bool, bytes, date,
datetime, time, and a list of those for an array). A parameter of unknown or
textual type stays a ``str`` and the engine casts it where it is used, as
PostgreSQL resolves an ``unknown`` literal. An array parameter in text
(``{1,2,NULL}``, what psycopg sends for a Python list) becomes a list whose
elements are decoded as parameters of the element type.

Result columns are encoded as text (every type, through ``SqlType.to_text``;
arrays as ``{1,2,NULL}``) or binary (the common scalar types, not arrays: clients
ask for text unless told otherwise); a binary request for another type is a
FeatureNotSupported error, reported with SQLSTATE 0A000.
"""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from collections.abc import Callable
from typing import Any

from tidegate.common.array_text import parse_array
from tidegate.common.copy_text import parse_timestamp_text
from tidegate.common.types import SqlType, format_interval
from tidegate.errors import (
    FeatureNotSupported,
    InvalidDatetimeFormat,
    InvalidTextRepresentation,
    NumericValueOutOfRange,
)
from tidegate.server.pg_catalog_tables import ARRAY_ELEMENT

__all__ = ["ValueEncoder", "decode_parameter", "encoder_for"]

OID_BOOL = 16
OID_BYTEA = 17
OID_CHAR = 18
OID_NAME = 19
OID_INT8 = 20
OID_INT2 = 21
OID_INT4 = 23
OID_TEXT = 25
OID_OID = 26
OID_JSON = 114
OID_FLOAT4 = 700
OID_FLOAT8 = 701
OID_UNKNOWN = 705
OID_BPCHAR = 1042
OID_VARCHAR = 1043
OID_DATE = 1082
OID_TIME = 1083
OID_TIMESTAMP = 1114
OID_TIMESTAMPTZ = 1184
OID_INTERVAL = 1186
OID_NUMERIC = 1700
OID_JSONB = 3802

_EPOCH_DATE = dt.date(2000, 1, 1)
_EPOCH = dt.datetime(2000, 1, 1)
_EPOCH_UTC = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)
_INTEGER_RANGES = {
    OID_INT2: ("smallint", -(2**15), 2**15 - 1),
    OID_INT4: ("integer", -(2**31), 2**31 - 1),
    OID_INT8: ("bigint", -(2**63), 2**63 - 1),
    OID_OID: ("oid", 0, 2**32 - 1),
}
_TRUE_WORDS = {"t", "tr", "tru", "true", "y", "ye", "yes", "on", "1"}
_FALSE_WORDS = {"f", "fa", "fal", "fals", "false", "n", "no", "of", "off", "0"}
_TYPE_NAMES = {
    OID_BOOL: "boolean",
    OID_INT2: "smallint",
    OID_INT4: "integer",
    OID_INT8: "bigint",
    OID_FLOAT4: "real",
    OID_FLOAT8: "double precision",
    OID_NUMERIC: "numeric",
    OID_DATE: "date",
    OID_TIME: "time",
    OID_TIMESTAMP: "timestamp",
    OID_TIMESTAMPTZ: "timestamp with time zone",
    OID_BYTEA: "bytea",
}


# ---- parameters -------------------------------------------------------------


def decode_parameter(raw: bytes | None, type_oid: int, format_code: int) -> object:
    """The Python value of one Bind parameter."""
    if raw is None:
        return None
    if format_code == 1:
        return _decode_binary(raw, type_oid)
    if format_code != 0:
        raise FeatureNotSupported(f"parameter format code {format_code} is not supported")
    text = raw.decode("utf-8")
    element_oid = ARRAY_ELEMENT.get(type_oid)
    if element_oid is not None:
        items = parse_array(text)
        return [decode_parameter(None if item is None else item.encode("utf-8"), element_oid, 0) for item in items]
    decoder = _TEXT_DECODERS.get(type_oid)
    if decoder is None:
        return text
    try:
        return decoder(text, type_oid)
    except (ValueError, ArithmeticError) as e:
        cls = (
            InvalidDatetimeFormat
            if type_oid in (OID_DATE, OID_TIME, OID_TIMESTAMP, OID_TIMESTAMPTZ)
            else (InvalidTextRepresentation)
        )
        raise cls(f'invalid input syntax for type {_TYPE_NAMES.get(type_oid, "text")}: "{text}"') from e


def _text_integer(text: str, type_oid: int) -> int:
    value = int(text.strip())
    name, low, high = _INTEGER_RANGES[type_oid]
    if not low <= value <= high:
        raise NumericValueOutOfRange(f'value "{text.strip()}" is out of range for type {name}')
    return value


def _text_float(text: str, _: int) -> float:
    return float(text.strip())


def _text_numeric(text: str, _: int) -> decimal.Decimal:
    value = decimal.Decimal(text.strip())
    if value.is_nan() and text.strip().lower() != "nan":
        raise ValueError(text)
    return value


def _text_bool(text: str, _: int) -> bool:
    word = text.strip().lower()
    if word in _TRUE_WORDS:
        return True
    if word in _FALSE_WORDS:
        return False
    raise ValueError(text)


def _text_date(text: str, _: int) -> dt.date:
    return dt.date.fromisoformat(text.strip())


def _text_time(text: str, _: int) -> dt.time:
    return dt.time.fromisoformat(text.strip())


def _text_timestamp(text: str, _: int) -> dt.datetime:
    # PostgreSQL ignores a zone offset written into a timestamp without time zone.
    return parse_timestamp_text(text).replace(tzinfo=None)


def _text_timestamptz(text: str, _: int) -> dt.datetime:
    value = parse_timestamp_text(text)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def _text_bytea(text: str, _: int) -> bytes:
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i] != "\\":
            out.extend(text[i].encode("utf-8"))
            i += 1
        elif text[i + 1 : i + 2] == "\\":
            out.append(0x5C)
            i += 2
        else:
            out.append(int(text[i + 1 : i + 4], 8))
            i += 4
    return bytes(out)


_TEXT_DECODERS: dict[int, Callable[[str, int], object]] = {
    OID_BOOL: _text_bool,
    OID_INT2: _text_integer,
    OID_INT4: _text_integer,
    OID_INT8: _text_integer,
    OID_OID: _text_integer,
    OID_FLOAT4: _text_float,
    OID_FLOAT8: _text_float,
    OID_NUMERIC: _text_numeric,
    OID_DATE: _text_date,
    OID_TIME: _text_time,
    OID_TIMESTAMP: _text_timestamp,
    OID_TIMESTAMPTZ: _text_timestamptz,
    OID_BYTEA: _text_bytea,
}


def _decode_binary(raw: bytes, type_oid: int) -> object:
    decoder = _BINARY_DECODERS.get(type_oid)
    if decoder is None:
        raise FeatureNotSupported(f"binary format for parameters of type oid {type_oid} is not supported")
    try:
        return decoder(raw)
    except (struct.error, ValueError, OverflowError) as e:
        raise InvalidTextRepresentation(f"incorrect binary data format in parameter of type oid {type_oid}") from e


def _unpack_one(fmt: str) -> Callable[[bytes], Any]:
    layout = struct.Struct(fmt)
    return lambda raw: layout.unpack(raw)[0]


def decode_numeric_binary(raw: bytes) -> decimal.Decimal:
    ndigits, weight, sign, dscale = struct.unpack_from("!hhHh", raw)
    if sign == 0xC000:
        return decimal.Decimal("NaN")
    if sign == 0xD000:
        return decimal.Decimal("Infinity")
    if sign == 0xF000:
        return decimal.Decimal("-Infinity")
    digits = struct.unpack_from(f"!{ndigits}H", raw, 8)
    text = "".join(f"{d:04d}" for d in digits) or "0"
    value = decimal.Decimal(text).scaleb((weight + 1 - ndigits) * 4)
    value = value.quantize(decimal.Decimal(1).scaleb(-dscale), context=decimal.Context(prec=1000))
    return -value if sign == 0x4000 else value


def _binary_interval(raw: bytes) -> str:
    micros, days, months = struct.unpack("!qii", raw)
    return format_interval(months, days, micros * 1000)


def _binary_jsonb(raw: bytes) -> str:
    if raw[:1] != b"\x01":
        raise ValueError("unsupported jsonb version")
    return raw[1:].decode("utf-8")


_BINARY_DECODERS: dict[int, Callable[[bytes], object]] = {
    OID_BOOL: lambda raw: raw != b"\x00",
    OID_INT2: _unpack_one("!h"),
    OID_INT4: _unpack_one("!i"),
    OID_INT8: _unpack_one("!q"),
    OID_OID: _unpack_one("!I"),
    OID_FLOAT4: _unpack_one("!f"),
    OID_FLOAT8: _unpack_one("!d"),
    OID_TEXT: lambda raw: raw.decode("utf-8"),
    OID_VARCHAR: lambda raw: raw.decode("utf-8"),
    OID_BPCHAR: lambda raw: raw.decode("utf-8"),
    OID_NAME: lambda raw: raw.decode("utf-8"),
    OID_CHAR: lambda raw: raw.decode("utf-8"),
    OID_UNKNOWN: lambda raw: raw.decode("utf-8"),
    OID_JSON: lambda raw: raw.decode("utf-8"),
    OID_JSONB: _binary_jsonb,
    OID_BYTEA: bytes,
    OID_NUMERIC: decode_numeric_binary,
    OID_DATE: lambda raw: _EPOCH_DATE + dt.timedelta(days=struct.unpack("!i", raw)[0]),
    OID_TIME: lambda raw: (_EPOCH + struct.unpack("!q", raw)[0] * _MICROSECOND).time(),
    OID_TIMESTAMP: lambda raw: _EPOCH + struct.unpack("!q", raw)[0] * _MICROSECOND,
    OID_TIMESTAMPTZ: lambda raw: _EPOCH_UTC + struct.unpack("!q", raw)[0] * _MICROSECOND,
    OID_INTERVAL: _binary_interval,
}


# ---- results ----------------------------------------------------------------

ValueEncoder = Callable[[Any], "bytes | None"]


def encoder_for(sql_type: SqlType, format_code: int) -> ValueEncoder:
    """A function turning one value of ``sql_type`` into its wire bytes (None for NULL)."""
    if format_code == 0:
        return _text_encoder(sql_type)
    if format_code != 1:
        raise FeatureNotSupported(f"result format code {format_code} is not supported")
    encode = _BINARY_ENCODERS.get(sql_type.pg_oid)
    if encode is None:
        raise FeatureNotSupported(f"binary output of type {sql_type} is not supported; request text format")
    return lambda value: None if value is None else encode(value)


def _text_encoder(sql_type: SqlType) -> ValueEncoder:
    to_text = sql_type.to_text
    if type(sql_type) is SqlType and sql_type.kind in ("character varying", "text"):
        return lambda value: (
            None if value is None else value.encode("utf-8") if isinstance(value, str) else _encode_text(to_text(value))
        )
    if type(sql_type) is SqlType and sql_type.kind in ("smallint", "integer", "bigint"):
        return lambda value: None if value is None else str(int(value)).encode("ascii")
    return lambda value: None if value is None else _encode_text(to_text(value))


def _encode_text(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8")


def _as_decimal(value: Any) -> decimal.Decimal:
    return value if isinstance(value, decimal.Decimal) else decimal.Decimal(str(value))


def encode_numeric_binary(value: Any) -> bytes:
    number = _as_decimal(value)
    if number.is_nan():
        return struct.pack("!hhHh", 0, 0, 0xC000, 0)
    if number.is_infinite():
        return struct.pack("!hhHh", 0, 0, 0xD000 if number > 0 else 0xF000, 0)
    sign, digit_tuple, exponent = number.as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple))
    scale = max(0, -exponent)
    if exponent >= 0:
        integer_part, fraction = digits + "0" * exponent, ""
    elif len(digits) > scale:
        integer_part, fraction = digits[:exponent], digits[exponent:]
    else:
        integer_part, fraction = "", digits.rjust(scale, "0")
    integer_part = integer_part.lstrip("0")
    integer_part = "0" * (-len(integer_part) % 4) + integer_part
    fraction = fraction + "0" * (-len(fraction) % 4)
    joined = integer_part + fraction
    groups = [int(joined[i : i + 4]) for i in range(0, len(joined), 4)]
    weight = len(integer_part) // 4 - 1
    while groups and groups[0] == 0:
        groups.pop(0)
        weight -= 1
    while groups and groups[-1] == 0:
        groups.pop()
    if not groups:
        weight = 0
    header = struct.pack("!hhHh", len(groups), weight, 0x4000 if sign else 0, scale)
    return header + struct.pack(f"!{len(groups)}H", *groups)


def _binary_timestamp(value: Any) -> bytes:
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return struct.pack("!q", (value - _EPOCH) // _MICROSECOND)


def _binary_time(value: Any) -> bytes:
    micros = ((value.hour * 60 + value.minute) * 60 + value.second) * 1_000_000 + value.microsecond
    return struct.pack("!q", micros)


def _binary_interval_out(value: Any) -> bytes:
    if isinstance(value, dt.timedelta):
        return struct.pack("!qii", value.seconds * 1_000_000 + value.microseconds, value.days, 0)
    return struct.pack("!qii", value.nanoseconds // 1000, value.days, value.months)


def _binary_text(value: Any) -> bytes:
    return (value if isinstance(value, str) else str(value)).encode("utf-8")


def _binary_jsonb_out(value: Any) -> bytes:
    text = SqlType("jsonb").to_text(value) or ""
    return b"\x01" + text.encode("utf-8")


_BINARY_ENCODERS: dict[int, Callable[[Any], bytes]] = {
    OID_BOOL: lambda v: b"\x01" if v else b"\x00",
    OID_INT2: lambda v: struct.pack("!h", int(v)),
    OID_INT4: lambda v: struct.pack("!i", int(v)),
    OID_INT8: lambda v: struct.pack("!q", int(v)),
    OID_OID: lambda v: struct.pack("!I", int(v)),
    OID_FLOAT4: lambda v: struct.pack("!f", float(v)),
    OID_FLOAT8: lambda v: struct.pack("!d", float(v)),
    OID_TEXT: _binary_text,
    OID_VARCHAR: _binary_text,
    OID_NAME: _binary_text,
    OID_CHAR: _binary_text,
    OID_BPCHAR: _binary_text,
    OID_JSON: _binary_text,
    OID_JSONB: _binary_jsonb_out,
    OID_BYTEA: bytes,
    OID_NUMERIC: encode_numeric_binary,
    OID_DATE: lambda v: struct.pack("!i", (v - _EPOCH_DATE).days),
    OID_TIME: _binary_time,
    OID_TIMESTAMP: _binary_timestamp,
    OID_TIMESTAMPTZ: _binary_timestamp,
    OID_INTERVAL: _binary_interval_out,
}
