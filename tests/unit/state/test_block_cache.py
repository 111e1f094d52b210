"""BlockCache: least-recently-used eviction within a byte budget, cold insertions, owners, counters, threads."""

from __future__ import annotations

import random
import threading

from tidegate.state.block_cache import BlockCache


def test_the_least_recently_used_entry_goes_first() -> None:
    cache = BlockCache(30)
    for part in range(3):
        assert cache.put("sst-a", part, f"block {part}", 10)
    assert cache.get("sst-a", 0) == "block 0"  # now the most recently used
    assert cache.put("sst-b", 0, "other", 10)
    assert cache.peek("sst-a", 1) is None  # evicted: least recently used
    assert cache.peek("sst-a", 0) == "block 0" and cache.peek("sst-a", 2) == "block 2"
    stats = cache.stats()
    assert (stats.used_bytes, stats.entries, stats.evictions, stats.hits) == (30, 3, 1, 1)


def test_accounted_bytes_never_exceed_the_budget_and_oversized_entries_are_not_cached() -> None:
    rng = random.Random(1)
    cache = BlockCache(1_000)
    for i in range(2_000):
        size = rng.choice([0, 1, 50, 300, 999, 1_000, 1_001, 5_000])
        cached = cache.put(rng.randrange(5), i % 37, i, size, cold=rng.random() < 0.3)
        assert cached == (size <= 1_000)
        assert cache.used_bytes <= 1_000
        if rng.random() < 0.2:
            cache.discard_owner(rng.randrange(5))
    stats = cache.stats()
    assert stats.uncacheable > 0 and stats.evictions > 0


def test_get_or_load_loads_once_and_returns_oversized_values_uncached() -> None:
    cache = BlockCache(100)
    loads: list[int] = []

    def load(size: int) -> tuple[str, int]:
        loads.append(size)
        return f"value of {size} bytes", size

    assert cache.get_or_load("o", 1, lambda: load(40)) == "value of 40 bytes"
    assert cache.get_or_load("o", 1, lambda: load(40)) == "value of 40 bytes"
    assert loads == [40]
    assert cache.get_or_load("o", 2, lambda: load(500)) == "value of 500 bytes"
    assert cache.get_or_load("o", 2, lambda: load(500)) == "value of 500 bytes"
    assert loads == [40, 500, 500]  # too big to keep: loaded every time, never cached
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.uncacheable, stats.used_bytes) == (1, 3, 2, 40)


def test_cold_entries_are_evicted_before_hot_ones() -> None:
    cache = BlockCache(40)
    cache.put("hot", 0, "h0", 10)
    cache.put("hot", 1, "h1", 10)
    # A scan bigger than the cache: its blocks push each other out, not the hot ones.
    for part in range(10):
        cache.put("scan", part, part, 10, cold=True)
    assert cache.peek("hot", 0) == "h0" and cache.peek("hot", 1) == "h1"
    assert cache.stats().used_bytes == 40
    # A cold entry that is read again becomes hot.
    assert cache.get("scan", 9) == 9
    cache.put("scan", 10, 10, 10, cold=True)
    cache.put("scan", 11, 11, 10, cold=True)
    assert cache.peek("scan", 9) == 9


def test_discard_owner_drops_every_block_of_an_sst() -> None:
    cache = BlockCache(100)
    for part in range(4):
        cache.put("gone", part, part, 5)
        cache.put("kept", part, part, 5)
    cache.discard_owner("gone")
    assert all(cache.peek("gone", p) is None for p in range(4))
    assert all(cache.peek("kept", p) == p for p in range(4))
    assert cache.stats().used_bytes == 20
    cache.discard("kept", 0)
    cache.put("kept", 1, "replaced", 7)  # replacing an entry re-accounts it
    assert cache.stats().used_bytes == 17


def test_concurrent_use_keeps_the_accounting_exact() -> None:
    cache = BlockCache(5_000)
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        try:
            for _ in range(3_000):
                owner, part = rng.randrange(8), rng.randrange(20)
                choice = rng.random()
                if choice < 0.5:
                    size = rng.randrange(1, 400)
                    cache.get_or_load(owner, part, lambda o=owner, p=part, s=size: ((o, p), s))
                elif choice < 0.9:
                    cache.put(owner, part, (owner, part), rng.randrange(1, 400), cold=rng.random() < 0.5)
                else:
                    cache.discard_owner(owner)
                value = cache.peek(owner, part)
                assert value is None or value == (owner, part)
                assert cache.used_bytes <= 5_000
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    with cache._lock:
        assert cache._used_bytes == sum(size for _, size in cache._entries.values())
        assert sum(len(p) for p in cache._by_owner.values()) == len(cache._entries)
