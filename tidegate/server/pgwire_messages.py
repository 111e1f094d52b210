"""PostgreSQL wire protocol v3 message framing: backend messages out, frontend payloads in.

Pure functions and a payload reader; no I/O. ``tidegate.server.pgwire`` owns
the socket and the protocol state machine. Message layouts follow the
PostgreSQL documentation, chapter "Frontend/Backend Protocol — Message Formats".
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from tidegate.errors import ProtocolViolation

PROTOCOL_V3 = 196608  # 3 << 16
SSL_REQUEST_CODE = 80877103
GSSENC_REQUEST_CODE = 80877104
CANCEL_REQUEST_CODE = 80877102
STARTUP_BYTES_MAX = 10_000
MESSAGE_BYTES_MAX = 1 << 30

_INT16 = struct.Struct("!h")
_INT32 = struct.Struct("!i")
_HEADER = struct.Struct("!ci")


def message(kind: bytes, payload: bytes = b"") -> bytes:
    """One backend message: a type byte, a length that counts itself, the payload."""
    return _HEADER.pack(kind, len(payload) + 4) + payload


def cstring(text: str) -> bytes:
    return text.encode("utf-8") + b"\x00"


def authentication_ok() -> bytes:
    return message(b"R", _INT32.pack(0))


def authentication_sasl(mechanisms: Sequence[str]) -> bytes:
    return message(b"R", _INT32.pack(10) + b"".join(cstring(m) for m in mechanisms) + b"\x00")


def authentication_sasl_continue(data: bytes) -> bytes:
    return message(b"R", _INT32.pack(11) + data)


def authentication_sasl_final(data: bytes) -> bytes:
    return message(b"R", _INT32.pack(12) + data)


def parameter_status(name: str, value: str) -> bytes:
    return message(b"S", cstring(name) + cstring(value))


def backend_key_data(process_id: int, secret_key: int) -> bytes:
    return message(b"K", struct.pack("!ii", process_id, secret_key))


def negotiate_protocol_version(minor_supported: int, unrecognized: Sequence[str]) -> bytes:
    payload = struct.pack("!ii", minor_supported, len(unrecognized)) + b"".join(cstring(o) for o in unrecognized)
    return message(b"v", payload)


def ready_for_query(status: str) -> bytes:
    return message(b"Z", status.encode("ascii"))


@dataclass(frozen=True)
class FieldDescription:
    name: str
    type_oid: int
    type_size: int
    type_modifier: int
    format_code: int
    table_oid: int = 0
    column_number: int = 0


def row_description(fields: Sequence[FieldDescription]) -> bytes:
    parts = [_INT16.pack(len(fields))]
    for f in fields:
        parts.append(cstring(f.name))
        parts.append(
            struct.pack(
                "!ihihih", f.table_oid, f.column_number, f.type_oid, f.type_size, f.type_modifier, f.format_code
            )
        )
    return message(b"T", b"".join(parts))


def data_row(values: Sequence[bytes | None]) -> bytes:
    parts = [_INT16.pack(len(values))]
    for value in values:
        if value is None:
            parts.append(b"\xff\xff\xff\xff")
        else:
            parts.append(_INT32.pack(len(value)))
            parts.append(value)
    return message(b"D", b"".join(parts))


def command_complete(tag: str) -> bytes:
    return message(b"C", cstring(tag))


def empty_query_response() -> bytes:
    return message(b"I")


def parse_complete() -> bytes:
    return message(b"1")


def bind_complete() -> bytes:
    return message(b"2")


def close_complete() -> bytes:
    return message(b"3")


def no_data() -> bytes:
    return message(b"n")


def portal_suspended() -> bytes:
    return message(b"s")


def parameter_description(type_oids: Sequence[int]) -> bytes:
    return message(b"t", _INT16.pack(len(type_oids)) + b"".join(struct.pack("!I", o & 0xFFFFFFFF) for o in type_oids))


def copy_in_response(column_count: int) -> bytes:
    """CopyInResponse for text or CSV: overall format 0 and every column text."""
    return message(b"G", struct.pack("!bh", 0, column_count) + b"\x00\x00" * column_count)


def _fields(kind: bytes, fields: dict[str, str]) -> bytes:
    payload = b"".join(code.encode("ascii") + cstring(value) for code, value in fields.items() if value is not None)
    return message(kind, payload + b"\x00")


def error_response(fields: dict[str, str]) -> bytes:
    """ErrorResponse; ``fields`` maps one-letter codes (S, V, C, M, D, H, P, W) to values."""
    return _fields(b"E", fields)


def notice_response(fields: dict[str, str]) -> bytes:
    return _fields(b"N", fields)


class PayloadReader:
    """Reads the fields of one frontend message payload."""

    def __init__(self, payload: bytes) -> None:
        self._payload = payload
        self._offset = 0

    def _take(self, size: int) -> bytes:
        end = self._offset + size
        if size < 0 or end > len(self._payload):
            raise ProtocolViolation("invalid message format: message is shorter than its fields")
        chunk = self._payload[self._offset : end]
        self._offset = end
        return chunk

    def int16(self) -> int:
        value: int = _INT16.unpack(self._take(2))[0]
        return value

    def int32(self) -> int:
        value: int = _INT32.unpack(self._take(4))[0]
        return value

    def uint32(self) -> int:
        value: int = struct.unpack("!I", self._take(4))[0]
        return value

    def byte(self) -> bytes:
        return self._take(1)

    def take(self, size: int) -> bytes:
        return self._take(size)

    def rest(self) -> bytes:
        return self._take(len(self._payload) - self._offset)

    def cstring(self) -> str:
        end = self._payload.find(b"\x00", self._offset)
        if end < 0:
            raise ProtocolViolation("invalid message format: string is not terminated")
        text = self._payload[self._offset : end]
        self._offset = end + 1
        try:
            return text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ProtocolViolation("invalid byte sequence for encoding UTF8") from e

    @property
    def remaining(self) -> int:
        return len(self._payload) - self._offset
