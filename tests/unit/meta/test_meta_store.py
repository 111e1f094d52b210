"""Unit tests of the meta store: both implementations behave alike; the SQLite one
also keeps its promises across reopen and SIGKILL."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator

import pytest

from tidegate.common.types import parse_type_name
from tidegate.errors import InternalError
from tidegate.meta.catalog import ColumnDef, Relation, RelationKind
from tidegate.meta.meta_store import (
    FIRST_RELATION_ID,
    MemoryMetaStore,
    MetaStore,
    SqliteMetaStore,
)

REPO_ROOT = pathlib.Path(__file__).resolve().parents[3]


def relation_json(relation_id: int, name: str = "", **extra: object) -> dict[str, object]:
    relation = Relation(
        id=relation_id,
        name=name or f"r{relation_id}",
        kind=RelationKind.TABLE,
        columns=[
            ColumnDef("_row_id", parse_type_name("bigint"), nullable=False, hidden=True),
            ColumnDef("v", parse_type_name("numeric(38,10)")),
        ],
        pk=[0],
    )
    return {**relation.to_json(), **extra}


class Boom(Exception):
    pass


@pytest.fixture(params=["sqlite", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: pathlib.Path) -> Iterator[Callable[[], MetaStore]]:
    """A factory: each call opens the same store again (memory: the same object)."""
    opened: list[MetaStore] = []
    memory = MemoryMetaStore()

    def make() -> MetaStore:
        store: MetaStore = memory
        if request.param == "sqlite":
            store = SqliteMetaStore.in_data_dir(tmp_path / "data")
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_relation_round_trip(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    assert store.load_relations() == []
    first, second = relation_json(1002, plan={"nested": [1, {"x": None}]}), relation_json(1001)
    store.put_relation(first)
    store.put_relation(second)
    assert store.load_relations() == [second, first]
    assert Relation.from_json(store.load_relations()[0]).columns[1].type == parse_type_name("numeric(38,10)")
    renamed = relation_json(1002, name="renamed")
    store.put_relation(renamed)
    assert store.load_relations() == [second, renamed]
    store.delete_relations([1001, 1002, 4242])
    assert store.load_relations() == []


def test_relation_options_round_trip_and_older_json_reads_without_them() -> None:
    source = Relation.from_json(relation_json(1003, kind="source", options={"connector": "nexmark"}))
    assert source.kind is RelationKind.SOURCE and source.options == {"connector": "nexmark"}
    assert Relation.from_json(source.to_json()) == source
    older = relation_json(1004)
    del older["options"]  # written before sources existed
    assert Relation.from_json(older).options == {}


def test_facts_round_trip(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    assert store.get("max_committed_epoch") is None
    store.put("max_committed_epoch", "123")
    store.put("setting.delivery_guarantee", "exactly_once")
    store.put("max_committed_epoch", "456")
    assert store.get("max_committed_epoch") == "456"
    store.delete("max_committed_epoch")
    assert store.get("max_committed_epoch") is None
    assert store.get("setting.delivery_guarantee") == "exactly_once"


def test_next_id_is_never_reused(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    ids = [store.next_id() for _ in range(3)]
    assert ids == [FIRST_RELATION_ID, FIRST_RELATION_ID + 1, FIRST_RELATION_ID + 2]
    for relation_id in ids:
        store.put_relation(relation_json(relation_id))
    store.delete_relations(ids)
    # An id stored without next_id (a restore) is not handed out either.
    store.put_relation(relation_json(5000))
    store.delete_relations([5000])
    assert store.next_id() == 5001


def test_next_id_survives_reopen(tmp_path: pathlib.Path) -> None:
    with_ids: list[int] = []
    for _ in range(3):
        store = SqliteMetaStore(tmp_path / "meta.db")
        relation_id = store.next_id()
        with_ids.append(relation_id)
        store.put_relation(relation_json(relation_id))
        store.delete_relations([relation_id])
        store.close()
    assert with_ids == sorted(set(with_ids))


def test_everything_survives_reopen(tmp_path: pathlib.Path) -> None:
    store = SqliteMetaStore.in_data_dir(tmp_path)
    with store.transaction():
        store.put_relation(relation_json(1001))
        store.put("k", "v")
    store.close()
    assert (tmp_path / "meta.db").exists()
    store = SqliteMetaStore.in_data_dir(tmp_path)
    assert store.load_relations() == [relation_json(1001)]
    assert store.get("k") == "v"
    store.close()


def test_transaction_is_all_or_nothing(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    store.put_relation(relation_json(1001))
    with pytest.raises(Boom), store.transaction():
        store.put_relation(relation_json(1002))
        store.delete_relations([1001])
        store.put("k", "v")
        raise Boom
    assert store.load_relations() == [relation_json(1001)]
    assert store.get("k") is None
    with store.transaction():
        store.put_relation(relation_json(1002))
        store.put("k", "v")
    assert [r["id"] for r in store.load_relations()] == [1001, 1002]
    assert store.get("k") == "v"


def test_nested_transaction_rolls_back_alone(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    with store.transaction():
        store.put("outer", "1")
        with pytest.raises(Boom), store.transaction():
            store.put("inner", "1")
            raise Boom
        with store.transaction():
            store.put("inner", "2")
    assert (store.get("outer"), store.get("inner")) == ("1", "2")


def test_next_id_is_refused_inside_a_transaction(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    with pytest.raises(InternalError, match="before opening the transaction"), store.transaction():
        store.next_id()


def test_closed_store_refuses_calls(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    store.close()
    with pytest.raises(InternalError, match="closed"):
        store.get("k")


def test_threads_share_a_store(make_store: Callable[[], MetaStore]) -> None:
    store = make_store()
    ids: list[int] = []
    errors: list[BaseException] = []

    def create_relations() -> None:
        try:
            for _ in range(20):
                relation_id = store.next_id()
                with store.transaction():
                    store.put_relation(relation_json(relation_id))
                    store.put(f"owner.{relation_id}", threading.current_thread().name)
                ids.append(relation_id)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=create_relations) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(ids)) == 120
    assert [r["id"] for r in store.load_relations()] == sorted(ids)


def test_not_a_database_is_an_error_naming_the_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "meta.db"
    path.write_bytes(b"this is not an SQLite database, not even close" * 100)
    with pytest.raises(InternalError, match=str(path)):
        SqliteMetaStore(path)


CHILD = """
import pathlib, sys, time
sys.path.insert(0, sys.argv[2])
from tidegate.meta.meta_store import SqliteMetaStore
store = SqliteMetaStore(pathlib.Path(sys.argv[1]))
mode = sys.argv[3]
if mode == "hang-in-transaction":
    store.put("committed", "yes")
    with store.transaction():
        store.put_relation({"id": 1001, "name": "t"})
        store.put("uncommitted", "yes")
        print("inside", flush=True)
        time.sleep(60)
