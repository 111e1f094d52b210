"""SinkDelivery: one sink's target and the thread that delivers to it (DESIGN §5 step 4, §7).

The sink's job runs on the stream loop; everything that talks to the external system runs here,
on the sink's own thread, one call at a time, so a slow or unreachable target never stalls the
loop or the checkpoints.

- ``exactly_once``: the sink operator hands over each epoch's changes once they are sealed in its
  log store (``logged``), and after each checkpoint commit the runtime calls ``committed(N)``. The
  thread takes the epochs after the one the target last recorded, up to N, and hands them to
  ``SinkTarget.deliver(N, …)``, which applies them and records N in one transaction. They come
  from memory; after a start or a recovery (when what is in memory may belong to epochs that
  were rolled back, or the log holds epochs from before), or when more than
  ``PENDING_BYTES_MAX`` waits, from the log store read at N, which holds exactly what the
  checkpoint covers. The target's record is read on the first delivery after a start, so a crash
  between the checkpoint commit and the target's commit redelivers exactly what the target
  lacks. A failed delivery is retried with backoff; meanwhile the log store keeps the changes and
  checkpoints go on.
- ``at_least_once`` / ``at_most_once``: ``submit`` queues changes for ``SinkTarget.write``;
  ``drained`` (awaited by the sink operator at a barrier under at_least_once) returns once the
  queue is written and raises a write's error, which fails the job (it recovers and replays).

``status`` is what ``tidegate_sinks`` shows.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from tidegate.common.chunk import OP_TYPE
from tidegate.common.failpoints import failpoint
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.connectors.sink_target import OP_FIELD, SinkSpec, SinkTarget
from tidegate.errors import InternalError
from tidegate.meta.catalog import Relation
from tidegate.state.store import StateStore
from tidegate.stream.operators.sink import CHANGES_FIELD, EPOCH_FIELD, SEQUENCE_FIELD, decode_changes

log = logging.getLogger(__name__)

RETRY_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
# Sealed changes kept in memory for delivery; past this (a slow or absent target) the log store serves.
PENDING_BYTES_MAX = 256 * 2**20


def sink_spec(relation: Relation) -> SinkSpec:
    """What a sink's target gets: the visible columns, the key, the type and the options."""
    options = relation.options
    visible = [c for c in relation.columns if not c.hidden]
    names = [c.name for c in visible]
    key = [names.index(name) for name in options.get("primary_key", "").split(",") if name]
    # What tidegate itself consumes is not the connector's business.
    consumed = ("format", "encode", "type", "primary_key", "force_append_only")
    connector_options = {k: v for k, v in options.items() if k not in consumed}
    return SinkSpec(
        sink_id=relation.id,
        name=relation.name,
        column_names=names,
        column_types=[c.type for c in visible],
        key=key,
        sink_type=options["type"],
        options=connector_options,
        format=options.get("format"),
        encode=options.get("encode"),
    )


@dataclass(frozen=True)
class SinkStatus:
    """One sink, as ``tidegate_sinks`` shows it."""

    sink_id: int
    guarantee: str
    delivered_epoch: int  # exactly_once: the last epoch the target recorded; 0 before it is known
    committed_epoch: int  # the last checkpoint the deliverer was told about
    delivered_rows: int  # changes handed to the target since this process started
    last_error: str | None  # the last failed delivery or write, while it keeps failing
    error_at: float | None


