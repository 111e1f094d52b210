"""Project: computed columns, ops kept row for row, update pairs still adjacent."""

from __future__ import annotations

import random
from decimal import Decimal

import pyarrow as pa
from scripted import DEL, INS, UD, UI, ScriptedSource, barrier, changes, chunk, run

from tidegate.common.chunk import Chunk
from tidegate.stream.operators.project import Project

IN = pa.schema([("a", pa.int32()), ("b", pa.int32()), ("s", pa.string())])


def test_computes_expressions_and_keeps_ops_in_place() -> None:
    out_schema = pa.schema([("a", pa.int32()), ("total", pa.int64()), ("upper", pa.string())])
    source = ScriptedSource(
        IN,
        [
            barrier(1),
            chunk(IN, "+ U- U+ -", [(1, 2, "x"), (1, 2, "x"), (1, 5, "y"), (3, 4, None)]),
            barrier(2),
        ],
    )
    output = run(Project(source, ["_0", "_0 + _1", "upper(_2)"], out_schema))

    assert changes(output) == [
        (INS, (1, 3, "X")),
        (UD, (1, 3, "X")),
        (UI, (1, 6, "Y")),
        (DEL, (3, 7, None)),
    ]
    out_chunks = [m for m in output if isinstance(m, Chunk)]
    assert all(c.data.schema.equals(out_schema) for c in out_chunks)


def test_barriers_pass_through_unchanged_and_empty_chunks_are_dropped() -> None:
    first, second = barrier(1), barrier(2)
    source = ScriptedSource(IN, [first, chunk(IN, "", []), second])
    output = run(Project(source, ["_1 * 2"], pa.schema([("b2", pa.int32())])))
    assert output == [first, second]
    assert output[0] is first and output[1] is second


def test_bare_column_references_reorder_without_evaluation() -> None:
    out_schema = pa.schema([("s", pa.string()), ("a", pa.int32())])
    source = ScriptedSource(IN, [barrier(1), chunk(IN, "U- U+", [(1, 2, "p"), (1, 3, "q")]), barrier(2)])
    assert changes(run(Project(source, ["_2", "_0"], out_schema))) == [(UD, ("p", 1)), (UI, ("q", 1))]


def test_nulls_integer_division_and_division_by_zero() -> None:
    out_schema = pa.schema([("plus", pa.int32()), ("quotient", pa.int32())])
    source = ScriptedSource(IN, [barrier(1), chunk(IN, "+ + +", [(7, 2, ""), (None, 1, ""), (5, 0, "")]), barrier(2)])
    # PostgreSQL integer division truncates; a streaming job turns x / 0 into NULL instead of failing.
    assert changes(run(Project(source, ["_0 + 1", "_0 / _1"], out_schema))) == [
        (INS, (8, 3)),
        (INS, (None, None)),
        (INS, (6, None)),
    ]


def test_decimal_output_keeps_its_scale_exactly() -> None:
    schema = pa.schema([("price", pa.decimal128(10, 2))])
    out_schema = pa.schema([("doubled", pa.decimal128(38, 2))])
    source = ScriptedSource(schema, [barrier(1), chunk(schema, "+", [(Decimal("474.24"),)]), barrier(2)])
    (row,) = changes(run(Project(source, ["_0 * 2"], out_schema)))
    assert row == (INS, (Decimal("948.48"),))
    assert row[1][0].as_tuple().exponent == -2


def test_large_chunk_keeps_row_order_and_update_pairs_adjacent() -> None:
    rng = random.Random(7)
    ops, rows = [], []
    for i in range(5000):
        if rng.random() < 0.3:
            ops += [UD, UI]
            rows += [(i, 0, "old"), (i, 1, "new")]
        else:
            ops.append(rng.choice([INS, DEL]))
            rows.append((i, 2, "x"))
    source = ScriptedSource(IN, [barrier(1), chunk(IN, ops, rows), barrier(2)])
    out_schema = pa.schema([("a", pa.int64()), ("b", pa.int32())])
    output = changes(run(Project(source, ["_0::BIGINT * 10", "_1 + 1"], out_schema)))
    assert [op for op, _ in output] == ops
    assert [row for _, row in output] == [(a * 10, b + 1) for a, b, _ in rows]
