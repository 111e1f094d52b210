"""Waiting for generator sources in tests: every view's generators at their end, then FLUSH."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any


def flush_until_generated(db: Any, views: Iterable[str], timeout_s: float = 60) -> None:
    """FLUSH once every generator of every view in ``views`` has generated its last row.

    A view's row count says nothing about an aggregate being complete, and each view runs its
    own generator: only the sources' progress tells that every row is ahead of the FLUSH.
    During a recovery the progress view is empty, so every view must be listed to count.
    """
    wanted = set(views)
    deadline = time.monotonic() + timeout_s
    while True:
        progress = db.execute("SELECT view_name, next_offset, end_offset FROM tidegate_source_progress")
        listed = {name for name, _, _ in progress}
        if wanted <= listed and all(offset >= end for name, offset, end in progress if name in wanted):
            break
        assert time.monotonic() < deadline, f"sources still generating after {timeout_s} s: {progress}"
        time.sleep(0.05)
    db.execute("FLUSH")
