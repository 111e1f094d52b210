"""The Kafka source's WITH options, and the check CREATE SOURCE makes against the broker."""

from __future__ import annotations

import pytest
from kafka_helpers import create_topic, delete_topic, unique_topic

from tidegate.connectors.kafka_options import (
    KafkaSourceOptions,
    check_kafka_source,
    client_config,
    parse_kafka_source_options,
)
from tidegate.connectors.source_errors import ErrorPolicy
from tidegate.errors import ConnectionFailure, InvalidParameterValue

BASE = {"connector": "kafka", "format": "PLAIN", "encode": "JSON", "topic": "orders"}


def parse(**options: str) -> KafkaSourceOptions:
    return parse_kafka_source_options({**BASE, "properties.bootstrap.server": "127.0.0.1:9092", **options})


def test_defaults() -> None:
    options = parse()
    assert options == KafkaSourceOptions(
        topic="orders",
        bootstrap_servers="127.0.0.1:9092",
        startup_mode="earliest",
        on_error=ErrorPolicy.RECORD,
        partition_discovery_interval_ms=5000,
        records_per_chunk_max=10_000,
        properties={},
    )


def test_every_option() -> None:
    options = parse_kafka_source_options(
        {
            **BASE,
            "properties.bootstrap.servers": "a:1,b:2",
            "scan.startup.mode": "Latest",
            "on.error": "skip",
            "partition.discovery.interval.ms": "250",
            "max.records.per.chunk": "64",
            "properties.security.protocol": "PLAINTEXT",
            "properties.fetch.max.bytes": "1048576",
            "csv.delimiter": ";",  # read by the record decoder
        }
    )
    assert options.bootstrap_servers == "a:1,b:2"
    assert options.startup_mode == "latest"
    assert options.on_error is ErrorPolicy.SKIP
    assert options.partition_discovery_interval_ms == 250
    assert options.records_per_chunk_max == 64
    assert options.properties == {"security.protocol": "PLAINTEXT", "fetch.max.bytes": "1048576"}
    config = client_config(options)
    assert config["bootstrap.servers"] == "a:1,b:2" and config["security.protocol"] == "PLAINTEXT"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"topic": ""}, "needs the option topic"),
        ({"properties.bootstrap.server": " "}, r"needs the option properties\.bootstrap\.server"),
        ({"scan.startup.mode": "timestamp"}, r"scan\.startup\.mode = 'timestamp'"),
        ({"on.error": "ignore"}, r"on\.error = 'ignore'"),
        ({"partition.discovery.interval.ms": "0"}, r"partition\.discovery\.interval\.ms = '0' must be an integer"),
        ({"max.records.per.chunk": "lots"}, r"max\.records\.per\.chunk = 'lots'"),
        ({"max.records.per.chunk": "2000000"}, "between 1 and 1000000"),
        ({"properties.group.id": "mine"}, "consumer group"),
        ({"properties.enable.auto.commit": "true"}, "tidegate's state"),
        ({"properties.isolation.level": "read_uncommitted"}, "read_committed"),
        ({"topics": "x"}, r'unknown option "topics".*topic, scan\.startup\.mode'),
    ],
)
def test_bad_options_name_the_problem(options: dict[str, str], message: str) -> None:
    with pytest.raises(InvalidParameterValue, match=message):
        parse(**options)


def test_a_missing_bootstrap_server_is_named() -> None:
    with pytest.raises(InvalidParameterValue, match="bootstrap"):
        parse_kafka_source_options(BASE)


def test_check_refuses_an_unreachable_broker() -> None:
    options = parse(**{"properties.bootstrap.server": "127.0.0.1:1"})
    with pytest.raises(ConnectionFailure, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        check_kafka_source(options, timeout_s=0.5)


def test_check_refuses_a_bad_client_setting() -> None:
    with pytest.raises(InvalidParameterValue, match=r"no\.such\.setting"):
        check_kafka_source(parse(**{"properties.no.such.setting": "1"}), timeout_s=0.5)


def test_check_counts_partitions_and_refuses_a_missing_topic(kafka_bootstrap: str) -> None:
    topic = create_topic(kafka_bootstrap, unique_topic("options"), partitions=3)
    try:
        options = parse(topic=topic, **{"properties.bootstrap.server": kafka_bootstrap})
        assert check_kafka_source(options) == 3
        missing = parse(topic=unique_topic("missing"), **{"properties.bootstrap.server": kafka_bootstrap})
        with pytest.raises(InvalidParameterValue, match=r'Kafka topic "missing-[0-9a-f]+" does not exist'):
            check_kafka_source(missing)
    finally:
        delete_topic(kafka_bootstrap, topic)
