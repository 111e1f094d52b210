"""HashJoin: every join type under inserts, deletes and updates on both sides, checked per epoch.

The randomized tests replay random changes of both inputs over several epochs (with random pauses,
so the inputs race) and compare the accumulated output with DuckDB's batch join of the accumulated
inputs after every barrier.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from cache_budget import SpyStore
from scripted import (
    DEL,
    INS,
    UD,
    UI,
    Change,
    Row,
    ScriptedSource,
    apply_changes,
    assert_alternating,
    barrier,
    changes,
    chunk,
    deletes,
    inserts,
    per_barrier,
    run,
)

from tidegate.common.chunk import Chunk
from tidegate.errors import InternalError
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message, StopMutation
from tidegate.stream.operator import CheckedOperator, Operator
from tidegate.stream.operators import hash_join
from tidegate.stream.operators.hash_join import JOIN_TYPES, HashJoin, join_state_schema

# (id, k, v): the stream key is id, the join key is k.
LEFT = pa.schema([("id", pa.int64()), ("k", pa.int32()), ("v", pa.int32())])
RIGHT = pa.schema([("id", pa.int64()), ("k", pa.int32()), ("w", pa.int32())])
ACTOR = 7
LEFT_TABLE, RIGHT_TABLE = 1, 2
N = None  # a NULL, spelled short in expected rows


def output_schema(join_type: str, left: pa.Schema = LEFT, right: pa.Schema = RIGHT) -> pa.Schema:
    if join_type in ("left_semi", "left_anti"):
        return left
    return pa.schema([*left, *(f.with_name(f"r_{f.name}") for f in right)])


def stop(curr: int, prev: int | None = None) -> Barrier:
    return barrier(curr, prev, mutation=StopMutation(frozenset({ACTOR})))


def with_degree(join_type: str, side: int) -> bool:
    if side == 0:
        return join_type in ("left", "full", "left_semi", "left_anti")
    return join_type in ("right", "full")


def make_join(
    join_type: str,
    left: Sequence[Message] | Operator,
    right: Sequence[Message] | Operator,
    store: MemoryStateStore | None = None,
    *,
    condition: str | None = None,
    cache_bytes: int | None = None,
    schemas: tuple[pa.Schema, pa.Schema] = (LEFT, RIGHT),
    keys: tuple[list[int], list[int]] = ([1], [1]),
) -> HashJoin:
    store = MemoryStateStore() if store is None else store
    inputs = [s if isinstance(s, Operator) else ScriptedSource(schema, s) for s, schema in zip((left, right), schemas)]
    states = []
    for side, (schema, side_keys, table_id) in enumerate(zip(schemas, keys, (LEFT_TABLE, RIGHT_TABLE))):
        state_schema, pk = join_state_schema(schema, side_keys, [0], with_degree=with_degree(join_type, side))
        states.append(StateTable(store, table_id, state_schema, pk))
    return HashJoin(
        inputs[0],
        inputs[1],
        join_type=join_type,
        left_keys=keys[0],
        right_keys=keys[1],
        left_pk=[0],
        right_pk=[0],
        condition=condition,
        schema=output_schema(join_type, *schemas),
        left_state=states[0],
        right_state=states[1],
        actor_id=ACTOR,
        cache_bytes=cache_bytes,
    )


def epochs_of(join: HashJoin) -> list[list[Change]]:
    """The changes of each epoch (index 0: before the first barrier, always empty)."""
    output = run(CheckedOperator(join))  # barrier first, epochs in order, every chunk of the output schema
    assert_alternating(changes(output), key=stream_key(join))
    return per_barrier(output)


def stream_key(join: HashJoin) -> Callable[[Row], Any]:
    return lambda row: tuple(row[i] for i in join.stream_key)


def state_rows(store: MemoryStateStore, table_id: int, epoch: int) -> list[dict[str, Any]]:
    return sorted(store.snapshot(table_id, epoch).to_pylist(), key=lambda r: r["id"])


# ---- each join type -----------------------------------------------------------------------------
def test_inner_join_inserts_and_deletes_on_both_sides() -> None:
    left = [barrier(1), inserts(LEFT, [(1, 10, 100), (2, 20, 200)]), barrier(2), deletes(LEFT, [(1, 10, 100)]), stop(3)]
    right = [barrier(1), barrier(2), inserts(RIGHT, [(5, 10, 50), (6, 20, 60), (7, 30, 70)]), stop(3)]
    store = MemoryStateStore()
    # Epoch 1: no right rows yet. Epoch 2: right rows arrive, left 1 leaves: the scripted inputs take
    # turns, so left's delete comes first and right row 5 finds no partner.
    epochs = epochs_of(make_join("inner", left, right, store))
    assert epochs[1] == []
    assert sorted(epochs[2]) == [(INS, (2, 20, 200, 6, 20, 60))]
    assert [r["id"] for r in state_rows(store, LEFT_TABLE, 2)] == [2]
    assert [r["id"] for r in state_rows(store, RIGHT_TABLE, 2)] == [5, 6, 7]
    assert "_degree" not in store.snapshot(LEFT_TABLE, 2).column_names

    # Right rows leave too: the joined rows they made are retracted.
    left = [barrier(1), barrier(2), inserts(LEFT, [(1, 10, 100)]), barrier(3), stop(4)]
    right = [
        barrier(1),
        inserts(RIGHT, [(5, 10, 50), (6, 10, 60)]),
        barrier(2),
        barrier(3),
        deletes(RIGHT, [(5, 10, 50)]),
    ]
    epochs = epochs_of(make_join("inner", left, [*right, stop(4)]))
    assert sorted(epochs[2]) == [(INS, (1, 10, 100, 5, 10, 50)), (INS, (1, 10, 100, 6, 10, 60))]
    assert epochs[3] == [(DEL, (1, 10, 100, 5, 10, 50))]


def test_left_join_null_extends_until_the_first_match_and_again_after_the_last() -> None:
    left = [barrier(1), inserts(LEFT, [(1, 10, 100)]), barrier(2), barrier(3), barrier(4), barrier(5), stop(6)]
    right = [
        barrier(1),
        barrier(2),
        inserts(RIGHT, [(5, 10, 50)]),  # first match
        barrier(3),
        inserts(RIGHT, [(6, 10, 60)]),  # second match
        barrier(4),
        deletes(RIGHT, [(5, 10, 50)]),  # one match left
        barrier(5),
        deletes(RIGHT, [(6, 10, 60)]),  # the last match goes
        stop(6),
    ]
    store = MemoryStateStore()
    epochs = epochs_of(make_join("left", left, right, store))
    assert epochs[1] == [(INS, (1, 10, 100, N, N, N))]
    assert epochs[2] == [(DEL, (1, 10, 100, N, N, N)), (INS, (1, 10, 100, 5, 10, 50))]
    assert epochs[3] == [(INS, (1, 10, 100, 6, 10, 60))]
    assert epochs[4] == [(DEL, (1, 10, 100, 5, 10, 50))]
    assert epochs[5] == [(INS, (1, 10, 100, N, N, N)), (DEL, (1, 10, 100, 6, 10, 60))]
    # The left row's degree follows its matches in the state table.
    assert [state_rows(store, LEFT_TABLE, e)[0]["_degree"] for e in (1, 2, 3, 4, 5)] == [0, 1, 2, 1, 0]
    assert "_degree" not in store.snapshot(RIGHT_TABLE, 5).column_names


def test_left_join_row_arriving_after_its_matches_and_leaving() -> None:
    left = [barrier(1), barrier(2), inserts(LEFT, [(1, 10, 100)]), barrier(3), deletes(LEFT, [(1, 10, 100)]), stop(4)]
    right = [barrier(1), inserts(RIGHT, [(5, 10, 50), (6, 10, 60)]), barrier(2), barrier(3), stop(4)]
    store = MemoryStateStore()
    epochs = epochs_of(make_join("left", left, right, store))
    assert epochs[1] == []  # right rows without a left partner are not part of a left join
    assert sorted(epochs[2]) == [(INS, (1, 10, 100, 5, 10, 50)), (INS, (1, 10, 100, 6, 10, 60))]
    assert sorted(epochs[3]) == [(DEL, (1, 10, 100, 5, 10, 50)), (DEL, (1, 10, 100, 6, 10, 60))]
    assert state_rows(store, LEFT_TABLE, 2) == [{"id": 1, "k": 10, "v": 100, "_degree": 2}]
    assert state_rows(store, LEFT_TABLE, 3) == []


def test_right_join_mirrors_the_left_join() -> None:
    left = [barrier(1), barrier(2), inserts(LEFT, [(1, 10, 100)]), barrier(3), deletes(LEFT, [(1, 10, 100)]), stop(4)]
    right = [barrier(1), inserts(RIGHT, [(5, 10, 50), (6, 20, 60)]), barrier(2), barrier(3), stop(4)]
    store = MemoryStateStore()
    epochs = epochs_of(make_join("right", left, right, store))
    assert sorted(epochs[1], key=str) == [(INS, (N, N, N, 5, 10, 50)), (INS, (N, N, N, 6, 20, 60))]
    assert epochs[2] == [(DEL, (N, N, N, 5, 10, 50)), (INS, (1, 10, 100, 5, 10, 50))]
    assert epochs[3] == [(INS, (N, N, N, 5, 10, 50)), (DEL, (1, 10, 100, 5, 10, 50))]
    assert [r["_degree"] for r in state_rows(store, RIGHT_TABLE, 2)] == [1, 0]
    assert "_degree" not in store.snapshot(LEFT_TABLE, 2).column_names


def test_full_join_null_extends_both_sides() -> None:
    left = [barrier(1), inserts(LEFT, [(1, 10, 100), (2, 20, 200)]), barrier(2), barrier(3), stop(4)]
    right = [
        barrier(1),
        barrier(2),
        inserts(RIGHT, [(5, 10, 50), (6, 30, 60)]),
        barrier(3),
        chunk(RIGHT, "U- U+", [(5, 10, 50), (5, 20, 55)]),  # right 5 moves from key 10 to key 20
        stop(4),
    ]
    store = MemoryStateStore()
    epochs = epochs_of(make_join("full", left, right, store))
    assert sorted(epochs[1]) == [(INS, (1, 10, 100, N, N, N)), (INS, (2, 20, 200, N, N, N))]
    assert epochs[2] == [
        (DEL, (1, 10, 100, N, N, N)),
        (INS, (1, 10, 100, 5, 10, 50)),
        (INS, (N, N, N, 6, 30, 60)),
    ]
    assert epochs[3] == [
        (INS, (1, 10, 100, N, N, N)),  # left 1 lost its match
        (DEL, (2, 20, 200, N, N, N)),  # left 2 found one
        (DEL, (1, 10, 100, 5, 10, 50)),
        (INS, (2, 20, 200, 5, 20, 55)),
    ]
    assert [(r["id"], r["_degree"]) for r in state_rows(store, LEFT_TABLE, 3)] == [(1, 0), (2, 1)]
    assert [(r["id"], r["k"], r["_degree"]) for r in state_rows(store, RIGHT_TABLE, 3)] == [(5, 20, 1), (6, 30, 0)]


def test_semi_and_anti_joins_change_only_when_the_degree_crosses_zero() -> None:
    left = [barrier(1), inserts(LEFT, [(1, 10, 100), (2, 20, 200)]), *[barrier(e) for e in (2, 3, 4, 5)], stop(6)]
    right = [
        barrier(1),
        barrier(2),
        inserts(RIGHT, [(5, 10, 50)]),  # 0 -> 1
        barrier(3),
        inserts(RIGHT, [(6, 10, 60)]),  # 1 -> 2
        barrier(4),
        deletes(RIGHT, [(5, 10, 50)]),  # 2 -> 1
        barrier(5),
        deletes(RIGHT, [(6, 10, 60)]),  # 1 -> 0
        stop(6),
    ]
    semi_store, anti_store = MemoryStateStore(), MemoryStateStore()
    semi = epochs_of(make_join("left_semi", left, right, semi_store))
    anti = epochs_of(make_join("left_anti", left, right, anti_store))
    assert semi[1:] == [[], [(INS, (1, 10, 100))], [], [], [(DEL, (1, 10, 100))]]
    assert sorted(anti[1]) == [(INS, (1, 10, 100)), (INS, (2, 20, 200))]
    assert anti[2:] == [[(DEL, (1, 10, 100))], [], [], [(INS, (1, 10, 100))]]
    for store in (semi_store, anti_store):
        assert [state_rows(store, LEFT_TABLE, e)[0]["_degree"] for e in (1, 2, 3, 4, 5)] == [0, 1, 2, 1, 0]


def test_semi_and_anti_rows_arriving_after_their_matches() -> None:
    right = [barrier(1), inserts(RIGHT, [(5, 10, 50)]), barrier(2), stop(3)]
    left = [barrier(1), barrier(2), inserts(LEFT, [(1, 10, 100), (2, 20, 200)]), stop(3)]
    assert epochs_of(make_join("left_semi", left, right))[2] == [(INS, (1, 10, 100))]
    assert epochs_of(make_join("left_anti", left, right))[2] == [(INS, (2, 20, 200))]
    left_deletes = [*left[:-1], barrier(3), deletes(LEFT, [(1, 10, 100), (2, 20, 200)]), stop(4)]
    right_longer = [*right[:-1], barrier(3), stop(4)]
    assert epochs_of(make_join("left_semi", left_deletes, right_longer))[3] == [(DEL, (1, 10, 100))]
    assert epochs_of(make_join("left_anti", left_deletes, right_longer))[3] == [(DEL, (2, 20, 200))]


# ---- residual condition, NULL keys, updates, many rows per key -------------------------------------
def test_condition_filters_pairs_that_match_by_key() -> None:
    # _2 is the left v, _5 the right w: pairs match only where v < w.
    left = [barrier(1), inserts(LEFT, [(1, 10, 100), (2, 10, 500)]), barrier(2), stop(3)]
    right = [barrier(1), barrier(2), inserts(RIGHT, [(5, 10, 300), (6, 10, 50)]), stop(3)]
    assert epochs_of(make_join("inner", left, right, condition="_2 < _5"))[2] == [(INS, (1, 10, 100, 5, 10, 300))]
    # In a left join, a left row whose key matches but whose condition never holds stays NULL-extended.
    epochs = epochs_of(make_join("left", left, right, condition="_2 < _5"))
    assert sorted(epochs[1]) == [(INS, (1, 10, 100, N, N, N)), (INS, (2, 10, 500, N, N, N))]
    assert epochs[2] == [(DEL, (1, 10, 100, N, N, N)), (INS, (1, 10, 100, 5, 10, 300))]
    # A condition over one side only, and one that is NULL (not TRUE) for a pair.
    assert epochs_of(make_join("left_semi", left, right, condition="_5 > 100"))[2] == [
        (INS, (1, 10, 100)),
        (INS, (2, 10, 500)),
    ]
    assert epochs_of(make_join("inner", left, right, condition="CASE WHEN _0 = 1 THEN NULL ELSE TRUE END"))[2] == [
        (INS, (2, 10, 500, 5, 10, 300)),
        (INS, (2, 10, 500, 6, 10, 50)),
    ]


def test_condition_keeps_degrees_and_deletes_consistent() -> None:
    left = [barrier(1), inserts(LEFT, [(1, 10, 100)]), barrier(2), barrier(3), stop(4)]
    right = [
        barrier(1),
        barrier(2),
        inserts(RIGHT, [(5, 10, 50), (6, 10, 300)]),  # only 6 satisfies v < w
        barrier(3),
        deletes(RIGHT, [(5, 10, 50), (6, 10, 300)]),
        stop(4),
    ]
    store = MemoryStateStore()
    epochs = epochs_of(make_join("full", left, right, store, condition="_2 < _5"))
    assert epochs[2] == [
        (DEL, (1, 10, 100, N, N, N)),
        (INS, (1, 10, 100, 6, 10, 300)),
        (INS, (N, N, N, 5, 10, 50)),
    ]
    assert epochs[3] == [(INS, (1, 10, 100, N, N, N)), (DEL, (1, 10, 100, 6, 10, 300)), (DEL, (N, N, N, 5, 10, 50))]
    assert [(r["id"], r["_degree"]) for r in state_rows(store, RIGHT_TABLE, 2)] == [(5, 0), (6, 1)]


def test_null_keys_never_match_and_pass_through_on_outer_sides() -> None:
    left = [barrier(1), inserts(LEFT, [(1, N, 100), (2, 10, 200)]), barrier(2), deletes(LEFT, [(1, N, 100)]), stop(3)]
    right = [barrier(1), inserts(RIGHT, [(5, N, 50), (6, 10, 60)]), barrier(2), stop(3)]
    store = MemoryStateStore()
    full = epochs_of(make_join("full", left, right, store))
    assert sorted(full[1], key=str) == sorted(
        [
            (INS, (1, N, 100, N, N, N)),
            (INS, (2, 10, 200, N, N, N)),
            (INS, (N, N, N, 5, N, 50)),
            (DEL, (2, 10, 200, N, N, N)),
            (INS, (2, 10, 200, 6, 10, 60)),
        ],
        key=str,
    )
    assert full[2] == [(DEL, (1, N, 100, N, N, N))]
    # Rows with a NULL key are not stored: they can never match.
    assert [r["id"] for r in state_rows(store, LEFT_TABLE, 1)] == [2]
    assert [r["id"] for r in state_rows(store, RIGHT_TABLE, 1)] == [6]
    assert epochs_of(make_join("inner", left, right))[1] == [(INS, (2, 10, 200, 6, 10, 60))]
    assert epochs_of(make_join("left_semi", left, right))[1] == [(INS, (2, 10, 200))]
    anti = epochs_of(make_join("left_anti", left, right))
    assert (INS, (1, N, 100)) in anti[1] and anti[2] == [(DEL, (1, N, 100))]


def test_null_in_one_of_two_key_columns_never_matches() -> None:
    keys = ([1, 2], [1, 2])
    left = [barrier(1), inserts(LEFT, [(1, 10, N), (2, 10, 7)]), stop(2)]
    right = [barrier(1), inserts(RIGHT, [(5, 10, N), (6, 10, 7)]), stop(2)]
    assert epochs_of(make_join("inner", left, right, keys=keys))[1] == [(INS, (2, 10, 7, 6, 10, 7))]


def test_updates_move_rows_between_keys_and_rewrite_joined_rows() -> None:
    left = [
        barrier(1),
        inserts(LEFT, [(1, 10, 100)]),
        barrier(2),
        chunk(LEFT, "U- U+", [(1, 10, 100), (1, 10, 101)]),  # a value changes
        barrier(3),
        chunk(LEFT, "U- U+", [(1, 10, 101), (1, 20, 101)]),  # the join key changes
        stop(4),
    ]
    right = [barrier(1), inserts(RIGHT, [(5, 10, 50), (6, 20, 60)]), barrier(2), barrier(3), stop(4)]
    store = MemoryStateStore()
    epochs = epochs_of(make_join("left", left, right, store))
    assert epochs[2] == [(DEL, (1, 10, 100, 5, 10, 50)), (INS, (1, 10, 101, 5, 10, 50))]
    assert epochs[3] == [(DEL, (1, 10, 101, 5, 10, 50)), (INS, (1, 20, 101, 6, 20, 60))]
    assert state_rows(store, LEFT_TABLE, 3) == [{"id": 1, "k": 20, "v": 101, "_degree": 1}]


def test_rows_that_come_and_go_within_one_chunk() -> None:
    left = [barrier(1), inserts(LEFT, [(1, 10, 100)]), barrier(2), stop(3)]
    right = [
        barrier(1),
        barrier(2),
        chunk(RIGHT, "+ - + U- U+", [(5, 10, 50), (5, 10, 50), (5, 10, 51), (5, 10, 51), (5, 20, 52)]),
        stop(3),
    ]
    store = MemoryStateStore()
    epochs = epochs_of(make_join("left", left, right, store))
    # Left 1 is matched and unmatched twice within the chunk: its NULL-extended row stays as it was.
    assert epochs[2] == [
        (INS, (1, 10, 100, 5, 10, 50)),
        (DEL, (1, 10, 100, 5, 10, 50)),
        (INS, (1, 10, 100, 5, 10, 51)),
        (DEL, (1, 10, 100, 5, 10, 51)),
    ]
    assert state_rows(store, RIGHT_TABLE, 2) == [{"id": 5, "k": 20, "w": 52}]
    assert state_rows(store, LEFT_TABLE, 2) == [{"id": 1, "k": 10, "v": 100, "_degree": 0}]


def test_many_rows_per_key_on_both_sides() -> None:
    left_rows = [(i, 10, i) for i in range(3)] + [(9, 20, 9)]
    right_rows = [(100 + i, 10, i) for i in range(4)]
    left = [barrier(1), inserts(LEFT, left_rows), barrier(2), deletes(LEFT, [left_rows[0]]), barrier(3), stop(4)]
    right = [barrier(1), inserts(RIGHT, right_rows), barrier(2), barrier(3), deletes(RIGHT, right_rows[:2]), stop(4)]
    epochs = epochs_of(make_join("inner", left, right))
    assert Counter(epochs[1]) == Counter((INS, (*lr, *rr)) for lr in left_rows[:3] for rr in right_rows)
    assert Counter(epochs[2]) == Counter((DEL, (*left_rows[0], *rr)) for rr in right_rows)
    assert Counter(epochs[3]) == Counter((DEL, (*lr, *rr)) for lr in left_rows[1:3] for rr in right_rows[:2])


def test_repeated_key_columns_and_string_keys() -> None:
    left_schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    right_schema = pa.schema([("id", pa.int64()), ("a", pa.string()), ("b", pa.string())])
    # left.name = right.a AND left.name = right.b
    left = [barrier(1), inserts(left_schema, [(1, "x"), (2, ""), (3, "y\x00z")]), barrier(2), stop(3)]
    right = [
        barrier(1),
        barrier(2),
        inserts(right_schema, [(5, "x", "x"), (6, "x", "y"), (7, "", ""), (8, "y\x00z", "y\x00z"), (9, "y", "y")]),
        stop(3),
    ]
    store = MemoryStateStore()
    join = make_join("inner", left, right, store, schemas=(left_schema, right_schema), keys=([1, 1], [1, 2]))
    assert sorted(epochs_of(join)[2]) == [
        (INS, (1, "x", 5, "x", "x")),
        (INS, (2, "", 7, "", "")),
        (INS, (3, "y\x00z", 8, "y\x00z", "y\x00z")),
    ]
    assert store.snapshot(LEFT_TABLE, 2).num_rows == 3


def test_a_delete_of_a_row_that_is_not_there_is_an_error() -> None:
    left = [barrier(1), inserts(LEFT, [(1, 10, 100)]), barrier(2), deletes(LEFT, [(2, 10, 100)]), stop(3)]
    with pytest.raises(InternalError, match="does not hold"):
        run(make_join("inner", left, [barrier(1), barrier(2), stop(3)]))


def test_hash_collisions_are_told_apart_by_the_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every key hashing alike, pairs, deletes and evictions still go by the real keys."""
    monkeypatch.setattr(hash_join, "_hash_keys", lambda encoded, width: np.zeros(len(encoded), np.uint64))
    script = random_script(seed=3, epochs=5)
    for join_type in ("full", "left_anti"):
        store = MemoryStateStore()
        join = make_join(join_type, script.messages(0), script.messages(1), store)
        check_against_duckdb(join, script, store)


