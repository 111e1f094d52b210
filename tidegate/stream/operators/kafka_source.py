"""KafkaSource: reads a Kafka topic inside the job of a view that reads a Kafka source.

``CREATE SOURCE s (…) WITH (connector = 'kafka', topic = '…', properties.bootstrap.server = '…')
FORMAT PLAIN ENCODE JSON|CSV`` (options: ``connectors/kafka_options.py``; design:
docs/design/20261128_kafka_source.md). Every view reading the source runs its own reader, like a
generator source: barriers come from the coordinator through ``inject``, and whatever the source
emitted before a barrier belongs to the epoch that barrier ends.

Invariants:

- offsets live in the source's state table, not in a consumer group: per partition, the offset
  of the next record to emit (and the count of malformed records). They are written on every
  barrier that moved them and committed with the view's state (DESIGN §5.5), so a recovery seeks
  to exactly what the checkpoint covered: nothing lost, nothing doubled. Under ``at_most_once``
  the positions are also saved in ``ReadPositions`` before a batch goes downstream, and a
  recovery goes on from there instead;
- a row's ``_row_id`` is ``(partition << 48) | offset``: unique, and the same on every replay;
- blocking client calls run on a fetch thread that owns the consumer. It hands decoded batches
  to the stream loop through a bounded queue (back-pressure: it stops fetching when the queue is
  full); the loop waits for "a barrier was injected, or a batch is ready", so a barrier never
  waits for a fetch, and a batch taken after a barrier belongs to the next epoch;
- the fetch thread closes the consumer when the source stops, fails or is cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from tidegate.common.chunk import Chunk, Op
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.connectors.kafka_options import KafkaSourceOptions, client_config, parse_kafka_source_options
from tidegate.connectors.read_positions import ReadPositions
from tidegate.connectors.record_decode import DecodedRecords, RecordDecoder, decoder_for_source
from tidegate.connectors.source_errors import ErrorPolicy, error_rows
from tidegate.connectors.table_writer import ROW_ID_COLUMN
from tidegate.errors import DataError, InternalError
from tidegate.state.state_table import StateTable
from tidegate.stream.messages import Barrier, Message
from tidegate.stream.operator import Operator
from tidegate.stream.operators.source_inbox import SourceInbox, with_watermark
from tidegate.stream.watermark import WatermarkGenerator

log = logging.getLogger(__name__)

KAFKA_OFFSETS_SCHEMA = pa.schema(
    [
        pa.field("partition", pa.int32()),
        pa.field("next_offset", pa.int64()),  # the offset of the next record to emit
        pa.field("malformed", pa.int64()),  # records of the partition that did not decode
    ]
)
ROW_ID_PARTITION_SHIFT = 48  # offsets below 2^48; 2^15 partitions
FETCH_QUEUE_BATCHES_MAX = 4  # decoded batches waiting for the loop: the fetch thread's lead
POLL_TIMEOUT_S = 0.1  # one consume() call; also how soon the fetch thread sees a stop
METADATA_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0  # how long a stopping source waits for its consumer to close


@dataclass(frozen=True)
class _Assigned:
    """Partitions the fetch thread assigned; the start offset of each, None for 'the beginning'."""

    starts: dict[int, int | None]


@dataclass(frozen=True)
class _Fetched:
    """One consume() call's records, in consumption order, decoded."""

    partitions: np.ndarray  # int32 per record
    offsets: np.ndarray  # int64 per record
    payloads: list[bytes | None]
    decoded: DecodedRecords


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_Item = _Assigned | _Fetched | _Failed


@dataclass
class _Partition:
    next_offset: int | None  # None: nothing emitted yet and no stored offset (start at the beginning)
    malformed: int = 0
    written: tuple[int, int] | None = None  # (next_offset, malformed) of its row in the state table


