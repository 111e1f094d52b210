"""The PostgreSQL wire-protocol (v3) server: sockets in, ``Session`` calls out.

Data flow: a client connects → startup (SSL/GSSENC refused with 'N', trust or
SCRAM-SHA-256 auth) → ``session_factory(user, database)`` → a loop over
frontend messages. Simple Query splits its text with ``Session.split_statements``
and runs each statement; the extended protocol (Parse/Bind/Describe/Execute/
Close, :mod:`tidegate.server.pgwire_extended`) keeps named statements and
portals per connection. Catalog queries from psql, psycopg and SQLAlchemy are
answered by :mod:`tidegate.server.pg_catalog`; everything else goes to
``Session.execute``. ``COPY … FROM STDIN`` streams CopyData through
:mod:`tidegate.server.pgwire_copy` and :mod:`tidegate.common.copy_text` into
the session's ``CopyIn``.

The other pgwire modules: ``pgwire_messages`` (framing), ``pgwire_values``
(parameter decoding, result encoding), ``pgwire_state`` (transaction status,
statements, portals), ``pgwire_auth`` (SCRAM-SHA-256).

Invariants:

* Session calls are blocking; each connection runs them on its own
  one-thread executor, so statements of one connection run one at a time and
  in order, and a slow statement never stalls the event loop or other clients.
* This module is the only place that maps tidegate errors to SQLSTATE codes
  (:data:`SQLSTATE_BY_ERROR`, matched along the class MRO).
* tidegate autocommits every statement, but the transaction status byte of
  ReadyForQuery follows PostgreSQL: 'T' after BEGIN, 'E' after an error inside
  an explicit transaction (further statements fail with 25P02 until
  COMMIT/ROLLBACK), 'I' otherwise. psycopg's non-autocommit mode and
  SQLAlchemy depend on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import re
import secrets
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from tidegate import errors
from tidegate.common.result import CopyIn, QueryResult
from tidegate.server import pgwire_messages as msg
from tidegate.server.pg_catalog import answer_catalog_query
from tidegate.server.pgwire_auth import SCRAM_MECHANISM, ScramExchange, ScramFailure, ScramVerifier
from tidegate.server.pgwire_copy import CopyBatcher, write_batch
from tidegate.server.pgwire_extended import ExtendedQuery, field_description, format_at, is_catalog_statement
from tidegate.server.pgwire_state import (
    PgError,
    Portal,
    PreparedStatement,
    SessionLike,
    TransactionBlock,
    strip_leading_noise,
    transaction_control,
)
from tidegate.server.pgwire_values import ValueEncoder, encoder_for

__all__ = [
    "SQLSTATE_BY_ERROR",
    "PgError",
    "PgServer",
    "ServerHandle",
    "SessionLike",
    "run_server_in_thread",
    "sqlstate_for",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


SessionFactory = Callable[[str, str], SessionLike]

# Most specific first is not required: lookup walks each error's MRO.
SQLSTATE_BY_ERROR: dict[type[BaseException], str] = {
    errors.SqlSyntaxError: "42601",
    errors.UndefinedRelation: "42P01",
    errors.UndefinedColumn: "42703",
    errors.AmbiguousColumn: "42702",
    errors.UndefinedFunction: "42883",
    errors.DuplicateObject: "42P07",
    errors.DatatypeMismatch: "42804",
    errors.GroupingError: "42803",
    errors.DependentObjectsExist: "2BP01",
    errors.WrongObjectType: "42809",
    errors.InvalidParameterValue: "22023",
    errors.FeatureNotSupported: "0A000",
    errors.DataError: "22000",
    errors.NumericValueOutOfRange: "22003",
    errors.InvalidTextRepresentation: "22P02",
    errors.StringDataRightTruncation: "22001",
    errors.DivisionByZero: "22012",
    errors.InvalidDatetimeFormat: "22007",
    errors.DatetimeFieldOverflow: "22008",
    errors.UndefinedObject: "42704",
    errors.DuplicateColumn: "42701",
    errors.InvalidTableDefinition: "42P16",
    errors.InvalidColumnReference: "42P10",
    errors.UniqueViolation: "23505",
    errors.NotNullViolation: "23502",
    errors.ProtocolViolation: "08P01",
    errors.ConnectionFailure: "08001",
    errors.InternalError: "XX000",
    errors.JobFailed: "55000",  # object_not_in_prerequisite_state
    errors.DiskFull: "53100",
    errors.WriteTimeout: "57014",  # query_canceled, as a statement_timeout is in PostgreSQL
    # Base classes, for errors raised without a more specific class.
    errors.SqlError: "42000",
    errors.IntegrityError: "23000",
}
SQLSTATE_INTERNAL = "XX000"


def sqlstate_for(error: BaseException) -> str:
    """The SQLSTATE of ``error``: its own (PgError), its class's or a base class's, else XX000."""
    if isinstance(error, PgError):
        return error.sqlstate
    for cls in type(error).__mro__:
        code = SQLSTATE_BY_ERROR.get(cls)
        if code is not None:
            return code
    return SQLSTATE_INTERNAL


# ---- the connection ---------------------------------------------------------------

_SET_STATEMENT = re.compile(r"(?:SET|RESET)\s+(?:SESSION\s+|LOCAL\s+)?([A-Za-z_]+)", re.IGNORECASE)
# Settings whose changes PostgreSQL reports to the client with ParameterStatus.
_REPORTED_SETTINGS = {
    "application_name": "application_name",
    "datestyle": "DateStyle",
    "timezone": "TimeZone",
    "time": "TimeZone",
    "intervalstyle": "IntervalStyle",
    "standard_conforming_strings": "standard_conforming_strings",
}
_PLAIN_CONTROL = {"begin": "BEGIN", "commit": "COMMIT", "rollback": "ROLLBACK"}
_FLUSH_BYTES = 256 << 10
_ENCODE_ROWS_PER_CHUNK = 2000
_ENCODE_INLINE_ROWS_MAX = 64


@dataclass
class _ServerState:
    session_factory: SessionFactory
    verifier: ScramVerifier | None
    connections: dict[int, _Connection] = field(default_factory=dict)
    process_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(10_000))


class _Connection:
    """One client connection: startup, then the message loop."""

    def __init__(self, state: _ServerState, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._state = state
        self._reader = reader
        self._writer = writer
        self._out = bytearray()
        self.process_id = next(state.process_ids)
        self.secret_key = secrets.randbits(31)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"pgwire-{self.process_id}")
        self.session: SessionLike | None = None
        self._user = ""
        self.transaction = TransactionBlock()
        self._extended = ExtendedQuery(self)
        self._ignore_till_sync = False
        self.running = False
        self.cancel_requested = False

    # ---- I/O ----------------------------------------------------------------
    def send(self, data: bytes) -> None:
        self._out += data

    async def _flush(self) -> None:
        if self._out:
            self._writer.write(bytes(self._out))
            self._out.clear()
        await self._writer.drain()

    async def _read_message(self) -> tuple[bytes, bytes]:
        header = await self._reader.readexactly(5)
        length = int.from_bytes(header[1:], "big", signed=True)
        if length < 4 or length > msg.MESSAGE_BYTES_MAX:
            raise errors.ProtocolViolation(f"invalid message length {length}")
        return header[:1], await self._reader.readexactly(length - 4)

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run a blocking call on this connection's thread (so calls stay in order)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def call_statement(self, function: Callable[..., T], *args: Any) -> T:
        """Like :meth:`call`, for running a statement: a CancelRequest meanwhile cancels it (57014)."""
        self.running, self.cancel_requested = True, False
        try:
            return await self.call(function, *args)
        except Exception as e:
            if self.cancel_requested:
                raise PgError("57014", "canceling statement due to user request") from e
            raise
        finally:
            self.running = False

    # ---- lifecycle ------------------------------------------------------------
    async def run(self) -> None:
        try:
            if await self._startup():
                await self._message_loop()
        except (ConnectionError, asyncio.IncompleteReadError, OSError, asyncio.CancelledError):
            pass
        except (errors.ProtocolViolation, PgError) as e:
            with contextlib.suppress(ConnectionError, OSError):
                self._send_error(e, severity="FATAL")
                await self._flush()
        except Exception:
            logger.exception("pgwire connection %d failed", self.process_id)
        finally:
            self._cleanup()

    def _cleanup(self) -> None:
        self._state.connections.pop(self.process_id, None)
        session, self.session = self.session, None
        if session is not None:
            # Queued behind any statement still running on this connection's thread.
            future: Future[None] = self._executor.submit(_close_quietly, session)
            future.add_done_callback(lambda _: None)
        self._executor.shutdown(wait=False)
        with contextlib.suppress(Exception):
            self._writer.close()

    # ---- startup --------------------------------------------------------------
    async def _startup_packet(self) -> tuple[int, msg.PayloadReader] | None:
        """The StartupMessage (code, reader), after refusing SSL/GSSENC; None after a CancelRequest."""
        while True:
            length = int.from_bytes(await self._reader.readexactly(4), "big", signed=True)
            if length < 8 or length > msg.STARTUP_BYTES_MAX:
                raise errors.ProtocolViolation(f"invalid length of startup packet: {length}")
            reader = msg.PayloadReader(await self._reader.readexactly(length - 4))
            code = reader.int32()
            if code in (msg.SSL_REQUEST_CODE, msg.GSSENC_REQUEST_CODE):
                self._writer.write(b"N")
                await self._writer.drain()
                continue
            if code == msg.CANCEL_REQUEST_CODE:
                self._handle_cancel_request(reader.int32(), reader.int32())
                return None
            if code >> 16 != 3:
                raise errors.ProtocolViolation(f"unsupported frontend protocol {code >> 16}.{code & 0xFFFF}")
            return code, reader

    async def _startup(self) -> bool:
        packet = await self._startup_packet()
        if packet is None:
            return False
        code, reader = packet
        params: dict[str, str] = {}
        while reader.remaining > 1:
            key = reader.cstring()
            params[key] = reader.cstring()
        unrecognized = [key for key in params if key.startswith("_pq_.")]
        if code & 0xFFFF or unrecognized:
            self.send(msg.negotiate_protocol_version(0, unrecognized))
        user = params.get("user", "")
        if not user:
            raise PgError("28000", "no PostgreSQL user name specified in startup packet", severity="FATAL")
        if self._state.verifier is not None and not await self._authenticate(user):
            return False
        self.send(msg.authentication_ok())
        try:
            self.session = await self.call(self._state.session_factory, user, params.get("database") or user)
        except Exception as e:
            self._send_error(e, severity="FATAL")
            await self._flush()
            return False
        self._user = user
        if params.get("application_name"):
            with contextlib.suppress(Exception):
                await self.call(self.session.set_setting, "application_name", params["application_name"])
        for name, value in await self.call(self._startup_parameters):
            self.send(msg.parameter_status(name, value))
        self._state.connections[self.process_id] = self
        self.send(msg.backend_key_data(self.process_id, self.secret_key))
        self.send(msg.ready_for_query("I"))
        await self._flush()
        return True

    def _setting(self, name: str, default: str) -> str:
        assert self.session is not None
        try:
            return self.session.get_setting(name)
        except Exception:
            return default

    def _startup_parameters(self) -> list[tuple[str, str]]:
        return [
            ("server_version", self._setting("server_version", "15.0")),
            ("server_encoding", "UTF8"),
            ("client_encoding", "UTF8"),
            ("DateStyle", self._setting("DateStyle", "ISO, MDY")),
            ("TimeZone", self._setting("TimeZone", "UTC")),
            ("IntervalStyle", "postgres"),
            ("integer_datetimes", "on"),
            ("standard_conforming_strings", self._setting("standard_conforming_strings", "on")),
            ("application_name", self._setting("application_name", "")),
            ("is_superuser", "on"),
            ("session_authorization", self._user),
        ]

    async def _authenticate(self, user: str) -> bool:
        assert self._state.verifier is not None
        self.send(msg.authentication_sasl([SCRAM_MECHANISM]))
        await self._flush()
        exchange = ScramExchange(self._state.verifier)
        try:
            reader = msg.PayloadReader(await self._sasl_response())
            if reader.cstring() != SCRAM_MECHANISM:
                raise PgError("28000", "client selected an invalid SASL authentication mechanism", severity="FATAL")
            size = reader.int32()
            self.send(msg.authentication_sasl_continue(exchange.server_first(reader.take(size))))
            await self._flush()
            self.send(msg.authentication_sasl_final(exchange.server_final(await self._sasl_response())))
            return True
        except (ScramFailure, UnicodeDecodeError, ValueError):
            error = PgError("28P01", f'password authentication failed for user "{user}"', severity="FATAL")
            self._send_error(error)
            await self._flush()
            return False

    async def _sasl_response(self) -> bytes:
        kind, payload = await self._read_message()
        if kind != b"p":
            raise errors.ProtocolViolation(f"expected SASL response, got message type {kind!r}")
        return payload

    def _handle_cancel_request(self, process_id: int, secret_key: int) -> None:
        connection = self._state.connections.get(process_id)
        if connection is None or connection.secret_key != secret_key or connection.session is None:
            return
        if connection.running:
            connection.cancel_requested = True
            # Not on the connection's own thread: that one is busy running the statement.
            threading.Thread(target=_cancel_quietly, args=(connection.session,), daemon=True).start()

    # ---- message loop ----------------------------------------------------------
    async def _message_loop(self) -> None:
        handlers: dict[bytes, Callable[[bytes], Any]] = {
            b"Q": self._simple_query,
            b"P": self._extended.parse,
            b"B": self._extended.bind,
            b"D": self._extended.describe,
            b"E": self._extended.execute,
            b"C": self._extended.close,
            b"H": lambda _: self._flush(),
        }
        while True:
            kind, payload = await self._read_message()
            if kind == b"X":
                return
            if kind == b"S":
                self._ignore_till_sync = False
                self._extended.on_sync()
                self.send(msg.ready_for_query(self.transaction.status))
                await self._flush()
                continue
            if kind in (b"d", b"c", b"f"):
                continue  # the rest of a COPY that failed; PostgreSQL ignores it too
            if self._ignore_till_sync:
                continue
            handler = handlers.get(kind)
            if handler is None:
                raise errors.ProtocolViolation(f"invalid frontend message type {kind[0]}")
            try:
                await handler(payload)
            except (ConnectionError, asyncio.IncompleteReadError, errors.ProtocolViolation):
                raise
            except Exception as e:
                # An error in the extended protocol skips everything up to Sync.
                self._send_error(e)
                self.transaction.on_error()
                self._ignore_till_sync = True

    def _send_error(self, error: BaseException, *, severity: str | None = None, statement_offset: int = 0) -> None:
        code = sqlstate_for(error)
        level = severity or (error.severity if isinstance(error, PgError) else "ERROR")
        message = str(error) or type(error).__name__
        if code == SQLSTATE_INTERNAL and not isinstance(error, (errors.TidegateError, PgError)):
            logger.error("internal error in pgwire connection %d", self.process_id, exc_info=error)
            message = f"internal error: {type(error).__name__}: {message}"
        fields = {"S": level, "V": level, "C": code, "M": message}
        if isinstance(error, errors.TidegateError):
            detail = getattr(error, "detail", None)
            if detail:
                fields["D"] = str(detail)
            if error.hint:
                fields["H"] = error.hint
            if error.position is not None:
                fields["P"] = str(error.position + statement_offset)
        self.send(msg.error_response(fields))

    def _send_notice(self, text: str, *, severity: str = "NOTICE", code: str = "00000") -> None:
        self.send(msg.notice_response({"S": severity, "V": severity, "C": code, "M": text}))

    # ---- running statements -----------------------------------------------------
    def _run_blocking(self, statement: PreparedStatement, params: list[object] | None) -> QueryResult:
        assert self.session is not None
        if is_catalog_statement(statement, self.session):
            result = answer_catalog_query(statement.sql, self.session, params)
            if result is not None:
                return result
        return self.session.execute(statement.sql, params)

    async def run_statement(self, statement: PreparedStatement, params: list[object] | None) -> QueryResult:
        """One statement, with PostgreSQL's transaction-block bookkeeping around it."""
        control = transaction_control(statement.sql)
        self.transaction.check_allowed(control)
        if control in ("savepoint", "release", "rollback_to"):
            return QueryResult(command_tag=self.transaction.savepoint(control))
        if control in ("deallocate", "discard"):
            return self._extended.deallocate(statement.sql, control)
        if control is not None:
            # The session sees the plain keyword: tidegate autocommits, so options such
            # as ISOLATION LEVEL or AND CHAIN change nothing.
            plain = PreparedStatement(sql=_PLAIN_CONTROL[control], param_oids=[], catalog=False)
            result = await self.call_statement(self._run_blocking, plain, None)
            tag, warnings = self.transaction.apply(control, result.command_tag)
            for warning in warnings:
                self._send_notice(warning.message, severity=warning.severity, code=warning.sqlstate)
            result = QueryResult(command_tag=tag, notices=result.notices)
        else:
            result = await self.call_statement(self._run_blocking, statement, params)
            await self._report_setting_change(statement.sql)
        for notice in result.notices:
            self._send_notice(notice)
        return result

    async def _report_setting_change(self, sql: str) -> None:
        match = _SET_STATEMENT.match(strip_leading_noise(sql))
        name = _REPORTED_SETTINGS.get(match.group(1).lower()) if match is not None else None
        if name is None or self.session is None:
            return
        with contextlib.suppress(Exception):
            self.send(msg.parameter_status(name, await self.call(self.session.get_setting, name)))

    async def _simple_query(self, payload: bytes) -> None:
        assert self.session is not None
        sql = msg.PayloadReader(payload).cstring()
        self._extended.portals.pop("", None)
        try:
            statements = await self.call(self.session.split_statements, sql)
        except Exception as e:
            statements = []
            self._send_error(e)
            self.transaction.on_error()
        else:
            if not statements:
                self.send(msg.empty_query_response())
        search_from = 0
        for text in statements:
            offset = sql.find(text, search_from)
            if offset >= 0:
                search_from = offset + len(text)
            try:
                result = await self.run_statement(PreparedStatement(sql=text, param_oids=[]), None)
                if result.copy_in is not None:
                    result = await self.receive_copy(result.copy_in)
                await self.send_rows(result, None, describe=True, limit=0, portal=None)
            except (ConnectionError, asyncio.IncompleteReadError, errors.ProtocolViolation):
                raise
            except Exception as e:
                # The rest of the query string is skipped, as PostgreSQL does.
                self._send_error(e, statement_offset=max(offset, 0))
                self.transaction.on_error()
                break
        self.send(msg.ready_for_query(self.transaction.status))
        await self._flush()

    # ---- results ---------------------------------------------------------------
    async def send_rows(
        self, result: QueryResult, formats: list[int] | None, *, describe: bool, limit: int, portal: Portal | None
    ) -> None:
        """DataRows (from the portal's position, at most ``limit``; 0: all) and CommandComplete."""
        columns = result.columns
        if columns is None:
            self.send(msg.command_complete(result.command_tag))
            if portal is not None:
                portal.done = True
            return
        codes = [format_at(formats or [], i) for i in range(len(columns))]
        encoders = portal.encoders if portal is not None and portal.encoders is not None else None
        if encoders is None:
            encoders = [encoder_for(c.type, code) for c, code in zip(columns, codes)]
        if describe:
            self.send(msg.row_description([field_description(c, code) for c, code in zip(columns, codes)]))
        start = portal.position if portal is not None else 0
        end = len(result.rows) if limit == 0 else min(len(result.rows), start + limit)
        for chunk_start in range(start, end, _ENCODE_ROWS_PER_CHUNK):
            chunk = result.rows[chunk_start : min(end, chunk_start + _ENCODE_ROWS_PER_CHUNK)]
            if len(chunk) <= _ENCODE_INLINE_ROWS_MAX:
                self.send(_encode_rows(chunk, encoders))
            else:
                # Big results are encoded on the connection's thread, off the event loop.
                self.send(await self.call(_encode_rows, chunk, encoders))
            if len(self._out) >= _FLUSH_BYTES:
                await self._flush()
        if portal is not None:
            portal.position = end
            if end < len(result.rows):
                self.send(msg.portal_suspended())
                return
            portal.done = True
        self.send(msg.command_complete(_row_set_tag(result.command_tag, end - start)))

    # ---- COPY FROM STDIN ------------------------------------------------------------
    async def receive_copy(self, copy_in: CopyIn) -> QueryResult:
        """CopyInResponse, then CopyData until CopyDone; returns the final ``COPY n`` result."""
        self.send(msg.copy_in_response(len(copy_in.columns)))
        await self._flush()
        batcher = CopyBatcher(format=copy_in.format, quote=copy_in.quote, escape=copy_in.escape, header=copy_in.header)
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[None] | None = None
        try:
            while True:
                kind, payload = await self._read_message()
                if kind == b"d":
                    batch = batcher.add(payload)
                elif kind == b"c":
                    batch = batcher.finish()
                elif kind == b"f":
                    reason = msg.PayloadReader(payload).cstring()
                    raise PgError("57014", f"COPY from stdin failed: {reason}")
                elif kind in (b"H", b"S"):
                    continue
                else:
                    raise errors.ProtocolViolation(f"unexpected message type 0x{kind[0]:02X} during COPY from stdin")
                if batch is not None:
                    # Decoding batch N overlaps with receiving batch N+1; at most one is in flight.
                    if pending is not None:
                        await pending
                    pending = loop.run_in_executor(self._executor, write_batch, copy_in, batch)
                if kind == b"c":
                    if pending is not None:
                        await pending
                    return await self.call_statement(copy_in.finish)
        except BaseException:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending
            with contextlib.suppress(Exception):
                await self.call(copy_in.abort)
            raise