@pytest.mark.parametrize(
    "column",
    [pa.array([3, None, -7, 3, 0, 12], pa.int64()), pa.array(["ab", None, "", "ab", "a\x00b", "b"], pa.string())],
)
def test_equal_keys_hash_alike_wherever_they_sit(column: pa.Array) -> None:
    width = hash_join.key_width([column.type])
    encoded = hash_join.encode_columns([column])
    hashes = hash_join._hash_keys(encoded, width)
    assert hashes[0] == hashes[3]  # equal keys
    assert len(set(hashes.tolist())) == 5  # distinct keys, distinct hashes
    # A slice of the encoded keys (offsets not at 0) hashes each key as the whole array does.
    assert hash_join._hash_keys(encoded.slice(2, 4), width).tolist() == hashes[2:6].tolist()


# ---- state schema -------------------------------------------------------------------------------------
def test_join_state_schema_keys_by_join_key_then_stream_key() -> None:
    schema = pa.schema([("a", pa.int64()), ("b", pa.string()), ("_degree", pa.int32()), ("a", pa.int16())])
    state, pk = join_state_schema(schema, [1, 3], [0, 3], with_degree=True)
    assert pk == [1, 3, 0]
    assert state.names == ["a", "b", "_degree_2", "a_3", "_degree"]
    assert state.types == [pa.int64(), pa.string(), pa.int32(), pa.int16(), pa.int64()]
    plain, plain_pk = join_state_schema(LEFT, [1], [0], with_degree=False)
    assert plain.equals(LEFT) and plain_pk == [1, 0]


