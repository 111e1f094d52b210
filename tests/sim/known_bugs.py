"""Engine bugs the simulation found that are not fixed yet.

The seeds steer clear of each one (``Simulation(avoid=...)``: the fault that
triggers it is not injected, the check it trips tolerates it, or the engine setting
that exposes it is left at its default), so that one known bug does not hide the
next. ``test_simulation.py`` replays each bug's seed (and, should the engine have
moved it, the next few) without the avoidance and expects the failure: once the
engine is fixed that test fails, and the entry and its avoidance are to be deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class KnownBug:
    name: str
    seed: int  # fails when the bug is not avoided
    symptom: str  # a substring of that seed's failure message
    description: str  # where the bug is and what fixes it
    reproduce: dict[str, Any] = field(default_factory=dict)  # Simulation options that expose it


KNOWN_BUGS: tuple[KnownBug, ...] = ()

ALL_AVOIDED = frozenset(bug.name for bug in KNOWN_BUGS)
