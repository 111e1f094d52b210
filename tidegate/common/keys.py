"""Memcomparable encoding of primary keys: byte order equals SQL order.

Place in the data flow (DESIGN §3, §6): the state store sorts, range-scans and
looks up rows by their primary key. Comparing Python tuples row by row is far
too slow, so every key is turned into one byte string whose plain ``memcmp``
order is the SQL order of the key tuple. SSTs sort by these bytes, bloom
filters hash them, block indexes bisect them.

Layout of one column (all big-endian)::

    NULL      0x00, then zero bytes up to the type's width (fixed-width types)
    value     0x01, then the value bytes below

    boolean          1 byte, 0 or 1
    signed ints      two's complement with the sign bit flipped (so -1 < 0 < 1 bytewise);
                     date32, date64, time32/64, timestamp (any unit/zone), duration likewise
    unsigned ints    as they are
    float32/64       IEEE bits; negative: all bits inverted, positive: sign bit set.
                     -0.0 is written as 0.0 and every NaN as one NaN, which sorts after
                     +Infinity, as in PostgreSQL
    decimal          the unscaled two's complement integer (16 bytes for decimal128),
                     sign bit flipped; the scale is the column's, so it never varies
    interval         (month_day_nano) ordered as PostgreSQL orders intervals: by the
                     total span with 30-day months, then by (months, days, nanos) so that
                     distinct values keep distinct keys. 32 bytes: whole days of the span
                     (int64), the remaining nanoseconds (uint64), months, days, nanos
    fixed binary     the bytes
    string/binary    the bytes with every 0x00 written 0x00 0xFF, then 0x00 0x00. The
                     terminator is below every escaped byte, so a prefix sorts first, and
                     the encoding is self-delimiting (no encoded value is a prefix of another)

A NULL fixed-width value keeps the type's width so that keys made only of
fixed-width columns are themselves fixed-width (a plain ``(n, width)`` matrix,
the fast path). A descending column has every byte of its encoding inverted,
marker included: order reverses and NULLs move last. Inverting is sound only
because each column's encoding is prefix-free. Multi-column keys are the
concatenation of their columns.

Everything is vectorized with numpy over whole arrays; no per-row Python runs,
not even for strings (their escaping is a scatter over the data buffer).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.errors import InternalError

__all__ = ["KEY_TYPE", "decode_keys", "encode_columns", "encode_keys", "key_width"]

KEY_TYPE = pa.binary()

NULL_MARKER = 0x00
VALUE_MARKER = 0x01
ESCAPE_BYTE = 0xFF
NANOSECONDS_PER_DAY = 86_400 * 1_000_000_000
INTERVAL_WIDTH = 32  # days of span (8) + rest ns (8) + months (4) + days (4) + nanos (8)

_INTERVAL_DTYPE = np.dtype([("months", "<i4"), ("days", "<i4"), ("nanos", "<i8")])
_I32_MAX = np.iinfo(np.int32).max


@dataclass
class _Column:
    """One column's encoding: a (n, width) matrix, or per-row lengths plus concatenated bytes."""

    matrix: np.ndarray | None = None
    lengths: np.ndarray | None = None
    data: np.ndarray | None = None


# ---- public API ----------------------------------------------------------------------------------
def encode_keys(
    table: pa.Table | pa.RecordBatch, pk: Sequence[int], descending: Sequence[bool] | None = None
) -> pa.Array:
    """One memcomparable key per row of ``table``, from the columns at indices ``pk``.

    Returns a ``binary`` array (``large_binary`` only past 2 GiB of keys). With
    ``pk == []`` every key is ``b""``.

    >>> t = pa.table({"id": [2, None, -1], "name": ["b", "a", "a\\x00"]})
    >>> keys = encode_keys(t, [0, 1]).to_pylist()
    >>> sorted(range(3), key=lambda i: keys[i])
    [1, 2, 0]
    """
    return encode_columns([table.column(i) for i in pk], descending, row_count=table.num_rows)


def encode_columns(
    columns: Sequence[pa.Array | pa.ChunkedArray],
    descending: Sequence[bool] | None = None,
    *,
    row_count: int | None = None,
) -> pa.Array:
    """Like :func:`encode_keys`, over a list of key columns of equal length (``row_count`` if none)."""
    if descending is None:
        descending = [False] * len(columns)
    assert len(descending) == len(columns), (len(descending), len(columns))
    arrays = [_single_array(c) for c in columns]
    n = len(arrays[0]) if arrays else (row_count or 0)
    assert all(len(a) == n for a in arrays), [len(a) for a in arrays]
    encoded = []
    for array, desc in zip(arrays, descending):
        column = _encode_column(array)
        if desc:
            _invert(column)
        encoded.append(column)
    return _concatenate(encoded, n)