# ---- barrier alignment ----------------------------------------------------------------------------------
def test_records_behind_a_barrier_wait_until_the_other_input_delivers_it() -> None:
    # Left reaches barrier 2 at once; its epoch-2 row would match right's epoch-1 row, but must not
    # be applied before right's epoch 1 has been, nor land in epoch 1.
    left_source = ScriptedSource(
        LEFT, [barrier(1), inserts(LEFT, [(1, 10, 100)]), barrier(2), inserts(LEFT, [(2, 20, 200)]), stop(3)]
    )
    right_source = ScriptedSource(
        RIGHT,
        [
            barrier(1),
            inserts(RIGHT, [(5, 20, 50)]),
            inserts(RIGHT, [(6, 10, 60)]),
            barrier(2),
            inserts(RIGHT, [(7, 20, 70)]),
            stop(3),
        ],
    )
    store = MemoryStateStore()
    join = make_join("left", left_source, right_source, store)
    pulled_at_barriers: list[tuple[int, int]] = []
    states: list[tuple[list[Any], list[Any]]] = []

    def on_message(message: Message) -> None:
        if isinstance(message, Barrier):
            pulled_at_barriers.append((left_source.yielded, right_source.yielded))
            if message.epoch.prev:
                epoch = message.epoch.prev
                states.append((state_rows(store, LEFT_TABLE, epoch), state_rows(store, RIGHT_TABLE, epoch)))

    output = run(join, on_message)
    assert [b.epoch.curr for b in output if isinstance(b, Barrier)] == [1, 2, 3]
    # When barrier 2 goes out, left has not been read past its barrier 2; right has delivered all of epoch 1.
    assert pulled_at_barriers[1] == (3, 4)
    epochs = per_barrier(output)
    assert epochs[1] == [
        (INS, (1, 10, 100, N, N, N)),
        (DEL, (1, 10, 100, N, N, N)),
        (INS, (1, 10, 100, 6, 10, 60)),
    ]
    assert sorted(epochs[2]) == [(INS, (2, 20, 200, 5, 20, 50)), (INS, (2, 20, 200, 7, 20, 70))]
    left_1, right_1 = states[0]
    assert left_1 == [{"id": 1, "k": 10, "v": 100, "_degree": 1}]
    assert [r["id"] for r in right_1] == [5, 6]
    left_2, right_2 = states[1]
    assert left_2 == [{"id": 1, "k": 10, "v": 100, "_degree": 1}, {"id": 2, "k": 20, "v": 200, "_degree": 2}]
    assert [r["id"] for r in right_2] == [5, 6, 7]


