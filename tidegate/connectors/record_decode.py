"""RecordDecoder: the payloads of a source's records (Kafka messages, file lines) → Arrow rows.

Place in the data flow: a source operator (``stream/operators/kafka_source.py``, the file
source) reads a batch of payloads and decodes them here into a RecordBatch of the source's
declared columns; it then adds its own ``_row_id`` and emits the rows. A record that does not
decode is never an exception: it comes back in ``errors`` with a reason a user can act on, and
the source applies its ``on.error`` policy (``connectors/source_errors.py``).

Values follow PostgreSQL's input text: strings are cast with the casters of ``COPY FROM``
(``common/copy_text.py``), so a source and COPY read ``2026-11-28 10:00:00``, ``t`` or
``12.50`` alike, and numerics are exact (never a float round trip).

Decoding is vectorized (docs/design/20261128_kafka_source.md):

- JSON: the payloads are wrapped as ``{"v": <payload>}`` and joined into one newline-delimited
  text that ``pyarrow.json`` reads with an explicit schema. The wrapper makes every payload one
  row or a parse error (an empty payload, two objects, a bare number all fail). Booleans, integers,
  floats and numerics are read as their Arrow types; the other columns as strings, then cast.
  When a block fails, it is split in 16 parts, recursively, down to small segments, whose records are decoded one
  by one (``json.loads``): the record-by-record path defines the semantics, the block path is only
  its fast case. Declaring a JSONB column makes every record take the record-by-record path.
- CSV: ``pyarrow.csv`` splits the lines into string fields (an empty unquoted field is NULL, a
  quoted empty one the empty string); lines with the wrong field count come back through its
  invalid-row handler. Each column is then cast.
- Casting a string column finds the bad values by bisection (a failed cast names one bad row;
  the rest is cast again in halves), so a batch with a few bad records costs a few more casts.
"""

from __future__ import annotations

import decimal
import io
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json

# The casters of COPY FROM: the one implementation of PostgreSQL's input text in tidegate.
from tidegate.common.copy_text import TextContext, cast_text
from tidegate.common.result import Column
from tidegate.common.types import SqlType, parse_type_name
from tidegate.connectors.table_writer import ROW_ID_COLUMN
from tidegate.errors import DataError, FeatureNotSupported, InvalidParameterValue

__all__ = ["ENCODES", "DecodedRecords", "RecordDecoder", "decoder_for_source"]

ENCODES = ("JSON", "CSV")
# A failing JSON block this small is decoded record by record instead of split further.
_JSON_SEGMENT_RECORDS_MIN = 32
_JSON_SPLIT_PARTS = 16
# Types a JSON record may give as a JSON number or boolean, read as such by the block reader.
_JSON_NATIVE_KINDS = {"boolean", "smallint", "integer", "bigint", "real", "double precision", "numeric"}
_STRING_KINDS = {"character varying", "text"}
_JSON_KIND_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}


@dataclass(frozen=True)
class DecodedRecords:
    batch: pa.RecordBatch  # one row per record that decoded; columns = the declared columns
    kept: np.ndarray  # int64 indices (into the input list) of the records in ``batch``, increasing
    errors: list[tuple[int, str]]  # (index into the input list, reason) per record that did not decode


