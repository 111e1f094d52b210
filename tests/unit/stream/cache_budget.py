"""Helpers for tests of operators with a bounded cache (DESIGN §6): a state store that counts
what is read back from it, and a measure of what the cache accounts against what it allocates."""

from __future__ import annotations

import gc
import tracemalloc
from typing import Any

import pyarrow as pa
from scripted import run

from tidegate.state.store import MemoryStateStore


class SpyStore(MemoryStateStore):
    """Counts the reads of state: point lookups (and keys asked for), prefix reads (and prefixes
    asked for) and whole-table snapshots."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0
        self.keys_looked_up = 0
        self.prefix_reads = 0
        self.prefixes_read = 0
        self.snapshots = 0

    def reset(self) -> None:
        self.lookups = self.keys_looked_up = self.prefix_reads = self.prefixes_read = self.snapshots = 0

    def get_rows(self, table_id: int, keys: pa.Table, epoch: int) -> pa.Table:
        self.lookups += 1
        self.keys_looked_up += keys.num_rows
        return super().get_rows(table_id, keys, epoch)

    def get_prefix_rows(self, table_id: int, prefixes: pa.Table, epoch: int) -> pa.Table:
        self.prefix_reads += 1
        self.prefixes_read += prefixes.num_rows
        return super().get_prefix_rows(table_id, prefixes, epoch)

    def snapshot(self, table_id: int, epoch: int) -> pa.Table:
        self.snapshots += 1
        return super().snapshot(table_id, epoch)


def accounted_and_allocated_bytes(operator: Any) -> tuple[int, int]:
    """Runs ``operator`` (its cache budget large enough to hold every group) and returns the bytes its
    cache accounts and the bytes freed by dropping its groups (as tracemalloc sees them: Python
    objects, not Arrow's buffers)."""
    tracemalloc.start()  # it sees only what is allocated after it starts
    try:
        run(operator)
        assert operator.cache is not None
        accounted = operator.cache.used_bytes
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        operator.cache = None
        operator._groups = {}
        gc.collect()
        allocated = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return accounted, allocated
