"""ReadPositions: where at_most_once sources keep their read position across a recovery.

Under ``at_most_once`` (DESIGN §5.8) a source does not rewind to its checkpoint's offsets after a
crash: it goes on from where it had read, so what was read but not yet checkpointed is dropped.
For that, the position must survive the process; each source saves it here as soon as it has read
a batch, before the batch is processed. One small JSON file per (job, source) under the data
directory, replaced atomically; in memory when tidegate runs without a data directory.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path


class ReadPositions:
    def __init__(self, directory: Path | None) -> None:
        """``directory``: where the files go (created on first save); None keeps positions in memory."""
        self.directory = directory
        self._memory: dict[str, dict[str, int]] = {}
        self._lock = threading.Lock()

    def _path(self, key: str) -> Path:
        assert self.directory is not None
        return self.directory / f"{key}.json"

    def load(self, job_id: int, source_id: int) -> dict[str, int] | None:
        """The positions saved last for this source of this job (partition/file → offset), or None."""
        key = f"{job_id}-{source_id}"
        with self._lock:
            if self.directory is None:
                saved = self._memory.get(key)
                return None if saved is None else dict(saved)
            try:
                return {str(k): int(v) for k, v in json.loads(self._path(key).read_text()).items()}
            except FileNotFoundError:
                return None

    def save(self, job_id: int, source_id: int, positions: dict[str, int]) -> None:
        key = f"{job_id}-{source_id}"
        with self._lock:
            if self.directory is None:
                self._memory[key] = dict(positions)
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self._path(key)
            temporary = path.with_suffix(".tmp")
            temporary.write_text(json.dumps(positions))
            # A process crash keeps what was written before it (the page cache survives it); the
            # rename makes a reader see either the old file or the new one, never a torn one.
            os.replace(temporary, path)

    def forget(self, job_id: int) -> None:
        """Drop every position of a job (DROP)."""
        with self._lock:
            prefix = f"{job_id}-"
            for key in [k for k in self._memory if k.startswith(prefix)]:
                del self._memory[key]
            if self.directory is not None and self.directory.exists():
                for path in self.directory.glob(f"{prefix}*.json"):
                    path.unlink(missing_ok=True)
