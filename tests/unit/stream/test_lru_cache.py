"""LruCache: byte-bounded, least recently used clean entries go first, dirty entries stay."""

from __future__ import annotations

import random

from tidegate.stream.lru_cache import LruCache


def filled(capacity_bytes: int, keys: range, size_bytes: int = 10) -> LruCache[int, str]:
    cache: LruCache[int, str] = LruCache(capacity_bytes)
    for key in keys:
        cache.put(key, f"v{key}", size_bytes)
    return cache


def cached(cache: LruCache[int, str], keys: range) -> list[int]:
    return [k for k in keys if k in cache]


def test_nothing_is_evicted_while_everything_fits() -> None:
    cache = filled(50, range(5))
    assert cache.used_bytes == 50 and cache.evictions == 0 and cache.evict() == 0
    assert cached(cache, range(5)) == [0, 1, 2, 3, 4]


def test_least_recently_used_goes_first() -> None:
    cache = filled(50, range(5))
    assert cache.get(0) == "v0"  # 0 becomes the most recently used
    assert cache.touch(1)
    cache.put(5, "v5", 20)  # needs 20 bytes: 2 and 3 go
    assert cached(cache, range(6)) == [0, 1, 4, 5]
    assert cache.used_bytes == 50 and cache.evictions == 2


def test_clean_entries_never_exceed_the_budget() -> None:
    rng = random.Random(7)
    cache: LruCache[int, int] = LruCache(1_000)
    for step in range(5_000):
        key = rng.randrange(300)
        if cache.get(key) is None:
            cache.put(key, step, rng.randrange(1, 120))
        elif rng.random() < 0.1:
            cache.resize(key, rng.randrange(1, 120))
        assert cache.used_bytes <= cache.capacity_bytes
        assert cache.used_bytes == sum(cache.size_of(k) for k in range(300) if k in cache)
    assert cache.peak_bytes <= cache.capacity_bytes
    assert cache.evictions > 0


def test_dirty_entries_are_never_evicted() -> None:
    cache = filled(25, range(2))
    assert cache.mark_dirty([0, 9]) == [9]  # 9 is not cached
    cache.put_many([(5, "v5", 10), (6, "v6", 10)], dirty=True)
    # Over budget: the clean entry went, the dirty ones stay even so.
    assert sorted(cache.dirty) == [0, 5, 6] and len(cache) == 3
    assert cache.used_bytes == 30 and cache.peak_bytes == 30
    cache.resize_many([(5, 1), (6, 1)])
    assert cache.used_bytes == 12
    cache.resize(0, 40)
    assert 0 in cache  # dirty: over budget, yet kept
    cache.mark_all_clean()  # now it may go: it is the least recently used
    assert cached(cache, range(7)) == [5, 6]


def test_mark_all_clean_makes_the_dirty_entries_the_most_recently_used() -> None:
    cache = filled(40, range(4))
    cache.mark_dirty([1])
    cache.mark_all_clean()
    cache.put(9, "v9", 30)
    assert cached(cache, range(10)) == [1, 9]


def test_counters() -> None:
    cache = filled(100, range(3))
    assert cache.get(1) == "v1"
    assert cache.get(7) is None
    assert cache.mark_dirty([0, 1, 8]) == [8]
    assert cache.get(0) == "v0"  # a dirty hit
    assert (cache.hits, cache.misses) == (4, 2)
    cache.resize(2, 50)
    assert (cache.used_bytes, cache.peak_bytes) == (70, 70)
    assert cache.pop(2) == "v2" and cache.pop(2) is None
    cache.put(0, "w0", 5)  # replaces a dirty entry by a clean one
    assert 0 not in cache.dirty and cache.get(0) == "w0"
    assert (cache.used_bytes, cache.peak_bytes, cache.evictions) == (15, 70, 0)
    cache.capacity_bytes = 0
    cache.mark_all_clean()
    assert cache.evictions == 2 and cache.used_bytes == 0 and not len(cache)
