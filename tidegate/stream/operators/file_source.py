"""FileSource: reads a directory of CSV or JSON-lines files inside the job of a view that reads it.

``CREATE SOURCE s (…) WITH (connector = 'file', path = '/dir', …) FORMAT PLAIN ENCODE CSV|JSON``
(options: ``connectors/file_options.py``; docs/design/20261128_file_source.md). Every view reading
the source runs its own reader, like a generator source: barriers come from the coordinator through
``inject``, and whatever was read before a barrier belongs to the epoch that barrier ends.

Invariants:

- a file's position is the byte offset of its next unread line. Positions (and each file's count of
  malformed records) are written to the source's state table on every barrier that moved them and
  committed with the view's state (DESIGN §5.5), so a recovery re-reads exactly what the checkpoint
  did not cover: nothing lost, nothing doubled. Under ``at_most_once`` the position is also saved
  in ``ReadPositions`` as soon as a chunk is read, and a recovery goes on from there instead;
- only complete lines are read: a last line without ``\\n`` may still be being written;
- a row's ``_row_id`` is ``(file_no << 40) | byte offset of its line``: unique, and the same on
  every replay. ``file_no`` numbers files in the order they were found (by name within one look)
  and is stored with the position;
- a file that shrank or disappeared keeps its position (a warning says so): it is never re-read;
- file I/O runs in the loop's executor, a bounded number of lines and bytes at a time, so the loop
  stays free for barriers.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from tidegate.common.chunk import Chunk, Op
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.connectors.file_options import FileSourceOptions, parse_file_source_options
from tidegate.connectors.read_positions import ReadPositions
from tidegate.connectors.record_decode import RecordDecoder, decoder_for_source
from tidegate.connectors.source_errors import ErrorPolicy, error_rows
from tidegate.connectors.table_writer import ROW_ID_COLUMN
from tidegate.errors import DataError
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator
from tidegate.stream.operators.source_inbox import SourceInbox, with_watermark
from tidegate.stream.watermark import WatermarkGenerator

log = logging.getLogger(__name__)

FILE_OFFSETS_SCHEMA = pa.schema(
    [
        pa.field("file", pa.string()),  # the name relative to the source's directory
        pa.field("file_no", pa.int32()),  # the order it was found in; the high bits of its rows' _row_id
        pa.field("next_byte", pa.int64()),  # the byte offset of the next unread line
        pa.field("malformed", pa.int64()),  # records of the file that did not decode
    ]
)
ROW_ID_OFFSET_BITS = 40  # byte offsets below 1 TiB; 2^23 files
READ_BYTES_MAX = 4 << 20  # per read in the executor (a longer line is still read whole)


@dataclass
class _FilePosition:
    file_no: int
    next_byte: int
    malformed: int
    written: tuple[int, int] | None  # (next_byte, malformed) of the row in the state table
    # The file's size when all it had past ``next_byte`` was an incomplete line: it is due again
    # once it has grown past that.
    partial_size: int = 0


@dataclass(frozen=True)
class LinesRead:
    lines: list[tuple[int, bytes]]  # (byte offset, the line with its "\n")
    end: int  # the byte offset after the last line read
    size: int  # the file's size when it was opened


class LocalDirectory:
    """The file system boundary of a file source: one directory of the local file system."""

    def __init__(self, path: str) -> None:
        self.path = path

    def list_files(self, pattern: str) -> dict[str, int] | None:
        """Regular files directly in the directory whose name matches ``pattern`` → their size in
        bytes; hidden files and ``*.tmp`` (files being written) never match. None: no directory."""
        files: dict[str, int] = {}
        try:
            with os.scandir(self.path) as entries:
                for entry in entries:
                    name = entry.name
                    if name.startswith(".") or name.endswith(".tmp") or not fnmatch.fnmatchcase(name, pattern):
                        continue
                    with contextlib.suppress(FileNotFoundError):  # removed while listing
                        if entry.is_file():
                            files[name] = entry.stat().st_size
        except FileNotFoundError:
            return None
        return files

    def read_lines(self, name: str, start: int, lines_max: int, bytes_max: int) -> LinesRead | None:
        """Complete lines from byte ``start``: at most ``lines_max``, stopping at the first line that
        ends past ``bytes_max`` bytes. None: the file is gone."""
        try:
            with open(os.path.join(self.path, name), "rb") as file:
                size = os.fstat(file.fileno()).st_size
                if size <= start:
                    return LinesRead([], start, size)
                file.seek(start)
                lines: list[tuple[int, bytes]] = []
                end = start
                while len(lines) < lines_max and end - start < bytes_max:
                    line = file.readline()
                    if not line.endswith(b"\n"):
                        break  # the end of the file, or a line still being written
                    lines.append((end, line))
                    end += len(line)
                return LinesRead(lines, end, size)
        except FileNotFoundError:
            return None


class FileSource(Operator):
    name = "file_source"

    def __init__(
        self,
        options: FileSourceOptions,
        encode: str,
        decoder: RecordDecoder,
        offsets: StateTable,
        errors: StateTable,
        schema: pa.Schema,
        actor_id: int,
        *,
        guarantee: DeliveryGuarantee,
        positions: ReadPositions,
        source_id: int,
        watermark: WatermarkGenerator | None = None,
        directory: LocalDirectory | None = None,
    ) -> None:
        """``encode``: ``CSV`` or ``JSON`` (as ``decoder`` decodes). ``schema``: the declared columns
        followed by the ``_row_id`` key column. ``offsets``: ``FILE_OFFSETS_SCHEMA``, ``errors``:
        ``SOURCE_ERRORS_SCHEMA``, both keyed on column 0. ``directory``: the options' path by default."""
        assert schema.names[-1] == ROW_ID_COLUMN, schema
        self.options = options
        self.skips_header = options.csv_header and encode.strip().upper() == "CSV"
        self.decoder = decoder
        self.offsets = offsets
        self.errors = errors
        self.schema = schema
        self.actor_id = actor_id
        self.guarantee = guarantee
        self.positions = positions
        self.source_id = source_id
        self.watermark = watermark
        self.directory = directory if directory is not None else LocalDirectory(options.path)
        self.inbox = SourceInbox()
        self.offset = 0  # records read (malformed ones included) by this operator
        self.malformed = 0  # malformed records of every file, committed ones included
        self._files: dict[str, _FilePosition] = {}
        self._due: list[str] = []  # files with unread bytes at the last look, in name order
        self._warned: set[str] = set()  # files (and the directory: "") reported shrunk or missing

    @property
    def end_offset(self) -> int | None:
        """A directory is never finished: None."""
        return None

    def inject(self, barrier: Barrier) -> None:
        """Called by the barrier coordinator, on the stream loop."""
        self.inbox.put(barrier)

    async def execute(self) -> AsyncIterator[Message]:
        first = await self.inbox.first()
        self._restore(first.epoch.prev)
        restored = self.watermark.restore(first.epoch.prev) if self.watermark is not None else None
        yield first
        if first.stops(self.actor_id):
            return
        if restored is not None:
            yield restored
        while True:
            barrier = self.inbox.take()
            if barrier is not None:
                self._end_epoch(barrier.epoch.prev)
                yield barrier
                if barrier.stops(self.actor_id):
                    return
                continue
            if not self._due:
                self._due = await self._look()
                if not self._due:
                    await self.inbox.wait(self.options.poll_interval_ms / 1000)
                    continue
            chunk = await self._read(self._due[0])
            async for message in with_watermark(chunk, self.watermark):
                yield message
            # Hand the loop back so the coordinator can inject a barrier between chunks.
            await asyncio.sleep(0)

    # ---- positions ------------------------------------------------------------------------------
    def _restore(self, epoch: int) -> None:
        """The positions committed at ``epoch``; under at_most_once, the saved ones where ahead."""
        if epoch:
            rows = self.offsets.snapshot(epoch).to_pylist()
            for row in rows:
                at = (int(row["next_byte"]), int(row["malformed"]))
                self._files[row["file"]] = _FilePosition(int(row["file_no"]), at[0], at[1], at)
        if not self.guarantee.rewinds:
            saved = self.positions.load(self.actor_id, self.source_id) or {}
            for name in sorted(saved):
                position = self._files.get(name)
                if position is None:
                    self._files[name] = _FilePosition(self._next_file_no(), saved[name], 0, None)
                elif saved[name] > position.next_byte:
                    position.next_byte = saved[name]
        self.malformed = sum(p.malformed for p in self._files.values())

    def _end_epoch(self, epoch: int) -> None:
        """Write the positions that moved, and commit them, the errors and the watermark at ``epoch``."""
        rows: list[dict[str, Any]] = []
        ops: list[Op] = []
        for name, position in self._files.items():
            now = (position.next_byte, position.malformed)
            if position.written == now:
                continue
            if position.written is not None:
                rows.append(_offset_row(name, position.file_no, position.written))
                ops.append(Op.UPDATE_DELETE)
            rows.append(_offset_row(name, position.file_no, now))
            ops.append(Op.UPDATE_INSERT if position.written is not None else Op.INSERT)
            position.written = now
        if rows:
            self.offsets.write(Chunk.of(ops, pa.RecordBatch.from_pylist(rows, schema=FILE_OFFSETS_SCHEMA)))
        self.offsets.commit(epoch)
        self.errors.commit(epoch)
        if self.watermark is not None:
            self.watermark.commit(epoch)

    def _next_file_no(self) -> int:
        return max((p.file_no for p in self._files.values()), default=-1) + 1

    # ---- reading --------------------------------------------------------------------------------
    async def _look(self) -> list[str]:
        """List the directory; the files with unread bytes, in name order."""
        loop = asyncio.get_running_loop()
        listed = await loop.run_in_executor(None, self.directory.list_files, self.options.match_pattern)
        if listed is None:
            self._warn_once("", f"file source {self.source_id}: directory {self.options.path} is missing")
            return []
        self._warned.discard("")
        due: list[str] = []
        for name in sorted(listed):
            size = listed[name]
            position = self._files.get(name)
            if position is None:
                position = self._files[name] = _FilePosition(self._next_file_no(), 0, 0, None)
            if size < position.next_byte:
                self._warn_once(name, f"file {name} shrank to {size} bytes below its position {position.next_byte}")
            elif size > max(position.next_byte, position.partial_size):
                self._warned.discard(name)
                due.append(name)
        for name in self._files.keys() - listed.keys():
            self._warn_once(name, f"file {name} disappeared; its position {self._files[name].next_byte} is kept")
        return due

    async def _read(self, name: str) -> Chunk | None:
        """Read and decode the next complete lines of ``name``, and advance its position."""
        position = self._files[name]
        loop = asyncio.get_running_loop()
        lines_max, bytes_max = self.options.records_per_chunk_max, READ_BYTES_MAX
        read = await loop.run_in_executor(
            None, self.directory.read_lines, name, position.next_byte, lines_max, bytes_max
        )
        if read is None or read.size < position.next_byte:
            self._due.pop(0)  # gone or shrunk: the next look warns
            return None
        if len(read.lines) < lines_max and read.end - position.next_byte < bytes_max:
            # The end of the file, or an incomplete line: nothing more to read until it grows.
            self._due.pop(0)
            position.partial_size = read.size if read.end < read.size else 0
        if not read.lines:
            return None
        offsets: list[int] = []
        payloads: list[bytes | None] = []
        for offset, line in read.lines:
            content = line.rstrip(b"\r\n")
            if (offset == 0 and self.skips_header) or not content.strip():
                continue  # a CSV header, or an empty line
            offsets.append(offset)
            payloads.append(content)
        chunk = self._decode(name, position, offsets, payloads)
        position.next_byte = read.end
        self.offset += len(payloads)
        if not self.guarantee.rewinds:
            # Saved before the chunk goes downstream: a recovery does not read it again (at most once).
            saved = {file: p.next_byte for file, p in self._files.items()}
            await loop.run_in_executor(None, self.positions.save, self.actor_id, self.source_id, saved)
        return chunk

    def _decode(
        self, name: str, position: _FilePosition, offsets: list[int], payloads: list[bytes | None]
    ) -> Chunk | None:
        if not payloads:
            return None
        decoded = self.decoder.decode(payloads)
        if decoded.errors:
            self._malformed(name, position, offsets, payloads, decoded.errors)
        if decoded.batch.num_rows == 0:
            return None
        assert offsets[-1] < 1 << ROW_ID_OFFSET_BITS, (name, offsets[-1])
        row_ids = (position.file_no << ROW_ID_OFFSET_BITS) | np.asarray(offsets, dtype=np.int64)[decoded.kept]
        columns = [
            column if column.type == field.type else column.cast(field.type)
            for column, field in zip(decoded.batch.columns, self.schema)
        ]
        return Chunk.inserts(pa.RecordBatch.from_arrays([*columns, pa.array(row_ids)], schema=self.schema))

    def _malformed(
        self,
        name: str,
        position: _FilePosition,
        offsets: list[int],
        payloads: list[bytes | None],
        errors: list[tuple[int, str]],
    ) -> None:
        policy = self.options.on_error
        if policy is ErrorPolicy.FAIL:
            index, reason = errors[0]
            raise DataError(f"file source: {name} byte {offsets[index]}: {reason}")
        position.malformed += len(errors)
        self.malformed += len(errors)
        if policy is ErrorPolicy.RECORD:
            kept = [(f"{name} byte {offsets[i]}", payloads[i], reason) for i, reason in errors]
            self.errors.write(Chunk.inserts(error_rows(kept)))

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning("%s", message)


def _offset_row(name: str, file_no: int, at: tuple[int, int]) -> dict[str, Any]:
    return {"file": name, "file_no": file_no, "next_byte": at[0], "malformed": at[1]}


def build_file_source(
    plan: dict[str, Any],
    offsets: StateTable,
    errors: StateTable,
    schema: pa.Schema,
    actor_id: int,
    *,
    guarantee: DeliveryGuarantee,
    positions: ReadPositions,
    source_id: int,
    watermark: WatermarkGenerator | None,
) -> FileSource:
    """The operator of a ``{"op": "source", "connector": "file", …}`` plan node: ``plan["schema"]``
    lists the declared columns as ``[name, type text]`` and then ``_row_id``."""
    options = parse_file_source_options(plan["options"])
    decoder = decoder_for_source(plan["encode"], plan["schema"], plan["options"])
    return FileSource(
        options,
        plan["encode"],
        decoder,
        offsets,
        errors,
        schema,
        actor_id,
        guarantee=guarantee,
        positions=positions,
        source_id=source_id,
        watermark=watermark,
    )
