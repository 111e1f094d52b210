"""A byte-bounded LRU cache for operator state (DESIGN §6: operator caches bounded by memory).

A stateful operator (aggregation groups, join keys) keeps its hot state here and
its whole state in a state table; what the cache evicts is read back from the
table on demand. Caches are only caches (DESIGN §11): dropping a clean entry
changes nothing but speed.

Sizes are *accounted* bytes: the owner gives each entry an estimate of what it
holds in memory, and the cache sums them. Entries are clean or dirty:

- **dirty** entries changed since the owner last wrote them to its state table.
  Evicting one would lose the change, so they are pinned until the owner calls
  ``mark_all_clean`` (on a barrier, after writing them). An epoch that changes
  more than the budget holds therefore goes over it until its barrier.
- **clean** entries are kept in least-recently-used order, and the oldest are
  evicted whenever the accounted bytes exceed ``capacity_bytes``. Every change
  that adds bytes evicts first, so nothing is evicted while everything fits.

Invariants: a key is in at most one of the two maps; ``used_bytes`` is the sum of
the sizes of all entries; after every call, ``used_bytes <= capacity_bytes`` or
no clean entry is left; ``peak_bytes`` is the largest ``used_bytes`` seen after
a call. Values are never ``None`` (``get`` uses it for a miss).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LruCache(Generic[K, V]):
    def __init__(self, capacity_bytes: int) -> None:
        assert capacity_bytes >= 0, capacity_bytes
        self.capacity_bytes = capacity_bytes
        # Oldest first: a dict keeps insertion order, and moving a key to the young end is pop + insert.
        self._clean: dict[K, V] = {}
        # The pinned entries. Owners may read this map directly in hot loops; it is never replaced.
        self.dirty: dict[K, V] = {}
        self._sizes: dict[K, int] = {}
        self.used_bytes = 0
        self.peak_bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._sizes)

    def __contains__(self, key: K) -> bool:
        return key in self._sizes

    def get(self, key: K) -> V | None:
        """The value (now the most recently used), or ``None`` on a miss; counts a hit or a miss."""
        value = self.dirty.get(key)
        if value is None:
            value = self._clean.pop(key, None)
            if value is None:
                self.misses += 1
                return None
            self._clean[key] = value
        self.hits += 1
        return value

    def touch(self, key: K) -> bool:
        """Make ``key`` the most recently used without counting a hit; False if it is not cached."""
        value = self._clean.pop(key, None)
        if value is not None:
            self._clean[key] = value
            return True
        return key in self.dirty

    def put(self, key: K, value: V, size_bytes: int, *, dirty: bool = False) -> None:
        """Insert or replace ``key`` as the most recently used entry."""
        self.put_many([(key, value, size_bytes)], dirty=dirty)

    def put_many(self, entries: Sequence[tuple[K, V, int]], *, dirty: bool = False) -> None:
        """Insert or replace each ``(key, value, size_bytes)``, in order, as the most recently used."""
        target = self.dirty if dirty else self._clean
        sizes = self._sizes
        added = 0
        for key, value, size_bytes in entries:
            assert value is not None and size_bytes >= 0, (key, size_bytes)
            old = sizes.get(key)
            if old is not None:
                added -= old
                if self.dirty.pop(key, None) is None:
                    del self._clean[key]
            target[key] = value
            sizes[key] = size_bytes
            added += size_bytes
        self.used_bytes += added
        self.evict()

    def mark_dirty(self, keys: Sequence[K]) -> list[K]:
        """Pin every cached key of ``keys``; returns the keys that are not cached, in order.

        The batch form, so an operator pays one call per chunk; counts hits and misses.
        """
        dirty, clean = self.dirty, self._clean
        missing: list[K] = []
        for key in keys:
            if key in dirty:
                continue
            value = clean.pop(key, None)
            if value is None:
                missing.append(key)
            else:
                dirty[key] = value
        self.misses += len(missing)
        self.hits += len(keys) - len(missing)
        return missing

    def mark_all_clean(self) -> None:
        """Unpin every dirty entry (its owner has written them all); they become the most recently used."""
        self._clean.update(self.dirty)
        self.dirty.clear()
        self.evict()

    def size_of(self, key: K) -> int:
        return self._sizes[key]

    def resize(self, key: K, size_bytes: int) -> None:
        self.resize_many([(key, size_bytes)])

    def resize_many(self, entries: Sequence[tuple[K, int]]) -> None:
        """Set the size of each cached ``(key, size_bytes)`` (a clean one may then be evicted)."""
        sizes = self._sizes
        delta = 0
        for key, size_bytes in entries:
            assert size_bytes >= 0, (key, size_bytes)
            delta += size_bytes - sizes[key]
            sizes[key] = size_bytes
        self.used_bytes += delta
        self.evict()

    def pop(self, key: K) -> V | None:
        """Remove ``key`` (dirty or not); its value, or ``None`` if it was not cached."""
        size = self._sizes.pop(key, None)
        if size is None:
            return None
        self.used_bytes -= size
        value = self.dirty.pop(key, None)
        return value if value is not None else self._clean.pop(key)

    def evict(self) -> int:
        """Drop least recently used clean entries until the accounted bytes fit; returns how many."""
        excess = self.used_bytes - self.capacity_bytes
        victims: list[K] = []
        if excess > 0 and self._clean:
            clean, sizes = self._clean, self._sizes
            freed = 0
            for key in clean:  # oldest first
                victims.append(key)
                freed += sizes[key]
                if freed >= excess:
                    break
            for key in victims:
                del clean[key]
                del sizes[key]
            self.used_bytes -= freed
            self.evictions += len(victims)
        if self.used_bytes > self.peak_bytes:
            self.peak_bytes = self.used_bytes
        return len(victims)
