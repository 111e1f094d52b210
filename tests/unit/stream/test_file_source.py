"""FileSource: CSV and JSON-lines files of a directory read between barriers, new files and appended
lines picked up, positions committed with each barrier and restored exactly after a rebuild
(rewound under exactly_once, kept under at_most_once), malformed records per on.error, and files
that shrink or disappear."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
from scripted import barrier, changes, rows_before, table_rows

from tidegate.common.chunk import Chunk
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.common.types import parse_type_name
from tidegate.connectors.read_positions import ReadPositions
from tidegate.connectors.source_errors import SOURCE_ERRORS_SCHEMA
from tidegate.errors import DataError
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message, StopMutation
from tidegate.stream.operator import CheckedOperator
from tidegate.stream.operators.file_source import FILE_OFFSETS_SCHEMA, FileSource, build_file_source

ACTOR = 11
SOURCE = 3
OFFSETS_TABLE = (ACTOR << 16) | 1
ERRORS_TABLE = (ACTOR << 16) | 2
COLUMNS = [["id", "bigint"], ["name", "varchar"]]
SCHEMA = pa.schema(
    [*(pa.field(name, parse_type_name(text).arrow) for name, text in COLUMNS), pa.field("_row_id", pa.int64())]
)
TIMEOUT_S = 5


def row_id(file_no: int, byte: int) -> int:
    return (file_no << 40) | byte


def new_source(
    store: MemoryStateStore,
    directory: Path,
    encode: str = "CSV",
    guarantee: DeliveryGuarantee = DeliveryGuarantee.EXACTLY_ONCE,
    positions: ReadPositions | None = None,
    **extra: str,
) -> FileSource:
    options = {"connector": "file", "path": str(directory), "poll.interval.ms": "10"}
    options.update({key.replace("_", "."): value for key, value in extra.items()})
    plan = {
        "op": "source",
        "relation_id": 1,
        "connector": "file",
        "options": options,
        "encode": encode,
        "schema": [*COLUMNS, ["_row_id", "bigint"]],
    }
    return build_file_source(
        plan,
        StateTable(store, OFFSETS_TABLE, FILE_OFFSETS_SCHEMA, [0]),
        StateTable(store, ERRORS_TABLE, SOURCE_ERRORS_SCHEMA, [0]),
        SCHEMA,
        ACTOR,
        guarantee=guarantee,
        positions=positions if positions is not None else ReadPositions(None),
        source_id=SOURCE,
        watermark=None,
    )


class Running:
    """A FileSource running on the test's loop; its output (checked) collected as it comes."""

    def __init__(self, source: FileSource) -> None:
        self.source = source
        self.out: list[Message] = []
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for message in CheckedOperator(self.source).execute():
            self.out.append(message)
            if isinstance(message, Barrier) and message.stops(self.source.actor_id):
                return

    def rows(self) -> list[tuple[object, ...]]:
        return [row for _, row in changes(self.out)]

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(TIMEOUT_S):
            while not condition():
                if self.task.done():
                    self.task.result()  # raises what the source raised
                    raise AssertionError("the source stopped")
                await asyncio.sleep(0.005)

    async def rows_reach(self, count: int) -> None:
        await self.until(lambda: len(self.rows()) >= count)

    async def barrier(self, curr: int, prev: int, *, stop: bool = False) -> None:
        """Inject barrier ``(prev → curr)`` and wait until the source has passed it."""
        mutation = StopMutation(frozenset({ACTOR})) if stop else None
        self.source.inject(barrier(curr, prev, mutation=mutation))
        await self.until(lambda: any(isinstance(m, Barrier) and m.epoch.curr == curr for m in self.out))
        if stop:
            await asyncio.wait_for(self.task, TIMEOUT_S)

    async def polls(self, count: int = 5) -> None:
        """Give the source time for a few looks at the directory."""
        await asyncio.sleep(count * 0.01 + 0.02)

    async def crash(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def csv_lines(*rows: tuple[int, str]) -> str:
    return "".join(f"{i},{name}\n" for i, name in rows)


def json_lines(*rows: tuple[int, str]) -> str:
    return "".join(f'{{"id": {i}, "name": "{name}"}}\n' for i, name in rows)


def append(path: Path, text: str) -> None:
    with path.open("a") as file:
        file.write(text)


@pytest.mark.parametrize(("encode", "lines"), [("CSV", csv_lines), ("JSON", json_lines)])
def test_files_are_read_once_in_name_order_with_their_row_ids(
    tmp_path: Path, encode: str, lines: Callable[..., str]
) -> None:
    (tmp_path / "b.txt").write_text(lines((3, "c")))
    (tmp_path / "a.txt").write_text(lines((1, "a"), (2, "b")))
    for ignored in (".hidden.txt", "c.txt.tmp", "d.log"):
        (tmp_path / ignored).write_text(lines((9, "x")))
    (tmp_path / "sub").mkdir()
    store = MemoryStateStore()
    first_line = len(lines((1, "a")))

    async def scenario() -> list[tuple[object, ...]]:
        running = Running(new_source(store, tmp_path, encode, match_pattern="*.txt"))
        await running.barrier(1, 0)
        await running.rows_reach(3)
        await running.polls()
        await running.barrier(2, 1, stop=True)
        assert running.source.offset == 3
        return running.rows()

    rows = asyncio.run(scenario())
    assert rows == [(1, "a", row_id(0, 0)), (2, "b", row_id(0, first_line)), (3, "c", row_id(1, 0))]
    size_a, size_b = (tmp_path / "a.txt").stat().st_size, (tmp_path / "b.txt").stat().st_size
    assert table_rows(store.snapshot(OFFSETS_TABLE, 1)) == [("a.txt", 0, size_a, 0), ("b.txt", 1, size_b, 0)]


def test_new_files_and_appended_lines_are_read_and_a_partial_line_only_once_complete(tmp_path: Path) -> None:
    a = tmp_path / "a.csv"
    a.write_text(csv_lines((1, "a")))
    store = MemoryStateStore()

    async def scenario() -> list[tuple[object, ...]]:
        running = Running(new_source(store, tmp_path))
        await running.barrier(1, 0)
        await running.rows_reach(1)
        append(a, csv_lines((2, "b")) + "3,c")  # the writer is still writing line 3
        await running.rows_reach(2)
        await running.polls()
        assert len(running.rows()) == 2
        append(a, "c\n")
        await running.rows_reach(3)
        (tmp_path / "0.csv").write_text(csv_lines((4, "d")))  # sorts first, found last
        await running.rows_reach(4)
        await running.polls()
        await running.barrier(2, 1, stop=True)
        return running.rows()

    assert asyncio.run(scenario()) == [
        (1, "a", row_id(0, 0)),
        (2, "b", row_id(0, 4)),
        (3, "cc", row_id(0, 8)),
        (4, "d", row_id(1, 0)),
    ]


def test_a_csv_header_is_skipped_the_delimiter_used_and_empty_lines_ignored(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id;name\n1;a\n\n  \n2;b\r\n")
    (tmp_path / "b.csv").write_text("id;name\n")
    store = MemoryStateStore()

    async def scenario() -> list[tuple[object, ...]]:
        running = Running(new_source(store, tmp_path, csv_header="true", csv_delimiter=";"))
        await running.barrier(1, 0)
        await running.rows_reach(2)
        append(tmp_path / "b.csv", "3;c\n")
        await running.rows_reach(3)
        await running.polls()
        await running.barrier(2, 1, stop=True)
        return running.rows()

    assert asyncio.run(scenario()) == [(1, "a", row_id(0, 8)), (2, "b", row_id(0, 16)), (3, "c", row_id(1, 8))]


def test_chunks_hold_at_most_max_records_per_chunk(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text(csv_lines(*((i, "x") for i in range(7))))
    store = MemoryStateStore()

    async def scenario() -> list[int]:
        running = Running(new_source(store, tmp_path, max_records_per_chunk="3"))
        await running.barrier(1, 0)
        await running.rows_reach(7)
        await running.barrier(2, 1, stop=True)
        return [len(m) for m in running.out if isinstance(m, Chunk)]

    assert asyncio.run(scenario()) == [3, 3, 1]


def run_until_crash(
    store: MemoryStateStore, directory: Path, guarantee: DeliveryGuarantee, positions: ReadPositions
) -> list[Message]:
    """Read a.csv, checkpoint epoch 10 (barrier 20), then read an append and a new file in epoch 20
    and crash before its barrier."""
    a = directory / "a.csv"
    a.write_text(csv_lines((1, "a"), (2, "b")))

    async def scenario() -> list[Message]:
        running = Running(new_source(store, directory, guarantee=guarantee, positions=positions))
        await running.barrier(10, 0)
        await running.rows_reach(2)
        await running.barrier(20, 10)
        append(a, csv_lines((3, "c")))
        (directory / "b.csv").write_text(csv_lines((4, "d")))
        await running.rows_reach(4)
        await running.crash()
        return running.out

    return asyncio.run(scenario())


def test_a_rebuilt_source_rewinds_to_the_committed_positions_with_nothing_lost_or_doubled(tmp_path: Path) -> None:
    store = MemoryStateStore()
    positions = ReadPositions(tmp_path / "positions")
    directory = tmp_path / "in"
    directory.mkdir()
    crashed = run_until_crash(store, directory, DeliveryGuarantee.EXACTLY_ONCE, positions)
    committed = rows_before(crashed, 10)
    assert committed == [(1, "a", row_id(0, 0)), (2, "b", row_id(0, 4))]

    async def recovered() -> list[tuple[object, ...]]:
        running = Running(new_source(store, directory, positions=positions))
        await running.barrier(30, 10)  # recovery: the first barrier after the committed epoch
        await running.rows_reach(2)
        append(directory / "a.csv", csv_lines((5, "e")))
        await running.rows_reach(3)
        await running.polls()
        await running.barrier(40, 30, stop=True)
        return running.rows()

    resumed = asyncio.run(recovered())
    # What was read after the checkpoint is read again, with the same row ids.
    assert resumed[:2] == [row for _, row in changes(crashed)][2:]
    assert committed + resumed == [
        (1, "a", row_id(0, 0)),
        (2, "b", row_id(0, 4)),
        (3, "c", row_id(0, 8)),
        (4, "d", row_id(1, 0)),
        (5, "e", row_id(0, 12)),
    ]
    assert table_rows(store.snapshot(OFFSETS_TABLE, 30)) == [("a.csv", 0, 16, 0), ("b.csv", 1, 4, 0)]


def test_at_most_once_goes_on_from_the_saved_positions(tmp_path: Path) -> None:
    store = MemoryStateStore()
    positions = ReadPositions(tmp_path / "positions")
    directory = tmp_path / "in"
    directory.mkdir()
    run_until_crash(store, directory, DeliveryGuarantee.AT_MOST_ONCE, positions)
    assert positions.load(ACTOR, SOURCE) == {"a.csv": 12, "b.csv": 4}

    async def recovered() -> list[tuple[object, ...]]:
        running = Running(new_source(store, directory, "CSV", DeliveryGuarantee.AT_MOST_ONCE, positions))
        await running.barrier(30, 10)
        append(directory / "a.csv", csv_lines((5, "e")))
        await running.rows_reach(1)
        await running.polls()
        await running.barrier(40, 30, stop=True)
        return running.rows()

    # Rows 3 and 4 were in flight at the crash: dropped, never read again.
    assert asyncio.run(recovered()) == [(5, "e", row_id(0, 12))]
    offsets = table_rows(store.snapshot(OFFSETS_TABLE, 30))
    assert [(file, next_byte) for file, _, next_byte, _ in offsets] == [("a.csv", 16), ("b.csv", 4)]


JSON_WITH_A_BAD_LINE = json_lines((1, "a")) + "{not json\n" + json_lines((3, "c"))
BAD_BYTE = len(json_lines((1, "a")))


@pytest.mark.parametrize("policy", ["record", "skip"])
def test_malformed_lines_are_counted_and_their_count_is_restored(tmp_path: Path, policy: str) -> None:
    (tmp_path / "a.json").write_text(JSON_WITH_A_BAD_LINE)
    store = MemoryStateStore()

    async def scenario(first: int, prev: int, count: int) -> tuple[FileSource, list[tuple[object, ...]]]:
        source = new_source(store, tmp_path, "JSON", on_error=policy)
        running = Running(source)
        await running.barrier(first, prev)
        await running.rows_reach(count)
        await running.polls()
        await running.barrier(first + 10, first, stop=True)
        return source, running.rows()

    source, rows = asyncio.run(scenario(10, 0, count=2))
    assert rows == [(1, "a", row_id(0, 0)), (3, "c", row_id(0, BAD_BYTE + 10))]
    assert (source.malformed, source.offset) == (1, 3)
    assert table_rows(store.snapshot(OFFSETS_TABLE, 10)) == [("a.json", 0, len(JSON_WITH_A_BAD_LINE), 1)]
    errors = table_rows(store.snapshot(ERRORS_TABLE, 10))
    if policy == "skip":
        assert errors == []
    else:
        [(location, payload, reason)] = errors
        assert (location, payload) == (f"a.json byte {BAD_BYTE}", "{not json")
        assert reason
    # Rebuilt at the committed epoch: nothing is read again, and the count comes back.
    source, rows = asyncio.run(scenario(30, 10, count=0))
    assert (source.malformed, rows) == (1, [])
    assert table_rows(store.snapshot(ERRORS_TABLE, 30)) == errors


def test_on_error_fail_stops_the_source_naming_the_file_and_byte(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(JSON_WITH_A_BAD_LINE)

    async def scenario() -> None:
        running = Running(new_source(MemoryStateStore(), tmp_path, "JSON", on_error="fail"))
        await running.barrier(1, 0)
        await running.rows_reach(1)

    with pytest.raises(DataError, match=f"a.json byte {BAD_BYTE}: "):
        asyncio.run(scenario())


def test_a_truncated_or_removed_file_keeps_its_position(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text(csv_lines((1, "a"), (2, "b")))
    b.write_text(csv_lines((3, "c")))
    store = MemoryStateStore()

    async def scenario() -> list[tuple[object, ...]]:
        running = Running(new_source(store, tmp_path))
        await running.barrier(1, 0)
        await running.rows_reach(3)
        a.write_text(csv_lines((7, "x")))  # shorter than what was read
        b.unlink()
        await running.polls()
        append(a, csv_lines((8, "y")))  # back to 8 bytes: still not past the position
        await running.polls()
        await running.barrier(2, 1)
        append(a, csv_lines((9, "z")))
        await running.rows_reach(4)
        await running.barrier(3, 2, stop=True)
        return running.rows()

    with caplog.at_level(logging.WARNING):
        rows = asyncio.run(scenario())
    assert rows[3:] == [(9, "z", row_id(0, 8))]
    assert "a.csv shrank" in caplog.text and "b.csv disappeared" in caplog.text
    assert table_rows(store.snapshot(OFFSETS_TABLE, 2)) == [("a.csv", 0, 12, 0), ("b.csv", 1, 4, 0)]