def _encode_rows(rows: Sequence[Sequence[Any]], encoders: list[ValueEncoder]) -> bytes:
    return b"".join(msg.data_row([encode(value) for encode, value in zip(encoders, row)]) for row in rows)


def _row_set_tag(tag: str, rows_sent: int) -> str:
    if tag.split(" ", 1)[0].upper() == "SELECT":
        return f"SELECT {rows_sent}"
    return tag


def _close_quietly(session: SessionLike) -> None:
    try:
        session.close()
    except Exception:
        logger.exception("closing a session failed")


def _cancel_quietly(session: SessionLike) -> None:
    try:
        session.cancel()
    except Exception:
        logger.exception("cancelling a statement failed")


# ---- the server ------------------------------------------------------------------


class PgServer:
    """An asyncio PostgreSQL wire-protocol server over ``session_factory(user, database)``."""

    def __init__(
        self,
        session_factory: SessionFactory,
        host: str = "127.0.0.1",
        port: int = 4566,
        password: str | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self._state = _ServerState(
            session_factory=session_factory,
            verifier=ScramVerifier(password) if password is not None else None,
        )
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Bind and listen; with port 0, ``self.port`` becomes the port the OS chose."""
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("pgwire listening on %s:%d", self.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        with contextlib.suppress(asyncio.CancelledError):
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), timeout=5)
            self._server = None

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await _Connection(self._state, reader, writer).run()
        finally:
            self._tasks.discard(task)


class ServerHandle:
    """A :class:`PgServer` running on its own event loop in a background thread."""

    def __init__(self, server: PgServer, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self.server = server
        self.port = server.port
        self.host = server.host
        self._loop = loop
        self._thread = thread

    def stop(self, timeout_s: float = 10.0) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self.server.close(), self._loop)
        with contextlib.suppress(Exception):
            future.result(timeout=timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=timeout_s)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def run_server_in_thread(
    session_factory: SessionFactory,
    host: str = "127.0.0.1",
    port: int = 0,
    password: str | None = None,
) -> ServerHandle:
    """Start a server in a daemon thread; returns once it listens (``handle.port``)."""
    server = PgServer(session_factory, host=host, port=port, password=password)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    failure: list[BaseException] = []

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(server.start())
        except BaseException as e:
            failure.append(e)
            started.set()
            return
        started.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=main, name="pgwire-server", daemon=True)
    thread.start()
    started.wait()
    if failure:
        raise failure[0]
    return ServerHandle(server, loop, thread)
