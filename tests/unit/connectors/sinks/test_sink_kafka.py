"""The Kafka sink target against a real broker: transactions, fencing, the marker epoch, upserts."""

from __future__ import annotations

import json
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from kafka_helpers import consume_all, partition_count, unique_topic
from sink_helpers import make_changes, make_spec

from tidegate.common.chunk import Op
from tidegate.common.types import INTEGER, VARCHAR, SqlType
from tidegate.connectors.sinks import check_sink_options, make_sink_target
from tidegate.connectors.sinks.kafka import KafkaSinkTarget
from tidegate.errors import FeatureNotSupported, InvalidParameterValue

KV = [("k", INTEGER), ("v", VARCHAR)]


def _target(bootstrap: str, topic: str, columns: list[tuple[str, SqlType]], **kwargs: Any) -> KafkaSinkTarget:
    upsert = kwargs.get("sink_type") == "upsert"
    options = {"connector": "kafka", "topic": topic, "properties.bootstrap.server": bootstrap}
    options.update(kwargs.pop("options", {}))
    kwargs.setdefault("sink_id", int(topic.rsplit("-", 1)[1], 16))  # a marker group per test
    spec = make_spec(columns, options=options, format="UPSERT" if upsert else "PLAIN", encode="JSON", **kwargs)
    target = make_sink_target(spec)
    assert isinstance(target, KafkaSinkTarget)
    return target


def _messages(bootstrap: str, topic: str, read_committed: bool = True) -> list[tuple[Any, Any]]:
    def decoded(raw: bytes | None) -> Any:
        return None if raw is None else json.loads(raw)

    return [
        (decoded(key), decoded(value))
        for _, _, key, value in consume_all(bootstrap, topic, read_committed=read_committed)
    ]


def test_delivered_rows_are_seen_once_and_the_epoch_is_recorded(kafka_bootstrap: str) -> None:
    topic = unique_topic("sink")
    target = _target(kafka_bootstrap, topic, KV)
    target.open()
    assert target.last_delivered_epoch() == 0
    target.deliver(100, make_changes(KV, [(Op.INSERT, (1, "a")), (Op.INSERT, (2, None))]))
    target.deliver(100, make_changes(KV, [(Op.INSERT, (9, "replayed"))]))  # a replay: skipped
    target.deliver(101, make_changes(KV, []))  # only the record moves
    assert target.last_delivered_epoch() == 101
    target.close()
    assert _messages(kafka_bootstrap, topic) == [(None, {"k": 1, "v": "a"}), (None, {"k": 2, "v": None})]
    # A restarted target reads the epoch from the marker group.
    again = _target(kafka_bootstrap, topic, KV)
    again.open()
    assert again.last_delivered_epoch() == 101
    again.deliver(101, make_changes(KV, [(Op.INSERT, (9, "replayed"))]))
    again.deliver(102, make_changes(KV, [(Op.INSERT, (3, "c"))]))
    again.close()
    assert [value for _, value in _messages(kafka_bootstrap, topic)] == [
        {"k": 1, "v": "a"},
        {"k": 2, "v": None},
        {"k": 3, "v": "c"},
    ]


def test_a_crashed_producers_open_transaction_is_never_visible(kafka_bootstrap: str) -> None:
    topic = unique_topic("sink")
    first = _target(kafka_bootstrap, topic, KV)
    first.open()
    first.deliver(1, make_changes(KV, [(Op.INSERT, (1, "kept"))]))
    # The "crash": a producer of the same transactional id produces inside a transaction and never ends it.
    zombie = Producer({"bootstrap.servers": kafka_bootstrap, "transactional.id": first.transactional_id})
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(topic, value=b'{"k": 2, "v": "zombie"}')
    assert zombie.flush(30) == 0
    assert len(consume_all(kafka_bootstrap, topic, read_committed=False)) == 2  # it is in the log, uncommitted
    successor = _target(kafka_bootstrap, topic, KV)
    successor.open()  # fences the zombie and aborts its transaction
    assert successor.last_delivered_epoch() == 1
    successor.deliver(2, make_changes(KV, [(Op.INSERT, (3, "after"))]))
    successor.close()
    with pytest.raises(KafkaException):
        zombie.commit_transaction(30)
    assert [value for _, value in _messages(kafka_bootstrap, topic)] == [{"k": 1, "v": "kept"}, {"k": 3, "v": "after"}]


def test_upsert_sends_the_last_change_per_key_and_tombstones(kafka_bootstrap: str) -> None:
    topic = unique_topic("sink")
    target = _target(kafka_bootstrap, topic, KV, key=[0], sink_type="upsert")
    target.open()
    changes = [
        (Op.INSERT, (1, "a")),
        (Op.INSERT, (2, "b")),
        (Op.UPDATE_DELETE, (1, "a")),
        (Op.UPDATE_INSERT, (1, "a2")),
        (Op.DELETE, (2, "b")),
        (Op.INSERT, (3, "c")),
    ]
    target.deliver(5, make_changes(KV, changes))
    target.close()
    assert _messages(kafka_bootstrap, topic) == [
        ({"k": 1}, {"k": 1, "v": "a2"}),
        ({"k": 2}, None),
        ({"k": 3}, {"k": 3, "v": "c"}),
    ]


def test_append_only_with_a_key_keys_its_messages_and_write_skips_transactions(kafka_bootstrap: str) -> None:
    topic = unique_topic("sink")
    target = _target(kafka_bootstrap, topic, KV, key=[0], options={"topic.partitions": "3"})
    target.open()
    assert partition_count(kafka_bootstrap, topic) == 3
    target.write(make_changes(KV, [(Op.INSERT, (7, "w"))]))
    assert target.last_delivered_epoch() == 0
    target.close()
    assert _messages(kafka_bootstrap, topic) == [({"k": 7}, {"k": 7, "v": "w"})]


def test_options_are_checked_without_connecting() -> None:
    def check(options: dict[str, str], **kwargs: Any) -> None:
        base = {"connector": "kafka", "topic": "t", "properties.bootstrap.server": "127.0.0.1:1"}
        kwargs.setdefault("format", "PLAIN")
        kwargs.setdefault("encode", "JSON")
        check_sink_options(make_spec(KV, options={**base, **options}, **kwargs))

    check({"properties.linger.ms": "5", "topic.partitions": "4"})
    check({}, format="UPSERT", sink_type="upsert", key=[0])
    with pytest.raises(InvalidParameterValue, match=r"properties\.bootstrap\.server"):
        check({"properties.bootstrap.server": ""})
    with pytest.raises(InvalidParameterValue, match='unknown option "topics"'):
        check({"topics": "x"})
    with pytest.raises(InvalidParameterValue, match="set by the kafka sink itself"):
        check({"properties.transactional.id": "x"})
    with pytest.raises(InvalidParameterValue, match=r"topic\.partitions"):
        check({"topic.partitions": "0"})
    with pytest.raises(InvalidParameterValue, match="FORMAT PLAIN needs an append-only sink"):
        check({}, sink_type="upsert", key=[0])
    with pytest.raises(InvalidParameterValue, match="FORMAT UPSERT needs"):
        check({}, format="UPSERT")
    with pytest.raises(FeatureNotSupported, match="ENCODE AVRO"):
        check({}, encode="AVRO")
    with pytest.raises(InvalidParameterValue, match="needs FORMAT PLAIN ENCODE JSON or FORMAT UPSERT"):
        check({}, format=None, encode=None)
