"""The Kafka sink target: JSON messages, delivered per epoch in one Kafka transaction.

Place in the data flow (DESIGN §7): ``deliver(epoch, changes)`` produces every change of the
epoch inside a transaction of a transactional producer whose ``transactional.id`` is fixed per sink
(``tidegate-sink-<name>-<sink id>``), and in the same transaction commits offset ``epoch`` of
partition 0 of the topic for the *marker group* ``tidegate-sink-<sink id>``
(``send_offsets_to_transaction``). The group consumes nothing: its committed offset is the record
"delivered up to ``epoch``", and it commits or aborts with the messages. Consumers with
``isolation.level=read_committed`` see each delivered row once.

``open()`` calls ``init_transactions()``, which fences any earlier producer of the same id (a
zombie from before a crash) and aborts its open transaction, then reads the marker's offset. A
delivery of an epoch at or below it is a replay and is skipped.

Messages: FORMAT PLAIN ENCODE JSON (append-only) sends the row as a JSON object, keyed by the JSON
object of the key columns when the sink has a key. FORMAT UPSERT ENCODE JSON (upsert) sends, per
key, its last change: the row, or a null value (a tombstone) for a delete, always keyed.

``write`` (at_least_once, at_most_once) produces through a second, non-transactional producer and
waits for the acknowledgements.

Options: ``topic``; ``properties.bootstrap.server`` (or ``…servers``); ``properties.<setting>``
passed to librdkafka as ``<setting>``; ``topic.partitions`` (1) for a topic the sink creates.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tidegate.connectors.row_encode import rows_to_json_lines
from tidegate.connectors.sink_target import SinkSpec, SinkTarget
from tidegate.connectors.sinks.changes import data_columns, has_deletes, is_delete, last_change_per_key
from tidegate.connectors.sinks.options import (
    check_format,
    check_known_options,
    check_sink_type,
    integer_option,
    required_option,
)
from tidegate.errors import ConnectionFailure, InternalError, InvalidParameterValue

CONNECTOR = "kafka"
OPERATION_TIMEOUT_S = 30.0
PARTITIONS_MAX = 10_000
_PROPERTIES = "properties."
_BOOTSTRAP = ("properties.bootstrap.server", "properties.bootstrap.servers")
# Settings the sink owns: a user's value would break its transactions or its marker.
_RESERVED = ("transactional.id", "enable.idempotence", "group.id", "isolation.level", "enable.auto.commit")
_FORMATS = {"PLAIN": ("JSON",), "UPSERT": ("JSON",)}


def check_kafka_options(spec: SinkSpec) -> None:
    check_known_options(spec, CONNECTOR, ("topic", "topic.partitions"), (_PROPERTIES,))
    check_sink_type(spec)
    required_option(spec, CONNECTOR, "topic")
    if not any(spec.options.get(name, "").strip() for name in _BOOTSTRAP):
        raise InvalidParameterValue(
            'a kafka sink needs the option "properties.bootstrap.server" (host:port of its brokers)'
        )
    for key in spec.options:
        if key.startswith(_PROPERTIES) and key.removeprefix(_PROPERTIES) in _RESERVED:
            raise InvalidParameterValue(f'option "{key}" is set by the kafka sink itself and cannot be given')
    integer_option(spec, "topic.partitions", 1, 1, PARTITIONS_MAX)
    format_, _ = check_format(spec, CONNECTOR, _FORMATS)
    if format_ == "PLAIN" and spec.sink_type != "append-only":
        raise InvalidParameterValue(
            "FORMAT PLAIN needs an append-only sink: it cannot express deletes",
            hint="Use FORMAT UPSERT ENCODE JSON for an upsert sink.",
        )
    if format_ == "UPSERT" and spec.sink_type != "upsert":
        raise InvalidParameterValue(
            "FORMAT UPSERT needs a sink of type = 'upsert'", hint="Use FORMAT PLAIN ENCODE JSON for append-only."
        )


def kafka_settings(spec: SinkSpec) -> dict[str, Any]:
    """The librdkafka settings the options give (``properties.X`` → ``X``)."""
    settings: dict[str, Any] = {}
    for key, value in spec.options.items():
        if key.startswith(_PROPERTIES):
            settings[key.removeprefix(_PROPERTIES)] = value
    if "bootstrap.server" in settings:
        settings["bootstrap.servers"] = settings.pop("bootstrap.server")
    return settings


class KafkaSinkTarget(SinkTarget):
    def __init__(self, spec: SinkSpec) -> None:
        check_kafka_options(spec)
        super().__init__(spec)
        self._topic = spec.options["topic"].strip()
        self._partitions = integer_option(spec, "topic.partitions", 1, 1, PARTITIONS_MAX)
        self._settings = kafka_settings(spec)
        self.transactional_id = f"tidegate-sink-{spec.name}-{spec.sink_id}"
        self.marker_group = f"tidegate-sink-{spec.sink_id}"
        self._key_names = [spec.column_names[i] for i in spec.key]
        self._transactional: Any = None
        self._plain: Any = None
        self._marker: Any = None
        self._delivered_epoch: int | None = None

    # ---- SinkTarget --------------------------------------------------------------------------

    def open(self) -> None:
        self.close()
        try:
            self._ensure_topic()
            self._marker = Consumer(
                {
                    **self._settings,
                    "group.id": self.marker_group,
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                }
            )
            producer = Producer({**self._settings, "transactional.id": self.transactional_id})
            # Fences an earlier producer of this id and aborts its open transaction.
            producer.init_transactions(OPERATION_TIMEOUT_S)
            self._transactional = producer
            self._delivered_epoch = self._read_marker()
        except KafkaException as e:
            self.close()
            raise ConnectionFailure(f"cannot open the Kafka sink target {self._where()}: {_reason(e)}") from e

    def last_delivered_epoch(self) -> int:
        if self._delivered_epoch is None:
            self.open()
        assert self._delivered_epoch is not None
        return self._delivered_epoch

    def deliver(self, epoch: int, changes: pa.Table) -> None:
        if epoch <= self.last_delivered_epoch():
            return  # delivered already: a replay
        producer = self._transactional
        failures: list[Any] = []
        try:
            producer.begin_transaction()
            self._produce(producer, changes, failures)
            producer.flush(OPERATION_TIMEOUT_S)
            if failures:
                raise KafkaException(failures[0])
            metadata = self._marker.consumer_group_metadata()
            marker = [TopicPartition(self._topic, 0, epoch)]
            producer.send_offsets_to_transaction(marker, metadata, OPERATION_TIMEOUT_S)
            producer.commit_transaction(OPERATION_TIMEOUT_S)
        except KafkaException as e:
            self._abandon(producer)
            raise InternalError(
                f"delivering epoch {epoch} to the Kafka sink target {self._where()}: {_reason(e)}"
            ) from e
        self._delivered_epoch = epoch

    def write(self, changes: pa.Table) -> None:
        if self._plain is None:
            self._plain = Producer({**self._settings, "enable.idempotence": True})
        failures: list[Any] = []
        try:
            self._produce(self._plain, changes, failures)
            remaining = self._plain.flush(OPERATION_TIMEOUT_S)
        except KafkaException as e:
            raise InternalError(f"writing to the Kafka sink target {self._where()}: {_reason(e)}") from e
        if failures or remaining:
            reason = failures[0] if failures else f"{remaining} messages unacknowledged after {OPERATION_TIMEOUT_S}s"
            raise InternalError(f"writing to the Kafka sink target {self._where()}: {reason}")

    def close(self) -> None:
        if self._marker is not None:
            self._marker.close()
        if self._plain is not None:
            self._plain.flush(OPERATION_TIMEOUT_S)
        # A transactional producer has nothing in flight between deliveries; dropping it is enough.
        self._marker = self._plain = self._transactional = None
        self._delivered_epoch = None

    # ---- messages ----------------------------------------------------------------------------

    def _messages(self, changes: pa.Table) -> tuple[list[bytes] | None, list[bytes | None]]:
        """The keys (None when unkeyed) and values of the messages for ``changes``."""
        if self.spec.sink_type == "upsert":
            changes = last_change_per_key(changes, self._key_names)
            deletes = is_delete(changes).to_pylist()
        else:
            assert not has_deletes(changes), "an append-only sink received a delete"
            deletes = None
        rows = data_columns(changes)
        types = self.spec.column_types
        values: list[bytes | None] = list(rows_to_json_lines(rows, types))
        if deletes is not None:
            values = [None if delete else value for value, delete in zip(values, deletes)]
        if not self._key_names:
            return None, values
        key_types = [types[i] for i in self.spec.key]
        return rows_to_json_lines(rows.select(self._key_names), key_types), values

    def _produce(self, producer: Any, changes: pa.Table, failures: list[Any]) -> None:
        if changes.num_rows == 0:
            return
        keys, values = self._messages(changes)

        def on_delivery(error: Any, _message: Any) -> None:
            if error is not None:
                failures.append(error)

        for index, value in enumerate(values):
            key = None if keys is None else keys[index]
            deadline = time.monotonic() + OPERATION_TIMEOUT_S
            while True:
                try:
                    producer.produce(self._topic, value=value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:
                    # The local queue is full: wait for acknowledgements to make room, with a bound.
                    if time.monotonic() > deadline:
                        raise KafkaException(
                            KafkaError(KafkaError._QUEUE_FULL, "the local queue stayed full")
                        ) from None
                    producer.poll(0.1)
            producer.poll(0)

    # ---- topic, marker, failures -------------------------------------------------------------

    def _ensure_topic(self) -> None:
        admin = AdminClient(self._settings)
        # All topics, not this one: asking for one by name may make the broker auto-create it
        # with its default partition count.
        if self._topic in admin.list_topics(timeout=OPERATION_TIMEOUT_S).topics:
            return
        futures = admin.create_topics(
            [NewTopic(self._topic, num_partitions=self._partitions, replication_factor=-1)],
            request_timeout=OPERATION_TIMEOUT_S,
        )
        try:
            futures[self._topic].result(timeout=OPERATION_TIMEOUT_S)
        except KafkaException as e:
            if e.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise

    def _read_marker(self) -> int:
        committed = self._marker.committed([TopicPartition(self._topic, 0)], timeout=OPERATION_TIMEOUT_S)
        offset = committed[0].offset if committed else -1
        return max(offset, 0)

    def _abandon(self, producer: Any) -> None:
        """After a failed delivery: abort the transaction if it can be, and drop the producer, so the
        next call opens a new one (init_transactions then aborts whatever is left)."""
        # Fatal (fenced) or unreachable: init_transactions of the next producer cleans up.
        with contextlib.suppress(KafkaException):
            producer.abort_transaction(OPERATION_TIMEOUT_S)
        self.close()

    def _where(self) -> str:
        return f"{self._settings.get('bootstrap.servers')} topic {self._topic}"


def _reason(error: KafkaException) -> str:
    inner = error.args[0] if error.args else error
    return str(inner.str()) if isinstance(inner, KafkaError) else str(inner)
