"""Unit tests of the table log: round trips, recovery from torn tails, corruption,
concurrency and group commit, truncation, and durability across SIGKILL."""

from __future__ import annotations

import datetime
import decimal
import errno
import logging
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pyarrow as pa
import pytest

from tidegate.common.chunk import Chunk, Op
from tidegate.connectors import table_log as table_log_module
from tidegate.connectors.table_log import HEADER_BYTES, TableLog
from tidegate.errors import DiskFull, InternalError

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]

WIDE_SCHEMA = pa.schema(
    [
        ("_row_id", pa.int64()),
        ("i", pa.int32()),
        ("s", pa.string()),
        ("d", pa.decimal128(38, 10)),
        ("ts", pa.timestamp("us")),
        ("day", pa.date32()),
        ("flag", pa.bool_()),
    ]
)

SMALL_SCHEMA = pa.schema([("writer", pa.int32()), ("seq", pa.int64())])


def wide_chunk(first_row_id: int) -> Chunk:
    rows = [
        (
            first_row_id,
            1,
            "one",
            decimal.Decimal("1.0000000001"),
            datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
            datetime.date(2024, 1, 2),
            True,
        ),
        (first_row_id + 1, None, None, None, None, None, None),
        (
            first_row_id + 2,
            -(2**31),
            "",
            decimal.Decimal("-12345678901234567890123456.7890123456"),
            datetime.datetime(1970, 1, 1),
            datetime.date(1, 1, 1),
            False,
        ),
        (
            first_row_id + 3,
            2**31 - 1,
            "ünïcødé ✓",
            decimal.Decimal(0),
            datetime.datetime(9999, 12, 31),
            datetime.date(9999, 12, 31),
            None,
        ),
    ]
    columns = list(zip(*rows))
    batch = pa.record_batch(
        [pa.array(column, type=field.type) for column, field in zip(columns, WIDE_SCHEMA)], schema=WIDE_SCHEMA
    )
    return Chunk.of([Op.INSERT, Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT], batch)


def small_chunk(writer: int, seq: int, rows: int = 1) -> Chunk:
    columns = [pa.array([writer] * rows, pa.int32()), pa.array(range(seq, seq + rows), pa.int64())]
    batch = pa.record_batch(columns, schema=SMALL_SCHEMA)
    return Chunk.inserts(batch)


def assert_same(actual: Chunk, expected: Chunk) -> None:
    assert actual.rows() == expected.rows()
    assert actual.schema.types == expected.schema.types
    assert actual.schema.names == expected.schema.names


def read_all(log: TableLog, start: int = 0) -> list[tuple[int, Chunk]]:
    records: list[tuple[int, Chunk]] = []
    while start < log.end_offset():
        batch = log.read(start)
        assert batch, start
        records.extend(batch)
        start = batch[-1][0] + 1
    return records


