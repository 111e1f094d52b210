"""The durable state store: an LSM on object storage with a bounded block cache.

Data flow (DESIGN §5 steps 3-6, §6)::

    seal ──▶ shared buffer (sealed deltas, in memory)
                 │ sync(N): one L0 SST per changed table, built and uploaded off the lock
                 ▼
             commit_version(N): one meta-store write lists the SSTs by level and
                 max_committed_epoch = N; the uploaded deltas leave memory
                 │ maintain(N): tables with more than l0_ssts_max L0 SSTs are
                 ▼ compacted into their L1 run (compaction.py), one more version write
             object storage  ◀── reads through the block cache (block_cache.py)

Where rows live. A state table's rows are its sealed deltas not yet in a
committed version (memory), its L0 SSTs (one per checkpoint, overlapping
key ranges, oldest first) and its L1 run (disjoint key ranges, in key order).
The sources hold disjoint epoch ranges — deltas newest, then L0 newest first,
then L1 — so a read lists them in that order and the first version of a key
at or below the read epoch is the newest (``versions.py``). Only the SSTs'
metadata (footer, block index, bloom filter) stays in memory for good; blocks
are read on demand through the block cache, a bytes-bounded LRU. The blocks a
checkpoint writes go into the cache too when the table is read by point
lookups, and a compaction's when the table is read at all: tables nobody
reads (a bulk load's) cost the checkpoint no cache work. When the whole state
fits in its budget, everything stays in memory and repeated reads touch
object storage no more.

* ``get_rows`` (point lookups, per input chunk): keys are encoded once,
  hashed once, then per SST a range check, one vectorized bloom probe and a
  bisection of the block index pick the few blocks that may hold them. Cost
  follows the number of keys, not the table's size.
* ``get_prefix_rows`` (all rows of a group, for joins and top-N): each
  distinct prefix is the key range [prefix, prefix_end); per SST the sorted
  ranges are matched to blocks through the block index in one pass, and only
  the blocks they overlap are read (bloom filters hash whole keys: no help).
* ``snapshot`` (SELECT, backfill): every visible block and delta, merged
  vectorized; the result at a committed epoch is cached (in the same budget)
  and reused while the table does not change.

Memory is freed when a checkpoint commits (its deltas drop out of the shared
buffer), when the block cache evicts, and when replaced SSTs are deleted.

Threads. The stream thread seals and reads; the checkpoint thread (one
thread, see ``meta/barrier.py``) runs ``sync``, ``commit_version`` and
``maintain`` one after the other, never two at once — so the SST lists
change only on that thread, and a compaction cannot race a ``sync``. The
store lock is held only to copy or swap short lists; building, uploading,
merging and compacting happen outside it. A read counts itself on every SST
it uses; an SST that a committed version no longer lists is deleted by the
next ``maintain`` once no read uses it.

Recovery (``recover``) reads the committed version, opens every listed SST
(footer, block index and bloom filter, each checksum verified) but reads no
rows. A missing SST or a corrupt footer, index or bloom filter stops start-up
with an error naming the object; a corrupt block found later fails that read
with ``SstCorrupted`` naming the SST — never wrong data. SSTs that no
committed version lists (an upload whose commit never happened) are deleted.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from tidegate.common.keys import encode_keys
from tidegate.errors import InternalError
from tidegate.state.block_cache import BlockCache, BlockCacheStats
from tidegate.state.compaction import compact_levels
from tidegate.state.object_store import ObjectNotFound, ObjectStore, ObjectStoreError
from tidegate.state.sst import (
    DELETING_OPS,
    SstCorrupted,
    SstInfo,
    SstReader,
    block_schema,
    build_sst_from_deltas,
    encode_sst,
    key_hashes,
    sorted_versions,
)
from tidegate.state.store import MemoryStateStore, encode_prefixes
from tidegate.state.versions import Keys, Run, newest_visible, prefix_ends

log = logging.getLogger(__name__)

__all__ = ["DurableStateStore", "DurableStoreStats", "VersionStore"]

VERSION_KEY = "state.version"
SST_PREFIX = "sst/"
L0, L1 = 0, 1
DEFAULT_BLOCK_CACHE_BYTES = 256 * 2**20
DEFAULT_L0_SSTS_MAX = 8
DEFAULT_SST_BYTES_TARGET = 64 * 2**20
DEFAULT_BLOCK_ROWS_MAX = 16384
_DELETING = np.array(DELETING_OPS, np.int8)


class VersionStore(Protocol):
    """Where the committed version lives (the meta store)."""

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str) -> None: ...


@dataclass(eq=False)
class _Sst:
    """A live SST: its metadata in memory; ``readers`` counts reads using it (under the store lock)."""

    info: SstInfo
    level: int
    reader: SstReader
    block_first_keys: Keys
    block_last_keys: Keys
    readers: int = 0

    @property
    def object_id(self) -> str:
        return self.info.object_id

    @property
    def path(self) -> str:
        return SST_PREFIX + self.info.object_id


@dataclass(eq=False)
class _Delta:
    """One epoch's sealed writes of one table, in the shared buffer until a version lists them."""

    epoch: int
    data: pa.Table  # __op + the table's columns, in write order
    _run: Run | None = None

    def run(self, schema: pa.Schema, pk: list[int]) -> Run:
        """The writes as a sorted run (the last write of each key), built once, on first read."""
        if self._run is None:
            self._run = Run.of(sorted_versions(schema, pk, [(self.epoch, self.data)]))
        return self._run

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes) + (self._run.nbytes if self._run is not None else 0)


