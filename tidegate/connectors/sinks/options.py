"""Checking a sink's WITH (…) options and FORMAT … ENCODE … clause, without connecting.

Place in the data flow: CREATE SINK binds its statement into a ``SinkSpec``, then calls
``check_sink_options`` (sinks/__init__.py), which calls the connector's checker built from these
helpers, then ``open()``. So an unknown option, a missing one or a FORMAT that the connector cannot
write fails the statement with a message naming the option, before anything is contacted.

Every sink accepts ``connector`` and ``type`` (the same as ``SinkSpec.sink_type``, which the binder
may leave among the options) besides its own options.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tidegate.connectors.sink_target import SinkSpec
from tidegate.errors import FeatureNotSupported, InvalidParameterValue

COMMON_OPTIONS = ("connector", "type")
SINK_TYPES = ("append-only", "upsert")


def check_known_options(spec: SinkSpec, connector: str, names: Iterable[str], prefixes: Iterable[str] = ()) -> None:
    """Every option of ``spec`` is a common one, one of ``names`` or starts with one of ``prefixes``."""
    allowed = (*COMMON_OPTIONS, *names)
    prefixes = tuple(prefixes)
    for key in spec.options:
        if key in allowed or (prefixes and key.startswith(prefixes)):
            continue
        listed = ", ".join([*allowed[1:], *(f"{prefix}<name>" for prefix in prefixes)])
        raise InvalidParameterValue(
            f'unknown option "{key}" for a {connector} sink', hint=f"A {connector} sink takes the options {listed}."
        )


def check_sink_type(spec: SinkSpec) -> None:
    if spec.sink_type not in SINK_TYPES:
        raise InvalidParameterValue(f"sink type '{spec.sink_type}' is not one of 'append-only', 'upsert'")
    given = spec.options.get("type")
    if given is not None and given.strip().lower() != spec.sink_type:
        raise InvalidParameterValue(f"option type = '{given}' contradicts the sink's type '{spec.sink_type}'")
    if spec.sink_type == "upsert" and not spec.key:
        raise InvalidParameterValue(
            f'the upsert sink "{spec.name}" has no primary key',
            hint="Give the sink a primary key (the key of its query, or WITH (primary_key = '…')), or make it "
            "type = 'append-only'.",
        )


def required_option(spec: SinkSpec, connector: str, name: str) -> str:
    value = spec.options.get(name)
    if value is None or not value.strip():
        raise InvalidParameterValue(f'a {connector} sink needs the option "{name}"')
    return value.strip()


def integer_option(spec: SinkSpec, name: str, default: int, minimum: int, maximum: int) -> int:
    text = spec.options.get(name)
    if text is None:
        return default
    try:
        value = int(text.strip())
    except ValueError:
        value = minimum - 1
    if not minimum <= value <= maximum:
        raise InvalidParameterValue(f"option {name} = '{text}' is not an integer from {minimum} to {maximum}")
    return value


def check_no_format(spec: SinkSpec, connector: str) -> None:
    """For a sink whose target has columns of its own (PostgreSQL): no FORMAT … ENCODE clause."""
    if spec.format is not None or spec.encode is not None:
        raise InvalidParameterValue(
            f"a {connector} sink takes no FORMAT … ENCODE clause: it writes columns, not encoded messages",
            hint="Remove the FORMAT … ENCODE clause.",
        )


def check_format(spec: SinkSpec, connector: str, formats: Mapping[str, tuple[str, ...]]) -> tuple[str, str]:
    """The (format, encode) of ``spec``, which must be among ``formats`` (FORMAT → its ENCODEs)."""
    if spec.format is None or spec.encode is None:
        accepted = " or ".join(f"FORMAT {f} ENCODE {'|'.join(e)}" for f, e in formats.items())
        raise InvalidParameterValue(f"a {connector} sink needs {accepted}")
    if spec.format not in formats:
        raise FeatureNotSupported(
            f"a {connector} sink does not write FORMAT {spec.format}",
            hint=f"Use FORMAT {' or '.join(formats)}.",
        )
    if spec.encode not in formats[spec.format]:
        raise FeatureNotSupported(
            f"a {connector} sink does not write FORMAT {spec.format} ENCODE {spec.encode}",
            hint=f"Use ENCODE {' or '.join(formats[spec.format])}.",
        )
    return spec.format, spec.encode
