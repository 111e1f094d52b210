"""prune_unread_columns: the inputs of a join (and of TUMBLE/HOP) are narrowed to the columns read
above it, and every reference to its columns is renumbered."""

from __future__ import annotations

import copy
from typing import Any

from tidegate.sql.prune import prune_unread_columns


def source(name: str, columns: list[str]) -> dict[str, Any]:
    schema = [[c, "bigint"] for c in [*columns, "_row_id"]]
    return {"op": "source", "relation_id": 1, "schema": schema, "display": f"StreamSource {{ {name} }}"}


def join(left: dict[str, Any], right: dict[str, Any], **fields: Any) -> dict[str, Any]:
    widths = [len(side.get("schema", [[]] * 3)) for side in (left, right)]  # a scan: 3 columns
    plan = {
        "op": "hash_join",
        "join_type": "inner",
        "left_keys": [0],
        "right_keys": [0],
        "left_pk": [widths[0] - 1],
        "right_pk": [widths[1] - 1],
        "condition": None,
        "schema": [[f"c{i}", "bigint"] for i in range(sum(widths))],
        "inputs": [left, right],
        "display": "StreamHashJoin",
    }
    return plan | fields


def project(exprs: list[str], input: dict[str, Any]) -> dict[str, Any]:
    schema = [[f"p{i}", "bigint"] for i in range(len(exprs))]
    return {"op": "project", "exprs": exprs, "schema": schema, "input": input, "display": "StreamProject"}


def filter_(condition: str, input: dict[str, Any]) -> dict[str, Any]:
    return {"op": "filter", "condition": condition, "input": input, "display": "StreamFilter"}


AUCTION = source("auction", ["id", "item", "description", "date_time", "expires", "seller", "category"])  # width 8
BID = source("bid", ["auction", "bidder", "price", "url", "date_time"])  # width 6


def test_inputs_keep_the_columns_read_above_the_keys_and_the_stream_keys() -> None:
    # Like q4: a.id, a.category and b.price are selected, b.date_time BETWEEN a.date_time AND a.expires.
    plan = project(["_0", "_6", "_10"], filter_("_12 BETWEEN _3 AND _4", join(AUCTION, BID)))
    pruned = prune_unread_columns(plan)
    assert pruned["exprs"] == ["_0", "_3", "_6"]
    assert pruned["input"]["condition"] == "_7 BETWEEN _1 AND _2"
    joined = pruned["input"]["input"]
    assert (joined["left_keys"], joined["right_keys"], joined["left_pk"], joined["right_pk"]) == ([0], [0], [4], [3])
    assert [name for name, _ in joined["schema"]] == ["c0", "c3", "c4", "c6", "c7", "c8", "c10", "c12", "c13"]
    left, right = joined["inputs"]
    assert left["op"] == right["op"] == "project"
    assert left["exprs"] == ["_0", "_3", "_4", "_6", "_7"] and left["input"] is AUCTION
    assert right["exprs"] == ["_0", "_2", "_4", "_5"] and right["input"] is BID
    assert [name for name, _ in right["schema"]] == ["c8", "c10", "c12", "c13"]


def test_the_residual_condition_is_renumbered_and_its_columns_kept() -> None:
    plan = project(["_1"], join(AUCTION, BID, condition="_12 > _3 AND _10 <> 7"))
    joined = prune_unread_columns(plan)["input"]
    assert joined["condition"] == "_6 > _2 AND _5 <> 7"
    assert joined["inputs"][0]["exprs"] == ["_0", "_1", "_3", "_7"]
    assert joined["inputs"][1]["exprs"] == ["_0", "_2", "_4", "_5"]


def test_an_input_that_is_a_projection_is_narrowed_and_the_join_below_it_pruned_in_turn() -> None:
    inner = project(["_0", "_6", "_10", "_7", "_13"], join(AUCTION, BID))  # id, category, price, row ids
    outer_right = source("person", ["id", "name", "city"])
    plan = project(["_1", "_6"], join(inner, outer_right))
    pruned = prune_unread_columns(plan)
    narrowed = pruned["input"]["inputs"][0]
    # The projection keeps id (the join key), category (read) and its last column (the join's pk here),
    # and no new projection is stacked on it; it reads fewer columns of its own join, which is pruned too.
    assert narrowed["op"] == "project" and [name for name, _ in narrowed["schema"]] == ["p0", "p1", "p4"]
    inner_join = narrowed["input"]
    assert inner_join["inputs"][0]["exprs"] == ["_0", "_6", "_7"]  # id, category, _row_id
    assert inner_join["inputs"][1]["exprs"] == ["_0", "_5"]  # auction, _row_id
    assert narrowed["exprs"] == ["_0", "_1", "_4"]


def test_a_plan_reading_every_column_is_returned_as_it_is() -> None:
    plan = project([f"_{i}" for i in range(14)], join(AUCTION, BID))
    assert prune_unread_columns(plan) == plan


def test_semi_joins_scans_and_unusual_references_are_left_alone() -> None:
    semi = project(["_0"], join(AUCTION, BID, join_type="left_semi", schema=AUCTION["schema"]))
    assert prune_unread_columns(semi) == semi
    scan = {"op": "scan", "relation_id": 3, "display": "StreamScan { t }"}
    assert prune_unread_columns(project(["_0"], join(scan, BID))) == project(["_0"], join(scan, BID))
    qualified = project(["t._0", "_1"], join(AUCTION, BID))
    assert prune_unread_columns(qualified) == qualified


def test_literals_are_not_renumbered_and_the_plan_given_is_not_changed() -> None:
    plan = project(["concat(_12, '_12')", "_0"], join(AUCTION, BID))
    before = copy.deepcopy(plan)
    pruned = prune_unread_columns(plan)
    assert plan == before
    assert pruned["exprs"] == ["CONCAT(_3, '_12')", "_0"]


def windows(input: dict[str, Any], time_column: int) -> dict[str, Any]:
    schema = [*input["schema"], ["window_start", "timestamp"], ["window_end", "timestamp"]]
    return {
        "op": "hop_window",
        "time_column": time_column,
        "slide_us": 2_000_000,
        "size_us": 10_000_000,
        "schema": schema,
        "input": input,
        "display": "StreamHopWindow",
    }


def test_windows_copy_only_the_columns_read_and_the_time_column() -> None:
    # Like q5: HOP(bid, date_time, …) read for auction, window_start and window_end.
    plan = project(["_0", "_6", "_7"], filter_("_7 > _6 AND _2 > 0", windows(BID, time_column=4)))
    pruned = prune_unread_columns(plan)
    assert pruned["exprs"] == ["_0", "_3", "_4"]
    assert pruned["input"]["condition"] == "_4 > _3 AND _1 > 0"
    hop = pruned["input"]["input"]
    assert hop["time_column"] == 2
    assert [name for name, _ in hop["schema"]] == ["auction", "price", "date_time", "window_start", "window_end"]
    assert hop["input"]["op"] == "project" and hop["input"]["exprs"] == ["_0", "_2", "_4"]
    assert hop["input"]["input"] is BID


def test_windows_whose_every_column_is_read_are_left_alone() -> None:
    plan = project([f"_{i}" for i in range(8)], windows(BID, time_column=4))
    assert prune_unread_columns(plan) == plan
