"""Per-connection protocol state: transaction blocks, prepared statements, portals.

tidegate autocommits every statement, but clients follow the transaction
status byte of ReadyForQuery, so :class:`TransactionBlock` tracks it the way
PostgreSQL does: 'I' idle, 'T' inside BEGIN … COMMIT, 'E' after an error inside
a block (every statement but COMMIT/ROLLBACK/ROLLBACK TO then fails with
25P02). Savepoints have nothing to restore and only move the status.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Protocol

from tidegate.common.result import Column, QueryResult
from tidegate.meta.catalog import Catalog
from tidegate.server.pgwire_values import ValueEncoder

__all__ = [
    "PgError",
    "Portal",
    "PreparedStatement",
    "SessionLike",
    "TransactionBlock",
    "strip_leading_noise",
    "transaction_control",
]


class SessionLike(Protocol):
    """What the server needs from a session (``tidegate.server.session.Session``)."""

    user: str
    database: str
    catalog: Catalog

    def split_statements(self, sql: str) -> list[str]: ...
    def execute(self, sql: str, params: list[object] | None = None) -> QueryResult: ...
    def describe(self, sql: str, param_oids: list[int]) -> tuple[list[int], list[Column] | None]: ...
    def get_setting(self, name: str) -> str: ...
    def set_setting(self, name: str, value: str) -> None: ...
    def cancel(self) -> None: ...
    def close(self) -> None: ...


class PgError(Exception):
    """An error the protocol layer raises itself, with its SQLSTATE (25P02, 57014, 26000, ...)."""

    def __init__(self, sqlstate: str, message: str, *, severity: str = "ERROR") -> None:
        super().__init__(message)
        self.sqlstate = sqlstate
        self.severity = severity


IN_FAILED_TRANSACTION = "current transaction is aborted, commands ignored until end of transaction block"

_LEADING_NOISE = re.compile(r"^(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_CONTROL_PATTERNS = (
    ("begin", re.compile(r"(BEGIN|START\s+TRANSACTION)\b", re.IGNORECASE)),
    ("rollback_to", re.compile(r"ROLLBACK\s+(?:WORK\s+|TRANSACTION\s+)?TO\b", re.IGNORECASE)),
    ("commit", re.compile(r"(COMMIT|END)\b(?!\s+PREPARED)", re.IGNORECASE)),
    ("rollback", re.compile(r"(ROLLBACK|ABORT)\b(?!\s+PREPARED)", re.IGNORECASE)),
    ("savepoint", re.compile(r"SAVEPOINT\b", re.IGNORECASE)),
    ("release", re.compile(r"RELEASE\b", re.IGNORECASE)),
    ("deallocate", re.compile(r"DEALLOCATE\b", re.IGNORECASE)),
    ("discard", re.compile(r"DISCARD\s+ALL\b", re.IGNORECASE)),
)
# Statements allowed in a failed transaction block: they end it.
_EXITS = frozenset({"commit", "rollback", "rollback_to"})


def strip_leading_noise(sql: str) -> str:
    """``sql`` without leading whitespace and comments."""
    return _LEADING_NOISE.sub("", sql, count=1)


def transaction_control(sql: str) -> str | None:
    """'begin', 'commit', 'rollback', 'savepoint', 'release', 'rollback_to', 'deallocate', 'discard' or None."""
    text = strip_leading_noise(sql)
    for kind, pattern in _CONTROL_PATTERNS:
        if pattern.match(text):
            return kind
    return None


@dataclass(frozen=True)
class Notice:
    severity: str
    sqlstate: str
    message: str


class TransactionBlock:
    """The transaction status PostgreSQL would report: 'I', 'T' or 'E'."""

    def __init__(self) -> None:
        self.status = "I"

    def check_allowed(self, control: str | None) -> None:
        """Raise 25P02 when a failed block refuses this statement."""
        if self.status == "E" and control not in _EXITS:
            raise PgError("25P02", IN_FAILED_TRANSACTION)

    def on_error(self) -> None:
        if self.status == "T":
            self.status = "E"

    def apply(self, control: str, tag: str) -> tuple[str, list[Notice]]:
        """After BEGIN/COMMIT/ROLLBACK ran: the tag to report and the warnings PostgreSQL sends."""
        notices: list[Notice] = []
        if control == "begin":
            if self.status != "I":
                notices.append(Notice("WARNING", "25001", "there is already a transaction in progress"))
            self.status = "T"
            return tag, notices
        if self.status == "I":
            notices.append(Notice("WARNING", "25P01", "there is no transaction in progress"))
        if self.status == "E":
            tag = "ROLLBACK"  # COMMIT of a failed block rolls it back
        self.status = "I"
        return tag, notices

    def savepoint(self, control: str) -> str:
        """SAVEPOINT, RELEASE or ROLLBACK TO; returns the command tag."""
        names = {"savepoint": "SAVEPOINT", "release": "RELEASE SAVEPOINT", "rollback_to": "ROLLBACK TO SAVEPOINT"}
        if self.status == "I":
            raise PgError("25P01", f"{names[control]} can only be used in transaction blocks")
        if control == "rollback_to":
            self.status = "T"
            return "ROLLBACK"
        return "SAVEPOINT" if control == "savepoint" else "RELEASE"


@dataclass
class PreparedStatement:
    sql: str
    param_oids: list[int]
    # Whether pg_catalog answers it; decided on first use, off the event loop.
    catalog: bool | None = None


@dataclass
class Portal:
    statement: PreparedStatement
    params: list[object]
    result_formats: list[int]
    result: QueryResult | None = None
    position: int = 0
    encoders: list[ValueEncoder] | None = field(default=None)
    done: bool = False