class RecordDecoder:
    """Decodes payloads of one encode (JSON or CSV) into the declared columns."""

    def __init__(
        self, encode: str, column_names: list[str], column_types: list[SqlType], options: dict[str, str]
    ) -> None:
        """``options``: the source's WITH options; CSV reads ``csv.delimiter`` (default ``,``) and
        ``csv.header`` (``true``/``false``: whether the file source skips a file's first line;
        decoding is the same). Raises InvalidParameterValue / FeatureNotSupported."""
        assert len(column_names) == len(column_types), (column_names, column_types)
        self.encode = encode.strip().upper()
        if self.encode not in ENCODES:
            raise FeatureNotSupported(f"ENCODE {encode} is not supported; sources read ENCODE JSON or ENCODE CSV")
        for name, sql_type in zip(column_names, column_types):
            if sql_type.is_array:
                raise FeatureNotSupported(f'column "{name}" is an array ({sql_type}); a source cannot read arrays yet')
        self.columns = [Column(name, sql_type) for name, sql_type in zip(column_names, column_types)]
        self.schema = pa.schema([pa.field(c.name, c.type.arrow) for c in self.columns])
        self.delimiter, self.header = _csv_options(self.encode, options)
        # JSON: the field names each column accepts, the exact declared spelling first.
        self._field_names = [list(dict.fromkeys([c.name, c.name.lower()])) for c in self.columns]
        self._json_by_record = any(c.type.kind == "jsonb" for c in self.columns)
        fields: dict[str, pa.DataType] = {}
        for column, names in zip(self.columns, self._field_names):
            kind = column.type.kind
            read_type = column.type.arrow if kind in _JSON_NATIVE_KINDS else pa.string()
            for name in names:
                fields.setdefault(name, read_type)
        self._json_schema = pa.schema([("v", pa.struct(list(fields.items())))])

    def decode(self, payloads: list[bytes | None]) -> DecodedRecords:
        rows: _Rows = _JsonRows(self, payloads) if self.encode == "JSON" else _CsvRows(self, payloads)
        return rows.result()


def _csv_options(encode: str, options: dict[str, str]) -> tuple[str, bool]:
    csv_keys = sorted(k for k in options if k.lower().startswith("csv."))
    if encode != "CSV":
        if csv_keys:
            raise InvalidParameterValue(f"option {csv_keys[0]} applies to ENCODE CSV only, not ENCODE {encode}")
        return ",", False
    for key in csv_keys:
        if key.lower() not in ("csv.delimiter", "csv.header"):
            raise InvalidParameterValue(f'unknown option "{key}"; ENCODE CSV takes csv.delimiter and csv.header')
    lowered = {k.lower(): v for k, v in options.items()}
    delimiter = lowered.get("csv.delimiter", ",")
    if delimiter == "\\t":
        delimiter = "\t"
    if len(delimiter) != 1 or delimiter in '\r\n"' or not delimiter.isascii():
        raise InvalidParameterValue(
            f"csv.delimiter = '{delimiter}' must be one ASCII character other than a quote or a newline"
        )
    header_text = lowered.get("csv.header", "false").strip().lower()
    if header_text not in ("true", "false"):
        raise InvalidParameterValue(f"csv.header = '{header_text}' is not one of 'true', 'false'")
    return delimiter, header_text == "true"


class _RowError(DataError):
    """A value of one row that does not cast; ``row`` is its position in the array cast."""

    def __init__(self, message: str, row: int) -> None:
        super().__init__(message)
        self.row = row


class _ColumnContext(TextContext):
    """Turns COPY's errors into per-row errors that name the column."""

    def __init__(self, column: Column) -> None:
        super().__init__(column, 1)

    def error(self, cls: type[DataError], message: str, row: int, value: str | None) -> DataError:
        shown = f': "{value}"' if value is not None else ""
        return _RowError(f'column "{self.column.name}": {message}{shown}', row)


class _Rows:
    """The decoding of one batch: per record, either strings/values per column or an error."""

    def __init__(self, decoder: RecordDecoder, payloads: list[bytes | None]) -> None:
        self.decoder = decoder
        self.errors: dict[int, str] = {}
        # Decoded segments: (record indices, one array per column: typed or strings to cast).
        self.segments: list[tuple[np.ndarray, list[pa.Array]]] = []
        self.payloads = payloads

    def result(self) -> DecodedRecords:
        columns = self.decoder.columns
        segments: list[tuple[np.ndarray, list[pa.Array]]] = []
        for indices, arrays in self.segments:
            typed: list[pa.Array] = []
            for column, values in zip(columns, arrays):
                cast, bad = _cast_isolating(values, column)
                for row, reason in bad.items():
                    # The first column's reason is the one a record reports.
                    self.errors.setdefault(int(indices[row]), reason)
                typed.append(cast)
            segments.append((indices, typed))
        if not segments:
            empty = pa.RecordBatch.from_pylist([], schema=self.decoder.schema)
            return DecodedRecords(empty, np.zeros(0, dtype=np.int64), sorted(self.errors.items()))
        if len(segments) == 1:
            indices, arrays = segments[0]
        else:
            indices = np.concatenate([indices for indices, _ in segments])
            order = pa.array(np.argsort(indices, kind="stable"))
            indices = indices[order.to_numpy()]
            arrays = [pa.concat_arrays([typed[i] for _, typed in segments]).take(order) for i in range(len(columns))]
        batch = pa.RecordBatch.from_arrays(arrays, schema=self.decoder.schema)
        if self.errors:
            keep = ~np.isin(indices, np.fromiter(self.errors, dtype=np.int64, count=len(self.errors)))
            batch = batch.filter(pa.array(keep))
            indices = indices[keep]
        return DecodedRecords(batch, indices.astype(np.int64), sorted(self.errors.items()))


