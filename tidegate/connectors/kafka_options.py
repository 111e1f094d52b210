"""The options of a Kafka source (``CREATE SOURCE s (…) WITH (connector = 'kafka', …) FORMAT PLAIN ENCODE JSON``).

Place in the data flow: DDL binding validates a source's options here and checks that the broker
and the topic can be reached (``check_kafka_source``), so a mistake fails CREATE SOURCE rather
than a running job; the stream builder turns the stored options into the ``KafkaSource``
operator's settings.

Option names follow RisingWave's Kafka connector: ``topic``, ``properties.bootstrap.server``,
``scan.startup.mode``; any other ``properties.X`` is handed to librdkafka as ``X``, except the
settings that would move offsets out of tidegate's state (docs/design/20261128_kafka_source.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from tidegate.connectors.source_errors import ErrorPolicy, parse_error_policy
from tidegate.errors import ConnectionFailure, InvalidParameterValue

KAFKA_LOGGER = logging.getLogger("tidegate.connectors.kafka")
STARTUP_MODES = ("earliest", "latest")
PARTITION_DISCOVERY_INTERVAL_MS_DEFAULT = 5000
RECORDS_PER_CHUNK_MAX_DEFAULT = 10_000
RECORDS_PER_CHUNK_MAX_LIMIT = 1_000_000  # librdkafka's own bound on one consume() call
_PROPERTIES_PREFIX = "properties."
_BOOTSTRAP_KEYS = ("properties.bootstrap.server", "properties.bootstrap.servers")
_OPTIONS = ("topic", "scan.startup.mode", "on.error", "partition.discovery.interval.ms", "max.records.per.chunk")
# Consumed elsewhere: by DDL binding (connector, format, encode) and by the record decoder (csv.*).
_CONSUMED_ELSEWHERE = ("connector", "format", "encode")
_CONSUMED_PREFIXES = ("csv.",)
# librdkafka settings a source fixes itself: its offsets are tidegate state, not a consumer group's.
_FIXED_PROPERTIES = {
    "group.id": "the source joins no consumer group: its offsets are kept in tidegate's state",
    "enable.auto.commit": "the source commits no offsets to Kafka: they are kept in tidegate's state",
    "isolation.level": "the source reads committed records only (read_committed), so it never sees aborted ones",
}


@dataclass(frozen=True)
class KafkaSourceOptions:
    topic: str
    bootstrap_servers: str
    startup_mode: str  # 'earliest' | 'latest': where a partition with no stored offset starts
    on_error: ErrorPolicy
    partition_discovery_interval_ms: int
    records_per_chunk_max: int
    # Other librdkafka settings (``properties.X`` → ``X``), e.g. security.protocol.
    properties: dict[str, str] = field(default_factory=dict)


def parse_kafka_source_options(options: dict[str, str]) -> KafkaSourceOptions:
    """Validate a Kafka source's WITH options; raises InvalidParameterValue for a bad one."""
    properties: dict[str, str] = {}
    for key, value in options.items():
        name = key.lower()
        if name in _BOOTSTRAP_KEYS:
            continue
        if name.startswith(_PROPERTIES_PREFIX):
            setting = key[len(_PROPERTIES_PREFIX) :]
            if setting.lower() in _FIXED_PROPERTIES:
                raise InvalidParameterValue(
                    f"option {key} cannot be set for a Kafka source: {_FIXED_PROPERTIES[setting.lower()]}"
                )
            properties[setting] = value
        elif name not in _OPTIONS and name not in _CONSUMED_ELSEWHERE and not name.startswith(_CONSUMED_PREFIXES):
            accepted = ", ".join((*_OPTIONS, "properties.bootstrap.server", "properties.<librdkafka setting>"))
            raise InvalidParameterValue(f'unknown option "{key}" for a Kafka source; the options are {accepted}')
    lowered = {k.lower(): v for k, v in options.items()}
    topic = lowered.get("topic", "").strip()
    if not topic:
        raise InvalidParameterValue("a Kafka source needs the option topic (the topic to read)")
    bootstrap = next((lowered[k] for k in _BOOTSTRAP_KEYS if k in lowered), "").strip()
    if not bootstrap:
        raise InvalidParameterValue(
            "a Kafka source needs the option properties.bootstrap.server (host:port of a broker, comma-separated)"
        )
    mode = lowered.get("scan.startup.mode", "earliest").strip().lower()
    if mode not in STARTUP_MODES:
        raise InvalidParameterValue(f"scan.startup.mode = '{mode}' is not one of 'earliest', 'latest'")
    return KafkaSourceOptions(
        topic=topic,
        bootstrap_servers=bootstrap,
        startup_mode=mode,
        on_error=parse_error_policy(lowered),
        partition_discovery_interval_ms=_integer(
            lowered, "partition.discovery.interval.ms", PARTITION_DISCOVERY_INTERVAL_MS_DEFAULT, 1
        ),
        records_per_chunk_max=_integer(
            lowered, "max.records.per.chunk", RECORDS_PER_CHUNK_MAX_DEFAULT, 1, RECORDS_PER_CHUNK_MAX_LIMIT
        ),
        properties=properties,
    )


def _integer(options: dict[str, str], name: str, default: int, minimum: int, maximum: int | None = None) -> int:
    text = options.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        value = minimum - 1
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise InvalidParameterValue(f"{name} = '{text}' must be an integer {bound}")
    return value


def client_config(options: KafkaSourceOptions) -> dict[str, Any]:
    """The librdkafka settings of every client a source opens: the user's, then the bootstrap servers.
    librdkafka's log goes to Python logging (``tidegate.connectors.kafka``), not to stderr."""
    return {**options.properties, "bootstrap.servers": options.bootstrap_servers, "logger": KAFKA_LOGGER}


def _reason(error: Exception) -> str:
    """librdkafka's own words for an error (``KafkaError.str()``), without the wrapper's repr."""
    first: Any = error.args[0] if error.args else error
    return str(first.str()) if hasattr(first, "str") else str(first)


def check_kafka_source(options: KafkaSourceOptions, timeout_s: float = 10) -> int:
    """The topic's partition count; raises InvalidParameterValue when the broker cannot be reached or
    the topic does not exist (CREATE SOURCE calls it, so such mistakes fail the statement)."""
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    try:
        admin = AdminClient(client_config(options))
    except (KafkaException, ValueError, TypeError) as e:  # librdkafka refuses a setting: a bad properties.X
        raise InvalidParameterValue(f"bad Kafka client setting: {_reason(e)}") from e
    try:
        # All topics, not just ours: asking for one topic by name can create it on a broker that
        # creates topics on first use, and the point is to tell the user it does not exist.
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as e:
        raise ConnectionFailure(
            f"cannot reach Kafka at {options.bootstrap_servers} (waited {timeout_s:g}s): {_reason(e)}"
        ) from e
    topic = metadata.topics.get(options.topic)
    if topic is None:
        raise InvalidParameterValue(f'Kafka topic "{options.topic}" does not exist at {options.bootstrap_servers}')
    if topic.error is not None:
        raise InvalidParameterValue(f'cannot read Kafka topic "{options.topic}": {topic.error}')
    return len(topic.partitions)
