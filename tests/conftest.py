"""Fixtures shared by every test directory.

* ``tmp_data_dir``: an empty directory for one test's tidegate data.
* ``tidegate_server``: one real ``tidegate start`` process for the whole session
  (a :class:`slt.runner.ServerProcess`; ``.host``, ``.port``, ``.dsn``). Tests share
  it, so each test names its tables and views uniquely.
* ``postgres_url``: the URL of a database (no schema) on a real PostgreSQL server,
  for the whole session: the one ``TIDEGATE_TEST_POSTGRES_URL`` names (``.ci/run``
  starts one with ``scripts/start-postgres.sh``), or else one this fixture starts
  through that script, on a free port with its files in a temporary directory,
  and stops at the end. Tests share the database, so each works in its own schema.
* ``kafka_bootstrap``: the bootstrap address (``host:port``) of a real Apache Kafka
  broker, for the whole session: the one ``TIDEGATE_TEST_KAFKA_BOOTSTRAP`` names
  (``.ci/run`` starts one), or else the one ``scripts/start-kafka.sh`` starts or
  finds running. The fixture stops it at the end only if it started it. Tests share
  the broker, so each names its topics and groups uniquely
  (``kafka_helpers.unique_topic``).

When the server cannot be had here (the script exits 3: not installed and cannot
be), the tests that need it are skipped, unless ``TIDEGATE_REQUIRE_POSTGRES`` or
``TIDEGATE_REQUIRE_KAFKA`` is set (CI sets both): then they fail. Any other
failure to start fails them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from slt.runner import ServerProcess
from tidegate_process import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS_DIR = REPO_ROOT / "scripts"
# The start scripts' exit status when the server is not installed here and cannot be.
EXIT_UNAVAILABLE = 3
# Long enough for a first run that installs PostgreSQL or fetches Kafka's jars.
START_TIMEOUT_S = 900
DEFAULT_KAFKA_PORT = 29092


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "tidegate-data"
    data_dir.mkdir()
    return data_dir


@pytest.fixture(scope="session")
def tidegate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("tidegate-server") / "data") as server:
        yield server


def run_start_script(name: str, *arguments: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPTS_DIR / name), *arguments],
        env=environment,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )


def address_of_started(started: subprocess.CompletedProcess[str], name: str, require_variable: str) -> str:
    """The last line the start script printed, or skip/fail the tests when it did not start."""
    if started.returncode == 0:
        return started.stdout.strip().splitlines()[-1]
    reason = f"scripts/{name} exited {started.returncode}: {started.stderr.strip()[-3000:]}"
    if started.returncode == EXIT_UNAVAILABLE and not os.environ.get(require_variable):
        pytest.skip(f"the server cannot run here ({reason}); set {require_variable}=1 to fail instead")
    pytest.fail(reason)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A URL of a database on a running PostgreSQL server, without a schema."""
    url = os.environ.get("TIDEGATE_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    # Not pytest's tmp_path: run as root, the script runs the server as an unprivileged user, who
    # cannot enter pytest's private temporary directory.
    server_dir = Path(tempfile.mkdtemp(prefix="tidegate-pg-test-"))
    environment = {**os.environ, "TIDEGATE_PG_DIR": str(server_dir), "TIDEGATE_PG_PORT": str(free_port())}
    try:
        started = run_start_script("start-postgres.sh", environment=environment)
        yield address_of_started(started, "start-postgres.sh", "TIDEGATE_REQUIRE_POSTGRES")
    finally:
        run_start_script("start-postgres.sh", "--stop", environment=environment)
        shutil.rmtree(server_dir, ignore_errors=True)


def port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a running Kafka broker that allows transactions."""
    address = os.environ.get("TIDEGATE_TEST_KAFKA_BOOTSTRAP")
    if address:
        yield address
        return
    # The broker is the developer's usual one (default port and directory), not a private one: it
    # takes seconds to start and is meant to be left running. Stop it only if it was not running.
    environment = dict(os.environ)
    already_running = port_answers(int(environment.get("TIDEGATE_KAFKA_PORT", DEFAULT_KAFKA_PORT)))
    started = run_start_script("start-kafka.sh", environment=environment)
    try:
        yield address_of_started(started, "start-kafka.sh", "TIDEGATE_REQUIRE_KAFKA")
    finally:
        if started.returncode == 0 and not already_running:
            run_start_script("start-kafka.sh", "--stop", environment=environment)