def _needs_cast(sql_type: SqlType) -> bool:
    # A VARCHAR(n) read as a string still has its length checked.
    return sql_type.kind == "character varying" and sql_type.length is not None


class _JsonRows(_Rows):
    def __init__(self, decoder: RecordDecoder, payloads: list[bytes | None]) -> None:
        super().__init__(decoder, payloads)
        if None in payloads:
            present = [i for i, payload in enumerate(payloads) if payload is not None]
            self.errors.update((i, "empty record") for i, payload in enumerate(payloads) if payload is None)
        else:
            present = list(range(len(payloads)))
        indices = np.asarray(present, dtype=np.int64)
        if decoder._json_by_record:
            self._by_record(indices)
        elif len(indices):
            self._block(indices)

    def _block(self, indices: np.ndarray) -> None:
        payloads = [self.payloads[i] for i in indices]
        text = b'{"v":' + b'}\n{"v":'.join(payloads) + b"}"
        multiline = text.count(b"\n") != len(payloads) - 1 or b"\r" in text
        options = pa_json.ParseOptions(
            explicit_schema=self.decoder._json_schema,
            unexpected_field_behavior="ignore",
            newlines_in_values=multiline,
        )
        try:
            if not text.isascii():
                # The block reader would keep bytes that are not UTF-8 in its strings: such records
                # are decoded one by one (where they become U+FFFD).
                text.decode("utf-8")
            table = pa_json.read_json(io.BytesIO(text), parse_options=options)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnicodeDecodeError):
            table = None
        if table is None or table.num_rows != len(indices):
            if len(indices) <= _JSON_SEGMENT_RECORDS_MIN:
                self._by_record(indices)
            else:
                # Wide splits: a few bad records cost about two more reads of the block, not log2(n).
                for part in np.array_split(indices, _JSON_SPLIT_PARTS):
                    self._block(part)
            return
        records = table.column("v").combine_chunks()
        if records.null_count:  # the payload ``null``: not an object
            valid = records.is_valid().to_numpy(zero_copy_only=False)
            self._by_record(indices[~valid])
            records, indices = records.filter(pa.array(valid)), indices[valid]
        arrays = []
        for names in self.decoder._field_names:
            values = records.field(names[0])
            for name in names[1:]:
                values = pc.coalesce(values, records.field(name))
            arrays.append(values)
        self.segments.append((indices, arrays))

    def _by_record(self, indices: np.ndarray) -> None:
        """Decode records one by one into strings per column (the semantics the block path follows)."""
        texts: list[list[str | None]] = [[] for _ in self.decoder.columns]
        decoded: list[int] = []
        for index in indices:
            payload = self.payloads[index]
            assert payload is not None
            try:
                row = self._record_texts(payload)
            except _RecordError as e:
                self.errors[int(index)] = str(e)
                continue
            decoded.append(int(index))
            for column_texts, text in zip(texts, row):
                column_texts.append(text)
        if decoded:
            arrays = [pa.array(column_texts, pa.string()) for column_texts in texts]
            self.segments.append((np.asarray(decoded, dtype=np.int64), arrays))

    def _record_texts(self, payload: bytes) -> list[str | None]:
        # Bytes that are not UTF-8 become U+FFFD, as the block reader reads them.
        text = payload.decode("utf-8", errors="replace")
        try:
            record = json.loads(text, parse_float=decimal.Decimal)
        except ValueError as e:
            raise _RecordError(f"not valid JSON: {e}") from None
        if not isinstance(record, dict):
            raise _RecordError(f"not a JSON object (found {_json_kind(record)})")
        plain: dict[str, Any] | None = None
        texts: list[str | None] = []
        for column, names in zip(self.decoder.columns, self.decoder._field_names):
            value = next((record[name] for name in names if record.get(name) is not None), None)
            if value is None:
                texts.append(None)
            elif column.type.kind == "jsonb":
                if plain is None:  # parsed again without Decimal numbers, which json.dumps cannot write
                    plain = json.loads(text)
                    assert isinstance(plain, dict)
                value = next(plain[name] for name in names if plain.get(name) is not None)
                texts.append(json.dumps(value, ensure_ascii=False))
            else:
                texts.append(_json_value_text(value, column))
        return texts