def test_inputs_at_different_barriers_are_an_error() -> None:
    with pytest.raises(InternalError, match="different barriers"):
        run(make_join("inner", [barrier(1), barrier(2), stop(3)], [barrier(1), barrier(3, prev=1), stop(4)]))


# ---- randomized, against DuckDB -------------------------------------------------------------------------
class RandomScript:
    """Random inserts, deletes and updates of both inputs over several epochs."""

    def __init__(self, chunks: list[list[list[Chunk]]], live: list[list[list[Row]]]) -> None:
        self.chunks = chunks  # [side][epoch] -> chunks
        self.live = live  # [side][epoch] -> rows live after that epoch
        self.epochs = len(chunks[0])

    def messages(self, side: int, first: int = 0, end: int | None = None, start_epoch: int = 1) -> list[Message]:
        """The side's stream for epochs [first, end), numbered from ``start_epoch``; ends with a stop."""
        end = self.epochs if end is None else end
        prev = first if first else None  # resuming: the first barrier comes after the last committed epoch
        messages: list[Message] = [barrier(start_epoch, prev)]
        for offset, epoch in enumerate(range(first, end), start=1):
            messages += self.chunks[side][epoch]
            messages.append(barrier(start_epoch + offset) if epoch < end - 1 else stop(start_epoch + offset))
        return messages


