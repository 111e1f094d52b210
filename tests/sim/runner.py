"""Running many seeds: in this process or spread over worker processes, and what they add up to.

Each seed runs in a temporary directory of its own and comes back as an ``Outcome``
(picklable, so a worker process can return it). ``FaultSummary`` adds up which
fault points fired across a run; ``tests/sim/conftest.py`` prints it at the end of
the pytest session.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import multiprocessing
import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sim.faults import FAULT_POINTS
from sim.harness import REPLAY_COMMAND, Simulation, SimulationFailure

SEED_ENV = "TIDEGATE_SIM_SEED"  # one seed, replayed in this process
SEEDS_ENV = "TIDEGATE_SIM_SEEDS"  # how many seeds (default DEFAULT_SEEDS)
SEED_BASE_ENV = "TIDEGATE_SIM_SEED_BASE"  # the first seed (default 0)
WORKERS_ENV = "TIDEGATE_SIM_WORKERS"  # worker processes (default: one per CPU, at most 2)
DEFAULT_SEEDS = 500
DURING_RECOVERY = "(any crash during recovery)"


@dataclass(frozen=True)
class Outcome:
    seed: int
    failure: str | None  # the failure message (it names the seed and the replay command)
    fired: Counter[str]
    fired_in_recovery: Counter[str]
    incarnations: int  # 2 when nothing crashed before the final restart
    cpu_s: float
    trace_digest: str  # equal digests, equal runs


def run_one(seed: int) -> Outcome:
    started = time.process_time()
    with tempfile.TemporaryDirectory(prefix=f"tidegate-sim-{seed}-") as directory:
        # Replaying one seed shows its whole trace on failure; a run of many, the last steps.
        simulation = Simulation(seed, Path(directory), trace_tail=None if os.environ.get(SEED_ENV) else 25)
        failure = None
        try:
            simulation.run()
        except SimulationFailure as error:
            failure = str(error)
        except BaseException as error:  # a harness bug must still name its seed
            failure = f"simulation seed {seed}: {error!r}\nreplay: {REPLAY_COMMAND.format(seed=seed)}"
    return Outcome(
        seed,
        failure,
        simulation.fired,
        simulation.fired_in_recovery,
        simulation.incarnations,
        time.process_time() - started,
        hashlib.sha256("\n".join(simulation.trace).encode()).hexdigest(),
    )


def run_block(seeds: Sequence[int]) -> list[Outcome]:
    return [run_one(seed) for seed in seeds]


def selected_seeds() -> list[int]:
    if os.environ.get(SEED_ENV):
        return [int(os.environ[SEED_ENV])]
    base = int(os.environ.get(SEED_BASE_ENV, "0"))
    return list(range(base, base + int(os.environ.get(SEEDS_ENV, str(DEFAULT_SEEDS)))))


def worker_count() -> int:
    if os.environ.get(WORKERS_ENV):
        return max(1, int(os.environ[WORKERS_ENV]))
    return max(1, min(2, os.cpu_count() or 1))


class SeedPool:
    """Worker processes (spawned: the parent holds DuckDB databases and must not be forked) for blocks of seeds."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            self._pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)

    def run(self, seeds: Sequence[int]) -> list[Outcome]:
        if self._pool is None or len(seeds) == 1:
            return run_block(seeds)
        # Interleaved slices: neighbouring seeds cost about the same, so the workers finish together.
        slices = [seeds[i :: self.workers] for i in range(self.workers)]
        outcomes = [o for future in [self._pool.submit(run_block, s) for s in slices] for o in future.result()]
        return sorted(outcomes, key=lambda o: o.seed)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


@dataclass
class FaultSummary:
    seeds: int = 0
    failures: int = 0
    incarnations: int = 0
    cpu_s: float = 0.0
    fired: Counter[str] = field(default_factory=Counter)
    fired_in_recovery: Counter[str] = field(default_factory=Counter)

    def add(self, outcomes: Iterable[Outcome]) -> None:
        for outcome in outcomes:
            self.seeds += 1
            self.failures += outcome.failure is not None
            self.incarnations += outcome.incarnations
            self.cpu_s += outcome.cpu_s
            self.fired.update(outcome.fired)
            self.fired_in_recovery.update(outcome.fired_in_recovery)

    @property
    def crashes_during_recovery(self) -> int:
        return sum(n for point, n in self.fired_in_recovery.items() if point.startswith("crash."))

    def lines(self) -> list[str]:
        per_seed = self.cpu_s / self.seeds if self.seeds else 0.0
        lines = [
            f"{self.seeds} seeds, {self.failures} failed, {self.incarnations} incarnations, "
            f"{per_seed:.2f} s of CPU per seed",
            f"{'fault point':<30} {'fired':>7} {'in recovery':>12}",
        ]
        for point in FAULT_POINTS:
            lines.append(f"{point:<30} {self.fired[point]:>7} {self.fired_in_recovery[point]:>12}")
        lines.append(f"{DURING_RECOVERY:<30} {self.crashes_during_recovery:>7}")
        return lines


SUMMARY = FaultSummary()
