"""The durable state store: the shared buffer in memory, checkpoints as SSTs on object storage.

Data flow (DESIGN §5 steps 3-6, §6): operators seal per-epoch deltas into the
shared buffer (``MemoryStateStore``). On a checkpoint the coordinator calls
``sync(epoch)`` in a background thread — actors meanwhile process the next
epoch — which turns every delta not yet uploaded into one SST per state table
and uploads it. Then ``commit_version`` records the new SSTs and
``max_committed_epoch`` in the meta store in one write: that write is the
checkpoint's single commit point. An SST that no committed version lists is
garbage; it is deleted at start-up.

Recovery (``recover``) reads the committed version, fetches its SSTs, verifies
their checksums, and folds them into each state table's base at the committed
epoch. A missing or corrupt SST stops start-up with an error naming it: the
store never starts empty over data it cannot read.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, Protocol

import pyarrow as pa

from tidegate.errors import InternalError
from tidegate.state.object_store import ObjectNotFound, ObjectStore
from tidegate.state.sst import SstInfo, SstReader, build_sst, merge_sst_rows
from tidegate.state.store import MemoryStateStore

log = logging.getLogger(__name__)

VERSION_KEY = "state.version"
SST_PREFIX = "sst/"
# Merge a state table's SSTs into one when it has more than this many.
COMPACT_SSTS_MAX = 8


class VersionStore(Protocol):
    """Where the committed version lives (the meta store)."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