@dataclass(eq=False)
class _Table:
    table_id: int
    schema: pa.Schema
    pk: list[int]
    registered: bool
    deltas: list[_Delta] = field(default_factory=list)  # ascending epoch
    l0: list[_Sst] = field(default_factory=list)  # oldest first
    l1: list[_Sst] = field(default_factory=list)  # key order, disjoint
    last_sealed_epoch: int = 0
    # Reads below this epoch raise: versions below it were compacted away (or predate recovery).
    readable_from_epoch: int = 0
    # The newest epoch that wrote a row: a snapshot cached at E serves every E' while nothing changed.
    changed_epoch: int = 0
    # Whether reads of this table go to its SSTs: only then do the blocks a checkpoint or a compaction
    # writes go into the cache as well (holding them costs memory and, for bulk loads, checkpoint time).
    point_read: bool = False
    scanned: bool = False

    @property
    def block_schema(self) -> pa.Schema:
        return block_schema(self.schema)


@dataclass(frozen=True)
class _Upload:
    """One L0 SST that ``sync`` built and uploaded; ``commit_version`` lists it."""

    table: _Table
    sst: _Sst
    blocks: list[pa.Table]
    deltas: tuple[_Delta, ...]

    @property
    def size_bytes(self) -> int:  # read by the barrier coordinator's checkpoint record
        return self.sst.info.size_bytes


@dataclass(frozen=True)
class _ReadView:
    """What one read uses, taken under the lock: deltas and SSTs newest first, then the L1 run."""

    table: _Table
    deltas: list[_Delta]
    l0: list[_Sst]
    l1: list[_Sst]
    committed_epoch: int
    changed_epoch: int


@dataclass(frozen=True)
class DurableStoreStats:
    """Counters for the system views and the benchmarks."""

    bytes_uploaded_checkpoint: int
    bytes_uploaded_compaction: int
    compactions: int
    compaction_failures: int
    sst_count_by_level: dict[int, int]
    sst_bytes_by_level: dict[int, int]
    shared_buffer_bytes: int
    metadata_bytes: int
    block_cache: BlockCacheStats