else:
    generation = 0
    while True:
        generation += 1
        with store.transaction():
            for key in range(200):
                store.put(f"key{key}", str(generation))
        print(generation, flush=True)
"""


def run_child(path: pathlib.Path, mode: str, lines: int) -> list[str]:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(REPO_ROOT), mode], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    seen: list[str] = []
    try:
        while len(seen) < lines:
            line = child.stdout.readline()
            assert line, "the child died"
            seen.append(line.strip())
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    return seen


def test_sigkill_inside_a_transaction_leaves_nothing(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "meta.db"
    assert run_child(path, "hang-in-transaction", 1) == ["inside"]
    store = SqliteMetaStore(path)
    assert store.get("committed") == "yes"
    assert store.get("uncommitted") is None
    assert store.load_relations() == []
    store.close()


def test_sigkill_between_commits_keeps_transactions_whole(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "meta.db"
    generations = run_child(path, "commit-forever", 5)
    store = SqliteMetaStore(path)
    values = {store.get(f"key{key}") for key in range(200)}
    store.close()
    assert len(values) == 1, values
    [value] = values
    assert value is not None and int(value) >= int(generations[-1])


def test_sqlite_settings(tmp_path: pathlib.Path) -> None:
    store = SqliteMetaStore(tmp_path / "meta.db")
    connection = store._connection
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    store.close()
    assert os.path.exists(tmp_path / "meta.db")
