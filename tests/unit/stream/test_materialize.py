"""Materialize: the rows it commits at epoch E are what a read at E sees, and not before."""

from __future__ import annotations

import pyarrow as pa
from scripted import ScriptedSource, barrier, chunk, deletes, inserts, run, table_rows

from tidegate.common.chunk import Chunk
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operators.materialize import Materialize

SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string())])
TABLE_ID = 5 << 16


def materialize(messages: list[Message]) -> tuple[Materialize, StateTable, MemoryStateStore]:
    store = MemoryStateStore()
    state = StateTable(store, TABLE_ID, SCHEMA, [0])
    return Materialize(ScriptedSource(SCHEMA, messages), state), state, store


def test_rows_are_visible_at_their_epoch_and_not_before() -> None:
    messages = [
        barrier(10, 0),
        inserts(SCHEMA, [(1, "a"), (2, "b")]),
        barrier(20, 10),
        deletes(SCHEMA, [(1, "a")]),
        chunk(SCHEMA, "U- U+", [(2, "b"), (2, "B")]),
        inserts(SCHEMA, [(3, "c")]),
        barrier(30, 20),
    ]
    operator, state, _ = materialize(messages)
    output = run(operator)

    assert output == messages  # chunks and barriers pass through, in order
    assert all(a is b for a, b in zip(output, messages))
    assert table_rows(state.snapshot(0)) == []
    assert table_rows(state.snapshot(9)) == []
    assert table_rows(state.snapshot(10)) == [(1, "a"), (2, "b")]
    assert table_rows(state.snapshot(19)) == [(1, "a"), (2, "b")]
    assert table_rows(state.snapshot(20)) == [(2, "B"), (3, "c")]


def test_epoch_is_committed_when_its_barrier_is_seen_downstream_and_not_earlier() -> None:
    messages = [
        barrier(10, 0),
        inserts(SCHEMA, [(1, "a")]),
        barrier(20, 10),
        inserts(SCHEMA, [(2, "b")]),
        barrier(30, 20),
    ]
    operator, state, _ = materialize(messages)
    observed: list[tuple[str, list, list]] = []

    def on_message(message: Message) -> None:
        if isinstance(message, Chunk):
            # Written (an operator reads its own writes) but not sealed yet.
            observed.append(("chunk", table_rows(state.latest()), table_rows(state.snapshot(30))))
        elif isinstance(message, Barrier) and message.epoch.prev:
            assert not state.has_pending_writes
            observed.append(("barrier", [], table_rows(state.snapshot(message.epoch.prev))))

    run(operator, on_message)
    assert observed == [
        ("chunk", [(1, "a")], []),
        ("barrier", [], [(1, "a")]),
        ("chunk", [(1, "a"), (2, "b")], [(1, "a")]),
        ("barrier", [], [(1, "a"), (2, "b")]),
    ]


def test_an_epoch_without_writes_changes_nothing() -> None:
    messages = [barrier(10, 0), inserts(SCHEMA, [(1, "a")]), barrier(20, 10), barrier(30, 20)]
    operator, state, _ = materialize(messages)
    run(operator)
    assert table_rows(state.snapshot(20)) == table_rows(state.snapshot(10)) == [(1, "a")]