def random_script(seed: int, epochs: int = 8, keys: int = 5, null_share: float = 0.1) -> RandomScript:
    rng = random.Random(seed)
    chunks: list[list[list[Chunk]]] = [[], []]
    live_after: list[list[list[Row]]] = [[], []]
    for side, schema in enumerate((LEFT, RIGHT)):
        live: dict[int, Row] = {}
        next_id = 1000 * side

        def key() -> int | None:
            return None if rng.random() < null_share else rng.randrange(keys)

        for _ in range(epochs):
            epoch_chunks = []
            for _ in range(rng.randrange(0, 4)):
                ops: list[Any] = []
                rows: list[Row] = []
                for _ in range(rng.randrange(1, 12)):
                    roll = rng.random()
                    if live and roll < 0.3:
                        row = live.pop(rng.choice(sorted(live)))
                        ops.append(DEL)
                        rows.append(row)
                    elif live and roll < 0.45:
                        old = live.pop(rng.choice(sorted(live)))
                        new = (old[0], key() if rng.random() < 0.5 else old[1], rng.randrange(100))
                        live[new[0]] = new
                        ops += [UD, UI]
                        rows += [old, new]
                    else:
                        next_id += 1
                        new = (next_id, key(), rng.randrange(100))
                        live[next_id] = new
                        ops.append(INS)
                        rows.append(new)
                epoch_chunks.append(chunk(schema, ops, rows))
            chunks[side].append(epoch_chunks)
            live_after[side].append(list(live.values()))
    return RandomScript(chunks, live_after)


