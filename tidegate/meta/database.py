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

from tidegate.common.guarantee import DeliveryGuarantee, parse_delivery_guarantee
from tidegate.config import parse_size
from tidegate.connectors.read_positions import ReadPositions
from tidegate.connectors.table_log import TableLog
from tidegate.connectors.table_writer import TableWriter
from tidegate.errors import FeatureNotSupported, InvalidParameterValue
from tidegate.meta.catalog import Catalog, Relation, RelationKind
from tidegate.meta.data_dir_lock import DataDirLock
from tidegate.meta.meta_store import meta_store_from_url
from tidegate.meta.streaming import StreamingManager, storage_schema
from tidegate.state.durable_store import DurableStateStore
from tidegate.state.object_store import object_store_from_url, without_credentials
from tidegate.state.object_store_faults import RetryingObjectStore
from tidegate.state.store import MemoryStateStore
from tidegate.stream.builder import materialized_table_id

log = logging.getLogger(__name__)

# max_replay_bytes: how far a table's log may run past its last checkpoint before writes wait
# (TableWriter's backpressure), which bounds what a recovery replays.
# delivery_guarantee: what jobs created from now on run with, unless they name one (DESIGN §5.8).
SYSTEM_SETTINGS = {
    "barrier_interval_ms": "1000",
    "checkpoint_frequency": "1",
    "max_replay_bytes": str(64 * 2**20),
    "delivery_guarantee": DeliveryGuarantee.EXACTLY_ONCE.value,
}
NO_CHECKPOINTS = "none"  # --state-store none: state in memory, rebuilt from the table logs at start
# Trim table logs below the committed offsets once every this many checkpoints.
LOG_TRUNCATE_EVERY_COMMITS = 10


