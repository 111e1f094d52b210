"""Compaction: merge a state table's L0 SSTs into its L1 sorted run, dropping versions nobody can read.

Place in the data flow (DESIGN §6): every checkpoint adds one L0 SST per
changed state table; L0 SSTs overlap each other, so every one of them costs
each read a bloom probe or a scan. After a checkpoint commits, the durable
store's ``maintain`` (on the checkpoint thread) calls :func:`compact_levels`
for tables with more than ``l0_ssts_max`` L0 SSTs. It merges all of them into
L1 — a run of SSTs with disjoint key ranges, sorted by key — and the store
commits the result as one new version.

Only the L1 SSTs that receive L0 keys are rewritten. The key space is cut at
the first key of every L1 SST: segment *i* runs from SST *i*'s first key to
the next SST's, and keys below the first SST form a segment of their own. A
segment holding L0 rows is merged with its L1 SST (if any) into one or more
new SSTs of about ``sst_bytes_target`` bytes (of Arrow data); the other L1 SSTs are kept as they
are. New SSTs stay inside their segment, so the run stays disjoint, and only
one L1 SST is decoded at a time besides the L0 rows.

Versions: rows are (key asc, epoch desc). For every key the versions newer
than ``horizon`` (the oldest epoch a reader may still ask for) are kept, plus
the newest version at or below it; older ones can no longer be read. L1 is
the bottom level, so when that newest version is a tombstone it is dropped
too — no older version of the key survives anywhere below it.

A key's versions never straddle two L1 SSTs (cuts fall on key boundaries), so
"the L1 SST of a key" is well defined for reads and for the next compaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
import pyarrow as pa

from tidegate.common.keys import KEY_TYPE
from tidegate.state.sst import DELETING_OPS, KEY_COLUMN, SstInfo
from tidegate.state.versions import Keys, Run

__all__ = ["CompactionOutcome", "collapse_versions", "compact_levels", "cut_points"]

H = TypeVar("H")  # the store's handle of an input SST
Out = TypeVar("Out")  # what writing an output SST returns

_DELETING = np.array(DELETING_OPS, np.int8)


@dataclass
class CompactionOutcome(Generic[H, Out]):
    """What one compaction replaced and wrote; the store commits it as one version."""

    replaced_l0: list[H]
    replaced_l1: list[H]
    kept_l1: list[H]
    outputs: list[Out] = field(default_factory=list)
    rows_read: int = 0
    rows_written: int = 0


def compact_levels(
    l0: Sequence[tuple[H, SstInfo]],
    l1: Sequence[tuple[H, SstInfo]],
    *,
    read: Callable[[H], pa.Table],
    write: Callable[[pa.Table], Out],
    horizon: int,
    sst_bytes_target: int,
    block_schema: pa.Schema,
) -> CompactionOutcome[H, Out]:
    """Merge every SST of ``l0`` (oldest first) into the ``l1`` run (in key order).

    ``read`` returns an SST's rows (block columns, sorted); ``write`` encodes and
    uploads the rows of one new L1 SST, of about ``sst_bytes_target`` bytes of
    Arrow data. Nothing is committed here.
    """
    assert sst_bytes_target > 0, sst_bytes_target
    outcome: CompactionOutcome[H, Out] = CompactionOutcome([h for h, _ in l0], [], [])
    # Newest SST first: a stable sort by key then leaves each key's versions newest first.
    l0_tables = [read(handle) for handle, _ in reversed(l0)]
    outcome.rows_read = sum(t.num_rows for t in l0_tables)
    if not l0_tables or not outcome.rows_read:
        outcome.kept_l1 = [h for h, _ in l1]
        return outcome
    l0_rows = pa.concat_tables(l0_tables) if len(l0_tables) > 1 else l0_tables[0]
    l0_run = _sorted(l0_rows)

    # Segment of each L0 row: index of the last L1 SST whose first key is <= the row's key (-1: before all).
    firsts = Keys.of(pa.array([info.first_key for _, info in l1], KEY_TYPE))
    segment_ends = l0_run.keys.search(firsts, "left")  # where each L1 SST's segment starts among L0 rows
    bounds = [0, *segment_ends.tolist(), l0_run.num_rows]
    for segment in range(-1, len(l1)):
        start, end = bounds[segment + 1], bounds[segment + 2]
        if segment >= 0 and start == end:
            outcome.kept_l1.append(l1[segment][0])
            continue
        if start == end:
            continue
        part = l0_run.table.slice(start, end - start)
        if segment >= 0:
            handle = l1[segment][0]
            old = read(handle)
            outcome.replaced_l1.append(handle)
            outcome.rows_read += old.num_rows
            part = _sorted(pa.concat_tables([part, old])).table
        merged = collapse_versions(Run.of(part), horizon, bottom=True)
        row_bytes = max(1, merged.nbytes // max(1, merged.num_rows))
        rows_per_sst = max(1, sst_bytes_target // row_bytes)
        for cut_start, cut_end in cut_points(Keys.of(merged.column(KEY_COLUMN)), rows_per_sst):
            rows = merged.slice(cut_start, cut_end - cut_start)
            if not rows.schema.equals(block_schema):
                rows = rows.cast(block_schema)
            outcome.outputs.append(write(rows))
            outcome.rows_written += rows.num_rows
    return outcome


def _sorted(rows: pa.Table) -> Run:
    """``rows`` (sorted runs, newest first) as one run sorted by (key asc, epoch desc)."""
    run = Run.of(rows)
    order = run.keys.sort_order()
    if np.all(order[1:] > order[:-1]):
        return run
    return Run.of(rows.take(pa.array(order)))


def collapse_versions(run: Run, horizon: int, *, bottom: bool) -> pa.Table:
    """Drop the versions of a sorted run that no read at an epoch >= ``horizon`` can see.

    Per key: every version newer than ``horizon`` stays, and the newest at or
    below it stays unless ``bottom`` and it is a tombstone.
    """
    n = run.num_rows
    if not n:
        return run.table
    starts = run.keys.group_starts()
    settled = run.epochs <= np.uint64(horizon)
    # Versions are newest first, so within a key the settled ones form a suffix; keep its first.
    first_settled = settled.copy()
    first_settled[1:] &= starts[1:] | ~settled[:-1]
    keep = ~settled | first_settled
    if bottom:
        keep &= ~(first_settled & np.isin(run.ops, _DELETING))
    if keep.all():
        return run.table
    return run.table.filter(pa.array(keep))


def cut_points(keys: Keys, rows_per_sst: int) -> list[tuple[int, int]]:
    """``(start, end)`` row ranges of about ``rows_per_sst`` rows, each cut on a key boundary."""
    n = len(keys)
    if not n:
        return []
    if n <= rows_per_sst:
        return [(0, n)]
    starts = np.flatnonzero(keys.group_starts())
    ranges = []
    start = 0
    while start < n:
        # The first key boundary at or after start + rows_per_sst (a key's versions stay together).
        index = int(np.searchsorted(starts, start + rows_per_sst, "left"))
        end = int(starts[index]) if index < len(starts) else n
        ranges.append((start, end))
        start = end
    return ranges
