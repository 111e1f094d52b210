"""The extended query protocol: Parse, Bind, Describe, Execute, Close (Sync is the connection's).

Named and unnamed prepared statements and portals live here, one
:class:`ExtendedQuery` per connection. A Describe of a portal runs it and keeps
the result for the Execute that follows (what every client sends); Execute
with a row limit answers PortalSuspended and continues from there next time.
Errors propagate to the connection, which then skips messages until Sync.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from tidegate.common.result import Column, CopyIn, QueryResult
from tidegate.errors import ProtocolViolation, SqlSyntaxError
from tidegate.server import pgwire_messages as msg
from tidegate.server.pg_catalog import answer_catalog_query, catalog_parameter_count, is_catalog_query
from tidegate.server.pgwire_state import (
    PgError,
    Portal,
    PreparedStatement,
    SessionLike,
    TransactionBlock,
    strip_leading_noise,
    transaction_control,
)
from tidegate.server.pgwire_values import decode_parameter, encoder_for

__all__ = ["ConnectionLike", "ExtendedQuery", "field_description", "format_at"]

T = TypeVar("T")

_DEALLOCATE = re.compile(r"DEALLOCATE\s+(?:PREPARE\s+)?(ALL\b|\"(?:[^\"]|\"\")+\"|\w+)", re.IGNORECASE)


class ConnectionLike(Protocol):
    """The parts of the connection the extended protocol uses."""

    session: SessionLike | None
    transaction: TransactionBlock

    def send(self, data: bytes) -> None: ...
    async def call(self, function: Callable[..., T], *args: Any) -> T: ...
    async def run_statement(self, statement: PreparedStatement, params: list[object] | None) -> QueryResult: ...
    async def receive_copy(self, copy_in: CopyIn) -> QueryResult: ...
    async def send_rows(
        self, result: QueryResult, formats: list[int] | None, *, describe: bool, limit: int, portal: Portal | None
    ) -> None: ...


def format_at(codes: list[int], index: int) -> int:
    """The format code for column or parameter ``index`` (none: text; one: all; else one each)."""
    if not codes:
        return 0
    if len(codes) == 1:
        return codes[0]
    if index >= len(codes):
        raise ProtocolViolation("bind message has fewer format codes than columns or parameters")
    return codes[index]


def field_description(column: Column, format_code: int) -> msg.FieldDescription:
    return msg.FieldDescription(
        name=column.name,
        type_oid=column.type.pg_oid,
        type_size=column.type.pg_typlen,
        type_modifier=column.type.pg_typmod,
        format_code=format_code,
    )


def is_catalog_statement(statement: PreparedStatement, session: SessionLike) -> bool:
    """Whether pg_catalog answers the statement; computed once (blocking: may parse)."""
    if statement.catalog is None:
        statement.catalog = is_catalog_query(statement.sql, session)
    return statement.catalog


class ExtendedQuery:
    """Prepared statements and portals of one connection, and the messages acting on them."""

    def __init__(self, connection: ConnectionLike) -> None:
        self._connection = connection
        self.statements: dict[str, PreparedStatement] = {}
        self.portals: dict[str, Portal] = {}

    # ---- messages ------------------------------------------------------------
    async def parse(self, payload: bytes) -> None:
        reader = msg.PayloadReader(payload)
        name, sql = reader.cstring(), reader.cstring()
        param_oids = [reader.uint32() for _ in range(reader.int16())]
        if name and name in self.statements:
            raise PgError("42P05", f'prepared statement "{name}" already exists')
        self._connection.transaction.check_allowed(transaction_control(sql))
        self.statements[name] = PreparedStatement(sql=sql, param_oids=param_oids)
        self._connection.send(msg.parse_complete())

    async def bind(self, payload: bytes) -> None:
        reader = msg.PayloadReader(payload)
        portal_name, statement_name = reader.cstring(), reader.cstring()
        statement = self._statement(statement_name)
        param_formats = [reader.int16() for _ in range(reader.int16())]
        raw_values: list[bytes | None] = []
        for _ in range(reader.int16()):
            size = reader.int32()
            raw_values.append(None if size < 0 else reader.take(size))
        result_formats = [reader.int16() for _ in range(reader.int16())]
        if portal_name and portal_name in self.portals:
            raise PgError("42P03", f'cursor "{portal_name}" already exists')
        oids = statement.param_oids + [0] * (len(raw_values) - len(statement.param_oids))
        params = [decode_parameter(raw, oids[i], format_at(param_formats, i)) for i, raw in enumerate(raw_values)]
        self.portals[portal_name] = Portal(statement=statement, params=params, result_formats=result_formats)
        self._connection.send(msg.bind_complete())

    async def describe(self, payload: bytes) -> None:
        reader = msg.PayloadReader(payload)
        kind, name = reader.byte(), reader.cstring()
        connection = self._connection
        if kind == b"S":
            statement = self._statement(name)
            oids, columns = await connection.call(self._describe_statement, statement)
            statement.param_oids = oids
            connection.send(msg.parameter_description(oids))
            if columns is None:
                connection.send(msg.no_data())
            else:
                connection.send(msg.row_description([field_description(c, 0) for c in columns]))
            return
        if kind != b"P":
            raise ProtocolViolation(f"invalid DESCRIBE message subtype {kind!r}")
        portal = self._portal(name)
        # Clients send Describe right before Execute: run the portal now and
        # keep its result for that Execute.
        result = await self._portal_result(portal)
        if result.columns is None or result.copy_in is not None:
            connection.send(msg.no_data())
            return
        formats = [format_at(portal.result_formats, i) for i in range(len(result.columns))]
        portal.encoders = [encoder_for(c.type, f) for c, f in zip(result.columns, formats)]
        connection.send(msg.row_description([field_description(c, f) for c, f in zip(result.columns, formats)]))

    async def execute(self, payload: bytes) -> None:
        reader = msg.PayloadReader(payload)
        name, limit = reader.cstring(), reader.int32()
        portal = self._portal(name)
        connection = self._connection
        if not portal.statement.sql.strip():
            connection.send(msg.empty_query_response())
            return
        connection.transaction.check_allowed(transaction_control(portal.statement.sql))
        result = await self._portal_result(portal)
        if result.copy_in is not None:
            portal.result = result = await connection.receive_copy(result.copy_in)
        if portal.done and result.columns is None:
            return
        await connection.send_rows(result, portal.result_formats, describe=False, limit=max(limit, 0), portal=portal)

    async def close(self, payload: bytes) -> None:
        reader = msg.PayloadReader(payload)
        kind, name = reader.byte(), reader.cstring()
        if kind == b"S":
            self.statements.pop(name, None)
        elif kind == b"P":
            self.portals.pop(name, None)
        else:
            raise ProtocolViolation(f"invalid CLOSE message subtype {kind!r}")
        self._connection.send(msg.close_complete())

    def on_sync(self) -> None:
        # Portals live until the end of their transaction, as in PostgreSQL.
        if self._connection.transaction.status == "I":
            self.portals.clear()

    # ---- SQL-level statement management ----------------------------------------
    def deallocate(self, sql: str, control: str) -> QueryResult:
        """DEALLOCATE and DISCARD ALL act on this connection's prepared statements."""
        if control == "discard":
            self.statements.clear()
            self.portals.clear()
            return QueryResult(command_tag="DISCARD ALL")
        match = _DEALLOCATE.match(strip_leading_noise(sql))
        if match is None:
            raise SqlSyntaxError("syntax error in DEALLOCATE", position=len(sql))
        name = match.group(1)
        if name.upper() == "ALL":
            unnamed = self.statements.get("")
            self.statements = {"": unnamed} if unnamed is not None else {}
            return QueryResult(command_tag="DEALLOCATE ALL")
        name = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
        if self.statements.pop(name, None) is None:
            raise PgError("26000", f'prepared statement "{name}" does not exist')
        return QueryResult(command_tag="DEALLOCATE")

    # ---- helpers -----------------------------------------------------------------
    def _statement(self, name: str) -> PreparedStatement:
        statement = self.statements.get(name)
        if statement is None:
            raise PgError("26000", f'prepared statement "{name}" does not exist')
        return statement

    def _portal(self, name: str) -> Portal:
        portal = self.portals.get(name)
        if portal is None:
            raise PgError("34000", f'portal "{name}" does not exist')
        return portal

    async def _portal_result(self, portal: Portal) -> QueryResult:
        if portal.result is None:
            if not portal.statement.sql.strip():
                portal.result = QueryResult(command_tag="")
            else:
                portal.result = await self._connection.run_statement(portal.statement, portal.params)
        return portal.result

    def _describe_statement(self, statement: PreparedStatement) -> tuple[list[int], list[Column] | None]:
        """Runs on the connection's thread: parameter types and result columns."""
        session = self._connection.session
        assert session is not None
        if not statement.sql.strip():
            return [], None
        if is_catalog_statement(statement, session):
            result = answer_catalog_query(statement.sql, session, None)
            if result is not None:
                count = max(catalog_parameter_count(statement.sql), len(statement.param_oids))
                oids = statement.param_oids + [0] * (count - len(statement.param_oids))
                return [oid or 25 for oid in oids], result.columns
        oids, columns = session.describe(statement.sql, list(statement.param_oids))
        return list(oids), columns
