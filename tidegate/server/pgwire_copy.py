"""Cut a ``COPY … FROM STDIN`` byte stream into batches of whole lines.

CopyData messages split the data anywhere, and one load can be hundreds of
megabytes. :class:`CopyBatcher` collects messages until ``batch_bytes_max`` is
reached, then cuts at the last line boundary (for CSV, the last newline outside
a quoted field) and hands that prefix on; the remainder starts the next batch.
So memory stays bounded by about two batches, and every batch is whole lines
that :func:`tidegate.common.copy_text.decode_copy` can decode on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tidegate.common.copy_text import decode_copy
from tidegate.common.result import CopyIn

__all__ = ["COPY_BATCH_BYTES", "CopyBatch", "CopyBatcher", "last_line_end", "write_batch"]

COPY_BATCH_BYTES = 8 << 20


@dataclass(frozen=True)
class CopyBatch:
    data: bytes
    first_line: int  # 1-based line number of the batch's first line in the stream
    header: bool  # True for the first batch when the COPY has HEADER


def last_line_end(data: bytes, *, csv: bool, quote: str, escape: str) -> int:
    """Offset just past the last newline that ends a record; 0 when there is none."""
    if not csv:
        return data.rfind(b"\n") + 1
    buffer = np.frombuffer(data, dtype=np.uint8)
    quote_byte = ord(quote)
    is_quote = buffer == quote_byte
    if escape != quote:
        # An escape character before a quote (or before itself) hides that character.
        escape_byte = ord(escape)
        escaped = np.flatnonzero(buffer[:-1] == escape_byte) + 1
        escaped = escaped[(buffer[escaped] == quote_byte) | (buffer[escaped] == escape_byte)]
        is_quote[escaped] = False
    quotes = np.flatnonzero(is_quote)
    newlines = np.flatnonzero(buffer == 10)
    if len(newlines) == 0:
        return 0
    outside = newlines[np.searchsorted(quotes, newlines) % 2 == 0]
    return int(outside[-1]) + 1 if len(outside) else 0


class CopyBatcher:
    """Collects CopyData payloads and yields batches of whole lines."""

    def __init__(
        self, *, format: str, quote: str, escape: str, header: bool, batch_bytes_max: int | None = None
    ) -> None:
        self._csv = format == "csv"
        self._quote = quote or '"'
        self._escape = escape or self._quote
        self._header = header
        self._batch_bytes_max = batch_bytes_max if batch_bytes_max is not None else COPY_BATCH_BYTES
        self._chunks: list[bytes] = []
        self._size = 0
        self._next_line = 1
        self.bytes_total = 0

    def add(self, chunk: bytes) -> CopyBatch | None:
        """Take one CopyData payload; returns a batch when enough whole lines have arrived."""
        self._chunks.append(chunk)
        self._size += len(chunk)
        self.bytes_total += len(chunk)
        if self._size < self._batch_bytes_max:
            return None
        data = b"".join(self._chunks)
        cut = last_line_end(data, csv=self._csv, quote=self._quote, escape=self._escape)
        if cut == 0:
            # One record longer than a batch: keep collecting until its end arrives.
            self._chunks = [data]
            return None
        rest = data[cut:]
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        return self._batch(data[:cut])

    def finish(self) -> CopyBatch | None:
        """The remaining data after CopyDone, or None when nothing is left."""
        data = b"".join(self._chunks)
        self._chunks, self._size = [], 0
        return self._batch(data) if data else None

    def _batch(self, data: bytes) -> CopyBatch:
        batch = CopyBatch(data=data, first_line=self._next_line, header=self._header)
        self._header = False
        self._next_line += data.count(b"\n")
        return batch


def write_batch(copy_in: CopyIn, batch: CopyBatch) -> None:
    """Decode one batch and hand it to the COPY's sink (blocking; runs on the connection's thread)."""
    table = decode_copy(
        batch.data,
        copy_in.columns,
        format=copy_in.format,
        delimiter=copy_in.delimiter,
        null=copy_in.null,
        header=batch.header,
        quote=copy_in.quote,
        escape=copy_in.escape,
        first_line=batch.first_line,
    )
    if table.num_rows:
        copy_in.write(table)
