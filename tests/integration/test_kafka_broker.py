"""The Kafka broker of the tests does what tidegate's Kafka connectors rely on.

Not a test of tidegate: a check of the broker that ``scripts/start-kafka.sh``
starts (the ``kafka_bootstrap`` fixture) and of the helpers in
``tests/kafka_helpers.py``, so that a connector test that fails points at the
connector. The source reads partitions from offsets it keeps itself; the sink
writes each epoch in one transaction and records the epoch it delivered as the
offset of a marker consumer group, committed in that same transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from kafka_helpers import add_partitions, consume_all, create_topic, delete_topic, produce, unique_topic

TIMEOUT_S = 30.0


@pytest.fixture
def make_topic(kafka_bootstrap: str) -> Iterator[Callable[[int], str]]:
    """A factory: each call creates a new topic with that many partitions, deleted after the test."""
    created: list[str] = []

    def make(partitions: int) -> str:
        created.append(create_topic(kafka_bootstrap, unique_topic("broker-test"), partitions))
        return created[-1]

    yield make
    for name in created:
        delete_topic(kafka_bootstrap, name)


def transactional_producer(bootstrap: str, transactional_id: str) -> Producer:
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": transactional_id})
    producer.init_transactions(TIMEOUT_S)
    return producer


def values_of(records: list[Any]) -> list[bytes]:
    return [value for _, _, _, value in records]


def test_messages_round_trip_through_three_partitions(kafka_bootstrap: str, make_topic: Callable[[int], str]) -> None:
    topic = make_topic(3)
    for partition in range(3):
        produce(kafka_bootstrap, topic, [f"p{partition}-a", f"p{partition}-b"], key="k", partition=partition)

    records = consume_all(kafka_bootstrap, topic)

    assert records == [
        (partition, offset, b"k", f"p{partition}-{letter}".encode())
        for partition in range(3)
        for offset, letter in enumerate("ab")
    ]


def test_partitions_can_be_added(kafka_bootstrap: str, make_topic: Callable[[int], str]) -> None:
    topic = make_topic(1)
    add_partitions(kafka_bootstrap, topic, 2)
    produce(kafka_bootstrap, topic, ["new"], partition=1)

    assert consume_all(kafka_bootstrap, topic) == [(1, 0, None, b"new")]


def test_read_committed_sees_committed_transactions_only(
    kafka_bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(1)
    producer = transactional_producer(kafka_bootstrap, unique_topic("txn"))
    producer.begin_transaction()
    producer.produce(topic, b"committed-1")
    producer.produce(topic, b"committed-2")
    producer.commit_transaction(TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic, b"aborted")
    # Flushed first: abort_transaction drops the messages the producer has not sent yet.
    producer.flush(TIMEOUT_S)
    producer.abort_transaction(TIMEOUT_S)
    producer.begin_transaction()
    producer.produce(topic, b"open")
    producer.flush(TIMEOUT_S)

    # The open transaction holds the last stable offset back: read_committed stops before it.
    assert values_of(consume_all(kafka_bootstrap, topic)) == [b"committed-1", b"committed-2"]
    assert values_of(consume_all(kafka_bootstrap, topic, read_committed=False)) == [
        b"committed-1",
        b"committed-2",
        b"aborted",
        b"open",
    ]
    producer.commit_transaction(TIMEOUT_S)
    assert values_of(consume_all(kafka_bootstrap, topic)) == [b"committed-1", b"committed-2", b"open"]


def test_offsets_sent_to_a_transaction_are_committed_with_it(
    kafka_bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(1)
    marker_group = unique_topic("marker-group")
    # The sink's marker: a group no consumer ever joins, whose offset for partition 0 is the epoch.
    group_consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": marker_group})
    producer = transactional_producer(kafka_bootstrap, unique_topic("txn"))
    try:
        for epoch, commit in [(41, True), (42, False)]:
            producer.begin_transaction()
            producer.produce(topic, f"epoch {epoch}".encode())
            producer.flush(TIMEOUT_S)
            producer.send_offsets_to_transaction(
                [TopicPartition(topic, 0, epoch)], group_consumer.consumer_group_metadata(), TIMEOUT_S
            )
            if commit:
                producer.commit_transaction(TIMEOUT_S)
            else:
                producer.abort_transaction(TIMEOUT_S)

        (committed,) = group_consumer.committed([TopicPartition(topic, 0)], timeout=TIMEOUT_S)
        assert committed.error is None
        assert committed.offset == 41
        assert values_of(consume_all(kafka_bootstrap, topic)) == [b"epoch 41"]
    finally:
        group_consumer.close()


def test_a_new_producer_with_the_same_transactional_id_fences_the_old_one(
    kafka_bootstrap: str, make_topic: Callable[[int], str]
) -> None:
    topic = make_topic(1)
    transactional_id = unique_topic("txn")
    old = transactional_producer(kafka_bootstrap, transactional_id)
    old.begin_transaction()
    old.produce(topic, b"from the old producer")
    old.flush(TIMEOUT_S)

    # init_transactions aborts the transaction the old producer left open, and bumps the epoch.
    new = transactional_producer(kafka_bootstrap, transactional_id)

    with pytest.raises(KafkaException) as raised:
        old.commit_transaction(TIMEOUT_S)
    assert raised.value.args[0].fatal(), raised.value
    assert consume_all(kafka_bootstrap, topic) == []
    assert values_of(consume_all(kafka_bootstrap, topic, read_committed=False)) == [b"from the old producer"]
    new.begin_transaction()
    new.produce(topic, b"from the new producer")
    new.commit_transaction(TIMEOUT_S)
    assert values_of(consume_all(kafka_bootstrap, topic)) == [b"from the new producer"]