@dataclass
class _FetchSettings:
    """What the fetch thread needs to know; nothing else is shared with it but the queue."""

    options: KafkaSourceOptions
    config: dict[str, Any]
    starts: dict[int, int | None]  # stored offsets (None: none stored) of the partitions known
    decoder: RecordDecoder
    clock: Callable[[], float] = time.monotonic
    stopping: threading.Event = field(default_factory=threading.Event)


class KafkaSource(Operator):
    name = "kafka_source"

    def __init__(
        self,
        options: KafkaSourceOptions,
        decoder: RecordDecoder,
        offsets: StateTable,
        errors: StateTable,
        schema: pa.Schema,
        actor_id: int,
        *,
        guarantee: DeliveryGuarantee,
        positions: ReadPositions,
        source_id: int,
        watermark: WatermarkGenerator | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``schema``: the declared columns followed by the ``_row_id`` key column. ``offsets``:
        ``KAFKA_OFFSETS_SCHEMA``, ``errors``: ``SOURCE_ERRORS_SCHEMA``, both keyed on column 0.
        ``clock``: seconds, for the partition discovery interval (read on the fetch thread)."""
        assert schema.names[-1] == ROW_ID_COLUMN, schema
        self.options = options
        self.decoder = decoder
        self.offsets = offsets
        self.errors = errors
        self.schema = schema
        self.actor_id = actor_id
        self.guarantee = guarantee
        self.positions = positions
        self.source_id = source_id
        self.watermark = watermark
        self.clock = clock
        self.inbox = SourceInbox()  # its ``ready`` also wakes the source when the fetch thread has a batch
        self.offset = 0  # records consumed, counting the committed offsets restored as consumed
        self.malformed = 0  # malformed records of every partition, committed ones included
        self.partitions: dict[int, _Partition] = {}
        self.fetcher: _Fetcher | None = None

    @property
    def end_offset(self) -> int | None:
        """A topic is never finished: None."""
        return None

    @property
    def consumer_group(self) -> str:
        """librdkafka needs a group id even with assign(); the source commits nothing to it."""
        return f"tidegate-{self.actor_id}-{self.source_id}"

    def inject(self, barrier: Barrier) -> None:
        """Called by the barrier coordinator, on the stream loop."""
        self.inbox.put(barrier)

    async def execute(self) -> AsyncIterator[Message]:
        first = await self.inbox.first()
        self._restore(first.epoch.prev)
        restored = self.watermark.restore(first.epoch.prev) if self.watermark is not None else None
        yield first
        if first.stops(self.actor_id):
            return
        if restored is not None:
            yield restored
        self.fetcher = self._start_fetcher()
        try:
            async for message in self._run(self.fetcher):
                yield message
        finally:
            # Stopped, failed or cancelled (DROP, recovery): the fetch thread closes the consumer.
            self.fetcher.stop()

    async def _run(self, fetcher: _Fetcher) -> AsyncIterator[Message]:
        while True:
            barrier = self.inbox.take()
            if barrier is not None:
                if barrier.stops(self.actor_id):
                    fetcher.stop()
                self._end_epoch(barrier.epoch.prev)
                if barrier.stops(self.actor_id):
                    await asyncio.get_running_loop().run_in_executor(None, fetcher.join, STOP_TIMEOUT_S)
                    yield barrier
                    return
                yield barrier
                continue
            item = fetcher.take()
            if item is not None:
                async for message in self._apply(item):
                    yield message
                # Hand the loop back so the coordinator can inject a barrier between batches.
                await asyncio.sleep(0)
                continue
            self.inbox.ready.clear()
            if not self.inbox.pending and fetcher.empty():
                await self.inbox.ready.wait()

    # ---- positions ------------------------------------------------------------------------------
    def _restore(self, epoch: int) -> None:
        """The offsets committed at ``epoch``; under at_most_once, the saved ones where ahead."""
        if epoch:
            for row in self.offsets.snapshot(epoch).to_pylist():
                at = (int(row["next_offset"]), int(row["malformed"]))
                self.partitions[int(row["partition"])] = _Partition(at[0], at[1], at)
        if not self.guarantee.rewinds:
            saved = self.positions.load(self.actor_id, self.source_id) or {}
            for key, next_offset in saved.items():
                partition = self.partitions.setdefault(int(key), _Partition(None))
                if partition.next_offset is None or next_offset > partition.next_offset:
                    partition.next_offset = next_offset
        self.malformed = sum(p.malformed for p in self.partitions.values())
        self.offset = sum(p.next_offset or 0 for p in self.partitions.values())

    def _end_epoch(self, epoch: int) -> None:
        """Write the offsets that moved, and commit them, the errors and the watermark at ``epoch``."""
        rows: list[dict[str, int]] = []
        ops: list[Op] = []
        for number, partition in sorted(self.partitions.items()):
            if partition.next_offset is None:
                continue
            now = (partition.next_offset, partition.malformed)
            if partition.written == now:
                continue
            if partition.written is not None:
                rows.append(_offset_row(number, partition.written))
                ops.append(Op.UPDATE_DELETE)
            rows.append(_offset_row(number, now))
            ops.append(Op.UPDATE_INSERT if partition.written is not None else Op.INSERT)
            partition.written = now
        if rows:
            self.offsets.write(Chunk.of(ops, pa.RecordBatch.from_pylist(rows, schema=KAFKA_OFFSETS_SCHEMA)))
        self.offsets.commit(epoch)
        self.errors.commit(epoch)
        if self.watermark is not None:
            self.watermark.commit(epoch)

    def _start_fetcher(self) -> _Fetcher:
        config = {
            # librdkafka waits fetch.queue.backoff.ms (1 s by default) before fetching a partition
            # whose local queue is full; the source drains a queue far faster than that, then idles.
            # A short backoff keeps the queue filled (bench/sinks.py: 2-3x the records/s); a user's
            # properties.fetch.queue.backoff.ms still wins.
            "fetch.queue.backoff.ms": 10,
            **client_config(self.options),
            "group.id": self.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            # A stored offset that retention has deleted: go on from the oldest record kept.
            "auto.offset.reset": "earliest",
        }
        starts = {number: p.next_offset for number, p in self.partitions.items()}
        settings = _FetchSettings(self.options, config, starts, self.decoder, self.clock)
        fetcher = _Fetcher(settings, asyncio.get_running_loop(), self.inbox.ready)
        fetcher.start()
        return fetcher

    # ---- batches --------------------------------------------------------------------------------
    async def _apply(self, item: _Item) -> AsyncIterator[Message]:
        if isinstance(item, _Failed):
            error = item.error
            if isinstance(error, InternalError | DataError):
                raise error
            raise InternalError(f"Kafka source {self.options.topic}: {error}") from error
        if isinstance(item, _Assigned):
            for number, start in item.starts.items():
                partition = self.partitions.setdefault(number, _Partition(start))
                if partition.next_offset is None:
                    partition.next_offset = start
            return
        chunk = self._chunk(item)
        if not self.guarantee.rewinds:
            # Saved before the batch goes downstream: a recovery does not read it again (at most once).
            saved = {str(n): p.next_offset for n, p in self.partitions.items() if p.next_offset is not None}
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, self.positions.save, self.actor_id, self.source_id, saved)
        async for message in with_watermark(chunk, self.watermark):
            yield message

    def _chunk(self, fetched: _Fetched) -> Chunk | None:
        """The batch's rows; its malformed records handled per ``on.error``; the offsets moved past it."""
        decoded = fetched.decoded
        if decoded.errors:
            self._malformed(fetched)
        for number in np.unique(fetched.partitions):
            last = int(fetched.offsets[fetched.partitions == number].max())
            partition = self.partitions.setdefault(int(number), _Partition(None))
            partition.next_offset = max(partition.next_offset or 0, last + 1)
        self.offset += len(fetched.payloads)
        if decoded.batch.num_rows == 0:
            return None
        kept = decoded.kept
        row_ids = (fetched.partitions[kept].astype(np.int64) << ROW_ID_PARTITION_SHIFT) | fetched.offsets[kept]
        columns = [
            column if column.type == schema_field.type else column.cast(schema_field.type)
            for column, schema_field in zip(decoded.batch.columns, self.schema)
        ]
        return Chunk.inserts(pa.RecordBatch.from_arrays([*columns, pa.array(row_ids)], schema=self.schema))

    def _malformed(self, fetched: _Fetched) -> None:
        errors = fetched.decoded.errors
        policy = self.options.on_error
        if policy is ErrorPolicy.FAIL:
            index, reason = errors[0]
            raise DataError(
                f"Kafka source {self.options.topic}: {_location(fetched, index)}: {reason}",
                hint="on.error = 'record' or 'skip' keeps the source running past malformed records",
            )
        for index, _ in errors:
            partition = self.partitions.setdefault(int(fetched.partitions[index]), _Partition(None))
            partition.malformed += 1
        self.malformed += len(errors)
        if policy is ErrorPolicy.RECORD:
            kept = [(_location(fetched, i), fetched.payloads[i], reason) for i, reason in errors]
            self.errors.write(Chunk.inserts(error_rows(kept)))


def _offset_row(partition: int, at: tuple[int, int]) -> dict[str, int]:
    return {"partition": partition, "next_offset": at[0], "malformed": at[1]}


def _location(fetched: _Fetched, index: int) -> str:
    return f"partition {int(fetched.partitions[index])} offset {int(fetched.offsets[index])}"


class _Fetcher:
    """The fetch thread: owns the consumer, assigns partitions, consumes and decodes batches, and
    hands them to the loop through a bounded queue."""

    def __init__(self, settings: _FetchSettings, loop: asyncio.AbstractEventLoop, wakeup: asyncio.Event) -> None:
        self.settings = settings
        self.loop = loop
        self.wakeup = wakeup
        self.items: queue.Queue[_Item] = queue.Queue(maxsize=FETCH_QUEUE_BATCHES_MAX)
        self.consumer: Any = None  # confluent_kafka.Consumer, once created
        self.assigned: set[int] = set()  # partitions assigned to the consumer
        self.closed = threading.Event()  # the consumer is closed (or was never opened)
        self.thread = threading.Thread(target=self._main, name=f"kafka-fetch-{settings.options.topic}", daemon=True)

    # ---- the loop's side ------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the thread to close the consumer and end; returns at once."""
        self.settings.stopping.set()

    def join(self, timeout_s: float) -> None:
        """Wait (off the loop) until the thread has closed the consumer."""
        self.thread.join(timeout_s)

    def take(self) -> _Item | None:
        try:
            return self.items.get_nowait()
        except queue.Empty:
            return None

    def empty(self) -> bool:
        return self.items.empty()

    # ---- the thread -----------------------------------------------------------------------------
    def _main(self) -> None:
        from confluent_kafka import Consumer

        try:
            self.consumer = Consumer(self.settings.config)
            self._assign_all()
            self._consume()
        except BaseException as e:  # handed to the loop, which raises it in the job
            if not self.settings.stopping.is_set():
                log.debug("Kafka fetch thread failed", exc_info=True)
                self._put(_Failed(e))
        finally:
            if self.consumer is not None:
                with contextlib.suppress(Exception):
                    self.consumer.close()
            self.closed.set()

    def _partitions(self) -> list[int]:
        options = self.settings.options
        metadata = self.consumer.list_topics(topic=options.topic, timeout=METADATA_TIMEOUT_S)
        topic = metadata.topics.get(options.topic)
        if topic is None or topic.error is not None:
            reason = "does not exist" if topic is None else f"cannot be read: {topic.error}"
            raise InternalError(f'Kafka topic "{options.topic}" at {options.bootstrap_servers} {reason}')
        return sorted(topic.partitions)

    def _assign_all(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        options = self.settings.options
        starts: dict[int, int | None] = {}
        for number in self._partitions():
            start = self.settings.starts.get(number)
            if start is None and options.startup_mode == "latest":
                # Resolved now and stored at the next barrier: a recovery must not skip what came since.
                _, start = self.consumer.get_watermark_offsets(
                    TopicPartition(options.topic, number), timeout=METADATA_TIMEOUT_S
                )
            starts[number] = start
        self.consumer.assign(
            [TopicPartition(options.topic, n, OFFSET_BEGINNING if s is None else s) for n, s in starts.items()]
        )
        self._put(_Assigned(starts))
        self.assigned = set(starts)

    def _discover(self) -> None:
        """Assign partitions added to the topic since the last look, from their first record."""
        from confluent_kafka import TopicPartition

        added = [n for n in self._partitions() if n not in self.assigned]
        if not added:
            return
        topic = self.settings.options.topic
        # A partition stored in the state was assigned at the start; one found now is new: offset 0.
        starts = {n: self.settings.starts.get(n) or 0 for n in added}
        self.consumer.incremental_assign([TopicPartition(topic, n, s) for n, s in starts.items()])
        self.assigned.update(added)
        self._put(_Assigned(dict(starts)))

    def _consume(self) -> None:
        settings = self.settings
        interval_s = settings.options.partition_discovery_interval_ms / 1000
        next_discovery = settings.clock() + interval_s
        while not settings.stopping.is_set():
            if settings.clock() >= next_discovery:
                self._discover()
                next_discovery = settings.clock() + interval_s
            messages = self.consumer.consume(settings.options.records_per_chunk_max, POLL_TIMEOUT_S)
            if messages:
                fetched = self._decode(messages)
                if fetched is not None:
                    self._put(fetched)

    def _decode(self, messages: list[Any]) -> _Fetched | None:
        from confluent_kafka import KafkaError

        partitions: list[int] = []
        offsets: list[int] = []
        payloads: list[bytes | None] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                topic = self.settings.options.topic
                raise InternalError(f"Kafka source {topic}: partition {message.partition()}: {error.str()}")
            partitions.append(message.partition())
            offsets.append(message.offset())
            payloads.append(message.value())  # the value is the record; the key is not read
        if not payloads:
            return None
        return _Fetched(
            np.asarray(partitions, dtype=np.int32),
            np.asarray(offsets, dtype=np.int64),
            payloads,
            self.settings.decoder.decode(payloads),
        )

    def _put(self, item: _Item) -> None:
        """Queue ``item`` for the loop, waiting while the queue is full (back-pressure) unless stopping."""
        while not self.settings.stopping.is_set():
            try:
                self.items.put(item, timeout=POLL_TIMEOUT_S)
                break
            except queue.Full:
                continue
        else:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self.loop.call_soon_threadsafe(self.wakeup.set)


def build_kafka_source(
    plan: dict[str, Any],
    offsets: StateTable,
    errors: StateTable,
    schema: pa.Schema,
    actor_id: int,
    *,
    guarantee: DeliveryGuarantee,
    positions: ReadPositions,
    source_id: int,
    watermark: WatermarkGenerator | None,
) -> KafkaSource:
    """The operator of a ``{"op": "source", "connector": "kafka", …}`` plan node: ``plan["schema"]``
    lists the declared columns as ``[name, type text]`` and then ``_row_id``."""
    options = parse_kafka_source_options(plan["options"])
    decoder = decoder_for_source(plan["encode"], plan["schema"], plan["options"])
    return KafkaSource(
        options,
        decoder,
        offsets,
        errors,
        schema,
        actor_id,
        guarantee=guarantee,
        positions=positions,
        source_id=source_id,
        watermark=watermark,
    )
