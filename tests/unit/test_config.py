"""The server configuration file and the options that override it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from tidegate.config import load_config, parse_size
from tidegate.errors import InvalidParameterValue
from tidegate.state.object_store import without_credentials


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tidegate.toml"
    path.write_text(text)
    return path


def test_sizes() -> None:
    assert parse_size("512MiB") == 512 * 2**20
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size("1.5 KiB") == 1536
    assert parse_size(4096) == 4096
    for bad in ("lots", "-1MiB", "0", "12 parsecs"):
        with pytest.raises(InvalidParameterValue, match="size"):
            parse_size(bad)


def test_a_full_file_becomes_store_urls_with_credentials(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            """
data_dir = "data"
listen = "0.0.0.0:5000"
cache_budget = "64MiB"
[state_store]
url = "s3://bucket/some/prefix"
endpoint = "http://127.0.0.1:9000"
access_key_id = "AKID"
secret_access_key = "s3cr3t/+="
[meta_store]
url = "postgresql://tidegate@db:5432/meta?schema=prod"
password = "p@ss word"
""",
        )
    )
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.listen == "0.0.0.0:5000"
    assert config.cache_budget_bytes == 64 * 2**20
    assert config.state_store_url is not None and config.meta_store_url is not None
    assert config.state_store_url.startswith("s3://bucket/some/prefix?endpoint=http")
    assert "secret_access_key=s3cr3t%2F%2B%3D" in config.state_store_url
    # What a data dir remembers has no credentials.
    assert without_credentials(config.state_store_url) == (
        "s3://bucket/some/prefix?endpoint=http%3A%2F%2F127.0.0.1%3A9000"
    )
    assert config.meta_store_url == "postgresql://tidegate:p%40ss%20word@db:5432/meta?schema=prod"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("datadir = 'x'", "unknown setting datadir"),
        ("[state_store]\nendpoint = 'http://x'", r"\[state_store\] needs a url"),
        ("[state_store]\nurl = 'fs:///tmp/x'\nregion = 'eu'", "apply to s3:// URLs only"),
        ("[meta_store]\nurl = 'postgresql://db/x'\npassword = 'p'", "needs a user name"),
        ("data_dir = ", "not valid TOML"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InvalidParameterValue, match=message):
        load_config(write(tmp_path, text))


def test_the_server_starts_from_a_config_file_and_options_override_it(tmp_path: Path) -> None:
    from tidegate_process import free_port

    port = free_port()
    config = write(
        tmp_path,
        f'data_dir = "data"\nlisten = "127.0.0.1:1"\ncache_budget = "32MiB"\n'
        f'[state_store]\nurl = "fs://{tmp_path / "objects"}"\n',
    )
    command = [sys.executable, "-m", "tidegate.cli", "start", "--config", str(config), "--listen", f"127.0.0.1:{port}"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = psycopg.connect(f"host=127.0.0.1 port={port} user=root dbname=dev", autocommit=True)
                break
            except psycopg.OperationalError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                assert time.monotonic() < deadline
                time.sleep(0.1)
        with conn:
            conn.execute("CREATE TABLE t (x INT)")
            conn.execute("INSERT INTO t VALUES (1)")
            conn.execute("FLUSH")
    finally:
        process.terminate()
        process.wait(30)
    assert (tmp_path / "data" / "tables").is_dir()
    assert list((tmp_path / "objects").rglob("*.sst")), "checkpoints went to the configured state store"


def test_start_without_a_data_dir_says_what_to_give(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "tidegate.cli", "start"], capture_output=True, text=True)
    assert result.returncode == 2
    assert "give --data-dir (or data_dir in the --config file)" in result.stderr
