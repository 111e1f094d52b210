"""Fixtures shared by every test directory.

* ``tmp_data_dir``: an empty directory for one test's tidegate data.
* ``tidegate_server``: one real ``tidegate start`` process for the whole session
  (a :class:`slt.runner.ServerProcess`; ``.host``, ``.port``, ``.dsn``). Tests share
  it, so each test names its tables and views uniquely.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from slt.runner import ServerProcess


@pytest.fixture
def tmp_data_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "tidegate-data"
    data_dir.mkdir()
    return data_dir


@pytest.fixture(scope="session")
def tidegate_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("tidegate-server") / "data") as server:
        yield server
