"""Unaligned barriers (``aligned_messages(..., aligned=False)``, DESIGN §4, §5.8): an input that
delivered barrier N is read on, so its records behind N are emitted before the merged barrier N
(at-least-once: they count in the state that barrier commits); an input that reaches barrier N + 1
first waits; every barrier still goes downstream once, in order."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pyarrow as pa
import pytest
from scripted import barrier, chunk, inserts, run

from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message, StopMutation
from tidegate.stream.operator import CheckedOperator, Operator
from tidegate.stream.operators.hash_join import HashJoin, join_state_schema
from tidegate.stream.operators.merge import Merge

pytestmark = pytest.mark.timeout(30)

SCHEMA = pa.schema([("input", pa.int32()), ("seq", pa.int32())])
ACTOR = 9
TIMEOUT_S = 5
# Long enough for the other input to run through several messages: each takes a few loop turns.
LONG = 60


@dataclass(frozen=True)
class Pause:
    """A step of a ``StepSource``: idle this many event-loop turns before the next message."""

    turns: int = LONG


class StepSource(Operator):
    """Plays messages in order, idling at each ``Pause``; records what its consumer pulled and whether
    it was closed. Deterministic: no wall-clock time is involved."""

    name = "steps"

    def __init__(self, steps: list[Message | Pause], schema: pa.Schema = SCHEMA) -> None:
        self.schema = schema
        self.steps = steps
        self.pulled: list[Message] = []
        self.closed = False

    async def execute(self) -> AsyncIterator[Message]:
        try:
            for step in self.steps:
                if isinstance(step, Pause):
                    for _ in range(step.turns):
                        await asyncio.sleep(0)
                    continue
                self.pulled.append(step)
                yield step
        finally:
            self.closed = True


def row(input_index: int, seq: int) -> Message:
    return chunk(SCHEMA, "+", [(input_index, seq)])


def stop(curr: int, prev: int | None = None) -> Barrier:
    return barrier(curr, prev, mutation=StopMutation(frozenset({ACTOR})))


def collect(operator: Operator, on_message: Callable[[Message], None] | None = None) -> list[Message]:
    """The operator's whole output; a hang fails after ``TIMEOUT_S``."""
    return run(operator, on_message, timeout_s=TIMEOUT_S)


def labels(output: list[Message]) -> list[object]:
    """The output as ``"b<curr>"`` for barriers and ``(input, seq)`` for rows, in order."""
    out: list[object] = []
    for message in output:
        if isinstance(message, Barrier):
            out.append(f"b{message.epoch.curr}")
        else:
            out += [tuple(r.values()) for r in message.data.to_pylist()]  # type: ignore[union-attr]
    return out


def per_epoch(output: list[Message]) -> list[list[tuple[int, int]]]:
    """Index e: the rows between the e-th and (e + 1)-th barrier (index 0: before the first)."""
    epochs: list[list[tuple[int, int]]] = [[]]
    for item in labels(output):
        if isinstance(item, str):
            epochs.append([])
        else:
            epochs[-1].append(item)  # type: ignore[arg-type]
    return epochs


def barrier_epochs(output: list[Message]) -> list[int]:
    return [m.epoch.curr for m in output if isinstance(m, Barrier)]


# ---- records behind a barrier ------------------------------------------------------------------
def early_records_script() -> list[StepSource]:
    """Input 0 passes barrier 2 at once and has two records behind it; input 1 is slow to deliver it."""
    first = StepSource([barrier(1), barrier(2), row(0, 1), row(0, 2), stop(3)])
    second = StepSource([barrier(1), row(1, 1), Pause(), row(1, 2), barrier(2), stop(3)])
    return [first, second]


def test_unaligned_emits_records_behind_a_barrier_before_the_merged_barrier() -> None:
    output = collect(Merge(early_records_script(), SCHEMA, ACTOR, aligned=False))
    assert barrier_epochs(output) == [1, 2, 3]
    epochs = per_epoch(output)
    # (0, 1) and (0, 2) came after input 0's barrier 2 but go before the merged barrier 2: they are
    # part of the state barrier 2 commits (at-least-once), not held back behind it.
    assert sorted(epochs[1]) == [(0, 1), (0, 2), (1, 1), (1, 2)]
    assert epochs[2] == []
    sequence = labels(output)
    assert sequence.index((0, 2)) < sequence.index((1, 2))  # read while input 1 was still in epoch 1


def test_aligned_holds_records_behind_a_barrier_until_the_merged_barrier() -> None:
    output = collect(Merge(early_records_script(), SCHEMA, ACTOR, aligned=True))
    assert barrier_epochs(output) == [1, 2, 3]
    epochs = per_epoch(output)
    assert sorted(epochs[1]) == [(1, 1), (1, 2)]
    assert epochs[2] == [(0, 1), (0, 2)]