class Database:
    def __init__(
        self,
        data_dir: Path | str,
        *,
        checked: bool = False,
        fsync: bool = True,
        state_store_url: str | None = None,
        meta_store_url: str | None = None,
        cache_budget_bytes: int | None = None,
    ) -> None:
        """``cache_budget_bytes``: memory for state caches, half for the state store's block cache and
        half for each stateful operator's cache; None keeps everything in memory."""
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._lock = DataDirLock(self.data_dir)
        try:
            self._open(fsync, checked, state_store_url, meta_store_url, cache_budget_bytes)
        except BaseException:
            self._lock.release()
            raise

    def _open(
        self,
        fsync: bool,
        checked: bool,
        state_store_url: str | None,
        meta_store_url: str | None,
        cache_budget_bytes: int | None,
    ) -> None:
        self.fsync = fsync
        self.meta = meta_store_from_url(meta_store_url, self.data_dir)
        self.store = self._open_state_store(state_store_url, cache_budget_bytes)
        # Row ids of tables without a primary key are unique across starts without a scan.
        self._row_id_generation = int(self.meta.get("row_id_generation") or 0) + 1
        self.meta.put("row_id_generation", str(self._row_id_generation))
        self.catalog = Catalog(Relation.from_json(r) for r in self.meta.load_relations())
        self.ddl_lock = threading.RLock()
        self.logs: dict[int, TableLog] = {}
        self.writers: dict[int, TableWriter] = {}
        interval = int(self.get_system_setting("barrier_interval_ms"))
        operator_cache_bytes = cache_budget_bytes // 2 if cache_budget_bytes else None
        from tidegate.connectors.sinks import make_sink_target

        self.streaming = StreamingManager(
            self.store,
            interval,
            checked=checked,
            operator_cache_bytes=operator_cache_bytes,
            # at_most_once sources keep their read positions here, across recoveries and restarts.
            positions=ReadPositions(self.data_dir / "read_positions"),
            make_sink_target=make_sink_target,
        )
        self.streaming.coordinator.checkpoint_frequency = int(self.get_system_setting("checkpoint_frequency"))
        self._closed = False
        self._commits = 0
        self._recover()

    # ---- start-up -----------------------------------------------------------
    def _open_state_store(self, url: str | None, cache_budget_bytes: int | None = None) -> MemoryStateStore:
        """The state store this data dir uses; the choice is kept, since switching would lose state.

        By default checkpoints go to ``DATA_DIR/objects`` and a start resumes from the last
        one. ``none`` keeps state in memory only: no checkpoints, the table logs are never
        trimmed and every start replays them from the beginning. A data dir without
        checkpoints may move to a checkpointing store (its logs are whole); never back.
        """
        saved = self.meta.get("setting.state_store_url")
        url = url or saved or "fs"
        if url == "fs":
            url = f"fs://{self.data_dir / 'objects'}"
        # Credentials are given at each start (option, config file or environment), never kept.
        kept = without_credentials(url)
        if saved and saved != NO_CHECKPOINTS and kept != without_credentials(saved):
            raise InvalidParameterValue(
                f"this data dir keeps its state in {without_credentials(saved)}; it cannot be switched to {kept}"
            )
        self.meta.put("setting.state_store_url", kept)
        if url == NO_CHECKPOINTS:
            return MemoryStateStore()
        options = {"block_cache_bytes": cache_budget_bytes // 2} if cache_budget_bytes else {}
        store = DurableStateStore(RetryingObjectStore(object_store_from_url(url)), self.meta, **options)
        store.recover()
        return store

    def _recover(self) -> None:
        """Rebuild every job at the committed checkpoint; sources replay their logs from there."""
        relations = self.catalog.relations()
        # Tables written by INSERT have a log; a table fed by a connector reads its connector instead.
        tables = [r for r in relations if r.kind is RelationKind.TABLE and not r.plan]
        for relation in tables:
            schema = storage_schema(relation)
            self.logs[relation.id] = TableLog(self.data_dir / "tables" / str(relation.id), schema, fsync=self.fsync)
        # Sources have no job: the views reading them run their generators.
        with_jobs = [r for r in relations if r.kind is not RelationKind.SOURCE]
        if with_jobs:
            self.streaming.create_jobs(with_jobs, self.logs, backfill=False)
        epoch = self.store.max_committed_epoch
        for relation in tables:
            self.writers[relation.id] = self._writer(relation)
        # State of a relation the catalog does not list (a CREATE or DROP cut short by a crash) is garbage.
        listed = {r.id for r in relations}
        orphans = [t for t in self.store.recovered_table_ids() if t >> 16 not in listed]
        for table_id in orphans:
            self.store.drop_table(table_id)
        if orphans and not with_jobs:
            # No job will checkpoint: commit a version without them now.
            self.store.commit_version(epoch, self.store.sync(epoch))
        if isinstance(self.store, DurableStateStore):
            self.streaming.coordinator.on_commit.append(self._after_commit)
        if with_jobs:
            # Replay every acknowledged write past the checkpoint before serving reads.
            self.streaming.flush()
            log.info("recovered %d relations at epoch %d", len(relations), epoch)

    def _committed_offset(self, relation: Relation, epoch: int) -> int:
        """How far the table's source had read its log at checkpoint ``epoch``."""
        if not epoch:
            return 0
        rows = self.store.snapshot(materialized_table_id(relation.id) | 1, epoch)
        return int(rows.column("offset")[0].as_py()) if rows.num_rows else 0

    def _after_commit(self, epoch: int) -> None:
        """Runs on the stream loop after each checkpoint commit: trim logs the checkpoint made redundant."""
        self._commits += 1
        if self._commits % LOG_TRUNCATE_EVERY_COMMITS:
            return
        for relation_id, table_log in list(self.logs.items()):
            relation = self.catalog.get_by_id(relation_id)
            if relation is None:
                continue
            writer = self.writers.get(relation_id)
            # Readers of the log tail hold the writer's lock; trim next time rather than wait on the loop.
            if writer is None or not writer.lock.acquire(blocking=False):
                continue
            try:
                table_log.truncate_before(self._committed_offset(relation, epoch))
            except Exception:  # trimming is an optimisation; a failure only keeps old segments
                log.exception("truncating the log of %s failed", relation.name)
            finally:
                writer.lock.release()

    def _open_table(self, relation: Relation) -> None:
        schema = storage_schema(relation)
        table_log = TableLog(self.data_dir / "tables" / str(relation.id), schema, fsync=self.fsync)
        self.logs[relation.id] = table_log
        self.writers[relation.id] = self._writer(relation)

    def _writer(self, relation: Relation) -> TableWriter:
        return TableWriter(
            storage_schema(relation),
            relation.pk,
            self.logs[relation.id],
            self.store,
            materialized_table_id(relation.id),
            lambda epoch: self._committed_offset(relation, epoch),
            self._row_id_generation,
            max_replay_bytes=self._max_replay_bytes(),
            job_failure=lambda: self._job_failure(relation.id),
            name=relation.name,
        )

    def _max_replay_bytes(self) -> int | None:
        """The writers' backpressure bound; none without checkpoints (every start replays whole logs)."""
        if not isinstance(self.store, DurableStateStore):
            return None
        return int(self.get_system_setting("max_replay_bytes"))

    def _job_failure(self, relation_id: int) -> str | None:
        failure = self.streaming.failure_of(relation_id)
        return None if failure is None else str(failure.error)

    # ---- settings -----------------------------------------------------------
    def get_system_setting(self, name: str) -> str:
        value = self.meta.get(f"setting.{name}")
        return value if value is not None else SYSTEM_SETTINGS[name]

    def set_system_setting(self, name: str, value: str) -> None:
        if name == "barrier_interval_ms":
            interval = _bounded_int(name, value, 10, 3_600_000, "a number of milliseconds")
            self.streaming.set_barrier_interval_ms(interval)
            value = str(interval)
        elif name == "checkpoint_frequency":
            frequency = _bounded_int(name, value, 1, 1_000_000, "a number of barriers")
            self.streaming.coordinator.checkpoint_frequency = frequency
            value = str(frequency)
        elif name == "max_replay_bytes":
            value = str(_size_setting(name, value, 2**20))
        elif name == "delivery_guarantee":
            value = parse_delivery_guarantee(value).value
        self.meta.put(f"setting.{name}", value)
        if name == "max_replay_bytes":
            bound = self._max_replay_bytes()
            for writer in self.writers.values():
                writer.max_replay_bytes = bound

    # ---- DDL ----------------------------------------------------------------
    def next_relation_id(self) -> int:
        return self.meta.next_id()

    def create_table(self, relation: Relation) -> None:
        with self.ddl_lock:
            self.meta.put_relation(relation.to_json())
            self._open_table(relation)
            try:
                self.streaming.create_jobs([relation], self.logs, backfill=True)
            except BaseException:
                # Fully there or absent: the job did not start, so the table is not created.
                self.meta.delete_relations([relation.id])
                self.logs.pop(relation.id).close()
                self.writers.pop(relation.id, None)
                raise
            self.catalog.add(relation)

    def create_connector_table(self, relation: Relation) -> None:
        """A table fed by a connector: created like a view (its job reads the connector), no log."""
        self.create_materialized_view(relation)

    def create_sink(self, relation: Relation) -> None:
        """A sink: created like a view; the first checkpoint commits what it backfilled, which
        its delivery then sends to the target."""
        self.create_materialized_view(relation)

    def create_source(self, relation: Relation) -> None:
        """A source is only a catalog entry: no storage, no job."""
        with self.ddl_lock:
            self.meta.put_relation(relation.to_json())
            self.catalog.add(relation)

    def create_materialized_view(self, relation: Relation) -> None:
        """A view (or any relation whose job has a plan): fully there once CREATE returns, or absent."""
        with self.ddl_lock:
            self.streaming.create_jobs([relation], self.logs, backfill=True)
            try:
                # The backfill runs in the epoch after the barrier that added the job:
                # commit it, so the view is complete the moment CREATE returns.
                self.streaming.flush()
            except BaseException:
                # Absent, then: stop the job and forget its state.
                for table_id in self.streaming.drop_jobs([relation.id]):
                    self.store.drop_table(table_id)
                raise
            self.meta.put_relation(relation.to_json())
            self.catalog.add(relation)

    def drop_relations(self, relations: list[Relation]) -> None:
        """Drop ``relations`` (dependents first, as the caller ordered them)."""
        with self.ddl_lock:
            ids = [r.id for r in relations]
            state_tables = self.streaming.drop_jobs(ids)
            self.meta.delete_relations(ids)
            for table_id in state_tables:
                self.store.drop_table(table_id)
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
        if relation.plan:
            raise FeatureNotSupported(
                f"table \"{relation.name}\" is fed by connector '{relation.options.get('connector')}': "
                "INSERT, UPDATE, DELETE and COPY are not allowed on it"
            )
        return self.writers[relation.id]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.streaming.coordinator.failure is None and any(
            r.kind is not RelationKind.SOURCE for r in self.catalog.relations()
        ):
            # A last checkpoint, so the next start has nothing to replay.
            try:
                self.streaming.flush()
            except Exception:
                log.exception("the final checkpoint failed; the next start replays from the previous one")
        self.streaming.close()
        for table_log in self.logs.values():
            table_log.close()
        self.meta.close()
        self._lock.release()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _size_setting(name: str, value: str, low: int) -> int:
    """A byte size given as a number of bytes or with a unit (``64MiB``), at least ``low``."""
    try:
        size = parse_size(value)
    except InvalidParameterValue:
        size = 0
    if size < low:
        raise InvalidParameterValue(
            f'invalid value for parameter "{name}": "{value}" (a size such as 64MiB or a number of bytes, '
            f"at least {low // 2**20} MiB)"
        )
    return size


def _bounded_int(name: str, value: str, low: int, high: int, what: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if not low <= number <= high:
        raise InvalidParameterValue(
            f'invalid value for parameter "{name}": "{value}" (an integer, {what}, between {low} and {high})'
        )
    return number
