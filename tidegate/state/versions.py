"""MVCC versions of rows, vectorized: the sorted runs that deltas, SSTs and compaction share.

Place in the data flow (DESIGN §6): every source of a state table's rows — a
sealed delta in the shared buffer, a block of an SST — is viewed as a *run*:
rows in block columns (``__key``, ``__epoch``, ``__op``, then the table's),
sorted by (key asc, epoch desc). Reads of the durable store merge runs here
(newest version at or below the read epoch wins, tombstones delete), point
lookups binary-search them, and compaction merges them into new SSTs.

How keys are compared. Keys are memcomparable byte strings (``common.keys``).
A run's keys are also viewed as a numpy array of fixed-width byte strings
(dtype ``S<width>``) — zero-copy when every key has one width, as keys made of
fixed-width columns always do; zero-padded to the widest otherwise. numpy
compares those like ``memcmp``, so sorting, binary search and "first row of
each key" are single numpy calls. Padding changes no order and no equality
(views of different widths compare the same way): one table's keys are
prefix-free, so no two keys differ only by trailing zero bytes. When padding
would more than double the bytes (a few very long VARCHAR keys among short
ones), Arrow's binary kernels do the work instead: a stable ``sort_indices``,
element-wise comparisons, and a binary search that bisects all wanted keys at
once with ``take`` + ``less``. Either way no per-row Python runs.

Priority order: reads list runs newest first (deltas newest epoch first, L0
SSTs newest first, then the L1 run). Distinct sources hold disjoint epoch
ranges, so the first occurrence of a key in that order is its newest version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.keys import KEY_TYPE
from tidegate.state.sst import DELETING_OPS, EPOCH_COLUMN, KEY_COLUMN, OP_COLUMN

__all__ = ["Keys", "Run", "newest_visible", "prefix_ends"]

_DELETING = np.array(DELETING_OPS, np.int8)
# Variable-width keys are zero-padded into a numpy view while that at most doubles their bytes.
PADDING_GROWTH_MAX = 2


def _single(column: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 1:
            return column.chunk(0)
        return column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    return column


def _key_view(array: pa.Array) -> tuple[np.ndarray | None, bool]:
    """The keys as an ``S<width>`` array, and whether it is a copy: zero-copy when they all have one
    width, else zero-padded if that costs at most ``PADDING_GROWTH_MAX`` times their bytes (or None)."""
    n = len(array)
    if n == 0:
        return np.zeros(0, "S1"), False
    if array.null_count:
        return None, False
    dtype = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype, array.offset + n + 1)[array.offset :].astype(np.int64)
    lengths = np.diff(offsets)
    width = int(lengths.max())
    if width == 0:
        return np.zeros(n, "S1"), True  # pk == []: every key is b""
    start, end = int(offsets[0]), int(offsets[-1])
    data = np.frombuffer(array.buffers()[2], np.uint8, end)[start:]
    if int(lengths.min()) == width:
        return data.view(f"S{width}"), False
    if n * width > PADDING_GROWTH_MAX * (end - start) + 4096:
        return None, False
    matrix = np.zeros((n, width), np.uint8)
    rows = np.repeat(np.arange(n), lengths)
    columns = np.arange(end - start) - np.repeat(offsets[:-1] - start, lengths)
    matrix[rows, columns] = data
    return matrix.reshape(-1).view(f"S{width}"), True


@dataclass(frozen=True)
class Keys:
    """Memcomparable keys: the Arrow array, and its numpy ``S<width>`` view unless padding would cost too much."""

    array: pa.Array
    view: np.ndarray | None
    padded: bool = False  # the view is a copy (counted in a cached run's bytes)

    @classmethod
    def of(cls, keys: pa.Array | pa.ChunkedArray) -> Keys:
        array = _single(keys)
        if array.type != KEY_TYPE:
            array = array.cast(KEY_TYPE)
        view, padded = _key_view(array)
        return cls(array, view, padded)

    @classmethod
    def concat(cls, parts: Sequence[Keys]) -> Keys:
        if len(parts) == 1:
            return parts[0]
        array = pa.concat_arrays([p.array for p in parts]) if parts else pa.array([], KEY_TYPE)
        views = [p.view for p in parts]
        if all(v is not None for v in views):
            return cls(array, np.concatenate(views) if views else np.zeros(0, "S1"))  # type: ignore[arg-type]
        return cls(array, None)

    def __len__(self) -> int:
        return len(self.array)

    def take(self, indices: np.ndarray) -> Keys:
        view = self.view[indices] if self.view is not None else None
        return Keys(self.array.take(pa.array(indices)), view)

    def slice(self, start: int, stop: int) -> Keys:
        view = self.view[start:stop] if self.view is not None else None
        return Keys(self.array.slice(start, stop - start), view)

    def filter(self, mask: np.ndarray) -> Keys:
        view = self.view[mask] if self.view is not None else None
        return Keys(self.array.filter(pa.array(mask)), view)

    def sort_order(self) -> np.ndarray:
        """Indices of a stable ascending sort (fast on concatenated sorted runs: timsort merges them)."""
        if self.view is not None:
            return np.argsort(self.view, kind="stable")
        return np.asarray(pc.sort_indices(self.array).to_numpy(), np.int64)

    def group_starts(self) -> np.ndarray:
        """For sorted keys: True where a key differs from the one before it."""
        n = len(self)
        starts = np.ones(n, bool)
        if n > 1:
            if self.view is not None:
                starts[1:] = self.view[1:] != self.view[:-1]
            else:
                same = pc.equal(self.array.slice(1), self.array.slice(0, n - 1))
                starts[1:] = ~np.asarray(same.to_numpy(zero_copy_only=False), bool)
        return starts

    def search(self, wanted: Keys, side: str) -> np.ndarray:
        """``numpy.searchsorted`` of ``wanted`` in these sorted keys."""
        if self.view is not None and wanted.view is not None:
            needles = wanted.view
            if needles.dtype.itemsize < self.view.dtype.itemsize:
                # Zero-padding to the haystack's width keeps the order; numpy would otherwise convert both.
                needles = needles.astype(self.view.dtype)
            return np.asarray(np.searchsorted(self.view, needles, side), np.int64)  # type: ignore[call-overload]
        return _bisect(self.array, wanted.array, side)

    def less_equal(self, bound: bytes) -> np.ndarray:
        if self.view is not None:
            return np.asarray(self.view <= np.bytes_(bound), bool)
        return np.asarray(pc.less_equal(self.array, pa.scalar(bound, KEY_TYPE)).to_numpy(zero_copy_only=False), bool)

    def greater_equal(self, bound: bytes) -> np.ndarray:
        if self.view is not None:
            return np.asarray(self.view >= np.bytes_(bound), bool)
        return np.asarray(pc.greater_equal(self.array, pa.scalar(bound, KEY_TYPE)).to_numpy(zero_copy_only=False), bool)

    def starts_in_order(self, order: np.ndarray) -> np.ndarray:
        """``group_starts`` of these keys taken in ``order`` (a sort order), without building them."""
        if self.view is not None:
            ordered = self.view[order]
            starts = np.ones(len(ordered), bool)
            starts[1:] = ordered[1:] != ordered[:-1]
            return starts
        return Keys(self.array.take(pa.array(order)), None).group_starts()

    def unique_sorted(self) -> tuple[Keys, np.ndarray]:
        """The distinct keys in order, and for each the index of one row that holds it."""
        order = self.sort_order()
        ordered = self.take(order)
        starts = ordered.group_starts()
        return ordered.filter(starts), order[starts]


def _bisect(haystack: pa.Array, needles: pa.Array, side: str) -> np.ndarray:
    """Vectorized binary search over Arrow binary arrays: every needle bisects at once."""
    n, m = len(haystack), len(needles)
    low = np.zeros(m, np.int64)
    high = np.full(m, n, np.int64)
    compare = pc.less if side == "left" else pc.less_equal
    active = np.flatnonzero(low < high)
    while len(active):
        middle = (low[active] + high[active]) // 2
        below = compare(haystack.take(pa.array(middle)), needles.take(pa.array(active)))
        below_mask = np.asarray(below.to_numpy(zero_copy_only=False), bool)
        low[active[below_mask]] = middle[below_mask] + 1
        high[active[~below_mask]] = middle[~below_mask]
        active = active[low[active] < high[active]]
    return low


@dataclass
class Run:
    """Rows sorted by (key asc, epoch desc), with their keys, epochs and ops at hand as arrays."""

    table: pa.Table
    keys: Keys
    epochs: np.ndarray
    ops: np.ndarray
    min_epoch: int
    max_epoch: int
    _newer_counts: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, table: pa.Table) -> Run:
        if any(c.num_chunks != 1 for c in table.columns):
            table = table.combine_chunks()
        keys = Keys.of(table.column(KEY_COLUMN))
        epochs = np.asarray(_single(table.column(EPOCH_COLUMN)).to_numpy(zero_copy_only=False), np.uint64)
        ops = np.asarray(_single(table.column(OP_COLUMN)).to_numpy(zero_copy_only=False), np.int8)
        min_epoch = int(epochs.min()) if len(epochs) else 0
        max_epoch = int(epochs.max()) if len(epochs) else 0
        return cls(table, keys, epochs, ops, min_epoch, max_epoch)

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    @property
    def nbytes(self) -> int:
        padding = int(self.keys.view.nbytes) if self.keys.padded and self.keys.view is not None else 0
        return int(self.table.nbytes) + padding

    def in_ranges(self, low: Keys, high: Keys) -> Run:
        """The rows whose key lies in one of the sorted, disjoint ranges ``[low[i], high[i])``, in order."""
        starts = self.keys.search(low, "left")
        lengths = np.maximum(self.keys.search(high, "left") - starts, 0)
        total = int(lengths.sum())
        if total == self.num_rows:
            return self
        # Row r of range i is starts[i] + (r - rows before range i): one arange, shifted per range.
        rows = np.arange(total, dtype=np.int64) + np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        return Run.of(self.table.take(pa.array(rows)))  # one take; keys, epochs and ops are views of it

    def visible(self, epoch: int) -> Run:
        """The rows with epoch <= ``epoch`` (this run itself when all are)."""
        if self.max_epoch <= epoch:
            return self
        keep = self.epochs <= np.uint64(epoch)
        return Run(
            self.table.filter(pa.array(keep)),
            self.keys.filter(keep),
            self.epochs[keep],
            self.ops[keep],
            self.min_epoch,
            min(self.max_epoch, epoch),
        )

    def find(self, wanted: Keys, epoch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Binary-search sorted ``wanted`` keys: (row of the newest version <= ``epoch``, found, reaches end).

        ``reaches end`` marks keys present here without a version at or below
        ``epoch`` whose versions run up to the last row: older versions may
        continue in the next block of the same SST.
        """
        n = self.num_rows
        low = self.keys.search(wanted, "left")
        high = self.keys.search(wanted, "right")
        present = low < high
        if self.max_epoch <= epoch:
            position = low
        else:
            newer = self._newer_than(epoch)
            position = low + (newer[high] - newer[low])
        found = present & (position < high)
        reaches_end = present & ~found & (high == n)
        return position, found, reaches_end

    def _newer_than(self, epoch: int) -> np.ndarray:
        """Prefix counts of rows newer than ``epoch``: a key's versions are newest first, so those lead."""
        counts = self._newer_counts.get(epoch)
        if counts is None:
            counts = np.zeros(len(self.epochs) + 1, np.int64)
            np.cumsum(self.epochs > np.uint64(epoch), out=counts[1:])
            if len(self._newer_counts) >= 4:
                self._newer_counts.clear()
            self._newer_counts[epoch] = counts
        return counts


