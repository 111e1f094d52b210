"""Column pruning below joins and windows: they get only the columns of their inputs that are read.

Place in the data flow: the last step of planning a view (``planner.plan_materialized_view``),
a rewrite of the stream plan's dicts before they are stored and built. A join keeps every row
of both inputs, in memory and in its state tables (checkpointed with the view), and copies the
rows of both sides into every pair it emits: a column nothing reads is stored, uploaded and
copied for nothing. Nexmark q4 reads 3 of the 19 columns of ``auction JOIN bid``.

Above a join the planner puts the filters of WHERE and then a projection; together they say
which of the join's columns are read. Each input of the join then gets a projection to those
columns, its join keys, its stream key (the key of its state table) and the columns of the
residual condition; the join, the filters and the projection are renumbered. An input that is
itself a projection is narrowed instead of wrapped, and the narrowed projection is pruned in
turn when it stands over a join. TUMBLE and HOP copy each row into every window holding it
(five times for Nexmark q5's HOP): their input is narrowed alike, to the columns read and the
time column.

Invariants: the projection above keeps its expressions and their order, so the view's columns,
stream key and watermarks are unchanged; the join's stream key (its inputs' keys) is kept.
Nodes are rebuilt, never changed in place: a plan may share sub-plans.

Limits: only joins whose output is their left columns then their right ones (inner and outer,
not semi or anti) and whose inputs' widths the plan states (not a scan of a table: its width is
in the catalog), and only where every expression involved references columns as ``_N``; any
other join or window is left as it is.
"""

from __future__ import annotations

from typing import Any

from sqlglot import exp

__all__ = ["prune_unread_columns"]

Plan = dict[str, Any]

# Join types whose output row is the left row followed by the right row.
_PAIR_JOINS = ("inner", "left", "right", "full")
# Nodes whose output has one column per entry of their "schema".
_SCHEMA_NODES = ("source", "hash_agg", "hash_join", "hop_window", "union", "top_n")


def prune_unread_columns(plan: Plan) -> Plan:
    """``plan`` with the inputs of its joins and windows narrowed to the columns read (see the module
    docstring)."""
    if plan["op"] == "project":
        plan = _prune_below(plan)
    if "input" in plan:
        return {**plan, "input": prune_unread_columns(plan["input"])}
    if "inputs" in plan:
        return {**plan, "inputs": [prune_unread_columns(child) for child in plan["inputs"]]}
    return plan


def _prune_below(project: Plan) -> Plan:
    """The projection with the join or windows below its filters (if any) reading only the columns
    it needs."""
    chain = [project]  # the projection, then the filters down to the join or windows
    node = project["input"]
    while node["op"] == "filter":
        chain.append(node)
        node = node["input"]
    read = _read_columns([*project["exprs"], *(f["condition"] for f in chain[1:])])
    if read is None:
        return project
    if node["op"] == "hash_join" and node["join_type"] in _PAIR_JOINS:
        pruned = _pruned_join(node, read)
    elif node["op"] == "hop_window":
        pruned = _pruned_windows(node, read)
    else:
        return project
    if pruned is None:
        return project
    node, output_at = pruned
    for above in reversed(chain[1:]):
        node = {**above, "condition": _renumber(above["condition"], output_at), "input": node}
    return {**project, "exprs": [_renumber(e, output_at) for e in project["exprs"]], "input": node}


def _pruned_join(join: Plan, read: set[int]) -> tuple[Plan, dict[int, int]] | None:
    """The join over inputs narrowed to the columns ``read`` above it, its keys, its inputs' stream
    keys and its condition's columns, and where each kept output column went; None if nothing goes."""
    left, right = join["inputs"]
    left_width, right_width = _width(left), _width(right)
    if left_width is None or right_width is None:
        return None
    if join["condition"] is not None:
        condition_read = _read_columns([join["condition"]])
        if condition_read is None:
            return None
        read = read | condition_read
    left_kept = sorted({c for c in read if c < left_width} | set(join["left_keys"]) | set(join["left_pk"]))
    right_kept = sorted(
        {c - left_width for c in read if c >= left_width} | set(join["right_keys"]) | set(join["right_pk"])
    )
    if len(left_kept) == left_width and len(right_kept) == right_width:
        return None
    left_at = {c: i for i, c in enumerate(left_kept)}
    right_at = {c: i for i, c in enumerate(right_kept)}
    output_at = {**left_at, **{left_width + c: len(left_kept) + i for c, i in right_at.items()}}
    kept_outputs = [*left_kept, *(left_width + c for c in right_kept)]
    pruned = {
        **join,
        "left_keys": [left_at[c] for c in join["left_keys"]],
        "right_keys": [right_at[c] for c in join["right_keys"]],
        "left_pk": [left_at[c] for c in join["left_pk"]],
        "right_pk": [right_at[c] for c in join["right_pk"]],
        "condition": None if join["condition"] is None else _renumber(join["condition"], output_at),
        "schema": [join["schema"][c] for c in kept_outputs],
        "inputs": [
            _narrow(left, left_kept, join["schema"][:left_width]),
            _narrow(right, right_kept, join["schema"][left_width:]),
        ],
    }
    return pruned, output_at


