"""One tidegate per data dir; a crashed holder leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tidegate
from tidegate.errors import InvalidParameterValue


def test_a_second_database_on_the_same_data_dir_is_refused_until_the_first_closes(tmp_path: Path) -> None:
    first = tidegate.connect(tmp_path)
    first.execute("CREATE TABLE t (x INT)")
    with pytest.raises(InvalidParameterValue, match=f"in use by another tidegate \\(pid {os.getpid()}\\)"):
        tidegate.connect(tmp_path)
    first.close()
    with tidegate.connect(tmp_path) as second:
        assert second.execute("SHOW TABLES") == [("t",)]


def test_the_lock_of_a_killed_process_is_released(tmp_path: Path) -> None:
    code = "import sys, time, tidegate; db = tidegate.connect(sys.argv[1]); print('open', flush=True); time.sleep(600)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == b"open"
        with pytest.raises(InvalidParameterValue, match=f"pid {holder.pid}"):
            tidegate.connect(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    time.sleep(0.05)
    tidegate.connect(tmp_path).close()
