"""What executing one statement returns, to the pgwire server and the embedded API.

A :class:`QueryResult` is either a row set (``columns`` set) or a command
completion (``columns`` is None), always with the PostgreSQL command tag. A
``COPY … FROM STDIN`` returns a result whose ``copy_in`` is the sink for the
client's data; the caller feeds it and takes the final result from ``finish``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa

from tidegate.common.types import SqlType


@dataclass(frozen=True)
class Column:
    name: str
    type: SqlType


class CopyIn(Protocol):
    """Receives the rows of ``COPY table FROM STDIN``.

    ``columns`` are the target columns in the order the data lists them. The
    options are PostgreSQL's: ``format`` is ``"text"`` or ``"csv"``.
    """

    columns: list[Column]
    format: str
    delimiter: str
    null: str
    header: bool
    quote: str
    escape: str

    def write(self, rows: pa.Table) -> None:
        """Take decoded rows, typed as ``columns``; raises a DataError if they do not fit."""

    def finish(self) -> QueryResult:
        """Commit everything written (one statement); returns ``COPY n``."""

    def abort(self) -> None:
        """Discard everything written; nothing becomes visible."""


@dataclass
class QueryResult:
    command_tag: str
    columns: list[Column] | None = None
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    copy_in: CopyIn | None = None

    @property
    def is_row_set(self) -> bool:
        return self.columns is not None
