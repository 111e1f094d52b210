"""Filter: true rows pass, false and NULL rows don't, split update pairs become lone ops."""

from __future__ import annotations

import random

import pyarrow as pa
from scripted import DEL, INS, UD, UI, ScriptedSource, assert_alternating, barrier, changes, chunk, run

from tidegate.common.chunk import Chunk
from tidegate.stream.operators.filter import Filter

SCHEMA = pa.schema([("k", pa.int32()), ("v", pa.int32())])


def filtered(condition: str, *chunks: Chunk) -> list:
    return run(Filter(ScriptedSource(SCHEMA, [barrier(1), *chunks, barrier(2)]), condition))


def test_keeps_true_rows_and_drops_false_and_null_rows() -> None:
    output = filtered("_1 > 1", chunk(SCHEMA, "+ + + - -", [(1, 0), (2, 2), (3, None), (4, 5), (5, None)]))
    assert changes(output) == [(INS, (2, 2)), (DEL, (4, 5))]


def test_condition_null_for_every_row_drops_the_chunk() -> None:
    output = filtered("_1 > 1", chunk(SCHEMA, "+ +", [(1, None), (2, None)]))
    # Not even an empty chunk goes downstream.
    assert [type(m).__name__ for m in output] == ["Barrier", "Barrier"]


def test_condition_that_is_null_itself_drops_rows() -> None:
    output = filtered("CASE WHEN _1 = 1 THEN NULL ELSE true END", chunk(SCHEMA, "+ +", [(1, 1), (2, 2)]))
    assert changes(output) == [(INS, (2, 2))]


def test_all_rows_passing_forwards_the_chunk_as_is() -> None:
    data = chunk(SCHEMA, "U- U+", [(1, 5), (1, 6)])
    output = filtered("_1 > 1", data)
    assert output[1] is data


def test_split_update_pairs_become_a_lone_delete_or_a_lone_insert() -> None:
    data = chunk(
        SCHEMA,
        "U- U+ U- U+ U- U+ U- U+",
        [
            (1, 1), (1, 5),  # old fails, new passes: lone INSERT of the new row
            (2, 5), (2, 1),  # old passes, new fails: lone DELETE of the old row
            (3, 5), (3, 6),  # both pass: the pair stays a pair
            (4, 0), (4, 1),  # neither passes: nothing
        ],
    )  # fmt: skip
    assert changes(filtered("_1 > 2", data)) == [
        (INS, (1, 5)),
        (DEL, (2, 5)),
        (UD, (3, 5)),
        (UI, (3, 6)),
    ]


def test_output_alternates_inserts_and_deletes_per_key() -> None:
    """A random valid change stream per key stays valid through the filter."""
    rng = random.Random(11)
    live: dict[int, int] = {}
    chunks = []
    for _ in range(20):
        ops, rows = [], []
        for _ in range(50):
            k = rng.randrange(30)
            if k not in live:
                live[k] = rng.randrange(10)
                ops.append(INS)
                rows.append((k, live[k]))
            elif rng.random() < 0.5:
                ops.append(DEL)
                rows.append((k, live.pop(k)))
            else:
                new = rng.randrange(10)
                ops += [UD, UI]
                rows += [(k, live[k]), (k, new)]
                live[k] = new
        chunks.append(chunk(SCHEMA, ops, rows))
    output = changes(filtered("_1 % 3 <> 0", *chunks))
    assert_alternating(output, key=lambda row: row[0])
    # What survives is exactly the filtered final state.
    survivors: dict[int, int] = {}
    for op, (k, v) in output:
        if op in (INS, UI):
            survivors[k] = v
        else:
            del survivors[k]
    assert survivors == {k: v for k, v in live.items() if v % 3 != 0}
