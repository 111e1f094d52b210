"""Sink targets: where CREATE SINK delivers (DESIGN §7).

``check_sink_options(spec)`` validates a sink's options without contacting anything (CREATE SINK
calls it, then ``open()``); ``make_sink_target(spec)`` builds the target of its connector:

=============  ===================================================================================
connector      options (besides ``connector`` and ``type``)
=============  ===================================================================================
postgres       ``url`` or ``host``, ``port``, ``user``, ``password``, ``database``; ``table``,
               ``schema``; no FORMAT clause
kafka          ``topic``, ``properties.bootstrap.server(s)``, ``properties.<librdkafka setting>``,
               ``topic.partitions``; FORMAT PLAIN ENCODE JSON (append-only) or FORMAT UPSERT ENCODE
               JSON (upsert)
file           ``path``; FORMAT PLAIN ENCODE CSV | JSON | PARQUET; append-only
blackhole      none
=============  ===================================================================================

How each records delivery: docs/design/20261128_sink_targets.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType

from tidegate.connectors.sink_target import SinkSpec, SinkTarget
from tidegate.connectors.sinks.blackhole import BlackholeSinkTarget, check_blackhole_options
from tidegate.connectors.sinks.file import FileSinkTarget, check_file_options
from tidegate.connectors.sinks.postgres import PostgresSinkTarget, check_postgres_options
from tidegate.errors import FeatureNotSupported, InvalidParameterValue

__all__ = [
    "BlackholeSinkTarget",
    "FileSinkTarget",
    "KafkaSinkTarget",
    "PostgresSinkTarget",
    "check_sink_options",
    "make_sink_target",
]


def _kafka_module() -> ModuleType:
    # Imported on use: only Kafka sinks need confluent-kafka.
    try:
        return importlib.import_module("tidegate.connectors.sinks.kafka")
    except ImportError as e:
        raise FeatureNotSupported(
            f"the kafka sink needs the Python package confluent-kafka: {e}", hint="pip install confluent-kafka"
        ) from e


def _kafka_target(spec: SinkSpec) -> SinkTarget:
    target: SinkTarget = _kafka_module().KafkaSinkTarget(spec)
    return target


def _check_kafka(spec: SinkSpec) -> None:
    _kafka_module().check_kafka_options(spec)


_CONNECTORS: dict[str, tuple[Callable[[SinkSpec], None], Callable[[SinkSpec], SinkTarget]]] = {
    "postgres": (check_postgres_options, PostgresSinkTarget),
    "kafka": (_check_kafka, _kafka_target),
    "file": (check_file_options, FileSinkTarget),
    "blackhole": (check_blackhole_options, BlackholeSinkTarget),
}


def _connector(spec: SinkSpec) -> tuple[Callable[[SinkSpec], None], Callable[[SinkSpec], SinkTarget]]:
    name = spec.options.get("connector", "").strip().lower()
    if name not in _CONNECTORS:
        known = ", ".join(f"'{n}'" for n in _CONNECTORS)
        if not name:
            raise InvalidParameterValue("a sink needs the option connector", hint=f"Connectors are {known}.")
        raise InvalidParameterValue(f"unknown sink connector '{name}'", hint=f"Connectors are {known}.")
    return _CONNECTORS[name]


def check_sink_options(spec: SinkSpec) -> None:
    """Validate ``spec``'s options, type and FORMAT clause for its connector, without connecting."""
    check, _ = _connector(spec)
    check(spec)


def make_sink_target(spec: SinkSpec) -> SinkTarget:
    """The target of ``spec``'s connector, not yet opened."""
    _, make = _connector(spec)
    return make(spec)


def __getattr__(name: str) -> object:
    if name == "KafkaSinkTarget":
        return _kafka_module().KafkaSinkTarget
    raise AttributeError(name)
