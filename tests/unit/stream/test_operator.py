"""CheckedOperator: the stream invariants of DESIGN §11, asserted around any operator."""

from __future__ import annotations

import pyarrow as pa
import pytest
from scripted import ScriptedSource, barrier, inserts, run

from tidegate.stream.messages import Message, Watermark
from tidegate.stream.operator import CheckedOperator

SCHEMA = pa.schema([("id", pa.int64())])


def checked(messages: list[Message]) -> list[Message]:
    return run(CheckedOperator(ScriptedSource(SCHEMA, messages)))


def test_a_valid_stream_passes_through_unchanged() -> None:
    messages = [barrier(5, 0), inserts(SCHEMA, [(1,)]), Watermark(0, 1), barrier(9, 5), barrier(12, 9)]
    output = checked(messages)
    assert all(a is b for a, b in zip(output, messages, strict=True))


def test_a_chunk_before_the_first_barrier_raises() -> None:
    with pytest.raises(AssertionError, match="first message is not a barrier"):
        checked([inserts(SCHEMA, [(1,)]), barrier(1)])


def test_a_watermark_before_the_first_barrier_raises() -> None:
    with pytest.raises(AssertionError, match="first message is not a barrier"):
        checked([Watermark(0, 1), barrier(1)])


@pytest.mark.parametrize(
    "second",
    [
        barrier(10, 10),  # curr == last curr
        barrier(9, 10),  # curr goes back
        barrier(9, 8),  # and prev is not the last curr either
    ],
    ids=["repeated", "decreasing", "decreasing-prev-mismatch"],
)
def test_non_increasing_epochs_raise(second: Message) -> None:
    with pytest.raises(AssertionError):
        checked([barrier(10, 5), second])


def test_prev_must_equal_the_last_curr() -> None:
    with pytest.raises(AssertionError):
        checked([barrier(10, 5), barrier(30, 20)])


def test_a_chunk_with_a_different_schema_raises() -> None:
    other = pa.schema([("id", pa.int32())])
    with pytest.raises(AssertionError):
        checked([barrier(1), inserts(other, [(1,)]), barrier(2)])


def test_a_watermark_going_back_on_its_column_raises() -> None:
    two_columns = pa.schema([("id", pa.int64()), ("t", pa.int64())])
    ok = [barrier(1), Watermark(0, 5), Watermark(1, 2), Watermark(0, 5), Watermark(0, 7), barrier(2)]
    assert len(run(CheckedOperator(ScriptedSource(two_columns, ok)))) == len(ok)  # per column; equal is fine
    with pytest.raises(AssertionError, match="watermark back"):
        run(CheckedOperator(ScriptedSource(two_columns, [barrier(1), Watermark(0, 5), Watermark(0, 4), barrier(2)])))