class PacedSource(Operator):
    """Plays messages with a random pause before some: the two inputs race in varying orders."""

    name = "paced"

    def __init__(self, schema: pa.Schema, messages: list[Message], rng: random.Random) -> None:
        self.schema = schema
        self.messages = messages
        self.pauses = [rng.choice([0, 0, 0, 0.0005, 0.001]) for _ in messages]

    async def execute(self) -> AsyncIterator[Message]:
        for message, pause in zip(self.messages, self.pauses):
            if pause:
                await asyncio.sleep(pause)
            yield message


_DUCKDB = duckdb.connect()  # one connection for every oracle query: connecting costs more than joining


def duckdb_join(join_type: str, left: list[Row], right: list[Row], condition: str | None) -> Counter[Row]:
    """The batch join of ``left`` and ``right`` (columns named _0, _1, … across both, as the condition is)."""
    _DUCKDB.register("l", pa.Table.from_pylist([dict(zip(["_0", "_1", "_2"], r)) for r in left], _positional(LEFT, 0)))
    _DUCKDB.register(
        "r", pa.Table.from_pylist([dict(zip(["_3", "_4", "_5"], r)) for r in right], _positional(RIGHT, 3))
    )
    try:
        on = "_1 = _4" + (f" AND ({condition})" if condition else "")
        kind = {"left_semi": "SEMI", "left_anti": "ANTI"}.get(join_type, join_type.upper())
        select = "l.*" if kind in ("SEMI", "ANTI") else "*"
        return Counter(_DUCKDB.sql(f"SELECT {select} FROM l {kind} JOIN r ON {on}").fetchall())
    finally:
        _DUCKDB.unregister("l")
        _DUCKDB.unregister("r")


