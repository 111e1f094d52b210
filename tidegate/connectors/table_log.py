"""The durable change log of a user table (DESIGN §7).

Place in the data flow: a DML statement (INSERT, UPDATE, DELETE, COPY) becomes
chunks with the table's full schema, hidden columns included; the session
appends them here and acknowledges the statement only when ``append`` returns,
which is after they are on disk. The table's source actor reads the log like a
Kafka partition, from an offset that it keeps in its own state table, so that
recovery replays exactly what the last checkpoint had not consumed.

On disk the log is a directory of segment files ``<first_offset:020d>.seg``.
A segment is a run of records; a record is a 32-byte header and a payload, the
Arrow IPC stream of one RecordBatch whose first column ``__op`` holds the ops::

    magic "TGLR" | version u32 | payload crc32 u32 | payload length u64
    | record offset u64 | header crc32 u32                    (little-endian)

IPC streams carry their schema, so records written before an ALTER TABLE stay
readable after it.

Group commit: appenders serialize their chunks in their own threads, write
them under the lock (which assigns offsets) and wait; a flusher thread per log
fsyncs whatever is written, so one fsync covers every append that arrived
while the previous one ran, and ``append_many`` costs one fsync. Reads of
recent records come from a tail cache bounded by bytes; older ones are read
back from the segments through an offset → (segment, byte position) index.

Invariants:

- Offsets count records from 0, densely across segments. A record's header
  names its own offset and every read checks it (with both checksums).
- Readers (``read``, ``end_offset``, ``wait_for``, listeners) see a record only
  once it is durable. A source offset saved in a checkpoint therefore never
  points past the end of the log that a restart finds.
- A segment is fsynced before the next one is created, so only the last
  segment can end in a torn record. Opening the log cuts a torn tail off (it
  was never acknowledged) and logs a warning. A bad record that a good record
  follows is corruption: an error naming the file and offset, never a skip.
- A failed write is rolled back to the start of its call, so an append that
  raised leaves nothing behind that a restart could replay. After a failed
  fsync the log refuses further appends (the page cache can no longer be
  trusted, as PostgreSQL learned); reopening it rescans the files.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import pathlib
import re
import struct
import threading
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa

from tidegate.common.chunk import OP_TYPE, Chunk, split_ops_column
from tidegate.errors import DiskFull, InternalError

logger = logging.getLogger(__name__)

OP_COLUMN = "__op"
_OP_FIELD = pa.field(OP_COLUMN, OP_TYPE, nullable=False)
SEGMENT_BYTES_MAX = 64 * 1024 * 1024
CACHE_BYTES_MAX = 256 * 1024 * 1024
# A read from the segment files stops adding records past this many bytes, so a
# reader catching up over large COPY records does not pull gigabytes at once.
READ_BYTES_MAX = 64 * 1024 * 1024

_MAGIC = b"TGLR"
_FORMAT_VERSION = 1
_HEADER_BODY = struct.Struct("<4sIIQQ")
_HEADER_CRC = struct.Struct("<I")
HEADER_BYTES = _HEADER_BODY.size + _HEADER_CRC.size
_SEGMENT_NAME = re.compile(r"^(\d{20})\.seg$")
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
# writev accepts at most IOV_MAX (1024 on Linux) buffers per call.
_WRITEV_BUFFERS_MAX = 1024
# Payloads of batches larger than this are serialized into a buffer of the exact
# size (measured first): a growing buffer would copy them several times over.
_EXACT_ENCODING_BYTES_MIN = 1024 * 1024
# Up to this much memory beyond twice its rows' size, a chunk is cached as it came.
_SLICE_SLACK_BYTES = 64 * 1024
# Explicit options: pyarrow would otherwise read two environment variables per record.
_IPC_WRITE_OPTIONS = pa.ipc.IpcWriteOptions()


@dataclass(frozen=True)
class TableLogStats:
    records_appended: int
    payload_bytes_appended: int
    fsyncs: int


@dataclass(frozen=True)
class _Encoded:
    """One record ready to write: built outside the lock, in the appending thread."""

    payload: pa.Buffer
    payload_crc: int
    chunk: Chunk  # what readers get from the tail cache: the rows of ``payload``, with the table's schema
    chunk_bytes: int  # the memory the cached chunk holds on to


@dataclass
class _Segment:
    path: pathlib.Path
    first_offset: int
    positions: array[int]  # byte position of each record in the file
    size_bytes: int  # bytes of whole records; the file has exactly this many

    @property
    def end_offset(self) -> int:
        return self.first_offset + len(self.positions)

    def byte_range(self, start: int, stop: int) -> tuple[int, int]:
        """File bytes holding records [start, stop)."""
        begin = self.positions[start - self.first_offset]
        end_index = stop - self.first_offset
        end = self.positions[end_index] if end_index < len(self.positions) else self.size_bytes
        return begin, end


def segment_path(directory: pathlib.Path, first_offset: int) -> pathlib.Path:
    return directory / f"{first_offset:020d}.seg"


def encode_header(payload_crc: int, payload_length: int, offset: int) -> bytes:
    body = _HEADER_BODY.pack(_MAGIC, _FORMAT_VERSION, payload_crc, payload_length, offset)
    return body + _HEADER_CRC.pack(zlib.crc32(body))


@dataclass(frozen=True)
class _Header:
    payload_crc: int
    payload_length: int
    offset: int


def _decode_header(data: bytes | memoryview, position: int) -> _Header | str:
    """The header at ``position``, or why there is no valid one there."""
    if len(data) - position < HEADER_BYTES:
        return "incomplete header"
    body_end = position + _HEADER_BODY.size
    (header_crc,) = _HEADER_CRC.unpack_from(data, body_end)
    if zlib.crc32(data[position:body_end]) != header_crc:
        return "bad header checksum"
    magic, version, payload_crc, payload_length, offset = _HEADER_BODY.unpack_from(data, position)
    if magic != _MAGIC:
        return "bad magic"
    if version != _FORMAT_VERSION:
        return f"unknown format version {version}"
    return _Header(payload_crc, payload_length, offset)


def _check_record(data: bytes | memoryview, position: int) -> tuple[_Header, int] | str:
    """(header, end position) of a whole, valid record at ``position``, or what is wrong."""
    header = _decode_header(data, position)
    if isinstance(header, str):
        return header
    payload_start = position + HEADER_BYTES
    end = payload_start + header.payload_length
    if end > len(data):
        return "incomplete payload"
    if zlib.crc32(data[payload_start:end]) != header.payload_crc:
        return "bad payload checksum"
    return header, end


def _decode_payload(payload: memoryview) -> Chunk:
    batch = pa.ipc.open_stream(pa.py_buffer(payload)).read_next_batch()
    return split_ops_column(batch, OP_COLUMN)


def _scan_segment(path: pathlib.Path, first_offset: int, *, is_last: bool) -> _Segment:
    """Index a segment, checking every record; cut a torn tail off the last segment."""
    data = path.read_bytes()
    view = memoryview(data)
    positions: array[int] = array("Q")
    position = 0
    while position < len(data):
        offset = first_offset + len(positions)
        checked = _check_record(view, position)
        if isinstance(checked, str):
            if not is_last or _valid_record_after(data, position + 1):
                raise InternalError(
                    f"table log segment {path} is corrupt at byte {position} (record offset {offset}): {checked}"
                )
            logger.warning(
                "table log segment %s: dropped a torn tail of %d bytes at byte %d (record offset %d, %s); "
                "it was never acknowledged",
                path,
                len(data) - position,
                position,
                offset,
                checked,
            )
            os.truncate(path, position)
            break
        header, end = checked
        if header.offset != offset:
            raise InternalError(
                f"table log segment {path}: the record at byte {position} has offset {header.offset}, expected {offset}"
            )
        positions.append(position)
        position = end
    return _Segment(path, first_offset, positions, position)


def _valid_record_after(data: bytes, position: int) -> bool:
    """Whether a whole valid record starts anywhere at or after ``position``."""
    while (position := data.find(_MAGIC, position)) != -1:
        if not isinstance(_check_record(data, position), str):
            return True
        position += 1
    return False


def _write_stream(sink: pa.NativeFile, batch: pa.RecordBatch) -> None:
    writer = pa.ipc.RecordBatchStreamWriter(sink, batch.schema, options=_IPC_WRITE_OPTIONS)
    writer.write_batch(batch)
    writer.close()


def _fsync_directory(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, buffers: list[bytes | pa.Buffer]) -> None:
    for start in range(0, len(buffers), _WRITEV_BUFFERS_MAX):
        group = [memoryview(b).cast("B") for b in buffers[start : start + _WRITEV_BUFFERS_MAX]]
        written = os.writev(fd, group)
        # writev may write less than asked (a signal, a full disk); finish by hand.
        for view in group:
            if written >= len(view):
                written -= len(view)
                continue
            rest = view[written:]
            written = 0
            while rest:
                rest = rest[os.write(fd, rest) :]


class TableLog:
    """The append-only, durable, replayable change log of one table. Thread-safe."""

    def __init__(
        self,
        path: pathlib.Path,
        schema: pa.Schema,
        *,
        fsync: bool = True,
        segment_bytes_max: int = SEGMENT_BYTES_MAX,
        cache_bytes_max: int = CACHE_BYTES_MAX,
    ) -> None:
        assert OP_COLUMN not in schema.names, schema
        self._directory = pathlib.Path(path)
        self._schema = schema
        self._fsync = fsync
        self._segment_bytes_max = segment_bytes_max
        self._cache_bytes_max = cache_bytes_max

        # One lock guards everything below; appenders wait on the condition for
        # a group commit, readers for new records.
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # durable_end moved, or a failure
        self._sync_needed = threading.Condition(self._lock)  # records wait for the flusher
        self._flusher: threading.Thread | None = None
        self._listeners: list[Callable[[], None]] = []
        try:
            self._segments = self._open_segments()
            active = self._segments[-1]
            self._fd = os.open(active.path, os.O_WRONLY | os.O_APPEND)
        except OSError as error:
            raise InternalError(f"table log {self._directory}: cannot open: {error}") from error
        # fds of rolled-over segments that an fsync in flight may still use.
        self._retired_fds: list[int] = []
        self._written_end = active.end_offset
        self._durable_end = active.end_offset
        self._syncing = False
        self._failure: InternalError | None = None
        self._closed = False
        # Tail cache: decoded chunks for offsets [cache_first, written_end).
        self._cache: dict[int, tuple[Chunk, int]] = {}
        self._cache_first = self._written_end
        self._cache_bytes = 0
        self._records_appended = 0
        self._payload_bytes_appended = 0
        self._fsyncs = 0

    def _open_segments(self) -> list[_Segment]:
        created = not self._directory.exists()
        self._directory.mkdir(parents=True, exist_ok=True)
        if created and self._fsync:
            _fsync_directory(self._directory.parent)
        found = sorted(
            (int(match.group(1)), entry)
            for entry in self._directory.iterdir()
            if (match := _SEGMENT_NAME.match(entry.name))
        )
        segments: list[_Segment] = []
        for index, (first_offset, segment_file) in enumerate(found):
            if segments and segments[-1].end_offset != first_offset:
                raise InternalError(
                    f"table log {self._directory}: records {segments[-1].end_offset}..{first_offset - 1} "
                    f"are missing between {segments[-1].path.name} and {segment_file.name}"
                )
            segments.append(_scan_segment(segment_file, first_offset, is_last=index == len(found) - 1))
        if not segments:
            segment, fd = self._create_segment(0)
            os.close(fd)
            segments.append(segment)
        elif self._fsync:
            # Records a killed process wrote may still be only in the page cache:
            # make them durable before anyone can read them.
            fd = os.open(segments[-1].path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return segments

    def _create_segment(self, first_offset: int) -> tuple[_Segment, int]:
        """A new, empty segment file and a descriptor to append to it."""
        path = segment_path(self._directory, first_offset)
        # O_EXCL: a file already there would be a segment this log does not know about.
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            if self._fsync:
                _fsync_directory(self._directory)
        except OSError:
            os.close(fd)
            path.unlink(missing_ok=True)
            raise
        return _Segment(path, first_offset, array("Q"), 0), fd

    # -- appending ---------------------------------------------------------------

    def append(self, chunk: Chunk) -> int:
        """Append one record; return the offset after it, once it is durable."""
        return self.append_many([chunk])

    def append_many(self, chunks: list[Chunk]) -> int:
        """Append records in order, contiguously, with one fsync; return the offset after the last."""
        encoded = [self._encode(chunk) for chunk in chunks]
        with self._lock:
            self._check_open()
            if self._failure is not None:
                raise self._failure
            end = self._write_locked(encoded)
        self._wait_durable(end)
        for listener in list(self._listeners):
            try:
                listener()
            except Exception:
                logger.exception("table log %s: a listener failed", self._directory)
        return end

    def _encode(self, chunk: Chunk) -> _Encoded:
        if not chunk.schema.equals(self._schema, check_metadata=True):
            schema = chunk.schema
            if schema.names != self._schema.names or schema.types != self._schema.types:
                raise InternalError(
                    f"table log {self._directory}: a chunk with schema {schema} does not match "
                    f"the table's {self._schema}"
                )
            # Same columns, other nullability or metadata: give it the table's schema, so
            # that a chunk read from the cache and one read from a file are the same.
            chunk = Chunk(chunk.ops, pa.RecordBatch.from_arrays(chunk.data.columns, schema=self._schema))
        batch = chunk.data.add_column(0, _OP_FIELD, chunk.ops)
        retained_bytes = batch.get_total_buffer_size()
        if retained_bytes < _EXACT_ENCODING_BYTES_MIN:
            sink = pa.BufferOutputStream()
            _write_stream(sink, batch)
            payload = sink.getvalue()
        else:
            measure = pa.MockOutputStream()
            _write_stream(measure, batch)
            payload = pa.allocate_buffer(measure.size())
            _write_stream(pa.FixedSizeBufferWriter(payload), batch)
        # The cache keeps the caller's chunk, unless it is a small slice of large
        # buffers: then it keeps the rows decoded from the payload, which hold on
        # to no more memory than they use.
        if retained_bytes <= _SLICE_SLACK_BYTES or retained_bytes <= 2 * batch.nbytes + _SLICE_SLACK_BYTES:
            return _Encoded(payload, zlib.crc32(payload), chunk, retained_bytes)
        return _Encoded(payload, zlib.crc32(payload), _decode_payload(memoryview(payload)), payload.size)

    def _write_locked(self, records: list[_Encoded]) -> int:
        """Write ``records`` at the end of the active segment; return the new written end."""
        call_bytes = sum(HEADER_BYTES + r.payload.size for r in records)
        active = self._segments[-1]
        # A call never spans segments, so that rolling a failed call back is one truncate.
        if active.size_bytes > 0 and active.size_bytes + call_bytes > self._segment_bytes_max:
            active = self._roll_locked()
        start_size = active.size_bytes
        buffers: list[bytes | pa.Buffer] = []
        positions = []
        position = start_size
        for index, record in enumerate(records):
            buffers.append(encode_header(record.payload_crc, record.payload.size, self._written_end + index))
            buffers.append(record.payload)
            positions.append(position)
            position += HEADER_BYTES + record.payload.size
        try:
            _write_all(self._fd, buffers)
        except OSError as error:
            self._roll_back_write_locked(active, start_size, error)
            if error.errno in _DISK_FULL_ERRNOS and self._failure is None:
                # Rolled back: the log is as it was, and usable again once there is space.
                raise DiskFull(
                    f"could not write to {active.path}: {os.strerror(error.errno)}; the statement was not "
                    "applied and every write acknowledged before it is kept. Free disk space and retry."
                ) from error
            raise InternalError(f"table log {active.path}: write failed: {error}") from error
        active.positions.extend(positions)
        active.size_bytes = position
        for record in records:
            self._cache[self._written_end] = (record.chunk, record.chunk_bytes)
            self._cache_bytes += record.chunk_bytes
            self._written_end += 1
        self._records_appended += len(records)
        self._payload_bytes_appended += call_bytes - HEADER_BYTES * len(records)
        self._evict_locked()
        if not self._fsync:
            self._durable_end = self._written_end
            self._changed.notify_all()
        return self._written_end

    def _roll_back_write_locked(self, active: _Segment, size_bytes: int, error: OSError) -> None:
        try:
            os.ftruncate(self._fd, size_bytes)
        except OSError as truncate_error:
            # The segment may now hold part of a record the caller was told failed.
            self._failure = InternalError(
                f"table log {active.path}: write failed ({error}) and could not be undone "
                f"({truncate_error}); reopen the log"
            )

    def _roll_locked(self) -> _Segment:
        old = self._segments[-1]
        if self._fsync and self._durable_end < old.end_offset:
            self._sync_fd_locked(self._fd)
        try:
            segment, fd = self._create_segment(old.end_offset)
        except OSError as error:
            if error.errno in _DISK_FULL_ERRNOS:
                raise DiskFull(
                    f"could not start a new segment in {self._directory}: {os.strerror(error.errno)}; the "
                    "statement was not applied and every write acknowledged before it is kept. Free disk space "
                    "and retry."
                ) from error
            raise InternalError(f"table log {self._directory}: cannot start a segment: {error}") from error
        if self._syncing:
            self._retired_fds.append(self._fd)  # the fsync in flight closes it
        else:
            os.close(self._fd)
        self._segments.append(segment)
        self._fd = fd
        # The old segment is durable: appenders waiting on it are done.
        self._durable_end = max(self._durable_end, old.end_offset)
        self._changed.notify_all()
        return segment

    def _sync_fd_locked(self, fd: int) -> None:
        try:
            os.fsync(fd)
        except OSError as error:
            raise self._fail_sync_locked(error) from error
        self._fsyncs += 1

    def _wait_durable(self, end: int) -> None:
        with self._lock:
            if self._fsync and self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, name=f"table-log-flusher {self._directory.name}", daemon=True
                )
                self._flusher.start()
            self._sync_needed.notify()
            while self._durable_end < end:
                if self._failure is not None:
                    raise self._failure
                self._changed.wait()

    def _flush_loop(self) -> None:
        """Group commit: one fsync covers every record written while the previous one ran.

        A thread of its own rather than a leader among the appenders: the next fsync
        starts as soon as the last one ends, without waiting for a woken appender
        to get the GIL.
        """
        try:
            while self._flush_once():
                pass
        except BaseException as error:
            with self._lock:
                self._failure = InternalError(f"table log {self._directory}: the flusher failed: {error!r}")
                self._changed.notify_all()
            raise

    def _flush_once(self) -> bool:
        """One fsync of what is written and not yet durable; False when the log is closed."""
        with self._lock:
            while self._durable_end >= self._written_end and not self._closed:
                self._sync_needed.wait()
            if self._durable_end >= self._written_end or self._failure is not None:
                return not self._closed
            self._syncing = True
            target = self._written_end
            fd = self._fd
        error: OSError | None = None
        try:
            os.fsync(fd)
        except OSError as caught:
            error = caught
        with self._lock:
            self._syncing = False
            for retired in self._retired_fds:
                os.close(retired)
            self._retired_fds.clear()
            if error is not None:
                self._fail_sync_locked(error)
            else:
                self._fsyncs += 1
                self._durable_end = max(self._durable_end, target)
            self._changed.notify_all()
        return True

    def _fail_sync_locked(self, error: OSError) -> InternalError:
        """After a failed fsync, remove what was not durable (best effort) and refuse appends."""
        active = self._segments[-1]
        if self._durable_end < active.end_offset:
            keep_records = max(self._durable_end - active.first_offset, 0)
            keep_bytes = active.byte_range(active.first_offset + keep_records, active.end_offset)[0]
            try:
                os.ftruncate(self._fd, keep_bytes)
                del active.positions[keep_records:]
                active.size_bytes = keep_bytes
            except OSError:
                logger.exception("table log %s: could not cut off unsynced records", active.path)
            for offset in range(max(self._durable_end, self._cache_first), self._written_end):
                self._cache_bytes -= self._cache.pop(offset)[1]
            self._written_end = self._durable_end
            self._cache_first = min(self._cache_first, self._written_end)
        self._failure = InternalError(f"table log {active.path}: fsync failed: {error}; reopen the log")
        return self._failure

    def _evict_locked(self) -> None:
        while self._cache_bytes > self._cache_bytes_max and self._cache_first < self._written_end:
            self._cache_bytes -= self._cache.pop(self._cache_first)[1]
            self._cache_first += 1

    # -- reading -----------------------------------------------------------------

    def end_offset(self) -> int:
        """The number of durable records: the offset the next record will get, once nothing is in flight."""
        with self._lock:
            return self._durable_end

    def start_offset(self) -> int:
        """The lowest offset still readable (records below it were truncated away)."""
        with self._lock:
            return self._segments[0].first_offset

    def read(self, start: int, max_records: int = 64) -> list[tuple[int, Chunk]]:
        """Durable records from ``start`` on, at most ``max_records``; [] when none is there yet."""
        assert max_records > 0 and start >= 0, (start, max_records)
        with self._lock:
            self._check_open()
            first = self._segments[0].first_offset
            if start < first:
                raise InternalError(
                    f"table log {self._directory}: offset {start} was truncated away; the first kept offset is {first}"
                )
            stop = min(self._durable_end, start + max_records)
            spans = self._file_spans_locked(start, min(stop, self._cache_first))
            files_stop = spans[-1][2] if spans else start
            if files_stop < min(stop, self._cache_first):
                stop = files_stop  # the byte bound cut the read short; stay contiguous
            cached = [(offset, self._cache[offset][0]) for offset in range(max(files_stop, start), stop)]
        records: list[tuple[int, Chunk]] = []
        for segment, span_start, span_stop in spans:
            records.extend(self._read_span(segment, span_start, span_stop))
        records.extend(cached)
        return records

    def _file_spans_locked(self, start: int, stop: int) -> list[tuple[_Segment, int, int]]:
        """Per segment, the offsets [a, b) of records in [start, stop) to read from files."""
        spans: list[tuple[_Segment, int, int]] = []
        read_bytes = 0
        offset = start
        index = bisect.bisect_right([s.first_offset for s in self._segments], start) - 1
        while offset < stop:
            segment = self._segments[index]
            span_stop = min(stop, segment.end_offset)
            # Whole records up to the byte bound; the first record of a read always goes in.
            while span_stop > offset:
                begin, end = segment.byte_range(offset, span_stop)
                if read_bytes + end - begin <= READ_BYTES_MAX or (not spans and span_stop - offset == 1):
                    break
                span_stop = offset + (span_stop - offset) // 2
            if span_stop == offset:
                break
            begin, end = segment.byte_range(offset, span_stop)
            read_bytes += end - begin
            spans.append((segment, offset, span_stop))
            if span_stop < segment.end_offset:
                break
            offset = span_stop
            index += 1
        return spans

    def _read_span(self, segment: _Segment, start: int, stop: int) -> list[tuple[int, Chunk]]:
        begin, end = segment.byte_range(start, stop)
        try:
            fd = os.open(segment.path, os.O_RDONLY)
        except FileNotFoundError as error:
            raise InternalError(
                f"table log {self._directory}: offset {start} was truncated away while being read"
            ) from error
        try:
            data = os.pread(fd, end - begin, begin)
            while len(data) < end - begin:
                more = os.pread(fd, end - begin - len(data), begin + len(data))
                if not more:
                    break
                data += more
        finally:
            os.close(fd)
        view = memoryview(data)
        records = []
        position = 0
        for offset in range(start, stop):
            checked = _check_record(view, position)
            if isinstance(checked, str) or checked[0].offset != offset:
                reason = checked if isinstance(checked, str) else f"header says offset {checked[0].offset}"
                raise InternalError(
                    f"table log segment {segment.path} is corrupt at byte {begin + position} "
                    f"(record offset {offset}): {reason}"
                )
            position_end = checked[1]
            records.append((offset, _decode_payload(view[position + HEADER_BYTES : position_end])))
            position = position_end
        return records

    @property
    def closed(self) -> bool:
        return self._closed

    def bytes_from(self, offset: int) -> int:
        """Bytes of the records written at ``offset`` and after: what a replay from there reads."""
        with self._lock:
            total = 0
            for segment in reversed(self._segments):
                if segment.end_offset <= offset:
                    break
                start = max(offset, segment.first_offset)
                if start < segment.end_offset:
                    total += segment.size_bytes - segment.positions[start - segment.first_offset]
            return total

    def wait_for(self, offset: int, timeout_s: float) -> bool:
        """Block until record ``offset`` is durable (end_offset() > offset); False on timeout."""
        with self._lock:
            return self._changed.wait_for(lambda: self._durable_end > offset or self._closed, timeout_s) and (
                self._durable_end > offset
            )

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` in the appending thread after each durable append (keep it cheap)."""
        with self._lock:
            self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    # -- housekeeping ------------------------------------------------------------

    def truncate_before(self, offset: int) -> None:
        """Promise never to read below ``offset``: delete the segments entirely below it."""
        with self._lock:
            self._check_open()
            if offset > self._durable_end:
                raise InternalError(
                    f"table log {self._directory}: cannot truncate before {offset}, past the end {self._durable_end}"
                )
            doomed = [s for s in self._segments[:-1] if s.end_offset <= offset]
            del self._segments[: len(doomed)]
            while self._cache_first < min(offset, self._written_end):
                self._cache_bytes -= self._cache.pop(self._cache_first)[1]
                self._cache_first += 1
        for segment in doomed:
            # Losing the unlink in a crash is harmless: the file is only read again if asked for.
            segment.path.unlink(missing_ok=True)

    def stats(self) -> TableLogStats:
        with self._lock:
            return TableLogStats(self._records_appended, self._payload_bytes_appended, self._fsyncs)

    def close(self) -> None:
        """Refuse new appends, let the flusher make what is written durable, release the files."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._sync_needed.notify()
            flusher = self._flusher
        if flusher is not None:
            flusher.join()
        with self._lock:
            try:
                if self._fsync and self._failure is None and self._durable_end < self._written_end:
                    self._sync_fd_locked(self._fd)
                if not self._fsync:
                    self._durable_end = self._written_end
            finally:
                os.close(self._fd)
                for retired in self._retired_fds:
                    os.close(retired)
                self._retired_fds.clear()
                self._cache.clear()
                self._changed.notify_all()

    def _check_open(self) -> None:
        if self._closed:
            raise InternalError(f"table log {self._directory} is closed")

    def __enter__(self) -> TableLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