def key_width(types: Sequence[pa.DataType]) -> int | None:
    """The byte length of every key of these column types, or None if it varies (strings)."""
    total = 0
    for t in types:
        width = _value_width(_storage_type(t))
        if width is None:
            return None
        total += 1 + width
    return total


def decode_keys(
    keys: pa.Array | pa.ChunkedArray, schema: pa.Schema, descending: Sequence[bool] | None = None
) -> pa.Table:
    """The key columns back from their encoding: the inverse of :func:`encode_keys`.

    ``schema`` holds the key columns' fields, in key order. -0.0 comes back as 0.0
    and every NaN as the one NaN, which is all the encoding keeps. Raises ValueError
    on bytes that are not a key of that schema.
    """
    if descending is None:
        descending = [False] * len(schema)
    assert len(descending) == len(schema)
    array = _single_array(keys)
    offsets = _offsets(array)
    data_buffer = array.buffers()[2]
    data = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    if array.null_count:
        raise ValueError("a NULL where an encoded key was expected")
    cursor = offsets[:-1].copy()
    columns = []
    for field, desc in zip(schema, descending):
        column, cursor = _decode_column(data, cursor, offsets[1:], field.type, desc)
        columns.append(column)
    if not np.array_equal(cursor, offsets[1:]):
        raise ValueError("encoded keys are longer than the schema says")
    return pa.Table.from_arrays(columns, schema=schema)


# ---- encoding ------------------------------------------------------------------------------------
def _single_array(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return column.chunk(0)
        return column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column


def _storage_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _storage_type(t.value_type)
    if t == pa.string_view():
        return pa.large_string()
    if t == pa.binary_view():
        return pa.large_binary()
    return t


def _value_width(t: pa.DataType) -> int | None:
    """Bytes after the marker for a fixed-width type; None for variable width."""
    if _is_variable(t):
        return None
    if pa.types.is_null(t):
        return 0
    if pa.types.is_boolean(t):
        return 1
    if t == pa.month_day_nano_interval():
        return INTERVAL_WIDTH
    if pa.types.is_float16(t):
        raise InternalError(f"no memcomparable encoding for arrow type {t}")
    try:
        return int(t.byte_width)
    except ValueError as e:
        raise InternalError(f"no memcomparable encoding for arrow type {t}") from e


def _is_variable(t: pa.DataType) -> bool:
    return bool(
        pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t) or pa.types.is_large_binary(t)
    )


def _is_signed(t: pa.DataType) -> bool:
    """Types stored as a little-endian two's complement integer."""
    return bool(
        pa.types.is_signed_integer(t)
        or pa.types.is_temporal(t)  # date, time, timestamp, duration (interval is handled before)
        or pa.types.is_decimal(t)
    )


def _encode_column(array: pa.Array) -> _Column:
    t = _storage_type(array.type)
    if t != array.type:
        array = array.dictionary_decode() if pa.types.is_dictionary(array.type) else array.cast(t)
    nulls = _null_mask(array)
    if _is_variable(t):
        return _encode_variable(array, nulls)
    width = _value_width(t)
    assert width is not None
    n = len(array)
    matrix = np.empty((n, 1 + width), np.uint8)
    matrix[:, 0] = VALUE_MARKER
    if width:
        matrix[:, 1:] = _fixed_value_bytes(array, t, width)
    if nulls is not None:
        matrix[nulls] = 0
    return _Column(matrix=matrix)


def _null_mask(array: pa.Array) -> np.ndarray | None:
    if pa.types.is_null(array.type):
        return np.ones(len(array), bool)
    if not array.null_count:
        return None
    return np.asarray(array.is_null().to_numpy(zero_copy_only=False), bool)


def _raw_values(array: pa.Array, width: int) -> np.ndarray:
    """The value buffer as a (n, width) uint8 matrix (garbage in NULL slots)."""
    n = len(array)
    buffer = array.buffers()[1]
    if buffer is None or n == 0:
        return np.zeros((n, width), np.uint8)
    raw = np.frombuffer(buffer, np.uint8, (array.offset + n) * width)
    return raw[array.offset * width :].reshape(n, width)


