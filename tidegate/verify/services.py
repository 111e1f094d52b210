"""The Kafka broker and PostgreSQL server a verification uses: given by the user, or started here.

Started services come from the repository's scripts (``scripts/start-kafka.sh``: a real
single-node KRaft broker from Maven Central jars; ``scripts/start-postgres.sh``: a real
PostgreSQL from the Debian packages), which leave them running for the next run.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tidegate.errors import InvalidParameterValue

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"


def kafka_bootstrap(given: str | None) -> str:
    return given or os.environ.get("TIDEGATE_TEST_KAFKA_BOOTSTRAP") or _start("start-kafka.sh", "--kafka HOST:PORT")


def postgres_url(given: str | None) -> str:
    return given or os.environ.get("TIDEGATE_TEST_POSTGRES_URL") or _start("start-postgres.sh", "--postgres URL")


def _start(script: str, option: str) -> str:
    path = SCRIPTS / script
    if not path.exists():
        raise InvalidParameterValue(f"no {script} here to start the service with: give {option}")
    done = subprocess.run(["bash", str(path)], capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise InvalidParameterValue(f"{script} failed ({done.returncode}): {done.stderr.strip()[-500:]}; give {option}")
    return done.stdout.strip().splitlines()[-1]