def _positional(schema: pa.Schema, start: int) -> pa.Schema:
    return pa.schema([f.with_name(f"_{start + i}") for i, f in enumerate(schema)])


def check_against_duckdb(join: HashJoin, script: RandomScript, store: MemoryStateStore) -> None:
    """Runs ``join`` and asserts its accumulated output after every barrier, then its state tables."""
    epochs = epochs_of(join)
    view: dict[Row, int] = {}
    for epoch, epoch_changes in enumerate(epochs[1:]):
        view = apply_changes(epoch_changes, view)
        expected = duckdb_join(join.join_type, script.live[0][epoch], script.live[1][epoch], join.condition)
        assert Counter(view) == expected, (join.join_type, epoch)
    assert_degrees(join, script, store, len(epochs) - 1)


def assert_degrees(join: HashJoin, script: RandomScript, store: MemoryStateStore, last_epoch: int) -> None:
    """Each side's state table holds its live rows with a key, with their match counts where kept."""
    for side, table_id in ((0, LEFT_TABLE), (1, RIGHT_TABLE)):
        live = [r for r in script.live[side][script.epochs - 1] if r[1] is not None]
        rows = store.snapshot(table_id, last_epoch).to_pylist()
        if not with_degree(join.join_type, side):
            assert sorted(tuple(r.values()) for r in rows) == sorted(live)
            continue
        others = script.live[1 - side][script.epochs - 1]
        expected = []
        for row in live:
            pairs = [(row, o) if side == 0 else (o, row) for o in others if o[1] == row[1]]
            expected.append((*row, sum(1 for lr, rr in pairs if holds(join.condition, lr, rr))))
        assert sorted(tuple(r.values()) for r in rows) == sorted(expected), (join.join_type, side)


def holds(condition: str | None, left: Row, right: Row) -> bool:
    if condition is None:
        return True
    assert condition == RANDOM_CONDITION
    return left[2] < right[2]  # _2 < _5


RANDOM_CONDITION = "_2 < _5"


@pytest.mark.parametrize("condition", [None, RANDOM_CONDITION])
@pytest.mark.parametrize("join_type", JOIN_TYPES)
@pytest.mark.parametrize("seed", range(4))
def test_random_changes_match_duckdb_after_every_barrier(join_type: str, condition: str | None, seed: int) -> None:
    script = random_script(seed)
    rng = random.Random(seed)
    store = MemoryStateStore()
    sources = [PacedSource(schema, script.messages(side), rng) for side, schema in enumerate((LEFT, RIGHT))]
    join = make_join(join_type, sources[0], sources[1], store, condition=condition)
    check_against_duckdb(join, script, store)


