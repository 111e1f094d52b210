"""Every ``tests/slt/**/*.slt`` file, each its own test case, through one real tidegate server.

The server is a child process (``tidegate start`` on a temporary data directory, a
port the OS picks). Files run one after another on it, each on its own connection;
what a file creates is dropped after it. If a file leaves the server unable to
FLUSH (a crashed streaming actor stops every view), the next file gets a fresh
server, so one bug does not fail every file after it.

``TIDEGATE_SLT_PORT=N`` runs the files against a server you started yourself.
Files listed in ``KNOWN_BUGS`` are expected to fail (strict xfail): when the bug is
fixed the file passes, the test reports XPASS as a failure, and the entry goes.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .runner import ServerProcess, connect, run_file

SLT_ROOT = Path(__file__).resolve().parent
SLT_FILES = sorted(SLT_ROOT.rglob("*.slt"))

# file (relative to tests/slt) -> the tidegate bug that makes it fail
KNOWN_BUGS: dict[str, str] = {
    "agg/avg.slt": "AVG of INT/DECIMAL prints 2 and 2.215 (view: numeric without PostgreSQL's division scale; "
    "SELECT: double precision), PostgreSQL prints 2.0000000000000000 and 2.2150000000000000",
    "types/decimal_division.slt": "DECIMAL / INT goes through double: 948.49 / 3 is 316.16333333333336, "
    "PostgreSQL 316.1633333333333333 (in views and SELECT)",
    "types/real_sum.slt": "SELECT SUM(real) is double precision (0.1 + 0.2 prints 0.30000000447034836); "
    "PostgreSQL's sum(real) is real: 0.3 (the view gets it right)",
    "types/numeric_unconstrained.slt": "DECIMAL without (p,s) drops the input scale: 149.50 prints 149.5 "
    "and 499.00 prints 499",
}


class SharedServer:
    """The server the files share; replaced by a fresh one when a file breaks it."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.external_port = int(os.environ["TIDEGATE_SLT_PORT"]) if os.environ.get("TIDEGATE_SLT_PORT") else None
        self.process: ServerProcess | None = None
        self.generation = 0

    def address(self) -> tuple[str, int]:
        if self.external_port is not None:
            return "127.0.0.1", self.external_port
        if self.process is None or not self._healthy():
            self._restart()
        assert self.process is not None
        return self.process.host, self.process.port

    def _healthy(self) -> bool:
        assert self.process is not None
        if not self.process.alive():
            return False
        try:
            with connect(self.process.host, self.process.port) as conn:
                conn.execute(b"FLUSH")
        except psycopg.Error:
            return False
        return True

    def _restart(self) -> None:
        self.stop()
        self.generation += 1
        self.process = ServerProcess(self.base_dir / f"data-{self.generation}").start()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None


@pytest.fixture(scope="module")
def slt_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SharedServer]:
    server = SharedServer(tmp_path_factory.mktemp("slt-server"))
    try:
        yield server
    finally:
        server.stop()


def _cases() -> Iterator[object]:
    for path in SLT_FILES:
        name = path.relative_to(SLT_ROOT).as_posix()
        marks = [pytest.mark.xfail(strict=True, reason=KNOWN_BUGS[name])] if name in KNOWN_BUGS else []
        yield pytest.param(path, id=name, marks=marks)


@pytest.mark.parametrize("path", list(_cases()))
def test_slt_file(path: Path, slt_server: SharedServer) -> None:
    host, port = slt_server.address()
    failures = run_file(Path(os.path.relpath(path)), host, port)  # relative, so reports read file.slt:LINE
    if failures:
        report = "\n".join(str(failure) for failure in failures)
        server_log = slt_server.process.output() if slt_server.process is not None else ""
        if server_log and slt_server.process is not None and not slt_server.process.alive():
            report += f"\n\nthe server exited; its last output:\n{server_log}"
        pytest.fail(report, pytrace=False)


def test_known_bugs_name_existing_files() -> None:
    names = {path.relative_to(SLT_ROOT).as_posix() for path in SLT_FILES}
    assert set(KNOWN_BUGS) <= names, f"stale KNOWN_BUGS entries: {sorted(set(KNOWN_BUGS) - names)}"
