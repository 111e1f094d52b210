"""Scripted inputs for operator tests: a source that plays a fixed list of messages,
a runner that collects an operator's output, small builders of chunks and barriers,
and a state table that records its commits; for source operators, an in-memory log
and a driver that injects barriers into a generator source.

An operator test reads like the stream it drives::

    source = ScriptedSource(SCHEMA, [barrier(1), chunk(SCHEMA, "+ +", [(1, 2), (3, 4)]), barrier(2)])
    output = run(Project(source, ["_0 + _1"], OUT))

``run`` calls ``on_message(message)`` for every output message *as it is
yielded*, before the operator resumes: that is the moment a downstream
operator would see it, so a test can check the state store right then.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import pyarrow as pa

from tidegate.common.chunk import Chunk, Op
from tidegate.common.epoch import EpochPair
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import Barrier, BarrierKind, Message, Mutation, StopMutation
from tidegate.stream.operator import CheckedOperator, Operator
from tidegate.stream.operators.generator_source import GeneratorSource

INS, DEL, UD, UI = Op.INSERT, Op.DELETE, Op.UPDATE_DELETE, Op.UPDATE_INSERT
_OP_SYMBOLS = {"+": INS, "-": DEL, "U-": UD, "U+": UI}

Row = tuple[Any, ...]
Change = tuple[Op, Row]


class ScriptedSource(Operator):
    """Yields ``messages`` in order; ``yielded`` counts how many the consumer has pulled."""

    name = "scripted"

    def __init__(self, schema: pa.Schema, messages: Iterable[Message]) -> None:
        self.schema = schema
        self.messages = list(messages)
        self.yielded = 0

    async def execute(self) -> AsyncIterator[Message]:
        for message in self.messages:
            self.yielded += 1
            yield message


def run(
    operator: Operator, on_message: Callable[[Message], None] | None = None, timeout_s: float | None = None
) -> list[Message]:
    """The operator's whole output stream (the operator must end when its input ends); with
    ``timeout_s``, a hang fails after that long instead of blocking the test run."""

    async def collect() -> list[Message]:
        out: list[Message] = []
        async for message in operator.execute():
            if on_message is not None:
                on_message(message)
            out.append(message)
        return out

    async def bounded() -> list[Message]:
        return await asyncio.wait_for(collect(), timeout_s)

    return asyncio.run(bounded())


def barrier(
    curr: int,
    prev: int | None = None,
    kind: BarrierKind = BarrierKind.CHECKPOINT,
    mutation: Mutation | None = None,
) -> Barrier:
    """Barrier ``(prev → curr)``; ``prev`` defaults to ``curr - 1``."""
    return Barrier(EpochPair(curr, curr - 1 if prev is None else prev), kind, mutation)


def stream(epochs: list[list[Chunk]], first_epoch: int = 1, prev: int | None = None) -> list[Message]:
    """Barrier ``first_epoch`` (after ``prev``), then each epoch's chunks followed by the next barrier."""
    messages: list[Message] = [barrier(first_epoch, prev)]
    for offset, chunks in enumerate(epochs, start=1):
        messages += chunks
        messages.append(barrier(first_epoch + offset))
    return messages


def chunk(schema: pa.Schema, ops: str | Sequence[Op], rows: Sequence[Row]) -> Chunk:
    """A chunk from Python rows; ``ops`` may be a string like ``"+ - U- U+"``."""
    op_list = [_OP_SYMBOLS[s] for s in ops.split()] if isinstance(ops, str) else list(ops)
    assert len(op_list) == len(rows), (op_list, rows)
    columns = list(zip(*rows)) if rows else [[] for _ in schema]
    arrays = [pa.array(list(col), type=field.type) for col, field in zip(columns, schema)]
    return Chunk.of(op_list, pa.RecordBatch.from_arrays(arrays, schema=schema))


def inserts(schema: pa.Schema, rows: Sequence[Row]) -> Chunk:
    return chunk(schema, [INS] * len(rows), rows)


def deletes(schema: pa.Schema, rows: Sequence[Row]) -> Chunk:
    return chunk(schema, [DEL] * len(rows), rows)


def changes(messages: Iterable[Message]) -> list[Change]:
    """Every row change of every chunk, in stream order."""
    out: list[Change] = []
    for message in messages:
        if isinstance(message, Chunk):
            out += message.rows()
    return out


def barriers_of(messages: Iterable[Message]) -> list[Barrier]:
    return [m for m in messages if isinstance(m, Barrier)]