# ---- recovery -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("join_type", JOIN_TYPES)
def test_recovery_continues_from_the_committed_epoch(join_type: str) -> None:
    script = random_script(seed=11, epochs=8)
    split = 4  # the first run commits epochs 1..split-1 (its stop barrier commits the last)
    reference = epochs_of(make_join(join_type, script.messages(0), script.messages(1)))

    store = MemoryStateStore()
    first_join = make_join(join_type, script.messages(0, 0, split), script.messages(1, 0, split), store)
    first_output = run(first_join)
    # A new operator over the same store; its first barrier resumes from the committed epoch `split`.
    left, right = (script.messages(side, split, start_epoch=50) for side in (0, 1))
    second_output = run(make_join(join_type, left, right, store))
    assert_alternating(changes(first_output + second_output), key=stream_key(first_join))
    first, second = per_barrier(first_output), per_barrier(second_output)
    assert first == reference[: split + 1]
    assert second[0] == []
    combined = apply_changes([c for epoch in first + second for c in epoch])
    assert combined == apply_changes([c for epoch in reference for c in epoch])
    assert combined == duckdb_join(join_type, script.live[0][-1], script.live[1][-1], None)


# ---- bounded memory -------------------------------------------------------------------------------------------
TINY_BUDGET_BYTES = 3_000


@pytest.mark.parametrize("join_type", ["inner", "full", "left_anti"])
def test_bounded_cache_emits_exactly_what_the_unbounded_operator_emits(join_type: str) -> None:
    script = random_script(seed=5, epochs=12, keys=40, null_share=0.05)
    reference = epochs_of(make_join(join_type, script.messages(0), script.messages(1), condition=RANDOM_CONDITION))
    store = SpyStore()
    join = make_join(
        join_type,
        script.messages(0),
        script.messages(1),
        store,
        condition=RANDOM_CONDITION,
        cache_bytes=TINY_BUDGET_BYTES,
    )
    caches = [side.cache for side in join.sides]
    used_at_barriers: list[int] = []

    def on_message(message: Message) -> None:
        if isinstance(message, Barrier):
            used_at_barriers.append(max(c.used_bytes for c in caches if c is not None))

    output = run(join, on_message)
    assert_alternating(changes(output), key=stream_key(join))
    # Rows read back from the state table sit elsewhere in memory: pairs may come in another order.
    assert [Counter(epoch) for epoch in per_barrier(output)] == [Counter(epoch) for epoch in reference]
    assert all(c is not None and c.evictions > 20 for c in caches)
    chunks = sum(len(epoch) for side in script.chunks for epoch in side)
    assert 0 < store.prefix_reads <= 2 * chunks  # at most one per side per chunk
    assert store.snapshots == 0
    assert max(used_at_barriers) <= TINY_BUDGET_BYTES  # back within budget once the epoch is written
    assert_degrees(join, script, store, script.epochs)


def test_recovery_with_a_budget_reads_keys_on_demand_and_continues_exactly() -> None:
    script = random_script(seed=8, epochs=10, keys=60, null_share=0.0)
    reference = epochs_of(make_join("full", script.messages(0), script.messages(1)))
    store = SpyStore()
    split = 6
    first_join = make_join("full", script.messages(0, 0, split), script.messages(1, 0, split), store, cache_bytes=10**9)
    first_output = run(first_join)
    assert store.prefix_reads == 0 and store.snapshots == 0  # everything fit: nothing was read back
    left, right = (script.messages(side, split, start_epoch=50) for side in (0, 1))
    recovered = make_join("full", left, right, store, cache_bytes=10**9)
    reads: list[tuple[int, int]] = []
    second_output = run(
        recovered, lambda m: reads.append((store.snapshots, store.prefixes_read)) if isinstance(m, Barrier) else None
    )
    assert reads[0] == (0, 0)  # recovery itself reads nothing
    touched = {row[1] for side in (0, 1) for c in script.chunks[side][split] for _, row in c.rows()}
    assert 0 < reads[1][1] <= 2 * len(touched)  # the first epoch reads only the keys its chunks touch
    assert store.snapshots == 0
    assert_alternating(changes(first_output + second_output), key=stream_key(first_join))
    combined = apply_changes(changes(first_output + second_output))
    assert combined == apply_changes([c for epoch in reference for c in epoch])


def test_without_a_budget_recovery_reads_both_tables_once() -> None:
    script = random_script(seed=2, epochs=6)
    store = SpyStore()
    run(make_join("left", script.messages(0, 0, 3), script.messages(1, 0, 3), store))
    assert store.snapshots == 0
    left, right = (script.messages(side, 3, start_epoch=20) for side in (0, 1))
    snapshots_seen: list[int] = []
    run(make_join("left", left, right, store), lambda m: snapshots_seen.append(store.snapshots))
    assert snapshots_seen[0] == 2  # both tables, read before the first barrier goes out
    assert store.snapshots == 2 and store.prefix_reads == 0
