"""The source connectors: which reader or generator a ``CREATE SOURCE … WITH (connector = '…')`` runs.

Place in the data flow: DDL binding and the stream builder ask here which connector a
source's options name, then hand the options to that connector's own validation
(``nexmark_options``, ``datagen_options``).
"""

from __future__ import annotations

from tidegate.errors import FeatureNotSupported, InvalidParameterValue

SOURCE_CONNECTORS = ("nexmark", "datagen", "kafka", "file")


def source_connector(options: dict[str, str]) -> str:
    """The connector a source's options name, lower-cased; raises for a missing or unknown one."""
    connector = options.get("connector")
    if connector is None:
        raise InvalidParameterValue("a source needs the option connector: 'kafka', 'file', 'nexmark' or 'datagen'")
    if connector.strip().lower() not in SOURCE_CONNECTORS:
        raise FeatureNotSupported(
            f'connector "{connector}" is not supported; the source connectors are {", ".join(SOURCE_CONNECTORS)}'
        )
    return connector.strip().lower()
