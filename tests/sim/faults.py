"""The fault points, and the bookkeeping of which are armed, which fired, and since when.

A crash point (``crash.*``) fires where the code it names calls ``reaches``: the
clock read that starts a barrier injection, an object-store call, the version
write, a commit hook, an operator's state write. Object-store errors are handed
to the incarnation's real ``FaultyObjectStore`` (``fail_next``) and counted as
fired once it has injected them all (its ``injected`` log).
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from tidegate.state.object_store import FaultyObjectStore
from tidegate.state.object_store_faults import DEFAULT_ATTEMPTS_MAX as RETRY_ATTEMPTS_MAX

# Every fault the schedule can arm, in protocol order. "crash.*" kill the process there;
# the others are errors the engine must absorb.
FAULT_POINTS = (
    "crash.now",  # between two steps: writes acknowledged, maybe not yet read by their sources
    "crash.before_inject",  # a barrier is about to be injected
    "crash.after_inject",  # a few loop callbacks after an injection, before or during collection
    "upload.retried",  # an SST put fails or half-fails a few times; the retry gets through
    "upload.fail",  # an SST put fails until the retries give up: that checkpoint commits nothing
    "crash.mid_upload",  # right after an SST landed; no version lists it yet
    "crash.before_version_commit",  # SSTs uploaded, the version not written
    "version_commit.error",  # the version write fails (before or after it reached the meta store)
    "crash.after_version_commit",  # committed; the commit hooks (log truncation) have not run
    "crash.after_commit_hooks",  # logs truncated; compaction (maintain) not run
    "crash.mid_delete",  # compaction or garbage collection deleted some SSTs, not all
    "actor.error",  # an operator raises inside an actor: run-time recovery
    "crash.recovery_read",  # while restoring state from SSTs at start-up
    "read.retried",  # an SST read fails a few times; the retry gets through
    "read.corrupt",  # an SST read returns a flipped byte: an error naming the SST, never wrong data
    "log.torn_tail",  # the crash tore a write in flight: a partial record ends a table log
)
# Faults armed during normal running, with their weights.
RUNNING_FAULTS = {
    "crash.before_inject": 3,
    "crash.after_inject": 4,
    "upload.retried": 3,
    "upload.fail": 3,
    "crash.mid_upload": 3,
    "crash.before_version_commit": 3,
    "version_commit.error": 2,
    "crash.after_version_commit": 3,
    "crash.after_commit_hooks": 2,
    "crash.mid_delete": 2,
    "actor.error": 4,
    "read.retried": 1,
    "read.corrupt": 1,
}
# Faults armed to hit the start-up after a crash (the recovery itself).
RECOVERY_FAULTS = {
    "crash.recovery_read": 3,
    "crash.mid_delete": 3,
    "read.retried": 2,
    "read.corrupt": 2,
    "crash.before_inject": 2,
    "crash.after_inject": 2,
    "crash.mid_upload": 1,
    "crash.before_version_commit": 1,
    "crash.after_version_commit": 1,
    "actor.error": 2,
    "upload.fail": 1,
}


@dataclass
class _Handed:
    """A fault handed to the FaultyObjectStore: fired once it has injected ``remaining`` more times."""

    point: str
    failpoint: str
    remaining: int


class Faults:
    def __init__(self, rng: random.Random, trace: list[str]) -> None:
        self.rng = rng
        self.trace = trace
        self.armed: dict[str, int] = {}  # crash point -> occurrences to let pass first
        self.fired: Counter[str] = Counter()
        self.fired_in_recovery: Counter[str] = Counter()
        self.recovering = False
        self.since_clean = 0  # faults fired since the last successful FLUSH or start-up
        self.corrupt_read_since_clean = False
        self.actor_errors_since_commit = 0
        self._faulty: FaultyObjectStore | None = None
        self._handed: list[_Handed] = []
        self._injected_seen = 0

    def attach(self, faulty: FaultyObjectStore) -> None:
        """The object store of a new incarnation (what was handed to the previous one died with it)."""
        self._faulty = faulty
        self._handed = []
        self._injected_seen = 0

    def arm(self, point: str) -> None:
        failpoint, count = self._object_store_fault(point)
        if failpoint:
            assert self._faulty is not None
            self._faulty.fail_next(failpoint, count)
            self._handed.append(_Handed(point, failpoint, count))
            self.trace.append(f"arm {point} ({failpoint} x{count})")
            return
        skip = self.rng.choice([0, 0, 1, 2])
        self.armed[point] = skip
        self.trace.append(f"arm {point} (skip {skip})")

    def _object_store_fault(self, point: str) -> tuple[str, int]:
        r = self.rng
        if point == "upload.retried":
            return r.choice(["put.before", "put.after"]), r.randint(1, RETRY_ATTEMPTS_MAX - 1)
        if point == "upload.fail":
            return r.choice(["put.before", "put.after"]), RETRY_ATTEMPTS_MAX
        if point == "read.retried":
            return "get.fail", r.randint(1, RETRY_ATTEMPTS_MAX - 1)
        if point == "read.corrupt":
            return "get.corrupt", 1
        return "", 0

    def reaches(self, point: str, *, count: bool = True) -> bool:
        """At a crash point: whether its armed fault fires now (once). ``count=False``: it counts later."""
        if point not in self.armed:
            return False
        if self.armed[point] > 0:
            self.armed[point] -= 1
            return False
        del self.armed[point]
        if count:
            self.record(point)
        return True

    def record(self, point: str) -> None:
        self.fired[point] += 1
        self.since_clean += 1
        if self.recovering:
            self.fired_in_recovery[point] += 1
        if point == "actor.error":
            self.actor_errors_since_commit += 1
        if point == "read.corrupt":
            self.corrupt_read_since_clean = True
        self.trace.append(f"fired {point}{' during recovery' if self.recovering else ''}")

    def reconcile(self) -> None:
        """Count the object-store faults that completed (the FaultyObjectStore's log, oldest first)."""
        if self._faulty is None:
            return
        for failpoint, _path in self._faulty.injected[self._injected_seen :]:
            handed = next((h for h in self._handed if h.failpoint == failpoint), None)
            if handed is None:
                continue
            handed.remaining -= 1
            if handed.remaining == 0:
                self._handed.remove(handed)
                self.record(handed.point)
        self._injected_seen = len(self._faulty.injected)

    def disarm(self) -> None:
        self.reconcile()
        self.armed.clear()
        self._handed.clear()
        if self._faulty is not None:
            self._faulty.clear()

    def drop(self, points: set[str]) -> None:
        """Disarm these points (with any other handed to the same object-store failpoint)."""
        self.reconcile()
        failpoints = {h.failpoint for h in self._handed if h.point in points}
        self._handed = [h for h in self._handed if h.failpoint not in failpoints]
        for failpoint in failpoints:
            if self._faulty is not None:
                self._faulty.disable(failpoint)
        for point in points:
            self.armed.pop(point, None)

    def clean_point(self) -> None:
        self.since_clean = 0
        self.corrupt_read_since_clean = False
