"""One process per data dir: an exclusive lock on ``DATA_DIR/LOCK`` for as long as the database is open.

Two servers appending to the same table logs would interleave records and lose
acknowledged writes, so the second one is refused, naming the holder. The lock is
``flock``-based: the kernel releases it when the holder dies, even by SIGKILL, so a
crash never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from tidegate.errors import InvalidParameterValue

LOCK_NAME = "LOCK"


class DataDirLock:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_NAME
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise InvalidParameterValue(
                f"data dir {data_dir} is in use by another tidegate (pid {holder}); stop it first"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = -1
