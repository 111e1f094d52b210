"""tidegate: a streaming SQL database. Views stay up to date as data arrives, exactly once."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["Connection", "connect"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from tidegate.server.embedded import Connection


def connect(data_dir: Any, **options: Any) -> Connection:
    """Open (or create) a tidegate database in ``data_dir``; see ``tidegate.server.embedded``."""
    from tidegate.server.embedded import connect as _connect

    return _connect(data_dir, **options)


def __getattr__(name: str) -> Any:
    if name == "Connection":
        from tidegate.server.embedded import Connection

        return Connection
    raise AttributeError(name)