class _RecordError(Exception):
    """A record that does not decode; the message is the reason shown to the user."""


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_KIND_NAMES.get(type(value), "a number")


def _json_value_text(value: Any, column: Column) -> str:
    """The PostgreSQL input text of a JSON value for ``column``, which COPY's casters then read."""
    kind = column.type.kind
    if isinstance(value, str) and kind != "jsonb":
        return value  # any type's input text (a quoted number, a timestamp, a boolean word)
    if isinstance(value, bool):
        if kind == "boolean":
            return "true" if value else "false"
    elif isinstance(value, int | decimal.Decimal) and kind in _JSON_NATIVE_KINDS and kind != "boolean":
        return str(value)
    expected = "a string" if kind in _STRING_KINDS or kind not in _JSON_NATIVE_KINDS else f"a {column.type}"
    raise _RecordError(f'column "{column.name}": expected {expected}, found {_json_kind(value)}')


class _CsvRows(_Rows):
    def __init__(self, decoder: RecordDecoder, payloads: list[bytes | None]) -> None:
        super().__init__(decoder, payloads)
        width = len(decoder.columns)
        block: list[int] = []
        single: list[int] = []
        present = [p for p in payloads if p is not None]
        text = b"\n".join(present)
        lengths = np.fromiter(map(len, present), dtype=np.int64, count=len(present))
        simple = len(present) == len(payloads) and text.count(b"\n") == len(payloads) - 1 and b"\r" not in text
        if simple and (width == 1 or not len(lengths) or lengths.min() > 0):
            block = list(range(len(payloads)))
        if not block:
            for i, payload in enumerate(payloads):
                if payload is None:
                    self.errors[i] = "empty record"
                elif not payload and width > 1:
                    self.errors[i] = f"expected {width} fields, found 1"
                elif b"\n" in payload or b"\r" in payload:
                    single.append(i)
                else:
                    block.append(i)
        if block:
            self._block(np.asarray(block, dtype=np.int64))
        for i in single:
            self._single(i)

    def _read(self, text: bytes, multiline: bool) -> tuple[pa.Table, list[tuple[int, int, int, str]]] | None:
        """The lines of ``text`` as string fields, and the lines with a wrong field count
        (line number from 1, expected, found, text); None when the text does not parse."""
        names = [f"c{i}" for i in range(len(self.decoder.columns))]
        invalid: list[tuple[int, int, int, str]] = []

        def on_invalid(row: Any) -> str:
            invalid.append((row.number, row.expected_columns, row.actual_columns, row.text))
            return "skip"

        parse = pa_csv.ParseOptions(
            delimiter=self.decoder.delimiter,
            newlines_in_values=multiline,
            ignore_empty_lines=False,
            invalid_row_handler=on_invalid,
        )
        convert = pa_csv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.string()),
            null_values=[""],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        )
        # Single-threaded: the invalid-row handler then knows each line's number.
        read = pa_csv.ReadOptions(column_names=names, use_threads=False, block_size=max(1 << 20, len(text) + 2))
        try:
            # The final newline: without it pyarrow reads an empty last field after a quoted one as "".
            table = pa_csv.read_csv(
                pa.py_buffer(text + b"\n"), read_options=read, parse_options=parse, convert_options=convert
            )
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return None
        return table, invalid

    def _block(self, indices: np.ndarray) -> None:
        text = b"\n".join(self.payloads[i] for i in indices)
        read = self._read(text, multiline=False)
        if read is not None:
            table, invalid = read
            lines = [number for number, _, _, line in invalid if number is not None and "\n" not in line]
            if (
                len(lines) == len(invalid)
                and len(set(lines)) == len(lines)
                and table.num_rows + len(lines) == len(indices)
            ):
                positions = np.asarray(lines, dtype=np.int64) - 1
                for (_, expected, found, _), position in zip(invalid, positions):
                    self.errors[int(indices[position])] = f"expected {expected} fields, found {found}"
                kept = np.delete(indices, positions)
                self.segments.append((kept, [table.column(i).combine_chunks() for i in range(table.num_columns)]))
                return
        # A line the block reader cannot place (an unterminated quote): split until it stands alone.
        if len(indices) == 1:
            self._single(int(indices[0]))
            return
        middle = len(indices) // 2
        self._block(indices[:middle])
        self._block(indices[middle:])

    def _single(self, index: int) -> None:
        payload = self.payloads[index]
        assert payload is not None
        # Bytes that are not UTF-8 become U+FFFD, as in a JSON record.
        read = self._read(payload.decode("utf-8", errors="replace").encode(), multiline=True)
        if read is None:
            self.errors[index] = "not a valid CSV line (an unterminated quote?)"
            return
        table, invalid = read
        if invalid:
            _, expected, found, _ = invalid[0]
            self.errors[index] = f"expected {expected} fields, found {found}"
        elif table.num_rows != 1:
            self.errors[index] = f"one CSV line expected, found {table.num_rows}"
        else:
            arrays = [table.column(i).combine_chunks() for i in range(table.num_columns)]
            self.segments.append((np.asarray([index], dtype=np.int64), arrays))


