"""Start a real ``tidegate start`` server process for tests that need one (chaos, integration)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(data_dir: Path, port: int, *options: str) -> subprocess.Popen[bytes]:
    """``tidegate start`` on ``data_dir`` listening on 127.0.0.1:``port``; stderr is piped."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tidegate.cli",
            "start",
            "--data-dir",
            str(data_dir),
            "--listen",
            f"127.0.0.1:{port}",
            *options,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