def _fixed_value_bytes(array: pa.Array, t: pa.DataType, width: int) -> np.ndarray:
    n = len(array)
    if pa.types.is_boolean(t):
        values = pc.fill_null(array, False).to_numpy(zero_copy_only=False)
        return np.asarray(values, np.uint8).reshape(n, 1)
    if t == pa.month_day_nano_interval():
        return _interval_bytes(_raw_values(array, 16).copy().view(_INTERVAL_DTYPE).reshape(n))
    raw = _raw_values(array, width)
    if pa.types.is_floating(t):
        return _float_bytes(raw, width)
    if pa.types.is_fixed_size_binary(t):
        return raw
    big_endian = raw[:, ::-1]
    if _is_signed(t):
        big_endian = big_endian.copy()
        big_endian[:, 0] ^= 0x80
        return big_endian
    if pa.types.is_unsigned_integer(t):
        return big_endian
    raise InternalError(f"no memcomparable encoding for arrow type {t}")


def _float_bytes(raw: np.ndarray, width: int) -> np.ndarray:
    float_dtype, uint_dtype = np.dtype(f"<f{width}"), np.dtype(f"<u{width}")
    values: np.ndarray = raw.copy().view(float_dtype).reshape(len(raw))
    # Adding +0.0 turns -0.0 into 0.0; NaNs of any payload collapse into one, the largest value.
    values = np.where(np.isnan(values), np.nan, values + 0.0).astype(float_dtype)
    bits: np.ndarray = values.view(uint_dtype)
    sign = np.array(1 << (width * 8 - 1), dtype=uint_dtype)
    bits = np.where((bits & sign) != 0, ~bits, bits | sign)
    return bits.astype(f">u{width}").view(np.uint8).reshape(len(raw), width)


def _interval_bytes(values: np.ndarray) -> np.ndarray:
    """PostgreSQL's interval order: span with 30-day months, then the fields as a tie-break."""
    months = values["months"].astype(np.int64)
    days = values["days"].astype(np.int64)
    nanos = values["nanos"].astype(np.int64)
    # span = (months*30 + days) * ns_per_day + nanos, ~2^83 at most: written as whole days plus a rest
    # in [0, ns_per_day), which orders exactly like the span and fits two 64-bit words.
    whole_days, rest = np.divmod(nanos, NANOSECONDS_PER_DAY)
    whole_days = months * 30 + days + whole_days
    n = len(values)
    out = np.empty((n, INTERVAL_WIDTH), np.uint8)
    out[:, 0:8] = _signed_be(whole_days, 8)
    out[:, 8:16] = rest.astype(">u8").view(np.uint8).reshape(n, 8)
    out[:, 16:20] = _signed_be(values["months"], 4)
    out[:, 20:24] = _signed_be(values["days"], 4)
    out[:, 24:32] = _signed_be(nanos, 8)
    return out


def _signed_be(values: np.ndarray, width: int) -> np.ndarray:
    unsigned = values.astype(f"<i{width}").view(f"<u{width}")
    flipped = unsigned ^ np.array(1 << (width * 8 - 1), dtype=f"<u{width}")
    return flipped.astype(f">u{width}").view(np.uint8).reshape(len(values), width)


def _offsets(array: pa.Array) -> np.ndarray:
    dtype = np.int64 if pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type) else np.int32
    n = len(array)
    offsets = np.frombuffer(array.buffers()[1], dtype, array.offset + n + 1)[array.offset :]
    return offsets.astype(np.int64)