def prefix_ends(prefixes: Keys) -> Keys:
    """For each encoded key prefix, the smallest byte string above every key that starts with it.

    That is the prefix with its trailing 0xFF bytes dropped and its last byte then incremented, so
    ``[prefix, end)`` is exactly the keys starting with ``prefix``. The end never has trailing zero
    bytes, so padded numpy views compare it like ``memcmp`` does (see the module docstring).
    """
    array = prefixes.array
    n = len(array)
    if n == 0:
        return prefixes
    dtype = np.int64 if pa.types.is_large_binary(array.type) else np.int32
    offsets = np.frombuffer(array.buffers()[1], dtype, array.offset + n + 1)[array.offset :].astype(np.int64)
    data = np.frombuffer(array.buffers()[2], np.uint8, int(offsets[-1]))
    below = np.flatnonzero(data != 0xFF)
    # An ascending key starts with a 0x00 or 0x01 marker, so every prefix has a byte to increment:
    # the last byte below 0xFF before the prefix's end.
    assert len(below), "key prefixes made only of 0xFF bytes"
    last = below[np.maximum(np.searchsorted(below, offsets[1:], "left") - 1, 0)]
    assert bool(np.all(last >= offsets[:-1])), "a key prefix made only of 0xFF bytes"
    lengths = last + 1 - offsets[:-1]
    ends = np.zeros(n + 1, np.int64)
    np.cumsum(lengths, out=ends[1:])
    out = data[np.arange(int(ends[-1]), dtype=np.int64) + np.repeat(offsets[:-1] - ends[:-1], lengths)]
    out[ends[1:] - 1] += 1
    result = pa.Array.from_buffers(
        array.type, n, [None, pa.py_buffer(ends if dtype == np.int64 else ends.astype(np.int32)), pa.py_buffer(out)]
    )
    return Keys.of(result)


def newest_visible(runs: Sequence[Run], epoch: int, schema: pa.Schema, *, one_sorted_run: bool = False) -> pa.Table:
    """The live rows (block columns) at ``epoch`` of ``runs`` listed in priority order (newest first).

    Per key the first version at or below ``epoch`` wins, and a key whose winner
    is a tombstone is absent. ``one_sorted_run`` says the runs concatenated are
    already in key order (one SST, or the L1 run), so no sort is needed.
    Rows come out in the order of the runs, not sorted. ``schema``: the block columns.
    """
    visible = [v for v in (r.visible(epoch) for r in runs) if v.num_rows]
    if not visible:
        return schema.empty_table()
    keys = Keys.concat([r.keys for r in visible])
    ops = visible[0].ops if len(visible) == 1 else np.concatenate([r.ops for r in visible])
    if one_sorted_run or len(visible) == 1:
        first = keys.group_starts()
    else:
        order = keys.sort_order()
        first = np.zeros(len(keys), bool)
        first[order[keys.starts_in_order(order)]] = True
    live = first & ~np.isin(ops, _DELETING)
    table = visible[0].table if len(visible) == 1 else pa.concat_tables([r.table for r in visible])
    if live.all():
        return table
    return table.filter(pa.array(live))
