"""The database: catalog, meta store, state store, table logs and streaming jobs of one data dir.

Sessions (pgwire or embedded) call it for DDL, DML and reads. DDL is serialized
by one lock and is atomic across a crash: a table is recorded in the meta store
before its job starts (an empty table is "fully there"), a view only after its
job has been created and committed (before that it is absent).

At start-up every relation is rebuilt from the catalog in dependency order.
This release keeps operator state in memory, so a restart replays every table
log from its beginning; the logs and the catalog are what is durable.
"""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import pyarrow as pa

from tidegate.connectors.table_log import TableLog
from tidegate.connectors.table_writer import TableWriter
from tidegate.errors import InvalidParameterValue
from tidegate.meta.catalog import Catalog, Relation, RelationKind
from tidegate.meta.meta_store import SqliteMetaStore
from tidegate.meta.streaming import StreamingManager, storage_schema
from tidegate.state.store import MemoryStateStore
from tidegate.stream.builder import materialized_table_id

log = logging.getLogger(__name__)

SYSTEM_SETTINGS = {"barrier_interval_ms": "1000"}


class Database:
    def __init__(self, data_dir: Path | str, *, checked: bool = False, fsync: bool = True) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.meta = SqliteMetaStore(self.data_dir / "meta.db")
        self.store = MemoryStateStore()
        self.catalog = Catalog(Relation.from_json(r) for r in self.meta.load_relations())
        self.ddl_lock = threading.RLock()
        self.logs: dict[int, TableLog] = {}
        self.writers: dict[int, TableWriter] = {}
        interval = int(self.get_system_setting("barrier_interval_ms"))
        self.streaming = StreamingManager(self.store, interval, checked=checked)
        self._closed = False
        self._recover()

    # ---- start-up -----------------------------------------------------------
    def _recover(self) -> None:
        relations = self.catalog.relations()
        for relation in relations:
            if relation.kind is RelationKind.TABLE:
                self._open_table(relation)
        if relations:
            self.streaming.create_jobs(relations, self.logs, backfill=False)
            # Replay every acknowledged write before serving reads.
            self.streaming.flush()
            log.info("recovered %d relations", len(relations))

    def _open_table(self, relation: Relation) -> None:
        schema = storage_schema(relation)
        table_log = TableLog(self.data_dir / "tables" / str(relation.id), schema, fsync=self.fsync)
        self.logs[relation.id] = table_log
        self.writers[relation.id] = TableWriter(schema, relation.pk, table_log)

    # ---- settings -----------------------------------------------------------
    def get_system_setting(self, name: str) -> str:
        value = self.meta.get(f"setting.{name}")
        return value if value is not None else SYSTEM_SETTINGS[name]

    def set_system_setting(self, name: str, value: str) -> None:
        if name == "barrier_interval_ms":
            try:
                interval = int(value)
            except ValueError:
                interval = -1
            if not 10 <= interval <= 3_600_000:
                raise InvalidParameterValue(
                    f'invalid value for parameter "barrier_interval_ms": "{value}" '
                    "(an integer number of milliseconds between 10 and 3600000)"
                )
            self.streaming.set_barrier_interval_ms(interval)
            value = str(interval)
        self.meta.put(f"setting.{name}", value)

    # ---- DDL ----------------------------------------------------------------
    def next_relation_id(self) -> int:
        return self.meta.next_id()

    def create_table(self, relation: Relation) -> None:
        with self.ddl_lock:
            self.meta.put_relation(relation.to_json())
            self._open_table(relation)
            self.streaming.create_jobs([relation], self.logs, backfill=True)
            self.catalog.add(relation)

    def create_materialized_view(self, relation: Relation) -> None:
        with self.ddl_lock:
            self.streaming.create_jobs([relation], self.logs, backfill=True)
            # The backfill runs in the epoch after the barrier that added the job:
            # commit it, so the view is complete the moment CREATE returns.
            self.streaming.flush()
            self.meta.put_relation(relation.to_json())
            self.catalog.add(relation)

    def drop_relations(self, relations: list[Relation]) -> None:
        """Drop ``relations`` (dependents first, as the caller ordered them)."""
        with self.ddl_lock:
            ids = [r.id for r in relations]
            self.streaming.drop_jobs(ids)
            self.meta.delete_relations(ids)
            for relation in relations:
                self.catalog.remove(relation.id)
                table_log = self.logs.pop(relation.id, None)
                self.writers.pop(relation.id, None)
                if table_log is not None:
                    table_log.close()
                    shutil.rmtree(self.data_dir / "tables" / str(relation.id), ignore_errors=True)

    # ---- reads and writes -----------------------------------------------------
    def flush(self) -> int:
        return self.streaming.flush()

    def committed_epoch(self) -> int:
        return self.store.max_committed_epoch

    def snapshot(self, relation: Relation, epoch: int) -> pa.Table:
        """The relation's rows (all columns, hidden ones too) at a committed epoch."""
        return self.store.snapshot(materialized_table_id(relation.id), epoch)

    def writer(self, relation: Relation) -> TableWriter:
        return self.writers[relation.id]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.streaming.close()
        for table_log in self.logs.values():
            table_log.close()
        self.meta.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