def _encode_variable(array: pa.Array, nulls: np.ndarray | None) -> _Column:
    """Escape 0x00 as 0x00 0xFF and terminate with 0x00 0x00, for every row at once."""
    n = len(array)
    if n == 0:
        return _Column(lengths=np.zeros(0, np.int64), data=np.zeros(0, np.uint8))
    offsets = _offsets(array)
    starts, lengths = offsets[:-1], np.diff(offsets)
    if nulls is not None:
        lengths = np.where(nulls, 0, lengths)
    data_buffer = array.buffers()[2]
    source = np.frombuffer(data_buffer, np.uint8) if data_buffer is not None else np.zeros(0, np.uint8)
    content_starts = np.cumsum(lengths) - lengths
    total = int(lengths.sum())
    if nulls is None and int(offsets[-1] - offsets[0]) == total:
        content = source[offsets[0] : offsets[-1]]
    else:
        content = source[np.arange(total, dtype=np.int64) + np.repeat(starts - content_starts, lengths)]
    is_zero = content == 0
    zeros_before = np.zeros(total + 1, np.int64)
    np.cumsum(is_zero, out=zeros_before[1:])
    zeros = zeros_before[content_starts + lengths] - zeros_before[content_starts]
    encoded_lengths = 1 + lengths + zeros + 2
    if nulls is not None:
        encoded_lengths = np.where(nulls, 1, encoded_lengths)
    encoded_starts = np.cumsum(encoded_lengths) - encoded_lengths
    out = np.zeros(int(encoded_lengths.sum()), np.uint8)  # the terminators are already there
    out[encoded_starts] = VALUE_MARKER
    if nulls is not None:
        out[encoded_starts[nulls]] = NULL_MARKER
    # content byte k of row r lands at encoded_start[r] + 1 + (k - content_start[r]) + escapes before it
    shift = np.repeat(encoded_starts + 1 - content_starts - zeros_before[content_starts], lengths)
    positions = np.arange(total, dtype=np.int64) + zeros_before[:-1] + shift
    out[positions] = content
    out[positions[is_zero] + 1] = ESCAPE_BYTE
    return _Column(lengths=encoded_lengths, data=out)


def _invert(column: _Column) -> None:
    if column.matrix is not None:
        np.invert(column.matrix, out=column.matrix)
    else:
        assert column.data is not None
        np.invert(column.data, out=column.data)


def _concatenate(columns: list[_Column], n: int) -> pa.Array:
    if all(c.matrix is not None for c in columns):
        width = sum(c.matrix.shape[1] for c in columns if c.matrix is not None)
        if columns:
            matrices = [c.matrix for c in columns if c.matrix is not None]
            data = matrices[0] if len(matrices) == 1 else np.hstack(matrices)
        else:
            data = np.zeros((n, 0), np.uint8)
        return _binary_array(np.arange(n + 1, dtype=np.int64) * width, np.ascontiguousarray(data).reshape(-1))
    lengths = np.zeros(n, np.int64)
    for c in columns:
        if c.matrix is not None:
            lengths += c.matrix.shape[1]
        else:
            assert c.lengths is not None
            lengths += c.lengths
    row_starts = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=row_starts[1:])
    out = np.empty(int(row_starts[-1]), np.uint8)
    cursor = row_starts[:-1].copy()
    for c in columns:
        if c.matrix is not None:
            width = c.matrix.shape[1]
            out[cursor[:, None] + np.arange(width)] = c.matrix
            cursor += width
        else:
            assert c.lengths is not None and c.data is not None
            column_starts = np.cumsum(c.lengths) - c.lengths
            positions = np.arange(len(c.data), dtype=np.int64) + np.repeat(cursor - column_starts, c.lengths)
            out[positions] = c.data
            cursor += c.lengths
    return _binary_array(row_starts, out)


def _binary_array(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    n = len(offsets) - 1
    if len(data) <= _I32_MAX:
        return pa.Array.from_buffers(KEY_TYPE, n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)])
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)])


# ---- decoding ------------------------------------------------------------------------------------
def _decode_column(
    data: np.ndarray, cursor: np.ndarray, ends: np.ndarray, t: pa.DataType, descending: bool
) -> tuple[pa.Array, np.ndarray]:
    n = len(cursor)
    storage = _storage_type(t)
    if np.any(cursor >= ends):
        raise ValueError(f"encoded keys end before a {t} column")
    markers = data[cursor] ^ (0xFF if descending else 0)
    if np.any(markers > VALUE_MARKER):
        raise ValueError(f"bad NULL marker in an encoded {t} column")
    nulls = markers == NULL_MARKER
    if _is_variable(storage):
        array, cursor = _decode_variable(data, cursor, ends, nulls, storage, descending)
    else:
        width = _value_width(storage)
        assert width is not None
        if np.any(cursor + 1 + width > ends):
            raise ValueError(f"encoded keys end inside a {t} column")
        matrix = data[cursor[:, None] + 1 + np.arange(width)] if width else np.zeros((n, 0), np.uint8)
        if descending:
            matrix = ~matrix
        array = _decode_fixed(matrix, nulls, storage)
        cursor = cursor + 1 + width
    if storage != t:
        array = array.cast(t)
    return array, cursor


