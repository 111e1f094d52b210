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
    "ddl/drop.slt": "every DROP fails with XX000 AttributeError: sql/ddl.py bind_drop reads drop.this/"
    "drop.expressions, but sqlglot puts the names in drop.args['tables']",
    "ddl/show.slt": "needs DROP (XX000 AttributeError in sql/ddl.py bind_drop), and relations other files "
    "could not drop are listed too",
    "ddl/identifiers.slt": "unquoted identifiers keep their case: CREATE TABLE DDL_Ident_Upper creates "
    '"DDL_Ident_Upper" and ddl_ident_upper is 42P01',
    "ddl/settings_default.slt": "SET barrier_interval_ms = DEFAULT is 22023 invalid value, RESET is 42601",
    "dml/on_conflict.slt": "DO UPDATE SET x = <table>.x + EXCLUDED.x is 42804 'Referenced table not found'; "
    "DO UPDATE ... WHERE is ignored; ambiguous unqualified column is accepted; ON CONFLICT DO NOTHING on a "
    "table without a key is an error (PostgreSQL inserts); bad conflict target is not 42P10",
    "dml/value_errors.slt": "bad DATE literal is 22P02 (PostgreSQL 22007), 2023-02-30 is 22003 (22008), "
    "DECIMAL(5,2) overflow is 22P02 (22003); '1.5' into SMALLINT is accepted as 2 (22P02)",
    "errors/unknown_setting.slt": "SET/SHOW of an unknown parameter is 22023, PostgreSQL says 42704",
    "types/bytea.slt": "bytea hex literals are read as escapes: '\\x00ff10' is stored as \\x0066663130 "
    "and '\\x0102'::BYTEA is \\x013032",
    "types/decimal_division.slt": "DECIMAL / INT goes through double: 948.49 / 3 is 316.16333333333336, "
    "PostgreSQL 316.1633333333333333 (in views and SELECT)",
    "types/interval.slt": "negative day counts print '-1 day', PostgreSQL prints '-1 days'",
    "types/interval_agg.slt": "MIN/MAX(INTERVAL) in a view crashes the streaming actor (PicklingError on "
    "pyarrow MonthDayNano) and every view stops updating until restart",
    "types/jsonb.slt": "jsonb prints the input text as written; PostgreSQL normalizes it "
    '(\'{"b": 1, "a": 2}\' prints {"a": 2, "b": 1})',
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