class DurableStateStore(MemoryStateStore):
    """State tables as an LSM on object storage; see the module docstring."""

    def __init__(
        self,
        objects: ObjectStore,
        versions: VersionStore,
        *,
        block_cache_bytes: int = DEFAULT_BLOCK_CACHE_BYTES,
        l0_ssts_max: int = DEFAULT_L0_SSTS_MAX,
        sst_bytes_target: int = DEFAULT_SST_BYTES_TARGET,
        block_rows_max: int = DEFAULT_BLOCK_ROWS_MAX,
    ) -> None:
        super().__init__()
        assert l0_ssts_max >= 1 and sst_bytes_target > 0 and block_rows_max > 0
        self.objects = objects
        self.versions = versions
        self.cache = BlockCache(block_cache_bytes)
        self.l0_ssts_max = l0_ssts_max
        self.sst_bytes_target = sst_bytes_target
        self.block_rows_max = block_rows_max
        self._state: dict[int, _Table] = {}
        # SSTs of dropped tables that the committed version may still list: deleted after the next version.
        self._unlisted: list[_Sst] = []
        # SSTs no committed version lists: deleted by maintain once no read uses them.
        self._retired: list[_Sst] = []
        # Object names: a counter kept in the version, so a name a committed version lists is never reused.
        self._next_sequence = 0
        self._sync_lock = threading.Lock()
        self._bytes_uploaded_checkpoint = 0
        self._bytes_uploaded_compaction = 0
        self._compactions = 0
        self._compaction_failures = 0

    # ---- recovery -------------------------------------------------------------
    def recover(self) -> int:
        """Open the committed version's SSTs (metadata only); returns its ``max_committed_epoch`` (0 when new)."""
        text = self.versions.get(VERSION_KEY)
        if text is None:
            self._collect_garbage(set())
            return 0
        version = json.loads(text)
        epoch = int(version["max_committed_epoch"])
        self._next_sequence = int(version.get("next_sequence", 0))
        by_table: dict[int, list[_Sst]] = {}
        for raw in version["ssts"]:
            info, level = _info_from_json(raw)
            by_table.setdefault(info.table_id, []).append(self._open_sst(info, level))
        with self._lock:
            for table_id, ssts in by_table.items():
                self._state[table_id] = _recovered_table(table_id, ssts, epoch)
            self._max_committed_epoch = epoch
        self._collect_garbage({s.object_id for ssts in by_table.values() for s in ssts})
        log.info("recovered state at epoch %d: %d SSTs, no rows read", epoch, sum(len(v) for v in by_table.values()))
        return epoch

    def _open_sst(self, info: SstInfo, level: int) -> _Sst:
        path = SST_PREFIX + info.object_id
        try:
            size = self.objects.size(path)
        except ObjectNotFound as error:
            raise InternalError(
                f"SST {path} of state table {info.table_id} is missing from object storage; the committed "
                "version needs it, so tidegate will not start on this data"
            ) from error
        reader = SstReader(self._fetcher(path), size=size, name=path)
        _ = reader.bloom  # verify its checksum now, not on the first lookup
        stored = (reader.object_id, reader.table_id, reader.row_count, size)
        listed = (info.object_id, info.table_id, info.row_count, info.size_bytes)
        if stored != listed:
            raise SstCorrupted(f"SST {path} is not the object the committed version lists: {stored} != {listed}")
        return _Sst(info, level, reader, Keys.of(reader.block_first_keys), Keys.of(reader.block_last_keys))

    def _fetcher(self, path: str) -> Callable[[int, int], bytes]:
        def fetch(start: int, length: int) -> bytes:
            try:
                return self.objects.get_range(path, start, length)
            except ObjectNotFound as error:
                raise InternalError(
                    f"SST {path} is missing from object storage although a committed version lists it"
                ) from error

        return fetch

    def register_table(self, table_id: int, schema: pa.Schema, pk: list[int]) -> None:
        with self._lock:
            table = self._state.get(table_id)
            if table is None:
                self._state[table_id] = _Table(table_id, schema, list(pk), registered=True)
                return
            if table.registered:
                assert table.schema.equals(schema), (table_id, table.schema, schema)
                return
            # Recovered from SSTs: the operator now states its schema; they must agree.
            if table.schema.names != schema.names or table.pk != list(pk):
                raise InternalError(
                    f"state table {table_id} was checkpointed with columns {table.schema.names} and key "
                    f"{table.pk}, but is registered with {schema.names} and key {list(pk)}"
                )
            table.schema = schema
            table.registered = True

    # ---- writes -------------------------------------------------------------------
    def seal(self, table_id: int, epoch: int, delta: pa.Table) -> None:
        with self._lock:
            table = self._registered(table_id)
            if table.last_sealed_epoch >= epoch:
                raise InternalError(
                    f"state table {table_id}: epoch {epoch} sealed after epoch {table.last_sealed_epoch}"
                )
            table.last_sealed_epoch = epoch
            if delta.num_rows:
                table.deltas.append(_Delta(epoch, delta))
                table.changed_epoch = max(table.changed_epoch, epoch)

    def drop_table(self, table_id: int) -> None:
        with self._lock:
            table = self._state.pop(table_id, None)
            if table is None:
                return
            # The committed version still lists these; the next one will not, then they go.
            self._unlisted.extend(table.l0 + table.l1)
        self.cache.discard_owner(_snapshot_owner(table_id))

    def reset_to_committed(self) -> int:
        with self._lock:
            committed = self._max_committed_epoch
            for table in self._state.values():
                table.deltas = [d for d in table.deltas if d.epoch <= committed]
                table.last_sealed_epoch = min(table.last_sealed_epoch, committed)
                epochs = [d.epoch for d in table.deltas] + [s.info.max_epoch for s in table.l0 + table.l1]
                table.changed_epoch = max(epochs, default=0)
            return committed

    def table_ids(self) -> list[int]:
        with self._lock:
            return sorted(t for t, table in self._state.items() if table.registered)

    def recovered_table_ids(self) -> list[int]:
        with self._lock:
            return sorted(t for t, table in self._state.items() if not table.registered)

    # ---- checkpoints ------------------------------------------------------------
    def sync(self, epoch: int) -> list[Any]:
        """Build and upload one L0 SST per table from its deltas up to ``epoch`` (checkpoint thread, off the lock)."""
        with self._sync_lock:
            with self._lock:
                work = []
                for table in self._state.values():
                    deltas = tuple(d for d in table.deltas if d.epoch <= epoch)
                    if deltas:
                        work.append((table, table.schema, list(table.pk), deltas))
            uploads = []
            for table, schema, pk, deltas in work:
                object_id = self._new_object_id(table.table_id, epoch, L0)
                built = build_sst_from_deltas(
                    object_id,
                    table.table_id,
                    schema,
                    pk,
                    [(d.epoch, d.data) for d in deltas],
                    block_rows_max=self.block_rows_max,
                )
                sst = self._upload(built.data, built.info, L0)
                with self._lock:
                    self._bytes_uploaded_checkpoint += len(built.data)
                uploads.append(_Upload(table, sst, built.blocks if table.point_read else [], deltas))
            return uploads

    def commit_version(self, epoch: int, new_ssts: list[Any]) -> None:
        """Record checkpoint ``epoch``: the single commit point. The deltas it lists then leave memory."""
        uploads: list[_Upload] = list(new_ssts)
        with self._lock:
            listed = {id(u.sst) for u in uploads if self._state.get(u.table.table_id) is u.table}
            extra_l0: dict[int, list[_Sst]] = {}
            for upload in uploads:
                if id(upload.sst) in listed:
                    extra_l0.setdefault(upload.table.table_id, []).append(upload.sst)
            version = self._version_json(epoch, extra_l0=extra_l0)
            released = list(self._unlisted)
        self.versions.put(VERSION_KEY, version)
        with self._lock:
            for upload in uploads:
                table = upload.table
                if self._state.get(table.table_id) is not table:
                    # Dropped meanwhile: the version just written may list it; the next one will not.
                    (self._unlisted if id(upload.sst) in listed else self._retired).append(upload.sst)
                    continue
                table.l0.append(upload.sst)
                uploaded = {id(d) for d in upload.deltas}
                table.deltas = [d for d in table.deltas if id(d) not in uploaded]
            self._release_unlisted(released)
            self.commit_epoch(epoch)
        for upload in uploads:
            self._write_through(upload.sst, upload.blocks, cold=False)

    def maintain(self, epoch: int) -> None:
        """Compact tables with too many L0 SSTs and delete SSTs no version lists (checkpoint thread).

        A failed compaction is logged and counted, never raised: the checkpoint it
        follows has committed, and the next ``maintain`` tries again.
        """
        self._delete_retired()
        with self._lock:
            candidates = [t.table_id for t in self._state.values() if t.registered and len(t.l0) > self.l0_ssts_max]
        for table_id in candidates:
            try:
                self.compact(table_id)
            except Exception:
                with self._lock:
                    self._compaction_failures += 1
                log.exception("compaction of state table %d failed; it is retried after the next checkpoint", table_id)
        self._delete_retired()

    def compact(self, table_id: int) -> bool:
        """Merge the table's L0 SSTs into its L1 run and commit that as a version (checkpoint thread only)."""
        with self._lock:
            table = self._state.get(table_id)
            if table is None or not table.l0:
                return False
            l0, l1 = list(table.l0), list(table.l1)
            committed = self._max_committed_epoch
            horizon = min(min(self._pins, default=committed), committed)
            schema, pk = table.schema, list(table.pk)
        written: list[_Sst] = []

        def write(rows: pa.Table) -> _Sst:
            object_id = self._new_object_id(table_id, committed, L1)
            built = encode_sst(object_id, table_id, schema, pk, rows, block_rows_max=self.block_rows_max)
            sst = self._upload(built.data, built.info, L1)
            with self._lock:
                self._bytes_uploaded_compaction += len(built.data)
            written.append(sst)
            if table.point_read or table.scanned:
                self._write_through(sst, built.blocks, cold=True)
            return sst

        try:
            outcome = compact_levels(
                [(s, s.info) for s in l0],
                [(s, s.info) for s in l1],
                read=lambda sst: self._read_whole(sst, block_schema(schema)),
                write=write,
                horizon=horizon,
                sst_bytes_target=self.sst_bytes_target,
                block_schema=block_schema(schema),
            )
        except BaseException:
            self._delete_now(written)
            raise
        new_l1 = sorted(outcome.kept_l1 + outcome.outputs, key=lambda s: s.info.first_key)
        replaced = outcome.replaced_l0 + outcome.replaced_l1
        version, released = "", []
        with self._lock:
            present = self._state.get(table_id) is table
            if present:
                # Only this thread changes SST lists, so L0 still begins with what was compacted.
                assert table.l0[: len(l0)] == l0, "the L0 list changed during compaction"
                version = self._version_json(
                    self._max_committed_epoch, override={table_id: (table.l0[len(l0) :], new_l1)}
                )
                released = list(self._unlisted)
        if not present:  # dropped meanwhile
            self._delete_now(written)
            return False
        # A failed version write may still have landed (a connection lost during COMMIT): the outputs
        # stay, and start-up garbage collection deletes them if no committed version lists them.
        self.versions.put(VERSION_KEY, version)
        with self._lock:
            if self._state.get(table_id) is table:
                table.l0 = table.l0[len(l0) :]
                table.l1 = new_l1
                table.readable_from_epoch = max(table.readable_from_epoch, horizon)
                self._retired.extend(replaced)
            else:
                self._unlisted.extend(new_l1)  # dropped after the version was built; the inputs already wait
            self._release_unlisted(released)
            self._compactions += 1
        log.debug(
            "compacted state table %d: %d L0 + %d L1 SSTs -> %d L1 SSTs (%d rows read, %d written), horizon %d",
            table_id,
            len(outcome.replaced_l0),
            len(outcome.replaced_l1),
            len(outcome.outputs),
            outcome.rows_read,
            outcome.rows_written,
            horizon,
        )
        return True

    def _version_json(
        self,
        epoch: int,
        *,
        extra_l0: dict[int, list[_Sst]] | None = None,
        override: dict[int, tuple[list[_Sst], list[_Sst]]] | None = None,
    ) -> str:
        """The version to commit (under the lock): every table's SSTs by level, and the epoch."""
        entries = []
        for table_id, table in self._state.items():
            l0, l1 = (override or {}).get(table_id, (table.l0, table.l1))
            for sst in [*l0, *(extra_l0 or {}).get(table_id, [])]:
                entries.append(_info_to_json(sst.info, L0))
            for sst in l1:
                entries.append(_info_to_json(sst.info, L1))
        return json.dumps({"max_committed_epoch": epoch, "next_sequence": self._next_sequence, "ssts": entries})

    def _release_unlisted(self, released: list[_Sst]) -> None:
        """A version that no longer lists ``released`` is committed: they may go once no read uses them."""
        gone = {id(s) for s in released}
        self._unlisted = [s for s in self._unlisted if id(s) not in gone]
        self._retired.extend(released)

    def _new_object_id(self, table_id: int, epoch: int, level: int) -> str:
        """``<table>-<epoch>-<sequence>.sst`` for checkpoints, ``…-c<sequence>.sst`` for compaction outputs.

        The sequence (12 hex digits) comes from the version, so no name a committed version lists is
        ever written again; the benchmarks tell compaction bytes apart by the ``c``.
        """
        with self._lock:
            sequence = self._next_sequence
            self._next_sequence += 1
        return f"{table_id}-{epoch}-{'c' if level == L1 else ''}{sequence:012x}.sst"

    def _upload(self, data: bytes, info: SstInfo, level: int) -> _Sst:
        path = SST_PREFIX + info.object_id
        self.objects.put(path, data)
        # Footer, index and bloom filter come from the bytes at hand; blocks later from object storage.
        reader = SstReader(data, name=path)
        _ = reader.bloom
        reader.rebind(self._fetcher(path))
        return _Sst(info, level, reader, Keys.of(reader.block_first_keys), Keys.of(reader.block_last_keys))

    def _write_through(self, sst: _Sst, blocks: list[pa.Table], *, cold: bool) -> None:
        """Cache the blocks just written, unless they would crowd out most of the cache."""
        if sum(b.nbytes for b in blocks) > self.cache.capacity_bytes // 2:
            return
        for i, block in enumerate(blocks):
            run = Run.of(block)
            self.cache.put(sst.object_id, i, run, run.nbytes, cold=cold)

    def _delete_retired(self) -> None:
        with self._lock:
            ready = [s for s in self._retired if s.readers == 0]
            self._retired = [s for s in self._retired if s.readers != 0]
        self._delete_now(ready)

    def _delete_now(self, ssts: list[_Sst]) -> None:
        for sst in ssts:
            self.cache.discard_owner(sst.object_id)
            try:
                self.objects.delete(sst.path)
            except ObjectStoreError:
                # No version lists it: the next start-up deletes it.
                log.warning("deleting SST %s failed; it is removed at the next start", sst.path, exc_info=True)

    def _collect_garbage(self, referenced: set[str]) -> None:
        """Delete SSTs no committed version lists (uploads whose commit never happened)."""
        garbage = [p for p in self.objects.list(SST_PREFIX) if p[len(SST_PREFIX) :] not in referenced]
        for path in garbage:
            try:
                self.objects.delete(path)
            except ObjectStoreError:
                log.warning("deleting unreferenced SST %s failed; the next start tries again", path, exc_info=True)

    # ---- reads --------------------------------------------------------------------
    @contextlib.contextmanager
    def _reading(self, table_id: int, epoch: int) -> Iterator[_ReadView]:
        """The sources of a read at ``epoch``, each SST counted as in use until the read ends."""
        with self._lock:
            table = self._registered(table_id)
            if epoch < table.readable_from_epoch:
                raise InternalError(
                    f"state table {table_id}: epoch {epoch} was compacted away "
                    f"(readable from {table.readable_from_epoch})"
                )
            view = _ReadView(
                table,
                [d for d in reversed(table.deltas) if d.epoch <= epoch],
                [s for s in reversed(table.l0) if s.info.min_epoch <= epoch],
                [s for s in table.l1 if s.info.min_epoch <= epoch],
                self._max_committed_epoch,
                table.changed_epoch,
            )
            for sst in view.l0 + view.l1:
                sst.readers += 1
        try:
            yield view
        finally:
            with self._lock:
                for sst in view.l0 + view.l1:
                    sst.readers -= 1

    def _registered(self, table_id: int) -> _Table:
        table = self._state.get(table_id)
        if table is None or not table.registered:
            raise InternalError(f"state table {table_id} is not registered")
        return table

    def _block(self, sst: _Sst, index: int, target: pa.Schema, *, cold: bool = False, fill: bool = True) -> Run:
        """Block ``index`` of ``sst`` as a run, through the cache (``fill=False``: do not insert on a miss)."""
        if not fill:
            cached = self.cache.peek(sst.object_id, index)
            if cached is not None:
                return cached
            return self._load_block(sst, index, target)[0]
        return self.cache.get_or_load(sst.object_id, index, lambda: self._load_block(sst, index, target), cold=cold)

    def _load_block(self, sst: _Sst, index: int, target: pa.Schema) -> tuple[Run, int]:
        table = sst.reader.read_block(index)
        if not table.schema.equals(target):
            table = table.select(target.names).cast(target)
        run = Run.of(table)
        return run, run.nbytes

    def _read_whole(self, sst: _Sst, target: pa.Schema) -> pa.Table:
        """Every row of an SST (compaction's input), without filling the cache with it."""
        blocks = [self._block(sst, i, target, fill=False).table for i in range(sst.reader.block_count)]
        return pa.concat_tables(blocks) if blocks else target.empty_table()

    def snapshot(self, table_id: int, epoch: int) -> pa.Table:
        with self._reading(table_id, epoch) as view:
            owner = _snapshot_owner(table_id)
            cached = self.cache.get(owner, 0)
            if cached is not None:
                cached_epoch, rows = cached
                if cached_epoch == epoch or view.changed_epoch <= min(cached_epoch, epoch):
                    return rows
            view.table.scanned = True
            rows = self._merge(view, epoch)
        if epoch <= view.committed_epoch and rows.nbytes <= self.cache.capacity_bytes // 2:
            # Committed epochs never change: the next SELECT at this epoch, or a later one if the table
            # has not changed since, is served from here.
            self.cache.put(owner, 0, (epoch, rows), int(rows.nbytes))
        return rows

    def _merge(self, view: _ReadView, epoch: int) -> pa.Table:
        table = view.table
        target = table.block_schema
        runs = [d.run(table.schema, table.pk) for d in view.deltas]
        for sst in view.l0 + view.l1:
            reader = sst.reader
            for i in range(reader.block_count):
                if int(reader.block_min_epochs[i]) <= epoch:
                    runs.append(self._block(sst, i, target, cold=True))
        # One source (a delta, an L0 SST, or the whole L1 run) is already in key order: no sort needed.
        sources = len(view.deltas) + len(view.l0) + (1 if view.l1 else 0)
        merged = newest_visible(runs, epoch, target, one_sorted_run=sources <= 1)
        return merged.select(table.schema.names)

    def get_rows(self, table_id: int, keys: pa.Table, epoch: int) -> pa.Table:
        with self._reading(table_id, epoch) as view:
            table = view.table
            table.point_read = True
            if not keys.num_rows:
                return table.schema.empty_table()
            wanted, _ = Keys.of(encode_keys(_conform_keys(keys, table), list(range(len(table.pk))))).unique_sorted()
            hashes = key_hashes(wanted.array)
            found: list[tuple[Run, np.ndarray]] = []
            remaining = np.arange(len(wanted))
            for delta in view.deltas:
                run = delta.run(table.schema, table.pk)
                position, hit, _ = run.find(wanted.take(remaining), epoch)
                found.append((run, position[hit]))
                remaining = remaining[~hit]
                if not len(remaining):
                    break
            for sst in view.l0 + view.l1:
                if not len(remaining):
                    break
                remaining = self._find_in_sst(sst, table, wanted, hashes, remaining, epoch, found)
            pieces = []
            for run, rows in found:
                live = rows[~np.isin(run.ops[rows], _DELETING)]
                if len(live):
                    pieces.append(run.table.take(pa.array(live)))
        if not pieces:
            return table.schema.empty_table()
        return pa.concat_tables(pieces).select(table.schema.names)

    def _find_in_sst(
        self,
        sst: _Sst,
        table: _Table,
        wanted: Keys,
        hashes: np.ndarray,
        remaining: np.ndarray,
        epoch: int,
        found: list[tuple[Run, np.ndarray]],
    ) -> np.ndarray:
        """Look the ``remaining`` wanted keys up in one SST; returns those it does not settle."""
        candidates = wanted.take(remaining)
        in_range = candidates.greater_equal(sst.info.first_key) & candidates.less_equal(sst.info.last_key)
        chosen = remaining[in_range]
        if len(chosen):
            chosen = chosen[sst.reader.bloom.may_contain_hashes(hashes[chosen])]
        if not len(chosen):
            return remaining
        # The first block whose last key is >= the key is where the key's versions start.
        blocks = sst.block_last_keys.search(wanted.take(chosen), "left")
        inside = blocks < sst.reader.block_count
        chosen, blocks = chosen[inside], blocks[inside]
        settled = []
        target = table.block_schema
        while len(chosen):
            next_chosen, next_blocks = [], []
            for block in np.unique(blocks):
                here = chosen[blocks == block]
                run = self._block(sst, int(block), target)
                position, hit, reaches_end = run.find(wanted.take(here), epoch)
                found.append((run, position[hit]))
                settled.append(here[hit])
                # No version at or below the epoch yet, and the key runs on into the next block.
                onward = here[reaches_end]
                if len(onward) and block + 1 < sst.reader.block_count:
                    next_chosen.append(onward)
                    next_blocks.append(np.full(len(onward), block + 1))
            chosen = np.concatenate(next_chosen) if next_chosen else np.zeros(0, np.int64)
            blocks = np.concatenate(next_blocks) if next_blocks else np.zeros(0, np.int64)
        if not settled:
            return remaining
        return remaining[~np.isin(remaining, np.concatenate(settled))]

    def get_prefix_rows(self, table_id: int, prefixes: pa.Table, epoch: int) -> pa.Table:
        with self._reading(table_id, epoch) as view:
            table = view.table
            table.point_read = True
            encoded = encode_prefixes(table_id, table.schema, table.pk, prefixes)
            if not len(encoded):
                return table.schema.empty_table()
            # Distinct prefixes of one column count are prefix-free: their ranges are disjoint and sorted.
            low, _ = Keys.of(encoded).unique_sorted()
            high = prefix_ends(low)
            runs = [d.run(table.schema, table.pk).in_ranges(low, high) for d in view.deltas]
            for sst in view.l0 + view.l1:
                runs += self._ranges_in_sst(sst, table.block_schema, low, high, epoch)
            # Every run keeps its source's key order, so one source (a delta, an L0 SST or the L1 run) needs no sort.
            sources = len(view.deltas) + len(view.l0) + (1 if view.l1 else 0)
            merged = newest_visible(runs, epoch, table.block_schema, one_sorted_run=sources <= 1)
        return merged.select(table.schema.names)

    def _ranges_in_sst(self, sst: _Sst, target: pa.Schema, low: Keys, high: Keys, epoch: int) -> list[Run]:
        """The rows of ``sst`` in the key ranges ``[low[i], high[i])``, reading only the blocks they overlap."""
        block_count = sst.reader.block_count
        # Range i overlaps blocks [first[i], stop[i]): from the first whose last key is >= low[i], up to
        # the first whose first key is >= high[i]. Both grow with i, so the ranges overlapping block b
        # are one slice of them, [begin[b], end[b]): one pass over the sorted ranges per SST.
        first = sst.block_last_keys.search(low, "left")
        stop = sst.block_first_keys.search(high, "left")
        blocks = np.arange(block_count)
        begin = np.searchsorted(stop, blocks, "right")
        end = np.searchsorted(first, blocks, "right")
        wanted = (begin < end) & (sst.reader.block_min_epochs <= epoch)
        runs = []
        for block in np.flatnonzero(wanted):
            a, b = int(begin[block]), int(end[block])
            run = self._block(sst, int(block), target).in_ranges(low.slice(a, b), high.slice(a, b))
            if run.num_rows:
                runs.append(run)
        return runs

    # ---- counters ---------------------------------------------------------------
    def sst_count(self) -> int:
        with self._lock:
            return sum(len(t.l0) + len(t.l1) for t in self._state.values())

    def stats(self) -> DurableStoreStats:
        with self._lock:
            count = {L0: 0, L1: 0}
            size = {L0: 0, L1: 0}
            metadata = 0
            for table in self._state.values():
                for sst in table.l0 + table.l1:
                    count[sst.level] += 1
                    size[sst.level] += sst.info.size_bytes
                    metadata += sst.reader.metadata_nbytes
            return DurableStoreStats(
                bytes_uploaded_checkpoint=self._bytes_uploaded_checkpoint,
                bytes_uploaded_compaction=self._bytes_uploaded_compaction,
                compactions=self._compactions,
                compaction_failures=self._compaction_failures,
                sst_count_by_level=count,
                sst_bytes_by_level=size,
                shared_buffer_bytes=sum(d.nbytes for t in self._state.values() for d in t.deltas),
                metadata_bytes=metadata,
                block_cache=self.cache.stats(),
            )