def _validity(nulls: np.ndarray) -> pa.Buffer | None:
    if not nulls.any():
        return None
    return pa.py_buffer(np.packbits(~nulls, bitorder="little"))


def _decode_fixed(matrix: np.ndarray, nulls: np.ndarray, t: pa.DataType) -> pa.Array:
    n = len(matrix)
    if pa.types.is_null(t):
        return pa.nulls(n)
    validity = _validity(nulls)
    if pa.types.is_boolean(t):
        return pa.Array.from_buffers(t, n, [validity, pa.py_buffer(np.packbits(matrix[:, 0] != 0, bitorder="little"))])
    if t == pa.month_day_nano_interval():
        values = np.zeros(n, _INTERVAL_DTYPE)
        values["months"] = _signed_from_be(matrix[:, 16:20])
        values["days"] = _signed_from_be(matrix[:, 20:24])
        values["nanos"] = _signed_from_be(matrix[:, 24:32])
        return pa.Array.from_buffers(t, n, [validity, pa.py_buffer(values.tobytes())])
    width = matrix.shape[1]
    if pa.types.is_floating(t):
        uint_type = np.dtype(f">u{width}")
        bits = np.ascontiguousarray(matrix).view(uint_type).reshape(n).astype(f"<u{width}")
        sign = bits.dtype.type(1) << bits.dtype.type(width * 8 - 1)
        bits = np.where((bits & sign) != 0, bits ^ sign, ~bits)
        little = bits.view(np.uint8)
    elif pa.types.is_fixed_size_binary(t):
        little = matrix
    else:
        big_endian = matrix.copy()
        if _is_signed(t):
            big_endian[:, 0] ^= 0x80
        little = big_endian[:, ::-1]
    return pa.Array.from_buffers(t, n, [validity, pa.py_buffer(np.ascontiguousarray(little).tobytes())])


def _signed_from_be(matrix: np.ndarray) -> np.ndarray:
    width = matrix.shape[1]
    big_endian = matrix.copy()
    big_endian[:, 0] ^= 0x80
    return big_endian.view(f">i{width}").reshape(len(matrix)).astype(f"<i{width}")


def _decode_variable(
    data: np.ndarray, cursor: np.ndarray, ends: np.ndarray, nulls: np.ndarray, t: pa.DataType, descending: bool
) -> tuple[pa.Array, np.ndarray]:
    n = len(cursor)
    terminator = 0xFF if descending else 0x00
    # Inside escaped content a 0x00 is always followed by 0xFF, so the first 0x00 0x00 pair
    # after a value's start is its terminator (0xFF 0xFF when the column is inverted).
    pairs = np.flatnonzero((data[:-1] == terminator) & (data[1:] == terminator))
    content_starts = cursor + 1
    found = np.searchsorted(pairs, content_starts)
    present = ~nulls
    if np.any(found[present] >= len(pairs)):
        raise ValueError(f"an encoded {t} value has no terminator")
    terminators = np.where(present, pairs[np.minimum(found, max(len(pairs) - 1, 0))] if len(pairs) else 0, 0)
    if np.any(present & (terminators + 2 > ends)):
        raise ValueError(f"an encoded {t} value runs past its key")
    escaped_lengths = np.where(present, terminators - content_starts, 0)
    escaped_starts = np.cumsum(escaped_lengths) - escaped_lengths
    total = int(escaped_lengths.sum())
    escaped = data[np.arange(total, dtype=np.int64) + np.repeat(content_starts - escaped_starts, escaped_lengths)]
    if descending:
        escaped = ~escaped
    dropped = np.zeros(total, bool)
    dropped[1:] = escaped[:-1] == 0
    kept_before = np.zeros(total + 1, np.int64)
    np.cumsum(~dropped, out=kept_before[1:])
    offsets = kept_before[np.append(escaped_starts, total)]
    values = escaped[~dropped]
    large = pa.types.is_large_string(t) or pa.types.is_large_binary(t)
    offsets_buffer = pa.py_buffer(offsets if large else offsets.astype(np.int32))
    array = pa.Array.from_buffers(t, n, [_validity(nulls), offsets_buffer, pa.py_buffer(values)])
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        array.validate(full=True)
    next_cursor = np.where(present, terminators + 2, cursor + 1)
    return array, next_cursor