def per_barrier(messages: Sequence[Message]) -> list[list[Change]]:
    """For each barrier, the changes emitted since the previous barrier (or the start).

    Asserts that nothing follows the last barrier, so a change emitted late (after
    the barrier that ends its epoch) cannot hide.
    """
    groups: list[list[Change]] = []
    current: list[Change] = []
    for message in messages:
        if isinstance(message, Barrier):
            groups.append(current)
            current = []
        elif isinstance(message, Chunk):
            current += message.rows()
    assert not current, f"changes after the last barrier: {current}"
    return groups


def apply_changes(rows: Iterable[Change], multiset: dict[Row, int] | None = None) -> dict[Row, int]:
    """Applies changes to a multiset of rows, asserting a delete removes a live row."""
    live: dict[Row, int] = dict(multiset or {})
    for op, row in rows:
        if op in (INS, UI):
            live[row] = live.get(row, 0) + 1
        else:
            assert live.get(row, 0) > 0, f"delete of a row that is not there: {row}"
            live[row] -= 1
            if not live[row]:
                del live[row]
    return live


def table_rows(table: pa.Table) -> list[Row]:
    """A table's rows as sorted tuples (``None`` sorts first)."""
    columns = [c.to_pylist() for c in table.columns]
    rows = [tuple(col[i] for col in columns) for i in range(table.num_rows)]
    return sorted(rows, key=lambda row: tuple((v is not None, v) for v in row))


def assert_alternating(rows: Iterable[Change], key: Callable[[Row], Any]) -> None:
    """DESIGN §11: per key, inserts and deletes alternate, a delete carries the exact
    row it removes, and an update is an adjacent U-/U+ pair."""
    live: dict[Any, Row] = {}
    rows = list(rows)
    for index, (op, row) in enumerate(rows):
        k = key(row)
        if op is UD:
            assert index + 1 < len(rows) and rows[index + 1][0] is UI, f"U- without U+ at {index}: {rows}"
            assert key(rows[index + 1][1]) == k, f"update pair changes the key at {index}"
        if op is UI:
            assert index > 0 and rows[index - 1][0] is UD, f"U+ without U- at {index}"
        if op in (INS, UI):
            assert k not in live, f"insert of live key {k} at {index}"
            live[k] = row
        else:
            assert live.get(k) == row, f"delete at {index} carries {row}, live row is {live.get(k)}"
            del live[k]


class SpyStateTable(StateTable):
    """Records the epochs it is committed at, so a test can compare them with what went downstream."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.commits: list[int] = []

    def commit(self, epoch: int) -> None:
        super().commit(epoch)
        self.commits.append(epoch)


# ---- source operators ------------------------------------------------------------------------------
class FakeLog:
    """The part of ``connectors.table_log.TableLog`` a table source uses, in memory."""

    def __init__(self, records: list[Chunk] | None = None) -> None:
        self.records: list[Chunk] = list(records or [])
        self.listeners: list[Callable[[], None]] = []

    def append(self, chunk: Chunk) -> None:
        self.records.append(chunk)
        for listener in self.listeners:
            listener()

    def end_offset(self) -> int:
        return len(self.records)

    def read(self, start: int, max_records: int = 64) -> list[tuple[int, Chunk]]:
        return list(enumerate(self.records[start : start + max_records], start))

    def add_listener(self, callback: Callable[[], None]) -> None:
        self.listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        self.listeners.remove(callback)


async def drive(source: GeneratorSource, epochs: list[tuple[int, int]], turns_between: int = 3) -> list[Message]:
    """Inject barriers ``(curr, prev)``, letting the source run ``turns_between`` loop turns after
    each; the last one stops the source. Returns everything it emitted (checked: barrier first,
    epochs rising, watermarks never going back)."""
    out: list[Message] = []

    async def consume() -> None:
        async for message in CheckedOperator(source).execute():
            out.append(message)
            if isinstance(message, Barrier) and message.stops(source.actor_id):
                return

    task = asyncio.create_task(consume())
    for i, (curr, prev) in enumerate(epochs):
        stop = StopMutation(frozenset({source.actor_id})) if i == len(epochs) - 1 else None
        source.inject(barrier(curr, prev, mutation=stop))
        for _ in range(turns_between):
            await asyncio.sleep(0)
    await asyncio.wait_for(task, 5)
    return out


def rows_before(messages: list[Message], epoch: int) -> list[Row]:
    """Rows emitted before the barrier that ends ``epoch`` (what a checkpoint of ``epoch`` covers)."""
    for i, message in enumerate(messages):
        if isinstance(message, Barrier) and message.epoch.prev == epoch:
            return [row for _, row in changes(messages[:i])]
    raise AssertionError(f"no barrier ends epoch {epoch}")