def _recovered_table(table_id: int, ssts: list[_Sst], epoch: int) -> _Table:
    """A table as a committed version left it; its schema comes from its SSTs until it is registered."""
    l0 = sorted((s for s in ssts if s.level == L0), key=lambda s: s.info.min_epoch)
    l1 = sorted((s for s in ssts if s.level == L1), key=lambda s: s.info.first_key)
    for before, after in itertools.pairwise(l1):
        if before.info.last_key >= after.info.first_key:
            raise InternalError(f"L1 SSTs {before.path} and {after.path} of state table {table_id} overlap")
    # Reads rely on this: L1 holds the oldest epochs, then each L0 SST newer ones than the one before.
    floor = max((s.info.max_epoch for s in l1), default=-1)
    for sst in l0:
        if sst.info.min_epoch <= floor:
            raise InternalError(f"SST {sst.path} of state table {table_id} overlaps older SSTs in epochs")
        floor = sst.info.max_epoch
    reader = ssts[0].reader
    return _Table(
        table_id,
        reader.schema,
        list(reader.pk),
        registered=False,
        l0=l0,
        l1=l1,
        last_sealed_epoch=epoch,
        readable_from_epoch=epoch,
        changed_epoch=max(s.info.max_epoch for s in ssts),
    )


def _conform_keys(keys: pa.Table, table: _Table) -> pa.Table:
    """``keys`` with the types of the table's key columns, so that they encode alike."""
    fields = [table.schema.field(i) for i in table.pk]
    if keys.num_columns != len(fields):
        raise InternalError(
            f"state table {table.table_id}: {keys.num_columns} key columns given, {len(fields)} expected"
        )
    if all(c.type == f.type for c, f in zip(keys.columns, fields)):
        return keys
    return pa.Table.from_arrays([c.cast(f.type) for c, f in zip(keys.columns, fields)], schema=pa.schema(fields))


def _snapshot_owner(table_id: int) -> tuple[str, int]:
    return ("snapshot", table_id)


def _info_to_json(info: SstInfo, level: int) -> dict[str, Any]:
    data = asdict(info)
    data["first_key"] = info.first_key.hex()
    data["last_key"] = info.last_key.hex()
    data["level"] = level
    return data


def _info_from_json(data: dict[str, Any]) -> tuple[SstInfo, int]:
    values = dict(data)
    level = int(values.pop("level", L0))  # versions written before levels existed hold L0 SSTs only
    values["first_key"] = bytes.fromhex(values["first_key"])
    values["last_key"] = bytes.fromhex(values["last_key"])
    return SstInfo(**values), level
