"""Wrappers around any ObjectStore: retries for transient failures, and named failpoints for tests.

Place in the data flow: the state store talks to ``RetryingObjectStore(real)``
so that a dropped connection or a throttled PUT costs a short delay instead of
a failed checkpoint; the simulation and the unit tests put a
``FaultyObjectStore`` underneath to make uploads and reads fail on purpose.

``RetryingObjectStore`` retries only errors marked transient (never
``ObjectNotFound``, a bad path or a range past the end), with exponential
backoff and jitter, a bounded number of attempts and a bounded total time. Its
clock, sleep and randomness are constructor arguments, so the simulation runs it
deterministically and without waiting.

``FaultyObjectStore`` failpoints, switched on by name (``enable``), for the
next N calls (``fail_next``), or at random with a seeded probability:

- ``put.before``: raise without writing.
- ``put.after``: write, then raise: the caller thinks the put failed, yet it happened.
- ``get.fail``: ``get``/``get_range`` raise a transient error.
- ``get.corrupt``: ``get``/``get_range`` return the data with one byte flipped.
- ``get.missing``: ``get``/``get_range`` raise ``ObjectNotFound``.
- ``size.fail``, ``list.fail``: raise a transient error.
- ``delete.fail``: raise without deleting.

Every injected fault is appended to ``.injected`` as ``(point, path)``, so a
failing simulation can print what it did.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import TypeVar

from tidegate.common.epoch import Clock
from tidegate.state.object_store_base import ObjectNotFound, ObjectStore, ObjectStoreError

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_ATTEMPTS_MAX = 5
DEFAULT_BACKOFF_INITIAL_MS = 50.0
DEFAULT_BACKOFF_MAX_MS = 2_000.0
DEFAULT_TOTAL_TIME_MAX_MS = 30_000.0


class _MonotonicClock:
    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000


def _sleep_ms(duration_ms: float) -> None:
    time.sleep(duration_ms / 1000.0)


class RetryingObjectStore(ObjectStore):
    """Retries ``inner``'s transient failures; see the module docstring.

    Attempt ``n`` (from 1) that fails waits ``min(backoff_max_ms,
    backoff_initial_ms * 2**(n-1))``, half of it fixed and half random, unless
    that wait would pass ``total_time_max_ms`` since the first attempt: then, or
    after ``attempts_max`` attempts, it raises an ``ObjectStoreError`` naming
    the operation, the path, the attempts and the last error.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        attempts_max: int = DEFAULT_ATTEMPTS_MAX,
        backoff_initial_ms: float = DEFAULT_BACKOFF_INITIAL_MS,
        backoff_max_ms: float = DEFAULT_BACKOFF_MAX_MS,
        total_time_max_ms: float = DEFAULT_TOTAL_TIME_MAX_MS,
        clock: Clock | None = None,
        sleep_ms: Callable[[float], None] = _sleep_ms,
        rng: random.Random | None = None,
    ) -> None:
        assert attempts_max >= 1, "attempts_max counts the first attempt"
        self.inner = inner
        self.attempts_max = attempts_max
        self.backoff_initial_ms = backoff_initial_ms
        self.backoff_max_ms = backoff_max_ms
        self.total_time_max_ms = total_time_max_ms
        self._clock: Clock = clock if clock is not None else _MonotonicClock()
        self._sleep_ms = sleep_ms
        self._rng = rng if rng is not None else random.Random()
        self._rng_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RetryingObjectStore({self.inner!r})"

    def put(self, path: str, data: bytes) -> None:
        self._retry("put", path, lambda: self.inner.put(path, data))

    def get(self, path: str) -> bytes:
        return self._retry("get", path, lambda: self.inner.get(path))

    def get_range(self, path: str, start: int, length: int) -> bytes:
        return self._retry("get_range", path, lambda: self.inner.get_range(path, start, length))

    def size(self, path: str) -> int:
        return self._retry("size", path, lambda: self.inner.size(path))

    def delete(self, path: str) -> None:
        self._retry("delete", path, lambda: self.inner.delete(path))

    def list(self, prefix: str) -> list[str]:
        return self._retry("list", prefix, lambda: self.inner.list(prefix))

    def backoff_ms(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (from 1): capped exponential, half of it jitter."""
        capped = min(self.backoff_max_ms, self.backoff_initial_ms * (2.0 ** (attempt - 1)))
        with self._rng_lock:
            jitter = self._rng.random()
        return capped / 2.0 + jitter * capped / 2.0

    def _retry(self, operation: str, path: str, call: Callable[[], T]) -> T:
        started_ms = self._clock.now_ms()
        attempt = 0
        while True:
            attempt += 1
            try:
                return call()
            except ObjectStoreError as e:
                if isinstance(e, ObjectNotFound) or not e.transient:
                    raise
                elapsed_ms = self._clock.now_ms() - started_ms
                wait_ms = self.backoff_ms(attempt)
                if attempt >= self.attempts_max or elapsed_ms + wait_ms > self.total_time_max_ms:
                    raise ObjectStoreError(
                        operation,
                        path,
                        f"gave up after {attempt} attempt(s) over {elapsed_ms} ms; last error: {e}",
                        transient=False,
                    ) from e
                log.warning(
                    "object store %s of %r failed (attempt %d of %d), retrying in %.0f ms: %s",
                    operation,
                    path,
                    attempt,
                    self.attempts_max,
                    wait_ms,
                    e,
                )
                self._sleep_ms(wait_ms)


class InjectedFault(ObjectStoreError):
    """A failure that a ``FaultyObjectStore`` failpoint made up; transient, like a dropped connection."""


FAILPOINTS = frozenset(
    {"put.before", "put.after", "get.fail", "get.corrupt", "get.missing", "size.fail", "list.fail", "delete.fail"}
)
# The failpoints that a retry can get past: the default set for the probability mode.
TRANSIENT_FAILPOINTS = frozenset({"put.before", "put.after", "get.fail", "size.fail", "list.fail", "delete.fail"})


class FaultyObjectStore(ObjectStore):
    """``inner`` with named failpoints; see the module docstring for what each one does.

    With ``probability > 0`` each call reaching a point in ``points`` (default:
    the transient ones) fails with that probability, drawn from
    ``random.Random(seed)``: the same seed and the same calls inject the same
    faults. ``enable``/``fail_next`` work in either mode.
    """

    def __init__(
        self,
        inner: ObjectStore,
        *,
        seed: int | None = None,
        probability: float = 0.0,
        points: Iterable[str] | None = None,
    ) -> None:
        assert 0.0 <= probability <= 1.0, f"probability {probability} is not in [0, 1]"
        self.inner = inner
        self.probability = probability
        self.random_points = frozenset(points) if points is not None else TRANSIENT_FAILPOINTS
        _check_points(self.random_points)
        self.injected: list[tuple[str, str]] = []
        self._rng = random.Random(seed if seed is not None else 0)
        self._enabled: set[str] = set()
        self._next_counts: dict[str, int] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"FaultyObjectStore({self.inner!r})"

    # ---- switching failpoints -----------------------------------------------------------------------------------
    def enable(self, point: str) -> None:
        """Fire ``point`` on every call until ``disable``."""
        _check_points([point])
        with self._lock:
            self._enabled.add(point)

    def disable(self, point: str) -> None:
        _check_points([point])
        with self._lock:
            self._enabled.discard(point)
            self._next_counts.pop(point, None)

    def fail_next(self, point: str, count: int = 1) -> None:
        """Fire ``point`` on the next ``count`` calls that reach it (adding to any count still pending)."""
        _check_points([point])
        with self._lock:
            self._next_counts[point] = self._next_counts.get(point, 0) + count

    def clear(self) -> None:
        """Switch every failpoint off (the probability mode too); ``.injected`` is kept."""
        with self._lock:
            self._enabled.clear()
            self._next_counts.clear()
            self.probability = 0.0

    # ---- the ObjectStore protocol -------------------------------------------------------------------------------
    def put(self, path: str, data: bytes) -> None:
        if self._fires("put.before", path):
            raise InjectedFault("put", path, "injected fault put.before (nothing written)")
        self.inner.put(path, data)
        if self._fires("put.after", path):
            raise InjectedFault("put", path, "injected fault put.after (the object was written)")

    def get(self, path: str) -> bytes:
        self._before_read("get", path)
        return self._maybe_corrupt(path, self.inner.get(path))

    def get_range(self, path: str, start: int, length: int) -> bytes:
        self._before_read("get_range", path)
        return self._maybe_corrupt(path, self.inner.get_range(path, start, length))

    def size(self, path: str) -> int:
        if self._fires("size.fail", path):
            raise InjectedFault("size", path, "injected fault size.fail")
        return self.inner.size(path)

    def delete(self, path: str) -> None:
        if self._fires("delete.fail", path):
            raise InjectedFault("delete", path, "injected fault delete.fail (nothing deleted)")
        self.inner.delete(path)

    def list(self, prefix: str) -> list[str]:
        if self._fires("list.fail", prefix):
            raise InjectedFault("list", prefix, "injected fault list.fail")
        return self.inner.list(prefix)

    # ---- internals ----------------------------------------------------------------------------------------------
    def _before_read(self, operation: str, path: str) -> None:
        if self._fires("get.missing", path):
            raise ObjectNotFound(operation, path, "injected fault get.missing")
        if self._fires("get.fail", path):
            raise InjectedFault(operation, path, "injected fault get.fail")

    def _maybe_corrupt(self, path: str, data: bytes) -> bytes:
        # An empty object has no byte to flip; the point does not fire (and is not recorded).
        if not data or not self._fires("get.corrupt", path):
            return data
        with self._lock:
            position = self._rng.randrange(len(data))
        corrupted = bytearray(data)
        corrupted[position] ^= 0xFF
        return bytes(corrupted)

    def _fires(self, point: str, path: str) -> bool:
        with self._lock:
            pending = self._next_counts.get(point, 0)
            if pending > 0:
                self._next_counts[point] = pending - 1
                fires = True
            elif point in self._enabled:
                fires = True
            else:
                # Draw only for points in the random set, so that switching others does not shift the sequence.
                fires = self.probability > 0.0 and point in self.random_points and self._rng.random() < self.probability
            if fires:
                self.injected.append((point, path))
            return fires


def _check_points(points: Iterable[str]) -> None:
    unknown = sorted(set(points) - FAILPOINTS)
    assert not unknown, f"unknown failpoint(s) {unknown}; known: {sorted(FAILPOINTS)}"