def segments(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(directory.glob("*.seg"))


def test_round_trip_all_ops_and_types(tmp_path: pathlib.Path) -> None:
    chunks = [wide_chunk(10 * i) for i in range(5)]
    with TableLog(tmp_path / "t", WIDE_SCHEMA) as log:
        assert log.read(0) == []
        assert log.append(chunks[0]) == 1
        assert log.append_many(chunks[1:]) == 5
        assert log.end_offset() == 5
        from_cache = log.read(0)
        assert [offset for offset, _ in from_cache] == [0, 1, 2, 3, 4]
        for (_, actual), expected in zip(from_cache, chunks):
            assert_same(actual, expected)
        assert [offset for offset, _ in log.read(3, max_records=1)] == [3]
        assert log.read(5) == []
    # A cache of zero bytes sends every read to the segment files.
    with TableLog(tmp_path / "t", WIDE_SCHEMA, cache_bytes_max=0) as log:
        from_files = log.read(0)
        assert [offset for offset, _ in from_files] == [0, 1, 2, 3, 4]
        for (_, actual), expected in zip(from_files, chunks):
            assert_same(actual, expected)


def test_empty_chunk_is_a_record(tmp_path: pathlib.Path) -> None:
    empty = Chunk.inserts(SMALL_SCHEMA.empty_table())
    with TableLog(tmp_path / "t", SMALL_SCHEMA) as log:
        assert log.append(empty) == 1
        [(offset, chunk)] = log.read(0)
        assert offset == 0 and len(chunk) == 0


def test_reopen_keeps_everything_across_segments(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "t"
    with TableLog(directory, SMALL_SCHEMA, segment_bytes_max=2000) as log:
        for seq in range(40):
            log.append(small_chunk(0, seq))
    assert len(segments(directory)) > 3
    with TableLog(directory, SMALL_SCHEMA, segment_bytes_max=2000) as log:
        assert log.end_offset() == 40
        assert [c.rows()[0][1] for _, c in read_all(log)] == [(0, seq) for seq in range(40)]
        assert log.append(small_chunk(0, 40)) == 41
    with TableLog(directory, SMALL_SCHEMA) as log:
        records = read_all(log)
        assert [offset for offset, _ in records] == list(range(41))
        assert records[-1][1].rows() == [(Op.INSERT, (0, 40))]


@pytest.mark.parametrize("cut", ["inside header", "inside payload", "last byte"])
def test_torn_tail_is_cut_off(tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture, cut: str) -> None:
    directory = tmp_path / "t"
    with TableLog(directory, SMALL_SCHEMA) as log:
        for seq in range(3):
            log.append(small_chunk(0, 50 * seq, rows=50))
    [segment] = segments(directory)
    size = segment.stat().st_size
    record_bytes = size // 3
    keep = {
        "inside header": 2 * record_bytes + 7,
        "inside payload": 2 * record_bytes + HEADER_BYTES + 40,
        "last byte": size - 1,
    }[cut]
    os.truncate(segment, keep)
    with caplog.at_level(logging.WARNING), TableLog(directory, SMALL_SCHEMA) as log:
        assert log.end_offset() == 2
        assert [c.rows()[0][1] for _, c in read_all(log)] == [(0, 0), (0, 50)]
        assert log.append(small_chunk(0, 1000)) == 3
    assert "torn tail" in caplog.text and str(segment) in caplog.text
    with TableLog(directory, SMALL_SCHEMA) as log:
        assert [c.rows()[0][1] for _, c in read_all(log)] == [(0, 0), (0, 50), (0, 1000)]


def test_zeroed_tail_is_torn_not_corrupt(tmp_path: pathlib.Path) -> None:
    # Some file systems extend the file before the data lands: a crash leaves zeros.
    directory = tmp_path / "t"
    with TableLog(directory, SMALL_SCHEMA) as log:
        log.append(small_chunk(0, 0))
    [segment] = segments(directory)
    size = segment.stat().st_size
    with segment.open("ab") as file:
        file.write(b"\0" * 500)
    with TableLog(directory, SMALL_SCHEMA) as log:
        assert log.end_offset() == 1
    assert segment.stat().st_size == size


def flip_byte(path: pathlib.Path, position: int) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corruption_in_the_middle_names_file_and_offset(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "t"
    with TableLog(directory, SMALL_SCHEMA) as log:
        for seq in range(3):
            log.append(small_chunk(0, 50 * seq, rows=50))
    [segment] = segments(directory)
    record_bytes = segment.stat().st_size // 3
    flip_byte(segment, record_bytes + HEADER_BYTES + 100)  # the payload of record 1
    with pytest.raises(InternalError, match=rf"{segment}.*record offset 1\).*bad payload checksum"):
        TableLog(directory, SMALL_SCHEMA)


def test_corrupt_tail_of_an_older_segment_is_an_error(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "t"
    with TableLog(directory, SMALL_SCHEMA, segment_bytes_max=2000) as log:
        for seq in range(30):
            log.append(small_chunk(0, seq))
    first = segments(directory)[0]
    os.truncate(first, first.stat().st_size - 3)
    with pytest.raises(InternalError, match=str(first)):
        TableLog(directory, SMALL_SCHEMA)


def test_missing_segment_is_an_error(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "t"
    with TableLog(directory, SMALL_SCHEMA, segment_bytes_max=2000) as log:
        for seq in range(30):
            log.append(small_chunk(0, seq))
    segments(directory)[1].unlink()
    with pytest.raises(InternalError, match="missing"):
        TableLog(directory, SMALL_SCHEMA)


def test_corruption_found_when_reading_from_files(tmp_path: pathlib.Path) -> None:
    with TableLog(tmp_path / "t", SMALL_SCHEMA, cache_bytes_max=0) as log:
        for seq in range(3):
            log.append(small_chunk(0, 50 * seq, rows=50))
        [segment] = segments(tmp_path / "t")
        flip_byte(segment, segment.stat().st_size // 3 + HEADER_BYTES + 100)
        assert len(log.read(0, max_records=1)) == 1
        with pytest.raises(InternalError, match=rf"{segment}.*record offset 1\)"):
            log.read(0)


def test_concurrent_appenders_and_reader_see_every_record_once_in_order(tmp_path: pathlib.Path) -> None:
    writers, per_writer = 4, 60
    seen: list[tuple[int, Chunk]] = []
    with TableLog(tmp_path / "t", SMALL_SCHEMA, segment_bytes_max=4000, cache_bytes_max=3000) as log:

        def append_records(writer: int) -> None:
            for seq in range(per_writer):
                if seq % 10 == 0:
                    log.append_many([small_chunk(writer, seq), small_chunk(writer, seq + 1)])
                elif seq % 10 != 1:
                    log.append(small_chunk(writer, seq))

        def read_records() -> None:
            offset = 0
            while offset < writers * per_writer:
                if not log.wait_for(offset, timeout_s=10):
                    return
                for record_offset, chunk in log.read(offset, max_records=7):
                    assert record_offset == offset
                    seen.append((record_offset, chunk))
                    offset += 1

        reader = threading.Thread(target=read_records)
        reader.start()
        threads = [threading.Thread(target=append_records, args=(w,)) for w in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        reader.join()
        assert log.end_offset() == writers * per_writer
    assert [offset for offset, _ in seen] == list(range(writers * per_writer))
    by_writer: dict[int, list[int]] = {}
    for _, chunk in seen:
        [(_, (writer, seq))] = chunk.rows()
        assert isinstance(writer, int) and isinstance(seq, int)
        by_writer.setdefault(writer, []).append(seq)
    assert by_writer == {w: list(range(per_writer)) for w in range(writers)}


def test_group_commit_covers_several_appends_with_one_fsync(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fsync = os.fsync

    def slow_fsync(fd: int) -> None:
        time.sleep(0.005)  # a disk, not a page cache: while one fsync runs, others queue up
        real_fsync(fd)

    log = TableLog(tmp_path / "t", SMALL_SCHEMA)
    monkeypatch.setattr(table_log_module.os, "fsync", slow_fsync)
    start = threading.Barrier(4)

    def append_records(writer: int) -> None:
        start.wait()
        for seq in range(25):
            log.append(small_chunk(writer, seq))

    threads = [threading.Thread(target=append_records, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = log.stats()
    monkeypatch.undo()
    log.close()
    assert stats.records_appended == 100
    assert stats.fsyncs < 60, stats  # one per append would be 100


def test_append_many_fsyncs_once(tmp_path: pathlib.Path) -> None:
    with TableLog(tmp_path / "t", SMALL_SCHEMA) as log:
        log.append_many([small_chunk(0, seq, rows=100) for seq in range(20)])
        assert log.stats().fsyncs == 1


def test_truncate_before_drops_old_segments(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "t"
    with TableLog(directory, SMALL_SCHEMA, segment_bytes_max=2000, cache_bytes_max=0) as log:
        for seq in range(50):
            log.append(small_chunk(0, seq))
        before = len(segments(directory))
        log.truncate_before(30)
        assert len(segments(directory)) < before
        start = log.start_offset()
        assert 0 < start <= 30
        assert [c.rows()[0][1][1] for _, c in read_all(log, 30)] == list(range(30, 50))
        with pytest.raises(InternalError, match="truncated"):
            log.read(start - 1)
        log.truncate_before(50)  # never deletes the segment being written
        assert len(segments(directory)) == 1
        assert log.append(small_chunk(0, 50)) == 51
        with pytest.raises(InternalError):
            log.truncate_before(52)
    with TableLog(directory, SMALL_SCHEMA) as log:
        assert log.end_offset() == 51
        assert [c.rows()[0][1][1] for _, c in read_all(log, log.start_offset())][-1] == 50


def test_listener_and_wait_for(tmp_path: pathlib.Path) -> None:
    calls: list[int] = []
    with TableLog(tmp_path / "t", SMALL_SCHEMA) as log:
        log.add_listener(lambda: calls.append(log.end_offset()))
        assert not log.wait_for(0, timeout_s=0.01)
        log.append(small_chunk(0, 0))
        log.append_many([small_chunk(0, 1), small_chunk(0, 2)])
        assert calls == [1, 3]
        assert log.wait_for(2, timeout_s=0)
        waiter_result: list[bool] = []
        waiter = threading.Thread(target=lambda: waiter_result.append(log.wait_for(3, timeout_s=5)))
        waiter.start()
        log.append(small_chunk(0, 3))
        waiter.join()
        assert waiter_result == [True]


def test_schema_mismatch_is_refused(tmp_path: pathlib.Path) -> None:
    with TableLog(tmp_path / "t", SMALL_SCHEMA) as log, pytest.raises(InternalError, match="schema"):
        log.append(wide_chunk(0))


def test_failed_write_is_rolled_back(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "t"
    log = TableLog(directory, SMALL_SCHEMA)
    log.append(small_chunk(0, 0))
    [segment] = segments(directory)
    size = segment.stat().st_size
    real_writev = os.writev

    def short_writev(fd: int, buffers: list[memoryview]) -> int:
        return real_writev(fd, [buffers[0][:10]])  # part of a header, then the disk is full

    def full_disk_write(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(table_log_module.os, "writev", short_writev)
    monkeypatch.setattr(table_log_module.os, "write", full_disk_write)
    with pytest.raises(DiskFull, match="No space left"):
        log.append(small_chunk(0, 1))
    monkeypatch.undo()
    assert segment.stat().st_size == size
    assert log.end_offset() == 1
    assert log.append(small_chunk(0, 2)) == 2
    log.close()
    with TableLog(directory, SMALL_SCHEMA) as reopened:
        assert [c.rows()[0][1][1] for _, c in read_all(reopened)] == [0, 2]


def test_failed_fsync_refuses_appends_and_leaves_nothing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "t"
    log = TableLog(directory, SMALL_SCHEMA)
    log.append(small_chunk(0, 0))

    def failing_fsync(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(table_log_module.os, "fsync", failing_fsync)
    with pytest.raises(InternalError, match="fsync failed"):
        log.append(small_chunk(0, 1))
    monkeypatch.undo()
    with pytest.raises(InternalError, match="fsync failed"):
        log.append(small_chunk(0, 2))
    assert [c.rows()[0][1][1] for _, c in read_all(log)] == [0]
    log.close()
    with TableLog(directory, SMALL_SCHEMA) as reopened:
        assert reopened.end_offset() == 1
        assert reopened.append(small_chunk(0, 3)) == 2


CHILD_APPENDER = """
import pathlib, sys
import pyarrow as pa
from tidegate.common.chunk import Chunk
from tidegate.connectors.table_log import TableLog
schema = pa.schema([("writer", pa.int32()), ("seq", pa.int64())])
log = TableLog(pathlib.Path(sys.argv[1]), schema, segment_bytes_max=20000)
seq = 0
while True:
    batch = pa.record_batch([pa.array([7] * 20, pa.int32()), pa.array(range(seq, seq + 20), pa.int64())],
                            schema=schema)
    end = log.append(Chunk.inserts(batch))
    sys.stdout.write(f"{end}\\n")
    sys.stdout.flush()
    seq += 20
"""


def test_sigkill_after_append_returned_loses_nothing(tmp_path: pathlib.Path) -> None:
    directory = tmp_path / "t"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_APPENDER, str(directory)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert child.stdout is not None
    acknowledged = 0
    try:
        while acknowledged < 150:
            line = child.stdout.readline()
            assert line, "the child died"
            acknowledged = int(line)
    finally:
        # Killed while it keeps appending: some record is likely half written.
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    with TableLog(directory, SMALL_SCHEMA) as log:
        assert log.end_offset() >= acknowledged
        records = read_all(log)
        assert [offset for offset, _ in records] == list(range(log.end_offset()))
        seqs = [seq for _, chunk in records for _, (_, seq) in chunk.rows()]
        assert seqs == list(range(20 * log.end_offset()))


def test_cache_and_files_give_the_same_chunks(tmp_path: pathlib.Path) -> None:
    schema = pa.schema(
        [pa.field("_row_id", pa.int64(), nullable=False), pa.field("v", pa.string())], metadata={b"table": b"t"}
    )
    # The same columns with other nullability and no metadata, as a DML path may build them.
    loose = pa.record_batch([pa.array([1, 2], pa.int64()), pa.array(["a", None])], names=["_row_id", "v"])
    big = pa.record_batch([pa.array(range(200_000), pa.int64()), pa.array(["x"] * 200_000)], schema=schema)
    chunks = [Chunk.of([Op.INSERT, Op.DELETE], loose), Chunk.inserts(big.slice(5, 3))]
    with TableLog(tmp_path / "t", schema) as log:
        log.append_many(chunks)
        from_cache = log.read(0)
    with TableLog(tmp_path / "t", schema, cache_bytes_max=0) as log:
        from_files = log.read(0)
    for (_, cached), (_, read_back), original in zip(from_cache, from_files, chunks):
        assert cached.rows() == read_back.rows() == original.rows()
        assert cached.schema.equals(schema, check_metadata=True)
        assert read_back.schema.equals(schema, check_metadata=True)
    # The slice is cached without the 200,000 rows it was cut from.
    assert from_cache[1][1].data.get_total_buffer_size() < 10_000


def test_reads_from_files_are_bounded_by_bytes(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(table_log_module, "READ_BYTES_MAX", 5000)
    with TableLog(tmp_path / "t", SMALL_SCHEMA, segment_bytes_max=8000, cache_bytes_max=0) as log:
        for seq in range(20):
            log.append(small_chunk(0, 100 * seq, rows=100))
        log.append(small_chunk(0, 2000, rows=1000))  # larger than the bound on its own
        first = log.read(0)
        assert 1 <= len(first) < 10
        assert [offset for offset, _ in first] == list(range(len(first)))
        records = read_all(log)
        assert [offset for offset, _ in records] == list(range(21))
        assert [seq for _, chunk in records for _, (_, seq) in chunk.rows()] == list(range(3000))
        assert [offset for offset, _ in log.read(20)] == [20]


def test_bytes_from_counts_the_records_a_replay_would_read(tmp_path: pathlib.Path) -> None:
    with TableLog(tmp_path / "log", SMALL_SCHEMA, fsync=False, segment_bytes_max=4096) as log:
        sizes = []
        for seq in range(20):
            before = sum(p.stat().st_size for p in (tmp_path / "log").glob("*.seg"))
            log.append(small_chunk(0, seq, rows=seq + 1))
            sizes.append(sum(p.stat().st_size for p in (tmp_path / "log").glob("*.seg")) - before)
        assert len(list((tmp_path / "log").glob("*.seg"))) > 1  # spans segments
        for offset in (0, 1, 7, 19, 20, 25):
            assert log.bytes_from(offset) == sum(sizes[offset:]), offset
        log.truncate_before(10)
        assert log.bytes_from(0) <= sum(sizes) and log.bytes_from(12) == sum(sizes[12:])
