"""The block cache: decoded SST blocks (and merged snapshots) kept in memory, bounded in bytes.

Place in the data flow (DESIGN §6): every read of the durable state store that
needs rows of an SST goes through this cache — point lookups, snapshot scans
and compaction — so a block is fetched from object storage and decoded once
while it stays hot. A checkpoint also puts the blocks it just uploaded here
(write-through), because the rows an operator wrote last are the ones it reads
next. When the whole state fits in the budget, every block stays cached and
reads touch object storage no more.

Invariants:

* The accounted bytes never exceed ``capacity_bytes``: room is made (least
  recently used first) before an entry goes in, and an entry larger than the
  whole budget is handed back to the caller without being cached.
* Entries are grouped by an *owner* (an SST's object id): when compaction
  deletes an SST, ``discard_owner`` drops all of its blocks at once.
* ``cold`` insertions (large scans) go in at the least-recently-used end, so a
  scan bigger than the cache evicts its own blocks first, not the hot ones a
  stream of point lookups keeps using.
* Thread-safe: one lock guards the map and the counters; loading a missing
  entry happens outside it (two threads may load the same block at once; the
  second insertion simply replaces the first).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

__all__ = ["BlockCache", "BlockCacheStats"]

T = TypeVar("T")


@dataclass(frozen=True)
class BlockCacheStats:
    capacity_bytes: int
    used_bytes: int
    entries: int
    hits: int
    misses: int
    evictions: int
    uncacheable: int  # entries larger than the whole budget, returned without caching


class BlockCache:
    """A bytes-bounded LRU map from ``(owner, part)`` keys to decoded values."""

    def __init__(self, capacity_bytes: int) -> None:
        assert capacity_bytes >= 0, capacity_bytes
        self.capacity_bytes = capacity_bytes
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[Hashable, Hashable], tuple[Any, int]] = OrderedDict()
        self._by_owner: dict[Hashable, set[Hashable]] = {}
        self._used_bytes = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._uncacheable = 0

    def get(self, owner: Hashable, part: Hashable) -> Any | None:
        """The cached value (now most recently used), or None; counts a hit or a miss."""
        key = (owner, part)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                self._misses += 1
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry[0]

    def peek(self, owner: Hashable, part: Hashable) -> Any | None:
        """The cached value without touching its recency or the counters."""
        with self._lock:
            entry = self._entries.get((owner, part))
            return None if entry is None else entry[0]

    def get_or_load(
        self, owner: Hashable, part: Hashable, load: Callable[[], tuple[T, int]], *, cold: bool = False
    ) -> T:
        """The cached value, or ``load()``'s ``(value, size_bytes)`` — cached if it fits — on a miss."""
        cached = self.get(owner, part)
        if cached is not None:
            return cached
        value, size_bytes = load()
        self.put(owner, part, value, size_bytes, cold=cold)
        return value

    def put(self, owner: Hashable, part: Hashable, value: Any, size_bytes: int, *, cold: bool = False) -> bool:
        """Cache ``value``, evicting least recently used entries first; False if it exceeds the budget."""
        assert size_bytes >= 0, size_bytes
        key = (owner, part)
        with self._lock:
            self._remove(key)
            if size_bytes > self.capacity_bytes:
                self._uncacheable += 1
                return False
            while self._used_bytes + size_bytes > self.capacity_bytes:
                victim, _ = next(iter(self._entries.items()))
                self._remove(victim)
                self._evictions += 1
            self._entries[key] = (value, size_bytes)
            if cold:
                self._entries.move_to_end(key, last=False)
            self._by_owner.setdefault(owner, set()).add(part)
            self._used_bytes += size_bytes
            return True

    def discard(self, owner: Hashable, part: Hashable) -> None:
        with self._lock:
            self._remove((owner, part))

    def discard_owner(self, owner: Hashable) -> None:
        """Drop every entry of ``owner`` (an SST that was deleted)."""
        with self._lock:
            for part in list(self._by_owner.get(owner, ())):
                self._remove((owner, part))

    def stats(self) -> BlockCacheStats:
        with self._lock:
            return BlockCacheStats(
                capacity_bytes=self.capacity_bytes,
                used_bytes=self._used_bytes,
                entries=len(self._entries),
                hits=self._hits,
                misses=self._misses,
                evictions=self._evictions,
                uncacheable=self._uncacheable,
            )

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return self._used_bytes

    def _remove(self, key: tuple[Hashable, Hashable]) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._used_bytes -= entry[1]
        owner, part = key
        parts = self._by_owner.get(owner)
        if parts is not None:
            parts.discard(part)
            if not parts:
                del self._by_owner[owner]
