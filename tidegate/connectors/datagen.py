"""The datagen generator: rows of declared columns, each a pure function of (options, row number).

Place in the data flow: a datagen source (``stream/operators/datagen_source.py``) asks
for the rows ``[first, first + count)`` and emits them; this module only computes them.
The options are validated into ``DatagenOptions`` by ``connectors/datagen_options.py``.

Invariants:

- Row ``n`` depends on nothing but the options and ``n``: generating ``[a, c)`` gives
  the same rows as ``[a, b)`` then ``[b, c)``, which is what lets a source replay from
  a checkpointed offset and every view over a source see the same rows.
- Randomness is counter based, as in the nexmark generator: the draw of row ``n`` for a
  column is SplitMix64's finalizer over ``n`` and a key made of the seed and the column's
  name, so each column is computed with numpy over a whole chunk and adding, dropping or
  reordering other columns never changes it.

Per column, by kind:

- ``sequence`` (numbers, and text as the decimal digits of one): ``start + n``; the
  source ends after ``end - start + 1`` rows.
- ``random``: integers uniform in ``[min, max]``, floats in ``[min, max)``, numerics in
  ``[min, max]`` in steps of the column's scale, booleans, text of ``length`` letters and
  digits, and times in ``[base - max_past, base]`` where ``base`` is the base time (or,
  ``relative``, the base time plus ``n / rows_per_second`` seconds: the time row ``n``
  is due at the configured rate).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from tidegate.common.types import SqlType

__all__ = ["DatagenOptions", "FieldSpec", "generate_rows"]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]

INTEGER_KINDS = ("smallint", "integer", "bigint")
FLOAT_KINDS = ("real", "double precision")
TEXT_KINDS = ("character varying", "text")
TIME_KINDS = ("timestamp without time zone", "timestamp with time zone", "date")
DAY_US = 86_400_000_000
ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", dtype=np.uint8)

_UINT64_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class FieldSpec:
    """How one column is generated. Numbers are in the units the generator works in: integers as
    they are, numerics as unscaled integers (``value * 10**scale``), times in microseconds."""

    name: str
    sql_type: SqlType
    kind: str  # "random" or "sequence"
    seed: int
    low: int | float = 0  # random: min; sequence: start
    high: int | float = 0  # random: max; sequence: end
    length: int = 10  # random text
    base_us: int = 0  # random times: the base time
    max_past_us: int = 0  # random times: how far before the base a time may be
    relative: bool = False  # random times: the base moves with the row's due time


@dataclass(frozen=True)
class DatagenOptions:
    fields: tuple[FieldSpec, ...]
    rows_per_second: int
    # Rows to generate in all (datagen.rows.num and the sequences' ends); None: unbounded.
    row_count: int | None
    chunk_rows_max: int


def generate_rows(options: DatagenOptions, first: int, count: int) -> list[pa.Array]:
    """The declared columns of rows ``[first, first + count)``, in tidegate's Arrow types."""
    assert first >= 0 and count >= 0, (first, count)
    rows = np.arange(first, first + count, dtype=np.int64)
    return [_column(spec, rows, options.rows_per_second) for spec in options.fields]


