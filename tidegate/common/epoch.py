"""Epochs: the logical clock that barriers carry.

An epoch is ``(unix milliseconds << 16) | sequence``: ordered like time, unique,
and strictly increasing across restarts because a new epoch is always taken
greater than both the clock and the last epoch seen (DESIGN §3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

EPOCH_PHYSICAL_SHIFT = 16


class Clock(Protocol):
    def now_ms(self) -> int: ...


class WallClock:
    def now_ms(self) -> int:
        import time

        return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class EpochPair:
    curr: int
    prev: int


class EpochGenerator:
    """Hands out strictly increasing epochs from a clock."""

    def __init__(self, clock: Clock, last_epoch: int = 0) -> None:
        self._clock = clock
        self._last = last_epoch

    @property
    def last(self) -> int:
        return self._last

    def next(self) -> int:
        candidate = self._clock.now_ms() << EPOCH_PHYSICAL_SHIFT
        self._last = max(candidate, self._last + 1)
        return self._last


def epoch_to_ms(epoch: int) -> int:
    return epoch >> EPOCH_PHYSICAL_SHIFT
