"""The object-store behaviour suite against a real S3-compatible server, through OpenDAL's s3 service.

The server is gofakes3, a Go implementation of the S3 HTTP API, that
``scripts/start-s3.sh`` builds once from the Go module proxy (cached under
``~/.cache/tidegate``) and starts on 127.0.0.1 for this session. When it cannot
be built here the tests are skipped, unless ``TIDEGATE_REQUIRE_S3`` is set (CI
sets it): then they fail.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_object_store import ObjectStoreContract, retrying

from tidegate.state.object_store import (
    FaultyObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    OpendalObjectStore,
    object_store_from_url,
)

REPO_ROOT = Path(__file__).resolve().parents[3]
START_SCRIPT = REPO_ROOT / "scripts" / "start-s3.sh"
# start-s3.sh's exit status when the server cannot be built on this machine.
EXIT_CANNOT_BUILD = 3
BUCKET = "tidegate-test"
CREDENTIALS = {"region": "us-east-1", "access_key_id": "tidegate", "secret_access_key": "tidegate-secret"}
_roots = itertools.count()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _stop(pid: int) -> None:
    """SIGTERM, then SIGKILL if it lingers; the server was reparented, so poll rather than wait."""
    for sig, grace_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        gone = threading.Event()
        for _ in range(int(grace_s / 0.05)):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            gone.wait(0.05)


def _create_bucket(endpoint: str, bucket: str) -> None:
    request = urllib.request.Request(f"{endpoint}/{bucket}", method="PUT")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200, f"CreateBucket {bucket} answered {response.status}"


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("s3-server")
    started = subprocess.run(
        ["bash", str(START_SCRIPT), str(_free_port()), str(data_dir)],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    if started.returncode != 0:
        reason = f"scripts/start-s3.sh exited {started.returncode}: {started.stderr.strip()[-3000:]}"
        if started.returncode == EXIT_CANNOT_BUILD and not os.environ.get("TIDEGATE_REQUIRE_S3"):
            pytest.skip(f"no S3-compatible server here ({reason}); set TIDEGATE_REQUIRE_S3=1 to fail instead")
        pytest.fail(reason)
    pid = int((data_dir / "s3.pid").read_text())
    try:
        endpoint = started.stdout.strip().splitlines()[-1]
        _create_bucket(endpoint, BUCKET)
        yield endpoint
    finally:
        _stop(pid)


def s3_store(endpoint: str, bucket: str = BUCKET) -> OpendalObjectStore:
    """A store over a fresh key prefix of the bucket, so that tests sharing the server do not see each other."""
    return OpendalObjectStore("s3", bucket=bucket, endpoint=endpoint, root=f"/test-{next(_roots)}/", **CREDENTIALS)


class TestS3ObjectStoreContract(ObjectStoreContract):
    @pytest.fixture(params=["s3", "retrying-faulty-s3"])
    def store(self, request: pytest.FixtureRequest, s3_endpoint: str) -> ObjectStore:
        store = s3_store(s3_endpoint)
        if request.param == "s3":
            return store
        return retrying(FaultyObjectStore(store, seed=13, probability=0.3), attempts_max=40)


def test_a_store_from_an_s3_url_reads_what_another_wrote(s3_endpoint: str) -> None:
    prefix = f"from-url-{random.Random().randrange(1 << 30)}"
    url = (
        f"s3://{BUCKET}/{prefix}?endpoint={s3_endpoint}&region=us-east-1"
        f"&access_key_id={CREDENTIALS['access_key_id']}&secret_access_key={CREDENTIALS['secret_access_key']}"
    )
    writer = object_store_from_url(url)
    writer.put("sst/1.sst", b"one")
    reader = OpendalObjectStore("s3", bucket=BUCKET, endpoint=s3_endpoint, root=f"/{prefix}", **CREDENTIALS)
    assert reader.get("sst/1.sst") == b"one"
    assert reader.list("") == ["sst/1.sst"]
    # The prefix really is a key prefix in the bucket.
    whole_bucket = OpendalObjectStore("s3", bucket=BUCKET, endpoint=s3_endpoint, **CREDENTIALS)
    assert f"{prefix}/sst/1.sst" in whole_bucket.list(f"{prefix}/")


def test_a_missing_bucket_is_a_permanent_error_naming_the_object(s3_endpoint: str) -> None:
    store = s3_store(s3_endpoint, bucket="no-such-bucket")
    with pytest.raises(ObjectStoreError, match="sst/1") as raised:
        store.put("sst/1.sst", b"x")
    assert not raised.value.transient
    assert "no-such-bucket" in str(raised.value)


def test_a_missing_key_is_object_not_found(s3_endpoint: str) -> None:
    with pytest.raises(ObjectNotFound, match="missing"):
        s3_store(s3_endpoint).get("sst/missing.sst")
