"""Object stores: one behaviour suite over every implementation, the failpoints, retries, and crash-atomic fs puts.

``ObjectStoreContract`` is the behaviour suite; ``test_object_store_s3.py`` runs
it again against a real S3-compatible server.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tidegate.state.object_store import (
    FaultyObjectStore,
    InjectedFault,
    LocalObjectStore,
    MemoryObjectStore,
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    OpendalObjectStore,
    RetryingObjectStore,
    object_store_from_url,
)
from tidegate.state.object_store_faults import FAILPOINTS

REPO_ROOT = Path(__file__).resolve().parents[3]


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps_ms: list[float] = []

    def now_ms(self) -> int:
        return int(self.now)

    def sleep_ms(self, duration_ms: float) -> None:
        self.sleeps_ms.append(duration_ms)
        self.now += duration_ms


def retrying(inner: ObjectStore, clock: FakeClock | None = None, **kwargs: Any) -> RetryingObjectStore:
    clock = clock or FakeClock()
    return RetryingObjectStore(inner, clock=clock, sleep_ms=clock.sleep_ms, rng=random.Random(7), **kwargs)


def uniform(byte: int, size: int) -> bytes:
    return bytes([byte]) * size


# ---- the behaviour suite -----------------------------------------------------------------------------------------
class ObjectStoreContract:
    """Every ObjectStore keeps these; a subclass provides the ``store`` fixture."""

    def test_put_then_get_returns_the_same_bytes(self, store: ObjectStore) -> None:
        every_byte = bytes(range(256)) * 3
        large = random.Random(1).randbytes(1 << 20)
        store.put("sst/every-byte.sst", every_byte)
        store.put("sst/empty.sst", b"")
        store.put("sst/large.sst", large)
        assert store.get("sst/every-byte.sst") == every_byte
        assert store.get("sst/empty.sst") == b""
        assert store.get("sst/large.sst") == large

    def test_put_replaces_an_existing_object(self, store: ObjectStore) -> None:
        store.put("version/current", b"first, and longer than the second")
        store.put("version/current", b"second")
        assert store.get("version/current") == b"second"
        assert store.size("version/current") == len(b"second")
        assert store.list("version/") == ["version/current"]

    def test_missing_objects_raise_object_not_found_naming_the_path(self, store: ObjectStore) -> None:
        store.put("sst/present.sst", b"x")
        calls: list[Callable[[], object]] = [
            lambda: store.get("sst/missing.sst"),
            lambda: store.get_range("sst/missing.sst", 0, 1),
            lambda: store.get_range("sst/missing.sst", 0, 0),
            lambda: store.size("sst/missing.sst"),
            lambda: store.get("missing-top-level"),
        ]
        for call in calls:
            with pytest.raises(ObjectNotFound, match="missing") as raised:
                call()
            assert not raised.value.transient
            assert "missing" in raised.value.path

    def test_get_range_returns_exactly_the_range(self, store: ObjectStore) -> None:
        data = bytes(range(200))
        store.put("blocks.sst", data)
        assert store.get_range("blocks.sst", 0, 10) == data[:10]
        assert store.get_range("blocks.sst", 150, 50) == data[150:]
        assert store.get_range("blocks.sst", 17, 1) == data[17:18]
        assert store.get_range("blocks.sst", 200, 0) == b""
        assert store.get_range("blocks.sst", 0, 200) == data

    @pytest.mark.parametrize(("start", "length"), [(150, 51), (199, 2), (200, 1), (500, 10), (-1, 5), (0, -1)])
    def test_a_range_past_the_end_raises_instead_of_reading_short(
        self, store: ObjectStore, start: int, length: int
    ) -> None:
        store.put("blocks.sst", bytes(200))
        with pytest.raises(ObjectStoreError, match=re.escape("blocks.sst")) as raised:
            store.get_range("blocks.sst", start, length)
        assert not isinstance(raised.value, ObjectNotFound)
        assert not raised.value.transient

    def test_size(self, store: ObjectStore) -> None:
        store.put("a", b"12345")
        store.put("b/empty", b"")
        assert store.size("a") == 5
        assert store.size("b/empty") == 0

    def test_delete_removes_and_a_missing_object_is_fine(self, store: ObjectStore) -> None:
        store.put("sst/1.sst", b"one")
        store.put("sst/2.sst", b"two")
        store.delete("sst/1.sst")
        store.delete("sst/1.sst")
        store.delete("never/existed")
        with pytest.raises(ObjectNotFound):
            store.get("sst/1.sst")
        assert store.list("") == ["sst/2.sst"]

    def test_list_matches_prefixes_like_s3_and_sorts(self, store: ObjectStore) -> None:
        paths = ["sst/0002.sst", "sst/0010.sst", "sst/0001.sst", "meta/version", "sst/deep/a/b/c", "top"]
        for path in random.Random(3).sample(paths, len(paths)):
            store.put(path, path.encode())
        assert store.list("") == sorted(paths)
        assert store.list("sst/") == ["sst/0001.sst", "sst/0002.sst", "sst/0010.sst", "sst/deep/a/b/c"]
        assert store.list("sst/000") == ["sst/0001.sst", "sst/0002.sst"]
        assert store.list("sst/0010.sst") == ["sst/0010.sst"]
        assert store.list("sst/deep/a/") == ["sst/deep/a/b/c"]
        assert store.list("t") == ["top"]
        assert store.list("sst/9") == []
        assert store.list("nothing/here/") == []

    def test_names_with_spaces_and_non_ascii_round_trip(self, store: ObjectStore) -> None:
        store.put("dir with space/üñí-1.sst", b"x")
        assert store.get("dir with space/üñí-1.sst") == b"x"
        assert store.list("dir with space/") == ["dir with space/üñí-1.sst"]

    @pytest.mark.parametrize("path", ["", "/absolute", "a//b", "a/../b", "./a", "a/", ".tmp/x", "a\x00b"])
    def test_invalid_paths_are_refused(self, store: ObjectStore, path: str) -> None:
        for call in (lambda: store.put(path, b"x"), lambda: store.get(path), lambda: store.delete(path)):
            with pytest.raises(ObjectStoreError, match="invalid object path") as raised:
                call()
            assert not raised.value.transient
        with pytest.raises(ObjectStoreError, match="invalid prefix"):
            store.list("/absolute")

    def test_concurrent_readers_never_see_a_partial_object(self, store: ObjectStore) -> None:
        size = 256 * 1024
        store.put("hot/object", uniform(0, size))
        errors: list[str] = []
        stop = threading.Event()

        def write(byte: int) -> None:
            for _ in range(5):
                store.put("hot/object", uniform(byte, size))

        def read() -> None:
            while not stop.is_set():
                try:
                    data = store.get("hot/object")
                except ObjectStoreError as e:
                    errors.append(str(e))
                    continue
                if len(data) != size or data.count(data[0]) != size:
                    errors.append(f"partial or mixed object: {len(data)} bytes")

        readers = [threading.Thread(target=read) for _ in range(2)]
        writers = [threading.Thread(target=write, args=(byte,)) for byte in (1, 2, 3)]
        for thread in readers + writers:
            thread.start()
        for thread in writers:
            thread.join()
        stop.set()
        for thread in readers:
            thread.join()
        assert errors == []
        assert store.get("hot/object")[0] in (1, 2, 3)


def _flaky(inner: ObjectStore) -> ObjectStore:
    """Retrying over a store that fails a third of all calls: the contract must still hold."""
    faulty = FaultyObjectStore(inner, seed=11, probability=0.3)
    return retrying(faulty, attempts_max=40)


STORE_FACTORIES: dict[str, Callable[[Path], ObjectStore]] = {
    "memory": lambda tmp: MemoryObjectStore(),
    "opendal-memory": lambda tmp: OpendalObjectStore("memory"),
    "fs": lambda tmp: LocalObjectStore(tmp / "objects"),
    "opendal-fs": lambda tmp: OpendalObjectStore("fs", root=str(tmp / "opendal-objects")),
    "retrying-faulty-memory": lambda tmp: _flaky(MemoryObjectStore()),
    "retrying-faulty-fs": lambda tmp: _flaky(LocalObjectStore(tmp / "objects")),
}


class TestObjectStoreContract(ObjectStoreContract):
    @pytest.fixture(params=sorted(STORE_FACTORIES))
    def store(self, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
        yield STORE_FACTORIES[request.param](tmp_path)


# ---- FaultyObjectStore -------------------------------------------------------------------------------------------
def faulty_with(objects: dict[str, bytes]) -> tuple[FaultyObjectStore, MemoryObjectStore]:
    inner = MemoryObjectStore()
    for path, data in objects.items():
        inner.put(path, data)
    return FaultyObjectStore(inner), inner


def test_put_before_fails_without_writing() -> None:
    faulty, inner = faulty_with({})
    faulty.fail_next("put.before")
    with pytest.raises(InjectedFault, match=re.escape("put.before")) as raised:
        faulty.put("sst/1.sst", b"data")
    assert raised.value.transient and raised.value.path == "sst/1.sst"
    assert inner.list("") == []
    assert faulty.injected == [("put.before", "sst/1.sst")]
    faulty.put("sst/1.sst", b"data")
    assert inner.get("sst/1.sst") == b"data"


def test_put_after_writes_then_raises() -> None:
    faulty, inner = faulty_with({})
    faulty.fail_next("put.after")
    with pytest.raises(InjectedFault, match=re.escape("put.after")):
        faulty.put("sst/1.sst", b"data")
    assert inner.get("sst/1.sst") == b"data"
    assert faulty.injected == [("put.after", "sst/1.sst")]


def test_get_corrupt_flips_one_byte_of_what_is_returned_only() -> None:
    data = bytes(range(100))
    faulty, inner = faulty_with({"a.sst": data})
    faulty.enable("get.corrupt")
    for returned in (faulty.get("a.sst"), faulty.get_range("a.sst", 10, 50)):
        expected = data if len(returned) == 100 else data[10:60]
        assert len(returned) == len(expected)
        assert sum(x != y for x, y in zip(returned, expected)) == 1
    assert inner.get("a.sst") == data
    assert faulty.injected == [("get.corrupt", "a.sst"), ("get.corrupt", "a.sst")]
    faulty.disable("get.corrupt")
    assert faulty.get("a.sst") == data


def test_get_missing_raises_object_not_found_for_an_object_that_exists() -> None:
    faulty, _ = faulty_with({"a.sst": b"x"})
    faulty.fail_next("get.missing", count=2)
    with pytest.raises(ObjectNotFound, match=re.escape("a.sst")):
        faulty.get("a.sst")
    with pytest.raises(ObjectNotFound, match=re.escape("a.sst")):
        faulty.get_range("a.sst", 0, 1)
    assert faulty.get("a.sst") == b"x"


def test_delete_fail_leaves_the_object() -> None:
    faulty, inner = faulty_with({"a.sst": b"x"})
    faulty.enable("delete.fail")
    with pytest.raises(InjectedFault, match=re.escape("delete.fail")):
        faulty.delete("a.sst")
    assert inner.get("a.sst") == b"x"
    faulty.disable("delete.fail")
    faulty.delete("a.sst")
    assert inner.list("") == []


@pytest.mark.parametrize(
    ("point", "call"),
    [
        ("get.fail", lambda s: s.get("a.sst")),
        ("get.fail", lambda s: s.get_range("a.sst", 0, 1)),
        ("size.fail", lambda s: s.size("a.sst")),
        ("list.fail", lambda s: s.list("")),
    ],
)
def test_transient_read_failpoints(point: str, call: Callable[[ObjectStore], object]) -> None:
    faulty, _ = faulty_with({"a.sst": b"x"})
    faulty.fail_next(point)
    with pytest.raises(InjectedFault, match=point) as raised:
        call(faulty)
    assert raised.value.transient
    call(faulty)
    assert [point for point, _ in faulty.injected] == [point]


def test_fail_next_counts_and_enable_stays_on_until_disabled() -> None:
    faulty, _ = faulty_with({})
    faulty.fail_next("put.before", count=2)
    outcomes = []
    for _ in range(3):
        try:
            faulty.put("p", b"x")
            outcomes.append("ok")
        except InjectedFault:
            outcomes.append("fault")
    assert outcomes == ["fault", "fault", "ok"]
    faulty.enable("list.fail")
    for _ in range(3):
        with pytest.raises(InjectedFault):
            faulty.list("")
    faulty.clear()
    assert faulty.list("") == ["p"]
    assert len(faulty.injected) == 5


def test_an_unknown_failpoint_is_a_programming_error() -> None:
    faulty, _ = faulty_with({})
    with pytest.raises(AssertionError, match="unknown failpoint"):
        faulty.enable("put.sideways")
    with pytest.raises(AssertionError, match="unknown failpoint"):
        FaultyObjectStore(MemoryObjectStore(), seed=1, probability=0.5, points={"nope"})


def _random_run(seed: int, points: set[str] | None = None) -> list[tuple[str, str]]:
    faulty = FaultyObjectStore(MemoryObjectStore(), seed=seed, probability=0.4, points=points)
    for i in range(60):
        path = f"sst/{i % 7}.sst"
        with contextlib.suppress(ObjectStoreError):
            faulty.put(path, b"v" * (i + 1))
        with contextlib.suppress(ObjectStoreError):
            faulty.get(path)
        with contextlib.suppress(ObjectStoreError):
            faulty.delete(path)
    return faulty.injected


def test_probability_mode_is_reproducible_from_its_seed() -> None:
    first = _random_run(seed=5)
    assert first == _random_run(seed=5)
    assert first != _random_run(seed=6)
    assert 0 < len(first) < 180
    # By default only the transient points fire at random: reads are never corrupted or reported missing.
    assert {point for point, _ in first} <= {"put.before", "put.after", "get.fail", "delete.fail"}
    chosen = _random_run(seed=5, points={"get.corrupt"})
    assert chosen and {point for point, _ in chosen} == {"get.corrupt"}


def test_every_failpoint_is_documented() -> None:
    import tidegate.state.object_store_faults as faults

    assert faults.__doc__ is not None
    for point in FAILPOINTS:
        assert f"``{point}``" in faults.__doc__


# ---- RetryingObjectStore -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("faults", [1, 2, 4])
def test_retrying_recovers_from_fewer_transient_faults_than_attempts(
    faults: int, caplog: pytest.LogCaptureFixture
) -> None:
    faulty, inner = faulty_with({"a.sst": b"abc"})
    clock = FakeClock()
    store = retrying(faulty, clock, attempts_max=5, backoff_initial_ms=100, backoff_max_ms=10_000)
    caplog.set_level(logging.WARNING, logger="tidegate.state.object_store_faults")
    faulty.fail_next("put.before", faults)
    store.put("b.sst", b"new")
    assert inner.get("b.sst") == b"new"
    faulty.fail_next("get.fail", faults)
    assert store.get("a.sst") == b"abc"
    assert len(clock.sleeps_ms) == 2 * faults
    # Exponential backoff, half of it jitter: attempt n waits within [50%, 100%] of 100 ms * 2**(n-1).
    for n, wait_ms in enumerate(clock.sleeps_ms[:faults], start=1):
        assert 50 * 2 ** (n - 1) <= wait_ms <= 100 * 2 ** (n - 1)
    retries = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(retries) == 2 * faults
    assert "b.sst" in retries[0].getMessage() and "attempt 1 of 5" in retries[0].getMessage()


def test_retrying_a_put_whose_write_landed_is_harmless() -> None:
    faulty, inner = faulty_with({})
    faulty.fail_next("put.after", 3)
    retrying(faulty).put("sst/1.sst", b"data")
    assert inner.get("sst/1.sst") == b"data"
    assert len(faulty.injected) == 3


def test_retrying_gives_up_after_attempts_max_naming_path_operation_and_last_error() -> None:
    faulty, _ = faulty_with({})
    clock = FakeClock()
    store = retrying(faulty, clock, attempts_max=5)
    faulty.enable("put.before")
    with pytest.raises(ObjectStoreError) as raised:
        store.put("sst/42.sst", b"x")
    message = str(raised.value)
    assert "put" in message and "sst/42.sst" in message and "5 attempt" in message and "put.before" in message
    assert isinstance(raised.value.__cause__, InjectedFault)
    assert not raised.value.transient
    assert len(faulty.injected) == 5
    assert len(clock.sleeps_ms) == 4


def test_retrying_never_retries_object_not_found_or_permanent_errors() -> None:
    faulty, _ = faulty_with({"a.sst": b"abc"})
    clock = FakeClock()
    store = retrying(faulty, clock)
    with pytest.raises(ObjectNotFound):
        store.get("missing.sst")
    faulty.fail_next("get.missing")
    with pytest.raises(ObjectNotFound):
        store.get("a.sst")
    with pytest.raises(ObjectStoreError, match="past the end"):
        store.get_range("a.sst", 2, 5)
    with pytest.raises(ObjectStoreError, match="invalid object path"):
        store.put("/absolute", b"x")
    assert clock.sleeps_ms == []
    assert faulty.injected == [("get.missing", "a.sst")]


def test_retrying_stops_when_the_total_time_would_pass_its_bound() -> None:
    faulty, _ = faulty_with({})
    clock = FakeClock()
    store = retrying(faulty, clock, attempts_max=100, backoff_initial_ms=100, total_time_max_ms=1_000)
    faulty.enable("list.fail")
    with pytest.raises(ObjectStoreError, match="gave up after"):
        store.list("")
    assert clock.now <= 1_000
    assert 2 <= len(faulty.injected) < 100


def test_retrying_is_deterministic_given_its_random_source() -> None:
    def waits() -> list[float]:
        faulty, _ = faulty_with({})
        clock = FakeClock()
        faulty.fail_next("put.before", 4)
        retrying(faulty, clock).put("p", b"x")
        return clock.sleeps_ms

    assert waits() == waits()


def test_retrying_with_the_real_clock_and_sleep() -> None:
    faulty, _ = faulty_with({})
    faulty.fail_next("put.before", 2)
    RetryingObjectStore(faulty, backoff_initial_ms=1).put("p", b"x")
    assert faulty.get("p") == b"x"


# ---- LocalObjectStore: atomic, durable puts ---------------------------------------------------------------------
def test_fs_put_leaves_no_temporaries_and_lists_none(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    for i in range(5):
        store.put(f"a/b/{i}", b"x" * i)
    assert os.listdir(tmp_path / ".tmp") == []
    assert store.list("") == [f"a/b/{i}" for i in range(5)]


def test_fs_put_onto_a_directory_fails_permanently_and_cleans_up(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    store.put("a/b", b"x")
    with pytest.raises(ObjectStoreError, match="'a'") as raised:
        store.put("a", b"y")
    assert not raised.value.transient
    assert os.listdir(tmp_path / ".tmp") == []
    with pytest.raises(ObjectNotFound):
        store.get("a")


_CRASHING_WRITER = textwrap.dedent(
    """
    import os, sys, time
    import tidegate.state.object_store_local as local

    root, mode, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = local.LocalObjectStore(root)

    def stall(*args, **kwargs):
        print("stalled", flush=True)
        time.sleep(120)

    if mode == "mid-write":
        def half_then_stall(fd, data):
            os.write(fd, data[: len(data) // 2])
            stall()
        local._write_all = half_then_stall
    elif mode == "before-rename":
        os.rename = stall
    elif mode == "after-rename":
        real_rename = os.rename
        def rename_then_stall(source, target):
            real_rename(source, target)
            stall()
        os.rename = rename_then_stall
    if mode == "loop":
        print("looping", flush=True)
        for i in range(1, 10_000):
            store.put("table/object", bytes([i % 250 + 1]) * size)
    else:
        store.put("table/object", bytes([9]) * size)
    """
)


def _run_and_kill(root: Path, mode: str, size: int, kill_after_s: float = 0.0) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    child = subprocess.Popen(
        [sys.executable, "-c", _CRASHING_WRITER, str(root), mode, str(size)], stdout=subprocess.PIPE, env=env
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline().decode().strip()
        assert line in ("stalled", "looping"), f"the writer did not reach its crash point (said {line!r})"
        if kill_after_s:
            threading.Event().wait(kill_after_s)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL


def _assert_whole(data: bytes, size: int, old: bytes | None) -> None:
    if old is not None and data == old:
        return
    assert len(data) == size and data.count(data[0]) == size, f"a partial object: {len(data)} bytes"


@pytest.mark.parametrize("mode", ["mid-write", "before-rename", "after-rename"])
@pytest.mark.parametrize("had_old", [True, False], ids=["over-old", "new"])
def test_fs_writer_killed_mid_put_leaves_the_old_object_or_nothing(tmp_path: Path, mode: str, had_old: bool) -> None:
    size = 1 << 20
    old = b"the old object"
    if had_old:
        LocalObjectStore(tmp_path).put("table/object", old)
    _run_and_kill(tmp_path, mode, size)
    store = LocalObjectStore(tmp_path)
    # The dead writer's temporary is gone, and was never listed.
    assert os.listdir(tmp_path / ".tmp") == []
    if mode == "after-rename":
        # Renamed, not yet fsynced: the new object is there, whole (only a power cut could still lose the rename).
        _assert_whole(store.get("table/object"), size, old=None)
    elif had_old:
        assert store.get("table/object") == old
    else:
        assert store.list("") == []
        with pytest.raises(ObjectNotFound):
            store.get("table/object")


def test_fs_writer_killed_at_random_moments_never_leaves_a_partial_object(tmp_path: Path) -> None:
    size = 4 << 20
    old = b"the old object"
    LocalObjectStore(tmp_path).put("table/object", old)
    rng = random.Random(int(os.environ.get("TIDEGATE_TEST_SEED", "1")))
    for _ in range(6):
        _run_and_kill(tmp_path, "loop", size, kill_after_s=rng.uniform(0.0, 0.15))
        store = LocalObjectStore(tmp_path)
        _assert_whole(store.get("table/object"), size, old)
        assert store.list("") == ["table/object"]
        assert os.listdir(tmp_path / ".tmp") == []


# ---- object_store_from_url and OpendalObjectStore ------------------------------------------------------------------
def test_from_url_fs_and_memory(tmp_path: Path) -> None:
    store = object_store_from_url(f"fs://{tmp_path}/objects")
    assert isinstance(store, LocalObjectStore) and store.root == tmp_path / "objects"
    store.put("x", b"1")
    assert (tmp_path / "objects" / "x").read_bytes() == b"1"
    assert isinstance(object_store_from_url("memory://"), MemoryObjectStore)


def test_from_url_s3_builds_an_opendal_store_without_showing_the_secret() -> None:
    store = object_store_from_url(
        "s3://bucket/some/prefix?endpoint=http://127.0.0.1:1&region=eu-west-1"
        "&access_key_id=KEYID&secret_access_key=TOPSECRET"
    )
    assert isinstance(store, OpendalObjectStore)
    shown = repr(store)
    assert "bucket=bucket" in shown and "root=/some/prefix/" in shown and "region=eu-west-1" in shown
    assert "TOPSECRET" not in shown and "KEYID" not in shown
    # Nothing listens on port 1: a refused connection is transient, and the error hides the secret too.
    with pytest.raises(ObjectStoreError) as raised:
        store.get("sst/1.sst")
    assert raised.value.transient and not isinstance(raised.value, ObjectNotFound)
    assert "sst/1.sst" in str(raised.value) and "TOPSECRET" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "fs://relative/dir",
        "fs:relative",
        "memory://something",
        "s3:///no-bucket",
        "s3://bucket?bucket=other",
        "gcs://bucket",
        "/plain/path",
        "s3://b?secret_access_key=TOPSECRET&bucket=x",
    ],
)
def test_from_url_refuses_bad_urls(url: str) -> None:
    with pytest.raises(ObjectStoreError) as raised:
        object_store_from_url(url)
    assert not raised.value.transient
    assert "TOPSECRET" not in str(raised.value)


def test_opendal_refuses_unknown_schemes_and_incomplete_options() -> None:
    with pytest.raises(ObjectStoreError, match="unsupported scheme"):
        OpendalObjectStore("ftp")
    with pytest.raises(ObjectStoreError, match="bucket"):
        OpendalObjectStore("s3", endpoint="http://127.0.0.1:1")
    with pytest.raises(ObjectStoreError, match="root"):
        OpendalObjectStore("fs")


def test_errors_are_internal_errors_and_survive_pickling() -> None:
    import pickle

    from tidegate.errors import InternalError

    for error in (
        ObjectNotFound("get", "sst/1.sst"),
        ObjectStoreError("put", "sst/2.sst", "disk full", transient=False),
        InjectedFault("list", "sst/", "injected fault list.fail"),
    ):
        assert isinstance(error, InternalError)
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert (str(copy), copy.path, copy.operation, copy.transient) == (
            str(error),
            error.path,
            error.operation,
            error.transient,
        )
