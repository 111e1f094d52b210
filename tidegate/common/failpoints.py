"""Failpoints for crash tests: kill the process at a named step of the protocol.

``TIDEGATE_FAILPOINTS="name=probability,…"`` in a server's environment makes ``failpoint(name)``
send the process SIGKILL with that probability each time the step is reached (seeded by
``TIDEGATE_FAILPOINT_SEED`` when set). Without the variable every failpoint is a no-op costing one
dict lookup. The chaos tests and ``tidegate verify`` use them to crash at the moments a random
kill rarely hits, e.g. ``sink_before_delivery``: after a checkpoint committed, before the sink's
transaction that delivers it.
"""

from __future__ import annotations

import os
import random
import signal

FAILPOINTS_ENV = "TIDEGATE_FAILPOINTS"


def _parse(text: str) -> dict[str, float]:
    points: dict[str, float] = {}
    for item in text.split(","):
        if "=" in item:
            name, probability = item.split("=", 1)
            points[name.strip()] = float(probability)
    return points


_POINTS = _parse(os.environ.get(FAILPOINTS_ENV, ""))
_RANDOM = random.Random(os.environ.get("TIDEGATE_FAILPOINT_SEED"))


def failpoint(name: str) -> None:
    probability = _POINTS.get(name)
    if probability is not None and _RANDOM.random() < probability:
        os.kill(os.getpid(), signal.SIGKILL)
