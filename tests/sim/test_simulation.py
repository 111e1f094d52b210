"""Deterministic simulation: seeds 0..N-1 (N = 500, ``TIDEGATE_SIM_SEEDS`` overrides), each a run of the
whole engine on one event loop with seeded faults at every step of the checkpoint protocol.

A failure names its seed and the command that replays it (``TIDEGATE_SIM_SEED=N``,
see ``tests/sim/README.md``). Besides the seeds: a seed replays exactly; every fault
point fired across the run; a bug planted in the engine is caught within a few seeds;
each known, unfixed engine bug still shows when its seed does not avoid it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sim.faults import FAULT_POINTS
from sim.harness import Simulation, SimulationFailure
from sim.known_bugs import ALL_AVOIDED, KNOWN_BUGS, KnownBug
from sim.runner import SEED_ENV, SUMMARY, SeedPool, run_one, selected_seeds, worker_count
from tidegate.meta.barrier import BarrierCoordinator
from tidegate.state.durable_store import DurableStateStore
from tidegate.stream.messages import Barrier
from tidegate.stream.operators.table_source import TableSource

SEEDS = selected_seeds()
BLOCK_SEEDS = 25
# Below this many seeds the fault summary proves nothing; its test is skipped.
SUMMARY_SEEDS_MIN = 200
FIRED_MIN = 3


@pytest.fixture(scope="module")
def pool() -> Iterator[SeedPool]:
    seed_pool = SeedPool(1 if os.environ.get(SEED_ENV) else worker_count())
    try:
        yield seed_pool
    finally:
        seed_pool.close()


def _blocks() -> list[Any]:
    blocks = [SEEDS[i : i + BLOCK_SEEDS] for i in range(0, len(SEEDS), BLOCK_SEEDS)]
    return [pytest.param(block, id=f"seeds{block[0]}-{block[-1]}") for block in blocks]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("seeds", _blocks())
def test_seeds(seeds: list[int], pool: SeedPool) -> None:
    outcomes = pool.run(seeds)
    SUMMARY.add(outcomes)
    failures = [o.failure for o in outcomes if o.failure is not None]
    if failures:
        pytest.fail("\n\n".join(failures), pytrace=False)


def test_every_fault_point_fired() -> None:
    """The suite cannot silently stop injecting: across the run, every fault point fired a few times."""
    if SUMMARY.seeds < SUMMARY_SEEDS_MIN:
        pytest.skip(f"{SUMMARY.seeds} seeds ran; the fault summary needs {SUMMARY_SEEDS_MIN}")
    rare = {point: SUMMARY.fired[point] for point in FAULT_POINTS if SUMMARY.fired[point] < FIRED_MIN}
    assert not rare, f"fault points that fired fewer than {FIRED_MIN} times: {rare}\n" + "\n".join(SUMMARY.lines())
    assert SUMMARY.crashes_during_recovery >= FIRED_MIN, "\n".join(SUMMARY.lines())


def test_a_seed_replays_exactly() -> None:
    """A seed takes the same steps, injects the same faults and commits the same epochs on every run,
    in this process and in a fresh one."""
    crashing = []
    for seed in range(40):
        first, again = run_one(seed), run_one(seed)
        assert first.failure is None, first.failure
        assert first.trace_digest == again.trace_digest, f"seed {seed} did not replay exactly"
        if first.incarnations > 2:  # replays that crash and recover say the most
            crashing.append(first)
        if len(crashing) == 3:
            break
    assert len(crashing) == 3, "no three of the first 40 seeds crashed"
    fresh = SeedPool(2)
    try:
        elsewhere = fresh.run([o.seed for o in crashing])
    finally:
        fresh.close()
    assert [o.trace_digest for o in elsewhere] == [o.trace_digest for o in crashing]


# ---- the oracle has teeth: bugs planted in the engine are caught -------------------------------


@contextlib.contextmanager
def _source_forgets_its_offset(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The table source never writes its log offset: after a restart it reads the log from the start again.
    monkeypatch.setattr(TableSource, "_persist_offset", lambda self: None)
    yield


@contextlib.contextmanager
def _epoch_complete_at_the_first_actor(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The coordinator takes an epoch as complete when the first actor reports its barrier, not the last.
    original = BarrierCoordinator.collect

    def collect(self: BarrierCoordinator, actor_id: int, barrier: Barrier) -> None:
        for inflight in self._inflight:
            if inflight.barrier.epoch.curr == barrier.epoch.curr:
                inflight.remaining.clear()
        original(self, actor_id, barrier)

    monkeypatch.setattr(BarrierCoordinator, "collect", collect)
    yield


@contextlib.contextmanager
def _commit_before_every_upload(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # A checkpoint commits while one of its uploads is still "in flight": the version misses it.
    original = DurableStateStore.sync

    def sync(self: DurableStateStore, epoch: int) -> list[Any]:
        return original(self, epoch)[:-1]

    monkeypatch.setattr(DurableStateStore, "sync", sync)
    yield


PLANTED: dict[str, Callable[[pytest.MonkeyPatch], contextlib.AbstractContextManager[None]]] = {
    "source-forgets-offset": _source_forgets_its_offset,
    "epoch-complete-at-first-actor": _epoch_complete_at_the_first_actor,
    "commit-before-upload": _commit_before_every_upload,
}
PLANTED_SEEDS_MAX = 30


@pytest.mark.parametrize("bug", sorted(PLANTED))
def test_a_planted_bug_is_caught_within_a_few_seeds(bug: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with PLANTED[bug](monkeypatch):
        for seed in range(PLANTED_SEEDS_MAX):
            outcome = run_one(seed)
            if outcome.failure is not None:
                assert f"seed {seed}" in outcome.failure and f"TIDEGATE_SIM_SEED={seed}" in outcome.failure
                return
    pytest.fail(f"the planted bug {bug!r} went unnoticed through {PLANTED_SEEDS_MAX} seeds")


# ---- known engine bugs still show when not avoided ----------------------------------------------


# A known bug's seed may stop reaching it when the engine changes around it: the next few seeds are tried too.
KNOWN_BUG_SEEDS_MAX = 20


@pytest.mark.parametrize("bug", KNOWN_BUGS, ids=lambda bug: bug.name)
def test_a_known_engine_bug_still_shows(bug: KnownBug) -> None:
    for seed in range(bug.seed, bug.seed + KNOWN_BUG_SEEDS_MAX):
        with tempfile.TemporaryDirectory() as directory:
            simulation = Simulation(seed, Path(directory), avoid=ALL_AVOIDED - {bug.name}, **bug.reproduce)
            try:
                simulation.run()
            except SimulationFailure as failure:
                if bug.symptom in str(failure):
                    return
    pytest.fail(
        f"seeds {bug.seed}..{bug.seed + KNOWN_BUG_SEEDS_MAX - 1} no longer show the known bug {bug.name!r}: if the "
        "engine is fixed, delete its entry in tests/sim/known_bugs.py and what avoids it in the harness"
    )