def _cast_isolating(values: pa.Array, column: Column) -> tuple[pa.Array, dict[int, str]]:
    """``values`` cast to ``column``'s type, with NULL for each value that does not cast;
    and the reasons of those, by position."""
    context = _ColumnContext(column)
    bad: dict[int, str] = {}
    try:
        return _cast_fast(values, column.type, context), bad
    except (DataError, pa.ArrowException, ValueError, ArithmeticError):
        pass
    _find_bad(values, np.arange(len(values), dtype=np.int64), context, bad)
    mask = np.zeros(len(values), dtype=bool)
    mask[list(bad)] = True
    cleaned = pc.if_else(pa.array(mask), pa.scalar(None, values.type), values)
    return _cast_fast(cleaned, column.type, context), bad


def _find_bad(values: pa.Array, positions: np.ndarray, context: _ColumnContext, bad: dict[int, str]) -> None:
    """Find the values at ``positions`` that do not cast, by bisection guided by the row a failed cast names."""
    if len(positions) == 0:
        return
    try:
        _cast_fast(values.take(pa.array(positions)), context.column.type, context)
        return
    except _RowError as e:
        bad[int(positions[e.row])] = e.message
        positions = np.delete(positions, e.row)
    except (DataError, pa.ArrowException, ValueError, ArithmeticError) as e:
        if len(positions) == 1:
            bad[int(positions[0])] = f'column "{context.column.name}": {e}'
            return
    middle = len(positions) // 2
    _find_bad(values, positions[:middle], context, bad)
    _find_bad(values, positions[middle:], context, bad)


def _cast_fast(values: pa.Array, sql_type: SqlType, context: _ColumnContext) -> pa.Array:
    if values.type == sql_type.arrow and not _needs_cast(sql_type):
        return values
    assert values.type == pa.string(), (values.type, sql_type)
    if sql_type.kind == "timestamp with time zone":
        # The common case, no offset (read as UTC), vectorized; COPY's caster takes it value by value.
        try:
            return pc.cast(pc.cast(values, pa.timestamp("us")), sql_type.arrow)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            pass
    return cast_text(values, sql_type, context)


def decoder_for_source(encode: str, schema: list[list[str]], options: dict[str, str]) -> RecordDecoder:
    """The decoder of a Kafka or file source's plan node: ``schema`` lists ``[name, type text]`` of
    the declared columns, then the hidden ``_row_id`` the source computes itself (not decoded).
    The decoder reads its own options (``csv.delimiter``, ``csv.header``) from the WITH options."""
    declared = [(name, parse_type_name(type_text)) for name, type_text in schema if name != ROW_ID_COLUMN]
    return RecordDecoder(encode, [name for name, _ in declared], [t for _, t in declared], options)
