"""The tidegate server process a verification kills and restarts."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg

from tidegate.errors import InternalError

READY_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Engine:
    """``tidegate start`` on one data directory; ``kill`` is SIGKILL, ``start`` recovers."""

    def __init__(self, data_dir: Path, log_path: Path, environment: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = log_path
        self.environment = environment or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.failpoint_kills = 0  # deaths by an engine failpoint (TIDEGATE_FAILPOINTS)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} dbname=dev user=root"

    def start(self) -> None:
        command = [sys.executable, "-m", "tidegate.cli", "--log-level", "INFO", "start"]
        command += ["--data-dir", str(self.data_dir), "--listen", f"127.0.0.1:{self.port}"]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, stdout=log, stderr=log, env={**os.environ, **self.environment}, start_new_session=True
        )
        log.close()
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                if self.process.returncode == -signal.SIGKILL:
                    return  # a failpoint killed it during recovery: the caller restarts it
                raise InternalError(f"tidegate exited with {self.process.returncode}; see {self.log_path}")
            try:
                with psycopg.connect(self.dsn, connect_timeout=2, autocommit=True) as connection:
                    connection.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                time.sleep(0.2)
        raise InternalError(f"tidegate did not accept connections in {READY_TIMEOUT_S:.0f} s; see {self.log_path}")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL; a process a failpoint already killed counts as killed (``failpoint_kills``)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()
            self.kills += 1
            self.process = None
        elif self.process.returncode == -signal.SIGKILL:
            self.failpoint_kills += 1
            self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def execute(self, sql: str) -> list[tuple[object, ...]]:
        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as connection:
            cursor = connection.execute(sql)
            return cursor.fetchall() if cursor.description is not None else []
