"""Small helpers for tests that use a real Kafka broker (the ``kafka_bootstrap`` fixture).

Tests share one broker, so every topic and group gets a unique name
(:func:`unique_topic`). Each helper opens its own client and closes it before it
returns, and each waits for what it asked for, with a bound on the wait: a test
never sleeps to let the broker catch up.

    from kafka_helpers import consume_all, create_topic, produce, unique_topic
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Sequence
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

REQUEST_TIMEOUT_S = 30.0
# consume_all reads at most this many messages per poll.
CONSUME_BATCH_SIZE = 500

# A consumed message: (partition, offset, key, value).
Record = tuple[int, int, bytes | None, bytes | None]


def unique_topic(prefix: str = "test") -> str:
    """A topic (or group) name no other test uses: ``prefix`` and 12 random hex digits."""
    return f"{prefix}-{secrets.token_hex(6)}"


def admin_client(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap})


def partition_count(bootstrap: str, name: str) -> int:
    """How many partitions the broker's metadata gives ``name`` (0 when it does not exist)."""
    metadata = admin_client(bootstrap).list_topics(topic=name, timeout=REQUEST_TIMEOUT_S)
    topic = metadata.topics.get(name)
    if topic is None or topic.error is not None:
        return 0
    return len(topic.partitions)


def wait_for_partition_count(bootstrap: str, name: str, expected: int) -> None:
    deadline = time.monotonic() + REQUEST_TIMEOUT_S
    while partition_count(bootstrap, name) != expected:
        assert time.monotonic() < deadline, f"topic {name} did not get {expected} partitions in {REQUEST_TIMEOUT_S}s"
        time.sleep(0.05)


def create_topic(bootstrap: str, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
    """Create ``name`` and wait until its partitions are in the broker's metadata; returns the name."""
    # Keep the client referenced until the result is in: a collected client cancels its requests.
    admin = admin_client(bootstrap)
    futures = admin.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
        request_timeout=REQUEST_TIMEOUT_S,
    )
    futures[name].result(timeout=REQUEST_TIMEOUT_S)
    wait_for_partition_count(bootstrap, name, partitions)
    return name


def add_partitions(bootstrap: str, name: str, total: int) -> None:
    """Grow ``name`` to ``total`` partitions and wait until the metadata shows them."""
    admin = admin_client(bootstrap)
    futures = admin.create_partitions([NewPartitions(name, total)], request_timeout=REQUEST_TIMEOUT_S)
    futures[name].result(timeout=REQUEST_TIMEOUT_S)
    wait_for_partition_count(bootstrap, name, total)


def delete_topic(bootstrap: str, name: str) -> None:
    """Delete ``name``; nothing to do when it does not exist."""
    admin = admin_client(bootstrap)
    futures = admin.delete_topics([name], request_timeout=REQUEST_TIMEOUT_S)
    try:
        futures[name].result(timeout=REQUEST_TIMEOUT_S)
    except KafkaException as error:
        if error.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise


def as_bytes(value: bytes | str | None) -> bytes | None:
    return value.encode() if isinstance(value, str) else value


def produce(
    bootstrap: str,
    topic: str,
    values: Sequence[bytes | str],
    key: bytes | str | None = None,
    partition: int | None = None,
) -> None:
    """Write ``values`` in order (idempotently, acks=all) and wait until every one is acknowledged."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    failures: list[KafkaError] = []

    def on_delivery(error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            failures.append(error)

    extra: dict[str, Any] = {} if partition is None else {"partition": partition}
    for value in values:
        producer.produce(topic, value=as_bytes(value), key=as_bytes(key), on_delivery=on_delivery, **extra)
        # Serve delivery reports as we go, so a long list does not fill the local queue.
        producer.poll(0)
    remaining = producer.flush(REQUEST_TIMEOUT_S)
    assert remaining == 0, f"{remaining} messages to {topic} were not delivered in {REQUEST_TIMEOUT_S}s"
    assert not failures, f"delivering to {topic} failed: {failures}"


def consume_all(
    bootstrap: str, topic: str, *, read_committed: bool = True, timeout_s: float = REQUEST_TIMEOUT_S
) -> list[Record]:
    """Every message of every partition of ``topic``, from the beginning to the current end.

    The end is each partition's high watermark, or with ``read_committed`` its last
    stable offset (the first offset of a transaction still open): what a
    read_committed consumer can see now. The list is sorted by partition, then
    offset. The consumer joins no group and commits nothing.
    """
    isolation = "read_committed" if read_committed else "read_uncommitted"
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # A group id is required by the client even with assign(); it is never used here.
            "group.id": unique_topic("consume-all"),
            "enable.auto.commit": False,
            "isolation.level": isolation,
            "enable.partition.eof": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic=topic, timeout=timeout_s)
        topic_metadata = metadata.topics.get(topic)
        assert topic_metadata is not None and topic_metadata.error is None, f"no topic {topic}: {topic_metadata}"
        starts: dict[int, int] = {}
        ends: dict[int, int] = {}
        for partition in sorted(topic_metadata.partitions):
            # With read_committed the broker answers the last stable offset as the high watermark.
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
            if high > low:
                starts[partition], ends[partition] = low, high
        if not ends:
            return []
        consumer.assign([TopicPartition(topic, partition, offset) for partition, offset in starts.items()])
        return read_until(consumer, topic, ends, timeout_s)
    finally:
        consumer.close()


def read_until(consumer: Consumer, topic: str, ends: dict[int, int], timeout_s: float) -> list[Record]:
    """Poll until every partition's position reaches its end offset."""
    records: list[Record] = []
    remaining = dict(ends)
    deadline = time.monotonic() + timeout_s
    while remaining:
        assert time.monotonic() < deadline, f"{topic}: did not reach offsets {remaining} in {timeout_s}s"
        for message in consumer.consume(CONSUME_BATCH_SIZE, timeout=0.1):
            error = message.error()
            if error is not None:
                raise KafkaException(error)
            partition, offset = message.partition(), message.offset()
            assert partition is not None and offset is not None
            if partition in remaining and offset < remaining[partition]:
                records.append((partition, offset, message.key(), message.value()))
        # Transaction markers and aborted messages take offsets but are never delivered: the
        # position, not the last message, tells when a partition is read to its end.
        for position in consumer.position([TopicPartition(topic, partition) for partition in list(remaining)]):
            if position.offset >= remaining[position.partition]:
                del remaining[position.partition]
    return sorted(records)