class SinkDelivery:
    def __init__(
        self,
        spec: SinkSpec,
        guarantee: DeliveryGuarantee,
        store: StateStore,
        log_table_id: int,
        make_target: Callable[[SinkSpec], SinkTarget],
        *,
        discards: bool = False,
    ) -> None:
        """``discards``: the target throws everything away (blackhole); its sink logs nothing, so
        every delivery comes from memory."""
        self.spec = spec
        self.discards = discards
        self.guarantee = guarantee
        self.store = store
        self.log_table_id = log_table_id
        self._make_target = make_target
        self._target: SinkTarget | None = None
        self._condition = threading.Condition()
        self._closed = False
        self._committed = store.max_committed_epoch
        self._known_delivered: int | None = None  # read from the target on the first delivery
        self._delivered_epoch = 0
        self._queue: deque[pa.Table] = deque()
        self._pending: dict[int, pa.Table] = {}  # exactly_once: sealed epochs' changes, not yet delivered
        self._pending_bytes = 0
        # Deliveries read the log store until one covers this epoch: after a start or a recovery (0:
        # the first delivery), or up to the last epoch not kept in memory for want of room.
        self._store_until: int | None = None if discards else 0
        self._writing = False
        self._write_error: BaseException | None = None
        self.delivered_rows = 0
        self.last_error: str | None = None
        self.error_at: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"tidegate-sink-{spec.name}", daemon=True)
        self._thread.start()

    # ---- the SinkOutput protocol (called on the stream loop) ----------------------------------
    @property
    def delivered_epoch(self) -> int:
        return self._delivered_epoch

    def logged(self, epoch: int, changes: pa.Table) -> None:
        with self._condition:
            if self._pending_bytes + changes.nbytes > PENDING_BYTES_MAX and not self.discards:
                self._store_until = max(self._store_until or 0, epoch)  # the log store has it
                return
            self._pending[epoch] = changes
            self._pending_bytes += changes.nbytes

    def submit(self, changes: pa.Table) -> None:
        with self._condition:
            self._queue.append(changes)
            self._condition.notify_all()

    async def drained(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._wait_drained)

    def check(self) -> None:
        with self._condition:
            error, self._write_error = self._write_error, None
        if error is not None:
            raise InternalError(f"sink {self.spec.name} could not write: {error}") from error

    # ---- called by the runtime ---------------------------------------------------------------
    def committed(self, epoch: int) -> None:
        """Checkpoint ``epoch`` committed: deliver the log store up to it (exactly_once)."""
        with self._condition:
            self._committed = max(self._committed, epoch)
            self._condition.notify_all()

    def restarted(self) -> None:
        """The job was rebuilt (recovery): what was queued for writing belongs to a run that failed."""
        with self._condition:
            self._queue.clear()
            self._write_error = None
            # Epochs after the checkpoint were rolled back; the log store holds the ones before it.
            self._pending.clear()
            self._pending_bytes = 0
            self._store_until = None if self.discards else 0
            self._condition.notify_all()

    def status(self) -> SinkStatus:
        return SinkStatus(
            self.spec.sink_id,
            self.guarantee.value,
            self._delivered_epoch,
            self._committed,
            self.delivered_rows,
            self.last_error,
            self.error_at,
        )

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()
        self._thread.join(30)
        if self._target is not None:
            self._target.close()
            self._target = None

    # ---- the delivery thread -------------------------------------------------------------------
    def _wait_drained(self) -> None:
        with self._condition:
            while (self._queue or self._writing) and self._write_error is None and not self._closed:
                self._condition.wait()
        self.check()

    def _has_work(self) -> bool:
        if self._queue:
            return True
        return self.guarantee is DeliveryGuarantee.EXACTLY_ONCE and self._committed > self._delivered_epoch

    def _run(self) -> None:
        failures = 0
        while True:
            with self._condition:
                while not self._closed and not self._has_work():
                    self._condition.wait()
                if self._closed:
                    return
                batches = list(self._queue)
                self._queue.clear()
                self._writing = bool(batches)
                committed = self._committed
            try:
                target = self._open()
                if batches:
                    changes = pa.concat_tables(batches)
                    target.write(changes)
                    self.delivered_rows += changes.num_rows
                if self.guarantee is DeliveryGuarantee.EXACTLY_ONCE and committed > self._delivered_epoch:
                    self._deliver(target, committed)
                failures = 0
                self.last_error = self.error_at = None
            except Exception as error:  # the target is down or refused: report, back off, retry
                failures += 1
                self._failed(error, batches)
                time.sleep(RETRY_BACKOFF_S[min(failures, len(RETRY_BACKOFF_S)) - 1])
            finally:
                with self._condition:
                    self._writing = False
                    self._condition.notify_all()

    def _open(self) -> SinkTarget:
        if self._target is None:
            target = self._make_target(self.spec)
            target.open()
            self._target = target
        return self._target

    def _deliver(self, target: SinkTarget, committed: int) -> None:
        if self._known_delivered is None:
            self._known_delivered = target.last_delivered_epoch()
        after = self._known_delivered
        with self._condition:
            from_store = self._store_until is not None
            epochs = sorted(e for e in self._pending if after < e <= committed)
            tables = [self._pending[e] for e in epochs]
        if from_store:
            changes = self._read_log(after, committed)
        elif tables:
            changes = pa.concat_tables(tables)
            if changes.num_columns > 1:  # a discarding sink hands over its ops only
                changes = changes.rename_columns([OP_FIELD, *self.spec.column_names])
        else:
            changes = None
        if changes is not None and changes.num_rows:
            failpoint("sink_before_delivery")  # checkpoint committed, target not yet told
            target.deliver(committed, changes)
            failpoint("sink_after_delivery")
            self.delivered_rows += changes.num_rows
            self._known_delivered = committed
        with self._condition:
            for epoch in [e for e in self._pending if e <= committed]:
                self._pending_bytes -= self._pending.pop(epoch).nbytes
            if self._store_until is not None and from_store and committed >= self._store_until:
                self._store_until = None  # every epoch after this one is in memory
        self._delivered_epoch = committed

    def _read_log(self, after: int, committed: int) -> pa.Table:
        """The log store's entries of epochs in (after, committed], as the target takes them."""
        entries = self.store.snapshot(self.log_table_id, committed)
        entries = entries.filter(pc.greater(entries.column(EPOCH_FIELD), after))
        if entries.num_rows == 0:
            return pa.table({OP_FIELD: pa.array([], OP_TYPE)})
        entries = entries.sort_by([(EPOCH_FIELD, "ascending"), (SEQUENCE_FIELD, "ascending")])
        changes = decode_changes(entries.column(CHANGES_FIELD).to_pylist())
        return changes.rename_columns([OP_FIELD, *self.spec.column_names])

    def _failed(self, error: Exception, batches: list[pa.Table]) -> None:
        self.last_error = f"{type(error).__name__}: {error}"
        self.error_at = time.time()
        log.warning("sink %s: %s", self.spec.name, self.last_error)
        if self._target is not None:
            try:
                self._target.close()
            except Exception:  # closing a broken connection may fail too; it is dropped either way
                log.debug("closing the target of sink %s failed", self.spec.name, exc_info=True)
            self._target = None
        self._known_delivered = None  # ask the target again: the failed delivery may have committed
        if batches:
            with self._condition:
                # The writes are lost to this run: the job fails and recovers (at_least_once replays).
                self._write_error = error