def _pruned_windows(windows: Plan, read: set[int]) -> tuple[Plan, dict[int, int]] | None:
    """TUMBLE/HOP over its input narrowed to the columns ``read`` above it and the time column (each
    row is copied once per window: HOP(…, 2 s, 10 s) copies it 5 times), and where each kept output
    column went; None if nothing goes. ``window_start`` and ``window_end`` stay the last two."""
    width = len(windows["schema"]) - 2
    time_column = windows["time_column"]
    kept = sorted({c for c in read if c < width} | {time_column})
    if len(kept) == width:
        return None
    at = {c: i for i, c in enumerate(kept)}
    output_at = {**at, width: len(kept), width + 1: len(kept) + 1}
    pruned = {
        **windows,
        "time_column": at[time_column],
        "schema": [*(windows["schema"][c] for c in kept), *windows["schema"][width:]],
        "input": _narrow(windows["input"], kept, windows["schema"][:width]),
    }
    return pruned, output_at


def _read_columns(expressions: list[str]) -> set[int] | None:
    """The input positions the compiled ``expressions`` read, None if one of them is not followed."""
    read: set[int] = set()
    for expression in expressions:
        columns = _references(expression)
        if columns is None:
            return None
        read |= columns
    return read


def _narrow(plan: Plan, kept: list[int], schema: list[list[str]]) -> Plan:
    """``plan``'s columns ``kept`` (``schema``: all of its columns, as the join names them): a
    projection narrowed (its own names kept), any other node under a new projection."""
    if len(kept) == len(schema):
        return plan
    if plan["op"] == "project":
        exprs, schema = [plan["exprs"][c] for c in kept], plan["schema"]
    else:
        exprs = [f"_{c}" for c in kept]
        plan = {"op": "project", "input": plan}
    kept_schema = [schema[c] for c in kept]
    shown = ", ".join(name for name, _ in kept_schema)
    return {**plan, "exprs": exprs, "schema": kept_schema, "display": f"StreamProject {{ {shown} }}"}


def _width(plan: Plan) -> int | None:
    """The number of columns ``plan`` yields, when the plan itself says (None for a scan)."""
    op = plan["op"]
    if op == "project":
        return len(plan["exprs"])
    if op in ("filter", "temporal_filter"):
        return _width(plan["input"])
    if op in _SCHEMA_NODES and "schema" in plan:
        return len(plan["schema"])
    return None


def _positional(node: exp.Expression) -> int | None:
    """The position a column reference ``_N`` stands for, else None."""
    if isinstance(node, exp.Column) and not node.table and node.name[:1] == "_" and node.name[1:].isdigit():
        return int(node.name[1:])
    return None


def _references(compiled: str) -> set[int] | None:
    """The input positions a compiled expression reads; None when it names a column any other way
    (a qualified name, a lambda's parameter), which this rule does not try to follow."""
    positions: set[int] = set()
    parsed: exp.Expression = exp.maybe_parse(compiled, dialect="duckdb")
    for column in parsed.find_all(exp.Column):
        position = _positional(column)
        if position is None:
            return None
        positions.add(position)
    return positions


def _renumber(compiled: str, new_position: dict[int, int]) -> str:
    """The compiled expression reading position ``new_position[i]`` wherever it read ``i``; the
    text itself when no position moves."""
    parsed: exp.Expression = exp.maybe_parse(compiled, dialect="duckdb")
    moved = {_positional(c) for c in parsed.find_all(exp.Column)}
    if all(p is not None and new_position[p] == p for p in moved):
        return compiled

    def renumber(node: exp.Expression) -> exp.Expression:
        position = _positional(node)
        return node if position is None else exp.column(f"_{new_position[position]}")

    return parsed.transform(renumber).sql(dialect="duckdb")