def _column(spec: FieldSpec, rows: I64, rows_per_second: int) -> pa.Array:
    kind, arrow = spec.sql_type.kind, spec.sql_type.arrow
    if spec.kind == "sequence":
        if kind == "numeric":
            return _decimals(int(spec.low) + rows * 10**arrow.scale, arrow)
        if kind in FLOAT_KINDS:
            return pa.array(float(spec.low) + rows.astype(np.float64), arrow)
        values = pa.array(int(spec.low) + rows, pa.int64())
        return values.cast(pa.string()) if kind in TEXT_KINDS else values.cast(arrow)
    words = _words(_stream_key(spec), rows)
    if kind in INTEGER_KINDS:
        return pa.array(_uniform_integers(words, int(spec.low), int(spec.high)), pa.int64()).cast(arrow)
    if kind == "numeric":
        return _decimals(_uniform_integers(words, int(spec.low), int(spec.high)), arrow)
    if kind in FLOAT_KINDS:
        unit = (words >> np.uint64(11)).astype(np.float64) * 2.0**-53
        values = float(spec.low) + unit * (float(spec.high) - float(spec.low))
        return pa.array(values.astype(np.float32) if kind == "real" else values, arrow)
    if kind == "boolean":
        return pa.array((words >> np.uint64(63)).astype(bool), arrow)
    if kind in TEXT_KINDS:
        return _text(_row_keys(_stream_key(spec), rows), spec.length)
    assert kind in TIME_KINDS, kind
    base = np.full(len(rows), spec.base_us, dtype=np.int64)
    if spec.relative:
        base += rows * 1_000_000 // rows_per_second
    if kind == "date":
        span_days = spec.max_past_us // DAY_US
        days = np.floor_divide(base, DAY_US) - (words % np.uint64(span_days + 1)).astype(np.int64)
        return pa.array(days.astype(np.int32), pa.int32()).cast(pa.date32())
    values = base - (words % np.uint64(spec.max_past_us + 1)).astype(np.int64)
    return pa.array(values, pa.int64()).cast(arrow)


def _uniform_integers(words: U64, low: int, high: int) -> I64:
    """Integers in ``[low, high]``: a word modulo the span (its bias is below 2**-32 for spans under 2**32)."""
    span = high - low + 1
    offsets = words if span > _UINT64_MASK else words % np.uint64(span)
    # low + offset in two's complement: the sum wraps to the right int64 even when low is negative.
    return (offsets + np.uint64(low & _UINT64_MASK)).view(np.int64)


def _decimals(unscaled: I64, arrow: pa.DataType) -> pa.Array:
    """decimal128 values from their unscaled int64 integers, sign-extended to 128 bits."""
    data = np.empty((len(unscaled), 2), dtype=np.int64)
    data[:, 0] = unscaled
    data[:, 1] = unscaled >> 63
    return pa.Array.from_buffers(arrow, len(unscaled), [None, pa.py_buffer(data.tobytes())])


def _text(row_keys: U64, length: int) -> pa.Array:
    """``length`` letters and digits per row, one draw per character."""
    steps = np.arange(1, length + 1, dtype=np.uint64) * np.uint64(_GOLDEN)
    draws = _mix64(row_keys[:, None] + steps[None, :])
    data = ALPHABET[draws % np.uint64(len(ALPHABET))]
    offsets = np.arange(0, (len(row_keys) + 1) * length, length, dtype=np.int32)
    return pa.StringArray.from_buffers(len(row_keys), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data.tobytes()))


# ---- counter-based randomness ----


def _stream_key(spec: FieldSpec) -> int:
    """The key of a column's random stream: its seed and its name."""
    name_hash = int.from_bytes(hashlib.blake2b(spec.name.encode(), digest_size=8).digest(), "little")
    return _mix64_int(_mix64_int(spec.seed) ^ name_hash)


def _row_keys(stream_key: int, rows: I64) -> U64:
    return _mix64(rows.astype(np.uint64) * np.uint64(_GOLDEN) + np.uint64(stream_key))


def _words(stream_key: int, rows: I64) -> U64:
    """One random 64-bit word per row."""
    return _mix64(_row_keys(stream_key, rows) + np.uint64(_GOLDEN))


def _mix64(z: U64) -> U64:
    """SplitMix64's finalizer (wrapping uint64 arithmetic)."""
    z = z ^ (z >> np.uint64(30))
    z = z * _MIX1
    z = z ^ (z >> np.uint64(27))
    z = z * _MIX2
    return z ^ (z >> np.uint64(31))


def _mix64_int(z: int) -> int:
    z &= _UINT64_MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _UINT64_MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _UINT64_MASK
    return z ^ (z >> 31)