def test_an_input_at_the_next_barrier_waits_for_the_others_to_deliver_this_one() -> None:
    # Input 0 runs through barrier 2 and reaches barrier 3 while input 1 still owes barrier 2.
    b3 = barrier(3)
    first = StepSource([barrier(1), barrier(2), row(0, 1), b3, row(0, 2), stop(4)])
    second = StepSource([barrier(1), Pause(), row(1, 1), barrier(2), row(1, 2), Pause(), barrier(3), stop(4)])
    pulled_at_barrier_2: list[Message] = []

    def on_message(message: Message) -> None:
        if isinstance(message, Barrier) and message.epoch.curr == 2:
            pulled_at_barrier_2.extend(first.pulled)

    output = collect(Merge([first, second], SCHEMA, ACTOR, aligned=False), on_message)
    assert barrier_epochs(output) == [1, 2, 3, 4]  # each merged barrier once, in order
    # Input 0 was not read past barrier 3 before barrier 2 was aligned.
    assert pulled_at_barrier_2[-1] is b3
    epochs = per_epoch(output)
    assert sorted(epochs[1]) == [(0, 1), (1, 1)]
    assert sorted(epochs[2]) == [(0, 2), (1, 2)]  # (0, 2) waited for barrier 2, then went before 3
    assert epochs[3] == []


def test_unaligned_output_passes_the_operator_checks() -> None:
    first = StepSource([barrier(1), barrier(2), row(0, 1), barrier(3), row(0, 2), stop(4)])
    second = StepSource([barrier(1), Pause(), barrier(2), Pause(), row(1, 1), barrier(3), row(1, 2), stop(4)])
    output = collect(CheckedOperator(Merge([first, second], SCHEMA, ACTOR, aligned=False)))
    assert barrier_epochs(output) == [1, 2, 3, 4]
    assert sorted(r for rows in per_epoch(output) for r in rows) == [(0, 1), (0, 2), (1, 1), (1, 2)]


@pytest.mark.parametrize("aligned", [True, False])
def test_a_stop_barrier_ends_the_stream(aligned: bool) -> None:
    # Messages behind a stop barrier are never read: the inputs end after passing it on.
    first = StepSource([barrier(1), row(0, 1), stop(2), row(0, 9)])
    second = StepSource([barrier(1), Pause(), row(1, 1), stop(2), row(1, 9)])
    output = collect(Merge([first, second], SCHEMA, ACTOR, aligned=aligned))
    assert labels(output)[-1] == "b2"
    assert output[-1].stops(ACTOR)  # type: ignore[union-attr]
    assert barrier_epochs(output) == [1, 2]
    assert sorted(per_epoch(output)[1]) == [(0, 1), (1, 1)]
    assert (0, 9) not in labels(output) and (1, 9) not in labels(output)
    assert first.pulled[-1].stops(ACTOR) and second.pulled[-1].stops(ACTOR)  # type: ignore[union-attr]
    assert first.closed and second.closed


@pytest.mark.parametrize("aligned", [True, False])
def test_a_stop_barrier_reached_ahead_ends_the_stream(aligned: bool) -> None:
    # Input 0 delivers the stop barrier 3 while input 1 still owes barrier 2.
    first = StepSource([barrier(1), barrier(2), row(0, 1), stop(3), row(0, 9)])
    second = StepSource([barrier(1), Pause(), barrier(2), row(1, 1), stop(3), row(1, 9)])
    output = collect(Merge([first, second], SCHEMA, ACTOR, aligned=aligned))
    assert barrier_epochs(output) == [1, 2, 3]
    assert output[-1].stops(ACTOR)  # type: ignore[union-attr]
    assert sorted(row for epoch in per_epoch(output) for row in epoch) == [(0, 1), (1, 1)]
    assert first.closed and second.closed


class PacedSource(Operator):
    """Plays messages with a random number of idle loop turns before each: inputs race in every order."""

    name = "paced"

    def __init__(self, messages: list[Message], rng: random.Random) -> None:
        self.schema = SCHEMA
        self.messages = messages
        self.pauses = [rng.choice([0, 0, 1, 3, 10, 40]) for _ in messages]

    async def execute(self) -> AsyncIterator[Message]:
        for message, pause in zip(self.messages, self.pauses):
            for _ in range(pause):
                await asyncio.sleep(0)
            yield message


@pytest.mark.parametrize("seed", range(20))
def test_random_arrival_orders_lose_nothing_and_move_records_at_most_one_epoch_early(seed: int) -> None:
    rng = random.Random(seed)
    last = 6
    inputs = []
    source_epoch: dict[tuple[int, int], int] = {}  # row -> the epoch its input sent it in
    for index in range(rng.randrange(2, 5)):
        # No records in the first epoch: records behind the first barrier wait for it (tested below).
        messages: list[Message] = [barrier(1)]
        seq = 0
        for epoch in range(1, last):
            for _ in range(rng.randrange(0, 4) if epoch > 1 else 0):
                seq += 1
                messages.append(row(index, seq))
                source_epoch[(index, seq)] = epoch
            messages.append(barrier(epoch + 1) if epoch + 1 < last else stop(last))
        inputs.append(PacedSource(messages, rng))
    output = collect(CheckedOperator(Merge(inputs, SCHEMA, ACTOR, aligned=False)))
    assert barrier_epochs(output) == list(range(1, last + 1))
    epochs = per_epoch(output)
    emitted = [r for rows in epochs for r in rows]
    assert Counter(emitted) == Counter(list(source_epoch))  # nothing lost, nothing doubled
    for index in range(len(inputs)):  # each input's own order is kept
        mine = [seq for i, seq in emitted if i == index]
        assert mine == sorted(mine), seed
    for merged_epoch, rows in enumerate(epochs):
        for r in rows:
            # A record sent after its input's barrier e goes after the merged barrier e - 1 (its input
            # waited there) and before the merged barrier e + 1 (which needs its input's barrier e + 1).
            assert source_epoch[r] - 1 <= merged_epoch <= source_epoch[r], (seed, r, merged_epoch)


