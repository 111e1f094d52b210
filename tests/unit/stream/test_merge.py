"""Merge aligns barriers: a record is emitted between the barriers of the epoch it belongs to."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator

import pyarrow as pa
import pytest
from scripted import ScriptedSource, barrier, chunk, run

from tidegate.errors import InternalError
from tidegate.stream.messages import Barrier, Message, StopMutation
from tidegate.stream.operator import Operator
from tidegate.stream.operators.merge import Merge

SCHEMA = pa.schema([("input", pa.int32()), ("seq", pa.int32())])
ACTOR = 9


def row(input_index: int, seq: int) -> Message:
    return chunk(SCHEMA, "+", [(input_index, seq)])


def stop(curr: int) -> Barrier:
    return barrier(curr, mutation=StopMutation(frozenset({ACTOR})))


def per_epoch(output: list[Message]) -> list[list[tuple[int, int]]]:
    """The rows of each epoch (index e: the rows between barrier e and e + 1), in output order."""
    epochs: list[list[tuple[int, int]]] = [[]]
    for message in output:
        if isinstance(message, Barrier):
            epochs.append([])
        else:
            epochs[-1] += [tuple(r.values()) for r in message.data.to_pylist()]  # type: ignore[union-attr]
    return epochs


def test_a_barrier_holds_back_its_input_until_every_input_delivers_it() -> None:
    # Input 0 reaches barrier 2 at once; input 1 still has three records of epoch 1 to deliver.
    first = ScriptedSource(SCHEMA, [barrier(1), row(0, 1), barrier(2), row(0, 2), stop(3)])
    second = ScriptedSource(SCHEMA, [barrier(1), row(1, 1), row(1, 2), row(1, 3), barrier(2), row(1, 4), stop(3)])
    output = run(Merge([first, second], SCHEMA, ACTOR))
    barriers = [m for m in output if isinstance(m, Barrier)]
    assert [b.epoch.curr for b in barriers] == [1, 2, 3]  # each barrier once
    epochs = per_epoch(output)
    assert sorted(epochs[1]) == [(0, 1), (1, 1), (1, 2), (1, 3)]
    assert sorted(epochs[2]) == [(0, 2), (1, 4)]  # (0, 2) waited behind barrier 2


class PacedSource(Operator):
    """Plays messages with a random pause before each: inputs race in every order."""

    name = "paced"

    def __init__(self, messages: list[Message], rng: random.Random) -> None:
        self.schema = SCHEMA
        self.messages = messages
        self.pauses = [rng.choice([0, 0, 0.0005, 0.002]) for _ in messages]

    async def execute(self) -> AsyncIterator[Message]:
        for message, pause in zip(self.messages, self.pauses):
            await asyncio.sleep(pause)
            yield message


@pytest.mark.parametrize("seed", range(25))
def test_random_arrival_orders_keep_every_record_in_its_epoch(seed: int) -> None:
    rng = random.Random(seed)
    inputs, expected = [], [[] for _ in range(6)]  # type: ignore[var-annotated]
    for index in range(rng.randrange(2, 5)):
        messages: list[Message] = [barrier(1)]
        seq = 0
        for epoch in range(1, 6):
            for _ in range(rng.randrange(0, 4)):
                seq += 1
                messages.append(row(index, seq))
                expected[epoch].append((index, seq))
            messages.append(barrier(epoch + 1) if epoch < 5 else stop(6))
        inputs.append(PacedSource(messages, rng))
    output = run(Merge(inputs, SCHEMA, ACTOR))
    assert [m.epoch.curr for m in output if isinstance(m, Barrier)] == [1, 2, 3, 4, 5, 6]
    epochs = per_epoch(output)
    for epoch in range(1, 6):
        assert sorted(epochs[epoch]) == sorted(expected[epoch]), (seed, epoch)
        for index in range(len(inputs)):  # each input's own order is kept
            mine = [seq for i, seq in epochs[epoch] if i == index]
            assert mine == sorted(mine)


def test_inputs_at_different_barriers_are_an_error() -> None:
    first = ScriptedSource(SCHEMA, [barrier(1), barrier(2), stop(3)])
    second = ScriptedSource(SCHEMA, [barrier(1), barrier(3, prev=1), stop(4)])
    with pytest.raises(InternalError, match="different barriers"):
        run(Merge([first, second], SCHEMA, ACTOR))


def test_an_input_that_ends_without_a_stop_barrier_is_an_error() -> None:
    first = ScriptedSource(SCHEMA, [barrier(1), row(0, 1)])
    second = ScriptedSource(SCHEMA, [barrier(1), stop(2)])
    with pytest.raises(InternalError, match="input 0 ended"):
        run(Merge([first, second], SCHEMA, ACTOR))