class DurableStateStore(MemoryStateStore):
    def __init__(self, objects: ObjectStore, versions: VersionStore) -> None:
        super().__init__()
        self.objects = objects
        self.versions = versions
        self._ssts: dict[int, list[SstInfo]] = {}
        self._recovered: dict[int, list[pa.Table]] = {}
        self._uploaded_epoch = 0
        self._sync_lock = threading.Lock()
        self.bytes_uploaded_total = 0

    # ---- recovery -------------------------------------------------------------
    def recover(self) -> int:
        """Load the committed version; returns its ``max_committed_epoch`` (0 when new)."""
        text = self.versions.get(VERSION_KEY)
        if text is None:
            self._collect_garbage(set())
            return 0
        version = json.loads(text)
        epoch = int(version["max_committed_epoch"])
        for raw in version["ssts"]:
            info = _info_from_json(raw)
            self._ssts.setdefault(info.table_id, []).append(info)
        for table_id, infos in self._ssts.items():
            self._recovered[table_id] = [self._read_sst(info).scan(epoch) for info in infos]
        self._max_committed_epoch = epoch
        self._uploaded_epoch = epoch
        self._collect_garbage({i.object_id for infos in self._ssts.values() for i in infos})
        log.info("recovered state at epoch %d from %d SSTs", epoch, sum(len(v) for v in self._ssts.values()))
        return epoch

    def _read_sst(self, info: SstInfo) -> SstReader:
        path = SST_PREFIX + info.object_id
        try:
            data = self.objects.get(path)
        except ObjectNotFound as error:
            raise InternalError(
                f"SST {path} of state table {info.table_id} is missing from object storage; the committed "
                "version needs it, so tidegate will not start on this data"
            ) from error
        return SstReader(data, name=path)

    def register_table(self, table_id: int, schema: pa.Schema, pk: list[int]) -> None:
        with self._lock:
            if table_id in self._tables:
                super().register_table(table_id, schema, pk)
                return
            super().register_table(table_id, schema, pk)
            scanned = self._recovered.pop(table_id, None)
            if scanned:
                history = self._tables[table_id]
                history.base = merge_sst_rows(scanned, self._max_committed_epoch).select(schema.names).cast(schema)
                history.base_epoch = self._max_committed_epoch
                history.last_sealed_epoch = self._max_committed_epoch

    # ---- checkpoints ------------------------------------------------------------
    def sync(self, epoch: int) -> list[SstInfo]:
        """Upload every sealed delta up to ``epoch`` not uploaded yet (runs off the stream loop)."""
        with self._sync_lock:
            with self._lock:
                work = []
                for table_id, history in self._tables.items():
                    deltas = [(e, d) for e, d in history.deltas if self._uploaded_epoch < e <= epoch]
                    if deltas:
                        work.append((table_id, history.schema, history.pk_indices, deltas))
            infos = []
            for table_id, schema, pk, deltas in work:
                object_id = f"{table_id}-{epoch}-{uuid.uuid4().hex[:12]}.sst"
                data, info = build_sst(object_id, table_id, schema, pk, deltas)
                self.objects.put(SST_PREFIX + object_id, data)
                self.bytes_uploaded_total += len(data)
                infos.append(info)
            return infos

    def commit_version(self, epoch: int, new_ssts: list[Any]) -> None:
        """Record the checkpoint: the single commit point of epoch ``epoch``."""
        with self._lock:
            ssts = {t: list(v) for t, v in self._ssts.items()}
            for info in new_ssts:
                ssts.setdefault(info.table_id, []).append(info)
            live = set(self._tables) | set(self._recovered)
            ssts = {t: v for t, v in ssts.items() if t in live}
            version = {
                "max_committed_epoch": epoch,
                "ssts": [_info_to_json(i) for infos in ssts.values() for i in infos],
            }
        self.versions.put(VERSION_KEY, json.dumps(version))
        with self._lock:
            self._ssts = ssts
            self._uploaded_epoch = max(self._uploaded_epoch, epoch)
        self.commit_epoch(epoch)

    def sst_count(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._ssts.values())

    def maintain(self, epoch: int) -> None:
        self.compact(epoch)

    def compact(self, epoch_committed: int, on_table: Callable[[int], bool] | None = None) -> None:
        """Merge the SSTs of tables that have too many into one each (a new version)."""
        with self._lock:
            candidates = [
                (t, list(v)) for t, v in self._ssts.items() if len(v) > COMPACT_SSTS_MAX and t in self._tables
            ]
        for table_id, infos in candidates:
            if on_table is not None and not on_table(table_id):
                continue
            with self._lock:
                history = self._tables[table_id]
                schema, pk = history.schema, history.pk_indices
            rows = self.snapshot(table_id, epoch_committed)
            delta = rows.add_column(0, "__op", pa.array([0] * rows.num_rows, pa.int8()))
            object_id = f"{table_id}-{epoch_committed}-c{uuid.uuid4().hex[:12]}.sst"
            data, info = build_sst(object_id, table_id, schema, pk, [(epoch_committed, delta)])
            self.objects.put(SST_PREFIX + object_id, data)
            with self._lock:
                replaced = {i.object_id for i in infos}
                kept = [i for i in self._ssts.get(table_id, []) if i.object_id not in replaced]
                self._ssts[table_id] = [info, *kept]
                version = {
                    "max_committed_epoch": self._max_committed_epoch,
                    "ssts": [_info_to_json(i) for v in self._ssts.values() for i in v],
                }
            self.versions.put(VERSION_KEY, json.dumps(version))
            for object_id in replaced:
                self.objects.delete(SST_PREFIX + object_id)

    def _collect_garbage(self, referenced: set[str]) -> None:
        for path in self.objects.list(SST_PREFIX):
            if path[len(SST_PREFIX) :] not in referenced:
                self.objects.delete(path)


def _info_to_json(info: SstInfo) -> dict[str, Any]:
    data = asdict(info)
    data["first_key"] = info.first_key.hex()
    data["last_key"] = info.last_key.hex()
    return data


def _info_from_json(data: dict[str, Any]) -> SstInfo:
    values = dict(data)
    values["first_key"] = bytes.fromhex(values["first_key"])
    values["last_key"] = bytes.fromhex(values["last_key"])
    return SstInfo(**values)
