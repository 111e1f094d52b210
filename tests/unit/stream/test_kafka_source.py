"""KafkaSource against a real broker: records come out once with their ``_row_id``, offsets commit
with each barrier and a rebuilt source resumes from them, malformed records follow ``on.error``,
new partitions are picked up, and the delivery guarantee decides what a recovery replays."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pytest
from confluent_kafka import TopicPartition
from kafka_helpers import add_partitions, create_topic, delete_topic, produce, unique_topic
from scripted import barrier, table_rows

from tidegate.common.chunk import Chunk
from tidegate.common.guarantee import DeliveryGuarantee
from tidegate.connectors.read_positions import ReadPositions
from tidegate.connectors.source_errors import SOURCE_ERRORS_SCHEMA
from tidegate.errors import DataError
from tidegate.state.state_table import StateTable
from tidegate.state.store import MemoryStateStore
from tidegate.stream.messages import Barrier, Message, StopMutation, Watermark
from tidegate.stream.operator import CheckedOperator
from tidegate.stream.operators.kafka_source import (
    FETCH_QUEUE_BATCHES_MAX,
    KAFKA_OFFSETS_SCHEMA,
    KafkaSource,
    build_kafka_source,
)
from tidegate.stream.watermark import WATERMARK_STATE_SCHEMA, WatermarkGenerator, WatermarkSpec

ACTOR = 7
SOURCE_ID = 3
OFFSETS_TABLE = (ACTOR << 16) | 1
ERRORS_TABLE = (ACTOR << 16) | 2
SCHEMA = pa.schema([("id", pa.int64()), ("name", pa.string()), ("_row_id", pa.int64())])
WAIT_S = 20.0

Row = tuple[Any, ...]


@pytest.fixture
def topic_factory(kafka_bootstrap: str) -> Any:
    created: list[str] = []

    def make(partitions: int) -> str:
        created.append(create_topic(kafka_bootstrap, unique_topic("kafka-source"), partitions))
        return created[-1]

    yield make
    for topic in created:
        delete_topic(kafka_bootstrap, topic)


def new_source(
    store: MemoryStateStore,
    bootstrap: str,
    topic: str,
    *,
    guarantee: DeliveryGuarantee = DeliveryGuarantee.EXACTLY_ONCE,
    positions: ReadPositions | None = None,
    **options: str,
) -> KafkaSource:
    plan = {
        "op": "source",
        "relation_id": SOURCE_ID,
        "connector": "kafka",
        "options": {
            "connector": "kafka",
            "topic": topic,
            "properties.bootstrap.server": bootstrap,
            "format": "PLAIN",
            "encode": "JSON",
            **options,
        },
        "encode": "JSON",
        "schema": [["id", "bigint"], ["name", "varchar"], ["_row_id", "bigint"]],
    }
    return build_kafka_source(
        plan,
        StateTable(store, OFFSETS_TABLE, KAFKA_OFFSETS_SCHEMA, [0]),
        StateTable(store, ERRORS_TABLE, SOURCE_ERRORS_SCHEMA, [0]),
        SCHEMA,
        ACTOR,
        guarantee=guarantee,
        positions=positions if positions is not None else ReadPositions(None),
        source_id=SOURCE_ID,
        watermark=None,
    )


def record(n: int) -> str:
    return json.dumps({"id": n, "name": f"r{n}", "ignored": [n]})


def row(n: int, partition: int, offset: int) -> Row:
    return (n, f"r{n}", (partition << 48) | offset)


async def produce_to(bootstrap: str, topic: str, partition: int, values: list[str]) -> None:
    await asyncio.to_thread(produce, bootstrap, topic, values, partition=partition)


class Running:
    """A source running on the test's loop: its output so far, barriers injected on demand."""

    def __init__(self, source: KafkaSource) -> None:
        self.source = source
        self.out: list[Message] = []
        self.task = asyncio.create_task(self._consume())

    async def _consume(self) -> None:
        async for message in CheckedOperator(self.source).execute():
            self.out.append(message)
            if isinstance(message, Barrier) and message.stops(ACTOR):
                return

    def rows(self) -> list[Row]:
        return [r for m in self.out if isinstance(m, Chunk) for _, r in m.rows()]

    def rows_before(self, epoch: int) -> list[Row]:
        """Rows emitted before the barrier that ends ``epoch``."""
        for i, message in enumerate(self.out):
            if isinstance(message, Barrier) and message.epoch.prev == epoch:
                return [r for m in self.out[:i] if isinstance(m, Chunk) for _, r in m.rows()]
        raise AssertionError(f"no barrier ends epoch {epoch}")

    async def wait(self, condition: Callable[[], bool], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not condition():
            if self.task.done():
                self.task.result()  # raises the source's error
                raise AssertionError(f"the source stopped before {what}")
            assert asyncio.get_running_loop().time() < deadline, f"no {what} in {WAIT_S}s; rows: {self.rows()}"
            await asyncio.sleep(0.01)

    async def rows_count(self, count: int) -> None:
        await self.wait(lambda: len(self.rows()) >= count, f"{count} rows")

    async def barrier(self, curr: int, prev: int, *, stop: bool = False) -> None:
        mutation = StopMutation(frozenset({ACTOR})) if stop else None
        self.source.inject(barrier(curr, prev, mutation=mutation))
        await self.wait(
            lambda: any(isinstance(m, Barrier) and m.epoch.curr == curr for m in self.out), f"barrier {curr}"
        )
        if stop:
            await asyncio.wait_for(self.task, WAIT_S)

    async def assigned(self, partitions: int) -> None:
        """Wait until the fetch thread has assigned ``partitions`` partitions (and the loop knows it)."""
        await self.wait(lambda: len(self.source.partitions) == partitions, f"{partitions} partitions assigned")


def committed_offsets(store: MemoryStateStore, epoch: int) -> list[Row]:
    return table_rows(store.snapshot(OFFSETS_TABLE, epoch))


def test_records_of_every_partition_come_once_with_their_row_ids_and_offsets_commit_per_barrier(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory(3)

    async def scenario() -> None:
        for partition in range(3):
            await produce_to(kafka_bootstrap, topic, partition, [record(partition * 100 + i) for i in range(5)])
        store = MemoryStateStore()
        running = Running(new_source(store, kafka_bootstrap, topic))
        await running.barrier(10, 0)
        await running.rows_count(15)
        await running.barrier(20, 10)
        # Records produced after a barrier land after it.
        await produce_to(kafka_bootstrap, topic, 1, [record(999)])
        await running.rows_count(16)
        await running.barrier(30, 20, stop=True)
        expected = sorted(row(p * 100 + i, p, i) for p in range(3) for i in range(5))
        assert sorted(running.rows_before(10)) == expected
        assert running.rows()[15:] == [row(999, 1, 5)]
        assert len(set(running.rows())) == 16
        assert committed_offsets(store, 10) == [(0, 5, 0), (1, 5, 0), (2, 5, 0)]
        assert committed_offsets(store, 20) == [(0, 5, 0), (1, 6, 0), (2, 5, 0)]
        assert running.source.offset == 16 and running.source.malformed == 0
        assert running.source.end_offset is None

    asyncio.run(scenario())


def test_a_rebuilt_source_resumes_at_the_committed_offsets_with_nothing_lost_or_doubled(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory(2)

    async def scenario() -> None:
        store = MemoryStateStore()
        await produce_to(kafka_bootstrap, topic, 0, [record(i) for i in range(10)])
        await produce_to(kafka_bootstrap, topic, 1, [record(100 + i) for i in range(10)])
        first = Running(new_source(store, kafka_bootstrap, topic, **{"max.records.per.chunk": "3"}))
        await first.barrier(10, 0)
        await first.rows_count(20)
        await first.barrier(20, 10)
        await produce_to(kafka_bootstrap, topic, 0, [record(i) for i in range(10, 15)])
        await first.rows_count(25)
        # A crash: the checkpoint of epoch 20 never completes; recovery goes back to epoch 10's.
        await first.barrier(30, 20, stop=True)
        before_crash = first.rows_before(10)
        assert len(before_crash) == 20
        await produce_to(kafka_bootstrap, topic, 1, [record(100 + i) for i in range(10, 12)])
        second = Running(new_source(store, kafka_bootstrap, topic))
        await second.barrier(40, 10)
        assert second.source.offset == 20  # the restored offsets count as consumed
        await second.rows_count(7)
        await second.barrier(50, 40, stop=True)
        replayed = second.rows()
        everything = [row(i, 0, i) for i in range(15)] + [row(100 + i, 1, i) for i in range(12)]
        assert sorted(before_crash + replayed) == sorted(everything)
        assert committed_offsets(store, 40) == [(0, 15, 0), (1, 12, 0)]

    asyncio.run(scenario())


def test_a_barrier_is_emitted_at_once_while_a_fetch_is_outstanding(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(1)

    async def scenario() -> None:
        running = Running(new_source(MemoryStateStore(), kafka_bootstrap, topic))
        await running.barrier(10, 0)
        await running.assigned(1)  # the fetch thread is now waiting in consume()
        for epoch in (20, 30, 40):
            running.source.inject(barrier(epoch, epoch - 10))
            for _ in range(10):  # a few loop turns, no waiting for the broker
                await asyncio.sleep(0)
            assert isinstance(running.out[-1], Barrier) and running.out[-1].epoch.curr == epoch
        await running.barrier(50, 40, stop=True)

    asyncio.run(scenario())


@pytest.mark.parametrize("policy", ["record", "skip"])
def test_malformed_records_are_counted_and_kept_or_skipped(
    kafka_bootstrap: str, topic_factory: Any, policy: str
) -> None:
    topic = topic_factory(1)

    async def scenario() -> None:
        values = [record(0), "{not json", json.dumps({"id": "abc"}), record(3)]
        await produce_to(kafka_bootstrap, topic, 0, values)
        store = MemoryStateStore()
        running = Running(new_source(store, kafka_bootstrap, topic, **{"on.error": policy}))
        await running.barrier(10, 0)
        await running.rows_count(2)
        await running.wait(lambda: running.source.malformed == 2, "2 malformed records")
        await running.barrier(20, 10, stop=True)
        assert running.rows() == [row(0, 0, 0), row(3, 0, 3)]
        assert committed_offsets(store, 10) == [(0, 4, 2)]
        errors = table_rows(store.snapshot(ERRORS_TABLE, 10))
        if policy == "skip":
            assert errors == []
        else:
            assert [(location, payload) for location, payload, _ in errors] == [
                ("partition 0 offset 1", "{not json"),
                ("partition 0 offset 2", '{"id": "abc"}'),
            ]
            assert errors[1][2] == 'column "id": invalid input syntax for type bigint: "abc"'
        # A rebuilt source restores the count with the offsets.
        again = Running(new_source(store, kafka_bootstrap, topic, **{"on.error": policy}))
        await again.barrier(30, 10, stop=True)
        assert again.source.malformed == 2

    asyncio.run(scenario())


def test_a_malformed_record_fails_the_source_with_on_error_fail(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(1)

    async def scenario() -> None:
        await produce_to(kafka_bootstrap, topic, 0, [record(0), "[]"])
        running = Running(new_source(MemoryStateStore(), kafka_bootstrap, topic, **{"on.error": "fail"}))
        await running.barrier(10, 0)
        with pytest.raises(DataError, match=r"partition 0 offset 1: not a JSON object \(found an array\)"):
            await asyncio.wait_for(running.task, WAIT_S)
        await asyncio.to_thread(running.source.fetcher.join, WAIT_S)  # type: ignore[union-attr]
        assert running.source.fetcher.closed.is_set()  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_partition_added_while_running_is_read_from_its_beginning(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(1)

    async def scenario() -> None:
        store = MemoryStateStore()
        # Latest: the partitions there at the start begin at their end, a new one at its beginning.
        running = Running(
            new_source(
                store,
                kafka_bootstrap,
                topic,
                **{"partition.discovery.interval.ms": "100", "scan.startup.mode": "latest"},
            )
        )
        await running.barrier(10, 0)
        await running.assigned(1)
        await asyncio.to_thread(add_partitions, kafka_bootstrap, topic, 2)
        await running.assigned(2)
        await running.barrier(20, 10)
        await produce_to(kafka_bootstrap, topic, 1, [record(1), record(2)])
        await running.rows_count(2)
        await running.barrier(30, 20, stop=True)
        assert running.rows() == [row(1, 1, 0), row(2, 1, 1)]
        assert committed_offsets(store, 10) == [(0, 0, 0), (1, 0, 0)]
        assert committed_offsets(store, 20) == [(0, 0, 0), (1, 2, 0)]

    asyncio.run(scenario())


def test_startup_mode_latest_ignores_earlier_records_and_keeps_its_start(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory(2)

    async def scenario() -> None:
        await produce_to(kafka_bootstrap, topic, 0, [record(i) for i in range(3)])
        store = MemoryStateStore()
        running = Running(new_source(store, kafka_bootstrap, topic, **{"scan.startup.mode": "latest"}))
        await running.barrier(10, 0)
        await running.assigned(2)
        await running.barrier(20, 10)
        # The start resolved to each partition's end is committed before any record came.
        assert committed_offsets(store, 10) == [(0, 3, 0), (1, 0, 0)]
        await produce_to(kafka_bootstrap, topic, 0, [record(3)])
        await running.rows_count(1)
        await running.barrier(30, 20, stop=True)
        assert running.rows() == [row(3, 0, 3)]

    asyncio.run(scenario())


@pytest.mark.parametrize("guarantee", [DeliveryGuarantee.AT_MOST_ONCE, DeliveryGuarantee.EXACTLY_ONCE])
def test_at_most_once_goes_on_from_what_was_read_while_exactly_once_rewinds(
    kafka_bootstrap: str, topic_factory: Any, guarantee: DeliveryGuarantee
) -> None:
    topic = topic_factory(1)

    async def scenario() -> None:
        store = MemoryStateStore()
        positions = ReadPositions(None)
        await produce_to(kafka_bootstrap, topic, 0, [record(i) for i in range(5)])
        first = Running(new_source(store, kafka_bootstrap, topic, guarantee=guarantee, positions=positions))
        await first.barrier(10, 0)
        await first.rows_count(5)
        await first.barrier(20, 10)
        await produce_to(kafka_bootstrap, topic, 0, [record(i) for i in range(5, 8)])
        await first.rows_count(8)
        await first.barrier(30, 20, stop=True)  # a crash: the checkpoint of epoch 20 never completes
        if guarantee is DeliveryGuarantee.AT_MOST_ONCE:
            assert positions.load(ACTOR, SOURCE_ID) == {"0": 8}
        await produce_to(kafka_bootstrap, topic, 0, [record(8)])
        second = Running(new_source(store, kafka_bootstrap, topic, guarantee=guarantee, positions=positions))
        await second.barrier(40, 10)
        if guarantee is DeliveryGuarantee.AT_MOST_ONCE:
            await second.rows_count(1)
            await second.barrier(50, 40, stop=True)
            assert second.rows() == [row(8, 0, 8)]  # 5, 6 and 7 were in flight: dropped
        else:
            await second.rows_count(4)
            await second.barrier(50, 40, stop=True)
            assert second.rows() == [row(i, 0, i) for i in range(5, 9)]
        assert committed_offsets(store, 40) == [(0, 9, 0)]

    asyncio.run(scenario())


def test_the_consumer_is_closed_on_stop_and_on_cancel(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(1)

    async def scenario() -> None:
        stopped = Running(new_source(MemoryStateStore(), kafka_bootstrap, topic))
        await stopped.barrier(10, 0)
        await stopped.assigned(1)
        await stopped.barrier(20, 10, stop=True)
        fetcher = stopped.source.fetcher
        assert fetcher is not None and fetcher.closed.is_set()
        with pytest.raises(RuntimeError, match="closed"):
            fetcher.consumer.assignment()

        cancelled = Running(new_source(MemoryStateStore(), kafka_bootstrap, topic))
        await cancelled.barrier(10, 0)
        await cancelled.assigned(1)
        cancelled.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled.task
        fetcher = cancelled.source.fetcher
        assert fetcher is not None
        await asyncio.to_thread(fetcher.join, WAIT_S)
        assert fetcher.closed.is_set()

    asyncio.run(scenario())


def test_a_first_barrier_that_stops_opens_no_consumer(kafka_bootstrap: str, topic_factory: Any) -> None:
    topic = topic_factory(1)

    async def scenario() -> None:
        running = Running(new_source(MemoryStateStore(), kafka_bootstrap, topic))
        await running.barrier(10, 0, stop=True)
        assert running.source.fetcher is None

    asyncio.run(scenario())


def test_the_fetch_thread_stops_fetching_while_the_stream_does_not_take_its_batches(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory(1)

    async def scenario() -> None:
        await produce_to(kafka_bootstrap, topic, 0, [record(i) for i in range(40)])
        source = new_source(MemoryStateStore(), kafka_bootstrap, topic, **{"max.records.per.chunk": "2"})
        stream = source.execute()
        source.inject(barrier(10, 0))
        assert isinstance(await stream.__anext__(), Barrier)
        first = await asyncio.wait_for(stream.__anext__(), WAIT_S)  # starts the fetch thread
        assert isinstance(first, Chunk)
        fetcher = source.fetcher
        assert fetcher is not None
        deadline = asyncio.get_running_loop().time() + WAIT_S
        while not fetcher.items.full():
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # several consume() calls' time: the thread waits for room
        assert fetcher.items.qsize() == FETCH_QUEUE_BATCHES_MAX
        assert fetcher.consumer.position([TopicPartition(topic, 0)])[0].offset <= 2 * (FETCH_QUEUE_BATCHES_MAX + 2)
        await stream.aclose()
        await asyncio.to_thread(fetcher.join, WAIT_S)
        assert fetcher.closed.is_set()

    asyncio.run(scenario())


def test_a_watermark_drops_late_records_follows_their_chunk_and_commits_with_the_offsets(
    kafka_bootstrap: str, topic_factory: Any
) -> None:
    topic = topic_factory(1)
    schema = pa.schema([("id", pa.int64()), ("at", pa.timestamp("us")), ("_row_id", pa.int64())])

    def timed(n: int, second: int) -> str:
        return json.dumps({"id": n, "at": f"2026-11-28 10:00:{second:02d}"})

    async def scenario() -> None:
        store = MemoryStateStore()
        state = StateTable(store, (ACTOR << 16) | 3, WATERMARK_STATE_SCHEMA, [0])
        watermark = WatermarkGenerator(WatermarkSpec(1, 1_000_000), pa.timestamp("us"), state)
        plan = {
            "options": {"topic": topic, "properties.bootstrap.server": kafka_bootstrap},
            "encode": "JSON",
            "schema": [["id", "bigint"], ["at", "timestamp"], ["_row_id", "bigint"]],
        }
        source = build_kafka_source(
            plan,
            StateTable(store, OFFSETS_TABLE, KAFKA_OFFSETS_SCHEMA, [0]),
            StateTable(store, ERRORS_TABLE, SOURCE_ERRORS_SCHEMA, [0]),
            schema,
            ACTOR,
            guarantee=DeliveryGuarantee.EXACTLY_ONCE,
            positions=ReadPositions(None),
            source_id=SOURCE_ID,
            watermark=watermark,
        )
        await produce_to(kafka_bootstrap, topic, 0, [timed(0, 10), timed(1, 20)])
        running = Running(source)
        await running.barrier(10, 0)
        await running.rows_count(2)
        await running.wait(lambda: any(isinstance(m, Watermark) for m in running.out), "a watermark")
        await produce_to(kafka_bootstrap, topic, 0, [timed(2, 5), timed(3, 30)])  # 10:00:05 is late
        await running.rows_count(3)
        await running.barrier(20, 10, stop=True)
        assert [r[0] for r in running.rows()] == [0, 1, 3]
        at_30 = int(dt.datetime(2026, 11, 28, 10, 0, 30, tzinfo=dt.UTC).timestamp() * 1_000_000)
        assert [m.value for m in running.out if isinstance(m, Watermark)][-1] == at_30 - 1_000_000
        assert table_rows(store.snapshot((ACTOR << 16) | 3, 10)) == [(1, at_30 - 1_000_000)]
        assert committed_offsets(store, 10) == [(0, 4, 0)]

    asyncio.run(scenario())