def test_records_behind_the_first_barrier_never_precede_it() -> None:
    first = StepSource([barrier(1), row(0, 1), barrier(2), stop(3)])
    second = StepSource([Pause(), barrier(1), barrier(2), stop(3)])
    output = collect(Merge([first, second], SCHEMA, ACTOR, aligned=False))
    assert isinstance(output[0], Barrier), labels(output)


# ---- the hash join -----------------------------------------------------------------------------
LEFT = pa.schema([("id", pa.int64()), ("k", pa.int32()), ("v", pa.int32())])
RIGHT = pa.schema([("id", pa.int64()), ("k", pa.int32()), ("w", pa.int32())])
JOINED = pa.schema([*LEFT, *(f.with_name(f"r_{f.name}") for f in RIGHT)])
LEFT_TABLE, RIGHT_TABLE = 1, 2


def inner_join(left: Operator, right: Operator, store: MemoryStateStore, *, aligned: bool) -> HashJoin:
    states = []
    for schema, table_id in ((LEFT, LEFT_TABLE), (RIGHT, RIGHT_TABLE)):
        state_schema, pk = join_state_schema(schema, [1], [0], with_degree=False)
        states.append(StateTable(store, table_id, state_schema, pk))
    return HashJoin(
        left,
        right,
        join_type="inner",
        left_keys=[1],
        right_keys=[1],
        left_pk=[0],
        right_pk=[0],
        condition=None,
        schema=JOINED,
        left_state=states[0],
        right_state=states[1],
        actor_id=ACTOR,
        aligned=aligned,
    )


def early_join_inputs() -> tuple[StepSource, StepSource]:
    """The left input sends (1, k=7) behind barrier (20, 10), before the right input delivers it."""
    left = StepSource([barrier(10, 0), barrier(20, 10), inserts(LEFT, [(1, 7, 100)]), stop(30, 20)], LEFT)
    right = StepSource([barrier(10, 0), inserts(RIGHT, [(5, 7, 500)]), Pause(), barrier(20, 10), stop(30, 20)], RIGHT)
    return left, right


def left_ids(store: MemoryStateStore, epoch: int) -> list[int]:
    return sorted(store.snapshot(LEFT_TABLE, epoch).column("id").to_pylist())


def test_an_unaligned_join_applies_an_early_record_to_the_epoch_of_the_barrier_it_passed() -> None:
    store = MemoryStateStore()
    left, right = early_join_inputs()
    output = collect(CheckedOperator(inner_join(left, right, store, aligned=False)))
    assert barrier_epochs(output) == [10, 20, 30]
    before_20 = output[: next(i for i, m in enumerate(output) if isinstance(m, Barrier) and m.epoch.curr == 20)]
    pairs = [tuple(r.values()) for m in before_20 if not isinstance(m, Barrier) for r in m.data.to_pylist()]
    assert pairs == [(1, 7, 100, 5, 7, 500)]  # joined before the barrier (20, 10) went downstream
    assert left_ids(store, 10) == [1]  # and in the state that barrier committed
    assert sorted(store.snapshot(RIGHT_TABLE, 10).column("id").to_pylist()) == [5]


def test_an_aligned_join_applies_the_same_record_to_the_next_epoch() -> None:
    store = MemoryStateStore()
    left, right = early_join_inputs()
    output = collect(CheckedOperator(inner_join(left, right, store, aligned=True)))
    assert barrier_epochs(output) == [10, 20, 30]
    assert labels(output)[:2] == ["b10", "b20"]
    assert left_ids(store, 10) == []
    assert left_ids(store, 20) == [1]


def test_an_unaligned_join_survives_records_behind_the_first_barrier() -> None:
    store = MemoryStateStore()
    left = StepSource([barrier(10, 0), inserts(LEFT, [(1, 7, 100)]), barrier(20, 10), stop(30, 20)], LEFT)
    right = StepSource([Pause(), barrier(10, 0), inserts(RIGHT, [(5, 7, 500)]), barrier(20, 10), stop(30, 20)], RIGHT)
    output = collect(CheckedOperator(inner_join(left, right, store, aligned=False)))
    assert barrier_epochs(output) == [10, 20, 30]
